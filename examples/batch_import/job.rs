//! The pool's job type: one input record, validated, scored and written to
//! the database by whichever worker takes it.
//!
//! [`ImportJob`] implements [`Job`] directly (no boxing), so submitting a
//! record moves it into a preallocated lane slot. A job that fails keeps its
//! raw record, and the pool hands it back with its [`RecordError`] when it
//! stops: rejected rows go to the rejects file, rows the database refused
//! go to the resume file.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use triage_pool::{Context, Job, Priority};

use super::record::{Invalid, Visit};
use super::store::{self, DbSettings};

/// How a job retries a write that failed with `SQLITE_BUSY`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub(crate) attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub(crate) first_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1).
    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff.saturating_mul(
            1_u32
                .checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
    }
}

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
    /// Unique id of the import, so a worker thread never reuses a
    /// connection opened for another import.
    pub(crate) import: u64,
    /// The input's header row; records are read by column name.
    pub(crate) headers: csv::ByteRecord,
    /// The database.
    pub(crate) db: DbSettings,
    /// Retries of `SQLITE_BUSY`.
    pub(crate) retry: RetryPolicy,
    /// Queue waits, for the latency report.
    pub(crate) waits: QueueWaits,
}

/// Why a record was not imported.
#[derive(Debug)]
pub(crate) enum RecordError {
    /// The row is malformed; fixing it is a data manager's job. It goes to
    /// the rejects file with this reason.
    Invalid(Invalid),
    /// The database refused the write. The row itself is fine, so it goes
    /// to the resume file, to be imported again.
    Database {
        /// Attempts made.
        attempts: u32,
        /// A stop was requested while waiting to retry.
        cancelled: bool,
        /// The last error.
        source: rusqlite::Error,
    },
}

impl RecordError {
    /// Whether the record itself is at fault (rejects file) rather than the
    /// database (resume file).
    pub(crate) fn is_rejection(&self) -> bool {
        matches!(self, RecordError::Invalid(_))
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Invalid(invalid) => invalid.fmt(f),
            RecordError::Database {
                attempts,
                cancelled,
                source,
            } => {
                write!(f, "database error after {attempts} attempt(s): {source}")?;
                if *cancelled {
                    f.write_str(" (stop requested while waiting to retry)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecordError::Invalid(invalid) => Some(invalid),
            RecordError::Database { source, .. } => Some(source),
        }
    }
}

/// One input record on its way into the database.
#[derive(Debug)]
pub(crate) struct ImportJob {
    /// Line of the record in the input file (for the rejects file).
    line: u64,
    /// The record as read, untouched.
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

    /// Gives the record back (for the resume file).
    pub(crate) fn into_record(self) -> csv::ByteRecord {
        self.record
    }

    /// Writes the validated visit, retrying `SQLITE_BUSY` with a doubling
    /// backoff. The backoff waits on the pool's cancel flag instead of
    /// sleeping, so a stop does not wait it out.
    fn write(&self, visit: &Visit, ctx: &Context) -> Result<(), RecordError> {
        let shared = &*self.shared;
        let risk_score = visit.risk_score();
        let mut attempt = 1;
        loop {
            let result = store::with_worker_connection(shared.import, &shared.db, |conn| {
                store::write_visit(
                    conn,
                    visit,
                    risk_score,
                    ctx.worker_index(),
                    ctx.queue_wait(),
                )
            });
            let source = match result {
                Ok(()) => return Ok(()),
                Err(e) if store::is_duplicate(&e) => {
                    return Err(RecordError::Invalid(Invalid::Duplicate {
                        record_id: visit.record_id.clone(),
                    }))
                }
                Err(e) => e,
            };
            if !store::is_busy(&source) || attempt >= shared.retry.attempts {
                return Err(RecordError::Database {
                    attempts: attempt,
                    cancelled: false,
                    source,
                });
            }
            let backoff = shared.retry.backoff(attempt);
            tracing::debug!(
                line = self.line,
                attempt,
                ?backoff,
                "database busy; retrying"
            );
            if ctx.wait_cancelled(backoff) {
                return Err(RecordError::Database {
                    attempts: attempt,
                    cancelled: true,
                    source,
                });
            }
            attempt += 1;
        }
    }
}

impl Job for ImportJob {
    type Error = RecordError;

    fn run(&mut self, ctx: &Context) -> Result<(), RecordError> {
        self.shared
            .waits
            .record(ctx.worker_index(), ctx.lane(), ctx.queue_wait());
        let visit =
            Visit::from_record(&self.shared.headers, &self.record).map_err(RecordError::Invalid)?;
        self.write(&visit, ctx)
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}
