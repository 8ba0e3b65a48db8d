//! A whole plan — every kind — for people and tools: text (what `plan` prints), Markdown (one
//! section per kind, for a pull-request comment) and JSON. Pure: returns strings, touches nothing.

use crate::consumer;
use crate::engine::tables::TableState;
use crate::engine::{PlanSet, World};
use crate::ingest::exec::Target;
use crate::ingest::report as ingest_report;
use crate::views::{self, LayoutPlan};
use std::fmt::Write;

/// The text `plan` prints: access lists (a diff per dataset), then tables and their views,
/// consumers and groups, and one last line summing up every kind (the same story as the exit
/// code: changes ⇔ 2, refused or unreadable ⇔ 1).
pub fn text(w: &World, p: &PlanSet, color: bool) -> String {
    let mut out = String::new();
    if !p.lists.is_empty() || (w.tables.is_empty() && w.groups.is_empty()) {
        out.push_str(&super::text(&p.lists, color));
    }
    out.push_str(&details(w, p));
    out.push_str(&summary_line(p));
    out.push('\n');
    out
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Every kind in one line: `Plan: 1 table to load (3 files); access lists: 2 datasets to change
/// (+3 −1 entries)`, or `Plan: no changes`, with what is refused or unreadable.
pub fn summary_line(p: &PlanSet) -> String {
    let mut changes = Vec::new();
    let mut refused = Vec::new();
    let (mut loads, mut files, mut views, mut tables_refused, mut pulls) = (0, 0, 0, 0, 0);
    let mut versions = 0;
    for t in &p.tables {
        match t {
            Ok(s) => {
                pulls += s.pulls();
                versions += s.delta_versions();
                if !s.plan.is_empty() {
                    loads += 1;
                    files += s.plan.loads.files_to_load();
                }
                if s.views.has_changes() {
                    views += 1;
                }
                if s.views.is_refused()
                    || s.source_refused()
                    || matches!(s.plan.schema, crate::ingest::table::SchemaChange::Incompatible(_))
                {
                    tables_refused += 1;
                }
            }
            Err(_) => tables_refused += 1,
        }
    }
    if loads > 0 {
        changes.push(format!(
            "{} to load or change ({})",
            count(loads, "table", "tables"),
            count(files, "file", "files")
        ));
    }
    if pulls > 0 {
        changes.push(format!("{} from source databases", count(pulls, "pull", "pulls")));
    }
    if versions > 0 {
        changes.push(format!(
            "{} to copy from Delta tables",
            count(versions, "version", "versions")
        ));
    }
    if views > 0 {
        changes.push(format!("{} with view changes", count(views, "table", "tables")));
    }
    if tables_refused > 0 {
        refused.push(count(tables_refused, "table", "tables"));
    }
    let consumers_changing = p
        .consumers
        .iter()
        .filter(|c| c.as_ref().is_ok_and(|c| c.has_changes()))
        .count();
    let consumers_refused = p
        .consumers
        .iter()
        .filter(|c| c.as_ref().map_or(true, |c| c.views.is_refused()))
        .count();
    if consumers_changing > 0 {
        changes.push(format!(
            "{} to change",
            count(consumers_changing, "consumer project", "consumer projects")
        ));
    }
    if consumers_refused > 0 {
        refused.push(count(consumers_refused, "consumer project", "consumer projects"));
    }
    let lists = super::Summary::of(&p.lists);
    if lists.datasets_to_change > 0 {
        changes.push(format!(
            "access lists: {} to change (+{} \u{2212}{} entries)",
            count(lists.datasets_to_change, "dataset", "datasets"),
            lists.add,
            lists.remove
        ));
    }
    if lists.refused > 0 {
        refused.push(count(lists.refused, "access list", "access lists"));
    }
    let groups_changing = p.groups.iter().filter(|(g, _)| g.has_changes()).count();
    let groups_refused = p.groups.iter().filter(|(g, _)| g.is_refused()).count();
    if groups_changing > 0 {
        changes.push(format!("{} to change", count(groups_changing, "group", "groups")));
    }
    if groups_refused > 0 {
        refused.push(count(groups_refused, "group", "groups"));
    }
    let mut line = if changes.is_empty() {
        "Plan: no changes".to_string()
    } else {
        format!("Plan: {}", changes.join("; "))
    };
    if !refused.is_empty() {
        line.push_str(&format!("; refused or unreadable: {}", refused.join(", ")));
    }
    line
}

/// Tables, consumers and groups as text (the part after the access lists).
fn details(w: &World, p: &PlanSet) -> String {
    let mut out = String::new();
    for (t, s) in w.tables.iter().zip(&p.tables) {
        match s {
            Ok(s) => out.push_str(&table_text(t, s, true)),
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
            }
        }
    }
    for (t, c) in w.consumers.iter().zip(&p.consumers) {
        match c {
            Ok(c) => out.push_str(&consumer::reconcile::plan_text(t, c)),
            Err(e) => {
                let _ = writeln!(out, "error: ConsumerProject {}: {e}", t.resource);
            }
        }
    }
    for (g, _) in &p.groups {
        out.push_str(&crate::groups::plan_text(g));
    }
    out
}

/// One table's plan: loads, then views (with their SQL when `sql`).
pub fn table_text(t: &Target, s: &TableState, sql: bool) -> String {
    format!(
        "{}{}{}{}",
        ingest_report::plan_text(t, &s.plan, &s.observed),
        listing_text(t, s),
        source_text(t, s),
        views::report::plan_text_with(&s.views, sql)
    )
}

/// How a `Lexical` source was listed: from its cursor, or whole (and why).
pub fn listing_text(t: &Target, s: &TableState) -> String {
    if !t.listing.lexical {
        return String::new();
    }
    let o = &s.observed;
    let age = |ms: i64| crate::ingest::report::duration_ms((chrono::Utc::now().timestamp_millis() - ms).max(0));
    match (&o.listed_from, &o.cursor) {
        (Some(from), Some(c)) => format!(
            "  listing: from {from} (names sort by arrival); {} listed; the whole prefix {} ago, again every {}\n",
            o.listing.len(),
            age(c.full_listing_ms),
            t.spec.source.full_listing_every.as_deref().unwrap_or("24h")
        ),
        _ => format!(
            "  listing: the whole prefix ({}; {} listed)\n",
            if t.listing.force_full {
                "--full-listing"
            } else if o.cursor.is_none() {
                "no cursor yet"
            } else if t.reload.is_some() {
                "re-ingestion"
            } else {
                "full listing due"
            },
            o.listing.len()
        ),
    }
}

/// The pulls of a database source: what each reads, schema drift, why it cannot be read. Never
/// the connection URL (only the Secret's name).
pub fn source_text(t: &Target, s: &TableState) -> String {
    if let Some(d) = &t.spec.source.delta {
        return delta_text(d, s);
    }
    let Some(db) = &t.spec.source.database else {
        return String::new();
    };
    let mut out = String::new();
    let wm = db.watermark.as_ref().map_or("", |w| w.column.as_str());
    match &s.source {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(out, "  source: ! cannot read {} {}: {e}", db.engine.as_str(), db.table);
        }
        Some(Ok(p)) => {
            for problem in &p.problems {
                let _ = writeln!(out, "  source: ! {problem}");
            }
            for note in &p.notes {
                let _ = writeln!(out, "  source: {note}");
            }
            for r in &p.pulls {
                let range = match (&r.low, &r.below) {
                    (None, None) => "every row".to_string(),
                    (Some(l), None) => format!("rows with {wm} >= {l}"),
                    (None, Some(b)) => format!("rows with {wm} < {b}"),
                    (Some(l), Some(b)) => format!("rows with {wm} in [{l}, {b})"),
                };
                let what = match r.kind {
                    crate::dbsource::landing::SetKind::Pull => "pull",
                    crate::dbsource::landing::SetKind::Snap => "snapshot",
                    crate::dbsource::landing::SetKind::Day => "daily reload (replaces that day's rows)",
                };
                let _ = writeln!(
                    out,
                    "  source: ~ {what} {}: {range} of {} {} into {}{}/",
                    r.set,
                    db.engine.as_str(),
                    db.table,
                    t.spec.source.landing.as_deref().unwrap_or(""),
                    r.set
                );
            }
            if !p.cleanup.is_empty() {
                let _ = writeln!(out, "  source: - {} objects of interrupted pulls", p.cleanup.len());
            }
        }
    }
    out
}

/// A Delta source: the versions to land, what they copy, why it cannot be read or loaded.
fn delta_text(d: &crate::crd::DeltaSource, s: &TableState) -> String {
    let mut out = String::new();
    match &s.delta {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(out, "  source: ! {e}");
        }
        Some(Ok((_, p))) => {
            for problem in &p.problems {
                let _ = writeln!(out, "  source: ! {problem}");
            }
            for note in &p.notes {
                let _ = writeln!(out, "  source: {note}");
            }
            let landed = p.landed.map_or("none".to_string(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  source: Delta {} at version {}; landed up to {landed}",
                d.uri, p.latest
            );
            for v in &p.versions {
                let m = &v.marker;
                let _ = writeln!(
                    out,
                    "  source: ~ {} ({}): copy {} files ({}), {} removed files' rows leave the table",
                    v.folder,
                    m.kind,
                    v.copies.len(),
                    crate::ingest::report::bytes(m.bytes_copied),
                    m.deletes.len()
                );
            }
        }
    }
    out
}

/// Markdown for a pull-request comment: the access lists as diffs, then one section per other
/// kind with its plan in a code block.
pub fn markdown(w: &World, p: &PlanSet) -> String {
    let mut out = format!("## bqsteward plan\n\n**{}**\n\n", summary_line(p));
    out.push_str(&super::markdown(&p.lists));
    let mut section = |title: &str, body: String| {
        if !body.trim().is_empty() {
            let _ = writeln!(out, "\n#### {title}\n\n```\n{}```", body.replace("```", "'''"));
        }
    };
    let tables: String = w
        .tables
        .iter()
        .zip(&p.tables)
        .map(|(t, s)| match s {
            Ok(s) => table_text(t, s, true),
            Err(e) => format!("error: {e}\n"),
        })
        .collect();
    section("Tables and views", tables);
    let consumers: String = w
        .consumers
        .iter()
        .zip(&p.consumers)
        .map(|(t, c)| match c {
            Ok(c) => consumer::reconcile::plan_text(t, c),
            Err(e) => format!("error: ConsumerProject {}: {e}\n", t.resource),
        })
        .collect();
    section("Consumer projects", consumers);
    let groups: String = p.groups.iter().map(|(g, _)| crate::groups::plan_text(g)).collect();
    section("Group memberships", groups);
    out
}

/// JSON for tools: the access-list report plus `tables`, `consumers` and `groups`.
pub fn json(w: &World, p: &PlanSet) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&super::json(&p.lists)).unwrap_or_default();
    doc["tables"] = w.tables.iter().zip(&p.tables).map(|(t, s)| table_json(t, s)).collect();
    doc["consumers"] = w
        .consumers
        .iter()
        .zip(&p.consumers)
        .map(|(t, c)| match c {
            Ok(c) => serde_json::json!({
                "resource": t.resource,
                "dataset": format!("{}.{}", t.spec.project, t.spec.dataset),
                "views": views_json(&c.views),
                "iam": c.iam.as_ref().map(|i| serde_json::json!({"project": i.project, "add": i.add, "remove": i.remove})),
            }),
            Err(e) => serde_json::json!({"resource": t.resource, "error": e.to_string()}),
        })
        .collect();
    doc["groups"] = serde_json::to_value(p.groups.iter().map(|(g, _)| g).collect::<Vec<_>>()).unwrap_or_default();
    doc["plan"] = serde_json::json!({"changes": p.changes(), "failed": p.failed(), "line": summary_line(p)});
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A view-layer plan for tools.
fn views_json(p: &LayoutPlan) -> serde_json::Value {
    serde_json::json!({
        "createDatasets": p.create_datasets,
        "createSalt": p.create_salt.as_ref().map(|t| t.to_string()),
        "views": p.views.iter().map(|v| serde_json::json!({
            "view": v.view.def.table.to_string(),
            "layer": v.view.layer.layer.as_str(),
            "change": match &v.change {
                views::ViewChange::Create => "create",
                views::ViewChange::Update { adopt: true, .. } => "adopt",
                views::ViewChange::Update { .. } => "update",
                views::ViewChange::Relabel => "relabel",
                views::ViewChange::Unchanged => "unchanged",
            },
            "sql": v.view.def.sql,
        })).collect::<Vec<_>>(),
        "delete": p.delete.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "refusals": p.refusals,
        "notes": p.notes,
    })
}

/// A table plan for tools.
fn table_json(t: &Target, p: &Result<TableState, crate::engine::PlanFailure>) -> serde_json::Value {
    use crate::ingest::table::SchemaChange;
    match p {
        Ok(s) => {
            let l = &s.plan.loads;
            let mut doc = serde_json::json!({
                "resource": t.name,
                "table": t.table.to_string(),
                "schema": match &s.plan.schema {
                    SchemaChange::Create => serde_json::json!("create"),
                    SchemaChange::None => serde_json::json!("unchanged"),
                    SchemaChange::Additive { add, relax } => serde_json::json!({
                        "add": add.iter().map(|f| &f.name).collect::<Vec<_>>(), "relax": relax }),
                    SchemaChange::Incompatible(why) => serde_json::json!({"incompatible": why}),
                },
                "claim": s.plan.claim,
                "markPii": s.plan.mark_pii,
                "newBatches": l.new.len(),
                "newFiles": l.new.iter().map(|b| b.files.len()).sum::<usize>(),
                "resumedBatches": l.resumed.len(),
                "deferredFiles": l.deferred_files,
                "fillingFiles": l.filling_files,
                "projectedJobs": l.projected_jobs,
                "views": views_json(&s.views),
            });
            if let Some(Ok((_, p))) = &s.delta {
                doc["deltaVersions"] = p
                    .versions
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "folder": v.folder,
                            "kind": v.marker.kind,
                            "copies": v.copies.len(),
                            "bytes": v.marker.bytes_copied,
                            "deletes": v.marker.deletes.len(),
                        })
                    })
                    .collect();
            }
            doc
        }
        Err(e) => serde_json::json!({"resource": t.name, "table": t.table.to_string(), "error": e.to_string()}),
    }
}

/// What applying would change, for a plan-only object's status and `bqsteward status`: counts,
/// the first pending changes one per line, and the summary line.
pub fn planned_changes(p: &PlanSet, now: chrono::DateTime<chrono::Utc>) -> crate::crd::PlannedChanges {
    use crate::groups::plan::Op;
    use crate::views::plan::ViewChange;
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut pending = Vec::new();
    let mut bump = |k: &str, n: usize| *counts.entry(k.to_string()).or_default() += n as i64;
    let views = |l: &crate::views::LayoutPlan, pending: &mut Vec<String>, bump: &mut dyn FnMut(&str, usize)| {
        for ds in &l.create_datasets {
            bump("datasetsToCreate", 1);
            pending.push(format!("create dataset {}.{ds}", l.project));
        }
        for v in &l.views {
            let what = match v.change {
                ViewChange::Unchanged => continue,
                ViewChange::Create => "create",
                _ => "update",
            };
            bump("viewsToWrite", 1);
            pending.push(format!("{what} view {}", v.view.def.table));
        }
        for v in &l.delete {
            bump("viewsToDelete", 1);
            pending.push(format!("delete view {v}"));
        }
    };
    for t in p.tables.iter().flatten() {
        let files = t.plan.loads.files_to_load();
        if files > 0 {
            bump("filesToLoad", files);
            pending.push(format!("load {files} files"));
        }
        if t.pulls() > 0 {
            bump("pulls", t.pulls());
            pending.push(format!("{} pulls from the source database", t.pulls()));
        }
        if t.delta_versions() > 0 {
            bump("deltaVersions", t.delta_versions());
            pending.push(format!("{} Delta versions to copy and load", t.delta_versions()));
        }
        views(&t.views, &mut pending, &mut bump);
    }
    for c in p.consumers.iter().flatten() {
        views(&c.views, &mut pending, &mut bump);
        if let Some(iam) = c.iam.as_ref().filter(|i| i.has_changes()) {
            bump("bindingMembersToAdd", iam.add.len());
            bump("bindingMembersToRemove", iam.remove.len());
            pending.extend(iam.add.iter().map(|m| format!("+jobUser {m} on {}", iam.project)));
            pending.extend(iam.remove.iter().map(|m| format!("-jobUser {m} on {}", iam.project)));
        }
    }
    for l in &p.lists {
        let role = |e: &crate::access::AclEntry| e.role.clone().unwrap_or_else(|| "VIEW".into());
        bump("entriesToAdd", l.add.len());
        bump("entriesToRemove", l.remove.len());
        pending.extend(
            l.add
                .iter()
                .map(|e| format!("+{} {} on {}", role(e), e.principal, l.dataset)),
        );
        pending.extend(
            l.remove
                .iter()
                .map(|e| format!("-{} {} on {}", role(e), e.principal, l.dataset)),
        );
    }
    for (g, _) in &p.groups {
        let (a, c, r) = g.counts();
        bump("membersToAdd", a);
        bump("membersToChange", c);
        bump("membersToRemove", r);
        for op in &g.ops {
            let sign = match op {
                Op::Add { .. } => "+",
                Op::Change { .. } => "~",
                Op::Remove { .. } => "-",
            };
            pending.push(format!("{sign}{} in {}", op.email(), g.group));
        }
    }
    counts.retain(|_, v| *v > 0);
    pending.truncate(20);
    crate::crd::PlannedChanges {
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        changes: p.changes(),
        refused: p.failed(),
        counts,
        pending,
        summary: summary_line(p),
    }
}
