//! Where paid orders (and refund events) go once they leave Redis: one small trait, one
//! file per sink. A sink reports success only once the order is durably stored; it must
//! be idempotent by `order_id` because delivery is at least once.
//!
//! A sink takes a batch (at most [`Sink::batch_size`] entries) and answers for each
//! entry, so the outbox acknowledges exactly what was stored: the http sink takes one
//! entry per request, PostgreSQL a multi-row INSERT per batch, RabbitMQ a publish per
//! entry with the batch's confirms awaited together.
//!
//! The http and rabbitmq sinks send the same message: [`body`], keyed by
//! [`idempotency_key`].

pub mod http;
pub mod postgres;
pub mod rabbitmq;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SinkKind};
use crate::stock::outbox::{Entry, Event};

/// Cloneable: one failed statement fails each entry of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("sink unreachable: {0}")]
    Unreachable(String),
    #[error("sink refused: {0}")]
    Refused(String),
    #[error("sink configuration: {0}")]
    Config(String),
}

/// One result per entry of the batch, in the batch's order.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), SinkError>>> + Send + 'a>>;

pub trait Sink: Send + Sync {
    /// The `sink` label in metrics.
    fn name(&self) -> &'static str;
    /// The most entries one [`Sink::deliver`] call takes.
    fn batch_size(&self) -> usize {
        1
    }
    /// Durably stores paid orders and refund events, at most `batch_size` of them, each
    /// bounded by the sink's own timeout; an entry's `Ok` only once it is stored.
    fn deliver<'a>(&'a self, entries: &'a [Entry]) -> DeliverFuture<'a>;
}

/// What a message sink sends for an entry: the order JSON (`status` paid or
/// refund_required, with `payment_id` and `paid_at` once paid).
pub fn body(entry: &Entry) -> Vec<u8> {
    entry.order.to_json()
}

/// What the store deduplicates an entry by: its order id, or `<order_id>:<payment_id>`
/// for a second charge's refund, so deduplication by order never swallows it.
pub fn idempotency_key(entry: &Entry) -> String {
    let o = &entry.order;
    match (entry.event, &o.payment_id) {
        (Event::SecondCharge, Some(p)) => format!("{}:{p}", o.order_id),
        _ => o.order_id.clone(),
    }
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
                cfg.orders.sink_timeout.0,
                cfg.upstream.ca_file.as_deref(),
            )?)
        }
        SinkKind::Postgres => {
            let url = cfg
                .secrets
                .postgres_url
                .as_deref()
                .ok_or_else(|| SinkError::Config("postgres url missing".into()))?;
            Arc::new(postgres::PostgresSink::new(
                url,
                cfg.orders.sink_timeout.0,
                cfg.orders.postgres_ca_file.as_deref(),
            )?)
        }
        SinkKind::Rabbitmq => {
            let url = cfg
                .secrets
                .rabbitmq_url
                .as_deref()
                .ok_or_else(|| SinkError::Config("rabbitmq url missing".into()))?;
            Arc::new(rabbitmq::RabbitMqSink::new(
                url,
                &cfg.orders.rabbitmq,
                cfg.orders.sink_timeout.0,
                cfg.orders.rabbitmq_ca_file.as_deref(),
            )?)
        }
    })
}
