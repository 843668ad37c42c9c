//! Tests that kill mutants cargo-mutants found surviving in
//! `src/builder.rs`, `src/job.rs`, `src/unwind.rs` and `src/error.rs`:
//! behaviour the other tests did not pin down (a `Debug` form, the exact
//! limits of the builder's checks, ...). Each test says which mutant it
//! kills.

mod common;

use std::sync::mpsc;

use common::guarded;
use triage_pool::{Builder, Context, FnJob, Job, Pool, Priority};

/// Kills `Builder::fmt -> Ok(Default::default())` (builder.rs): the
/// builder's `Debug` form names the type and shows the settings given.
#[test]
fn builder_debug_shows_its_settings() {
    guarded(|| {
        let (workers, reserved, urgent, prefix) = (3_usize, 1_usize, 64_usize, "lab-feed");
        let builder = Pool::<FnJob>::builder()
            .workers(workers)
            .reserved_urgent_workers(reserved)
            .capacity(Priority::Urgent, urgent)
            .thread_name(prefix);
        let text = format!("{builder:?}");
        assert!(text.starts_with("Builder {"), "{text}");
        for field in [
            format!("workers: Some({workers})"),
            format!("reserved_urgent_workers: {reserved}"),
            format!("thread_name: {prefix:?}"),
        ] {
            assert!(text.contains(&field), "{field} missing from {text}");
        }
        // The capacity array starts with the Urgent lane's.
        assert!(text.contains(&format!("capacity: [{urgent}, ")), "{text}");
    });
}

/// Kills `replace > with >= in Builder::build` (the thread-count check,
/// builder.rs): exactly `MAX_WORKERS` threads are allowed. Checked without
/// starting thousands of threads: a stack no OS grants makes the first
/// spawn fail, which `build` reaches only if the count was accepted.
#[test]
fn exactly_max_workers_passes_the_thread_count_check() {
    guarded(|| {
        let max = Builder::<FnJob>::MAX_WORKERS;
        for (workers, reserved) in [(max, 0), (max - 1, 1)] {
            let err = Pool::<FnJob>::builder()
                .workers(workers)
                .reserved_urgent_workers(reserved)
                .stack_size(1 << 60)
                .build()
                .expect_err("a 2^60-byte stack was granted");
            assert!(
                err.is_spawn_failure(),
                "{workers} + {reserved} threads refused: {err}"
            );
        }
    });
}

/// Kills `replace > with >= in check_capacity` (builder.rs): a lane of
/// exactly `MAX_CAPACITY` slots passes the capacity check. A low-water
/// mark equal to the capacity, checked after it, makes `build` fail
/// before any lane is allocated; the error says which check refused.
#[test]
fn exactly_max_capacity_passes_the_capacity_check() {
    guarded(|| {
        let max = Builder::<FnJob>::MAX_CAPACITY;
        let err = Pool::<FnJob>::builder()
            .workers(1)
            .capacity(Priority::Urgent, max)
            .low_water(Priority::Urgent, max)
            .build()
            .expect_err("a low-water mark equal to the capacity was accepted");
        assert!(err.is_invalid_config(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("the urgent lane's low-water mark {max} must be below its capacity {max}")
        );
    });
}

/// A job in the lane it is given; reports the lane it was taken from.
struct InLane {
    lane: Priority,
    seen: mpsc::Sender<Priority>,
}

impl Job for InLane {
    type Error = String;

    fn run(&mut self, ctx: &Context) -> Result<(), String> {
        self.seen.send(ctx.lane()).map_err(|e| e.to_string())
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}

/// Kills `<impl Job for Box<J>>::priority -> Default::default()` (job.rs):
/// a boxed job keeps its inner job's lane, on its own and when submitted.
#[test]
fn a_boxed_job_is_queued_in_its_inner_jobs_lane() {
    guarded(|| {
        let pool: Pool<Box<dyn Job<Error = String>>> =
            Pool::builder().workers(1).build().expect("pool");
        let (tx, rx) = mpsc::channel();
        for lane in Priority::ALL {
            let boxed: Box<dyn Job<Error = String>> = Box::new(InLane {
                lane,
                seen: tx.clone(),
            });
            assert_eq!(boxed.priority(), lane);
            pool.submit(boxed).expect("submit");
            assert_eq!(rx.recv().expect("the job ran"), lane);
        }
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, Priority::ALL.len() as u64);
    });
}

/// Kills `<impl Debug for FnJob>::fmt -> Ok(Default::default())` (job.rs):
/// an `FnJob`'s `Debug` form shows its lane and whether it ran.
#[test]
fn fn_job_debug_shows_its_lane_and_whether_it_ran() {
    guarded(|| {
        let lane = Priority::Bulk;
        let fresh = FnJob::new(|_| ()).with_priority(lane);
        let text = format!("{fresh:?}");
        assert!(text.starts_with("FnJob {"), "{text}");
        assert!(text.contains(&format!("priority: {lane:?}")), "{text}");
        assert!(text.contains("spent: false"), "{text}");

        // A job that ran and failed comes back spent.
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        pool.submit(FnJob::fallible(|_| Err("refused")).with_priority(lane))
            .expect("submit");
        let report = pool.stop().expect("stop");
        let text = format!("{:?}", report.failed[0].job);
        assert!(text.contains("spent: true"), "{text}");
        assert!(text.contains(&format!("priority: {lane:?}")), "{text}");
    });
}

/// Kills `Context::is_reserved_worker -> true` (job.rs): a general worker
/// says it is not reserved. Only general workers take `Normal` and `Bulk`
/// jobs, so every such job runs on one, with or without reserved workers.
#[test]
fn jobs_on_general_workers_are_not_on_a_reserved_worker() {
    guarded(|| {
        for (workers, reserved) in [(2, 0), (1, 1)] {
            let pool: Pool<FnJob> = Pool::builder()
                .workers(workers)
                .reserved_urgent_workers(reserved)
                .build()
                .expect("pool");
            let (tx, rx) = mpsc::channel();
            for lane in [Priority::Normal, Priority::Bulk] {
                let tx = tx.clone();
                pool.submit_to(
                    lane,
                    FnJob::new(move |ctx: &Context| {
                        tx.send((ctx.worker_index(), ctx.is_reserved_worker()))
                            .expect("test waits");
                    }),
                )
                .expect("submit");
            }
            for _ in 0..2 {
                let (worker, is_reserved) = rx.recv().expect("the job ran");
                assert!(worker < workers, "general job on worker {worker}");
                assert!(!is_reserved, "general worker {worker} says it is reserved");
            }
            assert!(pool.stop().expect("stop").is_clean());
        }
    });
}
