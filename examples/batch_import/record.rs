//! The input format: one CSV row per clinical visit, how a row is validated
//! into a [`Visit`], and how a visit's risk score is computed.
//!
//! Parsing is split in two on purpose. The reader only splits the file into
//! raw [`csv::ByteRecord`]s, so a malformed row never stops the import; each
//! job then deserializes its row with serde ([`Row`]) and validates it
//! ([`Visit::from_record`]). Every problem becomes an [`Invalid`] naming the
//! column and the offending value, which is what ends up in the rejects
//! file.

use std::fmt;
use std::num::IntErrorKind;

use serde::Deserialize;

/// The columns an input file must have, in the order the generator writes
/// them. Files may order their columns differently: rows are read by name.
pub(crate) const COLUMNS: [&str; 14] = [
    "record_id",
    "subject_id",
    "site_id",
    "visit_code",
    "visit_date",
    "age",
    "sex",
    "weight_kg",
    "systolic_bp",
    "diastolic_bp",
    "heart_rate",
    "temperature_c",
    "ae_term",
    "ae_severity",
];

/// Visit codes of the study schedule: screening, baseline, weeks 2 to 24,
/// end of treatment, follow-up.
pub(crate) const VISIT_CODES: [&str; 9] =
    ["SCR", "BL", "W2", "W4", "W8", "W12", "W24", "EOT", "FU"];

/// Adverse-event severities, mildest first.
pub(crate) const SEVERITIES: [&str; 4] = ["mild", "moderate", "severe", "life-threatening"];

/// One input row as serde reads it: text where the value is free-form,
/// `Option<number>` where it is numeric (an empty cell is `None`, a cell that
/// is not a number is a deserialization error naming the column).
#[derive(Debug, Deserialize)]
struct Row {
    record_id: String,
    subject_id: String,
    site_id: String,
    visit_code: String,
    visit_date: String,
    age: Option<u32>,
    sex: String,
    weight_kg: Option<f64>,
    systolic_bp: Option<u32>,
    diastolic_bp: Option<u32>,
    heart_rate: Option<u32>,
    temperature_c: Option<f64>,
    ae_term: String,
    ae_severity: String,
}

/// An adverse event reported at a visit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdverseEvent {
    /// What happened, as reported ("syncope", "rash", ...).
    pub(crate) term: String,
    /// One of [`SEVERITIES`].
    pub(crate) severity: &'static str,
}

/// A validated visit, ready to be written to the database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Visit {
    /// Unique id of the record in the source system.
    pub(crate) record_id: String,
    /// Study subject.
    pub(crate) subject_id: String,
    /// Clinical site.
    pub(crate) site_id: String,
    /// One of [`VISIT_CODES`].
    pub(crate) visit_code: &'static str,
    /// `YYYY-MM-DD`.
    pub(crate) visit_date: String,
    /// Years, 18 to 100.
    pub(crate) age: u32,
    /// `F`, `M` or `U` (unknown).
    pub(crate) sex: &'static str,
    /// Kilograms, optional.
    pub(crate) weight_kg: Option<f64>,
    /// mmHg.
    pub(crate) systolic_bp: u32,
    /// mmHg.
    pub(crate) diastolic_bp: u32,
    /// Beats per minute.
    pub(crate) heart_rate: u32,
    /// Degrees Celsius.
    pub(crate) temperature_c: f64,
    /// The adverse event reported at this visit, if any.
    pub(crate) adverse_event: Option<AdverseEvent>,
}

/// Why a row was rejected. The message names the column and the value so a
/// data manager can fix the row from the rejects file alone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Invalid {
    /// The row has more or fewer cells than the header.
    FieldCount {
        /// Cells in the header.
        expected: usize,
        /// Cells in this row.
        found: usize,
    },
    /// A cell could not be read at all (for example, it is not UTF-8).
    Unreadable {
        /// The column.
        column: String,
        /// What the CSV reader said.
        detail: String,
    },
    /// A required cell is empty.
    Missing {
        /// The column.
        column: &'static str,
    },
    /// A numeric cell does not hold a number.
    NotANumber {
        /// The column.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A whole number too large for its column's type (a typo such as
    /// `99999999999` years), before any range check could look at it.
    TooLarge {
        /// The column.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A number outside its plausible range (a typo such as `1200` mmHg).
    OutOfRange {
        /// The column.
        column: &'static str,
        /// The value read.
        value: f64,
        /// Smallest plausible value.
        min: f64,
        /// Largest plausible value.
        max: f64,
    },
    /// A text cell that is not one of the allowed codes.
    UnknownCode {
        /// The column.
        column: &'static str,
        /// The cell as written.
        value: String,
    },
    /// A date that is not `YYYY-MM-DD`, or not in the calendar
    /// (`2025-02-30`).
    BadDate {
        /// The cell as written.
        value: String,
    },
    /// A severity without an adverse-event term.
    SeverityWithoutEvent,
    /// The record id is already in the database (imported before, or twice
    /// in this file).
    Duplicate {
        /// The record id.
        record_id: String,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::FieldCount { expected, found } => {
                write!(f, "row has {found} fields, the header has {expected}")
            }
            Invalid::Unreadable { column, detail } => write!(f, "{column}: unreadable ({detail})"),
            Invalid::Missing { column } => write!(f, "{column}: missing"),
            Invalid::NotANumber { column, value } => {
                write!(f, "{column}: {value:?} is not a number")
            }
            Invalid::TooLarge { column, value } => {
                write!(f, "{column}: {value:?} is far too large")
            }
            Invalid::OutOfRange {
                column,
                value,
                min,
                max,
            } => write!(f, "{column}: {value} is outside {min} to {max}"),
            Invalid::UnknownCode { column, value } => write!(f, "{column}: unknown code {value:?}"),
            Invalid::BadDate { value } => {
                write!(
                    f,
                    "visit_date: {value:?} is not a calendar date (YYYY-MM-DD)"
                )
            }
            Invalid::SeverityWithoutEvent => f.write_str("ae_severity: given without an ae_term"),
            Invalid::Duplicate { record_id } => {
                write!(f, "record_id: {record_id:?} is already in the database")
            }
        }
    }
}

impl std::error::Error for Invalid {}

impl Visit {
    /// Deserializes and validates one raw row against the file's `headers`.
    ///
    /// # Errors
    ///
    /// The first problem found, as an [`Invalid`].
    pub(crate) fn from_record(
        headers: &csv::ByteRecord,
        record: &csv::ByteRecord,
    ) -> Result<Visit, Invalid> {
        if record.len() != headers.len() {
            return Err(Invalid::FieldCount {
                expected: headers.len(),
                found: record.len(),
            });
        }
        let row: Row = record
            .deserialize(Some(headers))
            .map_err(|e| deserialize_error(headers, record, &e))?;
        row.validate()
    }

    /// The visit's risk score, 0 (routine) to 100 (needs attention now):
    /// points for abnormal vitals, age, and the adverse event's severity.
    pub(crate) fn risk_score(&self) -> u32 {
        let blood_pressure = match self.systolic_bp {
            180.. => 30,
            160..=179 => 20,
            140..=159 => 10,
            90..=139 => 0,
            _ => 20,
        } + if self.diastolic_bp >= 110 { 10 } else { 0 };
        let heart_rate = match self.heart_rate {
            0..=44 | 121.. => 15,
            101..=120 => 5,
            _ => 0,
        };
        let temperature = if self.temperature_c >= 39.0 || self.temperature_c < 35.0 {
            15
        } else if self.temperature_c >= 38.0 {
            8
        } else {
            0
        };
        let age = match self.age {
            75.. => 10,
            65..=74 => 5,
            _ => 0,
        };
        let event = match self.adverse_event.as_ref().map(|ae| ae.severity) {
            Some("life-threatening") => 50,
            Some("severe") => 30,
            Some("moderate") => 15,
            Some(_) => 5,
            None => 0,
        };
        (blood_pressure + heart_rate + temperature + age + event).min(100)
    }
}

impl Row {
    /// Checks presence, ranges and codes; the first problem wins.
    fn validate(self) -> Result<Visit, Invalid> {
        let record_id = required("record_id", self.record_id)?;
        let subject_id = required("subject_id", self.subject_id)?;
        let site_id = required("site_id", self.site_id)?;
        let visit_code = code(
            "visit_code",
            &required("visit_code", self.visit_code)?,
            &VISIT_CODES,
        )?;
        let visit_date = date(required("visit_date", self.visit_date)?)?;
        let age = in_range("age", present("age", self.age)?, 18, 100)?;
        let sex = code("sex", &required("sex", self.sex)?, &["F", "M", "U"])?;
        let weight_kg = match self.weight_kg {
            Some(weight) => Some(in_range_f64("weight_kg", weight, 30.0, 300.0)?),
            None => None,
        };
        let systolic_bp = in_range(
            "systolic_bp",
            present("systolic_bp", self.systolic_bp)?,
            60,
            260,
        )?;
        let diastolic_bp = in_range(
            "diastolic_bp",
            present("diastolic_bp", self.diastolic_bp)?,
            30,
            160,
        )?;
        let heart_rate = in_range(
            "heart_rate",
            present("heart_rate", self.heart_rate)?,
            25,
            250,
        )?;
        let temperature_c = in_range_f64(
            "temperature_c",
            present("temperature_c", self.temperature_c)?,
            30.0,
            44.0,
        )?;
        let term = self.ae_term.trim();
        let severity = self.ae_severity.trim();
        let adverse_event = match (term.is_empty(), severity.is_empty()) {
            (true, true) => None,
            (true, false) => return Err(Invalid::SeverityWithoutEvent),
            (false, true) => {
                return Err(Invalid::Missing {
                    column: "ae_severity",
                })
            }
            (false, false) => Some(AdverseEvent {
                term: term.to_owned(),
                severity: code("ae_severity", severity, &SEVERITIES)?,
            }),
        };
        Ok(Visit {
            record_id,
            subject_id,
            site_id,
            visit_code,
            visit_date,
            age,
            sex,
            weight_kg,
            systolic_bp,
            diastolic_bp,
            heart_rate,
            temperature_c,
            adverse_event,
        })
    }
}

/// Whether `record` reports an adverse event: its `ae_term` cell (at
/// `ae_term_index`) is not blank, as [`Row::validate`] trims it (a cell
/// that is not UTF-8 counts as not blank). Decides the job's lane before
/// validation, so even a malformed adverse-event row is looked at first.
pub(crate) fn is_adverse_event(record: &csv::ByteRecord, ae_term_index: usize) -> bool {
    record
        .get(ae_term_index)
        .is_some_and(|cell| std::str::from_utf8(cell).map_or(true, |term| !term.trim().is_empty()))
}

/// Turns serde's error into an [`Invalid`] naming the column.
fn deserialize_error(
    headers: &csv::ByteRecord,
    record: &csv::ByteRecord,
    error: &csv::Error,
) -> Invalid {
    let csv::ErrorKind::Deserialize { err: error, .. } = error.kind() else {
        return Invalid::Unreadable {
            column: "?".to_owned(),
            detail: error.to_string(),
        };
    };
    let index = error.field().and_then(|i| usize::try_from(i).ok());
    let column = index.and_then(|i| headers.get(i)).map_or_else(
        || "?".to_owned(),
        |name| String::from_utf8_lossy(name).into_owned(),
    );
    let value = || {
        index
            .and_then(|i| record.get(i))
            .map(|cell| String::from_utf8_lossy(cell).into_owned())
            .unwrap_or_default()
    };
    match error.kind() {
        csv::DeserializeErrorKind::ParseInt(parse)
            if matches!(
                parse.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            Invalid::TooLarge {
                column,
                value: value(),
            }
        }
        csv::DeserializeErrorKind::ParseInt(_) | csv::DeserializeErrorKind::ParseFloat(_) => {
            Invalid::NotANumber {
                column,
                value: value(),
            }
        }
        kind => Invalid::Unreadable {
            column,
            detail: kind.to_string(),
        },
    }
}

/// The trimmed cell, or `Missing` if it is blank.
fn required(column: &'static str, value: String) -> Result<String, Invalid> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(Invalid::Missing { column })
    } else if trimmed.len() == value.len() {
        Ok(value)
    } else {
        Ok(trimmed.to_owned())
    }
}

/// The number, or `Missing` if the cell was empty.
fn present<T>(column: &'static str, value: Option<T>) -> Result<T, Invalid> {
    value.ok_or(Invalid::Missing { column })
}

/// `value` if it is within `min..=max`.
fn in_range(column: &'static str, value: u32, min: u32, max: u32) -> Result<u32, Invalid> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::OutOfRange {
            column,
            value: f64::from(value),
            min: f64::from(min),
            max: f64::from(max),
        })
    }
}

/// `value` if it is within `min..=max` (NaN and infinities are not).
fn in_range_f64(column: &'static str, value: f64, min: f64, max: f64) -> Result<f64, Invalid> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::OutOfRange {
            column,
            value,
            min,
            max,
        })
    }
}

/// The entry of `allowed` equal to `value`.
fn code(
    column: &'static str,
    value: &str,
    allowed: &[&'static str],
) -> Result<&'static str, Invalid> {
    allowed
        .iter()
        .find(|candidate| **candidate == value)
        .copied()
        .ok_or_else(|| Invalid::UnknownCode {
            column,
            value: value.to_owned(),
        })
}

/// `value` if it is a date of the calendar written `YYYY-MM-DD`, from
/// 1900 to 2100 (so not 2025-02-29, nor 2025-04-31).
fn date(value: String) -> Result<String, Invalid> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = std::str::from_utf8(bytes.get(range)?).ok()?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let valid = bytes.len() == 10 && bytes[4] == b'-' && bytes[7] == b'-' && {
        match (digits(0..4), digits(5..7), digits(8..10)) {
            (Some(year), Some(month), Some(day)) => {
                (1900..=2100).contains(&year)
                    && (1..=12).contains(&month)
                    && (1..=days_in_month(year, month)).contains(&day)
            }
            _ => false,
        }
    };
    if valid {
        Ok(value)
    } else {
        Err(Invalid::BadDate { value })
    }
}

/// Days in `month` (1 to 12) of `year`, in the Gregorian calendar.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
