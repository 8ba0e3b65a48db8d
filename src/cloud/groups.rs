//! Google groups behind the [`Groups`] trait: the Cloud Identity Groups API v1 (REST).
//! [`GroupsRest`] talks to `https://cloudidentity.googleapis.com/v1`, or to the host in
//! `CLOUD_IDENTITY_EMULATOR_HOST` (no credentials) — there is no public emulator; the tests run a
//! fake of the published contract there.

use super::CloudError;
use super::http::Rest;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

/// The production API root.
pub const CLOUD_IDENTITY_API: &str = "https://cloudidentity.googleapis.com/v1";

/// A membership role name as the API spells it (`MEMBER`, `MANAGER`, `OWNER`).
pub type RoleName = String;

/// One direct membership of a group, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// Resource name `groups/{group}/memberships/{membership}`.
    pub name: String,
    /// The member's key (its email).
    pub preferred_member_key: EntityKey,
    /// Roles; `MEMBER` is always among them.
    #[serde(default)]
    pub roles: Vec<MembershipRole>,
    /// `USER`, `SERVICE_ACCOUNT`, `GROUP`, `SHARED_DRIVE`, `OTHER`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// An entity key: `id` is the email.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EntityKey {
    /// The email (as stored: mixed case possible).
    pub id: String,
}

/// A role of a membership.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MembershipRole {
    /// `MEMBER`, `MANAGER` or `OWNER`.
    pub name: RoleName,
}

/// One page of `memberships.list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipPage {
    /// The memberships on this page.
    #[serde(default)]
    pub memberships: Vec<Membership>,
    /// Token of the next page; absent or empty on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The Cloud Identity operations bqsteward needs.
#[async_trait]
pub trait Groups: Send + Sync {
    /// `groups.lookup` by email → the group's resource name (`groups/{id}`); `None` if no such
    /// group (or no permission to see it: the API answers 403 for both).
    async fn lookup_group(&self, email: &str) -> Result<Option<String>, CloudError>;
    /// One page of the group's direct memberships.
    async fn list_memberships(&self, group: &str, page_token: Option<&str>) -> Result<MembershipPage, CloudError>;
    /// Adds `email` with `roles` (always including `MEMBER`).
    async fn create_membership(&self, group: &str, email: &str, roles: &[RoleName]) -> Result<(), CloudError>;
    /// Removes a membership by resource name.
    async fn delete_membership(&self, membership: &str) -> Result<(), CloudError>;
    /// Adds and removes roles of a membership (`removeRoles` never contains `MEMBER`).
    async fn modify_roles(&self, membership: &str, add: &[RoleName], remove: &[RoleName]) -> Result<(), CloudError>;
}

/// The production Cloud Identity client.
#[derive(Clone)]
pub struct GroupsRest {
    base: String,
    rest: Rest,
    page_size: u32,
}

impl GroupsRest {
    /// A client for `CLOUD_IDENTITY_EMULATOR_HOST` when set (no credentials), else Google with
    /// Application Default Credentials.
    pub fn from_env() -> Result<GroupsRest, CloudError> {
        Self::new(super::emulator_host("CLOUD_IDENTITY_EMULATOR_HOST").as_deref())
    }

    /// A client for an emulator host (`http://127.0.0.1:PORT`, no credentials) or, with `None`,
    /// Google.
    pub fn new(emulator_host: Option<&str>) -> Result<GroupsRest, CloudError> {
        let (base, auth) = super::api_base(emulator_host, "/v1", CLOUD_IDENTITY_API)?;
        Ok(GroupsRest {
            base,
            rest: Rest::new("cloudidentity", auth),
            page_size: 200,
        })
    }

    /// Page size of `memberships.list` (default 200; the API allows up to 1000 in the BASIC view).
    pub fn with_page_size(mut self, n: u32) -> GroupsRest {
        self.page_size = n;
        self
    }
}

#[async_trait]
impl Groups for GroupsRest {
    async fn lookup_group(&self, email: &str) -> Result<Option<String>, CloudError> {
        #[derive(Deserialize)]
        struct Found {
            name: String,
        }
        let op = format!("groups.lookup {email}");
        let req = self
            .rest
            .http
            .get(format!("{}/groups:lookup", self.base))
            .query(&[("groupKey.id", email)]);
        match self.rest.json::<Found>(&op, req).await {
            Ok(f) => Ok(Some(f.name)),
            Err(e) if e.is_not_found() || e.status() == Some(403) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_memberships(&self, group: &str, page_token: Option<&str>) -> Result<MembershipPage, CloudError> {
        let op = format!("memberships.list {group}");
        let mut query = vec![("pageSize", self.page_size.to_string()), ("view", "BASIC".to_string())];
        if let Some(t) = page_token {
            query.push(("pageToken", t.to_string()));
        }
        let req = self
            .rest
            .http
            .get(format!("{}/{group}/memberships", self.base))
            .query(&query);
        self.rest.json(&op, req).await
    }

    async fn create_membership(&self, group: &str, email: &str, roles: &[RoleName]) -> Result<(), CloudError> {
        let op = format!("memberships.create {group} {email}");
        let body = json!({
            "preferredMemberKey": { "id": email },
            "roles": roles.iter().map(|r| json!({ "name": r })).collect::<Vec<_>>(),
        });
        let req = self
            .rest
            .http
            .post(format!("{}/{group}/memberships", self.base))
            .json(&body);
        operation_done(&op, self.rest.json(&op, req).await?)
    }

    async fn delete_membership(&self, membership: &str) -> Result<(), CloudError> {
        let op = format!("memberships.delete {membership}");
        let req = self.rest.http.delete(format!("{}/{membership}", self.base));
        match self.rest.json(&op, req).await {
            Ok(v) => operation_done(&op, v),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn modify_roles(&self, membership: &str, add: &[RoleName], remove: &[RoleName]) -> Result<(), CloudError> {
        let op = format!("memberships.modifyMembershipRoles {membership}");
        let mut body = serde_json::Map::new();
        if !add.is_empty() {
            body.insert("addRoles".into(), add.iter().map(|r| json!({ "name": r })).collect());
        }
        if !remove.is_empty() {
            body.insert("removeRoles".into(), json!(remove));
        }
        let req = self
            .rest
            .http
            .post(format!("{}/{membership}:modifyMembershipRoles", self.base))
            .json(&body);
        self.rest.json::<serde_json::Value>(&op, req).await.map(|_| ())
    }
}

/// Create and delete answer with a long-running `Operation`; for memberships it is done at once.
/// An operation that finished with an error is returned as that error.
fn operation_done(op: &str, v: serde_json::Value) -> Result<(), CloudError> {
    if let Some(err) = v.get("error") {
        let status = err.get("code").and_then(|c| c.as_u64()).unwrap_or(500) as u16;
        return Err(CloudError::Api {
            api: "cloudidentity",
            operation: op.to_string(),
            status: match status {
                // google.rpc.Code numbers, not HTTP: map the ones that matter.
                5 => 404,
                6 => 409,
                7 => 403,
                8 => 429,
                s if s >= 100 => s,
                _ => 500,
            },
            reason: err.get("status").and_then(|s| s.as_str()).unwrap_or("").to_string(),
            message: err.get("message").and_then(|s| s.as_str()).unwrap_or("").to_string(),
        });
    }
    Ok(())
}

/// Every direct membership of `group`, following pages (each page retried on transient errors).
pub async fn list_all(
    groups: &dyn Groups,
    group: &str,
    backoff: &super::retry::Backoff,
) -> Result<Vec<Membership>, CloudError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = super::retry::with_retry(backoff, "memberships.list", || {
            groups.list_memberships(group, token.as_deref())
        })
        .await?;
        out.extend(page.memberships);
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}
