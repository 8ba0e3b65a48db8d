//! `GroupMembership`: the exact direct members of one Google group.
// kube's `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use super::{CommonStatus, DeletionPolicy};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The exact direct members of one Google group (Cloud Identity Groups API): members not declared
/// here are removed, except bqsteward's own identity; the group is never left without an OWNER.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bqsteward.dev",
    version = "v1alpha1",
    kind = "GroupMembership",
    namespaced,
    status = "GroupMembershipStatus",
    shortname = "gm",
    category = "bqsteward",
    doc = "The exact direct members of one Google group.",
    derive = "PartialEq",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMembershipSpec {
    /// The group's email, e.g. `analysts@acme.com` (case-insensitive). At most one GroupMembership
    /// per group. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("group is immutable; create a new GroupMembership instead"))]
    pub group: String,
    /// The complete list of direct members.
    pub members: Vec<Member>,
    /// `Retain` (default) leaves the members in place when this resource is deleted; `Delete`
    /// removes the declared members (never bqsteward's own identity or the last OWNER).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One direct member of the group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    /// The member's email: a user, a service account or another group (case-insensitive).
    pub email: String,
    /// MEMBER (default), MANAGER or OWNER.
    #[serde(default)]
    pub role: MemberRole,
}

/// A membership role in a Google group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberRole {
    /// Can view the group.
    #[default]
    Member,
    /// Can also manage members.
    Manager,
    /// Can also manage managers and the group's settings.
    Owner,
}

/// What the group looks like now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembershipStatus {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub common: CommonStatus,
    /// Direct members after the last apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i64>,
}
