//! Stopping: `stop` runs every accepted job once, `stop_now` hands the queue
//! back unrun, `stop_timeout` gives up on a stuck job at its deadline; stops
//! are idempotent, wake blocked submitters, and refuse every later submit.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    block_workers, guarded, submit_in_thread, wait_blocked_in_submit, Action, Arrivals, Latch,
    Ledger, Probe,
};
use triage_pool::{Context, FnJob, Pool, Priority, StopReport, Submitter};

/// How long a check that "nothing happened yet" lets time pass. It can only
/// make a broken pool look correct, never the reverse. (Waiting for a
/// producer to block is not such a check: `wait_blocked_in_submit` waits
/// until it is asleep in the submit.)
const STILL_BLOCKED: Duration = Duration::from_millis(200);

/// Slack allowed past a `stop_timeout` deadline on a loaded machine.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

fn pool(workers: usize, capacity: usize) -> Pool<Probe> {
    Pool::builder()
        .workers(workers)
        .capacity(Priority::Urgent, capacity)
        .capacity(Priority::Normal, capacity)
        .capacity(Priority::Bulk, capacity)
        .build()
        .expect("build pool")
}

/// What a submit did: `Err((is_stopped, id))` with the id of the job it
/// handed back.
type Outcome = Result<(), (bool, usize)>;

fn via_submit(tx: &Submitter<Probe>, job: Probe) -> Outcome {
    tx.submit(job)
        .map_err(|e| (e.is_stopped(), e.into_inner().id))
}

fn via_submit_to(tx: &Submitter<Probe>, job: Probe) -> Outcome {
    tx.submit_to(Priority::Normal, job)
        .map_err(|e| (e.is_stopped(), e.into_inner().id))
}

fn via_submit_timeout_max(tx: &Submitter<Probe>, job: Probe) -> Outcome {
    tx.submit_timeout(job, Duration::MAX)
        .map_err(|e| (e.is_stopped(), e.into_inner().id))
}

fn via_submit_timeout_long(tx: &Submitter<Probe>, job: Probe) -> Outcome {
    tx.submit_timeout(job, common::LIMIT)
        .map_err(|e| (e.is_stopped(), e.into_inner().id))
}

/// Ids of the jobs a report hands back, by terminal state.
fn ids_of(report: &StopReport<Probe>) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    (
        report.failed.iter().map(|f| f.job.id).collect(),
        report.panicked.iter().map(|p| p.job.id).collect(),
        report.unrun.iter().map(|u| u.job.id).collect(),
    )
}

#[test]
fn stop_runs_every_accepted_job_exactly_once() {
    const CAPACITY: usize = 16;
    guarded(|| {
        let workers = 2;
        let queued = 3 * CAPACITY;
        let late = workers + queued; // the job a blocked submit tries to add
        let ledger = Ledger::new(late + 1);
        let latch = Latch::new();
        let pool = Arc::new(pool(workers, CAPACITY));
        block_workers(
            &pool,
            &ledger,
            0..workers,
            &Action::Wait(Arc::clone(&latch)),
        );
        let mut failing = BTreeSet::new();
        for (n, id) in (workers..late).enumerate() {
            let lane = Priority::ALL[n % 3];
            let action = if id % 5 == 0 {
                failing.insert(id);
                Action::Fail
            } else {
                Action::Succeed
            };
            pool.try_submit(Probe::new(id, &ledger).lane(lane).action(action))
                .expect("room");
        }
        assert_eq!(pool.stats().queued_total(), queued);

        // A submit blocked on the full Normal lane returns once intake closes.
        let (intake, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(late, &ledger), via_submit);
        // Only once it sleeps in the lane's wait does the stop below have
        // to wake it (the workers stay stuck, so nothing else will).
        wait_blocked_in_submit(&pool, late as u64 + 1, &[tid]);
        assert!(intake.try_recv().is_err(), "submit to a full lane returned");
        let (report_tx, report_rx) = mpsc::channel();
        let stopper = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || report_tx.send(pool.stop()).expect("test alive"))
        };
        assert_eq!(
            intake
                .recv_timeout(common::LIMIT)
                .expect("blocked submit not woken"),
            Err((true, late))
        );
        producer.join().expect("producer");
        // Intake is closed, and the queue is still full: stop drains it.
        assert_eq!(pool.stats().queued_total(), queued);
        assert!(
            report_rx.try_recv().is_err(),
            "stop returned with jobs queued"
        );
        latch.open();

        let report = report_rx
            .recv_timeout(common::LIMIT)
            .expect("stop did not return")
            .expect("stop");
        stopper.join().expect("stopper");
        let (failed, panicked, unrun) = ids_of(&report);
        assert_eq!(report.succeeded, (workers + queued - failing.len()) as u64);
        assert_eq!(failed.iter().copied().collect::<BTreeSet<_>>(), failing);
        assert_eq!(failed.len(), failing.len());
        assert!(panicked.is_empty() && unrun.is_empty() && report.abandoned.is_empty());
        for id in 0..late {
            assert_eq!(ledger.runs(id), 1, "job {id}");
        }
        assert_eq!(ledger.runs(late), 0, "the refused job ran");
        drop(report);
        for id in 0..=late {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
        let stats = pool.stats();
        assert_eq!(stats.accepted(), late as u64);
        assert_eq!(stats.finished(), late as u64);
        assert_eq!(stats.refused(), 1);
    });
}

#[test]
fn stop_now_hands_back_every_queued_job_unrun_in_lane_order() {
    const PER_LANE: usize = 10;
    guarded(|| {
        let workers = 2;
        let ledger = Ledger::new(workers + 3 * PER_LANE);
        let pool = pool(workers, 64);
        // The blockers return only once stop_now raised the cancel flag, so
        // nothing queued can start before stop_now closes the lanes.
        block_workers(&pool, &ledger, 0..workers, &Action::WaitCancelled);
        let mut by_lane: [Vec<usize>; 3] = Default::default();
        let mut id = workers;
        for _ in 0..PER_LANE {
            for lane in [Priority::Bulk, Priority::Urgent, Priority::Normal] {
                pool.submit(Probe::new(id, &ledger).lane(lane))
                    .expect("submit");
                by_lane[lane.index()].push(id);
                id += 1;
            }
        }

        let report = pool.stop_now().expect("stop_now");
        assert_eq!(
            report.succeeded, workers as u64,
            "the cancelled blockers succeeded"
        );
        assert!(report.failed.is_empty() && report.panicked.is_empty());
        assert!(report.abandoned.is_empty());
        let unrun: Vec<(usize, Priority)> =
            report.unrun.iter().map(|u| (u.job.id, u.lane)).collect();
        let expected: Vec<(usize, Priority)> = Priority::ALL
            .iter()
            .flat_map(|lane| by_lane[lane.index()].iter().map(move |id| (*id, *lane)))
            .collect();
        assert_eq!(
            unrun, expected,
            "unrun must be in lane order, then submission order"
        );
        for id in workers..workers + 3 * PER_LANE {
            assert_eq!(ledger.runs(id), 0, "job {id} ran");
            assert_eq!(
                ledger.drops(id),
                0,
                "job {id} dropped while the report holds it"
            );
        }
        // Unrun jobs are untouched and resubmittable elsewhere.
        assert!(report
            .unrun
            .iter()
            .all(|u| matches!(u.job.action, Action::Succeed)));
        drop(report);
        for id in 0..workers + 3 * PER_LANE {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
        let stats = pool.stats();
        assert_eq!(stats.unrun(), (3 * PER_LANE) as u64);
        assert_eq!(stats.accepted(), stats.finished());
        assert_eq!(stats.queued_total(), 0);
    });
}

#[test]
fn stop_timeout_returns_by_its_deadline_and_names_the_stuck_worker() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(2).build().expect("build");
        let latch = Latch::new();
        let (ran_on_tx, ran_on_rx) = mpsc::channel();
        let (cancelled_tx, cancelled_rx) = mpsc::channel();
        let submitted_at = Instant::now();
        {
            let latch = Arc::clone(&latch);
            pool.submit(
                FnJob::new(move |ctx: &Context| {
                    ran_on_tx.send(ctx.worker_index()).expect("test alive");
                    latch.wait(); // stuck until the test opens it
                    cancelled_tx.send(ctx.is_cancelled()).expect("test alive");
                })
                .with_priority(Priority::Bulk),
            )
            .expect("submit");
        }
        let stuck = ran_on_rx.recv_timeout(common::LIMIT).expect("job started");

        let timeout = Duration::from_millis(300);
        let begin = Instant::now();
        let report = pool.stop_timeout(timeout).expect("stop_timeout");
        let elapsed = begin.elapsed();
        assert!(
            elapsed < timeout + DEADLINE_MARGIN,
            "stop_timeout({timeout:?}) returned after {elapsed:?}"
        );
        assert!(
            elapsed >= timeout,
            "gave up on a running job before the deadline: {elapsed:?}"
        );
        assert_eq!(report.abandoned.len(), 1, "{report:?}");
        let abandoned = &report.abandoned[0];
        assert_eq!(abandoned.worker, stuck);
        assert_eq!(abandoned.lane, Priority::Bulk);
        assert!(abandoned.running_since >= submitted_at);
        assert!(abandoned.running_since <= begin);
        assert_eq!(report.succeeded, 0);
        assert!(report.unrun.is_empty() && report.failed.is_empty());
        let stats = pool.stats();
        assert_eq!(stats.abandoned(), 1);
        assert_eq!(stats.accepted(), stats.finished());
        assert!(pool.is_stopped());
        assert!(pool.submit(FnJob::new(|_| ())).unwrap_err().is_stopped());

        // The deadline raised the cancel flag; the job sees it once it ends.
        latch.open();
        let cancelled = cancelled_rx.recv_timeout(common::LIMIT).expect("job ended");
        assert!(
            cancelled,
            "the stop_timeout deadline did not raise the cancel flag"
        );
        // A later stop joins the straggler and returns.
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn stop_timeout_hands_back_what_it_could_not_run() {
    guarded(|| {
        let ledger = Ledger::new(7);
        let latch = Latch::new();
        let pool = pool(1, 8);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for (id, lane) in (1..7).zip([Priority::Bulk, Priority::Normal, Priority::Urgent].repeat(2))
        {
            pool.submit(Probe::new(id, &ledger).lane(lane))
                .expect("submit");
        }

        let timeout = Duration::from_millis(300);
        let begin = Instant::now();
        let report = pool.stop_timeout(timeout).expect("stop_timeout");
        let elapsed = begin.elapsed();
        assert!(
            elapsed >= timeout && elapsed < timeout + DEADLINE_MARGIN,
            "{elapsed:?}"
        );
        assert_eq!(report.abandoned.len(), 1);
        assert_eq!(report.abandoned[0].worker, 0);
        assert_eq!(report.abandoned[0].lane, Priority::Normal);
        let (_, _, unrun) = ids_of(&report);
        assert_eq!(unrun, vec![3, 6, 2, 5, 1, 4]);
        assert_eq!(pool.stats().unrun(), 6);
        assert_eq!(pool.stats().abandoned(), 1);
        assert_eq!(pool.stats().accepted(), 7);

        latch.open();
        assert!(pool.stop().expect("stop").is_clean());
        // The abandoned job finished on its detached worker, which dropped it.
        assert_eq!(ledger.runs(0), 1);
        assert_eq!(ledger.drops(0), 1);
        for id in 1..7 {
            assert_eq!(ledger.runs(id), 0, "job {id}");
        }
        drop(report);
        for id in 0..7 {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
    });
}

#[test]
fn zero_stop_timeout_hands_the_queue_back_at_once() {
    guarded(|| {
        let ledger = Ledger::new(4);
        let pool = pool(1, 8);
        block_workers(&pool, &ledger, 0..1, &Action::WaitCancelled);
        for id in 1..4 {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        let begin = Instant::now();
        let report = pool.stop_timeout(Duration::ZERO).expect("stop_timeout");
        assert!(begin.elapsed() < DEADLINE_MARGIN, "{:?}", begin.elapsed());
        let (_, _, unrun) = ids_of(&report);
        assert_eq!(unrun, vec![1, 2, 3]);
        // The running job saw the cancel flag; whether it returned before
        // the (immediate) deadline or was abandoned is a race, but it is
        // accounted for exactly once.
        assert_eq!(
            report.succeeded + report.abandoned.len() as u64,
            1,
            "{report:?}"
        );
        assert!(pool.stop().expect("stop").is_clean());
        let stats = pool.stats();
        assert_eq!(stats.accepted(), stats.finished());
        assert_eq!(ledger.runs(0), 1);
        assert_eq!(ledger.total_runs(), 1);
    });
}

/// A `stop()` draining on its own thread behind job 0 (held by `blocker`),
/// with jobs 1 and 2 queued and a blocked submit of job 3 that the stop
/// refused with its job back.
struct Drain {
    report: mpsc::Receiver<Result<StopReport<Probe>, triage_pool::StopError>>,
    thread: thread::JoinHandle<()>,
}

impl Drain {
    fn behind(pool: &Arc<Pool<Probe>>, ledger: &Arc<Ledger>, blocker: Action) -> Drain {
        block_workers(pool, ledger, 0..1, &blocker);
        pool.submit(Probe::new(1, ledger)).expect("submit");
        pool.submit(Probe::new(2, ledger)).expect("submit");
        let (intake, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(3, ledger), via_submit);
        // Jobs 0 to 3 accepted, job 3's submit asleep on the full lane: the
        // stop below has to wake it.
        wait_blocked_in_submit(pool, 4, &[tid]);
        let (report_tx, report) = mpsc::channel();
        let thread = {
            let pool = Arc::clone(pool);
            thread::spawn(move || report_tx.send(pool.stop()).expect("test alive"))
        };
        assert_eq!(
            intake.recv_timeout(common::LIMIT).expect("woken"),
            Err((true, 3))
        );
        producer.join().expect("producer");
        Drain { report, thread }
    }

    /// The draining call returns once job 0 ends, escalated by another
    /// stop: job 0 succeeded, the queue came back unrun to it, never run.
    fn ends_with_the_queue_unrun(self, ledger: &Ledger) {
        let drained = self
            .report
            .recv_timeout(common::LIMIT)
            .expect("drain did not return")
            .expect("stop");
        self.thread.join().expect("drainer");
        assert_eq!(drained.succeeded, 1);
        let (_, _, unrun) = ids_of(&drained);
        assert_eq!(
            unrun,
            vec![1, 2],
            "the draining call receives the unrun jobs"
        );
        assert_eq!((ledger.runs(1), ledger.runs(2)), (0, 0));
    }
}

#[test]
fn stop_timeout_while_another_stop_drains_returns_by_its_deadline() {
    guarded(|| {
        let ledger = Ledger::new(4);
        let latch = Latch::new();
        let pool = Arc::new(pool(1, 2));
        let drain = Drain::behind(&pool, &ledger, Action::Wait(Arc::clone(&latch)));

        // The drain is stuck behind job 0; a stop_timeout gives up waiting
        // for it at its own deadline, with an empty report.
        let timeout = Duration::from_millis(200);
        let begin = Instant::now();
        let report = pool.stop_timeout(timeout).expect("stop_timeout");
        let elapsed = begin.elapsed();
        assert!(elapsed < timeout + DEADLINE_MARGIN, "{elapsed:?}");
        assert!(report.is_clean() && report.total() == 0, "{report:?}");

        // Its deadline escalated the drain: the queue comes back unrun to
        // the draining call once the stuck job ends.
        latch.open();
        drain.ends_with_the_queue_unrun(&ledger);
    });
}

#[test]
fn stop_timeout_returns_early_once_everything_ran() {
    guarded(|| {
        let ledger = Ledger::new(50);
        let pool = pool(2, 64);
        for id in 0..50 {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        // Below the watchdog's limit, so waiting for it fails here.
        let timeout = common::LIMIT / 2;
        let begin = Instant::now();
        let report = pool.stop_timeout(timeout).expect("stop_timeout");
        let elapsed = begin.elapsed();
        assert!(elapsed < timeout, "waited for the deadline: {elapsed:?}");
        assert_eq!(report.succeeded, 50);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(ledger.total_runs(), 50);
    });
}

#[test]
fn stop_timeout_with_duration_max_waits_like_stop() {
    guarded(|| {
        let ledger = Ledger::new(7);
        let latch = Latch::new();
        let pool = Arc::new(pool(1, 4));
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for id in 1..5 {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        let (intake, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(5, &ledger), via_submit);
        // Jobs 0 to 5 accepted, job 5's submit asleep on the full lane.
        wait_blocked_in_submit(&pool, 6, &[tid]);
        let (report_tx, report_rx) = mpsc::channel();
        let stopper = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                report_tx
                    .send(pool.stop_timeout(Duration::MAX))
                    .expect("test alive")
            })
        };
        // Intake closed: the stop is under way while the worker is stuck.
        assert_eq!(
            intake.recv_timeout(common::LIMIT).expect("woken"),
            Err((true, 5))
        );
        producer.join().expect("producer");
        assert!(
            report_rx.recv_timeout(STILL_BLOCKED).is_err(),
            "stop_timeout(Duration::MAX) gave up"
        );
        latch.open();
        let report = report_rx
            .recv_timeout(common::LIMIT)
            .expect("no report")
            .expect("stop_timeout");
        stopper.join().expect("stopper");
        assert_eq!(report.succeeded, 5);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(ledger.total_runs(), 5);
    });
}

#[test]
fn repeated_stops_and_drop_after_stop_are_harmless() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let pool = pool(2, 8);
        for id in 0..6 {
            let action = if id % 2 == 0 {
                Action::Fail
            } else {
                Action::Succeed
            };
            pool.submit(Probe::new(id, &ledger).action(action))
                .expect("submit");
        }
        let first = pool.stop().expect("stop");
        assert_eq!(first.succeeded, 3);
        assert_eq!(first.failed.len(), 3);

        for (what, again) in [
            ("stop", pool.stop()),
            ("stop_now", pool.stop_now()),
            ("stop_timeout", pool.stop_timeout(Duration::from_millis(10))),
            ("stop_timeout(0)", pool.stop_timeout(Duration::ZERO)),
            ("stop", pool.stop()),
        ] {
            let again = again.unwrap_or_else(|e| panic!("{what} after stop: {e}"));
            assert!(again.is_clean(), "{what} after stop: {again:?}");
            assert_eq!(again.total(), 0, "{what} after stop: {again:?}");
        }
        assert_eq!(pool.stats().accepted(), 6);
        assert_eq!(pool.stats().finished(), 6, "later stops must not recount");
        drop(pool);
        for id in 0..6 {
            assert_eq!(ledger.runs(id), 1, "job {id}");
        }
        let failed: Vec<usize> = first.failed.iter().map(|f| f.job.id).collect();
        for id in &failed {
            assert_eq!(ledger.drops(*id), 0, "failed job {id} is the report's");
        }
        drop(first);
        for id in 0..6 {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
    });
}

#[test]
fn concurrent_stops_hand_the_jobs_to_exactly_one_caller() {
    const QUEUED: usize = 12;
    guarded(|| {
        let ledger = Ledger::new(1 + QUEUED);
        let latch = Latch::new();
        let pool = Arc::new(pool(1, 16));
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for id in 1..=QUEUED {
            pool.submit(Probe::new(id, &ledger).action(Action::Fail))
                .expect("submit");
        }
        type StopFn = fn(&Pool<Probe>) -> Result<StopReport<Probe>, triage_pool::StopError>;
        let stops: [StopFn; 3] = [Pool::stop, Pool::stop_now, Pool::stop];
        let entered = Arrivals::new();
        let (stoppers, tids): (Vec<_>, Vec<_>) = stops
            .into_iter()
            .map(|stop| {
                let (pool, entered) = (Arc::clone(&pool), Arc::clone(&entered));
                common::spawn_with_tid(move || {
                    entered.arrive();
                    stop(&pool).expect("stop")
                })
            })
            .unzip();
        // Release the worker only once all three calls overlap: intake is
        // closed and every stopper, past its arrival, is asleep in its
        // call (the performing one waits for the held worker, the others
        // for it).
        entered.wait_for(stops.len());
        assert!(
            common::wait_until(
                || pool.is_stopped()
                    && tids
                        .iter()
                        .flatten()
                        .all(|&tid| common::thread_state(tid) == Some('S')),
                common::LIMIT
            ),
            "the stops never all waited at once: stopped {}, stopper states {:?}",
            pool.is_stopped(),
            tids.iter()
                .map(|tid| tid.map(common::thread_state))
                .collect::<Vec<_>>()
        );
        latch.open();
        let reports: Vec<StopReport<Probe>> = stoppers
            .into_iter()
            .map(|s| s.join().expect("stopper"))
            .collect();

        let mut seen = BTreeSet::new();
        let mut succeeded = 0;
        for report in &reports {
            succeeded += report.succeeded;
            let (failed, panicked, unrun) = ids_of(report);
            assert!(panicked.is_empty() && report.abandoned.is_empty());
            for id in &failed {
                assert!(seen.insert(*id), "job {id} in two reports");
                assert_eq!(ledger.runs(*id), 1, "failed job {id}");
            }
            for id in &unrun {
                assert!(seen.insert(*id), "job {id} in two reports");
                assert_eq!(ledger.runs(*id), 0, "unrun job {id}");
            }
        }
        assert_eq!(succeeded, 1, "only the performing stop reports the blocker");
        assert_eq!(seen, (1..=QUEUED).collect::<BTreeSet<_>>());
        assert_eq!(
            reports.iter().filter(|r| r.total() > 0).count(),
            1,
            "more than one stop received jobs: {reports:?}"
        );
    });
}

#[test]
fn stop_now_escalates_a_draining_stop_and_waits_for_it() {
    guarded(|| {
        let ledger = Ledger::new(4);
        let pool = Arc::new(pool(1, 2));
        // The blocker returns only once the cancel flag is up: the drain
        // below cannot finish until stop_now escalates it.
        let drain = Drain::behind(&pool, &ledger, Action::WaitCancelled);
        assert!(
            drain.report.recv_timeout(STILL_BLOCKED).is_err(),
            "drain ended early"
        );

        let now = pool.stop_now().expect("stop_now");
        assert!(now.is_clean() && now.total() == 0, "{now:?}");
        // stop_now waited for the drain it escalated to finish its report.
        let stats = pool.stats();
        assert_eq!(
            stats.unrun(),
            2,
            "stop_now returned before the drain: {stats:?}"
        );
        assert_eq!(stats.finished(), stats.accepted());
        drain.ends_with_the_queue_unrun(&ledger);
    });
}

#[test]
fn dropping_the_pool_drains_it() {
    guarded(|| {
        let ledger = Ledger::new(21);
        let latch = Latch::new();
        let pool = pool(1, 32);
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for id in 1..21 {
            pool.submit(Probe::new(id, &ledger)).expect("submit");
        }
        latch.open();
        drop(pool);
        for id in 0..21 {
            assert_eq!(ledger.runs(id), 1, "job {id}");
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
    });
}

/// Captures what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a `warn`-level subscriber on this thread; returns the log.
fn warnings_of(f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = captured.0.lock().expect("log buffer").clone();
    String::from_utf8(bytes).expect("utf-8 log")
}

#[test]
fn dropping_a_pool_with_failures_logs_the_report_at_warn() {
    guarded(|| {
        let ledger = Ledger::new(5);
        let pool = pool(1, 8);
        for id in 0..5 {
            let action = if id < 2 {
                Action::Fail
            } else {
                Action::Succeed
            };
            pool.submit(Probe::new(id, &ledger).action(action))
                .expect("submit");
        }
        let log = warnings_of(move || drop(pool));
        assert!(log.contains("WARN"), "no warning logged: {log:?}");
        assert!(log.contains("failed=2"), "{log:?}");
        assert!(log.contains("succeeded=3"), "{log:?}");
        // The failed jobs went down with the pool.
        for id in 0..5 {
            assert_eq!((ledger.runs(id), ledger.drops(id)), (1, 1), "job {id}");
        }

        // A clean drop has nothing to warn about.
        let clean = pool_with_one_success();
        let log = warnings_of(move || drop(clean));
        assert!(log.is_empty(), "a clean drop warned: {log:?}");
    });
}

fn pool_with_one_success() -> Pool<Probe> {
    let pool = pool(1, 8);
    pool.submit(Probe::new(0, &Ledger::new(1))).expect("submit");
    pool
}

#[test]
fn a_cancelled_job_counts_by_what_it_returns() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(2).build().expect("build");
        let started = Arrivals::new();
        for fail in [false, true] {
            let started = Arc::clone(&started);
            pool.submit(FnJob::fallible(move |ctx: &Context| {
                started.arrive();
                assert!(ctx.wait_cancelled(common::LIMIT), "never cancelled");
                if fail {
                    Err("gave up on cancel")
                } else {
                    Ok(())
                }
            }))
            .expect("submit");
        }
        started.wait_for(2);
        let report = pool.stop_now().expect("stop_now");
        assert_eq!(report.succeeded, 1, "{report:?}");
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(report.failed[0].error.to_string(), "gave up on cancel");
        assert!(report.unrun.is_empty() && report.abandoned.is_empty());
    });
}

#[test]
fn submits_after_stop_are_refused_with_the_job_back() {
    guarded(|| {
        let ledger = Ledger::new(64);
        let pool = pool(1, 8);
        let before = pool.submitter();
        assert!(pool.stop().expect("stop").is_clean());
        let after = pool.submitter();
        let moved = before.clone();

        let id = Cell::new(0);
        let next = || {
            id.set(id.get() + 1);
            Probe::new(id.get(), &ledger)
        };
        let mut refused = 0;
        for tx in [&*pool, &before, &after] {
            assert!(tx.is_stopped());
            let e = tx.submit(next()).expect_err("submit accepted after stop");
            assert!(e.is_stopped() && !e.is_full(), "{e:?}");
            assert_eq!(e.to_string(), "the pool is stopped");
            assert_eq!(format!("{e:?}"), "Stopped(..)");
            assert_eq!(e.into_inner().id, id.get());
            let e = tx
                .submit_to(Priority::Urgent, next())
                .expect_err("submit_to");
            assert!(e.is_stopped());
            assert_eq!(e.into_inner().id, id.get());
            let e = tx.try_submit(next()).expect_err("try_submit");
            assert!(e.is_stopped() && !e.is_full(), "{e:?}");
            assert_eq!(e.to_string(), "the pool is stopped");
            assert_eq!(e.into_inner().id, id.get());
            let e = tx
                .try_submit_to(Priority::Bulk, next())
                .expect_err("try_submit_to");
            assert!(e.is_stopped());
            assert_eq!(e.into_inner().id, id.get());
            for timeout in [Duration::ZERO, Duration::from_secs(1), Duration::MAX] {
                let e = tx
                    .submit_timeout(next(), timeout)
                    .expect_err("submit_timeout");
                assert!(e.is_stopped() && !e.is_timeout(), "{timeout:?}: {e:?}");
                assert_eq!(e.to_string(), "the pool is stopped");
                assert_eq!(e.into_inner().id, id.get());
            }
            let e = tx
                .submit_timeout_to(Priority::Normal, next(), Duration::from_secs(1))
                .expect_err("submit_timeout_to");
            assert!(e.is_stopped());
            assert_eq!(e.into_inner().id, id.get());
            refused += 8;
        }
        // A clone moved to another thread is refused too.
        let ledger2 = Arc::clone(&ledger);
        let from_thread = thread::spawn(move || {
            moved
                .submit(Probe::new(63, &ledger2))
                .map_err(|e| (e.is_stopped(), e.into_inner().id))
        })
        .join()
        .expect("thread");
        assert_eq!(from_thread, Err((true, 63)));
        refused += 1;

        assert_eq!(pool.stats().refused(), refused);
        assert_eq!(pool.stats().accepted(), 0);
        assert_eq!(ledger.total_runs(), 0);
        for job in (1..=id.get()).chain([63]) {
            assert_eq!(ledger.drops(job), 1, "job {job} came back and was dropped");
        }
    });
}

#[test]
fn blocked_submitters_are_woken_by_stop_and_get_their_jobs_back() {
    guarded(|| {
        let ledger = Ledger::new(8);
        let latch = Latch::new();
        let pool = Arc::new(pool(1, 2));
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        pool.submit(Probe::new(1, &ledger)).expect("submit");
        pool.submit(Probe::new(2, &ledger)).expect("submit");
        let hows = [
            via_submit,
            via_submit_to,
            via_submit_timeout_max,
            via_submit_timeout_long,
        ];
        let producers: Vec<_> = hows
            .into_iter()
            .zip(3..)
            .map(|(how, id)| submit_in_thread(pool.submitter(), Probe::new(id, &ledger), how))
            .collect();
        // Jobs 0..3 plus one per producer; each producer asleep in the wait
        // for room, which only the stop can end (the worker stays stuck).
        let tids: Vec<_> = producers.iter().map(|(_, _, tid)| *tid).collect();
        wait_blocked_in_submit(&pool, 3 + hows.len() as u64, &tids);
        for (rx, _, _) in &producers {
            assert!(rx.try_recv().is_err(), "not blocked");
        }

        let (report_tx, report_rx) = mpsc::channel();
        let stopper = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || report_tx.send(pool.stop()).expect("test alive"))
        };
        // Every blocked submit gets its job back while the stop is still
        // waiting for the stuck worker: the stop woke them, it did not wait
        // for them.
        for ((rx, handle, _), id) in producers.into_iter().zip(3..) {
            let outcome = rx.recv_timeout(common::LIMIT).expect("submitter not woken");
            assert_eq!(outcome, Err((true, id)));
            handle.join().expect("producer");
        }
        assert!(report_rx.try_recv().is_err());
        assert!(!latch.is_open());
        latch.open();
        let report = report_rx
            .recv_timeout(common::LIMIT)
            .expect("no report")
            .expect("stop");
        stopper.join().expect("stopper");
        assert_eq!(report.succeeded, 3);
        assert!(report.is_clean());
        for id in 3..7 {
            assert_eq!(ledger.runs(id), 0, "job {id}");
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
        assert_eq!(pool.stats().refused(), 4);
    });
}

#[test]
fn stop_now_wakes_blocked_submitters_too() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let pool = Arc::new(pool(1, 2));
        block_workers(&pool, &ledger, 0..1, &Action::WaitCancelled);
        pool.submit(Probe::new(1, &ledger)).expect("submit");
        pool.submit(Probe::new(2, &ledger)).expect("submit");
        let (rx, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(3, &ledger), via_submit);
        // Jobs 0..=2 and the producer's: it is asleep waiting for room. Once
        // the cancel flag is up the worker exits without taking another job,
        // so no slot frees: only stop_now itself can wake the producer.
        wait_blocked_in_submit(&pool, 4, &[tid]);
        assert!(rx.try_recv().is_err(), "not blocked");

        let report = pool.stop_now().expect("stop_now");
        assert_eq!(
            rx.recv_timeout(common::LIMIT).expect("not woken"),
            Err((true, 3))
        );
        producer.join().expect("producer");
        assert_eq!(report.succeeded, 1);
        let (_, _, unrun) = ids_of(&report);
        assert_eq!(unrun, vec![1, 2]);
        assert_eq!(ledger.runs(3), 0);
    });
}

#[test]
fn stop_returns_while_producers_keep_retrying_against_it() {
    guarded(|| {
        const PRODUCERS: usize = 4;
        const PER_PRODUCER: usize = 50_000;
        let ledger = Ledger::new(PRODUCERS * PER_PRODUCER);
        let pool = Arc::new(pool(2, 4));
        let started = Arrivals::new();
        let stop_returned = Arc::new(Latch::new());
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (tx, ledger) = (pool.submitter(), Arc::clone(&ledger));
                let (started, stop_returned) = (Arc::clone(&started), Arc::clone(&stop_returned));
                thread::spawn(move || {
                    for id in p * PER_PRODUCER..(p + 1) * PER_PRODUCER {
                        let Err(e) = tx.submit(Probe::new(id, &ledger).started(&started)) else {
                            continue;
                        };
                        assert!(e.is_stopped(), "{e:?}");
                        // Retry the refused job as fast as possible until the
                        // stop has returned: the stop must not wait for these.
                        let mut job = e.into_inner();
                        let mut retries = 0_u64;
                        while !stop_returned.is_open() {
                            job = match tx.try_submit(job) {
                                Ok(()) => panic!("job {id} accepted by a stopped pool"),
                                Err(e) => e.into_inner(),
                            };
                            retries += 1;
                        }
                        return (Some(job.id), retries);
                    }
                    (None, 0)
                })
            })
            .collect();
        // Each producer has had at least one job accepted before the stop.
        started.wait_for(PRODUCERS * 4);
        let report = pool.stop().expect("stop");
        stop_returned.open();
        let mut refused = BTreeSet::new();
        for producer in producers {
            let (last, _retries) = producer.join().expect("producer");
            refused.insert(last.expect("a producer ran out of ids before the stop"));
        }
        let (failed, panicked, unrun) = ids_of(&report);
        assert!(failed.is_empty() && panicked.is_empty() && unrun.is_empty());
        // Exactly once: every job accepted before the stop ran, each
        // producer's refused job never did, and no id was skipped.
        for p in 0..PRODUCERS {
            let first_refused = *refused
                .range(p * PER_PRODUCER..(p + 1) * PER_PRODUCER)
                .next()
                .expect("refused id");
            for id in p * PER_PRODUCER..first_refused {
                assert_eq!(ledger.runs(id), 1, "job {id}");
            }
            assert_eq!(ledger.runs(first_refused), 0);
        }
        assert_eq!(ledger.total_runs() as u64, report.succeeded);
        assert_eq!(pool.stats().accepted(), report.succeeded);
    });
}
