//! Tests that kill mutants cargo-mutants found surviving in `src/pool.rs`
//! (run of 2026-11-27): behaviour the other tests did not pin down. Each
//! test says which mutant it kills:
//!
//! - the warning (with counts) the pool's state logs when it goes with
//!   failed or panicked jobs nobody received (a pool dropped on its own
//!   worker): four mutants of its condition in `<impl Drop for Shared<J>>`;
//! - the `Debug` forms of `Pool` and `Submitter`;
//! - jobs a `stop_timeout` abandoned counting as finished for `wait_idle`
//!   (`Shared::is_idle`).
//!
//! The other survivors are equivalent or unobservable; RELIABILITY.md's
//! "Mutation testing" paragraph says why.
//!
//! The log test installs one capturing `tracing` subscriber for the whole
//! binary (the events come from worker threads) and only reads the lines
//! that name its own pool, so the tests also pass when `cargo test` runs
//! them in one process.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{capture_warn_logs, guarded, warn_log_lines, Latch};
use triage_pool::{Context, FnJob, Job, Pool};

/// Prefix of the worker threads whose jobs panic on purpose.
const THREAD_NAME: &str = "mutants-pool";

/// The id a pool's `Debug` form gives it (`Pool { id: 3, .. }`).
fn pool_id<J: Job>(pool: &Pool<J>) -> u64 {
    let text = format!("{pool:?}");
    let rest = text
        .strip_prefix("Pool { id: ")
        .unwrap_or_else(|| panic!("unexpected Debug form: {text}"));
    let end = rest.find(',').unwrap_or_else(|| panic!("no id in {text}"));
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("no id in {text}"))
}

/// The captured lines that contain `needle` and name pool `id`.
fn log_lines(id: u64, needle: &str) -> Vec<String> {
    let field = format!("pool={id}");
    warn_log_lines(needle)
        .into_iter()
        .filter(|line| line.split_whitespace().any(|word| word == field))
        .collect()
}

/// What a [`Leftover`] job does when it runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Succeed,
    Fail,
    Panic,
}

/// A job that ends as told and reports its own `Drop`; the first one also
/// holds the last handle to its pool and drops it while running, on the
/// pool's own worker.
struct Leftover {
    outcome: Outcome,
    dropped: mpsc::Sender<Outcome>,
    last_handle: Option<(Arc<Pool<Leftover>>, Arc<Latch>)>,
}

impl Job for Leftover {
    type Error = String;

    fn run(&mut self, _: &Context) -> Result<(), String> {
        if let Some((pool, latch)) = self.last_handle.take() {
            latch.wait();
            drop(pool); // `Drop for Pool` on its own worker thread
        }
        match self.outcome {
            Outcome::Succeed => Ok(()),
            Outcome::Fail => Err("told to fail".into()),
            Outcome::Panic => panic!("told to panic"),
        }
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.outcome);
    }
}

/// Drops a pool on its own worker with `outcomes` queued behind the job
/// that drops it, lets the detached drain run them, drops the last handle
/// and returns the warning the pool's state logged when it went.
fn leftovers_warning(outcomes: &[Outcome]) -> String {
    capture_warn_logs(THREAD_NAME);
    let pool: Arc<Pool<Leftover>> = Arc::new(
        Pool::builder()
            .workers(1)
            .thread_name(THREAD_NAME)
            .build()
            .expect("build"),
    );
    let id = pool_id(&pool);
    let submitter = pool.submitter();
    let (dropped_tx, dropped) = mpsc::channel();
    let latch = Latch::new();
    let job = |outcome| Leftover {
        outcome,
        dropped: dropped_tx.clone(),
        last_handle: None,
    };
    let mut holder = job(Outcome::Succeed);
    holder.last_handle = Some((Arc::clone(&pool), Arc::clone(&latch)));
    pool.submit(holder).expect("submit");
    for &outcome in outcomes {
        pool.submit(job(outcome)).expect("submit");
    }
    drop(pool); // the holder now has the last `Pool` handle
    latch.open();
    // The last reference to the pool's state goes with `submitter` or with
    // the detached worker's exit, whichever comes last; the jobs nobody
    // collected are dropped right after the warning is logged (or, should
    // that code panic, while it unwinds).
    drop(submitter);
    let mut left = outcomes.to_vec();
    while !left.is_empty() {
        let outcome = dropped
            .recv_timeout(common::LIMIT)
            .expect("the leftover jobs are dropped with the pool's state");
        if let Some(at) = left.iter().position(|&o| o == outcome) {
            left.remove(at);
        }
    }
    let mut lines = log_lines(id, "pool state dropped with jobs no report received");
    assert_eq!(lines.len(), 1, "one warning for pool {id}: {lines:?}");
    lines.remove(0)
}

fn assert_fields(line: &str, fields: &[&str]) {
    for field in fields {
        assert!(
            line.split_whitespace().any(|word| word == *field),
            "{field} missing from {line}"
        );
    }
}

/// Kills, in `<impl Drop for Shared<J>>::drop` (line 74, `failed.len() +
/// panicked.len() + unrun > 0`), `replace > with <`, both `replace + with
/// *` and `replace + with -` on the first `+` (`failed - panicked`
/// overflows): the jobs that fail or panic in the detached drain of a pool
/// dropped on its own worker are "logged at `warn` (with counts) and
/// dropped" once the last handle is gone (`Drop for Pool`). A single
/// panicked job (no failed one) makes each of these mutants skip the
/// warning; the second case checks the counts with both kinds.
#[test]
fn leftovers_of_a_pool_dropped_on_its_own_worker_are_logged_with_their_counts() {
    guarded(|| {
        let line = leftovers_warning(&[Outcome::Panic]);
        assert_fields(&line, &["failed=0", "panicked=1", "unrun=0"]);
        let line = leftovers_warning(&[Outcome::Fail, Outcome::Panic, Outcome::Fail]);
        assert_fields(&line, &["failed=2", "panicked=1", "unrun=0"]);
    });
}

/// Kills `<impl fmt::Debug for Pool<J>>::fmt -> Ok(Default::default())` and
/// `<impl fmt::Debug for Submitter<J>>::fmt -> Ok(Default::default())`:
/// both `Debug` forms name the pool's id (the same one; another pool has
/// another), and the pool's shows its stats.
#[test]
fn pool_and_submitter_debug_name_the_pool() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let other: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        let id = pool_id(&pool);
        assert_ne!(id, pool_id(&other), "each pool has its own id");
        let text = format!("{pool:?}");
        assert!(text.contains("stats: Stats {"), "{text}");
        assert!(text.ends_with(", .. }"), "{text}");
        assert_eq!(
            format!("{:?}", pool.submitter()),
            format!("Submitter {{ pool: {id}, .. }}")
        );
        assert!(pool.stop().expect("stop").is_clean());
        assert!(other.stop().expect("stop").is_clean());
    });
}

/// Kills `replace + with -` in `Shared<J>::is_idle` (the last `+`, so
/// abandoned jobs would count against idleness): a job a `stop_timeout`
/// reported abandoned "counts as finished" for `wait_idle`, which returns
/// at once after a stop, and `wait_idle_timeout` says `true` — while the
/// abandoned job is in fact still running.
#[test]
fn jobs_abandoned_by_stop_timeout_count_as_finished_for_wait_idle() {
    guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("build");
        pool.submit(FnJob::new(|_| ())).expect("submit");
        pool.wait_idle().expect("wait_idle");
        let (started_tx, started) = mpsc::channel();
        let release = Latch::new();
        let held = Arc::clone(&release);
        pool.submit(FnJob::new(move |_| {
            started_tx.send(()).expect("test alive");
            held.wait();
        }))
        .expect("submit");
        started.recv_timeout(common::LIMIT).expect("the job starts");
        let report = pool.stop_timeout(Duration::ZERO).expect("stop_timeout");
        assert_eq!(report.abandoned.len(), 1, "{report:?}");
        assert_eq!(report.succeeded, 1, "{report:?}");
        assert_eq!(pool.wait_idle_timeout(Duration::ZERO), Ok(true));
        assert_eq!(pool.wait_idle_timeout(Duration::from_secs(1)), Ok(true));
        pool.wait_idle().expect("wait_idle");
        release.open();
        let later = pool
            .stop()
            .expect("a later stop joins the abandoned worker");
        assert_eq!(later.total(), 0, "{later:?}");
    });
}
