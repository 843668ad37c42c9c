//! Guards against a bounded stop that loses track of the jobs it gave up on,
//! or a pool that hangs on them later (pond #108 family: a stop must never
//! wait without bound; rusty_pool `join` returning before the last job):
//! `stop_timeout` names each straggler (worker index, lane, running since),
//! hands the queue back in order, a later `stop()` still finishes once the
//! stragglers are released, and `Drop` after `stop_timeout` does not hang.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe, LIMIT};
use triage_pool::{Context, Job, Pool, Priority};

/// General workers.
const WORKERS: usize = 2;
/// Reserved urgent workers (index `WORKERS`).
const RESERVED: usize = 1;
/// Jobs queued per lane behind the stragglers.
const QUEUED_PER_LANE: usize = 5;
/// The stop deadline the tests use.
const DEADLINE: Duration = Duration::from_millis(50);
/// Slack allowed past a deadline on a loaded machine.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);
/// How long a check that "it is still waiting" lets time pass; it can only
/// make a broken pool look correct, never the reverse.
const STILL_WAITING: Duration = Duration::from_millis(150);

/// What a straggler does after its probe's action.
#[derive(Debug, Clone, Copy)]
enum Then {
    Succeed,
    Fail,
    Panic,
}

/// A probe that, after its action, counts whether it saw the cancel flag,
/// then ends as `then` says, and reports its drop on a channel.
struct Straggler {
    probe: Probe,
    then: Then,
    saw_cancel: Arc<AtomicUsize>,
    /// Declared after `probe`, so it is dropped (and reports) after the
    /// probe has counted its own drop.
    dropped: Option<DropNotice>,
}

/// Sends its id when dropped.
struct DropNotice(usize, mpsc::Sender<usize>);

impl Drop for DropNotice {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

impl Straggler {
    fn new(probe: Probe, saw_cancel: &Arc<AtomicUsize>) -> Straggler {
        Straggler {
            probe,
            then: Then::Succeed,
            saw_cancel: Arc::clone(saw_cancel),
            dropped: None,
        }
    }
}

impl Job for Straggler {
    type Error = usize;

    fn run(&mut self, ctx: &Context) -> Result<(), usize> {
        let result = self.probe.run(ctx);
        if ctx.is_cancelled() {
            self.saw_cancel.fetch_add(1, Ordering::SeqCst);
        }
        match self.then {
            Then::Succeed => result,
            Then::Fail => Err(self.probe.id),
            Then::Panic => panic!("straggler {} panicked late", self.probe.id),
        }
    }

    fn priority(&self) -> Priority {
        self.probe.priority()
    }
}

fn build() -> Pool<Straggler> {
    Pool::builder()
        .workers(WORKERS)
        .reserved_urgent_workers(RESERVED)
        .build()
        .expect("build pool")
}

/// Occupies every worker with a job stuck at `latch` — ids 0 (Normal),
/// 1 (Bulk) on the general workers, 2 (Urgent) on the reserved one — ending
/// as `then` says once released; then queues `QUEUED_PER_LANE` jobs per lane,
/// lanes interleaved (ids from 3). Returns the queued ids in submit order.
fn stuck_pool(
    pool: &Pool<Straggler>,
    ledger: &Arc<Ledger>,
    latch: &Arc<Latch>,
    saw_cancel: &Arc<AtomicUsize>,
    then: [Then; 3],
) -> Vec<(usize, Priority)> {
    let started = Arrivals::new();
    for (id, lane) in [Priority::Normal, Priority::Bulk, Priority::Urgent]
        .into_iter()
        .enumerate()
    {
        let probe = Probe::new(id, ledger)
            .lane(lane)
            .action(Action::Wait(Arc::clone(latch)))
            .started(&started);
        let mut straggler = Straggler::new(probe, saw_cancel);
        straggler.then = then[id];
        pool.submit(straggler).expect("submit stuck job");
        started.wait_for(id + 1);
    }
    let mut queued = Vec::new();
    for n in 0..3 * QUEUED_PER_LANE {
        let id = 3 + n;
        let lane = Priority::ALL[n % 3];
        pool.submit(Straggler::new(
            Probe::new(id, ledger).lane(lane),
            saw_cancel,
        ))
        .expect("submit queued job");
        queued.push((id, lane));
    }
    queued
}

#[test]
fn stop_timeout_names_stragglers_and_a_later_stop_finishes_once_released() {
    guarded(|| {
        let ledger = Ledger::new(3 + 3 * QUEUED_PER_LANE);
        let latch = Latch::new();
        let saw_cancel = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(build());
        let before = Instant::now();
        let queued = stuck_pool(&pool, &ledger, &latch, &saw_cancel, [Then::Succeed; 3]);

        let called = Instant::now();
        let report = pool.stop_timeout(DEADLINE).expect("stop_timeout");
        let returned = Instant::now();
        assert!(
            returned >= called + DEADLINE,
            "returned before its deadline"
        );
        assert!(
            returned - called < DEADLINE + DEADLINE_MARGIN,
            "returned long after its deadline: {:?}",
            returned - called
        );

        // Every straggler is named: which worker, which lane, since when.
        assert_eq!(report.abandoned.len(), WORKERS + RESERVED, "{report:?}");
        let mut general_workers = Vec::new();
        let mut general_lanes = Vec::new();
        for a in &report.abandoned {
            assert!(
                before <= a.running_since && a.running_since <= returned,
                "running_since {:?} outside [{before:?}, {returned:?}]",
                a.running_since
            );
            if a.lane == Priority::Urgent {
                assert_eq!(
                    a.worker, WORKERS,
                    "the urgent straggler is the reserved worker"
                );
            } else {
                general_workers.push(a.worker);
                general_lanes.push(a.lane);
            }
        }
        general_workers.sort_unstable();
        assert_eq!(general_workers, vec![0, 1]);
        general_lanes.sort_by_key(|lane| lane.index());
        assert_eq!(general_lanes, vec![Priority::Normal, Priority::Bulk]);

        // The queue came back unrun: lane order, then submit order.
        let mut expected = queued.clone();
        expected.sort_by_key(|&(_, lane)| lane.index()); // stable: FIFO kept
        let unrun: Vec<(usize, Priority)> = report
            .unrun
            .iter()
            .map(|u| (u.job.probe.id, u.lane))
            .collect();
        assert_eq!(unrun, expected);
        assert_eq!(report.succeeded, 0);
        assert!(report.failed.is_empty() && report.panicked.is_empty());
        let stats = pool.stats();
        assert_eq!(stats.abandoned(), (WORKERS + RESERVED) as u64);
        assert_eq!(stats.unrun(), queued.len() as u64);
        assert!(pool.is_stopped());
        drop(report);
        for &(id, _) in &queued {
            assert_eq!((ledger.runs(id), ledger.drops(id)), (0, 1), "job {id}");
        }

        // A later stop waits for the stragglers, and finishes once released.
        let (done_tx, done_rx) = mpsc::channel();
        let stopper = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                let report = pool.stop().expect("later stop");
                let _ = done_tx.send(());
                report
            })
        };
        assert!(
            done_rx.recv_timeout(STILL_WAITING).is_err(),
            "stop() returned while abandoned jobs were still running"
        );
        for id in 0..3 {
            assert_eq!(ledger.drops(id), 0, "straggler {id} is still running");
        }
        latch.open();
        let later = stopper.join().expect("later stop panicked");
        assert!(later.is_clean() && later.total() == 0, "{later:?}");
        // stop() joined the stragglers' threads: their jobs are done.
        for id in 0..3 {
            assert_eq!(
                (ledger.runs(id), ledger.drops(id)),
                (1, 1),
                "straggler {id}"
            );
        }
        assert_eq!(
            saw_cancel.load(Ordering::SeqCst),
            3,
            "the deadline raised the cancel flag for running jobs"
        );
        let stats = pool.stats();
        assert_eq!(
            stats.succeeded(),
            0,
            "a straggler's late success is not counted twice"
        );
        assert_eq!(stats.finished(), stats.accepted());
    });
}

/// Stragglers that end badly after the deadline (fail, panic) are logged
/// and dropped by their thread; nothing is counted twice, and repeated
/// bounded stops return empty by their own deadline while they are stuck.
#[test]
fn late_failures_and_panics_of_stragglers_are_not_counted_twice() {
    guarded(|| {
        let ledger = Ledger::new(3 + 3 * QUEUED_PER_LANE);
        let latch = Latch::new();
        let saw_cancel = Arc::new(AtomicUsize::new(0));
        let pool = build();
        let then = [Then::Fail, Then::Panic, Then::Succeed];
        let queued = stuck_pool(&pool, &ledger, &latch, &saw_cancel, then);
        let report = pool.stop_timeout(Duration::ZERO).expect("stop_timeout");
        assert_eq!(report.abandoned.len(), 3);
        assert_eq!(report.unrun.len(), queued.len());
        drop(report);

        for _ in 0..3 {
            let called = Instant::now();
            let again = pool.stop_timeout(DEADLINE).expect("stop_timeout again");
            let elapsed = called.elapsed();
            assert!(again.is_clean() && again.total() == 0, "{again:?}");
            // It waits for the stuck stragglers until its deadline, no longer.
            assert!(
                elapsed >= DEADLINE && elapsed < DEADLINE + DEADLINE_MARGIN,
                "{elapsed:?}"
            );
        }
        latch.open();
        assert_eq!(pool.stop().expect("stop").total(), 0);
        let stats = pool.stats();
        assert_eq!(
            (stats.succeeded(), stats.failed(), stats.panicked()),
            (0, 0, 0),
            "{stats:?}"
        );
        assert_eq!(stats.abandoned(), 3);
        assert_eq!(stats.finished(), stats.accepted());
        for id in 0..3 + queued.len() {
            assert_eq!(ledger.drops(id), 1, "job {id}");
            assert_eq!(ledger.runs(id), usize::from(id < 3), "job {id}");
        }
    });
}

/// Dropping the pool after a `stop_timeout` while a job is still stuck
/// returns without waiting for it; once released, the job ends on its
/// detached thread and is dropped there.
#[test]
fn drop_after_stop_timeout_with_a_stuck_job_does_not_hang() {
    guarded(|| {
        let ledger = Ledger::new(2);
        let latch = Latch::new();
        let started = Arrivals::new();
        let saw_cancel = Arc::new(AtomicUsize::new(0));
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let pool: Pool<Straggler> = Pool::builder().workers(1).build().expect("build");
        let probe = Probe::new(0, &ledger)
            .action(Action::Wait(Arc::clone(&latch)))
            .started(&started);
        let mut stuck = Straggler::new(probe, &saw_cancel);
        stuck.dropped = Some(DropNotice(0, dropped_tx.clone()));
        pool.submit(stuck).expect("submit");
        started.wait_for(1);
        let mut queued = Straggler::new(Probe::new(1, &ledger), &saw_cancel);
        queued.dropped = Some(DropNotice(1, dropped_tx));
        pool.submit(queued).expect("submit");

        let report = pool.stop_timeout(DEADLINE).expect("stop_timeout");
        assert_eq!(report.abandoned.len(), 1);
        assert_eq!(report.abandoned[0].worker, 0);
        assert_eq!(report.abandoned[0].lane, Priority::Normal);
        assert_eq!(report.unrun.len(), 1);
        drop(report);
        assert_eq!(
            dropped_rx.recv_timeout(LIMIT),
            Ok(1),
            "unrun job dropped with the report"
        );

        drop(pool); // must not wait for the stuck job
        assert_eq!(ledger.drops(0), 0, "the stuck job is still running");
        latch.open();
        assert_eq!(
            dropped_rx.recv_timeout(LIMIT),
            Ok(0),
            "the released straggler was dropped on its thread"
        );
        assert_eq!((ledger.runs(0), ledger.drops(0)), (1, 1));
        assert_eq!((ledger.runs(1), ledger.drops(1)), (0, 1));
    });
}
