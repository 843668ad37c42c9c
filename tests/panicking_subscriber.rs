//! A `tracing` subscriber that panics on every `error` event (a user bug,
//! but a real one) cannot make the pool lose a job or a worker: the events
//! the pool logs on a worker's job path — a job panicked, a succeeded job's
//! `Drop` panicked — are contained like the panics they report.
//!
//! One test per file: it installs the process-wide default subscriber.
#![cfg(panic = "unwind")]

mod common;

use tracing::Level;

use common::{guarded, quiet_panics_on, PanickingSubscriber};
use triage_pool::{Context, Job, Pool};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Its `run` panics.
    Panics,
    /// Its `run` succeeds, then its `Drop` panics.
    DropPanics,
    /// Succeeds.
    Succeeds,
}

#[derive(Debug)]
struct Task {
    id: u32,
    kind: Kind,
    /// Set by `run`: only the worker's drop after a successful run panics.
    ran: bool,
}

impl Job for Task {
    type Error = std::convert::Infallible;

    fn run(&mut self, _ctx: &Context) -> Result<(), Self::Error> {
        self.ran = true;
        if self.kind == Kind::Panics {
            panic!("job {} panicked", self.id);
        }
        Ok(())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.kind == Kind::DropPanics && self.ran {
            panic!("job {} panicked in drop", self.id);
        }
    }
}

#[test]
fn a_panicking_subscriber_loses_no_job_and_no_worker() {
    guarded(|| {
        quiet_panics_on("subscriber-test");
        tracing::subscriber::set_global_default(PanickingSubscriber(Some(Level::ERROR)))
            .expect("first subscriber");
        let pool: Pool<Task> = Pool::builder()
            .workers(1)
            .thread_name("subscriber-test")
            .build()
            .expect("build");
        for id in 0..30 {
            let kind = [Kind::Panics, Kind::DropPanics, Kind::Succeeds][id as usize % 3];
            pool.submit(Task {
                id,
                kind,
                ran: false,
            })
            .expect("submit");
        }
        pool.wait_idle().expect("not on a worker");
        let stats = pool.stats();
        assert_eq!(stats.workers(), 1);
        assert_eq!((stats.succeeded(), stats.panicked()), (20, 10), "{stats:?}");
        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, 20);
        let mut panicked: Vec<u32> = report
            .panicked
            .iter()
            .map(|p| {
                assert_eq!(p.job.kind, Kind::Panics, "{:?}", p.job);
                p.job.id
            })
            .collect();
        panicked.sort_unstable();
        assert_eq!(panicked, (0..30).step_by(3).collect::<Vec<_>>());
        assert!(report
            .panicked
            .iter()
            .all(|p| p.message.starts_with("job ")));
    });
}
