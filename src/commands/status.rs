//! `bqsteward status`: per IngestedTable, BqTail-style — last load, files waiting and the age of
//! the oldest, the end-to-end delay (upload → loaded) p50/p99 over the last 24 hours, quarantined
//! files by category, load jobs today against the daily budget. Read-only: the table is observed
//! and planned like `plan` does (listing, ledger), and two ledger queries add the delays and the
//! quarantine categories. Exit 0, or 1 when a table cannot be read.

use super::{EXIT_ERROR, EXIT_OK, setup};
use crate::cli::{LiveArgs, Output};
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::Param;
use crate::ingest::exec::Target;
use crate::ingest::ledger::{FILES_TABLE, LedgerTables};
use serde::Serialize;

/// Most delays read from the ledger for the percentiles.
const DELAYS_READ: usize = 200_000;

/// One table's status.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    /// `namespace/name`.
    pub resource: String,
    /// `project.dataset.table`.
    pub table: String,
    /// When the last load was recorded (RFC 3339).
    pub last_load: Option<String>,
    /// `schedule.every` (the controller's interval).
    pub every: String,
    /// Files not yet in the table.
    pub files_waiting: usize,
    /// Age of the oldest of them, e.g. `4m`.
    pub oldest_waiting: Option<String>,
    /// End-to-end delay of the files loaded in the last 24 hours, seconds: p50, p99, and how many.
    pub delay_p50_s: Option<f64>,
    /// p99.
    pub delay_p99_s: Option<f64>,
    /// Files loaded in the last 24 hours.
    pub loaded_24h: usize,
    /// Files quarantined (their latest state), by category.
    pub quarantined: std::collections::BTreeMap<String, i64>,
    /// Load jobs started today (UTC).
    pub jobs_today: i64,
    /// `loadPolicy.dailyJobBudget`.
    pub job_budget: u32,
    /// When the next load is due: `now` with files waiting, else the last load plus `every`
    /// (the controller's next look), RFC 3339.
    pub next_load: Option<String>,
    /// The latest quality check of each kind, from the audit log.
    pub last_checks: Vec<LastEvent>,
    /// Why the table could not be read.
    pub error: Option<String>,
}

/// The latest audit row of a target (dataset, group, table check).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastEvent {
    /// `project.dataset`, a group's email or a table.
    pub target: String,
    /// When (RFC 3339).
    pub time: String,
    /// The action (`access_added`, `member_removed`, `check`, …).
    pub action: String,
    /// The entry, member or check kind.
    pub subject: String,
    /// The resource that made it.
    pub resource: String,
    /// `done`, `refused`, `in_sync`, `mismatch`, `failed`.
    pub outcome: String,
    /// The revision of the manifests.
    pub revision: String,
}

/// What a plan-only object would change.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOnly {
    /// `Kind namespace/name`.
    pub resource: String,
    /// The pending changes.
    pub plan: crate::crd::PlannedChanges,
}

/// Everything `status` prints.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Per IngestedTable.
    pub tables: Vec<TableStatus>,
    /// Per dataset with a DatasetAccess: the last change, from the audit log.
    pub datasets: Vec<LastEvent>,
    /// Per GroupMembership's group: the last change, from the audit log.
    pub groups: Vec<LastEvent>,
    /// Objects annotated `bqsteward.dev/mode: plan` and what applying them would change.
    pub plan_only: Vec<PlanOnly>,
    /// Why the audit log could not be read (the rest is still shown).
    pub audit_error: Option<String>,
}

/// Prints every IngestedTable's status.
pub async fn status(args: &LiveArgs, output: Output) -> i32 {
    let (world, owned) = match setup(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let clients = owned.clients();
    let now = chrono::Utc::now();
    let mut out = Status::default();
    for t in &world.tables {
        out.tables.push(table_status(&clients, t, now).await);
    }
    // The audit log: each table's last checks, each dataset's and group's last change.
    let datasets: Vec<String> = world
        .resources
        .iter()
        .filter_map(|l| match &l.resource {
            crate::manifest::Resource::DatasetAccess(d) => Some(format!("{}.{}", d.spec.project, d.spec.dataset)),
            _ => None,
        })
        .collect();
    let groups: Vec<String> = world.groups.iter().map(|g| g.group.clone()).collect();
    match audit_latest(&clients, &world, args, &out.tables, &datasets, &groups).await {
        Ok(latest) => {
            for t in &mut out.tables {
                t.last_checks = latest
                    .iter()
                    .filter(|e| e.target == t.table && e.action == "check")
                    .cloned()
                    .collect();
            }
            let last = |target: &String| {
                latest
                    .iter()
                    .find(|e| &e.target == target && e.action != "check")
                    .cloned()
                    .unwrap_or_else(|| LastEvent {
                        target: target.clone(),
                        ..LastEvent::default()
                    })
            };
            out.datasets = datasets.iter().map(last).collect();
            out.groups = groups.iter().map(last).collect();
        }
        Err(e) => out.audit_error = Some(e),
    }
    // Plan-only objects: what applying them would change.
    for (kind, name) in world.plan_only.clone() {
        let scope = crate::engine::Scope::Object {
            kind,
            name: name.clone(),
        };
        let mut w = world.clone();
        let set = crate::engine::plan_scoped(&mut w, &clients, &scope).await;
        out.plan_only.push(PlanOnly {
            resource: format!("{kind} {name}"),
            plan: crate::render::plan::planned_changes(&set, now),
        });
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
        Output::Text => print!("{}", full_text(&out)),
    }
    if out.tables.iter().any(|s| s.error.is_some()) {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

async fn table_status(c: &crate::engine::Clients<'_>, t: &Target, now: chrono::DateTime<chrono::Utc>) -> TableStatus {
    let d = &t.spec.destination;
    let mut s = TableStatus {
        resource: t.name.clone(),
        table: format!("{}.{}.{}", d.project, d.dataset, d.table),
        every: t.spec.schedule.every.clone(),
        job_budget: t.spec.load_policy.daily_job_budget,
        ..TableStatus::default()
    };
    let state = match crate::engine::tables::plan(c, t, now.timestamp_millis()).await {
        Ok(state) => state,
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    let st = crate::ingest::status::status(&state.observed, &state.plan, None, None, now);
    s.last_load = st.last_load_time;
    s.files_waiting = state.plan.loads.pending_files;
    s.oldest_waiting = state
        .plan
        .loads
        .lag_ms
        .filter(|_| s.files_waiting > 0)
        .map(crate::ingest::report::duration_ms);
    s.jobs_today = st.jobs_today.unwrap_or(0);
    let every = t
        .spec
        .schedule
        .every
        .parse::<kube::core::Duration>()
        .ok()
        .map(std::time::Duration::from);
    s.next_load = if s.files_waiting > 0 {
        Some("now".into())
    } else {
        s.last_load
            .as_deref()
            .and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok())
            .zip(every)
            .and_then(|(l, e)| {
                chrono::Duration::from_std(e)
                    .ok()
                    .map(|e| l.with_timezone(&chrono::Utc) + e)
            })
            .map(|n| n.max(now).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    match ledger_figures(c.bq, t, &s.table).await {
        Ok((delays, quarantined)) => {
            s.loaded_24h = delays.len();
            s.delay_p50_s = percentile(&delays, 0.50);
            s.delay_p99_s = percentile(&delays, 0.99);
            s.quarantined = quarantined;
        }
        Err(e) => s.error = Some(format!("cannot read the ledger: {e}")),
    }
    s
}

/// The latest audit row per target (a change) and per table and check kind (a check), from every
/// audit table the world's changes go to, over the last 90 days. No audit table yet: nothing.
async fn audit_latest(
    c: &crate::engine::Clients<'_>,
    w: &crate::engine::World,
    args: &LiveArgs,
    tables: &[TableStatus],
    datasets: &[String],
    groups: &[String],
) -> Result<Vec<LastEvent>, String> {
    use crate::audit::Destination;
    let mut places: std::collections::BTreeSet<(crate::cloud::bqtypes::TableRef, Option<String>)> = Default::default();
    match crate::audit::destination(args.audit.audit_table.as_deref())? {
        Destination::Off => return Ok(Vec::new()),
        Destination::Table(t) => {
            places.insert((t, None));
        }
        Destination::PerHome => {
            let (tables, consumers) = crate::audit::homes(w);
            for h in tables.into_iter().chain(consumers) {
                places.insert((crate::audit::table::home_table(&h), Some(h.location)));
            }
        }
    }
    let targets: Vec<&str> = tables
        .iter()
        .map(|t| t.table.as_str())
        .chain(datasets.iter().map(String::as_str))
        .chain(groups.iter().map(String::as_str))
        .collect();
    let mut out: Vec<(i64, LastEvent)> = Vec::new();
    for (table, location) in places {
        if c.bq.get_table(&table).await.map_err(|e| e.to_string())?.is_none() {
            continue;
        }
        let location = match location {
            Some(l) => l,
            None => {
                c.bq.get_dataset(&table.project, &table.dataset)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|d| d.location)
                    .unwrap_or_default()
            }
        };
        let sql = format!(
            "SELECT target, FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%SZ', time), action, COALESCE(subject, ''), resource, outcome,              COALESCE(revision, ''), CAST(UNIX_MILLIS(time) AS STRING) FROM {t}              WHERE target IN UNNEST(@targets) AND time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 90 DAY)              QUALIFY ROW_NUMBER() OVER (PARTITION BY target, IF(action = 'check', COALESCE(subject, ''), '-') ORDER BY time DESC) = 1",
            t = table.sql()
        );
        let rows =
            c.bq.query(
                &table.project,
                &location,
                &sql,
                &[Param::strings("targets", targets.iter())],
            )
            .await
            .map_err(|e| format!("audit table {table}: {e}"))?;
        for r in rows.rows {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            out.push((
                get(7).parse().unwrap_or(0),
                LastEvent {
                    target: get(0),
                    time: get(1),
                    action: get(2),
                    subject: get(3),
                    resource: get(4),
                    outcome: get(5),
                    revision: get(6),
                },
            ));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// The whole report as text.
pub fn full_text(s: &Status) -> String {
    use std::fmt::Write;
    let mut out: String = s.tables.iter().map(text).collect();
    let line = |out: &mut String, kind: &str, e: &LastEvent| {
        let _ = if e.time.is_empty() {
            writeln!(out, "{kind} {}: no change in the audit log (90 days)", e.target)
        } else {
            writeln!(
                out,
                "{kind} {}: last change {} {} {} by {}{}",
                e.target,
                e.time,
                e.action,
                e.subject,
                e.resource,
                if e.revision.is_empty() {
                    String::new()
                } else {
                    format!(" (revision {})", e.revision)
                }
            )
        };
    };
    for e in &s.datasets {
        line(&mut out, "dataset", e);
    }
    for e in &s.groups {
        line(&mut out, "group", e);
    }
    for p in &s.plan_only {
        let _ = writeln!(out, "{} (plan only): {}", p.resource, p.plan.summary);
        for l in &p.plan.pending {
            let _ = writeln!(out, "  {l}");
        }
    }
    if let Some(e) = &s.audit_error {
        let _ = writeln!(out, "! cannot read the audit log: {e}");
    }
    out
}

/// The delays (seconds) of files loaded in the last 24 hours, sorted, and the files quarantined
/// by category — each file counted by its latest state.
async fn ledger_figures(
    bq: &dyn BigQuery,
    t: &Target,
    table_ref: &str,
) -> Result<(Vec<f64>, std::collections::BTreeMap<String, i64>), crate::cloud::CloudError> {
    let d = &t.spec.destination;
    let files = LedgerTables::new(&d.project, &d.location).table(FILES_TABLE);
    let params = [Param::string("table_ref", table_ref)];
    let latest = format!(
        "SELECT * FROM {} WHERE table_ref = @table_ref \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY uri, generation ORDER BY recorded_at DESC) = 1",
        files.sql()
    );
    let delays_sql = format!(
        "SELECT CAST(TIMESTAMP_DIFF(recorded_at, updated_at, MILLISECOND) AS STRING) FROM ({latest}) \
         WHERE state = 'LOADED' AND updated_at IS NOT NULL \
         AND recorded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR) LIMIT {DELAYS_READ}"
    );
    let mut delays: Vec<f64> = bq
        .query(&d.project, &d.location, &delays_sql, &params)
        .await?
        .rows
        .iter()
        .filter_map(|r| r.first().cloned().flatten()?.parse::<f64>().ok())
        .map(|ms| ms.max(0.0) / 1000.0)
        .collect();
    delays.sort_by(f64::total_cmp);
    let quarantine_sql = format!(
        "SELECT COALESCE(category, 'Unknown'), CAST(COUNT(*) AS STRING) FROM ({latest}) \
         WHERE state = 'QUARANTINED' GROUP BY 1"
    );
    let quarantined = bq
        .query(&d.project, &d.location, &quarantine_sql, &params)
        .await?
        .rows
        .iter()
        .filter_map(|r| {
            let cat = r.first().cloned().flatten()?;
            let n = r.get(1).cloned().flatten()?.parse().ok()?;
            Some((cat, n))
        })
        .collect();
    Ok((delays, quarantined))
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn seconds(s: f64) -> String {
    crate::ingest::report::duration_ms((s * 1000.0) as i64)
}

/// The text of one table.
pub fn text(s: &TableStatus) -> String {
    use std::fmt::Write;
    let mut out = format!("IngestedTable {} ({})\n", s.resource, s.table);
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  ! {e}");
        if s.last_load.is_none() {
            return out;
        }
    }
    let _ = writeln!(
        out,
        "  last load      {} (the controller looks every {})",
        s.last_load.as_deref().unwrap_or("never"),
        s.every
    );
    let _ = writeln!(
        out,
        "  waiting        {} files{}",
        s.files_waiting,
        s.oldest_waiting
            .as_ref()
            .map_or(String::new(), |o| format!(", the oldest for {o}"))
    );
    match (s.delay_p50_s, s.delay_p99_s) {
        (Some(p50), Some(p99)) => {
            let _ = writeln!(
                out,
                "  delay (24 h)   p50 {}, p99 {} over {} files (upload to loaded)",
                seconds(p50),
                seconds(p99),
                s.loaded_24h
            );
        }
        _ => {
            let _ = writeln!(out, "  delay (24 h)   no file loaded in the last 24 hours");
        }
    }
    let total: i64 = s.quarantined.values().sum();
    let by: Vec<String> = s.quarantined.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(
        out,
        "  quarantined    {total}{}",
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        }
    );
    let _ = writeln!(out, "  load jobs      {} today of {}", s.jobs_today, s.job_budget);
    if let Some(n) = &s.next_load {
        let _ = writeln!(out, "  next load      {n}");
    }
    for c in &s.last_checks {
        let _ = writeln!(out, "  last check     {} {} at {}", c.subject, c.outcome, c.time);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
