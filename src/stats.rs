//! Counters behind [`Pool::stats`](crate::Pool::stats).
//!
//! Per-job counters live in each worker's own cache line and have a single
//! writer (that worker), so counting a finished job is a plain load and
//! store, not a contended read-modify-write. A snapshot sums them.

use crate::sync::{AtomicU64, AtomicU8, Ordering};
use std::fmt;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::job::Priority;
use crate::lanes::Lanes;
use crate::latency::{HumanDuration, WaitRecorder};

/// `WorkerSlot::state` value of a worker that is not running a job.
pub(crate) const IDLE: u64 = 0;
/// `WorkerSlot::state` value of a worker whose job a `stop_timeout` deadline
/// gave up on.
pub(crate) const ABANDONED: u64 = u64::MAX;
/// Flag on `WorkerSlot::state` while a worker holds a job it has dequeued
/// but not yet committed to run: it is about to look at `discard` and
/// either hand the job back or start it. A stop never abandons a job in
/// this state (see `worker.rs`, "Abandoning a job").
pub(crate) const STARTING: u64 = 1 << 63;

/// What one worker publishes about itself.
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    /// Jobs this worker ran that returned `Ok`.
    pub(crate) succeeded: AtomicU64,
    /// Jobs this worker ran that returned `Err`.
    pub(crate) failed: AtomicU64,
    /// Jobs this worker ran that panicked.
    pub(crate) panicked: AtomicU64,
    /// `IDLE`, `ABANDONED`, or 1 + the job's start time in nanoseconds since
    /// the pool's epoch (below `STARTING`), with the `STARTING` flag until
    /// the worker commits to run it. Written by the worker; swapped to
    /// `ABANDONED` by a stop whose deadline passed (see `worker.rs`,
    /// "Abandoning a job").
    pub(crate) state: AtomicU64,
    /// `Priority::index` of the running job's lane.
    pub(crate) lane: AtomicU8,
    /// Per lane: acceptance time (pool nanoseconds) of the last job this
    /// worker took from it. Bounds the age of the lane's oldest queued job.
    pub(crate) taken_accepted_at: [AtomicU64; 3],
    /// Queue waits of the jobs this worker started, per lane.
    pub(crate) waits: WaitRecorder,
}

impl WorkerSlot {
    /// Adds one to a counter only this worker writes. Release, so a snapshot
    /// that sees the new count also sees the job's `accepted` increment.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
    }
}

/// Pool-wide counters written by producers and the stopping thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Submits refused (full, stopped, timed out).
    pub(crate) refused: CachePadded<AtomicU64>,
    /// Accepted jobs handed back unrun at stop.
    pub(crate) unrun: AtomicU64,
    /// Jobs still running at a `stop_timeout` deadline.
    pub(crate) abandoned: AtomicU64,
}

/// A snapshot of a pool's state, cheap enough to take for every refresh of a
/// progress bar: a few atomic loads per worker and per lane, no lock.
///
/// The counters are read one after another while the pool runs, so a
/// snapshot taken under load is consistent only approximately (a job may be
/// counted as accepted and not yet as finished). In a snapshot taken after
/// a stop has returned, the ledger balances exactly:
/// `accepted = succeeded + failed + panicked + unrun + abandoned`
/// ([`Submitter::is_stopped`](crate::Submitter::is_stopped) is not enough:
/// it turns `true` as the stop begins, before the stop has run or handed
/// back what was queued).
///
/// Every snapshot — [`Submitter::stats`](crate::Submitter::stats), and
/// `Pool`'s `Debug`, which takes one — also tightens the estimate behind
/// [`oldest_wait`](Self::oldest_wait).
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// pool.submit(FnJob::new(|_| ()))?;
/// let stats = pool.stats();
/// assert_eq!(stats.workers(), 2);
/// assert_eq!(stats.accepted(), 1);
/// println!("{} queued, {} busy", stats.queued_total(), stats.busy());
/// assert!(pool.stop()?.is_clean());
/// assert_eq!(pool.stats().succeeded(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub(crate) workers: usize,
    pub(crate) reserved_urgent_workers: usize,
    pub(crate) busy: usize,
    pub(crate) queued: [usize; 3],
    pub(crate) oldest_wait: [Option<Duration>; 3],
    pub(crate) capacity: [usize; 3],
    pub(crate) accepted: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) panicked: u64,
    pub(crate) unrun: u64,
    pub(crate) abandoned: u64,
    pub(crate) refused: u64,
}

/// Generates documented getters for `Stats` fields; each example runs the
/// same script (2 general workers and 1 reserved; 3 jobs succeed, 1 fails,
/// the pool stops, 1 submit is refused) and checks the getter's value.
macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $expected:literal;)+) => {
        $(
            $(#[$doc])*
            ///
            /// # Examples
            ///
            /// ```
            /// use triage_pool::{FnJob, Pool};
            ///
            /// let pool: Pool<FnJob> = Pool::builder().workers(2).reserved_urgent_workers(1).build()?;
            /// for row in 0..4 {
            ///     pool.submit(FnJob::fallible(move |_| if row == 3 { Err("bad row") } else { Ok(()) }))?;
            /// }
            /// let report = pool.stop()?;
            /// assert_eq!((report.succeeded, report.failed.len()), (3, 1));
            /// assert!(pool.submit(FnJob::new(|_| ())).is_err()); // refused: stopped
            /// let stats = pool.stats();
            #[doc = concat!("assert_eq!(stats.", stringify!($name), "(), ", stringify!($expected), ");")]
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn $name(&self) -> $ty {
                self.$name
            }
        )+
    };
}

impl Stats {
    getters! {
        /// General worker threads (they take every lane).
        workers: usize = 2;
        /// Reserved urgent worker threads (they take only the `Urgent` lane).
        reserved_urgent_workers: usize = 1;
        /// Worker threads running a job right now, including a job a
        /// `stop_timeout` abandoned, until it ends.
        busy: usize = 0;
        /// Jobs accepted since the pool was built. A submit counts its job
        /// as accepted as soon as it passes the intake check, while it may
        /// still wait for room in a full lane; if it ends up refused, the
        /// count is taken back. So under backpressure this includes jobs of
        /// producers blocked in `submit`, and while a stop is closing
        /// intake, for a moment, a submit it is about to refuse. Once the
        /// stop has waited out the submits that entered before the close,
        /// a refused submit never shows here.
        accepted: u64 = 4;
        /// Jobs whose `run` returned `Ok`.
        succeeded: u64 = 3;
        /// Jobs whose `run` returned `Err`.
        failed: u64 = 1;
        /// Jobs whose `run` panicked.
        panicked: u64 = 0;
        /// Accepted jobs handed back unrun by a stop.
        unrun: u64 = 0;
        /// Jobs still running at a `stop_timeout` deadline. Their outcome
        /// when they end later (success, failure, panic) is logged, not
        /// counted: the ledger closed with them as abandoned.
        abandoned: u64 = 0;
        /// Submits that were refused (lane full, timeout, or stopped). A
        /// refused job was never accepted and is not part of the ledger.
        refused: u64 = 1;
    }

    /// Jobs waiting in `lane` right now.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (started_tx, started) = mpsc::channel();
    /// let (release_tx, release) = mpsc::channel::<()>();
    /// pool.submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     release.recv().unwrap(); // hold the only worker
    /// }))?;
    /// started.recv()?; // taken from its lane: running, not queued
    /// for _ in 0..3 {
    ///     pool.submit_to(Priority::Bulk, FnJob::new(|_| ()))?;
    /// }
    /// let stats = pool.stats();
    /// assert_eq!(stats.queued(Priority::Bulk), 3);
    /// assert_eq!(stats.queued(Priority::Normal), 0);
    /// assert_eq!(stats.queued_total(), 3);
    /// assert_eq!(stats.busy(), 1);
    /// release_tx.send(())?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queued(&self, lane: Priority) -> usize {
        self.queued[lane.index()]
    }

    /// How long the oldest job waiting in `lane` has been queued, at most;
    /// `None` if the lane is empty, or if the pool was built with
    /// [`timing(false)`](crate::Builder::timing).
    ///
    /// The lanes are FIFO queues that cannot be peeked, so this is an
    /// estimate from above, computed from the acceptance time (see
    /// [`Context::queue_wait`](crate::Context::queue_wait)) of the job most
    /// recently taken from the lane, or from the last time a snapshot saw
    /// the lane empty, or from the last time a worker ran out of work with
    /// the lane empty, whichever is latest:
    /// - while workers keep taking from the lane it is exact to within the
    ///   gap between two consecutive acceptances;
    /// - after the lane ran dry, it counts from when it was last seen empty
    ///   — by an idle worker going to sleep, or by a snapshot (taking one
    ///   records that observation for later ones);
    /// - for a lane never taken from and never seen empty, it counts from
    ///   when the pool was built.
    ///
    /// It can fall short of the true wait only by a race of a few
    /// instructions: a job admitted just before a snapshot saw its lane
    /// empty but enqueued just after (or, with several producers, jobs
    /// entering the lane out of acceptance order), or a submit that blocked
    /// on the full lane (its acceptance time is when it was admitted).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (started_tx, started_rx) = std::sync::mpsc::channel();
    /// let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    /// pool.submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap(); // hold the only worker
    /// }))?;
    /// started_rx.recv()?;
    /// let seen_empty = std::time::Instant::now();
    /// // Nothing queued; this snapshot also records that it saw the lane empty.
    /// assert_eq!(pool.stats().oldest_wait(Priority::Normal), None);
    /// pool.submit(FnJob::new(|_| ()))?;
    /// std::thread::sleep(Duration::from_millis(20));
    /// let wait = pool.stats().oldest_wait(Priority::Normal).expect("one job queued");
    /// // At least the 20 ms the job has waited; at most the time since the
    /// // lane was last seen empty (1 ms of slack: the pool reads the CPU's
    /// // time-stamp counter, `Instant` the OS clock).
    /// let slack = Duration::from_millis(1);
    /// assert!(wait + slack >= Duration::from_millis(20), "{wait:?}");
    /// assert!(wait <= seen_empty.elapsed() + slack, "{wait:?}");
    /// release_tx.send(())?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn oldest_wait(&self, lane: Priority) -> Option<Duration> {
        self.oldest_wait[lane.index()]
    }

    /// Jobs waiting in all lanes together.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// assert_eq!(pool.stats().queued_total(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queued_total(&self) -> usize {
        self.queued.iter().sum()
    }

    /// The configured capacity of `lane`: the most jobs it holds at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().capacity(Priority::Bulk, 10).build()?;
    /// assert_eq!(pool.stats().capacity(Priority::Bulk), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self, lane: Priority) -> usize {
        self.capacity[lane.index()]
    }

    /// Jobs accepted that have not reached a terminal state yet:
    /// `accepted - (succeeded + failed + panicked + unrun + abandoned)`,
    /// saturating at 0 for a snapshot taken mid-update. That is the jobs
    /// queued or running, and also those of producers still blocked in
    /// `submit` on a full lane (see [`accepted`](Self::accepted)) and, while
    /// a stop that hands jobs back has not returned, the jobs it is
    /// collecting.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// assert!(pool.stop()?.is_clean());
    /// assert_eq!(pool.stats().pending(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pending(&self) -> u64 {
        self.accepted.saturating_sub(self.finished())
    }

    /// Jobs in a terminal state:
    /// `succeeded + failed + panicked + unrun + abandoned`.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// assert!(pool.stop()?.is_clean());
    /// assert_eq!(pool.stats().finished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.panicked + self.unrun + self.abandoned
    }
}

/// One line for a log or a progress display: the workers, each lane's
/// depth against its capacity (with the age of its oldest job when it has
/// one), and the ledger — the accepted jobs split into their terminal
/// states and the ones still pending — then the refused submits.
///
/// The exact wording is for people, not parsers, and may change between
/// versions; read the getters to compute with the numbers.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).reserved_urgent_workers(1).build()?;
/// pool.submit(FnJob::fallible(|_| Err("bad row")))?;
/// pool.submit(FnJob::new(|_| ()))?;
/// assert_eq!(pool.stop()?.failed.len(), 1);
/// assert_eq!(
///     pool.stats().to_string(),
///     "workers: 2 general + 1 urgent, 0 busy; \
///      queued: urgent 0/256, normal 0/1024, bulk 0/1024; \
///      accepted 2: 1 succeeded, 1 failed, 0 panicked, 0 unrun, 0 abandoned, 0 pending; \
///      refused 0"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workers: {} general + {} urgent, {} busy; queued:",
            self.workers, self.reserved_urgent_workers, self.busy
        )?;
        for lane in Priority::ALL {
            let i = lane.index();
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {lane} {}/{}", self.queued[i], self.capacity[i])?;
            if let Some(wait) = self.oldest_wait[i] {
                write!(f, " (oldest {})", HumanDuration(wait))?;
            }
        }
        write!(
            f,
            "; accepted {}: {} succeeded, {} failed, {} panicked, {} unrun, {} abandoned, {} pending; refused {}",
            self.accepted,
            self.succeeded,
            self.failed,
            self.panicked,
            self.unrun,
            self.abandoned,
            self.pending(),
            self.refused
        )
    }
}

/// Jobs in each terminal state: `(succeeded, failed, panicked, unrun,
/// abandoned)`, summed over the worker slots and the shared counters.
pub(crate) fn terminal(
    slots: &[CachePadded<WorkerSlot>],
    counters: &Counters,
) -> (u64, u64, u64, u64, u64) {
    let (mut succeeded, mut failed, mut panicked) = (0, 0, 0);
    for slot in slots {
        succeeded += slot.succeeded.load(Ordering::Acquire);
        failed += slot.failed.load(Ordering::Acquire);
        panicked += slot.panicked.load(Ordering::Acquire);
    }
    let unrun = counters.unrun.load(Ordering::Acquire);
    let abandoned = counters.abandoned.load(Ordering::Acquire);
    (succeeded, failed, panicked, unrun, abandoned)
}

/// Sums the worker slots, shared counters and lanes into a [`Stats`].
pub(crate) fn snapshot<J>(
    slots: &[CachePadded<WorkerSlot>],
    reserved: usize,
    counters: &Counters,
    lanes: &Lanes<J>,
) -> Stats {
    // `now` is read before the lane lengths, so a lane seen empty was
    // empty at or after `now`: the oldest-wait bound stays an upper bound.
    let now = lanes.timing().then(|| lanes.stamp());
    let queued = lanes.lens();
    let capacity = lanes.capacity();
    let seen_empty_at = lanes.seen_empty_at();
    let accepted = || lanes.accepted();
    // Terminal counters are read before `accepted`, so a snapshot never
    // shows more finished than accepted jobs.
    let (succeeded, failed, panicked, unrun, abandoned) = terminal(slots, counters);
    let mut stats = Stats {
        workers: slots.len() - reserved,
        reserved_urgent_workers: reserved,
        busy: slots
            .iter()
            .filter(|slot| slot.state.load(Ordering::Relaxed) != IDLE)
            .count(),
        queued,
        oldest_wait: [None; 3],
        capacity,
        accepted: accepted(),
        succeeded,
        failed,
        panicked,
        unrun,
        abandoned,
        refused: counters.refused.load(Ordering::Relaxed),
    };
    // Without timestamps (`Builder::timing(false)`) there is no wait to tell.
    let Some(now) = now else {
        return stats;
    };
    for (lane, &depth) in queued.iter().enumerate() {
        let seen_empty = &seen_empty_at[lane];
        if depth == 0 {
            seen_empty.fetch_max(now, Ordering::Relaxed);
            continue;
        }
        let since = slots
            .iter()
            .map(|slot| slot.taken_accepted_at[lane].load(Ordering::Relaxed))
            .fold(seen_empty.load(Ordering::Relaxed), u64::max);
        stats.oldest_wait[lane] = Some(Duration::from_nanos(now.saturating_sub(since)));
    }
    stats
}
