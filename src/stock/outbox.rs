//! Outbox streams: paid orders and refund events waiting for the sink.
//!
//! One stream per campaign (`<base>outbox`, same hash tag as the campaign), read through
//! the consumer group `flashgate`. An entry is XACKed and XDELed only after the sink
//! confirms, so XLEN is exactly the undelivered backlog. These calls run on a dedicated
//! connection owned by the consumer, never on the hot path's connection.

use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use std::future::Future;

use super::{CampaignKeys, Conn, Order, Store, StoreError};

pub const GROUP: &str = "flashgate";

/// The kind of hand-off an outbox entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Paid,
    RefundRequired,
    /// A paid order was charged again: the entry's order carries the refund's
    /// `payment_id`, the amount charged and `status` refund_required. Its own event so a
    /// sink can key it by payment, never by order.
    SecondCharge,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Paid => "paid",
            Event::RefundRequired => "refund_required",
            Event::SecondCharge => "second_charge",
        }
    }
}

/// One outbox entry, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: String,
    pub id: String,
    pub event: Event,
    pub order: Order,
}

/// An entry someone has read but not acknowledged.
#[derive(Debug, Clone)]
pub struct PendingEntry {
    pub id: String,
    pub consumer: String,
    pub idle_ms: u64,
    pub deliveries: u64,
}

/// When an entry was queued: the milliseconds part of its stream id (Redis' clock).
pub fn queued_at_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

/// Parses an entry; `None` for a malformed one (it is dead-lettered, never dropped).
pub fn parse(stream: &str, e: &StreamId) -> Result<Entry, String> {
    let get = |k: &str| match e.map.get(k) {
        Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        Some(redis::Value::SimpleString(s)) => Some(s.as_str()),
        _ => None,
    };
    let event = match get("event") {
        Some("paid") => Event::Paid,
        Some("refund_required") => Event::RefundRequired,
        Some("second_charge") => Event::SecondCharge,
        other => return Err(format!("unknown event {other:?}")),
    };
    let pairs = e.map.keys().filter_map(|k| Some((k.as_str(), get(k)?)));
    let order = Order::from_pairs(pairs).ok_or("incomplete order fields")?;
    Ok(Entry {
        stream: stream.to_string(),
        id: e.id.clone(),
        event,
        order,
    })
}

impl Store {
    /// A background call (on the consumer's dedicated connection, or an admin call): a
    /// longer deadline than the hot path's, counted like every other call.
    async fn background<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.conn()
            .bounded(self.conn().timeout() * 4, async { Ok(call.await?) })
            .await
    }

    /// Creates the consumer group (from the stream's start) if it does not exist.
    pub async fn ensure_group(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&keys.outbox)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        // An existing group is the expected case, not a failed call.
        self.background(async {
            match cmd.query_async::<()>(con).await {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Entries of one stream never delivered to any consumer of the group.
    pub async fn read_new(
        &self,
        con: &mut Conn,
        stream: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamId>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(stream)
            .arg(">");
        let reply: Option<StreamReadReply> = self.background(cmd.query_async(con)).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Read-but-unacknowledged entries of one stream, oldest first.
    pub async fn pending(
        &self,
        con: &mut Conn,
        stream: &str,
        count: usize,
    ) -> Result<Vec<PendingEntry>, StoreError> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(GROUP).arg("-").arg("+").arg(count);
        let reply: StreamPendingCountReply = self.background(cmd.query_async(con)).await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| PendingEntry {
                id: p.id,
                consumer: p.consumer,
                idle_ms: p.last_delivered_ms as u64,
                deliveries: p.times_delivered as u64,
            })
            .collect())
    }

    /// Takes over entries idle at least `min_idle_ms` (XCLAIM bumps their delivery count).
    pub async fn claim(
        &self,
        con: &mut Conn,
        stream: &str,
        consumer: &str,
        min_idle_ms: u64,
        ids: &[String],
    ) -> Result<Vec<StreamId>, StoreError> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(ids);
        let reply: StreamClaimReply = self.background(cmd.query_async(con)).await?;
        Ok(reply.ids)
    }

    /// The sink has the entries (of one stream): acknowledge and delete them, atomically.
    pub async fn ack(&self, con: &mut Conn, stream: &str, ids: &[&str]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(ids)
            .ignore();
        self.background(pipe.query_async::<()>(con)).await
    }

    /// Moves an entry to the campaign's dead-letter stream.
    pub async fn dead_letter(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        id: &str,
        attempts: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.dead_letter.prepare_invoke();
        inv.key(&keys.outbox)
            .key(&keys.dead)
            .arg(GROUP)
            .arg(id)
            .arg(attempts)
            .arg(error);
        self.background(inv.invoke_async::<Option<String>>(con))
            .await
            .map(|_| ())
    }

    /// Stamps `me` as alive and deletes the group's consumers that hold no entry and were
    /// silent at least `min_idle_ms`: instances that are gone. Returns how many went.
    pub async fn forget_idle_consumers(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        me: &str,
        min_idle_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut inv = self.scripts.forget_consumers.prepare_invoke();
        inv.key(&keys.outbox)
            .key(&keys.consumers)
            .arg(GROUP)
            .arg(me)
            .arg(min_idle_ms);
        self.background(inv.invoke_async(con)).await
    }

    /// Stamps consumer `me` alive (Redis' clock) and returns the consumers whose last
    /// stamp is older than `stale_ms`: instances that are gone.
    pub async fn heartbeat(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        me: &str,
        stale_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(&keys.consumers).arg(me).arg(stale_ms);
        self.background(inv.invoke_async(con)).await
    }

    /// Re-queues up to `max` dead letters; returns how many moved.
    pub async fn replay_dead(&self, keys: &CampaignKeys, max: usize) -> Result<u64, StoreError> {
        let mut inv = self.scripts.replay_dead.prepare_invoke();
        inv.key(&keys.dead).key(&keys.outbox).arg(max);
        self.run(inv).await
    }

    /// (undelivered, dead) entry counts of a campaign.
    pub async fn outbox_counts(&self, keys: &CampaignKeys) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg(&keys.outbox)
            .cmd("XLEN")
            .arg(&keys.dead);
        self.query_pipe(&pipe).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, payment_id: &str, status: &str) -> StreamId {
        let mut map = std::collections::HashMap::new();
        for (k, v) in [
            ("event", event),
            ("id", "01JAAAAAAAAAAAAAAAAAAAAAAA.sale"),
            ("campaign", "sale"),
            ("sku", "a"),
            ("user", "u1"),
            ("qty", "1"),
            ("amount", "1000"),
            ("status", status),
            ("created", "1"),
            ("pay_by", "2"),
            ("payment_id", payment_id),
            ("paid_at", "3"),
        ] {
            map.insert(
                k.to_string(),
                redis::Value::BulkString(v.as_bytes().to_vec()),
            );
        }
        StreamId {
            id: "1-0".into(),
            map,
        }
    }

    #[test]
    fn the_queue_time_is_the_ids_millisecond_part() {
        assert_eq!(queued_at_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(queued_at_ms("bogus"), None);
        assert_eq!(queued_at_ms("x-1"), None);
    }

    #[test]
    fn entries_of_an_older_gateway_still_parse() {
        let e = parse("s", &entry("paid", "p1", "paid")).expect("paid entry");
        assert_eq!(e.event, Event::Paid);
        let e = parse("s", &entry("refund_required", "p1", "refund_required")).expect("refund");
        assert_eq!(e.event, Event::RefundRequired);
    }

    #[test]
    fn a_second_charge_carries_the_refunds_payment() {
        let e = parse("s", &entry("second_charge", "p2", "refund_required")).expect("entry");
        assert_eq!(e.event, Event::SecondCharge);
        assert_eq!(e.order.payment_id.as_deref(), Some("p2"));
        assert!(parse("s", &entry("bogus", "p2", "paid")).is_err());
    }
}
