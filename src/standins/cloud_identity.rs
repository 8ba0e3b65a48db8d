//! A stateful, in-memory fake of the Cloud Identity Groups API v1 — there is no emulator — served
//! over real HTTP on loopback so the production client is exercised end to end. It follows the
//! published REST contract for what bqsteward calls:
//!
//! - `GET  /v1/groups:lookup?groupKey.id=EMAIL` → `{"name": "groups/{id}"}`, 404 `NOT_FOUND`.
//! - `GET  /v1/groups/{id}/memberships?pageSize&pageToken&view` → `{"memberships": [...],
//!   "nextPageToken"}`; **direct** memberships only; pages are at most [`FakeGroups::page_size`]
//!   long whatever the client asks (small on purpose, so paging is always exercised); the token
//!   is opaque.
//! - `POST /v1/groups/{id}/memberships` `{"preferredMemberKey": {"id"}, "roles": [{"name"}]}` →
//!   a done `Operation` with the membership; 409 `ALREADY_EXISTS` when the email is already a
//!   direct member (case-insensitive); 400 `INVALID_ARGUMENT` without the `MEMBER` role.
//! - `DELETE /v1/groups/{id}/memberships/{mid}` → a done `Operation`; 404 when missing.
//! - `POST /v1/groups/{id}/memberships/{mid}:modifyMembershipRoles` `{"addRoles", "removeRoles"}`
//!   → `{"membership": ...}`; 400 when `removeRoles` holds `MEMBER` or both lists are empty.
//! - Errors use Google's body `{"error": {"code", "message", "status"}}`.
//!
//! Simplified (and relied on by the tests): emails are stored as given and compared
//! case-insensitively; member `type` is `GROUP` when the email is a group known to the fake, else
//! `USER`; no expiry, no `updateRolesParams`, no FULL view fields, no etags; scripted faults
//! ([`FakeGroups::fail_next`], [`FakeGroups::forbid`]) stand in for rate limits and permission
//! errors.

#![allow(dead_code)]

use super::http1::{google_error, serve_json, serve_json_on};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

/// A membership as stored.
#[derive(Clone, Debug)]
struct Stored {
    email: String,
    roles: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    /// group id → (email, membership id → membership)
    groups: BTreeMap<String, (String, BTreeMap<String, Stored>)>,
    next_id: u64,
    faults: VecDeque<(String, String, u16)>,
    forbidden: BTreeSet<String>,
    writes: usize,
    lists: usize,
}

/// The fake server.
#[derive(Clone)]
pub struct FakeGroups {
    /// `http://127.0.0.1:PORT` (the value of `CLOUD_IDENTITY_EMULATOR_HOST`).
    pub url: String,
    /// Longest page returned.
    pub page_size: usize,
    state: Arc<Mutex<State>>,
}

impl FakeGroups {
    /// Starts a fake on a free loopback port.
    pub async fn start(page_size: usize) -> FakeGroups {
        let mut fake = FakeGroups {
            url: String::new(),
            page_size,
            state: Arc::default(),
        };
        let f = fake.clone();
        fake.url = serve_json(move |method, path, body| f.handle(method, path, &body)).await;
        fake
    }

    /// Starts one on loopback port `port` (0: any free one), with pages of at most `page_size`.
    pub async fn start_on(port: u16, page_size: usize) -> std::io::Result<FakeGroups> {
        let mut fake = FakeGroups {
            url: String::new(),
            page_size,
            state: Arc::default(),
        };
        let f = fake.clone();
        fake.url = serve_json_on(port, move |method, path, body| f.handle(method, path, &body)).await?;
        Ok(fake)
    }

    /// Creates a group with these direct members (`email`, roles).
    pub fn add_group(&self, email: &str, members: &[(&str, &[&str])]) -> String {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let gid = format!("g{:04}", st.next_id);
        let mut ms = BTreeMap::new();
        for (e, roles) in members {
            st.next_id += 1;
            ms.insert(
                format!("m{:05}", st.next_id),
                Stored {
                    email: e.to_string(),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                },
            );
        }
        st.groups.insert(gid.clone(), (email.to_string(), ms));
        gid
    }

    /// Direct members of a group: lowercased email → effective role (`OWNER` > `MANAGER` > `MEMBER`).
    pub fn members(&self, email: &str) -> BTreeMap<String, String> {
        let st = self.state.lock().unwrap();
        let (_, ms) = st
            .groups
            .values()
            .find(|(e, _)| e.eq_ignore_ascii_case(email))
            .expect("group exists");
        ms.values()
            .map(|m| {
                let role = ["OWNER", "MANAGER", "MEMBER"]
                    .into_iter()
                    .find(|r| m.roles.contains(*r))
                    .unwrap_or("?");
                (m.email.to_lowercase(), role.to_string())
            })
            .collect()
    }

    /// The next request with `method` whose path contains `path` fails with `code` (once).
    pub fn fail_next(&self, method: &str, path: &str, code: u16) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((method.into(), path.into(), code));
    }

    /// Every write about `email` (create, delete, modify) answers 403 `PERMISSION_DENIED`.
    pub fn forbid(&self, email: &str) {
        self.state.lock().unwrap().forbidden.insert(email.to_lowercase());
    }

    /// Writes (create, delete, modify) that changed something.
    pub fn writes(&self) -> usize {
        self.state.lock().unwrap().writes
    }

    /// `memberships.list` requests answered.
    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    fn handle(&self, method: &str, full_path: &str, body: &Value) -> (u16, Value) {
        let mut st = self.state.lock().unwrap();
        let (path, query) = full_path.split_once('?').unwrap_or((full_path, ""));
        let q: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        if let Some(i) = st
            .faults
            .iter()
            .position(|(m, p, _)| m == method && full_path.contains(p.as_str()))
        {
            let (_, _, code) = st.faults.remove(i).unwrap();
            let status = match code {
                429 => "RESOURCE_EXHAUSTED",
                403 => "PERMISSION_DENIED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            return google_error(code, status, "injected by the test");
        }
        let Some(rest) = path.strip_prefix("/v1/") else {
            return google_error(404, "NOT_FOUND", "unknown path");
        };
        if rest == "groups:lookup" && method == "GET" {
            let email = q.get("groupKey.id").cloned().unwrap_or_default();
            return match st.groups.iter().find(|(_, (e, _))| e.eq_ignore_ascii_case(&email)) {
                Some((gid, _)) => (200, json!({"name": format!("groups/{gid}")})),
                None => google_error(404, "NOT_FOUND", &format!("group {email} not found")),
            };
        }
        if rest == "groups" && method == "POST" {
            // groups.create: a done Operation with the group; 409 when the email is taken.
            let email = body["groupKey"]["id"].as_str().unwrap_or_default().to_string();
            if email.is_empty() {
                return google_error(400, "INVALID_ARGUMENT", "groupKey.id is required");
            }
            if st.groups.values().any(|(e, _)| e.eq_ignore_ascii_case(&email)) {
                return google_error(409, "ALREADY_EXISTS", &format!("group {email} already exists"));
            }
            st.next_id += 1;
            let gid = format!("g{:04}", st.next_id);
            st.groups.insert(gid.clone(), (email.clone(), BTreeMap::new()));
            return (
                200,
                json!({"done": true, "response": {"name": format!("groups/{gid}"), "groupKey": {"id": email}}}),
            );
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let group_emails: BTreeSet<String> = st.groups.values().map(|(e, _)| e.to_lowercase()).collect();
        let view = |gid: &str, mid: &str, m: &Stored| {
            json!({
                "name": format!("groups/{gid}/memberships/{mid}"),
                "preferredMemberKey": {"id": m.email},
                "roles": m.roles.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
                "type": if group_emails.contains(&m.email.to_lowercase()) { "GROUP" } else { "USER" },
            })
        };
        match (method, parts.as_slice()) {
            ("GET", ["groups", gid, "memberships"]) => {
                st.lists += 1;
                let Some((_, ms)) = st.groups.get(*gid) else {
                    return google_error(404, "NOT_FOUND", "group not found");
                };
                let asked: usize = q.get("pageSize").and_then(|s| s.parse().ok()).unwrap_or(200);
                let size = asked.min(self.page_size).max(1);
                let start: usize = match q.get("pageToken") {
                    Some(t) => match t.strip_prefix("after-").and_then(|n| n.parse().ok()) {
                        Some(n) => n,
                        None => return google_error(400, "INVALID_ARGUMENT", "bad page token"),
                    },
                    None => 0,
                };
                let all: Vec<Value> = ms.iter().map(|(mid, m)| view(gid, mid, m)).collect();
                let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
                let mut out = json!({ "memberships": page });
                if start + size < all.len() {
                    out["nextPageToken"] = json!(format!("after-{}", start + size));
                }
                (200, out)
            }
            ("POST", ["groups", gid, "memberships"]) => {
                let email = body["preferredMemberKey"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if st.forbidden.contains(&email.to_lowercase()) {
                    return google_error(403, "PERMISSION_DENIED", &format!("not allowed to add {email}"));
                }
                let roles: BTreeSet<String> = body["roles"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["name"].as_str().map(String::from)).collect())
                    .unwrap_or_default();
                if !roles.contains("MEMBER") {
                    return google_error(400, "INVALID_ARGUMENT", "roles must include MEMBER");
                }
                st.next_id += 1;
                let mid = format!("m{:05}", st.next_id);
                let Some((_, ms)) = st.groups.get_mut(*gid) else {
                    return google_error(404, "NOT_FOUND", "group not found");
                };
                if ms.values().any(|m| m.email.eq_ignore_ascii_case(&email)) {
                    return google_error(409, "ALREADY_EXISTS", "Member already exists.");
                }
                let stored = Stored { email, roles };
                ms.insert(mid.clone(), stored.clone());
                st.writes += 1;
                (200, json!({"done": true, "response": view(gid, &mid, &stored)}))
            }
            ("DELETE", ["groups", gid, "memberships", mid]) => {
                let Some(m) = st.groups.get(*gid).and_then(|(_, ms)| ms.get(*mid)).cloned() else {
                    return google_error(404, "NOT_FOUND", "membership not found");
                };
                if st.forbidden.contains(&m.email.to_lowercase()) {
                    return google_error(403, "PERMISSION_DENIED", &format!("not allowed to remove {}", m.email));
                }
                st.groups.get_mut(*gid).unwrap().1.remove(*mid);
                st.writes += 1;
                (
                    200,
                    json!({"done": true, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}),
                )
            }
            ("POST", ["groups", gid, "memberships", action]) => {
                let Some(mid) = action.strip_suffix(":modifyMembershipRoles") else {
                    return google_error(404, "NOT_FOUND", "unknown method");
                };
                let Some(m) = st.groups.get(*gid).and_then(|(_, ms)| ms.get(mid)).cloned() else {
                    return google_error(404, "NOT_FOUND", "membership not found");
                };
                if st.forbidden.contains(&m.email.to_lowercase()) {
                    return google_error(403, "PERMISSION_DENIED", &format!("not allowed to change {}", m.email));
                }
                let add: Vec<String> = body["addRoles"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["name"].as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let remove: Vec<String> = body["removeRoles"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                if add.is_empty() && remove.is_empty() {
                    return google_error(400, "INVALID_ARGUMENT", "nothing to modify");
                }
                if remove.iter().any(|r| r == "MEMBER") {
                    return google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "cannot remove the MEMBER role; delete the membership",
                    );
                }
                let stored = {
                    let ms = &mut st.groups.get_mut(*gid).unwrap().1;
                    let m = ms.get_mut(mid).unwrap();
                    m.roles.extend(add);
                    for r in &remove {
                        m.roles.remove(r);
                    }
                    m.clone()
                };
                st.writes += 1;
                (200, json!({"membership": view(gid, mid, &stored)}))
            }
            _ => google_error(404, "NOT_FOUND", &format!("no route for {method} {path}")),
        }
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
