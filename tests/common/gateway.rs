//! `Gateway`: a flashgate started in-process through the library (`flashgate::start`),
//! on the ports its config names (127.0.0.1:0 in [`super::TestConfig`]).

use std::net::SocketAddr;

pub struct Gateway {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub running: flashgate::Running,
}

impl Gateway {
    /// Starts the gateway on the current Tokio runtime; panics if it does not start.
    pub async fn start(config: flashgate::Config) -> Gateway {
        let running = flashgate::start(config)
            .await
            .unwrap_or_else(|e| panic!("flashgate did not start: {e}"));
        Gateway {
            public_addr: running.public_addr,
            admin_addr: running.admin_addr,
            running,
        }
    }

    /// `http://<public addr><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public_addr)
    }

    /// `http://<admin addr><path>`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }
}
