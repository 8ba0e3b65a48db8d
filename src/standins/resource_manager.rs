//! A stateful, in-memory fake of Resource Manager v3 project IAM — there is no emulator — served
//! over real HTTP on loopback for the production client. Following the published contract:
//!
//! - `POST /v3/projects/{p}:getIamPolicy` → the policy with its `etag` (a project never written has
//!   one `roles/owner` binding, like a new project).
//! - `POST /v3/projects/{p}:setIamPolicy` `{"policy": …}` → the stored policy with a new etag;
//!   **409 `ABORTED`** when `policy.etag` is not the current one (a concurrent change); 400
//!   `INVALID_ARGUMENT` when a binding has a condition and `version` is below 3.
//! - Errors use Google's body `{"error": {"code", "message", "status"}}`.
//!
//! Simplified: no `updateMask`, no audit configs semantics (kept verbatim), no member validation,
//! every project exists. [`FakeIam::change_before_next_set`] plays another writer.

#![allow(dead_code)]

use super::http1::{google_error, serve_json, serve_json_on};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    policies: BTreeMap<String, Value>,
    serial: u64,
    interfere: usize,
    conflicts: usize,
    sets: usize,
}

/// The fake server.
#[derive(Clone)]
pub struct FakeIam {
    /// `http://127.0.0.1:PORT` (the value of `RESOURCE_MANAGER_EMULATOR_HOST`).
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeIam {
    /// Starts a fake on a free loopback port.
    pub async fn start() -> FakeIam {
        let mut fake = FakeIam {
            url: String::new(),
            state: Arc::default(),
        };
        let f = fake.clone();
        fake.url = serve_json(move |method, path, body| f.handle(method, path, body)).await;
        fake
    }

    /// Starts one on loopback port `port` (0: any free one).
    pub async fn start_on(port: u16) -> std::io::Result<FakeIam> {
        let mut fake = FakeIam {
            url: String::new(),
            state: Arc::default(),
        };
        let f = fake.clone();
        fake.url = serve_json_on(port, move |method, path, body| f.handle(method, path, body)).await?;
        Ok(fake)
    }

    /// The stored policy of a project.
    pub fn policy(&self, project: &str) -> Value {
        let mut st = self.state.lock().unwrap();
        Self::current(&mut st, project).clone()
    }

    /// Before the next `setIamPolicy`, another writer adds a binding (so that write is stale).
    pub fn change_before_next_set(&self) {
        self.state.lock().unwrap().interfere += 1;
    }

    /// 409s answered so far.
    pub fn conflicts(&self) -> usize {
        self.state.lock().unwrap().conflicts
    }

    /// Successful `setIamPolicy` calls.
    pub fn sets(&self) -> usize {
        self.state.lock().unwrap().sets
    }

    fn current<'a>(st: &'a mut State, project: &str) -> &'a mut Value {
        if !st.policies.contains_key(project) {
            st.serial += 1;
            let etag = format!("BwY{:06}", st.serial);
            st.policies.insert(
                project.to_string(),
                json!({"version": 1, "etag": etag, "bindings": [{"role": "roles/owner", "members": ["user:owner@acme.com"]}]}),
            );
        }
        st.policies.get_mut(project).unwrap()
    }

    fn handle(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut st = self.state.lock().unwrap();
        let Some(rest) = path.strip_prefix("/v3/projects/") else {
            return google_error(404, "NOT_FOUND", "unknown path");
        };
        let Some((project, verb)) = rest.split_once(':') else {
            return google_error(404, "NOT_FOUND", "unknown path");
        };
        if method != "POST" {
            return google_error(405, "INVALID_ARGUMENT", "method not allowed");
        }
        match verb {
            "getIamPolicy" => (200, Self::current(&mut st, project).clone()),
            "setIamPolicy" => {
                if st.interfere > 0 {
                    st.interfere -= 1;
                    st.serial += 1;
                    let etag = format!("BwY{:06}", st.serial);
                    let p = Self::current(&mut st, project);
                    p["bindings"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"role": "roles/viewer", "members": ["user:someone-else@acme.com"]}));
                    p["etag"] = json!(etag);
                }
                let mut policy = body["policy"].clone();
                let current_etag = Self::current(&mut st, project)["etag"].clone();
                if policy["etag"] != current_etag {
                    st.conflicts += 1;
                    return google_error(
                        409,
                        "ABORTED",
                        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
                    );
                }
                let conditional = policy["bindings"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b.get("condition").is_some()));
                if conditional && policy["version"].as_i64().unwrap_or(1) < 3 {
                    return google_error(400, "INVALID_ARGUMENT", "conditional bindings need policy version 3");
                }
                st.serial += 1;
                policy["etag"] = json!(format!("BwY{:06}", st.serial));
                st.sets += 1;
                st.policies.insert(project.to_string(), policy.clone());
                (200, policy)
            }
            _ => google_error(404, "NOT_FOUND", "unknown method"),
        }
    }
}
