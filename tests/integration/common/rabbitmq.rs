//! A throwaway RabbitMQ broker per test: Debian's `rabbitmq-server`, run straight from
//! /usr/lib/rabbitmq/bin (the /usr/sbin wrapper would switch to the `rabbitmq` user) in a
//! fresh directory that holds its data, logs, config and Erlang cookie (`HOME`).
//!
//! Every port is its own: AMQP (and AMQPS with [`RabbitMq::start_tls`]) on 127.0.0.1,
//! Erlang distribution, and an epmd of its own (`ERL_EPMD_PORT`), so brokers of tests
//! running side by side never meet. No plugins (the management plugin is off). Starting
//! takes seconds: a test shares one broker between its steps where it can.
//!
//! [`RabbitMq::kill`] is `kill -9` of the whole broker (its process group);
//! [`RabbitMq::restart`] brings it back on the same ports and data. Dropped, the broker
//! is killed and its epmd stopped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};
use tempfile::TempDir;

use super::process::{free_port, log_tail};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const INSTALL_HINT: &str = "rabbitmq-server not found at /usr/lib/rabbitmq/bin/rabbitmq-server. \
     The rabbitmq sink's tests need a real broker: run ./scripts/test.sh (installs it), or \
     `apt-get install -y rabbitmq-server`.";
/// A cold start on a busy 2-core machine has taken 17 s.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct RabbitMq {
    dir: TempDir,
    node: String,
    port: u16,
    tls_port: Option<u16>,
    dist_port: u16,
    epmd_port: u16,
    child: Option<Child>,
    /// "Server startup complete" lines in the log before the current start.
    starts: usize,
}

/// One message taken from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub app_id: Option<String>,
    /// The `idempotency-key` header.
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl RabbitMq {
    /// Starts a broker with an AMQP listener; panics (with an install hint) when
    /// rabbitmq-server is missing.
    pub fn start() -> RabbitMq {
        Self::start_inner(None)
    }

    /// Like [`RabbitMq::start`], plus an AMQPS listener presenting `ca`'s server
    /// certificate (which must name 127.0.0.1).
    pub fn start_tls(ca: &super::TestCa) -> RabbitMq {
        Self::start_inner(Some(ca))
    }

    fn start_inner(tls: Option<&super::TestCa>) -> RabbitMq {
        assert!(Path::new(SERVER).is_file(), "{INSTALL_HINT}");
        let dir = tempfile::Builder::new()
            .prefix("flashgate-rabbitmq-")
            .tempdir()
            .expect("tempdir for rabbitmq");
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut mq = RabbitMq {
            node: format!(
                "fg{}@localhost",
                tag.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
            dir,
            port: free_port(),
            tls_port: tls.map(|_| free_port()),
            dist_port: free_port(),
            epmd_port: free_port(),
            child: None,
            starts: 0,
        };
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{}\nlog.console = false\nlog.file.level = info\n",
            mq.port
        );
        if let (Some(ca), Some(port)) = (tls, mq.tls_port) {
            let [ca_pem, cert, key] = ca.write_files(mq.dir.path());
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca_pem.display(),
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(mq.path("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        // No plugins at all: the management plugin's listener is not wanted.
        std::fs::write(mq.path("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        mq.spawn()
            .unwrap_or_else(|e| panic!("rabbitmq-server did not start:\n{e}"));
        mq
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (guest may connect from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://…` on the TLS listener ([`RabbitMq::start_tls`] only).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a broker started with start_tls");
        format!("amqps://guest:guest@127.0.0.1:{port}/%2f")
    }

    /// `kill -9` of every process of the broker; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The broker runs in a process group of its own: the shell script, erl,
            // beam.smp and its helpers all go at once.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the killed broker again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        // The ports were ours a moment ago; give the OS a few tries to release them.
        for _ in 0..5 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("rabbitmq-server did not restart:\n{last}");
    }

    /// Takes every message now in `queue` (acknowledging each), in queue order.
    pub async fn take_all(&self, queue: &str) -> Vec<Received> {
        Self::take_all_at(&self.url(), queue).await
    }

    /// [`RabbitMq::take_all`] from the broker at `url`, without holding the broker.
    pub async fn take_all_at(url: &str, queue: &str) -> Vec<Received> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("a test connection to the broker");
        let ch = conn.create_channel().await.expect("a channel");
        let mut out = Vec::new();
        while let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            let p = &msg.delivery.properties;
            let header = p
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("idempotency-key").cloned());
            out.push(Received {
                message_id: p.message_id().as_ref().map(|s| s.to_string()),
                content_type: p.content_type().as_ref().map(|s| s.to_string()),
                delivery_mode: *p.delivery_mode(),
                app_id: p.app_id().as_ref().map(|s| s.to_string()),
                idempotency_key: match header {
                    Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                    _ => None,
                },
                body: msg.delivery.data.clone(),
            });
            msg.delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("basic.ack");
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.path(&format!("log/{}.log", self.node))
    }

    /// How many times the log says the broker finished starting.
    fn started_count(&self) -> usize {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.matches("Server startup complete").count()
    }

    /// Spawns the broker and waits until its log says it started. On failure returns
    /// what it printed and the log's tail.
    fn spawn(&mut self) -> Result<(), String> {
        self.starts = self.started_count();
        let out = self.path("server.out");
        let stdout = std::fs::File::create(&out).expect("create server.out");
        let d = |name: &str| self.path(name);
        let mut cmd = Command::new(SERVER);
        cmd.env("HOME", self.dir.path())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d("rabbitmq.pid"))
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("dup server.out"))
            .stderr(stdout)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SERVER}: {e}"));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status}\n{}\nlog:\n{}",
                    log_tail(&out, 20),
                    log_tail(&self.log(), 20)
                ));
            }
            if self.started_count() > self.starts {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        self.kill();
        Err(format!(
            "not started within {START_TIMEOUT:?}\n{}\nlog:\n{}",
            log_tail(&out, 20),
            log_tail(&self.log(), 20)
        ))
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
        // epmd daemonized itself (a session of its own): ask it to go. It refuses while
        // it still lists the node, which it forgets a moment after the node died.
        let epmd = super::process::find_binary("epmd", &[PathBuf::from("/usr/lib/erlang/bin")]);
        let Some(epmd) = epmd else { return };
        for _ in 0..40 {
            let out = Command::new(&epmd)
                .args(["-port", &self.epmd_port.to_string(), "-kill"])
                .output();
            match out {
                Ok(o) if String::from_utf8_lossy(&o.stdout).contains("not allowed") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return,
            }
        }
    }
}
