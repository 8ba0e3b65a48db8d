//! Short-lived access tokens of another service account, from the IAM Service Account Credentials
//! API (`projects/-/serviceAccounts/{email}:generateAccessToken`), so a request is made with a
//! per-namespace identity and Google's IAM enforces what it may touch.
//!
//! Written here rather than with `google_cloud_auth::credentials::impersonated`: that builder's
//! endpoint is fixed to `https://iamcredentials.<universe>` (its override is crate-private), and
//! bqsteward must point it at a local stand-in in tests (`IAM_CREDENTIALS_EMULATOR_HOST`), as it
//! does every other API. The exchange is one documented call; the source token comes from the
//! same [`Auth`] every other client uses. Tokens are cached until five minutes before they expire
//! and never logged.

use super::CloudError;
use super::http::{Auth, Rest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Scope of the tokens asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime asked for (the API's default maximum without an org policy exception).
pub const LIFETIME: &str = "3600s";

/// A source of access tokens for `principal`, minted with the source credentials. Its `Debug`
/// never shows the cached token.
pub struct Impersonated {
    principal: String,
    url: String,
    rest: Rest,
    cache: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Impersonated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonated")
            .field("principal", &self.principal)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    access_token: String,
    #[serde(default)]
    expire_time: Option<String>,
}

impl Impersonated {
    /// Tokens of service account `principal` (an email), minted at the IAM Credentials API root
    /// `root` ([`super::Endpoints::iam_credentials`]) with `source` credentials.
    pub fn new(principal: &str, source: Auth, root: &str) -> Impersonated {
        let root = root.trim_end_matches('/');
        Impersonated {
            url: format!(
                "{root}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
                // `@` is a valid path character; the documented form keeps it.
                super::bigquery::seg(principal).replace("%40", "@")
            ),
            principal: principal.to_string(),
            rest: Rest::new("iamcredentials", source),
            cache: Mutex::new(None),
        }
    }

    /// The service account.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// A token of the service account: cached, or minted now.
    pub async fn token(&self) -> Result<String, CloudError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let op = format!("generateAccessToken for {}", self.principal);
        let body = serde_json::json!({ "scope": [SCOPE], "lifetime": LIFETIME });
        let answer: Answer = self
            .rest
            .json(&op, self.rest.http.post(&self.url).json(&body))
            .await
            .map_err(|e| match e {
                // Retryable failures keep their category; a refusal says what to grant.
                CloudError::Api {
                    status: 401 | 403 | 404,
                    ..
                } => CloudError::Auth(format!(
                    "cannot act as {}: {e} (the service account must exist and the controller's identity needs \
                     roles/iam.serviceAccountTokenCreator on it)",
                    self.principal
                )),
                e => e,
            })?;
        let lifetime = answer
            .expire_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds())
            .unwrap_or(3600);
        // Refresh five minutes early; never cache a token about to expire.
        let keep = Duration::from_secs(u64::try_from(lifetime - 300).unwrap_or(0));
        *cache = Some((answer.access_token.clone(), Instant::now() + keep));
        Ok(answer.access_token)
    }
}

/// [`Auth`] that acts as `principal` (tokens minted at `endpoints.iam_credentials` with
/// Application Default Credentials, or with none when every endpoint is an emulator).
pub fn auth(principal: &str, endpoints: &super::Endpoints) -> Result<Auth, CloudError> {
    let source = Auth::for_endpoint(endpoints.bigquery_emulated && endpoints.storage_emulated)?;
    Ok(Auth::Impersonated(Arc::new(Impersonated::new(
        principal,
        source,
        &endpoints.iam_credentials,
    ))))
}
