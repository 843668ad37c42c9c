//! `Builder::timing(false)`: no clock reads per job — `queue_wait` is zero,
//! `oldest_wait` is `None`, and an abandoned job's `running_since` is when
//! the stop gave up on it; with timing on (the default) all three are real.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{guarded, Arrivals, Latch};
use triage_pool::{Context, FnJob, Pool, Priority};

/// Runs one job that waited behind a blocked worker for at least `BLOCKED`
/// and returns its queue wait, the lane's oldest wait while it was queued,
/// and the `running_since` of a job abandoned by `stop_timeout`.
fn observe(timing: bool) -> (Duration, Option<Duration>, Instant, Instant) {
    const BLOCKED: Duration = Duration::from_millis(30);
    let latch = Latch::new();
    let started = Arrivals::new();
    let pool: Pool<FnJob> = Pool::builder()
        .workers(1)
        .timing(timing)
        .build()
        .expect("pool");
    let (blocker_latch, blocker_started) = (Arc::clone(&latch), Arc::clone(&started));
    pool.submit(FnJob::new(move |_| {
        blocker_started.arrive();
        blocker_latch.wait();
    }))
    .expect("submit");
    started.wait_for(1);
    let (tx, rx) = std::sync::mpsc::channel();
    pool.submit(FnJob::new(move |ctx: &Context| {
        tx.send(ctx.queue_wait()).expect("test alive")
    }))
    .expect("submit");
    // Letting time pass is what this test measures.
    std::thread::sleep(BLOCKED);
    let oldest = pool.stats().oldest_wait(Priority::Normal);
    latch.open();
    let queue_wait = rx.recv().expect("job ran");

    // A stuck job, abandoned at a 10 ms deadline.
    let stuck = Latch::new();
    let stuck_started = Arrivals::new();
    let (stuck_job, stuck_arrived) = (Arc::clone(&stuck), Arc::clone(&stuck_started));
    pool.submit(FnJob::new(move |_| {
        stuck_arrived.arrive();
        stuck_job.wait();
    }))
    .expect("submit");
    stuck_started.wait_for(1);
    let before_stop = Instant::now();
    let report = pool.stop_timeout(Duration::from_millis(10)).expect("stop");
    stuck.open();
    assert!(pool.stop().expect("join the straggler").is_clean());
    assert_eq!(report.abandoned.len(), 1);
    (
        queue_wait,
        oldest,
        report.abandoned[0].running_since,
        before_stop,
    )
}

/// The pool's clock (the time-stamp counter, calibrated against `Instant`)
/// and `Instant` may disagree by a few microseconds over these intervals;
/// a millisecond of slack still tells a real wait from none, and a start
/// before the stop from the stop's give-up 10 ms later.
const CLOCK_SLACK: Duration = Duration::from_millis(1);

#[test]
fn timing_on_measures_waits() {
    guarded(|| {
        let (queue_wait, oldest, running_since, before_stop) = observe(true);
        let at_least = Duration::from_millis(30) - CLOCK_SLACK;
        assert!(queue_wait >= at_least, "{queue_wait:?}");
        let oldest = oldest.expect("a queued lane has an oldest wait");
        assert!(oldest >= at_least, "{oldest:?}");
        assert!(
            running_since <= before_stop + CLOCK_SLACK,
            "the job started before the stop"
        );
    });
}

/// With timing off the pool reports no waits: `queue_wait` is zero,
/// `oldest_wait` is `None`, and `running_since` is when the stop gave up.
/// (What this checks is those outputs, not that no clock is read.)
#[test]
fn timing_off_reports_no_waits() {
    guarded(|| {
        let (queue_wait, oldest, running_since, before_stop) = observe(false);
        assert_eq!(queue_wait, Duration::ZERO);
        assert_eq!(oldest, None);
        assert!(
            running_since >= before_stop,
            "reported when the stop gave up"
        );
    });
}
