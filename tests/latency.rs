//! `Submitter::queue_wait_histogram`: the pool's per-lane record of queue
//! waits agrees with the waits the jobs themselves saw in their `Context`
//! (count and maximum exactly, quantiles within the documented 12.5 %),
//! leaves out jobs that never started, and stays empty without timing.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{guarded, Arrivals, Latch};
use triage_pool::{Context, FnJob, LatencyHistogram, Pool, Priority};

/// A job that reports its lane and queue wait on `tx`.
fn reporting(tx: &mpsc::Sender<(Priority, Duration)>) -> FnJob {
    let tx = tx.clone();
    FnJob::new(move |ctx: &Context| {
        tx.send((ctx.lane(), ctx.queue_wait())).expect("test alive");
    })
}

/// A job that reports like `reporting`, then holds its worker until
/// `latch` opens.
fn blocking(
    tx: &mpsc::Sender<(Priority, Duration)>,
    started: &Arc<Arrivals>,
    latch: &Arc<Latch>,
) -> FnJob {
    let (tx, started, latch) = (tx.clone(), Arc::clone(started), Arc::clone(latch));
    FnJob::new(move |ctx: &Context| {
        tx.send((ctx.lane(), ctx.queue_wait())).expect("test alive");
        started.arrive();
        latch.wait();
    })
}

/// The exact quantile `q` of `waits` by the histogram's rank rule.
fn exact_quantile(waits: &mut [Duration], q: f64) -> Duration {
    waits.sort_unstable();
    let rank = ((q * waits.len() as f64).ceil() as usize).clamp(1, waits.len());
    waits[rank - 1]
}

fn assert_agrees(lane: Priority, histogram: &LatencyHistogram, mut seen: Vec<Duration>) {
    assert_eq!(
        histogram.count(),
        seen.len() as u64,
        "{lane}: {histogram:?}"
    );
    assert_eq!(histogram.max(), seen.iter().max().copied(), "{lane}");
    let sum: Duration = seen.iter().sum();
    let mean = histogram.mean().expect("not empty");
    // The sum is kept in whole nanoseconds, like the waits themselves.
    assert_eq!(mean, sum / seen.len() as u32, "{lane}");
    for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
        let exact = exact_quantile(&mut seen, q);
        let reported = histogram.quantile(q).expect("not empty");
        assert!(
            reported >= exact && reported * 8 <= exact * 9,
            "{lane} q {q}: reported {reported:?}, exact {exact:?}"
        );
    }
}

#[test]
fn the_histogram_agrees_with_the_waits_jobs_saw() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        let (tx, rx) = mpsc::channel();
        let (latch, started) = (Latch::new(), Arrivals::new());
        pool.submit(blocking(&tx, &started, &latch))
            .expect("submit");
        started.wait_for(1);
        // Queued behind the blocked worker, so their waits spread out.
        for i in 0..300 {
            let lane = if i % 3 == 0 {
                Priority::Urgent
            } else {
                Priority::Normal
            };
            pool.submit_to(lane, reporting(&tx)).expect("submit");
            if i % 50 == 0 {
                std::thread::yield_now();
            }
        }
        latch.open();
        pool.wait_idle().expect("not on a worker");
        drop(tx);
        let mut seen = [Vec::new(), Vec::new(), Vec::new()];
        for (lane, wait) in rx.iter() {
            seen[lane.index()].push(wait);
        }
        assert_eq!((seen[0].len(), seen[1].len()), (100, 201));
        for lane in [Priority::Urgent, Priority::Normal] {
            let histogram = pool.queue_wait_histogram(lane);
            assert_agrees(lane, &histogram, std::mem::take(&mut seen[lane.index()]));
        }
        assert!(pool.queue_wait_histogram(Priority::Bulk).is_empty());
        // Still there after a stop, unchanged.
        let before = pool.queue_wait_histogram(Priority::Normal);
        assert!(pool.stop().expect("stop").is_clean());
        assert_eq!(pool.queue_wait_histogram(Priority::Normal), before);
    });
}

#[test]
fn jobs_handed_back_unrun_are_not_counted() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        let (tx, rx) = mpsc::channel();
        let started = Arrivals::new();
        let (blocker_tx, blocker_started) = (tx.clone(), Arc::clone(&started));
        // Holds the worker until `stop_now` raises the cancel flag, which it
        // does after it stopped workers from taking queued jobs.
        pool.submit_to(
            Priority::Bulk,
            FnJob::new(move |ctx: &Context| {
                blocker_tx
                    .send((ctx.lane(), ctx.queue_wait()))
                    .expect("test alive");
                blocker_started.arrive();
                assert!(ctx.wait_cancelled(common::LIMIT), "never cancelled");
            }),
        )
        .expect("submit");
        started.wait_for(1);
        for _ in 0..5 {
            pool.submit_to(Priority::Bulk, reporting(&tx))
                .expect("submit");
        }
        let report = pool.stop_now().expect("stop_now");
        assert_eq!((report.succeeded, report.unrun.len()), (1, 5));
        let histogram = pool.queue_wait_histogram(Priority::Bulk);
        assert_eq!(histogram.count(), 1, "{histogram:?}");
        // The unrun jobs hold senders too.
        drop((tx, report));
        let (lane, wait) = rx.recv().expect("the blocker reported");
        assert_eq!((lane, histogram.max()), (Priority::Bulk, Some(wait)));
        assert!(rx.recv().is_err(), "an unrun job ran");
    });
}

#[test]
fn a_pool_without_timing_records_nothing() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(2)
            .timing(false)
            .build()
            .expect("pool");
        for lane in Priority::ALL {
            for _ in 0..10 {
                pool.submit_to(lane, FnJob::new(|_| ())).expect("submit");
            }
        }
        assert_eq!(pool.stop().expect("stop").succeeded, 30);
        for lane in Priority::ALL {
            let histogram = pool.queue_wait_histogram(lane);
            assert!(histogram.is_empty(), "{lane}: {histogram:?}");
            assert_eq!(histogram.quantile(0.5), None);
        }
    });
}

/// Before any job starts every reading is `None`, not a zero (and reading
/// the mean divides by nothing); after one job none is.
#[test]
fn an_empty_histogram_reads_none_and_one_job_makes_it_non_empty() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        let empty = pool.queue_wait_histogram(Priority::Normal);
        assert!(empty.is_empty());
        assert_eq!(empty.count(), 0);
        assert_eq!(
            (empty.quantile(0.5), empty.max(), empty.mean()),
            (None, None, None)
        );
        pool.submit(FnJob::new(|_| ())).expect("submit");
        pool.wait_idle().expect("not on a worker");
        let one = pool.queue_wait_histogram(Priority::Normal);
        assert!(!one.is_empty(), "{one:?}");
        assert_eq!(one.count(), 1);
        assert!(one.max().is_some() && one.mean().is_some(), "{one:?}");
        assert!(pool.stop().expect("stop").is_clean());
    });
}
