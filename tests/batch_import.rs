//! The `batch_import` example's import, end to end on generated files: every
//! valid row lands in SQLite exactly once, every bad row is in the rejects
//! file with its reason, adverse events raise alerts, a stop midway (what
//! Ctrl-C or SIGTERM does) loses and doubles nothing, a locked database fails records
//! into the resume and failure files instead of dropping them, a record the
//! database refuses fails alone while the rest of its batch commits,
//! importing a file twice rejects the second copy as duplicates, a record
//! limit says where it stopped reading, a header that is empty or names a
//! column twice is refused before anything is written, and a stop during
//! the generation of the input leaves no partial file.
//!
//! Jobs only *stage* their records; workers write them in batched
//! transactions (see `examples/batch_import/store.rs`), so every test also
//! checks the writer's ledger: nothing is left in a batch once the import
//! returns, and the database holds exactly the committed rows.

mod common;

#[path = "../examples/batch_import/import.rs"]
mod import;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use import::generate::{self, record_id, Defect, Manifest};
use import::{ImportConfig, Observer, RetryPolicy, Rows, StopSignal, Summary};
use triage_pool::Priority;

/// Rows in each generated input.
const RECORDS: usize = 5_000;

/// Seed of the generated input.
const SEED: u64 = 7;

/// Capacity of the import's `Normal` lane (`NORMAL_CAPACITY` in
/// `import.rs`).
const NORMAL_CAPACITY: u64 = 1024;

/// A generated input in its own directory, with a configuration whose
/// outputs go to the same directory.
struct Fixture {
    /// Removed at the end of the test.
    dir: tempfile::TempDir,
    /// What the generator wrote.
    manifest: Manifest,
    /// Import `dir/visits.csv` into `dir/visits.sqlite`.
    config: ImportConfig,
}

fn fixture(records: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("visits.csv");
    let manifest =
        generate::generate(&input, records, SEED, &StopSignal::new()).expect("generate input");
    assert_eq!(manifest.rows.len(), records);
    assert!(manifest.defective() > 0 && manifest.adverse_events() > 0);
    let config = two_workers(input, dir.path());
    Fixture {
        dir,
        manifest,
        config,
    }
}

/// The tests' configuration: import `input` with two workers, outputs (and
/// by default the database) in `out_dir`.
fn two_workers(input: PathBuf, out_dir: &Path) -> ImportConfig {
    let mut config = ImportConfig::new(input, out_dir);
    config.workers = 2;
    config
}

/// Creates the database and its schema (an import of no records).
fn create_schema(config: &mut ImportConfig) {
    config.max_records = Some(0);
    import::run(config, &StopSignal::new(), &()).expect("create schema");
    config.max_records = None;
}

/// Creates the schema, then holds the database's write lock from another
/// connection until the returned connection is dropped.
fn hold_write_lock(config: &mut ImportConfig) -> rusqlite::Connection {
    create_schema(config);
    let locker = rusqlite::Connection::open(&config.database).expect("open database");
    locker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    locker
}

/// Imports `input` into `config`'s database a second time, with its own
/// output files under `dir/again`; returns that import's config and summary.
fn import_again(dir: &Path, config: &ImportConfig, input: &Path) -> (ImportConfig, Summary) {
    let again_dir = dir.join("again");
    std::fs::create_dir_all(&again_dir).expect("second output directory");
    let mut again = two_workers(input.to_path_buf(), &again_dir);
    again.database = config.database.clone();
    let second = import::run(&again, &StopSignal::new(), &()).expect("second import");
    (again, second)
}

/// Record ids of rows matching `pick`.
fn ids(manifest: &Manifest, pick: impl Fn(&generate::RowFacts) -> bool) -> BTreeSet<String> {
    (0..manifest.rows.len())
        .filter(|&i| pick(&manifest.rows[i]))
        .map(record_id)
        .collect()
}

/// Values of `column` in `table`, asserting none appears twice.
fn column(db: &Path, sql: &str) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open database");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let values: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read rows");
    let unique: BTreeSet<String> = values.iter().cloned().collect();
    assert_eq!(unique.len(), values.len(), "a row appears twice: {sql}");
    unique
}

/// Record ids in the database.
fn visits(db: &Path) -> BTreeSet<String> {
    column(db, "SELECT record_id FROM visits")
}

/// Record ids with an alert.
fn alerts(db: &Path) -> BTreeSet<String> {
    column(db, "SELECT record_id FROM alerts")
}

/// Checks the database holds one alert row for every valid adverse-event
/// row of the input, and no other; returns those rows' ids.
fn assert_one_alert_per_valid_adverse_event(manifest: &Manifest, db: &Path) -> BTreeSet<String> {
    let adverse_valid = ids(manifest, |row| row.adverse_event && row.defect.is_none());
    assert_eq!(alerts(db), adverse_valid);
    adverse_valid
}

/// The rejects file as record id -> reason.
fn rejects(path: &Path) -> BTreeMap<String, String> {
    with_reasons(path)
}

/// The failure file (records whose write failed) as record id -> reason.
fn failures(path: &Path) -> BTreeMap<String, String> {
    with_reasons(path)
}

/// A file of `line,reason,` and the input's columns, as record id -> reason.
fn with_reasons(path: &Path) -> BTreeMap<String, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .expect("open file of records with reasons");
    let headers = reader.headers().expect("header").clone();
    assert_eq!(&headers[0], "line");
    assert_eq!(&headers[1], "reason");
    assert_eq!(&headers[2], "record_id");
    let mut records = BTreeMap::new();
    for row in reader.records() {
        let row = row.expect("row");
        let previous = records.insert(row[2].to_owned(), row[1].to_owned());
        assert!(previous.is_none(), "{} listed twice in {path:?}", &row[2]);
    }
    records
}

/// Record ids in the resume file, in file order.
fn resume(path: &Path) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .expect("open resume file");
    assert_eq!(
        reader
            .headers()
            .expect("resume header")
            .iter()
            .collect::<Vec<_>>(),
        import::record::COLUMNS,
        "the resume file has the input's format"
    );
    reader
        .records()
        .map(|row| row.expect("resume row")[0].to_owned())
        .collect()
}

/// Whether `reason` is what the validator says about `defect`.
fn explains(reason: &str, defect: Defect) -> bool {
    match defect {
        Defect::NotANumber { column } => {
            reason.starts_with(&format!("{column}: ")) && reason.ends_with("is not a number")
        }
        Defect::Missing { column } => reason == format!("{column}: missing"),
        Defect::UnknownVisit => reason.starts_with("visit_code: unknown code"),
        Defect::OutOfRange { column } => {
            reason.starts_with(&format!("{column}: ")) && reason.contains("is outside")
        }
        Defect::Truncated => reason.ends_with("fields, the header has 14"),
    }
}

/// The checks every import must pass, whatever happened.
fn assert_accounted(summary: &Summary) {
    assert!(
        summary.is_balanced(),
        "ledger does not balance: {summary:#?}"
    );
    assert!(
        summary.database_matches(),
        "database does not match: {summary:#?}"
    );
    // The hooks wrote every batch before the pool's stop returned.
    let rows = summary.rows;
    assert_eq!(rows.pending(), 0, "records left in a batch: {rows:?}");
    assert_eq!(
        rows.staged,
        summary.pool.succeeded() + summary.panicked_after_staging
    );
    assert_eq!(rows.committed, summary.committed);
    // No job panicked, unless a test made it panic after staging.
    assert_eq!(summary.pool.panicked(), summary.panicked_after_staging);
    // Every adverse event that ran has a queue-wait sample; after a stop,
    // some may have been handed back unrun instead.
    let urgent_ran = summary.urgent_wait.count;
    if summary.stopped_early {
        assert!(urgent_ran <= summary.adverse_events);
    } else {
        assert_eq!(urgent_ran, summary.adverse_events);
    }
    let latency = summary.urgent_wait;
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    if !summary.stopped_early {
        assert!(summary.normal_wait.count > 0);
    }
    assert!(summary.records_per_second() > 0.0);
}

/// Checks that the database, the rejects file and the resume file together
/// hold every record of the input (`records` generated rows) exactly once,
/// and that the resume file keeps the input's order and matches the
/// summary. Returns what each holds.
fn assert_each_record_in_one_place(
    config: &ImportConfig,
    summary: &Summary,
    records: usize,
) -> (BTreeSet<String>, BTreeMap<String, String>, Vec<String>) {
    let imported = visits(&config.database);
    let rejected = rejects(&config.rejects);
    let to_resume = resume(&config.resume);
    assert_eq!(to_resume.len() as u64, summary.to_resume());
    assert!(
        to_resume.windows(2).all(|pair| pair[0] < pair[1]),
        "the resume file keeps the input's order"
    );
    let mut seen: BTreeMap<&String, &str> = BTreeMap::new();
    let places = [
        ("database", imported.iter().collect::<Vec<_>>()),
        ("rejects", rejected.keys().collect()),
        ("resume", to_resume.iter().collect()),
    ];
    for (place, ids) in places {
        for id in ids {
            if let Some(first) = seen.insert(id, place) {
                panic!("{id} is both in the {first} and in the {place}");
            }
        }
    }
    let all: BTreeSet<String> = (0..records).map(record_id).collect();
    assert_eq!(seen.into_keys().cloned().collect::<BTreeSet<_>>(), all);
    (imported, rejected, to_resume)
}

/// Stops the import after `at` records were accepted, as Ctrl-C would.
struct StopAt {
    /// After this many accepted records.
    at: u64,
    /// The import's stop signal (the one the example's signal handler
    /// raises).
    stop: StopSignal,
}

impl Observer for StopAt {
    fn accepted(&self, accepted: u64) {
        if accepted == self.at {
            assert!(self.stop.request());
        }
    }
}

/// Stops the import once at least `at` records are staged (seen from the
/// progress ticks, every 100 ms).
struct StopWhenStaged {
    /// Staged records.
    at: u64,
    /// The import's stop signal.
    stop: StopSignal,
}

impl Observer for StopWhenStaged {
    fn tick(&self, _stats: &triage_pool::Stats, rows: &Rows) {
        if rows.staged >= self.at {
            self.stop.request();
        }
    }
}

/// Stops the import from the monitor thread once the reader is blocked in
/// `submit` on a full `Normal` lane, behind workers held at a gate: the
/// database's write lock, taken by `locker`. The gate opens just before
/// the stop is requested, so the staged records can then be written.
struct StopWhenReaderBlocked {
    /// The import's stop signal.
    stop: StopSignal,
    /// The connection holding the write lock, until the stop.
    locker: Mutex<Option<rusqlite::Connection>>,
    /// `(accepted, finished, queued, busy)` at the previous tick.
    previous: Mutex<Option<(u64, u64, usize, usize)>>,
}

impl Observer for StopWhenReaderBlocked {
    fn tick(&self, stats: &triage_pool::Stats, _rows: &Rows) {
        let now = (
            stats.accepted(),
            stats.finished(),
            stats.queued_total(),
            stats.busy(),
        );
        let (accepted, finished, queued, busy) = now;
        // `accepted` counts a submit from the moment it passes the intake
        // check, so one accepted job that is neither finished, queued nor
        // running is the reader's, waiting for room in the full lane. Two
        // equal ticks in a row (100 ms apart) rule out a snapshot taken
        // mid-submit: with the workers held, nothing else moves.
        let blocked = stats.queued(Priority::Normal) == stats.capacity(Priority::Normal)
            && accepted == finished + queued as u64 + busy as u64 + 1;
        let mut previous = self.previous.lock().expect("previous tick");
        if blocked && *previous == Some(now) {
            if let Some(locker) = self.locker.lock().expect("locker").take() {
                locker.execute_batch("ROLLBACK").expect("release the lock");
            }
            self.stop.request();
        }
        *previous = Some(now);
    }
}

#[test]
fn every_valid_row_is_imported_once_and_every_bad_row_rejected_with_its_reason() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            config,
        } = fixture(RECORDS);
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);

        let valid = ids(&manifest, |row| row.defect.is_none());
        let bad = ids(&manifest, |row| row.defect.is_some());
        assert_eq!(summary.read, RECORDS as u64);
        assert_eq!(summary.committed, valid.len() as u64);
        assert_eq!(summary.rows.failed_flushes, 0);
        assert!(
            summary.rows.batches > 0 && summary.rows.urgent_writes > 0,
            "routine records went in batches, adverse events alone: {:?}",
            summary.rows
        );
        assert_eq!(summary.rows.urgent_writes, summary.alerts_written);
        assert_eq!(
            summary.rows.batched + summary.rows.urgent_writes,
            summary.committed
        );
        assert_eq!(summary.rejected, bad.len() as u64);
        assert_eq!(
            (summary.failed, summary.unrun, summary.not_submitted),
            (0, 0, 0)
        );
        assert!(!summary.stopped_early && summary.input_error.is_none());

        assert_eq!(visits(&config.database), valid);
        let adverse_valid = assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
        assert_eq!(summary.alerts_written, adverse_valid.len() as u64);
        // A truncated row loses its adverse event: the import reads it as
        // a routine record.
        let adverse_malformed = ids(&manifest, |row| {
            row.reads_as_adverse_event() && row.defect.is_some()
        });
        assert_eq!(summary.adverse_rejected, adverse_malformed.len() as u64);
        assert_eq!(
            summary.adverse_events,
            summary.alerts_written + summary.adverse_rejected
        );
        // The generator's log line adds up to the summary's.
        assert_eq!(summary.adverse_events, manifest.adverse_events() as u64);
        assert_eq!(
            summary.adverse_rejected,
            manifest.adverse_events_defective() as u64
        );
        assert_eq!(
            manifest.adverse_events() + manifest.adverse_events_cut_off(),
            manifest.rows.iter().filter(|row| row.adverse_event).count()
        );
        assert_eq!(summary.unread_from_line, None);
        assert_eq!(summary.exit_code(), import::EXIT_DONE);

        let rejects = rejects(&config.rejects);
        assert_eq!(rejects.keys().cloned().collect::<BTreeSet<_>>(), bad);
        for (i, row) in manifest.rows.iter().enumerate() {
            if let Some(defect) = row.defect {
                let reason = &rejects[&record_id(i)];
                assert!(explains(reason, defect), "{defect} rejected as {reason:?}");
            }
        }
        assert!(resume(&config.resume).is_empty());
        assert!(failures(&config.failures).is_empty());
    });
}

#[test]
fn impossible_calendar_dates_are_rejected_and_real_ones_accepted() {
    let visit_on = |date: &str| validate_with("visit_date", date);
    for date in [
        "2024-02-29", // leap year
        "2000-02-29", // divisible by 400: leap
        "2025-01-31",
        "2025-04-30",
        "2025-12-31",
        "1900-01-01",
        "2100-12-31",
    ] {
        let visit = visit_on(date).unwrap_or_else(|e| panic!("{date} rejected: {e}"));
        assert_eq!(visit.visit_date, date);
    }
    for date in [
        "2025-02-29", // not a leap year
        "1900-02-29", // divisible by 100, not by 400: not leap
        "2100-02-29",
        "2025-02-30",
        "2024-02-30",
        "2025-04-31",
        "2025-06-31",
        "2025-09-31",
        "2025-11-31",
        "2025-01-32",
        "2025-00-10",
        "2025-13-01",
        "2025-01-00",
        "1899-12-31",
        "2101-01-01",
        "2025-1-01",
        "2025/01/01",
        "+025-01-01",
    ] {
        let error = visit_on(date).expect_err(date);
        assert_eq!(
            error.to_string(),
            format!("visit_date: {date:?} is not a calendar date (YYYY-MM-DD)")
        );
    }
}

#[test]
fn a_number_too_large_for_its_column_says_so() {
    let with_age = |age: &str| validate_with("age", age);
    let error = with_age("99999999999").expect_err("an age of 10^11 years");
    assert_eq!(error.to_string(), r#"age: "99999999999" is far too large"#);
    // Not a number at all, and a number in the type but out of range.
    let error = with_age("4o").expect_err("a letter o");
    assert_eq!(error.to_string(), r#"age: "4o" is not a number"#);
    let error = with_age("400").expect_err("400 years");
    assert!(error.to_string().contains("is outside"), "{error}");
}

#[test]
fn a_stop_midway_leaves_every_row_in_exactly_one_place_and_resuming_finishes() {
    common::guarded(|| {
        let Fixture {
            dir,
            manifest,
            config,
        } = fixture(RECORDS);
        let stop = StopSignal::new();
        let observer = StopAt {
            at: RECORDS as u64 / 2,
            stop: stop.clone(),
        };
        let summary = import::run(&config, &stop, &observer).expect("interrupted import");
        assert_accounted(&summary);
        assert!(summary.stopped_early);
        assert_eq!(summary.read, RECORDS as u64, "the unread input was copied");
        assert!(summary.committed + summary.rejected <= RECORDS as u64 / 2);
        assert_eq!(summary.failed, 0);
        assert!(failures(&config.failures).is_empty());
        assert!(summary.not_submitted >= RECORDS as u64 / 2);
        assert_eq!(summary.exit_code(), import::EXIT_TO_RESUME);

        let (_, rejected, to_resume) = assert_each_record_in_one_place(&config, &summary, RECORDS);

        // Importing the resume file into the same database finishes the job.
        let (again, second) = import_again(dir.path(), &config, &config.resume);
        assert_accounted(&second);
        assert_eq!(second.read, to_resume.len() as u64);
        assert_eq!(second.to_resume(), 0);
        assert_eq!(second.exit_code(), import::EXIT_DONE);
        let valid = ids(&manifest, |row| row.defect.is_none());
        assert_eq!(visits(&config.database), valid);
        let mut all_rejected: BTreeSet<String> = rejected.into_keys().collect();
        all_rejected.extend(rejects(&again.rejects).into_keys());
        assert_eq!(all_rejected, ids(&manifest, |row| row.defect.is_some()));
        assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
    });
}

#[test]
fn a_locked_database_fails_records_into_the_resume_file_after_bounded_retries() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            mut config,
        } = fixture(200);
        // Create the schema, then hold the write lock from another
        // connection for the whole import.
        let locker = hold_write_lock(&mut config);
        config.busy_timeout = Duration::from_millis(1);
        config.retry = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
        };

        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        locker.execute_batch("ROLLBACK").expect("release the lock");
        assert_accounted(&summary);

        let valid = ids(&manifest, |row| row.defect.is_none());
        assert_eq!(summary.committed, 0);
        assert_eq!(summary.failed, valid.len() as u64);
        assert!(summary.rows.failed_flushes > 0);
        assert_eq!(summary.exit_code(), import::EXIT_TO_RESUME);
        assert_eq!(
            summary.rejected,
            manifest.defective() as u64,
            "bad rows are still rejected"
        );
        assert!(visits(&config.database).is_empty());
        let to_resume = resume(&config.resume);
        assert_eq!(to_resume.iter().cloned().collect::<BTreeSet<_>>(), valid);
        assert_eq!(to_resume.len(), valid.len());
        let failures = failures(&config.failures);
        assert_eq!(failures.keys().cloned().collect::<BTreeSet<_>>(), valid);
        for (id, reason) in &failures {
            assert!(
                reason.contains("after 3 attempt(s)") && reason.contains("locked"),
                "{id} failed as {reason:?}"
            );
        }
    });
}

#[test]
fn records_the_database_refuses_fail_alone_and_the_rest_of_their_batch_commits() {
    common::guarded(|| {
        let Fixture {
            dir,
            manifest,
            mut config,
        } = fixture(RECORDS);
        // Create the schema, then make the database refuse every routine
        // record whose id ends in 3: about one in ten, so nearly every
        // batch holds some (batches are of up to 256 records). Only those
        // must fail, each with its own error; the rest of their batches
        // must commit.
        create_schema(&mut config);
        let targets = ids(&manifest, |row| row.defect.is_none() && !row.adverse_event)
            .into_iter()
            .filter(|id| id.ends_with('3'))
            .collect::<BTreeSet<_>>();
        assert!(targets.len() > 100, "{} targets", targets.len());
        let conn = rusqlite::Connection::open(&config.database).expect("open database");
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON visits
             WHEN NEW.adverse_event = 0 AND NEW.record_id LIKE '%3'
             BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;",
        )
        .expect("create trigger");

        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);
        let rows = summary.rows;
        assert_eq!(
            rows.failed_flushes, 0,
            "no transaction failed whole: {rows:?}"
        );
        assert!(rows.split_transactions > 0, "{rows:?}");
        assert_eq!(rows.refused, targets.len() as u64, "{rows:?}");
        assert_eq!(summary.failed, targets.len() as u64);
        assert_eq!(
            (summary.unrun, summary.not_submitted),
            (0, 0),
            "nothing else is in the resume file"
        );

        // Exactly the refused records are in the failure file, each with
        // the database's error, and in the resume file.
        let failed = failures(&config.failures);
        assert_eq!(failed.keys().cloned().collect::<BTreeSet<_>>(), targets);
        for (id, reason) in &failed {
            assert!(
                reason.starts_with("database refused the record: refused by the test trigger"),
                "{id} failed as {reason:?}"
            );
        }
        let to_resume = resume(&config.resume);
        assert_eq!(to_resume.len(), targets.len());
        assert_eq!(to_resume.iter().cloned().collect::<BTreeSet<_>>(), targets);

        // Every other valid record, including those batched with a refused
        // one, is committed, once.
        let valid = ids(&manifest, |row| row.defect.is_none());
        let imported = visits(&config.database);
        assert_eq!(imported.len() as u64, summary.committed);
        assert_eq!(
            imported,
            valid.difference(&targets).cloned().collect::<BTreeSet<_>>()
        );
        assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
        assert_eq!(
            rejects(&config.rejects)
                .into_keys()
                .collect::<BTreeSet<_>>(),
            ids(&manifest, |row| row.defect.is_some())
        );

        // Once the database accepts them, resuming imports exactly those.
        conn.execute_batch("DROP TRIGGER refuse")
            .expect("drop trigger");
        let (_, second) = import_again(dir.path(), &config, &config.resume);
        assert_accounted(&second);
        assert_eq!(second.committed, failed.len() as u64);
        assert_eq!(second.to_resume() + second.rejected, 0);
        assert_eq!(visits(&config.database), valid);
        assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
    });
}

#[test]
fn importing_the_same_file_twice_rejects_every_valid_row_as_a_duplicate() {
    common::guarded(|| {
        let Fixture {
            dir,
            manifest,
            config,
        } = fixture(RECORDS);
        let first = import::run(&config, &StopSignal::new(), &()).expect("first import");
        assert_accounted(&first);

        let (again, second) = import_again(dir.path(), &config, &config.input);
        assert_accounted(&second);
        let valid = ids(&manifest, |row| row.defect.is_none());
        assert_eq!(second.committed, 0);
        assert_eq!(second.alerts_written, 0);
        // Transactions that inserted nothing are not counted as writes.
        assert_eq!(
            (
                second.rows.batches,
                second.rows.batched,
                second.rows.urgent_writes
            ),
            (0, 0, 0),
            "{:?}",
            second.rows
        );
        assert_eq!(second.rows.duplicates, valid.len() as u64);
        assert_eq!(second.rejected, RECORDS as u64);
        assert_eq!(second.to_resume(), 0);
        assert_eq!(second.rows.failed_flushes, 0);

        let rejected = rejects(&again.rejects);
        for id in &valid {
            assert_eq!(
                rejected[id],
                format!("record_id: {id:?} is already in the database")
            );
        }
        assert_eq!(visits(&config.database), valid);
        assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
    });
}

#[test]
fn a_job_that_panics_after_staging_leaves_its_record_in_exactly_one_place() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            mut config,
        } = fixture(RECORDS);
        // One routine record and one adverse event whose jobs panic right
        // after staging (row `i` is on line `i + 2`, after the header).
        let pick = |adverse: bool| {
            (RECORDS / 2..RECORDS)
                .find(|&i| {
                    manifest.rows[i].defect.is_none() && manifest.rows[i].adverse_event == adverse
                })
                .expect("a valid record")
        };
        let targets = [pick(false), pick(true)];
        config.panic_after_staging = targets.iter().map(|&i| i as u64 + 2).collect();

        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_eq!(summary.pool.panicked(), 2);
        assert_eq!(summary.panicked_after_staging, 2);
        assert_accounted(&summary);

        // The writer wrote both records; neither is also in the resume file
        // (as an empty row or otherwise).
        let imported = visits(&config.database);
        for &i in &targets {
            assert!(
                imported.contains(&record_id(i)),
                "{} not imported",
                record_id(i)
            );
        }
        assert_eq!(imported, ids(&manifest, |row| row.defect.is_none()));
        assert_one_alert_per_valid_adverse_event(&manifest, &config.database);
        assert_eq!(summary.to_resume(), 0);
        assert!(resume(&config.resume).is_empty());
        assert!(failures(&config.failures).is_empty());
    });
}

#[test]
fn a_batch_size_beyond_the_limit_is_clamped_not_allocated() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            mut config,
        } = fixture(RECORDS);
        // A batch this large cannot be allocated up front; the import
        // clamps it and grows batches as records come.
        config.batch_rows = usize::MAX;
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);
        assert_eq!(
            visits(&config.database),
            ids(&manifest, |row| row.defect.is_none())
        );
        assert_eq!(summary.to_resume(), 0);
        assert!(resume(&config.resume).is_empty());
    });
}

#[test]
fn a_stop_while_the_reader_waits_on_a_full_lane_refuses_its_record_into_the_resume_file() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest: _,
            mut config,
        } = fixture(RECORDS);
        // The gate: the write lock, held from another connection. Every
        // record is written as soon as it is staged (batches of 1), so the
        // worker stops at its first valid record, in a retry backoff only a
        // stop cuts short; the lanes fill and the reader blocks in `submit`.
        // One worker, so that once the gate opens the hooks' writes do not
        // contend with each other (they would sleep out the long backoff).
        let locker = hold_write_lock(&mut config);
        config.workers = 1;
        config.urgent_workers = 0;
        config.batch_rows = 1;
        config.busy_timeout = Duration::from_millis(1);
        config.retry = RetryPolicy {
            attempts: 2,
            first_backoff: common::LIMIT,
        };
        let stop = StopSignal::new();
        let observer = StopWhenReaderBlocked {
            stop: stop.clone(),
            locker: Mutex::new(Some(locker)),
            previous: Mutex::new(None),
        };
        let summary = import::run(&config, &stop, &observer).expect("import");
        assert!(
            observer.locker.lock().expect("locker").is_none(),
            "the stop came from the observer"
        );
        assert_accounted(&summary);
        assert!(summary.stopped_early);
        // The reader's blocked submit was refused by the monitor's
        // `stop_now`, and the queued records were handed back unrun.
        assert_eq!(summary.pool.refused(), 1, "{:?}", summary.pool);
        assert!(summary.unrun >= NORMAL_CAPACITY, "{summary:#?}");
        assert!(summary.not_submitted >= 1);
        assert_eq!(summary.read, RECORDS as u64, "the unread input was copied");
        // The records the workers held at the gate were written once it
        // opened.
        assert!(summary.committed > 0, "{summary:#?}");
        assert_eq!(summary.failed, 0);
        assert!(failures(&config.failures).is_empty());
        assert_each_record_in_one_place(&config, &summary, RECORDS);
    });
}

#[test]
fn a_stop_while_the_database_is_locked_still_accounts_for_every_staged_record() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            mut config,
        } = fixture(200);
        let locker = hold_write_lock(&mut config);
        // Small batches and a long backoff, so workers are waiting out a
        // retry's backoff when the stop comes (at the first progress tick,
        // 100 ms in): the stop cuts the wait short, their records stay
        // staged, and the hooks retry (and fail) the writes before the
        // stop returns.
        config.batch_rows = 4;
        config.busy_timeout = Duration::from_millis(1);
        config.retry = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(200),
        };
        let stop = StopSignal::new();
        let observer = StopWhenStaged {
            at: 8,
            stop: stop.clone(),
        };
        let summary = import::run(&config, &stop, &observer).expect("import");
        locker.execute_batch("ROLLBACK").expect("release the lock");
        assert_accounted(&summary);
        assert!(summary.stopped_early);
        assert_eq!(summary.committed, 0);
        assert!(visits(&config.database).is_empty());
        assert!(summary.failed > 0, "{summary:#?}");
        assert_eq!(summary.failed, summary.rows.failed);

        let failed = failures(&config.failures);
        assert_eq!(failed.len() as u64, summary.failed);
        for (id, reason) in &failed {
            assert!(reason.contains("locked"), "{id} failed as {reason:?}");
        }
        // Rejects + resume file = input, with no row twice; the failed
        // records are in the resume file.
        let rejected = rejects(&config.rejects);
        let to_resume = resume(&config.resume);
        assert_eq!(to_resume.len() as u64, summary.to_resume());
        let resumed: BTreeSet<String> = to_resume.iter().cloned().collect();
        assert_eq!(resumed.len(), to_resume.len());
        assert!(failed.keys().all(|id| resumed.contains(id)));
        assert!(rejected.keys().all(|id| !resumed.contains(id)));
        let mut all: BTreeSet<String> = resumed;
        all.extend(rejected.into_keys());
        assert_eq!(all, ids(&manifest, |_| true));
    });
}

#[test]
fn the_exit_codes_are_those_the_help_text_documents() {
    // `batch_import --help` prints EXIT_STATUS_HELP: each status on a line
    // `  <n>  <meaning>`, continued on lines indented further.
    let mut described: BTreeMap<u8, String> = BTreeMap::new();
    let mut current = None;
    for line in import::EXIT_STATUS_HELP.lines().skip(1) {
        let code = line.strip_prefix("  ").and_then(|rest| {
            let (number, _) = rest.split_once("  ")?;
            number.parse::<u8>().ok()
        });
        match code {
            Some(code) => {
                assert!(
                    described.insert(code, line.to_owned()).is_none(),
                    "{code} listed twice"
                );
                current = Some(code);
            }
            None => {
                let code = current.expect("a continuation line before any status");
                assert!(line.starts_with("     "), "not a continuation: {line:?}");
                described.get_mut(&code).expect("listed").push_str(line);
            }
        }
    }
    let codes: Vec<u8> = described.keys().copied().collect();
    assert_eq!(codes, [0, 1, 2, 3], "the statuses --help lists");
    assert!(described[&import::EXIT_DONE].contains("imported or rejected"));
    assert!(described[&import::EXIT_TO_RESUME].contains("left in resume.csv"));
    assert!(described[&import::EXIT_ERROR].contains("an error"));
    // 2 is clap's usage error, so "records left to resume" must not be 2.
    assert!(described[&2].contains("usage error"));
    assert!(![
        import::EXIT_DONE,
        import::EXIT_ERROR,
        import::EXIT_TO_RESUME
    ]
    .contains(&2));
}

#[test]
fn a_record_limit_says_at_which_line_it_stopped_reading_and_only_if_input_was_left() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest,
            mut config,
        } = fixture(RECORDS);
        // 1,000 of 5,000 records: the first record not read is row 1,000,
        // on line 1,002 (after the header).
        config.max_records = Some(1_000);
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);
        assert_eq!(summary.read, 1_000);
        assert_eq!(summary.unread_from_line, Some(1_002));
        assert!(!summary.stopped_early && summary.input_error.is_none());
        // A limit is not a stop: nothing to resume, and the run is done.
        assert_eq!(summary.to_resume(), 0);
        assert!(resume(&config.resume).is_empty());
        assert_eq!(summary.exit_code(), import::EXIT_DONE);
        let first_rows: Vec<_> = manifest.rows[..1_000].to_vec();
        let first = Manifest { rows: first_rows };
        assert_eq!(
            visits(&config.database),
            ids(&first, |row| row.defect.is_none())
        );

        // A limit at, or past, the end of the input leaves nothing unread.
        for max in [RECORDS as u64, RECORDS as u64 + 1] {
            let again_dir = tempfile::tempdir().expect("temporary directory");
            let mut again = two_workers(config.input.clone(), again_dir.path());
            again.max_records = Some(max);
            let summary = import::run(&again, &StopSignal::new(), &()).expect("import");
            assert_accounted(&summary);
            assert_eq!(summary.read, RECORDS as u64);
            assert_eq!(summary.unread_from_line, None, "--max-records {max}");
            assert_eq!(summary.exit_code(), import::EXIT_DONE);
        }
    });
}

#[test]
fn a_stop_within_a_record_limit_resumes_up_to_the_limit_only() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest: _,
            mut config,
        } = fixture(RECORDS);
        config.max_records = Some(1_000);
        let stop = StopSignal::new();
        let observer = StopAt {
            at: 500,
            stop: stop.clone(),
        };
        let summary = import::run(&config, &stop, &observer).expect("interrupted import");
        assert_accounted(&summary);
        assert!(summary.stopped_early);
        // The resume file holds the rest of the first 1,000 records, not
        // the input after the limit, and the summary says so.
        assert_eq!(summary.read, 1_000);
        assert_eq!(summary.unread_from_line, Some(1_002));
        assert!(summary.not_submitted >= 500);
        assert_eq!(summary.exit_code(), import::EXIT_TO_RESUME);
        assert_each_record_in_one_place(&config, &summary, 1_000);
    });
}

/// One valid visit, in the order of `import::record::COLUMNS`.
const VALID_VISIT: [&str; 14] = [
    "R1",
    "S01-00001",
    "SITE-01",
    "BL",
    "2024-02-29",
    "40",
    "F",
    "70.0",
    "120",
    "80",
    "70",
    "36.8",
    "",
    "",
];

/// Validates [`VALID_VISIT`] with `column` set to `value`.
fn validate_with(
    column: &str,
    value: &str,
) -> Result<import::record::Visit, import::record::Invalid> {
    let index = import::record::COLUMNS
        .iter()
        .position(|name| *name == column)
        .expect("a known column");
    let mut fields = VALID_VISIT;
    fields[index] = value;
    let headers = csv::ByteRecord::from(import::record::COLUMNS.to_vec());
    import::record::Visit::from_record(&headers, &csv::ByteRecord::from(fields.to_vec()))
}

/// An import configuration for a file of `contents` in `dir`.
fn config_for(dir: &Path, contents: &str) -> ImportConfig {
    let input = dir.join("input.csv");
    std::fs::write(&input, contents).expect("write input");
    two_workers(input, dir)
}

#[test]
fn a_header_that_names_a_required_column_twice_is_refused_before_anything_is_written() {
    common::guarded(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let header = format!("{},record_id", import::record::COLUMNS.join(","));
        let row = format!("{},R2", VALID_VISIT.join(","));
        let config = config_for(dir.path(), &format!("{header}\n{row}\n"));
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(
                error,
                import::ImportError::DuplicateColumn {
                    column: "record_id",
                    first: 1,
                    second: 15,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "input file {} has the column \"record_id\" twice (columns 1 and 15 of the header); each column must appear once",
                config.input.display()
            )
        );
        // Checked before the database or any output file is touched.
        for file in [
            &config.database,
            &config.rejects,
            &config.resume,
            &config.failures,
        ] {
            assert!(!file.exists(), "{} was written", file.display());
        }

        // A column the import does not read may appear any number of times
        // (exports often repeat an empty header cell).
        let header = format!("notes,{},notes,,", import::record::COLUMNS.join(","));
        let row = format!("a,{},b,,", VALID_VISIT.join(","));
        let config = config_for(dir.path(), &format!("{header}\n{row}\n"));
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);
        assert_eq!((summary.read, summary.committed), (1, 1));
        assert_eq!(summary.exit_code(), import::EXIT_DONE);

        // A missing column is still reported as such.
        let header = import::record::COLUMNS[..13].join(",");
        let config = config_for(dir.path(), &format!("{header}\n"));
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(
                error,
                import::ImportError::MissingColumn {
                    column: "ae_severity",
                    ..
                }
            ),
            "{error:?}"
        );
    });
}

#[test]
fn an_empty_input_is_refused_as_having_no_header_row() {
    common::guarded(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = config_for(dir.path(), "");
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(error, import::ImportError::EmptyInput { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "input file {} is empty (no header row",
                config.input.display()
            )),
            "{error}"
        );
        assert!(!config.database.exists());

        // A header and no records is a valid, if empty, import.
        let config = config_for(
            dir.path(),
            &format!("{}\n", import::record::COLUMNS.join(",")),
        );
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert!(summary.is_balanced() && summary.database_matches());
        assert_eq!(summary.read, 0);
        assert_eq!(summary.exit_code(), import::EXIT_DONE);
    });
}

#[test]
fn a_stop_during_generation_removes_the_partial_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("visits.csv");
    // Raised before the first row, after the header is written: the file
    // exists, partial, when the generator sees the stop.
    let stop = StopSignal::new();
    assert!(stop.request());
    let error = generate::generate(&path, RECORDS, SEED, &stop).expect_err("interrupted");
    assert!(
        matches!(
            error,
            generate::GenerateError::Interrupted {
                written: 0,
                records: RECORDS,
                not_removed: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!path.exists(), "the partial file is left");
    assert!(
        error
            .to_string()
            .ends_with("; the partial file was removed"),
        "{error}"
    );
}

#[cfg(unix)]
#[test]
fn an_input_that_can_be_read_only_once_is_imported_whole() {
    common::guarded(|| {
        // A named pipe, like `/dev/stdin` under `zcat visits.csv.gz |`:
        // counting its records for the progress bar would consume them.
        let dir = tempfile::tempdir().expect("temporary directory");
        let source = dir.path().join("visits.csv");
        let manifest =
            generate::generate(&source, RECORDS, SEED, &StopSignal::new()).expect("generate");
        let fifo = dir.path().join("visits.fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo failed");
        let contents = std::fs::read(&source).expect("read input");
        let writer = {
            let fifo = fifo.clone();
            // Far more than a pipe holds, so it is still writing when the
            // import opens the pipe; ends with an error if the import
            // stops reading early.
            std::thread::spawn(move || std::fs::write(fifo, contents))
        };
        let config = two_workers(fifo, dir.path());
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        writer
            .join()
            .expect("pipe writer")
            .expect("the import read the whole pipe");
        assert_accounted(&summary);
        assert_eq!(summary.read, RECORDS as u64);
        assert_eq!(
            visits(&config.database),
            ids(&manifest, |row| row.defect.is_none())
        );
        assert_eq!(summary.exit_code(), import::EXIT_DONE);
    });
}

#[test]
fn an_ae_term_of_only_whitespace_is_no_adverse_event_in_either_count() {
    common::guarded(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let header = import::record::COLUMNS.join(",");
        // A no-break space and a vertical tab: whitespace to the validator,
        // which then sees no adverse event (and writes no alert).
        let mut rows = String::new();
        for (id, term) in [("R1", "\u{a0}"), ("R2", "\u{b}")] {
            let mut fields = VALID_VISIT;
            fields[0] = id;
            fields[12] = term; // ae_term
            rows.push_str(&fields.join(","));
            rows.push('\n');
        }
        let config = config_for(dir.path(), &format!("{header}\n{rows}"));
        let summary = import::run(&config, &StopSignal::new(), &()).expect("import");
        assert_accounted(&summary);
        assert_eq!((summary.committed, summary.alerts_written), (2, 0));
        // The summary's adverse events are those the urgent lane took: an
        // alert or a reason for each.
        assert_eq!(summary.adverse_events, 0, "{summary:#?}");
        assert_eq!(summary.urgent_wait.count, 0);
    });
}

#[test]
fn an_output_file_that_cannot_be_written_says_what_to_do() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest: _,
            config,
        } = fixture(200);
        // The rejects file cannot be created: a directory is in the way.
        std::fs::create_dir(&config.rejects).expect("directory in the way");
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(error, import::ImportError::Output { .. }),
            "{error:?}"
        );
        // The records went to the database; the message says so, and how
        // to finish the job.
        assert!(!visits(&config.database).is_empty());
        let message = error.to_string();
        assert!(
            message.contains("import the whole input again into the same database"),
            "{message}"
        );
    });
}

#[test]
fn an_output_file_that_is_the_input_or_the_database_is_refused_before_anything_is_written() {
    common::guarded(|| {
        let Fixture {
            dir: _dir,
            manifest: _,
            mut config,
        } = fixture(200);
        // The database and the rejects file do not exist yet: they are
        // compared by directory and name, through a `..` detour.
        let detour = config.rejects.parent().expect("dir").join("..").join(
            config
                .rejects
                .parent()
                .and_then(Path::file_name)
                .expect("dir name"),
        );
        config.database = detour.join("rejects.csv");
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(&error, import::ImportError::OutputIsDatabase { path } if *path == config.rejects),
            "{error:?}"
        );
        assert!(!config.rejects.exists(), "nothing written");

        // Resuming from resume.csv into the directory it is in.
        config.database = config.rejects.with_file_name("visits.sqlite");
        config.input = config.resume.clone();
        std::fs::write(&config.resume, "record_id\n").expect("write resume");
        let error = import::run(&config, &StopSignal::new(), &()).expect_err("refused");
        assert!(
            matches!(&error, import::ImportError::OutputIsInput { path } if *path == config.resume),
            "{error:?}"
        );
        assert!(!config.database.exists(), "nothing written");
    });
}
