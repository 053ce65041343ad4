//! Accept loops (public, admin), timeouts, graceful drain.
use std::net::SocketAddr;

use crate::Config;

/// A started gateway: its bound addresses and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

pub async fn start(_c: Config) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    unimplemented!()
}

pub async fn run(
    _c: Config,
    _s: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}
