//! Narrow clients of the Google Cloud APIs bqsteward uses, behind traits so the same reconcile code
//! runs against Google, the local emulators or an in-test fake.
//!
//! Endpoints come from the environment: with `BIGQUERY_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST` set
//! (e.g. `http://127.0.0.1:19050`) bqsteward talks to that endpoint without credentials; otherwise
//! to Google with Application Default Credentials (Workload Identity on GKE).

pub mod bigquery;
pub mod bqtypes;
mod error;
pub mod groups;
mod http;
pub mod iam;
pub mod impersonate;
pub mod memo;
pub mod retry;
pub mod storage;

pub use error::{CloudError, ErrorCategory, classify};

/// Told about every cloud call when it ends: which API, which operation (its first word, e.g.
/// `tables.get`), and the outcome (`ok`, an HTTP status, or `transport`). The controller's metrics
/// implement it; the cloud clients know nothing about who listens.
pub trait CallObserver: Send + Sync {
    /// One call ended.
    fn call(&self, api: &str, operation: &str, outcome: &str);
}

static OBSERVER: std::sync::OnceLock<Box<dyn CallObserver>> = std::sync::OnceLock::new();

/// Sets the process-wide call observer (the first one set stays).
pub fn observe_calls(observer: Box<dyn CallObserver>) {
    let _ = OBSERVER.set(observer);
}

/// Reports one call to the observer, if any.
pub(crate) fn observed(api: &str, operation: &str, outcome: &str) {
    if let Some(o) = OBSERVER.get() {
        o.call(api, operation.split_whitespace().next().unwrap_or(operation), outcome);
    }
}
pub use http::Auth;

/// Where the APIs are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// BigQuery REST base, ending in `/bigquery/v2`.
    pub bigquery: String,
    /// Cloud Storage JSON API root (without `/storage/v1`).
    pub storage: String,
    /// Whether BigQuery is an emulator (no credentials).
    pub bigquery_emulated: bool,
    /// Whether Cloud Storage is an emulator (no credentials).
    pub storage_emulated: bool,
    /// IAM Service Account Credentials API root (impersonation): `IAM_CREDENTIALS_EMULATOR_HOST`
    /// when set, else Google's.
    pub iam_credentials: String,
}

/// The emulator host named by the environment variable `var` (unset or empty: none).
pub(crate) fn emulator_host(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|s| !s.is_empty())
}

/// An emulator host as a URL root: `http://` added when no scheme is given, no trailing `/`.
pub(crate) fn with_scheme(host: &str) -> String {
    let h = host.trim_end_matches('/');
    if h.contains("://") {
        h.to_string()
    } else {
        format!("http://{h}")
    }
}

/// Base URL and credentials of an API: `<emulator host><path>` without credentials, or the
/// production `api` root with Application Default Credentials.
pub(crate) fn api_base(emulator_host: Option<&str>, path: &str, api: &str) -> Result<(String, Auth), CloudError> {
    match emulator_host {
        Some(h) => Ok((format!("{}{path}", with_scheme(h)), Auth::None)),
        None => Ok((api.to_string(), Auth::application_default()?)),
    }
}

impl Endpoints {
    /// Google's production endpoints, or the emulators named by the environment.
    pub fn from_env() -> Endpoints {
        let mut e = Self::from_vars(
            emulator_host("BIGQUERY_EMULATOR_HOST"),
            emulator_host("STORAGE_EMULATOR_HOST"),
        );
        if let Some(h) = emulator_host("IAM_CREDENTIALS_EMULATOR_HOST") {
            e.iam_credentials = with_scheme(&h);
        }
        e
    }

    /// Endpoints from explicit emulator hosts (`None` = Google).
    pub fn from_vars(bigquery: Option<String>, storage: Option<String>) -> Endpoints {
        Endpoints {
            bigquery_emulated: bigquery.is_some(),
            storage_emulated: storage.is_some(),
            bigquery: bigquery
                .map(|h| format!("{}/bigquery/v2", with_scheme(&h)))
                .unwrap_or_else(|| "https://bigquery.googleapis.com/bigquery/v2".into()),
            storage: storage
                .map(|h| with_scheme(&h))
                .unwrap_or_else(|| "https://storage.googleapis.com".into()),
            iam_credentials: "https://iamcredentials.googleapis.com".into(),
        }
    }
}

/// Installs the process-wide rustls crypto provider. Both ring and aws-lc-rs are compiled into
/// this dependency tree, so rustls cannot pick one by itself and kube's client would panic.
/// Call first in `main` and in every test that makes TLS clients; calling twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_hosts_become_api_bases() {
        let e = Endpoints::from_vars(Some("127.0.0.1:19050/".into()), Some("http://127.0.0.1:19052".into()));
        assert_eq!(e.bigquery, "http://127.0.0.1:19050/bigquery/v2");
        assert_eq!(e.storage, "http://127.0.0.1:19052");
        assert!(e.bigquery_emulated && e.storage_emulated);
        let g = Endpoints::from_vars(None, None);
        assert_eq!(g.bigquery, "https://bigquery.googleapis.com/bigquery/v2");
        assert!(!g.bigquery_emulated);
    }
}
