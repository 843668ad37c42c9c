//! A seeded generator of realistic visit records, so the example runs on a
//! fresh machine with no data at hand.
//!
//! Subjects at 40 sites go through the study schedule (screening, baseline,
//! weeks 2 to 24, end of treatment, follow-up). About 1 % of visits report
//! an adverse event and about 1.5 % of rows carry one defect of the kind
//! real exports have: a number typed wrong, an empty required cell, a visit
//! code that is not in the schedule, an implausible value, a truncated row.
//! The same seed always produces the same file (with this version of
//! `rand`), and the returned [`Manifest`] says which rows are defective and
//! how, so a test can check every one of them.
//!
//! A truncated row loses its last cells, and with them any adverse event
//! it reported: the import reads it as a routine record (and rejects it).
//! So the import sees [`Manifest::adverse_events`] adverse events, of
//! which [`Manifest::adverse_events_defective`] are rejected as malformed
//! and the rest raise an alert; [`Manifest::adverse_events_cut_off`] more
//! were cut off with their row's end.
//!
//! Generation stops early, and removes its partial file, when the import's
//! [`StopSignal`] is raised (Ctrl-C while generating a large file).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::record::{COLUMNS, SEVERITIES, VISIT_CODES};
use super::StopSignal;

/// Adverse-event terms the generator draws from.
const AE_TERMS: [&str; 10] = [
    "headache",
    "nausea",
    "rash",
    "dizziness",
    "syncope",
    "chest pain",
    "elevated ALT",
    "neutropenia",
    "injection site reaction",
    "fatigue",
];

/// Clinical sites in the study.
const SITES: u32 = 40;

/// Cells that are not numbers, as people type them.
const NOT_NUMBERS: [&str; 6] = ["12O", "n/a", "?", "1,5", "high", "--"];

/// The one thing wrong with a defective row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    /// A numeric cell holds text.
    NotANumber {
        /// The column.
        column: &'static str,
    },
    /// A required cell is empty.
    Missing {
        /// The column.
        column: &'static str,
    },
    /// `visit_code` is not in the schedule.
    UnknownVisit,
    /// A number far outside its plausible range.
    OutOfRange {
        /// The column.
        column: &'static str,
    },
    /// The row stops after a few cells.
    Truncated,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::NotANumber { column } => write!(f, "{column} is not a number"),
            Defect::Missing { column } => write!(f, "{column} is missing"),
            Defect::UnknownVisit => f.write_str("unknown visit code"),
            Defect::OutOfRange { column } => write!(f, "{column} out of range"),
            Defect::Truncated => f.write_str("truncated row"),
        }
    }
}

/// What the generator knows about one row it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowFacts {
    /// The row was generated with an adverse event. Unless the row was
    /// then truncated ([`RowFacts::reads_as_adverse_event`]), it goes to
    /// the urgent lane.
    pub(crate) adverse_event: bool,
    /// The row's defect, if it has one; a row without is valid.
    pub(crate) defect: Option<Defect>,
}

impl RowFacts {
    /// Whether the import sees an adverse event in the row (its `ae_term`
    /// cell is there and not empty), and so puts it in the urgent lane.
    pub(crate) fn reads_as_adverse_event(&self) -> bool {
        self.adverse_event && self.defect != Some(Defect::Truncated)
    }
}

/// What the generator wrote: the facts of every row, in file order. Row `i`
/// has the record id [`record_id(i)`](record_id).
#[derive(Debug, Clone, Default)]
pub(crate) struct Manifest {
    /// One entry per row.
    pub(crate) rows: Vec<RowFacts>,
}

impl Manifest {
    /// Rows in which the import sees an adverse event: the summary's
    /// "adverse events" after a full import of the file.
    pub(crate) fn adverse_events(&self) -> usize {
        self.count(|row| row.reads_as_adverse_event())
    }

    /// Of [`adverse_events`](Manifest::adverse_events), the rows with a
    /// defect: rejected as malformed, without an alert.
    pub(crate) fn adverse_events_defective(&self) -> usize {
        self.count(|row| row.reads_as_adverse_event() && row.defect.is_some())
    }

    /// Adverse events cut off with the end of a truncated row: the import
    /// reads (and rejects) such a row as a routine record.
    pub(crate) fn adverse_events_cut_off(&self) -> usize {
        self.count(|row| row.adverse_event && !row.reads_as_adverse_event())
    }

    /// Rows matching `pick`.
    fn count(&self, pick: impl Fn(&RowFacts) -> bool) -> usize {
        self.rows.iter().filter(|row| pick(row)).count()
    }

    /// Rows with a defect.
    pub(crate) fn defective(&self) -> usize {
        self.count(|row| row.defect.is_some())
    }
}

/// Why [`generate`] wrote no file. Either way the partial file is removed
/// (unless removing it failed too, which the message says).
#[derive(Debug)]
pub(crate) enum GenerateError {
    /// The file could not be created or written.
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: csv::Error,
        /// Removing the partial file failed too.
        not_removed: Option<io::Error>,
    },
    /// A stop was requested before the file was complete.
    Interrupted {
        /// The file.
        path: PathBuf,
        /// Rows written before the stop.
        written: usize,
        /// Rows asked for.
        records: usize,
        /// Removing the partial file failed.
        not_removed: Option<io::Error>,
    },
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, not_removed) = match self {
            GenerateError::Write {
                path, not_removed, ..
            } => {
                write!(f, "cannot generate {}", path.display())?;
                (path, not_removed)
            }
            GenerateError::Interrupted {
                path,
                written,
                records,
                not_removed,
            } => {
                write!(
                    f,
                    "stopped while generating {} ({written} of {records} records written)",
                    path.display()
                )?;
                (path, not_removed)
            }
        };
        match not_removed {
            None => f.write_str("; the partial file was removed"),
            Some(error) => write!(
                f,
                "; the partial file could not be removed ({error}): delete {} before using it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for GenerateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GenerateError::Write { source, .. } => Some(source),
            GenerateError::Interrupted { .. } => None,
        }
    }
}

/// The record id of row `index` (from 0) of a generated file.
pub(crate) fn record_id(index: usize) -> String {
    format!("R{:07}", index + 1)
}

/// Writes `records` generated visit rows (plus the header) to `path`,
/// unless `stop` is raised first.
///
/// # Errors
///
/// Creating or writing the file, or a stop before the file is complete; the
/// partial file is removed then.
pub(crate) fn generate(
    path: &Path,
    records: usize,
    seed: u64,
    stop: &StopSignal,
) -> Result<Manifest, GenerateError> {
    let mut written = 0;
    let write_error = match write_rows(path, records, seed, stop, &mut written) {
        Ok(Some(manifest)) => return Ok(manifest),
        Ok(None) => None,
        Err(source) => Some(source),
    };
    // The writer is dropped, and the file closed, by now.
    let not_removed = match std::fs::remove_file(path) {
        Ok(()) => None,
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => Some(error),
    };
    let path = path.to_owned();
    Err(match write_error {
        Some(source) => GenerateError::Write {
            path,
            source,
            not_removed,
        },
        None => GenerateError::Interrupted {
            path,
            written,
            records,
            not_removed,
        },
    })
}

/// Writes the file for [`generate`], counting the rows in `written`.
/// Returns `None` if `stop` was raised before the last row.
fn write_rows(
    path: &Path,
    records: usize,
    seed: u64,
    stop: &StopSignal,
    written: &mut usize,
) -> Result<Option<Manifest>, csv::Error> {
    let mut writer = csv::WriterBuilder::new().flexible(true).from_path(path)?;
    writer.write_record(COLUMNS)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut manifest = Manifest {
        rows: Vec::with_capacity(records),
    };
    let mut subject = Subject::new(&mut rng, 0);
    let mut cells: Vec<String> = Vec::with_capacity(COLUMNS.len());
    for index in 0..records {
        // An atomic load per row: nothing next to formatting the row.
        if stop.is_requested() {
            return Ok(None);
        }
        if subject.next_visit == VISIT_CODES.len() {
            subject = Subject::new(&mut rng, subject.number + 1);
        }
        cells.clear();
        let adverse_event = subject.visit(&mut rng, index, &mut cells);
        let defect = if rng.gen_bool(0.015) {
            Some(spoil(&mut rng, &mut cells))
        } else {
            None
        };
        writer.write_record(&cells)?;
        manifest.rows.push(RowFacts {
            adverse_event,
            defect,
        });
        *written += 1;
    }
    writer.flush()?;
    Ok(Some(manifest))
}

/// A study subject: fixed demographics, a schedule position and a clock.
#[derive(Debug)]
struct Subject {
    /// Running number, from 0.
    number: u32,
    /// `S<site>-<number>`.
    id: String,
    /// `SITE-<nn>`.
    site: String,
    /// Age at enrolment.
    age: u32,
    /// `F`, `M` or (rarely) `U`.
    sex: &'static str,
    /// Kilograms.
    weight: f64,
    /// Index into `VISIT_CODES` of the next visit.
    next_visit: usize,
    /// Days since 2024-01-01 of the screening visit.
    start_day: u32,
}

impl Subject {
    fn new(rng: &mut StdRng, number: u32) -> Subject {
        let site = rng.gen_range(1..=SITES);
        Subject {
            number,
            id: format!("S{site:02}-{number:05}"),
            site: format!("SITE-{site:02}"),
            age: rng.gen_range(18..=90),
            sex: match rng.gen_range(0..100) {
                0 => "U",
                1..=50 => "F",
                _ => "M",
            },
            weight: rng.gen_range(45.0..130.0),
            next_visit: 0,
            start_day: rng.gen_range(0..700),
        }
    }

    /// Appends the cells of the subject's next visit; returns whether it
    /// reports an adverse event.
    fn visit(&mut self, rng: &mut StdRng, index: usize, cells: &mut Vec<String>) -> bool {
        // Study day of each visit in the schedule.
        const DAYS: [u32; 9] = [0, 14, 28, 42, 70, 98, 182, 190, 220];
        let code = VISIT_CODES[self.next_visit];
        let day = self.start_day + DAYS[self.next_visit] + rng.gen_range(0..4);
        self.next_visit += 1;

        let hypertensive = rng.gen_bool(0.05);
        let systolic: u32 = if hypertensive {
            rng.gen_range(160..=205)
        } else {
            rng.gen_range(100..=150)
        };
        let diastolic: u32 = if hypertensive {
            rng.gen_range(95..=120)
        } else {
            rng.gen_range(60..=95)
        };
        let heart_rate: u32 = if rng.gen_bool(0.03) {
            rng.gen_range(105..=140)
        } else {
            rng.gen_range(55..=100)
        };
        let temperature: f64 = if rng.gen_bool(0.03) {
            rng.gen_range(38.0..40.2)
        } else {
            rng.gen_range(36.0..37.6)
        };
        let weight = if rng.gen_bool(0.1) {
            String::new() // optional: not measured at every visit
        } else {
            format!("{:.1}", self.weight + rng.gen_range(-2.0..2.0))
        };
        let adverse_event = rng.gen_bool(0.01);
        let (term, severity) = if adverse_event {
            let severity = match rng.gen_range(0..100) {
                0..=49 => SEVERITIES[0],
                50..=79 => SEVERITIES[1],
                80..=95 => SEVERITIES[2],
                _ => SEVERITIES[3],
            };
            (AE_TERMS[rng.gen_range(0..AE_TERMS.len())], severity)
        } else {
            ("", "")
        };

        cells.extend([
            record_id(index),
            self.id.clone(),
            self.site.clone(),
            code.to_owned(),
            date(day),
            self.age.to_string(),
            self.sex.to_owned(),
            weight,
            systolic.to_string(),
            diastolic.to_string(),
            heart_rate.to_string(),
            format!("{temperature:.1}"),
            term.to_owned(),
            severity.to_owned(),
        ]);
        adverse_event
    }
}

/// Damages one cell of a valid row (or truncates it) and says how.
fn spoil(rng: &mut StdRng, cells: &mut Vec<String>) -> Defect {
    let column_index = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
    match rng.gen_range(0..100) {
        0..=34 => {
            let columns = [
                "age",
                "weight_kg",
                "systolic_bp",
                "diastolic_bp",
                "heart_rate",
                "temperature_c",
            ];
            let column = columns[rng.gen_range(0..columns.len())];
            cells[column_index(column)] =
                NOT_NUMBERS[rng.gen_range(0..NOT_NUMBERS.len())].to_owned();
            Defect::NotANumber { column }
        }
        35..=64 => {
            let columns = [
                "subject_id",
                "site_id",
                "visit_date",
                "age",
                "systolic_bp",
                "heart_rate",
                "temperature_c",
            ];
            let column = columns[rng.gen_range(0..columns.len())];
            cells[column_index(column)].clear();
            Defect::Missing { column }
        }
        65..=84 => {
            let codes = ["W99", "UNSCHED", "w4", "V3"];
            cells[column_index("visit_code")] = codes[rng.gen_range(0..codes.len())].to_owned();
            Defect::UnknownVisit
        }
        85..=96 => {
            let (column, value) = match rng.gen_range(0..4) {
                0 => ("systolic_bp", "1200"),
                1 => ("temperature_c", "3.7"),
                2 => ("age", "7"),
                _ => ("heart_rate", "720"),
            };
            cells[column_index(column)] = value.to_owned();
            Defect::OutOfRange { column }
        }
        _ => {
            cells.truncate(rng.gen_range(3..COLUMNS.len() - 2));
            Defect::Truncated
        }
    }
}

/// `YYYY-MM-DD` of `day` days after 2024-01-01.
fn date(mut day: u32) -> String {
    let mut year = 2024;
    loop {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let length = if leap { 366 } else { 365 };
        if day < length {
            let months = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let mut month = 1;
            for days_in_month in months {
                if day < days_in_month {
                    break;
                }
                day -= days_in_month;
                month += 1;
            }
            return format!("{year:04}-{month:02}-{:02}", day + 1);
        }
        day -= length;
        year += 1;
    }
}
