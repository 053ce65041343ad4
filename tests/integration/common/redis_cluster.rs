//! A throwaway Redis Cluster: `n` primaries (no replicas) started as [`RedisServer`]
//! cluster nodes on free ports, joined and given all 16384 slots by
//! `redis-cli --cluster create`, and ready once every node reports `cluster_state:ok`.
//! [`RedisCluster::start_tls`] makes one that speaks TLS only (`rediss://` seeds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::find_binary;
use super::redis_server::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// TLS only: the CA file redis-cli verifies the nodes with.
    tls_ca: Option<PathBuf>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let nodes = (0..n).map(|_| RedisServer::start_cluster_node()).collect();
        Self::create(nodes, None)
    }

    /// A cluster whose nodes speak TLS only, with `ca`'s server certificate (which must
    /// name 127.0.0.1); [`RedisCluster::urls`] are then `rediss://`.
    pub fn start_tls(n: usize, ca: &super::TestCa) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| RedisServer::start_tls_cluster_node(ca))
            .collect();
        let ca_file = nodes[0].dir().join("ca.pem");
        Self::create(nodes, Some(ca_file))
    }

    fn create(nodes: Vec<RedisServer>, tls_ca: Option<PathBuf>) -> RedisCluster {
        assert!(nodes.len() >= 3, "Redis Cluster needs at least 3 primaries");
        let out = Command::new(redis_cli())
            .args(tls_args(tls_ca.as_deref()))
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|s| format!("127.0.0.1:{}", s.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, tls_ca };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|s| {
            cluster
                .cli(s.port(), &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "cluster never reached state ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The seed URLs, as `redis.cluster_urls` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|s| s.url().trim_end_matches("/0").to_owned())
            .collect()
    }

    /// `cluster_urls` as a TOML array.
    pub fn urls_toml(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Runs `redis-cli --raw -p <port> <args…>` on one node and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(redis_cli())
            .args(tls_args(self.tls_ca.as_deref()))
            .args(["--raw", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the node serving `key`'s slot.
    pub fn port_for_key(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let shards = self.cli(self.nodes[0].port(), &["CLUSTER", "SLOTS"]);
        let nums: Vec<i64> = shards
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // Each range prints as: start, end, then per node ip (skipped), port, id (skipped).
        let mut i = 0;
        while i + 2 < nums.len() {
            let (start, end, port) = (nums[i], nums[i + 1], nums[i + 2]);
            if (start..=end).contains(&(slot as i64)) {
                return u16::try_from(port).expect("a port");
            }
            i += 3;
        }
        panic!("no node serves slot {slot}: {shards}")
    }
}

/// redis-cli's arguments for a TLS cluster: `--tls --cacert <ca>`; none otherwise.
fn tls_args(ca: Option<&Path>) -> Vec<std::ffi::OsString> {
    match ca {
        Some(ca) => vec!["--tls".into(), "--cacert".into(), ca.into()],
        None => Vec::new(),
    }
}

fn redis_cli() -> std::path::PathBuf {
    find_binary("redis-cli", &[])
        .unwrap_or_else(|| panic!("redis-cli not found: apt-get install -y redis-tools"))
}
