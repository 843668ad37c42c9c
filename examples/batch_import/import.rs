//! The import: read a CSV of clinical visit records, run every record as a
//! job on a [`triage_pool::Pool`], and account for every record at the end.
//!
//! This module is shared by the example (`examples/batch_import.rs`: command
//! line, progress bar, stop signals) and its test (`tests/batch_import.rs`), which
//! include it with `#[path]`.
//!
//! # Where every record ends up
//!
//! | outcome | why | where |
//! |---|---|---|
//! | committed | valid, and its transaction committed | the database (`visits`, and `alerts` for an adverse event) |
//! | rejected | malformed row, or its record id already in the database | the rejects file, with the reason |
//! | failed | the database refused it (a constraint, a trigger), its transaction failed as a whole (for example still `SQLITE_BUSY` after the retries), or its job panicked before staging it | the resume file, and the failure file with the reason |
//! | unrun | accepted by the pool, handed back by a stop | the resume file |
//! | not submitted | read after a stop was requested, or never read | the resume file |
//!
//! So `records read = committed + rejected + failed + unrun + not submitted`,
//! and the resume file, in the input's own format and order, can be imported
//! again into the same database to finish the job.
//!
//! Two cases leave part of the input in no file at all, and the summary
//! says so: a limit on the records to read ([`ImportConfig::max_records`];
//! [`Summary::unread_from_line`] says where reading stopped), and an input
//! that cannot be read past some point ([`Summary::input_error`]).
//!
//! # Exit status
//!
//! [`Summary::exit_code`] turns the outcome into the example's exit status:
//! [`EXIT_DONE`] when every record read was imported or rejected,
//! [`EXIT_TO_RESUME`] when some are in the resume file, [`EXIT_ERROR`] when
//! the input could not be read to the end or a check failed. (A usage
//! error is exit status 2, clap's; so "left to resume" is 3, never 2.)
//!
//! A job returning `Ok` only means its record was valid and *staged* in its
//! worker's batch (see `store.rs`), so the pool's `succeeded` count is not
//! the number of records imported: the [`Writer`](store::Writer) keeps the
//! ledger of rows committed, refused as duplicates and failed, and
//! [`Summary::is_balanced`] checks that every staged record is in exactly
//! one of them once the pool has stopped.
//!
//! # Stopping
//!
//! A stop is requested through a [`StopSignal`] (the example's handler of
//! Ctrl-C, SIGTERM and SIGHUP, or a test). The reader stops submitting, the pool's
//! [`stop_now`](triage_pool::Pool::stop_now) closes intake, lets running
//! records finish and hands the queued ones back unrun, each worker's
//! `on_worker_idle` hook writes its last batch before `stop_now` returns,
//! and the rest of the input is copied to the resume file.

pub(crate) mod generate;
mod job;
pub(crate) mod record;
mod store;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use triage_pool::{
    BuildError, Job, LatencyHistogram, Pool, Priority, Stats, StopError, StopReport,
};

use self::job::{ImportJob, JobShared};
use self::store::{Counts, DbSettings, Unwritten, Writer};
pub(crate) use self::store::{RetryPolicy, Rows, BATCH_ROWS};

/// Jobs the `Urgent` lane holds. Adverse events are rare, so this is ample;
/// a burst beyond it makes the reader wait, it never drops a record.
const URGENT_CAPACITY: usize = 256;

/// Jobs the `Normal` lane holds: enough to keep the workers busy while the
/// reader parses, small enough that a stop hands back little.
const NORMAL_CAPACITY: usize = 1024;

/// The largest [`ImportConfig::batch_rows`]; a larger setting is clamped to
/// it. A flush holds the database's write lock for its whole batch (about
/// half a second for this many records), and each worker holds its batch
/// in memory.
pub(crate) const MAX_BATCH_ROWS: usize = 100_000;

/// The most worker threads the command line allows (`--workers`,
/// `--urgent-workers`). Each worker has its own database connection, and
/// all of them take turns at SQLite's single write lock: a flush of a full
/// batch holds it for one to two milliseconds, so a flush may queue behind
/// every other worker's for up to `workers` × 2 ms. At 256 workers that
/// stays within the connection's busy timeout and the retries' backoff
/// ([`ImportConfig::new`]: 250 ms, then about 1.5 s in all), and a
/// 200,000-record import on two cores failed no record; with 1,000 workers
/// a quarter of the records failed with "database is locked" (into the
/// resume file, but failed all the same). More threads than cores do not
/// make the import faster anyway: the writes are serialised.
pub(crate) const MAX_WORKERS: usize = 256;

/// Exit status: every record read was imported or rejected (with
/// `--max-records`, every record up to the limit).
pub(crate) const EXIT_DONE: u8 = 0;

/// Exit status: an error. The import could not run, the input could not
/// be read to the end (the records after the error are in no file, so the
/// resume file alone would not finish the job), or a check of the ledger
/// or of the database failed.
pub(crate) const EXIT_ERROR: u8 = 1;

/// Exit status: some records are in the resume file (a stop, or records the
/// database did not take); importing it into the same database finishes
/// the job. Not 2, which is a usage error (a bad flag or value).
pub(crate) const EXIT_TO_RESUME: u8 = 3;

/// The exit statuses as `--help` lists them: one line per status, its
/// number in the third column, continuation lines indented further.
/// `tests/batch_import.rs` checks it against the constants above.
pub(crate) const EXIT_STATUS_HELP: &str = "Exit status:
  0  every record read was imported or rejected (with --max-records: every
     record up to the limit)
  3  records are left in resume.csv, after a stop or because the database
     did not take them: import it into the same database (the summary
     prints the command)
  1  an error: the import could not run, or was stopped while generating
     its input; the input could not be read to the end (the records after
     the error are in no file: fix it and import all of it again); or a
     check of the ledger or the database failed
  2  a usage error (a bad flag or value); nothing was done";

/// How often the monitor thread reports progress and checks for a stop.
const TICK: Duration = Duration::from_millis(100);

/// What to import, where to put it, and how hard to try.
#[derive(Debug, Clone)]
pub(crate) struct ImportConfig {
    /// The CSV file to import.
    pub(crate) input: PathBuf,
    /// The SQLite database (created if missing; existing rows are kept).
    pub(crate) database: PathBuf,
    /// Where rejected rows are written, with their reasons.
    pub(crate) rejects: PathBuf,
    /// Where rows still to import are written, in the input's format.
    pub(crate) resume: PathBuf,
    /// Where failed rows are written with the reason (they are in the
    /// resume file too).
    pub(crate) failures: PathBuf,
    /// General worker threads (the command line allows 1 to
    /// [`MAX_WORKERS`]).
    pub(crate) workers: usize,
    /// Extra workers that only take adverse events, so an urgent record
    /// starts even while every general worker is busy (the command line
    /// allows 0 to [`MAX_WORKERS`]).
    pub(crate) urgent_workers: usize,
    /// Read at most this many records. The rest of the input is not read:
    /// it is in no output file, not even the resume file
    /// ([`Summary::unread_from_line`] says where reading stopped).
    pub(crate) max_records: Option<u64>,
    /// How long SQLite waits for a lock before reporting `SQLITE_BUSY`.
    pub(crate) busy_timeout: Duration,
    /// How a transaction is retried after `SQLITE_BUSY`.
    pub(crate) retry: RetryPolicy,
    /// Records a worker writes per transaction, 1 to [`MAX_BATCH_ROWS`]
    /// (adverse events are written at once, one per transaction).
    pub(crate) batch_rows: usize,
    /// Test only: input lines whose jobs panic right after staging their
    /// record (a stand-in for a bug between staging and writing).
    #[cfg(test)]
    pub(crate) panic_after_staging: Vec<u64>,
}

impl ImportConfig {
    /// Imports `input`, with the database, rejects, resume and failure
    /// files in `out_dir`, one worker per core (at most [`MAX_WORKERS`])
    /// plus one urgent worker,
    /// batches of [`BATCH_ROWS`] records, and a bounded retry of
    /// `SQLITE_BUSY` (about 1.5 s of backoff in all).
    pub(crate) fn new(input: PathBuf, out_dir: &Path) -> ImportConfig {
        ImportConfig {
            input,
            database: out_dir.join("visits.sqlite"),
            rejects: out_dir.join("rejects.csv"),
            resume: out_dir.join("resume.csv"),
            failures: out_dir.join("failed.csv"),
            workers: thread::available_parallelism().map_or(2, |n| n.get().min(MAX_WORKERS)),
            urgent_workers: 1,
            max_records: None,
            busy_timeout: Duration::from_millis(250),
            retry: RetryPolicy {
                attempts: 5,
                first_backoff: Duration::from_millis(100),
            },
            batch_rows: BATCH_ROWS,
            #[cfg(test)]
            panic_after_staging: Vec::new(),
        }
    }
}

/// A request to stop an import early, shared between whoever asks (a
/// signal handler, a test) and the import, which polls it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopSignal {
    /// Raised once, never lowered.
    requested: Arc<AtomicBool>,
}

impl StopSignal {
    /// A signal nobody raised yet.
    pub(crate) fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Asks the import to stop. Returns whether this was the first request.
    pub(crate) fn request(&self) -> bool {
        !self.requested.swap(true, Ordering::SeqCst)
    }

    /// Whether a stop was requested.
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Hooks for watching an import: a progress bar, a log, a test.
pub(crate) trait Observer: Sync {
    /// Called once before the first record is read, with the number of
    /// records the import will read if it runs to the end: `None` for an
    /// input that can be read only once (a pipe), which is not counted.
    fn started(&self, _records: Option<u64>) {}

    /// Called on the reading thread each time the pool accepts a record,
    /// with the number accepted so far.
    fn accepted(&self, _accepted: u64) {}

    /// Called about ten times a second, from another thread, with a
    /// snapshot of the pool and of the writer's ledger.
    fn tick(&self, _stats: &Stats, _rows: &Rows) {}

    /// Called once the pool has stopped (every batch written), with the
    /// final snapshots.
    fn finished(&self, _stats: &Stats, _rows: &Rows) {}
}

/// Watches nothing.
impl Observer for () {}

/// Queue-wait percentiles of one lane (submit to start of `run`), read
/// from the pool's own histogram of the lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Latency {
    /// Jobs measured.
    pub(crate) count: u64,
    /// Median (the pool reports quantiles at most 12.5 % high).
    pub(crate) p50: Duration,
    /// 99th percentile.
    pub(crate) p99: Duration,
    /// Longest.
    pub(crate) max: Duration,
}

impl From<&LatencyHistogram> for Latency {
    fn from(waits: &LatencyHistogram) -> Latency {
        Latency {
            count: waits.count(),
            p50: waits.quantile(0.5).unwrap_or_default(),
            p99: waits.quantile(0.99).unwrap_or_default(),
            max: waits.max().unwrap_or_default(),
        }
    }
}

/// What an import did, record by record and in the database.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// Records read from the input.
    pub(crate) read: u64,
    /// Records committed to the database.
    pub(crate) committed: u64,
    /// Malformed records, and records already in the database, written to
    /// the rejects file.
    pub(crate) rejected: u64,
    /// Records the database refused, whose transaction failed, or whose
    /// job panicked before staging them, in the resume file and, with the
    /// reason, in the failure file.
    pub(crate) failed: u64,
    /// Records the pool handed back unrun at a stop, in the resume file.
    pub(crate) unrun: u64,
    /// Records never submitted because of a stop (the one refused at the
    /// stop, and the rest of the input, copied unread), in the resume file.
    pub(crate) not_submitted: u64,
    /// Adverse-event records the pool accepted (the urgent lane).
    pub(crate) adverse_events: u64,
    /// Adverse events committed with their alert.
    pub(crate) alerts_written: u64,
    /// Adverse events rejected as malformed rows (in the rejects file, no
    /// alert). The other adverse events without an alert (refused as
    /// duplicates, failed, unrun) are wherever their outcome puts them.
    pub(crate) adverse_rejected: u64,
    /// Jobs that panicked after staging their record (a bug, logged). The
    /// writer has their records, so they are counted where it put them
    /// (committed, rejected as duplicates, or failed), not here.
    pub(crate) panicked_after_staging: u64,
    /// The writer's ledger: records staged, committed, refused as
    /// duplicates or failed, and the transactions that wrote them.
    pub(crate) rows: Rows,
    /// A stop left records behind: handed back unrun, refused at submit,
    /// or not read yet (all in the resume file). A stop requested once
    /// every record was done does not count.
    pub(crate) stopped_early: bool,
    /// The input could not be read to the end (the records before the error
    /// are accounted for as usual; those after it are in no file).
    pub(crate) input_error: Option<String>,
    /// [`ImportConfig::max_records`] stopped the reading before the end of
    /// the input: the line of the first record not read. That record and
    /// the rest of the input are in no file, not even the resume file.
    /// `None` when there is no limit, or nothing followed it.
    pub(crate) unread_from_line: Option<u64>,
    /// Wall time from start to the files written.
    pub(crate) elapsed: Duration,
    /// Queue waits of adverse events.
    pub(crate) urgent_wait: Latency,
    /// Queue waits of routine records.
    pub(crate) normal_wait: Latency,
    /// The pool's final counters.
    pub(crate) pool: Stats,
    /// Database row counts before the import.
    pub(crate) before: Counts,
    /// Database row counts after the import.
    pub(crate) after: Counts,
}

impl Summary {
    /// Records a worker ran: committed, rejected or failed.
    pub(crate) fn processed(&self) -> u64 {
        self.committed + self.rejected + self.failed
    }

    /// Records processed per second of wall time.
    pub(crate) fn records_per_second(&self) -> f64 {
        self.processed() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Records in the resume file.
    pub(crate) fn to_resume(&self) -> u64 {
        self.failed + self.unrun + self.not_submitted
    }

    /// Whether every record read is accounted for exactly once, and the
    /// pool's ledger and the writer's agree with it: every job that
    /// returned `Ok` (or panicked after staging) staged a record that was
    /// then committed, refused as a duplicate, or failed — none is left in
    /// a batch.
    pub(crate) fn is_balanced(&self) -> bool {
        let pool = &self.pool;
        let rows = &self.rows;
        let panicked_before_staging = pool.panicked().checked_sub(self.panicked_after_staging);
        self.read == self.committed + self.rejected + self.failed + self.unrun + self.not_submitted
            && pool.accepted() == pool.finished()
            && pool.succeeded() + self.panicked_after_staging == rows.staged
            && rows.staged == rows.committed + rows.duplicates + rows.failed
            && self.committed == rows.committed
            && self.alerts_written == rows.alerts
            && self.rejected == pool.failed() + rows.duplicates
            && panicked_before_staging.map(|panicked| panicked + rows.failed) == Some(self.failed)
            && pool.unrun() == self.unrun
            && pool.abandoned() == 0
    }

    /// Whether the database gained exactly the rows the summary reports.
    pub(crate) fn database_matches(&self) -> bool {
        self.after.visits.checked_sub(self.before.visits) == Some(self.committed)
            && self.after.alerts.checked_sub(self.before.alerts) == Some(self.alerts_written)
    }

    /// The example's exit status for this outcome: [`EXIT_ERROR`] if a
    /// check failed or the input could not be read to the end (resuming
    /// would not finish the job: fix the input and import it again),
    /// else [`EXIT_TO_RESUME`] if records are left in the resume file, else
    /// [`EXIT_DONE`]. A limit on the records read is not a failure:
    /// `--max-records` asked for it, and the summary says where it stopped.
    pub(crate) fn exit_code(&self) -> u8 {
        if !self.is_balanced() || !self.database_matches() || self.input_error.is_some() {
            EXIT_ERROR
        } else if self.to_resume() > 0 {
            EXIT_TO_RESUME
        } else {
            EXIT_DONE
        }
    }
}

/// Why an import could not run (as opposed to records it could not import,
/// which are reported in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// The input file could not be opened or its header read.
    #[error("cannot read input file {}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: csv::Error,
    },
    /// The input has no header row (an empty file).
    #[error("input file {} is empty (no header row; expected columns: {})", path.display(), record::COLUMNS.join(","))]
    EmptyInput {
        /// The file.
        path: PathBuf,
    },
    /// The input lacks a column.
    #[error("input file {} has no {column:?} column (expected columns: {})", path.display(), record::COLUMNS.join(","))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The first missing column.
        column: &'static str,
    },
    /// The input names a column twice: which of the two holds the value is
    /// anybody's guess, so every row would be rejected.
    #[error("input file {} has the column {column:?} twice (columns {first} and {second} of the header); each column must appear once", path.display())]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// Its first position in the header, from 1.
        first: usize,
        /// Its second position, from 1.
        second: usize,
    },
    /// The database could not be prepared or counted.
    #[error("cannot use database {}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An output file could not be written. The records it should have held
    /// are only in the input now: fix the cause (disk full, permissions) and
    /// import the input again into the same database; the records already
    /// imported are then rejected as duplicates.
    #[error(
        "cannot write {records} records to {}; fix the cause below, then import the whole input again into the same database (the records it already holds are rejected as duplicates)",
        path.display()
    )]
    Output {
        /// The file.
        path: PathBuf,
        /// Records meant for it.
        records: usize,
        /// What failed.
        #[source]
        source: csv::Error,
    },
    /// An output file would overwrite the input (for example,
    /// when resuming from `resume.csv` into the same output directory).
    #[error("{} is the input file; choose another output directory", path.display())]
    OutputIsInput {
        /// The file.
        path: PathBuf,
    },
    /// An output file (rejects, resume, failed) is the database, which it
    /// would overwrite at the end of the import.
    #[error("{} is the database; choose another --db or output directory", path.display())]
    OutputIsDatabase {
        /// The file.
        path: PathBuf,
    },
    /// The worker pool could not start.
    #[error("cannot start the worker pool")]
    Pool(#[from] BuildError),
    /// The pool could not be stopped from this thread.
    #[error("cannot stop the worker pool")]
    Stop(#[from] StopError),
}

/// A record that did not make it into the database, on its way to a file.
#[derive(Debug)]
struct Leftover {
    /// Line in the input.
    line: u64,
    /// Why, for the rejects or failure file; `None` for a record that was
    /// not run (unrun, not submitted).
    reason: Option<String>,
    /// The record as read.
    record: csv::ByteRecord,
}

/// What the reading loop did.
#[derive(Debug, Default)]
struct Fed {
    /// Records read.
    read: u64,
    /// Records the pool accepted.
    accepted: u64,
    /// Adverse-event records the pool accepted.
    adverse_events: u64,
    /// Records read but refused because the pool was stopping.
    refused: Vec<Leftover>,
    /// A stop was requested.
    stopped_early: bool,
    /// The reader failed.
    input_error: Option<String>,
}

/// Runs the import described by `config`, until the input is done or `stop`
/// is requested, reporting progress to `observer`.
///
/// # Errors
///
/// When the import cannot start (input, database, pool) or its outcome
/// cannot be written (rejects or resume file). Records that fail are not
/// errors: they are counted in the [`Summary`] and written to the files.
pub(crate) fn run(
    config: &ImportConfig,
    stop: &StopSignal,
    observer: &dyn Observer,
) -> Result<Summary, ImportError> {
    let started = Instant::now();
    for output in [&config.rejects, &config.resume, &config.failures] {
        if same_file(&config.input, output) {
            return Err(ImportError::OutputIsInput {
                path: output.clone(),
            });
        }
        if same_file(&config.database, output) {
            return Err(ImportError::OutputIsDatabase {
                path: output.clone(),
            });
        }
    }
    let mut input = Input::open(&config.input, config.max_records)?;
    let db = DbSettings {
        path: config.database.clone(),
        busy_timeout: config.busy_timeout,
    };
    let batch_rows = config.batch_rows.clamp(1, MAX_BATCH_ROWS);
    let writer = Arc::new(Writer::new(db.clone(), config.retry, batch_rows));
    // Each worker writes its batch when it runs out of work and before it
    // exits, however the pool stops (so before `stop` / `stop_now`
    // returns); `on_worker_stop` is the last resort and closes the
    // worker's connection.
    let on_idle = Arc::clone(&writer);
    let on_stop = Arc::clone(&writer);
    // Built before the database is touched, so a bad setting changes nothing.
    let pool: Pool<ImportJob> = Pool::builder()
        .workers(config.workers)
        .reserved_urgent_workers(config.urgent_workers)
        .capacity(Priority::Urgent, URGENT_CAPACITY)
        .capacity(Priority::Normal, NORMAL_CAPACITY)
        .thread_name("importer")
        .on_worker_idle(move |worker| on_idle.flush_worker(worker))
        .on_worker_stop(move |worker| on_stop.close_worker(worker))
        .build()?;
    let db_error = |source| ImportError::Database {
        path: config.database.clone(),
        source,
    };
    let before = store::prepare(&db).map_err(db_error)?;
    let shared = Arc::new(JobShared {
        headers: input.headers.clone(),
        writer: Arc::clone(&writer),
        #[cfg(test)]
        panic_after_staging: config.panic_after_staging.clone(),
    });
    tracing::info!(
        input = %config.input.display(),
        database = %config.database.display(),
        records = input.records,
        workers = config.workers,
        urgent_workers = config.urgent_workers,
        batch_rows,
        "import started"
    );
    observer.started(input.records);
    let (fed, report) = drive(&pool, &mut input, &shared, stop, observer)?;
    // The pool is stopped and its workers joined: every hook has run, so
    // every staged record is committed, a duplicate, or failed.
    let stats = pool.stats();
    let rows = writer.rows();
    observer.finished(&stats, &rows);

    let mut summary = Summary {
        read: fed.read,
        committed: rows.committed,
        rejected: 0,
        failed: 0,
        unrun: 0,
        not_submitted: fed.refused.len() as u64,
        adverse_events: fed.adverse_events,
        alerts_written: rows.alerts,
        adverse_rejected: 0,
        panicked_after_staging: 0,
        rows,
        stopped_early: fed.stopped_early || stop.is_requested(),
        input_error: fed.input_error,
        unread_from_line: None,
        elapsed: Duration::ZERO,
        urgent_wait: Latency::from(&pool.queue_wait_histogram(Priority::Urgent)),
        normal_wait: Latency::from(&pool.queue_wait_histogram(Priority::Normal)),
        pool: stats,
        before,
        after: before,
    };
    let (rejects, resume) =
        sort_leftovers(report, writer.take_unwritten(), fed.refused, &mut summary);
    // After a stop, the input not read yet goes to the resume file too
    // (`--max-records` is a deliberate limit, not a stop).
    let copy_rest = summary.stopped_early && summary.input_error.is_none();
    // Write every file even if one fails: each holds records found nowhere
    // else. The resume file first; it matters most.
    let resumed = write_resume(&config.resume, &mut input, &resume, copy_rest);
    let rejects: Vec<&Leftover> = rejects.iter().collect();
    let rejected = write_with_reasons(&config.rejects, &input.headers, &rejects);
    let failures: Vec<&Leftover> = resume.iter().filter(|l| l.reason.is_some()).collect();
    let failed = write_with_reasons(&config.failures, &input.headers, &failures);
    let copied = resumed?;
    rejected?;
    failed?;
    summary.read += copied.records;
    summary.not_submitted += copied.records;
    summary.stopped_early &= summary.unrun + summary.not_submitted > 0;
    if copied.error.is_some() {
        summary.input_error = copied.error;
    }
    // Known once the reading (and the copy of the unread input) hit the
    // limit, if it did.
    summary.unread_from_line = input.unread_from_line;
    if let (Some(line), Some(max)) = (summary.unread_from_line, config.max_records) {
        tracing::info!(
            max_records = max,
            line,
            "record limit reached: the rest of the input was not read (it is not in the resume file)"
        );
    }
    summary.after = store::counts(&db).map_err(db_error)?;
    summary.elapsed = started.elapsed();
    tracing::info!(
        committed = summary.committed,
        rejected = summary.rejected,
        failed = summary.failed,
        unrun = summary.unrun,
        not_submitted = summary.not_submitted,
        batches = summary.rows.batches,
        urgent_writes = summary.rows.urgent_writes,
        failed_flushes = summary.rows.failed_flushes,
        refused = summary.rows.refused,
        "import finished"
    );
    Ok(summary)
}

/// The input file, open and checked.
#[derive(Debug)]
struct Input {
    /// Reads the records, positioned after the header.
    reader: csv::Reader<File>,
    /// The header row.
    headers: csv::ByteRecord,
    /// Index of the `ae_term` column, which decides a record's lane.
    ae_term: usize,
    /// Records the import will read if it runs to the end; `None` for an
    /// input that is not a regular file (see [`Input::open`]).
    records: Option<u64>,
    /// Records still to read (`--max-records`); `None`: no limit.
    budget: Option<u64>,
    /// The budget ran out before the end of the input: the line of the
    /// first record left unread (see [`Input::read`]).
    unread_from_line: Option<u64>,
    /// Whether [`Input::read`] looked past the spent budget already.
    peeked: bool,
}

impl Input {
    /// Opens `path`, checks its header names every column of
    /// [`record::COLUMNS`] exactly once, and counts its records (at most
    /// `max`) if it is a regular file: a pipe (`/dev/stdin`, a FIFO) can be
    /// read only once, and counting would consume the records.
    fn open(path: &Path, max: Option<u64>) -> Result<Input, ImportError> {
        let input_error = |source| ImportError::Input {
            path: path.to_owned(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true) // a short row is the job's to reject, not the reader's
            .from_path(path)
            .map_err(input_error)?;
        let headers = reader.byte_headers().map_err(input_error)?.clone();
        if headers.is_empty() {
            return Err(ImportError::EmptyInput {
                path: path.to_owned(),
            });
        }
        // Other columns may come in any number, even twice (they are not
        // read); each of these must be there, once.
        let mut ae_term = 0;
        for column in record::COLUMNS {
            let mut positions = headers
                .iter()
                .enumerate()
                .filter(|(_, name)| *name == column.as_bytes())
                .map(|(index, _)| index);
            let first = positions.next().ok_or_else(|| ImportError::MissingColumn {
                path: path.to_owned(),
                column,
            })?;
            if let Some(second) = positions.next() {
                return Err(ImportError::DuplicateColumn {
                    path: path.to_owned(),
                    column,
                    first: first + 1,
                    second: second + 1,
                });
            }
            if column == "ae_term" {
                ae_term = first;
            }
        }
        // Only a file worth importing is read twice, and only a regular
        // file can be.
        let records = match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => {
                Some(count_records(path, max).map_err(input_error)?)
            }
            _ => None,
        };
        Ok(Input {
            reader,
            headers,
            ae_term,
            records,
            budget: max,
            unread_from_line: None,
            peeked: false,
        })
    }

    /// The next record, within the budget; `Ok(false)` at the end.
    ///
    /// The first time the budget is found spent, reads one record past it
    /// (which is then dropped) to tell a limit that cut the input short
    /// from one that happened to match its end, and keeps the line of that
    /// record in [`Input::unread_from_line`]. A record that cannot be read
    /// there counts as input left unread too.
    fn read(&mut self, record: &mut csv::ByteRecord) -> csv::Result<bool> {
        if self.budget == Some(0) {
            if !self.peeked {
                self.peeked = true;
                let mut next = csv::ByteRecord::new();
                self.unread_from_line = match self.reader.read_byte_record(&mut next) {
                    Ok(true) => Some(next.position().map_or(0, csv::Position::line)),
                    Ok(false) => None,
                    Err(_) => Some(self.reader.position().line()),
                };
            }
            return Ok(false);
        }
        let more = self.reader.read_byte_record(record)?;
        if more {
            self.budget = self.budget.map(|budget| budget - 1);
        }
        Ok(more)
    }
}

/// Feeds the pool from the input and stops it: drains it at the end of the
/// input, or hands the queue back at a stop request. Returns what the
/// reading loop did and the pool's report.
fn drive(
    pool: &Pool<ImportJob>,
    input: &mut Input,
    shared: &Arc<JobShared>,
    stop: &StopSignal,
    observer: &dyn Observer,
) -> Result<(Fed, StopReport<ImportJob>), ImportError> {
    thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let writer = &*shared.writer;
        let monitor = scope.spawn(move || monitor(pool, writer, stop, observer, done_rx));
        let fed = feed(pool, input, shared, stop, observer);
        let report = if fed.stopped_early {
            pool.stop_now()
        } else {
            pool.stop()
        };
        drop(done_tx);
        let escalated = monitor
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // Both this thread and the monitor may have stopped the pool. The
        // pool gives the jobs to exactly one of the calls and an empty
        // report to the other, so adding the two loses and doubles nothing.
        let mut report = report?;
        if let Some(other) = escalated {
            merge(&mut report, other?);
        }
        Ok((fed, report))
    })
}

/// The reading loop: one job per record, until the input ends, the record
/// budget is spent, or a stop is requested.
fn feed(
    pool: &Pool<ImportJob>,
    input: &mut Input,
    shared: &Arc<JobShared>,
    stop: &StopSignal,
    observer: &dyn Observer,
) -> Fed {
    let mut fed = Fed::default();
    let mut record = csv::ByteRecord::new();
    loop {
        if stop.is_requested() {
            tracing::info!(
                read = fed.read,
                "stop requested: no more records are submitted; running records finish, the rest go to the resume file"
            );
            fed.stopped_early = true;
            break;
        }
        match input.read(&mut record) {
            Ok(true) => fed.read += 1,
            Ok(false) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the input any further");
                fed.input_error = Some(e.to_string());
                break;
            }
        }
        let line = record.position().map_or(0, csv::Position::line);
        let lane = if record::is_adverse_event(&record, input.ae_term) {
            Priority::Urgent
        } else {
            Priority::Normal
        };
        // Blocks while the lane is full: the reader never runs ahead of the
        // workers by more than the lane's capacity.
        match pool.submit(ImportJob::new(
            line,
            record.clone(),
            lane,
            Arc::clone(shared),
        )) {
            Ok(()) => {
                fed.accepted += 1;
                if lane == Priority::Urgent {
                    fed.adverse_events += 1;
                }
                observer.accepted(fed.accepted);
            }
            Err(refused) => {
                // Only a stop refuses a submit from this thread: the record
                // comes back and goes to the resume file.
                let job = refused.into_inner();
                fed.refused.push(Leftover {
                    line: job.line(),
                    reason: None,
                    record: job.into_record(),
                });
                fed.stopped_early = true;
                break;
            }
        }
    }
    fed
}

/// Reports progress every [`TICK`] until `done` fires, and turns a stop
/// request into [`Pool::stop_now`] — which also interrupts the import
/// thread's own `stop` if it is already draining the queue. Returns the
/// report of its stop, if it made one.
fn monitor(
    pool: &Pool<ImportJob>,
    writer: &Writer,
    stop: &StopSignal,
    observer: &dyn Observer,
    done: mpsc::Receiver<()>,
) -> Option<Result<StopReport<ImportJob>, StopError>> {
    let mut report = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(TICK) {
        observer.tick(&pool.stats(), &writer.rows());
        if report.is_none() && stop.is_requested() {
            tracing::info!(
                "stop requested: closing intake; running records finish, the rest go to the resume file"
            );
            report = Some(pool.stop_now());
        }
    }
    report
}

/// Adds `other` to `report` (one of the two is empty; see `run`).
fn merge(report: &mut StopReport<ImportJob>, other: StopReport<ImportJob>) {
    report.succeeded += other.succeeded;
    report.failed.extend(other.failed);
    report.panicked.extend(other.panicked);
    report.unrun.extend(other.unrun);
    report.abandoned.extend(other.abandoned);
}

/// Splits the stop report, the writer's unwritten records and the records
/// refused at a stop into rejects and records to resume (each sorted by
/// input line), counting them into `summary`. Failed records keep their
/// reason, for the failure file.
fn sort_leftovers(
    report: StopReport<ImportJob>,
    unwritten: Vec<Unwritten>,
    refused: Vec<Leftover>,
    summary: &mut Summary,
) -> (Vec<Leftover>, Vec<Leftover>) {
    let mut rejects = Vec::new();
    let mut resume = refused;
    for failed in report.failed {
        // A job fails only for a malformed row.
        summary.rejected += 1;
        if failed.job.priority() == Priority::Urgent {
            summary.adverse_rejected += 1;
        }
        let reason = failed.error.to_string();
        tracing::debug!(line = failed.job.line(), %reason, "record rejected");
        rejects.push(Leftover {
            line: failed.job.line(),
            reason: Some(reason),
            record: failed.job.into_record(),
        });
    }
    let mut failed_writes = 0;
    for row in unwritten {
        let leftover = Leftover {
            line: row.line,
            reason: Some(row.reason),
            record: row.record,
        };
        if row.duplicate {
            summary.rejected += 1;
            rejects.push(leftover);
        } else {
            summary.failed += 1;
            failed_writes += 1;
            resume.push(leftover);
        }
    }
    if failed_writes > 0 {
        tracing::warn!(
            records = failed_writes,
            failed_transactions = summary.rows.failed_flushes,
            refused_records = summary.rows.refused,
            "records the database did not take are in the resume file (reasons in the failure file)"
        );
    }
    for panicked in report.panicked {
        if panicked.job.is_staged() {
            // The writer has the record, and its ledger says where it went;
            // a copy in the resume file would count it twice.
            summary.panicked_after_staging += 1;
            tracing::error!(
                line = panicked.job.line(),
                message = %panicked.message,
                "record panicked after it was staged; the writer still writes it"
            );
            continue;
        }
        // A bug, not bad data: keep the record for another try.
        summary.failed += 1;
        tracing::error!(line = panicked.job.line(), message = %panicked.message, "record panicked");
        resume.push(Leftover {
            line: panicked.job.line(),
            reason: Some(format!("panicked: {}", panicked.message)),
            record: panicked.job.into_record(),
        });
    }
    for unrun in report.unrun {
        summary.unrun += 1;
        resume.push(Leftover {
            line: unrun.job.line(),
            reason: None,
            record: unrun.job.into_record(),
        });
    }
    rejects.sort_by_key(|leftover| leftover.line);
    resume.sort_by_key(|leftover| leftover.line);
    (rejects, resume)
}

/// Writes a file of records with reasons (the rejects or the failure
/// file): `line,reason,` then the input's columns.
fn write_with_reasons(
    path: &Path,
    headers: &csv::ByteRecord,
    records: &[&Leftover],
) -> Result<(), ImportError> {
    let output_error = |source| ImportError::Output {
        path: path.to_owned(),
        records: records.len(),
        source,
    };
    // Flexible: a truncated row is written back as it was read.
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(output_error)?;
    let mut row = csv::ByteRecord::new();
    row.push_field(b"line");
    row.push_field(b"reason");
    row.extend(headers);
    writer.write_byte_record(&row).map_err(output_error)?;
    for leftover in records {
        row.clear();
        row.push_field(leftover.line.to_string().as_bytes());
        row.push_field(leftover.reason.as_deref().unwrap_or_default().as_bytes());
        row.extend(&leftover.record);
        writer.write_byte_record(&row).map_err(output_error)?;
    }
    writer.flush().map_err(|e| output_error(e.into()))
}

/// What [`write_resume`] copied from the unread input.
#[derive(Debug, Default)]
struct Copied {
    /// Records copied.
    records: u64,
    /// Why the copy stopped before the end of the input, if it did.
    error: Option<String>,
}

/// Writes the resume file in the input's format: `resume` (already sorted),
/// then, if `copy_rest`, the input not read yet (within its budget).
fn write_resume(
    path: &Path,
    input: &mut Input,
    resume: &[Leftover],
    copy_rest: bool,
) -> Result<Copied, ImportError> {
    let output_error = |source| ImportError::Output {
        path: path.to_owned(),
        records: resume.len(),
        source,
    };
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(output_error)?;
    writer
        .write_byte_record(&input.headers)
        .map_err(output_error)?;
    for leftover in resume {
        writer
            .write_byte_record(&leftover.record)
            .map_err(output_error)?;
    }
    let copied = if copy_rest {
        copy_unread(input, &mut writer).map_err(output_error)?
    } else {
        Copied::default()
    };
    writer.flush().map_err(|e| output_error(e.into()))?;
    Ok(copied)
}

/// Copies the input not read yet (within its budget) to `writer`. A read
/// error ends the copy and is reported in [`Copied::error`]; a write error
/// is returned.
fn copy_unread(input: &mut Input, writer: &mut csv::Writer<File>) -> csv::Result<Copied> {
    let mut copied = Copied::default();
    let mut record = csv::ByteRecord::new();
    loop {
        match input.read(&mut record) {
            Ok(true) => {
                writer.write_byte_record(&record)?;
                copied.records += 1;
            }
            Ok(false) => return Ok(copied),
            Err(e) => {
                tracing::error!(error = %e, "cannot copy the rest of the input to the resume file");
                copied.error = Some(e.to_string());
                return Ok(copied);
            }
        }
    }
}

/// Counts the records of `path` (at most `max`), for the progress bar.
fn count_records(path: &Path, max: Option<u64>) -> Result<u64, csv::Error> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path)?;
    let mut record = csv::ByteRecord::new();
    let mut count = 0;
    while max.map_or(true, |max| count < max) && reader.read_byte_record(&mut record)? {
        count += 1;
    }
    Ok(count)
}

/// Whether `a` and `b` name the same file, existing or not: a path that
/// does not exist yet is compared by its (existing) directory and its name.
fn same_file(a: &Path, b: &Path) -> bool {
    match (resolved(a), resolved(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `path` made absolute with its symbolic links resolved, or, if it does
/// not exist, its resolved directory joined with its name; `None` if
/// neither can be resolved.
fn resolved(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let name = path.file_name()?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(dir).ok()?.join(name))
    })
}
