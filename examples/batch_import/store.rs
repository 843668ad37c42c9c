//! The SQLite side: the schema, one connection per worker thread, and the
//! batches in which each worker writes its records.
//!
//! # Batched transactions
//!
//! A SQLite commit costs far more than an insert, so writing one record per
//! transaction spends most of the import committing. Here each worker keeps
//! a thread-local batch: a job validates and scores its record and *stages*
//! it ([`Writer::stage`]), and the worker writes the whole batch in one short
//! transaction when
//!
//! - the batch holds [`ImportConfig::batch_rows`](super::ImportConfig)
//!   records ([`BATCH_ROWS`] by default, at most
//!   [`MAX_BATCH_ROWS`](super::MAX_BATCH_ROWS)), from the job that filled
//!   it ([`Writer::write_due`]);
//! - the worker runs out of work: the pool's `on_worker_idle` hook, which
//!   also runs before a worker exits however the pool stops, so the last
//!   partial batch is written before `stop`, `stop_now` or `Drop` returns;
//! - the worker exits (`on_worker_stop`): a last resort that finds the
//!   batch empty unless the idle hook could not run; it also closes the
//!   connection.
//!
//! An adverse event does not wait for a batch: its job stages it apart and
//! writes the visit and its alert at once in a transaction of their own
//! ([`Writer::write_due`]),
//! so the alert is in the database as soon as the record has run. Reserved
//! urgent workers only ever write these.
//!
//! # Durability: `Ok` means staged
//!
//! When a job returns `Ok`, its record is *staged* — valid, and in its
//! worker's batch (or already written) — not necessarily committed. The
//! pool's ledger therefore is not the import's ledger any more; the
//! [`Writer`] keeps its own ([`Rows`]): rows staged, committed, refused as
//! duplicates, and failed. Every staged row ends in exactly one of the last
//! three once the pool has stopped (the hooks have run by then), so the
//! import checks `staged == committed + duplicates + failed` and that the
//! database gained exactly `committed` rows.
//!
//! A flush that fails is never silent, and one bad record does not fail its
//! batch. When the database refuses a transaction for a reason other than a
//! busy lock (a constraint, a trigger, a value it will not store), the flush
//! writes the batch again, still in one transaction but with a savepoint
//! around each record: a record the database refuses is rolled back to its
//! savepoint alone and becomes an [`Unwritten`] with its own error, and the
//! others commit. Only when the transaction fails as a whole (the lock still
//! busy after the retries, a full disk, an I/O error, an error on which
//! SQLite rolls back the whole transaction) does every record of the batch
//! become an `Unwritten`, with the reason (the SQLite error, the attempts
//! made and the batch size). The import writes them to the failure file and
//! to the resume file, to be imported again. A record id that is already in
//! the database is not an error at all: the insert skips it (`ON CONFLICT DO
//! NOTHING`), the rest of the batch commits, and that record alone is
//! reported as a duplicate, like any rejected row. Two rows of one input
//! with the same id go the same way: the copy whose transaction commits
//! first is kept, which is not necessarily the one earlier in the file
//! (an adverse event is written at once, ahead of the routine batches).
//! A team that needs "first in the file wins" would reject repeated ids
//! on the reading thread, before submitting.
//!
//! The price is a window of loss of one batch per worker: if the *process*
//! dies (SIGKILL, a crash, a power cut) between a job's `Ok` and its
//! batch's commit, the records of the uncommitted batches are neither in
//! the database nor in any output file, and only importing the same input
//! again (the records already there are then rejected as duplicates)
//! recovers them. Ctrl-C, SIGTERM and SIGHUP are not such a death: the
//! hooks write every batch before the pool's stop returns. In WAL mode
//! with `synchronous = NORMAL` a commit appends to the log without an
//! `fsync` (durable against a process crash; an OS crash may lose the last
//! commits, never corrupt the file).
//!
//! # The write lock is held only during a flush
//!
//! A flush is `BEGIN IMMEDIATE`, the batch's inserts, `COMMIT`: it takes the
//! database's single write lock up front (so two writers never deadlock
//! upgrading a read lock) and holds it for the inserts alone: one to two
//! milliseconds for a full batch on two cores. No transaction stays open across jobs: a worker
//! holding the lock while it parses its next records, or while it sleeps
//! with a partial batch, would make every other worker's `BEGIN IMMEDIATE`
//! wait out its busy timeout and fail with `SQLITE_BUSY` — urgent writes
//! included. A flush that still finds the lock taken after the connection's
//! busy timeout is retried with a doubling backoff ([`RetryPolicy`]); after
//! the last attempt its records are reported as failed.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::record::{Invalid, Visit};

/// Records a worker stages before it writes them in one transaction: big
/// enough that the cost of a commit, most of a record's time in a
/// one-record transaction, is spread thin; small enough that a flush holds
/// the write lock for only one to two milliseconds (on two cores).
pub(crate) const BATCH_ROWS: usize = 256;

/// The schema. `CREATE ... IF NOT EXISTS`, so importing into an existing
/// database (for example, resuming an interrupted import) keeps its rows.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS visits (
    record_id     TEXT PRIMARY KEY,
    subject_id    TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    visit_code    TEXT NOT NULL,
    visit_date    TEXT NOT NULL,
    age           INTEGER NOT NULL,
    sex           TEXT NOT NULL,
    weight_kg     REAL,
    systolic_bp   INTEGER NOT NULL,
    diastolic_bp  INTEGER NOT NULL,
    heart_rate    INTEGER NOT NULL,
    temperature_c REAL NOT NULL,
    adverse_event INTEGER NOT NULL,
    risk_score    INTEGER NOT NULL,
    worker        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS visits_by_subject ON visits (subject_id, visit_date);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id      INTEGER PRIMARY KEY,
    record_id     TEXT NOT NULL UNIQUE REFERENCES visits (record_id),
    subject_id    TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    ae_term       TEXT NOT NULL,
    ae_severity   TEXT NOT NULL,
    risk_score    INTEGER NOT NULL,
    queue_wait_us INTEGER NOT NULL,
    raised_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
";

/// Inserts a visit unless its record id is already there (then nothing
/// changes, and the statement reports 0 rows).
const INSERT_VISIT: &str = "
INSERT INTO visits (record_id, subject_id, site_id, visit_code, visit_date, age, sex, weight_kg,
    systolic_bp, diastolic_bp, heart_rate, temperature_c, adverse_event, risk_score, worker)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
ON CONFLICT (record_id) DO NOTHING";

/// Inserts the alert of an adverse event.
const INSERT_ALERT: &str = "
INSERT INTO alerts (record_id, subject_id, site_id, ae_term, ae_severity, risk_score,
    queue_wait_us)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Where the database is and how a connection to it is set up.
#[derive(Debug, Clone)]
pub(crate) struct DbSettings {
    /// The database file.
    pub(crate) path: PathBuf,
    /// How long SQLite itself waits for a lock held by another connection
    /// before a statement fails with `SQLITE_BUSY`.
    pub(crate) busy_timeout: Duration,
}

/// How a flush retries a transaction that failed with `SQLITE_BUSY`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub(crate) attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub(crate) first_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1).
    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff.saturating_mul(
            1_u32
                .checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
    }
}

/// Row counts of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    /// Rows in `visits`.
    pub(crate) visits: u64,
    /// Rows in `alerts`.
    pub(crate) alerts: u64,
}

/// Opens a connection with the settings every connection uses.
fn open(settings: &DbSettings) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        &settings.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(settings.busy_timeout)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Creates the schema if needed, switches the file to WAL mode (a
/// persistent setting) and returns the current row counts.
///
/// # Errors
///
/// Any SQLite error (cannot create the file, locked, not a database...).
pub(crate) fn prepare(settings: &DbSettings) -> rusqlite::Result<Counts> {
    let conn = open(settings)?;
    // `journal_mode` answers with the mode now in effect.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "the database could not switch to WAL mode; writes will be slower");
    }
    conn.execute_batch(SCHEMA)?;
    count(&conn)
}

/// Current row counts, read on a fresh connection.
///
/// # Errors
///
/// Any SQLite error.
pub(crate) fn counts(settings: &DbSettings) -> rusqlite::Result<Counts> {
    count(&open(settings)?)
}

fn count(conn: &Connection) -> rusqlite::Result<Counts> {
    let rows = |table: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
    };
    Ok(Counts {
        visits: rows("visits")?,
        alerts: rows("alerts")?,
    })
}

/// A validated record waiting in its worker's batch.
#[derive(Debug)]
pub(crate) struct Staged {
    /// Line of the record in the input file.
    pub(crate) line: u64,
    /// The record as read, for the failure and resume files should its
    /// batch fail.
    pub(crate) record: csv::ByteRecord,
    /// The validated visit.
    pub(crate) visit: Visit,
    /// Its risk score.
    pub(crate) risk_score: u32,
    /// The worker that ran the record (a column of `visits`).
    pub(crate) worker: usize,
    /// How long the record waited in its lane (a column of `alerts`).
    pub(crate) queue_wait: Duration,
}

/// A staged record that did not make it into the database.
#[derive(Debug)]
pub(crate) struct Unwritten {
    /// Line of the record in the input file.
    pub(crate) line: u64,
    /// The record as read.
    pub(crate) record: csv::ByteRecord,
    /// Why.
    pub(crate) reason: String,
    /// Its record id was already in the database: a rejection (rejects
    /// file), not a failure (resume file).
    pub(crate) duplicate: bool,
}

/// The writer's ledger: what became of the staged records.
///
/// Once the pool has stopped, `staged == committed + duplicates + failed`;
/// while it runs the difference is [`pending`](Rows::pending), the records
/// waiting in batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rows {
    /// Records staged (jobs that returned `Ok`).
    pub(crate) staged: u64,
    /// Visits committed.
    pub(crate) committed: u64,
    /// Alerts committed (with their visits).
    pub(crate) alerts: u64,
    /// Staged records refused because their record id was already in the
    /// database.
    pub(crate) duplicates: u64,
    /// Staged records not written: their transaction failed, or the
    /// database refused them (`refused`).
    pub(crate) failed: u64,
    /// Batch transactions committed that inserted at least one visit (a
    /// batch of duplicates only is not counted).
    pub(crate) batches: u64,
    /// Visits committed by batch transactions.
    pub(crate) batched: u64,
    /// Adverse events written in a transaction of their own (visit and
    /// alert; one already in the database is a duplicate, not counted).
    pub(crate) urgent_writes: u64,
    /// Transactions (batches or adverse events) that failed as a whole.
    pub(crate) failed_flushes: u64,
    /// Transactions (batches or adverse events) written again record by
    /// record because the database refused them.
    pub(crate) split_transactions: u64,
    /// Staged records the database refused on their own, in a transaction
    /// written record by record (they count in `failed` too).
    pub(crate) refused: u64,
}

impl Rows {
    /// Staged records not written yet (waiting in a batch).
    pub(crate) fn pending(&self) -> u64 {
        self.staged
            .saturating_sub(self.committed + self.duplicates + self.failed)
    }
}

/// Writes the records the jobs of one import stage, in per-worker batches,
/// and keeps the import's ledger of rows (see the module docs). Shared by
/// the jobs and the pool's worker hooks.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The database.
    db: DbSettings,
    /// Retries of `SQLITE_BUSY`.
    retry: RetryPolicy,
    /// Records per batch.
    batch_rows: usize,
    /// Counters of [`Rows`], in its field order.
    counters: [AtomicU64; 11],
    /// Records that did not make it, for the rejects, failure and resume
    /// files.
    unwritten: Mutex<Vec<Unwritten>>,
}

/// Indices into [`Writer::counters`].
const STAGED: usize = 0;
const COMMITTED: usize = 1;
const ALERTS: usize = 2;
const DUPLICATES: usize = 3;
const FAILED: usize = 4;
const BATCHES: usize = 5;
const BATCHED: usize = 6;
const URGENT_WRITES: usize = 7;
const FAILED_FLUSHES: usize = 8;
const SPLIT_TRANSACTIONS: usize = 9;
const REFUSED: usize = 10;

impl Writer {
    /// A writer to the database `db` in batches of `batch_rows` records (at
    /// least 1), retrying `SQLITE_BUSY` as `retry` says.
    pub(crate) fn new(db: DbSettings, retry: RetryPolicy, batch_rows: usize) -> Writer {
        Writer {
            db,
            retry,
            batch_rows: batch_rows.max(1),
            counters: Default::default(),
            unwritten: Mutex::new(Vec::new()),
        }
    }

    fn bump(&self, counter: usize, by: u64) {
        self.counters[counter].fetch_add(by, Ordering::Relaxed);
    }

    /// The ledger so far. Exact once the pool has stopped (its workers
    /// are joined); a moment's approximation while it runs.
    pub(crate) fn rows(&self) -> Rows {
        let get = |counter: usize| self.counters[counter].load(Ordering::Relaxed);
        Rows {
            staged: get(STAGED),
            committed: get(COMMITTED),
            alerts: get(ALERTS),
            duplicates: get(DUPLICATES),
            failed: get(FAILED),
            batches: get(BATCHES),
            batched: get(BATCHED),
            urgent_writes: get(URGENT_WRITES),
            failed_flushes: get(FAILED_FLUSHES),
            split_transactions: get(SPLIT_TRANSACTIONS),
            refused: get(REFUSED),
        }
    }

    /// Takes the records that did not make it so far.
    pub(crate) fn take_unwritten(&self) -> Vec<Unwritten> {
        std::mem::take(
            &mut *self
                .unwritten
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Stages `row` with the calling worker: in its batch, or, for an
    /// adverse event, to be written on its own by the next
    /// [`write_due`](Self::write_due) (or, if that is interrupted, by the
    /// worker's hooks). From here on the row is in the writer's ledger.
    pub(crate) fn stage(self: &Arc<Self>, row: Staged) {
        with_worker_store(self, |store| {
            if row.visit.adverse_event.is_some() {
                store.urgent.push(row);
            } else {
                store.batch.push(row);
            }
        });
        self.bump(STAGED, 1);
    }

    /// Writes what the calling worker has due: its staged adverse event, at
    /// once, in a transaction of its own, then its batch if it is full.
    /// `wait` sleeps between `SQLITE_BUSY` retries; when it returns `true`
    /// (a stop was requested) the records stay staged for the worker's
    /// hooks to write.
    pub(crate) fn write_due(self: &Arc<Self>, wait: &mut dyn FnMut(Duration) -> bool) {
        with_worker_store(self, |store| {
            if !store.urgent.is_empty()
                && !write(self, &mut store.conn, &mut store.urgent, true, wait)
            {
                return;
            }
            if store.batch.len() >= self.batch_rows {
                write(self, &mut store.conn, &mut store.batch, false, wait);
            }
        });
    }

    /// The pool's `on_worker_idle` hook: writes the calling worker's batch,
    /// retrying `SQLITE_BUSY` as the policy says.
    pub(crate) fn flush_worker(self: &Arc<Self>, worker: usize) {
        WORKER_STORE.with(|cell| {
            if let Some(store) = cell
                .borrow_mut()
                .as_mut()
                .filter(|store| Arc::ptr_eq(&store.writer, self))
            {
                store.flush(worker);
            }
        });
    }

    /// The pool's `on_worker_stop` hook: writes whatever the calling worker
    /// still has staged (nothing, unless its idle hook could not run) and
    /// closes its connection.
    pub(crate) fn close_worker(self: &Arc<Self>, worker: usize) {
        let store = WORKER_STORE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot
                .as_ref()
                .is_some_and(|store| Arc::ptr_eq(&store.writer, self))
            {
                slot.take()
            } else {
                None
            }
        });
        if let Some(mut store) = store {
            let staged = store.batch.len() + store.urgent.len();
            if staged > 0 {
                tracing::warn!(
                    worker,
                    records = staged,
                    "worker stopping with records the idle hook did not write; writing them now"
                );
                store.flush(worker);
            }
            tracing::debug!(worker, "worker closes its database connection");
        }
    }

    /// Records `rows` as not written, for `reason`.
    fn fail(&self, rows: &mut Vec<Staged>, reason: &str) {
        self.bump(FAILED, rows.len() as u64);
        self.bump(FAILED_FLUSHES, 1);
        let mut unwritten = self
            .unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unwritten.extend(rows.drain(..).map(|row| Unwritten {
            line: row.line,
            record: row.record,
            reason: reason.to_owned(),
            duplicate: false,
        }));
    }
}

/// A worker thread's connection and batch, for one [`Writer`].
#[derive(Debug)]
struct WorkerStore {
    /// The writer (the import) they belong to.
    writer: Arc<Writer>,
    /// Opened by the first write; reopened after a failed one.
    conn: Option<Connection>,
    /// Staged records, oldest first.
    batch: Vec<Staged>,
    /// The adverse event staged to be written on its own; it stays here if
    /// its write was interrupted (a stop during a retry's backoff).
    urgent: Vec<Staged>,
}

thread_local! {
    /// The store of the pool worker running on this thread. Worker threads
    /// live as long as their pool; the `on_worker_stop` hook takes the store
    /// out and closes the connection.
    static WORKER_STORE: RefCell<Option<WorkerStore>> = const { RefCell::new(None) };
}

/// Runs `f` with the calling thread's store for `writer`, creating it if
/// this thread has none for that writer yet.
fn with_worker_store<T>(writer: &Arc<Writer>, f: impl FnOnce(&mut WorkerStore) -> T) -> T {
    WORKER_STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let store = match &mut *slot {
            Some(store) if Arc::ptr_eq(&store.writer, writer) => store,
            other => other.insert(WorkerStore {
                writer: Arc::clone(writer),
                conn: None,
                // Grows to the batch size once and keeps its capacity; not
                // preallocated from `batch_rows`, a user's setting.
                batch: Vec::new(),
                urgent: Vec::with_capacity(1),
            }),
        };
        f(store)
    })
}

impl WorkerStore {
    /// Writes what the worker has staged, from a hook, sleeping between
    /// retries: the interrupted adverse event first, then the batch.
    fn flush(&mut self, worker: usize) {
        let mut sleep = |backoff: Duration| {
            std::thread::sleep(backoff);
            false
        };
        if !self.urgent.is_empty() {
            write(
                &self.writer,
                &mut self.conn,
                &mut self.urgent,
                true,
                &mut sleep,
            );
        }
        if !self.batch.is_empty() {
            tracing::trace!(worker, records = self.batch.len(), "flushing batch");
            write(
                &self.writer,
                &mut self.conn,
                &mut self.batch,
                false,
                &mut sleep,
            );
        }
    }
}

/// Writes `rows` in one transaction on `conn` (opened first if `None`),
/// retrying `SQLITE_BUSY` with the policy's backoff, slept by `wait`.
/// Returns `false`, with `rows` untouched, if `wait` gave up on a retry;
/// otherwise `rows` is empty and each of them is in `writer`'s ledger:
/// committed, a duplicate, or failed.
///
/// If the transaction fails for another reason than a busy lock, the rows
/// are written again with a savepoint around each (see [`insert`]), so that
/// only the records the database refuses fail, each with its own error.
///
/// The rows stay in the worker's vector until then (they are not moved out
/// of it), so whatever happens, a staged record is in its worker's store or
/// in the ledger.
fn write(
    writer: &Writer,
    conn: &mut Option<Connection>,
    rows: &mut Vec<Staged>,
    urgent: bool,
    wait: &mut dyn FnMut(Duration) -> bool,
) -> bool {
    if rows.is_empty() {
        return true;
    }
    let mut attempt = 1;
    let mut mode = Mode::Batch;
    loop {
        let result = match &mut *conn {
            Some(open_conn) => insert(open_conn, rows, mode),
            none => open(&writer.db).and_then(|opened| insert(none.insert(opened), rows, mode)),
        };
        let error = match result {
            Ok(inserted) => {
                if mode == Mode::RecordByRecord {
                    tracing::warn!(
                        records = rows.len(),
                        refused = inserted.refused(),
                        "the database refused a transaction; its records were written one by one, and those it refused go to the resume file"
                    );
                }
                writer.committed(rows, inserted, urgent, mode);
                return true;
            }
            Err(error) => error,
        };
        if is_busy(&error) {
            if attempt < writer.retry.attempts {
                let backoff = writer.retry.backoff(attempt);
                tracing::debug!(
                    records = rows.len(),
                    attempt,
                    ?backoff,
                    "database busy; retrying"
                );
                if wait(backoff) {
                    tracing::debug!(
                        records = rows.len(),
                        "stop requested; the records stay staged for the worker's hooks"
                    );
                    return false;
                }
                attempt += 1;
                continue;
            }
        } else if mode == Mode::Batch {
            // Most likely a record the database will not take: find it (or
            // them) instead of failing the others with it. A transaction of
            // one record is retried too, so that a refused record is
            // reported the same way whatever its batch.
            tracing::debug!(
                records = rows.len(),
                %error,
                "transaction refused; writing its records one by one"
            );
            mode = Mode::RecordByRecord;
            continue;
        }
        let reason = format!(
            "database error after {attempt} attempt(s), writing a transaction of {} record(s) that was rolled back: {error}",
            rows.len()
        );
        tracing::warn!(records = rows.len(), %reason, "a transaction failed; its records go to the resume file");
        writer.fail(rows, &reason);
        // Start the next write on a fresh connection.
        *conn = None;
        return true;
    }
}

impl Drop for WorkerStore {
    /// A store dropped with staged records (its thread exited without the
    /// hooks, or a hook panicked) reports them as failed rather than lose
    /// them without a trace.
    fn drop(&mut self) {
        for rows in [&mut self.urgent, &mut self.batch] {
            if !rows.is_empty() {
                tracing::error!(records = rows.len(), "staged records dropped unwritten");
                self.writer
                    .fail(rows, "the worker exited before writing its batch");
            }
        }
    }
}

/// How [`insert`] writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// All or nothing: the first error rolls the transaction back.
    Batch,
    /// A savepoint around each record: a record the database refuses is
    /// rolled back alone and reported, and the others commit.
    RecordByRecord,
}

/// A row of a committed transaction that was not inserted.
#[derive(Debug)]
enum Skipped {
    /// Its record id was already in the database.
    Duplicate,
    /// The database refused it (with this error); written record by record.
    Refused(rusqlite::Error),
}

/// What writing one record did.
#[derive(Debug, Clone, Copy)]
enum RowWritten {
    /// Nothing: its record id was already there.
    Duplicate,
    /// The visit, and its alert if `alert`.
    Visit {
        /// An alert was written too.
        alert: bool,
    },
}

/// What one transaction inserted.
#[derive(Debug, Default)]
struct Inserted {
    /// Visits.
    visits: u64,
    /// Alerts.
    alerts: u64,
    /// The rows not inserted, by index (ascending), and why.
    skipped: Vec<(usize, Skipped)>,
}

impl Inserted {
    /// Rows the database refused.
    fn refused(&self) -> usize {
        self.skipped
            .iter()
            .filter(|(_, skipped)| matches!(skipped, Skipped::Refused(_)))
            .count()
    }
}

impl Writer {
    /// Books a committed transaction of `rows`, written in `mode`, and
    /// empties `rows`.
    fn committed(&self, rows: &mut Vec<Staged>, inserted: Inserted, urgent: bool, mode: Mode) {
        self.bump(COMMITTED, inserted.visits);
        self.bump(ALERTS, inserted.alerts);
        // Count what was written, not transactions that committed nothing
        // (a re-import's duplicates).
        if urgent {
            self.bump(URGENT_WRITES, inserted.alerts);
        } else if inserted.visits > 0 {
            self.bump(BATCHES, 1);
            self.bump(BATCHED, inserted.visits);
        }
        if mode == Mode::RecordByRecord {
            self.bump(SPLIT_TRANSACTIONS, 1);
        }
        if !inserted.skipped.is_empty() {
            let batch = rows.len();
            let mut unwritten = self
                .unwritten
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Highest index first, so `swap_remove` only ever moves a row
            // that was inserted.
            for (index, skipped) in inserted.skipped.into_iter().rev() {
                let row = rows.swap_remove(index);
                let (reason, duplicate) = match skipped {
                    Skipped::Duplicate => {
                        self.bump(DUPLICATES, 1);
                        let reason = Invalid::Duplicate {
                            record_id: row.visit.record_id,
                        };
                        (reason.to_string(), true)
                    }
                    Skipped::Refused(error) => {
                        self.bump(FAILED, 1);
                        self.bump(REFUSED, 1);
                        let reason = if batch > 1 {
                            format!("database refused the record: {error} (retried alone after its transaction of {batch} records failed)")
                        } else {
                            format!("database refused the record: {error}")
                        };
                        (reason, false)
                    }
                };
                unwritten.push(Unwritten {
                    line: row.line,
                    record: row.record,
                    reason,
                    duplicate,
                });
            }
        }
        rows.clear();
    }
}

/// Writes `rows` — each visit, and its alert if it reports an adverse
/// event — in one `BEGIN IMMEDIATE` transaction. A record id already in
/// the database is skipped and reported in [`Inserted::skipped`].
///
/// In [`Mode::RecordByRecord`], each record is written inside a savepoint:
/// if the database refuses it (a constraint, a trigger, a bad value), the
/// savepoint is rolled back, the record is reported as refused with its
/// error, and the others go on. An error that is not the record's own (a
/// busy lock, or one on which SQLite rolled back the whole transaction: a
/// full disk, an I/O error) still fails the whole transaction.
///
/// # Errors
///
/// Any SQLite error that fails the transaction; it is rolled back and
/// nothing is written.
fn insert(conn: &mut Connection, rows: &[Staged], mode: Mode) -> rusqlite::Result<Inserted> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = Inserted::default();
    {
        let mut insert_visit = tx.prepare_cached(INSERT_VISIT)?;
        let mut insert_alert = tx.prepare_cached(INSERT_ALERT)?;
        let mut insert_row = |row: &Staged| -> rusqlite::Result<RowWritten> {
            let visit = &row.visit;
            let changed = insert_visit.execute(params![
                visit.record_id,
                visit.subject_id,
                visit.site_id,
                visit.visit_code,
                visit.visit_date,
                visit.age,
                visit.sex,
                visit.weight_kg,
                visit.systolic_bp,
                visit.diastolic_bp,
                visit.heart_rate,
                visit.temperature_c,
                visit.adverse_event.is_some(),
                row.risk_score,
                row.worker,
            ])?;
            if changed == 0 {
                return Ok(RowWritten::Duplicate);
            }
            let Some(event) = &visit.adverse_event else {
                return Ok(RowWritten::Visit { alert: false });
            };
            let waited_us = u64::try_from(row.queue_wait.as_micros()).unwrap_or(u64::MAX);
            insert_alert.execute(params![
                visit.record_id,
                visit.subject_id,
                visit.site_id,
                event.term,
                event.severity,
                row.risk_score,
                waited_us,
            ])?;
            Ok(RowWritten::Visit { alert: true })
        };
        for (index, row) in rows.iter().enumerate() {
            let written = match mode {
                Mode::Batch => insert_row(row)?,
                Mode::RecordByRecord => {
                    tx.execute_batch("SAVEPOINT record")?;
                    match insert_row(row) {
                        Ok(written) => {
                            tx.execute_batch("RELEASE record")?;
                            written
                        }
                        Err(error) if is_busy(&error) || tx.is_autocommit() => return Err(error),
                        Err(error) => {
                            tx.execute_batch("ROLLBACK TO record; RELEASE record")?;
                            inserted.skipped.push((index, Skipped::Refused(error)));
                            continue;
                        }
                    }
                }
            };
            match written {
                RowWritten::Duplicate => inserted.skipped.push((index, Skipped::Duplicate)),
                RowWritten::Visit { alert } => {
                    inserted.visits += 1;
                    inserted.alerts += u64::from(alert);
                }
            }
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// Whether `error` is a transient lock conflict worth retrying.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}
