//! The `switchboard` binary: parse the configuration, set up logging, run the
//! chosen command. The application itself is the library.

use std::process::ExitCode;

use clap::Parser;
use secrecy::ExposeSecret;
use switchboard::{
    client,
    config::{self, Cli, Command, EXIT_BAD_CONFIG},
    shutdown, store, telemetry, Application,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            if let Some(var) = config::env_var_for(&e) {
                eprintln!("(this setting can come from the environment variable {var})");
            }
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
        Err(e) => e.exit(), // --help, --version
    };
    if let Err(message) = telemetry::init_logging(cli.log.log_format, &cli.log.log_filter) {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_BAD_CONFIG as u8);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(config) => {
            if let Err(message) = config.validate() {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_BAD_CONFIG as u8);
            }
            let app = match Application::build(*config).await {
                Ok(app) => app,
                Err(error) => return fail("cannot start", &error),
            };
            match app.run_until_stopped(shutdown::signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail("stopped with an error", &error),
            }
        }
        Command::Migrate(args) => {
            let result = async {
                let mut client =
                    store::connect_direct(args.database.database_direct_url.expose_secret())
                        .await?;
                anyhow::Ok(store::migrate::run(&mut client, &args.options()).await?)
            }
            .await;
            match result {
                Ok(report) => {
                    for m in &report.applied {
                        tracing::info!(version = m.version, name = %m.name, dry_run = report.dry_run, "migration applied");
                    }
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => fail("migration failed", &error),
            }
        }
        Command::Seed(args) => {
            let result = async {
                let mut client =
                    store::connect_direct(args.database.database_direct_url.expose_secret())
                        .await?;
                anyhow::Ok(store::seed::demo(&mut client).await?)
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!("demo data loaded");
                    ExitCode::SUCCESS
                }
                Err(error) => fail("seeding failed", &error),
            }
        }
        Command::Client(args) => match client::run(&args).await {
            Ok(client::Reply::Answered(answer)) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(client::Reply::Refused(status)) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                ExitCode::from(1)
            }
            Err(error) => fail("cannot reach the daemon", &error),
        },
    }
}

fn fail(what: &str, error: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{error:#}"), "{what}");
    ExitCode::FAILURE
}
