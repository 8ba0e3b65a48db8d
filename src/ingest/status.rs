//! The status of an IngestedTable after a reconcile: figures and the `Ready`, `Loading` and
//! `Degraded` conditions, each with a reason. Pure; the controller writes it, `plan`/`apply`
//! print the same figures.

use super::exec::{Observed, Report, TablePlan};
use super::plan::SnapshotChoice;
use super::report::duration_ms;
use super::table::SchemaChange;
use crate::crd::CommonStatus;
use crate::crd::ingested_table::{IngestedTableStatus, QuarantinedFile};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Status from what was observed and planned, and (after apply) what was done.
pub fn status(
    o: &Observed,
    p: &TablePlan,
    r: Option<&Report>,
    generation: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> IngestedTableStatus {
    let t = Time(k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis()).unwrap_or_default());
    let s = &o.stats;
    let quarantined = s.quarantined + r.map_or(0, |r| r.quarantined.len() as i64);
    let remaining = match r {
        // After apply, what is left is what the plan deferred (and anything a stop left behind).
        Some(r) if r.stopped.is_none() => p.loads.deferred_files + p.loads.filling_files,
        _ => p.loads.pending_files,
    };
    let mut degraded: Vec<(&str, String)> = Vec::new();
    if let Some(why) = &p.no_source_files {
        degraded.push(("NoSourceFiles", why.clone()));
    }
    if !p.source_problems.is_empty() {
        degraded.push((p.source_reason, p.source_problems.join("; ")));
    }
    if let SchemaChange::Incompatible(problems) = &p.schema {
        degraded.push(("SchemaIncompatible", problems.join("; ")));
    }
    if quarantined > 0 {
        degraded.push((
            "FilesQuarantined",
            format!("{quarantined} files quarantined; see status.recentQuarantined and the ledger"),
        ));
    }
    if let Some(SnapshotChoice::Blocked { set, quarantined }) = &p.loads.snapshot {
        degraded.push((
            "SnapshotBlocked",
            format!("set {set:?} has {quarantined} quarantined files"),
        ));
    }
    if let Some(stop) = r.and_then(|r| r.stopped.as_ref()) {
        degraded.push(("Stopped", stop.clone()));
    }
    if p.loads.deferred_files > 0 {
        degraded.push((
            "BudgetExhausted",
            format!(
                "{} files wait for the next day's load-job budget",
                p.loads.deferred_files
            ),
        ));
    }
    let loading = remaining > 0;
    let conditions = vec![
        condition(
            "Ready",
            !loading && degraded.is_empty(),
            if loading {
                "FilesPending"
            } else if degraded.is_empty() {
                "UpToDate"
            } else {
                degraded[0].0
            },
            if loading {
                format!("{remaining} files not yet loaded")
            } else if let Some((_, m)) = degraded.first() {
                m.clone()
            } else {
                "every source file is loaded".into()
            },
            generation,
            &t,
        ),
        condition(
            "Loading",
            loading,
            if loading { "FilesPending" } else { "Idle" },
            format!(
                "{remaining} files pending, lag {}",
                p.loads.lag_ms.map(duration_ms).unwrap_or_else(|| "0s".into())
            ),
            generation,
            &t,
        ),
        condition(
            "Degraded",
            !degraded.is_empty(),
            degraded.first().map_or("AsExpected", |d| d.0),
            if degraded.is_empty() {
                "no quarantined files, no blocked loads".into()
            } else {
                degraded.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ")
            },
            generation,
            &t,
        ),
    ];
    let mut recent: Vec<QuarantinedFile> = r
        .map(|r| {
            r.quarantined
                .iter()
                .map(|(uri, g, c, m)| QuarantinedFile {
                    uri: uri.clone(),
                    generation: g.to_string(),
                    category: c.as_str().into(),
                    message: m.chars().take(500).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    recent.extend(s.recent_quarantined.iter().map(|(uri, g, c, m)| QuarantinedFile {
        uri: uri.clone(),
        generation: g.to_string(),
        category: c.clone(),
        message: m.chars().take(500).collect(),
    }));
    recent.truncate(5);
    IngestedTableStatus {
        common: CommonStatus {
            plan: None,
            observed_generation: generation,
            conditions,
        },
        files_loaded: Some(s.files_loaded + r.map_or(0, |r| r.files_loaded as i64)),
        rows_loaded: Some(s.rows_loaded + r.map_or(0, |r| r.rows_loaded)),
        last_load_time: s
            .last_load_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        lag: Some(
            p.loads
                .lag_ms
                .filter(|_| remaining > 0)
                .map(duration_ms)
                .unwrap_or_else(|| "0s".into()),
        ),
        quarantined_files: Some(quarantined),
        recent_quarantined: recent,
        jobs_in_flight: Some(if r.is_some() { 0 } else { p.loads.resumed.len() as i64 }),
        jobs_today: Some(s.jobs_today + r.map_or(0, |r| i64::from(r.load_jobs))),
        // Checks run apart from loads (the controller carries their last results over).
        checks: None,
        delta: p.delta.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::model::Category;
    use crate::ingest::plan::LoadPlan;

    #[test]
    fn conditions_follow_the_outcome() {
        let o = Observed::default();
        let now = chrono::DateTime::from_timestamp(1_795_400_000, 0).unwrap();
        let idle = TablePlan {
            schema: SchemaChange::None,
            loads: LoadPlan::default(),
            claim: None,
            mark_pii: Vec::new(),
            no_source_files: None,
            source_problems: Vec::new(),
            source_reason: "SourceSchemaDrift",
            delta: None,
            next_cursor: None,
        };
        let s = status(&o, &idle, None, Some(3), now);
        let get = |s: &IngestedTableStatus, t: &str| s.common.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(
            (get(&s, "Ready").status.as_str(), get(&s, "Ready").reason.as_str()),
            ("True", "UpToDate")
        );
        assert_eq!(get(&s, "Degraded").status, "False");

        // Nothing under the prefix, nothing ever loaded: not "up to date".
        let empty = TablePlan {
            no_source_files: Some("no objects under gs://b/typo/".into()),
            ..idle.clone()
        };
        let s = status(&o, &empty, None, Some(3), now);
        assert_eq!(
            (get(&s, "Ready").status.as_str(), get(&s, "Ready").reason.as_str()),
            ("False", "NoSourceFiles")
        );
        assert!(get(&s, "Ready").message.contains("gs://b/typo/"));

        let mut pending = idle.clone();
        pending.loads.pending_files = 7;
        pending.loads.lag_ms = Some(120_000);
        let s = status(&o, &pending, None, Some(3), now);
        assert_eq!(
            (get(&s, "Ready").status.as_str(), get(&s, "Loading").status.as_str()),
            ("False", "True")
        );
        assert_eq!(s.lag.as_deref(), Some("2m"));

        let report = Report {
            files_loaded: 6,
            rows_loaded: 60,
            quarantined: vec![("gs://b/x.json".into(), 9, Category::Corrupt, "Malformed JSON".into())],
            load_jobs: 4,
            ..Report::default()
        };
        let s = status(&o, &pending, Some(&report), Some(3), now);
        assert_eq!(get(&s, "Degraded").reason, "FilesQuarantined");
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(
            (s.files_loaded, s.rows_loaded, s.quarantined_files, s.jobs_today),
            (Some(6), Some(60), Some(1), Some(4))
        );
        assert_eq!(s.recent_quarantined[0].category, "Corrupt");

        let incompatible = TablePlan {
            schema: SchemaChange::Incompatible(vec!["column id is STRING in the table but declared INT64".into()]),
            loads: LoadPlan::default(),
            claim: None,
            mark_pii: Vec::new(),
            no_source_files: None,
            source_problems: Vec::new(),
            source_reason: "SourceSchemaDrift",
            delta: None,
            next_cursor: None,
        };
        let s = status(&o, &incompatible, None, None, now);
        assert_eq!(get(&s, "Degraded").reason, "SchemaIncompatible");

        // A database source whose replica dropped a declared column: pulls stop, Degraded says why.
        let drift = TablePlan {
            source_problems: vec![
                "declared column \"status\" is not on the replica table payments.transactions".into(),
            ],
            ..idle.clone()
        };
        let s = status(&o, &drift, None, None, now);
        assert_eq!(get(&s, "Degraded").reason, "SourceSchemaDrift");
        assert!(get(&s, "Degraded").message.contains("\"status\""));
        assert_eq!(get(&s, "Ready").status, "False");
    }
}
