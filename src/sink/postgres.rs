//! The `postgres` sink (SPEC §6): one row per order in `flashgate_orders` (created if
//! absent), `order_id` primary key, `ON CONFLICT DO NOTHING` so re-delivery is a no-op.
//!
//! Columns (also in README): order_id, status ('paid' | 'refund_required'), campaign, sku,
//! user_id, quantity, amount_cents, payment_id, created_at, pay_by, paid_at, received_at.
//!
//! A second charge of a paid order goes to `flashgate_refunds` instead, one row per
//! refunded payment (`payment_id` primary key, order_id, amount_cents, created_at = when
//! the charge was reported), so the order's own row never swallows it.
//!
//! TLS follows the URL's `sslmode`: `disable` never, `prefer` (the default) when the
//! server offers it, `require` always. Whenever TLS is spoken the server's certificate is
//! verified (chain and name) against the system's roots plus `orders.postgres_ca_file`:
//! `require` is libpq's `verify-full`, and a `prefer` handshake that fails verification
//! fails the delivery rather than falling back to plain text.

use std::path::Path;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;

use super::{DeliverFuture, Sink, SinkError};
use crate::stock::outbox::{Entry, Event};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS flashgate_orders (
    order_id     text PRIMARY KEY,
    status       text NOT NULL,
    campaign     text NOT NULL,
    sku          text NOT NULL,
    user_id      text NOT NULL,
    quantity     integer NOT NULL,
    amount_cents bigint NOT NULL,
    payment_id   text,
    created_at   timestamptz NOT NULL,
    pay_by       timestamptz NOT NULL,
    paid_at      timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
)";

const CREATE_REFUNDS: &str = "CREATE TABLE IF NOT EXISTS flashgate_refunds (
    payment_id   text PRIMARY KEY,
    order_id     text NOT NULL,
    amount_cents bigint NOT NULL,
    created_at   timestamptz NOT NULL
)";

const INSERT_REFUND: &str =
    "INSERT INTO flashgate_refunds (payment_id, order_id, amount_cents, created_at)
    VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0))
    ON CONFLICT (payment_id) DO NOTHING";

const INSERT: &str = "INSERT INTO flashgate_orders
    (order_id, status, campaign, sku, user_id, quantity, amount_cents, payment_id, created_at, pay_by, paid_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
            to_timestamp($9::bigint / 1000.0), to_timestamp($10::bigint / 1000.0), to_timestamp($11::bigint / 1000.0))
    ON CONFLICT (order_id) DO NOTHING";

pub struct PostgresSink {
    url: String,
    tls: crate::tls::PostgresTls,
    /// Bound on one delivery, connecting included: a server that stops answering (a
    /// frozen host, a half-open connection) must not stall the outbox forever.
    timeout: Duration,
    /// The connection, made on first use and remade after an error. A tokio `Mutex`
    /// because it is held across the query's await; deliveries are sequential per consumer.
    client: Mutex<Option<Conn>>,
}

/// A client and its connection task, aborted when the client is given up, so a hung
/// socket does not outlive it.
struct Conn {
    client: Client,
    task: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresSink {
    /// `ca_file`: extra trust roots for TLS (`orders.postgres_ca_file`).
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<PostgresSink, SinkError> {
        let mode = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| SinkError::Config(format!("postgres url: {e}")))?
            .get_ssl_mode();
        let roots = match mode {
            SslMode::Disable => Ok(crate::tls::no_roots()),
            _ => crate::tls::client_config(ca_file),
        };
        let roots = match (roots, mode) {
            (Ok(roots), _) => roots,
            // `prefer` with no roots at all still reaches a server without TLS.
            (Err(crate::tls::TlsError::NoRoots), SslMode::Prefer) => crate::tls::no_roots(),
            (Err(e), _) => return Err(SinkError::Config(format!("postgres TLS: {e}"))),
        };
        Ok(PostgresSink {
            url: url.to_string(),
            tls: crate::tls::PostgresTls::new(roots),
            timeout,
            client: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, SinkError> {
        let (client, connection) = tokio_postgres::connect(&self.url, self.tls.clone())
            .await
            .map_err(|e| SinkError::Unreachable(e.to_string()))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres sink connection closed");
            }
        })
        .abort_handle();
        let conn = Conn { client, task };
        conn.client
            .batch_execute(&format!("{CREATE};\n{CREATE_REFUNDS}"))
            .await
            .map_err(|e| SinkError::Unreachable(e.to_string()))?;
        Ok(conn)
    }

    async fn insert(&self, entry: &Entry) -> Result<(), SinkError> {
        let mut guard = self.client.lock().await;
        match tokio::time::timeout(self.timeout, self.insert_on(&mut guard, entry)).await {
            Ok(result) => result,
            Err(_) => {
                *guard = None;
                Err(SinkError::Unreachable(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    async fn insert_on(&self, conn: &mut Option<Conn>, entry: &Entry) -> Result<(), SinkError> {
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *conn = Some(self.connect().await?);
        }
        let client = &conn
            .as_ref()
            .ok_or_else(|| SinkError::Unreachable("no connection".into()))?
            .client;
        let o = &entry.order;
        // Columns are signed: a value beyond them is refused, never wrapped.
        let out_of_range = |what| SinkError::Refused(format!("{what} out of range for PostgreSQL"));
        let quantity = i32::try_from(o.quantity).map_err(|_| out_of_range("quantity"))?;
        let amount = i64::try_from(o.amount_cents).map_err(|_| out_of_range("amount_cents"))?;
        let result = if entry.event == Event::SecondCharge {
            // The event is the refund of its own payment (stamped when it was reported).
            let Some(payment_id) = &o.payment_id else {
                return Err(SinkError::Refused(
                    "second charge without payment_id".into(),
                ));
            };
            let created = o.paid_at.unwrap_or(o.created_at);
            client
                .execute(INSERT_REFUND, &[payment_id, &o.order_id, &amount, &created])
                .await
        } else {
            client
                .execute(
                    INSERT,
                    &[
                        &o.order_id,
                        &entry.event.as_str(),
                        &o.campaign,
                        &o.sku,
                        &o.user_id,
                        &quantity,
                        &amount,
                        &o.payment_id,
                        &o.created_at,
                        &o.pay_by,
                        &o.paid_at,
                    ],
                )
                .await
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                *conn = None;
                Err(SinkError::Unreachable(e.to_string()))
            }
        }
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn deliver<'a>(&'a self, entry: &'a Entry) -> DeliverFuture<'a> {
        Box::pin(self.insert(entry))
    }
}
