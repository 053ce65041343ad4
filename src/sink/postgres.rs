//! The `postgres` sink: one row per order in `flashgate_orders` (created if
//! absent), `order_id` primary key, `ON CONFLICT DO NOTHING` so re-delivery is a no-op.
//!
//! Columns (also in README): order_id, status ('paid' | 'refund_required'), campaign, sku,
//! user_id, quantity, amount_cents, payment_id, created_at, pay_by, paid_at, received_at.
//!
//! A second charge of a paid order goes to `flashgate_refunds` instead, one row per
//! refunded payment (`payment_id` primary key, order_id, amount_cents, created_at = when
//! the charge was reported), so the order's own row never swallows it.
//!
//! Entries arrive in batches: one multi-row `INSERT … ON CONFLICT DO NOTHING` per table
//! and batch, on one shared connection that concurrent batches pipeline on.
//!
//! TLS follows the URL's `sslmode`: `disable` never, `prefer` (the default) when the
//! server offers it, `require` always. Whenever TLS is spoken the server's certificate is
//! verified (chain and name) against the system's roots plus `orders.postgres_ca_file`:
//! `require` is libpq's `verify-full`, and a `prefer` handshake that fails verification
//! fails the delivery rather than falling back to plain text.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
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

/// Rows per batch: one multi-row INSERT each, 11 parameters a row, far below the
/// protocol's 65,535 parameters per statement.
const BATCH_ROWS: usize = 500;

/// `INSERT INTO <table> (<columns>) VALUES <rows> ON CONFLICT (<key>) DO NOTHING`, each
/// row's placeholders numbered on; `ts` marks the columns sent as epoch ms.
fn insert_sql(table: &str, columns: &[&str], ts: &[bool], key: &str, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (c, is_ts) in ts.iter().enumerate() {
            n += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            if *is_ts {
                sql.push_str(&format!("to_timestamp(${n}::bigint / 1000.0)"));
            } else {
                sql.push_str(&format!("${n}"));
            }
        }
        sql.push(')');
    }
    sql.push_str(&format!(" ON CONFLICT ({key}) DO NOTHING"));
    sql
}

const ORDER_COLUMNS: [&str; 11] = [
    "order_id",
    "status",
    "campaign",
    "sku",
    "user_id",
    "quantity",
    "amount_cents",
    "payment_id",
    "created_at",
    "pay_by",
    "paid_at",
];
const ORDER_TS: [bool; 11] = [
    false, false, false, false, false, false, false, false, true, true, true,
];
const REFUND_COLUMNS: [&str; 4] = ["payment_id", "order_id", "amount_cents", "created_at"];
const REFUND_TS: [bool; 4] = [false, false, false, true];

/// One entry, checked and converted to its table's column types.
enum Row<'a> {
    Order {
        entry: &'a Entry,
        status: &'static str,
        quantity: i32,
        amount: i64,
    },
    Refund {
        entry: &'a Entry,
        payment_id: &'a str,
        amount: i64,
        created: i64,
    },
}

impl<'a> Row<'a> {
    /// `Err` for an entry no retry can store (it waits for `give_up_after`, then is
    /// dead-lettered), so it never fails the rest of its batch.
    fn of(entry: &'a Entry) -> Result<Row<'a>, SinkError> {
        let o = &entry.order;
        // Columns are signed: a value beyond them is refused, never wrapped.
        let out_of_range = |what| SinkError::Refused(format!("{what} out of range for PostgreSQL"));
        let amount = i64::try_from(o.amount_cents).map_err(|_| out_of_range("amount_cents"))?;
        if entry.event == Event::SecondCharge {
            // The event is the refund of its own payment (stamped when it was reported).
            let payment_id = o
                .payment_id
                .as_deref()
                .ok_or_else(|| SinkError::Refused("second charge without payment_id".into()))?;
            return Ok(Row::Refund {
                entry,
                payment_id,
                amount,
                created: o.paid_at.unwrap_or(o.created_at),
            });
        }
        let quantity = i32::try_from(o.quantity).map_err(|_| out_of_range("quantity"))?;
        Ok(Row::Order {
            entry,
            status: entry.event.as_str(),
            quantity,
            amount,
        })
    }
}

pub struct PostgresSink {
    url: String,
    tls: crate::tls::PostgresTls,
    /// Bound on one batch, connecting included: a server that stops answering (a
    /// frozen host, a half-open connection) must not stall the outbox forever.
    timeout: Duration,
    /// The connection, made on first use and remade after an error. Batches in flight
    /// share it (tokio-postgres pipelines their statements); the lock is held only to
    /// look at it or make it.
    client: Mutex<Option<Arc<Conn>>>,
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
            timeout,
            tls: crate::tls::PostgresTls::new(roots),
            client: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, SinkError> {
        let (client, connection) = tokio_postgres::connect(&self.url, self.tls.clone())
            .await
            .map_err(|e| SinkError::Unreachable(e.to_string()))?;
        // Owned by `Conn`: its drop aborts the task.
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

    /// The shared connection, made if there is none (or it closed).
    async fn conn(&self) -> Result<Arc<Conn>, SinkError> {
        let mut guard = self.client.lock().await;
        match &*guard {
            Some(c) if !c.client.is_closed() => Ok(c.clone()),
            _ => {
                let c = Arc::new(self.connect().await?);
                *guard = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// Gives up `conn` after it failed, unless a newer one already replaced it.
    async fn drop_conn(&self, conn: Option<&Arc<Conn>>) {
        let mut guard = self.client.lock().await;
        if conn.is_none_or(|c| guard.as_ref().is_some_and(|g| Arc::ptr_eq(c, g))) {
            *guard = None;
        }
    }

    async fn insert(&self, entries: &[Entry]) -> Vec<Result<(), SinkError>> {
        let rows: Vec<Result<Row<'_>, SinkError>> = entries.iter().map(Row::of).collect();
        let valid: Vec<&Row<'_>> = rows.iter().filter_map(|r| r.as_ref().ok()).collect();
        let stored = if valid.is_empty() {
            Ok(())
        } else {
            let mut used = None;
            let stored = tokio::time::timeout(self.timeout, self.insert_rows(&valid, &mut used))
                .await
                .unwrap_or_else(|_| {
                    Err(SinkError::Unreachable(format!(
                        "no answer within {:?}",
                        self.timeout
                    )))
                });
            if stored.is_err() {
                self.drop_conn(used.as_ref()).await;
            }
            stored
        };
        rows.into_iter()
            .map(|r| r.and_then(|_| stored.clone()))
            .collect()
    }

    /// One multi-row INSERT for the orders, one for the refunds. A failure fails the
    /// batch; stored rows are re-sent and skipped by `ON CONFLICT DO NOTHING`.
    async fn insert_rows(
        &self,
        rows: &[&Row<'_>],
        used: &mut Option<Arc<Conn>>,
    ) -> Result<(), SinkError> {
        let conn = self.conn().await?;
        *used = Some(conn.clone());
        let mut orders: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut refunds: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for row in rows {
            match row {
                Row::Order {
                    entry,
                    status,
                    quantity,
                    amount,
                } => {
                    let o = &entry.order;
                    orders.extend([
                        &o.order_id as &(dyn ToSql + Sync),
                        status,
                        &o.campaign,
                        &o.sku,
                        &o.user_id,
                        quantity,
                        amount,
                        &o.payment_id,
                        &o.created_at,
                        &o.pay_by,
                        &o.paid_at,
                    ]);
                }
                Row::Refund {
                    entry,
                    payment_id,
                    amount,
                    created,
                } => {
                    refunds.extend([
                        payment_id as &(dyn ToSql + Sync),
                        &entry.order.order_id,
                        amount,
                        created,
                    ]);
                }
            }
        }
        let unreachable = |e: tokio_postgres::Error| SinkError::Unreachable(e.to_string());
        if !orders.is_empty() {
            let n = orders.len() / ORDER_COLUMNS.len();
            let sql = insert_sql("flashgate_orders", &ORDER_COLUMNS, &ORDER_TS, "order_id", n);
            conn.client
                .execute(&sql, &orders)
                .await
                .map_err(unreachable)?;
        }
        if !refunds.is_empty() {
            let n = refunds.len() / REFUND_COLUMNS.len();
            let sql = insert_sql(
                "flashgate_refunds",
                &REFUND_COLUMNS,
                &REFUND_TS,
                "payment_id",
                n,
            );
            conn.client
                .execute(&sql, &refunds)
                .await
                .map_err(unreachable)?;
        }
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn batch_size(&self) -> usize {
        BATCH_ROWS
    }

    fn deliver<'a>(&'a self, entries: &'a [Entry]) -> DeliverFuture<'a> {
        Box::pin(self.insert(entries))
    }
}
