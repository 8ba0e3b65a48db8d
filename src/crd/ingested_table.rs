//! `IngestedTable`: files in Cloud Storage loaded into one BigQuery table exactly once, plus its views.
// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use super::{CommonStatus, DeletionPolicy};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Files under a Cloud Storage prefix loaded into a BigQuery table exactly once (each object
/// generation once), with an optional deduplicated view (`full` layer) and a PII-free view (`clean`
/// layer).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bqsteward.dev",
    version = "v1alpha1",
    kind = "IngestedTable",
    namespaced,
    status = "IngestedTableStatus",
    shortname = "igt",
    category = "bqsteward",
    doc = "Files in Cloud Storage loaded into a BigQuery table exactly once, with dedup and PII-clean views.",
    derive = "PartialEq",
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.destination.project"),
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.destination.dataset"),
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.destination.table"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Lag", type_ = "string", json_path = ".status.lag"),
    printcolumn(name = "Files loaded", type_ = "integer", json_path = ".status.filesLoaded"),
    printcolumn(name = "Quarantined", type_ = "integer", json_path = ".status.quarantinedFiles"),
    printcolumn(
        name = "In sync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].status",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngestedTableSpec {
    /// Where the files come from.
    pub source: Source,
    /// The BigQuery table the files are loaded into. Project, dataset and table cannot be changed
    /// after creation: create a new resource instead.
    pub destination: Destination,
    /// `Incremental` (default) appends each new file once; `Snapshot` replaces the table atomically
    /// with the newest complete set of files.
    #[serde(default)]
    pub mode: LoadMode,
    /// Columns of the destination table, in order. Columns may be added later (as NULLABLE);
    /// changing a column's type is refused.
    #[schemars(length(min = 1))]
    pub schema: Vec<Column>,
    /// Columns that identify a row; the `full` view keeps exactly one row per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Column whose greatest value marks the latest version of a row (e.g. `modify_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_column: Option<String>,
    /// Columns holding personal data: absent from the `clean` view (or hashed, see
    /// `hashedPiiColumns`). They stay in the raw table and the `full` view. Each is marked on the
    /// raw table (label `bqsteward-pii-<hash>`): a column taken out of this list later stays out of
    /// the clean view until the IngestedTable releases it with the annotation
    /// `bqsteward.dev/allow-pii: "<column>, …"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii_columns: Vec<String>,
    /// PII columns that the `clean` view replaces with a keyed SHA-256 hash (hex) instead of
    /// dropping, so they can still be joined on (within tables whose full layer shares a dataset).
    /// Each must also be listed in `piiColumns`. The key is a random salt bqsteward has BigQuery
    /// generate once in the table `_bqsteward_salt` of the full layer's dataset, which clean-view
    /// readers cannot read: they cannot recover values by hashing guesses. Readers of the full layer
    /// can (they see the values anyway). Pseudonymous, not anonymous: equal values still hash
    /// equally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashed_pii_columns: Vec<String>,
    /// Fields present in the files that must never reach BigQuery (e.g. PCI card numbers): dropped
    /// during the load itself, so no table, staging included, ever holds them. They must not be in
    /// `schema`. Supported for NEWLINE_DELIMITED_JSON only (the load ignores fields not in
    /// `schema`, so other undeclared fields are dropped too); CSV, Parquet and Avro cannot drop a
    /// field during a load and are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_columns: Vec<String>,
    /// Time partitioning of the destination table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<Partitioning>,
    /// Up to four columns to cluster the destination table by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub clustering: Vec<String>,
    /// Which view layers to manage.
    #[serde(default)]
    pub views: Views,
    /// How often the controller looks for new files (and pulls a database source).
    #[serde(default)]
    pub schedule: Schedule,
    /// Database sources with a time watermark: once a day, after `at`, re-pull the whole prior
    /// day (rows whose watermark falls in it) and replace that day's rows of the raw table in one
    /// statement — removing the duplicates overlapping pulls left and rows since deleted or moved
    /// out of that day on the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_reload: Option<DailyReload>,
    /// Data-quality checks of the table against its source, each on its own schedule: for a
    /// database source a row count and an exact comparison; for files a row count per loaded
    /// batch (the rows the ledger recorded against the rows the table holds with that
    /// `_bqsteward_batch_id`, plus rows of no loaded batch). A failing check never stops loads: it sets the
    /// `InSync` condition to False, sends an event and moves the `bqsteward_check_*` metrics.
    /// `bqsteward check -f DIR` runs them once from the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    /// Limits on load jobs and bad data.
    #[serde(default)]
    pub load_policy: LoadPolicy,
    /// `Retain` (default) keeps the table, its views and its data when this resource is deleted;
    /// `Delete` drops them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Where the data comes from: files under a Cloud Storage prefix (`uri`, `format`), a table of a
/// MySQL/PostgreSQL read replica (`database`) that bqsteward extracts into `landing` and loads, or
/// a Delta Lake table on S3 (`delta`) whose data files bqsteward copies into `landing` and loads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Files: a Cloud Storage prefix, `gs://BUCKET/PREFIX/`. Every object under it is a candidate.
    /// Not with `database`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    /// A table of a MySQL (MariaDB) or PostgreSQL read replica, pulled by bqsteward into `landing`
    /// and loaded from there exactly once. Not with `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSource>,
    /// A Delta Lake table on S3 (or an S3-compatible store): bqsteward reads its transaction log
    /// from the last loaded version to the latest, copies each data file a version adds into
    /// `landing` once, and loads it as Parquet; rows of files a version removes (DELETE, UPDATE,
    /// MERGE) leave the table in the statement that adds the version's new rows, so the table
    /// mirrors the Delta table version by version. Not with `uri` or `database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaSource>,
    /// With `database` or `delta`: the Cloud Storage prefix (`gs://BUCKET/PREFIX/`, bucket first) the
    /// extracted files land under, one folder per pull (`pull-<n>/`, `day-<date>/`, `snap-<n>/`),
    /// each complete only once its `_COMPLETE` object is written. Give every table its own prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing: Option<String>,
    /// Optional glob matched against the object name after the prefix, e.g. `*.json` or
    /// `2024-*/part-*.parquet`. `*` does not cross `/`; `**` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    /// File format: NEWLINE_DELIMITED_JSON, CSV, PARQUET or AVRO. Required with `uri`; with
    /// `database` the extracted files are NEWLINE_DELIMITED_JSON and this is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SourceFormat>,
    /// Snapshot mode only: the object that marks a snapshot set complete (default `_SUCCESS`).
    /// A set is the first folder level under `uri` (e.g. `dt=2026-11-22/`); the table is replaced
    /// by the newest set that holds this marker. Set to "" to treat the newest set as complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_marker: Option<String>,
    /// CSV options (only with `format: CSV`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// How object names sort. `Lexical`: names sort by arrival (timestamped or date-partitioned
    /// names, e.g. `2026/11/27/10/events-0001.json`); each cycle then lists only from a cursor —
    /// the greatest name already loaded that was uploaded more than `lateArrival` ago — instead of
    /// the whole prefix, and reads only the ledger from there, so a cycle costs what is new, not
    /// what is old. A file whose name sorts before the cursor is found by the full listing every
    /// `fullListingEvery`. Default `Unordered`: every cycle lists the whole prefix. Incremental
    /// file sources only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// With `ordering: Lexical`: how late a file may arrive after files with greater names and
    /// still be found by the next cycle, e.g. `1h` (default). Names uploaded within this window
    /// are listed again every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_arrival: Option<String>,
    /// With `ordering: Lexical`: how often the whole prefix is listed anyway to catch stragglers
    /// (files arriving later than `lateArrival`), e.g. `24h` (default). The annotation
    /// `bqsteward.dev/full-listing` (any value; change it to ask again) or `apply --full-listing`
    /// asks for one now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_listing_every: Option<String>,
}

/// How the names of a source's objects sort.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Ordering {
    /// No order: every cycle lists the whole prefix.
    #[default]
    Unordered,
    /// Names sort by arrival: cycles list from a cursor.
    Lexical,
}

impl Source {
    /// The format of the files loaded: the declared one, NEWLINE_DELIMITED_JSON for a database
    /// source (and before validation has required one).
    pub fn format(&self) -> SourceFormat {
        if self.delta.is_some() {
            return SourceFormat::Parquet;
        }
        self.format.unwrap_or(SourceFormat::NewlineDelimitedJson)
    }

    /// The Cloud Storage prefix files are loaded from: `uri`, or `landing` for a database or Delta
    /// source.
    pub fn files_uri(&self) -> &str {
        match (self.database.is_some() || self.delta.is_some(), &self.landing) {
            (true, Some(l)) => l,
            _ => &self.uri,
        }
    }

    /// Whether the files come from `landing` (a database or Delta source), not from `uri`.
    pub fn landed(&self) -> bool {
        self.database.is_some() || self.delta.is_some()
    }
}

/// A Delta Lake table on S3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaSource {
    /// The table's root, `s3://BUCKET/PATH/` (the folder holding `_delta_log/`).
    pub uri: String,
    /// The bucket's AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// An S3-compatible endpoint instead of AWS, e.g. `https://minio.example:9000` (plain `http://`
    /// is allowed for loopback and tests only in spirit: it is used as given). Path-style requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret (in this object's namespace) holding the reader's keys: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and, for temporary credentials, `AWS_SESSION_TOKEN`. `bqsteward run`
    /// reads it from the cluster; `plan`/`apply` from `--secrets-dir DIR` (`DIR/<name>/<key>`).
    /// Give it read-only access to the table. The keys never appear in logs, errors, status or
    /// plans.
    pub credentials_secret: SecretName,
    /// Only these Delta columns are loaded (each must be declared in `schema`); the others are
    /// dropped at load. Default: the declared `schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

/// A Kubernetes Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretName {
    /// Secret name.
    pub name: String,
}

impl Source {
    /// Whether this is a Delta Lake source.
    pub fn is_delta(&self) -> bool {
        self.delta.is_some()
    }
}

/// A table of a MySQL/PostgreSQL read replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSource {
    /// `mysql` (MySQL and MariaDB) or `postgres`.
    pub engine: DatabaseEngine,
    /// `schema.table` on the replica (for MySQL the schema is the database).
    pub table: String,
    /// The Secret (in this object's namespace) and key holding the connection URL, e.g.
    /// `mysql://user:password@host:3306/db` or `postgres://user:password@host:5432/db`. Use a
    /// read-only user. `bqsteward run` reads it from the cluster; `plan`/`apply` from
    /// `--secrets-dir DIR` (`DIR/<name>/<key>`). The URL never appears in logs, errors, status or
    /// plans.
    pub connection_secret: SecretKeyRef,
    /// Incremental mode: the column whose value only grows — `modify_time` for tables with
    /// updates (TIMESTAMP or DATETIME; the dedup view then wants it as `versionColumn`), or the
    /// primary key for append-only tables (an integer). Each pull reads the rows at or after the
    /// last pull's high mark minus `overlap`; the high mark is the database's own clock (or
    /// greatest key) at the pull's consistent snapshot. Omit for `mode: Snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// How far before the last high mark each pull starts again, for delayed replicas and late
    /// commits (default `30m`; time watermarks only). Rows read twice show once in the dedup view;
    /// the daily reload removes the duplicates from the raw table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// Largest extracted file before the next one starts, in MiB (default 64; 1 to 1024). Memory
    /// per running pull stays below about this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub file_size_mib: Option<u32>,
    /// Longest a pull's query may run on the replica, e.g. `30m` (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
}

/// Database engine of a database source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseEngine {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl DatabaseEngine {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseEngine::Mysql => "mysql",
            DatabaseEngine::Postgres => "postgres",
        }
    }
}

/// A key of a Kubernetes Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret (default `url`).
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "url".to_string()
}

/// The watermark column of an incremental database pull.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Watermark {
    /// A declared column: TIMESTAMP, DATETIME or DATE for time watermarks, INT64 or NUMERIC for a
    /// growing key.
    pub column: String,
}

/// When a database source re-pulls the whole prior day.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DailyReload {
    /// Local time of day after which the prior day is re-pulled, `HH:MM` (default `04:00`).
    #[serde(default = "default_reload_at")]
    pub at: String,
    /// IANA time zone of `at` and of the day boundaries, e.g. `UTC`, `Europe/Paris` (default
    /// `UTC`): where a day starts. Connections run in UTC, so DATETIME watermark values are read
    /// as UTC wall-clock time, like TIMESTAMP ones.
    #[serde(default = "default_reload_zone")]
    pub time_zone: String,
}

/// The checks of a table against its source. For a database source both compare only rows whose
/// watermark is older than `olderThan` (by the database's clock) on both sides — the source table
/// and the table's latest version per `primaryKey` (what the `full` view shows) — so rows still on
/// their way, or changed while a check runs, never raise an alarm. For files, `rowCount` compares
/// the appended batches recorded before `olderThan` (batches replaced by a reload are left out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checks {
    /// Rows on both sides, compared exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<CheckSchedule>,
    /// Every row and value compared without copying the table: fingerprints of key ranges are
    /// computed inside the database and inside BigQuery, only ranges that differ are split, and
    /// rows are read only where a range is down to a few keys. Reports each row missing on either
    /// side and each changed value (with the key, the column and both values; `piiColumns` as
    /// "differs", never their values). JSON and REPEATED columns are compared as NULL or not only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactCheck>,
}

/// When a check runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckSchedule {
    /// Interval between runs, e.g. `2h` (default `2h`, at least `1m`).
    #[serde(default = "default_check_every")]
    pub every: String,
    /// Only rows whose watermark is older than this are compared, e.g. `1h` (default `1h`): it must
    /// cover the pull interval, the overlap and the replica's lag.
    #[serde(default = "default_check_older_than")]
    pub older_than: String,
}

/// When the exact check runs, and its first split.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExactCheck {
    /// Interval between runs, e.g. `2h` (default `2h`, at least `1m`).
    #[serde(default = "default_check_every")]
    pub every: String,
    /// Only rows whose watermark is older than this are compared (default `1h`).
    #[serde(default = "default_check_older_than")]
    pub older_than: String,
    /// Rows per first-level chunk (default 100000, 1000 to 10000000). A table in sync costs one
    /// aggregate statement per side returning one fingerprint per chunk.
    #[serde(default = "default_chunk_rows")]
    #[schemars(range(min = 1000, max = 10000000))]
    pub chunk_rows: u64,
}

fn default_check_every() -> String {
    "2h".to_string()
}
fn default_check_older_than() -> String {
    "1h".to_string()
}
fn default_chunk_rows() -> u64 {
    100_000
}

fn default_reload_at() -> String {
    "04:00".to_string()
}
fn default_reload_zone() -> String {
    "UTC".to_string()
}

/// File format of the source objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum SourceFormat {
    /// One JSON object per line.
    #[serde(rename = "NEWLINE_DELIMITED_JSON")]
    NewlineDelimitedJson,
    /// Comma-separated values; columns map to `schema` by position.
    #[serde(rename = "CSV")]
    Csv,
    /// Apache Parquet.
    #[serde(rename = "PARQUET")]
    Parquet,
    /// Apache Avro.
    #[serde(rename = "AVRO")]
    Avro,
}

impl SourceFormat {
    /// The name BigQuery's `sourceFormat` uses.
    pub fn as_bigquery(self) -> &'static str {
        match self {
            SourceFormat::NewlineDelimitedJson => "NEWLINE_DELIMITED_JSON",
            SourceFormat::Csv => "CSV",
            SourceFormat::Parquet => "PARQUET",
            SourceFormat::Avro => "AVRO",
        }
    }

    /// Whether a load of this format can leave out named fields of the file (JSON: fields not in
    /// the load schema are ignored with `ignoreUnknownValues`). CSV maps columns by position and
    /// Parquet/Avro load every field of the file, so they cannot.
    pub fn can_drop_fields_during_load(self) -> bool {
        matches!(self, SourceFormat::NewlineDelimitedJson)
    }
}

/// CSV parsing options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsvOptions {
    /// Header rows to skip at the top of each file (default 0).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skip_leading_rows: u32,
    /// Field delimiter, one character (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_delimiter: Option<String>,
    /// Whether quoted fields may contain newlines (default false).
    #[serde(default)]
    pub allow_quoted_newlines: bool,
}

/// The BigQuery table files are loaded into.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Google Cloud project holding the table. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("destination.project is immutable; create a new IngestedTable instead"))]
    pub project: String,
    /// BigQuery dataset (the primary dataset: raw data, locked down). Created if missing. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("destination.dataset is immutable; create a new IngestedTable instead"))]
    pub dataset: String,
    /// Table name. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("destination.table is immutable; create a new IngestedTable instead"))]
    pub table: String,
    /// BigQuery location of the datasets (default `US`), e.g. `US`, `EU`, `europe-west1`.
    #[serde(default = "default_location")]
    pub location: String,
}

pub(crate) fn default_location() -> String {
    "US".to_string()
}

/// How new files change the table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LoadMode {
    /// Append each new file (each object generation) exactly once.
    #[default]
    Incremental,
    /// Replace the whole table atomically with the newest complete set of files.
    Snapshot,
}

/// One column of the destination table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Column {
    /// Column name (case-insensitively unique).
    pub name: String,
    /// BigQuery type.
    #[serde(rename = "type")]
    pub type_: ColumnType,
    /// NULLABLE (default), REQUIRED or REPEATED.
    #[serde(default)]
    pub mode: ColumnMode,
    /// Description shown in BigQuery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A BigQuery column type (GoogleSQL names; legacy aliases accepted).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ColumnType {
    String,
    Bytes,
    Int64,
    Integer,
    Float64,
    Float,
    Numeric,
    Bignumeric,
    Bool,
    Boolean,
    Timestamp,
    Date,
    Time,
    Datetime,
    Geography,
    Json,
}

impl ColumnType {
    /// The canonical GoogleSQL name: legacy aliases folded (`INTEGER` → `INT64`, …).
    pub fn canonical(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Bytes => "BYTES",
            ColumnType::Int64 | ColumnType::Integer => "INT64",
            ColumnType::Float64 | ColumnType::Float => "FLOAT64",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::Bignumeric => "BIGNUMERIC",
            ColumnType::Bool | ColumnType::Boolean => "BOOL",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Time => "TIME",
            ColumnType::Datetime => "DATETIME",
            ColumnType::Geography => "GEOGRAPHY",
            ColumnType::Json => "JSON",
        }
    }

    /// Whether BigQuery can partition a table by a column of this type.
    pub fn can_partition(self) -> bool {
        matches!(self.canonical(), "TIMESTAMP" | "DATE" | "DATETIME")
    }

    /// Whether BigQuery can cluster a table by a column of this type.
    pub fn can_cluster(self) -> bool {
        !matches!(self.canonical(), "FLOAT64" | "JSON")
    }
}

/// Column mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ColumnMode {
    #[default]
    Nullable,
    Required,
    Repeated,
}

/// Time partitioning of the destination table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Partitioning {
    /// A TIMESTAMP, DATE or DATETIME column. Absent: partition by load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// HOUR, DAY (default), MONTH or YEAR.
    #[serde(default)]
    pub granularity: Granularity,
    /// Delete partitions older than this many days (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expiration_days: Option<u32>,
    /// Require queries to filter on the partition column.
    #[serde(default)]
    pub require_partition_filter: bool,
}

/// Partition granularity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Granularity {
    Hour,
    #[default]
    Day,
    Month,
    Year,
}

/// Which view layers bqsteward manages for this table. Users query views, never the raw table:
/// the primary dataset (`destination.dataset`) stays locked down, `<dataset><fullSuffix>` holds the
/// dedup view and `<dataset><cleanSuffix>` the PII-free view, both named like the table. The
/// layer datasets are created in the destination's location if missing. Each view is authorized
/// on the dataset it reads (full on the primary dataset, clean on the full one), so its readers
/// need no access to the data underneath; a DatasetAccess never removes these entries. bqsteward
/// owns the views: their SQL is generated from this spec (a hash of it is in the label
/// `bqsteward-sql`); a view edited or deleted by hand shows in `plan` (as a SQL diff) and is
/// restored by `apply`, and its authorization is added again if it went missing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Views {
    /// Manage the dedup view: exactly one row per `primaryKey`, the one with the greatest
    /// `versionColumn` (NULL versions lose). Ties are broken deterministically — the row loaded
    /// later wins, then the row whose content sorts last — so the same data always gives the same
    /// answer. Shows every declared column, columns still in the table but no longer declared
    /// (so queries keep working), and the lineage columns `_bqsteward_batch_id` and
    /// `_bqsteward_loaded_at`. Needs `primaryKey` and `versionColumn`, and
    /// `partitioning.requirePartitionFilter: false` (the view reads every partition).
    #[serde(default)]
    pub full: bool,
    /// Manage the clean view: the full view's rows with the declared columns minus `piiColumns`
    /// (those in `hashedPiiColumns` appear as `TO_HEX(SHA256(CONCAT(salt, CAST(col AS STRING))))`), plus
    /// `_bqsteward_loaded_at`. It never shows `_bqsteward_batch_id` or columns that are no longer
    /// declared (bqsteward cannot tell whether they hold PII). Needs `full`.
    #[serde(default)]
    pub clean: bool,
    /// Suffix of the full-layer dataset (default `__views_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_suffix: Option<String>,
    /// Suffix of the clean-layer dataset (default `__views_clean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_suffix: Option<String>,
}

impl Views {
    /// Dataset suffix of the full layer.
    pub fn full_suffix(&self) -> &str {
        self.full_suffix.as_deref().unwrap_or("__views_full")
    }
    /// Dataset suffix of the clean layer.
    pub fn clean_suffix(&self) -> &str {
        self.clean_suffix.as_deref().unwrap_or("__views_clean")
    }
}

/// When the controller looks for new files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Interval between runs, e.g. `15m`, `1h`, `90s` (default `15m`, at least `1m`).
    #[serde(default = "default_every")]
    pub every: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { every: default_every() }
    }
}

fn default_every() -> String {
    "15m".to_string()
}

/// Limits on load jobs and bad data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadPolicy {
    /// Bad records tolerated per load job (default 0: a file with one bad record is quarantined,
    /// the others still load).
    #[serde(default)]
    pub max_bad_records: u32,
    /// Most files in one load job (default 1000, at most 10000, BigQuery's limit).
    #[serde(default = "default_max_files")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_files_per_job: u32,
    /// Most bytes in one load job (default 15 TB, BigQuery's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes_per_job: Option<u64>,
    /// Load jobs this table may start per UTC day, failed ones included (default 1000; BigQuery
    /// allows about 1500 per table per day).
    #[serde(default = "default_daily_budget")]
    #[schemars(range(min = 1, max = 1500))]
    pub daily_job_budget: u32,
    /// What to do with a file uploaded again under the same name (a new generation): `Load`
    /// (default) loads it as new data; `Ignore` skips it.
    #[serde(default)]
    pub reuploaded_files: ReuploadPolicy,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        LoadPolicy {
            max_bad_records: 0,
            max_files_per_job: default_max_files(),
            max_bytes_per_job: None,
            daily_job_budget: default_daily_budget(),
            reuploaded_files: ReuploadPolicy::default(),
        }
    }
}

fn default_max_files() -> u32 {
    1000
}
fn default_daily_budget() -> u32 {
    1000
}

/// What a re-uploaded file (same name, new generation) does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReuploadPolicy {
    /// Load the new generation as new data.
    #[default]
    Load,
    /// Skip new generations of files already loaded.
    Ignore,
}

/// What has been loaded, and how healthy the pipeline is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestedTableStatus {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonStatus,
    /// Files (object generations) loaded so far, per the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_loaded: Option<i64>,
    /// Rows loaded so far, per the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_loaded: Option<i64>,
    /// When the last load was committed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_load_time: Option<String>,
    /// Age of the oldest file not yet loaded, e.g. `4m` (empty when nothing waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// Files quarantined (corrupt, incompatible schema, not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_files: Option<i64>,
    /// The latest few quarantined files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_quarantined: Vec<QuarantinedFile>,
    /// Load jobs started but not yet recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_in_flight: Option<i64>,
    /// Load jobs started today (UTC) out of `loadPolicy.dailyJobBudget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_today: Option<i64>,
    /// The last result of each check of `spec.checks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksStatus>,
    /// A Delta source: the versions and the bytes copied from S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaStatus>,
}

/// Where a Delta source stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeltaStatus {
    /// The Delta table's latest version.
    pub latest_version: i64,
    /// The version the BigQuery table holds (absent before the first load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_version: Option<i64>,
    /// Versions the table is behind (`latestVersion - loadedVersion`; `latestVersion + 1` before
    /// the first load).
    pub version_lag: i64,
    /// Bytes copied from S3 into the landing prefix so far (the landed data files).
    pub bytes_copied: i64,
}

/// The last result of each check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksStatus {
    /// The last row-count check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<CheckResult>,
    /// The last exact check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<CheckResult>,
}

/// One check's result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// When it finished (RFC 3339).
    pub time: String,
    /// No mismatch (and no error).
    pub in_sync: bool,
    /// Rows whose watermark is before this were compared (database clock, UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cutoff: String,
    /// Rows compared in the source.
    #[serde(default)]
    pub source_rows: i64,
    /// Rows compared in BigQuery (latest version per key).
    #[serde(default)]
    pub bigquery_rows: i64,
    /// Exact check: rows in the source only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_in_big_query: i64,
    /// Exact check: rows in BigQuery only (deleted in the source, or never there).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_in_source: i64,
    /// Exact check: rows with different values.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed: i64,
    /// Exact check: rows that changed while the check ran (not mismatches).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed_during_check: i64,
    /// A few of the mismatching rows (or, for files, batches), e.g. `changed: id=42: amount "10.5"
    /// in the source, "10.05" in BigQuery`; PII columns say "differs", PII keys show a hash.
    /// `bqsteward check` lists up to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// Why the check could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A file that was not loaded, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedFile {
    /// `gs://` URI of the object.
    pub uri: String,
    /// Object generation that was quarantined.
    pub generation: String,
    /// `Corrupt`, `IncompatibleSchema` or `NotFound`.
    pub category: String,
    /// BigQuery's error text.
    pub message: String,
}
