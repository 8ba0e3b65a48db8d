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
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            forbidden_principals: default_forbidden(),
            allowed_domains: Vec::new(),
            max_removals_per_dataset: default_max_removals(),
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
}

impl Policy {
    /// Reads a policy file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Policy, PolicyError> {
        let Some(path) = path else { return Ok(Policy::default()) };
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|source| PolicyError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Whether a principal (as written: `allUsers`, a special group, an IAM member) is forbidden.
    pub fn is_forbidden(&self, principal: &str) -> bool {
        let principal = principal.trim();
        self.forbidden_principals
            .iter()
            .any(|f| f.eq_ignore_ascii_case(principal))
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
    fn defaults_forbid_public_principals() {
        let p = Policy::default();
        assert!(p.is_forbidden("allUsers"));
        assert!(p.is_forbidden("allauthenticatedusers"));
        assert!(!p.is_forbidden("projectReaders"));
        assert!(p.domain_allowed("x@anything.org"));
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
