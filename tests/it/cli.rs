//! The binary itself: configuration errors exit 64 with the variable's name,
//! and the built-in client prints routes.

use std::process::Command;

use crate::helpers::spawn_seeded_app;

fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn bad_configuration_exits_64_and_names_the_setting() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "DATABASE_URL"),
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_DB_POOL_SIZE", "0"),
            ],
            "SWITCHBOARD_DB_POOL_SIZE",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_DB_QUERY_TIMEOUT", "soon"),
            ],
            "SWITCHBOARD_DB_QUERY_TIMEOUT",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_GRPC_ADDR", "everywhere"),
            ],
            "SWITCHBOARD_GRPC_ADDR",
        ),
    ];
    for (env, name) in cases {
        let output = switchboard()
            .arg("serve")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{name}: {stderr}");
        assert!(
            stderr.contains(name) || stderr.contains(&name.to_lowercase().replace('_', "-")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn secrets_are_not_echoed_in_errors() {
    let output = switchboard()
        .args(["serve"])
        .env("DATABASE_URL", "postgres://u:hunter2@127.0.0.1/db")
        .env("DATABASE_DIRECT_URL", "postgres://u:hunter2@127.0.0.1/db")
        .env("REDIS_URL", "redis://:hunter2@127.0.0.1/")
        .env("SWITCHBOARD_DB_POOL_SIZE", "0")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test]
async fn the_client_subcommand_prints_the_route_as_json() {
    let app = spawn_seeded_app().await;
    let addr = format!("http://{}", app.grpc_addr);
    let output = tokio::task::spawn_blocking(move || {
        switchboard()
            .args([
                "client",
                "--addr",
                &addr,
                "route-call",
                "--called",
                "+14155550100",
                "--caller",
                "+14155550123",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["route"]["organization"]["slug"], "acme-dental");
    assert_eq!(json["customer"]["name"], "Dana Whitfield");

    let addr = format!("http://{}", app.grpc_addr);
    let output = tokio::task::spawn_blocking(move || {
        switchboard()
            .args(["client", "--addr", &addr, "lookup", "+19995550000"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["reason"], "number_not_found");
}
