//! Guards against the owner of a pool panicking while the pool is alive
//! turning into an abort, a hang or lost jobs (the rust-lang/rust #86027
//! family: a panic during unwinding kills the process unless it is caught):
//! the owner thread's unwinding drops the pool, which drains it — even when a
//! job's `Drop` panics during that unwinding drop.
#![cfg(panic = "unwind")]

mod common;

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Context, Job, Pool, Priority};

/// The owner's panic message.
const OWNER_PANIC: &str = "owner gave up";

/// Asserts a joined thread ended with the owner's panic.
#[track_caller]
fn owner_panicked(joined: thread::Result<()>) {
    let payload: Box<dyn Any + Send> = joined.expect_err("the owner thread panicked");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&OWNER_PANIC),
        "the owner's own panic, not another, ends the thread"
    );
}

/// The action of job `id`: succeed, fail and panic in turn.
fn action_of(id: usize) -> Action {
    match id % 3 {
        0 => Action::Succeed,
        1 => Action::Fail,
        _ => Action::PanicString,
    }
}

/// The owner builds a pool, queues mixed jobs behind a running one, and
/// panics; the running job is released only after the owner started to
/// panic. Joining the owner returns its panic; every job ran once and was
/// dropped once.
#[test]
fn owner_panicking_drains_the_pool_while_unwinding() {
    guarded(|| {
        const JOBS: usize = 100;
        let ledger = Ledger::new(JOBS);
        let latch = Latch::new();
        let (panicking_tx, panicking_rx) = mpsc::channel();
        let owner = {
            let ledger = Arc::clone(&ledger);
            let latch = Arc::clone(&latch);
            thread::spawn(move || {
                let pool: Pool<Probe> = Pool::builder().workers(2).build().expect("build");
                let started = Arrivals::new();
                let running = Probe::new(0, &ledger)
                    .action(Action::Wait(latch))
                    .started(&started);
                pool.submit(running).expect("submit");
                started.wait_for(1);
                for id in 1..JOBS {
                    let probe = Probe::new(id, &ledger)
                        .lane(Priority::ALL[id % 3])
                        .action(action_of(id));
                    pool.submit(probe).expect("submit");
                }
                panicking_tx.send(pool.submitter()).expect("test alive");
                std::panic::panic_any(OWNER_PANIC);
            })
        };
        // Release the running job only once the unwinding Drop has begun
        // (closed intake), so Drop has a running job and a queue to drain.
        let watcher = panicking_rx.recv().expect("owner reached its panic");
        assert!(
            common::wait_until(|| watcher.is_stopped(), common::LIMIT),
            "the owner's unwinding never closed intake"
        );
        latch.open();
        owner_panicked(owner.join());
        for id in 0..JOBS {
            assert_eq!(ledger.runs(id), 1, "job {id} ran {} times", ledger.runs(id));
            assert_eq!(ledger.drops(id), 1, "job {id} dropped {}", ledger.drops(id));
        }
    });
}

/// A producer thread is blocked on a full lane of the owner's pool when the
/// owner panics: the unwinding Drop wakes it with its job handed back.
#[test]
fn owner_panicking_wakes_a_blocked_producer() {
    guarded(|| {
        const CAPACITY: usize = 4;
        const PRODUCER_IDS: usize = 64;
        let ledger = Ledger::new(1 + PRODUCER_IDS);
        let latch = Latch::new();
        let (producer_tx, producer_rx) = mpsc::channel();
        let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
        let owner = {
            let ledger = Arc::clone(&ledger);
            let latch = Arc::clone(&latch);
            thread::spawn(move || {
                let pool: Pool<Probe> = Pool::builder()
                    .workers(1)
                    .capacity(Priority::Normal, CAPACITY)
                    .build()
                    .expect("build");
                let started = Arrivals::new();
                let running = Probe::new(0, &ledger)
                    .action(Action::Wait(latch))
                    .started(&started);
                pool.submit(running).expect("submit");
                started.wait_for(1);
                let tx = pool.submitter();
                let producer = common::spawn_with_tid(move || {
                    let mut accepted = Vec::new();
                    for id in 1..=PRODUCER_IDS {
                        match tx.submit(Probe::new(id, &ledger)) {
                            Ok(()) => accepted.push(id),
                            Err(e) => {
                                assert!(e.is_stopped(), "{e:?}");
                                assert_eq!(e.into_inner().id, id);
                                return (accepted, id);
                            }
                        }
                    }
                    panic!("never refused: the lane never filled");
                });
                producer_tx
                    .send((producer, pool.submitter()))
                    .expect("test alive");
                blocked_rx
                    .recv_timeout(common::LIMIT)
                    .expect("the test saw the producer block");
                std::panic::panic_any(OWNER_PANIC);
            })
        };
        let ((producer, tid), watcher) = producer_rx.recv().expect("owner started the producer");
        // The owner panics only once the producer sleeps in its submit to the
        // full lane: job 0 running, `CAPACITY` queued, one in the submit.
        common::wait_blocked_in_submit(&watcher, CAPACITY as u64 + 2, &[tid]);
        blocked_tx.send(()).expect("owner alive");
        // The lane stays full (its only worker held) until the producer is
        // back: only the unwinding Drop's close can wake it, not a slot
        // freeing up.
        assert!(
            common::wait_until(|| producer.is_finished(), common::LIMIT),
            "the owner's unwinding Drop never woke the blocked producer (stopped: {})",
            watcher.is_stopped()
        );
        let (accepted, refused) = producer.join().expect("producer");
        latch.open();
        owner_panicked(owner.join());
        // Exactly the lane's capacity got in; the submit that was blocked on
        // the full lane when the owner panicked came back.
        assert_eq!(accepted, (1..=CAPACITY).collect::<Vec<_>>());
        assert_eq!(refused, CAPACITY + 1, "the blocked submit was handed back");
        assert_eq!((ledger.runs(0), ledger.drops(0)), (1, 1));
        for &id in &accepted {
            assert_eq!((ledger.runs(id), ledger.drops(id)), (1, 1), "job {id}");
        }
        assert_eq!((ledger.runs(refused), ledger.drops(refused)), (0, 1));
        for id in refused + 1..=PRODUCER_IDS {
            assert_eq!(ledger.drops(id), 0, "job {id} was never created");
        }
    });
}

/// A job whose `Drop` always panics — also while its thread is already
/// panicking. Counts the drops that happen during unwinding.
struct Bomb(Probe, Arc<AtomicUsize>);

impl Job for Bomb {
    type Error = usize;

    fn run(&mut self, ctx: &Context) -> Result<(), usize> {
        self.0.run(ctx)
    }

    fn priority(&self) -> Priority {
        self.0.priority()
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if thread::panicking() {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        // The probe (the field) is still dropped as this unwinds.
        panic!("bomb {} exploded on drop", self.0.id);
    }
}

/// The owner panics with failed and panicked jobs (whose `Drop` panics)
/// waiting in its pool. Its unwinding Drop drops them: each of those panics
/// happens during unwinding, and must be caught there (`catch_unwind` inside
/// a destructor during unwinding is allowed since Rust 1.71; verified on
/// 1.95) — an uncaught one would abort the whole test process.
#[test]
fn job_drop_panicking_inside_the_unwinding_drop_is_contained() {
    guarded(|| {
        const JOBS: usize = 60;
        let ledger = Ledger::new(JOBS);
        let unwinding_drops = Arc::new(AtomicUsize::new(0));
        let owner = {
            let ledger = Arc::clone(&ledger);
            let unwinding_drops = Arc::clone(&unwinding_drops);
            thread::spawn(move || {
                let pool: Pool<Bomb> = Pool::builder().workers(2).build().expect("build");
                for id in 0..JOBS {
                    let probe = Probe::new(id, &ledger)
                        .lane(Priority::ALL[id % 3])
                        .action(action_of(id));
                    pool.submit(Bomb(probe, Arc::clone(&unwinding_drops)))
                        .expect("submit");
                }
                assert!(!thread::panicking());
                std::panic::panic_any(OWNER_PANIC);
            })
        };
        owner_panicked(owner.join());
        for id in 0..JOBS {
            assert_eq!(ledger.runs(id), 1, "job {id} ran {} times", ledger.runs(id));
            assert_eq!(ledger.drops(id), 1, "job {id} dropped {}", ledger.drops(id));
        }
        // The failed and panicked jobs (2 of every 3) came back to the
        // owner's Drop and were dropped there, during its unwinding.
        assert_eq!(unwinding_drops.load(Ordering::SeqCst), JOBS * 2 / 3);
    });
}
