//! Guards against a pool whose `Drop` (or stop) returns before its workers
//! and their last jobs are done (rusty_pool 1.0's `join` could return before
//! the last job ran): after `drop(pool)` every job has run and been dropped,
//! every worker thread has ended, and the process thread count is back to
//! where it started.
//!
//! Thread counts are process-wide, so this file holds a single `#[test]`
//! that runs its scenarios one after another.

mod common;

use std::cell::RefCell;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{guarded, thread_count, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Context, Job, Pool, Priority};

thread_local! {
    /// A token a job leaves on its worker thread; the thread's TLS
    /// destructors drop it as the thread ends.
    static TOKEN: RefCell<Option<Arc<()>>> = const { RefCell::new(None) };
}

/// A probe that, when run, parks `token` in its worker's thread-local.
/// While any worker that ran one is alive, `Arc::strong_count(token) > 1`.
struct Pinned {
    probe: Probe,
    token: Option<Arc<()>>,
}

impl Pinned {
    fn new(probe: Probe) -> Pinned {
        Pinned { probe, token: None }
    }

    fn pin(mut self, token: &Arc<()>) -> Pinned {
        self.token = Some(Arc::clone(token));
        self
    }
}

impl Job for Pinned {
    type Error = usize;

    fn run(&mut self, ctx: &Context) -> Result<(), usize> {
        if let Some(token) = self.token.take() {
            TOKEN.with(|slot| *slot.borrow_mut() = Some(token));
        }
        self.probe.run(ctx)
    }

    fn priority(&self) -> Priority {
        self.probe.priority()
    }
}

/// How long the kernel may take to drop an exited (and joined) thread from
/// `/proc/self/task`; only a thread that never ends can exceed it.
const SETTLE: Duration = Duration::from_secs(10);

/// Threads in the process now.
fn threads() -> usize {
    thread_count().expect("/proc/self/task is readable on Linux")
}

/// Waits (bounded) until the thread count is `expected`. A joined thread
/// can linger in `/proc/self/task` for a moment after `pthread_join`
/// returns (the kernel wakes the joiner before unhashing the task), so a
/// strict one-shot read could fail spuriously.
#[track_caller]
fn settles_at(expected: usize, what: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = threads();
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} threads, expected {expected}"
        );
        thread::yield_now();
    }
}

/// Every general and reserved worker pins a token, then is released;
/// 300 mixed jobs are queued behind them; `drop(pool)` drains, joins and
/// drops everything.
fn drop_drains_and_joins_every_worker(base: usize) {
    const WORKERS: usize = 4;
    const RESERVED: usize = 2;
    const QUEUED: usize = 300;
    let ledger = Ledger::new(WORKERS + RESERVED + QUEUED);
    let token = Arc::new(());
    let latch = Latch::new();
    let held = Arrivals::new();
    let pool: Pool<Pinned> = Pool::builder()
        .workers(WORKERS)
        .reserved_urgent_workers(RESERVED)
        .capacity(Priority::Urgent, QUEUED)
        .capacity(Priority::Normal, QUEUED)
        .capacity(Priority::Bulk, QUEUED)
        .build()
        .expect("build pool");
    assert_eq!(
        threads(),
        base + WORKERS + RESERVED,
        "one thread per worker"
    );
    for id in 0..WORKERS + RESERVED {
        // General workers first (Normal), then the reserved ones (Urgent,
        // taken by a reserved worker since every general one is held).
        let lane = if id < WORKERS {
            Priority::Normal
        } else {
            Priority::Urgent
        };
        let probe = Probe::new(id, &ledger)
            .lane(lane)
            .action(Action::Wait(Arc::clone(&latch)))
            .started(&held);
        pool.submit(Pinned::new(probe).pin(&token)).expect("submit");
        held.wait_for(id + 1);
    }
    assert_eq!(Arc::strong_count(&token), 1 + WORKERS + RESERVED);
    for n in 0..QUEUED {
        let action = match n % 3 {
            0 => Action::Succeed,
            1 => Action::Fail,
            _ => Action::PanicStr,
        };
        let probe = Probe::new(WORKERS + RESERVED + n, &ledger)
            .lane(Priority::ALL[n % 3])
            .action(action);
        pool.submit(Pinned::new(probe)).expect("submit");
    }
    latch.open();
    drop(pool);

    // No waiting from here on: Drop must already have done it all.
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "a worker thread was still alive (TLS not destroyed) after drop(pool)"
    );
    for id in 0..WORKERS + RESERVED + QUEUED {
        assert_eq!(
            ledger.runs(id),
            1,
            "job {id} did not run before Drop returned"
        );
        assert_eq!(ledger.drops(id), 1, "job {id} not dropped by Drop");
    }
    settles_at(base, "after drop(pool)");
}

/// The last job is still running (and more are queued) when Drop starts;
/// Drop waits for it rather than returning early.
fn drop_waits_for_the_last_running_job(base: usize) {
    let ledger = Ledger::new(11);
    let token = Arc::new(());
    let latch = Latch::new();
    let started = Arrivals::new();
    let pool: Pool<Pinned> = Pool::builder().workers(1).build().expect("build");
    let watcher = pool.submitter();
    let last = Probe::new(0, &ledger)
        .action(Action::Wait(Arc::clone(&latch)))
        .started(&started);
    pool.submit(Pinned::new(last).pin(&token)).expect("submit");
    started.wait_for(1);
    for id in 1..11 {
        pool.submit(Pinned::new(Probe::new(id, &ledger)))
            .expect("submit");
    }
    // Opens the latch once Drop has begun (intake closed).
    let opener = {
        let latch = Arc::clone(&latch);
        thread::spawn(move || {
            assert!(
                common::wait_until(|| watcher.is_stopped(), common::LIMIT),
                "drop(pool) never closed intake"
            );
            latch.open();
        })
    };
    drop(pool);
    assert_eq!(Arc::strong_count(&token), 1, "worker outlived drop(pool)");
    for id in 0..11 {
        assert_eq!(
            ledger.runs(id),
            1,
            "job {id} had not run when Drop returned"
        );
        assert_eq!(ledger.drops(id), 1, "job {id}");
    }
    opener.join().expect("opener");
    settles_at(base, "after Drop waited for a running job");
}

/// Dropping a pool that a stop already stopped (stop_now with queued jobs
/// handed back) joins nothing twice and leaves nothing behind.
fn drop_after_stop_now(base: usize) {
    let ledger = Ledger::new(50);
    let latch = Latch::new();
    let started = Arrivals::new();
    let pool: Pool<Probe> = Pool::builder().workers(2).build().expect("build");
    for id in 0..2 {
        let holder = Probe::new(id, &ledger)
            .action(Action::Wait(Arc::clone(&latch)))
            .started(&started);
        pool.submit(holder).expect("submit");
    }
    started.wait_for(2);
    for id in 2..50 {
        pool.submit(Probe::new(id, &ledger)).expect("submit");
    }
    latch.open();
    let report = pool.stop_now().expect("stop_now");
    assert_eq!(report.total(), 50);
    drop(report);
    drop(pool);
    for id in 0..50 {
        assert_eq!(ledger.drops(id), 1, "job {id}");
        assert!(ledger.runs(id) <= 1);
    }
    settles_at(base, "after stop_now then drop");
}

/// A `stop_timeout` abandons a stuck job; Drop then returns without waiting
/// for it (documented) and its detached thread ends once the job is released.
fn abandoned_thread_ends_after_release(base: usize) {
    let ledger = Ledger::new(2);
    let latch = Latch::new();
    let started = Arrivals::new();
    let pool: Pool<Probe> = Pool::builder().workers(2).build().expect("build");
    let stuck = Probe::new(0, &ledger)
        .action(Action::Wait(Arc::clone(&latch)))
        .started(&started);
    pool.submit(stuck).expect("submit");
    started.wait_for(1);
    let report = pool.stop_timeout(Duration::from_millis(20)).expect("stop");
    assert_eq!(report.abandoned.len(), 1);
    drop(pool);
    settles_at(base + 1, "only the abandoned worker is left");
    assert_eq!(ledger.drops(0), 0, "the stuck job is still running");
    latch.open();
    settles_at(base, "after the abandoned job was released");
    assert_eq!((ledger.runs(0), ledger.drops(0)), (1, 1));
    // Untouched id: nothing ever created it.
    assert_eq!(ledger.drops(1), 0);
}

/// Many short-lived pools of every shape: no thread accumulates.
fn many_pools_leave_no_thread(base: usize) {
    for round in 0..40 {
        let workers = 1 + round % 4;
        let reserved = round % 3;
        let ledger = Ledger::new(20);
        let pool: Pool<Probe> = Pool::builder()
            .workers(workers)
            .reserved_urgent_workers(reserved)
            .build()
            .expect("build");
        for id in 0..20 {
            pool.submit(Probe::new(id, &ledger).lane(Priority::ALL[id % 3]))
                .expect("submit");
        }
        if round % 2 == 0 {
            drop(pool);
        } else {
            assert_eq!(pool.stop().expect("stop").succeeded, 20);
            drop(pool);
        }
        assert_eq!(ledger.total_runs(), 20);
        for id in 0..20 {
            assert_eq!(ledger.drops(id), 1, "round {round}, job {id}");
        }
    }
    settles_at(base, "after 40 pools");
}

#[test]
fn drop_joins_every_worker_and_the_thread_count_returns_to_its_start() {
    guarded(|| {
        let base = threads();
        drop_drains_and_joins_every_worker(base);
        drop_waits_for_the_last_running_job(base);
        drop_after_stop_now(base);
        abandoned_thread_ends_after_release(base);
        many_pools_leave_no_thread(base);
    });
}
