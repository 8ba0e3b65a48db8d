//! One access entry in normalised form, so that declared and live lists compare exactly:
//! roles folded (`roles/bigquery.dataViewer` = READER), emails and domains lowercased, every entry
//! kind BigQuery has. Entries bqsteward does not understand (or `deleted:` principals) are kept
//! verbatim and compare by their JSON, so they never break a reconcile.

use crate::crd::AccessEntry;
use serde_json::{Value, json};
use std::fmt;

/// Who an entry grants access to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum Principal {
    /// `userByEmail` (users and service accounts), lowercased.
    User(String),
    /// `groupByEmail`, lowercased.
    Group(String),
    /// `domain`, lowercased.
    Domain(String),
    /// `specialGroup` (`projectOwners`, …).
    SpecialGroup(String),
    /// `iamMember`, verbatim (`deleted:` principals land here too).
    IamMember(String),
    /// An authorized view `project.dataset.table`.
    View(String),
    /// An authorized routine `project.dataset.routine`.
    Routine(String),
    /// An authorized dataset `project.dataset` (target types joined by `,`).
    Dataset(String),
    /// Anything else, as canonical JSON.
    Other(String),
}

/// A normalised access entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct AclEntry {
    /// Whom.
    pub principal: Principal,
    /// READER, WRITER, OWNER (or another role name BigQuery returned); `None` for authorized
    /// views, routines and datasets.
    pub role: Option<String>,
}

/// Folds IAM role names into BigQuery's basic roles.
pub fn normalize_role(role: &str) -> String {
    match role {
        "roles/bigquery.dataViewer" => "READER".into(),
        "roles/bigquery.dataEditor" => "WRITER".into(),
        "roles/bigquery.dataOwner" => "OWNER".into(),
        other => other.to_string(),
    }
}

impl AclEntry {
    /// An entry with a role.
    pub fn new(role: &str, principal: Principal) -> AclEntry {
        AclEntry {
            principal,
            role: Some(normalize_role(role)),
        }
    }

    /// An authorized-view entry for `view` (`project.dataset.table`).
    pub fn authorized_view(view: &impl fmt::Display) -> AclEntry {
        AclEntry {
            principal: Principal::View(view.to_string()),
            role: None,
        }
    }

    /// Whether this entry grants OWNER.
    pub fn is_owner(&self) -> bool {
        self.role.as_deref() == Some("OWNER")
    }

    /// From a declared entry (already validated: exactly one principal).
    pub fn from_spec(e: &AccessEntry) -> AclEntry {
        let role = e.role.map(|r| r.as_str().to_string());
        let lower = |s: &String| s.trim().to_lowercase();
        let principal = if let Some(u) = e.user.as_ref().or(e.service_account.as_ref()) {
            Principal::User(lower(u))
        } else if let Some(g) = &e.group {
            Principal::Group(lower(g))
        } else if let Some(d) = &e.domain {
            Principal::Domain(lower(d))
        } else if let Some(s) = &e.special_group {
            Principal::SpecialGroup(s.clone())
        } else if let Some(m) = &e.iam_member {
            Principal::IamMember(m.clone())
        } else if let Some(v) = &e.view {
            Principal::View(format!("{}.{}.{}", v.project, v.dataset, v.table))
        } else if let Some(r) = &e.routine {
            Principal::Routine(format!("{}.{}.{}", r.project, r.dataset, r.routine))
        } else if let Some(d) = &e.dataset {
            Principal::Dataset(format!("{}.{}:VIEWS", d.project, d.dataset))
        } else {
            Principal::Other("{}".into())
        };
        AclEntry { principal, role }
    }

    /// From an entry of BigQuery's `access` array.
    pub fn from_api(v: &Value) -> AclEntry {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let role = s("role").map(normalize_role);
        let id3 = |o: &Value, last: &str| -> Option<String> {
            Some(format!(
                "{}.{}.{}",
                o.get("projectId")?.as_str()?,
                o.get("datasetId")?.as_str()?,
                o.get(last)?.as_str()?
            ))
        };
        // An entry with a condition or any field bqsteward does not model is kept verbatim.
        let known = [
            "role",
            "userByEmail",
            "groupByEmail",
            "domain",
            "specialGroup",
            "iamMember",
            "view",
            "routine",
            "dataset",
        ];
        let unmodelled = v
            .as_object()
            .is_none_or(|o| o.keys().any(|k| !known.contains(&k.as_str())));
        let principal = if unmodelled {
            None
        } else if let Some(u) = s("userByEmail") {
            Some(Principal::User(u.to_lowercase()))
        } else if let Some(g) = s("groupByEmail") {
            Some(Principal::Group(g.to_lowercase()))
        } else if let Some(d) = s("domain") {
            Some(Principal::Domain(d.to_lowercase()))
        } else if let Some(sg) = s("specialGroup") {
            Some(Principal::SpecialGroup(sg.to_string()))
        } else if let Some(m) = s("iamMember") {
            Some(Principal::IamMember(m.to_string()))
        } else if let Some(view) = v.get("view") {
            id3(view, "tableId").map(Principal::View)
        } else if let Some(r) = v.get("routine") {
            id3(r, "routineId").map(Principal::Routine)
        } else if let Some(d) = v.get("dataset") {
            let inner = d.get("dataset").unwrap_or(&Value::Null);
            let project = inner.get("projectId").and_then(Value::as_str).unwrap_or_default();
            let dataset = inner.get("datasetId").and_then(Value::as_str).unwrap_or_default();
            let targets: Vec<&str> = d
                .get("targetTypes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (!project.is_empty() && !dataset.is_empty())
                .then(|| Principal::Dataset(format!("{project}.{dataset}:{}", targets.join(","))))
        } else {
            None
        };
        match principal {
            Some(principal) => AclEntry { principal, role },
            // Kept verbatim (role included) and compared by its JSON.
            None => AclEntry {
                principal: Principal::Other(v.to_string()),
                role: None,
            },
        }
    }

    /// The entry as BigQuery's `access` array element.
    pub fn to_api(&self) -> Value {
        let ids = |s: &str| -> Vec<String> { s.splitn(3, '.').map(str::to_string).collect() };
        let mut v = match &self.principal {
            Principal::User(e) => json!({ "userByEmail": e }),
            Principal::Group(e) => json!({ "groupByEmail": e }),
            Principal::Domain(d) => json!({ "domain": d }),
            Principal::SpecialGroup(g) => json!({ "specialGroup": g }),
            Principal::IamMember(m) => json!({ "iamMember": m }),
            Principal::View(t) => {
                let p = ids(t);
                json!({ "view": { "projectId": p[0], "datasetId": p[1], "tableId": p[2] } })
            }
            Principal::Routine(t) => {
                let p = ids(t);
                json!({ "routine": { "projectId": p[0], "datasetId": p[1], "routineId": p[2] } })
            }
            Principal::Dataset(d) => {
                let (ds, targets) = d.split_once(':').unwrap_or((d, ""));
                let (project, dataset) = ds.split_once('.').unwrap_or((ds, ""));
                let targets: Vec<&str> = targets.split(',').filter(|t| !t.is_empty()).collect();
                json!({ "dataset": { "dataset": { "projectId": project, "datasetId": dataset }, "targetTypes": targets } })
            }
            Principal::Other(j) => serde_json::from_str(j).unwrap_or(Value::Null),
        };
        if let (Some(role), Some(o)) = (&self.role, v.as_object_mut()) {
            o.insert("role".into(), json!(role));
        }
        v
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // BigQuery keeps service accounts as `userByEmail`; say what they are.
            Principal::User(e) if e.ends_with(".gserviceaccount.com") => write!(f, "serviceAccount:{e}"),
            Principal::User(e) => write!(f, "user:{e}"),
            Principal::Group(e) => write!(f, "group:{e}"),
            Principal::Domain(d) => write!(f, "domain:{d}"),
            Principal::SpecialGroup(g) => write!(f, "specialGroup:{g}"),
            Principal::IamMember(m) => write!(f, "iamMember:{m}"),
            Principal::View(t) => write!(f, "view:{t}"),
            Principal::Routine(t) => write!(f, "routine:{t}"),
            Principal::Dataset(d) => write!(f, "dataset:{d}"),
            Principal::Other(j) => write!(f, "other:{j}"),
        }
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role.as_deref() {
            Some(role) => write!(f, "{role:<6} {}", self.principal),
            // Authorized views, routines and datasets have no role: they are authorizations.
            None => write!(f, "AUTHORIZED {}", self.principal),
        }
    }
}

/// The email of a configured identity (`serviceAccount:EMAIL`, …), lowercased.
pub fn identity_email(identity: &str) -> Option<String> {
    identity.split_once(':').map(|(_, e)| e.trim().to_lowercase())
}

/// A configured identity (`serviceAccount:EMAIL`, `user:EMAIL` or `group:EMAIL`) as an OWNER entry.
pub fn identity_entry(identity: &str) -> Result<AclEntry, String> {
    let (kind, email) = identity.split_once(':').ok_or_else(|| {
        format!("identity {identity:?} must be written serviceAccount:EMAIL, user:EMAIL or group:EMAIL")
    })?;
    crate::validate::ident::email(email)?;
    let principal = match kind {
        "serviceAccount" | "user" => Principal::User(email.to_lowercase()),
        "group" => Principal::Group(email.to_lowercase()),
        _ => return Err(format!("identity kind {kind:?} must be serviceAccount, user or group")),
    };
    Ok(AclEntry::new("OWNER", principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_spec_forms_meet() {
        let live =
            AclEntry::from_api(&json!({"role": "roles/bigquery.dataViewer", "userByEmail": "Carol.Smith@Acme.com"}));
        let declared: AccessEntry = serde_yaml::from_str("{role: READER, user: carol.smith@acme.com}").unwrap();
        assert_eq!(live, AclEntry::from_spec(&declared));
        let sa: AccessEntry =
            serde_yaml::from_str("{role: WRITER, serviceAccount: a@p.iam.gserviceaccount.com}").unwrap();
        assert_eq!(
            AclEntry::from_spec(&sa).to_api(),
            json!({"role": "WRITER", "userByEmail": "a@p.iam.gserviceaccount.com"})
        );
    }

    #[test]
    fn every_kind_round_trips() {
        for v in [
            json!({"role": "OWNER", "specialGroup": "projectOwners"}),
            json!({"role": "READER", "domain": "acme.com"}),
            json!({"role": "READER", "groupByEmail": "g@acme.com"}),
            json!({"role": "READER", "iamMember": "deleted:user:bob@x.com?uid=123"}),
            json!({"view": {"projectId": "p", "datasetId": "d", "tableId": "t"}}),
            json!({"routine": {"projectId": "p", "datasetId": "d", "routineId": "r"}}),
            json!({"dataset": {"dataset": {"projectId": "p", "datasetId": "d"}, "targetTypes": ["VIEWS"]}}),
            json!({"role": "READER", "userByEmail": "x@y.com", "condition": {"expression": "true"}}),
        ] {
            let e = AclEntry::from_api(&v);
            assert_eq!(e.to_api(), v, "{e}");
            assert_eq!(AclEntry::from_api(&e.to_api()), e);
        }
    }

    #[test]
    fn mangled_and_unknown_entries_are_kept_verbatim() {
        let mangled = json!({"dataset": {"projectId": "", "datasetId": ""}});
        let e = AclEntry::from_api(&mangled);
        assert!(matches!(e.principal, Principal::Other(_)));
        assert_eq!(e.to_api(), mangled);
    }

    #[test]
    fn identities() {
        let e = identity_entry("serviceAccount:BQ@p.iam.gserviceaccount.com").unwrap();
        assert_eq!(e.principal, Principal::User("bq@p.iam.gserviceaccount.com".into()));
        assert!(e.is_owner());
        assert!(identity_entry("bq@p.iam.gserviceaccount.com").is_err());
        assert!(identity_entry("robot:x@y.com").is_err());
    }

    #[test]
    fn entries_are_shown_by_their_real_type() {
        let sa = identity_entry("serviceAccount:bqsteward@p.iam.gserviceaccount.com").unwrap();
        assert_eq!(
            sa.to_string(),
            "OWNER  serviceAccount:bqsteward@p.iam.gserviceaccount.com"
        );
        let user = identity_entry("user:ana@acme.com").unwrap();
        assert_eq!(user.to_string(), "OWNER  user:ana@acme.com");
        let view = AclEntry::authorized_view(&crate::cloud::bqtypes::TableRef::new("p", "d", "v"));
        assert_eq!(view.to_string(), "AUTHORIZED view:p.d.v");
    }
}
