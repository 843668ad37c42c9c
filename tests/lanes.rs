//! Lanes: queued `Urgent` jobs start before `Normal` ones and `Normal` before
//! `Bulk`; the `*_to` submits override `Job::priority`; each lane is FIFO.

mod common;

use std::sync::{mpsc, Arc};

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Builder, Context, FnJob, Pool, Priority};

/// Capacity of every lane in these tests.
const CAPACITY: usize = 64;

/// Blocks every one of `workers` workers with jobs `0..workers` waiting at
/// `latch`; returns once all of them run.
fn block_all(pool: &Pool<Probe>, ledger: &Arc<Ledger>, workers: usize, latch: &Arc<Latch>) {
    let started = Arrivals::new();
    for id in 0..workers {
        pool.submit(
            Probe::new(id, ledger)
                .action(Action::Wait(Arc::clone(latch)))
                .started(&started),
        )
        .expect("submit blocker");
    }
    started.wait_for(workers);
}

fn builder(workers: usize) -> Builder<Probe> {
    Pool::builder()
        .workers(workers)
        .capacity(Priority::Urgent, CAPACITY)
        .capacity(Priority::Normal, CAPACITY)
        .capacity(Priority::Bulk, CAPACITY)
}

/// With the workers blocked, queues `per_lane` jobs in each lane, submitted
/// interleaved (Bulk, Normal, Urgent, Bulk, ...), ids from `first`. Returns
/// the ids queued in each lane, in submission order, indexed by lane.
fn queue_interleaved(
    pool: &Pool<Probe>,
    ledger: &Arc<Ledger>,
    first: usize,
    per_lane: usize,
) -> [Vec<usize>; 3] {
    let mut ids: [Vec<usize>; 3] = Default::default();
    let mut id = first;
    for _ in 0..per_lane {
        for lane in [Priority::Bulk, Priority::Normal, Priority::Urgent] {
            pool.try_submit(Probe::new(id, ledger).lane(lane))
                .expect("room in the lane");
            ids[lane.index()].push(id);
            id += 1;
        }
    }
    let stats = pool.stats();
    for lane in Priority::ALL {
        assert_eq!(stats.queued(lane), per_lane, "{lane} lane");
    }
    ids
}

/// Runs the one-worker scenario and checks the exact start order: every
/// urgent job in submission order, then every normal one, then every bulk
/// one.
fn exact_lane_order(builder: Builder<Probe>, per_lane: usize) {
    let blockers = 1;
    let ledger = Ledger::new(blockers + 3 * per_lane);
    let latch = Latch::new();
    let pool = builder.workers(1).build().expect("build");
    block_all(&pool, &ledger, blockers, &latch);
    let [urgent, normal, bulk] = queue_interleaved(&pool, &ledger, blockers, per_lane);

    latch.open();
    let report = pool.stop().expect("stop");
    assert_eq!(report.succeeded, (blockers + 3 * per_lane) as u64);

    let expected: Vec<usize> = (0..blockers)
        .chain(urgent)
        .chain(normal)
        .chain(bulk)
        .collect();
    assert_eq!(ledger.starts(), expected);
}

#[test]
fn strict_priority_runs_urgent_then_normal_then_bulk() {
    guarded(|| exact_lane_order(builder(1).strict_priority(), 30));
}

#[test]
fn default_starvation_bound_keeps_lane_order_for_short_backlogs() {
    // The default bound (32) lets a lower lane go first only after 32
    // dequeues from other lanes while it waited. Bulk waits through the
    // urgent *and* normal jobs, so keep urgent + normal below 32.
    guarded(|| exact_lane_order(builder(1), 15));
}

#[test]
fn lane_order_holds_with_several_workers() {
    const WORKERS: usize = 3;
    const PER_LANE: usize = 20;
    guarded(|| {
        let ledger = Ledger::new(WORKERS + 3 * PER_LANE);
        let latch = Latch::new();
        let pool = builder(WORKERS).strict_priority().build().expect("build");
        block_all(&pool, &ledger, WORKERS, &latch);
        let [urgent, normal, _bulk] = queue_interleaved(&pool, &ledger, WORKERS, PER_LANE);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, (WORKERS + 3 * PER_LANE) as u64);

        // A worker takes a normal job only once the urgent lane is empty,
        // so every urgent job was taken before. A start is recorded just
        // after the take; each *other* worker may have taken one job and
        // not recorded its start yet, hence the slack of WORKERS - 1.
        let slack = WORKERS - 1;
        let starts: Vec<usize> = ledger.starts().into_iter().skip(WORKERS).collect();
        assert_eq!(starts.len(), 3 * PER_LANE);
        let mut higher_seen = [0_usize; 2]; // urgent seen, urgent+normal seen
        for (position, id) in starts.iter().enumerate() {
            if urgent.contains(id) {
                higher_seen[0] += 1;
                higher_seen[1] += 1;
            } else if normal.contains(id) {
                assert!(
                    higher_seen[0] + slack >= PER_LANE,
                    "normal job {id} started at {position} after only {} urgent jobs: {starts:?}",
                    higher_seen[0]
                );
                higher_seen[1] += 1;
            } else {
                assert!(
                    higher_seen[1] + slack >= 2 * PER_LANE,
                    "bulk job {id} started at {position} after only {} urgent/normal jobs: {starts:?}",
                    higher_seen[1]
                );
            }
        }
    });
}

#[test]
fn submit_to_overrides_job_priority() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latch = Latch::new();
        let pool = builder(1).strict_priority().build().expect("build");
        block_all(&pool, &ledger, 1, &latch);

        // Each job's own priority says one lane; the `_to` call says another.
        pool.submit_to(
            Priority::Urgent,
            Probe::new(1, &ledger).lane(Priority::Bulk),
        )
        .expect("submit_to");
        pool.try_submit_to(
            Priority::Bulk,
            Probe::new(2, &ledger).lane(Priority::Urgent),
        )
        .expect("try_submit_to");
        pool.submit_timeout_to(
            Priority::Normal,
            Probe::new(3, &ledger).lane(Priority::Urgent),
            common::LIMIT,
        )
        .expect("submit_timeout_to");
        // Without an override, the job's own priority decides.
        pool.submit(Probe::new(4, &ledger).lane(Priority::Bulk))
            .expect("submit");
        pool.submit(Probe::new(5, &ledger).lane(Priority::Urgent))
            .expect("submit");
        let stats = pool.stats();
        assert_eq!(stats.queued(Priority::Urgent), 2);
        assert_eq!(stats.queued(Priority::Normal), 1);
        assert_eq!(stats.queued(Priority::Bulk), 2);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
        assert_eq!(ledger.starts(), vec![0, 1, 5, 3, 2, 4]);
    });
}

#[test]
fn context_reports_the_lane_a_job_was_taken_from() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let (tx, rx) = mpsc::channel();
        for (lane, job_priority) in [
            (Priority::Urgent, Priority::Bulk),
            (Priority::Normal, Priority::Urgent),
            (Priority::Bulk, Priority::Normal),
        ] {
            let tx = tx.clone();
            let job = FnJob::new(move |ctx: &Context| tx.send(ctx.lane()).expect("test alive"))
                .with_priority(job_priority);
            pool.submit_to(lane, job).expect("submit_to");
            assert_eq!(rx.recv_timeout(common::LIMIT).expect("job ran"), lane);
        }
        let tx2 = tx.clone();
        pool.submit(
            FnJob::new(move |ctx: &Context| tx2.send(ctx.lane()).expect("test alive"))
                .with_priority(Priority::Bulk),
        )
        .expect("submit");
        assert_eq!(
            rx.recv_timeout(common::LIMIT).expect("job ran"),
            Priority::Bulk
        );
        assert_eq!(pool.stop().expect("stop").succeeded, 4);
    });
}

#[test]
fn each_lane_is_fifo_with_one_worker() {
    const JOBS: usize = 60;
    guarded(|| {
        for lane in Priority::ALL {
            let ledger = Ledger::new(1 + JOBS);
            let latch = Latch::new();
            let pool = builder(1).build().expect("build");
            block_all(&pool, &ledger, 1, &latch);
            for id in 1..=JOBS {
                pool.try_submit_to(lane, Probe::new(id, &ledger))
                    .expect("room in the lane");
            }
            latch.open();
            assert_eq!(pool.stop().expect("stop").succeeded, (1 + JOBS) as u64);
            assert_eq!(
                ledger.starts(),
                (0..=JOBS).collect::<Vec<_>>(),
                "{lane} lane"
            );
        }
    });
}

#[test]
fn lane_stays_fifo_under_backpressure() {
    // The worker runs while the producer keeps a small lane full, so jobs
    // go through many rounds of blocking submits.
    const JOBS: usize = 2_000;
    guarded(|| {
        let ledger = Ledger::new(JOBS);
        let pool: Pool<Probe> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 4)
            .build()
            .expect("build");
        for id in 0..JOBS {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        assert_eq!(pool.stop().expect("stop").succeeded, JOBS as u64);
        assert_eq!(ledger.starts(), (0..JOBS).collect::<Vec<_>>());
    });
}
