//! `DatasetAccess`: the complete access list of one BigQuery dataset.
// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use super::{CommonStatus, DeletionPolicy};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The complete access list of one BigQuery dataset: entries not declared here are removed, except
/// the authorized views other bqsteward resources need and bqsteward's own identity.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bqsteward.dev",
    version = "v1alpha1",
    kind = "DatasetAccess",
    namespaced,
    status = "DatasetAccessStatus",
    shortname = "dsa",
    category = "bqsteward",
    doc = "The exact access list of one BigQuery dataset.",
    derive = "PartialEq",
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.dataset"),
    printcolumn(name = "Entries", type_ = "integer", json_path = ".status.entries"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetAccessSpec {
    /// Google Cloud project of the dataset. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("project is immutable; create a new DatasetAccess instead"))]
    pub project: String,
    /// The dataset whose access list this resource owns. It must exist (bqsteward does not create it
    /// for a DatasetAccess). At most one DatasetAccess per dataset. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("dataset is immutable; create a new DatasetAccess instead"))]
    pub dataset: String,
    /// The complete list. Each entry has a `role` and exactly one principal. At most 2,500
    /// entries (BigQuery's limit of authorized resources per dataset; the bound also keeps the
    /// API server's CEL cost estimate within its budget).
    #[schemars(length(max = 2500))]
    pub access: Vec<AccessEntry>,
    /// `Retain` (default) leaves the access list as it is when this resource is deleted; `Delete`
    /// removes the entries this resource declared (never bqsteward's own identity or the last OWNER).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One access entry: a role and exactly one principal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.user) ? 1 : 0) + (has(self.group) ? 1 : 0) + (has(self.serviceAccount) ? 1 : 0) + (has(self.domain) ? 1 : 0) + (has(self.specialGroup) ? 1 : 0) + (has(self.iamMember) ? 1 : 0) + (has(self.view) ? 1 : 0) + (has(self.routine) ? 1 : 0) + (has(self.dataset) ? 1 : 0) == 1").message("each access entry names exactly one principal"))]
pub struct AccessEntry {
    /// READER, WRITER or OWNER (also written `roles/bigquery.dataViewer`, `dataEditor`,
    /// `dataOwner`). Authorized `view`, `routine` and `dataset` entries take no role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A user's email (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A Google group's email (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A service account's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Everyone in a Google Workspace / Cloud Identity domain, e.g. `acme.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `projectOwners`, `projectWriters`, `projectReaders` or `allAuthenticatedUsers` (the last is
    /// forbidden unless the policy file allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special_group: Option<String>,
    /// Any IAM principal, e.g. `principalSet://iam.googleapis.com/...` (`allUsers` is forbidden
    /// unless the policy file allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_member: Option<String>,
    /// An authorized view: its queries may read this dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<TableRef>,
    /// An authorized routine (UDF or table function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routine: Option<RoutineRef>,
    /// An authorized dataset: every view in it may read this dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
}

/// READER, WRITER or OWNER (also written `roles/bigquery.dataViewer`, `dataEditor`, `dataOwner`).
/// Authorized `view`, `routine` and `dataset` entries take no role.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum Role {
    /// Read data and metadata.
    #[serde(rename = "READER")]
    Reader,
    /// Read and write data.
    #[serde(rename = "WRITER")]
    Writer,
    /// Full control, including the access list.
    #[serde(rename = "OWNER")]
    Owner,
    /// Same as READER.
    #[serde(rename = "roles/bigquery.dataViewer")]
    DataViewer,
    /// Same as WRITER.
    #[serde(rename = "roles/bigquery.dataEditor")]
    DataEditor,
    /// Same as OWNER.
    #[serde(rename = "roles/bigquery.dataOwner")]
    DataOwner,
}

impl Role {
    /// The basic role BigQuery reports back (READER, WRITER or OWNER).
    pub fn normalized(self) -> Role {
        match self {
            Role::Reader | Role::DataViewer => Role::Reader,
            Role::Writer | Role::DataEditor => Role::Writer,
            Role::Owner | Role::DataOwner => Role::Owner,
        }
    }

    /// The name BigQuery uses in access entries.
    pub fn as_str(self) -> &'static str {
        match self.normalized() {
            Role::Reader => "READER",
            Role::Writer => "WRITER",
            _ => "OWNER",
        }
    }
}

/// A table or view, by project, dataset and table id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableRef {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
    /// Table or view id.
    pub table: String,
}

/// A routine, by project, dataset and routine id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutineRef {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
    /// Routine id.
    pub routine: String,
}

/// A dataset, by project and dataset id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetRef {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
}

/// What the access list looks like now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetAccessStatus {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonStatus,
    /// Entries in the live access list after the last apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<i64>,
}
