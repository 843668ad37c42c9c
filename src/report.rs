//! What a stop hands back: [`StopReport`] and the terminal states of a job
//! that did not succeed.

use std::fmt;
use std::time::Instant;

use crate::job::{Job, Priority};

/// A job whose [`run`](Job::run) returned `Err`, handed back with its error.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// pool.submit(FnJob::fallible(|_| Err("bad row")))?;
/// let report = pool.stop()?;
/// let failed = &report.failed[0];
/// assert_eq!(failed.error.to_string(), "bad row");
/// assert_eq!(failed.worker, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct Failed<J: Job> {
    /// The job, as `run` left it.
    pub job: J,
    /// What `run` returned.
    pub error: J::Error,
    /// Index of the worker that ran it.
    pub worker: usize,
    /// The lane it was taken from.
    pub lane: Priority,
}

/// A job whose [`run`](Job::run) panicked, handed back with the panic
/// message. The job may be half-updated by the interrupted run.
///
/// # Examples
///
/// ```
/// # #[cfg(panic = "unwind")] {
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// pool.submit(FnJob::new(|_| panic!("corrupt record")))?;
/// let report = pool.stop()?;
/// assert_eq!(report.panicked[0].message, "corrupt record");
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct Panicked<J> {
    /// The job, as the panic left it.
    pub job: J,
    /// The panic message: the `&str` or `String` payload, or
    /// `"non-string panic payload"`.
    pub message: String,
    /// Index of the worker that ran it (the worker survived).
    pub worker: usize,
    /// The lane it was taken from.
    pub lane: Priority,
}

/// A job that was accepted but never started, handed back at stop.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use triage_pool::{Context, FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// let (started_tx, started_rx) = std::sync::mpsc::channel();
/// pool.submit(FnJob::new(move |ctx: &Context| {
///     started_tx.send(()).unwrap();
///     ctx.wait_cancelled(Duration::MAX); // busy until stop_now cancels
/// }))?;
/// started_rx.recv()?; // the only worker is busy
/// pool.submit_to(Priority::Bulk, FnJob::new(|_| ()))?;
/// let report = pool.stop_now()?;
/// assert_eq!(report.unrun.len(), 1);
/// assert_eq!(report.unrun[0].lane, Priority::Bulk);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub struct Unrun<J> {
    /// The job, untouched.
    pub job: J,
    /// The lane it was queued in.
    pub lane: Priority,
}

/// A job still running when a [`stop_timeout`](crate::Pool::stop_timeout)
/// deadline passed. The job cannot be taken from its thread, so it is
/// reported here and counted apart; its worker thread is left to finish it
/// and logs the job's eventual outcome at `warn` level (a panic at
/// `error`). Only a job whose worker had committed to run it is abandoned:
/// one a worker had dequeued but not started when the deadline passed is
/// handed back in [`StopReport::unrun`](crate::StopReport::unrun).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// let (started_tx, started_rx) = std::sync::mpsc::channel();
/// let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
/// pool.submit(FnJob::new(move |_| {
///     started_tx.send(()).unwrap();
///     let _ = release_rx.recv(); // stuck until released
/// }))?;
/// started_rx.recv()?;
/// let report = pool.stop_timeout(Duration::from_millis(50))?;
/// assert_eq!(report.abandoned.len(), 1);
/// assert_eq!(report.abandoned[0].worker, 0);
/// release_tx.send(())?;
/// assert!(pool.stop()?.is_clean()); // joins the straggler once it finishes
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Abandoned {
    /// Index of the worker still running the job.
    pub worker: usize,
    /// The lane the job was taken from.
    pub lane: Priority,
    /// When the job started to run (in a pool built with
    /// [`timing(false)`](crate::Builder::timing): when the stop gave up on
    /// it).
    pub running_since: Instant,
}

/// Everything a stop hands back: how many jobs succeeded over the pool's
/// life, and by value every job that did not — failed with its error,
/// panicked with its message, never run, or abandoned at a deadline.
///
/// The counts cover the whole life of the pool, so the ledger balances:
/// `accepted = succeeded + failed + panicked + unrun + abandoned + taken`,
/// where `accepted` is [`Stats::accepted`](crate::Stats::accepted) at the
/// end and `taken` counts the failed and panicked jobs taken earlier with
/// [`take_failed`](crate::Submitter::take_failed) or
/// [`take_panicked`](crate::Submitter::take_panicked): they count in the
/// [`Stats`](crate::Stats) but are not in the report again. Without such
/// calls `taken` is 0 and [`total`](Self::total) equals `accepted`.
///
/// `unrun` is in lane order (`Urgent` first) and, within a lane, in queue
/// order: the order the jobs were accepted, so a resume file written from
/// it keeps one producer's submission order (submits racing from several
/// threads are in the order their pushes landed). The few jobs that workers
/// had already dequeued but not started when a stop discarded the queue (at
/// most one per worker) come first in their lane, ordered by acceptance
/// time — in no particular order among themselves with
/// [`timing(false)`](crate::Builder::timing). `failed` and `panicked` are
/// in the order the jobs finished.
///
/// Only the call that performs the stop receives the jobs; any other stop
/// call (a second `stop`, a concurrent one, or `Drop`) gets an empty report.
///
/// The type is `#[must_use]`: `pool.stop()?;` on its own draws a compiler
/// warning, because dropping the report drops the jobs it hands back (and
/// nothing logs them, unlike the report of a pool's `Drop`). Write
/// `let _report = pool.stop()?;` where that is what you mean.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// for i in 0..10 {
///     pool.submit(FnJob::fallible(move |_| if i % 5 == 0 { Err("multiple of 5") } else { Ok(()) }))?;
/// }
/// let report = pool.stop()?;
/// assert_eq!(report.succeeded, 8);
/// assert_eq!(report.failed.len(), 2);
/// assert_eq!(report.total(), 10);
/// assert!(!report.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[must_use = "the report hands back the jobs that failed, panicked or never ran; dropping it drops them"]
pub struct StopReport<J: Job> {
    /// How many jobs succeeded over the pool's life (they were dropped after
    /// running).
    pub succeeded: u64,
    /// Jobs whose `run` returned `Err`, with their errors (those not
    /// already taken with [`take_failed`](crate::Submitter::take_failed)).
    pub failed: Vec<Failed<J>>,
    /// Jobs whose `run` panicked, with their messages (those not already
    /// taken with [`take_panicked`](crate::Submitter::take_panicked)).
    pub panicked: Vec<Panicked<J>>,
    /// Jobs accepted but never run, in lane order then queue order (see
    /// above). One exception to queue order: a job a worker had already
    /// taken from its lane when the stop came, and handed back instead of
    /// starting (at most one per worker), comes first in its lane, and
    /// several such jobs are ordered by when they were accepted — with
    /// [`timing(false)`](crate::Builder::timing) in no set order, and a job
    /// whose producer blocked on a full lane counts as accepted when its
    /// submit began.
    pub unrun: Vec<Unrun<J>>,
    /// Jobs still running at a `stop_timeout` deadline.
    pub abandoned: Vec<Abandoned>,
}

impl<J: Job> StopReport<J> {
    pub(crate) fn empty() -> StopReport<J> {
        StopReport {
            succeeded: 0,
            failed: Vec::new(),
            panicked: Vec::new(),
            unrun: Vec::new(),
            abandoned: Vec::new(),
        }
    }

    /// Whether every job accounted for succeeded: nothing failed, panicked,
    /// stayed unrun or was abandoned.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
            && self.panicked.is_empty()
            && self.unrun.is_empty()
            && self.abandoned.is_empty()
    }

    /// Every job the report accounts for:
    /// `succeeded + failed + panicked + unrun + abandoned`.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let report = pool.stop()?;
    /// assert_eq!(report.total(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn total(&self) -> u64 {
        self.succeeded
            + (self.failed.len() + self.panicked.len() + self.unrun.len() + self.abandoned.len())
                as u64
    }
}

/// One line with the count of each terminal state, for a log or the end of a
/// run, such as
/// `10 jobs: 8 succeeded, 2 failed, 0 panicked, 0 unrun, 0 abandoned`: the
/// jobs in this report ([`total`](StopReport::total)), so failed or panicked
/// jobs taken earlier with
/// [`take_failed`](crate::Submitter::take_failed) or
/// [`take_panicked`](crate::Submitter::take_panicked) are not in it. The jobs
/// themselves are not printed (they need not be `Debug` or `Display`); walk the
/// report's vectors for them.
///
/// The exact wording is for people, not parsers, and may change between
/// versions.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// for i in 0..10 {
///     pool.submit(FnJob::fallible(move |_| if i % 5 == 0 { Err("multiple of 5") } else { Ok(()) }))?;
/// }
/// let report = pool.stop()?;
/// assert_eq!(
///     report.to_string(),
///     "10 jobs: 8 succeeded, 2 failed, 0 panicked, 0 unrun, 0 abandoned"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<J: Job> fmt::Display for StopReport<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} jobs: {} succeeded, {} failed, {} panicked, {} unrun, {} abandoned",
            self.total(),
            self.succeeded,
            self.failed.len(),
            self.panicked.len(),
            self.unrun.len(),
            self.abandoned.len()
        )
    }
}

impl<J: Job> fmt::Debug for StopReport<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopReport")
            .field("succeeded", &self.succeeded)
            .field("failed", &self.failed.len())
            .field("panicked", &self.panicked.len())
            .field("unrun", &self.unrun.len())
            .field("abandoned", &self.abandoned)
            .finish()
    }
}

impl<J: Job> fmt::Debug for Failed<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failed")
            .field("worker", &self.worker)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl<J> fmt::Debug for Panicked<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panicked")
            .field("message", &self.message)
            .field("worker", &self.worker)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl<J> fmt::Debug for Unrun<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unrun")
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}
