//! Priorities: adverse events must not wait behind an import's backlog.
//!
//! A clinical-trial import feeds routine visit records into the `Normal`
//! lane as fast as the pool takes them, and re-scoring batches into `Bulk`.
//! The importer blocks while the lane is full and is woken when it has
//! drained to half (its low-water mark), so the adverse-event reports,
//! which arrive one by one in `Urgent`, find more than 10,000 routine
//! records queued ahead of them.
//!
//! For each adverse event the example prints how long it waited in the queue
//! ([`Context::queue_wait`]) next to how long a FIFO pool would have made it
//! wait: from its arrival until the last routine record accepted before it
//! started. It runs the scenario twice:
//!
//! - with two general workers: an adverse event waits only for a running job
//!   to finish (a record with an attachment takes 5 ms), never for the
//!   backlog;
//! - with one reserved urgent worker on top: it starts at once, whatever the
//!   general workers are running. (General workers still take urgent jobs
//!   first, so some adverse events run on whichever thread gets there first.)
//!   The general workers also lower their OS priority
//!   (`Builder::general_worker_nice`, Linux), so the woken reserved thread
//!   gets a core at once even when the general workers keep every core busy.
//!
//! Run with `cargo run --release --example priorities` (one to two seconds on
//! an idle machine; the waits it prints grow with the machine's load).

use std::convert::Infallible;
use std::error::Error;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use triage_pool::{Context, Job, Pool, Priority};

/// Routine visit records the import submits.
const ROUTINE_RECORDS: usize = 24_000;
/// Capacity of the `Normal` lane: the import keeps it full.
const ROUTINE_BACKLOG: usize = 12_288;
/// Every this many routine records, one carries an attachment.
const ATTACHMENT_EVERY: usize = 200;
/// Re-scoring batches queued in `Bulk`.
const RESCORE_BATCHES: usize = 100;
/// Adverse-event reports arriving during the import.
const ADVERSE_EVENTS: usize = 8;
/// Time between two adverse events.
const EVENT_INTERVAL: Duration = Duration::from_millis(10);

/// CPU time of one routine record (validate, map, write).
const ROUTINE_COST: Duration = Duration::from_micros(20);
/// CPU time of a routine record with an attachment.
const ATTACHMENT_COST: Duration = Duration::from_millis(5);
/// CPU time of one re-scoring batch.
const RESCORE_COST: Duration = Duration::from_millis(1);
/// CPU time of one adverse event (validate, notify the safety desk).
const ADVERSE_COST: Duration = Duration::from_micros(100);

/// General worker threads.
const WORKERS: usize = 2;

/// What one job of the import does.
#[derive(Debug)]
enum Work {
    /// A routine visit record; `id` in submission order.
    Routine { id: usize },
    /// Re-scoring a batch of earlier records.
    Rescore,
    /// An adverse-event report.
    Adverse(Arrival),
}

/// What the pool looked like when an adverse event was submitted.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// 1-based number of the report.
    report: usize,
    /// Routine records queued ahead of it.
    routine_queued: usize,
    /// Re-scoring batches queued ahead of it.
    rescore_queued: usize,
    /// `Stats::oldest_wait(Normal)`: an upper bound on the oldest routine
    /// record's wait.
    oldest_routine: Option<Duration>,
    /// The routine record accepted just before this report.
    routine_before: usize,
    /// When the report was submitted, since `Log::epoch`.
    at: Duration,
}

/// One job of the import.
#[derive(Debug)]
struct ImportJob {
    work: Work,
    log: Arc<Log>,
}

impl Job for ImportJob {
    type Error = Infallible;

    fn run(&mut self, ctx: &Context) -> Result<(), Infallible> {
        match self.work {
            Work::Routine { id } => {
                // When it started, since the epoch; stored + 1 so that 0
                // means "not started".
                let nanos = u64::try_from(self.log.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.log.routine_start[id].store(nanos.saturating_add(1), Ordering::Relaxed);
                spin(if id % ATTACHMENT_EVERY == ATTACHMENT_EVERY - 1 {
                    ATTACHMENT_COST
                } else {
                    ROUTINE_COST
                });
            }
            Work::Rescore => spin(RESCORE_COST),
            Work::Adverse(arrival) => {
                self.log.adverse.lock().unwrap().push(AdverseRun {
                    arrival,
                    wait: ctx.queue_wait(),
                    worker: ctx.worker_index(),
                    reserved: ctx.is_reserved_worker(),
                });
                spin(ADVERSE_COST);
            }
        }
        Ok(())
    }

    fn priority(&self) -> Priority {
        match self.work {
            Work::Routine { .. } => Priority::Normal,
            Work::Rescore => Priority::Bulk,
            Work::Adverse(_) => Priority::Urgent,
        }
    }
}

/// Burns CPU for `cost`, like real parsing and scoring would.
fn spin(cost: Duration) {
    let start = Instant::now();
    let mut x = 0_u64;
    while start.elapsed() < cost {
        for _ in 0..64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// An adverse event as it ran.
#[derive(Debug)]
struct AdverseRun {
    arrival: Arrival,
    wait: Duration,
    worker: usize,
    reserved: bool,
}

/// What the jobs report back.
#[derive(Debug)]
struct Log {
    /// Where the run's times count from.
    epoch: Instant,
    /// Per routine record: when it started, since `epoch`, in nanoseconds
    /// + 1 (0: not started yet).
    routine_start: Vec<AtomicU64>,
    /// Adverse events in the order they started.
    adverse: Mutex<Vec<AdverseRun>>,
}

impl Log {
    /// How long a FIFO pool would have kept an adverse event arriving at
    /// `arrival` waiting: until the routine record accepted just before it
    /// started.
    fn fifo_wait(&self, arrival: &Arrival) -> Duration {
        let started = self.routine_start[arrival.routine_before]
            .load(Ordering::Relaxed)
            .saturating_sub(1);
        Duration::from_nanos(started).saturating_sub(arrival.at)
    }
}

/// The numbers one run of the scenario ends with.
#[derive(Debug)]
struct Outcome {
    label: &'static str,
    adverse_median: Duration,
    adverse_max: Duration,
    fifo_median: Duration,
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "import: {ROUTINE_RECORDS} routine records in Normal (lane capacity {ROUTINE_BACKLOG}; \
         {} us each, every {ATTACHMENT_EVERY}th {} ms), {RESCORE_BATCHES} re-scoring batches \
         in Bulk ({} ms each), {ADVERSE_EVENTS} adverse events in Urgent, one every {} ms",
        ROUTINE_COST.as_micros(),
        ATTACHMENT_COST.as_millis(),
        RESCORE_COST.as_millis(),
        EVENT_INTERVAL.as_millis(),
    );
    let outcomes = [
        run_import(0, "2 general workers")?,
        run_import(1, "2 general + 1 reserved urgent worker")?,
    ];

    println!(
        "\nsummary: queue wait of the adverse events, against what a FIFO pool would \
         have made each wait (until the routine records accepted before it had started)"
    );
    println!(
        "  {:<38} {:>10} {:>10} {:>14}",
        "", "median", "max", "FIFO median"
    );
    for o in &outcomes {
        println!(
            "  {:<38} {:>10} {:>10} {:>14}",
            o.label,
            ms(o.adverse_median),
            ms(o.adverse_max),
            ms(o.fifo_median)
        );
    }
    for o in &outcomes {
        let times = o.fifo_median.as_secs_f64() / o.adverse_max.as_secs_f64().max(1e-9);
        let verdict = if times >= 10.0 {
            "no adverse event waited behind the backlog"
        } else {
            "an adverse event waited about as long as the backlog (is the machine overloaded?)"
        };
        println!(
            "  {}: {verdict}; the slowest started {times:.0}x sooner than under FIFO",
            o.label
        );
    }
    Ok(())
}

/// Runs the whole import once, with `reserved` reserved urgent workers.
fn run_import(reserved: usize, label: &'static str) -> Result<Outcome, Box<dyn Error>> {
    println!("\n== {label} ==");
    let pool: Pool<ImportJob> = Pool::builder()
        .workers(WORKERS)
        .reserved_urgent_workers(reserved)
        // With a reserved worker, let it preempt busy general workers.
        .general_worker_nice(if reserved > 0 { 19 } else { 0 })
        .capacity(Priority::Urgent, 64)
        .capacity(Priority::Normal, ROUTINE_BACKLOG)
        .capacity(Priority::Bulk, RESCORE_BATCHES)
        .thread_name("import")
        .build()?;
    let log = Arc::new(Log {
        epoch: Instant::now(),
        routine_start: (0..ROUTINE_RECORDS).map(|_| AtomicU64::new(0)).collect(),
        adverse: Mutex::new(Vec::with_capacity(ADVERSE_EVENTS)),
    });

    for _ in 0..RESCORE_BATCHES {
        pool.submit(ImportJob {
            work: Work::Rescore,
            log: Arc::clone(&log),
        })?;
    }

    // The import: submits block while the Normal lane is full and wake
    // when it has drained to half, so the backlog stays between half and
    // full capacity until the file is read.
    let accepted = Arc::new(AtomicUsize::new(0));
    let importer = {
        let (tx, log, accepted) = (pool.submitter(), Arc::clone(&log), Arc::clone(&accepted));
        thread::spawn(move || {
            for id in 0..ROUTINE_RECORDS {
                let job = ImportJob {
                    work: Work::Routine { id },
                    log: Arc::clone(&log),
                };
                if tx.submit(job).is_err() {
                    return; // the pool stopped
                }
                accepted.store(id + 1, Ordering::Release);
            }
        })
    };
    while pool.stats().queued(Priority::Normal) < 10_000 {
        thread::sleep(Duration::from_millis(1));
    }

    // Adverse events arrive while the backlog is queued.
    for report in 1..=ADVERSE_EVENTS {
        thread::sleep(EVENT_INTERVAL);
        let stats = pool.stats();
        let arrival = Arrival {
            report,
            routine_queued: stats.queued(Priority::Normal),
            rescore_queued: stats.queued(Priority::Bulk),
            oldest_routine: stats.oldest_wait(Priority::Normal),
            routine_before: accepted.load(Ordering::Acquire).saturating_sub(1),
            at: log.epoch.elapsed(),
        };
        pool.submit(ImportJob {
            work: Work::Adverse(arrival),
            log: Arc::clone(&log),
        })?;
    }

    importer.join().expect("the importer thread does not panic");
    let report = pool.stop()?;
    assert!(report.is_clean(), "every job of the import succeeded");

    let runs = std::mem::take(&mut *log.adverse.lock().unwrap());
    println!(
        "  {:>5} {:>22} {:>16} {:>12} {:>11} {:>22}",
        "event",
        "queued routine/bulk",
        "oldest routine <=",
        "queue wait",
        "ran on",
        "FIFO would wait"
    );
    let mut adverse = Vec::new();
    let mut fifo = Vec::new();
    for run in &runs {
        let a = run.arrival;
        let fifo_wait = log.fifo_wait(&a);
        let kind = if run.reserved { "reserved" } else { "general" };
        println!(
            "  {:>5} {:>22} {:>16} {:>12} {:>11} {:>22}",
            a.report,
            format!("{} / {}", a.routine_queued, a.rescore_queued),
            a.oldest_routine.map_or_else(|| "-".to_owned(), ms),
            ms(run.wait),
            format!("{kind} {}", run.worker),
            ms(fifo_wait),
        );
        adverse.push(run.wait);
        fifo.push(fifo_wait);
    }
    adverse.sort();
    fifo.sort();
    let outcome = Outcome {
        label,
        adverse_median: adverse[adverse.len() / 2],
        adverse_max: adverse[adverse.len() - 1],
        fifo_median: fifo[fifo.len() / 2],
    };
    println!(
        "  {} jobs succeeded; adverse events waited at most {} (median {}); \
         under FIFO they would have waited {} (median)",
        report.succeeded,
        ms(outcome.adverse_max),
        ms(outcome.adverse_median),
        ms(outcome.fifo_median),
    );
    Ok(outcome)
}

/// A duration in milliseconds, three decimals.
fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
