//! A fault-injecting HTTP proxy in front of bqemulator, following BigQuery's published contract
//! where the emulator does not:
//! - `If-Match` on dataset PATCH is enforced (the emulator ignores it): a stale etag gets
//!   BigQuery's 412 `conditionNotMet` body.
//! - Scripted faults return BigQuery's error bodies (429 `rateLimitExceeded`, 503 `backendError`)
//!   or reset the connection without an answer.
//! - A scripted concurrent writer changes the dataset between bqsteward's read and its write.
//! - `jobs.insert` with a job id the proxy has already forwarded gets BigQuery's 409 `duplicate`
//!   (bqemulator would run the job again). Only ids seen through this proxy are known.
//! - In front of fake-gcs-server: a media upload with `ifGenerationMatch=0` whose object exists gets
//!   Cloud Storage's 412 `conditionNotMet` (fake-gcs-server ignores the precondition and
//!   overwrites). Checked by a read just before forwarding, so not atomic against a writer that
//!   bypasses the proxy.
//!
//! Simplifications (written down, as the tests rely on them): HTTP/1.1 with `Content-Length`
//! bodies only (what reqwest sends), one upstream, faults matched by method and path substring.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

/// What to do to one matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and BigQuery error reason, without forwarding.
    Status(u16, &'static str),
    /// Close the connection without answering (the request never reaches the emulator).
    Reset,
    /// Forward the request, then close the connection without answering (the write happened, the
    /// client cannot know).
    ResetAfterForward,
    /// Forward the request, then answer with this status and reason instead of the real answer
    /// (e.g. the write happened, but the client is told 503).
    ForwardThenStatus(u16, &'static str),
    /// Before forwarding, add this access entry to the dataset directly (as another writer would),
    /// which changes its etag.
    ConcurrentAccessEntry(serde_json::Value),
}

/// A fault waiting for a request with `method` whose path contains `path`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path: String,
    pub fault: Fault,
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
    pub status: u16,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    rules: VecDeque<Rule>,
    seen: Vec<Seen>,
    job_ids: std::collections::HashSet<String>,
    /// Requests whose path or body contains one of these get this status, until cleared.
    refuse: Option<(Vec<String>, u16, &'static str)>,
}

/// A running proxy.
#[derive(Clone)]
pub struct Proxy {
    /// `http://127.0.0.1:PORT` — use as `BIGQUERY_EMULATOR_HOST`.
    pub url: String,
    upstream: String,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:19050`) on a free loopback port.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let proxy = Proxy {
            url,
            upstream: upstream.trim_end_matches('/').to_string(),
            state: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let p = p.clone();
                tokio::spawn(async move { p.serve(sock).await });
            }
        });
        proxy
    }

    /// Queues a fault for the next matching request (faults fire once, in order).
    pub fn inject(&self, method: &'static str, path: &str, fault: Fault) {
        self.state.lock().unwrap().rules.push_back(Rule {
            method,
            path: path.to_string(),
            fault,
        });
    }

    /// Answers every request whose path or body contains one of `needles` with `code` and
    /// BigQuery's error `reason` (without forwarding), until [`Proxy::stop_refusing`].
    pub fn refuse(&self, needles: &[&str], code: u16, reason: &'static str) {
        self.state.lock().unwrap().refuse = Some((needles.iter().map(|n| n.to_string()).collect(), code, reason));
    }

    /// Ends [`Proxy::refuse`].
    pub fn stop_refusing(&self) {
        self.state.lock().unwrap().refuse = None;
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Number of requests seen with `method`.
    pub fn count(&self, method: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.method == method)
            .count()
    }

    /// Faults not yet fired.
    pub fn pending_faults(&self) -> usize {
        self.state.lock().unwrap().rules.len()
    }

    async fn serve(&self, mut sock: TcpStream) {
        let http = reqwest::Client::new();
        let mut buf = Vec::new();
        loop {
            let Some(super::http1::Request {
                method,
                path,
                headers,
                body,
            }) = super::http1::read_request(&mut sock, &mut buf).await
            else {
                return;
            };
            let fault = {
                let mut st = self.state.lock().unwrap();
                let text = String::from_utf8_lossy(&body);
                let refused = st.refuse.as_ref().and_then(|(needles, code, reason)| {
                    needles
                        .iter()
                        .any(|n| path.contains(n.as_str()) || text.contains(n.as_str()))
                        .then_some(Fault::Status(*code, reason))
                });
                let i = st
                    .rules
                    .iter()
                    .position(|r| r.method == method && path.contains(&r.path));
                refused.or_else(|| i.and_then(|i| st.rules.remove(i)).map(|r| r.fault))
            };
            let (status, resp_body) = match fault {
                Some(Fault::Reset) => {
                    self.record(&method, &path, &headers, &body, 0);
                    return; // drop the socket: connection reset / closed without an answer
                }
                Some(Fault::Status(code, reason)) => (code, error_body(code, reason)),
                Some(Fault::ForwardThenStatus(code, reason)) => {
                    let _ = self.forward(&http, &method, &path, &headers, &body).await;
                    (code, error_body(code, reason))
                }
                Some(Fault::ResetAfterForward) => {
                    let (status, _) = self.forward(&http, &method, &path, &headers, &body).await;
                    self.record(&method, &path, &headers, &body, status);
                    return;
                }
                Some(Fault::ConcurrentAccessEntry(entry)) => {
                    self.concurrent_write(&http, &path, entry).await;
                    self.forward(&http, &method, &path, &headers, &body).await
                }
                None => self.forward(&http, &method, &path, &headers, &body).await,
            };
            self.record(&method, &path, &headers, &body, status);
            if !super::http1::write_json(&mut sock, status, &resp_body).await {
                return;
            }
        }
    }

    fn record(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8], status: u16) {
        self.state.lock().unwrap().seen.push(Seen {
            method: method.to_string(),
            path: path.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
            status,
            authorization: headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone()),
        });
    }

    async fn forward(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let url = format!("{}{path}", self.upstream);
        // BigQuery's contract: a job id can be inserted once; again → 409 duplicate.
        if method == "POST" && path.split('?').next().unwrap().ends_with("/jobs") {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            if let Some(id) = v["jobReference"]["jobId"].as_str()
                && !self.state.lock().unwrap().job_ids.insert(id.to_string())
            {
                return (409, error_body(409, "duplicate"));
            }
        }
        // Cloud Storage's contract: objects.insert with ifGenerationMatch=0 fails with 412 when a
        // live object has the name (fake-gcs-server ignores the precondition and overwrites).
        if method == "POST"
            && path.starts_with("/upload/storage/v1/b/")
            && let Ok(u) = url::Url::parse(&url)
            && u.query_pairs().any(|(k, v)| k == "ifGenerationMatch" && v == "0")
            && let Some(name) = u.query_pairs().find(|(k, _)| k == "name").map(|(_, v)| v.into_owned())
        {
            let bucket = path
                .trim_start_matches("/upload/storage/v1/b/")
                .split('/')
                .next()
                .unwrap_or("");
            let mut object = url::Url::parse(&format!("{}/storage/v1/b/{bucket}/o/", self.upstream)).unwrap();
            object.path_segments_mut().unwrap().pop_if_empty().push(&name);
            if http.get(object).send().await.is_ok_and(|r| r.status().is_success()) {
                return (412, error_body(412, "conditionNotMet"));
            }
        }
        // BigQuery's contract: a dataset PATCH with a stale If-Match fails with 412.
        if method == "PATCH"
            && let Some((_, want)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("if-match"))
        {
            let current = http.get(url.split('?').next().unwrap()).send().await.unwrap();
            let current: serde_json::Value = current.json().await.unwrap_or_default();
            if current["etag"].as_str() != Some(want.as_str()) {
                return (412, error_body(412, "conditionNotMet"));
            }
        }
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = http.request(m, &url).body(body.to_vec());
        for (k, v) in headers {
            if !["host", "content-length", "connection"].contains(&k.to_ascii_lowercase().as_str()) {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.expect("upstream emulator answers");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// Another writer adds `entry` to the dataset the request is about.
    async fn concurrent_write(&self, http: &reqwest::Client, path: &str, entry: serde_json::Value) {
        let url = format!("{}{}", self.upstream, path.split('?').next().unwrap());
        let mut ds: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let mut access = ds["access"].as_array().cloned().unwrap_or_default();
        access.push(entry);
        ds = serde_json::json!({ "access": access });
        let r = http.patch(&url).json(&ds).send().await.unwrap();
        assert!(r.status().is_success(), "concurrent write failed: {}", r.status());
    }
}

/// BigQuery's error body for `code` and `reason`.
pub fn error_body(code: u16, reason: &str) -> Vec<u8> {
    let status = match code {
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    serde_json::to_vec(&serde_json::json!({
        "error": {
            "code": code,
            "message": format!("injected by the test proxy: {reason}"),
            "errors": [{ "reason": reason, "message": "injected", "domain": "global" }],
            "status": status
        }
    }))
    .unwrap()
}
