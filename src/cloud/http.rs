//! The HTTP plumbing shared by the REST clients: bearer tokens (or none, for emulators), sending a
//! request, and turning Google's error bodies into [`CloudError`].

use super::CloudError;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};
use serde::de::DeserializeOwned;

/// How requests are authenticated.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials (emulators).
    None,
    /// Application Default Credentials (Workload Identity on GKE, a key file, gcloud login).
    Adc(AccessTokenCredentials),
    /// Tokens of another service account, minted with other credentials (per-namespace identity).
    Impersonated(std::sync::Arc<super::impersonate::Impersonated>),
}

impl Auth {
    /// Application Default Credentials with the cloud-platform scope.
    pub fn application_default() -> Result<Auth, CloudError> {
        Builder::default()
            .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
            .build_access_token_credentials()
            .map(Auth::Adc)
            .map_err(|e| CloudError::Auth(format!("no Application Default Credentials: {e}")))
    }

    /// Fetches one token now, so a missing credential is one clear error up front (what is missing
    /// and the ways to provide it) instead of the auth library's message repeated for every call.
    pub async fn check(&self) -> Result<(), CloudError> {
        match self.token().await {
            Ok(_) => Ok(()),
            Err(e) => Err(CloudError::Auth(format!(
                "none usable: {}. Provide Application Default Credentials: \
                 `gcloud auth application-default login` on a workstation, GOOGLE_APPLICATION_CREDENTIALS=<key \
                 file>, or Workload Identity on GKE (the pod's Kubernetes service account bound to a Google \
                 service account). To use the local emulators instead, set BIGQUERY_EMULATOR_HOST and \
                 STORAGE_EMULATOR_HOST (and CLOUD_IDENTITY_EMULATOR_HOST / RESOURCE_MANAGER_EMULATOR_HOST for \
                 groups and consumer projects): `scripts/emulators.sh start` prints them",
                // The auth library's own words for "nothing found" are confusing ("transient
                // errors … might succeed"); say what it means.
                if e.to_string().contains("transient errors") {
                    "no key file, no gcloud login, and no metadata server answered".to_string()
                } else {
                    e.to_string().trim_start_matches("credentials: ").to_string()
                }
            ))),
        }
    }

    /// No credentials when `emulated`, ADC otherwise.
    pub fn for_endpoint(emulated: bool) -> Result<Auth, CloudError> {
        if emulated {
            Ok(Auth::None)
        } else {
            Self::application_default()
        }
    }

    /// The bearer token to send, if any.
    pub async fn token(&self) -> Result<Option<String>, CloudError> {
        match self {
            Auth::None => Ok(None),
            Auth::Adc(creds) => creds
                .access_token()
                .await
                .map(|t| Some(t.token))
                .map_err(|e| CloudError::Auth(e.to_string())),
            // Boxed: minting a token sends a request, which asks its own Auth for a token.
            Auth::Impersonated(i) => Box::pin(i.token()).await.map(Some),
        }
    }
}

/// A REST client of one API: reqwest plus auth plus error decoding.
#[derive(Clone, Debug)]
pub(crate) struct Rest {
    pub(crate) api: &'static str,
    pub(crate) http: reqwest::Client,
    pub(crate) auth: Auth,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    status: String,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

impl Rest {
    pub(crate) fn new(api: &'static str, auth: Auth) -> Rest {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("bqsteward/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client with static settings");
        Rest { api, http, auth }
    }

    /// Sends `req` (adding the bearer token) and returns the response if its status is a success.
    /// One `tracing` span per call (api, operation), inside the reconcile's span.
    #[tracing::instrument(level = "debug", skip_all, fields(api = self.api, operation = %operation))]
    pub(crate) async fn send(
        &self,
        operation: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CloudError> {
        let req = match self.auth.token().await? {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let transport = |source| CloudError::Transport {
            api: self.api,
            operation: operation.to_string(),
            source,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                super::observed(self.api, operation, "transport");
                return Err(transport(e));
            }
        };
        let status = resp.status();
        super::observed(
            self.api,
            operation,
            if status.is_success() { "ok" } else { status.as_str() },
        );
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(transport)?;
        let (reason, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => {
                let reason = b
                    .error
                    .errors
                    .first()
                    .map(|e| e.reason.clone())
                    .filter(|r| !r.is_empty());
                (reason.unwrap_or(b.error.status), b.error.message)
            }
            Err(_) => (
                status.canonical_reason().unwrap_or("").to_string(),
                text.chars().take(500).collect(),
            ),
        };
        Err(CloudError::Api {
            api: self.api,
            operation: operation.to_string(),
            status: status.as_u16(),
            reason,
            message,
        })
    }

    /// [`Rest::send`] and decode the JSON body.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        operation: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CloudError> {
        let resp = self.send(operation, req).await?;
        let bytes = resp.bytes().await.map_err(|source| CloudError::Transport {
            api: self.api,
            operation: operation.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| CloudError::Decode {
            api: self.api,
            operation: operation.to_string(),
            message: e.to_string(),
        })
    }
}
