//! How things fail: building a pool, submitting a job, stopping a pool.
//!
//! Every submit error hands the refused job back (`into_inner`), and its
//! `Debug` is written by hand so the job type need not implement `Debug`.

use std::error::Error;
use std::fmt;
use std::io;

use crate::job::Priority;

/// Writes the `Debug` form `Variant(..)` of a refusal without requiring
/// `J: Debug`.
fn debug_variant(f: &mut fmt::Formatter<'_>, variant: &str) -> fmt::Result {
    write!(f, "{variant}(..)")
}

/// Generates `into_inner`, the predicates, `Debug`, `Display` and `Error`
/// for a refusal enum whose every variant holds the job.
///
/// `$call` is a submit on a stopped `pool` that returns this error type (for
/// the examples); `$on_stopped` is what each predicate answers for it.
macro_rules! refusal {
    ($name:ident, $call:literal { $($variant:ident => $is:ident, $msg:literal, $on_stopped:literal;)+ }) => {
        impl<J> $name<J> {
            /// Gives back the job that was not accepted.
            ///
            /// # Examples
            ///
            /// ```
            /// use triage_pool::{FnJob, Pool};
            ///
            /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
            /// assert!(pool.stop()?.is_clean());
            #[doc = concat!("let job = pool.", $call, ".unwrap_err().into_inner();")]
            /// assert!(!job.is_spent()); // never run: yours to retry or record
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn into_inner(self) -> J {
                match self {
                    $($name::$variant(job) => job,)+
                }
            }

            $(
                #[doc = concat!("Whether this is [`", stringify!($name), "::", stringify!($variant), "`].")]
                ///
                /// # Examples
                ///
                /// ```
                /// use triage_pool::{FnJob, Pool};
                ///
                /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
                /// assert!(pool.stop()?.is_clean());
                #[doc = concat!("let err = pool.", $call, ".unwrap_err(); // refused: stopped")]
                #[doc = concat!("assert_eq!(err.", stringify!($is), "(), ", stringify!($on_stopped), ");")]
                /// # Ok::<(), Box<dyn std::error::Error>>(())
                /// ```
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$variant(_))
                }
            )+
        }

        impl<J> fmt::Debug for $name<J> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => debug_variant(f, stringify!($variant)),)+
                }
            }
        }

        impl<J> fmt::Display for $name<J> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str($msg),)+
                }
            }
        }

        impl<J> Error for $name<J> {}
    };
}

/// Why [`try_submit`](crate::Submitter::try_submit) refused a job. The job is
/// inside; get it back with [`into_inner`](Self::into_inner).
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use triage_pool::{FnJob, Pool, Priority, TrySubmitError};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).capacity(Priority::Normal, 1).build()?;
/// let (started_tx, started) = mpsc::channel();
/// let (release, hold) = mpsc::channel::<()>();
/// pool.submit(FnJob::new(move |_| {
///     started_tx.send(()).unwrap();
///     hold.recv().ok();
/// }))?;
/// started.recv()?; // the only worker is busy
/// pool.try_submit(FnJob::new(|_| ()))?; // takes the lane's one slot
/// match pool.try_submit(FnJob::new(|_| ())) {
///     Err(TrySubmitError::Full(job)) => assert!(!job.is_spent()), // handed back unrun
///     other => panic!("unexpected {other:?}"),
/// }
/// release.send(())?;
/// assert!(pool.stop()?.is_clean());
/// match pool.try_submit(FnJob::new(|_| ())) {
///     Err(TrySubmitError::Stopped(job)) => drop(job),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySubmitError<J> {
    /// The job's lane is at capacity. Displays as "the lane is full".
    Full(J),
    /// The pool is stopping or stopped and takes no more work. Displays as
    /// "the pool is stopped".
    Stopped(J),
}

refusal!(TrySubmitError, "try_submit(FnJob::new(|_| ()))" {
    Full => is_full, "the lane is full", false;
    Stopped => is_stopped, "the pool is stopped", true;
});

/// Why [`submit`](crate::Submitter::submit) refused a job. The job is inside;
/// get it back with [`into_inner`](Self::into_inner).
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use triage_pool::{FnJob, Pool, Priority, SubmitError};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).capacity(Priority::Normal, 1).build()?;
/// // A job submitting to its own pool is refused, not blocked, on a full lane.
/// let tx = pool.submitter();
/// let (refused_tx, refused) = mpsc::channel();
/// pool.submit(FnJob::new(move |_| {
///     tx.submit(FnJob::new(|_| ())).unwrap(); // takes the lane's one slot
///     let err = tx.submit(FnJob::new(|_| ())).unwrap_err();
///     refused_tx.send(err.is_full()).unwrap();
/// }))?;
/// assert!(refused.recv()?);
/// assert!(pool.stop()?.is_clean());
/// let err: SubmitError<FnJob> = pool.submit(FnJob::new(|_| ())).unwrap_err();
/// assert!(err.is_stopped());
/// assert_eq!(err.to_string(), "the pool is stopped");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SubmitError<J> {
    /// The pool is stopping or stopped and takes no more work, or it began
    /// to stop while the caller was waiting for room in a full lane.
    /// Displays as "the pool is stopped".
    Stopped(J),
    /// The lane is full and the caller is one of this pool's own worker
    /// threads. Blocking there could wait forever (every worker waiting for
    /// room that only a worker can make), so a job submitting to its own
    /// pool is refused instead of blocked. Never returned to other threads.
    /// Displays as "the lane is full and the caller is one of the pool's
    /// own workers".
    Full(J),
}

refusal!(SubmitError, "submit(FnJob::new(|_| ()))" {
    Stopped => is_stopped, "the pool is stopped", true;
    Full => is_full, "the lane is full and the caller is one of the pool's own workers", false;
});

/// Why [`submit_timeout`](crate::Submitter::submit_timeout) refused a job. The
/// job is inside; get it back with [`into_inner`](Self::into_inner).
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).capacity(Priority::Normal, 1).build()?;
/// let (started_tx, started) = mpsc::channel();
/// let (release, hold) = mpsc::channel::<()>();
/// pool.submit(FnJob::new(move |_| {
///     started_tx.send(()).unwrap();
///     hold.recv().ok();
/// }))?;
/// started.recv()?; // the only worker is busy
/// pool.submit(FnJob::new(|_| ()))?; // takes the lane's one slot
/// let err = pool.submit_timeout(FnJob::new(|_| ()), Duration::from_millis(10)).unwrap_err();
/// assert!(err.is_timeout()); // the job is inside: err.into_inner()
/// release.send(())?;
/// assert!(pool.stop()?.is_clean());
/// let err = pool.submit_timeout(FnJob::new(|_| ()), Duration::from_millis(1)).unwrap_err();
/// assert!(err.is_stopped());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SubmitTimeoutError<J> {
    /// The lane was still full at the deadline (or, for a zero timeout, at
    /// once; so too on the pool's own worker thread with a timeout too large
    /// for the clock, see [`Submitter::submit_timeout`](crate::Submitter::submit_timeout)).
    /// Displays as "the lane was still full at the deadline".
    Timeout(J),
    /// The pool is stopping or stopped and takes no more work. Displays as
    /// "the pool is stopped".
    Stopped(J),
}

refusal!(SubmitTimeoutError, "submit_timeout(FnJob::new(|_| ()), std::time::Duration::ZERO)" {
    Timeout => is_timeout, "the lane was still full at the deadline", false;
    Stopped => is_stopped, "the pool is stopped", true;
});

/// Why [`Builder::build`](crate::Builder::build) could not make a pool.
///
/// Invalid settings are reported before any thread starts. A thread that
/// fails to spawn is reported with the operating system's [`io::Error`] as
/// [`source`](Error::source); the workers already started are stopped and
/// joined before `build` returns, so no thread is left behind.
///
/// Its `Display` is one lower-case sentence for a log line, naming the
/// setting and the values given (the lane, the capacity, the worker
/// counts, the thread name); the cases are not a public enum, so match
/// on [`is_invalid_config`](Self::is_invalid_config) and
/// [`is_spawn_failure`](Self::is_spawn_failure), not on the text.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool};
///
/// let err = Pool::<FnJob>::builder().workers(0).build().unwrap_err();
/// assert!(err.is_invalid_config());
/// assert_eq!(err.to_string(), "a pool needs at least one worker");
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BuildError {
    /// What went wrong.
    kind: BuildErrorKind,
}

/// The private cases behind [`BuildError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildErrorKind {
    #[error("a pool needs at least one worker")]
    ZeroWorkers,
    #[error("{workers} general and {reserved} reserved worker threads requested; at most {max} are allowed in all")]
    TooManyWorkers {
        workers: usize,
        reserved: usize,
        max: usize,
    },
    #[error("the {lane} lane needs a capacity of at least 1")]
    ZeroCapacity { lane: Priority },
    #[error("the {lane} lane's capacity of {requested} slots is above the maximum of {max}")]
    CapacityTooLarge {
        lane: Priority,
        requested: usize,
        max: usize,
    },
    #[error("the {lane} lane's {requested} slots cannot be allocated: the allocator refused {bytes} bytes")]
    CapacityUnallocatable {
        lane: Priority,
        requested: usize,
        bytes: u128,
    },
    #[error("the lanes' capacities (urgent {}, normal {}, bulk {} slots) each fit in memory but not all three together", capacity[0], capacity[1], capacity[2])]
    LanesTooLarge { capacity: [usize; 3] },
    #[error("the {lane} lane's low-water mark {depth} must be below its capacity {capacity}")]
    LowWaterTooHigh {
        lane: Priority,
        depth: usize,
        capacity: usize,
    },
    #[error("the thread name prefix {prefix:?} contains a NUL byte")]
    NulInThreadName { prefix: String },
    #[error("failed to spawn worker thread {name:?}")]
    Spawn {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl BuildError {
    pub(crate) fn new(kind: BuildErrorKind) -> BuildError {
        BuildError { kind }
    }

    /// Whether a setting was invalid (0 workers, a zero or absurd capacity,
    /// a low-water mark not below its capacity, too many workers, a NUL
    /// byte in the thread name prefix). Nothing was started.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let err = Pool::<FnJob>::builder().capacity(Priority::Bulk, 0).build().unwrap_err();
    /// assert!(err.is_invalid_config());
    /// ```
    pub fn is_invalid_config(&self) -> bool {
        !self.is_spawn_failure()
    }

    /// Whether the operating system refused to start a worker thread; the
    /// [`io::Error`] is the [`source`](Error::source).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::error::Error;
    /// use triage_pool::{FnJob, Pool};
    ///
    /// // No OS gives a thread a 2^60-byte stack.
    /// let err = Pool::<FnJob>::builder().stack_size(1 << 60).build().unwrap_err();
    /// assert!(err.is_spawn_failure());
    /// assert!(err.source().unwrap().is::<std::io::Error>());
    /// ```
    pub fn is_spawn_failure(&self) -> bool {
        matches!(self.kind, BuildErrorKind::Spawn { .. })
    }
}

/// Why a stop method ([`stop`](crate::Pool::stop),
/// [`stop_now`](crate::Pool::stop_now),
/// [`stop_timeout`](crate::Pool::stop_timeout)),
/// [`wait_idle`](crate::Submitter::wait_idle) or
/// [`wait_idle_timeout`](crate::Submitter::wait_idle_timeout) did not run.
///
/// # Examples
///
/// ```
/// use std::sync::{mpsc, Arc};
/// use triage_pool::{FnJob, Pool, StopError};
///
/// let pool: Arc<Pool<FnJob>> = Arc::new(Pool::builder().workers(1).build()?);
/// let (tx, rx) = mpsc::channel();
/// let inner = Arc::clone(&pool);
/// pool.submit(FnJob::new(move |_| {
///     // A job cannot wait for its own worker to exit.
///     tx.send(inner.stop().unwrap_err()).unwrap();
/// }))?;
/// assert_eq!(rx.recv()?, StopError::OnWorkerThread);
/// assert!(pool.stop()?.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// Called from one of the pool's own worker threads (inside a job or a
    /// worker hook):
    /// stopping waits for every worker to exit, and `wait_idle` (or
    /// `wait_idle_timeout`) for every job to finish, which would wait for
    /// the calling job itself. This call changed nothing: the pool goes on
    /// running, or stopping, as before.
    #[error("a pool cannot be stopped or waited for from one of its own worker threads")]
    OnWorkerThread,
}
