//! Cloud Storage behind the [`Storage`] trait, implemented over the JSON API. bqsteward needs
//! object *generations* (a re-uploaded file is a new generation), which the JSON listing returns;
//! `object_store` does not expose them and fake-gcs-server has no XML upload.

use super::http::{Auth, Rest};
use super::{CloudError, Endpoints};
use async_trait::async_trait;

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object name (the path after the bucket).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Generation: changes whenever the object is written.
    pub generation: i64,
    /// Last update time (RFC 3339), as reported.
    pub updated: String,
}

/// The Cloud Storage operations bqsteward needs.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Every object whose name starts with `prefix`, handed to `sink` page by page (transient
    /// errors retried per page), so a million-object listing is never held twice.
    async fn list_each(
        &self,
        bucket: &str,
        prefix: &str,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError>;
    /// Like [`Storage::list_each`], only names at or after `start_offset` (Cloud Storage's
    /// `startOffset`) and, when given, matching `match_glob` (`matchGlob`, against the whole
    /// name). A server may ignore the glob: callers filter again.
    async fn list_each_from(
        &self,
        bucket: &str,
        prefix: &str,
        start_offset: &str,
        match_glob: Option<&str>,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        let _ = match_glob;
        self.list_each(bucket, prefix, &mut |o| {
            if o.name.as_str() >= start_offset {
                sink(o)
            }
        })
        .await
    }
    /// Every object whose name starts with `prefix`, in name order (all pages).
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, CloudError> {
        let mut out = Vec::new();
        self.list_each(bucket, prefix, &mut |o| out.push(o)).await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    /// The first `max_bytes` bytes of one generation of an object (a ranged read).
    async fn read_head(&self, bucket: &str, name: &str, generation: i64, max_bytes: u64)
    -> Result<Vec<u8>, CloudError>;
    /// Writes an object (tests, the demo and re-ingestion tooling; reconcile never writes objects).
    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError>;
    /// Creates an object only if no live object has the name (`ifGenerationMatch=0`): a second
    /// writer gets `412 Precondition Failed` instead of overwriting. Database pulls write their
    /// files this way, so an object, once written, is never replaced.
    async fn create(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError>;
    /// Starts a resumable upload of an object that must not exist yet (`ifGenerationMatch=0`):
    /// large copies go up chunk by chunk ([`Storage::upload_chunk`]), memory holding one chunk.
    /// Returns the session URI. The object appears only when the last chunk is in.
    async fn begin_upload(&self, bucket: &str, name: &str, content_type: &str) -> Result<String, CloudError> {
        let _ = content_type;
        Err(unsupported("resumable upload", bucket, name))
    }
    /// Sends the chunk at `offset` of a resumable upload (every chunk but the last a multiple of
    /// 256 KiB). After the last chunk (`last`): the object and its MD5 (base64) as the server
    /// computed it.
    async fn upload_chunk(
        &self,
        session: &str,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> Result<Option<(ObjectInfo, Option<String>)>, CloudError> {
        let _ = (offset, data, last);
        Err(unsupported("resumable upload", session, ""))
    }
    /// Deletes one generation of an object (`ifGenerationMatch`); succeeds if it is already gone
    /// or was replaced by a newer generation (which is then not this caller's to delete).
    async fn delete(&self, bucket: &str, name: &str, generation: i64) -> Result<(), CloudError>;
    /// Creates a bucket in `project`; succeeds if it already exists.
    async fn create_bucket(&self, project: &str, bucket: &str) -> Result<(), CloudError>;
}

/// The production Cloud Storage client (also used against fake-gcs-server).
#[derive(Clone, Debug)]
pub struct GcsRest {
    root: String,
    rest: Rest,
    page_size: u32,
}

impl GcsRest {
    /// A client for `endpoints.storage` with credentials chosen by the endpoint.
    pub fn new(endpoints: &Endpoints) -> Result<GcsRest, CloudError> {
        Self::with_auth(endpoints, Auth::for_endpoint(endpoints.storage_emulated)?)
    }

    /// A client for `endpoints.storage` authenticated by `auth` (e.g. an impersonated identity).
    pub fn with_auth(endpoints: &Endpoints, auth: Auth) -> Result<GcsRest, CloudError> {
        Ok(GcsRest {
            root: endpoints.storage.clone(),
            rest: Rest::new("storage", auth),
            page_size: 1000,
        })
    }

    /// Objects per listing page (default 1000, the API's maximum). Small pages exercise paging.
    pub fn with_page_size(mut self, page_size: u32) -> GcsRest {
        self.page_size = page_size.clamp(1, 1000);
        self
    }

    /// `objects.insert` (media upload); `only_new` adds `ifGenerationMatch=0`.
    async fn insert(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
        only_new: bool,
    ) -> Result<ObjectInfo, CloudError> {
        let op = format!(
            "objects.insert gs://{bucket}/{name}{}",
            if only_new { " (ifGenerationMatch=0)" } else { "" }
        );
        let url = format!("{}/upload/storage/v1/b/{}/o", self.root, enc(bucket));
        let mut query = vec![("uploadType", "media"), ("name", name)];
        if only_new {
            query.push(("ifGenerationMatch", "0"));
        }
        let req = self
            .rest
            .http
            .post(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(data);
        let raw: RawObject = self.rest.json(&op, req).await?;
        raw.into_info(&op)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<RawObject>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawObject {
    name: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    generation: String,
    #[serde(default)]
    updated: String,
}

impl RawObject {
    fn into_info(self, op: &str) -> Result<ObjectInfo, CloudError> {
        let bad = |what: &str, v: &str| CloudError::Decode {
            api: "storage",
            operation: op.to_string(),
            message: format!("object {:?} has {what} {v:?}", self.name),
        };
        let size = self.size.parse().map_err(|_| bad("size", &self.size))?;
        let generation = self
            .generation
            .parse()
            .map_err(|_| bad("generation", &self.generation))?;
        Ok(ObjectInfo {
            name: self.name,
            size,
            generation,
            updated: self.updated,
        })
    }
}

fn unsupported(what: &str, bucket: &str, name: &str) -> CloudError {
    CloudError::Decode {
        api: "storage",
        operation: format!("{what} gs://{bucket}/{name}"),
        message: "not supported by this storage client".into(),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUploaded {
    #[serde(flatten)]
    object: RawObject,
    #[serde(default)]
    md5_hash: Option<String>,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[async_trait]
impl Storage for GcsRest {
    async fn list_each(
        &self,
        bucket: &str,
        prefix: &str,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        self.list_each_from(bucket, prefix, "", None, sink).await
    }

    async fn list_each_from(
        &self,
        bucket: &str,
        prefix: &str,
        start_offset: &str,
        match_glob: Option<&str>,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        let op = format!("objects.list gs://{bucket}/{prefix}");
        let url = format!("{}/storage/v1/b/{}/o", self.root, enc(bucket));
        let backoff = crate::cloud::retry::Backoff::default();
        let mut page: Option<String> = None;
        loop {
            let mut query = vec![
                ("prefix", prefix.to_string()),
                ("maxResults", self.page_size.to_string()),
                (
                    "fields",
                    "items(name,size,generation,updated),nextPageToken".to_string(),
                ),
            ];
            if !start_offset.is_empty() {
                query.push(("startOffset", start_offset.to_string()));
            }
            if let Some(g) = match_glob {
                query.push(("matchGlob", g.to_string()));
            }
            if let Some(p) = &page {
                query.push(("pageToken", p.clone()));
            }
            let list: ObjectList = crate::cloud::retry::with_retry(&backoff, &op, || {
                self.rest.json(&op, self.rest.http.get(&url).query(&query))
            })
            .await?;
            for raw in list.items {
                sink(raw.into_info(&op)?);
            }
            match list.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => page = Some(t),
                None => return Ok(()),
            }
        }
    }

    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError> {
        self.insert(bucket, name, data, content_type, false).await
    }

    async fn create(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError> {
        self.insert(bucket, name, data, content_type, true).await
    }

    async fn begin_upload(&self, bucket: &str, name: &str, content_type: &str) -> Result<String, CloudError> {
        let op = format!("objects.insert gs://{bucket}/{name} (resumable, ifGenerationMatch=0)");
        let url = format!("{}/upload/storage/v1/b/{}/o", self.root, enc(bucket));
        let req = self
            .rest
            .http
            .post(url)
            .query(&[("uploadType", "resumable"), ("name", name), ("ifGenerationMatch", "0")])
            .header("X-Upload-Content-Type", content_type)
            .json(&serde_json::json!({ "name": name, "contentType": content_type }));
        let resp = self.rest.send(&op, req).await?;
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| CloudError::Decode {
                api: "storage",
                operation: op,
                message: "no Location header (session URI)".into(),
            })
    }

    async fn upload_chunk(
        &self,
        session: &str,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> Result<Option<(ObjectInfo, Option<String>)>, CloudError> {
        let op = format!("objects.insert (resumable chunk at {offset})");
        let len = data.len() as u64;
        let range = match (len, last) {
            (0, true) => format!("bytes */{offset}"),
            (_, true) => format!("bytes {offset}-{}/{}", offset + len - 1, offset + len),
            (_, false) => format!("bytes {offset}-{}/*", offset + len - 1),
        };
        let mut req = self
            .rest
            .http
            .put(session)
            .header(reqwest::header::CONTENT_RANGE, range)
            .body(data);
        if let Some(token) = self.rest.auth.token().await? {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|source| CloudError::Transport {
            api: "storage",
            operation: op.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status == 308 && !last {
            return Ok(None);
        }
        let body = resp.bytes().await.map_err(|source| CloudError::Transport {
            api: "storage",
            operation: op.clone(),
            source,
        })?;
        if !(200..300).contains(&status) {
            return Err(CloudError::Api {
                api: "storage",
                operation: op,
                status,
                reason: String::new(),
                message: String::from_utf8_lossy(&body).chars().take(500).collect(),
            });
        }
        let raw: RawUploaded = serde_json::from_slice(&body).map_err(|e| CloudError::Decode {
            api: "storage",
            operation: op.clone(),
            message: e.to_string(),
        })?;
        Ok(Some((raw.object.into_info(&op)?, raw.md5_hash)))
    }

    async fn delete(&self, bucket: &str, name: &str, generation: i64) -> Result<(), CloudError> {
        let op = format!("objects.delete gs://{bucket}/{name}#{generation}");
        let url = format!("{}/storage/v1/b/{}/o/{}", self.root, enc(bucket), enc(name));
        let req = self
            .rest
            .http
            .delete(url)
            .query(&[("ifGenerationMatch", generation.to_string())]);
        match self.rest.send(&op, req).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(404 | 412)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn read_head(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
        max_bytes: u64,
    ) -> Result<Vec<u8>, CloudError> {
        let op = format!("objects.get gs://{bucket}/{name}#{generation} (first {max_bytes} bytes)");
        let url = format!("{}/storage/v1/b/{}/o/{}", self.root, enc(bucket), enc(name));
        let req = self
            .rest
            .http
            .get(url)
            .query(&[("alt", "media"), ("generation", &generation.to_string())])
            .header(
                reqwest::header::RANGE,
                format!("bytes=0-{}", max_bytes.saturating_sub(1)),
            );
        let resp = self.rest.send(&op, req).await?;
        let bytes = resp.bytes().await.map_err(|source| CloudError::Transport {
            api: "storage",
            operation: op.clone(),
            source,
        })?;
        // A server that ignores Range sends everything: keep what was asked for.
        Ok(bytes[..bytes.len().min(max_bytes as usize)].to_vec())
    }

    async fn create_bucket(&self, project: &str, bucket: &str) -> Result<(), CloudError> {
        let op = format!("buckets.insert {bucket}");
        let req = self
            .rest
            .http
            .post(format!("{}/storage/v1/b", self.root))
            .query(&[("project", project)])
            .json(&serde_json::json!({ "name": bucket }));
        match self.rest.send(&op, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
