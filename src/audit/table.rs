//! The audit table in BigQuery: its schema (partitioned by day on `time`, clustered by
//! `resource` and `action`), creating it, and writing spooled events in one `INSERT` job per
//! table — a deterministic job id (so a retried flush is adopted, not run twice) and a filter that
//! skips event ids the table already has (so a segment flushed twice, or an event recorded again
//! by a resumed run, gives one row).
//!
//! Default place: `PROJECT._bqsteward_<location>.audit`, beside the load ledger, per project and
//! location of what changed; `--audit-table PROJECT.DATASET.TABLE` puts every row in one table
//! (its dataset must exist: its location decides where the rows live).

use super::{Destination, Event, Home};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{Field, Param, TableDef, TableRef};
use crate::ingest::jobs::{Finished, RunError, Runner};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The audit table's name in the hidden dataset.
pub const AUDIT_TABLE: &str = "audit";

/// Rows per insert statement (parameters stay far below BigQuery's request size limit).
const CHUNK: usize = 500;

/// How far back the duplicate filter looks from the batch's earliest event: a run resumed later
/// than this after a crash could write a load batch's row twice.
const DEDUP_WINDOW_DAYS: u32 = 7;

/// The columns.
pub fn schema() -> Vec<Field> {
    [
        ("event_id", "STRING", "REQUIRED"),
        ("time", "TIMESTAMP", "REQUIRED"),
        ("resource", "STRING", "REQUIRED"),
        ("action", "STRING", "REQUIRED"),
        ("target", "STRING", "NULLABLE"),
        ("subject", "STRING", "NULLABLE"),
        ("role", "STRING", "NULLABLE"),
        ("outcome", "STRING", "REQUIRED"),
        ("etag_before", "STRING", "NULLABLE"),
        ("etag_after", "STRING", "NULLABLE"),
        ("files", "INT64", "NULLABLE"),
        ("rows", "INT64", "NULLABLE"),
        ("bytes", "INT64", "NULLABLE"),
        ("job_ids", "STRING", "REPEATED"),
        ("duration_ms", "INT64", "NULLABLE"),
        ("delays_ms", "INT64", "REPEATED"),
        ("category", "STRING", "NULLABLE"),
        ("message", "STRING", "NULLABLE"),
        ("actor", "STRING", "NULLABLE"),
        ("run_id", "STRING", "NULLABLE"),
        ("revision", "STRING", "NULLABLE"),
        ("recorded_at", "TIMESTAMP", "REQUIRED"),
    ]
    .iter()
    .map(|(n, t, m)| Field::new(n, t, m))
    .collect()
}

/// The default audit table of a home.
pub fn home_table(h: &Home) -> TableRef {
    TableRef::new(
        &h.project,
        &crate::ingest::ledger::dataset_for(&h.location),
        AUDIT_TABLE,
    )
}

/// The table (and the location its jobs run in) an event goes to; `None`: nowhere (trail only).
pub fn table_for(d: &Destination, e: &Event) -> Option<(TableRef, Option<String>)> {
    match d {
        Destination::Off => None,
        Destination::Table(t) => Some((t.clone(), None)),
        Destination::PerHome => e.home.as_ref().map(|h| (home_table(h), Some(h.location.clone()))),
    }
}

/// Creates the hidden dataset (for a home) and the table, if missing.
pub async fn ensure(
    bq: &dyn BigQuery,
    table: &TableRef,
    location: &str,
    create_dataset: bool,
) -> Result<(), CloudError> {
    if create_dataset {
        bq.create_dataset(&table.project, &table.dataset, location).await?;
    }
    if bq.get_table(table).await?.is_none() {
        bq.create_table(&TableDef {
            table: table.clone(),
            fields: schema(),
            time_partitioning: Some(serde_json::json!({"type": "DAY", "field": "time"})),
            clustering: Some(serde_json::json!({"fields": ["resource", "action"]})),
            require_partition_filter: false,
            labels: BTreeMap::from([(
                crate::cloud::bqtypes::LABEL_MANAGED_BY.to_string(),
                "bqsteward".to_string(),
            )]),
            expiration_ms: None,
            description: Some("bqsteward audit log: one row per change made or refused".into()),
        })
        .await?;
    }
    Ok(())
}

/// Writes `events` where `d` says; returns the rows BigQuery added. Events with no destination
/// are left to the trail.
pub async fn write(
    bq: &dyn BigQuery,
    d: &Destination,
    events: &[Event],
    ensured: &Mutex<BTreeSet<String>>,
) -> Result<usize, RunError> {
    let mut groups: BTreeMap<String, (TableRef, Option<String>, Vec<&Event>)> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in events.iter().filter(|e| seen.insert(e.id.as_str())) {
        if let Some((t, loc)) = table_for(d, e) {
            groups
                .entry(t.to_string())
                .or_insert_with(|| (t, loc, Vec::new()))
                .2
                .push(e);
        }
    }
    let mut written = 0;
    for (key, (table, location, evs)) in groups {
        let location = match location {
            Some(l) => l,
            None => match bq.get_dataset(&table.project, &table.dataset).await? {
                Some(info) => info.location,
                None => {
                    return Err(RunError::Cloud(CloudError::Api {
                        api: "bigquery",
                        operation: format!("--audit-table {table}"),
                        status: 404,
                        reason: "notFound".into(),
                        message: format!(
                            "dataset {}.{} does not exist; create it (its location decides where the audit rows live)",
                            table.project, table.dataset
                        ),
                    }));
                }
            },
        };
        let known = ensured.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        if !known {
            ensure(bq, &table, &location, matches!(d, Destination::PerHome)).await?;
            ensured.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        }
        let runner = Runner::new(bq, &table.project, &location, 0);
        for chunk in evs.chunks(CHUNK) {
            let (sql, params) = insert_sql(&table, chunk);
            let ids: Vec<&str> = chunk.iter().map(|e| e.id.as_str()).collect();
            let base = format!("bqsteward_audit_{}", crate::ingest::model::short_hash(&ids.join(",")));
            let config = crate::ingest::job_config::query_config(&sql, &params);
            match runner.run(&base, &config, false, || Ok(())).await? {
                Finished::Ok(job) => written += job.dml_rows.unwrap_or(0) as usize,
                Finished::Failed(job, f) => {
                    return Err(RunError::Cloud(CloudError::Api {
                        api: "bigquery",
                        operation: format!("audit insert {}", job.id),
                        status: 400,
                        reason: job.error.map(|e| e.reason).unwrap_or_default(),
                        message: format!("{f:?}"),
                    }));
                }
            }
        }
    }
    Ok(written)
}

/// The insert of `events` into `table`, skipping ids already there.
pub fn insert_sql(table: &TableRef, events: &[&Event]) -> (String, Vec<Param>) {
    let strs = |name: &str, f: &dyn Fn(&Event) -> String| Param::strings(name, events.iter().map(|e| f(e)));
    let ints =
        |name: &str, f: &dyn Fn(&Event) -> Option<i64>| Param::ints(name, events.iter().map(|e| f(e).unwrap_or(-1)));
    let params = vec![
        strs("e_id", &|e| e.id.clone()),
        Param::ints("e_time", events.iter().map(|e| e.time_ms)),
        strs("e_resource", &|e| e.resource.clone()),
        strs("e_action", &|e| e.action.as_str().into()),
        strs("e_target", &|e| e.target.clone()),
        strs("e_subject", &|e| e.subject.clone()),
        strs("e_role", &|e| e.role.clone()),
        strs("e_outcome", &|e| e.outcome.clone()),
        strs("e_etag_before", &|e| e.etag_before.clone()),
        strs("e_etag_after", &|e| e.etag_after.clone()),
        ints("e_files", &|e| e.files),
        ints("e_rows", &|e| e.rows),
        ints("e_bytes", &|e| e.bytes),
        strs("e_jobs", &|e| e.job_ids.join(",")),
        ints("e_duration", &|e| e.duration_ms),
        strs("e_delays", &|e| {
            e.delays_ms.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        }),
        strs("e_category", &|e| e.category.clone()),
        strs("e_message", &|e| e.message.chars().take(4000).collect()),
        strs("e_actor", &|e| e.actor.clone()),
        strs("e_run", &|e| e.run_id.clone()),
        strs("e_revision", &|e| e.revision.clone()),
        Param::int("min_time", events.iter().map(|e| e.time_ms).min().unwrap_or(0)),
    ];
    let names = [
        "e_time",
        "e_resource",
        "e_action",
        "e_target",
        "e_subject",
        "e_role",
        "e_outcome",
        "e_etag_before",
        "e_etag_after",
        "e_files",
        "e_rows",
        "e_bytes",
        "e_jobs",
        "e_duration",
        "e_delays",
        "e_category",
        "e_message",
        "e_actor",
        "e_run",
        "e_revision",
    ];
    let joins: String = names
        .iter()
        .map(|n| format!("JOIN UNNEST(@{n}) AS {n} WITH OFFSET AS {n}_i ON {n}_i = i\n"))
        .collect();
    let sql = format!(
        "INSERT INTO {t} (event_id, time, resource, action, target, subject, role, outcome, etag_before, etag_after, \
         files, rows, bytes, job_ids, duration_ms, delays_ms, category, message, actor, run_id, revision, recorded_at)\n\
         SELECT id, TIMESTAMP_MILLIS(e_time), e_resource, e_action, NULLIF(e_target, ''), NULLIF(e_subject, ''), \
         NULLIF(e_role, ''), e_outcome, NULLIF(e_etag_before, ''), NULLIF(e_etag_after, ''), NULLIF(e_files, -1), \
         NULLIF(e_rows, -1), NULLIF(e_bytes, -1), IF(e_jobs = '', [], SPLIT(e_jobs, ',')), NULLIF(e_duration, -1), \
         ARRAY(SELECT CAST(d AS INT64) FROM UNNEST(IF(e_delays = '', [], SPLIT(e_delays, ','))) AS d), \
         NULLIF(e_category, ''), NULLIF(e_message, ''), NULLIF(e_actor, ''), NULLIF(e_run, ''), \
         NULLIF(e_revision, ''), CURRENT_TIMESTAMP()\n\
         FROM UNNEST(@e_id) AS id WITH OFFSET AS i\n{joins}\
         WHERE id NOT IN (SELECT event_id FROM {t} \
         WHERE time >= TIMESTAMP_SUB(TIMESTAMP_MILLIS(@min_time), INTERVAL {DEDUP_WINDOW_DAYS} DAY))",
        t = table.sql(),
    );
    (sql, params)
}
