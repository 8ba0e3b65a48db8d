//! The load ledger: which object generations were loaded into which table, by which batch and
//! job, how many rows, when; and which were quarantined and why. It lives in BigQuery, in a
//! hidden dataset of the destination project (`_bqsteward_<location>`), so it survives restarts,
//! needs no state in Kubernetes and can be queried with SQL:
//!
//! ```sql
//! SELECT state, COUNT(*) FROM `proj._bqsteward_us.load_files`
//! WHERE table_ref = 'proj.sales.orders' GROUP BY state
//! ```
//!
//! Both tables are append-only event logs; a file's state is its latest event. Every write is a
//! job with a deterministic id, so it happens once. The batch row is written before the file
//! rows: the file rows are what a resumed run checks, so once they exist the batch row does too.
//! (Not one multi-statement transaction: bqemulator does not bind parameters inside scripts.)

use super::model::{BatchKind, BatchMeta, Category, Entry, FileState, Ledger, SourceFile};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{Field, Param, TableDef, TableRef};
use std::collections::BTreeMap;

/// Files table.
pub const FILES_TABLE: &str = "load_files";
/// Batches table.
pub const BATCHES_TABLE: &str = "load_batches";
/// Listing cursors of sources whose names sort by arrival (`source.ordering: Lexical`).
pub const CURSORS_TABLE: &str = "load_cursors";

/// How far back the latest cursor of a table is looked for (a table idle longer gets a full
/// listing, which writes a fresh one): bounds the bytes the read costs.
const CURSOR_DAYS: u32 = 2;

/// How far back the latest quarantined files of a table are looked for (status): a file's latest
/// event falls in the window or the file is not among the latest.
const RECENT_DAYS: u32 = 7;

/// A table's listing cursor, as last recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Lists start at this URI (inclusive).
    pub uri: String,
    /// When the whole prefix was last listed (ms).
    pub full_listing_ms: i64,
    /// The `bqsteward.dev/full-listing` annotation value the last full listing answered.
    pub token: String,
    /// The table's totals when the cursor was recorded, so a cycle listed from the cursor reads
    /// only what lies past it (set by the insert, see [`LedgerTables::cursor_sql`]).
    pub totals: Totals,
}

/// A table's ledger totals kept with its cursor: file counts of the URIs before the cursor (all
/// settled: the cursor never passes a file still to load) and batch totals up to `at_us`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Files before the cursor whose latest state is LOADED.
    pub files_loaded: i64,
    /// Files before the cursor whose latest state is QUARANTINED.
    pub quarantined: i64,
    /// Rows moved by loaded batches recorded up to `at_us`.
    pub rows_loaded: i64,
    /// Latest loaded batch up to `at_us` (ms; 0 for none).
    pub last_load_ms: i64,
    /// When the totals were taken (microseconds since the epoch, as BigQuery keeps time).
    pub at_us: i64,
}

impl Cursor {
    /// Whether `other` lists from the same place with the same full-listing state (totals aside).
    pub fn same_place(&self, other: &Cursor) -> bool {
        self.uri == other.uri && self.full_listing_ms == other.full_listing_ms && self.token == other.token
    }
}

fn cursors_schema() -> Vec<Field> {
    [
        ("table_ref", "STRING", "REQUIRED"),
        ("cursor", "STRING", "REQUIRED"),
        ("full_listing_at", "TIMESTAMP", "REQUIRED"),
        ("token", "STRING", "NULLABLE"),
        ("recorded_at", "TIMESTAMP", "REQUIRED"),
        ("files_loaded", "INT64", "REQUIRED"),
        ("quarantined", "INT64", "REQUIRED"),
        ("rows_loaded", "INT64", "REQUIRED"),
        ("last_load_ms", "INT64", "REQUIRED"),
        ("totals_at", "TIMESTAMP", "REQUIRED"),
    ]
    .iter()
    .map(|(n, t, m)| Field::new(n, t, m))
    .collect()
}

/// The bqsteward dataset of a location: `_bqsteward_us`, `_bqsteward_europe_west1`. A leading
/// underscore hides it in the BigQuery console; one per location because a query (the move
/// from staging) cannot span locations.
pub fn dataset_for(location: &str) -> String {
    let loc: String = location
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("_bqsteward_{loc}")
}

fn files_schema() -> Vec<Field> {
    [
        ("table_ref", "STRING", "REQUIRED"),
        ("uri", "STRING", "REQUIRED"),
        ("generation", "INT64", "REQUIRED"),
        ("size", "INT64", "NULLABLE"),
        ("updated_at", "TIMESTAMP", "NULLABLE"),
        ("state", "STRING", "REQUIRED"),
        ("batch_id", "STRING", "REQUIRED"),
        ("kind", "STRING", "NULLABLE"),
        ("reload_id", "STRING", "NULLABLE"),
        ("replaces", "STRING", "NULLABLE"),
        ("category", "STRING", "NULLABLE"),
        ("message", "STRING", "NULLABLE"),
        ("schema_hash", "STRING", "NULLABLE"),
        ("recorded_at", "TIMESTAMP", "REQUIRED"),
    ]
    .iter()
    .map(|(n, t, m)| Field::new(n, t, m))
    .collect()
}

fn batches_schema() -> Vec<Field> {
    [
        ("table_ref", "STRING", "REQUIRED"),
        ("batch_id", "STRING", "REQUIRED"),
        ("state", "STRING", "REQUIRED"),
        ("kind", "STRING", "NULLABLE"),
        ("files", "INT64", "NULLABLE"),
        ("bytes", "INT64", "NULLABLE"),
        ("rows", "INT64", "NULLABLE"),
        ("load_jobs", "INT64", "NULLABLE"),
        ("job_id", "STRING", "NULLABLE"),
        ("reload_id", "STRING", "NULLABLE"),
        ("message", "STRING", "NULLABLE"),
        ("recorded_at", "TIMESTAMP", "REQUIRED"),
    ]
    .iter()
    .map(|(n, t, m)| Field::new(n, t, m))
    .collect()
}

/// The ledger of one location of one project.
#[derive(Clone, Debug)]
pub struct LedgerTables {
    /// Project.
    pub project: String,
    /// Location.
    pub location: String,
    /// Dataset (`_bqsteward_<location>`).
    pub dataset: String,
}

/// One file event to write.
#[derive(Clone, Debug)]
pub struct FileEvent<'a> {
    /// The file.
    pub file: &'a SourceFile,
    /// New state.
    pub state: FileState,
    /// Batch.
    pub batch: &'a BatchMeta,
    /// Quarantine category.
    pub category: Option<Category>,
    /// Error text (quarantine).
    pub message: Option<&'a str>,
}

/// One batch event to write.
#[derive(Clone, Debug)]
pub struct BatchEvent<'a> {
    /// Batch.
    pub batch: &'a BatchMeta,
    /// `LOADED`, `QUARANTINED`, `SPLIT` or `ABANDONED`.
    pub state: &'a str,
    /// Files.
    pub files: i64,
    /// Bytes.
    pub bytes: i64,
    /// Rows moved into the destination.
    pub rows: i64,
    /// Load jobs this batch used (failed ones too).
    pub load_jobs: i64,
    /// The job that moved the rows (or failed).
    pub job_id: &'a str,
    /// Error text.
    pub message: Option<&'a str>,
}

/// Aggregates for status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Files whose latest state is LOADED.
    pub files_loaded: i64,
    /// Rows moved by loaded batches.
    pub rows_loaded: i64,
    /// Latest load (ms since the epoch).
    pub last_load_ms: Option<i64>,
    /// Load jobs recorded today (UTC).
    pub jobs_today: i64,
    /// Files whose latest state is QUARANTINED.
    pub quarantined: i64,
    /// The latest few quarantined files: uri, generation, category, message.
    pub recent_quarantined: Vec<(String, i64, String, String)>,
}

impl LedgerTables {
    /// The ledger for `project` in `location`.
    pub fn new(project: &str, location: &str) -> LedgerTables {
        LedgerTables {
            project: project.into(),
            location: location.into(),
            dataset: dataset_for(location),
        }
    }

    /// `project.dataset.table` of a ledger or staging table.
    pub fn table(&self, name: &str) -> TableRef {
        TableRef::new(&self.project, &self.dataset, name)
    }

    /// Creates the dataset and both tables if missing.
    pub async fn ensure(&self, bq: &dyn BigQuery) -> Result<(), CloudError> {
        bq.create_dataset(&self.project, &self.dataset, &self.location).await?;
        for (name, fields, cluster) in [
            (FILES_TABLE, files_schema(), vec!["table_ref", "uri"]),
            (BATCHES_TABLE, batches_schema(), vec!["table_ref", "batch_id"]),
            (CURSORS_TABLE, cursors_schema(), vec!["table_ref"]),
        ] {
            let t = self.table(name);
            if bq.get_table(&t).await?.is_none() {
                bq.create_table(&TableDef {
                    table: t,
                    fields,
                    time_partitioning: Some(serde_json::json!({"type": "DAY", "field": "recorded_at"})),
                    clustering: Some(serde_json::json!({ "fields": cluster })),
                    require_partition_filter: false,
                    labels: BTreeMap::from([(
                        crate::cloud::bqtypes::LABEL_MANAGED_BY.to_string(),
                        "bqsteward".to_string(),
                    )]),
                    expiration_ms: None,
                    description: Some("bqsteward load ledger (append-only events; latest event per file wins)".into()),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Whether the ledger tables exist (plan must not create them).
    pub async fn exists(&self, bq: &dyn BigQuery) -> Result<bool, CloudError> {
        Ok(bq.get_table(&self.table(FILES_TABLE)).await?.is_some()
            && bq.get_table(&self.table(BATCHES_TABLE)).await?.is_some())
    }

    /// The statements (with parameters) that append `batches`, then `files`, each tagged with a
    /// job-id suffix.
    pub fn write_sql(
        &self,
        table_ref: &str,
        files: &[FileEvent<'_>],
        batches: &[BatchEvent<'_>],
    ) -> Vec<(&'static str, String, Vec<Param>)> {
        let mut out = Vec::new();
        if !batches.is_empty() {
            let (sql, params) = self.batches_sql(table_ref, batches);
            out.push(("b", sql, params));
        }
        if !files.is_empty() {
            let (sql, params) = self.files_sql(table_ref, files);
            out.push(("f", sql, params));
        }
        out
    }

    fn files_sql(&self, table_ref: &str, files: &[FileEvent<'_>]) -> (String, Vec<Param>) {
        let mut sql = String::new();
        let mut params = vec![Param::string("table_ref", table_ref)];
        {
            let col = |name: &str, f: &dyn Fn(&FileEvent<'_>) -> String| Param::strings(name, files.iter().map(f));
            params.push(col("f_uri", &|e| e.file.uri.clone()));
            params.push(Param::ints("f_gen", files.iter().map(|e| e.file.generation)));
            params.push(Param::ints("f_size", files.iter().map(|e| e.file.size as i64)));
            params.push(Param::ints("f_updated", files.iter().map(|e| e.file.updated_ms)));
            params.push(col("f_state", &|e| e.state.as_str().into()));
            params.push(col("f_batch", &|e| e.batch.id.clone()));
            params.push(col("f_kind", &|e| e.batch.kind.as_str().into()));
            params.push(col("f_reload", &|e| e.batch.reload_id.clone()));
            params.push(col("f_replaces", &|e| e.batch.replaces.join(",")));
            params.push(col("f_category", &|e| {
                e.category.map(|c| c.as_str()).unwrap_or("").into()
            }));
            params.push(col("f_message", &|e| {
                e.message.unwrap_or("").chars().take(2000).collect()
            }));
            params.push(col("f_schema", &|e| e.batch.schema_hash.clone()));
            sql.push_str(&format!(
                "INSERT INTO {t} (table_ref, uri, generation, size, updated_at, state, batch_id, kind, reload_id, \
                 replaces, category, message, schema_hash, recorded_at)\n\
                 SELECT @table_ref, uri, f_gen, f_size, TIMESTAMP_MILLIS(f_updated), f_state, f_batch, f_kind, f_reload, \
                 f_replaces, NULLIF(f_category, ''), NULLIF(f_message, ''), f_schema, CURRENT_TIMESTAMP()\n\
                 FROM UNNEST(@f_uri) AS uri WITH OFFSET AS i\n{joins}",
                t = self.table(FILES_TABLE).sql(),
                joins = zip_joins(&["f_gen", "f_size", "f_updated", "f_state", "f_batch", "f_kind", "f_reload",
                    "f_replaces", "f_category", "f_message", "f_schema"])
            ));
        }
        (sql, params)
    }

    fn batches_sql(&self, table_ref: &str, batches: &[BatchEvent<'_>]) -> (String, Vec<Param>) {
        let mut sql = String::new();
        let mut params = vec![Param::string("table_ref", table_ref)];
        {
            let strs = |name: &str, f: &dyn Fn(&BatchEvent<'_>) -> String| Param::strings(name, batches.iter().map(f));
            let ints = |name: &str, f: &dyn Fn(&BatchEvent<'_>) -> i64| Param::ints(name, batches.iter().map(f));
            params.push(strs("b_id", &|b| b.batch.id.clone()));
            params.push(strs("b_state", &|b| b.state.into()));
            params.push(strs("b_kind", &|b| b.batch.kind.as_str().into()));
            params.push(ints("b_files", &|b| b.files));
            params.push(ints("b_bytes", &|b| b.bytes));
            params.push(ints("b_rows", &|b| b.rows));
            params.push(ints("b_jobs", &|b| b.load_jobs));
            params.push(strs("b_job", &|b| b.job_id.into()));
            params.push(strs("b_reload", &|b| b.batch.reload_id.clone()));
            params.push(strs("b_message", &|b| {
                b.message.unwrap_or("").chars().take(2000).collect()
            }));
            sql.push_str(&format!(
                "INSERT INTO {t} (table_ref, batch_id, state, kind, files, bytes, rows, load_jobs, job_id, reload_id, message, recorded_at)\n\
                 SELECT @table_ref, id, b_state, b_kind, b_files, b_bytes, b_rows, b_jobs, b_job, b_reload, \
                 NULLIF(b_message, ''), CURRENT_TIMESTAMP()\n\
                 FROM UNNEST(@b_id) AS id WITH OFFSET AS i\n{joins}",
                t = self.table(BATCHES_TABLE).sql(),
                joins = zip_joins(&["b_state", "b_kind", "b_files", "b_bytes", "b_rows", "b_jobs", "b_job", "b_reload", "b_message"])
            ));
        }
        (sql, params)
    }

    /// Reads the latest event of every file generation of `table_ref`. `reload_id` marks files
    /// already loaded by that re-ingestion request.
    pub async fn read(
        &self,
        bq: &dyn BigQuery,
        table_ref: &str,
        reload_id: Option<&str>,
    ) -> Result<Ledger, CloudError> {
        self.read_from(bq, table_ref, reload_id, None).await
    }

    /// [`LedgerTables::read`] of the URIs at or after `from` (a listing cursor): the rows are
    /// clustered by table and URI, so the read costs what lies past the cursor.
    pub async fn read_from(
        &self,
        bq: &dyn BigQuery,
        table_ref: &str,
        reload_id: Option<&str>,
        from: Option<&str>,
    ) -> Result<Ledger, CloudError> {
        let sql = format!(
            "SELECT uri, generation, size, UNIX_MILLIS(updated_at) AS updated_ms, state, batch_id, kind, reload_id, \
             replaces, category, schema_hash, reloaded FROM (\n\
               SELECT *, MAX(IF(state = 'LOADED' AND reload_id = @reload, 1, 0)) OVER (PARTITION BY uri, generation) AS reloaded,\n\
                 ROW_NUMBER() OVER (PARTITION BY uri, generation ORDER BY recorded_at DESC) AS rn\n\
               FROM {t} WHERE table_ref = @table_ref AND uri >= @from_uri)\n\
             WHERE rn = 1",
            t = self.table(FILES_TABLE).sql()
        );
        let params = [
            Param::string("table_ref", table_ref),
            Param::string("from_uri", from.unwrap_or("")),
            // Ordinary loads have reload_id ''; a value no request can have matches nothing.
            Param::string("reload", reload_id.unwrap_or("\u{1}")),
        ];
        let mut ledger = Ledger::default();
        let mut bad: Option<String> = None;
        bq.query_each(&self.project, &self.location, &sql, &params, &mut |_, row| {
            if let Err(e) = add_row(&mut ledger, row)
                && bad.is_none()
            {
                bad = Some(e);
            }
        })
        .await?;
        match bad {
            Some(message) => Err(CloudError::Decode {
                api: "bigquery",
                operation: format!("read ledger of {table_ref}"),
                message,
            }),
            None => Ok(ledger),
        }
    }

    /// The latest listing cursor of `table_ref` recorded in the last two days, if any (a missing
    /// cursors table reads as none).
    pub async fn cursor(&self, bq: &dyn BigQuery, table_ref: &str) -> Result<Option<Cursor>, CloudError> {
        if bq.get_table(&self.table(CURSORS_TABLE)).await?.is_none() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT cursor, CAST(UNIX_MILLIS(full_listing_at) AS STRING), COALESCE(token, ''), \
             CAST(files_loaded AS STRING), CAST(quarantined AS STRING), CAST(rows_loaded AS STRING), \
             CAST(last_load_ms AS STRING), CAST(UNIX_MICROS(totals_at) AS STRING) FROM {t} \
             WHERE table_ref = @table_ref AND recorded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {CURSOR_DAYS} DAY) \
             ORDER BY recorded_at DESC LIMIT 1",
            t = self.table(CURSORS_TABLE).sql()
        );
        let rows = bq
            .query(
                &self.project,
                &self.location,
                &sql,
                &[Param::string("table_ref", table_ref)],
            )
            .await?;
        Ok(rows.rows.into_iter().next().map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let int = |i: usize| get(i).parse().unwrap_or(0);
            Cursor {
                uri: get(0),
                full_listing_ms: int(1),
                token: get(2),
                totals: Totals {
                    files_loaded: int(3),
                    quarantined: int(4),
                    rows_loaded: int(5),
                    last_load_ms: int(6),
                    at_us: int(7),
                },
            }
        }))
    }

    /// The statement recording `c` as `table_ref`'s cursor, with the totals that go with it:
    /// counted whole after a full listing (`prev` is `None`), otherwise `prev`'s totals plus the
    /// files between the two cursors and the batches recorded since `prev` — a window that does
    /// not grow with the table's history (the files are clustered by URI, the batches partitioned
    /// by day).
    pub fn cursor_sql(&self, table_ref: &str, c: &Cursor, prev: Option<&Cursor>) -> (String, Vec<Param>) {
        let base = prev.map(|p| p.totals.clone()).unwrap_or_default();
        (
            format!(
                "INSERT INTO {t} (table_ref, cursor, full_listing_at, token, recorded_at, files_loaded, quarantined, \
                 rows_loaded, last_load_ms, totals_at)\n\
                 SELECT @table_ref, @cursor, TIMESTAMP_MILLIS(@full), @token, CURRENT_TIMESTAMP(), \
                 @files_loaded + f.loaded, @quarantined + f.quarantined, @rows_loaded + b.rows, \
                 GREATEST(@last_load, COALESCE(b.last_load, 0)), CURRENT_TIMESTAMP()\n\
                 FROM (SELECT COUNTIF(state = 'LOADED') AS loaded, COUNTIF(state = 'QUARANTINED') AS quarantined FROM (\
                   SELECT state, ROW_NUMBER() OVER (PARTITION BY uri, generation ORDER BY recorded_at DESC) AS rn \
                   FROM {files} WHERE table_ref = @table_ref AND uri >= @from_uri AND uri < @cursor) WHERE rn = 1) AS f,\n\
                 (SELECT COALESCE(SUM(rows), 0) AS rows, UNIX_MILLIS(MAX(recorded_at)) AS last_load FROM {batches} \
                   WHERE table_ref = @table_ref AND state = 'LOADED' AND recorded_at > TIMESTAMP_MICROS(@since)) AS b",
                t = self.table(CURSORS_TABLE).sql(),
                files = self.table(FILES_TABLE).sql(),
                batches = self.table(BATCHES_TABLE).sql(),
            ),
            vec![
                Param::string("table_ref", table_ref),
                Param::string("cursor", &c.uri),
                Param::int("full", c.full_listing_ms),
                Param::string("token", &c.token),
                Param::string("from_uri", prev.map_or("", |p| p.uri.as_str())),
                Param::int("files_loaded", base.files_loaded),
                Param::int("quarantined", base.quarantined),
                Param::int("rows_loaded", base.rows_loaded),
                Param::int("last_load", base.last_load_ms),
                Param::int("since", base.at_us),
            ],
        )
    }

    /// Aggregates for the status of `table_ref`. With `since` (a cycle listed from that cursor)
    /// only what was recorded after the cursor's totals is read and added to them; the file
    /// counts past the cursor come from the ledger window the cycle read (added by
    /// [`super::target::observe`]). Without it the whole history is counted (a full listing, which
    /// reads it anyway). Quarantined files are listed from the last seven days either way.
    pub async fn stats(&self, bq: &dyn BigQuery, table_ref: &str, since: Option<&Cursor>) -> Result<Stats, CloudError> {
        let files = self.table(FILES_TABLE).sql();
        let batches = self.table(BATCHES_TABLE).sql();
        let base = since.map(|c| c.totals.clone()).unwrap_or_default();
        let p = [Param::string("table_ref", table_ref), Param::int("since", base.at_us)];
        let counts = if since.is_some() {
            "(SELECT 0 AS files_loaded, 0 AS quarantined)".to_string()
        } else {
            format!(
                "(SELECT COUNTIF(state = 'LOADED') AS files_loaded, COUNTIF(state = 'QUARANTINED') AS quarantined FROM (\
                 SELECT state, ROW_NUMBER() OVER (PARTITION BY uri, generation ORDER BY recorded_at DESC) AS rn \
                 FROM {files} WHERE table_ref = @table_ref) WHERE rn = 1)"
            )
        };
        let sql = format!(
            "SELECT f.files_loaded, f.quarantined, b.rows_loaded, b.last_load_ms, j.jobs_today FROM {counts} AS f,\n\
             (SELECT COALESCE(SUM(rows), 0) AS rows_loaded, UNIX_MILLIS(MAX(recorded_at)) AS last_load_ms FROM {batches} \
               WHERE table_ref = @table_ref AND state = 'LOADED' AND recorded_at > TIMESTAMP_MICROS(@since)) AS b,\n\
             (SELECT COALESCE(SUM(load_jobs), 0) AS jobs_today FROM {batches} WHERE table_ref = @table_ref \
               AND recorded_at >= TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), DAY)) AS j"
        );
        let rows = bq.query(&self.project, &self.location, &sql, &p).await?;
        let mut stats = Stats::default();
        if let Some(r) = rows.rows.first() {
            let get = |name: &str| {
                rows.col(name)
                    .and_then(|i| r[i].as_deref())
                    .and_then(|v| v.parse::<i64>().ok())
            };
            stats.files_loaded = base.files_loaded + get("files_loaded").unwrap_or(0);
            stats.quarantined = base.quarantined + get("quarantined").unwrap_or(0);
            stats.rows_loaded = base.rows_loaded + get("rows_loaded").unwrap_or(0);
            stats.last_load_ms = get("last_load_ms")
                .into_iter()
                .chain((base.last_load_ms > 0).then_some(base.last_load_ms))
                .max();
            stats.jobs_today = get("jobs_today").unwrap_or(0);
        }
        let recent = format!(
            "SELECT uri, generation, category, message FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY uri, generation ORDER BY recorded_at DESC) AS rn \
               FROM {files} WHERE table_ref = @table_ref \
               AND recorded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {RECENT_DAYS} DAY)) \
             WHERE rn = 1 AND state = 'QUARANTINED' ORDER BY recorded_at DESC, uri LIMIT 5"
        );
        let rows = bq.query(&self.project, &self.location, &recent, &p[..1]).await?;
        for r in rows.rows {
            let s = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            stats
                .recent_quarantined
                .push((s(0), s(1).parse().unwrap_or(0), s(2), s(3)));
        }
        Ok(stats)
    }
}

/// Joins parallel array parameters element by element (`UNNEST(@x) AS x WITH OFFSET AS x_i`,
/// joined on the offset). Indexing with `@x[OFFSET(i)]` would be shorter but bqemulator
/// translates it off by one.
fn zip_joins(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("JOIN UNNEST(@{n}) AS {n} WITH OFFSET AS {n}_i ON {n}_i = i"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds one ledger row (columns as selected by [`LedgerTables::read`]).
pub fn add_row(ledger: &mut Ledger, row: Vec<Option<String>>) -> Result<(), String> {
    let mut it = row.into_iter();
    let mut next = || it.next().flatten();
    let uri = next().ok_or("row without uri")?;
    let int = |v: Option<String>, what: &str| -> Result<i64, String> {
        v.as_deref()
            .unwrap_or("0")
            .parse()
            .map_err(|_| format!("bad {what} for {uri}"))
    };
    let generation = int(next(), "generation")?;
    let size = int(next(), "size")? as u64;
    let updated_ms = int(next(), "updated_at")?;
    let state = next()
        .as_deref()
        .and_then(FileState::parse)
        .ok_or_else(|| format!("bad state for {uri}"))?;
    let batch_id = next().ok_or_else(|| format!("no batch for {uri}"))?;
    let kind = next()
        .as_deref()
        .and_then(BatchKind::parse)
        .unwrap_or(BatchKind::Append);
    let reload_id = next().unwrap_or_default();
    let replaces = next()
        .map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let category = next().as_deref().and_then(Category::parse);
    let schema_hash = next().unwrap_or_default();
    let reloaded = next().as_deref() == Some("1");
    let batch = ledger.batch_index(BatchMeta {
        id: batch_id,
        kind,
        reload_id,
        replaces,
        schema_hash,
    });
    ledger.insert(
        &uri,
        generation,
        Entry {
            state,
            batch,
            category,
            reloaded,
            size,
            updated_ms,
        },
    );
    Ok(())
}
