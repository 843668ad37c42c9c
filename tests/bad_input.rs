//! Bad input to the builder: zero or absurd worker counts and capacities
//! (alone, and lanes too large only together),
//! a NUL byte in the thread name, and a stack size the OS refuses, each
//! give a clear `BuildError` — never a panic, an abort or a hang. (The
//! thread-count check after a spawn failure lives in `spawn_failure.rs`,
//! alone in its binary.)

mod common;

use std::error::Error;
use std::io;

use common::{guarded, proc_bytes, Probe};
use triage_pool::{BuildError, Builder, Context, FnJob, Job, Pool, Priority};

type B = Builder<FnJob>;

/// Builds, expecting a refusal of the configuration.
#[track_caller]
fn invalid(builder: B) -> BuildError {
    let err = builder.build().expect_err("invalid configuration accepted");
    assert!(err.is_invalid_config(), "{err:?}");
    assert!(!err.is_spawn_failure(), "{err:?}");
    assert!(err.source().is_none(), "{err:?}");
    err
}

#[test]
fn zero_workers_is_refused() {
    guarded(|| {
        let err = invalid(Pool::builder().workers(0));
        assert_eq!(err.to_string(), "a pool needs at least one worker");
        // Reserved urgent workers do not make up for zero general ones.
        let err = invalid(Pool::builder().workers(0).reserved_urgent_workers(2));
        assert_eq!(err.to_string(), "a pool needs at least one worker");
    });
}

#[test]
fn zero_capacity_is_refused_on_each_lane() {
    guarded(|| {
        for lane in Priority::ALL {
            let err = invalid(Pool::builder().workers(1).capacity(lane, 0));
            assert_eq!(
                err.to_string(),
                format!("the {lane} lane needs a capacity of at least 1")
            );
        }
    });
}

#[test]
fn capacity_above_the_maximum_is_refused() {
    guarded(|| {
        for capacity in [B::MAX_CAPACITY + 1, usize::MAX / 2, usize::MAX] {
            for lane in Priority::ALL {
                let err = invalid(Pool::builder().workers(1).capacity(lane, capacity));
                let text = err.to_string();
                assert!(
                    text.starts_with(&format!("the {lane} lane's capacity")),
                    "{text}"
                );
                assert!(text.contains(&capacity.to_string()), "{text}");
                assert!(text.contains(&B::MAX_CAPACITY.to_string()), "{text}");
            }
        }
    });
}

/// A job so large that even a modest lane cannot be preallocated: 1 GiB per
/// slot. Never constructed.
struct Huge {
    _bytes: [u8; 1 << 30],
}

impl Job for Huge {
    type Error = ();

    fn run(&mut self, _ctx: &Context) -> Result<(), ()> {
        Ok(())
    }
}

#[test]
fn capacity_whose_slots_cannot_fit_in_memory_is_refused() {
    guarded(|| {
        // Below MAX_CAPACITY, but 2^20 slots of 1 GiB is a petabyte: more
        // than any address space can hold, so no overcommit setting lets it
        // through to an abort in the channel's allocation.
        let capacity = 1 << 20;
        assert!(capacity <= Builder::<Huge>::MAX_CAPACITY);
        for lane in Priority::ALL {
            // The other lanes get one slot each (1 GiB, which does fit), so
            // the refusal is about `lane`.
            let mut builder = Pool::<Huge>::builder().workers(1);
            for other in Priority::ALL {
                builder = builder.capacity(other, 1);
            }
            let err = builder
                .capacity(lane, capacity)
                .build()
                .expect_err("a petabyte of slots accepted");
            assert!(err.is_invalid_config(), "{err:?}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "the {lane} lane's {capacity} slots cannot be allocated"
                )),
                "{text}"
            );
            // 2^20 slots of at least 1 GiB each: the bytes asked for, not a
            // maximum the capacity is below.
            assert!(!text.contains("maximum"), "{text}");
        }
        // And at MAX_CAPACITY itself: 64 PiB of slots.
        let err = Pool::<Huge>::builder()
            .workers(1)
            .capacity(Priority::Urgent, Builder::<Huge>::MAX_CAPACITY)
            .build()
            .expect_err("64 PiB of slots accepted");
        assert!(err.is_invalid_config(), "{err:?}");
    });
}

/// RAM plus swap in bytes, when the kernel refuses single allocations
/// larger than that (Linux's default heuristic overcommit, mode 0) and
/// grants smaller ones untouched; `None` elsewhere.
fn heuristic_overcommit_limit() -> Option<u64> {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
    if mode.trim() != "0" {
        return None;
    }
    let ram = proc_bytes("/proc/meminfo", "MemTotal:")?;
    Some(ram + proc_bytes("/proc/meminfo", "SwapTotal:")?)
}

#[test]
fn lanes_that_fit_alone_but_not_together_are_refused() {
    guarded(|| {
        let Some(limit) = heuristic_overcommit_limit() else {
            eprintln!("skipped: needs Linux with vm.overcommit_memory = 0");
            return;
        };
        // Each lane 60% of RAM + swap (granted alone, untouched), all
        // three 180% (refused): without the combined check the channels
        // would allocate one after another and the process would abort or
        // be killed. Slots of 1 GiB keep the memory a wrongly accepted
        // pool would touch (the channels' per-slot stamps) to a few pages.
        // The message tells the combined refusal from a per-lane one.
        let slots = (limit * 6 / 10).div_ceil(1 << 30) as usize;
        let mut builder = Pool::<Huge>::builder().workers(1);
        for lane in Priority::ALL {
            builder = builder.capacity(lane, slots);
        }
        let err = builder.build().expect_err("lanes over RAM + swap accepted");
        assert!(err.is_invalid_config(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("not all three together"), "{text}");
        assert!(text.contains(&format!("normal {slots}")), "{text}");
    });
}

#[test]
fn absurd_worker_counts_are_refused() {
    guarded(|| {
        let max = B::MAX_WORKERS;
        for (builder, workers, reserved) in [
            (Pool::builder().workers(usize::MAX), usize::MAX, 0),
            (Pool::builder().workers(max + 1), max + 1, 0),
            (
                Pool::builder().workers(max).reserved_urgent_workers(1),
                max,
                1,
            ),
            (
                // The sum would overflow: refused, and the message still
                // says what was asked for.
                Pool::builder()
                    .workers(1)
                    .reserved_urgent_workers(usize::MAX),
                1,
                usize::MAX,
            ),
        ] {
            let err = invalid(builder);
            assert_eq!(
                err.to_string(),
                format!(
                    "{workers} general and {reserved} reserved worker threads requested; \
                     at most {max} are allowed in all"
                )
            );
        }
    });
}

#[test]
fn a_stack_size_the_os_refuses_is_a_spawn_failure() {
    guarded(|| {
        // No OS gives a thread a 2^60-byte stack.
        let err = Pool::<FnJob>::builder()
            .workers(2)
            .thread_name("bad-stack")
            .stack_size(1 << 60)
            .build()
            .expect_err("a 2^60-byte stack was granted");
        assert!(err.is_spawn_failure(), "{err:?}");
        assert!(!err.is_invalid_config(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "failed to spawn worker thread \"bad-stack-0\""
        );
        let source = err.source().expect("the OS error as source");
        assert!(
            source.is::<io::Error>(),
            "source is not an io::Error: {source:?}"
        );
        // Boxes into the usual error type for `?`.
        let boxed: Box<dyn Error + Send + Sync> = Box::new(err);
        assert!(boxed.source().is_some());
    });
}

#[test]
fn a_valid_pool_builds_after_refused_ones() {
    guarded(|| {
        let ledger = common::Ledger::new(1);
        for _ in 0..3 {
            let _ = Pool::<Probe>::builder().workers(0).build();
            let _ = Pool::<Probe>::builder()
                .workers(1)
                .stack_size(1 << 60)
                .build();
        }
        let pool: Pool<Probe> = Pool::builder().workers(1).build().expect("build");
        pool.submit(Probe::new(0, &ledger)).expect("submit");
        assert_eq!(pool.stop().expect("stop").succeeded, 1);
        assert_eq!(ledger.runs(0), 1);
    });
}

#[test]
fn low_water_not_below_capacity_is_refused() {
    guarded(|| {
        for depth in [16, 17, usize::MAX] {
            let err = Pool::<Probe>::builder()
                .workers(1)
                .capacity(Priority::Bulk, 16)
                .low_water(Priority::Bulk, depth)
                .build()
                .expect_err("low-water mark not below capacity accepted");
            assert!(err.is_invalid_config());
            assert_eq!(
                err.to_string(),
                format!("the bulk lane's low-water mark {depth} must be below its capacity 16")
            );
        }
        let pool = Pool::<Probe>::builder()
            .workers(1)
            .capacity(Priority::Bulk, 16)
            .low_water(Priority::Bulk, 15)
            .build()
            .expect("15 is below 16");
        assert!(pool.stop().expect("stop").is_clean());
    });
}

#[test]
fn a_nul_byte_in_the_thread_name_is_refused_not_a_panic() {
    guarded(|| {
        // std's thread builder panics on such a name; the pool refuses it
        // before any thread starts.
        let err = invalid(Pool::builder().workers(1).thread_name("lab\0feed"));
        assert_eq!(
            err.to_string(),
            "the thread name prefix \"lab\\0feed\" contains a NUL byte"
        );
    });
}
