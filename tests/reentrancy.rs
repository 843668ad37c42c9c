//! Re-entrancy: a job that submits to, stops, or drops its own pool gets a
//! clear answer (`SubmitError::Full`, `StopError::OnWorkerThread`, a detached
//! drain) instead of deadlocking, and the pool keeps working.

mod common;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{guarded, Arrivals, Latch};
use triage_pool::{Context, FnJob, Pool, Priority, StopError};

/// What a submit from inside a job returned, reduced to plain data.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Full { message: String, job_intact: bool },
    Stopped,
    Timeout { waited_enough: bool },
}

#[test]
fn a_job_submitting_to_its_own_full_lane_gets_full_instead_of_blocking() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 2)
            .capacity(Priority::Urgent, 2)
            .build()
            .expect("build");
        let started = Arrivals::new();
        let go = Latch::new();
        let (answers_tx, answers_rx) = mpsc::channel();
        {
            let tx = pool.submitter();
            let (started, go) = (Arc::clone(&started), Arc::clone(&go));
            pool.submit(FnJob::new(move |_| {
                started.arrive();
                go.wait(); // the test fills the Normal lane meanwhile
                let full = |e: triage_pool::SubmitError<FnJob>| {
                    if e.is_full() {
                        Answer::Full {
                            message: e.to_string(),
                            job_intact: !e.into_inner().is_spent(),
                        }
                    } else {
                        Answer::Stopped
                    }
                };
                let answers = vec![
                    tx.submit(FnJob::new(|_| ()))
                        .map_or_else(full, |()| Answer::Ok),
                    tx.submit_to(Priority::Normal, FnJob::new(|_| ()))
                        .map_or_else(full, |()| Answer::Ok),
                    tx.try_submit(FnJob::new(|_| ()))
                        .map_or_else(full_try, |()| Answer::Ok),
                    {
                        // Bounded, so it may wait on a worker: it times out.
                        let timeout = Duration::from_millis(50);
                        let begin = Instant::now();
                        tx.submit_timeout(FnJob::new(|_| ()), timeout).map_or_else(
                            |e| {
                                if e.is_timeout() {
                                    Answer::Timeout {
                                        waited_enough: begin.elapsed() >= timeout,
                                    }
                                } else {
                                    Answer::Stopped
                                }
                            },
                            |()| Answer::Ok,
                        )
                    },
                    // Another lane has room: accepted.
                    tx.submit_to(Priority::Urgent, FnJob::new(|_| ()))
                        .map_or_else(full, |()| Answer::Ok),
                ];
                answers_tx.send(answers).expect("test alive");
            }))
            .expect("submit");
        }
        started.wait_for(1);
        for _ in 0..2 {
            pool.try_submit(FnJob::new(|_| ())).expect("room");
        }
        assert_eq!(pool.stats().queued(Priority::Normal), 2);
        go.open();

        let answers = answers_rx
            .recv_timeout(common::LIMIT)
            .expect("the job blocked on its own full lane");
        let full = Answer::Full {
            message: "the lane is full and the caller is one of the pool's own workers".into(),
            job_intact: true,
        };
        assert_eq!(answers[0], full, "submit");
        assert_eq!(answers[1], full, "submit_to");
        assert_eq!(
            answers[2],
            Answer::Full {
                message: "the lane is full".into(),
                job_intact: true
            },
            "try_submit"
        );
        assert_eq!(
            answers[3],
            Answer::Timeout {
                waited_enough: true
            },
            "submit_timeout"
        );
        assert_eq!(answers[4], Answer::Ok, "submit_to another lane");

        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 4);
        assert!(report.is_clean());
        assert_eq!(pool.stats().refused(), 4);
    });
}

#[test]
fn a_job_submitting_with_an_unbounded_timeout_to_its_own_full_lane_is_not_blocked() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 1)
            .build()
            .expect("build");
        let started = Arrivals::new();
        let go = Latch::new();
        let (answer_tx, answer_rx) = mpsc::channel();
        {
            let tx = pool.submitter();
            let (started, go) = (Arc::clone(&started), Arc::clone(&go));
            pool.submit(FnJob::new(move |_| {
                started.arrive();
                go.wait(); // the test fills the Normal lane meanwhile
                           // Documented to wait "like submit", which on a worker is
                           // refused at once: only this worker could make room.
                let answer = tx
                    .submit_timeout(FnJob::new(|_| ()), Duration::MAX)
                    .map_err(|e| e.is_timeout());
                answer_tx.send(answer).expect("test alive");
            }))
            .expect("submit");
        }
        started.wait_for(1);
        pool.try_submit(FnJob::new(|_| ())).expect("room");
        go.open();

        // A prompt refusal is expected; waiting 10 s means the only worker is
        // waiting for itself. Stop the pool then, which wakes it, and fail.
        let answer = answer_rx.recv_timeout(Duration::from_secs(10));
        let report = pool.stop().expect("stop");
        let answer = answer.unwrap_or_else(|_| {
            panic!("the job waited for room only its own worker could make: {report:?}")
        });
        assert_eq!(
            answer,
            Err(true),
            "refused as a timeout, like a zero timeout"
        );
    });
}

/// `Answer` for a `try_submit` refusal.
fn full_try(e: triage_pool::TrySubmitError<FnJob>) -> Answer {
    if e.is_full() {
        Answer::Full {
            message: e.to_string(),
            job_intact: !e.into_inner().is_spent(),
        }
    } else {
        Answer::Stopped
    }
}

#[test]
fn jobs_can_submit_follow_up_work_to_their_own_pool() {
    const CHAIN: usize = 20;
    fn link(tx: triage_pool::Submitter<FnJob>, n: usize, done: mpsc::Sender<usize>) -> FnJob {
        FnJob::new(move |_| {
            if n + 1 < CHAIN {
                let next = link(tx.clone(), n + 1, done.clone());
                tx.submit(next).expect("follow-up refused");
            }
            done.send(n).expect("test alive");
        })
    }
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(2).build().expect("build");
        let (done_tx, done_rx) = mpsc::channel();
        pool.submit(link(pool.submitter(), 0, done_tx))
            .expect("submit");
        let mut seen: Vec<usize> = (0..CHAIN)
            .map(|_| done_rx.recv_timeout(common::LIMIT).expect("chain broke"))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..CHAIN).collect::<Vec<_>>());
        assert_eq!(pool.stop().expect("stop").succeeded, CHAIN as u64);
    });
}

#[test]
fn a_job_stopping_its_own_pool_gets_on_worker_thread_and_the_pool_keeps_working() {
    guarded(|| {
        let pool: Arc<Pool<FnJob>> = Arc::new(Pool::builder().workers(2).build().expect("build"));
        let (tx, rx) = mpsc::channel();
        {
            let inner = Arc::clone(&pool);
            pool.submit(FnJob::new(move |_| {
                let answers = [
                    inner.stop().err(),
                    inner.stop_now().err(),
                    inner.stop_timeout(Duration::from_millis(10)).err(),
                    inner.stop_timeout(Duration::ZERO).err(),
                ];
                tx.send((answers, inner.is_stopped())).expect("test alive");
            }))
            .expect("submit");
        }
        let (answers, stopped) = rx.recv_timeout(common::LIMIT).expect("job deadlocked");
        for (n, answer) in answers.iter().enumerate() {
            assert_eq!(*answer, Some(StopError::OnWorkerThread), "stop call {n}");
        }
        assert!(!stopped, "a refused stop closed intake");
        assert_eq!(
            StopError::OnWorkerThread.to_string(),
            "a pool cannot be stopped or waited for from one of its own worker threads"
        );

        // Untouched: it takes and runs new work, and the refused stop_now
        // did not raise the cancel flag.
        assert!(!pool.is_stopped());
        let (tx, rx) = mpsc::channel();
        pool.submit(FnJob::new(move |ctx: &Context| {
            tx.send(ctx.is_cancelled()).expect("test alive");
        }))
        .expect("submit after the refused stops");
        assert!(!rx.recv_timeout(common::LIMIT).expect("job ran"));
        let report = pool.stop().expect("stop from the test thread");
        assert_eq!(report.succeeded, 2);
        assert!(report.is_clean());
    });
}

#[test]
fn a_job_may_stop_another_pool() {
    guarded(|| {
        let outer: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let other: Arc<Pool<FnJob>> = Arc::new(Pool::builder().workers(1).build().expect("build"));
        other.submit(FnJob::new(|_| ())).expect("submit");
        let (tx, rx) = mpsc::channel();
        {
            let other = Arc::clone(&other);
            outer
                .submit(FnJob::new(move |_| {
                    let succeeded = other.stop().map(|report| report.succeeded);
                    tx.send(succeeded).expect("test alive");
                }))
                .expect("submit");
        }
        assert_eq!(rx.recv_timeout(common::LIMIT).expect("job ran"), Ok(1));
        assert!(other.is_stopped());
        assert!(!outer.is_stopped());
        assert_eq!(outer.stop().expect("stop").succeeded, 1);
    });
}

#[test]
fn dropping_the_last_handle_inside_a_job_does_not_deadlock() {
    const FOLLOWERS: usize = 5;
    guarded(|| {
        let pool: Arc<Pool<FnJob>> = Arc::new(Pool::builder().workers(1).build().expect("build"));
        let submitter = pool.submitter();
        let latch = Latch::new();
        let (dropped_tx, dropped_rx) = mpsc::channel();
        {
            let inner = Arc::clone(&pool);
            let latch = Arc::clone(&latch);
            pool.submit(FnJob::new(move |_| {
                latch.wait();
                drop(inner); // the last `Pool` handle: Drop runs on the worker
                dropped_tx.send(()).expect("test alive");
            }))
            .expect("submit");
        }
        let (ran_tx, ran_rx) = mpsc::channel();
        for n in 0..FOLLOWERS {
            let ran_tx = ran_tx.clone();
            pool.submit(FnJob::new(move |_| ran_tx.send(n).expect("test alive")))
                .expect("submit");
        }
        drop(pool); // now only the job holds the pool
        latch.open();

        dropped_rx
            .recv_timeout(common::LIMIT)
            .expect("dropping the pool inside its own job deadlocked");
        // Intake closed, but the jobs accepted before still run (the
        // workers drain detached).
        let ran: Vec<usize> = (0..FOLLOWERS)
            .map(|_| ran_rx.recv_timeout(common::LIMIT).expect("queued job lost"))
            .collect();
        assert_eq!(ran, (0..FOLLOWERS).collect::<Vec<_>>());
        assert!(submitter.is_stopped());
        let refused = submitter
            .submit(FnJob::new(|_| ()))
            .expect_err("accepted after drop");
        assert!(refused.is_stopped());
    });
}
