//! `ConsumerProject`: a consumer team's own project holding authorized views of ingested data.
// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use super::{CommonStatus, DeletionPolicy};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A consumer team's own project with a dataset of authorized views over bqsteward-managed data:
/// the team sees exactly these views and pays for its own queries.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bqsteward.dev",
    version = "v1alpha1",
    kind = "ConsumerProject",
    namespaced,
    status = "ConsumerProjectStatus",
    shortname = "cp",
    category = "bqsteward",
    doc = "A consumer team's own project with authorized views; the team pays for its queries.",
    derive = "PartialEq",
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.dataset"),
    printcolumn(name = "Views", type_ = "integer", json_path = ".status.views"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerProjectSpec {
    /// The consumer team's own Google Cloud project: queries of the views are billed to it.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("project is immutable; create a new ConsumerProject instead"))]
    pub project: String,
    /// Dataset created in that project to hold the views. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("dataset is immutable; create a new ConsumerProject instead"))]
    pub dataset: String,
    /// BigQuery location of the dataset (default `US`); must equal the location of every source.
    #[serde(default = "super::ingested_table::default_location")]
    pub location: String,
    /// Who may query the views. The dataset's access list is exactly these as READER plus
    /// bqsteward's own identity as OWNER. They also get `roles/bigquery.jobUser` on the project
    /// through one IAM binding bqsteward owns (condition title
    /// `bqsteward: ConsumerProject <namespace>/<name>`); other bindings are never touched.
    #[serde(default)]
    pub readers: Vec<Principal>,
    /// The views to create in the dataset. Each is authorized on its source's dataset (kept by
    /// every DatasetAccess, restored when removed); views bqsteward made that are no longer listed
    /// are deleted with their authorizations. A view over a source's PII columns (an
    /// IngestedTable's `full` layer) is refused unless the annotation
    /// `bqsteward.dev/allow-pii: "<col>, <col>"` lists them.
    #[serde(default)]
    pub views: Vec<ConsumerView>,
    /// `Retain` (default) keeps the dataset and views when this resource is deleted; `Delete`
    /// removes the views and their authorizations.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A principal without a role: exactly one field set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Principal {
    /// A user's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A Google group's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A service account's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Everyone in a domain, e.g. `acme.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// One view in the consumer dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerView {
    /// View name in the consumer dataset.
    pub name: String,
    /// What the view reads.
    pub source: ViewSource,
    /// Columns to expose (default: all columns of the source). Each must exist in the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Optional boolean SQL expression over the source's columns, e.g. `amount > 0`. Checked
    /// before anything is written: only literals, the source's columns, operators, balanced
    /// parentheses and a list of keywords and scalar functions (no `;`, comments, subqueries,
    /// dotted names or parameters); then BigQuery dry-runs the view's query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// Description shown in BigQuery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The source of a consumer view: an IngestedTable layer, or an explicit table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ViewSource {
    /// Name of an IngestedTable in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_table: Option<String>,
    /// Which layer of that IngestedTable: `clean` (default) or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
    /// An explicit table or view, `project.dataset.table` (instead of `ingestedTable`). Only tables
    /// the policy file's `consumerSourceTables` names, and only with explicit `columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// Which view layer of the IngestedTable: `clean` (default, without PII) or `full` (dedup view).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Layer {
    /// The PII-free view.
    #[default]
    Clean,
    /// The dedup view (may hold PII).
    Full,
}

/// What the consumer project looks like now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerProjectStatus {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonStatus,
    /// Views present in the consumer dataset after the last apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<i64>,
}
