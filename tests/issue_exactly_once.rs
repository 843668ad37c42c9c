//! Guards against jobs lost or run twice around shutdown (tokio #1978, which
//! lost queued blocking tasks at shutdown): 4 submitters × 25,000 jobs into
//! lanes of capacity 8 (every lane), then a stop — every id runs once (or is
//! handed back once) and is dropped exactly once.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{guarded, Latch, Ledger, Probe};
use triage_pool::{Pool, Priority, SubmitError, SubmitTimeoutError, Submitter, TrySubmitError};

/// Producer threads.
const PRODUCERS: usize = 4;
/// Jobs per producer.
const PER_PRODUCER: usize = 25_000;
/// Every job of a run.
const TOTAL: usize = PRODUCERS * PER_PRODUCER;
/// Capacity of every lane.
const CAPACITY: usize = 8;

/// Two general workers and one reserved urgent worker, every lane holding
/// `CAPACITY` jobs.
fn pool() -> Pool<Probe> {
    Pool::builder()
        .workers(2)
        .reserved_urgent_workers(1)
        .capacity(Priority::Urgent, CAPACITY)
        .capacity(Priority::Normal, CAPACITY)
        .capacity(Priority::Bulk, CAPACITY)
        .build()
        .expect("build pool")
}

/// The lane of job `id`: the three lanes in turn.
fn lane_of(id: usize) -> Priority {
    Priority::ALL[id % 3]
}

/// What one producer did with its ids.
#[derive(Debug, Default)]
struct Produced {
    /// Ids a submit accepted.
    accepted: Vec<usize>,
    /// Ids refused because the pool stopped (the job came back and was
    /// dropped by the producer).
    refused: Vec<usize>,
}

/// Submits ids `producer * PER_PRODUCER ..` with this producer's submit
/// style, retrying a job refused for lack of room (same job, same id) and
/// keeping a job refused by a stop as `refused`. Opens `halfway` (if any)
/// once half of its jobs are accepted.
fn produce(
    producer: usize,
    tx: &Submitter<Probe>,
    ledger: &Arc<Ledger>,
    start: &Barrier,
    halfway: Option<&Latch>,
) -> Produced {
    let mut out = Produced::default();
    start.wait();
    for id in producer * PER_PRODUCER..(producer + 1) * PER_PRODUCER {
        let lane = lane_of(id);
        let job = Probe::new(id, ledger).lane(lane);
        let refused = match producer {
            // Blocking submit to the job's own lane.
            0 => tx.submit(job).err().map(SubmitError::into_inner),
            // Blocking submit with the lane given explicitly; the job's own
            // priority says Normal.
            1 => tx
                .submit_to(lane, job.lane(Priority::Normal))
                .err()
                .map(SubmitError::into_inner),
            // Bounded waits, retried on timeout.
            2 => {
                let mut job = job;
                loop {
                    match tx.submit_timeout(job, Duration::from_millis(2)) {
                        Ok(()) => break None,
                        Err(SubmitTimeoutError::Timeout(back)) => job = back,
                        Err(SubmitTimeoutError::Stopped(back)) => break Some(back),
                    }
                }
            }
            // Non-blocking first, blocking if the lane is full.
            _ => match tx.try_submit(job) {
                Ok(()) => None,
                Err(TrySubmitError::Full(back)) => {
                    tx.submit(back).err().map(SubmitError::into_inner)
                }
                Err(TrySubmitError::Stopped(back)) => Some(back),
            },
        };
        match refused {
            None => out.accepted.push(id),
            Some(job) => {
                assert_eq!(job.id, id, "a refusal handed back another job");
                out.refused.push(id);
            }
        }
        if out.accepted.len() == PER_PRODUCER / 2 {
            if let Some(latch) = halfway {
                latch.open();
            }
        }
    }
    out
}

/// Starts the producers; returns their handles.
fn start_producers(
    pool: &Pool<Probe>,
    ledger: &Arc<Ledger>,
    halfway: Option<&Arc<Latch>>,
) -> Vec<thread::JoinHandle<Produced>> {
    let start = Arc::new(Barrier::new(PRODUCERS));
    (0..PRODUCERS)
        .map(|producer| {
            let tx = pool.submitter();
            let ledger = Arc::clone(ledger);
            let start = Arc::clone(&start);
            let halfway = halfway.map(Arc::clone);
            thread::spawn(move || produce(producer, &tx, &ledger, &start, halfway.as_deref()))
        })
        .collect()
}

/// Joins the producers and merges what they did.
fn join_producers(handles: Vec<thread::JoinHandle<Produced>>) -> Produced {
    let mut all = Produced::default();
    for handle in handles {
        let produced = handle.join().expect("producer panicked");
        all.accepted.extend(produced.accepted);
        all.refused.extend(produced.refused);
    }
    all
}

#[test]
fn every_job_runs_once_and_drops_once_after_a_graceful_stop() {
    guarded(|| {
        let ledger = Ledger::new(TOTAL);
        let pool = pool();
        let produced = join_producers(start_producers(&pool, &ledger, None));
        assert_eq!(
            produced.accepted.len(),
            TOTAL,
            "a running pool refused jobs"
        );
        assert!(produced.refused.is_empty());

        let report = pool.stop().expect("stop");
        assert_eq!(report.succeeded, TOTAL as u64);
        assert!(report.is_clean(), "{report:?}");
        drop(report);

        let stats = pool.stats();
        assert_eq!(stats.accepted(), TOTAL as u64);
        assert_eq!(stats.succeeded(), TOTAL as u64);
        assert_eq!(stats.pending(), 0);
        for id in 0..TOTAL {
            assert_eq!(ledger.runs(id), 1, "job {id} ran {} times", ledger.runs(id));
            assert_eq!(
                ledger.drops(id),
                1,
                "job {id} dropped {} times",
                ledger.drops(id)
            );
        }
        assert_eq!(ledger.starts().len(), TOTAL);
    });
}

/// Submits racing a stop: each job is run once or handed back — to the
/// producer (refused) or in the report (unrun) — never both, never neither.
fn race_a_stop(stop_now: bool) {
    guarded(move || {
        let ledger = Ledger::new(TOTAL);
        let pool = pool();
        let halfway = Latch::new();
        let producers = start_producers(&pool, &ledger, Some(&halfway));
        halfway.wait();
        let report = if stop_now {
            pool.stop_now()
        } else {
            pool.stop()
        }
        .expect("stop");
        let produced = join_producers(producers);
        assert_eq!(produced.accepted.len() + produced.refused.len(), TOTAL);
        assert!(
            produced.accepted.len() >= PER_PRODUCER / 2,
            "the stop began after producer 0 got half its jobs in"
        );

        let unrun: Vec<usize> = report.unrun.iter().map(|u| u.job.id).collect();
        assert!(report.failed.is_empty() && report.panicked.is_empty());
        assert!(report.abandoned.is_empty());
        if !stop_now {
            assert!(
                unrun.is_empty(),
                "a graceful stop left {} unrun",
                unrun.len()
            );
        }
        assert_eq!(
            report.succeeded + unrun.len() as u64,
            produced.accepted.len() as u64,
            "accepted jobs neither ran nor came back"
        );
        let stats = pool.stats();
        assert_eq!(stats.accepted(), produced.accepted.len() as u64);
        assert_eq!(stats.finished(), stats.accepted());

        for &id in &unrun {
            assert_eq!(ledger.runs(id), 0, "unrun job {id} ran");
        }
        let unrun_set: std::collections::HashSet<usize> = unrun.iter().copied().collect();
        assert_eq!(unrun_set.len(), unrun.len(), "a job came back unrun twice");
        for &id in &produced.accepted {
            let expected = usize::from(!unrun_set.contains(&id));
            assert_eq!(ledger.runs(id), expected, "accepted job {id}");
        }
        for &id in &produced.refused {
            assert_eq!(ledger.runs(id), 0, "refused job {id} ran");
            assert!(
                !unrun_set.contains(&id),
                "refused job {id} also came back unrun"
            );
        }
        drop(report);
        drop(pool);
        for id in 0..TOTAL {
            assert_eq!(
                ledger.drops(id),
                1,
                "job {id} dropped {} times",
                ledger.drops(id)
            );
        }
    });
}

#[test]
fn submits_racing_a_graceful_stop_run_once_or_come_back() {
    race_a_stop(false);
}

#[test]
fn submits_racing_stop_now_run_once_or_come_back() {
    race_a_stop(true);
}
