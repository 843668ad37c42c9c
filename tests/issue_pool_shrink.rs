//! Guards against panics shrinking the pool (ants #35, #146: a panicking
//! task killed its worker): after many panicking jobs, of every payload kind
//! and on general and reserved urgent workers alike, every worker can still
//! be occupied at once.

mod common;

use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Context, FnJob, Pool, Priority};

/// General workers.
const WORKERS: usize = 3;
/// Reserved urgent workers.
const RESERVED: usize = 2;
/// Panicking jobs any worker may take (every lane).
const ANY_PANICS: usize = 300;
/// Panicking urgent jobs submitted while the general workers are held, so
/// only reserved workers can take them.
const RESERVED_PANICS: usize = 100;

/// The panicking actions in turn.
fn panic_kind(n: usize) -> Action {
    match n % 4 {
        0 => Action::PanicString,
        1 => Action::PanicStr,
        2 => Action::PanicAny,
        _ => Action::PanicBadPayload,
    }
}

#[test]
fn after_many_panics_every_worker_can_be_occupied_at_once() {
    guarded(|| {
        let total = ANY_PANICS + RESERVED_PANICS + WORKERS + RESERVED;
        let ledger = Ledger::new(total);
        let pool: Pool<Probe> = Pool::builder()
            .workers(WORKERS)
            .reserved_urgent_workers(RESERVED)
            .capacity(Priority::Urgent, 512)
            .capacity(Priority::Normal, 512)
            .capacity(Priority::Bulk, 512)
            .build()
            .expect("build pool");
        let panicked = Arrivals::new();
        let held = Arrivals::new();
        let latch = Latch::new();
        let mut next = 0..total;
        let mut id = || next.next().expect("enough ids");

        // Panics on any worker, every lane, every payload kind.
        for n in 0..ANY_PANICS {
            let probe = Probe::new(id(), &ledger)
                .lane(Priority::ALL[n % 3])
                .action(panic_kind(n))
                .started(&panicked);
            pool.submit(probe).expect("submit panicking job");
        }
        panicked.wait_for(ANY_PANICS);

        // Every general worker still takes a job: hold them all.
        let general_hold: Vec<usize> = (0..WORKERS).map(|_| id()).collect();
        for &hold in &general_hold {
            let probe = Probe::new(hold, &ledger)
                .action(Action::Wait(Arc::clone(&latch)))
                .started(&held);
            pool.submit(probe).expect("submit holder");
        }
        held.wait_for(WORKERS);

        // With the general workers held, only reserved workers run these.
        let reserved_panics: Vec<usize> = (0..RESERVED_PANICS).map(|_| id()).collect();
        for (n, &panicking) in reserved_panics.iter().enumerate() {
            let probe = Probe::new(panicking, &ledger)
                .lane(Priority::Urgent)
                .action(panic_kind(n))
                .started(&panicked);
            pool.submit(probe).expect("submit urgent panicking job");
        }
        panicked.wait_for(ANY_PANICS + RESERVED_PANICS);

        // Every reserved worker still takes a job too: now all are held.
        for _ in 0..RESERVED {
            let probe = Probe::new(id(), &ledger)
                .lane(Priority::Urgent)
                .action(Action::Wait(Arc::clone(&latch)))
                .started(&held);
            pool.submit(probe).expect("submit urgent holder");
        }
        held.wait_for(WORKERS + RESERVED);
        let stats = pool.stats();
        assert_eq!(stats.busy(), WORKERS + RESERVED, "{stats:?}");
        assert_eq!(stats.panicked(), (ANY_PANICS + RESERVED_PANICS) as u64);

        latch.open();
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, (WORKERS + RESERVED) as u64);
        assert_eq!(report.panicked.len(), ANY_PANICS + RESERVED_PANICS);
        assert!(report.failed.is_empty() && report.unrun.is_empty());
        let reserved_ids: HashSet<usize> = reserved_panics.iter().copied().collect();
        for p in &report.panicked {
            if reserved_ids.contains(&p.job.id) {
                assert!(
                    p.worker >= WORKERS,
                    "urgent job {} ran on general worker {} while all were held",
                    p.job.id,
                    p.worker
                );
            }
            let expected = match p.job.action {
                Action::PanicString => format!("probe {}", p.job.id),
                Action::PanicStr => "static probe panic".to_owned(),
                _ => "non-string panic payload".to_owned(),
            };
            assert_eq!(p.message, expected);
        }
        let ran_on_reserved = report.panicked.iter().filter(|p| p.worker >= WORKERS);
        assert!(ran_on_reserved.count() >= RESERVED_PANICS);
        drop(report);

        for id in 0..total {
            assert_eq!(ledger.runs(id), 1, "job {id}");
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
    });
}

/// Runs on a worker: reports the thread, waits at `latch` if given, then
/// panics if asked to.
fn thread_reporter(tx: &mpsc::Sender<ThreadId>, latch: Option<Arc<Latch>>, panics: bool) -> FnJob {
    let tx = tx.clone();
    FnJob::new(move |_: &Context| {
        tx.send(thread::current().id()).expect("test alive");
        if let Some(latch) = latch {
            latch.wait();
        }
        if panics {
            panic!("thread reporter");
        }
    })
}

#[test]
fn panicking_workers_keep_their_threads_rather_than_being_replaced() {
    guarded(|| {
        const WORKERS: usize = 2;
        const PANICS: usize = 200;
        let pool: Pool<FnJob> = Pool::builder()
            .workers(WORKERS)
            .capacity(Priority::Normal, PANICS)
            .build()
            .expect("build pool");
        let (tx, rx) = mpsc::channel();
        for _ in 0..PANICS {
            pool.submit(thread_reporter(&tx, None, true))
                .expect("submit");
        }
        let panicking: HashSet<ThreadId> = rx.iter().take(PANICS).collect();
        assert!(
            panicking.len() <= WORKERS,
            "{} threads ran jobs",
            panicking.len()
        );

        let latch = Latch::new();
        for _ in 0..WORKERS {
            pool.submit(thread_reporter(&tx, Some(Arc::clone(&latch)), false))
                .expect("submit holder");
        }
        let holding: HashSet<ThreadId> = rx.iter().take(WORKERS).collect();
        latch.open();
        assert_eq!(holding.len(), WORKERS, "not every worker took a holder");
        assert!(
            panicking.is_subset(&holding),
            "a thread that ran panicking jobs is gone (replaced, not kept)"
        );
        let report = pool.stop().expect("stop");
        assert_eq!(report.panicked.len(), PANICS);
        assert_eq!(report.succeeded, WORKERS as u64);
    });
}
