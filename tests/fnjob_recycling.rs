//! `FnJob` reuses the boxes of closures that ran (the recycling bin
//! documented on `FnJob`): once the bin holds as many boxes as a stream of
//! one closure type ever has alive at once, the stream allocates nothing,
//! and a reused box runs the closure it was given, never the one it held
//! before — across closure types, sizes the bin does not keep, failures and
//! panics.
//!
//! The counting allocator is global to this binary, so the tests here take
//! `SERIAL` (under `cargo test` they would otherwise run at once).

mod common;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Arrivals, Latch, Ledger};
use counting_alloc::ALLOCATIONS;
use triage_pool::{Context, FnJob, Pool, Priority};

/// One test at a time in this binary: the allocation count is global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Jobs counted.
const MEASURED: usize = 100_000;

/// Workers of the pool, and the `Normal` lane's default capacity.
const WORKERS: usize = 2;
const NORMAL_CAPACITY: usize = 1024;

/// What a job of the stream shares with the test.
struct Shared {
    done: AtomicUsize,
    /// Jobs made with `hold` arrive here, then wait for `gate`.
    held: Arc<Arrivals>,
    gate: Arc<Latch>,
}

/// The one closure type of the stream: counts its run, after holding its
/// worker until the gate opens if `hold`.
fn job(shared: &Arc<Shared>, hold: bool) -> FnJob {
    let shared = Arc::clone(shared);
    FnJob::new(move |_| {
        if hold {
            shared.held.arrive();
            shared.gate.wait();
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    })
}

/// Submits `n` jobs and waits until every one has run.
fn stream(pool: &Pool<FnJob>, shared: &Arc<Shared>, n: usize) {
    let start = shared.done.load(Ordering::Relaxed);
    for _ in 0..n {
        assert!(pool.submit(job(shared, false)).is_ok());
    }
    pool.wait_idle().expect("wait_idle");
    assert_eq!(shared.done.load(Ordering::Relaxed), start + n);
}

#[test]
fn a_steady_stream_of_one_closure_type_allocates_no_boxes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(WORKERS).build().expect("pool");
        assert_eq!(pool.stats().capacity(Priority::Normal), NORMAL_CAPACITY);
        let shared = Arc::new(Shared {
            done: AtomicUsize::new(0),
            held: Arrivals::new(),
            gate: Latch::new(),
        });
        // Warm-up at the stream's peak: every worker holds a job, the lane
        // is full, and the producer holds the job the full lane refused. A
        // stream never has more of its `FnJob`s alive at once, so once these
        // boxes are in the bin it never finds the bin empty.
        for _ in 0..WORKERS {
            assert!(pool.submit(job(&shared, true)).is_ok());
        }
        shared.held.wait_for(WORKERS);
        let refused = loop {
            match pool.try_submit(job(&shared, false)) {
                Ok(()) => {}
                Err(refused) if refused.is_full() => break refused.into_inner(),
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        };
        assert_eq!(pool.stats().queued(Priority::Normal), NORMAL_CAPACITY);
        shared.gate.open();
        assert!(pool.submit(refused).is_ok());
        pool.wait_idle().expect("wait_idle");
        assert_eq!(
            shared.done.load(Ordering::Relaxed),
            WORKERS + NORMAL_CAPACITY + 1
        );
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        stream(&pool, &shared, MEASURED);
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        // Without the bin every job would allocate its box.
        assert_eq!(
            allocated, 0,
            "{allocated} allocations for {MEASURED} jobs of one closure type"
        );
        assert!(pool.stop().expect("stop").is_clean());
    });
}

/// Bytes a large closure captures: more than the bin keeps.
const LARGE: usize = 96;

#[test]
fn every_job_runs_its_own_closure_whatever_box_it_got() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::guarded(|| {
        const PER_KIND: usize = 10_000;
        // Job i of kind k has id k * PER_KIND + i.
        let runs = Ledger::new(4 * PER_KIND);
        let pool: Pool<FnJob> = Pool::builder().workers(2).build().expect("pool");
        for i in 0..PER_KIND {
            // Kind 0: a small closure; kind 1: another small closure type,
            // capturing differently; kind 2: too large for the bin; kind 3:
            // fallible, failing or panicking now and then.
            let ledger = Arc::clone(&runs);
            assert!(pool
                .submit(FnJob::new(move |_| {
                    ledger.record_run(i);
                }))
                .is_ok());
            let ledger = Arc::clone(&runs);
            let tag = (i as u64, i as u32);
            assert!(pool
                .submit(FnJob::new(move |_| {
                    let (a, b) = tag;
                    assert_eq!(a, u64::from(b));
                    ledger.record_run(PER_KIND + a as usize);
                }))
                .is_ok());
            let ledger = Arc::clone(&runs);
            let payload = [i as u8; LARGE];
            assert!(pool
                .submit(FnJob::new(move |_| {
                    assert!(payload.iter().all(|&b| b == i as u8));
                    ledger.record_run(2 * PER_KIND + i);
                }))
                .is_ok());
            let ledger = Arc::clone(&runs);
            assert!(pool
                .submit(FnJob::fallible(move |_| {
                    ledger.record_run(3 * PER_KIND + i);
                    match i % 10 {
                        3 => Err(format!("job {i} failed")),
                        7 => panic!("job {i} panicked"),
                        _ => Ok(()),
                    }
                }))
                .is_ok());
        }
        let report = pool.stop().expect("stop");
        for id in 0..4 * PER_KIND {
            let (kind, i) = (id / PER_KIND, id % PER_KIND);
            assert_eq!(runs.runs(id), 1, "job {i} of kind {kind}");
        }
        let failing = PER_KIND / 10;
        assert_eq!(report.succeeded as usize, 4 * PER_KIND - 2 * failing);
        assert_eq!(report.failed.len(), failing);
        assert_eq!(report.panicked.len(), failing);
        for failed in &report.failed {
            let text = failed.error.to_string();
            assert!(
                text.starts_with("job ") && text.ends_with(" failed"),
                "{text}"
            );
        }
        assert_eq!(report.unrun.len(), 0);
    });
}

/// Sequential jobs per closure size in the size test.
const SEQUENTIAL: usize = 1_000;

/// Allocations made by `SEQUENTIAL` jobs run one at a time (each submitted
/// once the one before has run, so one box is ever needed), after one
/// job that puts a box of this closure type in the bin.
fn allocations_one_at_a_time<F>(pool: &Pool<FnJob>, make: impl Fn() -> F) -> usize
where
    F: FnOnce(&Context) + Send + 'static,
{
    let run_one = |f: F| {
        assert!(pool.submit(FnJob::new(f)).is_ok());
        pool.wait_idle().expect("wait_idle");
    };
    run_one(make());
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..SEQUENTIAL {
        run_one(make());
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn closures_up_to_the_documented_size_are_recycled_and_larger_ones_are_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        let count = Arc::new(AtomicUsize::new(0));

        // 48 bytes, no spare bit pattern: the box's marker adds 8 bytes.
        let small = || {
            let words = [7_u64; 6];
            move |_: &Context| {
                std::hint::black_box(&words);
            }
        };
        assert_eq!(std::mem::size_of_val(&small()), 48);
        assert_eq!(allocations_one_at_a_time(&pool, small), 0, "48 bytes");

        // 64 bytes including an `Arc`, whose never-null pointer holds the
        // marker: exactly 64 with it, still recycled.
        let full = || {
            let count = Arc::clone(&count);
            let bytes = [1_u8; 56];
            move |_: &Context| {
                std::hint::black_box(&bytes);
                count.fetch_add(1, Ordering::Relaxed);
            }
        };
        assert_eq!(std::mem::size_of_val(&full()), 64);
        assert_eq!(
            allocations_one_at_a_time(&pool, full),
            0,
            "64 bytes with a niche"
        );

        // 64 bytes with no spare bit pattern: 72 with the marker, never
        // recycled, so each job allocates its box.
        let large = || {
            let words = [3_u64; 8];
            move |_: &Context| {
                std::hint::black_box(&words);
            }
        };
        assert_eq!(std::mem::size_of_val(&large()), 64);
        assert!(
            allocations_one_at_a_time(&pool, large) >= SEQUENTIAL,
            "72 bytes"
        );

        assert_eq!(count.load(Ordering::Relaxed), SEQUENTIAL + 1);
        assert!(pool.stop().expect("stop").is_clean());
    });
}
