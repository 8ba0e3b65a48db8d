//! What a failed load job means: bad data in some file (bisect and quarantine), a transient
//! failure (retry with a new attempt id), or a problem no file can fix (stop, report).

use super::model::Category;
use crate::cloud::bqtypes::Job;
use crate::cloud::{ErrorCategory, classify};

/// How a finished job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retryable on BigQuery's side (`backendError`, `rateLimitExceeded`, …): run a new attempt.
    Transient(String),
    /// Caused by the content of some source file: isolate it.
    Data(Category, String),
    /// Neither (permissions, quota, a configuration BigQuery rejects): stop and report.
    Other(String),
}

/// Classifies a `DONE` job with an error.
pub fn failure(job: &Job) -> Failure {
    let Some(top) = &job.error else {
        return Failure::Other("job finished without a result".into());
    };
    let text = std::iter::once(top)
        .chain(&job.errors)
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    if classify(400, &top.reason) == ErrorCategory::Retryable || job.errors.iter().any(|e| e.reason == "backendError") {
        return Failure::Transient(text);
    }
    let reasons = std::iter::once(top).chain(&job.errors).map(|e| e.reason.as_str());
    let data_reason = reasons.clone().any(|r| r == "invalid" || r == "notFound");
    if !data_reason {
        return Failure::Other(text);
    }
    match category(&text, reasons.clone().any(|r| r == "notFound")) {
        Some(c) => Failure::Data(c, text),
        None => Failure::Other(text),
    }
}

/// The category of a data error message, or `None` when the message is not about file content.
fn category(text: &str, not_found_reason: bool) -> Option<Category> {
    const NOT_FOUND: &[&str] = &[
        "Not found: Uri",
        "Not found: Files",
        "No files found",
        "matched no files",
    ];
    const SCHEMA: &[&str] = &[
        "Provided Schema does not match",
        "No such field",
        "Could not convert",
        "Could not parse '",
        "Failed to cast",
        "Conversion Error",
        "changed type",
        "Cannot convert",
        "Missing required field",
        "missing required field",
        "Required field",
        "is not nullable",
        "schema mismatch",
        "incompatible",
    ];
    const DATA: &[&str] = &[
        "Error while reading data",
        "Error while reading table",
        "parsing error",
        "Malformed",
        "Invalid Input Error",
        "not a valid",
        "too many errors",
        "Error detected while parsing",
        "CSV table",
        "JSON table",
        "Parquet",
        "Avro",
    ];
    let has = |list: &[&str]| list.iter().any(|p| text.contains(p));
    if not_found_reason || has(NOT_FOUND) {
        Some(Category::NotFound)
    } else if has(SCHEMA) {
        Some(Category::IncompatibleSchema)
    } else if has(DATA) {
        Some(Category::Corrupt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::bqtypes::JobError;

    fn job(reason: &str, message: &str) -> Job {
        Job {
            id: "j".into(),
            state: "DONE".into(),
            error: Some(JobError {
                reason: reason.into(),
                message: message.into(),
                location: None,
            }),
            errors: vec![],
            output_rows: None,
            dml_rows: None,
        }
    }

    #[test]
    fn emulator_and_bigquery_messages() {
        use Category::*;
        let cases = [
            // bqemulator (DuckDB) messages
            (
                "invalid",
                "Error while reading data, error message: Invalid Input Error: Malformed JSON in file",
                Corrupt,
            ),
            (
                "invalid",
                "Error while reading data, error message: Invalid Input Error: JSON transform error in file \"x\", in line 1: Failed to cast value to numerical",
                IncompatibleSchema,
            ),
            (
                "invalid",
                "Error while reading data, error message: IO Error: No files found that match the pattern",
                NotFound,
            ),
            (
                "invalid",
                "Error while reading data, error message: Conversion Error: CSV Error on Line: 2",
                IncompatibleSchema,
            ),
            // BigQuery messages
            (
                "invalid",
                "Error while reading data, error message: JSON parsing error in row starting at position 0: Parser terminated before end of string",
                Corrupt,
            ),
            (
                "invalid",
                "Could not parse 'abc' as INT64 for field id (position 0) starting at location 0",
                IncompatibleSchema,
            ),
            (
                "invalid",
                "Error while reading data, error message: JSON parsing error in row starting at position 0: No such field: extra.",
                IncompatibleSchema,
            ),
            ("notFound", "Not found: Uri gs://b/x.json", NotFound),
            (
                "invalid",
                "Provided Schema does not match Table p:d.t. Field id has changed type from STRING to INTEGER",
                IncompatibleSchema,
            ),
        ];
        for (reason, message, want) in cases {
            assert_eq!(
                failure(&job(reason, message)),
                Failure::Data(want, message.into()),
                "{message}"
            );
        }
    }

    #[test]
    fn transient_and_other() {
        assert!(matches!(failure(&job("backendError", "x")), Failure::Transient(_)));
        assert!(matches!(failure(&job("rateLimitExceeded", "x")), Failure::Transient(_)));
        assert!(matches!(
            failure(&job("accessDenied", "Access Denied: gs://b")),
            Failure::Other(_)
        ));
        assert!(matches!(
            failure(&job("quotaExceeded", "Quota exceeded")),
            Failure::Other(_)
        ));
        assert!(matches!(
            failure(&job("invalid", "Invalid table name")),
            Failure::Other(_)
        ));
    }
}
