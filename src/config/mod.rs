//! The one typed configuration: command-line flags, each with an environment
//! variable, validated before anything starts. `switchboard serve`'s
//! settings come in groups by concern (`serve.rs`), flattened into one
//! command line; every default is a `DEFAULT_*` constant (`defaults.rs`),
//! stated once, in the attribute of its setting.

mod commands;
mod defaults;
mod serve;
mod settings;
mod validate;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::telemetry::LogFormat;

pub use commands::{ClientArgs, ClientCall, DirectDatabase, MigrateArgs, SeedArgs};
pub use defaults::*;
pub use serve::{
    AdminConfig, AdmissionConfig, AuthConfig, CacheConfig, DatabaseConfig, GrpcConfig,
    RecorderConfig, RedisConfig, ServeConfig, SpoolConfig, TlsConfig,
};

/// Exit status for invalid configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Call-routing daemon for voice-AI platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: gRPC routing API and admin HTTP listener.
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations (direct connection), then exit.
    Migrate(MigrateArgs),
    /// Load a data set into the database (direct connection), then exit.
    Seed(SeedArgs),
    /// Call a running daemon's API and print the answer as JSON.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
pub struct LogConfig {
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (`info`, `switchboard=debug,warn`).
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info", global = true)]
    pub log_filter: String,
}

/// The environment variable behind the argument a parse error is about, so
/// an operator who configures through the environment sees the name they
/// set (clap's own message names only the flag).
pub fn env_var_for(error: &clap::Error) -> Option<String> {
    use clap::{error::ContextKind, error::ContextValue, CommandFactory};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--db-query-timeout <DB_QUERY_TIMEOUT>" → "db-query-timeout"
    let long = arg.trim_start_matches('-').split([' ', '=']).next()?;
    let command = Cli::command();
    let env = std::iter::once(&command)
        .chain(command.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    env
}

fn secret(value: &str) -> Result<SecretString, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(value.to_owned()))
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 250ms, 2s, 1m)"))
}

#[cfg(test)]
mod tests;
