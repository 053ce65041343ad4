//! Redis behind Sentinel (`redis.sentinel`): which node is the master now, as the
//! sentinels say, and a client for it.
//!
//! The master is reached the way the sentinels are: the same scheme (`rediss://` is
//! TLS, verified against the same roots), credentials and database, with the host and
//! port a sentinel names. A node is taken as the master only once it says so itself
//! (`ROLE`), so a sentinel that has not yet noticed a failover cannot send writes to a
//! demoted node for long: it refuses them (`READONLY`) and the gateway asks again.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, Value};

use crate::config::SentinelConfig;

/// A master's address, as a sentinel names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MasterAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl std::fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

pub(crate) struct Sentinels {
    master: String,
    nodes: Vec<ConnectionInfo>,
    certs: Option<TlsCertificates>,
}

impl Sentinels {
    pub(crate) fn new(
        cfg: &SentinelConfig,
        certs: Option<TlsCertificates>,
    ) -> redis::RedisResult<Sentinels> {
        let nodes = cfg
            .urls
            .iter()
            .map(|u| u.as_str().into_connection_info())
            .collect::<Result<_, _>>()?;
        Ok(Sentinels {
            master: cfg.master.clone(),
            nodes,
            certs,
        })
    }

    fn client(&self, info: ConnectionInfo) -> redis::RedisResult<Client> {
        match &self.certs {
            Some(certs) => Client::build_with_tls(info, certs.clone()),
            None => Client::open(info),
        }
    }

    /// The master's address, from the first sentinel (in the configured order) that
    /// answers within `limit`; else why none did.
    pub(crate) async fn master_addr(&self, limit: Duration) -> Result<MasterAddr, String> {
        let mut why = Vec::new();
        for node in &self.nodes {
            let asked = tokio::time::timeout(limit, self.ask(node.clone())).await;
            match asked {
                Ok(Ok(Some((host, port)))) => return Ok(MasterAddr { host, port }),
                Ok(Ok(None)) => why.push(format!(
                    "{}: monitors no master named {:?}",
                    node.addr, self.master
                )),
                Ok(Err(e)) => why.push(format!("{}: {e}", node.addr)),
                Err(_) => why.push(format!("{}: timed out", node.addr)),
            }
        }
        Err(why.join("; "))
    }

    async fn ask(&self, node: ConnectionInfo) -> redis::RedisResult<Option<(String, u16)>> {
        let mut con = self
            .client(node)?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut con)
            .await
    }

    /// A client for the master at `addr`, reached like the first sentinel.
    pub(crate) fn master_client(&self, addr: &MasterAddr) -> redis::RedisResult<Client> {
        let Some(template) = self.nodes.first() else {
            return Err((redis::ErrorKind::InvalidClientConfig, "no sentinels").into());
        };
        let (host, port) = (addr.host.clone(), addr.port);
        let addr = match &template.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        self.client(ConnectionInfo {
            addr,
            redis: template.redis.clone(),
        })
    }
}

/// Whether the node behind `con` says it is a master (`ROLE`).
pub(crate) async fn is_master(con: &mut impl ConnectionLike) -> redis::RedisResult<bool> {
    let role: Vec<Value> = redis::cmd("ROLE").query_async(con).await?;
    Ok(matches!(role.first(), Some(Value::BulkString(b)) if b == b"master"))
}
