//! One pull: a consistent read-only snapshot of the replica table, streamed as JSON lines into
//! part files of bounded size under one landing set, in the order [`super::landing`] describes
//! (intent first, completion marker last, every object created only if absent).

use super::conn::{Conn, DbError};
use super::landing::{self, Marker, SetKind};
use super::types::{self, Extracted, WatermarkKind};
use crate::cloud::storage::Storage;
use crate::crd::DatabaseEngine;

/// Rows with values BigQuery cannot hold, kept in memory for `_REJECTED.jsonl` (the rest counted).
const REJECTED_KEPT: usize = 10_000;

/// What one pull reads and where it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Kind of set.
    pub kind: SetKind,
    /// Folder name under the landing prefix.
    pub set: String,
    /// Rows at or after this watermark — after it, for a key watermark (none: every row).
    pub low: Option<String>,
    /// Rows before this watermark (day reloads).
    pub below: Option<String>,
}

/// The table-side facts a pull needs.
#[derive(Clone, Debug)]
pub struct Extraction {
    /// Engine.
    pub engine: DatabaseEngine,
    /// Replica schema and table.
    pub schema: String,
    /// Replica table.
    pub table: String,
    /// Columns to read, in declared order (excluded and undeclared columns never are).
    pub columns: Vec<Extracted>,
    /// Watermark column (replica name) and kind.
    pub watermark: Option<(String, WatermarkKind)>,
    /// Landing bucket.
    pub bucket: String,
    /// Landing object prefix (ends in `/`).
    pub prefix: String,
    /// Bytes per part file.
    pub file_bytes: usize,
    /// Statement timeout.
    pub timeout: std::time::Duration,
    /// Declared primary key (JSON keys), for the rejected-rows report.
    pub primary_key: Vec<String>,
    /// PII columns (JSON keys, lowercase): never reported with their value.
    pub pii: Vec<String>,
}

impl Extraction {
    fn qualified_table(&self) -> String {
        format!(
            "{}.{}",
            types::quote(self.engine, &self.schema),
            types::quote(self.engine, &self.table)
        )
    }

    /// The watermark bound `op` (`>=`, `<`) against bind number `n`, typed for the engine.
    fn bound(&self, op: &str, n: usize) -> Option<String> {
        let (col, kind) = self.watermark.as_ref()?;
        let q = types::quote(self.engine, col);
        Some(match self.engine {
            DatabaseEngine::Mysql => format!("{q} {op} ?"),
            DatabaseEngine::Postgres => {
                let cast = match kind {
                    WatermarkKind::Time(t) => match t.canonical() {
                        "TIMESTAMP" => format!("(${n}::timestamp AT TIME ZONE 'UTC')"),
                        "DATE" => format!("${n}::date"),
                        _ => format!("${n}::timestamp"),
                    },
                    WatermarkKind::Key => format!("${n}::numeric"),
                };
                format!("{q} {op} {cast}")
            }
        })
    }

    /// The extraction query and its binds.
    pub fn query(&self, req: &PullRequest) -> (String, Vec<String>) {
        let mut wheres = Vec::new();
        let mut binds = Vec::new();
        // A time watermark re-reads from the low mark (the overlap); a key watermark starts after
        // the greatest key already read.
        let op = match &self.watermark {
            Some((_, WatermarkKind::Key)) => ">",
            _ => ">=",
        };
        if let Some(low) = &req.low
            && let Some(w) = self.bound(op, binds.len() + 1)
        {
            wheres.push(w);
            binds.push(low.clone());
        }
        if let Some(below) = &req.below
            && let Some(w) = self.bound("<", binds.len() + 1)
        {
            wheres.push(w);
            binds.push(below.clone());
        }
        let filter = if wheres.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", wheres.join(" AND "))
        };
        let bad = types::bad_values(self.engine, &self.columns);
        let row = types::row_json(self.engine, &self.columns);
        let sql = match self.engine {
            DatabaseEngine::Mysql => format!("SELECT {row}, {bad} FROM {}{filter}", self.qualified_table()),
            DatabaseEngine::Postgres => format!(
                "SELECT (SELECT row_to_json(_bqsteward_row)::text FROM (SELECT {row}) _bqsteward_row), {bad} FROM {}{filter}",
                self.qualified_table()
            ),
        };
        (sql, binds)
    }

    /// The statements that open the consistent, read-only snapshot with the timeout.
    fn begin(&self) -> Vec<String> {
        let secs = self.timeout.as_secs().max(1);
        match self.engine {
            // The MySQL timeout is a session variable, set before (see `pull`).
            DatabaseEngine::Mysql => vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ".into(),
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY".into(),
            ],
            DatabaseEngine::Postgres => vec![
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into(),
                format!("SET LOCAL statement_timeout = '{secs}s'"),
            ],
        }
    }

    /// The database clock (UTC) and the greatest watermark value of this snapshot.
    fn high_query(&self) -> String {
        let clock = clock(self.engine);
        match &self.watermark {
            Some((col, WatermarkKind::Key)) => {
                let q = types::quote(self.engine, col);
                let max = match self.engine {
                    DatabaseEngine::Mysql => format!("(SELECT CAST(MAX({q}) AS CHAR) FROM {})", self.qualified_table()),
                    DatabaseEngine::Postgres => format!("(SELECT MAX({q})::text FROM {})", self.qualified_table()),
                };
                format!("SELECT {clock}, {max}")
            }
            Some((col, WatermarkKind::Time(t))) => {
                let q = types::quote(self.engine, col);
                let table = self.qualified_table();
                let max = match (self.engine, t.canonical()) {
                    (DatabaseEngine::Mysql, "DATE") => {
                        format!("(SELECT DATE_FORMAT(MAX({q}), '%Y-%m-%d') FROM {table})")
                    }
                    (DatabaseEngine::Mysql, _) => {
                        format!("(SELECT DATE_FORMAT(MAX({q}), '%Y-%m-%d %H:%i:%s.%f') FROM {table})")
                    }
                    (DatabaseEngine::Postgres, "DATE") => {
                        format!("(SELECT to_char(MAX({q}), 'YYYY-MM-DD') FROM {table})")
                    }
                    (DatabaseEngine::Postgres, "TIMESTAMP") => format!(
                        "(SELECT to_char(MAX({q}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM {table})"
                    ),
                    (DatabaseEngine::Postgres, _) => {
                        format!("(SELECT to_char(MAX({q}), 'YYYY-MM-DD HH24:MI:SS.US') FROM {table})")
                    }
                };
                format!("SELECT {clock}, {max}")
            }
            None => format!("SELECT {clock}, NULL"),
        }
    }
}

/// The database clock in UTC as `YYYY-MM-DD HH:MM:SS.ffffff` (an expression).
pub fn clock(engine: DatabaseEngine) -> &'static str {
    match engine {
        DatabaseEngine::Mysql => "DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')",
        DatabaseEngine::Postgres => "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    }
}

/// Runs one pull into its set. `Err` leaves the set without `_COMPLETE`: it is never loaded, and a
/// later pull supersedes it.
pub async fn pull(
    conn: &mut Conn,
    gcs: &dyn Storage,
    x: &Extraction,
    req: &PullRequest,
    url: &super::secrets::SecretText,
) -> Result<Marker, DbError> {
    let name = |file: &str| format!("{}{}/{file}", x.prefix, req.set);
    let intent = Marker {
        low: req.low.clone(),
        below: req.below.clone(),
        ..Marker::default()
    };
    let body = serde_json::to_vec(&intent).unwrap_or_default();
    match gcs
        .create(&x.bucket, &name(landing::INTENT), body, "application/json")
        .await
    {
        Ok(_) => {}
        Err(e) if e.status() == Some(412) => {
            return Err(DbError::fatal(format!(
                "{} was started by another process (gs://{}/{}): one pull per table at a time",
                req.set,
                x.bucket,
                name(landing::INTENT)
            )));
        }
        // Not retried here, even when transient: without the intent this process does not know
        // whether the folder is its own, and only its own folder may be deleted and pulled again.
        Err(e) => return Err(DbError::fatal(format!("cannot start {}: {e}", req.set))),
    }
    let db = |what: &str, e: sqlx::Error| DbError::sqlx(what, &e, url);
    if x.engine == DatabaseEngine::Mysql {
        conn.mysql_statement_timeout(x.timeout)
            .await
            .map_err(|e| db("cannot set the statement timeout", e))?;
    }
    for stmt in x.begin() {
        conn.exec(&stmt)
            .await
            .map_err(|e| db("cannot open a consistent read-only snapshot", e))?;
    }
    let high = conn
        .texts(&x.high_query(), &[])
        .await
        .map_err(|e| db("cannot read the database clock", e))?;
    let (db_time, max_key) = match high.into_iter().next() {
        Some(mut r) if r.len() == 2 => (r[0].take(), r[1].take()),
        _ => (None, None),
    };
    // The high mark is what this snapshot holds: the greatest key, or the greatest time — bounded
    // by the database's clock (a row stamped in the future does not move it ahead), so a lagging
    // replica or a column written in another zone never makes the next pull skip rows. Same-format
    // text compares like the times it spells.
    let high = match &x.watermark {
        Some((_, WatermarkKind::Key)) => max_key.or_else(|| req.low.clone()),
        Some((_, WatermarkKind::Time(t))) => {
            let clock = db_time.as_ref().map(|c| {
                if t.canonical() == "DATE" {
                    c[..10].to_string()
                } else {
                    c.clone()
                }
            });
            match (max_key, clock) {
                (Some(m), Some(c)) => Some(m.min(c)),
                (None, _) => req.low.clone(),
                (m, None) => m,
            }
        }
        None => db_time.clone(),
    };
    let (sql, binds) = x.query(req);
    tracing::debug!(table = %x.qualified_table(), set = %req.set, "pulling");
    let mut marker = Marker {
        low: req.low.clone(),
        below: req.below.clone(),
        high,
        db_time,
        ..Marker::default()
    };
    let mut rejected = String::new();
    let mut buf: Vec<u8> = Vec::with_capacity(x.file_bytes.min(8 << 20) + 4096);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<super::conn::TextRow>(1024);
    let consume = async {
        while let Some(row) = rx.recv().await {
            let mut it = row.into_iter();
            let line = it.next().flatten();
            let mut bad = it.next().flatten().unwrap_or_default();
            // MySQL's CONCAT gives NULL for a row longer than max_allowed_packet: never an empty line.
            let line = match line {
                Some(l) if !l.is_empty() => l,
                _ => {
                    bad = "(row too large to encode: raise max_allowed_packet)".into();
                    String::new()
                }
            };
            if !bad.is_empty() {
                marker.rejected += 1;
                if marker.rejected as usize <= REJECTED_KEPT {
                    rejected.push_str(&reject_line(x, &line, &bad));
                    rejected.push('\n');
                }
                continue;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            marker.rows += 1;
            if buf.len() >= x.file_bytes {
                // On failure the receiver is dropped, which stops the query.
                write_part(gcs, x, req, &mut marker, &mut buf).await?;
            }
        }
        Ok::<(), DbError>(())
    };
    let (read, written) = tokio::join!(conn.rows(&sql, &binds, tx), consume);
    written?;
    read.map_err(|e| db("pull failed", e))?;
    if !buf.is_empty() {
        write_part(gcs, x, req, &mut marker, &mut buf).await?;
    }
    conn.exec("COMMIT")
        .await
        .map_err(|e| db("cannot close the snapshot", e))?;
    if !rejected.is_empty() {
        gcs.create(
            &x.bucket,
            &name(landing::REJECTED),
            rejected.into_bytes(),
            "application/x-ndjson",
        )
        .await
        .map_err(|e| DbError::fatal(format!("cannot write {}: {e}", landing::REJECTED)))?;
    }
    let body = serde_json::to_vec(&marker).unwrap_or_default();
    gcs.create(&x.bucket, &name(landing::COMPLETE), body, "application/json")
        .await
        .map_err(|e| DbError::fatal(format!("cannot complete {}: {e}", req.set)))?;
    Ok(marker)
}

async fn write_part(
    gcs: &dyn Storage,
    x: &Extraction,
    req: &PullRequest,
    marker: &mut Marker,
    buf: &mut Vec<u8>,
) -> Result<(), DbError> {
    let object = format!("{}{}/{}", x.prefix, req.set, landing::part(marker.files));
    let data = std::mem::take(buf);
    let len = data.len() as u64;
    gcs.create(&x.bucket, &object, data, "application/x-ndjson")
        .await
        .map_err(|e| DbError::fatal(format!("cannot write gs://{}/{object}: {e}", x.bucket)))?;
    marker.files += 1;
    marker.bytes += len;
    Ok(())
}

/// One `_REJECTED.jsonl` line: the row's key, the columns at fault, and their values unless PII.
fn reject_line(x: &Extraction, line: &str, bad: &str) -> String {
    let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap_or_default();
    let pick = |k: &String| {
        row.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(n, v)| (n.clone(), v.clone()))
    };
    let key: serde_json::Map<_, _> = x.primary_key.iter().filter_map(pick).collect();
    let columns: Vec<String> = bad.split(',').map(str::to_string).collect();
    let values: serde_json::Map<_, _> = columns
        .iter()
        .filter(|c| !x.pii.contains(&c.to_lowercase()))
        .filter_map(pick)
        .collect();
    serde_json::json!({ "key": key, "columns": columns, "values": values }).to_string()
}
