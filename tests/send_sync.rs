//! Thread-safety of the public types, asserted at compile time: handles are
//! `Send + Sync` for any `Send` job (even one that is not `Sync`), reports
//! and errors are as thread-safe as the jobs they carry.

mod common;

use std::cell::Cell;
use std::error::Error;

use common::Probe;
use triage_pool::{
    Abandoned, BoxError, BuildError, Builder, Context, Failed, FnJob, Job, Panicked, Pool,
    Priority, Stats, StopError, StopReport, SubmitError, SubmitTimeoutError, Submitter,
    TrySubmitError, Unrun,
};

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}
fn assert_error<T: Error + Send + Sync + 'static>() {}
fn assert_static<T: 'static>() {}

/// A job that may move between threads but not be shared: `Cell` is
/// `Send` but not `Sync`.
struct SendOnly(Cell<u32>);

impl Job for SendOnly {
    type Error = Cell<u32>;

    fn run(&mut self, _ctx: &Context) -> Result<(), Cell<u32>> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

/// Checks the types that must be `Send + Sync` whatever `J` is (besides
/// `J: Job`, which implies `Send`).
fn handles_are_send_sync<J: Job>() {
    assert_send_sync::<Pool<J>>();
    assert_send_sync::<Submitter<J>>();
    assert_clone::<Submitter<J>>();
    assert_send_sync::<Builder<J>>();
    assert_static::<Pool<J>>();
    assert_static::<Submitter<J>>();
}

/// Checks the types that carry jobs: `Send` for any job.
fn carriers_are_send<J: Job>() {
    assert_send::<StopReport<J>>();
    assert_send::<Failed<J>>();
    assert_send::<Panicked<J>>();
    assert_send::<Unrun<J>>();
    assert_send::<SubmitError<J>>();
    assert_send::<TrySubmitError<J>>();
    assert_send::<SubmitTimeoutError<J>>();
}

/// With a `Sync` job (and error), the carriers are `Sync` too, and the
/// refusals are errors that box into `Box<dyn Error + Send + Sync>`.
fn carriers_are_sync<J: Job + Sync>()
where
    J::Error: Sync,
{
    assert_send_sync::<StopReport<J>>();
    assert_send_sync::<Failed<J>>();
    assert_send_sync::<Panicked<J>>();
    assert_send_sync::<Unrun<J>>();
    assert_error::<SubmitError<J>>();
    assert_error::<TrySubmitError<J>>();
    assert_error::<SubmitTimeoutError<J>>();
}

#[test]
fn pool_and_submitter_are_send_sync_for_any_job() {
    handles_are_send_sync::<Probe>();
    handles_are_send_sync::<FnJob>();
    handles_are_send_sync::<SendOnly>();
}

#[test]
fn reports_and_refusals_are_send_for_any_job() {
    carriers_are_send::<Probe>();
    carriers_are_send::<FnJob>();
    carriers_are_send::<SendOnly>();
}

#[test]
fn reports_and_refusals_are_sync_for_sync_jobs() {
    carriers_are_sync::<Probe>();
    // `FnJob` is `Sync` although its closure need only be `Send`.
    carriers_are_sync::<FnJob>();
    assert_send_sync::<FnJob>();
    // A boxed trait object is `Sync` when the bound says so, and then its
    // refusals are errors that box into `Box<dyn Error + Send + Sync>`.
    carriers_are_sync::<Box<dyn Job<Error = BoxError> + Sync>>();
}

#[test]
fn a_closure_job_can_forward_a_refusal_with_the_question_mark() {
    common::guarded(|| {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build().expect("pool");
        // Where the job sends its follow-up work: already stopped, so the
        // follow-up is refused and `?` fails the job with the refusal.
        let next: Pool<FnJob> = Pool::builder().workers(1).build().expect("next");
        assert!(next.stop().expect("stop next").is_clean());
        let next = next.submitter();
        // A closure that is `Send` but not `Sync` (it owns a `Cell`).
        let cell = Cell::new(1);
        pool.submit(FnJob::fallible(move |_| -> Result<(), BoxError> {
            cell.set(cell.get() + 1);
            next.try_submit(FnJob::new(|_| ()))?;
            Ok(())
        }))
        .expect("submit");
        let report = pool.stop().expect("stop");
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].error.to_string(), "the pool is stopped");
    });
}

#[test]
fn plain_types_are_send_sync() {
    assert_error::<BuildError>();
    assert_error::<StopError>();
    assert_send_sync::<Stats>();
    assert_send_sync::<Abandoned>();
    assert_send_sync::<Priority>();
    assert_send_sync::<Context>();
    assert_clone::<Stats>();
    assert_clone::<Abandoned>();
    assert_clone::<StopError>();
}

#[test]
fn errors_box_into_a_send_sync_error() {
    // `?` in a function returning `Box<dyn Error + Send + Sync>` works for
    // every error a pool returns, with a `Sync` job.
    fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
        let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
        assert!(pool.stop()?.is_clean());
        let ledger = common::Ledger::new(1);
        let probes: Pool<Probe> = Pool::builder().workers(1).build()?;
        assert!(probes.stop()?.is_clean());
        probes.submit(Probe::new(0, &ledger))?;
        Ok(())
    }
    let err = common::guarded(|| run().map_err(|e| e.to_string()))
        .expect_err("submit after stop succeeded");
    assert_eq!(err, "the pool is stopped");
}
