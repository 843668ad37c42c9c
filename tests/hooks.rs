//! Worker lifecycle hooks: `on_worker_start` runs on every worker thread
//! before its first job, `on_worker_stop` after its last, before the stop
//! (or `Drop`) that joins it returns; a panicking hook is contained.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::guarded;
use triage_pool::{FnJob, Pool, Priority};

thread_local! {
    /// Set by the start hook on the thread it runs on.
    static OPENED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// (hook, worker index, thread name) triples, in the order they ran.
type Log = Arc<Mutex<Vec<(&'static str, usize, String)>>>;

fn record(log: &Log, hook: &'static str, worker: usize) {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    log.lock().expect("log").push((hook, worker, name));
}

fn hooked_pool(log: &Log) -> Pool<FnJob> {
    let (start, stop) = (Arc::clone(log), Arc::clone(log));
    Pool::builder()
        .workers(2)
        .reserved_urgent_workers(1)
        .thread_name("hooked")
        .on_worker_start(move |worker| {
            OPENED.with(|opened| opened.set(Some(worker)));
            record(&start, "start", worker);
        })
        .on_worker_stop(move |worker| {
            assert_eq!(
                OPENED.with(Cell::get),
                Some(worker),
                "stop hook on another thread"
            );
            record(&stop, "stop", worker);
        })
        .build()
        .expect("pool")
}

fn check_log(log: &Log) {
    let log = log.lock().expect("log").clone();
    for hook in ["start", "stop"] {
        let workers: Vec<usize> = log.iter().filter(|e| e.0 == hook).map(|e| e.1).collect();
        assert_eq!(
            workers.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([0, 1, 2]),
            "{hook} hooks: {log:?}"
        );
        assert_eq!(workers.len(), 3, "each {hook} hook runs once: {log:?}");
    }
    for (hook, worker, name) in &log {
        let expected = if *worker == 2 {
            "hooked-urgent-2".to_owned()
        } else {
            format!("hooked-{worker}")
        };
        assert_eq!(
            name, &expected,
            "{hook} hook of worker {worker} ran on {name}"
        );
    }
}

#[test]
fn hooks_run_once_per_worker_on_its_thread_around_its_jobs() {
    guarded(|| {
        let log: Log = Arc::default();
        let pool = hooked_pool(&log);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            let lane = if i % 10 == 0 {
                Priority::Urgent
            } else {
                Priority::Normal
            };
            pool.submit(
                FnJob::new(move |ctx| {
                    // The start hook ran on this thread before any job.
                    let opened = OPENED.with(Cell::get);
                    tx.send(opened == Some(ctx.worker_index()))
                        .expect("test alive");
                })
                .with_priority(lane),
            )
            .expect("submit");
        }
        drop(tx);
        assert!(
            rx.iter().all(|opened| opened),
            "a job ran before its worker's start hook"
        );
        pool.stop().expect("stop");
        // stop() joined the workers: every stop hook has run.
        check_log(&log);
    });
}

#[test]
fn drop_returns_after_the_stop_hooks() {
    guarded(|| {
        let log: Log = Arc::default();
        let pool = hooked_pool(&log);
        pool.submit(FnJob::new(|_| ())).expect("submit");
        drop(pool);
        check_log(&log);
    });
}

#[test]
fn panicking_hooks_are_contained() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(2)
            .on_worker_start(|worker| panic!("start hook of {worker}"))
            .on_worker_stop(|worker| panic!("stop hook of {worker}"))
            .build()
            .expect("pool");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..20 {
            let tx = tx.clone();
            pool.submit(FnJob::new(move |ctx| {
                tx.send(ctx.worker_index()).expect("alive")
            }))
            .expect("submit");
        }
        drop(tx);
        assert_eq!(
            rx.iter().count(),
            20,
            "workers ran jobs after their start hook panicked"
        );
        assert_eq!(pool.stats().workers(), 2);
        let report = pool
            .stop()
            .expect("stop returns although the stop hooks panic");
        assert_eq!(report.succeeded, 20);
        assert!(report.is_clean());
    });
}
