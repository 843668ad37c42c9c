//! A `tracing` subscriber that panics on *every* event, at every level,
//! cannot cost the pool a worker, a job or a report: the events at the
//! lifecycle edges (pool and worker start, shutdown begin and end, a job
//! abandoned at a stop deadline, a worker exiting, a dropped pool's
//! warning) are contained like those on the job path
//! (`panicking_subscriber.rs`).
//!
//! One test per file: it installs the process-wide default subscriber.
#![cfg(panic = "unwind")]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{
    guarded, quiet_panics_on, thread_count, wait_until, Action, Arrivals, Latch, Ledger,
    PanickingSubscriber, Probe,
};
use triage_pool::{Pool, Priority};

/// Every thread of this test (workers and the owner) has this prefix, so
/// the subscriber's contained panics stay out of the test output.
const PREFIX: &str = "everywhere-test";

fn build() -> Pool<Probe> {
    // "pool started" and each worker's "worker started" panic in the
    // subscriber.
    Pool::builder()
        .workers(1)
        .reserved_urgent_workers(1)
        .thread_name(PREFIX)
        .build()
        .expect("build")
}

#[test]
fn a_subscriber_panicking_on_every_event_costs_no_worker_job_or_report() {
    guarded(|| {
        quiet_panics_on(PREFIX);
        let threads_before = thread_count();
        tracing::subscriber::set_global_default(PanickingSubscriber(None))
            .expect("first subscriber");
        thread::Builder::new()
            .name(format!("{PREFIX}-owner"))
            .spawn(body)
            .expect("spawn owner")
            .join()
            .expect("owner");
        if let Some(before) = threads_before {
            assert!(
                wait_until(|| thread_count() == Some(before), common::LIMIT),
                "threads left behind: {:?} of {before}",
                thread_count()
            );
        }
    });
}

fn body() {
    let ledger = Ledger::new(16);
    let pool = build();

    // Both workers survived their start: each runs a job.
    pool.submit(Probe::new(1, &ledger).action(Action::Fail))
        .expect("submit");
    pool.submit(Probe::new(2, &ledger).action(Action::PanicString))
        .expect("submit");
    pool.submit(Probe::new(3, &ledger)).expect("submit");
    pool.wait_idle().expect("not on a worker");
    let latch = Latch::new();
    let started = Arrivals::new();
    pool.submit(
        Probe::new(4, &ledger)
            .action(Action::Wait(Arc::clone(&latch)))
            .started(&started),
    )
    .expect("submit");
    started.wait_for(1);
    // The general worker is held: only the reserved worker can run this.
    pool.submit(
        Probe::new(5, &ledger)
            .lane(Priority::Urgent)
            .started(&started),
    )
    .expect("submit");
    started.wait_for(2);
    pool.submit(Probe::new(6, &ledger)).expect("submit");
    pool.submit(Probe::new(7, &ledger).lane(Priority::Bulk))
        .expect("submit");

    // "shutdown begin", "abandoning it" and "shutdown end" panic in the
    // subscriber; the stop still returns its whole report.
    let report = pool
        .stop_timeout(Duration::from_millis(50))
        .expect("stop_timeout");
    assert_eq!(report.succeeded, 2, "jobs 3 and 5");
    assert_eq!(
        report.failed.iter().map(|f| f.job.id).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(
        report.panicked.iter().map(|p| p.job.id).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(
        report.unrun.iter().map(|u| u.job.id).collect::<Vec<_>>(),
        [6, 7]
    );
    assert_eq!(report.abandoned.len(), 1);
    assert_eq!(report.abandoned[0].worker, 0);
    // The abandoned job finishes ("finished after its stop deadline") and
    // its worker exits ("worker stopped"), both logged into the panicking
    // subscriber; the test's thread count shows the worker did exit.
    latch.open();
    assert!(wait_until(|| ledger.drops(4) == 1, common::LIMIT));
    drop(report);
    drop(pool);
    for id in 1..=7 {
        assert_eq!(ledger.drops(id), 1, "job {id}");
        let runs = usize::from(id <= 5);
        assert_eq!(ledger.runs(id), runs, "job {id}");
    }

    // A pool dropped with a failed job warns; the warning's panic does not
    // escape `drop`.
    let pool = build();
    pool.submit(Probe::new(8, &ledger).action(Action::Fail))
        .expect("submit");
    drop(pool);
    assert_eq!((ledger.runs(8), ledger.drops(8)), (1, 1));
}
