//! Group commit of reservations: the buys of one campaign that arrive while its previous
//! reserve call is in flight are sent together as ONE call of `lua/reserve.lua` — one
//! round trip, one script entry, one reply — instead of one call each.
//!
//! No timer: a buy that finds nothing in flight goes at once, alone, so light traffic
//! waits for nothing; under load batches form by themselves while the previous one is in
//! flight, up to [`MAX_BATCH`]. One lane per campaign, so on a Cluster one batch is one
//! slot. The lane's lock is held only to push or to take jobs, never across an await.
//!
//! Each buy keeps its own checks and outcome (the script runs them one after another, as
//! separate calls would). A failed call (timeout, Redis away) fails every buy of its batch
//! with 503, and SPEC §1.5 says those reserved nothing. Two guards make that true: each
//! buy carries its own deadline, checked by the script against Redis' clock, so a call
//! Redis runs after the gateway gave up refuses; and a call that may have run (its reply
//! lost with the connection, or late) is undone by `lua/void.lua` before the lane sends
//! anything else, so no retry on this instance can meet its orders first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::{CampaignKeys, Reply, Store, StoreError};

/// Most buys in one call: about 2-3 ms of Redis time for a full batch.
pub(crate) const MAX_BATCH: usize = 128;
/// How often a lane with nothing to send retries undoing its voids while Redis is away.
const VOID_RETRY: Duration = Duration::from_millis(250);

/// A reservation whose buyer was answered 503 although its call may have run.
pub(super) struct Void {
    pub(super) order_key: String,
    pub(super) order_id: String,
    pub(super) idempotency_key: String,
}

/// One buy waiting for its batch: what `lua/reserve.lua` needs, owned.
pub(super) struct Job {
    pub(super) item_key: String,
    pub(super) user_key: String,
    pub(super) holders_key: String,
    pub(super) order_key: String,
    /// The 13 per-buy values of the script but the deadline, which is set when the batch
    /// is sent (see [`Job::deadline_from`]).
    pub(super) args: JobArgs,
    pub(super) reply: oneshot::Sender<Result<Reply, StoreError>>,
}

pub(super) struct JobArgs {
    pub(super) sku: String,
    pub(super) user: String,
    pub(super) quantity: u32,
    pub(super) per_user_limit: u32,
    pub(super) order_id: String,
    pub(super) payment_window_ms: u64,
    pub(super) amount_cents: u64,
    pub(super) idempotency_key: String,
    pub(super) initial_stock: u64,
    pub(super) holders_version: String,
    pub(super) raffle_member: Option<Vec<u8>>,
    /// The caller's clock at the buy (ms), and when the buy was queued: the deadline is
    /// the caller's now at sending plus the command's own budget.
    pub(super) now_ms: i64,
    pub(super) queued: Instant,
}

impl Job {
    /// What undoes the reservation this job may make.
    fn void(&self) -> Void {
        Void {
            order_key: self.order_key.clone(),
            order_id: self.args.order_id.clone(),
            idempotency_key: self.args.idempotency_key.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct Batcher {
    lanes: DashMap<String, Arc<Lane>>,
}

struct Lane {
    keys: CampaignKeys,
    queue: Mutex<Queue>,
    /// Wakes a driver that waits to retry its voids when a buy arrives.
    arrived: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Undone before the next batch is sent (see the module's note).
    voids: Vec<Void>,
    /// A driver task is sending this lane's batches.
    running: bool,
}

impl Batcher {
    /// Queues `job`; starts the lane's driver when none runs.
    pub(super) fn submit(&self, store: &Store, keys: &CampaignKeys, job: Job) {
        let lane = match self.lanes.get(keys.base.as_str()) {
            Some(l) => l.clone(),
            None => self
                .lanes
                .entry(keys.base.clone())
                .or_insert_with(|| {
                    Arc::new(Lane {
                        keys: keys.clone(),
                        queue: Mutex::default(),
                        arrived: tokio::sync::Notify::new(),
                    })
                })
                .clone(),
        };
        let start = {
            let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.jobs.push(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(drive(store.clone(), lane));
        } else {
            lane.arrived.notify_one();
        }
    }
}

/// Sends the lane's queued jobs, a batch at a time, until the queue is empty and no void
/// is left to undo.
async fn drive(store: Store, lane: Arc<Lane>) {
    loop {
        let (jobs, voids) = {
            let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.is_empty() && q.voids.is_empty() {
                q.running = false;
                return;
            }
            let n = q.jobs.len().min(MAX_BATCH);
            let jobs: Vec<Job> = q.jobs.drain(..n).collect();
            (jobs, std::mem::take(&mut q.voids))
        };
        if !voids.is_empty() {
            if let Err(e) = undo(&store, &lane, voids).await {
                if jobs.is_empty() {
                    // Nothing to answer: retry later, or at once for the next buy.
                    tokio::select! {
                        _ = tokio::time::sleep(VOID_RETRY) => {}
                        _ = lane.arrived.notified() => {}
                    }
                }
                for job in jobs {
                    let _ = job.reply.send(Err(e.again()));
                }
                continue;
            }
        }
        if jobs.is_empty() {
            continue;
        }
        if let Some(h) = &store.batch_sizes {
            h.observe(jobs.len() as f64);
        }
        match store.reserve_batch(&lane.keys, &jobs).await {
            Ok(replies) if replies.len() == jobs.len() => {
                let mut gone = Vec::new();
                for (job, reply) in jobs.into_iter().zip(replies) {
                    // Its buyer gave up (answered 503) before this reply: undo it.
                    // (Fields moved, not cloned: nothing allocated on the common path.)
                    if let Err(Ok(reply)) = job.reply.send(Ok(reply)) {
                        if super::tag(&reply) == "reserved" {
                            gone.push(Void {
                                order_key: job.order_key,
                                order_id: job.args.order_id,
                                idempotency_key: job.args.idempotency_key,
                            });
                        }
                    }
                }
                if !gone.is_empty() {
                    let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.voids.extend(gone);
                }
            }
            Ok(replies) => {
                // The call ran, but which buys reserved is unknown: undo them all.
                undo_later(&lane, &jobs);
                let why = format!("{} replies to a batch of {}", replies.len(), jobs.len());
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Protocol(why.clone())));
                }
            }
            Err(e) => {
                if e.may_have_run() {
                    undo_later(&lane, &jobs);
                }
                for job in jobs {
                    let _ = job.reply.send(Err(e.again()));
                }
            }
        }
    }
}

/// Queues the reservations `jobs` may have made for undoing before the lane's next call.
fn undo_later(lane: &Lane, jobs: &[Job]) {
    let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
    q.voids.extend(jobs.iter().map(Job::void));
}

/// Undoes `voids`. While Redis cannot be reached they are kept, and the caller fails
/// what it was about to send: nothing may reach Redis before them. Redis answering with
/// an error (a bug, not an outage) drops them, so a campaign never stays blocked; their
/// orders then expire at `pay_by`, as without this guard.
async fn undo(store: &Store, lane: &Lane, voids: Vec<Void>) -> Result<(), StoreError> {
    match store.void_reservations(&lane.keys, &voids).await {
        Ok((undone, kept)) => {
            if undone > 0 || kept > 0 {
                tracing::warn!(
                    campaign = %lane.keys.campaign, undone, kept,
                    "reservations whose buyers were answered 503 undone (kept: their buyers saw them on a retry)"
                );
            }
            Ok(())
        }
        Err(e) if e.unreachable() => {
            let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            let later = std::mem::replace(&mut q.voids, voids);
            q.voids.extend(later);
            Err(e)
        }
        Err(e) => {
            tracing::error!(campaign = %lane.keys.campaign, error = %e, orders = voids.len(),
                "could not undo reservations answered 503; they expire at their pay_by");
            Ok(())
        }
    }
}
