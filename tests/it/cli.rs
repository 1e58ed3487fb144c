//! The binary itself: configuration errors exit 64 with the variable's name,
//! and the built-in client prints routes.

use crate::helpers::{spawn_seeded_app, switchboard_command as switchboard};

#[test]
fn bad_configuration_exits_64_and_names_the_setting() {
    let cases: [(&[(&str, &str)], &str); 7] = [
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
        // an open port without gateway tokens
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_GRPC_ADDR", "0.0.0.0:50051"),
            ],
            "SWITCHBOARD_API_TOKENS",
        ),
        // gateway tokens in clear on an open port
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_GRPC_ADDR", "0.0.0.0:50051"),
                ("SWITCHBOARD_API_TOKENS", "gateway-token-0123456789"),
            ],
            "SWITCHBOARD_TLS_TERMINATED_UPSTREAM",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("DATABASE_DIRECT_URL", "postgres://x@127.0.0.1/db"),
                ("REDIS_URL", "redis://127.0.0.1/"),
                ("SWITCHBOARD_TLS_CERT", "/etc/switchboard/cert.pem"),
            ],
            "SWITCHBOARD_TLS_KEY",
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
    let output = client(
        &app,
        &[
            "route-call",
            "--called",
            "+14155550100",
            "--caller",
            "+14155550123",
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["route"]["organization"]["slug"], "acme-dental");
    assert_eq!(json["customer"]["name"], "Dana Whitfield");
    let call_id = json["call_id"].as_str().unwrap().to_string();

    for args in [
        vec![
            "record-usage",
            &call_id,
            "--item",
            "call_seconds=42",
            "--item",
            "llm_tokens_in=900",
        ],
        vec!["end-call", &call_id, "--reason", "agent-hangup"],
    ] {
        let output = client(&app, &args).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let db = app.direct().await;
    let row = db
        .query_one(
            "select status, end_reason, (select sum(quantity)::float8 from public.usage_events)
               from public.calls",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "completed");
    assert_eq!(row.get::<_, &str>(1), "agent_hangup");
    assert_eq!(row.get::<_, f64>(2), 942.0);

    let output = client(&app, &["lookup", "+19995550000"]).await;
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["reason"], "number_not_found");
}

/// `switchboard client --addr <app> <args…>`, run off the test's runtime.
async fn client(app: &crate::helpers::TestApp, args: &[&str]) -> std::process::Output {
    let mut command = switchboard();
    command.args(["client", "--addr", &format!("http://{}", app.grpc_addr)]);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}
