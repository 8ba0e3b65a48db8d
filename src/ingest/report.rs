//! Text for `plan` and `apply` about IngestedTables, and the status block both print.

use super::exec::{Observed, Report, TablePlan, Target};
use super::plan::SnapshotChoice;
use super::table::SchemaChange;
use std::fmt::Write;

/// Human byte counts.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human durations (`3d4h`, `12m`, `45s`).
pub fn duration_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The plan of one table, as `plan` prints it.
pub fn plan_text(t: &Target, p: &TablePlan, o: &Observed) -> String {
    let mut out = String::new();
    let l = &p.loads;
    let _ = writeln!(out, "IngestedTable {} → {} ({:?})", t.name, t.table, t.spec.mode);
    let schema = match &p.schema {
        SchemaChange::Create => "create table (declared schema + lineage columns)".to_string(),
        SchemaChange::None => "schema up to date".to_string(),
        SchemaChange::Additive { add, relax } => {
            let mut parts = Vec::new();
            if !add.is_empty() {
                parts.push(format!(
                    "add columns {}",
                    add.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if !relax.is_empty() {
                parts.push(format!("relax to NULLABLE {}", relax.join(", ")));
            }
            parts.join("; ")
        }
        SchemaChange::Incompatible(p) => format!("INCOMPATIBLE, nothing will load: {}", p.join("; ")),
    };
    let _ = writeln!(out, "  table:  {schema}");
    if let Some(why) = &p.no_source_files {
        let _ = writeln!(out, "  source: WARNING: {why}");
    }
    if !p.mark_pii.is_empty() {
        let _ = writeln!(
            out,
            "  table:  ~ mark {} as PII on the table (kept out of the clean view even if taken out of piiColumns later)",
            p.mark_pii.join(", ")
        );
    }
    if let Some(why) = &p.claim {
        let _ = writeln!(
            out,
            "  table:  ~ label {} {}={} ({why}): from then on only this IngestedTable loads into it",
            t.table,
            super::table::LABEL_OWNER,
            super::table::owner_label(&t.name)
        );
    }
    let new_files: usize = l.new.iter().map(|b| b.files.len()).sum();
    let new_bytes: u64 = l.new.iter().map(|b| b.bytes()).sum();
    let reloads = l
        .new
        .iter()
        .filter(|b| b.kind == super::model::BatchKind::Reload)
        .count();
    let _ = writeln!(
        out,
        "  load:   {} new batch{} ({} files, {}){}{}; {} resumed; {} deferred to tomorrow's budget",
        l.new.len(),
        if l.new.len() == 1 { "" } else { "es" },
        new_files,
        bytes(new_bytes),
        if reloads > 0 {
            format!(", {reloads} of them re-ingestion")
        } else {
            String::new()
        },
        if l.retried_quarantined > 0 {
            format!(", {} quarantined files retried (schema changed)", l.retried_quarantined)
        } else {
            String::new()
        },
        l.resumed.len(),
        l.deferred_files,
    );
    if l.filling_files > 0 {
        let _ = writeln!(
            out,
            "  pace:   {} files wait to fill a batch: the load jobs used run ahead of the day's share of the budget",
            l.filling_files
        );
    }
    if l.ignored_reuploads > 0 {
        let _ = writeln!(
            out,
            "  note:   {} re-uploaded files ignored (reuploadedFiles: Ignore)",
            l.ignored_reuploads
        );
    }
    if let Some(s) = &l.snapshot {
        let text = match s {
            SnapshotChoice::UpToDate(set) => format!("table holds the newest complete set {set:?}"),
            SnapshotChoice::Load(set) => format!("replace the table with set {set:?}"),
            SnapshotChoice::Blocked { set, quarantined } => {
                format!("newest complete set {set:?} has {quarantined} quarantined files; the table keeps its contents")
            }
            SnapshotChoice::NoCompleteSet => "no complete snapshot set yet".to_string(),
        };
        let _ = writeln!(out, "  snapshot: {text}");
    }
    let mut status = status_line(o, l.lag_ms, l.budget_left, t);
    if let Some(p) = l.projected_jobs {
        status.push_str(&format!("; {p} projected for the day at today's pace"));
    }
    if let Some(d) = &p.delta {
        status.push_str(&format!(
            "; Delta version {} of {} (lag {}); {} copied from S3",
            d.loaded_version.map_or("none".to_string(), |v| v.to_string()),
            d.latest_version,
            d.version_lag,
            bytes(d.bytes_copied.max(0) as u64)
        ));
    }
    let _ = writeln!(out, "  status: {status}");
    let st = super::status::status(o, p, None, None, chrono::Utc::now());
    let conds: Vec<String> = st
        .common
        .conditions
        .iter()
        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
        .collect();
    let _ = writeln!(out, "  conditions: {}", conds.join(", "));
    out
}

/// One line: loaded, quarantined, lag, budget.
pub fn status_line(o: &Observed, lag_ms: Option<i64>, budget_left: u32, t: &Target) -> String {
    let s = &o.stats;
    format!(
        "{} files / {} rows loaded; {} quarantined; lag {}; load jobs today {}/{} ({} left)",
        s.files_loaded,
        s.rows_loaded,
        s.quarantined,
        lag_ms.map(duration_ms).unwrap_or_else(|| "0s".into()),
        s.jobs_today,
        t.spec.load_policy.daily_job_budget,
        budget_left
    )
}

/// What apply did to one table.
pub fn apply_text(t: &Target, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: loaded {} batch{} ({} file{}, {} row{}) with {} load job{}{}",
        t.table,
        r.batches_loaded,
        if r.batches_loaded == 1 { "" } else { "es" },
        r.files_loaded,
        if r.files_loaded == 1 { "" } else { "s" },
        r.rows_loaded,
        if r.rows_loaded == 1 { "" } else { "s" },
        r.load_jobs,
        if r.load_jobs == 1 { "" } else { "s" },
        if r.schema_changed { "; schema changed" } else { "" }
    );
    for (uri, generation, cat, msg) in &r.quarantined {
        let _ = writeln!(
            out,
            "  quarantined {uri}#{generation} ({}): {}",
            cat.as_str(),
            super::classify::short(msg)
        );
    }
    if !r.quarantined.is_empty() {
        let _ = writeln!(
            out,
            "  (full errors: the ledger {}.{}.{} and the resource's status)",
            t.ledger.project,
            t.ledger.dataset,
            super::ledger::FILES_TABLE
        );
    }
    if r.prechecked.0 > 0 {
        let _ = writeln!(
            out,
            "  checked the first lines of {} file{} for undeclared fields ({} read)",
            r.prechecked.0,
            if r.prechecked.0 == 1 { "" } else { "s" },
            bytes(r.prechecked.1)
        );
    }
    if r.snapshot_blocked {
        let _ = writeln!(out, "  snapshot not replaced: the set has quarantined files");
    }
    if let Some(s) = &r.stopped {
        let _ = writeln!(out, "  stopped: {s}");
    }
    out
}
