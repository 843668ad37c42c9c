//! A pool dropped on its own worker thread drains detached; jobs that fail
//! in that drain have nobody to receive them, so they must be dropped (with
//! their `Drop` panics contained) when the pool's state goes, not leaked and
//! not allowed to panic out of a `Drop`. Alone in its binary: it counts the
//! process's threads.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use common::{guarded, Latch};
use triage_pool::{Context, Pool};

/// Name of the thread that drops the pool's last handle.
const LAST_HANDLE: &str = "last-handle";

/// A job that fails or succeeds as told, counts (and optionally panics in)
/// its own `Drop`, and may hold the last handle of its own pool, which it
/// drops while running.
struct Tracked {
    fail: bool,
    panic_on_drop: bool,
    drops: Arc<AtomicUsize>,
    ran: mpsc::Sender<()>,
    last_handle: Option<(Arc<Pool<Tracked>>, Arc<Latch>)>,
}

impl triage_pool::Job for Tracked {
    type Error = String;
    fn run(&mut self, _ctx: &Context) -> Result<(), String> {
        if let Some((pool, latch)) = self.last_handle.take() {
            latch.wait();
            drop(pool); // Drop of the pool, on its own worker
        }
        self.ran.send(()).expect("test alive");
        if self.fail {
            Err("told to fail".into())
        } else {
            Ok(())
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_drop {
            panic!("Tracked::drop told to panic");
        }
    }
}

#[test]
fn jobs_failing_after_the_pool_was_dropped_on_its_own_worker_are_dropped_not_leaked() {
    const FAILING: usize = 4;
    guarded(|| {
        // The failed jobs' `Drop` panics happen (contained) on the thread
        // that drops the last handle: a thread of its own, kept quiet.
        common::quiet_panics_on(LAST_HANDLE);
        let threads_before = common::thread_count();
        let pool: Arc<Pool<Tracked>> = Arc::new(Pool::builder().workers(1).build().expect("build"));
        let submitter = pool.submitter();
        let drops = Arc::new(AtomicUsize::new(0));
        let (ran_tx, ran_rx) = mpsc::channel();
        let latch = Latch::new();
        let tracked = |fail: bool, panic_on_drop: bool| Tracked {
            fail,
            panic_on_drop,
            drops: Arc::clone(&drops),
            ran: ran_tx.clone(),
            last_handle: None,
        };
        let mut first = tracked(false, false);
        first.last_handle = Some((Arc::clone(&pool), Arc::clone(&latch)));
        pool.submit(first).expect("submit");
        for n in 0..FAILING {
            pool.submit(tracked(true, n == 0)).expect("submit");
        }
        drop(pool); // now the first job holds the last `Pool` handle
        latch.open();
        for _ in 0..=FAILING {
            ran_rx
                .recv_timeout(common::LIMIT)
                .expect("the detached drain runs every accepted job");
        }
        // Let the detached worker exit, so the last reference to the pool's
        // state is `submitter`, dropped here: the failed jobs nobody could
        // collect are dropped then, their `Drop` panic contained.
        if let Some(before) = threads_before {
            let deadline = Instant::now() + common::LIMIT;
            while common::thread_count() != Some(before) {
                assert!(
                    Instant::now() < deadline,
                    "the detached worker never exited"
                );
                std::thread::yield_now();
            }
            assert_eq!(
                drops.load(Ordering::SeqCst),
                1,
                "only the succeeded job is gone yet"
            );
        }
        thread::Builder::new()
            .name(LAST_HANDLE.into())
            .spawn(move || drop(submitter))
            .expect("spawn")
            .join()
            .expect("dropping the last handle contains the jobs' Drop panics");
        let deadline = Instant::now() + common::LIMIT;
        while drops.load(Ordering::SeqCst) < 1 + FAILING {
            assert!(Instant::now() < deadline, "failed jobs leaked: {drops:?}");
            std::thread::yield_now();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1 + FAILING);
    });
}
