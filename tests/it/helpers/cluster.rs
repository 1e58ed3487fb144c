//! Redis topologies for the tests: the stack's standalone Redis or its Redis
//! Cluster, and a Redis Cluster of a test's own, whose nodes it may kill and
//! start again (deploy/local/redis-cluster makes both clusters).

use std::{path::PathBuf, process::Command, time::Duration};

use redis::cluster::ClusterClient;
use secrecy::SecretString;
use switchboard::{config::ServeConfig, store::redis_link::RedisMode};

use super::{eventually, signal, Stack};

/// Which of the stack's two Redis deployments a daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Cluster,
}

impl Topology {
    /// Points `config` at this topology of the stack, over TLS.
    pub fn apply(self, config: &mut ServeConfig) {
        let stack = Stack::from_env();
        match self {
            Topology::Standalone => {
                config.redis.redis_url = SecretString::from(stack.redis_url);
                config.redis.redis_mode = RedisMode::Standalone;
            }
            Topology::Cluster => {
                config.redis.redis_url = SecretString::from(stack.redis_cluster_url);
                config.redis.redis_mode = RedisMode::Cluster;
            }
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/redis-cluster")
}

fn run(args: &[&str]) {
    let status = Command::new(script())
        .args(args)
        .status()
        .expect("run deploy/local/redis-cluster");
    assert!(status.success(), "redis-cluster {args:?}");
}

/// Ports the cluster takes from its first: six nodes, their TLS ports and
/// their cluster bus.
const PORTS: u16 = 26;

/// A Redis Cluster of three masters and three replicas of a test's own.
pub struct PrivateRedisCluster {
    dir: tempfile::TempDir,
    base: u16,
    tls_dir: PathBuf,
}

impl PrivateRedisCluster {
    pub async fn start() -> Self {
        let stack = Stack::from_env();
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-cluster-")
            .tempdir()
            .expect("temporary directory");
        let tls_dir = stack.state_dir.join("tls");
        let base = free_port_block(PORTS);
        let cluster = Self { dir, base, tls_dir };
        let args = cluster.args();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&[&["up"], &args[..]].concat());
        })
        .await
        .unwrap();
        cluster
    }

    fn args(&self) -> Vec<String> {
        vec![
            self.dir.path().display().to_string(),
            self.base.to_string(),
            self.tls_dir.display().to_string(),
        ]
    }

    /// The seed nodes, in plaintext, as `REDIS_URL` lists them.
    pub fn url(&self) -> String {
        (0..3)
            .map(|i| format!("redis://127.0.0.1:{}/", self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Points `config` at this cluster.
    pub fn apply(&self, config: &mut ServeConfig) {
        config.redis.redis_url = SecretString::from(self.url());
        config.redis.redis_mode = RedisMode::Cluster;
    }

    fn node_port(&self, node: u16) -> u16 {
        self.base + node - 1
    }

    async fn node(&self, node: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.node_port(node)))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a cluster node")
    }

    /// A connection to the whole cluster, for a test's own reads and writes.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = (1..=6)
            .map(|n| format!("redis://127.0.0.1:{}/", self.node_port(n)))
            .collect();
        ClusterClient::builder(seeds)
            .retries(10)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .unwrap()
            .get_async_connection()
            .await
            .expect("the test's cluster")
    }

    /// The node (1-6) that is the master of `key`'s slot now, as `asking`
    /// (a node that is up) sees it; `None` while the master it knows has
    /// failed and no replica has taken over yet.
    pub async fn master_of(&self, key: &str, asking: u16) -> Option<u16> {
        let mut c = self.node(asking).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<u16>(), to.parse::<u16>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("node address");
                // a node may be listed by its TLS port (base + 10 + n - 1)
                return Some((port - self.base) % 10 + 1);
            }
        }
        None
    }

    /// Kills node `node` (1-6) with `SIGKILL`: no goodbye to the others.
    pub fn kill(&self, node: u16) {
        let pidfile = self.dir.path().join(format!("node{node}/redis.pid"));
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .expect("pidfile")
            .trim()
            .parse()
            .expect("pid");
        signal(pid, "KILL");
        let _ = std::fs::remove_file(pidfile);
    }

    /// Starts node `node` again: empty, it rejoins as a replica.
    pub async fn restart(&self, node: u16) {
        let args = self.args();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&[&["node"], &args[..], &[node.to_string().as_str()]].concat());
        })
        .await
        .unwrap();
    }

    /// Waits until `asking` sees every slot served by a master that is up.
    pub async fn wait_until_whole(&self, asking: u16, within: Duration) {
        eventually("the cluster serves every slot", within, || async {
            let mut c = self.node(asking).await;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        })
        .await;
    }
}

impl PrivateRedisCluster {
    /// Empties every master, as a cluster restarted without persistence
    /// comes back.
    pub async fn flush(&self) {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        let mut c = self.connection().await;
        let everywhere = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        c.route_command(&redis::cmd("FLUSHALL"), everywhere)
            .await
            .expect("flush the cluster");
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        run(&["down", &self.dir.path().display().to_string()]);
    }
}

/// The first of `count` consecutive free ports on 127.0.0.1, below the
/// kernel's ephemeral range (from 32768): a node killed and started again
/// must find its port free, not taken by some connection's local end.
fn free_port_block(count: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let base: u16 = rng.random_range(20_000..(32_000 - count));
        let free = (base..base + count)
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}
