//! The row-count check of a file source: the rows the ledger recorded for each appended batch
//! against the rows the table holds with that `_bqsteward_batch_id`, plus the rows whose batch is
//! no loaded batch at all. One query, in BigQuery, over batches recorded before the cutoff.
//!
//! Only `APPEND` batches not replaced since are compared: a reload, a snapshot or a daily reload
//! removes earlier batches' rows on purpose, and the ledger counts their statement's affected rows
//! (deleted and inserted), not the rows they leave.

use super::compare::Found;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{Param, TableRef};
use crate::crd::IngestedTableSpec;
use crate::ingest::ledger::{BATCHES_TABLE, FILES_TABLE, LedgerTables};
use crate::ingest::table::BATCH_COLUMN;

/// Batches listed in a result at most.
const LISTED: usize = 5;

/// Rows per batch on both sides. Returns the counts, the cutoff (UTC) and the differing batches.
pub async fn row_count(
    bq: &dyn BigQuery,
    spec: &IngestedTableSpec,
    older: std::time::Duration,
) -> Result<(Found, String, Vec<String>), String> {
    let d = &spec.destination;
    let ledger = LedgerTables::new(&d.project, &d.location);
    let raw = TableRef::new(&d.project, &d.dataset, &d.table);
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older).unwrap_or_default();
    let cutoff_text = cutoff.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let batch = crate::views::sql::ident(BATCH_COLUMN);
    let sql = format!(
        "WITH replaced AS (\n\
           SELECT DISTINCT r FROM {files}, UNNEST(SPLIT(replaces, ',')) AS r\n\
           WHERE table_ref = @table_ref AND replaces IS NOT NULL AND replaces != ''\n\
         ),\n\
         ledger AS (\n\
           SELECT batch_id, MAX(rows) AS rows FROM {batches}\n\
           WHERE table_ref = @table_ref AND state = 'LOADED' AND kind = 'APPEND'\n\
             AND recorded_at < TIMESTAMP(@cutoff)\n\
             AND batch_id NOT IN (SELECT r FROM replaced)\n\
           GROUP BY batch_id\n\
         ),\n\
         everything AS (SELECT batch_id FROM {batches} WHERE table_ref = @table_ref AND state = 'LOADED'),\n\
         loaded AS (SELECT {batch} AS batch_id, COUNT(*) AS n FROM {raw} GROUP BY 1)\n\
         SELECT 'batch' AS what, l.batch_id, CAST(l.rows AS STRING), CAST(COALESCE(t.n, 0) AS STRING)\n\
         FROM ledger AS l LEFT JOIN loaded AS t ON t.batch_id = l.batch_id\n\
         UNION ALL\n\
         SELECT 'stray', NULL, '0', CAST(COALESCE(SUM(n), 0) AS STRING) FROM loaded\n\
         WHERE batch_id IS NULL OR batch_id NOT IN (SELECT batch_id FROM everything)",
        files = ledger.table(FILES_TABLE).sql(),
        batches = ledger.table(BATCHES_TABLE).sql(),
        raw = raw.sql(),
    );
    let params = [
        Param::string("table_ref", &format!("{}.{}.{}", d.project, d.dataset, d.table)),
        Param::string("cutoff", &format!("{cutoff_text}+00")),
    ];
    let rows = bq
        .query(&d.project, &d.location, &sql, &params)
        .await
        .map_err(|e| format!("BigQuery: {e}"))?;
    let mut found = Found {
        statements: (0, 1),
        ..Found::default()
    };
    let mut differ = Vec::new();
    for r in &rows.rows {
        let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (ledger_rows, table_rows): (u64, u64) = (cell(2).parse().unwrap_or(0), cell(3).parse().unwrap_or(0));
        found.source_rows += ledger_rows;
        found.bigquery_rows += table_rows;
        if cell(0) == "stray" {
            if table_rows > 0 {
                differ.push(format!("{table_rows} rows of no loaded batch of the ledger"));
            }
        } else if ledger_rows != table_rows {
            differ.push(format!(
                "batch {}: {ledger_rows} rows in the ledger, {table_rows} in the table",
                cell(1)
            ));
        }
    }
    differ.sort();
    let shown = differ.len().min(LISTED);
    let mut examples: Vec<String> = differ[..shown].to_vec();
    if differ.len() > shown {
        examples.push(format!("… and {} more", differ.len() - shown));
    }
    Ok((found, cutoff_text, examples))
}
