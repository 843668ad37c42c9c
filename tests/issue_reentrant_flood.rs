//! Guards against re-entrant submit deadlocking the pool (ants #197, rayon
//! #446: jobs submitting to their own full pool waited for room only they
//! could make): under a flood of jobs that each submit follow-ups to their
//! own pool through a captured `Submitter`, with lanes of capacity 1–2, no
//! submit blocks forever — a full lane refuses a worker's submit with
//! `SubmitError::Full` — and every job ends up run once or handed back once.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{
    Context, FnJob, Job, Pool, Priority, StopReport, SubmitError, Submitter, TrySubmitError,
};

/// Jobs the main thread submits.
const ROOTS: usize = 2_000;
/// Follow-ups each job tries to submit.
const FANOUT: usize = 2;
/// Generations of follow-ups below a root.
const DEPTH: usize = 3;
/// Every id a run can use: a full tree under every root.
const MAX_IDS: usize = ROOTS * (1 + FANOUT + FANOUT * FANOUT + FANOUT * FANOUT * FANOUT);

/// What became of a job id (`Flood::fate`).
const NONE: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED_FULL: u8 = 2;
const REFUSED_STOPPED: u8 = 3;

/// State the flood's jobs share.
struct Flood {
    /// Run and drop counts per id.
    ledger: Arc<Ledger>,
    /// Per id: what its submit returned.
    fate: Vec<AtomicU8>,
    /// Next free id.
    next: AtomicUsize,
    /// `submit` / `submit_to` calls (not `try_submit`) refused as full.
    submit_full: AtomicUsize,
    /// The pool the jobs submit to.
    tx: Submitter<FnJob>,
}

impl Flood {
    fn new(tx: Submitter<FnJob>) -> Arc<Flood> {
        Arc::new(Flood {
            ledger: Ledger::new(MAX_IDS),
            fate: (0..MAX_IDS).map(|_| AtomicU8::new(NONE)).collect(),
            next: AtomicUsize::new(0),
            submit_full: AtomicUsize::new(0),
            tx,
        })
    }

    fn alloc(&self) -> usize {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(id < MAX_IDS, "more ids than a full tree of follow-ups");
        id
    }

    fn settle(&self, id: usize, fate: u8) {
        let before = self.fate[id].swap(fate, Ordering::SeqCst);
        assert_eq!(before, NONE, "job {id}'s submit returned twice");
    }

    fn count(&self, fate: u8) -> usize {
        let used = self.next.load(Ordering::SeqCst);
        self.fate[..used]
            .iter()
            .filter(|f| f.load(Ordering::SeqCst) == fate)
            .count()
    }

    /// Job `id` at `depth`: runs its probe (every 7th fails), then submits
    /// `FANOUT` follow-ups to its own pool — each lane in turn, mostly with
    /// `submit` / `submit_to` (which must refuse rather than block on a full
    /// lane), some with `try_submit` — and files what each submit returned.
    fn job(self: &Arc<Flood>, id: usize, depth: usize) -> FnJob {
        let flood = Arc::clone(self);
        let action = if id % 7 == 3 {
            Action::Fail
        } else {
            Action::Succeed
        };
        let mut probe = Probe::new(id, &self.ledger).action(action);
        FnJob::fallible(move |ctx: &Context| {
            let result = probe.run(ctx).map_err(|id| format!("probe {id} failed"));
            if depth < DEPTH {
                for _ in 0..FANOUT {
                    let child = flood.alloc();
                    let job = flood.job(child, depth + 1);
                    let fate = flood.submit_follow_up(child, job);
                    flood.settle(child, fate);
                }
            }
            result
        })
        .with_priority(Priority::ALL[id % 3])
    }

    /// Submits follow-up `id` from a worker; must never block.
    fn submit_follow_up(&self, id: usize, job: FnJob) -> u8 {
        let submitted = match id % 4 {
            // The re-entrant case that must not block: `submit` from a worker.
            0 | 1 => self.tx.submit(job),
            2 => self.tx.submit_to(Priority::ALL[(id / 4) % 3], job),
            _ => self.tx.try_submit(job).map_err(|e| match e {
                TrySubmitError::Full(job) => SubmitError::Full(job),
                TrySubmitError::Stopped(job) => SubmitError::Stopped(job),
            }),
        };
        let (fate, back) = match submitted {
            Ok(()) => (ACCEPTED, None),
            Err(SubmitError::Full(job)) => {
                if id % 4 != 3 {
                    self.submit_full.fetch_add(1, Ordering::SeqCst);
                }
                (REFUSED_FULL, Some(job))
            }
            Err(SubmitError::Stopped(job)) => (REFUSED_STOPPED, Some(job)),
        };
        if let Some(job) = back {
            assert!(!job.is_spent(), "a refused follow-up came back spent");
            drop(job);
        }
        fate
    }
}

/// How the flood is ended.
#[derive(Debug, Clone, Copy)]
enum Final {
    Stop,
    Now,
    Timeout,
}

fn flood_then(end: Final) {
    guarded(move || {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(2)
            .reserved_urgent_workers(1)
            .capacity(Priority::Urgent, 1)
            .capacity(Priority::Normal, 2)
            .capacity(Priority::Bulk, 1)
            .build()
            .expect("build pool");
        let flood = Flood::new(pool.submitter());
        for _ in 0..ROOTS {
            let id = flood.alloc();
            // Not a worker thread: a full lane blocks until workers make room.
            pool.submit(flood.job(id, 0))
                .unwrap_or_else(|e| panic!("root {id} refused: {e}"));
            flood.settle(id, ACCEPTED);
        }
        // Follow-ups are still being submitted while the pool stops.
        let report: StopReport<FnJob> = match end {
            Final::Stop => pool.stop(),
            Final::Now => pool.stop_now(),
            Final::Timeout => pool.stop_timeout(Duration::from_millis(5)),
        }
        .expect("stop");
        // Joins workers a stop_timeout abandoned; empty report.
        assert_eq!(pool.stop().expect("second stop").total(), 0);

        let used = flood.next.load(Ordering::SeqCst);
        let ledger = Arc::clone(&flood.ledger);
        let accepted = flood.count(ACCEPTED);
        let full = flood.count(REFUSED_FULL);
        let stopped = flood.count(REFUSED_STOPPED);
        assert_eq!(accepted + full + stopped, used, "an id with no fate");
        assert!(
            flood.submit_full.load(Ordering::SeqCst) > 0,
            "no worker's submit met a full lane: the flood tested nothing"
        );

        assert!(report.panicked.is_empty(), "{report:?}");
        if matches!(end, Final::Stop) {
            assert!(report.unrun.is_empty() && report.abandoned.is_empty());
        }
        assert_eq!(report.total(), accepted as u64, "{report:?}");
        let stats = pool.stats();
        assert_eq!(stats.accepted(), accepted as u64);
        assert_eq!(stats.refused(), (full + stopped) as u64);
        assert_eq!(stats.finished(), stats.accepted());

        let mut ran = 0;
        for id in 0..used {
            let runs = ledger.runs(id);
            match flood.fate[id].load(Ordering::SeqCst) {
                ACCEPTED => {
                    assert!(runs <= 1, "job {id} ran {runs} times");
                    ran += runs;
                }
                _ => assert_eq!(runs, 0, "refused job {id} ran"),
            }
        }
        assert_eq!(
            ran as u64,
            report.succeeded + report.failed.len() as u64 + report.abandoned.len() as u64,
            "accepted jobs that ran vs the report"
        );
        assert_eq!(ran + report.unrun.len(), accepted);
        for failed in &report.failed {
            assert!(failed.error.to_string().starts_with("probe "));
        }
        // Dropping the report's jobs drops their probes (and Submitters).
        drop(report);
        drop(pool);
        let flood = Arc::try_unwrap(flood)
            .unwrap_or_else(|_| panic!("a job still holds the flood: a job was leaked"));
        drop(flood.tx);
        for id in 0..used {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
        for id in used..MAX_IDS {
            assert_eq!(ledger.drops(id), 0);
        }
    });
}

#[test]
fn reentrant_flood_then_graceful_stop() {
    flood_then(Final::Stop);
}

#[test]
fn reentrant_flood_then_stop_now() {
    flood_then(Final::Now);
}

#[test]
fn reentrant_flood_then_stop_timeout() {
    flood_then(Final::Timeout);
}

/// `submit_timeout(.., Duration::MAX)` has no deadline, so on the pool's own
/// workers it behaves like `submit`: with every worker submitting to its
/// own full lane, none may wait (nothing but a stop could make room).
/// Each is refused at once with `Timeout` — or accepted, if another worker
/// has meanwhile freed the slot — and the stop that follows drains the rest.
#[test]
fn workers_submitting_without_deadline_to_their_own_full_lane_never_wait() {
    guarded(|| {
        const WORKERS: usize = 2;
        let ledger = Ledger::new(2 * WORKERS + 1);
        let pool: Pool<FnJob> = Pool::builder()
            .workers(WORKERS)
            .capacity(Priority::Normal, 1)
            .build()
            .expect("build pool");
        let latch = Latch::new();
        let started = Arrivals::new();
        let (fate_tx, fate_rx) = std::sync::mpsc::channel();
        for w in 0..WORKERS {
            let tx = pool.submitter();
            let latch = Arc::clone(&latch);
            let started = Arc::clone(&started);
            let fate_tx = fate_tx.clone();
            let mut probe = Probe::new(w, &ledger);
            let follow_up = Probe::new(WORKERS + w, &ledger);
            pool.submit(FnJob::new(move |ctx: &Context| {
                probe.run(ctx).expect("probe succeeds");
                started.arrive();
                latch.wait();
                let follow_up = FnJob::new(move |ctx: &Context| {
                    let mut follow_up = follow_up;
                    let _ = follow_up.run(ctx);
                });
                let result = tx.submit_timeout(follow_up, Duration::MAX);
                fate_tx
                    .send(result.map_err(|e| e.is_stopped()))
                    .expect("test alive");
            }))
            .expect("submit");
        }
        started.wait_for(WORKERS);
        // Fill the lane: nothing can take this job while both workers wait.
        pool.submit(FnJob::new({
            let mut filler = Probe::new(2 * WORKERS, &ledger);
            move |ctx: &Context| filler.run(ctx).expect("probe succeeds")
        }))
        .expect("submit filler");
        latch.open();
        // Both fates arrive before any stop: nobody waited for one.
        let fates: Vec<Result<(), bool>> = fate_rx.iter().take(WORKERS).collect();
        let report = pool.stop().expect("stop");
        assert!(
            fates
                .iter()
                .all(|fate| *fate == Ok(()) || *fate == Err(false)),
            "refused as Timeout or accepted, never Stopped: {fates:?}"
        );
        assert!(
            fates.contains(&Err(false)),
            "the lane was full when the first worker submitted: {fates:?}"
        );
        let accepted = fates.iter().filter(|fate| fate.is_ok()).count();
        assert_eq!(
            report.succeeded,
            (WORKERS + 1 + accepted) as u64,
            "{report:?}"
        );
        for w in 0..WORKERS {
            assert_eq!(ledger.runs(w), 1);
            assert!(ledger.runs(WORKERS + w) <= 1);
        }
        let follow_ups_run: usize = (0..WORKERS).map(|w| ledger.runs(WORKERS + w)).sum();
        assert_eq!(
            follow_ups_run, accepted,
            "exactly the accepted follow-ups ran"
        );
        assert_eq!(ledger.runs(2 * WORKERS), 1, "the filler was drained");
        drop(report);
        drop(pool);
        for id in 0..=2 * WORKERS {
            assert_eq!(ledger.drops(id), 1, "job {id}");
        }
    });
}
