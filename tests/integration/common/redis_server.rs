//! A throwaway `redis-server` per test: free loopback port, fresh directory, no RDB
//! snapshots, optional AOF. Can be stopped (SIGTERM), killed (SIGKILL) and restarted on
//! the same port and directory, to test fail-closed behaviour and recovery. Or a Redis
//! that speaks TLS only ([`RedisServer::start_tls`]).
//!
//! The methods block the calling thread for the few milliseconds Redis needs to start or
//! stop; that is fine inside `#[tokio::test]`, the gateway under test just pauses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{find_binary, free_port, log_tail, sigterm, wait_or_kill};

const INSTALL_HINT: &str = "redis-server not found on PATH. Integration tests need a real Redis: \
     run ./scripts/test.sh (installs it), or `apt-get install -y redis-server`.";

pub struct RedisServer {
    port: u16,
    /// Working directory (`--dir`): the AOF and the log live here, across restarts.
    dir: TempDir,
    aof: bool,
    /// Extra `redis-server` arguments (cluster mode), the same on every restart.
    extra: Vec<String>,
    /// TLS only: `port` is the `--tls-port`, there is no plain TCP port, and this
    /// helper's own checks go through the unix socket `redis.sock` in `dir`.
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis without persistence: a restart loses all data.
    pub fn start() -> RedisServer {
        Self::start_inner(false, Vec::new(), None)
    }

    /// Starts Redis without persistence speaking TLS only (`--port 0`, `--tls-port`),
    /// presenting `ca`'s server certificate (which must name 127.0.0.1), asking no
    /// client certificate. [`RedisServer::url`] is then `rediss://`.
    pub fn start_tls(ca: &super::TestCa) -> RedisServer {
        Self::start_inner(false, Vec::new(), Some(ca))
    }

    /// Starts an empty Redis Cluster node with AOF (no slots yet; see
    /// [`super::RedisCluster`]), so it can be restarted with its data. Its cluster bus
    /// listens on a free port of its own: `port + 10000` may not exist.
    pub fn start_cluster_node() -> RedisServer {
        Self::cluster_node(None)
    }

    /// A cluster node speaking TLS only, to clients and on its cluster bus
    /// (`tls-cluster yes`), with `ca`'s server certificate.
    pub fn start_tls_cluster_node(ca: &super::TestCa) -> RedisServer {
        Self::cluster_node(Some(ca))
    }

    fn cluster_node(tls: Option<&super::TestCa>) -> RedisServer {
        let bus = free_port().to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            &bus,
        ];
        let mut args = args.map(str::to_string).to_vec();
        if tls.is_some() {
            args.extend(["--tls-cluster", "yes"].map(String::from));
        }
        Self::start_inner(true, args, tls)
    }

    /// Starts a replica of `primary` (`--replicaof`), without persistence.
    pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let args = ["--replicaof", "127.0.0.1", &primary.port().to_string()].map(String::from);
        Self::start_inner(false, args.to_vec(), None)
    }

    /// Starts Redis with `appendonly yes` and `appendfsync always`: every acknowledged
    /// write survives `stop()`, `kill()` and `restart()`.
    pub fn start_with_aof() -> RedisServer {
        Self::start_inner(true, Vec::new(), None)
    }

    fn start_inner(aof: bool, mut extra: Vec<String>, tls: Option<&super::TestCa>) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("flashgate-redis-")
            .tempdir()
            .expect("tempdir for redis");
        if let Some(ca) = tls {
            let [ca_file, cert, key] = ca.write_files(dir.path());
            let sock = dir.path().join("redis.sock");
            for (flag, path) in [
                ("--tls-ca-cert-file", ca_file),
                ("--tls-cert-file", cert),
                ("--tls-key-file", key),
                ("--unixsocket", sock),
            ] {
                extra.push(flag.into());
                extra.push(path.to_str().expect("UTF-8 path").into());
            }
            extra.extend(["--tls-auth-clients", "no"].map(String::from));
        }
        let mut server = RedisServer {
            port: 0,
            dir,
            aof,
            extra,
            tls: tls.is_some(),
            child: None,
        };
        // A free port can be taken by someone else before Redis binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start after 5 attempts:\n{last}");
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://` for a TLS Redis.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The working directory (AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes Redis (SIGSTOP) until the guard is dropped (SIGCONT): it keeps its
    /// connections and queues what arrives, as a stalled host or a long fork would.
    pub fn freeze(&self) -> Frozen {
        let pid = self.child.as_ref().expect("redis running").id();
        signal(pid, "-STOP");
        Frozen(pid)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Graceful stop (SIGTERM; Redis flushes the AOF), waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
    }

    /// Crash (SIGKILL): no shutdown work at all.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Redis if it runs, then starts it again on the same port and directory.
    /// Restarts this (stopped or killed) Redis as a replica of the one on `port`: how an
    /// old primary without persistence must come back after a failover. Started empty as a
    /// master instead, a sentinel still naming it may turn the new master into *its*
    /// replica, and the new master's data is gone (seen in the chaos drill).
    pub fn restart_as_replica_of(&mut self, port: u16) {
        if let Some(i) = self.extra.iter().position(|a| a == "--replicaof") {
            self.extra.drain(i..i + 3);
        }
        self.extra
            .extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
        self.restart();
    }

    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; give it a few tries in case the OS is slow.
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(log) => last = log,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server did not restart on port {}:\n{last}",
            self.port
        );
    }

    /// Spawns redis-server and waits until it answers PING. On failure returns the log.
    fn spawn(&mut self) -> Result<(), String> {
        let bin = find_binary("redis-server", &[PathBuf::from("/usr/local/bin")])
            .unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port"]);
        } else {
            cmd.arg("--port");
        }
        cmd.arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            // A replica's full sync starts at once (Redis waits 5 s by default for more
            // replicas to share a diskless one): failover drills need no such pause.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status}; log:\n{}",
                    log_tail(&log, 20)
                ));
            }
            // Check the pid too: if another process won the race for the port, a Redis
            // may answer there that is not ours.
            let at = self.endpoint();
            if ping(&at) && server_pid(&at) == Some(child.id()) {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("no PONG within 10s; log:\n{}", log_tail(&log, 20)))
    }
}

impl RedisServer {
    /// Where this helper talks plain RESP to the server.
    fn endpoint(&self) -> Endpoint {
        match self.tls {
            true => Endpoint::Unix(self.dir.path().join("redis.sock")),
            false => Endpoint::Tcp(self.port),
        }
    }
}

pub(super) enum Endpoint {
    Tcp(u16),
    Unix(PathBuf),
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Endpoint {
    fn open(&self) -> Option<Box<dyn Stream>> {
        let timeout = Some(Duration::from_secs(1));
        Some(match self {
            Endpoint::Tcp(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port)).ok()?;
                s.set_read_timeout(timeout).ok()?;
                Box::new(s)
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path).ok()?;
                s.set_read_timeout(timeout).ok()?;
                Box::new(s)
            }
        })
    }
}

/// Sends one RESP command and returns what arrives until `done(reply)` holds (or 1s).
pub(super) fn roundtrip(
    at: &Endpoint,
    command: &[u8],
    done: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut s = at.open()?;
    s.write_all(command).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&reply) {
        let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
        reply.extend_from_slice(&buf[..n]);
    }
    Some(reply)
}

/// Whether Redis on `port` answers `PING` with `+PONG` (not `-LOADING`).
pub(super) fn ping(at: &Endpoint) -> bool {
    let reply = roundtrip(at, b"*1\r\n$4\r\nPING\r\n", |r| r.ends_with(b"\r\n"));
    reply.is_some_and(|r| r.starts_with(b"+PONG"))
}

/// The `process_id` from `INFO server`.
/// A frozen Redis; dropping it lets Redis run again.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

pub(super) fn server_pid(at: &Endpoint) -> Option<u32> {
    let cmd = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n";
    let has_pid = |r: &[u8]| {
        let text = String::from_utf8_lossy(r);
        text.split_once("process_id:")
            .is_some_and(|(_, rest)| rest.contains("\r\n"))
    };
    let reply = roundtrip(at, cmd, has_pid)?;
    let text = String::from_utf8_lossy(&reply);
    let (_, rest) = text.split_once("process_id:")?;
    rest.split("\r\n").next()?.trim().parse().ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
