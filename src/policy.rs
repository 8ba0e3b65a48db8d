//! The guardrail policy file (`--policy FILE`): forbidden principals, allowed email domains and
//! the blast-radius limit. Absent file = the defaults below.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Guardrails applied by `validate`, `plan` and `apply`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Principals that may never be granted (default `allUsers`, `allAuthenticatedUsers`).
    /// Set to `[]` to allow public datasets on purpose.
    #[serde(default = "default_forbidden")]
    pub forbidden_principals: Vec<String>,
    /// If non-empty, every user, group and service-account email and every domain entry must be in
    /// one of these domains (subdomains included).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Most entries one plan may remove from one dataset (or members from one group) without the
    /// `bqsteward.dev/allow-large-removal: "true"` annotation or `--allow-large-removal` (default 10).
    #[serde(default = "default_max_removals")]
    pub max_removals_per_dataset: usize,
    /// Tables a ConsumerProject view may read directly (`source: {table: …}`), as
    /// `project.dataset.table` patterns where `*` matches any run of characters. Default none:
    /// consumer views read IngestedTable layers, whose PII bqsteward knows; an explicit table could be
    /// anything bqsteward's identity can read.
    #[serde(default)]
    pub consumer_source_tables: Vec<String>,
    /// Per-namespace grants for a cluster shared by several teams: what each namespace's resources
    /// may write and read. Absent: single-tenant (every namespace may use everything bqsteward's
    /// identity can reach). See the README's "Tenancy and trust".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Tenancy>,
}

/// Whether `email` is a Google service account email (user-managed or a Google-managed default).
fn is_service_account(email: &str) -> bool {
    let Some((name, domain)) = email.split_once('@') else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && domain.ends_with(".gserviceaccount.com")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The `tenancy` section of the policy file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenancy {
    /// Namespace → its grant. A namespace not listed may use nothing.
    #[serde(default)]
    pub namespaces: std::collections::BTreeMap<String, Grant>,
}

/// What one namespace's resources may use. Patterns: `*` matches any run of characters (also
/// across `.` and `/`), `?` one character; email and group patterns compare case-insensitively.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// Datasets the namespace may write, as `project.dataset` patterns: IngestedTable destinations
    /// and their view-layer datasets, DatasetAccess datasets, ConsumerProject datasets.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Source prefixes IngestedTables may read, e.g. `gs://acme-raw/marketing/*`.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Projects a ConsumerProject may use (where its readers run and pay for queries).
    #[serde(default)]
    pub consumer_projects: Vec<String>,
    /// Google groups a GroupMembership may manage, as email patterns, e.g. `*@marketing.acme.com`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Optional: the Google service account the controller acts as for this namespace's resources
    /// (`bqsteward run` only), e.g. `bqsteward-marketing@acme-data-eng.iam.gserviceaccount.com`.
    /// Its BigQuery and Cloud Storage requests then carry that account's short-lived tokens, so
    /// Google's IAM enforces the grant a second time. The controller's identity needs
    /// `roles/iam.serviceAccountTokenCreator` on it; the account is kept as OWNER on the access
    /// lists this namespace's resources own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl Grant {
    /// Whether `value` matches one of `patterns` (case-insensitively).
    pub fn allows(patterns: &[String], value: &str) -> bool {
        matches_any(patterns, value, true)
    }
}

/// Whether `value` matches one of the glob `patterns` (`*` also across `.` and `/`); a pattern
/// that is not a valid glob matches nothing.
fn matches_any(patterns: &[String], value: &str, case_insensitive: bool) -> bool {
    patterns.iter().any(|p| {
        globset::GlobBuilder::new(p)
            .case_insensitive(case_insensitive)
            .build()
            .map(|g| g.compile_matcher().is_match(value))
            .unwrap_or(false)
    })
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            forbidden_principals: default_forbidden(),
            allowed_domains: Vec::new(),
            max_removals_per_dataset: default_max_removals(),
            consumer_source_tables: Vec::new(),
            tenancy: None,
        }
    }
}

fn default_forbidden() -> Vec<String> {
    vec!["allUsers".into(), "allAuthenticatedUsers".into()]
}

fn default_max_removals() -> usize {
    10
}

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("invalid policy file {path}: {source}")]
    Parse {
        /// The path given.
        path: String,
        /// Why.
        source: serde_yaml::Error,
    },
    /// A value is not valid.
    #[error("invalid policy file {path}: {field}: {message}")]
    Invalid {
        /// The path given.
        path: String,
        /// Which field.
        field: String,
        /// Why, and the fix.
        message: String,
    },
}

impl Policy {
    /// Reads a policy file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Policy, PolicyError> {
        let Some(path) = path else { return Ok(Policy::default()) };
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let policy: Policy = serde_yaml::from_str(&text).map_err(|source| PolicyError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        let namespaces = policy.tenancy.iter().flat_map(|t| &t.namespaces);
        for (ns, grant) in namespaces {
            if let Some(sa) = &grant.service_account
                && !is_service_account(sa)
            {
                return Err(PolicyError::Invalid {
                    path: path.display().to_string(),
                    field: format!("tenancy.namespaces.{ns}.serviceAccount"),
                    message: format!("{sa:?} is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)"),
                });
            }
        }
        Ok(policy)
    }

    /// The service account namespace `ns` acts as, if the tenancy section names one.
    pub fn service_account(&self, ns: &str) -> Option<&str> {
        self.tenancy.as_ref()?.namespaces.get(ns)?.service_account.as_deref()
    }

    /// Whether a principal (as written: `allUsers`, a special group, an IAM member) is forbidden.
    pub fn is_forbidden(&self, principal: &str) -> bool {
        let principal = principal.trim();
        self.forbidden_principals
            .iter()
            .any(|f| f.eq_ignore_ascii_case(principal))
    }

    /// Checks an IAM member string (an `iamMember` entry) against the policy, as the same principal
    /// written any other way would be: `user:`, `group:`, `serviceAccount:` and `domain:` members
    /// must be in the allowed domains; `allUsers`, `allAuthenticatedUsers` and the public principal
    /// set `principalSet://goog/public:all` are forbidden when the corresponding public principal is.
    /// `Err` says why, in words for the manifest's author.
    pub fn check_iam_member(&self, member: &str) -> Result<(), String> {
        let member = member.trim();
        let public = |name: &str| {
            if name == member {
                format!(
                    "{member:?} is a forbidden principal (it would make the data public); remove it, or remove it \
                     from the policy file's forbiddenPrincipals"
                )
            } else {
                format!(
                    "{member:?} is a forbidden principal (the same as {name}: it would make the data public); remove \
                     it, or remove {name} from the policy file's forbiddenPrincipals"
                )
            }
        };
        if self.is_forbidden(member) {
            return Err(public(member));
        }
        if member.eq_ignore_ascii_case("principalSet://goog/public:all") && self.is_forbidden("allUsers") {
            return Err(public("allUsers"));
        }
        let Some((kind, rest)) = member.split_once(':') else {
            return Ok(());
        };
        let rest = rest.split('?').next().unwrap_or_default(); // a `?uid=…` suffix is not part of the email
        match kind.to_ascii_lowercase().as_str() {
            "user" | "group" | "serviceaccount" | "domain" if !self.domain_allowed(rest) => Err(format!(
                "{member:?} is outside the allowed domains {:?} of the policy file",
                self.allowed_domains
            )),
            "user" | "group" | "serviceaccount" | "domain" if self.is_forbidden(rest) => Err(public(rest)),
            _ => Ok(()),
        }
    }

    /// Whether a ConsumerProject view may read table `project.dataset.table` directly.
    pub fn consumer_table_allowed(&self, table: &str) -> bool {
        // BigQuery dataset and table ids are case-sensitive.
        matches_any(&self.consumer_source_tables, table, false)
    }

    /// Whether an email or a domain is inside the allowed domains (always true when none are set).
    pub fn domain_allowed(&self, email_or_domain: &str) -> bool {
        if self.allowed_domains.is_empty() {
            return true;
        }
        let domain = email_or_domain
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.allowed_domains.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            domain == a || domain.ends_with(&format!(".{a}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_must_be_service_account_emails() {
        let dir = std::env::temp_dir().join(format!("bqsteward-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, sa: &str| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!("tenancy:\n  namespaces:\n    mkt:\n      serviceAccount: '{sa}'\n"),
            )
            .unwrap();
            path
        };
        let ok = Policy::load(Some(&write("ok.yaml", "bq-mkt@acme-data.iam.gserviceaccount.com"))).unwrap();
        assert_eq!(
            ok.service_account("mkt"),
            Some("bq-mkt@acme-data.iam.gserviceaccount.com")
        );
        assert_eq!(ok.service_account("other"), None);
        for bad in [
            "eve@evil.com",
            "bq@acme.iam.gserviceaccount.com.evil.com",
            "@x.gserviceaccount.com",
        ] {
            let e = Policy::load(Some(&write("bad.yaml", bad))).unwrap_err().to_string();
            assert!(
                e.contains("tenancy.namespaces.mkt.serviceAccount") && e.contains("not a service account"),
                "{bad}: {e}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn defaults_forbid_public_principals() {
        let p = Policy::default();
        assert!(p.is_forbidden("allUsers"));
        assert!(p.is_forbidden("allauthenticatedusers"));
        assert!(!p.is_forbidden("projectReaders"));
        assert!(p.domain_allowed("x@anything.org"));
    }

    #[test]
    fn iam_members_follow_the_same_rules_as_other_principals() {
        let p: Policy = serde_yaml::from_str("allowedDomains: [acme.com]").unwrap();
        for bad in [
            "user:eve@evil.com",
            "group:g@gmail.com",
            "serviceAccount:x@other.iam.gserviceaccount.com",
            "domain:gmail.com",
            "allUsers",
            "allAuthenticatedUsers",
            "principalSet://goog/public:all",
            "PRINCIPALSET://goog/public:all",
        ] {
            assert!(p.check_iam_member(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "user:a@acme.com",
            "group:g@eu.acme.com",
            "domain:acme.com",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g",
        ] {
            assert_eq!(p.check_iam_member(good), Ok(()), "{good}");
        }
        let open: Policy = serde_yaml::from_str("forbiddenPrincipals: []").unwrap();
        assert_eq!(open.check_iam_member("principalSet://goog/public:all"), Ok(()));
        assert_eq!(open.check_iam_member("user:eve@evil.com"), Ok(()));
    }

    #[test]
    fn consumer_source_tables_are_closed_by_default() {
        assert!(!Policy::default().consumer_table_allowed("p.d.t"));
        let p: Policy = serde_yaml::from_str("consumerSourceTables: ['acme-data-eng.shared_*.*']").unwrap();
        assert!(p.consumer_table_allowed("acme-data-eng.shared_sales.orders"));
        assert!(!p.consumer_table_allowed("acme-data-eng.payments.transactions"));
        assert!(!p.consumer_table_allowed("acme-hr.shared_x.payroll"));
    }

    #[test]
    fn allowed_domains_include_subdomains_only() {
        let p: Policy = serde_yaml::from_str("allowedDomains: [acme.com]").unwrap();
        assert!(p.domain_allowed("a@acme.com"));
        assert!(p.domain_allowed("a@eu.ACME.com"));
        assert!(!p.domain_allowed("a@notacme.com"));
        assert!(!p.domain_allowed("evil.com"));
        assert_eq!(p.max_removals_per_dataset, 10);
    }
}
