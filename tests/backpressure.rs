//! Backpressure: a full lane refuses `try_submit`, blocks `submit` until the
//! lane drains to its low-water mark (a slot freeing is enough with
//! `low_water = capacity - 1`), makes `submit_timeout` give up at its
//! deadline, and never holds up a submit to another lane.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    block_workers, guarded, submit_in_thread, wait_blocked_in_submit, Action, Arrivals, Latch,
    Ledger, Probe,
};
use triage_pool::{Pool, Priority, SubmitTimeoutError, TrySubmitError};

/// Capacity of the lane under test.
const CAPACITY: usize = 4;

/// How long a check that "nothing happened yet" lets time pass. It can only
/// make a broken pool look correct, never the reverse. (Waiting for a
/// producer to block is not such a check: `wait_blocked_in_submit` waits
/// until it is asleep in the submit.)
const STILL_BLOCKED: Duration = Duration::from_millis(200);

/// A 1-worker pool whose lanes hold `CAPACITY` jobs each and wake blocked
/// producers as soon as a slot frees.
fn pool() -> Pool<Probe> {
    let mut builder = Pool::builder().workers(1);
    for lane in Priority::ALL {
        builder = builder
            .capacity(lane, CAPACITY)
            .low_water(lane, CAPACITY - 1);
    }
    builder.build().expect("build pool")
}

/// Fills the Normal lane with jobs `ids` (exactly `CAPACITY` of them).
fn fill_normal(pool: &Pool<Probe>, ledger: &Arc<Ledger>, ids: std::ops::Range<usize>) {
    assert_eq!(ids.len(), CAPACITY);
    for id in ids {
        pool.try_submit(Probe::new(id, ledger))
            .unwrap_or_else(|e| panic!("job {id} refused while the lane has room: {e}"));
    }
    assert_eq!(pool.stats().queued(Priority::Normal), CAPACITY);
}

#[test]
fn fifth_try_submit_is_refused_as_full_with_the_job_inside() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latch = Latch::new();
        let pool = pool();
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        fill_normal(&pool, &ledger, 1..5);

        let err = pool
            .try_submit(Probe::new(5, &ledger))
            .expect_err("5th job accepted into a lane of capacity 4");
        assert!(err.is_full(), "{err:?}");
        assert!(!err.is_stopped());
        assert!(matches!(err, TrySubmitError::Full(_)));
        assert_eq!(err.to_string(), "the lane is full");
        assert_eq!(format!("{err:?}"), "Full(..)");
        let job = err.into_inner();
        assert_eq!(job.id, 5);
        assert_eq!(pool.stats().queued(Priority::Normal), CAPACITY);
        assert_eq!(pool.stats().refused(), 1);
        drop(job);
        assert_eq!(
            ledger.drops(5),
            1,
            "the refused job is the caller's to drop"
        );

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 5);
        assert!(report.is_clean(), "{report:?}");
        for id in 0..5 {
            assert_eq!(ledger.runs(id), 1, "job {id}");
        }
        assert_eq!(ledger.runs(5), 0, "a refused job never runs");
    });
}

#[test]
fn blocked_submit_proceeds_as_soon_as_a_slot_frees() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let first = Latch::new();
        let second = Latch::new();
        let pool = Arc::new(pool());
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&first)));
        // Job 1 is next: when the worker takes it, exactly one slot frees
        // and the worker stays busy (at `second`), so the lane does not
        // drain any further until the test says so.
        let second_started = Arrivals::new();
        pool.try_submit(
            Probe::new(1, &ledger)
                .action(Action::Wait(Arc::clone(&second)))
                .started(&second_started),
        )
        .expect("room for job 1");
        for id in 2..5 {
            pool.try_submit(Probe::new(id, &ledger))
                .expect("room in the lane");
        }
        assert_eq!(pool.stats().queued(Priority::Normal), CAPACITY);

        let (done_rx, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(5, &ledger), |tx, job| {
                tx.submit(job).map_err(|e| e.into_inner().id)
            });
        // Jobs 0..=4 and the producer's: it is asleep waiting for room, so
        // only the slot freed below can let it proceed.
        wait_blocked_in_submit(&pool, 6, &[tid]);
        assert!(
            done_rx.try_recv().is_err(),
            "submit to a full lane returned instead of blocking"
        );

        first.open(); // the worker finishes job 0 and takes job 1: one slot frees
        second_started.wait_for(1);
        let result = done_rx
            .recv_timeout(common::LIMIT)
            .expect("blocked submit did not proceed once a slot freed");
        assert_eq!(result, Ok(()));
        producer.join().expect("producer");
        // The worker is still inside job 1, so job 5 took the freed slot.
        assert_eq!(pool.stats().queued(Priority::Normal), CAPACITY);
        assert_eq!(ledger.runs(5), 0);

        second.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
        assert_eq!(ledger.runs(5), 1, "the job a blocked submit handed in ran");
    });
}

#[test]
fn submit_timeout_gives_the_job_back_after_the_deadline() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latch = Latch::new();
        let pool = pool();
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        fill_normal(&pool, &ledger, 1..5);

        let timeout = Duration::from_millis(300);
        let begin = Instant::now();
        let err = pool
            .submit_timeout(Probe::new(5, &ledger), timeout)
            .expect_err("accepted into a full lane");
        let waited = begin.elapsed();
        assert!(err.is_timeout(), "{err:?}");
        assert!(!err.is_stopped());
        assert!(matches!(err, SubmitTimeoutError::Timeout(_)));
        assert_eq!(err.to_string(), "the lane was still full at the deadline");
        assert_eq!(format!("{err:?}"), "Timeout(..)");
        assert_eq!(err.into_inner().id, 5);
        assert!(
            waited >= timeout,
            "gave up after {waited:?}, before {timeout:?}"
        );
        assert!(
            waited < timeout + Duration::from_secs(10),
            "gave up only after {waited:?}"
        );
        assert_eq!(pool.stats().refused(), 1);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 5);
        assert_eq!(ledger.runs(5), 0);
        assert_eq!(ledger.drops(5), 1);
    });
}

#[test]
fn submit_timeout_proceeds_when_a_slot_frees_before_the_deadline() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latch = Latch::new();
        let pool = Arc::new(pool());
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        fill_normal(&pool, &ledger, 1..5);

        let (done_rx, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(5, &ledger), |tx, job| {
                tx.submit_timeout(job, common::LIMIT)
                    .map_err(|e| e.into_inner().id)
            });
        // Jobs 0..=4 and the producer's: it is asleep waiting for room.
        wait_blocked_in_submit(&pool, 6, &[tid]);
        assert!(
            done_rx.try_recv().is_err(),
            "submit_timeout to a full lane returned before its deadline"
        );
        latch.open();
        assert_eq!(
            done_rx.recv_timeout(common::LIMIT).expect("no answer"),
            Ok(())
        );
        producer.join().expect("producer");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
        assert_eq!(ledger.runs(5), 1);
    });
}

#[test]
fn zero_timeout_tries_once() {
    guarded(|| {
        let ledger = Ledger::new(7);
        let latch = Latch::new();
        let pool = pool();
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));

        // Room: accepted at once.
        pool.submit_timeout(Probe::new(1, &ledger), Duration::ZERO)
            .expect("zero timeout refused a job although the lane has room");
        assert_eq!(pool.stats().queued(Priority::Normal), 1);
        for id in 2..5 {
            pool.try_submit(Probe::new(id, &ledger))
                .expect("room in the lane");
        }

        // Full: refused as Timeout (not Full), without waiting.
        let begin = Instant::now();
        let err = pool
            .submit_timeout(Probe::new(5, &ledger), Duration::ZERO)
            .expect_err("accepted into a full lane");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(err.into_inner().id, 5);
        assert!(
            begin.elapsed() < Duration::from_secs(5),
            "a zero timeout waited {:?}",
            begin.elapsed()
        );
        // The `_to` variant with a zero timeout behaves the same.
        let err = pool
            .submit_timeout_to(Priority::Normal, Probe::new(6, &ledger), Duration::ZERO)
            .expect_err("accepted into a full lane");
        assert!(err.is_timeout());
        assert_eq!(err.into_inner().id, 6);
        assert_eq!(pool.stats().refused(), 2);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 5);
        assert_eq!((ledger.runs(5), ledger.runs(6)), (0, 0));
    });
}

#[test]
fn max_timeout_waits_like_submit() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latch = Latch::new();
        let pool = Arc::new(pool());
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        fill_normal(&pool, &ledger, 1..5);

        // Must neither overflow (panic) nor give up.
        let (done_rx, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(5, &ledger), |tx, job| {
                tx.submit_timeout(job, Duration::MAX)
                    .map_err(|e| (e.is_timeout(), e.into_inner().id))
            });
        wait_blocked_in_submit(&pool, 6, &[tid]);
        assert!(
            done_rx.try_recv().is_err(),
            "submit_timeout(Duration::MAX) on a full lane returned at once"
        );
        latch.open();
        assert_eq!(
            done_rx.recv_timeout(common::LIMIT).expect("no answer"),
            Ok(())
        );
        producer
            .join()
            .expect("producer panicked (duration overflow?)");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
        assert_eq!(ledger.runs(5), 1);
    });
}

#[test]
fn full_normal_lane_does_not_block_urgent_submits() {
    guarded(|| {
        let ledger = Ledger::new(9);
        let latch = Latch::new();
        let pool = pool();
        block_workers(&pool, &ledger, 0..1, &Action::Wait(Arc::clone(&latch)));
        fill_normal(&pool, &ledger, 1..5);
        assert!(pool
            .try_submit(Probe::new(8, &ledger))
            .expect_err("normal lane is full")
            .is_full());

        // Each of these would block or be refused if lanes shared capacity.
        pool.try_submit(Probe::new(5, &ledger).lane(Priority::Urgent))
            .expect("urgent try_submit refused behind a full normal lane");
        pool.submit_timeout(
            Probe::new(6, &ledger).lane(Priority::Urgent),
            Duration::ZERO,
        )
        .expect("urgent submit_timeout refused behind a full normal lane");
        pool.submit(Probe::new(7, &ledger).lane(Priority::Urgent))
            .expect("urgent submit refused behind a full normal lane");
        let stats = pool.stats();
        assert_eq!(stats.queued(Priority::Urgent), 3);
        assert_eq!(stats.queued(Priority::Normal), CAPACITY);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 8);
        // And the urgent jobs ran before the normal backlog.
        assert_eq!(ledger.starts(), vec![0, 5, 6, 7, 1, 2, 3, 4]);
    });
}

#[test]
fn by_default_a_blocked_submit_waits_for_the_lane_to_drain_to_half() {
    guarded(|| {
        let ledger = Ledger::new(6);
        let latches: Vec<_> = (0..3).map(|_| Latch::new()).collect();
        let started = Arrivals::new();
        // Default low-water mark: half of CAPACITY.
        let pool = Arc::new(
            Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, CAPACITY)
                .build()
                .expect("build pool"),
        );
        // Jobs 0, 1, 2 each hold the only worker until their latch opens;
        // 3 and 4 are quick. Job 0 runs, 1..=4 fill the lane.
        let job = |id: usize| {
            let probe = Probe::new(id, &ledger).started(&started);
            match latches.get(id) {
                Some(latch) => probe.action(Action::Wait(Arc::clone(latch))),
                None => probe,
            }
        };
        pool.submit(job(0)).expect("submit");
        started.wait_for(1);
        for id in 1..5 {
            pool.try_submit(job(id)).expect("room in the lane");
        }
        let (done_rx, producer, tid) =
            submit_in_thread(pool.submitter(), Probe::new(5, &ledger), |tx, job| {
                tx.submit(job).map_err(|e| e.into_inner().id)
            });
        // Jobs 0..=4 and the producer's: it is asleep waiting for room.
        wait_blocked_in_submit(&pool, 6, &[tid]);
        assert!(done_rx.try_recv().is_err(), "full lane did not block");

        // One slot frees (depth 3 of 4): above the low-water mark of 2.
        latches[0].open();
        started.wait_for(2);
        assert_eq!(pool.stats().queued(Priority::Normal), 3);
        assert!(
            done_rx.recv_timeout(STILL_BLOCKED).is_err(),
            "woken before the lane drained to its low-water mark"
        );

        // A second slot frees (depth 2): the producer is woken and enqueues.
        latches[1].open();
        started.wait_for(3);
        let result = done_rx
            .recv_timeout(common::LIMIT)
            .expect("blocked submit not woken at the low-water mark");
        assert_eq!(result, Ok(()));
        producer.join().expect("producer");
        assert_eq!(pool.stats().queued(Priority::Normal), 3);

        latches[2].open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 6);
    });
}
