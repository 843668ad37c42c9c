//! The smallest complete program: a pool of closures, a few jobs that
//! succeed, one that fails, one that panics, and the report at the end.
//!
//! Run with `cargo run --release --example quickstart` (`--release` reuses
//! the flagship example's build; a first debug build compiles every
//! dev-dependency of the crate, a few minutes on 2 cores).
//!
//! Expect one "thread 'triage-pool-…' panicked" message on stderr, from
//! Rust's default panic hook, as the panicking job runs: the pool catches
//! that panic, keeps the worker, and hands the job back in the report.

use triage_pool::{FnJob, Pool, Priority};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;

    for i in 0..10_u32 {
        pool.submit(FnJob::new(move |ctx| {
            println!("job {i} on worker {}", ctx.worker_index());
        }))?;
    }
    pool.submit(FnJob::fallible(|_| "not a number".parse::<u32>().map(drop)))?;
    pool.submit(FnJob::new(|_| {
        panic!("this job panics; the pool keeps going")
    }))?;
    pool.submit(FnJob::new(|_| println!("urgent job")).with_priority(Priority::Urgent))?;

    let report = pool.stop()?;
    println!("{report}"); // 13 jobs: 11 succeeded, 1 failed, 1 panicked, 0 unrun, 0 abandoned
    for failed in &report.failed {
        println!("failed on worker {}: {}", failed.worker, failed.error);
    }
    for panicked in &report.panicked {
        println!(
            "panicked on worker {}: {}",
            panicked.worker, panicked.message
        );
    }
    Ok(())
}
