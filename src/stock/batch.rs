//! Group commit of reservations: the buys of one campaign that arrive while its reserve
//! calls are in flight are sent together as ONE call of `lua/reserve.lua` — one
//! round trip, one script entry, one reply — instead of one call each.
//!
//! No timer: a buy that finds a free driver goes at once, alone, so light traffic waits
//! for nothing; under load batches form by themselves while earlier calls are in flight,
//! up to [`MAX_BATCH`]. One lane per campaign, so on a Cluster one batch is one slot. Up
//! to [`MAX_IN_FLIGHT`] driver tasks send a lane's calls, so Redis has the next batch
//! while a reply travels back. The lane's lock is held only to push or to take work,
//! never across an await.
//!
//! Each buy keeps its own checks and outcome (the script runs them one after another, as
//! separate calls would). A failed call (timeout, Redis away) fails every buy of its batch
//! with 503, and a buy answered 503 must have reserved nothing (docs/guarantees.md). Two
//! guards make that true: each buy carries its own deadline, checked by the script
//! against Redis' clock, so a call Redis runs after the gateway gave up refuses; and a call that may have run (its reply
//! lost with the connection, or late) is undone by `lua/void.lua` before the lane sends
//! anything queued after its failure: its voids are queued before its buyers are
//! answered, a driver takes them together with the next jobs, and while one driver
//! undoes no other sends ([`Queue::next`]). A call sent before the failure was known (the
//! other driver's, or one sent while a reply that came after its buyer gave up was on
//! its way) may meet those orders, as a retry on another instance may: `lua/reserve.lua`
//! then marks an order it shows a buyer `told`, and the undo keeps it.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::reserve::{Buy, ReserveReply, Void};
use super::{CampaignKeys, Store, StoreError};

/// Most buys in one call: about 2-3 ms of Redis time for a full batch.
pub(crate) const MAX_BATCH: usize = 128;
/// Calls of one lane in flight at once. Two hide the round trip (Redis runs one batch
/// while the reply of the other travels and the next forms); more would only split the
/// same arrivals into smaller batches, which cost Redis more per buy.
const MAX_IN_FLIGHT: usize = 2;
/// How often a lane with nothing to send retries undoing its voids while Redis is away.
const VOID_RETRY: Duration = Duration::from_millis(250);

/// One buy waiting for its batch, and where its answer goes.
pub(super) struct Job {
    pub(super) buy: Buy,
    pub(super) reply: oneshot::Sender<Result<ReserveReply, StoreError>>,
}

impl Borrow<Buy> for Job {
    fn borrow(&self) -> &Buy {
        &self.buy
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

/// A lane's work; generic over the job so its rules can be tested without Redis.
struct Queue<J = Job> {
    jobs: Vec<J>,
    /// Undone before the next batch is sent (see the module's note).
    voids: Vec<Void>,
    /// Driver tasks sending this lane's calls, at most [`MAX_IN_FLIGHT`].
    drivers: usize,
    /// A driver is undoing voids: no other driver sends until it is done.
    undoing: bool,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Queue {
            jobs: Vec::new(),
            voids: Vec::new(),
            drivers: 0,
            undoing: false,
        }
    }
}

/// What a driver sends next: the voids to undo first, then a batch (either may be empty).
type Work<J> = (Vec<J>, Vec<Void>);

impl<J> Queue<J> {
    /// Queues `job`; true when a new driver should start for it.
    fn push(&mut self, job: J) -> bool {
        self.jobs.push(job);
        let start = self.drivers < MAX_IN_FLIGHT && !self.undoing;
        if start {
            self.drivers += 1;
        }
        start
    }

    /// A driver's next work, or `None`: it leaves (nothing to do, or another driver is
    /// undoing and will send what is queued after). Voids are always taken together with
    /// the jobs, so no job queued after them is sent before they are undone.
    fn next(&mut self) -> Option<Work<J>> {
        if self.undoing || (self.jobs.is_empty() && self.voids.is_empty()) {
            self.drivers -= 1;
            return None;
        }
        let voids = std::mem::take(&mut self.voids);
        self.undoing = !voids.is_empty();
        let n = self.jobs.len().min(MAX_BATCH);
        Some((self.jobs.drain(..n).collect(), voids))
    }

    /// The undo started by [`Queue::next`] is over; `kept` are the voids it could not
    /// undo (Redis away), to be undone before anything queued since.
    fn undone(&mut self, kept: Vec<Void>) {
        if !kept.is_empty() {
            let later = std::mem::replace(&mut self.voids, kept);
            self.voids.extend(later);
        }
        self.undoing = false;
    }
}

impl Batcher {
    /// Queues `job`; starts a driver for it when fewer than [`MAX_IN_FLIGHT`] run and
    /// none is undoing, else wakes one that waits to retry its voids.
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
        let start = lane
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        if start {
            tokio::spawn(drive(store.clone(), lane));
        } else {
            lane.arrived.notify_one();
        }
    }
}

/// Sends the lane's queued jobs, a batch at a time, until [`Queue::next`] says leave.
async fn drive(store: Store, lane: Arc<Lane>) {
    loop {
        let next = lane.queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        let Some((jobs, voids)) = next else { return };
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
                for (job, raw) in jobs.into_iter().zip(replies) {
                    let reply = ReserveReply::parse(raw);
                    if reply.is_err() {
                        // A reply not understood may hide a reservation: its buyer gets
                        // a 503, so undo it.
                        gone.push(Void::of(&job.buy));
                    }
                    // Its buyer gave up (answered 503) before this reply: undo it.
                    // (Fields moved, not cloned: nothing allocated on the common path.)
                    if let Err(Ok(ReserveReply::Reserved { .. })) = job.reply.send(reply) {
                        gone.push(Void {
                            order_key: job.buy.order_key,
                            order_id: job.buy.order_id,
                            idempotency_key: job.buy.idempotency_key,
                        });
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
    q.voids.extend(jobs.iter().map(|j| Void::of(&j.buy)));
}

/// Undoes `voids`, then lets the lane's other driver send again. While Redis cannot be
/// reached they are kept, and the caller fails what it was about to send: nothing may
/// reach Redis before them. Redis answering with an error (a bug, not an outage) drops
/// them, so a campaign never stays blocked; their orders then expire at `pay_by`, as
/// without this guard.
async fn undo(store: &Store, lane: &Lane, voids: Vec<Void>) -> Result<(), StoreError> {
    let (kept, outcome) = match store.void_reservations(&lane.keys, &voids).await {
        Ok(super::reserve::VoidReply { undone, kept }) => {
            if undone > 0 || kept > 0 {
                tracing::warn!(
                    campaign = %lane.keys.campaign, undone, kept,
                    "reservations whose buyers were answered 503 undone (kept: their buyers saw them on a retry)"
                );
            }
            (Vec::new(), Ok(()))
        }
        Err(e) if e.unreachable() => (voids, Err(e)),
        Err(e) => {
            tracing::error!(campaign = %lane.keys.campaign, error = %e, orders = voids.len(),
                "could not undo reservations answered 503; they expire at their pay_by");
            (Vec::new(), Ok(()))
        }
    };
    lane.queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .undone(kept);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn void(id: &str) -> Void {
        Void {
            order_key: format!("o:{id}"),
            order_id: id.to_owned(),
            idempotency_key: String::new(),
        }
    }

    fn ids(voids: &[Void]) -> Vec<&str> {
        voids.iter().map(|v| v.order_id.as_str()).collect()
    }

    #[test]
    fn a_second_driver_starts_while_the_first_is_busy_and_never_a_third() {
        let mut q = Queue::default();
        assert!(q.push(1), "the first buy starts a driver");
        assert!(q.push(2), "a second one while the first is out");
        assert!(!q.push(3), "at most MAX_IN_FLIGHT");
        assert_eq!(MAX_IN_FLIGHT, 2);
        let (jobs, voids) = q.next().unwrap();
        assert_eq!((jobs, voids.len()), (vec![1, 2, 3], 0));
        assert!(
            q.next().is_none(),
            "the other driver finds nothing and leaves"
        );
        assert!(q.next().is_none());
        assert_eq!(q.drivers, 0);
        assert!(q.push(4), "a later buy starts a driver again");
    }

    #[test]
    fn a_batch_is_at_most_max_batch() {
        let mut q = Queue::default();
        for n in 0..MAX_BATCH + 3 {
            q.push(n);
        }
        assert_eq!(q.next().unwrap().0.len(), MAX_BATCH);
        assert_eq!(
            q.next().unwrap().0,
            (MAX_BATCH..MAX_BATCH + 3).collect::<Vec<_>>()
        );
    }

    /// A buy answered 503 reserved nothing: what is queued after a failed call's voids (its
    /// buyers' retries) is never sent before they are undone — not by the driver that
    /// takes them, nor by the other.
    #[test]
    fn jobs_queued_after_voids_wait_for_their_undo_on_every_driver() {
        let mut q = Queue::default();
        q.push("in flight");
        q.push("failing");
        let _ = q.next().unwrap();
        // The failing call's voids are queued before its buyers are answered 503 ...
        q.voids.extend([void("a"), void("b")]);
        // ... so their retries come after them.
        assert!(!q.push("retry"), "both drivers are out");
        let (jobs, voids) = q.next().unwrap();
        assert_eq!((jobs, ids(&voids)), (vec!["retry"], vec!["a", "b"]));
        assert!(q.undoing);
        // The other driver, back from its call, sends nothing while the undo runs ...
        assert!(!q.push("next"), "no new driver while one undoes");
        assert!(q.next().is_none(), "the other driver leaves");
        assert_eq!(q.drivers, 1);
        // ... and the undoing driver sends it once done.
        q.undone(Vec::new());
        assert!(!q.undoing);
        let (jobs, voids) = q.next().unwrap();
        assert_eq!((jobs, voids.len()), (vec!["next"], 0));
    }

    #[test]
    fn voids_a_failed_undo_kept_come_first_and_block_what_follows() {
        let mut q = Queue::default();
        q.push("retry");
        q.voids.push(void("a"));
        let (_, voids) = q.next().unwrap();
        // Queued while the undo was out (another call's buyer gave up).
        q.voids.push(void("b"));
        q.undone(voids);
        assert!(!q.undoing);
        q.push("later");
        let (jobs, voids) = q.next().unwrap();
        assert_eq!((jobs, ids(&voids)), (vec!["later"], vec!["a", "b"]));
    }

    #[test]
    fn a_driver_with_voids_only_still_undoes_them() {
        let mut q: Queue<u8> = Queue::default();
        q.push(1);
        let _ = q.next().unwrap();
        q.voids.push(void("gone"));
        let (jobs, voids) = q.next().unwrap();
        assert_eq!((jobs.len(), ids(&voids)), (0, vec!["gone"]));
        q.undone(Vec::new());
        assert!(q.next().is_none());
        assert_eq!(q.drivers, 0);
    }
}
