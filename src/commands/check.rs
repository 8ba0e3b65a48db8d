//! `bqsteward check`: the data-quality checks of `spec.checks` (or both, with `--table`) run once
//! against each table's source, from the command line — for CI and for people. Read-only. Exit 0 =
//! every check in sync, 1 = a mismatch, an error, or nothing to check.

use super::{EXIT_ERROR, EXIT_OK, setup};
use crate::checks::{self, Kind, Ran};
use crate::cli::{LiveArgs, Output};
use crate::manifest::Resource;

/// Runs the checks; prints each result (every listed row) and returns the exit status.
pub async fn check(args: &LiveArgs, table: Option<&str>, output: Output) -> i32 {
    let (world, owned) = match setup(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let audit = match super::audit_run(args, &world) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let run = async {
        let mut results = Vec::new();
        let mut picked = 0;
        for l in world.resources.iter() {
            let Resource::IngestedTable(it) = &l.resource else {
                continue;
            };
            let name = l.resource.qualified_name();
            let d = &it.spec.destination;
            let table_ref = format!("{}.{}.{}", d.project, d.dataset, d.table);
            let bare = name.split_once('/').map_or(name.as_str(), |(_, n)| n);
            let kinds: Vec<Kind> = match table {
                Some(t) if t != name && t != bare && t != table_ref => continue,
                // A named table runs its declared checks, or the ones its source allows with the
                // defaults.
                Some(_) => match &it.spec.checks {
                    Some(c) if c.row_count.is_some() || c.exact.is_some() => declared(c),
                    _ if it.spec.source.database.is_none() => vec![Kind::RowCount],
                    _ => vec![Kind::RowCount, Kind::Exact],
                },
                None => match &it.spec.checks {
                    Some(c) => declared(c),
                    None => continue,
                },
            };
            picked += 1;
            for kind in kinds {
                let ran = checks::run(&owned.sources, &owned.bq, &owned.gcs, &name, &it.spec, kind).await;
                results.push((name.clone(), table_ref.clone(), ran, it.spec.source.database.is_none()));
            }
        }
        (results, picked)
    };
    let (results, picked) = super::audited(audit, args, &owned.bq, run).await;
    if picked == 0 {
        eprintln!(
            "error: {}",
            match table {
                Some(t) => format!("no IngestedTable named {t:?} (give namespace/name, name or project.dataset.table)"),
                None => "no IngestedTable declares spec.checks: add checks, or name one with --table".into(),
            }
        );
        return EXIT_ERROR;
    }
    match output {
        Output::Json => {
            let list: Vec<serde_json::Value> = results
                .iter()
                .map(|(name, t, r, _)| {
                    serde_json::json!({
                        "resource": name,
                        "table": t,
                        "check": r.kind.as_str(),
                        "result": r.result,
                        "mismatches": r.found.as_ref().map(|f| f.listed.clone()).unwrap_or_default(),
                        "statements": r.found.as_ref().map(|f| serde_json::json!({"source": f.statements.0, "bigquery": f.statements.1})),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        }
        Output::Text => {
            for (name, t, r, files) in &results {
                print!("{}", text(name, t, r, *files));
            }
        }
    }
    if results.iter().all(|(_, _, r, _)| r.result.in_sync) {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

fn declared(c: &crate::crd::Checks) -> Vec<Kind> {
    let mut out = Vec::new();
    if c.row_count.is_some() {
        out.push(Kind::RowCount);
    }
    if c.exact.is_some() {
        out.push(Kind::Exact);
    }
    out
}

/// The text report of one check.
pub fn text(name: &str, table: &str, r: &Ran, files: bool) -> String {
    use std::fmt::Write;
    let res = &r.result;
    let mut out = format!("IngestedTable {name} ({table}), {} check", r.kind.as_str());
    if let Some(e) = &res.error {
        let _ = writeln!(out, ": could not run: {e}");
        return out;
    }
    if files {
        let _ = writeln!(out, ", batches recorded in the ledger before {} (UTC):", res.cutoff);
    } else {
        let _ = writeln!(
            out,
            ", rows with a watermark before {} (database clock, UTC):",
            res.cutoff
        );
    }
    let counts = format!(
        "{} {} rows, BigQuery {} rows",
        if files { "ledger" } else { "source" },
        res.source_rows,
        res.bigquery_rows
    );
    match r.kind {
        Kind::RowCount if res.in_sync => {
            let _ = writeln!(out, "  in sync: {counts}");
        }
        Kind::RowCount => {
            let _ = writeln!(out, "  MISMATCH: {counts}");
            for e in &res.examples {
                let _ = writeln!(out, "  - {e}");
            }
        }
        Kind::Exact => {
            let found = r.found.clone().unwrap_or_default();
            if res.in_sync {
                let _ = writeln!(out, "  in sync: {counts}, every value equal");
            } else {
                let _ = writeln!(
                    out,
                    "  MISMATCH: {counts}: {} missing in BigQuery, {} missing in the source, {} changed",
                    res.missing_in_big_query, res.missing_in_source, res.changed
                );
            }
            for m in &found.listed {
                let _ = writeln!(out, "  - {}", checks::describe(m));
            }
            if found.unsearched_cells > 0 {
                let _ = writeln!(
                    out,
                    "  … and more: {} key ranges still differ (only {} rows are listed)",
                    found.unsearched_cells,
                    checks::compare::MAX_LISTED
                );
            }
            if res.changed_during_check > 0 {
                let _ = writeln!(
                    out,
                    "  ({} rows changed while the check ran: not mismatches)",
                    res.changed_during_check
                );
            }
            let _ = writeln!(
                out,
                "  ({} statements on the source, {} on BigQuery)",
                found.statements.0, found.statements.1
            );
        }
    }
    out
}
