//! A job a `stop_timeout` deadline abandoned still ends on its worker
//! thread: the worker logs its outcome (`warn`, a panic at `error`) and
//! drops the job and its error with their panics contained, so it goes on
//! to run its stop hook and exit like any other worker.

// The jobs' drops panic on purpose: contained only where panics unwind.
#![cfg(panic = "unwind")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{capture_warn_logs, guarded, warn_log_lines, Arrivals, Latch};
use triage_pool::{Context, Job, Pool};

const THREAD_NAME: &str = "late-outcome";

/// A `Drop` that counts itself, then panics (unless already unwinding).
struct LoudDrop(Arc<AtomicUsize>);

impl Drop for LoudDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        if !thread::panicking() {
            panic!("loud drop");
        }
    }
}

/// What a [`Stuck`] job does once released.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Returns an error whose `Drop` panics.
    Fail,
    /// Panics with `"late probe panic"`.
    Panic,
}

/// Holds its worker until `latch` opens, then does `then`; the job's own
/// `Drop` panics too.
struct Stuck {
    then: Then,
    started: Arc<Arrivals>,
    latch: Arc<Latch>,
    error_drops: Arc<AtomicUsize>,
    _loud: LoudDrop,
}

impl Job for Stuck {
    type Error = LoudDrop;

    fn run(&mut self, _: &Context) -> Result<(), LoudDrop> {
        self.started.arrive();
        self.latch.wait();
        match self.then {
            Then::Fail => Err(LoudDrop(Arc::clone(&self.error_drops))),
            Then::Panic => panic!("late probe panic"),
        }
    }
}

/// Runs a `Stuck` job doing `then` on a one-worker pool, abandons it with
/// a zero `stop_timeout`, releases it, and joins its worker with `stop`.
/// Checks that the worker survived the job's (and its error's) panicking
/// drops to run its stop hook, that each was dropped once, and that the
/// ledger holds the job as abandoned only. Returns the error's drops.
fn abandon_then(then: Then) -> usize {
    capture_warn_logs(THREAD_NAME);
    let (job_drops, error_drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let on_stop = Arc::clone(&stopped);
    let pool: Pool<Stuck> = Pool::builder()
        .workers(1)
        .thread_name(THREAD_NAME)
        .on_worker_stop(move |worker| on_stop.lock().expect("hook log").push(worker))
        .build()
        .expect("pool");
    let (started, latch) = (Arrivals::new(), Latch::new());
    pool.submit(Stuck {
        then,
        started: Arc::clone(&started),
        latch: Arc::clone(&latch),
        error_drops: Arc::clone(&error_drops),
        _loud: LoudDrop(Arc::clone(&job_drops)),
    })
    .expect("submit");
    started.wait_for(1);
    let report = pool.stop_timeout(Duration::ZERO).expect("stop_timeout");
    assert_eq!(report.abandoned.len(), 1, "{then:?}: {report:?}");
    assert_eq!(
        job_drops.load(Ordering::SeqCst),
        0,
        "{then:?}: still running"
    );
    latch.open();
    assert!(
        pool.stop().expect("stop joins the straggler").is_clean(),
        "{then:?}"
    );
    assert_eq!(
        *stopped.lock().expect("hook log"),
        [0],
        "{then:?}: the worker survived its abandoned job's end and ran its stop hook"
    );
    assert_eq!(job_drops.load(Ordering::SeqCst), 1, "{then:?}: job drops");
    let stats = pool.stats();
    assert_eq!(
        (
            stats.accepted(),
            stats.abandoned(),
            stats.failed(),
            stats.panicked()
        ),
        (1, 1, 0, 0),
        "{then:?}: {stats:?}"
    );
    error_drops.load(Ordering::SeqCst)
}

#[test]
fn an_abandoned_job_that_fails_late_is_logged_and_dropped_contained() {
    guarded(|| {
        assert_eq!(abandon_then(Then::Fail), 1, "the error is dropped once");
        let lines = warn_log_lines("abandoned job finished after its stop deadline");
        assert!(
            lines
                .iter()
                .any(|line| line.contains("WARN") && line.contains("outcome=\"failed\"")),
            "{lines:?}"
        );
    });
}

#[test]
fn an_abandoned_job_that_panics_late_is_logged_and_dropped_contained() {
    guarded(|| {
        assert_eq!(abandon_then(Then::Panic), 0, "no error to drop");
        let lines = warn_log_lines("abandoned job panicked after its stop deadline");
        assert!(
            lines
                .iter()
                .any(|line| line.contains("ERROR") && line.contains("late probe panic")),
            "{lines:?}"
        );
    });
}
