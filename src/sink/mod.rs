//! Where paid orders (and refund events) go once they leave Redis: one small trait, one
//! file per sink. A sink reports success only once the order is durably stored; it must
//! be idempotent by `order_id` because delivery is at least once.

pub mod http;
pub mod postgres;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SinkKind};
use crate::stock::outbox::Entry;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink unreachable: {0}")]
    Unreachable(String),
    #[error("sink refused: {0}")]
    Refused(String),
    #[error("sink configuration: {0}")]
    Config(String),
}

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

pub trait Sink: Send + Sync {
    /// The `sink` label in metrics.
    fn name(&self) -> &'static str;
    /// Durably stores one paid order or refund event; `Ok` only when it is stored.
    fn deliver<'a>(&'a self, entry: &'a Entry) -> DeliverFuture<'a>;
}

/// The sink the configuration asks for.
pub async fn from_config(cfg: &Config) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match cfg.orders.sink {
        SinkKind::Http => {
            let url = cfg
                .orders
                .http_url
                .as_deref()
                .ok_or_else(|| SinkError::Config("orders.http_url missing".into()))?;
            Arc::new(http::HttpSink::new(
                url,
                cfg.secrets.sink_secret.as_deref(),
                cfg.upstream.timeout.0,
                cfg.upstream.ca_file.as_deref(),
            )?)
        }
        SinkKind::Postgres => {
            let url = cfg
                .secrets
                .postgres_url
                .as_deref()
                .ok_or_else(|| SinkError::Config("postgres url missing".into()))?;
            // The same bound on one delivery as the http sink's.
            Arc::new(postgres::PostgresSink::new(
                url,
                cfg.upstream.timeout.0,
                cfg.orders.postgres_ca_file.as_deref(),
            )?)
        }
    })
}
