//! Triage: per-lane admission, reserved urgent workers, the starvation bound,
//! strict priority, and the lane / queue-wait information in `Context` and
//! `Stats`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{block_workers, guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Builder, Context, FnJob, Pool, Priority, Stats, Submitter};

use Priority::{Bulk, Normal, Urgent};

/// How long a test waits for a job it expects to start. Far shorter than the
/// watchdog, so a job that never starts fails with a precise message.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Slack between an interval measured with `Instant` and the same interval
/// on the pool's clock (the CPU's time-stamp counter, calibrated against the
/// OS clock to about 2e-5 on the test host): 1 µs of rounding plus 0.1% of
/// the interval.
fn clock_slack(interval: Duration) -> Duration {
    Duration::from_micros(1) + interval / 1000
}

// ---------------------------------------------------------------------------
// Helpers

/// Opens its latches when dropped: a failing assertion then does not leave
/// workers stuck (and the pool's drop waiting for them) until the watchdog.
/// Declare it after the pool, so it drops first.
struct OpenOnDrop(Vec<Arc<Latch>>);

impl OpenOnDrop {
    fn new(latches: &[&Arc<Latch>]) -> OpenOnDrop {
        OpenOnDrop(latches.iter().map(|&latch| Arc::clone(latch)).collect())
    }
}

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|latch| latch.open());
    }
}

/// A closure job that reports its start, then waits at `latch`.
/// Submits Urgent probe `id` that waits for `latch`, and returns once it
/// has started (a worker is then held by it).
fn hold_with_urgent(pool: &Pool<Probe>, ledger: &Arc<Ledger>, id: usize, latch: &Arc<Latch>) {
    let started = Arrivals::new();
    pool.submit(
        Probe::new(id, ledger)
            .lane(Urgent)
            .action(Action::Wait(Arc::clone(latch)))
            .started(&started),
    )
    .expect("submit");
    started.wait_for(1);
}

fn blocker(started: &Arc<Arrivals>, latch: &Arc<Latch>) -> FnJob {
    let (started, latch) = (Arc::clone(started), Arc::clone(latch));
    FnJob::new(move |_| {
        started.arrive();
        latch.wait();
    })
}

/// Holds `n` of `pool`'s general workers in blocker jobs and returns once
/// all have started: the latch that releases them, and a guard that opens
/// it if the test fails first.
fn hold_workers(pool: &Pool<FnJob>, n: usize) -> (Arc<Latch>, OpenOnDrop) {
    let latch = Latch::new();
    let release = OpenOnDrop::new(&[&latch]);
    let started = Arrivals::new();
    for _ in 0..n {
        pool.submit(blocker(&started, &latch)).expect("submit");
    }
    started.wait_for(n);
    (latch, release)
}

/// Runs a backlog on a single general worker: the worker is held by a
/// blocker while `counts[lane]` probes are queued in each lane, then
/// released. Returns the lanes of the queued probes in dequeue order (the
/// blocker left out). With one worker and no producer running, the order is
/// deterministic.
fn backlog_order(builder: Builder<Probe>, counts: [usize; 3]) -> Vec<Priority> {
    let queued: usize = counts.iter().sum();
    let ledger = Ledger::new(1 + queued);
    let latch = Latch::new();
    let pool = builder
        .workers(1)
        .capacity(Urgent, counts[0].max(1))
        .capacity(Normal, counts[1].max(1))
        .capacity(Bulk, counts[2].max(1))
        .build()
        .expect("build");
    let _release = OpenOnDrop::new(&[&latch]);
    // The blocker is taken while every other lane is empty, so the worker's
    // aging counters start from zero.
    block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
    let mut lane_of = vec![Normal];
    for lane in Priority::ALL {
        for _ in 0..counts[lane.index()] {
            let id = lane_of.len();
            lane_of.push(lane);
            pool.try_submit(Probe::new(id, &ledger).lane(lane))
                .expect("lane has room");
        }
    }
    let stats = pool.stats();
    for lane in Priority::ALL {
        assert_eq!(stats.queued(lane), counts[lane.index()], "{lane}");
    }
    latch.open();
    let report = pool.stop().expect("stop");
    assert!(report.is_clean());
    assert_eq!(report.succeeded, 1 + queued as u64);
    let starts = ledger.starts();
    assert_eq!(starts.len(), 1 + queued);
    assert_eq!(starts[0], 0, "the blocker ran first");
    starts[1..].iter().map(|&id| lane_of[id]).collect()
}

/// One character per lane, for failure messages.
fn render(order: &[Priority]) -> String {
    order
        .iter()
        .map(|lane| match lane {
            Urgent => 'U',
            Normal => 'N',
            Bulk => 'B',
        })
        .collect()
}

/// Checks that every window of `len` consecutive dequeues during which each
/// lane in `busy` still had a job queued holds at least `at_least` jobs from
/// `lane`. Returns how many windows were checked.
///
/// A lane is non-empty at dequeue `i` exactly when one of its jobs is
/// dequeued at `i` or later, so with one worker and no producer, "busy
/// throughout the window" is "the window ends at or before the lane's last
/// dequeue". `margin` extra jobs of each busy lane must follow the window
/// (see `per_worker_orders` for why several workers need it).
#[track_caller]
fn assert_share(
    order: &[Priority],
    busy: &[Priority],
    margin: usize,
    lane: Priority,
    len: usize,
    at_least: usize,
) -> usize {
    assert!(order.len() >= len);
    let saturated_until = busy
        .iter()
        .map(|&b| {
            order
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == b)
                .map(|(i, _)| i)
                .rev()
                .nth(margin)
                .expect("the busy lane had jobs")
        })
        .min()
        .expect("at least one busy lane");
    let mut checked = 0;
    for (start, window) in order.windows(len).enumerate() {
        if start + len - 1 > saturated_until {
            break;
        }
        let got = window.iter().filter(|&&l| l == lane).count();
        assert!(
            got >= at_least,
            "{lane} got {got} of the {len} dequeues at {start}..{} ({}), want at least {at_least}; \
             whole order: {}",
            start + len,
            render(window),
            render(order),
        );
        checked += 1;
    }
    checked
}

// ---------------------------------------------------------------------------
// Per-lane admission

#[test]
fn urgent_is_accepted_while_normal_is_full_and_every_worker_is_busy() {
    guarded(|| {
        let ledger = Ledger::new(16);
        let latch = Latch::new();
        let pool: Pool<Probe> = Pool::builder()
            .workers(2)
            .capacity(Urgent, 3)
            .capacity(Normal, 3)
            .capacity(Bulk, 2)
            .build()
            .expect("build");
        let _release = OpenOnDrop::new(&[&latch]);
        block_workers(&pool, &ledger, 0..2, &Action::Wait(Arc::clone(&latch)));
        for id in 2..5 {
            pool.try_submit_to(Normal, Probe::new(id, &ledger))
                .expect("Normal has room");
        }
        for id in 5..7 {
            pool.try_submit_to(Bulk, Probe::new(id, &ledger).lane(Bulk))
                .expect("Bulk has room");
        }
        let refused = pool
            .try_submit_to(Normal, Probe::new(7, &ledger))
            .unwrap_err();
        assert!(refused.is_full());
        assert_eq!(refused.into_inner().id, 7);
        let refused = pool
            .try_submit_to(Bulk, Probe::new(8, &ledger).lane(Bulk))
            .unwrap_err();
        assert!(refused.is_full());
        assert_eq!(refused.into_inner().id, 8);

        let stats = pool.stats();
        assert_eq!(stats.busy(), 2);
        assert_eq!(
            [
                stats.queued(Urgent),
                stats.queued(Normal),
                stats.queued(Bulk)
            ],
            [0, 3, 2]
        );

        // Every submit flavour gets into the Urgent lane at once.
        pool.try_submit_to(Urgent, Probe::new(9, &ledger).lane(Urgent))
            .expect("try_submit_to(Urgent) while Normal and Bulk are full");
        pool.submit_timeout_to(Urgent, Probe::new(10, &ledger), Duration::ZERO)
            .expect("a zero-timeout Urgent submit while Normal is full");
        pool.try_submit(Probe::new(11, &ledger).lane(Urgent))
            .expect("try_submit of an Urgent-priority job while Normal is full");
        assert_eq!(pool.stats().queued(Urgent), 3);
        assert_eq!(pool.stats().queued(Normal), 3);
        assert_eq!(pool.stats().refused(), 2);

        latch.open();
        let report = pool.stop().expect("stop");
        assert!(report.is_clean());
        assert_eq!(report.succeeded, 10);
        for id in (0..7).chain(9..12) {
            assert_eq!(ledger.runs(id), 1, "job {id}");
        }
        for id in [7, 8] {
            assert_eq!((ledger.runs(id), ledger.drops(id)), (0, 1), "refused {id}");
        }
    });
}

// ---------------------------------------------------------------------------
// Reserved urgent workers

/// What an urgent job saw when it started.
#[derive(Debug)]
struct UrgentStart {
    latch_open: bool,
    general_finished: usize,
    reserved: bool,
    worker: usize,
    lane: Priority,
}

#[test]
fn reserved_worker_starts_urgent_jobs_while_every_general_worker_is_stuck() {
    guarded(|| {
        const GENERAL: usize = 2;
        let pool: Pool<FnJob> = Pool::builder()
            .workers(GENERAL)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        let latch = Latch::new();
        let _release = OpenOnDrop::new(&[&latch]);
        let started = Arrivals::new();
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..GENERAL {
            let (started, latch, finished) = (
                Arc::clone(&started),
                Arc::clone(&latch),
                Arc::clone(&finished),
            );
            pool.submit(FnJob::new(move |_| {
                started.arrive();
                latch.wait();
                finished.fetch_add(1, Ordering::SeqCst);
            }))
            .expect("submit");
        }
        started.wait_for(GENERAL);
        assert_eq!(pool.stats().busy(), GENERAL);

        for round in 0..3 {
            let (tx, rx) = mpsc::channel();
            let (latch, finished) = (Arc::clone(&latch), Arc::clone(&finished));
            pool.submit_to(
                Urgent,
                FnJob::new(move |ctx: &Context| {
                    let start = UrgentStart {
                        latch_open: latch.is_open(),
                        general_finished: finished.load(Ordering::SeqCst),
                        reserved: ctx.is_reserved_worker(),
                        worker: ctx.worker_index(),
                        lane: ctx.lane(),
                    };
                    tx.send(start).expect("test is listening");
                }),
            )
            .expect("submit urgent");
            let start = rx
                .recv_timeout(START_LIMIT)
                .unwrap_or_else(|_| panic!("urgent job {round} never started"));
            assert!(!start.latch_open, "round {round}: {start:?}");
            assert_eq!(start.general_finished, 0, "round {round}: {start:?}");
            assert!(start.reserved, "round {round}: {start:?}");
            assert!(start.worker >= GENERAL, "round {round}: {start:?}");
            assert_eq!(start.lane, Urgent);
        }
        assert!(!latch.is_open());
        assert_eq!(finished.load(Ordering::SeqCst), 0);

        latch.open();
        let report = pool.stop().expect("stop");
        assert!(report.is_clean());
        assert_eq!(report.succeeded, GENERAL as u64 + 3);
    });
}

#[test]
fn second_urgent_job_starts_on_an_idle_general_worker_while_the_reserved_one_is_busy() {
    // Two urgent jobs submitted back to back while every worker sleeps: the
    // first wakes the reserved worker; the second must wake a general
    // worker rather than spend its wake-up on the already-woken reserved
    // one (which would leave it queued until the first job ends: here,
    // never, since the first job waits for the second to start).
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        for round in 0..50 {
            // Let the idle workers go from spinning to sleeping; this only
            // makes the race likelier to be hit, the assertions hold anyway.
            thread::sleep(Duration::from_millis(2));
            let second_started = Latch::new();
            let _release = OpenOnDrop::new(&[&second_started]);
            let (tx, rx) = mpsc::channel();
            let first = {
                let (second_started, tx) = (Arc::clone(&second_started), tx.clone());
                FnJob::new(move |_| {
                    tx.send("first").expect("test is listening");
                    // Ends only once the second urgent job has started.
                    second_started.wait();
                })
            };
            let second = {
                let second_started = Arc::clone(&second_started);
                FnJob::new(move |_| {
                    second_started.open();
                    tx.send("second").expect("test is listening");
                })
            };
            pool.submit_to(Urgent, first).expect("submit first");
            pool.submit_to(Urgent, second).expect("submit second");
            let mut seen = Vec::new();
            for _ in 0..2 {
                seen.push(rx.recv_timeout(START_LIMIT).unwrap_or_else(|_| {
                    panic!("round {round}: only {seen:?} started; the second urgent job was left waiting")
                }));
            }
            seen.sort_unstable();
            assert_eq!(seen, ["first", "second"], "round {round}");
            pool.wait_idle().expect("not on a worker");
        }
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn reserved_worker_never_takes_normal_or_bulk_jobs() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        let (latch, _release) = hold_workers(&pool, 1);

        // Lower-lane jobs that would get stuck at the latch too if the
        // reserved worker took one.
        let lower_started = Arrivals::new();
        for lane in [Normal, Bulk] {
            for _ in 0..4 {
                pool.submit_to(lane, blocker(&lower_started, &latch))
                    .expect("submit");
            }
        }
        let before = pool.stats();
        assert_eq!((before.queued(Normal), before.queued(Bulk)), (4, 4));

        let tx_pool = pool.submitter();
        for round in 0..3 {
            let (tx, rx) = mpsc::channel();
            let inner = tx_pool.clone();
            pool.submit_to(
                Urgent,
                FnJob::new(move |ctx: &Context| {
                    let stats = inner.stats();
                    tx.send((
                        ctx.is_reserved_worker(),
                        ctx.worker_index(),
                        stats.queued(Normal),
                        stats.queued(Bulk),
                    ))
                    .expect("test is listening");
                }),
            )
            .expect("submit urgent");
            let seen = rx
                .recv_timeout(START_LIMIT)
                .unwrap_or_else(|_| panic!("urgent job {round} never started"));
            assert_eq!(seen, (true, 1, 4, 4), "round {round}");
            // Let the reserved worker go back to the lanes with only Normal
            // and Bulk work queued before the next round.
            assert!(
                common::wait_until(|| pool.stats().busy() == 1, START_LIMIT),
                "gave up waiting for the reserved worker to go idle"
            );
        }
        let after = pool.stats();
        assert_eq!((after.queued(Normal), after.queued(Bulk)), (4, 4));
        assert_eq!(after.busy(), 1, "only the general worker is busy");
        assert_eq!(lower_started.count(), 0);

        latch.open();
        let report = pool.stop().expect("stop");
        assert!(report.is_clean());
        assert_eq!(report.succeeded, 1 + 8 + 3);
        assert_eq!(lower_started.count(), 8);
    });
}

#[test]
fn general_workers_still_take_urgent_first_when_reserved_workers_are_busy() {
    guarded(|| {
        let ledger = Ledger::new(8);
        let general_latch = Latch::new();
        let reserved_latch = Latch::new();
        let pool: Pool<Probe> = Pool::builder()
            .workers(1)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        let _release = OpenOnDrop::new(&[&general_latch, &reserved_latch]);
        // Only the general worker takes Normal, so block it first; then the
        // urgent blocker can only go to the reserved worker.
        block_workers(
            &pool,
            &ledger,
            0..1,
            &Action::Wait(Arc::clone(&general_latch)),
        );
        hold_with_urgent(&pool, &ledger, 1, &reserved_latch);
        assert_eq!(pool.stats().busy(), 2);

        let ran = Arrivals::new();
        for id in 2..5 {
            pool.submit(Probe::new(id, &ledger).started(&ran))
                .expect("submit");
        }
        for id in 5..8 {
            pool.submit(Probe::new(id, &ledger).lane(Urgent).started(&ran))
                .expect("submit");
        }
        general_latch.open();
        // The reserved worker is still stuck, so all six run on the general
        // worker, in its dequeue order.
        ran.wait_for(6);
        assert_eq!(ledger.starts(), vec![0, 1, 5, 6, 7, 2, 3, 4]);
        reserved_latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 8);
    });
}

// ---------------------------------------------------------------------------
// Starvation bound

#[test]
fn starvation_bound_gives_normal_one_of_every_bound_plus_2_dequeues() {
    guarded(|| {
        for (bound, urgent, normal) in [(4, 150, 25), (1, 60, 25), (2, 80, 25), (7, 200, 20)] {
            let order = backlog_order(Pool::builder().starvation_bound(bound), [urgent, normal, 0]);
            let k = bound as usize;
            let checked = assert_share(&order, &[Normal], 0, Normal, k + 2, 1);
            assert!(checked >= normal, "bound {bound}: only {checked} windows");
            let checked = assert_share(&order, &[Urgent], 0, Urgent, k + 2, k);
            assert!(checked >= normal, "bound {bound}: only {checked} windows");
            // Exactly `bound` urgent jobs before the first Normal one.
            let first_normal = order.iter().position(|&l| l == Normal).unwrap();
            assert_eq!(first_normal, k, "bound {bound}: {}", render(&order));
        }
    });
}

#[test]
fn starvation_bound_defaults_to_32() {
    guarded(|| {
        let order = backlog_order(Pool::builder(), [400, 10, 0]);
        assert_share(&order, &[Normal], 0, Normal, 34, 1);
        assert_share(&order, &[Urgent], 0, Urgent, 34, 32);
        assert_eq!(order.iter().position(|&l| l == Normal), Some(32));
    });
}

#[test]
fn starvation_bound_zero_behaves_like_one() {
    guarded(|| {
        let zero = backlog_order(Pool::builder().starvation_bound(0), [40, 10, 0]);
        let one = backlog_order(Pool::builder().starvation_bound(1), [40, 10, 0]);
        assert_eq!(render(&zero), render(&one));
        assert_share(&zero, &[Normal], 0, Normal, 3, 1);
        assert_share(&zero, &[Urgent], 0, Urgent, 3, 1);
    });
}

#[test]
fn starvation_bound_protects_bulk_under_an_urgent_stream() {
    guarded(|| {
        let order = backlog_order(Pool::builder().starvation_bound(4), [120, 0, 20]);
        assert_share(&order, &[Bulk], 0, Bulk, 6, 1);
        assert_share(&order, &[Urgent], 0, Urgent, 6, 4);
    });
}

#[test]
fn starvation_bound_moves_normal_and_bulk_with_three_lanes_saturated() {
    guarded(|| {
        for bound in [1_u32, 2, 4, 8] {
            let k = bound as usize;
            let order = backlog_order(
                Pool::builder().starvation_bound(bound),
                [40 * k + 40, 20, 20],
            );
            // "When both are due at once, Normal goes first and Bulk right after."
            let mut prefix = vec![Urgent; k];
            prefix.extend([Normal, Bulk]);
            assert_eq!(
                render(&order[..k + 2]),
                render(&prefix),
                "bound {bound}: {}",
                render(&order)
            );
            let checked = assert_share(&order, &[Normal], 0, Normal, k + 2, 1);
            assert!(checked >= 20, "bound {bound}");
            let checked = assert_share(&order, &[Bulk], 0, Bulk, k + 2, 1);
            assert!(checked >= 20, "bound {bound}");
        }
    });
}

#[test]
fn starvation_bound_keeps_urgent_share_with_three_lanes_saturated() {
    guarded(|| {
        for bound in [1_u32, 2, 4, 8] {
            let k = bound as usize;
            let order = backlog_order(
                Pool::builder().starvation_bound(bound),
                [40 * k + 40, 20, 20],
            );
            let all = [Urgent, Normal, Bulk];
            let checked = assert_share(&order, &all, 0, Urgent, k + 2, k);
            assert!(checked >= 10, "bound {bound}: only {checked} windows");
        }
    });
}

/// One general worker, `urgent` Urgent and `normal` Normal jobs queued; the
/// Urgent job at position `bulk_after` queues `bulk` Bulk jobs when it runs,
/// so the lanes fill at different moments. Returns the lanes in dequeue
/// order and the index of the first dequeue with all three lanes queued.
fn staggered_order(
    bound: u32,
    urgent: usize,
    normal: usize,
    bulk: usize,
    bulk_after: usize,
) -> (Vec<Priority>, usize) {
    let pool: Pool<FnJob> = Pool::builder()
        .workers(1)
        .starvation_bound(bound)
        .capacity(Urgent, urgent)
        .capacity(Normal, normal)
        .capacity(Bulk, bulk)
        .build()
        .expect("build");
    let (latch, _release) = hold_workers(&pool, 1);
    let log: Arc<Mutex<Vec<Priority>>> = Arc::new(Mutex::new(Vec::new()));
    let bulk_from = Arc::new(AtomicUsize::new(usize::MAX));
    let logging = |log: &Arc<Mutex<Vec<Priority>>>| {
        let log = Arc::clone(log);
        FnJob::new(move |ctx: &Context| log.lock().unwrap().push(ctx.lane()))
    };
    for i in 0..urgent {
        let job = if i == bulk_after {
            let (log, bulk_from, tx) = (Arc::clone(&log), Arc::clone(&bulk_from), pool.submitter());
            let bulk_log = Arc::clone(&log);
            FnJob::new(move |ctx: &Context| {
                let mut log = log.lock().unwrap();
                log.push(ctx.lane());
                bulk_from.store(log.len(), Ordering::SeqCst);
                drop(log);
                for _ in 0..bulk {
                    let bulk_log = Arc::clone(&bulk_log);
                    let job =
                        FnJob::new(move |ctx: &Context| bulk_log.lock().unwrap().push(ctx.lane()));
                    tx.try_submit_to(Bulk, job).expect("Bulk lane has room");
                }
            })
        } else {
            logging(&log)
        };
        pool.try_submit_to(Urgent, job)
            .expect("Urgent lane has room");
    }
    for _ in 0..normal {
        pool.try_submit_to(Normal, logging(&log))
            .expect("Normal lane has room");
    }
    latch.open();
    let ledger_total = urgent + normal + bulk;
    assert!(
        common::wait_until(|| log.lock().unwrap().len() == ledger_total, START_LIMIT),
        "gave up waiting for every job to run"
    );
    assert!(pool.stop().expect("stop").is_clean());
    let order = log.lock().unwrap().clone();
    (order, bulk_from.load(Ordering::SeqCst))
}

#[test]
fn starvation_bound_holds_when_lanes_fill_at_different_moments() {
    // The documented guarantee under saturation, whatever the phase of the
    // aging counters when a lane starts waiting: Normal and Bulk each get
    // one of every `k + 2` consecutive dequeues, Urgent `k` of every
    // `k + 3` (`k - 1` of `k + 2` can happen: `Bulk Urgent Normal Bulk` at
    // `k = 2`).
    guarded(|| {
        for bound in [1_u32, 2, 3, 4, 8] {
            let k = bound as usize;
            for bulk_after in 0..2 * k + 3 {
                let urgent = 12 * (k + 3) + bulk_after;
                let (order, from) = staggered_order(bound, urgent, 8, 8, bulk_after);
                let saturated = &order[from..];
                let all = [Urgent, Normal, Bulk];
                let context = format!("bound {bound}, Bulk after {bulk_after}: {}", render(&order));
                let checked = assert_share(saturated, &all, 0, Normal, k + 2, 1);
                assert!(checked >= 6, "{context}");
                assert_share(saturated, &all, 0, Bulk, k + 2, 1);
                assert_share(saturated, &all, 0, Urgent, k + 3, k);
            }
        }
    });
}

/// A job that logs its start and, while running, queues the next link of an
/// urgent chain: the Urgent lane is never empty when the worker picks again,
/// which is what a sustained urgent stream looks like to a worker.
fn urgent_chain(
    tx: Submitter<FnJob>,
    left: usize,
    log: Arc<Mutex<Vec<Priority>>>,
    ran: Arc<Arrivals>,
) -> FnJob {
    FnJob::new(move |ctx: &Context| {
        log.lock().unwrap().push(ctx.lane());
        if left > 1 {
            let next = urgent_chain(tx.clone(), left - 1, Arc::clone(&log), Arc::clone(&ran));
            tx.submit_to(Urgent, next).expect("Urgent lane has room");
        }
        ran.arrive();
    })
}

/// One general worker serves a self-renewing urgent stream of `chain` jobs
/// and `normal` queued Normal jobs; returns the lanes in dequeue order.
fn stream_order(builder: Builder<FnJob>, chain: usize, normal: usize) -> Vec<Priority> {
    let pool = builder.workers(1).build().expect("build");
    let (latch, _release) = hold_workers(&pool, 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let ran = Arrivals::new();
    let head = urgent_chain(pool.submitter(), chain, Arc::clone(&log), Arc::clone(&ran));
    pool.submit_to(Urgent, head).expect("submit");
    for _ in 0..normal {
        let (log, ran) = (Arc::clone(&log), Arc::clone(&ran));
        pool.submit(FnJob::new(move |ctx: &Context| {
            log.lock().unwrap().push(ctx.lane());
            ran.arrive();
        }))
        .expect("submit");
    }
    latch.open();
    // The chain submits to the pool, so let it finish before stopping.
    ran.wait_for(chain + normal);
    let report = pool.stop().expect("stop");
    assert!(report.is_clean());
    let order = log.lock().unwrap().clone();
    assert_eq!(order.len(), chain + normal);
    order
}

#[test]
fn starvation_bound_holds_for_a_self_renewing_urgent_stream() {
    guarded(|| {
        let order = stream_order(Pool::builder().starvation_bound(4), 120, 15);
        let checked = assert_share(&order, &[Normal], 0, Normal, 6, 1);
        assert!(checked >= 15);
        assert_share(&order, &[Urgent], 0, Urgent, 6, 4);
    });
}

/// Every dequeue as (worker index, lane), in the order the jobs started.
type WorkerLog = Arc<Mutex<Vec<(usize, Priority)>>>;

#[test]
fn starvation_bound_holds_per_worker_with_two_workers() {
    guarded(|| {
        const WORKERS: usize = 2;
        const BOUND: usize = 4;
        let pool: Pool<FnJob> = Pool::builder()
            .workers(WORKERS)
            .starvation_bound(BOUND as u32)
            .capacity(Urgent, 400)
            .build()
            .expect("build");
        let (latch, _release) = hold_workers(&pool, WORKERS);
        let log: WorkerLog = Arc::new(Mutex::new(Vec::new()));
        for (lane, n) in [(Urgent, 400), (Normal, 60)] {
            for _ in 0..n {
                let log = Arc::clone(&log);
                pool.submit_to(
                    lane,
                    FnJob::new(move |ctx: &Context| {
                        log.lock().unwrap().push((ctx.worker_index(), ctx.lane()));
                    }),
                )
                .expect("submit");
            }
        }
        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, (WORKERS + 460) as u64);
        let log = log.lock().unwrap().clone();
        // A lane was non-empty at a worker's dequeue if one of its jobs was
        // dequeued later. Log order can lag dequeue order by at most one
        // entry per other worker (a worker logs a job before it dequeues its
        // next one), so a window counts as saturated only if `WORKERS` jobs
        // of the lane are logged after it.
        let saturated_until = |of: Priority| {
            log.iter()
                .enumerate()
                .filter(|(_, &(_, lane))| lane == of)
                .map(|(i, _)| i)
                .rev()
                .nth(WORKERS - 1)
                .unwrap()
        };
        // The lanes `worker` took its jobs from, in order, up to `end`.
        let lanes_of = |worker: usize, end: usize| -> Vec<Priority> {
            log[..end]
                .iter()
                .filter(|&&(w, _)| w == worker)
                .map(|&(_, lane)| lane)
                .collect()
        };
        let last_normal = saturated_until(Normal);
        let mut windows = 0;
        for worker in 0..WORKERS {
            let mine = lanes_of(worker, last_normal);
            if mine.len() < BOUND + 2 {
                continue;
            }
            for window in mine.windows(BOUND + 2) {
                assert!(
                    window.contains(&Normal),
                    "worker {worker}: {} in {}",
                    render(window),
                    render(&mine)
                );
                windows += 1;
            }
        }
        assert!(windows >= 40, "only {windows} windows checked");

        // The other side of the bound: while Urgent has work, a worker
        // takes at most one Normal job per `BOUND` urgent ones (Urgent keeps
        // its share however the workers' counts interleave). The same slack
        // for log order as above.
        let last_urgent = saturated_until(Urgent);
        let mut gaps = 0;
        for worker in 0..WORKERS {
            let mine = lanes_of(worker, last_urgent);
            let normals: Vec<usize> = (0..mine.len()).filter(|&i| mine[i] == Normal).collect();
            for pair in normals.windows(2) {
                let urgent_between = mine[pair[0]..pair[1]]
                    .iter()
                    .filter(|&&lane| lane == Urgent)
                    .count();
                assert!(
                    urgent_between >= BOUND,
                    "worker {worker}: two Normal jobs {urgent_between} urgent apart in {}",
                    render(&mine)
                );
                gaps += 1;
            }
        }
        assert!(gaps >= 40, "only {gaps} gaps checked");
    });
}

// ---------------------------------------------------------------------------
// Strict priority

#[test]
fn strict_priority_starts_no_normal_job_until_urgent_is_empty() {
    guarded(|| {
        let order = backlog_order(Pool::builder().strict_priority(), [80, 10, 10]);
        let mut want = vec![Urgent; 80];
        want.extend([Normal; 10]);
        want.extend([Bulk; 10]);
        assert_eq!(render(&order), render(&want));
    });
}

#[test]
fn a_lower_lane_found_empty_starts_its_count_over() {
    // Worker 0 starts counting Normal (it takes an urgent job while a
    // normal one waits), worker 1 takes that normal job, and worker 0 then
    // finds Normal empty. A normal job queued later must wait through the
    // full bound again on worker 0, not finish the old count.
    const BOUND: usize = 2;
    guarded(|| {
        let (idle_tx, idle_rx) = mpsc::channel::<usize>();
        let idle_tx = Mutex::new(idle_tx);
        let pool: Pool<FnJob> = Pool::builder()
            .workers(2)
            .starvation_bound(BOUND as u32)
            .on_worker_idle(move |worker| {
                let _ = idle_tx.lock().unwrap().send(worker);
            })
            .build()
            .expect("build");
        let holds = [Latch::new(), Latch::new()];
        let (later, stuck) = (Latch::new(), Latch::new());
        let _release = OpenOnDrop::new(&[&holds[0], &holds[1], &later, &stuck]);
        let (started_tx, started) = mpsc::channel::<(&'static str, usize, Priority)>();
        let job = |name: &'static str, wait: Option<Arc<Latch>>| {
            let started_tx = started_tx.clone();
            FnJob::new(move |ctx: &Context| {
                started_tx
                    .send((name, ctx.worker_index(), ctx.lane()))
                    .expect("test is listening");
                if let Some(latch) = wait {
                    latch.wait();
                }
            })
        };
        let next = || {
            started
                .recv_timeout(START_LIMIT)
                .expect("a job started in time")
        };
        // Hold each worker on its own latch.
        for _ in 0..2 {
            let (started_tx, holds) = (started_tx.clone(), holds.clone());
            pool.submit(FnJob::new(move |ctx: &Context| {
                let worker = ctx.worker_index();
                started_tx
                    .send(("hold", worker, ctx.lane()))
                    .expect("test is listening");
                holds[worker].wait();
            }))
            .expect("submit");
        }
        assert_eq!([next().0, next().0], ["hold", "hold"]);

        pool.submit_to(Urgent, job("u1", Some(Arc::clone(&later))))
            .expect("submit");
        pool.submit_to(Normal, job("n1", Some(Arc::clone(&stuck))))
            .expect("submit");
        holds[0].open();
        assert_eq!(next(), ("u1", 0, Urgent), "worker 0 takes u1, counting n1");
        holds[1].open();
        assert_eq!(
            next(),
            ("n1", 1, Normal),
            "worker 1 takes n1 and stays in it"
        );
        later.open();
        // Worker 0 finishes u1 and runs out of work: Normal found empty.
        assert_eq!(idle_rx.recv_timeout(START_LIMIT), Ok(0));

        // A gate job for worker 0 (Normal is empty as it takes it), then a
        // normal job and urgent ones queue behind the gate.
        let gate = Latch::new();
        let _release_gate = OpenOnDrop::new(&[&gate]);
        pool.submit_to(Urgent, job("gate", Some(Arc::clone(&gate))))
            .expect("submit");
        assert_eq!(next(), ("gate", 0, Urgent));
        pool.submit_to(Normal, job("n2", None)).expect("submit");
        for name in ["u2", "u3", "u4", "u5"] {
            pool.submit_to(Urgent, job(name, None)).expect("submit");
        }
        gate.open();
        let order: Vec<&str> = (0..5).map(|_| next().0).collect();
        assert_eq!(
            order,
            ["u2", "u3", "n2", "u4", "u5"],
            "n2 waits through the whole bound of {BOUND}"
        );
        stuck.open();
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn strict_priority_replaces_an_earlier_starvation_bound() {
    guarded(|| {
        let order = backlog_order(
            Pool::builder().starvation_bound(2).strict_priority(),
            [30, 5, 0],
        );
        assert_eq!(order.iter().position(|&l| l == Normal), Some(30));
    });
}

#[test]
fn strict_priority_starves_normal_for_a_whole_urgent_stream() {
    guarded(|| {
        let order = stream_order(Pool::builder().strict_priority(), 100, 10);
        let mut want = vec![Urgent; 100];
        want.extend([Normal; 10]);
        assert_eq!(render(&order), render(&want));
    });
}

// ---------------------------------------------------------------------------
// Context::lane and Context::queue_wait

/// What a job saw when it started, and when.
#[derive(Debug)]
struct Seen {
    name: &'static str,
    lane: Priority,
    queue_wait: Duration,
    started_at: Instant,
}

fn reporting(name: &'static str, tx: &mpsc::Sender<Seen>) -> FnJob {
    let tx = tx.clone();
    FnJob::new(move |ctx: &Context| {
        let seen = Seen {
            name,
            lane: ctx.lane(),
            queue_wait: ctx.queue_wait(),
            started_at: Instant::now(),
        };
        tx.send(seen).expect("test is listening");
    })
}

#[test]
fn context_reports_lane_and_queue_wait_behind_a_blocked_worker() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let (latch, _release) = hold_workers(&pool, 1);

        let (tx, rx) = mpsc::channel();
        let mut submitted = Vec::new();
        let jobs = [
            ("default", Normal, reporting("default", &tx)),
            (
                "priority",
                Urgent,
                reporting("priority", &tx).with_priority(Urgent),
            ),
            ("bulk", Bulk, reporting("bulk", &tx).with_priority(Bulk)),
        ];
        for (name, lane, job) in jobs {
            submitted.push((name, lane, Instant::now()));
            pool.submit(job).expect("submit");
        }
        // `submit_to` overrides the job's own priority.
        submitted.push(("override", Bulk, Instant::now()));
        pool.submit_to(Bulk, reporting("override", &tx).with_priority(Urgent))
            .expect("submit");
        // Every job was accepted by now; keep them queued for a known time.
        let accepted_by = Instant::now();
        thread::sleep(Duration::from_millis(50)); // only makes time pass
        let blocked = accepted_by.elapsed();
        latch.open();

        for _ in 0..submitted.len() {
            let seen = rx.recv_timeout(START_LIMIT).expect("job started");
            let &(_, lane, before_submit) = submitted
                .iter()
                .find(|(name, ..)| *name == seen.name)
                .unwrap();
            assert_eq!(seen.lane, lane, "{seen:?}");
            assert!(
                seen.queue_wait + clock_slack(blocked) >= blocked,
                "{seen:?} waited behind a worker blocked for {blocked:?}"
            );
            // Accepted after `before_submit`, started before `started_at`.
            assert!(
                seen.queue_wait
                    <= seen.started_at - before_submit
                        + clock_slack(seen.started_at - before_submit),
                "{seen:?}: more than {:?} between submit and start",
                seen.started_at - before_submit
            );
        }
        let report = pool.stop().expect("stop");
        assert!(report.is_clean());
    });
}

#[test]
fn queue_wait_of_a_job_on_an_idle_pool_is_bounded_by_submit_to_start() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let (tx, rx) = mpsc::channel();
        for _ in 0..20 {
            let before_submit = Instant::now();
            pool.submit(reporting("idle", &tx)).expect("submit");
            let seen = rx.recv_timeout(START_LIMIT).expect("job started");
            assert_eq!(seen.lane, Normal);
            assert!(
                seen.queue_wait
                    <= seen.started_at - before_submit
                        + clock_slack(seen.started_at - before_submit)
            );
        }
        assert!(pool.stop().expect("stop").is_clean());
    });
}

// ---------------------------------------------------------------------------
// Stats::queued and Stats::oldest_wait

fn queued(stats: &Stats) -> [usize; 3] {
    Priority::ALL.map(|lane| stats.queued(lane))
}

/// A snapshot with the instants just before and just after it was taken.
fn snapshot(pool: &Pool<Probe>) -> (Instant, Stats, Instant) {
    let before = Instant::now();
    let stats = pool.stats();
    (before, stats, Instant::now())
}

#[test]
fn stats_report_depth_and_oldest_wait_per_lane_while_workers_are_blocked() {
    guarded(|| {
        let ledger = Ledger::new(16);
        let latch = Latch::new();
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        let _release = OpenOnDrop::new(&[&latch]);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));

        let (s0_before, s0, _) = snapshot(&pool);
        assert_eq!(queued(&s0), [0, 0, 0]);
        for lane in Priority::ALL {
            assert_eq!(s0.oldest_wait(lane), None, "{lane}");
        }

        // The oldest Normal and Bulk jobs, then younger ones after a gap.
        pool.submit(Probe::new(1, &ledger)).expect("submit");
        pool.submit(Probe::new(2, &ledger).lane(Bulk))
            .expect("submit");
        let oldest_accepted_by = Instant::now();
        thread::sleep(Duration::from_millis(30)); // only makes time pass
        for id in 3..5 {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        pool.submit(Probe::new(5, &ledger).lane(Bulk))
            .expect("submit");

        let (s1_before, s1, s1_after) = snapshot(&pool);
        assert_eq!(queued(&s1), [0, 3, 2]);
        assert_eq!(s1.oldest_wait(Urgent), None);
        for lane in [Normal, Bulk] {
            let wait = s1.oldest_wait(lane).expect("non-empty lane");
            // An upper bound of the oldest job's true wait...
            let true_wait_at_least = s1_before - oldest_accepted_by;
            assert!(
                wait + clock_slack(true_wait_at_least) >= true_wait_at_least,
                "{lane}: {wait:?} < {true_wait_at_least:?}"
            );
            // ...counting from the snapshot that last saw the lane empty
            // (measured with `Instant`, the wait on the pool's clock).
            assert!(
                wait <= s1_after - s0_before + clock_slack(s1_after - s0_before),
                "{lane}: {wait:?} > {:?} since s0 saw it empty",
                s1_after - s0_before
            );
        }

        thread::sleep(Duration::from_millis(5)); // only makes time pass
        let (s2_before, s2, _) = snapshot(&pool);
        assert_eq!(queued(&s2), [0, 3, 2]);
        assert_eq!(s2.oldest_wait(Urgent), None);
        for lane in [Normal, Bulk] {
            let (w1, w2) = (s1.oldest_wait(lane).unwrap(), s2.oldest_wait(lane).unwrap());
            // Nothing was taken from the lane: it grows with the clock.
            let gap = s2_before - s1_after;
            assert!(
                w2 + clock_slack(gap) >= w1 + gap,
                "{lane}: {w1:?} then {w2:?}"
            );
        }

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
        let after = pool.stats();
        assert_eq!(queued(&after), [0, 0, 0]);
        for lane in Priority::ALL {
            assert_eq!(after.oldest_wait(lane), None, "{lane}");
        }
    });
}

#[test]
fn oldest_wait_is_a_bound_for_every_lane_even_without_earlier_snapshots() {
    guarded(|| {
        // No snapshot saw the lanes empty, nothing was taken from Urgent or
        // Bulk: the bound may be loose, but it is still an upper bound.
        let ledger = Ledger::new(8);
        let latch = Latch::new();
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        let _release = OpenOnDrop::new(&[&latch]);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for (id, lane) in [(1, Urgent), (2, Normal), (3, Bulk)] {
            pool.submit(Probe::new(id, &ledger).lane(lane))
                .expect("submit");
        }
        let accepted_by = Instant::now();
        thread::sleep(Duration::from_millis(20)); // only makes time pass
        let (before, stats, _) = snapshot(&pool);
        assert_eq!(queued(&stats), [1, 1, 1]);
        for lane in Priority::ALL {
            let wait = stats.oldest_wait(lane).expect("non-empty lane");
            assert!(
                wait + clock_slack(before - accepted_by) >= before - accepted_by,
                "{lane}: {wait:?}"
            );
        }
        latch.open();
        assert_eq!(pool.stop().expect("stop").succeeded, 4);
    });
}

#[test]
fn oldest_wait_of_a_refilled_lane_does_not_count_the_idle_time_before() {
    guarded(|| {
        // A Normal job runs, the pool idles (no snapshot taken), then the
        // worker is held and a Normal job queues: its lane's oldest wait
        // counts from when the waking worker saw the lane empty, not from
        // the job taken before the idle stretch.
        const IDLE: Duration = Duration::from_millis(200);
        let ledger = Ledger::new(8);
        let latch = Latch::new();
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        let _release = OpenOnDrop::new(&[&latch]);
        pool.submit(Probe::new(0, &ledger)).expect("submit");
        pool.wait_idle().expect("not on a worker");
        thread::sleep(IDLE); // only makes time pass
        let held_from = Instant::now();
        // Held by an *Urgent* job, so nothing is taken from Normal after
        // the idle stretch: only the waking worker's look at the lanes can
        // tighten Normal's bound.
        hold_with_urgent(&pool, &ledger, 1, &latch);
        pool.submit(Probe::new(2, &ledger)).expect("submit");
        let (before, stats, _) = snapshot(&pool);
        assert_eq!(queued(&stats), [0, 1, 0]);
        let wait = stats.oldest_wait(Normal).expect("non-empty lane");
        let bound = before - held_from;
        assert!(
            wait <= bound + clock_slack(bound),
            "oldest wait {wait:?} counts the {IDLE:?} idle stretch (held for {bound:?})"
        );
        latch.open();
        assert_eq!(pool.stop().expect("stop").succeeded, 3);
    });
}

#[test]
fn oldest_wait_follows_the_queue_as_a_worker_takes_from_it() {
    guarded(|| {
        let ledger = Ledger::new(8);
        let first = Latch::new();
        let second = Latch::new();
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        let _release = OpenOnDrop::new(&[&first, &second]);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&first)));

        // Normal: 1 (holds the worker next), then 2 and 3, each after a gap.
        let started = Arrivals::new();
        let mut accepted = Vec::new();
        for id in 1..4 {
            let before = Instant::now();
            let probe = Probe::new(id, &ledger);
            let probe = if id == 1 {
                probe
                    .action(Action::Wait(Arc::clone(&second)))
                    .started(&started)
            } else {
                probe
            };
            pool.submit(probe).expect("submit");
            accepted.push((before, Instant::now()));
            thread::sleep(Duration::from_millis(20)); // only makes time pass
        }

        first.open();
        started.wait_for(1);
        // Job 1 was taken: the oldest queued job is now 2, and the bound
        // counts from job 1's acceptance.
        let (before, stats, after) = snapshot(&pool);
        assert_eq!(stats.queued(Normal), 2);
        let wait = stats.oldest_wait(Normal).expect("non-empty lane");
        let (_, two_accepted_by) = accepted[1];
        let (one_submitted, _) = accepted[0];
        assert!(
            wait + clock_slack(before - two_accepted_by) >= before - two_accepted_by,
            "{wait:?} is below job 2's wait"
        );
        assert!(
            wait <= after - one_submitted + clock_slack(after - one_submitted),
            "{wait:?} is looser than the gap to job 1's acceptance"
        );

        second.open();
        assert_eq!(pool.stop().expect("stop").succeeded, 4);
    });
}
