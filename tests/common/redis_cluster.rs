//! A throwaway Redis Cluster: `n` primaries (no replicas) started as [`RedisServer`]
//! cluster nodes on free ports, joined and given all 16384 slots by
//! `redis-cli --cluster create`, and ready once every node reports `cluster_state:ok`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::process::find_binary;
use super::redis_server::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        assert!(n >= 3, "Redis Cluster needs at least 3 primaries");
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start_cluster_node()).collect();
        let out = Command::new(redis_cli())
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
        let cluster = RedisCluster { nodes };
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
            .map(|s| format!("redis://127.0.0.1:{}", s.port()))
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

fn redis_cli() -> std::path::PathBuf {
    find_binary("redis-cli", &[])
        .unwrap_or_else(|| panic!("redis-cli not found: apt-get install -y redis-tools"))
}
