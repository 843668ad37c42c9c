//! [`Builder`]: a pool's configuration and its validation.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::Arc;

use crate::error::{BuildError, BuildErrorKind};
use crate::job::{Job, Priority};
use crate::lanes::{Envelope, Lanes, Role};
use crate::pool::{Pool, Shared};
use crate::unwind::log_event;
use crate::worker::{self, Hooks, Spawn};

/// Default capacity of each lane, indexed by `Priority::index`.
const DEFAULT_CAPACITY: [usize; 3] = [256, 1024, 1024];

/// Configures and starts a [`Pool`]. Get one from [`Pool::builder`].
///
/// Every setter overwrites its setting (per lane for
/// [`capacity`](Self::capacity) and [`low_water`](Self::low_water)): the
/// last call wins, hooks included. Nothing is checked until
/// [`build`](Self::build), which validates the whole configuration before
/// it starts any thread.
///
/// | setting | default |
/// |---|---|
/// | [`workers`](Self::workers) | `num_cpus::get()` |
/// | [`reserved_urgent_workers`](Self::reserved_urgent_workers) | 0 |
/// | [`general_worker_nice`](Self::general_worker_nice) | 0 (OS priority unchanged) |
/// | [`capacity`](Self::capacity) | `Urgent` 256, `Normal` 1024, `Bulk` 1024 |
/// | [`low_water`](Self::low_water) | half of each lane's capacity, rounded down |
/// | [`starvation_bound`](Self::starvation_bound) | 32 |
/// | [`thread_name`](Self::thread_name) | `"triage-pool"` |
/// | [`stack_size`](Self::stack_size) | the platform's default (more for job types over about 21 KiB, with 2 MiB as the platform's default) |
/// | [`timing`](Self::timing) | on |
/// | [`on_worker_start`](Self::on_worker_start), [`on_worker_stop`](Self::on_worker_stop), [`on_worker_idle`](Self::on_worker_idle) | none |
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder()
///     .workers(4)
///     .reserved_urgent_workers(1)
///     .capacity(Priority::Urgent, 64)
///     .capacity(Priority::Normal, 4096)
///     .thread_name("lab-feed")
///     .build()?;
/// assert_eq!(pool.stats().workers(), 4);
/// assert_eq!(pool.stats().reserved_urgent_workers(), 1);
/// assert!(pool.stop()?.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Builder<J> {
    /// General workers; `None` means `num_cpus::get()`.
    workers: Option<usize>,
    /// Extra workers that only take urgent jobs.
    reserved: usize,
    /// Capacity per lane, indexed by `Priority::index`.
    capacity: [usize; 3],
    /// Low-water mark per lane; `None` means half the capacity.
    low_water: [Option<usize>; 3],
    /// Aging bound; `None` is strict priority.
    starvation_bound: Option<u32>,
    /// Thread name prefix.
    thread_name: String,
    /// Worker stack size.
    stack_size: Option<usize>,
    /// Whether jobs are timestamped.
    timing: bool,
    /// Worker start / stop callbacks.
    hooks: Hooks,
    /// Nice increment for the general workers (0: leave them alone).
    general_nice: u8,
    /// Test hook: the worker index whose spawn fails.
    #[cfg(test)]
    fail_spawn_at: Option<usize>,
    /// The job type the pool will run.
    job: PhantomData<fn() -> J>,
}

impl<J> fmt::Debug for Builder<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("reserved_urgent_workers", &self.reserved)
            .field("capacity", &self.capacity)
            .field("low_water", &self.low_water)
            .field("starvation_bound", &self.starvation_bound)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .field("timing", &self.timing)
            .field("hooks", &self.hooks)
            .field("general_worker_nice", &self.general_nice)
            .finish()
    }
}

/// A copy of every setting, hooks included (the copy shares the hook
/// closures). Clone a builder to build several pools with one
/// configuration, since [`build`](Builder::build) consumes it. Written by
/// hand so that `J` need not be `Clone`.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let template = Pool::<FnJob>::builder().workers(2).capacity(Priority::Bulk, 64);
/// let imports = template.clone().thread_name("import").build()?;
/// let exports = template.thread_name("export").build()?;
/// assert_eq!(imports.stats().capacity(Priority::Bulk), exports.stats().capacity(Priority::Bulk));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<J> Clone for Builder<J> {
    fn clone(&self) -> Self {
        Builder {
            workers: self.workers,
            reserved: self.reserved,
            capacity: self.capacity,
            low_water: self.low_water,
            starvation_bound: self.starvation_bound,
            thread_name: self.thread_name.clone(),
            stack_size: self.stack_size,
            timing: self.timing,
            hooks: self.hooks.clone(),
            general_nice: self.general_nice,
            #[cfg(test)]
            fail_spawn_at: self.fail_spawn_at,
            job: PhantomData,
        }
    }
}

/// The worker threads' default stack for a job type as large as `J` (see
/// `Builder::stack_size`): `None` (the platform default) unless the copies
/// of the job a worker's frames hold come to more than half of it; then
/// the platform default plus room for those copies. Saturates; a type
/// that large is refused by `check_capacity` before any thread is spawned.
fn worker_stack_for<J>() -> Option<usize> {
    let platform = std::env::var("RUST_MIN_STACK")
        .ok()
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(2 << 20);
    stack_for_job_size(std::mem::size_of::<Envelope<J>>(), platform)
}

/// [`worker_stack_for`] for a job envelope of `size` bytes and a platform
/// default of `platform` bytes.
fn stack_for_job_size(size: usize, platform: usize) -> Option<usize> {
    /// Copies of the job a worker's frames hold at once, with margin (a
    /// debug build needed 32 in measurements, a release build 9).
    const COPIES: usize = 48;
    let copies = size.saturating_mul(COPIES);
    (copies > platform / 2).then(|| platform.saturating_add(copies))
}

impl<J: Job> Default for Builder<J> {
    fn default() -> Self {
        Builder::new()
    }
}

impl<J: Job> Builder<J> {
    /// The most worker threads (general plus reserved) a pool may have;
    /// more makes [`build`](Self::build) fail with an invalid-config error
    /// before any thread is spawned.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Builder, FnJob, Pool};
    ///
    /// let err = Pool::<FnJob>::builder()
    ///     .workers(Builder::<FnJob>::MAX_WORKERS + 1)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_invalid_config());
    /// ```
    pub const MAX_WORKERS: usize = 4096;

    /// The largest capacity a lane may have; more makes
    /// [`build`](Self::build) fail with an invalid-config error before any
    /// memory is reserved.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Builder, FnJob, Pool, Priority};
    ///
    /// let err = Pool::<FnJob>::builder()
    ///     .capacity(Priority::Bulk, Builder::<FnJob>::MAX_CAPACITY + 1)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_invalid_config());
    /// ```
    pub const MAX_CAPACITY: usize = 1 << 26;

    /// A builder with the defaults listed on [`Builder`]; the same as
    /// [`Pool::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{Builder, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Builder::new().workers(1).build()?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Builder<J> {
        Builder {
            workers: None,
            reserved: 0,
            capacity: DEFAULT_CAPACITY,
            low_water: [None; 3],
            starvation_bound: Some(32),
            thread_name: "triage-pool".to_owned(),
            stack_size: None,
            timing: true,
            hooks: Hooks::default(),
            general_nice: 0,
            #[cfg(test)]
            fail_spawn_at: None,
            job: PhantomData,
        }
    }

    /// Sets the number of general worker threads, which take jobs from every
    /// lane. Defaults to `num_cpus::get()`. `0` makes [`build`](Self::build)
    /// fail; so does more than [`MAX_WORKERS`](Self::MAX_WORKERS) threads in
    /// all.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(3).build()?;
    /// assert_eq!(pool.stats().workers(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Adds `reserved` worker threads that take only `Urgent` jobs, on top
    /// of [`workers`](Self::workers) (`workers(2)` plus
    /// `reserved_urgent_workers(1)` is three threads). They sleep while the
    /// `Urgent` lane is empty, so an urgent job starts without waiting for
    /// any running routine job. General workers still take urgent jobs
    /// first. Defaults to 0. General and reserved workers together are
    /// limited to [`MAX_WORKERS`](Self::MAX_WORKERS), and a pool needs at
    /// least one general worker: `workers(0)` is refused however many
    /// reserved workers there are.
    ///
    /// The reserved threads still need a core to run on: when every core
    /// is busy with general workers' CPU-bound jobs, how soon a woken
    /// reserved thread runs is up to the OS scheduler. Measured on 2 cores
    /// with two general workers in 10 ms jobs (`benches/triage.rs`): median
    /// about 7 µs, but p99 about 2.4 ms — the rest of a busy worker's time
    /// slice. Pair the reserved workers with
    /// [`general_worker_nice`](Self::general_worker_nice) on Linux to let
    /// the woken thread preempt a busy general worker at once: p99 then
    /// measures in tens of microseconds.
    ///
    /// On Linux 6.12 or later there is a second way that leaves the general
    /// workers' priority alone: have each reserved worker ask the kernel for
    /// a short time slice as it starts. The EEVDF scheduler lets a waking
    /// thread with a shorter slice preempt the running one. The pool does
    /// not make that call for you (it needs `sched_setattr`, which no safe
    /// wrapper offers, and this crate has no `unsafe` code); call it from
    /// [`on_worker_start`](Self::on_worker_start), where reserved workers
    /// are the indices `workers..workers + reserved`. `benches/triage.rs`
    /// (its `slice` module) does it with `libc` and reads the setting back,
    /// since older kernels accept it and ignore it. Measured there with a
    /// 100 µs slice: p99 33–51 µs in six runs of eight, as good as a nice
    /// value of 19 in the same runs; in the others, started while the host
    /// was busy with other load, every variant was above 1.5 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(2).reserved_urgent_workers(1).build()?;
    /// assert_eq!(pool.stats().reserved_urgent_workers(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn reserved_urgent_workers(mut self, reserved: usize) -> Self {
        self.reserved = reserved;
        self
    }

    /// Lowers the OS priority of the general workers: each raises its own
    /// nice value by `increment` (capped at the maximum, 19) as it starts,
    /// before the [`on_worker_start`](Self::on_worker_start) hook. Reserved
    /// urgent workers keep the priority they inherit. Threads and processes
    /// that a job on a general worker spawns inherit the lowered priority.
    /// Defaults to 0, which leaves every thread alone.
    ///
    /// A lower-priority thread is preempted sooner when a higher-priority
    /// one wakes, so a reserved urgent worker (or your producer thread, or
    /// another process such as the database) gets a core at once instead
    /// of after a busy general worker's time slice. Measured on the 2-core
    /// host with two general workers in 10 ms CPU-bound jobs and one
    /// reserved worker (`benches/triage.rs`, 300 trials per run): urgent
    /// start latency p99 2.4–3.3 ms at 0; at 19, 25–76 µs in most runs
    /// (1.5–2 ms in runs started while the host was busy with other
    /// load); at 5, 34–47 µs in three runs of seven and 2.5–3.1 ms in the
    /// others, and 10 or 15 were as erratic. For the best urgent latency
    /// use 19 (the most the kernel allows); no nice value helps against
    /// load from outside the machine (other virtual machines on the host).
    /// The `SCHED_IDLE` policy, which Linux preempts for any ordinary
    /// thread, was measured too (27 November, same workload, 300 trials a
    /// run, alternated with 19): p99 30–56 µs on a quiet host against
    /// 22–38 µs at 19, and with two busy-looping processes beside the pool
    /// 19 µs–1.7 ms against 11 µs–2.4 ms — no better, so the pool does not
    /// offer it. When nothing else wants the CPU the general workers run as
    /// fast as at 0: a nice value only matters between threads competing
    /// for a core. When something else does (another process at the
    /// default priority), the general workers get the smaller share — at
    /// 19 about 1.5% of a contested core — so the import yields to it.
    ///
    /// Raising a nice value needs no privileges; lowering it again does, so
    /// the change lasts for the thread's life (the pool's threads are its
    /// own and end with it). Applies on Linux, where the nice value belongs
    /// to one thread; ignored on other platforms, where it would slow down
    /// the whole process. If the OS refuses (a seccomp filter, say), the
    /// worker logs a `warn` event and runs at its inherited priority.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(2)
    ///     .reserved_urgent_workers(1)
    ///     .general_worker_nice(19)
    ///     .build()?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn general_worker_nice(mut self, increment: u8) -> Self {
        self.general_nice = increment;
        self
    }

    /// Sets how many jobs `lane` holds at once. A submit to a full lane
    /// blocks ([`submit`](crate::Submitter::submit)), is refused
    /// ([`try_submit`](crate::Submitter::try_submit)) or waits up to its
    /// timeout ([`submit_timeout`](crate::Submitter::submit_timeout)).
    ///
    /// The slots are allocated when the pool is built: queued work never
    /// takes more than the sum over lanes of `capacity × (size_of::<J>() +
    /// 16 bytes)` (8 bytes of acceptance time and 8 of channel bookkeeping,
    /// plus alignment). Defaults: `Urgent` 256, `Normal` 1024, `Bulk` 1024.
    ///
    /// Every lane needs at least one slot: a capacity of 0 (a rendezvous
    /// lane) makes [`build`](Self::build) fail, since workers poll the lanes
    /// rather than wait on each. So does a capacity above
    /// [`MAX_CAPACITY`](Self::MAX_CAPACITY), or slots the allocator refuses
    /// — one lane's, or the three lanes' together. That check asks for the
    /// memory without touching it: on a system that overcommits memory
    /// (Linux by default) a size it grants but cannot back passes, and the
    /// shortage shows while `build` initialises the slots (the
    /// out-of-memory killer), not later in the middle of a run.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().capacity(Priority::Normal, 16).build()?;
    /// assert_eq!(pool.stats().capacity(Priority::Normal), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn capacity(mut self, lane: Priority, capacity: usize) -> Self {
        self.capacity[lane.index()] = capacity;
        self
    }

    /// Sets the depth `lane` must drain to before producers blocked on it
    /// (in [`submit`](crate::Submitter::submit) or
    /// [`submit_timeout`](crate::Submitter::submit_timeout)) are woken.
    ///
    /// Waking a blocked producer for every freed slot makes producer and
    /// workers hand the CPU back and forth through the scheduler once per
    /// job; waking it once the lane has drained to the low-water mark lets
    /// it refill many slots per wake-up, while the workers still have
    /// `low_water` jobs queued. Defaults to half the lane's capacity, rounded
    /// down (0 for a lane of capacity 1); use
    /// `capacity - 1` to wake producers as soon as one slot frees (lowest
    /// producer latency, most wake-ups). Blocked producers are also woken
    /// whenever the workers run out of work, and by a stop.
    ///
    /// A value not below the lane's capacity makes [`build`](Self::build)
    /// fail.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .capacity(Priority::Normal, 64)
    ///     .low_water(Priority::Normal, 63) // wake on every freed slot
    ///     .build()?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn low_water(mut self, lane: Priority, depth: usize) -> Self {
        self.low_water[lane.index()] = Some(depth);
        self
    }

    /// Guarantees progress to lower lanes under sustained higher-lane load.
    ///
    /// A general worker that has taken `bound` jobs in a row from *higher*
    /// lanes while the `Normal` (or `Bulk`) lane had work waiting takes its
    /// next job from that lane (for `Bulk`, dequeues from `Urgent` and
    /// `Normal` both count; a `Bulk` dequeue never ages `Normal`). When
    /// both are due at once, `Normal` goes first and `Bulk` right after.
    ///
    /// Each worker keeps its own count per lane. It starts counting when,
    /// taking a job from a higher lane, it sees the lower lane with work
    /// waiting, and starts over when it takes a job from that lane or finds
    /// it empty while looking for work; it does not look at the lane after
    /// every dequeue (that cost up to a third of the throughput with every
    /// lane busy). With one general worker this is exactly "`bound`
    /// jobs while the lane waited". With several, other workers may empty
    /// the lane while one worker counts; a job that arrives in the lane
    /// before that worker notices can then be taken sooner than `bound`
    /// dequeues after it arrived — never later. Either way, while a higher
    /// lane has work, a worker takes at most one job from the lower lane
    /// per `bound` jobs it takes from the lanes above.
    ///
    /// So while every lane has work, each general worker:
    /// - takes a `Normal` job after at most `bound` `Urgent` ones (and at
    ///   most one due `Bulk` job in between), and a `Bulk` job after at most
    ///   `bound + 1` jobs from the lanes above it: each of the two gets at
    ///   least one of every `bound + 2` consecutive dequeues;
    /// - gives `Urgent` at least `bound` of every `bound + 3` consecutive
    ///   dequeues, and `bound / (bound + 2)` of them in the long run. (A
    ///   window of `bound + 2` can hold only `bound - 1` urgent jobs, when a
    ///   lane started waiting with the others' counters part-way.)
    ///
    /// Reserved urgent workers are not affected. Defaults to 32 (`Urgent`
    /// keeps 94% under full saturation); `0` behaves like `1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).starvation_bound(2).build()?;
    /// // Hold the only worker while 6 urgent jobs and 1 normal job queue up.
    /// let (started_tx, started) = mpsc::channel();
    /// let (release_tx, release_rx) = mpsc::channel::<()>();
    /// pool.submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    /// }))?;
    /// started.recv()?;
    /// let (lane_tx, lanes) = mpsc::channel();
    /// for lane in [Priority::Normal].into_iter().chain([Priority::Urgent; 6]) {
    ///     let lane_tx = lane_tx.clone();
    ///     pool.submit_to(lane, FnJob::new(move |ctx| lane_tx.send(ctx.lane()).unwrap()))?;
    /// }
    /// release_tx.send(())?;
    /// assert!(pool.stop()?.is_clean());
    /// let order: Vec<Priority> = lanes.try_iter().collect();
    /// // The normal job waited through `bound` = 2 urgent dequeues, then
    /// // went ahead of the 4 urgent jobs still queued.
    /// let normal = order.iter().position(|&lane| lane == Priority::Normal);
    /// assert_eq!(normal, Some(2), "{order:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn starvation_bound(mut self, bound: u32) -> Self {
        self.starvation_bound = Some(bound.max(1));
        self
    }

    /// Strict priority: a worker never takes a job from a lane while a
    /// higher lane has one. Lower lanes can starve for as long as higher
    /// lanes stay busy. `strict_priority` and
    /// [`starvation_bound`](Self::starvation_bound) set the same setting:
    /// the last call wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).strict_priority().build()?;
    /// // Hold the only worker while 1 normal job and 40 urgent jobs queue up.
    /// let (started_tx, started) = mpsc::channel();
    /// let (release_tx, release_rx) = mpsc::channel::<()>();
    /// pool.submit(FnJob::new(move |_| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    /// }))?;
    /// started.recv()?;
    /// let (lane_tx, lanes) = mpsc::channel();
    /// for lane in [Priority::Normal].into_iter().chain([Priority::Urgent; 40]) {
    ///     let lane_tx = lane_tx.clone();
    ///     pool.submit_to(lane, FnJob::new(move |ctx| lane_tx.send(ctx.lane()).unwrap()))?;
    /// }
    /// release_tx.send(())?;
    /// assert!(pool.stop()?.is_clean());
    /// let order: Vec<Priority> = lanes.try_iter().collect();
    /// // No starvation bound: the normal job waits for every urgent one.
    /// assert_eq!(order.last(), Some(&Priority::Normal), "{order:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn strict_priority(mut self) -> Self {
        self.starvation_bound = None;
        self
    }

    /// Sets the prefix of worker thread names: general workers are named
    /// `{prefix}-{index}`, reserved urgent workers `{prefix}-u{index}`, where
    /// `index` is the worker index of
    /// [`Context::worker_index`](crate::Context::worker_index) (general workers
    /// first: with `workers(2)` the first reserved worker is `{prefix}-u2`).
    /// Defaults to `"triage-pool"`. A prefix containing a NUL byte (which no OS
    /// thread name can hold) makes [`build`](Self::build) fail with an
    /// invalid-config error.
    ///
    /// [`std::thread::current().name()`](std::thread::Thread::name) and
    /// panic messages show the whole name, but Linux keeps only the first
    /// 15 bytes for the OS (what `top -H`, `ps -L`, `perf` and debuggers
    /// show). With a prefix of at most 11 bytes, as the default is, the
    /// names of the first 100 workers fit whole; with a longer prefix,
    /// workers whose names differ only past the 15th byte look alike there.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).thread_name("epro").build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.submit(FnJob::new(move |_| {
    ///     tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
    /// }))?;
    /// assert_eq!(rx.recv()?.as_deref(), Some("epro-0"));
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Sets each worker thread's stack size in bytes. A size the operating
    /// system refuses makes [`build`](Self::build) fail with the OS error;
    /// a size below the platform's minimum is rounded up to it.
    ///
    /// Defaults to the platform's default for spawned threads (2 MiB, or
    /// `RUST_MIN_STACK`), except for large job types: a worker moves its job by
    /// value through a few stack frames (measured: about 9 times the job's size
    /// in release builds, over 30 times in debug builds, needed even before the
    /// first job arrives). Counting a job as `n` bytes (`size_of::<J>()` plus
    /// the pool's 8-byte timestamp, rounded up to a multiple of `J`'s alignment
    /// or 8, whichever is larger), when `48 × n` is more than half the platform
    /// default, the default is the platform default plus `48 × n`: with 2 MiB,
    /// for job types over about 21 KiB. A size set here is used as is: leave
    /// the room your jobs' own code needs plus at least `10 × n` in release
    /// builds and `48 × n` in debug builds, or box the job — `Box<J>` is a
    /// [`Job`] too, and moves as a pointer. (Threads that submit jobs or stop
    /// the pool move jobs through their own stacks in the same way, and need
    /// room for them too.)
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().stack_size(4 << 20).build()?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Whether to timestamp every job when it is accepted and when it
    /// starts (two clock reads per job, and the worker that starts it records the
    /// wait in its histogram). On by default:
    /// the timestamps give [`Context::queue_wait`](crate::Context::queue_wait),
    /// [`Submitter::queue_wait_histogram`](crate::Submitter::queue_wait_histogram),
    /// [`Stats::oldest_wait`](crate::Stats::oldest_wait) and
    /// [`Abandoned::running_since`](crate::Abandoned::running_since).
    ///
    /// The pool reads the CPU's time-stamp counter where it is invariant
    /// (through the `quanta` crate: about 9 ns a read on the 2-core test
    /// host, against 24 ns for `Instant::now`), and the OS's monotonic
    /// clock elsewhere. The first timed pool built in a process calibrates
    /// the counter against the OS clock inside [`build`](Self::build):
    /// about 0.7 ms on the test host, longer on a host too loaded for the
    /// measurement to settle (`quanta` gives up after 200 ms); later pools
    /// reuse it, and a pool with timing off never calibrates. Even so the two reads are a large
    /// part of the pool's own cost per job; for jobs of a few microseconds
    /// or less that nobody needs latencies of, turn them off.
    /// Then `queue_wait` is always zero, the histograms stay empty,
    /// `oldest_wait` is always `None`, and
    /// `running_since` is when the stop gave up on the job rather than when
    /// it started.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{Context, FnJob, Pool};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).timing(false).build()?;
    /// pool.submit(FnJob::new(|ctx: &Context| assert_eq!(ctx.queue_wait(), Duration::ZERO)))?;
    /// assert!(pool.stop()?.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn timing(mut self, enabled: bool) -> Self {
        self.timing = enabled;
        self
    }

    /// Runs `hook` on each worker thread, with the worker's index, before
    /// the worker takes its first job: the place to open a per-worker
    /// resource (a database connection in a thread-local, say), or to set
    /// the thread's scheduling (a general worker's
    /// [`general_worker_nice`](Self::general_worker_nice) is already
    /// applied when the hook runs).
    ///
    /// General workers have the indices `0..workers`, reserved urgent
    /// workers `workers..workers + reserved` — the same index as
    /// [`Context::worker_index`](crate::Context::worker_index) and the
    /// thread name. The hooks of different workers run concurrently, in no
    /// particular order; `build` does not wait for them. The hooks run on
    /// this pool's worker threads, so inside them the pool's stop methods
    /// and `wait_idle` return [`StopError::OnWorkerThread`](crate::StopError::OnWorkerThread)
    /// and a submit to a full lane is refused, as inside a job.
    ///
    /// If [`build`](Self::build) fails to spawn a later worker, the workers
    /// already started still run their start and stop hooks as they shut
    /// down, and `build` waits for them before returning the error.
    ///
    /// A panic in the hook is caught and logged at `error`; the worker then
    /// runs normally.
    ///
    /// One hook per pool: calling this again replaces the earlier hook
    /// (compose your steps in one closure).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let started = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&started);
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(2)
    ///     .reserved_urgent_workers(1)
    ///     .on_worker_start(move |worker| {
    ///         let reserved = worker >= 2;
    ///         log.lock().unwrap().push((worker, reserved));
    ///     })
    ///     .build()?;
    /// assert!(pool.stop()?.is_clean()); // joins the workers, so every hook has run
    /// let mut started = started.lock().unwrap().clone();
    /// started.sort();
    /// assert_eq!(started, [(0, false), (1, false), (2, true)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.hooks.start = Some(std::sync::Arc::new(hook));
        self
    }

    /// Runs `hook` on each worker thread, with the worker's index, after
    /// its last job, as it exits: the place to flush or close a per-worker
    /// resource. A stop (or `Drop`) that joins the workers returns only
    /// after every joined worker's hook has run. A worker abandoned by
    /// [`stop_timeout`](crate::Pool::stop_timeout) runs it when its job
    /// finally ends.
    ///
    /// A panic in the hook is caught and logged at `error`.
    ///
    /// One hook per pool: calling this again replaces the earlier hook
    /// (compose your steps in one closure).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let stopped = Arc::new(AtomicUsize::new(0));
    /// let count = Arc::clone(&stopped);
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(3)
    ///     .on_worker_stop(move |_worker| { count.fetch_add(1, Ordering::SeqCst); })
    ///     .build()?;
    /// assert!(pool.stop()?.is_clean());
    /// assert_eq!(stopped.load(Ordering::SeqCst), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_worker_stop(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.hooks.stop = Some(std::sync::Arc::new(hook));
        self
    }

    /// Runs `hook` on a worker thread, with the worker's index, each time
    /// the worker runs out of work after running at least one job (once
    /// the lanes it serves have stayed empty for a moment, before it
    /// sleeps), and before the worker exits if it ran a job since —
    /// however the pool stops, ahead of
    /// [`on_worker_stop`](Self::on_worker_stop). The
    /// place to flush a per-worker batch — rows buffered by the jobs, a
    /// transaction kept open across them — so that nothing waits in a
    /// batch while the pool is idle.
    ///
    /// The hook runs after the last job's outcome was recorded: while it
    /// runs, [`Stats::busy`](crate::Stats::busy) does not count the worker
    /// and [`wait_idle`](crate::Submitter::wait_idle) may already have
    /// returned — it never waits for the hook, so the hook may itself wait
    /// for something the caller does after `wait_idle` returns (drain a
    /// channel the hook sends its batch to, say). A stop, which joins the
    /// workers, returns only after every
    /// joined worker's hooks have run. Jobs queued while the hook runs wait
    /// for it (other workers may take them). The hook does not run on the
    /// job path: a worker that always finds work never calls it.
    ///
    /// A panic in the hook is caught and logged at `error`; the worker then
    /// carries on.
    ///
    /// One hook per pool: calling this again replaces the earlier hook
    /// (compose your steps in one closure).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::sync::{Arc, Mutex};
    /// use triage_pool::{FnJob, Pool};
    ///
    /// thread_local! {
    ///     // Rows a worker's jobs produced and has not written yet.
    ///     static BATCH: RefCell<Vec<u32>> = RefCell::new(Vec::new());
    /// }
    /// let written = Arc::new(Mutex::new(Vec::new()));
    /// let flush = {
    ///     let written = Arc::clone(&written);
    ///     move |_worker: usize| {
    ///         let rows = BATCH.with(|batch| std::mem::take(&mut *batch.borrow_mut()));
    ///         written.lock().unwrap().extend(rows); // one transaction, say
    ///     }
    /// };
    /// let pool: Pool<FnJob> = Pool::builder()
    ///     .workers(2)
    ///     .on_worker_idle(flush)
    ///     .build()?;
    /// for row in 0..100 {
    ///     pool.submit(FnJob::new(move |_| BATCH.with(|batch| batch.borrow_mut().push(row))))?;
    /// }
    /// assert!(pool.stop()?.is_clean()); // every worker went idle before it exited
    /// let mut written = written.lock().unwrap().clone();
    /// written.sort();
    /// assert_eq!(written, (0..100).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn on_worker_idle(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.hooks.idle = Some(std::sync::Arc::new(hook));
        self
    }

    #[cfg(test)]
    pub(crate) fn fail_spawn_at(mut self, index: usize) -> Self {
        self.fail_spawn_at = Some(index);
        self
    }

    /// Validates the settings, allocates the lanes and starts every worker.
    ///
    /// Returns once every worker thread is spawned, without waiting for the
    /// [`on_worker_start`](Self::on_worker_start) hooks. It blocks longer in
    /// two cases: the first pool in a process with [`timing`](Self::timing)
    /// on calibrates its clock (about 0.7 ms, up to 200 ms on a loaded
    /// host), and when the OS refuses a thread, `build` joins the workers
    /// already started, which run their start and stop hooks first (a start
    /// hook that waits for something the caller does after `build` returns
    /// then keeps `build` from returning).
    ///
    /// # Errors
    ///
    /// A [`BuildError`] that
    /// [`is_invalid_config`](BuildError::is_invalid_config) for 0 workers, more
    /// than [`MAX_WORKERS`](Self::MAX_WORKERS) threads, a lane capacity of 0,
    /// above [`MAX_CAPACITY`](Self::MAX_CAPACITY) or too large to allocate
    /// (alone or with the other lanes), a [`low_water`](Self::low_water) mark
    /// not below its lane's capacity, or a NUL byte in the
    /// [`thread_name`](Self::thread_name) prefix; nothing was started. One that
    /// [`is_spawn_failure`](BuildError::is_spawn_failure) if the OS refused a
    /// thread; the workers already started were stopped and joined.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool};
    ///
    /// let pool = Pool::<FnJob>::builder().workers(2).build()?;
    /// assert!(pool.stop()?.is_clean());
    /// assert!(Pool::<FnJob>::builder().workers(0).build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Pool<J>, BuildError> {
        let workers = self.workers.unwrap_or_else(num_cpus::get);
        if workers == 0 {
            return Err(BuildError::new(BuildErrorKind::ZeroWorkers));
        }
        let total = workers.saturating_add(self.reserved);
        if total > Self::MAX_WORKERS {
            return Err(BuildError::new(BuildErrorKind::TooManyWorkers {
                workers,
                reserved: self.reserved,
                max: Self::MAX_WORKERS,
            }));
        }
        if self.thread_name.contains('\0') {
            return Err(BuildError::new(BuildErrorKind::NulInThreadName {
                prefix: self.thread_name,
            }));
        }
        let mut low_water = [0; 3];
        for lane in Priority::ALL {
            let capacity = self.capacity[lane.index()];
            check_capacity::<J>(lane, capacity)?;
            low_water[lane.index()] = match self.low_water[lane.index()] {
                None => capacity / 2,
                Some(depth) if depth < capacity => depth,
                Some(depth) => {
                    return Err(BuildError::new(BuildErrorKind::LowWaterTooHigh {
                        lane,
                        depth,
                        capacity,
                    }))
                }
            };
        }
        check_lanes_together::<J>(&self.capacity)?;

        let shared = Arc::new(Shared::new(
            Lanes::new(self.capacity, low_water, self.timing),
            workers,
            self.reserved,
            self.hooks,
        ));
        #[cfg(test)]
        tests::LAST_SHARED.with(|last| *last.borrow_mut() = Some(Arc::downgrade(&shared) as _));
        let mut handles = Vec::with_capacity(total);
        let stack_size = self.stack_size.or_else(worker_stack_for::<J>);
        for index in 0..total {
            let (role, name) = if index < workers {
                (Role::General, format!("{}-{index}", self.thread_name))
            } else {
                (Role::UrgentOnly, format!("{}-u{index}", self.thread_name))
            };
            *shared.live.lock() += 1;
            let spec = Spawn {
                index,
                role,
                name: name.clone(),
                stack_size,
                starvation_bound: self.starvation_bound,
                nice: if role == Role::General {
                    self.general_nice
                } else {
                    0
                },
                #[cfg(test)]
                fail: self.fail_spawn_at == Some(index),
                #[cfg(not(test))]
                fail: false,
            };
            match worker::spawn(&shared, spec) {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    shared.worker_exited();
                    // Nothing was submitted: closing and sealing lets the
                    // workers already started see empty, sealed lanes and exit.
                    shared.lanes.close();
                    shared.lanes.seal();
                    for handle in handles {
                        let _ = handle.join();
                    }
                    return Err(BuildError::new(BuildErrorKind::Spawn { name, source }));
                }
            }
        }
        log_event!(
            debug,
            pool = shared.id,
            workers,
            reserved = self.reserved,
            "pool started"
        );
        Ok(Pool::from_parts(shared, handles))
    }
}

/// Refuses a lane capacity that is zero, above the maximum, or whose
/// preallocated slots cannot be allocated.
fn check_capacity<J: Job>(lane: Priority, capacity: usize) -> Result<(), BuildError> {
    if capacity == 0 {
        return Err(BuildError::new(BuildErrorKind::ZeroCapacity { lane }));
    }
    if capacity > Builder::<J>::MAX_CAPACITY {
        return Err(BuildError::new(BuildErrorKind::CapacityTooLarge {
            lane,
            requested: capacity,
            max: Builder::<J>::MAX_CAPACITY,
        }));
    }
    match lane_bytes::<J>(capacity) {
        Some(bytes) if can_allocate(bytes) => Ok(()),
        _ => Err(BuildError::new(BuildErrorKind::CapacityUnallocatable {
            lane,
            requested: capacity,
            bytes: capacity as u128 * size_of::<(usize, Envelope<J>)>() as u128,
        })),
    }
}

/// Whether the allocator grants `bytes` in one block. Asked once,
/// untouched and freed at once, so a size the system cannot provide is
/// refused by `build` instead of aborting in a channel's allocation.
fn can_allocate(bytes: usize) -> bool {
    Vec::<u8>::new().try_reserve_exact(bytes).is_ok()
}

/// The bytes of a lane's preallocated slots: each the envelope plus the
/// channel's stamp. `None` on overflow.
fn lane_bytes<J: Job>(capacity: usize) -> Option<usize> {
    capacity.checked_mul(size_of::<(usize, Envelope<J>)>())
}

/// Refuses lanes that each fit (`check_capacity` passed) but not all three
/// together: the channels allocate their slots one after another, and the
/// last allocation would abort the process.
fn check_lanes_together<J: Job>(capacity: &[usize; 3]) -> Result<(), BuildError> {
    let total = capacity
        .iter()
        .try_fold(0_usize, |sum, &c| sum.checked_add(lane_bytes::<J>(c)?));
    if total.is_some_and(can_allocate) {
        Ok(())
    } else {
        Err(BuildError::new(BuildErrorKind::LanesTooLarge {
            capacity: *capacity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FnJob;
    use std::any::Any;
    use std::cell::RefCell;
    use std::error::Error;
    use std::sync::Weak;

    thread_local! {
        /// The shared state of the last pool this thread built.
        pub(super) static LAST_SHARED: RefCell<Option<Weak<dyn Any + Send + Sync>>> =
            const { RefCell::new(None) };
    }

    #[test]
    fn the_default_stack_grows_only_for_large_jobs() {
        const MIB: usize = 1 << 20;
        // Small jobs keep the platform default, even a small one.
        assert_eq!(stack_for_job_size(64, 2 * MIB), None);
        assert_eq!(stack_for_job_size(64, 256 << 10), None);
        // 48 copies of 21 KiB fit in half of 2 MiB; of 22 KiB they do not.
        assert_eq!(stack_for_job_size(21 << 10, 2 * MIB), None);
        assert_eq!(
            stack_for_job_size(22 << 10, 2 * MIB),
            Some(2 * MIB + 48 * (22 << 10))
        );
        // A small RUST_MIN_STACK lowers the threshold and the base.
        assert_eq!(
            stack_for_job_size(4 << 10, 256 << 10),
            Some((256 << 10) + 48 * (4 << 10))
        );
        assert_eq!(
            stack_for_job_size(usize::MAX / 2, 2 * MIB),
            Some(usize::MAX)
        );
    }

    #[test]
    fn copies_of_exactly_half_the_platform_stack_keep_the_default() {
        // The stack grows only when the job's 48 copies come to *more*
        // than half the platform default; exactly half still fits.
        let size = 1 << 10;
        let platform = 2 * 48 * size;
        assert_eq!(stack_for_job_size(size, platform), None);
        // One byte more per copy is over half.
        assert_eq!(
            stack_for_job_size(size + 1, platform),
            Some(platform + 48 * (size + 1))
        );
    }

    /// Runs `f` on its own thread and fails if it has not returned within
    /// a minute: `build` joins the workers it started, so a bug there
    /// would otherwise hang the test.
    fn within_a_minute(f: impl FnOnce() + Send + 'static) {
        let (done_tx, done) = std::sync::mpsc::channel();
        let body = std::thread::spawn(move || {
            f();
            let _ = done_tx.send(());
        });
        match done.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(()) => body.join().expect("test body"),
            // The body panicked (dropping the sender): report its panic.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(body.join().expect_err("the body panicked"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("build() did not return within a minute (deadlock?)")
            }
        }
    }

    #[test]
    fn spawn_failure_midway_joins_started_workers() {
        within_a_minute(|| {
            let err = Builder::<FnJob>::new()
                .workers(3)
                .reserved_urgent_workers(1)
                .fail_spawn_at(2)
                .build()
                .unwrap_err();
            assert!(err.is_spawn_failure());
            let source = err.source().expect("io error source");
            assert!(source.to_string().contains("injected"));
            assert!(err.to_string().contains("triage-pool-2"));
            // Every started worker held a clone of the shared state; they
            // were joined, so none is left.
            let weak = LAST_SHARED
                .with(|last| last.borrow_mut().take())
                .expect("built");
            assert!(weak.upgrade().is_none(), "a worker thread outlived build()");
        });
    }

    #[test]
    fn spawn_failure_of_a_reserved_worker() {
        within_a_minute(|| {
            let err = Builder::<FnJob>::new()
                .workers(2)
                .reserved_urgent_workers(2)
                .fail_spawn_at(3)
                .build()
                .unwrap_err();
            assert!(err.to_string().contains("triage-pool-u3"), "{err}");
            let weak = LAST_SHARED
                .with(|last| last.borrow_mut().take())
                .expect("built");
            assert!(weak.upgrade().is_none());
        });
    }
}
