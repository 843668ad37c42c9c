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
//!
//! A job keeps its record, whole, whatever happens to it: staging hands the
//! writer a copy. So a job the pool hands back (unrun, failed, panicked)
//! always has the record to write to a file. A job that panics *after*
//! staging says so ([`ImportJob::is_staged`]): the writer has its record and
//! accounts for it (database, duplicate, or failed), so the import must not
//! count it a second time.

use std::sync::Arc;
use std::time::Duration;

use triage_pool::{Context, Job, Priority};

use super::record::{Invalid, Visit};
use super::store::{Staged, Writer};

/// What every job of one import shares.
#[derive(Debug)]
pub(crate) struct JobShared {
    /// The input's header row; records are read by column name.
    pub(crate) headers: csv::ByteRecord,
    /// Stages and writes the records.
    pub(crate) writer: Arc<Writer>,
    /// Test only: input lines whose jobs panic right after staging.
    #[cfg(test)]
    pub(crate) panic_after_staging: Vec<u64>,
}

/// One input record on its way into the database.
#[derive(Debug)]
pub(crate) struct ImportJob {
    /// Line of the record in the input file (for the rejects file).
    line: u64,
    /// The record as read, untouched, for the life of the job (staging
    /// takes a copy).
    record: csv::ByteRecord,
    /// `Urgent` for an adverse event, else `Normal`.
    lane: Priority,
    /// The writer has taken a copy of the record: its ledger accounts for
    /// it from then on, even if the job panics afterwards.
    staged: bool,
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
            staged: false,
            shared,
        }
    }

    /// Line of the record in the input file.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Whether the job staged its record with the writer before it ended.
    /// Only a job that panicked can have staged its record and not returned
    /// `Ok`; its record is then the writer's to account for.
    pub(crate) fn is_staged(&self) -> bool {
        self.staged
    }

    /// Gives the record back (for the rejects or resume file).
    pub(crate) fn into_record(self) -> csv::ByteRecord {
        self.record
    }
}

impl Job for ImportJob {
    type Error = Invalid;

    /// Validates and scores the record and stages it, then writes what is
    /// due: an adverse event at once, so its alert does not wait for a batch
    /// to fill, and the worker's batch if this record filled it. Waits
    /// between `SQLITE_BUSY` retries end early on a stop; the record then
    /// stays staged and the worker's hooks write it before the stop returns.
    fn run(&mut self, ctx: &Context) -> Result<(), Invalid> {
        let shared = &*self.shared;
        let visit = Visit::from_record(&shared.headers, &self.record)?;
        shared.writer.stage(Staged {
            line: self.line,
            record: self.record.clone(),
            risk_score: visit.risk_score(),
            visit,
            worker: ctx.worker_index(),
            queue_wait: ctx.queue_wait(),
        });
        self.staged = true;
        #[cfg(test)]
        if shared.panic_after_staging.contains(&self.line) {
            panic!("injected panic after staging line {}", self.line);
        }
        shared
            .writer
            .write_due(&mut |backoff: Duration| ctx.wait_cancelled(backoff));
        Ok(())
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}
