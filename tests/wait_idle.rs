//! `wait_idle`: a barrier that returns once every submitted job finished,
//! without stopping the pool; it waits for running and queued jobs (and a
//! producer blocked on a full lane), refuses to wait on its own worker, and
//! returns at once after a stop.

mod common;

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    block_workers, guarded, submit_in_thread, wait_blocked_in_submit, Action, Latch, Ledger, Probe,
};
use triage_pool::{FnJob, Pool, Priority, StopError};

/// How long a check that "nothing happened yet" lets time pass. It can only
/// make a broken pool look correct, never the reverse.
const STILL_WAITING: Duration = Duration::from_millis(200);

#[test]
fn returns_once_every_job_ran_and_the_pool_keeps_running() {
    guarded(|| {
        let ledger = Ledger::new(2_001);
        let pool: Pool<Probe> = Pool::builder().workers(2).build().expect("pool");
        for id in 0..2_000 {
            let action = if id % 7 == 0 {
                Action::Fail
            } else {
                Action::Succeed
            };
            pool.submit(Probe::new(id, &ledger).action(action))
                .expect("submit");
        }
        pool.wait_idle().expect("not on a worker");
        assert_eq!(ledger.total_runs(), 2_000);
        let stats = pool.stats();
        assert_eq!(stats.pending(), 0, "{stats:?}");
        assert_eq!(stats.queued_total(), 0);
        // Still running: more work is accepted and runs.
        pool.submit(Probe::new(2_000, &ledger))
            .expect("pool still running");
        pool.wait_idle().expect("not on a worker");
        assert_eq!(ledger.runs(2_000), 1);
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded + report.failed.len() as u64, 2_001);
    });
}

#[test]
fn waits_for_running_and_queued_jobs() {
    guarded(|| {
        let ledger = Ledger::new(3);
        let latch = Latch::new();
        let pool = Arc::new(Pool::builder().workers(1).build().expect("pool"));
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        pool.submit_to(Priority::Bulk, Probe::new(1, &ledger))
            .expect("submit");
        pool.submit_to(Priority::Urgent, Probe::new(2, &ledger))
            .expect("submit");
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                pool.wait_idle().expect("not on a worker");
                tx.send(()).expect("test alive");
            })
        };
        assert!(
            rx.recv_timeout(STILL_WAITING).is_err(),
            "wait_idle returned while a job was running and two were queued"
        );
        latch.open();
        rx.recv_timeout(common::LIMIT)
            .expect("wait_idle never returned");
        waiter.join().expect("waiter");
        assert_eq!(ledger.total_runs(), 3);
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn waits_for_a_producer_blocked_on_a_full_lane() {
    guarded(|| {
        let ledger = Ledger::new(4);
        let latch = Latch::new();
        let pool = Arc::new(
            Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, 2)
                .build()
                .expect("pool"),
        );
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        for id in 1..3 {
            pool.try_submit(Probe::new(id, &ledger)).expect("room");
        }
        let (intake, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(3, &ledger), |tx, job| {
                tx.submit(job).is_ok()
            });
        // The producer sleeps in its submit to the full lane: its job counts.
        wait_blocked_in_submit(&pool, 4, &[tid]);
        latch.open();
        pool.wait_idle().expect("not on a worker");
        assert_eq!(
            ledger.runs(3),
            1,
            "wait_idle returned before the blocked submit's job ran"
        );
        assert_eq!(
            intake.recv_timeout(common::LIMIT),
            Ok(true),
            "the blocked submit was accepted"
        );
        producer.join().expect("producer");
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn refuses_on_its_own_worker_and_returns_at_once_after_stop() {
    guarded(|| {
        let pool: Arc<Pool<FnJob>> = Arc::new(Pool::builder().workers(1).build().expect("pool"));
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&pool);
        pool.submit(FnJob::new(move |_| {
            tx.send(inner.wait_idle()).expect("test alive");
        }))
        .expect("submit");
        assert_eq!(rx.recv().expect("job ran"), Err(StopError::OnWorkerThread));
        for timeout in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
            let (tx, rx) = mpsc::channel();
            let inner = Arc::clone(&pool);
            pool.submit(FnJob::new(move |_| {
                tx.send(inner.wait_idle_timeout(timeout))
                    .expect("test alive");
            }))
            .expect("submit");
            assert_eq!(
                rx.recv().expect("job ran"),
                Err(StopError::OnWorkerThread),
                "wait_idle_timeout({timeout:?}) on its own worker"
            );
        }
        assert!(pool.stop().expect("stop").is_clean());
        pool.wait_idle().expect("after stop");
        for timeout in [Duration::ZERO, Duration::MAX] {
            assert_eq!(pool.wait_idle_timeout(timeout), Ok(true), "{timeout:?}");
        }
        assert_eq!(pool.stats().pending(), 0);
    });
}

/// A stop that hands queued jobs back counts them as unrun after the last
/// worker has exited: a `wait_idle` already asleep must be woken by that
/// count, not only by the workers' exits (it used to sleep forever).
#[test]
fn a_waiter_asleep_through_stop_now_returns_once_the_queue_is_handed_back() {
    for trial in 0..20 {
        guarded(move || {
            let ledger = Ledger::new(3);
            let pool = Arc::new(Pool::builder().workers(1).build().expect("pool"));
            block_workers(&pool, &ledger, 0..1, &Action::WaitCancelled);
            for id in 1..3 {
                pool.submit(Probe::new(id, &ledger)).expect("room");
            }
            let (tx, rx) = mpsc::channel();
            let (waiter, tid) = {
                let pool = Arc::clone(&pool);
                common::spawn_with_tid(move || {
                    pool.wait_idle().expect("not on a worker");
                    tx.send(()).expect("test alive");
                })
            };
            if let Some(tid) = tid {
                assert!(
                    common::wait_until(|| common::thread_state(tid) == Some('S'), common::LIMIT),
                    "trial {trial}: the waiter never went to sleep"
                );
            }
            let report = pool.stop_now().expect("stop_now");
            assert_eq!(report.unrun.len(), 2, "trial {trial}");
            rx.recv_timeout(common::LIMIT)
                .unwrap_or_else(|_| panic!("trial {trial}: wait_idle slept through stop_now"));
            waiter.join().expect("waiter");
            assert_eq!(ledger.total_runs(), 1);
        });
    }
}

/// `wait_idle_timeout` reports a busy pool as busy once its timeout has
/// passed (and not before), leaves the jobs alone, and reports the pool
/// idle as soon as the last job finishes; zero checks without waiting and
/// `Duration::MAX` waits like `wait_idle`.
#[test]
fn wait_idle_timeout_gives_up_at_its_deadline_and_sees_the_pool_go_idle() {
    guarded(|| {
        let ledger = Ledger::new(3);
        let latch = Latch::new();
        let pool = Arc::new(Pool::builder().workers(1).build().expect("pool"));
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        pool.submit(Probe::new(1, &ledger)).expect("submit");

        assert_eq!(pool.wait_idle_timeout(Duration::ZERO), Ok(false));
        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        assert_eq!(pool.wait_idle_timeout(timeout), Ok(false));
        assert!(
            start.elapsed() >= timeout,
            "gave up after {:?}, before its timeout",
            start.elapsed()
        );
        // The timeout cancelled nothing: the job is still running and the
        // queued one still queued.
        let stats = pool.stats();
        assert_eq!((stats.pending(), stats.queued_total()), (2, 1), "{stats:?}");

        // A waiter without a usable deadline returns once the pool is idle.
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                tx.send(pool.wait_idle_timeout(Duration::MAX))
                    .expect("test alive");
            })
        };
        assert!(
            rx.recv_timeout(STILL_WAITING).is_err(),
            "wait_idle_timeout(MAX) returned while a job was running"
        );
        latch.open();
        assert_eq!(
            rx.recv_timeout(common::LIMIT)
                .expect("wait_idle_timeout(MAX) never returned"),
            Ok(true)
        );
        waiter.join().expect("waiter");
        assert_eq!(ledger.total_runs(), 2);
        assert_eq!(pool.wait_idle_timeout(Duration::ZERO), Ok(true));

        // Still running: a new job makes it busy again, then idle.
        pool.submit(Probe::new(2, &ledger))
            .expect("pool still running");
        assert_eq!(pool.wait_idle_timeout(common::LIMIT), Ok(true));
        assert_eq!(ledger.runs(2), 1);
        assert!(pool.stop().expect("stop").is_clean());
    });
}
