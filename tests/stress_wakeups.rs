//! Lost wake-ups, hunted at full speed: a producer submits one job at a time
//! and waits for it to finish before the next, pausing a random 0–40 µs in
//! between, so each submit lands while the worker is somewhere different on
//! its way to sleep (running, spinning, registering as a sleeper, asleep).
//! A submit whose wake-up is lost leaves the only job queued and the worker
//! asleep for good: the per-job wait fails the test instead of hanging.
//!
//! The same for an urgent job and a reserved worker, and for a producer
//! blocked on a full lane (capacity 1) waiting for the worker to free it.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::guarded;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triage_pool::{FnJob, Pool, Priority};

/// Round trips per case: enough that every phase of the worker's way to
/// sleep is hit many times (each round trip that finds the worker asleep
/// costs a futex wake-up, tens of µs).
const ROUND_TRIPS: usize = if cfg!(debug_assertions) {
    20_000
} else {
    100_000
};

/// How long one job may take to be picked up and finish: only a lost
/// wake-up comes anywhere near it.
const PER_JOB: Duration = Duration::from_secs(10);

/// Spins for a random 0–40 µs, so submits land at every moment of the
/// worker's spin-then-sleep.
fn pause(rng: &mut StdRng) {
    let until = Instant::now() + Duration::from_nanos(rng.gen_range(0..40_000));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn round_trips(pool: &Pool<FnJob>, lane: Priority, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    for i in 0..ROUND_TRIPS {
        let done_tx = done_tx.clone();
        pool.submit_to(
            lane,
            FnJob::new(move |_| {
                done_tx.send(i).expect("test waits");
            }),
        )
        .expect("submit");
        match done_rx.recv_timeout(PER_JOB) {
            Ok(n) => assert_eq!(n, i),
            Err(_) => panic!("job {i} of {ROUND_TRIPS} in {lane:?} never ran: lost wake-up"),
        }
        pause(&mut rng);
    }
}

#[test]
fn one_job_at_a_time_always_wakes_a_general_worker() {
    guarded(|| {
        let pool = Pool::builder().workers(1).build().expect("build");
        round_trips(&pool, Priority::Normal, 1);
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, ROUND_TRIPS as u64);
    });
}

#[test]
fn one_urgent_job_at_a_time_always_wakes_the_reserved_worker() {
    guarded(|| {
        // The general worker is held in a job for the whole test: only the
        // reserved worker can take the urgent jobs.
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .reserved_urgent_workers(1)
            .build()
            .expect("build");
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel();
        pool.submit(FnJob::new(move |_| {
            held_tx.send(()).expect("test waits");
            let _ = release_rx.recv_timeout(common::LIMIT);
        }))
        .expect("submit the holding job");
        held_rx
            .recv_timeout(common::LIMIT)
            .expect("general worker held");
        round_trips(&pool, Priority::Urgent, 2);
        release_tx.send(()).expect("holding job waits");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, ROUND_TRIPS as u64 + 1);
    });
}

#[test]
fn a_producer_blocked_on_a_full_lane_is_always_woken() {
    guarded(|| {
        // Capacity 1: with one job queued and one running, the producer
        // blocks in `submit` until the worker frees the slot.
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 1)
            .build()
            .expect("build");
        let (done_tx, done_rx) = mpsc::channel();
        let producer = {
            let tx = pool.submitter();
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(3);
                for i in 0..ROUND_TRIPS {
                    let done_tx = done_tx.clone();
                    let spin = rng.gen_range(0..20_000_u64);
                    tx.submit(FnJob::new(move |_| {
                        let until = Instant::now() + Duration::from_nanos(spin);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        let _ = done_tx.send(i);
                    }))
                    .expect("submit");
                }
            })
        };
        for i in 0..ROUND_TRIPS {
            match done_rx.recv_timeout(PER_JOB) {
                Ok(n) => assert_eq!(n, i),
                Err(_) => panic!("job {i} of {ROUND_TRIPS} never ran: a wake-up was lost"),
            }
        }
        producer.join().expect("producer");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, ROUND_TRIPS as u64);
    });
}
