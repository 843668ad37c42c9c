//! Ledger under stress: producers submit numbered jobs through `Submitter`s
//! while another thread stops the pool at a random moment; every number ends
//! up exactly once in succeeded, failed, panicked, unrun or refused-at-submit,
//! and the `Stats` ledger balances.
//!
//! Size: `ROUNDS` rounds per test, each the full 4 producers ×
//! 50,000 jobs (one id space of 200,000) with its own stop moment; about
//! 5 s for the file in a debug build on 2 cores. Each test's base seed comes
//! from the clock, so every run tries new stop moments; it is printed (shown
//! with a failure): set `STRESS_SEED=<base seed>` to replay that test's
//! rounds.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, SystemTime};

use common::{watchdog, Action, Ledger, Probe};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triage_pool::{Pool, Priority, StopReport, Submitter};

/// Rounds per test, each with its own stop moment: the one size knob.
const ROUNDS: usize = 6;
/// Numbered jobs each producer submits in one round.
const JOBS_PER_PRODUCER: usize = 50_000;
/// Producer threads.
const PRODUCERS: usize = 4;
/// Ids per round: one id space shared by the producers.
const IDS: usize = PRODUCERS * JOBS_PER_PRODUCER;
/// Workers in the pool.
const WORKERS: usize = 2;
/// Capacity of every lane: small, so producers block a lot.
const CAPACITY: usize = 8;

/// Which stop races the producers.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Drain,
    Now,
}

/// What job `id` does: mostly succeed, a few fail, a few panic.
fn action_of(id: usize) -> Action {
    match id % 1_000 {
        7 => Action::Fail,
        13 if cfg!(panic = "unwind") => Action::PanicStr,
        _ => Action::Succeed,
    }
}

/// Submits job `id` with one of the submit variants (chosen by id); returns
/// the id back if the job was refused.
fn submit_one(tx: &Submitter<Probe>, ledger: &Arc<Ledger>, id: usize) -> Option<usize> {
    let lane = Priority::ALL[id % 3];
    let job = Probe::new(id, ledger).lane(lane).action(action_of(id));
    match id % 5 {
        0 => tx.try_submit(job).err().map(|e| e.into_inner().id),
        1 => tx
            .submit_timeout(job, Duration::from_micros(200))
            .err()
            .map(|e| e.into_inner().id),
        2 => tx.submit_to(lane, job).err().map(|e| e.into_inner().id),
        _ => tx.submit(job).err().map(|e| e.into_inner().id),
    }
}

/// One round: producers race a stop issued after `stop_after` submit
/// attempts (never, if beyond the total). Checks the ledger.
fn round(mode: Stop, seed: u64, stop_after: usize) {
    let context = format!("mode {mode:?}, round seed {seed}, stop after {stop_after} submits");
    let ledger = Ledger::new(IDS);
    let pool: Arc<Pool<Probe>> = Arc::new(
        Pool::builder()
            .workers(WORKERS)
            .capacity(Priority::Urgent, CAPACITY)
            .capacity(Priority::Normal, CAPACITY)
            .capacity(Priority::Bulk, CAPACITY)
            .build()
            .expect("build"),
    );

    // The producer whose attempt number reaches `stop_after` tells the
    // stopper; if none does, the stopper goes once every producer is done.
    let attempts = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = mpsc::sync_channel::<()>(1);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = pool.submitter();
            let ledger = Arc::clone(&ledger);
            let attempts = Arc::clone(&attempts);
            let go_tx = go_tx.clone();
            thread::spawn(move || {
                let mut refused = Vec::new();
                for id in p * JOBS_PER_PRODUCER..(p + 1) * JOBS_PER_PRODUCER {
                    if attempts.fetch_add(1, Ordering::Relaxed) == stop_after {
                        let _ = go_tx.try_send(());
                    }
                    refused.extend(submit_one(&tx, &ledger, id));
                }
                refused
            })
        })
        .collect();
    drop(go_tx);
    let stopper = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || {
            let _ = go_rx.recv(); // a signal, or every producer finished
            match mode {
                Stop::Drain => pool.stop(),
                Stop::Now => pool.stop_now(),
            }
            .expect("stop")
        })
    };
    let refused: Vec<usize> = producers
        .into_iter()
        .flat_map(|p| p.join().expect("producer"))
        .collect();
    let report: StopReport<Probe> = stopper.join().expect("stopper");
    check(&context, &ledger, &pool, &report, &refused);
    drop(report);
    for id in 0..IDS {
        assert_eq!(ledger.drops(id), 1, "{context}: job {id} dropped");
    }
}

/// Every id exactly once across the terminal states and the refusals.
fn check(
    context: &str,
    ledger: &Ledger,
    pool: &Pool<Probe>,
    report: &StopReport<Probe>,
    refused: &[usize],
) {
    let mut count = vec![0_u8; IDS];
    let mut tally = |ids: &mut dyn Iterator<Item = usize>, what: &str| {
        for id in ids {
            assert!(count[id] == 0, "{context}: job {id} {what} and seen before");
            count[id] += 1;
        }
    };
    tally(&mut report.unrun.iter().map(|u| u.job.id), "unrun");
    tally(&mut refused.iter().copied(), "refused");
    for (id, seen) in count.iter().enumerate() {
        let runs = ledger.runs(id);
        assert!(runs <= 1, "{context}: job {id} ran {runs} times");
        assert!(
            *seen + runs as u8 == 1,
            "{context}: job {id} ran {runs} times and was handed back {} times",
            seen
        );
    }

    let failed: BTreeSet<usize> = report.failed.iter().map(|f| f.job.id).collect();
    let panicked: BTreeSet<usize> = report.panicked.iter().map(|p| p.job.id).collect();
    assert_eq!(failed.len(), report.failed.len(), "{context}: failed twice");
    assert_eq!(
        panicked.len(),
        report.panicked.len(),
        "{context}: panicked twice"
    );
    let ran = |want: fn(&Action) -> bool| -> BTreeSet<usize> {
        (0..IDS)
            .filter(|id| ledger.runs(*id) == 1 && want(&action_of(*id)))
            .collect()
    };
    assert_eq!(
        failed,
        ran(|a| matches!(a, Action::Fail)),
        "{context}: failed"
    );
    assert_eq!(
        panicked,
        ran(|a| matches!(a, Action::PanicStr)),
        "{context}: panicked"
    );
    let succeeded = ran(|a| matches!(a, Action::Succeed)).len() as u64;
    assert_eq!(report.succeeded, succeeded, "{context}: succeeded");
    assert!(report.abandoned.is_empty(), "{context}");
    for p in &report.panicked {
        assert_eq!(p.message, "static probe panic");
    }
    for f in &report.failed {
        assert_eq!(f.error, f.job.id);
    }

    let stats = pool.stats();
    assert_eq!(
        stats.accepted(),
        stats.succeeded() + stats.failed() + stats.panicked() + stats.unrun() + stats.abandoned(),
        "{context}: {stats:?}"
    );
    assert_eq!(stats.pending(), 0, "{context}: {stats:?}");
    assert_eq!(
        stats.refused(),
        refused.len() as u64,
        "{context}: {stats:?}"
    );
    assert_eq!(
        stats.accepted() + stats.refused(),
        IDS as u64,
        "{context}: {stats:?}"
    );
    assert_eq!(stats.succeeded(), report.succeeded, "{context}");
    assert_eq!(stats.failed(), report.failed.len() as u64, "{context}");
    assert_eq!(stats.panicked(), report.panicked.len() as u64, "{context}");
    assert_eq!(stats.unrun(), report.unrun.len() as u64, "{context}");
    assert_eq!(stats.queued_total(), 0, "{context}");
    assert_eq!(stats.busy(), 0, "{context}");
}

/// A fresh seed from the clock.
fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Runs `ROUNDS` rounds with stop moments drawn from a seeded RNG: some
/// right at the start, some at a uniform random attempt, some only after
/// every producer finished. Round `r` uses seed `base + r`.
fn stress(mode: Stop, salt: u64) {
    let base: u64 = match std::env::var("STRESS_SEED") {
        Ok(seed) => seed.parse().expect("STRESS_SEED is a u64"),
        Err(_) => time_seed() ^ salt,
    };
    println!("stress_ledger {mode:?}: base seed {base} (STRESS_SEED={base} to replay)");
    let limit = Duration::from_secs(120);
    watchdog(limit, move || {
        for r in 0..ROUNDS {
            let seed = base.wrapping_add(r as u64);
            let mut rng = StdRng::seed_from_u64(seed);
            let stop_after = match r % 4 {
                0 => rng.gen_range(0..64),
                3 => usize::MAX, // after production
                _ => rng.gen_range(0..IDS),
            };
            round(mode, seed, stop_after);
        }
    });
}

#[test]
fn stress_ledger_balances_when_stop_races_submits() {
    stress(Stop::Drain, 1);
}

#[test]
fn stress_ledger_balances_when_stop_now_races_submits() {
    stress(Stop::Now, 2);
}
