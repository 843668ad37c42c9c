//! Model checks of the pool's own protocol under `loom`: intake gate vs
//! stop, drain, lane choice, counters, wake-ups, concurrent stops. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models` (see
//! RELIABILITY.md for the bounds). The real pool code runs here; only the
//! lane queue is swapped for a `Mutex + VecDeque` model (src/sync.rs).
//!
//! Each model was shown to catch a deliberately injected bug; the comment
//! on each says which one and how it failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loom::sync::{Condvar, Mutex};

use crate::{Context, Job, Pool, Priority, StopReport, SubmitError};

/// Per-id run counters, checked after every thread was joined (so plain
/// std atomics are enough: the model's joins order them).
#[derive(Debug, Default)]
struct Runs([AtomicUsize; 4]);

impl Runs {
    fn get(&self, id: usize) -> usize {
        self.0[id].load(Ordering::SeqCst)
    }
}

/// A job that counts its run and, optionally, opens a latch.
struct Probe {
    id: usize,
    lane: Priority,
    runs: Arc<Runs>,
    done: Option<Arc<(Mutex<usize>, Condvar)>>,
}

impl Probe {
    fn new(id: usize, lane: Priority, runs: &Arc<Runs>) -> Probe {
        Probe {
            id,
            lane,
            runs: Arc::clone(runs),
            done: None,
        }
    }
}

impl Job for Probe {
    type Error = ();

    fn run(&mut self, _ctx: &Context) -> Result<(), ()> {
        self.runs.0[self.id].fetch_add(1, Ordering::SeqCst);
        if let Some(done) = &self.done {
            *done.0.lock().unwrap() += 1;
            done.1.notify_all();
        }
        Ok(())
    }

    fn priority(&self) -> Priority {
        self.lane
    }
}

/// Runs `f` under loom with the preemption bound from `LOOM_MAX_PREEMPTIONS`,
/// or 3 (what CI uses: every model finishes in seconds) if it is not set.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    model_capped(usize::MAX, f);
}

/// [`model`] with the preemption bound capped at `cap`, for a model whose
/// state space at the CI bound takes too long (set
/// `TRIAGE_LOOM_UNCAPPED=1` to run it at the full bound by hand).
fn model_capped<F: Fn() + Sync + Send + 'static>(cap: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    let bound = builder.preemption_bound.unwrap_or(3);
    builder.preemption_bound = Some(if std::env::var_os("TRIAGE_LOOM_UNCAPPED").is_some() {
        bound
    } else {
        bound.min(cap)
    });
    builder.check(f);
}

fn pool(capacity: usize) -> Pool<Probe> {
    Pool::builder()
        .workers(1)
        .capacity(Priority::Urgent, capacity)
        .capacity(Priority::Normal, capacity)
        .capacity(Priority::Bulk, capacity)
        .strict_priority()
        .build()
        .expect("pool")
}

/// Every id in `ids` ran exactly once, or came back unrun, or was refused
/// — exactly one of the three.
fn accounted_once(ids: &[usize], runs: &Runs, reports: &[&StopReport<Probe>], refused: &[usize]) {
    for &id in ids {
        let unrun = reports
            .iter()
            .flat_map(|r| r.unrun.iter())
            .filter(|u| u.job.id == id)
            .count();
        let refused = refused.iter().filter(|&&r| r == id).count();
        assert_eq!(
            runs.get(id) + unrun + refused,
            1,
            "job {id}: ran {} unrun {unrun} refused {refused}",
            runs.get(id)
        );
    }
}

/// A submit racing `stop()`: each job runs once or is handed back, never
/// both, never neither; a submit blocked on the full lane is woken.
///
/// Injected bug: `Lanes::seal` not waiting for the submits still inside the
/// gate (the `while state != CLOSED` loop removed) — loom found an
/// execution where job 1 landed in its lane after the final drain: neither
/// run, nor unrun, nor refused.
#[test]
fn submit_races_stop() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = Arc::new(pool(1));
        let producer = {
            let pool = Arc::clone(&pool);
            let runs = Arc::clone(&runs);
            loom::thread::spawn(move || {
                let mut refused = Vec::new();
                for id in 0..2 {
                    if let Err(e) = pool.submit(Probe::new(id, Priority::Normal, &runs)) {
                        assert!(e.is_stopped());
                        refused.push(e.into_inner().id);
                    }
                }
                refused
            })
        };
        let report = pool.stop().expect("stop");
        let refused = producer.join().unwrap();
        accounted_once(&[0, 1], &runs, &[&report], &refused);
        let stats = pool.stats();
        assert_eq!(stats.accepted(), stats.finished());
        assert_eq!(stats.refused(), refused.len() as u64);
    });
}

/// A job submitted to an idle pool is picked up: the worker's sleep never
/// misses the submit's wake-up (the Dekker pair in src/lanes.rs).
///
/// Injected bug: removing the re-check of the lanes after registering as a
/// sleeper in `Lanes::take` — loom reported a deadlock (the worker asleep
/// with the job queued, the main thread waiting for it).
#[test]
fn no_lost_wakeup() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = pool(2);
        let done = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let mut job = Probe::new(0, Priority::Normal, &runs);
        job.done = Some(Arc::clone(&done));
        pool.submit(job).expect("submit");
        let mut finished = done.0.lock().unwrap();
        while *finished == 0 {
            finished = done.1.wait(finished).unwrap();
        }
        drop(finished);
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 1);
        assert_eq!(runs.get(0), 1);
    });
}

/// A producer blocked on a full lane is woken when the worker frees room
/// (not only by a stop): three blocking submits through a one-slot lane all
/// run before anyone stops the pool.
///
/// Injected bug: removing both wake-ups of blocked producers (the check in
/// `Lanes::freed_slot` and the `room` loop before `group.cv.wait` in
/// `Lanes::take`) — loom reported a deadlock. (Either one alone suffices
/// under the model: its lock-based queue makes the relaxed check in
/// `freed_slot` always see the registration. The idle-path wake-up is what
/// covers a stale read with the lock-free production queue.)
#[test]
fn blocked_producer_is_woken() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = Arc::new(pool(1));
        let done = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let producer = {
            let pool = Arc::clone(&pool);
            let runs = Arc::clone(&runs);
            let done = Arc::clone(&done);
            loom::thread::spawn(move || {
                for id in 0..3 {
                    let mut job = Probe::new(id, Priority::Normal, &runs);
                    job.done = Some(Arc::clone(&done));
                    pool.submit(job).expect("not stopped");
                }
            })
        };
        let mut finished = done.0.lock().unwrap();
        while *finished < 3 {
            finished = done.1.wait(finished).unwrap();
        }
        drop(finished);
        producer.join().unwrap();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 3);
    });
}

/// `wait_idle` returns once the last job finished, never sleeping through
/// the worker's wake-up.
///
/// Injected bug: removing both wake-ups of idle waiters (the
/// `wake_idle_waiters` call at the end of `worker::record` and `idle` in
/// the wake-up loop before `group.cv.wait` in `Lanes::take`) — loom
/// reported a deadlock.
#[test]
fn wait_idle_sees_the_last_job() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = pool(2);
        pool.submit(Probe::new(0, Priority::Normal, &runs))
            .expect("submit");
        pool.submit(Probe::new(1, Priority::Urgent, &runs))
            .expect("submit");
        pool.wait_idle().expect("not on a worker");
        assert_eq!((runs.get(0), runs.get(1)), (1, 1));
        assert_eq!(pool.stats().pending(), 0);
        assert_eq!(pool.stop().expect("stop").succeeded, 2);
    });
}

/// `wait_idle` racing `stop_now`: the jobs the stop hands back are counted
/// after the worker exited, and the waiter must still see the ledger
/// balance and return.
///
/// Injected bug: removing the wake-up at the end of `Pool::collect` (the
/// `wake_idle_waiters_fenced` call after the unrun count) — loom reported
/// a deadlock: the waiter re-checked on the worker's exit, saw the handed-
/// back job still pending and slept for good. (The same bug, found first
/// by `tests/wait_idle.rs`, was in the pool until 2026-11-26.) Found in 4 s
/// at bound 2; the model runs at bound 2 (about a minute), since bound 3
/// takes over ten minutes on 2 cores.
#[test]
fn wait_idle_races_stop_now() {
    model_capped(2, || {
        let runs = Arc::new(Runs::default());
        let pool = Arc::new(pool(2));
        pool.submit(Probe::new(0, Priority::Normal, &runs))
            .expect("submit");
        let waiter = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || pool.wait_idle().expect("not on a worker"))
        };
        let report = pool.stop_now().expect("stop_now");
        waiter.join().unwrap();
        accounted_once(&[0], &runs, &[&report], &[]);
        assert_eq!(pool.stats().pending(), 0);
    });
}

/// `wait_idle` racing a submit refused on a full lane: the refusal takes
/// its acceptance back after the worker went to sleep, and must wake the
/// waiter itself.
///
/// Injected bug: the take-back's wake-up in `Lanes::push` back to the
/// relaxed `wake_idle_waiters` (as it was until 2026-11-26) — loom reported
/// a deadlock: the waiter asleep, the worker asleep, the refuser gone.
/// Found by a review; at bound 2, like `wait_idle_races_stop_now`.
#[test]
fn wait_idle_races_a_full_refusal() {
    model_capped(2, || {
        let runs = Arc::new(Runs::default());
        let pool = Arc::new(pool(1));
        pool.submit(Probe::new(0, Priority::Normal, &runs))
            .expect("submit");
        let refuser = {
            let pool = Arc::clone(&pool);
            let runs = Arc::clone(&runs);
            loom::thread::spawn(move || {
                pool.try_submit(Probe::new(1, Priority::Normal, &runs))
                    .is_ok()
            })
        };
        pool.wait_idle().expect("not on a worker");
        let accepted = refuser.join().unwrap();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 1 + u64::from(accepted));
        assert_eq!(runs.get(1), usize::from(accepted));
    });
}

/// `wait_idle` racing the end of the last job on a pool with an
/// `on_worker_idle` hook that only returns once `wait_idle` has: the
/// worker's wake-up of the waiter after recording the job must not depend
/// on the hook returning first.
///
/// Injected bug: the fenced wake-up before the idle hook (`Lanes::take`)
/// removed, as it was until 2026-11-26 — loom reported a deadlock: the
/// worker's relaxed check after recording the job missed the waiter (its
/// registration not yet visible), the hook then waited for the waiter, and
/// the waiter slept on. Found by a review; the model takes well under a
/// second at the CI bound.
#[test]
fn wait_idle_races_an_idle_hook_that_waits_for_it() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let hook_released = Arc::clone(&released);
        let pool: Pool<Probe> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 1)
            .strict_priority()
            .on_worker_idle(move |_| {
                let (lock, cv) = &*hook_released;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            })
            .build()
            .expect("pool");
        pool.submit(Probe::new(0, Priority::Normal, &runs))
            .expect("submit");
        pool.wait_idle().expect("not on a worker");
        assert_eq!(runs.get(0), 1);
        {
            let (lock, cv) = &*released;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert_eq!(pool.stop().expect("stop").succeeded, 1);
    });
}

/// Like `wait_idle_races_an_idle_hook_that_waits_for_it`, but the worker
/// leaves its loop through a concurrent `stop_now`'s `discard` after its
/// last job, so its idle hook runs from the worker's exit path instead of
/// `Lanes::take`'s idle path: `wait_idle` must still return without
/// waiting for the hook (and the stop then finishes).
///
/// Injected bug: the fenced wake-up on the worker's exit path (before its
/// hooks, in `worker::run`) removed, as it was until 2026-11-27 — loom
/// reported a deadlock in 2 s: the worker's relaxed check after its last
/// job missed the waiter, the hook waited for the waiter, the waiter slept
/// on, and `stop_now` waited for the worker. Found by a review. Bound
/// capped at 2 (about a minute and a half; 3 takes over a quarter of an
/// hour).
#[test]
fn wait_idle_races_a_discarding_stop_and_a_hook_that_waits_for_it() {
    model_capped(2, || {
        let runs = Arc::new(Runs::default());
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let hook_released = Arc::clone(&released);
        let pool: Pool<Probe> = Pool::builder()
            .workers(1)
            .capacity(Priority::Normal, 1)
            .strict_priority()
            .on_worker_idle(move |_| {
                let (lock, cv) = &*hook_released;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            })
            .build()
            .expect("pool");
        let pool = Arc::new(pool);
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let mut job = Probe::new(0, Priority::Normal, &runs);
        job.done = Some(Arc::clone(&started));
        pool.submit(job).expect("submit");
        let stopper = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                // Once the job runs, the stop cannot hand it back: the pool
                // is idle as soon as the job is recorded.
                let (lock, cv) = &*started;
                let mut n = lock.lock().unwrap();
                while *n == 0 {
                    n = cv.wait(n).unwrap();
                }
                drop(n);
                pool.stop_now().expect("stop_now").succeeded
            })
        };
        pool.wait_idle().expect("not on a worker");
        assert_eq!(runs.get(0), 1);
        {
            let (lock, cv) = &*released;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert_eq!(stopper.join().unwrap(), 1);
    });
}

/// `stop_now` racing a running worker and both lanes: queued jobs come back
/// unrun in lane order, the rest ran once, counters balance.
///
/// Injected bug: `Lanes::drain` skipping the Urgent lane — loom found the
/// urgent job neither run nor unrun.
#[test]
fn stop_now_drains_every_lane() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = pool(2);
        pool.submit(Probe::new(0, Priority::Bulk, &runs))
            .expect("submit");
        pool.submit(Probe::new(1, Priority::Urgent, &runs))
            .expect("submit");
        pool.submit(Probe::new(2, Priority::Normal, &runs))
            .expect("submit");
        let report = pool.stop_now().expect("stop_now");
        accounted_once(&[0, 1, 2], &runs, &[&report], &[]);
        let lanes: Vec<Priority> = report.unrun.iter().map(|u| u.lane).collect();
        let mut sorted = lanes.clone();
        sorted.sort_by_key(|lane| lane.index());
        assert_eq!(lanes, sorted, "unrun not in lane order");
        let stats = pool.stats();
        assert_eq!(stats.accepted(), 3);
        assert_eq!(stats.succeeded() + stats.unrun(), 3);
    });
}

/// Two stops at once, then Drop: exactly one call gets the jobs, both
/// return, every job is accounted for once.
///
/// Injected bug: letting a second caller in the `Stopping` phase return
/// at once instead of waiting for `stopped` (src/pool.rs `shutdown`) —
/// loom found the second caller returning while the worker was still
/// alive (the `live == 0` assertion below).
#[test]
fn concurrent_stops_then_drop() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool = Arc::new(pool(2));
        pool.submit(Probe::new(0, Priority::Normal, &runs))
            .expect("submit");
        let other = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                let report = pool.stop_now().expect("stop_now");
                // Whoever returns, the workers are gone.
                assert_eq!(*pool.shared().live.lock(), 0);
                report
            })
        };
        let mine = pool.stop().expect("stop");
        assert_eq!(*pool.shared().live.lock(), 0);
        let theirs = other.join().unwrap();
        assert!(
            mine.total() == 0 || theirs.total() == 0,
            "both calls got jobs"
        );
        accounted_once(&[0], &runs, &[&mine, &theirs], &[]);
        drop(pool);
    });
}

/// A job submitting to its own full lane is refused instead of blocking
/// forever (the only worker would wait for itself).
///
/// Injected bug: letting `submit_to` block on worker threads
/// (`Wait::Until(None)` regardless of `on_worker_of`, src/pool.rs) — loom
/// reported a deadlock: the parent blocked on its full lane, the main
/// thread waiting for the parent.
#[test]
fn reentrant_submit_never_blocks() {
    struct Parent {
        tx: Arc<std::sync::Mutex<Option<crate::Submitter<Parent>>>>,
        full: Arc<AtomicUsize>,
        done: Option<Arc<(Mutex<bool>, Condvar)>>,
    }
    impl Job for Parent {
        type Error = ();
        fn run(&mut self, _ctx: &Context) -> Result<(), ()> {
            let Some(done) = self.done.take() else {
                return Ok(()); // a child
            };
            let tx = self.tx.lock().unwrap().clone().expect("submitter");
            for _ in 0..2 {
                let child = Parent {
                    tx: Arc::clone(&self.tx),
                    full: Arc::clone(&self.full),
                    done: None,
                };
                match tx.submit(child) {
                    Ok(()) => {}
                    Err(SubmitError::Full(_)) => {
                        self.full.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(SubmitError::Stopped(_)) => unreachable!("no stop before done"),
                }
            }
            *done.0.lock().unwrap() = true;
            done.1.notify_all();
            Ok(())
        }
    }
    model(|| {
        let tx = Arc::new(std::sync::Mutex::new(None));
        let full = Arc::new(AtomicUsize::new(0));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let pool: Pool<Parent> = pool_of(1);
        *tx.lock().unwrap() = Some(pool.submitter());
        pool.submit(Parent {
            tx: Arc::clone(&tx),
            full: Arc::clone(&full),
            done: Some(Arc::clone(&done)),
        })
        .expect("submit");
        // Wait for the parent before stopping: nothing else can wake it.
        let mut finished = done.0.lock().unwrap();
        while !*finished {
            finished = done.1.wait(finished).unwrap();
        }
        drop(finished);
        let report = pool.stop().expect("stop");
        // One worker, busy with the parent, and capacity 1: the first child
        // fits, the second is refused as Full.
        assert_eq!(full.load(Ordering::SeqCst), 1);
        assert_eq!(report.succeeded, 2);
        tx.lock().unwrap().take();
    });
}

fn pool_of<J: Job>(capacity: usize) -> Pool<J> {
    Pool::builder()
        .workers(1)
        .capacity(Priority::Normal, capacity)
        .build()
        .expect("pool")
}

/// `stop_timeout` whose deadline has passed, racing the end of a running job
/// and a worker about to take a queued one (the stop waits out a worker that
/// holds a job it has not committed to): each job is exactly one of succeeded,
/// abandoned (still running at the deadline) or unrun — never two, never none —
/// the ledger balances, and once a second stop has joined the abandoned worker
/// every abandoned job has run exactly once. The worker runs with the
/// starvation bound (not strict priority, as the other models), so its aging
/// path runs here too.
///
/// Injected bug: the worker's end-of-job compare-exchange replaced by a
/// plain store of `IDLE` that never reports the job abandoned
/// (src/worker.rs, "Abandoning a job") — loom found the job counted both
/// as succeeded and abandoned: the ledger assertion
/// `accepted == finished` below failed. Second injection: the stop's wait
/// for a worker in the `STARTING` state removed, so it may abandon a job
/// the worker has not committed to (src/pool.rs, `abandon_running`) — the
/// same assertion failed (the worker's later store of its running state
/// overwrote `ABANDONED`, and the job was counted both ways).
#[test]
fn abandon_races_job_end() {
    model(|| {
        let runs = Arc::new(Runs::default());
        let pool: Pool<Probe> = Pool::builder()
            .workers(1)
            .capacity(Priority::Urgent, 1)
            .capacity(Priority::Normal, 1)
            .capacity(Priority::Bulk, 1)
            .starvation_bound(1)
            .build()
            .expect("pool");
        pool.submit(Probe::new(0, Priority::Urgent, &runs))
            .expect("submit");
        pool.submit(Probe::new(1, Priority::Bulk, &runs))
            .expect("submit");
        let report = pool
            .stop_timeout(std::time::Duration::ZERO)
            .expect("stop_timeout");
        let stats = pool.stats();
        assert_eq!(
            report.succeeded as usize + report.unrun.len() + report.abandoned.len(),
            2,
            "{report:?}"
        );
        assert!(report.abandoned.len() <= 1, "one worker: {report:?}");
        for unrun in &report.unrun {
            assert_eq!(
                runs.get(unrun.job.id),
                0,
                "job {} ran and came back",
                unrun.job.id
            );
        }
        assert_eq!(stats.accepted(), stats.finished());
        assert_eq!(stats.abandoned(), report.abandoned.len() as u64);
        // An abandoned job still ends (once) on its own thread: after a
        // second stop joined it, it ran exactly once, and in all exactly
        // the succeeded and abandoned jobs ran.
        let again = pool
            .stop()
            .expect("a later stop joins the abandoned worker");
        assert_eq!(again.succeeded + again.unrun.len() as u64, 0, "{again:?}");
        for abandoned in &report.abandoned {
            let id = if abandoned.lane == Priority::Urgent {
                0
            } else {
                1
            };
            assert_eq!(runs.get(id), 1, "abandoned job {id}: {report:?}");
        }
        assert_eq!(
            runs.get(0) + runs.get(1),
            report.succeeded as usize + report.abandoned.len(),
            "{report:?}"
        );
    });
}
