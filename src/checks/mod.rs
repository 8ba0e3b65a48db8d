//! Data-quality checks of an IngestedTable against its source (`spec.checks`). Database sources:
//! a row count and an exact comparison, both over the rows whose watermark is older than
//! `olderThan` by the database's clock, on the replica table and on the BigQuery table's latest
//! row per key. File sources: a row count per loaded batch, ledger against table ([`files`]).
//!
//! - [`canon`]: the canonical row encoding, identical in MySQL, PostgreSQL and BigQuery.
//! - [`compare`]: the search (fingerprints of key cells, split where they differ, rows at leaves).
//! - [`sides`]: both sides as SQL.
//!
//! A check only reads (read-only statements, under the source's `statementTimeout`), never stops
//! loads, and reports through [`crate::crd::CheckResult`] (status, events, metrics, `bqsteward check`).

pub mod bench;
pub mod canon;
pub mod compare;
pub mod files;
pub mod sides;

use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::TableRef;
use crate::cloud::storage::Storage;
use crate::crd::{CheckResult, DatabaseEngine, IngestedTableSpec};
use crate::dbsource::Sources;
use crate::dbsource::types::{self, Extracted};
use canon::{CanonColumn, Dialect};
use compare::{Compare, Found, MismatchKind};
use sides::{Replica, SideSql, SqlSide, Warehouse};
use std::sync::OnceLock;

/// Which check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Rows on both sides.
    RowCount,
    /// Every row and value.
    Exact,
}

impl Kind {
    /// `rowCount` / `exact` (the spec's names; metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RowCount => "rowCount",
            Kind::Exact => "exact",
        }
    }
}

/// What one check run measured (for metrics).
#[derive(Clone, Debug)]
pub struct Measured {
    /// Which check.
    pub kind: Kind,
    /// `project.dataset.table`.
    pub table: String,
    /// `ok`, `mismatch` or `error`.
    pub outcome: &'static str,
    /// Mismatching rows by kind (`missingInBigQuery`, `missingInSource`, `changed`, `rowCount`).
    pub mismatches: Vec<(&'static str, u64)>,
    /// Seconds.
    pub seconds: f64,
    /// Bytes received from the source and from BigQuery.
    pub bytes: (u64, u64),
}

/// Receives every check run (the controller's metrics).
pub trait CheckObserver: Send + Sync {
    /// One run finished.
    fn ran(&self, m: &Measured);
}

static OBSERVER: OnceLock<Box<dyn CheckObserver>> = OnceLock::new();

/// Installs the process-wide observer (once).
pub fn observe_checks(o: Box<dyn CheckObserver>) {
    let _ = OBSERVER.set(o);
}

/// One check's full outcome: the status summary and, for the exact check, every listed row.
#[derive(Clone, Debug)]
pub struct Ran {
    /// Which.
    pub kind: Kind,
    /// The status summary.
    pub result: CheckResult,
    /// The search (absent when the check failed).
    pub found: Option<Found>,
}

/// Runs check `kind` of the table once, now. Never fails: a check that cannot run is a result with
/// an `error`.
pub async fn run(
    sources: &Sources,
    bq: &dyn BigQuery,
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
    kind: Kind,
) -> Ran {
    let started = std::time::Instant::now();
    let mut bytes = (0, 0);
    let outcome = run_inner(sources, bq, gcs, resource, spec, kind, &mut bytes).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ran = match outcome {
        Ok((found, cutoff, differing)) => {
            let in_sync = match kind {
                // Equal counts, or every key of the difference changed after the cutoff.
                Kind::RowCount => (found.source_rows == found.bigquery_rows || found.in_sync()) && differing.is_empty(),
                Kind::Exact => found.in_sync(),
            };
            let examples = if differing.is_empty() {
                found.listed.iter().take(5).map(describe).collect()
            } else {
                differing
            };
            Ran {
                kind,
                result: CheckResult {
                    time: now,
                    in_sync,
                    cutoff,
                    source_rows: found.source_rows as i64,
                    bigquery_rows: found.bigquery_rows as i64,
                    missing_in_big_query: found.missing_in_bigquery as i64,
                    missing_in_source: found.missing_in_source as i64,
                    changed: found.changed as i64,
                    changed_during_check: found.changed_during_check as i64,
                    examples,
                    error: None,
                },
                found: Some(found),
            }
        }
        Err(e) => Ran {
            kind,
            result: CheckResult {
                time: now,
                in_sync: false,
                error: Some(e),
                ..CheckResult::default()
            },
            found: None,
        },
    };
    let r = &ran.result;
    let d = &spec.destination;
    let measured = Measured {
        kind,
        table: format!("{}.{}.{}", d.project, d.dataset, d.table),
        outcome: if r.error.is_some() {
            "error"
        } else if r.in_sync {
            "ok"
        } else {
            "mismatch"
        },
        mismatches: match kind {
            Kind::RowCount => vec![("rowCount", r.source_rows.abs_diff(r.bigquery_rows))],
            Kind::Exact => vec![
                ("missingInBigQuery", r.missing_in_big_query as u64),
                ("missingInSource", r.missing_in_source as u64),
                ("changed", r.changed as u64),
            ],
        },
        seconds: started.elapsed().as_secs_f64(),
        bytes,
    };
    let mut ev = crate::audit::Event::new(
        crate::audit::Action::Check,
        &format!("IngestedTable {resource}"),
        &measured.table,
        kind.as_str(),
        "",
    )
    .home(&d.project, &d.location);
    ev.outcome = if r.error.is_some() {
        "failed"
    } else if r.in_sync {
        "in_sync"
    } else {
        "mismatch"
    }
    .into();
    ev.category = kind.as_str().into();
    ev.rows = Some(r.source_rows);
    ev.duration_ms = Some((measured.seconds * 1000.0) as i64);
    ev.message = match &r.error {
        Some(e) => e.clone(),
        None => format!(
            "source {} rows, BigQuery {} rows; missing in BigQuery {}, missing in the source {}, changed {}, changed during the check {}",
            r.source_rows,
            r.bigquery_rows,
            r.missing_in_big_query,
            r.missing_in_source,
            r.changed,
            r.changed_during_check
        ),
    };
    crate::audit::record(ev);
    if let Some(o) = OBSERVER.get() {
        o.ran(&measured);
    }
    ran
}

/// One line per mismatching row (PII values never appear: their columns say "differs").
pub fn describe(m: &compare::Mismatch) -> String {
    match m.kind {
        MismatchKind::MissingInBigQuery => format!("missing in BigQuery: {}", m.key),
        MismatchKind::MissingInSource => format!("missing in the source: {}", m.key),
        MismatchKind::Changed => {
            let show = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), |v| format!("{v:?}"));
            let cols: Vec<String> = m
                .columns
                .iter()
                .map(|c| match (&c.source, &c.bigquery) {
                    (Some(s), Some(b)) if s == "differs" && b == "differs" => format!("{} differs", c.column),
                    _ => format!(
                        "{} {} in the source, {} in BigQuery",
                        c.column,
                        show(&c.source),
                        show(&c.bigquery)
                    ),
                })
                .collect();
            format!("changed: {}: {}", m.key, cols.join("; "))
        }
    }
}

/// The check's settings from the spec (defaults when the check is not declared: `bqsteward check
/// --table` runs both).
fn settings(spec: &IngestedTableSpec, kind: Kind) -> (std::time::Duration, u64) {
    let checks = spec.checks.as_ref();
    let (older, chunk) = match kind {
        Kind::RowCount => (
            checks.and_then(|c| c.row_count.as_ref()).map(|r| r.older_than.clone()),
            0,
        ),
        Kind::Exact => {
            let x = checks.and_then(|c| c.exact.as_ref());
            (x.map(|x| x.older_than.clone()), x.map_or(100_000, |x| x.chunk_rows))
        }
    };
    let older = older
        .and_then(|o| crate::validate::database::duration(&o).ok())
        .unwrap_or(std::time::Duration::from_secs(3600));
    (older, chunk)
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    sources: &Sources,
    bq: &dyn BigQuery,
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
    kind: Kind,
    bytes: &mut (u64, u64),
) -> Result<(Found, String, Vec<String>), String> {
    let Some(db) = spec.source.database.as_ref() else {
        // Files: rows per batch, ledger against table.
        return match kind {
            Kind::RowCount => files::row_count(bq, spec, settings(spec, kind).0).await,
            Kind::Exact => Err(
                "the exact check needs a database source (spec.source.database): rows are compared by \
                                key with the source table; for files use rowCount"
                    .into(),
            ),
        };
    };
    let wm_name = db
        .watermark
        .as_ref()
        .map(|w| w.column.clone())
        .ok_or("checks need spec.source.database.watermark (a time column)")?;
    let observed = crate::dbsource::observe(sources, gcs, resource, spec).await?;
    let planned = crate::dbsource::plan(spec, &observed, chrono::Utc::now(), true);
    let Some(x) = planned.extraction else {
        return Err(format!(
            "the source cannot be read as declared: {}",
            planned.problems.join("; ")
        ));
    };
    let (older, chunk_rows) = settings(spec, kind);
    let wm = x
        .columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(&wm_name))
        .ok_or("the watermark column is not read")?;
    let wm_type = x.columns[wm].declared.canonical();
    let key: Vec<usize> = spec
        .primary_key
        .iter()
        .map(|k| {
            x.columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(k))
                .ok_or_else(|| format!("primary key column {k:?} is not read"))
        })
        .collect::<Result<_, _>>()?;
    if kind == Kind::Exact && key.is_empty() {
        return Err("the exact check needs spec.primaryKey".into());
    }
    let ranges = key.len() == 1 && x.columns[key[0]].declared.canonical() == "INT64";
    let pii: Vec<bool> = x
        .columns
        .iter()
        .map(|c| spec.pii_columns.iter().any(|p| p.eq_ignore_ascii_case(&c.name)))
        .collect();

    let (mut conn, url, _slot) = crate::dbsource::connect(sources, resource, spec).await?;
    let timeout = x.timeout.as_secs().max(1);
    // Read-only sessions under the source's statement timeout.
    let fail = |e: sqlx::Error| crate::dbsource::conn::redact(&format!("source: {e}"), &url);
    match db.engine {
        DatabaseEngine::Mysql => {
            conn.exec("SET SESSION TRANSACTION READ ONLY").await.map_err(fail)?;
            conn.mysql_statement_timeout(x.timeout).await.map_err(fail)?;
        }
        DatabaseEngine::Postgres => {
            conn.exec(&format!("SET statement_timeout = '{timeout}s'"))
                .await
                .map_err(fail)?;
            conn.exec("SET default_transaction_read_only = on")
                .await
                .map_err(fail)?;
        }
    }
    let clock = conn
        .texts(&format!("SELECT {}", crate::dbsource::extract::clock(db.engine)), &[])
        .await
        .map_err(|e| crate::dbsource::conn::redact(&format!("cannot read the database clock: {e}"), &url))?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or("the database returned no clock")?;
    let clock = chrono::NaiveDateTime::parse_from_str(&clock, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|e| format!("cannot read the database clock {clock:?}: {e}"))?;
    let cut = clock - chrono::Duration::from_std(older).unwrap_or_default();
    let cutoff = if wm_type == "DATE" {
        cut.format("%Y-%m-%d").to_string()
    } else {
        cut.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    };

    let d = &spec.destination;
    let raw = TableRef::new(&d.project, &d.dataset, &d.table);
    let src_sql = source_sql(db.engine, &x, &key, &pii, wm, wm_type, &cutoff);
    let bq_sql = bigquery_sql(spec, &raw, &x, &key, &pii, wm, wm_type, &cutoff);
    let mut src = SqlSide::new(
        src_sql,
        ranges,
        Replica {
            conn: &mut conn,
            url: &url,
        },
    );
    let mut big = SqlSide::new(
        bq_sql,
        ranges,
        Warehouse {
            bq,
            project: d.project.clone(),
            location: d.location.clone(),
        },
    );
    let cmp = Compare {
        columns: x.columns.iter().map(|c| c.name.clone()).collect(),
        types: x.columns.iter().map(|c| c.declared.canonical()).collect(),
        pii: pii.clone(),
        key: key.clone(),
        cutoff: cutoff.clone(),
        chunk_rows: if chunk_rows == 0 { 100_000 } else { chunk_rows },
        ranges,
        count_only: kind == Kind::RowCount,
    };
    let found = match kind {
        Kind::RowCount => {
            use compare::Side;
            let (s, b) = futures::join!(src.totals(), big.totals());
            let (s, b) = (s?, b?);
            if s.rows == b.rows {
                Found {
                    source_rows: s.rows,
                    bigquery_rows: b.rows,
                    statements: (1, 1),
                    ..Found::default()
                }
            } else {
                // Counts differ: find the keys by counts of key cells, so a row updated after the
                // cutoff (gone from the source's count, its old version still in BigQuery's until
                // the next pull) is told apart from a row really missing.
                src.sql.count_only = true;
                big.sql.count_only = true;
                let mut f = compare::search(&cmp, &mut src, &mut big).await?;
                f.statements.0 += 1;
                f.statements.1 += 1;
                f
            }
        }
        Kind::Exact => compare::search(&cmp, &mut src, &mut big).await?,
    };
    *bytes = (src.bytes, big.bytes);
    conn.close().await;
    Ok((found, cutoff, Vec::new()))
}

fn canon_column(sql: String, c: &Extracted, source_side: bool) -> CanonColumn {
    CanonColumn {
        sql,
        type_: c.declared.canonical(),
        source_type: if source_side {
            c.source.data_type.clone()
        } else {
            String::new()
        },
        presence_only: c.source.column_type == "ARRAY",
    }
}

pub(crate) fn source_sql(
    engine: DatabaseEngine,
    x: &crate::dbsource::extract::Extraction,
    key: &[usize],
    pii: &[bool],
    wm: usize,
    wm_type: &str,
    cutoff: &str,
) -> SideSql {
    let cols = x
        .columns
        .iter()
        .map(|c| canon_column(types::quote(engine, &c.source.name), c, true))
        .collect();
    let cutoff_sql = match (engine, wm_type) {
        (DatabaseEngine::Mysql, _) => format!("'{cutoff}'"),
        (DatabaseEngine::Postgres, "DATE") => format!("'{cutoff}'::date"),
        (DatabaseEngine::Postgres, "TIMESTAMP") => format!("('{cutoff}'::timestamp AT TIME ZONE 'UTC')"),
        (DatabaseEngine::Postgres, _) => format!("'{cutoff}'::timestamp"),
    };
    SideSql {
        d: Dialect::from(engine),
        from: format!("{}.{}", types::quote(engine, &x.schema), types::quote(engine, &x.table)),
        cols,
        key: key.to_vec(),
        pii: pii.to_vec(),
        wm,
        cutoff_sql,
        count_only: false,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn bigquery_sql(
    spec: &IngestedTableSpec,
    raw: &TableRef,
    x: &crate::dbsource::extract::Extraction,
    key: &[usize],
    pii: &[bool],
    wm: usize,
    wm_type: &str,
    cutoff: &str,
) -> SideSql {
    use crate::views::sql::ident;
    let names: Vec<String> = x.columns.iter().map(|c| c.name.clone()).collect();
    let mut selected = names.clone();
    selected.extend([
        crate::ingest::table::BATCH_COLUMN.to_string(),
        crate::ingest::table::LOADED_AT_COLUMN.to_string(),
    ]);
    let version = spec
        .version_column
        .clone()
        .unwrap_or_else(|| x.columns[wm].name.clone());
    let key_names: Vec<String> = key.iter().map(|&i| names[i].clone()).collect();
    let latest = crate::views::sql::dedup(
        raw,
        &selected,
        &key_names,
        &version,
        [
            crate::ingest::table::BATCH_COLUMN,
            crate::ingest::table::LOADED_AT_COLUMN,
        ],
    );
    let cols = x
        .columns
        .iter()
        .map(|c| canon_column(ident(&c.name), c, false))
        .collect();
    let cutoff_sql = match wm_type {
        "DATE" => format!("DATE '{cutoff}'"),
        "TIMESTAMP" => format!("TIMESTAMP '{cutoff}+00:00'"),
        _ => format!("DATETIME '{cutoff}'"),
    };
    SideSql {
        d: Dialect::BigQuery,
        from: format!("({latest}) AS _t"),
        cols,
        key: key.to_vec(),
        pii: pii.to_vec(),
        wm,
        cutoff_sql,
        count_only: false,
    }
}
