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
//! with 503: each carries its own deadline, checked by the script against Redis' clock,
//! so a call Redis runs after the gateway gave up reserves nothing (SPEC §1.5).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::{CampaignKeys, Reply, Store, StoreError};

/// Most buys in one call: about 2-3 ms of Redis time for a full batch.
pub(crate) const MAX_BATCH: usize = 128;

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

#[derive(Default)]
pub(super) struct Batcher {
    lanes: DashMap<String, Arc<Lane>>,
}

struct Lane {
    keys: CampaignKeys,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
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
        }
    }
}

/// Sends the lane's queued jobs, a batch at a time, until the queue is empty.
async fn drive(store: Store, lane: Arc<Lane>) {
    loop {
        let jobs: Vec<Job> = {
            let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.is_empty() {
                q.running = false;
                return;
            }
            let n = q.jobs.len().min(MAX_BATCH);
            q.jobs.drain(..n).collect()
        };
        if let Some(h) = &store.batch_sizes {
            h.observe(jobs.len() as f64);
        }
        match store.reserve_batch(&lane.keys, &jobs).await {
            Ok(replies) if replies.len() == jobs.len() => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Ok(replies) => {
                let why = format!("{} replies to a batch of {}", replies.len(), jobs.len());
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Protocol(why.clone())));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.again()));
                }
            }
        }
    }
}
