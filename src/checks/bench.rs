//! `bqsteward bench check`: the exact check of a table in sync against a WePay-style
//! copy-and-join of the same table, in the same run: time, bytes moved and statements of each.
//!
//! The table is `bqsteward_bench.rows_<n>` of `bqsteward bench extract` (created once), copied once
//! into BigQuery as the table under check. The copy-and-join pulls every row again (the production
//! pull: JSON lines into Cloud Storage), loads them into a scratch table and counts the rows a
//! full outer join on the key finds missing or different. Both run against whatever
//! `BIGQUERY_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST` point at (the emulators for the README's
//! figures); the ratio, not the seconds, is the figure to compare.

use super::compare::{self, Compare};
use super::sides::{Replica, SqlSide, Warehouse};
use crate::cloud::bigquery::{BigQuery, BigQueryRest};
use crate::cloud::bqtypes::{Field, TableDef, TableRef};
use crate::cloud::storage::{GcsRest, Storage};
use crate::crd::DatabaseEngine;
use crate::dbsource::extract::{self, Extraction, PullRequest};
use crate::dbsource::landing::SetKind;
use crate::dbsource::secrets::SecretText;

/// The figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Rows in the table.
    pub rows: u64,
    /// Exact check: wall seconds, bytes received (source, BigQuery), statements per side.
    pub check_s: f64,
    /// Bytes the exact check received from the source and from BigQuery.
    pub check_bytes: (u64, u64),
    /// Seconds of the exact check's statements on each side (source, BigQuery).
    pub check_side_s: (f64, f64),
    /// Statements of the exact check (source, BigQuery).
    pub check_statements: (u64, u64),
    /// Whether the exact check found the table in sync.
    pub check_in_sync: bool,
    /// Copy-and-join: wall seconds (pull + load + join).
    pub copy_s: f64,
    /// Bytes the copy-and-join moved out of the source (and into Cloud Storage and BigQuery).
    pub copy_bytes: u64,
    /// Rows the join found missing or different.
    pub copy_mismatches: u64,
}

const PROJECT_VAR: &str = "BQSTEWARD_EMU_PROJECT";
const DATASET: &str = "bqsteward_bench";

/// Runs both in one process, one after the other.
pub async fn run(engine: DatabaseEngine, url: &SecretText, rows: u64) -> Result<Figures, String> {
    let endpoints = crate::cloud::Endpoints::from_env();
    let bq = BigQueryRest::new(&endpoints).await.map_err(|e| e.to_string())?;
    let gcs = GcsRest::new(&endpoints).map_err(|e| e.to_string())?;
    let project = std::env::var(PROJECT_VAR).unwrap_or_else(|_| "bqsteward-test".into());
    let (mut conn, mut x) = crate::dbsource::bench::prepare(engine, url, rows, 64).await?;
    x.bucket = "bqsteward-bench".into();
    let _ = gcs.create_bucket(&project, &x.bucket).await;
    bq.create_dataset(&project, DATASET, "US")
        .await
        .map_err(|e| format!("cannot create dataset {DATASET}: {e}"))?;
    let target = TableRef::new(&project, DATASET, &format!("check_{}_{}", engine.as_str(), x.table));
    if bq.get_table(&target).await.map_err(|e| e.to_string())?.is_none() {
        eprintln!("bench check: copying {rows} rows into {target} once (not timed)");
        copy(&mut conn, &gcs, &bq, &x, &target, url).await?;
    }

    // The exact check of the table in sync.
    let started = std::time::Instant::now();
    let all: Vec<usize> = (0..x.columns.len()).collect();
    let wm = x.columns.iter().position(|c| c.name == "modify_time").unwrap_or(0);
    let cutoff = "9999-01-01 00:00:00.000000".to_string();
    let spec = bench_spec(&x);
    let src_sql = super::source_sql(engine, &x, &[0], &vec![false; all.len()], wm, "DATETIME", &cutoff);
    let bq_sql = super::bigquery_sql(
        &spec,
        &target,
        &x,
        &[0],
        &vec![false; all.len()],
        wm,
        "DATETIME",
        &cutoff,
    );
    let cmp = Compare {
        columns: x.columns.iter().map(|c| c.name.clone()).collect(),
        types: x.columns.iter().map(|c| c.declared.canonical()).collect(),
        pii: vec![false; all.len()],
        key: vec![0],
        cutoff: cutoff.clone(),
        chunk_rows: 100_000,
        ranges: true,
        count_only: false,
    };
    let mut src = SqlSide::new(src_sql, true, Replica { conn: &mut conn, url });
    let mut big = SqlSide::new(
        bq_sql,
        true,
        Warehouse {
            bq: &bq,
            project: project.clone(),
            location: "US".into(),
        },
    );
    let found = compare::search(&cmp, &mut src, &mut big).await?;
    let check_s = started.elapsed().as_secs_f64();
    let check_bytes = (src.bytes, big.bytes);
    let check_side_s = (src.seconds, big.seconds);

    // WePay's way: copy the rows again, load them, join.
    let started = std::time::Instant::now();
    let scratch = TableRef::new(&project, DATASET, &format!("{}_copy", target.table));
    let copy_bytes = copy(&mut conn, &gcs, &bq, &x, &scratch, url).await?;
    let cols: Vec<String> = x.columns.iter().map(|c| crate::views::sql::ident(&c.name)).collect();
    let differs = cols
        .iter()
        .map(|c| format!("s.{c} IS DISTINCT FROM t.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let join = format!(
        "SELECT COUNT(*) FROM {} AS s FULL OUTER JOIN {} AS t ON s.`id` = t.`id` WHERE s.`id` IS NULL OR t.`id` IS NULL OR {differs}",
        scratch.sql(),
        target.sql()
    );
    let r = bq.query(&project, "US", &join, &[]).await.map_err(|e| e.to_string())?;
    let copy_mismatches = r
        .rows
        .first()
        .and_then(|r| r[0].as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let copy_s = started.elapsed().as_secs_f64();
    let _ = bq.delete_table(&scratch).await;
    conn.close().await;
    Ok(Figures {
        rows: found.source_rows,
        check_s,
        check_bytes,
        check_side_s,
        check_statements: found.statements,
        check_in_sync: found.in_sync(),
        copy_s,
        copy_bytes,
        copy_mismatches,
    })
}

/// The spec the BigQuery side needs (key, version).
fn bench_spec(x: &Extraction) -> crate::crd::IngestedTableSpec {
    let schema: Vec<String> = x
        .columns
        .iter()
        .map(|c| format!("{{name: {}, type: {}}}", c.name, c.declared.canonical()))
        .collect();
    serde_yaml::from_str(&format!(
        "source: {{database: {{engine: mysql, table: {}.{}, connectionSecret: {{name: bench}}, watermark: {{column: modify_time}}}}, landing: 'gs://{}/{}'}}\n\
         destination: {{project: p, dataset: d, table: t}}\nprimaryKey: [id]\nschema: [{}]\n",
        x.schema,
        x.table,
        x.bucket,
        x.prefix,
        schema.join(", ")
    ))
    .expect("the bench spec parses")
}

/// Pulls every row into Cloud Storage and loads them into `table` (replacing it). Returns the
/// bytes pulled.
async fn copy(
    conn: &mut crate::dbsource::conn::Conn,
    gcs: &GcsRest,
    bq: &BigQueryRest,
    x: &Extraction,
    table: &TableRef,
    url: &SecretText,
) -> Result<u64, String> {
    let mut x = x.clone();
    x.prefix = format!("{}/{}/", table.table, chrono::Utc::now().timestamp_millis());
    let req = PullRequest {
        kind: SetKind::Pull,
        set: "pull-0000000001".into(),
        low: None,
        below: None,
    };
    let marker = extract::pull(conn, gcs, &x, &req, url).await.map_err(|e| e.message)?;
    let mut fields: Vec<Field> = x
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.declared.canonical(), "NULLABLE"))
        .collect();
    fields.push(Field::new(crate::ingest::table::BATCH_COLUMN, "STRING", "NULLABLE"));
    fields.push(Field::new(
        crate::ingest::table::LOADED_AT_COLUMN,
        "TIMESTAMP",
        "NULLABLE",
    ));
    let _ = bq.delete_table(table).await;
    bq.create_table(&TableDef {
        table: table.clone(),
        fields: fields.clone(),
        time_partitioning: None,
        clustering: None,
        require_partition_filter: false,
        labels: Default::default(),
        expiration_ms: None,
        description: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    let config = serde_json::json!({
        "load": {
            "sourceUris": [format!("gs://{}/{}{}/part-*", x.bucket, x.prefix, req.set)],
            "destinationTable": table.to_api(),
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "writeDisposition": "WRITE_APPEND",
            "ignoreUnknownValues": false,
        }
    });
    let id = format!("bqsteward_bench_{}", chrono::Utc::now().timestamp_micros());
    let mut job = bq
        .insert_job(&table.project, "US", &id, config)
        .await
        .map_err(|e| e.to_string())?;
    while !job.is_done() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        job = bq
            .get_job(&table.project, "US", &id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the load job vanished")?;
    }
    if let Some(e) = job.error {
        return Err(format!("the load failed: {}", e.message));
    }
    Ok(marker.bytes)
}
