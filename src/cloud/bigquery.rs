//! BigQuery behind the [`BigQuery`] trait. [`BigQueryRest`] implements it with the typed
//! `gcp-bigquery-client` where that client covers the call, and raw REST where it does not
//! (access lists and etags, which its `Dataset` model lacks).

use super::http::{Auth, Rest};
use super::{CloudError, Endpoints};
use async_trait::async_trait;
use gcp_bigquery_client::error::BQError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A dataset as bqsteward observes it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInfo {
    /// Entity tag: changes on every metadata update; sent back as `If-Match` to guard writes.
    #[serde(default)]
    pub etag: String,
    /// BigQuery location.
    #[serde(default)]
    pub location: String,
    /// The access list, as BigQuery returns it (normalised by the DatasetAccess code).
    #[serde(default)]
    pub access: Vec<serde_json::Value>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The BigQuery operations bqsteward needs.
#[async_trait]
pub trait BigQuery: Send + Sync {
    /// Reads a dataset; `Ok(None)` when it does not exist.
    async fn get_dataset(&self, project: &str, dataset: &str) -> Result<Option<DatasetInfo>, CloudError>;
    /// Creates a dataset in `location`; succeeds if it already exists.
    async fn create_dataset(&self, project: &str, dataset: &str, location: &str) -> Result<(), CloudError>;
    /// Replaces a dataset's whole access list (`updateMode=UPDATE_ACL`), only if its etag is still
    /// `etag` (`If-Match`; BigQuery answers 412 otherwise). Returns the dataset as written.
    async fn patch_dataset_access(
        &self,
        project: &str,
        dataset: &str,
        access: Vec<serde_json::Value>,
        etag: &str,
    ) -> Result<DatasetInfo, CloudError>;
}

/// The production BigQuery client (also used against bqemulator).
#[derive(Clone)]
pub struct BigQueryRest {
    base: String,
    rest: Rest,
    typed: Arc<gcp_bigquery_client::Client>,
}

/// Lets the typed client use bqsteward's credentials.
#[derive(Clone)]
struct TokenBridge(Auth);

#[async_trait]
impl gcp_bigquery_client::auth::Authenticator for TokenBridge {
    async fn access_token(&self) -> Result<String, BQError> {
        match self.0.token().await {
            // Emulators ignore the header; the typed client always sends one.
            Ok(t) => Ok(t.unwrap_or_else(|| "emulator".into())),
            Err(_) => Err(BQError::NoToken),
        }
    }
}

impl BigQueryRest {
    /// A client for `endpoints.bigquery` with credentials chosen by the endpoint.
    pub async fn new(endpoints: &Endpoints) -> Result<BigQueryRest, CloudError> {
        let auth = Auth::for_endpoint(endpoints.bigquery_emulated)?;
        let typed = gcp_bigquery_client::client_builder::ClientBuilder::new()
            .with_v2_base_url(endpoints.bigquery.clone())
            .build_from_authenticator(Arc::new(TokenBridge(auth.clone())))
            .await
            .map_err(|e| CloudError::Auth(e.to_string()))?;
        Ok(BigQueryRest {
            base: endpoints.bigquery.clone(),
            rest: Rest::new("bigquery", auth),
            typed: Arc::new(typed),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

/// Path segment escaping for ids that reach URLs.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn typed_error(operation: String, e: BQError) -> CloudError {
    match e {
        BQError::ResponseError { error } => CloudError::Api {
            api: "bigquery",
            operation,
            status: u16::try_from(error.error.code).unwrap_or(500),
            reason: error
                .error
                .errors
                .first()
                .and_then(|m| m.get("reason").cloned())
                .unwrap_or_default(),
            message: error.error.message,
        },
        BQError::RequestError(source) => CloudError::Transport {
            api: "bigquery",
            operation,
            source,
        },
        other => CloudError::Decode {
            api: "bigquery",
            operation,
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl BigQuery for BigQueryRest {
    async fn get_dataset(&self, project: &str, dataset: &str) -> Result<Option<DatasetInfo>, CloudError> {
        let op = format!("datasets.get {project}.{dataset}");
        let req = self
            .rest
            .http
            .get(self.url(&format!("projects/{}/datasets/{}", seg(project), seg(dataset))));
        match self.rest.json(&op, req).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn patch_dataset_access(
        &self,
        project: &str,
        dataset: &str,
        access: Vec<serde_json::Value>,
        etag: &str,
    ) -> Result<DatasetInfo, CloudError> {
        let op = format!("datasets.patch {project}.{dataset} (access)");
        let req = self
            .rest
            .http
            .patch(self.url(&format!("projects/{}/datasets/{}", seg(project), seg(dataset))))
            .query(&[("updateMode", "UPDATE_ACL")])
            .header(reqwest::header::IF_MATCH, etag)
            .json(&serde_json::json!({ "access": access }));
        self.rest.json(&op, req).await
    }

    async fn create_dataset(&self, project: &str, dataset: &str, location: &str) -> Result<(), CloudError> {
        let op = format!("datasets.insert {project}.{dataset}");
        let ds = gcp_bigquery_client::model::dataset::Dataset::new(project, dataset)
            .location(location)
            .label("managed-by", "bqsteward");
        match self.typed.dataset().create(ds).await {
            Ok(_) => Ok(()),
            Err(e) => match typed_error(op, e) {
                e if e.status() == Some(409) => Ok(()),
                e => Err(e),
            },
        }
    }
}
