//! Database sources: an IngestedTable whose rows come from a MySQL/MariaDB or PostgreSQL read
//! replica. bqsteward pulls them into the landing prefix ([`extract`], [`landing`]) and loads the
//! complete pulls through the same exactly-once path as any files ([`loads`]).
//!
//! observe ([`observe`]: the Secret, the replica's columns, the landing listing and the last
//! complete pull) → plan ([`plan`], pure: schema drift, the pulls that are due and their ranges) →
//! apply ([`run`]: the pulls, one table at a time, within the connection limit).

pub mod bench;
pub mod conn;
pub mod extract;
pub mod landing;
pub mod loads;
pub mod secrets;
pub mod types;

use crate::cloud::storage::Storage;
use crate::crd::{DatabaseEngine, IngestedTableSpec, LoadMode};
use conn::{Conn, Limits};
use extract::{Extraction, PullRequest};
use landing::{Landing, Marker, SetKind};
use secrets::Secrets;
use std::sync::Arc;
use types::{Extracted, SourceColumn, WatermarkKind};

/// Default bytes per extracted file.
const DEFAULT_FILE_MIB: u32 = 64;
/// Default statement timeout.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// New attempts of a pull whose connection dropped (after 4 s, 8 s, 16 s).
const PULL_RETRIES: u32 = 3;
/// Default overlap of time watermarks.
const DEFAULT_OVERLAP: std::time::Duration = std::time::Duration::from_secs(1800);

/// What reaches databases: the Secrets and the process-wide limits.
#[derive(Clone)]
pub struct Sources {
    /// Where connection URLs come from.
    pub secrets: Arc<dyn Secrets>,
    /// Connections per database, one pull per table.
    pub limits: Arc<Limits>,
    /// Pull only when `schedule.every` has passed since the last complete pull (the controller,
    /// whose reconciles also come from other events); `plan`/`apply` pull when run.
    pub on_schedule: bool,
}

impl Sources {
    /// Sources reading Secrets from `secrets`, at most `per_database` connections per database.
    pub fn new(secrets: Arc<dyn Secrets>, per_database: usize) -> Sources {
        Sources {
            secrets,
            limits: Arc::new(Limits::new(per_database)),
            on_schedule: false,
        }
    }

    /// The same, pulling only on `schedule.every` (the controller).
    pub fn on_schedule(mut self) -> Sources {
        self.on_schedule = true;
        self
    }
}

/// What was read of a database source.
#[derive(Clone, Debug, Default)]
pub struct SourceObserved {
    /// The replica table's columns (empty: no such table visible to the user).
    pub columns: Vec<SourceColumn>,
    /// The landing prefix.
    pub landing: Landing,
    /// The newest complete pull or snapshot, and its marker.
    pub last: Option<(String, Marker)>,
}

/// What applying does to a database source.
#[derive(Clone, Debug, Default)]
pub struct SourcePlan {
    /// Why pulls stop (schema drift, an unmappable column): nothing is pulled until fixed.
    pub problems: Vec<String>,
    /// Worth knowing, changes nothing (replica columns not declared).
    pub notes: Vec<String>,
    /// The pulls, in order (incremental or snapshot first, then the daily reload).
    pub pulls: Vec<PullRequest>,
    /// Objects of interrupted pulls to delete first (name, generation: a newer generation, written
    /// by a pull started since, is never deleted).
    pub cleanup: Vec<(String, i64)>,
    /// The extraction (absent when there are problems).
    pub extraction: Option<Extraction>,
}

/// What the pulls of one apply wrote.
#[derive(Clone, Debug, Default)]
pub struct PullReport {
    /// Each pull's set and marker.
    pub pulls: Vec<(String, Marker)>,
    /// Objects of interrupted pulls deleted.
    pub cleaned: usize,
}

fn spec_db(spec: &IngestedTableSpec) -> &crate::crd::DatabaseSource {
    spec.source.database.as_ref().expect("a database source")
}

/// `namespace/name` → namespace.
fn namespace(resource: &str) -> &str {
    resource.split_once('/').map_or("default", |(ns, _)| ns)
}

/// Reads the Secret, waits for a connection slot of its database and connects.
pub(crate) async fn connect(
    sources: &Sources,
    resource: &str,
    spec: &IngestedTableSpec,
) -> Result<(Conn, secrets::SecretText, tokio::sync::OwnedSemaphorePermit), String> {
    let db = spec_db(spec);
    let secret = &db.connection_secret;
    let url = sources
        .secrets
        .read(namespace(resource), &secret.name, &secret.key)
        .await?;
    let slot = sources.limits.slot(&url).await;
    let conn = Conn::open(db.engine, &url, &secret.name).await.map_err(|e| e.message)?;
    Ok((conn, url, slot))
}

/// Reads the replica's columns, the landing listing and the last complete pull's marker.
/// Read-only (it needs the Secret, as `plan` does).
pub async fn observe(
    sources: &Sources,
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
) -> Result<SourceObserved, String> {
    let db = spec_db(spec);
    let (bucket, prefix) = landing_of(spec)?;
    let objects = gcs
        .list(&bucket, &prefix)
        .await
        .map_err(|e| format!("cannot list the landing prefix: {e}"))?;
    let landing = Landing::from_listing(&prefix, &objects);
    let last = match landing.last_complete() {
        Some(set) => {
            let name = format!("{prefix}{set}/{}", landing::COMPLETE);
            let generation = landing.sets[set].complete.unwrap_or(0);
            let body = gcs
                .read_head(&bucket, &name, generation, 1 << 20)
                .await
                .map_err(|e| format!("cannot read gs://{bucket}/{name}: {e}"))?;
            let marker: Marker = serde_json::from_slice(&body)
                .map_err(|e| format!("gs://{bucket}/{name} is not a pull marker ({e}); was it written by hand?"))?;
            Some((set.to_string(), marker))
        }
        None => None,
    };
    let (schema, table) = types::source_table(&db.table)?;
    let (mut conn, url, _slot) = connect(sources, resource, spec).await?;
    let columns = read_columns(&mut conn, db.engine, &schema, &table)
        .await
        .map_err(|e| conn::redact(&format!("cannot read the columns of {}: {e}", db.table), &url))?;
    conn.close().await;
    Ok(SourceObserved { columns, landing, last })
}

/// Bucket and object prefix of `source.landing`.
pub fn landing_of(spec: &IngestedTableSpec) -> Result<(String, String), String> {
    crate::validate::ident::gcs_uri(spec.source.landing.as_deref().unwrap_or(""))
}

async fn read_columns(
    conn: &mut Conn,
    engine: DatabaseEngine,
    schema: &str,
    table: &str,
) -> Result<Vec<SourceColumn>, sqlx::Error> {
    let sql = match engine {
        DatabaseEngine::Mysql => {
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), CAST(NUMERIC_PRECISION AS CHAR), \
             CAST(NUMERIC_SCALE AS CHAR), IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
        }
        DatabaseEngine::Postgres => {
            "SELECT column_name::text, CASE WHEN data_type IN ('ARRAY', 'USER-DEFINED') THEN udt_name::text ELSE data_type::text END, \
             data_type::text, numeric_precision::text, numeric_scale::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position"
        }
    };
    let rows = conn.texts(sql, &[schema, table]).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let s = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            SourceColumn {
                name: s(0),
                data_type: s(1),
                column_type: s(2),
                precision: s(3).parse().ok(),
                scale: s(4).parse().ok(),
                nullable: s(5).eq_ignore_ascii_case("YES"),
            }
        })
        .collect())
}

/// The `schema:` block for a replica table (`bqsteward import-schema`), with unmappable columns as
/// comments.
pub async fn import_schema(engine: DatabaseEngine, url: &secrets::SecretText, table: &str) -> Result<String, String> {
    let (schema, name) = types::source_table(table)?;
    let mut conn = Conn::open(engine, url, "--url-file").await.map_err(|e| e.message)?;
    let cols = read_columns(&mut conn, engine, &schema, &name)
        .await
        .map_err(|e| conn::redact(&format!("cannot read the columns of {table}: {e}"), url))?;
    conn.close().await;
    if cols.is_empty() {
        return Err(format!(
            "{table}: no such table, or the user cannot see its columns (check the name and the grants)"
        ));
    }
    let mut out = String::from("schema:\n");
    for c in &cols {
        match types::bigquery_type(engine, c) {
            Ok((t, mode)) => {
                let mode = match mode {
                    crate::crd::ColumnMode::Nullable => String::new(),
                    m => format!(
                        ", mode: {}",
                        serde_json::to_value(m)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ),
                };
                out.push_str(&format!(
                    "  - {{name: {}, type: {}{mode}}}   # {}\n",
                    serde_json::to_string(&c.name).unwrap_or_default(),
                    t.canonical(),
                    c.column_type
                ));
            }
            Err(why) => out.push_str(&format!("  # {why}\n")),
        }
    }
    Ok(out)
}

/// Plans the pulls (pure): the columns to read (schema drift stops pulls), the range of the next
/// pull and the daily reload when due at `now`.
pub fn plan(
    spec: &IngestedTableSpec,
    o: &SourceObserved,
    now: chrono::DateTime<chrono::Utc>,
    on_schedule: bool,
) -> SourcePlan {
    let db = spec_db(spec);
    let mut out = SourcePlan::default();
    if o.columns.is_empty() {
        out.problems.push(format!(
            "table {} not found on the replica, or its user cannot see it: pulls stop until spec.source.database.table \
             or the grants are fixed",
            db.table
        ));
        return out;
    }
    let mut columns = Vec::new();
    for c in &spec.schema {
        let Some(src) = o.columns.iter().find(|s| s.name.eq_ignore_ascii_case(&c.name)) else {
            out.problems.push(format!(
                "declared column {:?} is not on the replica table {} (dropped or renamed?): pulls stop until spec.schema \
                 or the replica is fixed",
                c.name, db.table
            ));
            continue;
        };
        match types::bigquery_type(db.engine, src) {
            Err(why) => out.problems.push(why),
            Ok((mapped, mode)) => {
                let repeated = mode == crate::crd::ColumnMode::Repeated;
                if !types::compatible(c.type_, mapped) || repeated != (c.mode == crate::crd::ColumnMode::Repeated) {
                    out.problems.push(format!(
                        "column {:?} is {} on the replica, which loads as {}{}, but spec.schema declares {}{}: pulls stop \
                         until they agree (run bqsteward import-schema to see the mapping)",
                        c.name,
                        src.column_type,
                        if repeated { "REPEATED " } else { "" },
                        mapped.canonical(),
                        if c.mode == crate::crd::ColumnMode::Repeated { "REPEATED " } else { "" },
                        c.type_.canonical()
                    ));
                    continue;
                }
                columns.push(Extracted {
                    source: src.clone(),
                    name: c.name.clone(),
                    declared: c.type_,
                    mapped,
                });
            }
        }
    }
    for s in &o.columns {
        let declared = spec.schema.iter().any(|c| c.name.eq_ignore_ascii_case(&s.name));
        let excluded = spec.excluded_columns.iter().any(|c| c.eq_ignore_ascii_case(&s.name));
        if !declared && !excluded {
            out.notes.push(format!(
                "replica column {:?} ({}) is not declared: not pulled until added to spec.schema (or listed in \
                 excludedColumns)",
                s.name, s.column_type
            ));
        }
    }
    if let Some(w) = &db.watermark
        && let Some(c) = columns.iter().find(|c| c.name.eq_ignore_ascii_case(&w.column))
        && c.source.nullable
    {
        out.problems.push(format!(
            "watermark column {:?} is nullable on the replica: a row whose {} is NULL would be read by the first pull              only and never again; make it NOT NULL on the replica, or choose another watermark",
            w.column, w.column
        ));
    }
    if !out.problems.is_empty() {
        return out;
    }
    let Ok((bucket, prefix)) = landing_of(spec) else {
        out.problems.push("spec.source.landing is not a gs:// prefix".into());
        return out;
    };
    let (schema, table) = types::source_table(&db.table).unwrap_or_default();
    let watermark = db.watermark.as_ref().and_then(|w| {
        let declared = spec.schema.iter().find(|c| c.name.eq_ignore_ascii_case(&w.column))?;
        let src = columns.iter().find(|c| c.name.eq_ignore_ascii_case(&w.column))?;
        Some((src.source.name.clone(), WatermarkKind::of(declared.type_)?))
    });
    let lower = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    let x = Extraction {
        engine: db.engine,
        schema,
        table,
        columns,
        watermark: watermark.clone(),
        bucket,
        prefix,
        file_bytes: (db.file_size_mib.unwrap_or(DEFAULT_FILE_MIB) as usize) << 20,
        timeout: db
            .statement_timeout
            .as_deref()
            .and_then(|t| crate::validate::database::duration(t).ok())
            .unwrap_or(DEFAULT_TIMEOUT),
        primary_key: spec.primary_key.clone(),
        pii: lower(&spec.pii_columns),
    };
    // Interrupted sets are deleted once no pull could still be writing them.
    let stale_ms = now.timestamp_millis() - 2 * x.timeout.as_millis() as i64 - 600_000;
    out.cleanup = o
        .landing
        .sets
        .values()
        .filter(|s| s.complete.is_none() && s.newest_ms < stale_ms)
        .flat_map(|s| s.objects.iter().cloned())
        .collect();
    let next = o.landing.next_number();
    // On a schedule, a pull is due once `schedule.every` has passed since the last one completed
    // (a tenth early, so a reconcile that comes a little early does not wait a whole interval).
    let every_ms = crate::validate::database::duration(&spec.schedule.every).map_or(900_000, |d| d.as_millis() as i64);
    let last_ms = o
        .last
        .as_ref()
        .and_then(|(set, _)| o.landing.sets.get(set))
        .and_then(|s| s.complete_ms);
    let pull_due = !on_schedule || last_ms.is_none_or(|t| now.timestamp_millis() - t >= every_ms * 9 / 10);
    if !pull_due {
        out.notes.push(format!(
            "next pull after {} (schedule.every {})",
            chrono::DateTime::from_timestamp_millis(last_ms.unwrap_or(0) + every_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
            spec.schedule.every
        ));
    }
    if let Some(c) = &spec.checks {
        let mut each = Vec::new();
        if let Some(r) = &c.row_count {
            each.push(format!("rowCount every {} (rows older than {})", r.every, r.older_than));
        }
        if let Some(x) = &c.exact {
            each.push(format!("exact every {} (rows older than {})", x.every, x.older_than));
        }
        out.notes.push(format!(
            "checks: {}; the controller runs them after loads (status.checks, condition InSync); run them now with \
             `bqsteward check`",
            each.join(", ")
        ));
    }
    match spec.mode {
        _ if !pull_due => {}
        LoadMode::Snapshot => out.pulls.push(PullRequest {
            kind: SetKind::Snap,
            set: landing::numbered(SetKind::Snap, next),
            low: None,
            below: None,
        }),
        LoadMode::Incremental => {
            let overlap = db
                .overlap
                .as_deref()
                .and_then(|t| crate::validate::database::duration(t).ok())
                .unwrap_or(DEFAULT_OVERLAP);
            let low = o
                .last
                .as_ref()
                .and_then(|(_, m)| m.high.as_deref())
                .map(|high| match &watermark {
                    Some((_, WatermarkKind::Time(t))) => back_by(high, overlap, t.canonical() == "DATE"),
                    _ => high.to_string(),
                });
            out.pulls.push(PullRequest {
                kind: SetKind::Pull,
                set: landing::numbered(SetKind::Pull, next),
                low,
                below: None,
            });
        }
    }
    if spec.mode == LoadMode::Incremental
        && let (Some(r), Some((_, WatermarkKind::Time(t)))) = (&spec.daily_reload, &watermark)
        && let Some((day, lo, hi)) = due_day(r, now, t.canonical() == "DATE")
        && !o.landing.day_complete(&day)
        && !o.landing.day_started_recently(&day, stale_ms)
    {
        out.pulls.push(PullRequest {
            kind: SetKind::Day,
            set: format!("{}{day}", SetKind::Day.prefix()),
            low: Some(lo),
            below: Some(hi),
        });
    }
    out.extraction = Some(x);
    out
}

/// `high` (database text, UTC) moved back by `by`, in the same format.
fn back_by(high: &str, by: std::time::Duration, date: bool) -> String {
    let parsed = chrono::NaiveDateTime::parse_from_str(high, "%Y-%m-%d %H:%M:%S%.f").or_else(|_| {
        chrono::NaiveDate::parse_from_str(high, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
    });
    match parsed {
        Ok(t) => {
            let t = t - chrono::Duration::from_std(by).unwrap_or_default();
            if date {
                t.format("%Y-%m-%d").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
            }
        }
        Err(_) => high.to_string(),
    }
}

/// The day the daily reload re-pulls at `now` (the prior local day, once `at` has passed) and its
/// bounds as UTC watermark text.
pub fn due_day(
    r: &crate::crd::DailyReload,
    now: chrono::DateTime<chrono::Utc>,
    date: bool,
) -> Option<(String, String, String)> {
    let tz = crate::validate::database::time_zone(&r.time_zone).ok()?;
    let at = crate::validate::database::time_of_day(&r.at).ok()?;
    let local = now.with_timezone(&tz);
    if local.time() < at {
        return None;
    }
    let day = local.date_naive().pred_opt()?;
    let (lo, hi) = day_bounds(&tz, day, date)?;
    Some((day.format("%Y-%m-%d").to_string(), lo, hi))
}

/// `[start, end)` of a local day, as UTC watermark text (dates as themselves).
pub fn day_bounds(tz: &chrono_tz::Tz, day: chrono::NaiveDate, date: bool) -> Option<(String, String)> {
    use chrono::TimeZone;
    let next = day.succ_opt()?;
    if date {
        return Some((day.format("%Y-%m-%d").to_string(), next.format("%Y-%m-%d").to_string()));
    }
    let utc = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
            .earliest()
            .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    };
    Some((utc(day)?, utc(next)?))
}

/// Waits before the next attempt of an interrupted pull (4 s, 8 s, 16 s).
async fn backoff(resource: &str, set: &str, attempt: u32, error: &str) {
    let wait = std::time::Duration::from_secs(2u64 << attempt);
    tracing::warn!(resource = %resource, set = %set, attempt, error = %error, wait_s = wait.as_secs(),
        "pull interrupted; retrying");
    tokio::time::sleep(wait).await;
}

/// Runs the planned pulls of one table (deleting interrupted sets first). `Err` names what failed;
/// complete pulls before it stay complete and load.
pub async fn run(
    sources: &Sources,
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
    p: &SourcePlan,
) -> Result<PullReport, String> {
    let Some(x) = &p.extraction else {
        return Ok(PullReport::default());
    };
    let mut report = PullReport::default();
    if p.pulls.is_empty() {
        return Ok(report);
    }
    let Some(_guard) = sources.limits.begin_pull(&format!("{}/{}", x.bucket, x.prefix)) else {
        return Err("a pull of this table is already running in this process".into());
    };
    for (name, generation) in &p.cleanup {
        gcs.delete(&x.bucket, name, *generation)
            .await
            .map_err(|e| format!("cannot delete an interrupted pull's object: {e}"))?;
        report.cleaned += 1;
    }
    let db = spec_db(spec);
    let (first, url, _slot) = connect(sources, resource, spec).await?;
    let mut conn = Some(first);
    for req in &p.pulls {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let failed = |e: &conn::DbError| format!("{} of {}: {}", req.set, db.table, e.message);
        let marker = loop {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match Conn::open(db.engine, &url, &db.connection_secret.name).await {
                    Ok(c) => conn.insert(c),
                    Err(e) if e.transient && attempt < PULL_RETRIES => {
                        attempt += 1;
                        backoff(resource, &req.set, attempt, &e.message).await;
                        continue;
                    }
                    Err(e) => return Err(failed(&e)),
                },
            };
            match extract::pull(c, gcs, x, req, &url).await {
                Ok(m) => break m,
                // The connection dropped (the replica restarted, a failover): this pull's set is
                // ours and incomplete — delete it and pull again on a new connection.
                Err(e) if e.transient && attempt < PULL_RETRIES => {
                    attempt += 1;
                    conn = None;
                    backoff(resource, &req.set, attempt, &e.message).await;
                    let set_prefix = format!("{}{}/", x.prefix, req.set);
                    let objects = gcs
                        .list(&x.bucket, &set_prefix)
                        .await
                        .map_err(|e| format!("cannot list the interrupted {}: {e}", req.set))?;
                    for o in objects {
                        gcs.delete(&x.bucket, &o.name, o.generation)
                            .await
                            .map_err(|e| format!("cannot delete the interrupted {}: {e}", req.set))?;
                    }
                }
                Err(e) => return Err(failed(&e)),
            }
        };
        let d = &spec.destination;
        let mut ev = crate::audit::Event::new(
            crate::audit::Action::Pull,
            &format!("IngestedTable {resource}"),
            &format!("{}.{}.{}", d.project, d.dataset, d.table),
            &req.set,
            &req.set,
        )
        .home(&d.project, &d.location);
        ev.rows = Some(marker.rows as i64);
        ev.files = Some(marker.files as i64);
        ev.bytes = Some(marker.bytes as i64);
        ev.duration_ms = Some(started.elapsed().as_millis() as i64);
        ev.message = format!(
            "pulled {} from {} (low {:?}, below {:?}, high {:?}); {} rows rejected",
            req.set,
            spec_db(spec).table,
            req.low,
            req.below,
            marker.high,
            marker.rejected
        );
        crate::audit::record(ev);
        if marker.rejected > 0 {
            tracing::warn!(target: "bqsteward::audit", resource = %resource, set = %req.set, rows = marker.rejected,
                report = %format!("gs://{}/{}{}/{}", x.bucket, x.prefix, req.set, landing::REJECTED),
                "rows with values BigQuery cannot hold were not loaded");
        }
        report.pulls.push((req.set.clone(), marker));
    }
    if let Some(c) = conn {
        c.close().await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_moves_the_low_mark_back_in_database_text() {
        assert_eq!(
            back_by(
                "2026-11-27 10:15:00.000000",
                std::time::Duration::from_secs(1800),
                false
            ),
            "2026-11-27 09:45:00.000000"
        );
        assert_eq!(
            back_by("2026-11-27", std::time::Duration::from_secs(1800), true),
            "2026-11-26"
        );
    }

    fn spec() -> IngestedTableSpec {
        serde_yaml::from_str(
            r#"
source:
  database: {engine: mysql, table: pay.tx, connectionSecret: {name: replica}, watermark: {column: modify_time}}
  landing: gs://land/tx/
destination: {project: p, dataset: d, table: t}
schedule: {every: 15m}
schema: [{name: id, type: INT64}, {name: modify_time, type: DATETIME}]
"#,
        )
        .unwrap()
    }

    fn observed(complete_ms: i64) -> SourceObserved {
        let col = |name: &str, dt: &str| SourceColumn {
            name: name.into(),
            data_type: dt.into(),
            column_type: dt.into(),
            precision: None,
            scale: None,
            nullable: name != "modify_time",
        };
        let mut landing = Landing::default();
        landing.sets.insert(
            "pull-0000000001".into(),
            landing::SetState {
                started: true,
                complete: Some(1),
                objects: Vec::new(),
                newest_ms: complete_ms,
                complete_ms: Some(complete_ms),
            },
        );
        SourceObserved {
            columns: vec![
                col("id", "bigint"),
                col("modify_time", "datetime"),
                col("region", "char"),
            ],
            landing,
            last: Some((
                "pull-0000000001".into(),
                Marker {
                    high: Some("2026-11-27 10:00:00.000000".into()),
                    ..Marker::default()
                },
            )),
        }
    }

    #[test]
    fn pulls_follow_the_schedule_in_the_controller_and_run_when_asked() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:05:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let o = observed(now.timestamp_millis() - 5 * 60_000);
        let scheduled = plan(&spec(), &o, now, true);
        assert!(scheduled.pulls.is_empty(), "{:?}", scheduled.pulls);
        assert!(
            scheduled
                .notes
                .iter()
                .any(|n| n.contains("next pull after 2026-11-27 10:15:00 UTC"))
        );
        assert!(
            scheduled.notes.iter().any(|n| n.contains("\"region\"")),
            "{:?}",
            scheduled.notes
        );
        let asked = plan(&spec(), &o, now, false);
        assert_eq!(asked.pulls.len(), 1);
        assert_eq!(asked.pulls[0].set, "pull-0000000002");
        assert_eq!(
            asked.pulls[0].low.as_deref(),
            Some("2026-11-27 09:30:00.000000"),
            "high minus 30m"
        );
        let later = plan(&spec(), &observed(now.timestamp_millis() - 14 * 60_000), now, true);
        assert_eq!(later.pulls.len(), 1, "due within a tenth of the interval");
    }

    #[test]
    fn a_nullable_watermark_stops_pulls() {
        let mut o = observed(0);
        for c in &mut o.columns {
            c.nullable = true;
        }
        let p = plan(&spec(), &o, chrono::Utc::now(), false);
        assert!(p.pulls.is_empty(), "{:?}", p.pulls);
        assert!(
            p.problems[0].contains("\"modify_time\" is nullable on the replica"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn a_declared_column_missing_on_the_replica_stops_pulls() {
        let mut o = observed(0);
        o.columns.retain(|c| c.name != "modify_time");
        let p = plan(&spec(), &o, chrono::Utc::now(), false);
        assert!(p.pulls.is_empty() && p.extraction.is_none());
        assert!(
            p.problems[0].contains("\"modify_time\" is not on the replica table pay.tx"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn the_daily_reload_is_due_after_its_time_for_the_prior_local_day() {
        let r = crate::crd::DailyReload {
            at: "04:00".into(),
            time_zone: "Europe/Paris".into(),
        };
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        // 02:30 UTC is 03:30 in Paris: not yet.
        assert_eq!(due_day(&r, at("2026-11-27T02:30:00Z"), false), None);
        let (day, lo, hi) = due_day(&r, at("2026-11-27T03:30:00Z"), false).unwrap();
        assert_eq!(day, "2026-11-26");
        assert_eq!(lo, "2026-11-25 23:00:00.000000");
        assert_eq!(hi, "2026-11-26 23:00:00.000000");
    }
}
