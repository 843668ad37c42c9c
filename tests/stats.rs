//! Stats: the snapshot's ledger counters, lane depths, busy workers and
//! refusals match a scripted run exactly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{block_workers, guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Pool, Priority, Stats};

/// Capacity of each lane, indexed by `Priority::index`.
const CAPACITY: [usize; 3] = [8, 64, 4];

fn pool(workers: usize) -> Pool<Probe> {
    let mut builder = Pool::builder().workers(workers);
    for lane in Priority::ALL {
        builder = builder.capacity(lane, CAPACITY[lane.index()]);
    }
    builder.build().expect("build")
}

/// The ledger counters of a snapshot, in one comparable tuple:
/// (accepted, succeeded, failed, panicked, unrun, abandoned, refused).
fn counters(stats: &Stats) -> (u64, u64, u64, u64, u64, u64, u64) {
    (
        stats.accepted(),
        stats.succeeded(),
        stats.failed(),
        stats.panicked(),
        stats.unrun(),
        stats.abandoned(),
        stats.refused(),
    )
}

fn queued(stats: &Stats) -> [usize; 3] {
    Priority::ALL.map(|lane| stats.queued(lane))
}

#[test]
fn a_fresh_pool_reports_its_shape_and_zero_counters() {
    guarded(|| {
        let pool = pool(3);
        let stats = pool.stats();
        assert_eq!(stats.workers(), 3);
        assert_eq!(stats.reserved_urgent_workers(), 0);
        assert_eq!(stats.busy(), 0);
        assert_eq!(queued(&stats), [0, 0, 0]);
        assert_eq!(stats.queued_total(), 0);
        assert_eq!(Priority::ALL.map(|lane| stats.capacity(lane)), CAPACITY);
        assert_eq!(counters(&stats), (0, 0, 0, 0, 0, 0, 0));
        assert_eq!((stats.pending(), stats.finished()), (0, 0));
        assert!(pool.stop().expect("stop").is_clean());

        let reserved: Pool<Probe> = Pool::builder()
            .workers(2)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        let stats = reserved.stats();
        assert_eq!((stats.workers(), stats.reserved_urgent_workers()), (2, 1));
    });
}

#[cfg(panic = "unwind")]
#[test]
fn counters_match_a_scripted_run_exactly() {
    const WORKERS: usize = 2;
    // n succeed, m fail, p panic, then u handed back unrun.
    const N: usize = 10;
    const M: usize = 4;
    const P: usize = 3;
    const U: [usize; 3] = [2, 3, 4]; // per lane; fills the Bulk lane
    guarded(|| {
        let scripted = N + M + P;
        let unrun: usize = U.iter().sum();
        let ledger = Ledger::new(scripted + WORKERS + unrun + 8);
        let pool = pool(WORKERS);

        let mut id = 0;
        for k in 0..scripted {
            // Interleave the outcomes: fail and panic spread among successes.
            let action = match k % 5 {
                1 if k / 5 < M => Action::Fail,
                3 if k / 5 < P => Action::PanicString,
                _ => Action::Succeed,
            };
            pool.submit(Probe::new(id, &ledger).action(action))
                .expect("submit");
            id += 1;
        }
        // The blockers queue behind the scripted jobs in the same (FIFO)
        // lane; once each worker runs one, each finished everything before.
        let started = Arrivals::new();
        for _ in 0..WORKERS {
            pool.submit(
                Probe::new(id, &ledger)
                    .action(Action::WaitCancelled)
                    .started(&started),
            )
            .expect("submit blocker");
            id += 1;
        }
        started.wait_for(WORKERS);
        let (m, p) = (
            (0..scripted).filter(|k| k % 5 == 1 && k / 5 < M).count(),
            (0..scripted).filter(|k| k % 5 == 3 && k / 5 < P).count(),
        );
        assert_eq!((m, p), (M, P), "script");
        let accepted = (scripted + WORKERS) as u64;
        let stats = pool.stats();
        assert_eq!(
            counters(&stats),
            (accepted, N as u64, M as u64, P as u64, 0, 0, 0),
            "{stats:?}"
        );
        assert_eq!(stats.busy(), WORKERS);
        assert_eq!(stats.pending(), WORKERS as u64);
        assert_eq!(stats.finished(), scripted as u64);
        assert_eq!(queued(&stats), [0, 0, 0]);

        // Queue the jobs that will come back unrun; depths follow.
        for lane in Priority::ALL {
            for _ in 0..U[lane.index()] {
                pool.try_submit(Probe::new(id, &ledger).lane(lane))
                    .expect("room");
                id += 1;
            }
        }
        let accepted = accepted + unrun as u64;
        let stats = pool.stats();
        assert_eq!(queued(&stats), U);
        assert_eq!(stats.queued_total(), unrun);
        assert_eq!(stats.accepted(), accepted);
        assert_eq!(stats.pending(), (WORKERS + unrun) as u64);
        assert_eq!(stats.busy(), WORKERS);

        // Refusals: counted, never accepted.
        let bulk = || Probe::new(scripted + WORKERS + unrun, &ledger).lane(Priority::Bulk);
        assert!(pool.try_submit(bulk()).unwrap_err().is_full());
        assert!(pool
            .submit_timeout(bulk(), Duration::ZERO)
            .unwrap_err()
            .is_timeout());
        assert!(pool
            .submit_timeout(bulk(), Duration::from_millis(20))
            .unwrap_err()
            .is_timeout());
        let stats = pool.stats();
        assert_eq!(stats.refused(), 3);
        assert_eq!(stats.accepted(), accepted);

        let report = pool.stop_now().expect("stop_now");
        assert_eq!(report.succeeded, (N + WORKERS) as u64);
        assert_eq!(
            (
                report.failed.len(),
                report.panicked.len(),
                report.unrun.len()
            ),
            (M, P, unrun)
        );
        let stats = pool.stats();
        assert_eq!(
            counters(&stats),
            (
                accepted,
                (N + WORKERS) as u64,
                M as u64,
                P as u64,
                unrun as u64,
                0,
                3
            ),
            "{stats:?}"
        );
        assert_eq!(stats.finished(), accepted);
        assert_eq!(stats.pending(), 0);
        assert_eq!(stats.busy(), 0);
        assert_eq!(queued(&stats), [0, 0, 0]);

        // After the stop, a refusal still counts; nothing else moves.
        assert!(pool.submit(bulk()).unwrap_err().is_stopped());
        let after = pool.stats();
        assert_eq!(after.refused(), 4);
        assert_eq!(after.accepted(), accepted);
        assert_eq!(after.finished(), accepted);
        // Submitter snapshots see the same pool.
        assert_eq!(counters(&pool.submitter().stats()), counters(&after));
    });
}

#[test]
fn busy_counts_exactly_the_blocked_workers() {
    const WORKERS: usize = 3;
    guarded(|| {
        let ledger = Ledger::new(WORKERS);
        let latch = Latch::new();
        let pool = pool(WORKERS);
        assert_eq!(pool.stats().busy(), 0);
        let started = Arrivals::new();
        for id in 0..WORKERS {
            pool.submit(
                Probe::new(id, &ledger)
                    .action(Action::Wait(Arc::clone(&latch)))
                    .started(&started),
            )
            .expect("submit");
            started.wait_for(id + 1);
            let stats = pool.stats();
            assert_eq!(stats.busy(), id + 1, "{stats:?}");
            assert_eq!(stats.pending(), (id + 1) as u64);
            assert_eq!(stats.queued_total(), 0);
        }
        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, WORKERS as u64);
        let stats = pool.stats();
        assert_eq!(stats.busy(), 0);
        assert_eq!(stats.succeeded(), WORKERS as u64);
        assert_eq!(stats.pending(), 0);
        assert_eq!(stats.finished(), WORKERS as u64);
    });
}

#[test]
fn queued_tracks_each_lane_while_workers_are_blocked() {
    guarded(|| {
        let ledger = Ledger::new(1 + CAPACITY.iter().sum::<usize>());
        let latch = Latch::new();
        let pool = pool(1);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        let mut expected = [0; 3];
        let mut id = 1;
        // Fill the lanes one job at a time, round robin, to capacity.
        while expected != CAPACITY {
            for lane in Priority::ALL {
                if expected[lane.index()] < CAPACITY[lane.index()] {
                    pool.try_submit_to(lane, Probe::new(id, &ledger))
                        .expect("room");
                    id += 1;
                    expected[lane.index()] += 1;
                    assert_eq!(queued(&pool.stats()), expected);
                }
            }
        }
        assert_eq!(pool.stats().queued_total(), CAPACITY.iter().sum::<usize>());
        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, id as u64);
        assert_eq!(queued(&pool.stats()), [0, 0, 0]);
    });
}

#[test]
fn busy_drops_to_zero_once_an_abandoned_job_ends() {
    guarded(|| {
        let ledger = Ledger::new(1);
        let latch = Latch::new();
        let pool = pool(2);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        let report = pool
            .stop_timeout(Duration::from_millis(100))
            .expect("stop_timeout");
        assert_eq!(report.abandoned.len(), 1);
        // Still running: busy.
        assert_eq!(pool.stats().busy(), 1);
        latch.open();
        // Joins the straggler: its job has ended and its thread is gone.
        assert!(pool.stop().expect("stop").is_clean());
        assert_eq!(ledger.drops(0), 1, "the abandoned job ended");
        let stats = pool.stats();
        assert_eq!(stats.busy(), 0, "no thread is running a job: {stats:?}");
    });
}

/// Once a stop has returned, submits keep being refused without ever
/// showing in `accepted`: snapshots taken while two threads hammer a
/// stopped pool with submits all balance exactly. (Before the fix a
/// refused submit counted itself accepted for the instant between entering
/// the intake gate and backing out, and a snapshot could catch it there.)
#[test]
fn refused_submits_on_a_stopped_pool_never_show_as_accepted() {
    guarded(|| {
        let ledger = Ledger::new(1);
        let pool = pool(2);
        pool.submit(Probe::new(0, &ledger)).expect("submit");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 1);
        let submitter = pool.submitter();
        let stop_hammering = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammers: Vec<_> = (0..2)
            .map(|_| {
                let submitter = submitter.clone();
                let ledger = Arc::clone(&ledger);
                let stop_hammering = Arc::clone(&stop_hammering);
                std::thread::spawn(move || {
                    let mut refused = 0u64;
                    while !stop_hammering.load(std::sync::atomic::Ordering::Relaxed) {
                        let error = submitter
                            .try_submit(Probe::new(0, &ledger))
                            .expect_err("a stopped pool refuses");
                        assert!(error.is_stopped());
                        refused += 1;
                    }
                    refused
                })
            })
            .collect();
        // Read until both hammers are seen refusing, and a good while after.
        let mut snapshots = 0u64;
        while snapshots < 200_000 || pool.stats().refused() < 1_000 {
            let stats = pool.stats();
            assert_eq!(stats.accepted(), 1, "{stats:?}");
            assert_eq!(stats.pending(), 0, "{stats:?}");
            snapshots += 1;
        }
        stop_hammering.store(true, std::sync::atomic::Ordering::Relaxed);
        let refused: u64 = hammers.into_iter().map(|h| h.join().expect("hammer")).sum();
        let stats = pool.stats();
        assert_eq!(stats.refused(), refused);
        assert_eq!(counters(&stats), (1, 1, 0, 0, 0, 0, refused));
    });
}

/// The one-line `Display` of a snapshot shows what the getters say: busy
/// workers, each lane's depth against its capacity with the age of its
/// oldest job only where jobs wait, and the ledger with its pending jobs.
#[test]
fn display_reads_like_the_getters() {
    guarded(|| {
        let ledger = Ledger::new(4);
        let latch = Latch::new();
        let pool = pool(1);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        pool.try_submit_to(Priority::Normal, Probe::new(1, &ledger))
            .expect("room");
        pool.try_submit_to(Priority::Normal, Probe::new(2, &ledger))
            .expect("room");
        pool.try_submit_to(Priority::Bulk, Probe::new(3, &ledger))
            .expect("room");
        let line = pool.stats().to_string();
        assert!(
            line.starts_with(
                "workers: 1 general + 0 urgent, 1 busy; queued: urgent 0/8, normal 2/64 (oldest "
            ),
            "{line}"
        );
        // Only the lanes holding jobs have an oldest wait.
        assert_eq!(line.matches("(oldest ").count(), 2, "{line}");
        assert!(line.contains(", bulk 1/4 (oldest "), "{line}");
        assert!(
            line.ends_with(
                "; accepted 4: 0 succeeded, 0 failed, 0 panicked, 0 unrun, 0 abandoned, 4 pending; refused 0"
            ),
            "{line}"
        );
        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(
            report.to_string(),
            "4 jobs: 4 succeeded, 0 failed, 0 panicked, 0 unrun, 0 abandoned"
        );
        assert!(
            pool.stats().to_string().contains(
                "accepted 4: 4 succeeded, 0 failed, 0 panicked, 0 unrun, 0 abandoned, 0 pending"
            ),
            "{}",
            pool.stats()
        );
    });
}
