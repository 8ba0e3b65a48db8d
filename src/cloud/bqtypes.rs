//! BigQuery tables, jobs and query results as bqsteward sees them (the subset of the REST
//! resources it reads and writes).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `project.dataset.table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
    /// Table id.
    pub table: String,
}

impl TableRef {
    /// A reference from its three parts.
    pub fn new(project: &str, dataset: &str, table: &str) -> TableRef {
        TableRef {
            project: project.into(),
            dataset: dataset.into(),
            table: table.into(),
        }
    }

    /// The REST `tableReference` object.
    pub fn to_api(&self) -> Value {
        serde_json::json!({ "projectId": self.project, "datasetId": self.dataset, "tableId": self.table })
    }

    /// The table quoted for GoogleSQL: `` `project.dataset.table` ``. The parts are validated
    /// identifiers (no backticks), checked again here so a bug cannot open an injection.
    pub fn sql(&self) -> String {
        for part in [&self.project, &self.dataset, &self.table] {
            assert!(
                !part.contains('`') && !part.contains('\\'),
                "unvalidated identifier reached SQL: {part:?}"
            );
        }
        format!("`{}.{}.{}`", self.project, self.dataset, self.table)
    }
}

/// A quoted GoogleSQL identifier: `` `name` `` with `\` and `` ` `` escaped. Column names come
/// from manifests and files: every one reaches SQL through here.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        match c {
            '`' => out.push_str("\\`"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// A column of a table schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// GoogleSQL type (`INT64` and `INTEGER` are the same; see [`Field::same_type`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// `NULLABLE`, `REQUIRED` or `REPEATED` (BigQuery omits it for `NULLABLE`).
    #[serde(default = "nullable")]
    pub mode: String,
    /// Column description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn nullable() -> String {
    "NULLABLE".into()
}

impl Field {
    /// A column.
    pub fn new(name: &str, type_: &str, mode: &str) -> Field {
        Field {
            name: name.into(),
            type_: type_.into(),
            mode: mode.into(),
            description: None,
        }
    }

    /// The type with legacy names folded (`INTEGER` = `INT64`, `FLOAT` = `FLOAT64`, `BOOLEAN` = `BOOL`).
    pub fn canonical_type(&self) -> &str {
        canonical_type(&self.type_)
    }
}

/// Folds BigQuery's legacy type names into the GoogleSQL ones.
pub fn canonical_type(t: &str) -> &str {
    match t {
        "INTEGER" => "INT64",
        "FLOAT" => "FLOAT64",
        "BOOLEAN" => "BOOL",
        other => other,
    }
}

/// A table as observed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableInfo {
    /// Entity tag (guards metadata updates).
    #[serde(default)]
    pub etag: String,
    /// `TABLE`, `VIEW`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Schema.
    #[serde(default)]
    pub schema: Schema,
    /// Time partitioning, as returned.
    #[serde(default)]
    pub time_partitioning: Option<Value>,
    /// Clustering, as returned.
    #[serde(default)]
    pub clustering: Option<Value>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// A view's definition (BigQuery returns it; bqemulator does not — read
    /// `INFORMATION_SCHEMA.VIEWS` there).
    #[serde(default)]
    pub view: Option<ViewQuery>,
}

/// The `view` object of a table resource.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ViewQuery {
    /// The view's SQL, verbatim as written.
    #[serde(default)]
    pub query: Option<String>,
}

/// Label marking what bqsteward manages (`managed-by: bqsteward`).
pub const LABEL_MANAGED_BY: &str = "managed-by";

/// Label naming the resource a table or view belongs to: a hash of `Kind namespace/name` (label
/// values cannot hold `/` or capitals), set when bqsteward creates it or takes it over.
pub const LABEL_OWNER: &str = "bqsteward-owner";

/// The [`LABEL_OWNER`] value of resource `Kind namespace/name`: `igt-…` for an IngestedTable,
/// `cp-…` for a ConsumerProject.
pub fn owner_value(resource: &str) -> String {
    let prefix = match resource.split_once(' ') {
        Some(("IngestedTable", _)) => "igt",
        Some(("ConsumerProject", _)) => "cp",
        _ => "res",
    };
    format!("{prefix}-{}", crate::ingest::model::short_hash(resource))
}

impl TableInfo {
    /// Whether bqsteward made this table or view (its `managed-by` label says so).
    pub fn made_by_bqsteward(&self) -> bool {
        self.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some("bqsteward")
    }

    /// Whether bqsteward made this for resource `Kind namespace/name`: its [`LABEL_OWNER`] label
    /// names it, or — made before owner labels existed — it carries `managed-by` and no owner and
    /// its description names the resource (`… Managed by bqsteward (Kind namespace/name) …`).
    pub fn belongs_to(&self, resource: &str) -> bool {
        match self.labels.get(LABEL_OWNER) {
            Some(o) => *o == owner_value(resource),
            None => {
                self.made_by_bqsteward()
                    && self
                        .description
                        .as_deref()
                        .is_some_and(|d| d.contains(&format!("({resource})")))
            }
        }
    }

    /// Whether this is a view.
    pub fn is_view(&self) -> bool {
        self.kind == "VIEW"
    }

    /// The view's SQL when the API returned it.
    pub fn view_sql(&self) -> Option<&str> {
        self.view.as_ref()?.query.as_deref()
    }
}

/// A view to create or update (GoogleSQL).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewDef {
    /// Where.
    pub table: TableRef,
    /// The query.
    pub sql: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Description.
    pub description: String,
}

impl ViewDef {
    /// The REST `Table` resource (also the body of a `tables.patch`).
    pub fn to_api(&self) -> Value {
        serde_json::json!({
            "tableReference": self.table.to_api(),
            "view": { "query": self.sql, "useLegacySql": false },
            "labels": self.labels,
            "description": self.description,
        })
    }
}

/// A table schema.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Columns in order.
    #[serde(default)]
    pub fields: Vec<Field>,
}

/// A table to create.
#[derive(Clone, Debug, PartialEq)]
pub struct TableDef {
    /// Where.
    pub table: TableRef,
    /// Columns.
    pub fields: Vec<Field>,
    /// REST `timePartitioning`, if partitioned.
    pub time_partitioning: Option<Value>,
    /// REST `clustering`, if clustered.
    pub clustering: Option<Value>,
    /// Whether queries must filter on the partition column.
    pub require_partition_filter: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Expiry (milliseconds since the epoch), for scratch tables.
    pub expiration_ms: Option<i64>,
    /// Description.
    pub description: Option<String>,
}

impl TableDef {
    /// The REST `Table` resource.
    pub fn to_api(&self) -> Value {
        let mut v = serde_json::json!({
            "tableReference": self.table.to_api(),
            "schema": { "fields": self.fields },
            "labels": self.labels,
        });
        if let Some(p) = &self.time_partitioning {
            v["timePartitioning"] = p.clone();
        }
        if let Some(c) = &self.clustering {
            v["clustering"] = c.clone();
        }
        if self.require_partition_filter {
            v["requirePartitionFilter"] = Value::Bool(true);
        }
        if let Some(e) = self.expiration_ms {
            v["expirationTime"] = Value::String(e.to_string());
        }
        if let Some(d) = &self.description {
            v["description"] = Value::String(d.clone());
        }
        v
    }
}

/// One error of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// BigQuery reason (`invalid`, `notFound`, `backendError`, …).
    #[serde(default)]
    pub reason: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Where (often a source URI for loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A job as observed (jobs.get / jobs.insert answer).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// `PENDING`, `RUNNING` or `DONE`.
    pub state: String,
    /// Set when a `DONE` job failed.
    pub error: Option<JobError>,
    /// All errors reported (may be present on success when bad records were allowed).
    pub errors: Vec<JobError>,
    /// Rows written by a load job (`statistics.load.outputRows`).
    pub output_rows: Option<i64>,
    /// Rows changed by a DML query (`statistics.query.numDmlAffectedRows`).
    pub dml_rows: Option<i64>,
}

impl Job {
    /// Whether the job finished.
    pub fn is_done(&self) -> bool {
        self.state == "DONE"
    }

    /// Parses the REST `Job` resource.
    pub fn from_api(v: &Value) -> Job {
        let status = &v["status"];
        let int = |x: &Value| x.as_str().and_then(|s| s.parse().ok()).or_else(|| x.as_i64());
        Job {
            id: v["jobReference"]["jobId"].as_str().unwrap_or_default().to_string(),
            state: status["state"].as_str().unwrap_or("PENDING").to_string(),
            error: serde_json::from_value(status["errorResult"].clone()).ok(),
            errors: serde_json::from_value(status["errors"].clone()).unwrap_or_default(),
            output_rows: int(&v["statistics"]["load"]["outputRows"]),
            dml_rows: int(&v["statistics"]["query"]["numDmlAffectedRows"]),
        }
    }
}

/// A named query parameter (values are sent out of band, never spliced into SQL).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Name (`@name` in SQL).
    pub name: String,
    /// REST `parameterType`.
    pub type_: Value,
    /// REST `parameterValue`.
    pub value: Value,
}

impl Param {
    /// A `STRING` parameter.
    pub fn string(name: &str, v: &str) -> Param {
        Param {
            name: name.into(),
            type_: serde_json::json!({"type": "STRING"}),
            value: serde_json::json!({ "value": v }),
        }
    }

    /// An `INT64` parameter.
    pub fn int(name: &str, v: i64) -> Param {
        Param {
            name: name.into(),
            type_: serde_json::json!({"type": "INT64"}),
            value: serde_json::json!({ "value": v.to_string() }),
        }
    }

    /// An `ARRAY<STRING>` parameter.
    pub fn strings<S: AsRef<str>>(name: &str, vs: impl IntoIterator<Item = S>) -> Param {
        Param::array(name, "STRING", vs.into_iter().map(|s| s.as_ref().to_string()))
    }

    /// An `ARRAY<INT64>` parameter.
    pub fn ints(name: &str, vs: impl IntoIterator<Item = i64>) -> Param {
        Param::array(name, "INT64", vs.into_iter().map(|i| i.to_string()))
    }

    fn array(name: &str, elem: &str, vs: impl Iterator<Item = String>) -> Param {
        let values: Vec<Value> = vs.map(|v| serde_json::json!({ "value": v })).collect();
        Param {
            name: name.into(),
            type_: serde_json::json!({"type": "ARRAY", "arrayType": {"type": elem}}),
            value: serde_json::json!({ "arrayValues": values }),
        }
    }

    /// The REST `QueryParameter`.
    pub fn to_api(&self) -> Value {
        serde_json::json!({ "name": self.name, "parameterType": self.type_, "parameterValue": self.value })
    }
}

/// The rows of a read query: column names and cells (`None` = NULL). Timestamps are integer
/// microseconds (`useInt64Timestamp`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// Index of column `name`.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}
