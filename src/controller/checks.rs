//! The data-quality checks of an IngestedTable in the controller: each declared check runs when
//! its `every` has passed since its last result (kept in `status.checks`), after the table's
//! loads — a failing check never stops them. Its result becomes the `InSync` condition and an
//! event (a Warning for each run that finds a mismatch, a Normal one when the table is back in
//! sync). Metrics come from [`crate::checks::observe_checks`]. May touch: the source database and
//! BigQuery (read-only, through [`crate::checks`]).

use super::cluster::Note;
use crate::checks::{self, Kind};
use crate::crd::{CheckResult, ChecksStatus, IngestedTableSpec};
use crate::engine::Clients;
use serde_json::Value;

/// What the checks leave in the status: the `checks` field, the `InSync` condition, events.
pub struct ChecksOutcome {
    /// `status.checks`.
    pub status: Value,
    /// (type, true?, reason, message).
    pub condition: (String, bool, String, String),
    /// Events to record.
    pub events: Vec<Note>,
    /// When the next check is due.
    pub next_due: std::time::Duration,
}

/// Runs the checks that are due at `now` and carries the others' last results over.
pub async fn run_due(
    clients: &Clients<'_>,
    resource: &str,
    spec: &IngestedTableSpec,
    previous: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<ChecksOutcome> {
    let declared = spec.checks.as_ref()?;
    let before: ChecksStatus = serde_json::from_value(previous.clone()).unwrap_or_default();
    let mut after = ChecksStatus::default();
    let mut events = Vec::new();
    let mut next_due = std::time::Duration::MAX;
    for (kind, every, last) in [
        (
            Kind::RowCount,
            declared.row_count.as_ref().map(|c| c.every.as_str()),
            &before.row_count,
        ),
        (
            Kind::Exact,
            declared.exact.as_ref().map(|c| c.every.as_str()),
            &before.exact,
        ),
    ] {
        let Some(every) = every else { continue };
        let every = crate::validate::database::duration(every).unwrap_or(std::time::Duration::from_secs(7200));
        let due = last.as_ref().is_none_or(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.time)
                .map(|t| now.signed_duration_since(t).to_std().unwrap_or_default() >= every)
                .unwrap_or(true)
        });
        let since = last
            .as_ref()
            .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.time).ok())
            .and_then(|t| now.signed_duration_since(t).to_std().ok())
            .unwrap_or_default();
        next_due = next_due.min(if due { every } else { every.saturating_sub(since) });
        let result = if due {
            let ran = checks::run(clients.sources, clients.bq, clients.gcs, resource, spec, kind).await;
            let was_in_sync = last.as_ref().is_none_or(|r| r.in_sync);
            if !ran.result.in_sync {
                events.push(Note {
                    warning: true,
                    reason: if ran.result.error.is_some() {
                        "CheckFailed"
                    } else {
                        "OutOfSync"
                    }
                    .into(),
                    message: format!("{} check: {}", kind.as_str(), summary(&ran.result)),
                });
            } else if !was_in_sync {
                events.push(Note {
                    warning: false,
                    reason: "InSync".into(),
                    message: format!("{} check: {}", kind.as_str(), summary(&ran.result)),
                });
            }
            ran.result
        } else {
            last.clone().unwrap_or_default()
        };
        match kind {
            Kind::RowCount => after.row_count = Some(result),
            Kind::Exact => after.exact = Some(result),
        }
    }
    let results: Vec<(Kind, &CheckResult)> = [(Kind::RowCount, &after.row_count), (Kind::Exact, &after.exact)]
        .into_iter()
        .filter_map(|(k, r)| r.as_ref().map(|r| (k, r)))
        .collect();
    let ok = results.iter().all(|(_, r)| r.in_sync);
    let reason = if ok {
        "InSync"
    } else if results.iter().any(|(_, r)| r.error.is_some()) {
        "CheckFailed"
    } else {
        "Mismatch"
    };
    let message = results
        .iter()
        .map(|(k, r)| format!("{} ({}): {}", k.as_str(), r.time, summary(r)))
        .collect::<Vec<_>>()
        .join("; ");
    Some(ChecksOutcome {
        status: serde_json::to_value(&after).unwrap_or_default(),
        condition: ("InSync".into(), ok, reason.into(), message),
        events,
        next_due,
    })
}

/// One line: the counts, the first examples, or the error.
pub fn summary(r: &CheckResult) -> String {
    if let Some(e) = &r.error {
        return format!("could not run: {e}");
    }
    let counts = format!("source {} rows, BigQuery {} rows", r.source_rows, r.bigquery_rows);
    if r.in_sync {
        return format!("in sync ({counts}, watermark before {})", r.cutoff);
    }
    let mut kinds = Vec::new();
    for (n, what) in [
        (r.missing_in_big_query, "missing in BigQuery"),
        (r.missing_in_source, "missing in the source"),
        (r.changed, "changed"),
    ] {
        if n > 0 {
            kinds.push(format!("{n} {what}"));
        }
    }
    let mut out = if kinds.is_empty() {
        counts
    } else {
        format!("{counts}: {}", kinds.join(", "))
    };
    if let Some(first) = r.examples.first() {
        out.push_str(&format!(" (e.g. {first})"));
    }
    out
}
