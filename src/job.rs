//! What a unit of work is: the [`Job`] trait, the [`Context`] a running job
//! sees, the [`Priority`] lanes, and [`FnJob`] for closures.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, Condvar, Mutex, Ordering};

/// A unit of work a [`Pool`](crate::Pool) runs on one of its worker threads.
///
/// `run` takes `&mut self` rather than `self`: the pool keeps ownership of the
/// job, so a job that fails or panics can be handed back to the caller in the
/// [`StopReport`](crate::StopReport) together with its reason (a dead letter
/// you can log, write to a rejects file, or resubmit).
///
/// A job that returns `Ok(())` *succeeded* and is dropped by the worker right
/// after `run` returns. A job that returns `Err` *failed*; one that panics
/// *panicked*. Both are kept until you take them
/// ([`take_failed`](crate::Submitter::take_failed),
/// [`take_panicked`](crate::Submitter::take_panicked)) or the pool stops, and
/// are then returned by value — unless the pool is dropped instead of
/// stopped (its `Drop` logs the counts and drops the jobs), or the job was
/// still running when a [`stop_timeout`](crate::Pool::stop_timeout) gave up
/// on it (reported as [`Abandoned`](crate::Abandoned); its late outcome is
/// logged and the job dropped).
///
/// # Examples
///
/// ```
/// use triage_pool::{Context, Job, Pool, Priority};
///
/// struct Record {
///     id: u64,
///     adverse_event: bool,
/// }
///
/// impl Job for Record {
///     type Error = String;
///
///     fn run(&mut self, _ctx: &Context) -> Result<(), String> {
///         if self.id == 0 {
///             return Err("record id 0 is reserved".to_owned());
///         }
///         Ok(())
///     }
///
///     fn priority(&self) -> Priority {
///         if self.adverse_event { Priority::Urgent } else { Priority::Normal }
///     }
/// }
///
/// let pool: Pool<Record> = Pool::builder().workers(2).build()?;
/// pool.submit(Record { id: 7, adverse_event: true })?;
/// pool.submit(Record { id: 0, adverse_event: false })?;
/// let report = pool.stop()?;
/// assert_eq!(report.succeeded, 1);
/// assert_eq!(report.failed[0].error, "record id 0 is reserved");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Job: Send + 'static {
    /// What a failed run reports. It travels back to the caller in
    /// [`Failed::error`](crate::Failed::error).
    type Error: Send + 'static;

    /// Does the work. Called at most once per submission, on a worker thread.
    ///
    /// # Errors
    ///
    /// An `Err` marks the job *failed*; the job and the error are handed back
    /// in the [`StopReport`](crate::StopReport) (or earlier, through
    /// [`take_failed`](crate::Submitter::take_failed)). A panic marks it
    /// *panicked*, with the panic message; the worker carries on.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Context, Job, Pool};
    ///
    /// struct Score(i32);
    ///
    /// impl Job for Score {
    ///     type Error = String;
    ///     fn run(&mut self, ctx: &Context) -> Result<(), String> {
    ///         if ctx.is_cancelled() {
    ///             return Err("cancelled before it started".into());
    ///         }
    ///         if self.0 < 0 {
    ///             return Err(format!("negative score {}", self.0));
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let pool: Pool<Score> = Pool::builder().workers(1).build()?;
    /// pool.submit(Score(3))?;
    /// pool.submit(Score(-1))?;
    /// let report = pool.stop()?;
    /// assert_eq!(report.succeeded, 1);
    /// assert_eq!(report.failed[0].error, "negative score -1");
    /// assert_eq!(report.failed[0].job.0, -1); // the job comes back too
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn run(&mut self, ctx: &Context) -> Result<(), Self::Error>;

    /// The lane this job is queued in when submitted with
    /// [`submit`](crate::Submitter::submit) and friends. The `*_to` variants
    /// (such as [`submit_to`](crate::Submitter::submit_to)) override it.
    ///
    /// Defaults to [`Priority::Normal`]. Called once per submit, on the
    /// submitting thread, before the job is accepted: keep it cheap, and
    /// do not panic in it (the panic reaches the caller of `submit`, and
    /// the job is dropped, never accepted).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Context, Job, Pool, Priority};
    ///
    /// struct Visit { adverse_event: bool }
    ///
    /// impl Job for Visit {
    ///     type Error = String;
    ///     fn run(&mut self, ctx: &Context) -> Result<(), String> {
    ///         assert_eq!(ctx.lane(), self.priority()); // submitted with `submit`
    ///         Ok(())
    ///     }
    ///     fn priority(&self) -> Priority {
    ///         if self.adverse_event { Priority::Urgent } else { Priority::Normal }
    ///     }
    /// }
    ///
    /// let pool: Pool<Visit> = Pool::builder().workers(1).build()?;
    /// pool.submit(Visit { adverse_event: true })?;
    /// pool.submit(Visit { adverse_event: false })?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn priority(&self) -> Priority {
        Priority::Normal
    }
}

/// The lane a job waits in. Workers take from the highest non-empty lane
/// first: `Urgent`, then `Normal`, then `Bulk` — except that a lower lane
/// passed over [`starvation_bound`](crate::Builder::starvation_bound) times
/// in a row gets the next dequeue.
///
/// Each lane has its own bounded capacity (see
/// [`Builder::capacity`](crate::Builder::capacity)), so a full `Normal` lane
/// never blocks or refuses an `Urgent` submit.
///
/// # Examples
///
/// ```
/// use triage_pool::Priority;
///
/// assert_eq!(Priority::default(), Priority::Normal);
/// assert_eq!(Priority::ALL, [Priority::Urgent, Priority::Normal, Priority::Bulk]);
/// assert_eq!(Priority::Urgent.to_string(), "urgent");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Time-critical work (an adverse-event report): taken before anything else.
    Urgent,
    /// Routine work: the default lane.
    #[default]
    Normal,
    /// Background work that runs when nothing more important waits.
    Bulk,
}

impl Priority {
    /// Every lane, highest first: the order in which workers look for work
    /// and in which unrun jobs are handed back at stop.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::Priority;
    ///
    /// let names: Vec<String> = Priority::ALL.iter().map(|lane| lane.to_string()).collect();
    /// assert_eq!(names, ["urgent", "normal", "bulk"]);
    /// ```
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Bulk];

    /// The lane's position in [`Priority::ALL`]: 0 for `Urgent`, 1 for
    /// `Normal`, 2 for `Bulk`.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::Priority;
    ///
    /// assert_eq!(Priority::Bulk.index(), 2);
    /// ```
    pub const fn index(self) -> usize {
        self as usize
    }

    pub(crate) const fn from_index(index: usize) -> Priority {
        match index {
            0 => Priority::Urgent,
            1 => Priority::Normal,
            _ => Priority::Bulk,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        })
    }
}

/// The pool-wide cancellation flag behind [`Context::is_cancelled`].
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    /// Raised once by `stop_now` or a `stop_timeout` deadline; never lowered.
    raised: AtomicBool,
    /// Guards the sleep in `wait_cancelled` against a lost wake-up.
    lock: Mutex<()>,
    /// Wakes jobs sleeping in `wait_cancelled`.
    cv: Condvar,
}

impl Cancel {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        // Taking the lock orders this notify after any waiter's check.
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

/// What a running job can learn about its run: which worker and lane it is
/// on, how long it waited in the queue, and whether the pool asked it to
/// cancel.
///
/// # Examples
///
/// ```
/// use triage_pool::{Context, FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// pool.submit(FnJob::new(move |ctx: &Context| {
///     tx.send((ctx.worker_index(), ctx.lane())).unwrap();
/// }))?;
/// assert_eq!(rx.recv()?, (0, Priority::Normal));
/// assert!(pool.stop()?.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Context {
    /// Index of the worker running the job (reserved urgent workers come
    /// after the general ones).
    worker: usize,
    /// Whether the worker only takes urgent jobs.
    reserved: bool,
    /// The lane the job was taken from.
    lane: Priority,
    /// Time between the job's acceptance and the start of its run.
    queue_wait: Duration,
    /// The pool's cancellation flag.
    cancel: Arc<Cancel>,
}

impl Context {
    pub(crate) fn new(worker: usize, reserved: bool, cancel: Arc<Cancel>) -> Context {
        Context {
            worker,
            reserved,
            lane: Priority::Normal,
            queue_wait: Duration::ZERO,
            cancel,
        }
    }

    pub(crate) fn set_job(&mut self, lane: Priority, queue_wait: Duration) {
        self.lane = lane;
        self.queue_wait = queue_wait;
    }

    /// Index of the worker thread running this job, from 0. General workers
    /// come first; reserved urgent workers follow them.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Context, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(3).build()?;
    /// pool.submit(FnJob::new(|ctx: &Context| assert!(ctx.worker_index() < 3)))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn worker_index(&self) -> usize {
        self.worker
    }

    /// Whether this worker is a reserved urgent worker (see
    /// [`Builder::reserved_urgent_workers`](crate::Builder::reserved_urgent_workers)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use triage_pool::{Context, FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).reserved_urgent_workers(1).build()?;
    /// // Only general workers take Bulk jobs; hold the one general worker.
    /// let (started_tx, started) = mpsc::channel();
    /// let (release, hold) = mpsc::channel::<()>();
    /// pool.submit_to(Priority::Bulk, FnJob::new(move |ctx: &Context| {
    ///     assert!(!ctx.is_reserved_worker());
    ///     started_tx.send(()).unwrap();
    ///     hold.recv().ok();
    /// }))?;
    /// started.recv()?;
    /// // So the reserved worker runs this urgent job.
    /// let (ran_tx, ran) = mpsc::channel();
    /// pool.submit_to(Priority::Urgent, FnJob::new(move |ctx: &Context| {
    ///     ran_tx.send(ctx.is_reserved_worker()).unwrap();
    /// }))?;
    /// assert!(ran.recv()?);
    /// release.send(())?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_reserved_worker(&self) -> bool {
        self.reserved
    }

    /// The lane the job was taken from: its [`Job::priority`], or the lane
    /// given to a `*_to` submit.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Context, FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit_to(Priority::Bulk, FnJob::new(|ctx: &Context| assert_eq!(ctx.lane(), Priority::Bulk)))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lane(&self) -> Priority {
        self.lane
    }

    /// How long the job waited: from the moment its submit call admitted it
    /// (before any wait for room in a full lane) to the start of its run.
    /// So for a job whose `submit` blocked on a full lane, it includes the
    /// time the producer was blocked — the latency its producer saw.
    /// Always zero in a pool built with
    /// [`timing(false)`](crate::Builder::timing).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{Context, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|ctx: &Context| assert!(ctx.queue_wait() < Duration::from_secs(60))))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// Whether the pool asked running jobs to finish early: true once
    /// [`stop_now`](crate::Pool::stop_now) was called or a
    /// [`stop_timeout`](crate::Pool::stop_timeout) deadline passed.
    ///
    /// Cancellation is cooperative: a long job should check this between
    /// steps and return. A cancelled job that returns `Ok(())` counts as
    /// succeeded; one that returns `Err` counts as failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Context, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|ctx: &Context| {
    ///     for _step in 0..1_000 {
    ///         if ctx.is_cancelled() {
    ///             return;
    ///         }
    ///         // ... one step of work ...
    ///     }
    /// }))?;
    /// let report = pool.stop_now()?; // the job ran (and returned early), or never started
    /// assert_eq!(report.succeeded + report.unrun.len() as u64, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_raised()
    }

    /// Sleeps until the pool raises its cancel flag or `timeout` passes,
    /// whichever comes first, and returns [`is_cancelled`](Self::is_cancelled).
    ///
    /// Use it instead of `thread::sleep` in a job that backs off between
    /// retries, so a [`stop_now`](crate::Pool::stop_now) or a passed
    /// [`stop_timeout`](crate::Pool::stop_timeout) deadline does not wait
    /// out the sleep. [`stop`](crate::Pool::stop) and dropping the pool
    /// never raise the flag (they let jobs finish), so under them the
    /// sleep runs its full `timeout`. A zero timeout only checks the flag;
    /// `Duration::MAX` waits for cancellation with no deadline — a job
    /// doing that under `stop` or `Drop` never returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{Context, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let (started_tx, started_rx) = std::sync::mpsc::channel();
    /// pool.submit(FnJob::new(move |ctx: &Context| {
    ///     started_tx.send(()).unwrap();
    ///     // Returns early: `stop_now` below raises the flag.
    ///     assert!(ctx.wait_cancelled(Duration::from_secs(3600)));
    /// }))?;
    /// started_rx.recv()?;
    /// let report = pool.stop_now()?;
    /// assert_eq!(report.succeeded, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        if self.cancel.is_raised() {
            return true;
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.cancel.lock.lock();
        while !self.cancel.is_raised() {
            match deadline {
                Some(deadline) => {
                    if self.cancel.cv.wait_until(&mut guard, deadline).timed_out() {
                        break;
                    }
                }
                None => self.cancel.cv.wait(&mut guard),
            }
        }
        self.cancel.is_raised()
    }
}

/// A boxed job is a job: for a job type too large to move by value (each
/// submit and each worker moves the job through a few stack frames; see
/// [`Builder::stack_size`](crate::Builder::stack_size)), and for a pool of
/// different job types behind one trait object, `Box<dyn Job<Error = E>>`.
/// The box costs one allocation per job. A refused submit hands the box
/// back inside its error, and that error converts with `?` into a
/// `Box<dyn Error + Send + Sync>` only if the job is `Sync`: use
/// `Box<dyn Job<Error = E> + Sync>` where you need that (or
/// [`FnJob`], which is `Sync`).
///
/// # Examples
///
/// ```
/// use triage_pool::{Context, Job, Pool, Priority};
///
/// struct Visit(u32);
/// struct Alert(&'static str);
///
/// impl Job for Visit {
///     type Error = String;
///     fn run(&mut self, _: &Context) -> Result<(), String> {
///         if self.0 == 0 { Err("no subject".into()) } else { Ok(()) }
///     }
/// }
/// impl Job for Alert {
///     type Error = String;
///     fn run(&mut self, _: &Context) -> Result<(), String> {
///         if self.0.is_empty() { Err("no severity".into()) } else { Ok(()) }
///     }
///     fn priority(&self) -> Priority { Priority::Urgent }
/// }
///
/// let pool: Pool<Box<dyn Job<Error = String>>> = Pool::builder().workers(2).build()?;
/// pool.submit(Box::new(Visit(7)))?;
/// pool.submit(Box::new(Visit(0)))?;
/// pool.submit(Box::new(Alert("severe")))?; // to the Urgent lane
/// let report = pool.stop()?;
/// assert_eq!((report.succeeded, report.failed.len()), (2, 1));
/// assert_eq!(report.failed[0].error, "no subject");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<J: Job + ?Sized> Job for Box<J> {
    type Error = J::Error;

    fn run(&mut self, ctx: &Context) -> Result<(), J::Error> {
        (**self).run(ctx)
    }

    fn priority(&self) -> Priority {
        (**self).priority()
    }
}

/// The error type of [`FnJob`]: any error, boxed.
///
/// # Examples
///
/// ```
/// use triage_pool::{BoxError, FnJob, Pool};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// pool.submit(FnJob::fallible(|_| -> Result<(), BoxError> {
///     let n: u32 = "x".parse()?; // any error converts with `?`
///     let _ = n;
///     Ok(())
/// }))?;
/// let report = pool.stop()?;
/// assert_eq!(report.failed[0].error.to_string(), "invalid digit found in string");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The closure inside an [`FnJob`], in a box that outlives it.
type BoxedFn = Box<dyn Call>;

/// A closure in a box that can be reused once it ran: the box holds an
/// `Option` of the closure, running takes the closure out, and the empty
/// box goes back to the recycling bin, from which `FnJob::fallible` takes
/// a box of the same type instead of allocating.
///
/// Why: the producer thread allocates every box and the workers free them,
/// so the producer's `malloc` never finds a block in its own thread cache;
/// that allocation was the largest single cost of `Pool<FnJob>` (measured
/// in docs/hot-path.md, "Recycled closure boxes"). Reuse needs no `unsafe`:
/// the bin holds `Box<dyn Any>`, and `downcast` checks the type.
trait Call: Send {
    /// Runs the closure, leaving the box empty.
    fn call(&mut self, ctx: &Context) -> Result<(), BoxError>;
    /// Puts the emptied box in the bin, or frees it.
    fn recycle(self: Box<Self>);
}

impl<G> Call for Option<G>
where
    G: FnOnce(&Context) -> Result<(), BoxError> + Send + 'static,
{
    fn call(&mut self, ctx: &Context) -> Result<(), BoxError> {
        match self.take() {
            Some(g) => g(ctx),
            None => Err(SPENT.into()),
        }
    }

    fn recycle(self: Box<Self>) {
        if recyclable::<Self>() {
            bin::keep(self);
        }
    }
}

/// The error of a spent `FnJob` run again.
const SPENT: &str = "this FnJob already ran; its closure is spent";

/// The recycling bin of emptied closure boxes.
mod bin {
    use std::any::Any;
    use std::sync::OnceLock;

    use crossbeam_queue::ArrayQueue;

    /// Boxes kept at most (process-wide).
    const BOXES: usize = 4096;

    /// Only boxes up to this size are kept: at most `BOXES * MAX_BYTES`
    /// bytes (256 KiB, as `FnJob`'s docs say) stay allocated after every
    /// pool is gone.
    pub(super) const MAX_BYTES: usize = 64;

    type Empty = Box<dyn Any + Send>;

    fn bin() -> &'static ArrayQueue<Empty> {
        static BIN: OnceLock<ArrayQueue<Empty>> = OnceLock::new();
        BIN.get_or_init(|| ArrayQueue::new(BOXES))
    }

    /// The oldest box in the bin, if any.
    pub(super) fn take() -> Option<Empty> {
        bin().pop()
    }

    /// Keeps an emptied box for reuse; a full bin frees it instead.
    pub(super) fn keep(empty: Empty) {
        drop(bin().push(empty));
    }
}

/// Whether boxes of `T` are small enough to keep in the bin.
const fn recyclable<T>() -> bool {
    std::mem::size_of::<T>() <= bin::MAX_BYTES
}

/// Boxes `g`, reusing an emptied box of the same type when the bin has one.
fn boxed<G>(g: G) -> BoxedFn
where
    G: FnOnce(&Context) -> Result<(), BoxError> + Send + 'static,
{
    if recyclable::<Option<G>>() {
        if let Some(empty) = bin::take() {
            if let Ok(mut reused) = empty.downcast::<Option<G>>() {
                *reused = Some(g);
                return reused;
            }
        }
    }
    Box::new(Some(g))
}

/// A job made from a closure, for scripts and tests that do not want to
/// define a job type: `Pool<FnJob>` runs boxed closures.
///
/// The closure must be `Send`, not `Sync`, yet `FnJob` is both, so the
/// submit errors that hand an `FnJob` back
/// ([`SubmitError<FnJob>`](crate::SubmitError) and the others) convert with
/// `?` into [`BoxError`] or any `Box<dyn Error + Send + Sync>` — from a
/// closure submitting follow-up work, say.
///
/// The closure runs at most once. An `FnJob` handed back after it ran (in
/// [`Failed`](crate::Failed) or [`Panicked`](crate::Panicked)) is spent:
/// running it again returns an error. One handed back unrun
/// ([`Unrun`](crate::Unrun)) still holds its closure and can be resubmitted.
///
/// # Allocation
///
/// The closure lives in a box. When it has run (returning `Ok` or `Err`),
/// its emptied box goes to a recycling bin shared by the whole process, and
/// the next `FnJob` made from a closure *of the same type* takes its box
/// from there instead of allocating. So a loop submitting the same closure
/// allocates a box only when the bin has none to give: once the bin holds
/// as many boxes as the loop ever has `FnJob`s alive at once (queued,
/// running, or in your hands: about the lane's capacity plus the workers,
/// when the lane fills), it allocates nothing per job. Otherwise an
/// `FnJob` costs one heap allocation:
///
/// - a closure that takes more than 64 bytes together with the box's
///   empty marker is never recycled (a closure whose
///   [`size_of_val`](std::mem::size_of_val) is at most 48 bytes always
///   fits, unless it captures a value aligned to more than 16 bytes);
/// - the bin hands out its oldest box first; one made for another closure
///   type is freed rather than reused, so mixing many closure types lowers
///   the share of reused boxes;
/// - a closure that panicked, and an `FnJob` dropped unrun, free their box.
///
/// The bin keeps at most 4,096 boxes, and never more than the most
/// recyclable `FnJob`s that were alive at once, so at most 256 KiB of boxes
/// stays allocated once every pool is gone, besides the bin's own array of
/// 4,096 slots (96 KiB on 64-bit targets, allocated when first used). A
/// box in the bin holds no closure: captured values are dropped when the
/// closure runs, as they would be without the bin. A pool of your own
/// [`Job`] type allocates nothing per job, whatever its size.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// pool.submit(FnJob::new(|_ctx| println!("hello from a worker")))?;
/// pool.submit(FnJob::fallible(|_ctx| "x".parse::<u32>().map(drop)))?;
/// pool.submit(FnJob::new(|_ctx| ()).with_priority(Priority::Urgent))?;
/// let report = pool.stop()?;
/// assert_eq!((report.succeeded, report.failed.len()), (2, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FnJob {
    /// The closure; `None` once it ran. In a mutex only so that `FnJob` is
    /// `Sync` without asking the closure to be (running takes `&mut self`,
    /// so the job path never locks it: `get_mut`).
    f: parking_lot::Mutex<Option<BoxedFn>>,
    /// The lane `submit` puts it in.
    priority: Priority,
}

impl FnJob {
    /// A job that runs `f` and always succeeds (unless it panics), in the
    /// `Normal` lane.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::FnJob;
    ///
    /// let job = FnJob::new(|ctx| println!("worker {}", ctx.worker_index()));
    /// assert!(!job.is_spent());
    /// ```
    pub fn new<F>(f: F) -> FnJob
    where
        F: FnOnce(&Context) + Send + 'static,
    {
        FnJob::fallible(move |ctx| {
            f(ctx);
            Ok::<(), BoxError>(())
        })
    }

    /// A job that runs `f`; an `Err` marks it failed, with the error boxed.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::FnJob;
    ///
    /// let job = FnJob::fallible(|_ctx| std::fs::read("/no/such/file").map(drop));
    /// # drop(job);
    /// ```
    pub fn fallible<F, E>(f: F) -> FnJob
    where
        F: FnOnce(&Context) -> Result<(), E> + Send + 'static,
        E: Into<BoxError>,
    {
        FnJob {
            f: parking_lot::Mutex::new(Some(boxed(move |ctx: &Context| {
                f(ctx).map_err(Into::into)
            }))),
            priority: Priority::Normal,
        }
    }

    /// Puts the job in `priority`'s lane when submitted.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Job, Priority};
    ///
    /// let job = FnJob::new(|_| ()).with_priority(Priority::Urgent);
    /// assert_eq!(job.priority(), Priority::Urgent);
    /// ```
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> FnJob {
        self.priority = priority;
        self
    }

    /// Whether the closure already ran (or started to run and panicked).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::FnJob;
    ///
    /// assert!(!FnJob::new(|_| ()).is_spent());
    /// ```
    pub fn is_spent(&self) -> bool {
        self.f.lock().is_none()
    }
}

impl Job for FnJob {
    type Error = BoxError;

    fn run(&mut self, ctx: &Context) -> Result<(), BoxError> {
        match self.f.get_mut().take() {
            Some(mut f) => {
                let outcome = f.call(ctx);
                f.recycle();
                outcome
            }
            None => Err(SPENT.into()),
        }
    }

    fn priority(&self) -> Priority {
        self.priority
    }
}

impl fmt::Debug for FnJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnJob")
            .field("priority", &self.priority)
            .field("spent", &self.is_spent())
            .finish_non_exhaustive()
    }
}
