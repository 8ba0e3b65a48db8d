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
    /// Why the table could not be read.
    pub error: Option<String>,
}

/// Prints every IngestedTable's status.
pub async fn status(args: &LiveArgs, output: Output) -> i32 {
    let (world, owned) = match setup(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let clients = owned.clients();
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for t in &world.tables {
        out.push(table_status(&clients, t, now).await);
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
        Output::Text => out.iter().for_each(|s| print!("{}", text(s))),
    }
    if out.iter().any(|s| s.error.is_some()) {
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
