//! Test harness: every test gets its own freshly migrated database and its
//! own daemon, started in-process on port 0, whose pooled connection goes
//! through PgBouncer in transaction mode, exactly as production goes through
//! Supavisor.
//!
//! The servers come from the local stack (`deploy/local/stack up`), whose
//! `env` output provides the `SWITCHBOARD_TEST_*` variables read here.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use secrecy::SecretString;
use switchboard::{
    config::{ServeConfig, DEFAULT_SPOOL_DIR},
    proto::{
        call_router_client::CallRouterClient, EndCallRequest, EndReason, RecordUsageRequest,
        RouteCallRequest, UsageItem,
    },
    store::{
        self, migrate,
        migrate::{MigrateOptions, DAEMON_ROLE},
    },
    Application,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::transport::Channel;

mod cluster;
pub mod raw_h2;
pub use cluster::{PrivateRedisCluster, Topology};

/// Where the local stack's servers are.
pub struct Stack {
    pub pg_host: String,
    pub pg_port: u16,
    pub pgbouncer_port: u16,
    pub pgbouncer_bin: String,
    /// OS user PgBouncer must run as (it refuses root), if any.
    pub run_as: Option<String>,
    pub state_dir: PathBuf,
    /// The daemon's Redis: over TLS (`rediss://`) on the local stack.
    pub redis_url: String,
    /// The same Redis in plaintext, for what a test reads or writes there
    /// itself.
    pub redis_plain_url: String,
    /// The stack's Redis Cluster's seed nodes, over TLS, as `REDIS_URL`
    /// lists them.
    pub redis_cluster_url: String,
    /// The CA of the stack's certificates: connections to PostgreSQL and
    /// PgBouncer use `sslmode=verify-full` with it, Redis `rediss://`.
    /// `None` for plaintext servers of a test's own.
    pub ca_file: Option<PathBuf>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with deploy/local/test, or \
             `eval \"$(deploy/local/stack env)\"` after `deploy/local/stack up`"
        )
    })
}

impl Stack {
    pub fn from_env() -> Self {
        let run_as = env("SWITCHBOARD_TEST_RUN_AS");
        Self {
            pg_host: env("SWITCHBOARD_TEST_PG_HOST"),
            pg_port: env("SWITCHBOARD_TEST_PG_PORT").parse().expect("port"),
            pgbouncer_port: env("SWITCHBOARD_TEST_PGBOUNCER_PORT")
                .parse()
                .expect("port"),
            pgbouncer_bin: env("SWITCHBOARD_TEST_PGBOUNCER_BIN"),
            run_as: (!run_as.is_empty()).then_some(run_as),
            state_dir: PathBuf::from(env("SWITCHBOARD_STACK_DIR")),
            redis_url: env("REDIS_URL"),
            redis_plain_url: env("SWITCHBOARD_TEST_REDIS_PLAIN_URL"),
            redis_cluster_url: env("SWITCHBOARD_TEST_REDIS_CLUSTER_URL"),
            ca_file: Some(PathBuf::from(env("SWITCHBOARD_TEST_CA_FILE"))),
        }
    }

    pub fn direct_url(&self, db: &str) -> String {
        self.url("postgres", self.pg_port, db)
    }

    /// The daemon's direct session (LISTEN): its own role, no pooler.
    pub fn daemon_direct_url(&self, db: &str) -> String {
        self.url(DAEMON_ROLE, self.pg_port, db)
    }

    /// The daemon's view: its own least-privilege role, through a pooler.
    pub fn pooled_url(&self, port: u16, db: &str) -> String {
        self.url(DAEMON_ROLE, port, db)
    }

    /// As production connects: TLS, the certificate checked against the
    /// stack's CA and the host name.
    pub fn url(&self, user: &str, port: u16, db: &str) -> String {
        let url = format!("postgres://{user}@{}:{port}/{db}", self.pg_host);
        match &self.ca_file {
            Some(ca) => format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None => url,
        }
    }

    /// A client for the stack's Redis, for a test's own reads and writes.
    pub fn redis_client(&self) -> redis::Client {
        redis::Client::open(self.redis_plain_url.as_str()).expect("the stack's Redis URL")
    }
}

/// A fresh, empty database on the local stack, not migrated: for tests that
/// arrange a schema of their own first (a legacy database to adopt).
pub async fn create_empty_database(stack: &Stack) -> String {
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    let admin = store::connect_direct(&stack.direct_url("postgres"))
        .await
        .expect("connect to the local stack's PostgreSQL (is it up?)");
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .expect("create test database");
    name
}

/// A fresh, empty database built the way Supabase builds one: owned by a
/// role like Supabase's `postgres`, which is not a superuser (CREATEROLE,
/// BYPASSRLS, a member of the API roles). Returns the database and that
/// role's URL; the role is named after the database.
pub async fn create_supabase_like_database(stack: &Stack) -> (String, String) {
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    let admin = store::connect_direct(&stack.direct_url("postgres"))
        .await
        .expect("connect to the local stack's PostgreSQL (is it up?)");
    admin
        .batch_execute(&format!(
            "do $$
             begin
               create role anon nologin noinherit;
             exception when duplicate_object or unique_violation then null;
             end $$;
             do $$
             begin
               create role authenticated nologin noinherit;
             exception when duplicate_object or unique_violation then null;
             end $$;
             do $$
             begin
               create role service_role nologin noinherit bypassrls;
             exception when duplicate_object or unique_violation then null;
             end $$;
             create role {name} login nosuperuser createrole bypassrls;
             grant anon, authenticated, service_role to {name};"
        ))
        .await
        .expect("create a Supabase-like owner");
    admin
        .batch_execute(&format!("create database {name} owner {name}"))
        .await
        .expect("create a Supabase-like database");
    let url = stack.url(&name, stack.pg_port, &name);
    (name, url)
}

/// A fresh, migrated database on the local stack.
pub async fn create_database(stack: &Stack) -> String {
    let name = create_empty_database(stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&name))
        .await
        .unwrap();
    let options = MigrateOptions {
        // the stack trusts local connections; a password still gives LOGIN
        daemon_password: Some(SecretString::from("local")),
        ..Default::default()
    };
    migrate::run(&mut client, &options)
        .await
        .expect("migrations apply");
    name
}

/// A seeded database where Acme Dental has its own limit, before any
/// daemon reads it.
pub async fn acme_with_own_limit(limit: i32) -> (Stack, String) {
    let stack = Stack::from_env();
    let db_name = create_database(&stack).await;
    let mut db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    store::seed::demo(&mut db).await.unwrap();
    db.execute(
        "update public.organizations set concurrency_limit = $1 where slug = 'acme-dental'",
        &[&limit],
    )
    .await
    .unwrap();
    (stack, db_name)
}

/// A running daemon and what a test needs to talk to it.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub db_name: String,
    pub stack: Stack,
    pub client: CallRouterClient<Channel>,
    /// The recorder's spool directory: this daemon's own.
    pub spool_dir: PathBuf,
    /// Removes the spool directory when the test ends, if the harness made it.
    _spool: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Spawns the daemon on a fresh database, through the stack's PgBouncer.
pub async fn spawn_app() -> TestApp {
    spawn(Seed::Empty, None, |_| {}).await
}

/// Like [`spawn_app`], with the demo data loaded.
pub async fn spawn_seeded_app() -> TestApp {
    spawn(Seed::Demo, None, |_| {}).await
}

/// The demo data and the configuration adjusted by `tweak`.
pub async fn spawn_seeded_app_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn(Seed::Demo, None, tweak).await
}

/// The demo data, the configuration adjusted by `tweak`, and the pooled
/// connection through the PgBouncer on `pooler_port` (a test's own
/// [`PrivateBouncer`]) instead of the stack's.
pub async fn spawn_seeded_app_via(
    pooler_port: u16,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    spawn(Seed::Demo, Some(pooler_port), tweak).await
}

/// Spawns the daemon on `db_name`, an existing database already migrated
/// with the daemon's password set (as [`create_database`] does), through the
/// stack's PgBouncer, with the configuration adjusted by `tweak`.
pub async fn spawn_app_on(
    stack: Stack,
    db_name: String,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let mut config = config_for(&stack, &db_name, stack.pgbouncer_port);
    tweak(&mut config);
    start(stack, db_name, config).await
}

#[derive(PartialEq)]
enum Seed {
    Empty,
    Demo,
}

async fn spawn(
    seed: Seed,
    pooler_port: Option<u16>,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let stack = Stack::from_env();
    let db_name = create_database(&stack).await;
    if seed == Seed::Demo {
        let mut client = store::connect_direct(&stack.direct_url(&db_name))
            .await
            .unwrap();
        store::seed::demo(&mut client).await.expect("seed");
    }
    let port = pooler_port.unwrap_or(stack.pgbouncer_port);
    let mut config = config_for(&stack, &db_name, port);
    tweak(&mut config);
    start(stack, db_name, config).await
}

/// A second daemon on `other`'s database: another replica.
pub async fn spawn_on(other: &TestApp) -> TestApp {
    let port = Stack::from_env().pgbouncer_port;
    spawn_on_via(other, port, |_| {}).await
}

/// Another replica on `other`'s database, through the pooler on `pooler_port`.
pub async fn spawn_on_via(
    other: &TestApp,
    pooler_port: u16,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let stack = Stack::from_env();
    let mut config = config_for(&stack, &other.db_name, pooler_port);
    tweak(&mut config);
    start(stack, other.db_name.clone(), config).await
}

/// The daemon's configuration for `db_name`: pooled through the PgBouncer on
/// `pooler_port` as the daemon's role, LISTEN on the direct port, the
/// stack's Redis, both listeners on port 0.
fn config_for(stack: &Stack, db_name: &str, pooler_port: u16) -> ServeConfig {
    let mut config = ServeConfig::with_defaults(
        &stack.pooled_url(pooler_port, db_name),
        &stack.daemon_direct_url(db_name),
        &stack.redis_url,
    );
    config.redis.redis_ca_file = stack.ca_file.clone();
    config.grpc.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.admin.admin_addr = "127.0.0.1:0".parse().unwrap();
    // A debug build running every test at once on two cores queues bursts
    // far longer than a release build ever does: only the tests about
    // shedding by queue delay and the adaptive limit set these
    // (tests/it/overload.rs).
    config.grpc.max_queue_delay = Duration::from_secs(10);
    config.grpc.queue_delay_target = Duration::from_secs(10);
    config
}

async fn start(stack: Stack, db_name: String, mut config: ServeConfig) -> TestApp {
    // every test database is its own deployment, with its own Redis keys
    config.redis.redis_key_prefix = db_name.clone();
    // and every daemon its own spool, unless the test chose one
    let spool = (config.spool.spool_dir == std::path::Path::new(DEFAULT_SPOOL_DIR)).then(|| {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-spool-")
            .tempdir()
            .expect("temporary spool directory");
        config.spool.spool_dir = dir.path().to_path_buf();
        dir
    });
    let spool_dir = config.spool.spool_dir.clone();
    let app = Application::build(config)
        .await
        .expect("application builds");
    let grpc_addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // lazily: a test may serve TLS, or want a token, and bring its own client
    let client = CallRouterClient::new(
        Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy(),
    );
    // Like a load balancer: no traffic before /readyz says so (the route
    // cache is trusted once the invalidation listener has connected).
    eventually(
        "the daemon reports ready",
        Duration::from_secs(10),
        || async move { http_get(admin_addr, "/readyz").await.0 == 200 },
    )
    .await;
    TestApp {
        grpc_addr,
        admin_addr,
        db_name,
        stack,
        client,
        spool_dir,
        _spool: spool,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// A direct session on this test's database, for arranging data.
    pub async fn direct(&self) -> tokio_postgres::Client {
        store::connect_direct(&self.stack.direct_url(&self.db_name))
            .await
            .unwrap()
    }

    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_lazy()
    }

    /// Asks the daemon to stop and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.expect("app task panicked")
    }

    /// `GET path` on the admin listener: (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr, path).await
    }

    /// Waits until the daemon has connected to Redis, which it does in the
    /// background after it starts (until then, admission decides by its
    /// Redis-down policy).
    pub async fn connected_to_redis(&self) {
        let admin = self.admin_addr;
        eventually(
            "connected to Redis",
            Duration::from_secs(10),
            || async move {
                http_get(admin, "/readyz")
                    .await
                    .1
                    .contains("redis: connected")
            },
        )
        .await;
    }
}

/// A minimal HTTP/1.0 GET, enough for the admin endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it returns true, failing the test after `limit`.
/// For waiting on recovery (a reconnect), never on a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PgBouncer of this test's own, in transaction mode in front of the
/// stack's PostgreSQL, so a test can kill or pause it without disturbing
/// the others.
pub struct PrivateBouncer {
    pub port: u16,
    dir: PathBuf,
    ini: PathBuf,
    run_as: Option<(u32, u32)>,
    bin: String,
    child: Option<Child>,
}

impl PrivateBouncer {
    pub async fn start(stack: &Stack) -> Self {
        let port = free_port();
        let dir = stack
            .state_dir
            .join("test-bouncers")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"postgres\" \"\"\n\"{DAEMON_ROLE}\" \"\"\n"),
        )
        .unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={pg}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 pool_mode = transaction\nauth_type = trust\nauth_file = {dir}/userlist.txt\n\
                 admin_users = postgres\ndefault_pool_size = 5\nmax_client_conn = 200\n\
                 server_connect_timeout = 2\nserver_login_retry = 1\nquery_wait_timeout = 30\n\
                 ignore_startup_parameters = extra_float_digits,application_name\n\
                 client_tls_sslmode = allow\nclient_tls_cert_file = {tls}/server.crt\n\
                 client_tls_key_file = {tls}/server.key\n\
                 logfile = {dir}/pgbouncer.log\n",
                host = stack.pg_host,
                pg = stack.pg_port,
                dir = dir.display(),
                tls = stack.state_dir.join("tls").display(),
            ),
        )
        .unwrap();
        let run_as = stack.run_as.as_deref().map(os_user_ids);
        if let Some((uid, gid)) = run_as {
            for path in [&dir, &ini, &dir.join("userlist.txt")] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut bouncer = Self {
            port,
            dir,
            ini,
            run_as,
            bin: stack.pgbouncer_bin.clone(),
            child: None,
        };
        bouncer.resume_process().await;
        bouncer
    }

    /// Starts (or restarts) the PgBouncer process and waits until it answers.
    pub async fn resume_process(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.bin);
        command
            .arg(&self.ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        self.child = Some(command.spawn().expect("start pgbouncer"));
        let url = format!("postgres://postgres@127.0.0.1:{}/pgbouncer", self.port);
        eventually(
            "private pgbouncer accepting connections",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }

    /// Kills the PgBouncer process: every connection through it drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a command on PgBouncer's admin console (`PAUSE db`, `RESUME db`).
    pub async fn admin(&self, command: &str) {
        let url = format!("postgres://postgres@127.0.0.1:{}/pgbouncer", self.port);
        let client = store::connect_direct(&url)
            .await
            .expect("pgbouncer admin console");
        client.simple_query(command).await.expect(command);
    }
}

impl Drop for PrivateBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn os_user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// A Redis of this test's own, which it may kill, restart on the same port,
/// or freeze.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self::on_free_port();
        redis.resume_process().await;
        redis
    }

    /// Its port, with nothing listening yet: [`Self::resume_process`]
    /// starts it.
    pub fn on_free_port() -> Self {
        Self {
            port: free_port(),
            child: None,
        }
    }

    /// Starts (or restarts) the process on its port, empty, and waits until
    /// it answers.
    pub async fn resume_process(&mut self) {
        self.child = Some(
            Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &self.port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
        let port = self.port;
        eventually(
            "private redis accepting connections",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SIGSTOP` (`true`) or `SIGCONT` (`false`): a frozen Redis keeps its
    /// connections open and answers nothing.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("redis is running");
        signal(child.id(), if frozen { "STOP" } else { "CONT" });
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
        self.kill();
    }
}

fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{name} {pid}");
}

/// A PostgreSQL cluster of this test's own (initdb in the stack's state
/// directory, its own port), which it may stop and start again: for what
/// only a dead database behind a live pooler shows. Start a
/// [`PrivateBouncer`] on [`Self::stack`] in front of it.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// Where Debian's PostgreSQL 15 server programs are (the local stack's).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePostgres {
    pub async fn start(stack: &Stack) -> Self {
        let dir = stack
            .state_dir
            .join("test-postgres")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let run_as = stack.run_as.as_deref().map(os_user_ids);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let pg = Self {
            port: free_port(),
            dir,
            run_as,
        };
        let initdb = pg
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C")
            .arg("-D")
            .arg(pg.data())
            .output()
            .expect("initdb");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        pg.pg_ctl("start");
        pg
    }

    /// The stack's settings with this cluster, in plaintext, as its
    /// PostgreSQL.
    pub fn stack(&self) -> Stack {
        Stack {
            pg_port: self.port,
            ca_file: None,
            ..Stack::from_env()
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no checkpoint,
    /// every connection cut), as a crash does.
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts the stopped server again and waits until it accepts
    /// connections.
    pub fn resume_process(&self) {
        self.pg_ctl("start");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(format!("{PG_BIN}/{program}"));
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn pg_ctl(&self, action: &str) {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(["-w", "-t", "30"]);
        match action {
            "start" => command
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
                    self.port
                ))
                .arg("start"),
            _ => command.args(["-m", "immediate", action]),
        };
        let output = command.output().expect("pg_ctl");
        assert!(
            output.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `switchboard-reason` trailer of a refusal.
pub fn reason(status: &tonic::Status) -> String {
    trailer(status, "switchboard-reason")
}

/// A trailer of a refusal, empty when absent.
pub fn trailer(status: &tonic::Status, key: &str) -> String {
    status
        .metadata()
        .get(key)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A RouteCall for `called` from no caller id, as gateway call `gateway_call_id`.
pub fn route_request(called: &str, gateway_call_id: &str) -> RouteCallRequest {
    RouteCallRequest {
        called_number: called.into(),
        caller_number: String::new(),
        gateway_call_id: gateway_call_id.into(),
        default_region: String::new(),
    }
}

/// An EndCall for `call_id`: the caller hung up after the agent answered.
pub fn end_request(call_id: &str) -> EndCallRequest {
    let now = std::time::SystemTime::now();
    EndCallRequest {
        call_id: call_id.into(),
        end_reason: EndReason::CallerHangup as i32,
        ended_at: Some(now.into()),
        answered_at: Some((now - Duration::from_secs(30)).into()),
    }
}

/// A RecordUsage for `call_id` under `key`: `(metric, quantity)` items.
pub fn usage_request(call_id: &str, key: &str, items: &[(&str, f64)]) -> RecordUsageRequest {
    RecordUsageRequest {
        call_id: call_id.into(),
        idempotency_key: key.into(),
        items: items
            .iter()
            .map(|(metric, quantity)| UsageItem {
                metric: (*metric).into(),
                quantity: *quantity,
            })
            .collect(),
    }
}

/// The first column of the first row of `sql`, as `i64` (a count).
pub async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

/// A sample of the daemon's `/metrics` (0 when absent): `series` is the
/// metric name with its labels, as rendered (`name{label="value"}`).
pub async fn metric(admin_addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(admin_addr, "/metrics").await;
    body.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The `switchboard` binary with an empty environment (and `PATH`).
pub fn switchboard_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// `switchboard serve` as a real process on a test database, for what only
/// a process can show: a `SIGKILL`, a `SIGTERM`, a restart on the same spool.
pub struct DaemonProcess {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    child: Child,
}

impl DaemonProcess {
    /// Starts the daemon on `db_name` through the pooler on `pooler_port`,
    /// spooling to `spool_dir`, with `extra` settings, and waits until it is
    /// ready.
    pub async fn start(
        stack: &Stack,
        db_name: &str,
        pooler_port: u16,
        spool_dir: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::launch(
            stack,
            db_name,
            pooler_port,
            spool_dir,
            extra,
            Stdio::inherit(),
        )
        .await
    }

    /// Like [`DaemonProcess::start`], with the daemon's log (stderr)
    /// written to `log` instead of the test's output.
    pub async fn start_logging_to(
        stack: &Stack,
        db_name: &str,
        pooler_port: u16,
        spool_dir: &std::path::Path,
        extra: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Self {
        let log = std::fs::File::create(log).expect("create the daemon's log file");
        Self::launch(stack, db_name, pooler_port, spool_dir, extra, log.into()).await
    }

    async fn launch(
        stack: &Stack,
        db_name: &str,
        pooler_port: u16,
        spool_dir: &std::path::Path,
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let grpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = switchboard_command()
            .arg("serve")
            .env("DATABASE_URL", stack.pooled_url(pooler_port, db_name))
            .env("DATABASE_DIRECT_URL", stack.daemon_direct_url(db_name))
            .env("REDIS_URL", &stack.redis_url)
            .envs(
                stack
                    .ca_file
                    .iter()
                    .map(|ca| ("SWITCHBOARD_REDIS_CA_FILE", ca.as_os_str())),
            )
            .env("SWITCHBOARD_REDIS_KEY_PREFIX", db_name)
            .env("SWITCHBOARD_GRPC_ADDR", grpc_addr.to_string())
            .env("SWITCHBOARD_ADMIN_ADDR", admin_addr.to_string())
            .env("SWITCHBOARD_SPOOL_DIR", spool_dir)
            .env("SWITCHBOARD_LOG", "warn")
            // as config_for: a debug build under every test at once
            .env("SWITCHBOARD_MAX_QUEUE_DELAY", "10s")
            .env("SWITCHBOARD_QUEUE_DELAY_TARGET", "10s")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start switchboard serve");
        let mut daemon = Self {
            grpc_addr,
            admin_addr,
            child,
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("switchboard serve exited at start: {status}");
            }
            if tokio::net::TcpStream::connect(admin_addr).await.is_ok()
                && http_get(admin_addr, "/readyz").await.0 == 200
            {
                break;
            }
            assert!(Instant::now() < until, "the daemon did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    pub async fn client(&self) -> CallRouterClient<Channel> {
        CallRouterClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect to the daemon")
    }

    /// `SIGKILL`: no drain, no flush, nothing but what is on disk survives.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// `SIGTERM`, then the exit status, waiting at most `limit`.
    pub async fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the daemon did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
