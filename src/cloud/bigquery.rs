//! BigQuery behind the [`BigQuery`] trait. [`BigQueryRest`] implements it with the typed
//! `gcp-bigquery-client` where that client covers the call, and raw REST where it does not
//! (access lists and etags, which its `Dataset` model lacks).

use super::bqtypes::{Field, Job, Param, Rows, TableDef, TableInfo, TableRef, ViewDef};
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

    /// Reads a table; `Ok(None)` when it does not exist.
    async fn get_table(&self, table: &TableRef) -> Result<Option<TableInfo>, CloudError>;
    /// Creates a table; succeeds if it already exists (the caller re-reads to compare).
    async fn create_table(&self, def: &TableDef) -> Result<(), CloudError>;
    /// Replaces a table's schema (only additions are accepted by BigQuery), guarded by `etag`.
    async fn patch_table_schema(&self, table: &TableRef, fields: &[Field], etag: &str) -> Result<(), CloudError>;
    /// Sets a table's labels to `labels`, guarded by `etag` (pass the live labels too: whether a
    /// patch merges maps differs between BigQuery and bqemulator, so send the whole map).
    async fn patch_table_labels(
        &self,
        table: &TableRef,
        labels: &std::collections::BTreeMap<String, String>,
        etag: &str,
    ) -> Result<(), CloudError>;
    /// Creates a view. Answers 409 when something already has the name (the caller observed it
    /// missing, so someone else was faster: it re-reads and compares on the next pass).
    async fn create_view(&self, def: &ViewDef) -> Result<(), CloudError>;
    /// Replaces a view's query, labels and description in place (`tables.patch`), guarded by
    /// `etag`. In place, so authorizations naming the view stay valid.
    async fn patch_view(&self, def: &ViewDef, etag: &str) -> Result<(), CloudError>;
    /// Deletes a table; succeeds if it is already gone.
    async fn delete_table(&self, table: &TableRef) -> Result<(), CloudError>;
    /// Every table and view of a dataset with its type (`TABLE`, `VIEW`, …), following pages.
    async fn list_tables(&self, project: &str, dataset: &str) -> Result<Vec<(TableRef, String)>, CloudError>;
    /// Checks a query without running it (`dryRun`): Ok when BigQuery accepts it.
    async fn dry_run(&self, project: &str, location: &str, sql: &str) -> Result<(), CloudError>;
    /// Reads a job; `Ok(None)` when no job has this id.
    async fn get_job(&self, project: &str, location: &str, job_id: &str) -> Result<Option<Job>, CloudError>;
    /// Inserts a job with a caller-chosen id. BigQuery answers 409 `duplicate` when the id exists.
    async fn insert_job(
        &self,
        project: &str,
        location: &str,
        job_id: &str,
        configuration: serde_json::Value,
    ) -> Result<Job, CloudError>;
    /// Runs a read-only query (named parameters) and hands every row to `sink` (column names,
    /// cells), following pages, so large results are never held whole.
    async fn query_each(
        &self,
        project: &str,
        location: &str,
        sql: &str,
        params: &[Param],
        sink: &mut (dyn for<'c> FnMut(&'c [String], Vec<Option<String>>) + Send),
    ) -> Result<(), CloudError>;

    /// [`BigQuery::query_each`] collected into [`Rows`] (for small results).
    async fn query(&self, project: &str, location: &str, sql: &str, params: &[Param]) -> Result<Rows, CloudError> {
        let mut rows = Rows::default();
        self.query_each(project, location, sql, params, &mut |cols, row| {
            if rows.columns.is_empty() {
                rows.columns = cols.to_vec();
            }
            rows.rows.push(row);
        })
        .await?;
        Ok(rows)
    }
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
        Self::with_auth(endpoints, Auth::for_endpoint(endpoints.bigquery_emulated)?).await
    }

    /// A client for `endpoints.bigquery` authenticated by `auth` (e.g. an impersonated identity).
    pub async fn with_auth(endpoints: &Endpoints, auth: Auth) -> Result<BigQueryRest, CloudError> {
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

    fn dataset_url(&self, project: &str, dataset: &str) -> String {
        self.url(&format!("projects/{}/datasets/{}", seg(project), seg(dataset)))
    }

    /// The dataset's tables collection (insert, list).
    fn tables_url(&self, project: &str, dataset: &str) -> String {
        format!("{}/tables", self.dataset_url(project, dataset))
    }

    fn table_url(&self, t: &TableRef) -> String {
        format!("{}/{}", self.tables_url(&t.project, &t.dataset), seg(&t.table))
    }

    /// `tables.patch` of `body`, guarded by `etag`.
    async fn patch_table(&self, op: &str, t: &TableRef, etag: &str, body: serde_json::Value) -> Result<(), CloudError> {
        let req = self
            .rest
            .http
            .patch(self.table_url(t))
            .header(reqwest::header::IF_MATCH, etag)
            .json(&body);
        self.rest.send(op, req).await.map(|_| ())
    }

    async fn query_page(
        &self,
        project: &str,
        location: &str,
        job: &str,
        token: Option<&str>,
        op: &str,
    ) -> Result<QueryPage, CloudError> {
        let url = self.url(&format!("projects/{}/queries/{}", seg(project), seg(job)));
        let mut q: Vec<(&str, String)> = vec![
            ("location", location.into()),
            ("maxResults", QUERY_PAGE_ROWS.to_string()),
            ("timeoutMs", "60000".into()),
            ("formatOptions.useInt64Timestamp", "true".into()),
        ];
        if let Some(t) = token {
            q.push(("pageToken", t.into()));
        }
        self.rest.json(op, self.rest.http.get(url).query(&q)).await
    }
}

/// Rows per result page (BigQuery also caps a page at 10 MB).
const QUERY_PAGE_ROWS: u32 = 50_000;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    #[serde(default)]
    job_complete: bool,
    #[serde(default)]
    job_reference: Option<serde_json::Value>,
    #[serde(default)]
    schema: super::bqtypes::Schema,
    #[serde(default)]
    rows: Vec<QueryRow>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    errors: Vec<super::bqtypes::JobError>,
}

#[derive(serde::Deserialize)]
struct QueryRow {
    f: Vec<QueryCell>,
}

#[derive(serde::Deserialize)]
struct QueryCell {
    #[serde(default)]
    v: serde_json::Value,
}

fn cell(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl QueryPage {
    /// BigQuery answers a failed query with an HTTP error; bqemulator answers 200 with `errors`
    /// (and no rows). Either way the caller gets an `Api` error.
    fn check(&self, op: &str) -> Result<(), CloudError> {
        match self.errors.first() {
            Some(e) => Err(CloudError::Api {
                api: "bigquery",
                operation: op.to_string(),
                status: 400,
                reason: e.reason.clone(),
                message: e.message.clone(),
            }),
            None => Ok(()),
        }
    }

    fn job_id(&self, op: &str) -> Result<String, CloudError> {
        self.job_reference
            .as_ref()
            .and_then(|r| r["jobId"].as_str())
            .map(str::to_string)
            .ok_or_else(|| CloudError::Decode {
                api: "bigquery",
                operation: op.to_string(),
                message: "query answer without jobReference".into(),
            })
    }
}

/// Path segment escaping for ids that reach URLs.
pub(crate) fn seg(s: &str) -> String {
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
        let req = self.rest.http.get(self.dataset_url(project, dataset));
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
            .patch(self.dataset_url(project, dataset))
            .query(&[("updateMode", "UPDATE_ACL")])
            .header(reqwest::header::IF_MATCH, etag)
            .json(&serde_json::json!({ "access": access }));
        self.rest.json(&op, req).await
    }

    async fn get_table(&self, t: &TableRef) -> Result<Option<TableInfo>, CloudError> {
        let op = format!("tables.get {t}");
        match self.rest.json(&op, self.rest.http.get(self.table_url(t))).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_table(&self, def: &TableDef) -> Result<(), CloudError> {
        let t = &def.table;
        let op = format!("tables.insert {t}");
        let url = self.tables_url(&t.project, &t.dataset);
        match self.rest.send(&op, self.rest.http.post(url).json(&def.to_api())).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn patch_table_schema(&self, t: &TableRef, fields: &[Field], etag: &str) -> Result<(), CloudError> {
        let op = format!("tables.patch {t} (schema)");
        self.patch_table(&op, t, etag, serde_json::json!({ "schema": { "fields": fields } }))
            .await
    }

    async fn patch_table_labels(
        &self,
        t: &TableRef,
        labels: &std::collections::BTreeMap<String, String>,
        etag: &str,
    ) -> Result<(), CloudError> {
        let op = format!("tables.patch {t} (labels)");
        self.patch_table(&op, t, etag, serde_json::json!({ "labels": labels }))
            .await
    }

    async fn create_view(&self, def: &ViewDef) -> Result<(), CloudError> {
        let t = &def.table;
        let op = format!("tables.insert {t} (view)");
        let url = self.tables_url(&t.project, &t.dataset);
        self.rest
            .send(&op, self.rest.http.post(url).json(&def.to_api()))
            .await
            .map(|_| ())
    }

    async fn patch_view(&self, def: &ViewDef, etag: &str) -> Result<(), CloudError> {
        let op = format!("tables.patch {} (view)", def.table);
        self.patch_table(&op, &def.table, etag, def.to_api()).await
    }

    async fn list_tables(&self, project: &str, dataset: &str) -> Result<Vec<(TableRef, String)>, CloudError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            tables: Vec<Item>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Item {
            table_reference: Ref,
            #[serde(rename = "type", default)]
            kind: String,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ref {
            project_id: String,
            dataset_id: String,
            table_id: String,
        }
        let op = format!("tables.list {project}.{dataset}");
        let url = self.tables_url(project, dataset);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.rest.http.get(&url).query(&[("maxResults", "1000")]);
            if let Some(t) = &token {
                req = req.query(&[("pageToken", t)]);
            }
            let page: Page = self.rest.json(&op, req).await?;
            for t in page.tables {
                let r = t.table_reference;
                out.push((TableRef::new(&r.project_id, &r.dataset_id, &r.table_id), t.kind));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn dry_run(&self, project: &str, location: &str, sql: &str) -> Result<(), CloudError> {
        let op = format!("jobs.query {project} (dry run)");
        let url = self.url(&format!("projects/{}/queries", seg(project)));
        let body = serde_json::json!({
            "query": sql,
            "useLegacySql": false,
            "location": location,
            "dryRun": true,
        });
        let page: QueryPage = self.rest.json(&op, self.rest.http.post(&url).json(&body)).await?;
        page.check(&op)
    }

    async fn delete_table(&self, t: &TableRef) -> Result<(), CloudError> {
        let op = format!("tables.delete {t}");
        match self.rest.send(&op, self.rest.http.delete(self.table_url(t))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get_job(&self, project: &str, location: &str, job_id: &str) -> Result<Option<Job>, CloudError> {
        let op = format!("jobs.get {project}:{job_id}");
        let url = self.url(&format!("projects/{}/jobs/{}", seg(project), seg(job_id)));
        let req = self.rest.http.get(url).query(&[("location", location)]);
        match self.rest.json::<serde_json::Value>(&op, req).await {
            Ok(v) => Ok(Some(Job::from_api(&v))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn insert_job(
        &self,
        project: &str,
        location: &str,
        job_id: &str,
        configuration: serde_json::Value,
    ) -> Result<Job, CloudError> {
        let op = format!("jobs.insert {project}:{job_id}");
        let url = self.url(&format!("projects/{}/jobs", seg(project)));
        let body = serde_json::json!({
            "jobReference": { "projectId": project, "jobId": job_id, "location": location },
            "configuration": configuration,
        });
        let v: serde_json::Value = self.rest.json(&op, self.rest.http.post(url).json(&body)).await?;
        Ok(Job::from_api(&v))
    }

    async fn query_each(
        &self,
        project: &str,
        location: &str,
        sql: &str,
        params: &[Param],
        sink: &mut (dyn for<'c> FnMut(&'c [String], Vec<Option<String>>) + Send),
    ) -> Result<(), CloudError> {
        let op = format!("jobs.query {project}");
        let url = self.url(&format!("projects/{}/queries", seg(project)));
        let body = serde_json::json!({
            "query": sql,
            "useLegacySql": false,
            "location": location,
            "parameterMode": "NAMED",
            "queryParameters": params.iter().map(Param::to_api).collect::<Vec<_>>(),
            "formatOptions": { "useInt64Timestamp": true },
            "maxResults": QUERY_PAGE_ROWS,
            "timeoutMs": 60_000,
        });
        let mut page: QueryPage = self.rest.json(&op, self.rest.http.post(&url).json(&body)).await?;
        let mut columns: Vec<String> = Vec::new();
        loop {
            page.check(&op)?;
            if !page.job_complete {
                let job = page.job_id(&op)?;
                page = self.query_page(project, location, &job, None, &op).await?;
                continue;
            }
            if columns.is_empty() {
                columns = page.schema.fields.iter().map(|f| f.name.clone()).collect();
            }
            for r in page.rows.drain(..) {
                sink(&columns, r.f.into_iter().map(|c| cell(c.v)).collect());
            }
            match page.page_token.take().filter(|t| !t.is_empty()) {
                Some(token) => {
                    let job = page.job_id(&op)?;
                    page = self.query_page(project, location, &job, Some(&token), &op).await?;
                }
                None => return Ok(()),
            }
        }
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
