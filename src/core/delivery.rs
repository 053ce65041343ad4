//! The outbox consumer's deliveries in flight: entries cut into the sink's batches, at
//! most `orders.delivery_concurrency` batches at once, while the consumer keeps reading
//! (a slow delivery never holds up the others). Each entry is acknowledged (XACK + XDEL)
//! only once the sink said it is stored; the others stay pending and come back as
//! retries. Order does not matter: sinks dedupe by order id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};
use crate::stock::outbox::Entry;
use crate::stock::{Conn, Store, StoreError};

/// An entry to deliver and which delivery of it this is (1 = the first).
pub(super) struct Work {
    pub(super) entry: Entry,
    pub(super) attempt: u64,
    /// The master it was read from ([`Conn::generation`]): `WAIT` on another one says
    /// nothing about it.
    pub(super) read_from: u64,
}

/// A finished batch: its entries, their attempt numbers, the sink's answer for each.
pub(super) type Done = (Vec<Entry>, Vec<u64>, Vec<Result<(), SinkError>>);

pub(super) struct Deliveries {
    sink: Arc<dyn Sink>,
    metrics: Metrics,
    concurrency: usize,
    /// Dropped (on shutdown) it aborts the deliveries in flight: their entries stay
    /// pending and are reclaimed, nothing is lost.
    flying: JoinSet<Done>,
    /// Ids of the entries in flight, which the consumer must not claim again meanwhile.
    in_flight: HashSet<String>,
    /// The entry ids of each batch in flight, to forget them should its task panic.
    batches: HashMap<Id, Vec<String>>,
}

impl Deliveries {
    pub(super) fn new(sink: Arc<dyn Sink>, metrics: Metrics, concurrency: usize) -> Deliveries {
        Deliveries {
            sink,
            metrics,
            concurrency: concurrency.max(1),
            flying: JoinSet::new(),
            in_flight: HashSet::new(),
            batches: HashMap::new(),
        }
    }

    fn batch_size(&self) -> usize {
        self.sink.batch_size().max(1)
    }

    /// How many more entries can start now.
    pub(super) fn room(&self) -> usize {
        self.concurrency.saturating_sub(self.flying.len()) * self.batch_size()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.flying.is_empty()
    }

    pub(super) fn in_flight(&self, id: &str) -> bool {
        self.in_flight.contains(id)
    }

    /// Starts delivering `work` (at most [`Deliveries::room`] entries).
    pub(super) fn start(&mut self, work: Vec<Work>) {
        let batch = self.batch_size();
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            let (entries, attempts): (Vec<Entry>, Vec<u64>) = work
                .by_ref()
                .take(batch)
                .map(|w| (w.entry, w.attempt))
                .unzip();
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            self.in_flight.extend(ids.iter().cloned());
            let sink = self.sink.clone();
            let task = self.flying.spawn(async move {
                let results = sink.deliver(&entries).await;
                (entries, attempts, results)
            });
            self.batches.insert(task.id(), ids);
        }
    }

    /// The next batch to finish; `None` at once when none is in flight.
    pub(super) async fn next(&mut self) -> Option<Result<(Id, Done), JoinError>> {
        self.flying.join_next_with_id().await
    }

    /// Settles every batch that already finished; returns how many entries they held.
    pub(super) async fn settle_finished(
        &mut self,
        store: &Store,
        con: &mut Conn,
        last_error: &mut HashMap<String, String>,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        while let Some(done) = self.flying.try_join_next_with_id() {
            n += self.settle(store, con, done, last_error).await?;
        }
        Ok(n)
    }

    /// Acknowledges the stored entries of a finished batch (one call per stream) and
    /// counts; remembers the error of the others. Returns how many entries it held.
    pub(super) async fn settle(
        &mut self,
        store: &Store,
        con: &mut Conn,
        done: Result<(Id, Done), JoinError>,
        last_error: &mut HashMap<String, String>,
    ) -> Result<usize, StoreError> {
        let (entries, attempts, results) = match done {
            Ok((id, done)) => {
                self.batches.remove(&id);
                done
            }
            Err(e) => {
                // A sink that panicked stored nothing we know of: its entries stay
                // pending and come back as retries.
                tracing::error!(error = %e, "outbox: a sink delivery panicked");
                for id in self.batches.remove(&e.id()).unwrap_or_default() {
                    self.in_flight.remove(&id);
                }
                return Ok(0);
            }
        };
        let mut stored: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut results = results.into_iter();
        for (e, attempt) in entries.iter().zip(&attempts) {
            self.in_flight.remove(&e.id);
            // A sink that answered for fewer entries than it was given stored none of
            // the rest, as far as anyone can tell.
            match results
                .next()
                .unwrap_or_else(|| Err(SinkError::Unreachable("no answer from the sink".into())))
            {
                Ok(()) => {
                    stored.entry(&e.stream).or_default().push(&e.id);
                    tracing::info!(order_id = %e.order.order_id, event = e.event.as_str(), "order handed to the sink");
                }
                Err(err) => {
                    self.count("retry", 1);
                    tracing::warn!(order_id = %e.order.order_id, attempt, error = %err, "sink delivery failed; will retry");
                    // Only a hint for the dead-letter record; entries finished by another
                    // instance never come back here, so keep the map bounded.
                    if last_error.len() >= 10_000 {
                        last_error.clear();
                    }
                    last_error.insert(e.id.clone(), err.to_string());
                }
            }
        }
        for (stream, ids) in stored {
            store.ack(con, stream, &ids).await?;
            for id in &ids {
                last_error.remove(*id);
            }
            self.count("ok", ids.len());
        }
        Ok(entries.len())
    }

    fn count(&self, result: &str, n: usize) {
        self.metrics
            .sink_deliveries
            .with_label_values(&[self.sink.name(), result])
            .inc_by(n as u64);
    }
}
