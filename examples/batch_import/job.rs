//! The pool's job type: one input record, validated, scored and staged for
//! the database by whichever worker takes it.
//!
//! [`ImportJob`] implements [`Job`] directly (no boxing), so submitting a
//! record moves it into a preallocated lane slot. A job that returns `Ok`
//! has staged its record with the [`Writer`], which writes it with the rest
//! of its worker's batch (an adverse event: at once, in a transaction of
//! its own); see `store.rs` for what `Ok` promises and how a failed write
//! is reported. A job that fails is a malformed row: the pool hands it back
//! with its [`Invalid`] reason when it stops, and it goes to the rejects
//! file.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use triage_pool::{Context, Job, Priority};

use super::record::{Invalid, Visit};
use super::store::{Staged, Writer};

/// How long jobs waited in their lane before a worker started them.
///
/// One list per worker, so recording a wait never contends with another
/// worker: `samples[worker]` holds `(lane, wait)` pairs.
#[derive(Debug)]
pub(crate) struct QueueWaits {
    /// Indexed by `Context::worker_index`.
    samples: Vec<Mutex<Vec<(Priority, Duration)>>>,
}

impl QueueWaits {
    /// Room for `workers` workers (general and reserved together).
    pub(crate) fn new(workers: usize) -> QueueWaits {
        QueueWaits {
            samples: (0..workers).map(|_| Mutex::default()).collect(),
        }
    }

    fn record(&self, worker: usize, lane: Priority, wait: Duration) {
        if let Some(samples) = self.samples.get(worker) {
            // A poisoned lock only means a job panicked mid-push; the
            // samples are still plain numbers.
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((lane, wait));
        }
    }

    /// The recorded waits of `lane`, sorted.
    pub(crate) fn sorted(&self, lane: Priority) -> Vec<Duration> {
        let mut waits: Vec<Duration> = self
            .samples
            .iter()
            .flat_map(|samples| {
                let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                samples
                    .iter()
                    .filter(|(l, _)| *l == lane)
                    .map(|(_, wait)| *wait)
                    .collect::<Vec<_>>()
            })
            .collect();
        waits.sort_unstable();
        waits
    }
}

/// What every job of one import shares.
#[derive(Debug)]
pub(crate) struct JobShared {
    /// The input's header row; records are read by column name.
    pub(crate) headers: csv::ByteRecord,
    /// Stages and writes the records.
    pub(crate) writer: Arc<Writer>,
    /// Queue waits, for the latency report.
    pub(crate) waits: QueueWaits,
}

/// One input record on its way into the database.
#[derive(Debug)]
pub(crate) struct ImportJob {
    /// Line of the record in the input file (for the rejects file).
    line: u64,
    /// The record as read, untouched; moved into the batch once staged.
    record: csv::ByteRecord,
    /// `Urgent` for an adverse event, else `Normal`.
    lane: Priority,
    /// What all jobs of this import share.
    shared: Arc<JobShared>,
}

impl ImportJob {
    /// A job for `record`, read at `line`, in `lane`.
    pub(crate) fn new(
        line: u64,
        record: csv::ByteRecord,
        lane: Priority,
        shared: Arc<JobShared>,
    ) -> ImportJob {
        ImportJob {
            line,
            record,
            lane,
            shared,
        }
    }

    /// Line of the record in the input file.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Gives the record back (for the rejects or resume file).
    pub(crate) fn into_record(self) -> csv::ByteRecord {
        self.record
    }
}

impl Job for ImportJob {
    type Error = Invalid;

    /// Validates and scores the record and stages it. An adverse event is
    /// written at once, so its alert does not wait for a batch to fill.
    /// Waits between `SQLITE_BUSY` retries end early on a stop; the record
    /// then stays staged and the worker's hooks write it before the stop
    /// returns.
    fn run(&mut self, ctx: &Context) -> Result<(), Invalid> {
        let shared = &*self.shared;
        shared
            .waits
            .record(ctx.worker_index(), ctx.lane(), ctx.queue_wait());
        let visit = Visit::from_record(&shared.headers, &self.record)?;
        let urgent = visit.adverse_event.is_some();
        let staged = Staged {
            line: self.line,
            record: std::mem::take(&mut self.record),
            risk_score: visit.risk_score(),
            visit,
            worker: ctx.worker_index(),
            queue_wait: ctx.queue_wait(),
        };
        let mut wait = |backoff: Duration| ctx.wait_cancelled(backoff);
        if urgent {
            shared.writer.write_now(staged, &mut wait);
        } else {
            shared.writer.stage(staged, &mut wait);
        }
        Ok(())
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}
