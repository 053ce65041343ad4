//! The reserve family's binding: `lua/reserve.lua` (a batch of buys of one campaign, one
//! call) and `lua/void.lua` (undoing reservations whose buyers were answered 503).
//!
//! [`ReserveCall::encode`] and [`VoidCall::encode`] are the only places the scripts'
//! `KEYS` and `ARGV` order is written (the scripts' headers document the same order);
//! [`ReserveReply::parse`] and [`VoidReply::parse`] read every reply shape the headers
//! list and refuse any other. `Store::reserve` queues a buy in its campaign's lane
//! (`batch.rs`), which sends the calls.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use super::reply::{Fields, Raw};
use super::scripts::ScriptArgs;
use super::{batch, CampaignKeys, EntryState, Holders, Order, OrderStatus, Store, StoreError};
use crate::clock::millis;

/// A buy, as the reserve script needs it.
#[derive(Debug)]
pub struct ReserveRequest<'a> {
    pub keys: &'a CampaignKeys,
    pub item_key: &'a str,
    pub campaign: &'a str,
    pub sku: &'a str,
    pub user: &'a str,
    pub quantity: u32,
    pub per_user_limit: u32,
    pub payment_window: Duration,
    pub amount_cents: u64,
    pub idempotency_key: Option<&'a str>,
    pub initial_stock: u64,
    /// The caller's holders snapshot version of this item (see `HoldersUpdate`).
    pub holders_version: Option<i64>,
    /// A raffle: the user's ranking member; only a selected entrant may reserve.
    pub raffle_member: Option<&'a [u8]>,
}

/// What a sold-out reply says about the users holding a pending order of the item.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldersUpdate {
    /// The caller's snapshot is current (or the item is not wholly sold out).
    Unchanged,
    Fresh(Holders),
    /// Too many to send inline: fetch them with `Store::holders`.
    TooMany,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved(Order),
    Existing(Order),
    SoldOut {
        remaining: i64,
        holders: HoldersUpdate,
    },
    LimitReached {
        held: i64,
    },
    IdempotencyKeyReused,
    Paused,
    /// The script ran after its deadline (the caller would have given up): nothing was
    /// reserved, so a 503 is a definite answer.
    TooLate,
    /// A raffle, and the user holds no open claim: their state, for the refusal.
    NotSelected(EntryState),
}

// === impl Buy, ReserveCall ===

/// One buy waiting in its campaign's lane: what `lua/reserve.lua` needs, owned.
#[derive(Debug)]
pub(super) struct Buy {
    pub(super) item_key: String,
    pub(super) user_key: String,
    pub(super) holders_key: String,
    pub(super) order_key: String,
    pub(super) sku: String,
    pub(super) user: String,
    pub(super) quantity: u32,
    pub(super) per_user_limit: u32,
    pub(super) order_id: String,
    pub(super) payment_window_ms: u64,
    pub(super) amount_cents: u64,
    /// The Idempotency-Key, or "" for none.
    pub(super) idempotency_key: String,
    pub(super) initial_stock: u64,
    pub(super) holders_version: Option<i64>,
    pub(super) raffle_member: Option<Vec<u8>>,
}

impl Buy {
    /// The buy `r` asks for, as the new order `order_id`.
    pub(super) fn new(r: &ReserveRequest<'_>, order_id: String) -> Buy {
        Buy {
            item_key: r.item_key.to_owned(),
            user_key: r.keys.user(r.user),
            holders_key: r.keys.holders(r.sku),
            order_key: r.keys.order(&order_id),
            sku: r.sku.to_owned(),
            user: r.user.to_owned(),
            quantity: r.quantity,
            per_user_limit: r.per_user_limit,
            order_id,
            payment_window_ms: millis(r.payment_window),
            amount_cents: r.amount_cents,
            idempotency_key: r.idempotency_key.unwrap_or("").to_owned(),
            initial_stock: r.initial_stock,
            holders_version: r.holders_version,
            raffle_member: r.raffle_member.map(<[u8]>::to_vec),
        }
    }
}

/// One call of `lua/reserve.lua`: a batch of buys of one campaign.
pub(super) struct ReserveCall<'a, B> {
    pub(super) keys: &'a CampaignKeys,
    pub(super) buys: &'a [B],
}

impl<B: Borrow<Buy>> ReserveCall<'_, B> {
    /// Writes the call: the campaign's keys and values, then each buy's. `deadline` is
    /// the Redis-clock time (ms) a buy must run by, `None` for no check.
    pub(super) fn encode(&self, inv: &mut impl ScriptArgs, deadline: impl Fn(&Buy) -> Option<i64>) {
        let k = self.keys;
        inv.key(&k.deadlines)
            .key(&k.paused)
            .key(&k.claims)
            .key(&k.selection)
            .key(&k.admission)
            .key(&k.entrants)
            .key(&k.ranking);
        inv.arg(&k.base).arg(&k.campaign);
        for b in self.buys {
            let b = b.borrow();
            inv.key(&b.item_key)
                .key(&b.user_key)
                .key(&b.holders_key)
                .key(&b.order_key);
            inv.arg(&b.sku)
                .arg(&b.user)
                .arg(b.quantity)
                .arg(b.per_user_limit)
                .arg(&b.order_id)
                .arg(b.payment_window_ms)
                .arg(b.amount_cents)
                .arg(&b.idempotency_key)
                .arg(b.initial_stock);
            // An absent value is "": an `Option` would write nothing and shift the rest.
            match b.holders_version {
                Some(v) => inv.arg(v),
                None => inv.arg(""),
            };
            match deadline(b) {
                Some(ms) => inv.arg(ms),
                None => inv.arg(""),
            };
            match &b.raffle_member {
                Some(member) => inv.arg("raffle").arg(&member[..]),
                None => inv.arg("").arg(""),
            };
        }
    }
}

// === impl ReserveReply ===

/// One buy's reply from `lua/reserve.lua`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReserveReply {
    /// A new pre-order, created at `created_at` (Redis' clock, ms): every other field is
    /// the buy's own.
    Reserved {
        created_at: i64,
    },
    Existing(Order),
    SoldOut {
        remaining: i64,
        holders: HoldersUpdate,
    },
    LimitReached {
        held: i64,
    },
    IdempotencyKeyReused,
    Paused,
    TooLate,
    NotSelected(EntryState),
}

impl ReserveReply {
    pub(super) fn parse(raw: Raw) -> Result<ReserveReply, StoreError> {
        let mut f = Fields::new("reserve.lua", raw);
        let tag = f.tag()?;
        let reply = match tag.as_str() {
            "reserved" => ReserveReply::Reserved {
                created_at: f.int()?,
            },
            "existing" => ReserveReply::Existing(f.order()?),
            "idem_mismatch" => ReserveReply::IdempotencyKeyReused,
            "sold_out" => {
                let remaining = f.int()?;
                let version = f.int()?;
                let holders = if !f.more() {
                    HoldersUpdate::Unchanged
                } else {
                    match f.text()?.as_str() {
                        "many" => HoldersUpdate::TooMany,
                        "holders" => {
                            let users = f.rest().map(|u| {
                                u.ok_or_else(|| {
                                    StoreError::Protocol("reserve.lua replied a nil holder".into())
                                })
                            });
                            return Ok(ReserveReply::SoldOut {
                                remaining,
                                holders: HoldersUpdate::Fresh(Holders {
                                    version: Some(version),
                                    users: users.collect::<Result<_, _>>()?,
                                }),
                            });
                        }
                        other => return Err(f.bad(format_args!("sold_out with {other:?}"))),
                    }
                };
                ReserveReply::SoldOut { remaining, holders }
            }
            "limit" => ReserveReply::LimitReached { held: f.int()? },
            "paused" => ReserveReply::Paused,
            "late" => {
                f.int()?;
                ReserveReply::TooLate
            }
            "not_selected" => ReserveReply::NotSelected(EntryState::read(&mut f)?),
            other => return Err(f.unknown(other)),
        };
        f.end()?;
        Ok(reply)
    }

    /// The outcome for the buyer; a new order is `buy`'s (its id is moved out).
    fn outcome(self, r: &ReserveRequest<'_>, order_id: String) -> ReserveOutcome {
        match self {
            ReserveReply::Reserved { created_at } => ReserveOutcome::Reserved(Order {
                order_id,
                campaign: r.campaign.to_owned(),
                sku: r.sku.to_owned(),
                user_id: r.user.to_owned(),
                quantity: r.quantity,
                amount_cents: r.amount_cents,
                status: OrderStatus::PendingPayment,
                created_at,
                pay_by: created_at
                    .saturating_add(i64::try_from(millis(r.payment_window)).unwrap_or(i64::MAX)),
                payment_id: None,
                paid_at: None,
            }),
            ReserveReply::Existing(o) => ReserveOutcome::Existing(o),
            ReserveReply::SoldOut { remaining, holders } => {
                ReserveOutcome::SoldOut { remaining, holders }
            }
            ReserveReply::LimitReached { held } => ReserveOutcome::LimitReached { held },
            ReserveReply::IdempotencyKeyReused => ReserveOutcome::IdempotencyKeyReused,
            ReserveReply::Paused => ReserveOutcome::Paused,
            ReserveReply::TooLate => ReserveOutcome::TooLate,
            ReserveReply::NotSelected(s) => ReserveOutcome::NotSelected(s),
        }
    }
}

// === impl Void, VoidCall, VoidReply ===

/// A reservation whose buyer was answered 503 although its call may have run.
#[derive(Debug)]
pub(super) struct Void {
    pub(super) order_key: String,
    pub(super) order_id: String,
    /// The buy's Idempotency-Key, or "".
    pub(super) idempotency_key: String,
}

impl Void {
    /// What undoes the reservation `buy` may have made.
    pub(super) fn of(buy: &Buy) -> Void {
        Void {
            order_key: buy.order_key.clone(),
            order_id: buy.order_id.clone(),
            idempotency_key: buy.idempotency_key.clone(),
        }
    }
}

/// One call of `lua/void.lua`.
pub(super) struct VoidCall<'a> {
    pub(super) keys: &'a CampaignKeys,
    pub(super) voids: &'a [Void],
}

impl VoidCall<'_> {
    pub(super) fn encode(&self, inv: &mut impl ScriptArgs) {
        let k = self.keys;
        inv.key(&k.deadlines)
            .key(&k.claims)
            .key(&k.selection)
            .key(&k.admission);
        inv.arg(&k.base);
        for v in self.voids {
            inv.key(&v.order_key)
                .arg(&v.order_id)
                .arg(&v.idempotency_key);
        }
    }
}

/// What `lua/void.lua` did.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct VoidReply {
    pub(super) undone: u64,
    /// Seen by their buyer on a retry, or closed.
    pub(super) kept: u64,
}

impl VoidReply {
    pub(super) fn parse(raw: Raw) -> Result<VoidReply, StoreError> {
        let mut f = Fields::new("void.lua", raw);
        let reply = VoidReply {
            undone: f.count()?,
            kept: f.count()?,
        };
        f.end()?;
        Ok(reply)
    }
}

// === impl Store ===

impl Store {
    /// The one Redis round trip of a buy: queued in its campaign's lane and sent with the
    /// buys that arrive while the lane's calls are in flight (`batch.rs`).
    pub async fn reserve(&self, r: &ReserveRequest<'_>) -> Result<ReserveOutcome, StoreError> {
        let order_id = super::order::new_order_id(r.campaign);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = batch::Job {
            buy: Buy::new(r, order_id.clone()),
            reply,
        };
        self.batcher.submit(self, r.keys, job);
        // The buyer waits `command_timeout` in all, queueing included. A batch that still
        // reserves for it after that finds its answer gone and undoes the order.
        let reply = tokio::time::timeout(self.conn.timeout(), answer)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|_| StoreError::Protocol("the reserve batch was dropped".into()))??;
        Ok(reply.outcome(r, order_id))
    }

    /// One call of `lua/reserve.lua` for a batch of buys of one campaign; one raw reply
    /// each, in order.
    pub(super) async fn reserve_batch(
        &self,
        keys: &CampaignKeys,
        jobs: &[batch::Job],
    ) -> Result<Vec<Raw>, StoreError> {
        let mut inv = self.scripts.reserve.prepare_invoke();
        let timeout = self.conn.timeout();
        // Every buy of the call is sent now: one deadline for all.
        let deadline = self.redis_clock.deadline(Instant::now(), timeout);
        ReserveCall { keys, buys: jobs }.encode(&mut inv, |_| deadline);
        // The buyers wait `command_timeout`, not the longer bound of other calls: a call
        // still running then has passed its deadline in the script, or is undone.
        self.run_within(timeout, inv).await
    }

    /// Undoes reservations whose buyers were answered 503 (`lua/void.lua`).
    pub(super) async fn void_reservations(
        &self,
        keys: &CampaignKeys,
        voids: &[Void],
    ) -> Result<VoidReply, StoreError> {
        let mut inv = self.scripts.void.prepare_invoke();
        VoidCall { keys, voids }.encode(&mut inv);
        // Buys of the lane wait behind this: the same bound as a reserve call.
        VoidReply::parse(self.run_within(self.conn.timeout(), inv).await?)
    }
}

#[cfg(test)]
mod tests;
