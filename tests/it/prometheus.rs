//! The metrics as Prometheus itself sees them: `promtool check metrics`
//! accepts `/metrics`, and a real Prometheus scraping the admin listener
//! stores the request counters and the latency histograms with their labels.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package, which
//! `deploy/local/stack up` installs (without starting its service).

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use switchboard::proto::LookupNumberRequest;

use switchboard::telemetry::series::{Kind, FAMILIES};

use crate::helpers::{
    create_database, eventually, free_port, http_get, metric, route_request, spawn_seeded_app,
    DaemonProcess, Stack,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// Globex Health: an enterprise organization (500 concurrent calls), so
/// the calls this test routes are never refused for a limit.
const GLOBEX: &str = "+13125550100";
/// A well-formed number nobody has provisioned.
const UNKNOWN: &str = "+19995550000";
/// RouteCalls (and LookupNumbers) this test makes.
const CALLS: usize = 5;

/// The buckets the daemon declares for every `*_seconds` histogram, as
/// rendered in `le` (plus `+Inf`).
const LATENCY_BUCKET_COUNT: usize = switchboard::telemetry::LATENCY_BUCKETS.len() + 1;

/// One of Prometheus' tools, or a failure that says how to get it.
fn tool(path: &'static str) -> &'static str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run `deploy/local/stack up`, which installs Debian's \
         `prometheus` package (prometheus and promtool)"
    );
    path
}

/// Routes `CALLS` calls to Globex and looks up `CALLS` numbers (some
/// unknown), so the request counters, the request and lookup histograms
/// all have samples.
async fn make_traffic(app: &mut crate::helpers::TestApp) {
    for i in 0..CALLS {
        app.client
            .route_call(route_request(GLOBEX, &format!("prometheus-{i}")))
            .await
            .expect("Globex routes");
        let number = if i % 2 == 0 { GLOBEX } else { UNKNOWN };
        let _ = app
            .client
            .lookup_number(LookupNumberRequest {
                number: number.into(),
                default_region: String::new(),
            })
            .await;
    }
}

#[tokio::test]
async fn promtool_accepts_the_metrics_endpoint() {
    let promtool = tool(PROMTOOL);
    let mut app = spawn_seeded_app().await;
    make_traffic(&mut app).await;
    let (code, body) = app.admin_get("/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("switchboard_grpc_request_seconds_bucket"),
        "no request histogram in:\n{body}"
    );

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .expect("write /metrics to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- /metrics ---\n{body}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[tokio::test]
async fn prometheus_scrapes_request_counters_and_latency_histograms() {
    let prometheus_bin = tool(PROMETHEUS);
    let mut app = spawn_seeded_app().await;
    make_traffic(&mut app).await;
    // The registry is shared by every test in this binary: what Prometheus
    // stores is at least what this test sent, and at least what /metrics
    // said right after.
    let route_calls = metric(
        app.admin_addr,
        r#"switchboard_grpc_requests_total{rpc="RouteCall",code="OK"}"#,
    )
    .await;
    assert!(route_calls >= CALLS as f64, "RouteCall count {route_calls}");

    let mut prometheus = Prometheus::start(prometheus_bin, app.admin_addr).await;

    // the target is up: the scrape parsed
    let up = prometheus
        .wait_for(r#"up{job="switchboard"} == 1"#, |_| true)
        .await;
    assert_eq!(up[0]["metric"]["instance"], app.admin_addr.to_string());

    // the request counter, with its labels and at least our calls
    let requests = prometheus
        .wait_for(
            r#"switchboard_grpc_requests_total{rpc="RouteCall",code="OK"}"#,
            |series| series.iter().any(|s| value(s) >= route_calls),
        )
        .await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["metric"]["job"], "switchboard");

    // the request histogram: every declared bucket, cumulative, and its
    // +Inf bucket equal to its count in the same scrape
    let buckets = prometheus
        .wait_for(
            r#"switchboard_grpc_request_seconds_bucket{rpc="RouteCall"}"#,
            |series| {
                series.len() == LATENCY_BUCKET_COUNT
                    && series.iter().any(|s| value(s) >= CALLS as f64)
            },
        )
        .await;
    let bounds: BTreeSet<&str> = buckets
        .iter()
        .map(|s| s["metric"]["le"].as_str().expect("le label"))
        .collect();
    assert!(bounds.contains("+Inf"), "{bounds:?}");
    assert!(bounds.contains("0.00005"), "50 µs bucket: {bounds:?}");
    let mut by_bound: Vec<(f64, f64)> = buckets
        .iter()
        .map(|s| {
            let le = s["metric"]["le"].as_str().unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            (bound, value(s))
        })
        .collect();
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        by_bound.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets are not cumulative: {by_bound:?}"
    );
    let consistent = prometheus
        .query(
            r#"switchboard_grpc_request_seconds_count{rpc="RouteCall"}
               - ignoring(le) switchboard_grpc_request_seconds_bucket{rpc="RouteCall",le="+Inf"}"#,
        )
        .await;
    assert_eq!(consistent.len(), 1, "{consistent:?}");
    assert_eq!(
        value(&consistent[0]),
        0.0,
        "+Inf bucket differs from _count"
    );

    // and the histogram is usable: a p99 within the buckets (at most 1 s),
    // the query the latency alert is built on
    let p99 = prometheus
        .query(
            r#"histogram_quantile(0.99, sum by (le) (switchboard_grpc_request_seconds_bucket{rpc="RouteCall"}))"#,
        )
        .await;
    assert_eq!(p99.len(), 1, "{p99:?}");
    let p99 = value(&p99[0]);
    assert!(p99 > 0.0 && p99 <= 1.0, "RouteCall p99 {p99}");

    // LookupNumber answered both OK and NOT_FOUND
    let lookups = prometheus
        .wait_for(
            r#"switchboard_grpc_requests_total{rpc="LookupNumber"}"#,
            |series| series.len() >= 2,
        )
        .await;
    let codes: BTreeSet<&str> = lookups
        .iter()
        .map(|s| s["metric"]["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains("OK") && codes.contains("NOT_FOUND"),
        "{codes:?}"
    );

    // the route cache's lookup histogram: L1 hits for the repeated number
    let lookup_buckets = prometheus
        .wait_for(
            r#"switchboard_cache_lookup_seconds_bucket{tier="l1"}"#,
            |series| series.len() == LATENCY_BUCKET_COUNT && series.iter().any(|s| value(s) >= 1.0),
        )
        .await;
    assert!(lookup_buckets
        .iter()
        .all(|s| s["metric"]["le"].is_string() && s["metric"]["job"] == "switchboard"));
}

/// The numeric value of one series of an instant vector.
fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {series}"))
}

/// Series that must read 0 on a fresh daemon: alerts divide or `rate()`
/// them, so they have to exist before their first increment.
const ZERO_AT_START: &[&str] = &[
    r#"switchboard_grpc_shed_total{rpc="RouteCall",reason="concurrency"}"#,
    r#"switchboard_grpc_requests_total{rpc="RouteCall",code="UNAVAILABLE"}"#,
    r#"switchboard_grpc_unauthenticated_total{reason="invalid_token"}"#,
    r#"switchboard_redis_fallbacks_total{why="timeout"}"#,
    r#"switchboard_admission_decisions_total{outcome="redis_down_refused"}"#,
    r#"switchboard_admission_release_failures_total"#,
    r#"switchboard_recorder_refused_total{reason="spool_full"}"#,
    r#"switchboard_recorder_events_total{outcome="dead_lettered"}"#,
    r#"switchboard_store_query_errors_total{query="resolve_number"}"#,
    r#"switchboard_cache_stale_served_total"#,
    r#"switchboard_db_pool_timeouts_total"#,
    r#"switchboard_invalidation_lag_seconds_count"#,
    r#"switchboard_cache_lookup_seconds_count{tier="l2"}"#,
];

/// Every metric the alert rules and the dashboard read exists on a daemon
/// that has not answered a single request, with the series alerts rely on
/// at 0. A process of its own: the daemons of this binary share one
/// metrics registry, which other tests fill.
#[tokio::test]
async fn a_fresh_daemon_exports_every_metric_the_alerts_and_the_dashboard_read() {
    let stack = Stack::from_env();
    let db_name = create_database(&stack).await;
    let spool = tempfile::tempdir().unwrap();
    let daemon =
        DaemonProcess::start(&stack, &db_name, stack.pgbouncer_port, spool.path(), &[]).await;
    let (code, body) = http_get(daemon.admin_addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");

    let exported: BTreeSet<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    for file in [
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/switchboard-dashboard.json",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let named = metric_families_named_in(&text);
        // the parse finds what the file reads
        assert!(
            named.contains("switchboard_grpc_requests_total"),
            "{file}: {named:?}"
        );
        let missing: Vec<_> = named
            .iter()
            .filter(|name| !exported.contains(name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} reads metrics a fresh daemon does not export: {missing:?}\n--- /metrics ---\n{body}"
        );
    }
    for series in ZERO_AT_START {
        assert!(
            body.lines().any(|line| line == format!("{series} 0")),
            "{series} is not at 0:\n{body}"
        );
    }
}

/// The families a Prometheus rule or dashboard names: every
/// `switchboard_…` identifier, a histogram's `_bucket`, `_count` and `_sum`
/// series counted as their family.
fn metric_families_named_in(text: &str) -> BTreeSet<String> {
    let identifier = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    text.match_indices("switchboard_")
        // not the tail of a longer identifier
        .filter(|(at, _)| !text[..*at].ends_with(identifier))
        .map(|(at, _)| {
            let rest = &text[at..];
            let name = &rest[..rest.find(|c| !identifier(c)).unwrap_or(rest.len())];
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

/// Every series on `/metrics` is one the daemon declares
/// (`switchboard::telemetry::series::FAMILIES`), with label values from
/// their lists: a value recorded but not listed would appear only when it
/// first happens, which is what exporting at zero is for. The registry is
/// shared by the whole binary, so this also checks what every test that ran
/// before it recorded.
#[tokio::test]
async fn every_series_exported_is_declared_with_its_label_values() {
    let mut app = spawn_seeded_app().await;
    make_traffic(&mut app).await;
    let (_, body) = app.admin_get("/metrics").await;
    let mut checked = 0;
    for line in body.lines().filter(|l| l.starts_with("switchboard_")) {
        let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = FAMILIES
            .iter()
            .find(|family| {
                name == family.name
                    || (family.kind == Kind::Histogram
                        && ["_bucket", "_count", "_sum"]
                            .iter()
                            .any(|suffix| name.strip_suffix(suffix) == Some(family.name)))
            })
            .unwrap_or_else(|| panic!("{line}: not declared in telemetry::series"));
        let labels: Vec<(&str, &str)> = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (label, value) = pair.split_once('=').expect("label=\"value\"");
                (label, value.trim_matches('"'))
            })
            .filter(|(label, _)| *label != "le")
            .collect();
        assert_eq!(
            labels.len(),
            family.labels.len(),
            "{line}: labels are {:?}",
            family.labels
        );
        for (label, value) in labels {
            let values = family
                .labels
                .iter()
                .find_map(|(declared, values)| (*declared == label).then_some(*values))
                .unwrap_or_else(|| panic!("{line}: label {label} not declared"));
            assert!(
                values.contains(&value),
                "{line}: {label}=\"{value}\" is not among {values:?} (telemetry::series)"
            );
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} series in:\n{body}");
}

/// A Prometheus server of this test's own, scraping one target every
/// second, with its storage in a temporary directory. Killed on drop.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(bin: &str, target: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-prometheus-")
            .tempdir()
            .expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: switchboard\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Self { addr, child, dir };
        eventually("prometheus is ready", Duration::from_secs(30), || {
            prometheus.check_alive();
            async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
                    && http_get(addr, "/-/ready").await.0 == 200
            }
        })
        .await;
        prometheus
    }

    /// Fails the test with Prometheus' log if it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: the series of the resulting vector.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let (code, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        )
        .await;
        assert_eq!(code, 200, "query {promql}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
        assert_eq!(answer["status"], "success", "query {promql}: {body}");
        assert_eq!(answer["data"]["resultType"], "vector", "{body}");
        answer["data"]["result"].as_array().unwrap().clone()
    }

    /// Polls `promql` until its result is non-empty and satisfies `check`
    /// (a scrape every second), then returns it.
    async fn wait_for(&mut self, promql: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let limit = Duration::from_secs(30);
        let until = std::time::Instant::now() + limit;
        loop {
            self.check_alive();
            let last = self.query(promql).await;
            if !last.is_empty() && check(&last) {
                return last;
            }
            assert!(
                std::time::Instant::now() < until,
                "Prometheus has no satisfying answer to `{promql}` within {limit:?}; \
                 last answer: {last:?}\n--- prometheus log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query-string value: everything but RFC 3986's
/// unreserved characters.
fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
