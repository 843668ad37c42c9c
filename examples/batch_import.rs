//! Imports clinical visit records from a CSV file into SQLite on a
//! `triage-pool`, with adverse events in the urgent lane, and accounts for
//! every record: in the database, in the rejects file (with the reason), or
//! in the resume file (to import again). Each worker writes its records in
//! batched transactions, flushed from the pool's `on_worker_idle` hook when
//! it runs out of work; adverse events are written at once. Ctrl-C (SIGINT),
//! SIGTERM and SIGHUP stop it gracefully, also while it generates its input.
//! Exit status: 0 done, 3 records left in the resume file, 1 errors (2 is
//! clap's, for a usage error).
//!
//! ```text
//! cargo run --release --example batch_import                 # 200,000 generated records
//! cargo run --release --example batch_import -- visits.csv   # your own file
//! cargo run --release --example batch_import -- --help
//! ```
//!
//! The import itself is in `batch_import/import.rs`, shared with
//! `tests/batch_import.rs`; this file is the command line around it:
//! arguments, logging, the progress bar, the stop signals and the summary
//! table.

#[path = "batch_import/import.rs"]
mod import;

use std::error::Error;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tracing_subscriber::EnvFilter;
use triage_pool::{Priority, Stats};

use crate::import::{generate, ImportConfig, Latency, Observer, Rows, StopSignal, Summary};

/// Import clinical visit records (CSV) into SQLite on a triage-pool:
/// adverse events jump the queue, malformed rows are rejected with a reason,
/// and nothing is lost on Ctrl-C or SIGTERM.
///
/// Without INPUT, a realistic file of 200,000 records (seeded, with some
/// malformed rows and about 1 % adverse events) is generated first. The
/// database, rejects.csv (bad rows with the reason), resume.csv (rows still
/// to import, in the input's format) and failed.csv (rows the database
/// refused, with the reason; they are in resume.csv too) go to --out-dir:
/// by default a new temporary directory, kept after the run so you can look
/// at them.
///
/// Each worker writes its records --batch-rows at a time, in one short
/// transaction, and the rest when it runs out of work; adverse events are
/// written at once, each in its own transaction.
///
/// The input's header must name these columns, in any order: record_id,
/// subject_id, site_id, visit_code, visit_date, age, sex, weight_kg,
/// systolic_bp, diastolic_bp, heart_rate, temperature_c, ae_term,
/// ae_severity.
///
/// Ctrl-C, SIGTERM and SIGHUP stop the import gracefully: running records
/// finish, and every record not imported goes to resume.csv. During the
/// generation of the input they stop it and remove the partial file.
///
/// Log level: RUST_LOG (default "info"), for example RUST_LOG=debug.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = format!(
        "{}\n\nExamples:\n  \
         batch_import\n  \
         batch_import visits.csv --db visits.sqlite --out-dir import-out\n  \
         batch_import import-out/resume.csv --db visits.sqlite --out-dir import-out/resumed",
        import::EXIT_STATUS_HELP
    )
)]
struct Args {
    /// CSV file of visit records to import [default: generate one].
    input: Option<PathBuf>,

    /// Worker threads writing to the database, 1 to 256 [default: one per
    /// core].
    ///
    /// They take turns at SQLite's single write lock, so more threads than
    /// cores add waiting, not speed; far more than 256 would wait out the
    /// busy timeout and retries, and fail records with "database is
    /// locked".
    #[arg(short, long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=import::MAX_WORKERS as u64))]
    workers: Option<usize>,

    /// Extra worker threads that only take adverse events, 0 to 256.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(0..=import::MAX_WORKERS as u64))]
    urgent_workers: usize,

    /// SQLite database to import into; created if missing, existing rows
    /// are kept [default: visits.sqlite in --out-dir].
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,

    /// Records a worker writes per transaction (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = import::BATCH_ROWS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=import::MAX_BATCH_ROWS as u64))]
    batch_rows: usize,

    /// Read only the first N records; the rest of the input is not read,
    /// and is not in resume.csv.
    ///
    /// The records after the limit are not imported, not rejected and not
    /// in any output file; the summary says at which line reading stopped.
    /// Reaching the limit is not an error (exit status 0).
    #[arg(long, value_name = "N")]
    max_records: Option<u64>,

    /// Directory for the database, rejects.csv, resume.csv and failed.csv
    /// (and the generated input) [default: a new temporary directory].
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,

    /// Records to generate when no INPUT is given.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    generate: usize,

    /// Seed of the generated file (the same seed gives the same file).
    #[arg(long, default_value_t = 2024)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bar = progress_bar();
    init_tracing(&bar);
    match run(args, &bar) {
        Ok(code) => code,
        Err(error) => {
            bar.abandon();
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Prepares the input and the configuration, runs the import, prints the
/// summary. Exit code: [`Summary::exit_code`] (0 done, 3 records left in
/// the resume file, 1 when the input could not be read to the end or a
/// check fails); an `Err` is exit code 1.
fn run(args: Args, bar: &ProgressBar) -> Result<ExitCode, Box<dyn Error>> {
    // Ctrl-C, SIGTERM (a service manager, `kill`, a container stop) and
    // SIGHUP (a closed terminal) all take the graceful path (the `ctrlc`
    // crate's `termination` feature), from the start: generating a large
    // input takes a while too. SIGKILL cannot be caught; see the window of
    // loss in `batch_import/store.rs`.
    let stop = StopSignal::new();
    let on_signal = stop.clone();
    ctrlc::set_handler(move || {
        if on_signal.request() {
            tracing::warn!("stop signal (Ctrl-C, SIGTERM or SIGHUP): stopping gracefully");
        }
    })?;

    let (out_dir, temporary) = match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create output directory {}: {e}", dir.display()))?;
            (dir, false)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("batch_import-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?
                .keep();
            (dir, true)
        }
    };
    // On an error, a temporary output directory of ours goes too if
    // nothing was written there (`remove_dir` leaves a directory that is
    // not empty, such as one holding the generated input).
    let give_up = |error: Box<dyn Error>| {
        if temporary {
            let _ = std::fs::remove_dir(&out_dir);
        }
        error
    };
    let input = match args.input {
        Some(input) => input,
        None => {
            let path = out_dir.join("visits.csv");
            tracing::info!(
                path = %path.display(),
                records = args.generate,
                seed = args.seed,
                "generating input"
            );
            // The generator removes its partial file on failure.
            let manifest = generate::generate(&path, args.generate, args.seed, &stop)
                .map_err(|error| give_up(error.into()))?;
            // The import will see `adverse_events` of them, reject
            // `adverse_events_defective` as malformed and alert on the
            // rest; those `cut_off` with a truncated row read as routine.
            tracing::info!(
                path = %path.display(),
                records = manifest.rows.len(),
                defective = manifest.defective(),
                adverse_events = manifest.adverse_events(),
                adverse_events_defective = manifest.adverse_events_defective(),
                adverse_events_cut_off = manifest.adverse_events_cut_off(),
                "generated input"
            );
            path
        }
    };
    let mut config = ImportConfig::new(input, &out_dir);
    if let Some(database) = args.db {
        config.database = database;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    config.urgent_workers = args.urgent_workers;
    config.batch_rows = args.batch_rows;
    config.max_records = args.max_records;

    let summary = import::run(&config, &stop, &Progress { bar: bar.clone() })
        .map_err(|error| give_up(error.into()))?;
    if let Err(error) = write_summary(&mut io::stdout().lock(), &config, &out_dir, &summary) {
        // Standard output is closed (a pipe's reader exited, a terminal
        // hung up): the files are written, and the exit status says the rest.
        tracing::warn!(%error, "cannot print the summary");
    }
    Ok(ExitCode::from(summary.exit_code()))
}

/// The progress bar: the bar with the records/s, then two status lines
/// (see [`Progress::tick`]), each within 80 columns. Hidden until the
/// import starts (so not drawn, empty, while the input is generated); then
/// drawn on stderr if it is a terminal.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(progress_style(
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} {rate} (eta {eta})\n{msg}",
    ));
    bar
}

/// The progress bar's style from `template`, with the `{rate}` key.
fn progress_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|style| {
            style.with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                let _ = write!(out, "{}/s", thousands(state.per_sec().round() as u64));
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Logs to stderr at the level `RUST_LOG` sets (default `info`), without
/// tearing the progress bar.
fn init_tracing(bar: &ProgressBar) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let bar = bar.clone();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(move || LogWriter { bar: bar.clone() })
        // With stderr closed (piped into `head`, a hung-up terminal), a log
        // line is lost, not the import: tracing-subscriber's own complaint
        // would go to stderr with `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
}

/// Writes log lines to stderr with the progress bar out of the way.
struct LogWriter {
    /// The bar to hide while writing.
    bar: ProgressBar,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bar.suspend(|| io::stderr().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Drives the progress bar from the pool's [`Stats`].
struct Progress {
    /// The bar.
    bar: ProgressBar,
}

impl Observer for Progress {
    fn started(&self, records: Option<u64>) {
        match records {
            Some(records) => self.bar.set_length(records),
            // An input read from a pipe is not counted: no bar, no eta.
            None => self.bar.set_style(progress_style(
                "{spinner} {elapsed_precise} {human_pos} records {rate}\n{msg}",
            )),
        }
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.enable_steady_tick(Duration::from_millis(100));
    }

    /// Two status lines under the bar:
    ///
    /// ```text
    ///   committed 83,011 (+399 in batches)  rejected 1,332  failed 0
    ///   queued: urgent 0/256, normal 876/1024  busy workers 2/3
    /// ```
    ///
    /// "in batches": staged, not written yet. "rejected": malformed rows and
    /// duplicates; "failed": records the database did not take (and jobs
    /// that panicked). The urgent lane shows its oldest job's wait while it
    /// holds any.
    fn tick(&self, stats: &Stats, rows: &Rows) {
        self.bar.set_position(stats.finished());
        let oldest_urgent = stats
            .oldest_wait(Priority::Urgent)
            .map_or_else(String::new, |wait| format!(" (oldest {})", millis(wait)));
        self.bar.set_message(format!(
            "  committed {} (+{} in batches)  rejected {}  failed {}\n  \
             queued: urgent {}/{}{oldest_urgent}, normal {}/{}  busy workers {}/{}",
            thousands(rows.committed),
            thousands(rows.pending()),
            thousands(stats.failed() + rows.duplicates),
            thousands(stats.panicked() + rows.failed),
            stats.queued(Priority::Urgent),
            stats.capacity(Priority::Urgent),
            stats.queued(Priority::Normal),
            stats.capacity(Priority::Normal),
            stats.busy(),
            stats.workers() + stats.reserved_urgent_workers(),
        ));
    }

    fn finished(&self, stats: &Stats, rows: &Rows) {
        self.tick(stats, rows);
        self.bar.finish_and_clear();
    }
}

/// Prints the summary table on stdout. `out_dir` holds the output files; the
/// commands it suggests write theirs to a new directory inside it.
fn write_summary(
    out: &mut dyn Write,
    config: &ImportConfig,
    out_dir: &Path,
    s: &Summary,
) -> io::Result<()> {
    let check = |ok: bool| if ok { "ok" } else { "MISMATCH" };
    let resume = config.resume.display();
    let threads = format!(
        "{} workers + {} urgent",
        s.pool.workers(),
        s.pool.reserved_urgent_workers()
    );
    writeln!(out)?;
    if s.stopped_early {
        writeln!(
            out,
            "batch_import: stopped early; {} of {} records processed in {:.2} s ({} records/s, {threads})",
            thousands(s.processed()),
            thousands(s.read),
            s.elapsed.as_secs_f64(),
            thousands(s.records_per_second().round() as u64),
        )?;
    } else {
        writeln!(
            out,
            "batch_import: {} records in {:.2} s ({} records/s, {threads})",
            thousands(s.read),
            s.elapsed.as_secs_f64(),
            thousands(s.records_per_second().round() as u64),
        )?;
    }
    writeln!(out, "  input: {}", config.input.display())?;
    if let (Some(line), Some(max)) = (s.unread_from_line, config.max_records) {
        writeln!(
            out,
            "  stopped at --max-records {}: the rest of the input, from line {line}, was not read and is not in {}",
            thousands(max),
            config
                .resume
                .file_name()
                .map_or(resume.to_string(), |name| name.to_string_lossy().into_owned()),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "  {:<16} {:>9}  where", "outcome", "records")?;
    let row = |out: &mut dyn Write, name: &str, count: u64, place: &dyn std::fmt::Display| {
        writeln!(out, "  {name:<16} {:>9}  {place}", thousands(count))
    };
    row(out, "committed", s.committed, &config.database.display())?;
    row(out, "rejected", s.rejected, &config.rejects.display())?;
    row(
        out,
        "failed",
        s.failed,
        &format_args!("{resume} (reasons: {})", config.failures.display()),
    )?;
    row(out, "unrun", s.unrun, &resume)?;
    row(out, "not submitted", s.not_submitted, &resume)?;
    row(
        out,
        "total read",
        s.read,
        &format_args!("ledger balanced: {}", check(s.is_balanced())),
    )?;
    row(
        out,
        "adverse events",
        s.adverse_events,
        &format_args!(
            "alerts written: {}, malformed (rejected): {}{}",
            thousands(s.alerts_written),
            thousands(s.adverse_rejected),
            match s
                .adverse_events
                .saturating_sub(s.alerts_written + s.adverse_rejected)
            {
                0 => String::new(),
                other => format!(", rest (duplicates, failed, unrun): {}", thousands(other)),
            }
        ),
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<16} {:>9}  {:>9} {:>9} {:>9}",
        "queue wait", "jobs", "p50", "p99", "max"
    )?;
    latency_row(out, "urgent lane", &s.urgent_wait)?;
    latency_row(out, "normal lane", &s.normal_wait)?;
    writeln!(out)?;
    let rows = &s.rows;
    writeln!(
        out,
        "  transactions: {} batches of up to {} records (average {:.0}), {} adverse events written alone, {} failed",
        thousands(rows.batches),
        thousands(config.batch_rows as u64),
        rows.batched as f64 / rows.batches.max(1) as f64,
        thousands(rows.urgent_writes),
        thousands(rows.failed_flushes),
    )?;
    if rows.split_transactions > 0 {
        writeln!(
            out,
            "  refused transactions: {} written again record by record; {} records refused (in {resume}, reasons in {})",
            thousands(rows.split_transactions),
            thousands(rows.refused),
            config.failures.display(),
        )?;
    }
    let visits = s.after.visits.saturating_sub(s.before.visits);
    let alerts = s.after.alerts.saturating_sub(s.before.alerts);
    writeln!(
        out,
        "  database check: visits +{} (expected {}), alerts +{} (expected {}): {}",
        thousands(visits),
        thousands(s.committed),
        thousands(alerts),
        thousands(s.alerts_written),
        check(s.database_matches()),
    )?;
    if let Some(error) = &s.input_error {
        // The rest of the input was not read, so it is not in the resume
        // file either: resuming from it would silently skip those records.
        writeln!(out, "  input error: {error}")?;
        writeln!(out)?;
        writeln!(out, "  The input could not be read past this error: the records after it are not in the database, the rejects or the resume file.")?;
        if s.to_resume() > 0 {
            writeln!(
                out,
                "  ({resume} holds only the {} records read but not imported.)",
                thousands(s.to_resume()),
            )?;
        }
        writeln!(
            out,
            "  Fix the input, then import all of it again into the same database (records already imported are rejected as duplicates):\n    {}",
            command(&config.input, &config.database, &new_out_dir(out_dir, "again")),
        )?;
    } else if s.to_resume() > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "  {} records left to import; resume with:\n    {}",
            thousands(s.to_resume()),
            command(
                &config.resume,
                &config.database,
                &new_out_dir(out_dir, "resumed")
            ),
        )?;
    }
    Ok(())
}

/// The command that imports `input` into `database`, with its output files
/// in `out_dir` (so they do not overwrite this run's, and the resume file
/// is not both input and output).
fn command(input: &Path, database: &Path, out_dir: &Path) -> String {
    format!(
        "cargo run --release --example batch_import -- {} --db {} --out-dir {}",
        shell_word(input),
        shell_word(database),
        shell_word(out_dir),
    )
}

/// `out_dir/name`, or `out_dir/name-2`, `-3`... if that already exists.
fn new_out_dir(out_dir: &Path, name: &str) -> PathBuf {
    (1..1000)
        .map(|n| match n {
            1 => out_dir.join(name),
            n => out_dir.join(format!("{name}-{n}")),
        })
        .find(|dir| !dir.exists())
        .unwrap_or_else(|| out_dir.join(name))
}

/// `path` as one word for a POSIX shell: as it is if it needs no quoting,
/// else in single quotes.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// One line of the latency table: how long jobs of a lane waited from
/// submit to the start of their run.
fn latency_row(out: &mut dyn Write, lane: &str, latency: &Latency) -> io::Result<()> {
    writeln!(
        out,
        "  {lane:<16} {:>9}  {:>9} {:>9} {:>9}",
        thousands(latency.count),
        millis(latency.p50),
        millis(latency.p99),
        millis(latency.max),
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration in milliseconds with a sensible number of decimals.
fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
