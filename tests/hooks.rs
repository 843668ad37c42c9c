//! Worker lifecycle hooks: `on_worker_start` runs on every worker thread
//! before its first job, `on_worker_stop` after its last, before the stop
//! (or `Drop`) that joins it returns; a panicking hook is contained.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
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
            "hooked-u2".to_owned()
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
        assert!(pool.stop().expect("stop").is_clean());
        // stop() joined the workers: every stop hook has run.
        check_log(&log);
    });
}

/// Linux shows only the first 15 bytes of a thread name to `top -H`, `ps`
/// and debuggers: with the default prefix every worker, general or
/// reserved, must still be told apart there.
#[cfg(target_os = "linux")]
#[test]
fn default_thread_names_stay_distinct_in_the_os() {
    guarded(|| {
        let names: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let seen = Arc::clone(&names);
        let pool: Pool<FnJob> = Pool::builder()
            .workers(12)
            .reserved_urgent_workers(90)
            .on_worker_start(move |worker| {
                let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
                seen.lock()
                    .expect("names")
                    .push((worker, comm.trim_end().to_owned()));
            })
            .build()
            .expect("pool");
        assert!(pool.stop().expect("stop").is_clean());
        let mut names = names.lock().expect("names").clone();
        names.sort();
        assert_eq!(names.len(), 102);
        assert_eq!(names[0].1, "triage-pool-0");
        assert_eq!(names[11].1, "triage-pool-11");
        assert_eq!(names[12].1, "triage-pool-u12");
        assert_eq!(names[101].1, "triage-pool-u101"[..15]);
        let distinct: BTreeSet<&str> = names[..100].iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(distinct.len(), 100, "{names:?}");
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
        // The first two jobs wait for each other, so each worker runs one:
        // both survived their start hook's panic.
        let together = common::Arrivals::new();
        for n in 0..20 {
            let (tx, together) = (tx.clone(), Arc::clone(&together));
            pool.submit(FnJob::new(move |ctx| {
                if n < 2 {
                    together.arrive();
                    together.wait_for(2);
                }
                tx.send(ctx.worker_index()).expect("alive")
            }))
            .expect("submit");
        }
        drop(tx);
        let ran_on: Vec<usize> = (0..20)
            .map(|_| {
                rx.recv_timeout(common::LIMIT)
                    .expect("workers ran jobs after their start hook panicked")
            })
            .collect();
        assert_eq!(
            ran_on.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([0, 1]),
            "every worker runs jobs after its start hook panicked"
        );
        let report = pool
            .stop()
            .expect("stop returns although the stop hooks panic");
        assert_eq!(report.succeeded, 20);
        assert!(report.is_clean());
    });
}

// ---------------------------------------------------------------------------
// on_worker_idle

thread_local! {
    /// Job ids a worker has run and not yet flushed.
    static BATCH: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pool whose jobs stage their id in a per-worker batch that only the idle
/// hook flushes (to `flushed`, with one message per flush on `flushes`).
fn batching_pool(
    workers: usize,
    flushed: &Arc<Mutex<Vec<usize>>>,
    flushes: std::sync::mpsc::Sender<(usize, usize)>,
) -> Pool<FnJob> {
    let flushed = Arc::clone(flushed);
    let flushes = Mutex::new(flushes);
    Pool::builder()
        .workers(workers)
        .reserved_urgent_workers(1)
        .on_worker_idle(move |worker| {
            let batch = BATCH.with(|batch| std::mem::take(&mut *batch.borrow_mut()));
            let size = batch.len();
            flushed.lock().expect("flushed").extend(batch);
            let _ = flushes.lock().expect("flushes").send((worker, size));
        })
        .build()
        .expect("pool")
}

fn staging(id: usize) -> FnJob {
    FnJob::new(move |_| BATCH.with(|batch| batch.borrow_mut().push(id)))
}

fn sorted(ids: &Arc<Mutex<Vec<usize>>>) -> Vec<usize> {
    let mut ids = ids.lock().expect("ids").clone();
    ids.sort_unstable();
    ids
}

#[test]
fn idle_hook_flushes_when_the_pool_runs_out_of_work_without_a_stop() {
    guarded(|| {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = batching_pool(2, &flushed, tx);
        for round in 0..3 {
            let ids: Vec<usize> = (round * 100..(round + 1) * 100).collect();
            for &id in &ids {
                pool.submit(staging(id)).expect("submit");
            }
            // Every staged id reaches `flushed` through idle hooks alone.
            while flushed.lock().expect("flushed").len() < (round + 1) * 100 {
                let (worker, _) = rx
                    .recv_timeout(common::LIMIT)
                    .expect("an idle hook flushed the rest of the batch");
                assert!(
                    worker < 2,
                    "the reserved worker ran no job, so it never flushes"
                );
            }
            assert_eq!(sorted(&flushed), (0..(round + 1) * 100).collect::<Vec<_>>());
        }
        assert!(pool.stop().expect("stop").is_clean());
        assert_eq!(
            flushed.lock().expect("flushed").len(),
            300,
            "nothing flushed twice"
        );
    });
}

#[test]
fn idle_hook_runs_once_per_stretch_of_work() {
    guarded(|| {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = batching_pool(1, &flushed, tx);
        for id in 0..3 {
            pool.submit(staging(id)).expect("submit");
            let flush = rx
                .recv_timeout(common::LIMIT)
                .expect("the worker went idle");
            assert_eq!(flush, (0, 1), "one job, one flush");
        }
        // The worker ran nothing since its last flush: stopping it (which
        // wakes it, and it exits) must not call the hook again.
        assert!(pool.stop().expect("stop").is_clean());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![]);
        assert_eq!(sorted(&flushed), vec![0, 1, 2]);
    });
}

#[test]
fn idle_hook_flushes_whatever_ran_before_any_stop_returns() {
    guarded(|| {
        for variant in ["stop", "stop_now", "stop_timeout", "drop"] {
            let flushed = Arc::new(Mutex::new(Vec::new()));
            let (tx, _rx) = std::sync::mpsc::channel();
            let pool = batching_pool(2, &flushed, tx);
            let latch = common::Latch::new();
            // Hold both general workers so that a backlog builds up; each
            // blocker stages its own id first.
            let started = common::Arrivals::new();
            for id in 0..2 {
                let (latch, started) = (Arc::clone(&latch), Arc::clone(&started));
                pool.submit(FnJob::new(move |_| {
                    BATCH.with(|batch| batch.borrow_mut().push(id));
                    started.arrive();
                    latch.wait();
                }))
                .expect("submit");
            }
            started.wait_for(2);
            for id in 2..200 {
                pool.submit(staging(id)).expect("submit");
            }
            let ran = match variant {
                "drop" => {
                    latch.open();
                    drop(pool);
                    200
                }
                _ => {
                    let opener = {
                        let latch = Arc::clone(&latch);
                        std::thread::spawn(move || latch.open())
                    };
                    let report = match variant {
                        "stop" => pool.stop(),
                        "stop_now" => pool.stop_now(),
                        _ => pool.stop_timeout(common::LIMIT),
                    }
                    .expect("stop");
                    opener.join().expect("opener");
                    assert!(report.failed.is_empty() && report.panicked.is_empty());
                    report.succeeded as usize
                }
            };
            let flushed = sorted(&flushed);
            assert_eq!(
                flushed.len(),
                ran,
                "{variant}: every job that ran was flushed once"
            );
            assert_eq!(flushed, {
                let mut all: Vec<usize> = flushed.clone();
                all.dedup();
                all
            });
        }
    });
}

#[test]
fn panicking_idle_hook_is_contained() {
    guarded(|| {
        let idle_panics = Arc::new(AtomicUsize::new(0));
        let pool: Pool<FnJob> = Pool::builder()
            .workers(1)
            .on_worker_idle({
                let idle_panics = Arc::clone(&idle_panics);
                move |worker| {
                    idle_panics.fetch_add(1, Ordering::SeqCst);
                    panic!("idle hook of {worker}")
                }
            })
            .build()
            .expect("pool");
        // Each round's job runs on the only worker after its idle hook
        // panicked in the round before (the fourth job after the third).
        for round in 0..4 {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.submit(FnJob::new(move |_| tx.send(round).expect("alive")))
                .expect("submit");
            assert_eq!(
                rx.recv_timeout(common::LIMIT),
                Ok(round),
                "the worker died in its idle hook"
            );
            pool.wait_idle().expect("not on a worker");
            if round < 3 {
                assert!(
                    common::wait_until(
                        || idle_panics.load(Ordering::SeqCst) > round,
                        common::LIMIT
                    ),
                    "the idle hook never ran after job {round}"
                );
            }
        }
        assert_eq!(pool.stop().expect("stop").succeeded, 4);
    });
}

/// A cloned builder keeps every setting, hooks included: two pools built
/// from one template both run its start and stop hooks, with their own
/// thread names and worker counts.
#[test]
fn a_cloned_builder_keeps_its_hooks_and_settings() {
    guarded(|| {
        let names = Arc::new(Mutex::new(Vec::new()));
        let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let template = {
            let (names, starts, stops) =
                (Arc::clone(&names), Arc::clone(&starts), Arc::clone(&stops));
            Pool::<FnJob>::builder()
                .workers(2)
                .capacity(Priority::Bulk, 3)
                .on_worker_start(move |_| {
                    starts.fetch_add(1, Ordering::SeqCst);
                    let name = std::thread::current().name().map(str::to_owned);
                    names
                        .lock()
                        .expect("names")
                        .push(name.expect("named worker"));
                })
                .on_worker_stop(move |_| {
                    stops.fetch_add(1, Ordering::SeqCst);
                })
        };
        let first = template
            .clone()
            .thread_name("first")
            .build()
            .expect("first");
        let second = template.thread_name("second").build().expect("second");
        for pool in [&first, &second] {
            assert_eq!(pool.stats().workers(), 2);
            assert_eq!(pool.stats().capacity(Priority::Bulk), 3);
        }
        assert!(first.stop().expect("stop first").is_clean());
        assert!(second.stop().expect("stop second").is_clean());
        assert_eq!(starts.load(Ordering::SeqCst), 4);
        assert_eq!(stops.load(Ordering::SeqCst), 4);
        let names = names.lock().expect("names");
        for prefix in ["first", "second"] {
            assert_eq!(
                names.iter().filter(|n| n.starts_with(prefix)).count(),
                2,
                "{names:?}"
            );
        }
    });
}
