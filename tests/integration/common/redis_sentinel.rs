//! A throwaway Redis Sentinel (`redis-server <conf> --sentinel`, the same binary as
//! Redis) on a free loopback port, monitoring one master under a name. Failure detection
//! is fast for tests: a master is down after 1 s without an answer.
//!
//! Sentinel rewrites its config file as it learns the topology, so each one has its own
//! directory. Killed (SIGKILL) on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{find_binary, free_port, log_tail};
use super::redis_server::{ping, roundtrip, server_pid, Endpoint};
use super::RedisServer;

pub struct RedisSentinel {
    port: u16,
    _dir: TempDir,
    child: Child,
}

impl RedisSentinel {
    /// A sentinel watching `master` as `name`; `quorum` sentinels must agree it is down.
    pub fn start(name: &str, master: &RedisServer, quorum: u32) -> RedisSentinel {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::spawn(name, master, quorum) {
                Ok(s) => return s,
                Err(log) => last = log,
            }
        }
        panic!("redis sentinel did not start after 5 attempts:\n{last}");
    }

    fn spawn(name: &str, master: &RedisServer, quorum: u32) -> Result<RedisSentinel, String> {
        let bin = find_binary("redis-server", &[PathBuf::from("/usr/local/bin")])
            .expect("redis-server not found on PATH: run ./scripts/test.sh (installs it)");
        let dir = tempfile::Builder::new()
            .prefix("flashgate-sentinel-")
            .tempdir()
            .expect("tempdir for sentinel");
        let port = free_port();
        let log = dir.path().join("sentinel.log");
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {name} 127.0.0.1 {master} {quorum}\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = dir.path().display(),
            log = log.display(),
            master = master.port(),
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let mut child = Command::new(bin)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server --sentinel: {e}"))?;
        let at = Endpoint::Tcp(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}:\n{}", log_tail(&log, 20)));
            }
            if ping(&at) && server_pid(&at) == Some(child.id()) {
                return Ok(RedisSentinel {
                    port,
                    _dir: dir,
                    child,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("no PONG within 10s:\n{}", log_tail(&log, 20)))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What `SENTINEL <args…>` answers, as raw RESP text (enough to look for a port).
    pub fn ask(&self, args: &[&str]) -> String {
        let mut cmd = format!("*{}\r\n$8\r\nSENTINEL\r\n", args.len() + 1);
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        // Replies here are small: one read's worth once the last CRLF is in.
        let reply = roundtrip(&Endpoint::Tcp(self.port), cmd.as_bytes(), |r| {
            r.ends_with(b"\r\n")
        });
        String::from_utf8_lossy(&reply.unwrap_or_default()).into_owned()
    }

    /// The port of the master this sentinel names for `name`.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let reply = self.ask(&["get-master-addr-by-name", name]);
        reply.lines().nth(4)?.trim().parse().ok()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `replica` is in sync with its primary, as `WAIT` sees it: its link is up
/// and a write on the primary is acknowledged by a replica within a second. (Redis delays
/// a first diskless sync by 5 s, and a drill before it would lose everything; and the
/// primary counts a replica only once it is `online`, which may come after the replica
/// reports `master_link_status:up`.)
pub async fn in_sync(replica: &RedisServer) {
    let client = redis::Client::open(replica.url()).expect("replica url");
    super::eventually(
        "the replica in sync with its primary",
        Duration::from_secs(30),
        || async {
            let mut con = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut con)
                .await
                .ok()?;
            if !info.contains("master_link_status:up") {
                return None;
            }
            let port = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("master_port:"))?;
            let primary = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
            let mut p = primary.get_multiplexed_async_connection().await.ok()?;
            let _: i64 = redis::cmd("INCR")
                .arg("test:in-sync")
                .query_async(&mut p)
                .await
                .ok()?;
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(1000)
                .query_async(&mut p)
                .await
                .ok()?;
            (acked >= 1).then_some(())
        },
    )
    .await;
}

/// A Sentinel deployment for a drill: a replica of the primary, in sync, and three
/// sentinels (quorum 2) watching the primary as `name`, each knowing the replica and
/// the other two (so a failover can be agreed and the replica promoted).
pub struct SentinelTrio {
    pub name: &'static str,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisSentinel>,
}

impl SentinelTrio {
    pub async fn start(name: &'static str, primary: &RedisServer) -> SentinelTrio {
        let replica = RedisServer::start_replica_of(primary);
        in_sync(&replica).await;
        let sentinels: Vec<RedisSentinel> = (0..3)
            .map(|_| RedisSentinel::start(name, primary, 2))
            .collect();
        let port = replica.port().to_string();
        super::eventually(
            "every sentinel knows the replica and the other sentinels",
            Duration::from_secs(30),
            || async {
                sentinels
                    .iter()
                    .all(|s| {
                        s.ask(&["replicas", name]).contains(&port)
                            && s.ask(&["sentinels", name]).starts_with("*2")
                    })
                    .then_some(())
            },
        )
        .await;
        SentinelTrio {
            name,
            replica,
            sentinels,
        }
    }

    /// Points `cfg` at the sentinels (`redis.sentinel` instead of `redis.url`).
    pub fn configure(&self, cfg: &mut super::TestConfig) {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{:?}", s.url()))
            .collect();
        let table = format!(
            "{{ master = {:?}, urls = [{}] }}",
            self.name,
            urls.join(", ")
        );
        cfg.unset("redis", "url").set("redis", "sentinel", &table);
    }

    /// The port of the master the first sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels[0].master_port(self.name)
    }
}
