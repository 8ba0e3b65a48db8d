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
    // BigQuery repeats the top error in `errors`: each distinct message once.
    let mut messages: Vec<&str> = Vec::new();
    for e in std::iter::once(top).chain(&job.errors) {
        let m = e.message.trim();
        if !m.is_empty() && !messages.contains(&m) {
            messages.push(m);
        }
    }
    let text = messages.join(" | ");
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

/// A load error in one short line for people (the full text stays in the ledger and the status):
/// BigQuery's boilerplate prefix dropped, local file paths (the emulator's) replaced by "the file",
/// only the first of several messages, cut at 160 characters on a word.
pub fn short(message: &str) -> String {
    let first = message.split(" | ").next().unwrap_or(message).trim();
    let first = first
        .strip_prefix("Error while reading data, error message: ")
        .unwrap_or(first);
    let mut out = String::new();
    let mut rest = first;
    while let Some(start) = rest.find("\"/") {
        out.push_str(&rest[..start]);
        match rest[start + 1..].find('"') {
            Some(end) => {
                out.push_str("the file");
                rest = &rest[start + 1 + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    let out = out.replace("in file the file", "in the file");
    if out.chars().count() <= 160 {
        return out.trim_end().to_string();
    }
    let cut: String = out.chars().take(160).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(a, _)| a).to_string();
    format!("{cut}…")
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

    #[test]
    fn short_messages_for_people() {
        let m = "Error while reading data, error message: Invalid Input Error: Malformed JSON in file \"/tmp/demo.X/gcs-root/acme-raw/e/events-1.json\", at byte 38 in record/value 2: unexpected end of data. | Something else";
        assert_eq!(
            short(m),
            "Invalid Input Error: Malformed JSON in the file, at byte 38 in record/value 2: unexpected end of data."
        );
        let long = "word ".repeat(60);
        let s = short(&long);
        assert!(s.chars().count() <= 161 && s.ends_with('…'), "{s}");
    }
}
