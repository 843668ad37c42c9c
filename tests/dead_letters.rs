//! Failed and panicked jobs can be taken while the pool runs
//! (`take_failed` / `take_panicked`), each handed back exactly once: taken
//! early, or in the stop report — never both, never neither.

mod common;

use common::{guarded, Action, Arrivals, Ledger, Probe};
use triage_pool::Pool;

/// Prefix of the worker threads' names, so their panics can be silenced.
const THREAD_NAME: &str = "dead-letters";

#[test]
fn taken_dead_letters_are_not_reported_again() {
    guarded(|| {
        // Keep the panicking jobs' messages out of the output; the test's
        // own panics still show.
        common::quiet_panics_on(THREAD_NAME);
        let ledger = Ledger::new(30);
        let started = Arrivals::new();
        let pool: Pool<Probe> = Pool::builder()
            .workers(2)
            .thread_name(THREAD_NAME)
            .build()
            .expect("pool");
        let action = |id: usize| match id % 3 {
            0 => Action::Fail,
            1 => Action::PanicString,
            _ => Action::Succeed,
        };
        // First half: run to completion, then take the dead letters.
        for id in 0..15 {
            let job = Probe::new(id, &ledger).action(action(id)).started(&started);
            pool.submit(job).expect("submit");
        }
        started.wait_for(15);
        let (mut failed, mut panicked) = (Vec::new(), Vec::new());
        // A job that started may not have been filed yet: collect until all
        // ten non-successes of the first half are in.
        let filed = common::wait_until(
            || {
                failed.extend(pool.take_failed().into_iter().map(|f| f.job.id));
                panicked.extend(pool.take_panicked().into_iter().map(|p| p.job.id));
                failed.len() + panicked.len() >= 10
            },
            common::LIMIT,
        );
        assert!(
            filed,
            "only {failed:?} failed and {panicked:?} panicked of the first half were filed"
        );
        // Second half stays in the pool until stop.
        for id in 15..30 {
            pool.submit(Probe::new(id, &ledger).action(action(id)))
                .expect("submit");
        }
        let report = pool.stop().expect("stop");
        failed.extend(report.failed.iter().map(|f| f.job.id));
        panicked.extend(report.panicked.iter().map(|p| p.job.id));
        failed.sort_unstable();
        panicked.sort_unstable();
        assert_eq!(failed, (0..30).filter(|id| id % 3 == 0).collect::<Vec<_>>());
        assert_eq!(
            panicked,
            (0..30).filter(|id| id % 3 == 1).collect::<Vec<_>>()
        );
        assert!(report.failed.iter().all(|f| f.job.id >= 15));
        assert!(report.panicked.iter().all(|p| p.job.id >= 15));
        let stats = pool.stats();
        assert_eq!(
            (stats.failed(), stats.panicked(), stats.succeeded()),
            (10, 10, 10)
        );
        assert_eq!(stats.accepted(), stats.finished());
        drop(report);
        for id in 0..30 {
            assert_eq!(ledger.runs(id), 1, "job {id}");
        }
    });
}
