//! The handles users hold: [`Pool`] (owns the workers, stops them) and
//! [`Submitter`] (a cloneable handle for producer threads), over the shared
//! state the workers read.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::sync::thread::JoinHandle;
use crate::sync::{AtomicBool, Condvar, Mutex, Ordering};
use crate::unwind::log_event;

use crate::builder::Builder;
use crate::error::{StopError, SubmitError, SubmitTimeoutError, TrySubmitError};
use crate::job::{Cancel, Job, Priority};
use crate::lanes::{Envelope, Lanes, Refused, Wait};
use crate::latency::LatencyHistogram;
use crate::report::{Abandoned, Failed, Panicked, StopReport, Unrun};
use crate::stats::{self, Counters, Stats, WorkerSlot, ABANDONED, IDLE, STARTING};
use crate::unwind;
use crate::worker;

/// Source of pool ids (0 means "no pool" in the worker thread-local).
/// Not part of any protocol, so a plain std atomic even under loom.
static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// State shared by the handles and the workers.
pub(crate) struct Shared<J: Job> {
    /// Unique id of this pool, for re-entrancy checks and logs.
    pub(crate) id: u64,
    /// The queues, the intake gate and the wake-ups.
    pub(crate) lanes: Lanes<J>,
    /// The flag behind `Context::is_cancelled`.
    pub(crate) cancel: Arc<Cancel>,
    /// Raised by `stop_now` or a passed deadline: workers stop taking jobs.
    pub(crate) discard: AtomicBool,
    /// One slot per worker (general workers first, then reserved ones).
    pub(crate) slots: Box<[CachePadded<WorkerSlot>]>,
    /// How many of the slots belong to reserved urgent workers.
    pub(crate) reserved: usize,
    /// Counters written outside the workers.
    pub(crate) counters: Counters,
    /// Jobs that returned `Err`, until a stop takes them.
    pub(crate) failed: Mutex<Vec<Failed<J>>>,
    /// Jobs that panicked, until a stop takes them.
    pub(crate) panicked: Mutex<Vec<Panicked<J>>>,
    /// Jobs a worker dequeued but did not start because `discard` was up.
    pub(crate) rescued: Mutex<Vec<(Priority, Envelope<J>)>>,
    /// The user's worker start / stop callbacks.
    pub(crate) hooks: worker::Hooks,
    /// Worker threads that have not exited yet.
    pub(crate) live: Mutex<usize>,
    /// Signalled whenever a worker exits.
    pub(crate) live_cv: Condvar,
}

/// The last reference to the pool's state is gone. Normally a stop has
/// handed every job back by then; what is left belongs to a pool dropped on
/// its own worker thread (nobody is left to receive its report) or is
/// still queued. Logged, then dropped with their `Drop` panics contained.
impl<J: Job> Drop for Shared<J> {
    fn drop(&mut self) {
        let failed = std::mem::take(self.failed.get_mut());
        let panicked = std::mem::take(self.panicked.get_mut());
        let rescued = std::mem::take(self.rescued.get_mut());
        let mut unrun = rescued.len();
        self.lanes.drain(|_, envelope| {
            unrun += 1;
            drop(unwind::drop_contained(envelope.job));
        });
        if failed.len() + panicked.len() + unrun > 0 {
            log_event!(
                warn,
                pool = self.id,
                failed = failed.len(),
                panicked = panicked.len(),
                unrun,
                "pool state dropped with jobs no report received; they are dropped too"
            );
        }
        unwind::drop_all_contained(failed);
        unwind::drop_all_contained(panicked);
        unwind::drop_all_contained(rescued);
    }
}

impl<J: Job> Shared<J> {
    pub(crate) fn new(
        lanes: Lanes<J>,
        workers: usize,
        reserved: usize,
        hooks: worker::Hooks,
    ) -> Shared<J> {
        Shared {
            hooks,
            id: NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            lanes,
            cancel: Arc::new(Cancel::default()),
            discard: AtomicBool::new(false),
            slots: (0..workers + reserved)
                .map(|_| CachePadded::default())
                .collect(),
            reserved,
            counters: Counters::default(),
            failed: Mutex::new(Vec::new()),
            panicked: Mutex::new(Vec::new()),
            rescued: Mutex::new(Vec::new()),
            live: Mutex::new(0),
            live_cv: Condvar::new(),
        }
    }

    /// Called by a worker that dequeued a job after `discard` went up.
    pub(crate) fn rescue(&self, lane: Priority, envelope: Envelope<J>) {
        self.rescued.lock().push((lane, envelope));
    }

    /// Called by every worker thread as it exits.
    pub(crate) fn worker_exited(&self) {
        *self.live.lock() -= 1;
        self.live_cv.notify_all();
        self.lanes.wake_idle_waiters_fenced();
    }

    /// Whether every job accepted so far has reached a terminal state.
    /// Terminal counts are read before `accepted` (which counts a job
    /// before any worker can see it), so `true` means every job accepted
    /// before this call finished.
    fn is_idle(&self) -> bool {
        let (succeeded, failed, panicked, unrun, abandoned) =
            stats::terminal(&self.slots, &self.counters);
        succeeded + failed + panicked + unrun + abandoned >= self.lanes.accepted()
    }

    /// Stops workers from taking queued jobs and raises the cancel flag.
    fn escalate(&self) {
        self.discard.store(true, Ordering::SeqCst);
        self.cancel.raise();
    }

    /// Waits until at most `target` workers are alive or the deadline passes.
    /// Returns whether the target was reached.
    fn wait_live(&self, target: usize, deadline: Option<Instant>) -> bool {
        let mut live = self.live.lock();
        while *live > target {
            match deadline {
                Some(deadline) => {
                    if self.live_cv.wait_until(&mut live, deadline).timed_out() {
                        return *live <= target;
                    }
                }
                None => self.live_cv.wait(&mut live),
            }
        }
        true
    }
}

/// A cloneable handle that submits jobs to a [`Pool`] from any thread.
///
/// Every submit method takes the lane from [`Job::priority`]; the `*_to`
/// variants take it as an argument instead. Each lane is bounded, so a full
/// lane pushes back: [`submit`](Self::submit) blocks, [`try_submit`](Self::try_submit)
/// refuses at once, [`submit_timeout`](Self::submit_timeout) gives up at its
/// deadline. A full `Normal` or `Bulk` lane never delays an `Urgent` submit.
///
/// A refused job is always handed back inside the error; an accepted job
/// always reaches exactly one terminal state (see [`StopReport`]). A
/// `Submitter` does not keep the pool running: once the pool stops, its
/// submits are refused with [`SubmitError::Stopped`] and friends.
///
/// [`Pool`] dereferences to its own `Submitter`, so every method here can be
/// called on the pool directly.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// let producers: Vec<_> = (0..4)
///     .map(|_| {
///         let tx = pool.submitter();
///         std::thread::spawn(move || {
///             for _ in 0..100 {
///                 tx.submit(FnJob::new(|_| ())).expect("pool is running");
///             }
///         })
///     })
///     .collect();
/// for producer in producers {
///     producer.join().unwrap();
/// }
/// assert_eq!(pool.stop()?.succeeded, 400);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Submitter<J: Job> {
    /// The pool's shared state.
    shared: Arc<Shared<J>>,
}

impl<J: Job> Clone for Submitter<J> {
    fn clone(&self) -> Self {
        Submitter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<J: Job> fmt::Debug for Submitter<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitter")
            .field("pool", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl<J: Job> Submitter<J> {
    fn push(&self, lane: Priority, job: J, wait: Wait) -> Result<(), Refused<J>> {
        self.shared
            .lanes
            .push(lane, job, wait, &self.shared.counters)
    }

    /// Submits `job` to its [`priority`](Job::priority) lane, blocking while
    /// that lane is full.
    ///
    /// If the lane is full, blocks until the workers have drained it to its
    /// [low-water mark](crate::Builder::low_water) (by default half its
    /// capacity) or run out of work, then enqueues — so a producer
    /// refills half a lane per wake-up instead of waking for every freed
    /// slot — or until the pool begins to stop (then the job comes back in
    /// [`SubmitError::Stopped`]). Called from one of
    /// this pool's own worker threads (a job submitting follow-up work, or
    /// a worker hook), it never
    /// blocks: a full lane refuses with [`SubmitError::Full`], because every
    /// worker waiting for room only workers can make would deadlock.
    ///
    /// Blocked producers are not served in order: while one waits for the
    /// low-water mark, another producer's submit that finds a free slot
    /// takes it at once. A steady stream of such submits that keeps the
    /// lane above its low-water mark can therefore keep a blocked producer
    /// waiting. For producers that must not wait long, use
    /// [`submit_timeout`](Self::submit_timeout), or raise the lane's
    /// [`low_water`](crate::Builder::low_water) mark (`capacity - 1` wakes
    /// them for every freed slot).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Stopped`] once intake is closed;
    /// [`SubmitError::Full`] only on this pool's own worker threads.
    ///
    /// # Panics
    ///
    /// If `job.priority()` panics, on the calling thread: the job was not
    /// accepted and is dropped while the panic unwinds; it counts in no
    /// [`Stats`] counter (not even `refused`). The `*_to` variants never
    /// call `priority()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| println!("ran")))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(&self, job: J) -> Result<(), SubmitError<J>> {
        let lane = job.priority();
        self.submit_to(lane, job)
    }

    /// Like [`submit`](Self::submit), into `lane` whatever the job's own
    /// priority says ([`Job::priority`] is not called).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// // The job says Bulk; `submit_to` puts it in Urgent anyway.
    /// let job = FnJob::new(move |ctx| tx.send(ctx.lane()).unwrap()).with_priority(Priority::Bulk);
    /// pool.submit_to(Priority::Urgent, job)?;
    /// assert_eq!(rx.recv()?, Priority::Urgent);
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_to(&self, lane: Priority, job: J) -> Result<(), SubmitError<J>> {
        let wait = if worker::on_worker_of(self.shared.id) {
            Wait::Never
        } else {
            Wait::Until(None)
        };
        self.push(lane, job, wait).map_err(|refused| match refused {
            Refused::Full(job) => SubmitError::Full(job),
            Refused::Stopped(job) | Refused::Timeout(job) => SubmitError::Stopped(job),
        })
    }

    /// Submits `job` to its [`priority`](Job::priority) lane if there is room
    /// right now; never blocks.
    ///
    /// # Errors
    ///
    /// [`TrySubmitError::Full`] if the lane is at capacity,
    /// [`TrySubmitError::Stopped`] once intake is closed. The job is inside.
    ///
    /// # Panics
    ///
    /// If `job.priority()` panics, on the calling thread: the job was not
    /// accepted and is dropped while the panic unwinds; it counts in no
    /// [`Stats`] counter (not even `refused`). The `*_to` variants never
    /// call `priority()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(1)
    ///     .capacity(Priority::Normal, 1)
    ///     .build()?;
    /// let (started_tx, started) = mpsc::channel();
    /// let (release_tx, release) = mpsc::channel::<()>();
    /// pool.try_submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     release.recv().unwrap(); // hold the only worker
    /// }))?;
    /// started.recv()?;
    /// pool.try_submit(FnJob::new(|_| ()))?; // takes the lane's one slot
    /// match pool.try_submit(FnJob::new(|_| ())) {
    ///     Ok(()) => unreachable!("the lane is full"),
    ///     Err(e) if e.is_full() => {
    ///         let _job: FnJob = e.into_inner(); // slow down, or keep it for later
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// release_tx.send(())?;
    /// assert_eq!(pool.stop()?.succeeded, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_submit(&self, job: J) -> Result<(), TrySubmitError<J>> {
        let lane = job.priority();
        self.try_submit_to(lane, job)
    }

    /// Like [`try_submit`](Self::try_submit), into `lane` ([`Job::priority`]
    /// is not called).
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.try_submit_to(Priority::Bulk, FnJob::new(|_| ()))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_submit_to(&self, lane: Priority, job: J) -> Result<(), TrySubmitError<J>> {
        self.push(lane, job, Wait::Never)
            .map_err(|refused| match refused {
                Refused::Full(job) | Refused::Timeout(job) => TrySubmitError::Full(job),
                Refused::Stopped(job) => TrySubmitError::Stopped(job),
            })
    }

    /// Submits `job` to its [`priority`](Job::priority) lane, waiting at most
    /// `timeout` for room.
    ///
    /// While the lane is full it waits like [`submit`](Self::submit) (woken
    /// when the lane has drained to its low-water mark), and at the deadline
    /// tries once more: the job is refused only if its lane is full at the
    /// deadline. Slots that free up and are taken again by other producers
    /// before the lane reaches its low-water mark do not wake it, so it can
    /// time out although the lane had room for a moment during the wait.
    ///
    /// A zero `timeout` only tries once (like [`try_submit`](Self::try_submit),
    /// but a full lane reports [`SubmitTimeoutError::Timeout`]). A timeout too
    /// large to add to the current time (such as `Duration::MAX`) waits like
    /// [`submit`](Self::submit), without a deadline — except on this pool's
    /// own worker threads, where a full lane is refused at once with
    /// `Timeout`, as `submit` refuses it. Any timeout the clock can
    /// represent waits on worker threads too, until its deadline however far
    /// away (a year, or 2^40 seconds): a worker waiting for room in a lane
    /// that only workers drain holds up that drain meanwhile, so choose
    /// such a timeout as you would a deadlock bound — short.
    ///
    /// # Errors
    ///
    /// [`SubmitTimeoutError::Timeout`] if the lane was full at the
    /// deadline, [`SubmitTimeoutError::Stopped`] once intake is closed (also
    /// while waiting). The job is inside.
    ///
    /// # Panics
    ///
    /// If `job.priority()` panics, on the calling thread: the job was not
    /// accepted and is dropped while the panic unwinds; it counts in no
    /// [`Stats`] counter (not even `refused`). The `*_to` variants never
    /// call `priority()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit_timeout(FnJob::new(|_| ()), Duration::from_millis(100))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_timeout(&self, job: J, timeout: Duration) -> Result<(), SubmitTimeoutError<J>> {
        let lane = job.priority();
        self.submit_timeout_to(lane, job, timeout)
    }

    /// Like [`submit_timeout`](Self::submit_timeout), into `lane`
    /// ([`Job::priority`] is not called).
    ///
    /// # Errors
    ///
    /// As [`submit_timeout`](Self::submit_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit_timeout_to(Priority::Urgent, FnJob::new(|_| ()), Duration::ZERO)?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_timeout_to(
        &self,
        lane: Priority,
        job: J,
        timeout: Duration,
    ) -> Result<(), SubmitTimeoutError<J>> {
        let wait = match Instant::now().checked_add(timeout) {
            _ if timeout.is_zero() => Wait::Never,
            Some(deadline) => Wait::Until(Some(deadline)),
            // No deadline: like `submit`, never wait on our own worker.
            None if worker::on_worker_of(self.shared.id) => Wait::Never,
            None => Wait::Until(None),
        };
        self.push(lane, job, wait).map_err(|refused| match refused {
            Refused::Full(job) | Refused::Timeout(job) => SubmitTimeoutError::Timeout(job),
            Refused::Stopped(job) => SubmitTimeoutError::Stopped(job),
        })
    }

    /// Blocks until every job submitted so far has finished: the lanes are
    /// empty and no job is running (except jobs a
    /// [`stop_timeout`](Pool::stop_timeout) already gave up on and reported
    /// as abandoned, which count as finished). A barrier between batches
    /// that keeps the pool running (to stop it, use [`Pool::stop`]).
    ///
    /// Precisely: returns once every job accepted before the call — and
    /// every submit already in progress, which may still be blocked on a
    /// full lane — has reached a terminal state (succeeded, failed,
    /// panicked, or handed back by a stop). Jobs submitted concurrently by
    /// other threads may extend the wait; it returns as soon as the pool is
    /// idle even if more jobs arrive right after. After a stop has finished,
    /// returns at once. A pool dropped on one of its own worker threads
    /// drains detached, with no stop to finish: a `Submitter` that outlives
    /// it waits here until the drain has run the last queued job. To wait
    /// with a bound (and report progress between tries), use
    /// [`wait_idle_timeout`](Self::wait_idle_timeout).
    ///
    /// # Errors
    ///
    /// [`StopError::OnWorkerThread`] if called from one of this pool's
    /// worker threads (inside a job or a worker hook): it would wait for
    /// its own job to finish.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
    /// let done = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..100 {
    ///     let done = Arc::clone(&done);
    ///     pool.submit(FnJob::new(move |_| { done.fetch_add(1, Ordering::SeqCst); }))?;
    /// }
    /// pool.wait_idle()?;
    /// assert_eq!(done.load(Ordering::SeqCst), 100);
    /// pool.submit(FnJob::new(|_| ()))?; // still running
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_idle(&self) -> Result<(), StopError> {
        if worker::on_worker_of(self.shared.id) {
            return Err(StopError::OnWorkerThread);
        }
        self.shared.lanes.wait_idle(|| self.shared.is_idle(), None);
        Ok(())
    }

    /// Like [`wait_idle`](Self::wait_idle), but gives up after `timeout`:
    /// returns `Ok(true)` if the pool became idle (in the sense of
    /// `wait_idle`), `Ok(false)` if the timeout passed first. Nothing is
    /// cancelled or handed back by a timeout; the jobs keep running. Made
    /// for a progress loop that wakes now and then to report
    /// [`stats`](Self::stats) while it waits.
    ///
    /// A zero timeout checks once without waiting; a timeout too large
    /// for the clock (such as `Duration::MAX`) waits like `wait_idle`.
    /// The answer is checked once more when the timeout passes, so an
    /// idle pool is never reported busy because the waiting thread woke
    /// late. Like `wait_idle`, it returns `Ok(true)` at once after a stop
    /// has finished.
    ///
    /// # Errors
    ///
    /// [`StopError::OnWorkerThread`] if called from one of this pool's
    /// worker threads (inside a job or a worker hook), whatever the
    /// timeout: the caller's own job keeps the pool from being idle.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
    /// for _ in 0..1_000 {
    ///     pool.submit(FnJob::new(|_| ()))?;
    /// }
    /// while !pool.wait_idle_timeout(Duration::from_millis(100))? {
    ///     let stats = pool.stats();
    ///     eprintln!("{} of {} done", stats.finished(), stats.accepted());
    /// }
    /// assert_eq!(pool.stats().pending(), 0);
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_idle_timeout(&self, timeout: Duration) -> Result<bool, StopError> {
        if worker::on_worker_of(self.shared.id) {
            return Err(StopError::OnWorkerThread);
        }
        let deadline = Instant::now().checked_add(timeout);
        if timeout.is_zero() {
            return Ok(self.shared.is_idle());
        }
        Ok(self
            .shared
            .lanes
            .wait_idle(|| self.shared.is_idle(), deadline))
    }

    /// Takes the jobs that failed so far (with their errors), leaving the
    /// pool running. Each failed job is handed back exactly once: by this
    /// method, or — if still here when the pool stops — in
    /// [`StopReport::failed`]. Call it now and then during a long run to
    /// write dead letters as they happen and keep their memory bounded.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::fallible(|_| Err("bad row")))?;
    /// let mut failed = Vec::new();
    /// while failed.is_empty() {
    ///     failed.extend(pool.take_failed());
    ///     std::thread::yield_now();
    /// }
    /// assert_eq!(failed[0].error.to_string(), "bad row");
    /// assert!(pool.stop()?.failed.is_empty()); // already taken
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the taken jobs are dropped unless you keep them"]
    pub fn take_failed(&self) -> Vec<Failed<J>> {
        std::mem::take(&mut *self.shared.failed.lock())
    }

    /// Takes the jobs that panicked so far (with their messages), leaving
    /// the pool running; like [`take_failed`](Self::take_failed), each is
    /// handed back exactly once, here or in [`StopReport::panicked`].
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// # std::panic::set_hook(Box::new(|_| {})); // keep the doc test's output quiet
    /// pool.submit(FnJob::new(|_| panic!("lab value out of range")))?;
    /// pool.wait_idle()?;
    /// let panicked = pool.take_panicked();
    /// assert_eq!(panicked.len(), 1);
    /// assert_eq!(panicked[0].message, "lab value out of range");
    /// assert!(pool.stop()?.panicked.is_empty()); // already taken
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the taken jobs are dropped unless you keep them"]
    pub fn take_panicked(&self) -> Vec<Panicked<J>> {
        std::mem::take(&mut *self.shared.panicked.lock())
    }

    /// Whether intake is closed: `true` from the moment a stop (or `Drop`)
    /// closed it, for good. Once it returns `true` on a thread, every later
    /// submit from that thread is refused as stopped, with its job handed
    /// back; and after a submit was refused as stopped, it returns `true`
    /// on that thread. (A stop closes intake in a few instructions; while
    /// it does, a submit on another thread may still be accepted, and its
    /// job is then run or handed back like any accepted job.)
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let tx = pool.submitter();
    /// assert!(!tx.is_stopped());
    /// assert!(pool.stop()?.is_clean());
    /// assert!(tx.is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.lanes.is_closed_to_caller()
    }

    /// A snapshot of the pool's queues, workers and counters. Cheap: a few
    /// atomic loads per worker and lane, no lock; see [`Stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let stats = pool.stats();
    /// println!("{}/{} urgent slots used", stats.queued(Priority::Urgent), stats.capacity(Priority::Urgent));
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        stats::snapshot(
            &shared.slots,
            shared.reserved,
            &shared.counters,
            &shared.lanes,
        )
    }

    /// The queue waits (from acceptance to start) of every job started
    /// from `lane` since the pool was built, as a [`LatencyHistogram`]:
    /// count, quantiles (never below the true wait, and within 12.5 % of
    /// it up to 34 minutes), mean and maximum. For triage, the
    /// `Urgent` lane's p99 is the number that matters.
    ///
    /// A job counts once it starts (also one a `stop_timeout` later
    /// abandons); jobs handed back unrun never started and are not in it.
    /// The wait of a job whose producer blocked on a full lane counts from
    /// when its submit began. Empty for a pool built with
    /// [`timing(false)`](crate::Builder::timing). Reading it sums every
    /// worker's buckets (a few hundred loads per worker and lane, no lock
    /// and nothing that slows the workers), so it costs more than
    /// [`stats`](Self::stats): a few times a second is fine. Works after a
    /// stop too, for a final report.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
    /// for _ in 0..1_000 {
    ///     pool.submit(FnJob::new(|_| ()))?;
    /// }
    /// pool.submit_to(Priority::Urgent, FnJob::new(|_| ()))?;
    /// assert!(pool.stop()?.is_clean());
    /// for lane in Priority::ALL {
    ///     println!("{lane}: {}", pool.queue_wait_histogram(lane));
    /// }
    /// assert_eq!(pool.queue_wait_histogram(Priority::Normal).count(), 1_000);
    /// assert_eq!(pool.queue_wait_histogram(Priority::Urgent).count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_wait_histogram(&self, lane: Priority) -> LatencyHistogram {
        let mut waits = LatencyHistogram::new();
        for slot in self.shared.slots.iter() {
            slot.waits.add_to(lane.index(), &mut waits);
        }
        waits
    }
}

/// How a stop treats queued and running work.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Run every queued job, then join.
    Drain,
    /// Hand queued jobs back unrun, wait for running ones.
    Now,
    /// Drain until the deadline (`None`: no deadline), then like `Now`, and
    /// abandon jobs still running.
    Deadline(Option<Instant>),
}

impl Mode {
    fn deadline(self) -> Option<Instant> {
        match self {
            Mode::Deadline(deadline) => deadline,
            Mode::Drain | Mode::Now => None,
        }
    }
}

/// Where a pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping,
    Stopped,
}

/// The lifecycle state a stop works on.
struct Lifecycle {
    /// Where the pool is in its life.
    phase: Phase,
    /// Join handles not joined yet: every worker while running, the
    /// abandoned ones after a `stop_timeout` gave up on them.
    handles: Vec<JoinHandle<()>>,
}

/// A bounded pool of worker threads with priority lanes that hands back
/// every job it does not run successfully.
///
/// Build one with [`Pool::builder`]. Submit with the methods of
/// [`Submitter`], which `Pool` dereferences to (`pool.submit(job)`), or hand
/// [`submitter`](Self::submitter) clones to producer threads. Stop with
/// [`stop`](Self::stop) (drain), [`stop_now`](Self::stop_now) (hand back the
/// queue) or [`stop_timeout`](Self::stop_timeout) (drain with a deadline);
/// dropping the pool drains it like `stop`, logs the counts of jobs that did
/// not succeed at `warn` and drops those jobs (stop it to get them back).
/// Two exceptions on `Drop`: workers a `stop_timeout` abandoned are not
/// waited for, and a pool dropped on one of its own worker threads (a job
/// holding the last handle) only closes intake and returns; its workers
/// drain the lanes and exit on their own.
///
/// `Pool<J>` is `Send + Sync`: share it in an `Arc` to stop it from another
/// thread. Every stop method takes `&self` and is idempotent. `Pool` is not
/// `Clone`; through `Deref`, `pool.clone()` gives a [`Submitter`], which
/// submits but cannot stop the pool.
///
/// Nothing waits for the workers of a pool dropped on one of its own
/// worker threads: if the process exits before they have drained the
/// lanes, the jobs still queued never run and are not reported. The jobs
/// that fail or panic in that drain are kept for
/// [`take_failed`](Submitter::take_failed) /
/// [`take_panicked`](Submitter::take_panicked) until the last handle to the
/// pool is gone, then logged and dropped — so, as with any `Arc` cycle, one
/// that holds a `Submitter` of its own pool keeps the pool's state, and
/// itself, alive.
///
/// A job type must be `Send` (`Job: Send + 'static`), so a job holding an
/// `Rc` is rejected at compile time:
///
/// ```compile_fail,E0277
/// use std::rc::Rc;
/// use triage_pool::{Context, Job, Pool};
///
/// struct NotSend(Rc<u8>);
///
/// impl Job for NotSend {
///     type Error = ();
///     fn run(&mut self, _: &Context) -> Result<(), ()> {
///         let _ = *self.0;
///         Ok(())
///     }
/// }
///
/// let pool: Pool<NotSend> = Pool::builder().workers(1).build().unwrap();
/// pool.submit(NotSend(Rc::new(1))).unwrap();
/// ```
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(4).build()?;
/// for i in 0..100 {
///     pool.submit(FnJob::new(move |_| { let _ = i * 2; }))?;
/// }
/// let report = pool.stop()?;
/// assert_eq!(report.succeeded, 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool<J: Job> {
    /// The pool's own submit handle (also holds the shared state).
    submitter: Submitter<J>,
    /// Phase and join handles, behind the lock that serializes stops.
    lifecycle: Mutex<Lifecycle>,
    /// Signalled when a stop finishes.
    stopped: Condvar,
}

impl<J: Job> fmt::Debug for Pool<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.shared().id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<J: Job> Deref for Pool<J> {
    type Target = Submitter<J>;

    fn deref(&self) -> &Submitter<J> {
        &self.submitter
    }
}

impl<J: Job> Pool<J> {
    /// A [`Builder`] with the defaults: `num_cpus::get()` workers, no
    /// reserved urgent workers, lane capacities of 256 / 1024 / 1024
    /// (`Urgent` / `Normal` / `Bulk`).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(2)
    ///     .capacity(Priority::Normal, 64)
    ///     .thread_name("importer")
    ///     .build()?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder<J> {
        Builder::new()
    }

    pub(crate) fn from_parts(shared: Arc<Shared<J>>, handles: Vec<JoinHandle<()>>) -> Pool<J> {
        Pool {
            submitter: Submitter { shared },
            lifecycle: Mutex::new(Lifecycle {
                phase: Phase::Running,
                handles,
            }),
            stopped: Condvar::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Shared<J> {
        &self.submitter.shared
    }

    /// A new [`Submitter`] for a producer thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let tx = pool.submitter();
    /// std::thread::spawn(move || tx.submit(FnJob::new(|_| ())).is_ok()).join().unwrap();
    /// assert_eq!(pool.stop()?.succeeded, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submitter(&self) -> Submitter<J> {
        self.submitter.clone()
    }

    /// Stops gracefully: closes intake, runs every job already accepted
    /// (highest lane first, within the starvation bound), joins the
    /// workers, and reports.
    ///
    /// It first closes intake: every submit that starts after that is refused
    /// with its job handed back, and submits blocked on a full lane wake up and
    /// get theirs back. (A submit already past the intake check when the stop
    /// began is accepted, and its job runs like any other.) Blocks until every
    /// queued job has run and every worker has exited; a job that never returns
    /// makes it block forever (use [`stop_timeout`](Self::stop_timeout) to
    /// bound the wait).
    ///
    /// Idempotent: if the pool is already stopping, waits for that stop to
    /// finish; once stopped, joins any worker a `stop_timeout` abandoned
    /// (waiting for its job to end). Either way it then returns an empty
    /// report: only the call that performed the stop receives the jobs.
    ///
    /// Another thread can cut the drain short: a [`stop_now`](Self::stop_now)
    /// called meanwhile, or a [`stop_timeout`](Self::stop_timeout) whose
    /// deadline passes while it waits for this stop, escalates it — the
    /// jobs still queued then come back in this call's
    /// [`StopReport::unrun`] instead of running, and running jobs see the
    /// cancel flag. Without such a call, `unrun` is empty.
    ///
    /// # Errors
    ///
    /// [`StopError::OnWorkerThread`] if called from one of this pool's
    /// worker threads (inside a job or a worker hook); the pool is left
    /// untouched.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
    /// for _ in 0..10 {
    ///     pool.submit(FnJob::new(|_| ()))?;
    /// }
    /// let report = pool.stop()?;
    /// assert_eq!(report.succeeded, 10);
    /// assert!(pool.stop()?.is_clean()); // second call: empty report
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(&self) -> Result<StopReport<J>, StopError> {
        self.shutdown(Mode::Drain)
    }

    /// Stops at once: closes intake, raises the cancel flag
    /// ([`Context::is_cancelled`](crate::Context::is_cancelled)), hands every
    /// queued job back unrun in [`StopReport::unrun`] (lane order, then
    /// queue order, with the exception stated there), and waits for the
    /// running jobs to return.
    ///
    /// A job a worker had already dequeued when the flag went up, but not
    /// yet started, is handed back unrun too. Jobs running at that moment
    /// finish (with the flag raised, so a cooperative job returns early) and
    /// are reported like any other.
    ///
    /// Called while another thread's `stop` is draining, it escalates that
    /// stop (the draining call receives the unrun jobs) and waits for it.
    /// Otherwise idempotent like [`stop`](Self::stop): once stopped, it
    /// waits for any job an earlier [`stop_timeout`](Self::stop_timeout)
    /// abandoned to end — without a bound, so a job that never returns
    /// blocks it; a later `stop_timeout` bounds that wait instead.
    ///
    /// # Errors
    ///
    /// [`StopError::OnWorkerThread`] if called from one of this pool's
    /// worker threads (inside a job or a worker hook).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (started_tx, started_rx) = std::sync::mpsc::channel();
    /// pool.submit(FnJob::new(move |ctx| {
    ///     started_tx.send(()).unwrap();
    ///     while !ctx.is_cancelled() {
    ///         std::thread::yield_now(); // a long job, checking the flag
    ///     }
    /// }))?;
    /// started_rx.recv()?; // the only worker is busy...
    /// for _ in 0..3 {
    ///     pool.submit(FnJob::new(|_| ()))?; // ...so these stay queued
    /// }
    /// let report = pool.stop_now()?;
    /// assert_eq!(report.succeeded, 1); // the running job returned early
    /// assert_eq!(report.unrun.len(), 3); // the queue came back unrun
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_now(&self) -> Result<StopReport<J>, StopError> {
        self.shutdown(Mode::Now)
    }

    /// Stops gracefully, but not for longer than `timeout`: drains like
    /// [`stop`](Self::stop) until the deadline, then behaves like
    /// [`stop_now`](Self::stop_now) — raises the cancel flag and hands the
    /// rest of the queue back unrun — without waiting for running jobs:
    /// a job still running — in its `run`, or, if it succeeded, in its
    /// `Drop` — is reported in [`StopReport::abandoned`] (which worker,
    /// which lane, running since when), and its thread is left to finish
    /// it and log the outcome. A later [`stop`](Self::stop) joins
    /// such threads; dropping the pool does not wait for them.
    ///
    /// Returns as soon as the drain finishes, and otherwise after the deadline
    /// plus the time the workers not running a job take to exit. Only jobs are
    /// abandoned, not the worker hooks, and an exiting worker runs its hooks:
    /// one inside its [`on_worker_start`](crate::Builder::on_worker_start),
    /// [`on_worker_idle`](crate::Builder::on_worker_idle) or
    /// [`on_worker_stop`](crate::Builder::on_worker_stop) hook at the deadline
    /// finishes it, and one between jobs runs its `on_worker_idle` (if it ran a
    /// job since that hook last ran) and its `on_worker_stop` after the
    /// deadline. All of that is waited for without a bound: the real bound is
    /// the deadline plus your longest idle and stop hooks, so keep hooks short
    /// (or bounded) where the deadline matters. A zero timeout hands the queue
    /// back at once and abandons every job running at that moment (each in
    /// `abandoned`; its outcome is only logged); a timeout too large to add to
    /// the current time (such as `Duration::MAX`) waits like `stop`.
    ///
    /// If another thread is already stopping the pool, waits for that stop
    /// until the deadline. If it is still running then, this call escalates
    /// it as [`stop_now`](Self::stop_now) would — that stop hands the rest
    /// of its queue back unrun in its own report and its running jobs see
    /// the cancel flag, but it still waits for them: nothing is abandoned —
    /// and returns an empty report. Once the pool is stopped, it waits up
    /// to the deadline for the workers an earlier `stop_timeout` abandoned,
    /// joins them if they have finished, and returns an empty report either
    /// way.
    ///
    /// # Errors
    ///
    /// [`StopError::OnWorkerThread`] if called from one of this pool's
    /// worker threads (inside a job or a worker hook).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let (release_tx, release) = std::sync::mpsc::channel::<()>();
    /// pool.submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     let _ = release.recv(); // a job that outlasts the deadline
    /// }))?;
    /// started.recv()?;
    /// pool.submit(FnJob::new(|_| ()))?; // queued behind it
    /// let report = pool.stop_timeout(Duration::from_millis(50))?;
    /// assert_eq!(report.abandoned.len(), 1); // still running at the deadline
    /// assert_eq!(report.unrun.len(), 1); // handed back, never run
    /// release_tx.send(())?; // the abandoned job ends on its own thread...
    /// assert!(pool.stop()?.is_clean()); // ...which a later stop joins
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_timeout(&self, timeout: Duration) -> Result<StopReport<J>, StopError> {
        self.shutdown(Mode::Deadline(Instant::now().checked_add(timeout)))
    }

    /// The stop family's shared entry: decides which call performs the
    /// stop; every other call waits for it and gets an empty report.
    fn shutdown(&self, mode: Mode) -> Result<StopReport<J>, StopError> {
        if worker::on_worker_of(self.shared().id) {
            return Err(StopError::OnWorkerThread);
        }
        let deadline = mode.deadline();
        let mut lifecycle = match deadline {
            Some(deadline) => match self.lifecycle.try_lock_until(deadline) {
                Some(guard) => guard,
                None => {
                    self.shared().escalate();
                    return Ok(StopReport::empty());
                }
            },
            None => self.lifecycle.lock(),
        };
        loop {
            match lifecycle.phase {
                Phase::Running => break,
                Phase::Stopping => {
                    if matches!(mode, Mode::Now) {
                        self.shared().escalate();
                    }
                    match deadline {
                        Some(deadline) => {
                            if self
                                .stopped
                                .wait_until(&mut lifecycle, deadline)
                                .timed_out()
                                && lifecycle.phase == Phase::Stopping
                            {
                                self.shared().escalate();
                                return Ok(StopReport::empty());
                            }
                        }
                        None => self.stopped.wait(&mut lifecycle),
                    }
                }
                Phase::Stopped => {
                    // Join workers a stop_timeout abandoned, within our own
                    // deadline if we have one.
                    if self.shared().wait_live(0, deadline) {
                        for handle in lifecycle.handles.drain(..) {
                            join(self.shared().id, handle);
                        }
                    }
                    return Ok(StopReport::empty());
                }
            }
        }
        lifecycle.phase = Phase::Stopping;
        let handles = std::mem::take(&mut lifecycle.handles);
        drop(lifecycle);

        let (report, stragglers) = self.perform_stop(mode, handles);

        let mut lifecycle = self.lifecycle.lock();
        lifecycle.phase = Phase::Stopped;
        lifecycle.handles = stragglers;
        drop(lifecycle);
        self.stopped.notify_all();
        Ok(report)
    }

    /// Does the stop: close, drain or discard, join, collect the report.
    /// Returns the report and the handles of abandoned workers.
    fn perform_stop(
        &self,
        mode: Mode,
        handles: Vec<JoinHandle<()>>,
    ) -> (StopReport<J>, Vec<JoinHandle<()>>) {
        let shared = self.shared();
        log_event!(debug, pool = shared.id, ?mode, "shutdown begin");
        shared.lanes.close();
        if matches!(mode, Mode::Now) {
            shared.escalate();
        }
        // Waits out submits already inside the gate (the blocked ones were
        // just woken by `close`), then lets idle workers see the end.
        shared.lanes.seal();

        let mut abandoned = Vec::new();
        if let Some(deadline) = mode.deadline() {
            if !shared.wait_live(0, Some(deadline)) {
                shared.escalate();
                abandoned = self.abandon_running();
                // Workers not abandoned are idle, finishing a record, or
                // in a worker hook (idle or stop), so they exit once their
                // hooks return: `discard` is up. (This may return early if
                // an abandoned worker exits first; the joins below wait for
                // every worker not abandoned either way.)
                shared.wait_live(abandoned.len(), None);
            }
        }
        let mut stragglers = Vec::new();
        for (index, handle) in handles.into_iter().enumerate() {
            if abandoned.iter().any(|a: &Abandoned| a.worker == index) {
                stragglers.push(handle);
            } else {
                join(shared.id, handle);
            }
        }

        let report = self.collect(abandoned);
        log_event!(
            debug,
            pool = shared.id,
            succeeded = report.succeeded,
            failed = report.failed.len(),
            panicked = report.panicked.len(),
            unrun = report.unrun.len(),
            abandoned = report.abandoned.len(),
            "shutdown end"
        );
        (report, stragglers)
    }

    /// Marks every worker still running a job as abandoned and describes it.
    fn abandon_running(&self) -> Vec<Abandoned> {
        let shared = self.shared();
        let mut abandoned = Vec::new();
        for (worker, slot) in shared.slots.iter().enumerate() {
            let mut state = slot.state.load(Ordering::SeqCst);
            let mut attempt = 0;
            while state != IDLE && state != ABANDONED {
                if state & STARTING != 0 {
                    // The worker holds a job it has not committed to yet
                    // and is about to see `discard` (or has just missed
                    // it): a few instructions until it hands the job back
                    // or starts it (worker.rs, "Abandoning a job").
                    crate::sync::wait_for_progress(attempt);
                    attempt = attempt.saturating_add(1);
                    state = slot.state.load(Ordering::SeqCst);
                    continue;
                }
                // The same running state can stand for two jobs in a row
                // (always `1` without timing, or two starts in one
                // nanosecond), so this exchange could in principle land on
                // a later job than the one read. It cannot: `discard` was
                // stored (SeqCst) before the first load above, so a worker
                // starting any later job sees it at its `STARTING` check and
                // hands that job back instead of running it.
                match slot.state.compare_exchange(
                    state,
                    ABANDONED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => {
                        let lane =
                            Priority::from_index(usize::from(slot.lane.load(Ordering::Relaxed)));
                        // (Without timing, `instant_at` gives now: when
                        // the stop gave up on the job, as documented.)
                        let running_since = shared.lanes.instant_at(state - 1);
                        log_event!(warn, pool = shared.id, worker, %lane, "job still running at the stop deadline; abandoning it");
                        abandoned.push(Abandoned {
                            worker,
                            lane,
                            running_since,
                        });
                        break;
                    }
                    Err(actual) => state = actual,
                }
            }
        }
        abandoned
    }

    /// Builds the report once every non-abandoned worker has exited.
    fn collect(&self, abandoned: Vec<Abandoned>) -> StopReport<J> {
        let shared = self.shared();
        // Unrun: jobs rescued by workers were dequeued before anything still
        // in their lane, so they go first within the lane.
        let mut by_lane: [Vec<Unrun<J>>; 3] = Default::default();
        let rescued = std::mem::take(&mut *shared.rescued.lock());
        // Sort the acceptance times, not the jobs: rustc 1.95 miscompiles
        // std's sort for elements aligned to 4096 bytes or more (a job type
        // may be), corrupting the stack; the jobs only move by `Vec` pushes.
        let mut order: Vec<(u64, usize)> = rescued
            .iter()
            .enumerate()
            .map(|(index, (_, envelope))| (envelope.accepted_at, index))
            .collect();
        order.sort_unstable();
        let mut rescued: Vec<Option<(Priority, Envelope<J>)>> =
            rescued.into_iter().map(Some).collect();
        for (_, index) in order {
            if let Some((lane, envelope)) = rescued[index].take() {
                by_lane[lane.index()].push(Unrun {
                    job: envelope.job,
                    lane,
                });
            }
        }
        shared.lanes.drain(|lane, envelope| {
            by_lane[lane.index()].push(Unrun {
                job: envelope.job,
                lane,
            });
        });
        let [mut unrun, normal, bulk] = by_lane;
        unrun.extend(normal);
        unrun.extend(bulk);

        let counters = &shared.counters;
        counters
            .unrun
            .fetch_add(unrun.len() as u64, Ordering::AcqRel);
        counters
            .abandoned
            .fetch_add(abandoned.len() as u64, Ordering::AcqRel);
        // The workers are gone, so their exits' wake-ups came before these
        // counts: a `wait_idle` that re-checked then is asleep again and
        // only this wake-up lets it see the ledger balance.
        shared.lanes.wake_idle_waiters_fenced();
        StopReport {
            succeeded: stats::terminal(&shared.slots, counters).0,
            failed: self.take_failed(),
            panicked: self.take_panicked(),
            unrun,
            abandoned,
        }
    }
}

/// Joins a worker thread; a worker never panics (jobs' panics are caught),
/// but if one did, it is logged rather than propagated.
fn join(pool: u64, handle: JoinHandle<()>) {
    if handle.join().is_err() {
        log_event!(error, pool, "a worker thread panicked outside a job");
    }
}

impl<J: Job> Drop for Pool<J> {
    /// Drains the pool like [`stop`](Pool::stop) if no stop has run yet, and
    /// logs the report at `warn` level if anything did not succeed (the
    /// jobs in it are dropped; call `stop` to get them back).
    ///
    /// Workers a `stop_timeout` abandoned are not waited for. A pool dropped
    /// on one of its own worker threads closes intake and lets its workers
    /// drain and exit on their own, detached; jobs that fail or panic in
    /// that drain are logged at `warn` (with counts) and dropped once the
    /// last worker has exited and the last [`Submitter`] is gone (until
    /// then, a `Submitter`'s owner can still take them with
    /// [`take_failed`](Submitter::take_failed) /
    /// [`take_panicked`](Submitter::take_panicked)).
    fn drop(&mut self) {
        let shared = Arc::clone(&self.submitter.shared);
        if worker::on_worker_of(shared.id) {
            if self.lifecycle.get_mut().phase == Phase::Running {
                log_event!(
                    warn,
                    pool = shared.id,
                    "pool dropped on its own worker thread; its workers drain and exit detached"
                );
                shared.lanes.close();
                shared.lanes.seal();
            }
            return;
        }
        if self.lifecycle.get_mut().phase == Phase::Stopped {
            return;
        }
        let Ok(report) = self.shutdown(Mode::Drain) else {
            return;
        };
        if !report.is_clean() {
            log_event!(warn,
                pool = shared.id,
                succeeded = report.succeeded,
                failed = report.failed.len(),
                panicked = report.panicked.len(),
                unrun = report.unrun.len(),
                abandoned = report.abandoned.len(),
                "pool dropped with jobs that did not succeed; they are dropped too (call stop() to get them back)"
            );
        }
        let StopReport {
            failed,
            panicked,
            unrun,
            ..
        } = report;
        // A job's Drop may panic; never let that escape a Drop.
        unwind::drop_all_contained(failed);
        unwind::drop_all_contained(panicked);
        unwind::drop_all_contained(unrun);
    }
}
