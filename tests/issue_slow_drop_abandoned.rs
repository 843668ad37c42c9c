//! A succeeded job whose `Drop` blocks is still the job a `stop_timeout`
//! may abandon: the stop returns by its deadline and reports it, instead of
//! waiting for the `Drop` (the worker used to mark itself idle first, so the
//! stop waited for the whole `Drop`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{guarded, Arrivals, Latch};
use triage_pool::{Context, Job, Pool, Priority};

/// The stop deadline.
const DEADLINE: Duration = Duration::from_millis(50);
/// Slack allowed past the deadline on a loaded machine.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// Succeeds at once; its `Drop` reports in, then waits at the latch.
struct SlowDrop {
    dropping: Arc<Arrivals>,
    release: Arc<Latch>,
    drops: Arc<AtomicUsize>,
}

impl Job for SlowDrop {
    type Error = ();

    fn run(&mut self, _ctx: &Context) -> Result<(), ()> {
        Ok(())
    }
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        self.dropping.arrive();
        self.release.wait();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn stop_timeout_abandons_a_job_stuck_in_its_drop() {
    guarded(|| {
        let (dropping, release) = (Arrivals::new(), Latch::new());
        let drops = Arc::new(AtomicUsize::new(0));
        let pool: Pool<SlowDrop> = Pool::builder().workers(1).build().expect("pool");
        pool.submit(SlowDrop {
            dropping: Arc::clone(&dropping),
            release: Arc::clone(&release),
            drops: Arc::clone(&drops),
        })
        .expect("submit");
        dropping.wait_for(1); // the worker is inside the job's Drop

        let started = Instant::now();
        let report = pool.stop_timeout(DEADLINE).expect("stop_timeout");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= DEADLINE,
            "returned before its deadline: {elapsed:?}"
        );
        assert!(
            elapsed < DEADLINE + DEADLINE_MARGIN,
            "waited for the job's Drop: {elapsed:?}"
        );
        assert_eq!(report.abandoned.len(), 1, "{report:?}");
        assert_eq!(report.abandoned[0].worker, 0);
        assert_eq!(report.abandoned[0].lane, Priority::Normal);
        assert_eq!(
            report.succeeded, 0,
            "an abandoned job is not also a success"
        );
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the Drop is still blocked");

        // Released, the Drop finishes and a later stop joins the worker.
        release.open();
        assert!(pool.stop().expect("stop").is_clean());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let stats = pool.stats();
        assert_eq!((stats.accepted(), stats.abandoned()), (1, 1), "{stats:?}");
    });
}
