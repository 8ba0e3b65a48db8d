//! Project IAM policies behind the [`ProjectIam`] trait: Resource Manager v3
//! `projects.getIamPolicy` / `projects.setIamPolicy`, guarded by the policy's etag (a stale etag
//! gets 409 `ABORTED`). [`IamRest`] talks to `https://cloudresourcemanager.googleapis.com/v3`, or to
//! `RESOURCE_MANAGER_EMULATOR_HOST` (no credentials) — there is no emulator; the tests run a fake
//! of the published contract there.

use super::CloudError;
use super::http::Rest;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The production API root.
pub const RESOURCE_MANAGER_API: &str = "https://cloudresourcemanager.googleapis.com/v3";

/// An IAM policy. Fields bqsteward does not model (`auditConfigs`, …) are kept and sent back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IamPolicy {
    /// Policy version (3 when any binding has a condition).
    #[serde(default)]
    pub version: i32,
    /// Etag of the read; `setIamPolicy` fails with 409 if the policy changed since.
    #[serde(default)]
    pub etag: String,
    /// Role bindings.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Everything else, verbatim.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One role binding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// `roles/…`.
    pub role: String,
    /// `user:…`, `group:…`, `serviceAccount:…`, `domain:…`, …
    #[serde(default)]
    pub members: Vec<String>,
    /// IAM condition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// An IAM condition (CEL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Title (bqsteward marks its own bindings with it).
    #[serde(default)]
    pub title: String,
    /// CEL expression.
    #[serde(default)]
    pub expression: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The Resource Manager operations bqsteward needs.
#[async_trait]
pub trait ProjectIam: Send + Sync {
    /// Reads a project's policy (requesting version 3).
    async fn get_iam_policy(&self, project: &str) -> Result<IamPolicy, CloudError>;
    /// Writes a project's whole policy; its `etag` must be the one read.
    async fn set_iam_policy(&self, project: &str, policy: &IamPolicy) -> Result<IamPolicy, CloudError>;
}

/// The production Resource Manager client.
#[derive(Clone)]
pub struct IamRest {
    base: String,
    rest: Rest,
}

impl IamRest {
    /// A client for `RESOURCE_MANAGER_EMULATOR_HOST` when set (no credentials), else Google.
    pub fn from_env() -> Result<IamRest, CloudError> {
        Self::new(super::emulator_host("RESOURCE_MANAGER_EMULATOR_HOST").as_deref())
    }

    /// A client for an emulator host (no credentials) or, with `None`, Google.
    pub fn new(emulator_host: Option<&str>) -> Result<IamRest, CloudError> {
        let (base, auth) = super::api_base(emulator_host, "/v3", RESOURCE_MANAGER_API)?;
        Ok(IamRest {
            base,
            rest: Rest::new("cloudresourcemanager", auth),
        })
    }
}

#[async_trait]
impl ProjectIam for IamRest {
    async fn get_iam_policy(&self, project: &str) -> Result<IamPolicy, CloudError> {
        let op = format!("projects.getIamPolicy {project}");
        let req = self
            .rest
            .http
            .post(format!("{}/projects/{project}:getIamPolicy", self.base))
            .json(&serde_json::json!({ "options": { "requestedPolicyVersion": 3 } }));
        self.rest.json(&op, req).await
    }

    async fn set_iam_policy(&self, project: &str, policy: &IamPolicy) -> Result<IamPolicy, CloudError> {
        let op = format!("projects.setIamPolicy {project}");
        let req = self
            .rest
            .http
            .post(format!("{}/projects/{project}:setIamPolicy", self.base))
            .json(&serde_json::json!({ "policy": policy }));
        self.rest.json(&op, req).await
    }
}
