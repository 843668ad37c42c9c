//! The SQLite side: the schema, one connection per worker thread, and the
//! transaction that writes one visit (and its alert).
//!
//! # Why one transaction per record
//!
//! A job reports success only once its row is durable: when `run` returns
//! `Ok`, the record is committed, so the pool's ledger *is* the import's
//! ledger and a crash, a Ctrl-C or a failed commit can never leave a record
//! counted as imported but missing from the database. In WAL mode with
//! `synchronous = NORMAL` a commit appends to the log without an `fsync`
//! (durable against a process crash; an OS crash may lose the last
//! commits, never corrupt the file), which makes one transaction per record
//! fast enough here: about 20,000 to 27,000 records per second on two cores.
//! Batching a few hundred records per transaction writes several times
//! faster, but then a job that returned `Ok` could still be lost by a later
//! failed commit, and each worker's last batch would need a hook that runs
//! on the worker when it goes idle or stops, which the pool does not have.
//! The one-record transaction keeps the example simple and exactly right.
//!
//! Each transaction is `BEGIN IMMEDIATE`: it takes the write lock up front,
//! so a contended database fails fast with `SQLITE_BUSY` (after the
//! connection's busy timeout) instead of deadlocking two upgrading readers.
//! The caller retries `SQLITE_BUSY` (see `job.rs`).

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::record::Visit;

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

/// Where the database is and how a connection to it is set up.
#[derive(Debug, Clone)]
pub(crate) struct DbSettings {
    /// The database file.
    pub(crate) path: PathBuf,
    /// How long SQLite itself waits for a lock held by another connection
    /// before a statement fails with `SQLITE_BUSY`.
    pub(crate) busy_timeout: Duration,
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

/// This thread's connection, tagged with the import it belongs to.
#[derive(Debug)]
struct WorkerConnection {
    /// The import that opened it (see [`with_worker_connection`]).
    import: u64,
    /// The connection.
    conn: Connection,
}

thread_local! {
    /// The connection of the pool worker running on this thread. Worker
    /// threads live as long as their pool, so the connection is opened by a
    /// worker's first job and closed when the pool stops and the thread
    /// exits.
    static WORKER_CONNECTION: RefCell<Option<WorkerConnection>> = const { RefCell::new(None) };
}

/// Runs `f` with the calling worker thread's own connection to the database
/// of import `import`, opening it first if this thread has none for that
/// import yet.
///
/// # Errors
///
/// Opening the connection, or whatever `f` returns.
pub(crate) fn with_worker_connection<T>(
    import: u64,
    settings: &DbSettings,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    WORKER_CONNECTION.with(|cell| {
        let mut slot = cell.borrow_mut();
        let conn = match &mut *slot {
            Some(worker) if worker.import == import => &mut worker.conn,
            other => {
                tracing::debug!(import, path = %settings.path.display(), "worker opens its database connection");
                &mut other
                    .insert(WorkerConnection {
                        import,
                        conn: open(settings)?,
                    })
                    .conn
            }
        };
        f(conn)
    })
}

/// Writes one visit, and its alert if it reports an adverse event, in one
/// transaction.
///
/// # Errors
///
/// Any SQLite error; nothing is written then. A record id already present
/// fails with a primary-key constraint error (see [`is_duplicate`]).
pub(crate) fn write_visit(
    conn: &mut Connection,
    visit: &Visit,
    risk_score: u32,
    worker: usize,
    queue_wait: Duration,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO visits (record_id, subject_id, site_id, visit_code, visit_date, age, sex,
             weight_kg, systolic_bp, diastolic_bp, heart_rate, temperature_c, adverse_event,
             risk_score, worker)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
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
        risk_score,
        worker,
    ])?;
    if let Some(event) = &visit.adverse_event {
        let waited_us = u64::try_from(queue_wait.as_micros()).unwrap_or(u64::MAX);
        tx.prepare_cached(
            "INSERT INTO alerts (record_id, subject_id, site_id, ae_term, ae_severity, risk_score,
                 queue_wait_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            visit.record_id,
            visit.subject_id,
            visit.site_id,
            event.term,
            event.severity,
            risk_score,
            waited_us,
        ])?;
    }
    tx.commit()
}

/// Whether `error` is a transient lock conflict worth retrying.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Whether `error` is the `visits` primary key refusing a record id that is
/// already imported.
pub(crate) fn is_duplicate(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}
