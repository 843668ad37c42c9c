//! Shared helpers for the integration tests: a watchdog that turns a hang
//! into a failure, latches and arrival counters instead of sleeps, and a
//! probe job that records every run and drop per job id.
#![allow(dead_code, unreachable_pub)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use triage_pool::{Context, Job, Pool, Priority, Submitter};

/// Default bound for a test body: generous for a loaded 2-core machine, but
/// a deadlock fails instead of hanging CI.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it does not finish
/// within `limit`. Panics inside `f` propagate as the test's failure.
#[track_caller]
pub fn watchdog<T, F>(limit: Duration, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("watched-test".into())
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .expect("spawn watched test thread");
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => {
            handle.join().expect("watched thread");
            value
        }
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("watchdog: test body did not finish within {limit:?} (deadlock?)"),
    }
}

/// `watchdog` with the default limit.
#[track_caller]
pub fn guarded<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    watchdog(LIMIT, f)
}

/// A gate jobs wait at until the test opens it. Waits are bounded by
/// `LIMIT` so a forgotten `open` fails the job rather than hanging.
#[derive(Debug, Default)]
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn new() -> Arc<Latch> {
        Arc::new(Latch::default())
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    pub fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }

    /// Waits until opened; panics after `LIMIT`.
    pub fn wait(&self) {
        assert!(self.wait_timeout(LIMIT), "latch never opened");
    }

    /// Waits until opened or `timeout`; returns whether it is open.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut open = self.open.lock().unwrap();
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self.cv.wait_timeout(open, deadline - now).unwrap().0;
        }
        true
    }
}

/// Counts arrivals (e.g. "a job started") and lets the test wait for `n`.
#[derive(Debug, Default)]
pub struct Arrivals {
    count: Mutex<usize>,
    cv: Condvar,
}

impl Arrivals {
    pub fn new() -> Arc<Arrivals> {
        Arc::new(Arrivals::default())
    }

    pub fn arrive(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    pub fn count(&self) -> usize {
        *self.count.lock().unwrap()
    }

    /// Waits until at least `n` arrived; panics after `LIMIT`.
    pub fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        let mut count = self.count.lock().unwrap();
        while *count < n {
            let now = Instant::now();
            assert!(now < deadline, "only {} of {n} arrivals", *count);
            count = self.cv.wait_timeout(count, deadline - now).unwrap().0;
        }
    }
}

/// Per job id: how often it ran and how often it was dropped, plus the
/// order in which jobs started.
#[derive(Debug)]
pub struct Ledger {
    runs: Vec<AtomicUsize>,
    drops: Vec<AtomicUsize>,
    starts: Mutex<Vec<usize>>,
}

impl Ledger {
    pub fn new(ids: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            runs: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
            drops: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
            starts: Mutex::new(Vec::new()),
        })
    }

    /// Records that job `id` started running.
    pub fn record_run(&self, id: usize) {
        self.runs[id].fetch_add(1, Ordering::SeqCst);
        self.starts.lock().unwrap().push(id);
    }

    pub fn runs(&self, id: usize) -> usize {
        self.runs[id].load(Ordering::SeqCst)
    }

    pub fn drops(&self, id: usize) -> usize {
        self.drops[id].load(Ordering::SeqCst)
    }

    pub fn total_runs(&self) -> usize {
        self.runs.iter().map(|r| r.load(Ordering::SeqCst)).sum()
    }

    /// Job ids in the order they started running.
    pub fn starts(&self) -> Vec<usize> {
        self.starts.lock().unwrap().clone()
    }
}

/// What a [`Probe`] does when run.
#[derive(Debug, Clone)]
pub enum Action {
    Succeed,
    /// Returns `Err(id)`.
    Fail,
    /// `panic!("probe {id}")` (a `String` payload).
    PanicString,
    /// `panic!("static probe panic")` (a `&str` payload).
    PanicStr,
    /// `panic_any(42_u32)`.
    PanicAny,
    /// Panics with a payload whose own `Drop` panics.
    PanicBadPayload,
    /// Waits at the latch, then succeeds.
    Wait(Arc<Latch>),
    /// Waits until the pool raises its cancel flag, then succeeds.
    WaitCancelled,
}

/// A test job: records its run and drop in a [`Ledger`], reports its start
/// to an optional [`Arrivals`], then does its [`Action`].
#[derive(Debug)]
pub struct Probe {
    pub id: usize,
    pub lane: Priority,
    pub action: Action,
    pub ledger: Arc<Ledger>,
    pub started: Option<Arc<Arrivals>>,
}

impl Probe {
    pub fn new(id: usize, ledger: &Arc<Ledger>) -> Probe {
        Probe {
            id,
            lane: Priority::Normal,
            action: Action::Succeed,
            ledger: Arc::clone(ledger),
            started: None,
        }
    }

    pub fn lane(mut self, lane: Priority) -> Probe {
        self.lane = lane;
        self
    }

    pub fn action(mut self, action: Action) -> Probe {
        self.action = action;
        self
    }

    pub fn started(mut self, arrivals: &Arc<Arrivals>) -> Probe {
        self.started = Some(Arc::clone(arrivals));
        self
    }
}

/// A panic payload whose `Drop` panics.
pub struct BadPayload;

impl Drop for BadPayload {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("panic payload dropped");
        }
    }
}

impl Job for Probe {
    type Error = usize;

    fn run(&mut self, ctx: &Context) -> Result<(), usize> {
        self.ledger.record_run(self.id);
        if let Some(started) = &self.started {
            started.arrive();
        }
        match &self.action {
            Action::Succeed => Ok(()),
            Action::Fail => Err(self.id),
            Action::PanicString => panic!("probe {}", self.id),
            Action::PanicStr => panic!("static probe panic"),
            Action::PanicAny => std::panic::panic_any(42_u32),
            Action::PanicBadPayload => std::panic::panic_any(BadPayload),
            Action::Wait(latch) => {
                latch.wait();
                Ok(())
            }
            Action::WaitCancelled => {
                assert!(ctx.wait_cancelled(LIMIT), "never cancelled");
                Ok(())
            }
        }
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.ledger.drops[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

/// The value in bytes of a `Key:   N kB` line (`key` includes the colon)
/// of a /proc file such as /proc/meminfo or /proc/self/status; `None` if
/// the file cannot be read or has no such line.
pub fn proc_bytes(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Number of threads in this process (Linux: entries of /proc/self/task).
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Occupies `ids.len()` workers of `pool` with probes doing `action` (such
/// as `Action::Wait(latch)`); returns once all of them run.
pub fn block_workers(
    pool: &Pool<Probe>,
    ledger: &Arc<Ledger>,
    ids: std::ops::Range<usize>,
    action: &Action,
) {
    let started = Arrivals::new();
    let n = ids.len();
    for id in ids {
        pool.submit(
            Probe::new(id, ledger)
                .action(action.clone())
                .started(&started),
        )
        .expect("submit a blocking job");
    }
    started.wait_for(n);
}

/// Keeps panics on threads whose name starts with `prefix` (a pool's
/// workers, for jobs that panic on purpose) out of the test output; every
/// other panic still reaches the default hook. Installed once per binary.
pub fn quiet_panics_on(prefix: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = thread::current()
                .name()
                .is_some_and(|name| name.starts_with(prefix));
            if !quiet {
                default(info);
            }
        }));
    });
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
/// For states the pool exposes but signals no event for (stats counters,
/// thread states): it yields between the first polls, then sleeps 1 ms
/// between polls so it does not starve the threads it is waiting for.
pub fn wait_until(mut cond: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut polls = 0_u32;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        polls += 1;
        if polls < 100 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The calling thread's kernel thread id (Linux: from /proc/thread-self);
/// `None` where that cannot be read.
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The scheduler state of thread `tid` of this process, as the letter in
/// /proc/self/task/<tid>/stat: `'S'` asleep in the kernel (a futex, so a
/// condvar, a parked mutex, a channel), `'R'` running or runnable, ...;
/// `None` if the thread has exited (or /proc cannot be read).
pub fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // "tid (name) S ...": the name may contain anything, so look after the
    // last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Spawns `f` on a new thread that first reports its kernel thread id
/// ([`current_tid`]), so the test can watch its state with
/// [`thread_state`]; returns once the thread has started.
pub fn spawn_with_tid<T, F>(f: F) -> (thread::JoinHandle<T>, Option<u32>)
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tid_tx, tid_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tid_tx
            .send(current_tid())
            .expect("spawner waits for the id");
        f()
    });
    let tid = tid_rx
        .recv_timeout(LIMIT)
        .expect("spawned thread did not start");
    (handle, tid)
}

/// Submits `job` on a new producer thread with `how` (one of the submit
/// variants); returns the receiver of `how`'s result, the thread, and its
/// kernel thread id (for [`wait_blocked_in_submit`]).
#[allow(dead_code)] // not every test binary uses it
pub fn submit_in_thread<R, F>(
    tx: Submitter<Probe>,
    job: Probe,
    how: F,
) -> (mpsc::Receiver<R>, thread::JoinHandle<()>, Option<u32>)
where
    R: Send + 'static,
    F: FnOnce(&Submitter<Probe>, Probe) -> R + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel();
    let (handle, tid) = spawn_with_tid(move || {
        let _ = done_tx.send(how(&tx, job));
    });
    (done_rx, handle, tid)
}

/// Waits until the producer threads `producers` (ids from
/// [`spawn_with_tid`]) are blocked inside a submit to a full lane of
/// `pool`, which by then has counted `accepted` jobs in all.
///
/// A submit counts its job as accepted when it enters the intake gate,
/// before it waits for room (see `Stats::accepted`), and inside the gate a
/// producer sleeps only waiting for room or for intake to close. So once
/// `accepted` is reached and every producer is asleep, each of them is
/// parked in that wait, not merely on its way in: whatever the test does
/// next has to wake it. Where thread states cannot be read (`None` ids, not
/// Linux) this settles for the count.
///
/// Panics at once if a producer exits (its submit returned instead of
/// blocking) or more jobs are accepted than expected, and after `LIMIT` if
/// the producers never get there.
#[track_caller]
pub fn wait_blocked_in_submit<J: Job>(
    pool: &triage_pool::Submitter<J>,
    accepted: u64,
    producers: &[Option<u32>],
) {
    let blocked = wait_until(
        || {
            for &tid in producers.iter().flatten() {
                assert!(
                    !matches!(thread_state(tid), None | Some('Z' | 'X')),
                    "producer thread {tid} exited: its submit returned instead of blocking"
                );
            }
            let now = pool.stats().accepted();
            assert!(
                now <= accepted,
                "{now} jobs accepted, expected {accepted} with the producers blocked"
            );
            // States read after the count: each producer was inside the
            // gate before it was seen asleep.
            now == accepted
                && producers
                    .iter()
                    .flatten()
                    .all(|&tid| thread_state(tid) == Some('S'))
        },
        LIMIT,
    );
    assert!(
        blocked,
        "producers not blocked in submit after {LIMIT:?}: {} of {accepted} jobs accepted, \
         thread states {:?}",
        pool.stats().accepted(),
        producers
            .iter()
            .map(|tid| tid.map(thread_state))
            .collect::<Vec<_>>()
    );
}

/// A `tracing` subscriber that panics in every event at `level`, or in
/// every event at all with `None` (a user bug, but a real one: the pool
/// must lose nothing to it). Install it with
/// `tracing::subscriber::set_global_default`, one test per file.
pub struct PanickingSubscriber(pub Option<tracing::Level>);

impl tracing::Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let level = *event.metadata().level();
        if self.0.map_or(true, |only| only == level) {
            panic!("the subscriber panicked on {:?}", event.metadata().name());
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Everything logged at `warn` or above in this test binary once
/// [`capture_warn_logs`] has run.
static WARN_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The writer of [`capture_warn_logs`]' subscriber.
struct WarnLog;

impl std::io::Write for WarnLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        WARN_LOG
            .lock()
            .expect("log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per test binary, a global `tracing` subscriber that keeps
/// every event at `warn` or above for [`warn_log_lines`] (global because
/// the events come from worker threads), and keeps the panics of threads
/// named `thread_prefix`... out of the output.
pub fn capture_warn_logs(thread_prefix: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| WarnLog)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
    });
    quiet_panics_on(thread_prefix);
}

/// The lines captured by [`capture_warn_logs`] that contain `needle`.
pub fn warn_log_lines(needle: &str) -> Vec<String> {
    let log = String::from_utf8(WARN_LOG.lock().expect("log buffer").clone()).expect("utf-8 log");
    log.lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}
