//! Panics stay inside the job: panicking jobs (any payload, even one whose
//! `Drop` panics) and jobs whose own `Drop` panics never take a worker or
//! the stopping thread down, and come back in the report with their message.
#![cfg(panic = "unwind")]

mod common;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use common::{guarded, Action, Arrivals, BadPayload, Latch, Ledger, Probe};
use triage_pool::{Context, FnJob, Job, Pool, Priority};

/// Jobs in the big panic run.
const JOBS: usize = 1_000;
/// The one job whose panic payload panics when dropped.
const BAD_PAYLOAD_ID: usize = 500;
/// Workers in the multi-worker tests.
const WORKERS: usize = 2;

/// What job `id` of the big run does: every 3rd job panics, cycling through
/// the payload kinds, and exactly one panics with a payload that panics on
/// drop.
fn action_of(id: usize) -> Action {
    if id % 3 != 2 {
        Action::Succeed
    } else if id == BAD_PAYLOAD_ID {
        Action::PanicBadPayload
    } else {
        match (id / 3) % 3 {
            0 => Action::PanicString,
            1 => Action::PanicStr,
            _ => Action::PanicAny,
        }
    }
}

/// The message the report must carry for a panicking job.
fn message_of(id: usize) -> Option<String> {
    match action_of(id) {
        Action::PanicString => Some(format!("probe {id}")),
        Action::PanicStr => Some("static probe panic".to_owned()),
        Action::PanicAny | Action::PanicBadPayload => Some("non-string panic payload".to_owned()),
        _ => None,
    }
}

#[test]
fn a_thousand_jobs_every_third_panics() {
    guarded(|| {
        assert_eq!(
            message_of(BAD_PAYLOAD_ID).as_deref(),
            Some("non-string panic payload")
        );
        let blockers = JOBS..JOBS + WORKERS;
        let ledger = Ledger::new(JOBS + WORKERS);
        let pool: Pool<Probe> = Pool::builder()
            .workers(WORKERS)
            .capacity(Priority::Normal, JOBS + WORKERS)
            .build()
            .expect("build");
        for id in 0..JOBS {
            pool.submit(Probe::new(id, &ledger).action(action_of(id)))
                .expect("submit");
        }

        // One lane is FIFO: these start only after every job above was taken.
        // Both start at once only if both workers are still alive, and each
        // worker finished its previous job before taking one of these.
        let latch = Latch::new();
        let started = Arrivals::new();
        for id in blockers.clone() {
            pool.submit(
                Probe::new(id, &ledger)
                    .action(Action::Wait(Arc::clone(&latch)))
                    .started(&started),
            )
            .expect("submit blocker");
        }
        started.wait_for(WORKERS);
        let panicking = (0..JOBS).filter(|id| message_of(*id).is_some()).count();
        assert_eq!(panicking, 333);
        let stats = pool.stats();
        assert_eq!(stats.busy(), WORKERS, "a worker died: {stats:?}");
        assert_eq!(stats.panicked(), panicking as u64);
        assert_eq!(stats.succeeded(), (JOBS - panicking) as u64);

        latch.open();
        let report = pool.stop().expect("stop");
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(report.unrun.is_empty(), "{report:?}");
        assert!(report.abandoned.is_empty(), "{report:?}");
        assert_eq!(report.succeeded, (JOBS - panicking + WORKERS) as u64);
        assert_eq!(report.panicked.len(), panicking);

        let mut seen = BTreeSet::new();
        for panicked in &report.panicked {
            let id = panicked.job.id;
            assert!(seen.insert(id), "job {id} reported twice");
            assert_eq!(Some(&panicked.message), message_of(id).as_ref(), "job {id}");
            assert!(panicked.worker < WORKERS);
            assert_eq!(panicked.lane, Priority::Normal);
        }
        let expected: BTreeSet<usize> = (0..JOBS).filter(|id| id % 3 == 2).collect();
        assert_eq!(seen, expected);

        for id in 0..JOBS + WORKERS {
            assert_eq!(ledger.runs(id), 1, "job {id} runs");
            let held = usize::from(expected.contains(&id));
            assert_eq!(
                ledger.drops(id),
                1 - held,
                "job {id} drops while the report holds it"
            );
        }
        drop(report);
        for id in 0..JOBS + WORKERS {
            assert_eq!(ledger.drops(id), 1, "job {id} drops");
        }
    });
}

#[test]
fn every_worker_survives_its_own_panics() {
    /// A job that waits (bounded) until `WORKERS` jobs of its batch run at
    /// once (so each worker runs one of them), then does `then`.
    fn together(batch: &Arc<Arrivals>, then: impl FnOnce(&Context) + Send + 'static) -> FnJob {
        let batch = Arc::clone(batch);
        FnJob::new(move |ctx: &Context| {
            batch.arrive();
            batch.wait_for(WORKERS);
            then(ctx);
        })
    }

    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(WORKERS).build().expect("build");
        type MakeJob = fn() -> FnJob;
        let kinds: [(&str, MakeJob); 4] = [
            ("formatted 7", || FnJob::new(|_| panic!("formatted {}", 7))),
            ("literal", || FnJob::new(|_| panic!("literal"))),
            ("non-string panic payload", || {
                FnJob::new(|_| std::panic::panic_any(42_u32))
            }),
            ("non-string panic payload", || {
                FnJob::new(|_| std::panic::panic_any(BadPayload))
            }),
        ];
        let mut expected = Vec::new();
        for (message, make) in kinds {
            // Every worker panics once ...
            let batch = Arrivals::new();
            for _ in 0..WORKERS {
                let mut inner = make();
                pool.submit(together(&batch, move |ctx| {
                    inner.run(ctx).expect("inner job");
                }))
                .expect("submit");
                expected.push(message.to_owned());
            }
            // ... and then every worker runs a job again.
            let batch = Arrivals::new();
            let (tx, rx) = mpsc::channel();
            for _ in 0..WORKERS {
                let tx = tx.clone();
                pool.submit(together(&batch, move |ctx| {
                    tx.send(ctx.worker_index()).expect("test alive");
                }))
                .expect("submit");
            }
            let mut ran_on: Vec<usize> = (0..WORKERS)
                .map(|_| rx.recv_timeout(common::LIMIT).expect("worker lost"))
                .collect();
            ran_on.sort_unstable();
            assert_eq!(
                ran_on,
                (0..WORKERS).collect::<Vec<_>>(),
                "after {message:?}"
            );
        }
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, (4 * WORKERS) as u64);
        let mut messages: Vec<String> = report.panicked.iter().map(|p| p.message.clone()).collect();
        messages.sort();
        expected.sort();
        assert_eq!(messages, expected);
        assert!(report.panicked.iter().all(|p| p.job.is_spent()));
    });
}

/// What a [`DropBomb`] does when run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeed,
    Fail,
    Panic,
    /// Waits until the pool raises its cancel flag, then succeeds.
    WaitCancelled,
}

/// A job whose `Drop` panics (when `explode` is set and the thread is not
/// already panicking).
struct DropBomb {
    outcome: Outcome,
    explode: bool,
    /// Counts drops (exploding or not).
    drops: Arc<AtomicUsize>,
    /// Its batch: the job waits (bounded) until `WORKERS` jobs of it run
    /// at once, to put them on distinct workers.
    together: Option<Arc<Arrivals>>,
    /// Told the index of the worker that ran the job.
    ran_on: Option<mpsc::Sender<usize>>,
    /// Told when the job starts.
    started: Option<Arc<Arrivals>>,
}

impl DropBomb {
    fn new(outcome: Outcome, explode: bool, drops: &Arc<AtomicUsize>) -> DropBomb {
        DropBomb {
            outcome,
            explode,
            drops: Arc::clone(drops),
            together: None,
            ran_on: None,
            started: None,
        }
    }
}

impl Job for DropBomb {
    type Error = &'static str;

    fn run(&mut self, ctx: &Context) -> Result<(), &'static str> {
        if let Some(started) = &self.started {
            started.arrive();
        }
        if let Some(batch) = &self.together {
            batch.arrive();
            batch.wait_for(WORKERS);
        }
        if let Some(ran_on) = &self.ran_on {
            ran_on.send(ctx.worker_index()).expect("test alive");
        }
        match self.outcome {
            Outcome::Succeed => Ok(()),
            Outcome::Fail => Err("bomb failed"),
            Outcome::Panic => panic!("bomb panicked"),
            Outcome::WaitCancelled => {
                assert!(ctx.wait_cancelled(common::LIMIT), "never cancelled");
                Ok(())
            }
        }
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.explode && !thread::panicking() {
            panic!("drop bomb went off");
        }
    }
}

#[test]
fn a_job_whose_drop_panics_after_success_does_not_kill_its_worker() {
    guarded(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let pool: Pool<DropBomb> = Pool::builder().workers(WORKERS).build().expect("build");
        // Each worker drops one exploding job after it succeeded ...
        let batch = Arrivals::new();
        for _ in 0..WORKERS {
            let mut bomb = DropBomb::new(Outcome::Succeed, true, &drops);
            bomb.together = Some(Arc::clone(&batch));
            pool.submit(bomb).expect("submit");
        }
        // ... and then every worker runs a job again.
        let batch = Arrivals::new();
        let (tx, rx) = mpsc::channel();
        for _ in 0..WORKERS {
            let mut job = DropBomb::new(Outcome::Succeed, false, &drops);
            job.together = Some(Arc::clone(&batch));
            job.ran_on = Some(tx.clone());
            pool.submit(job).expect("submit");
        }
        let mut ran_on: Vec<usize> = (0..WORKERS)
            .map(|_| rx.recv_timeout(common::LIMIT).expect("worker lost"))
            .collect();
        ran_on.sort_unstable();
        assert_eq!(ran_on, (0..WORKERS).collect::<Vec<_>>());

        let report = pool.stop().expect("stop");
        // A job that returned Ok succeeded, whatever its Drop did after.
        assert_eq!(report.succeeded, (2 * WORKERS) as u64);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(drops.load(Ordering::SeqCst), 2 * WORKERS);
        assert_eq!(pool.stats().succeeded(), (2 * WORKERS) as u64);
    });
}

#[test]
fn exploding_drops_on_the_stop_now_path_do_not_kill_the_stopping_thread() {
    guarded(|| {
        const QUEUED: usize = 3;
        let drops = Arc::new(AtomicUsize::new(0));
        let pool: Pool<DropBomb> = Pool::builder().workers(1).build().expect("build");
        let started = Arrivals::new();
        let mut blocker = DropBomb::new(Outcome::WaitCancelled, true, &drops);
        blocker.started = Some(Arc::clone(&started));
        pool.submit(blocker).expect("submit");
        started.wait_for(1);
        for _ in 0..QUEUED {
            pool.submit(DropBomb::new(Outcome::Succeed, true, &drops))
                .expect("submit");
        }

        let report = pool.stop_now().expect("stop_now");
        // The blocker was cancelled, returned Ok, and its worker dropped it.
        assert_eq!(report.succeeded, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(report.unrun.len(), QUEUED);
        assert_eq!(pool.stats().unrun(), QUEUED as u64);

        // The unrun jobs are live bombs, handed to the caller untouched.
        for unrun in report.unrun {
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(unrun)));
            assert!(dropped.is_err(), "the bomb's Drop did not panic");
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1 + QUEUED);
        // The pool is still usable for a stop, and dropping it is harmless.
        assert!(pool.stop().expect("second stop").is_clean());
        drop(pool);
    });
}

#[test]
fn dropping_a_pool_contains_exploding_drops_of_failed_and_panicked_jobs() {
    guarded(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let pool: Pool<DropBomb> = Pool::builder().workers(1).build().expect("build");
        for outcome in [Outcome::Fail, Outcome::Panic, Outcome::Succeed] {
            pool.submit(DropBomb::new(outcome, true, &drops))
                .expect("submit");
        }
        // Drop drains like stop, then drops the failed and panicked jobs it
        // would have handed back.
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(pool)));
        assert!(dropped.is_ok(), "dropping the pool panicked");
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn a_panicking_job_keeps_the_pool_usable_for_submits_and_stops() {
    guarded(|| {
        let ledger = Ledger::new(3);
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        pool.submit(Probe::new(0, &ledger).action(Action::PanicString))
            .expect("submit");
        pool.submit(Probe::new(1, &ledger))
            .expect("submit after a panic");
        pool.submit(Probe::new(2, &ledger).action(Action::Fail))
            .expect("submit after a panic");
        let report = pool.stop().expect("stop after a panic");
        assert_eq!(report.succeeded, 1);
        assert_eq!(report.panicked.len(), 1);
        assert_eq!(report.panicked[0].message, "probe 0");
        assert_eq!(report.panicked[0].worker, 0);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].error, 2);
        assert_eq!(report.failed[0].job.id, 2);
    });
}
