//! A pre-order / order as stored in Redis, and its JSON form (docs/api.md, "Order body").
//!
//! An order id is `<ULID>.<campaign>`: the payment callback carries only the order id, and
//! the campaign part tells us the Redis hash tag (slot) holding the order without a
//! global index that would live in another slot.

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::valid_id;

/// Field order returned by every script (`ORDER_FIELDS` in lua/lib.lua).
const FIELDS: usize = 11;

/// The order hash's field names, in `ORDER_FIELDS` order.
pub const FIELD_NAMES: [&str; FIELDS] = [
    "id",
    "campaign",
    "sku",
    "user",
    "qty",
    "amount",
    "status",
    "created",
    "pay_by",
    "payment_id",
    "paid_at",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Expired,
    Cancelled,
    RefundRequired,
}

impl OrderStatus {
    pub fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "pending_payment" => OrderStatus::PendingPayment,
            "paid" => OrderStatus::Paid,
            "expired" => OrderStatus::Expired,
            "cancelled" => OrderStatus::Cancelled,
            "refund_required" => OrderStatus::RefundRequired,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Expired => "expired",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::RefundRequired => "refund_required",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: String,
    pub campaign: String,
    pub sku: String,
    pub user_id: String,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub pay_by: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_ms")]
    pub paid_at: Option<i64>,
}

/// A new order id for `campaign`.
pub fn new_order_id(campaign: &str) -> String {
    let mut id = ulid::Ulid::new().to_string();
    id.push('.');
    id.push_str(campaign);
    id
}

/// The campaign an order id belongs to, if the id is well-formed.
pub fn campaign_of(order_id: &str) -> Option<&str> {
    let (ulid, campaign) = order_id.split_once('.')?;
    (ulid.len() == 26 && ulid.bytes().all(|b| b.is_ascii_alphanumeric()) && valid_id(campaign))
        .then_some(campaign)
}

/// RFC 3339 UTC with milliseconds: `2026-11-11T00:00:01.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        d.month() as u8,
        d.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn ser_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

fn ser_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => ser_ms(ms, s),
        None => s.serialize_none(),
    }
}

impl Order {
    /// Parses the ORDER_FIELDS values a script returned (after its outcome tag).
    pub fn from_fields(v: &[Option<String>]) -> Option<Order> {
        if v.len() < FIELDS {
            return None;
        }
        let s = |i: usize| v[i].clone();
        let n = |i: usize| v[i].as_deref().and_then(|x| x.parse::<i64>().ok());
        Some(Order {
            order_id: s(0)?,
            campaign: s(1)?,
            sku: s(2)?,
            user_id: s(3)?,
            // A value out of range is a corrupt order, not a number to wrap.
            quantity: u32::try_from(n(4)?).ok()?,
            amount_cents: u64::try_from(n(5)?).ok()?,
            status: OrderStatus::parse(v[6].as_deref()?)?,
            created_at: n(7)?,
            pay_by: n(8)?,
            payment_id: s(9),
            paid_at: n(10),
        })
    }

    /// Parses an outbox entry's field/value pairs.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Order> {
        let mut v: Vec<Option<String>> = vec![None; FIELDS];
        for (k, val) in pairs {
            if let Some(i) = FIELD_NAMES.iter().position(|n| *n == k) {
                v[i] = Some(val.to_string());
            }
        }
        Order::from_fields(&v)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_carry_their_campaign() {
        let id = new_order_id("double11-phone");
        assert_eq!(campaign_of(&id), Some("double11-phone"));
        assert_eq!(campaign_of("nope"), None);
        assert_eq!(campaign_of("01J.x"), None);
        assert_eq!(
            campaign_of(&format!("{}.bad/campaign", ulid::Ulid::new())),
            None
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        assert_eq!(rfc3339_ms(1_762_819_201_123), "2025-11-11T00:00:01.123Z");
    }
}
