//! Large job types: a worker moves its job by value through a few stack
//! frames, so a job of a few hundred KiB used to overflow the default 2 MiB
//! worker stack and abort the process as soon as the pool was built. The
//! default stack now grows with the job type; a boxed job is a job too.
//! (This file is its own test binary: an overflow aborts the process.)

mod common;

use std::sync::mpsc;

use common::guarded;
use triage_pool::{Context, Job, Pool, Priority};

/// A job of `N` bytes.
struct Big<const N: usize>([u8; N]);

impl<const N: usize> Job for Big<N> {
    type Error = String;

    fn run(&mut self, _ctx: &Context) -> Result<(), String> {
        let sum: u64 = self.0.iter().map(|&b| u64::from(b)).sum();
        if sum == N as u64 {
            Ok(())
        } else {
            Err(format!("bytes damaged: sum {sum}"))
        }
    }
}

/// Runs `body` on a thread with a stack big enough for the producer's own
/// copies of a large job (a debug build keeps dozens), and returns its
/// result.
fn on_big_stack<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(body)
        .expect("spawn producer")
        .join()
        .expect("producer")
}

#[test]
fn a_half_megabyte_job_runs_with_the_default_stack() {
    guarded(|| {
        const N: usize = 512 << 10;
        let report = on_big_stack(|| {
            // Default stack size: no `stack_size` call.
            let pool: Pool<Big<N>> = Pool::builder()
                .workers(2)
                .capacity(Priority::Urgent, 1)
                .capacity(Priority::Normal, 2)
                .capacity(Priority::Bulk, 1)
                .build()
                .expect("pool");
            for _ in 0..4 {
                pool.submit(Big([1; N])).expect("submit");
            }
            let report = pool.stop().expect("stop");
            (report.succeeded, report.failed.len())
        });
        assert_eq!(report, (4, 0));
    });
}

#[test]
fn an_idle_pool_of_a_large_job_type_builds_and_stops() {
    guarded(|| {
        // Never submitted: the worker's frames are sized for the job anyway.
        // (The stop runs on a big stack too: it moves unrun jobs by value.)
        let clean = on_big_stack(|| {
            let pool: Pool<Big<{ 1 << 20 }>> = Pool::builder()
                .workers(1)
                .capacity(Priority::Urgent, 2)
                .capacity(Priority::Normal, 2)
                .capacity(Priority::Bulk, 2)
                .build()
                .expect("pool");
            pool.stop().expect("stop").is_clean()
        });
        assert!(clean);
    });
}

#[test]
fn boxed_jobs_of_different_types_share_a_pool() {
    guarded(|| {
        struct Note(mpsc::Sender<&'static str>);
        impl Job for Note {
            type Error = String;
            fn run(&mut self, _ctx: &Context) -> Result<(), String> {
                self.0.send("note").map_err(|e| e.to_string())
            }
            fn priority(&self) -> Priority {
                Priority::Urgent
            }
        }
        let pool: Pool<Box<dyn Job<Error = String>>> =
            Pool::builder().workers(1).build().expect("pool");
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(Note(tx))).expect("submit");
        // A large job boxed: only the pointer moves through the stacks.
        let bytes: Box<[u8; 1 << 20]> = vec![1; 1 << 20]
            .into_boxed_slice()
            .try_into()
            .expect("length");
        struct Blob(Box<[u8; 1 << 20]>);
        impl Job for Blob {
            type Error = String;
            fn run(&mut self, _ctx: &Context) -> Result<(), String> {
                Err(format!("blob of {} bytes refused", self.0.len()))
            }
        }
        pool.submit(Box::new(Blob(bytes))).expect("submit");
        let report = pool.stop().expect("stop");
        assert_eq!(rx.recv().expect("the note ran"), "note");
        assert_eq!(report.succeeded, 1);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].error, "blob of 1048576 bytes refused");
        assert_eq!(report.failed[0].job.priority(), Priority::Normal);
    });
}
