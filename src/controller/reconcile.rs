//! One reconcile of one object, for every kind: finalizer first; deletion honours
//! `deletionPolicy`; an invalid spec gets a clear condition and no cloud call; the work itself runs
//! through the engine (`crate::engine`, the same phases as `plan`/`apply`), scoped to the object;
//! status is written (server-side apply) only when it changed, with conditions keeping their
//! `lastTransitionTime` while their status holds. This module holds only the controller's own part:
//! finalizers, status, events and errors. May touch: Kubernetes (through [`super::cluster`]); the
//! cloud only through the engine.

use super::cluster::{FINALIZER, Note, ObjectKey};
pub use super::context::{Ctx, FailureBackoff, TenantClients, tenant_clients};
use super::work::Work;
use crate::crd::DeletionPolicy;
use crate::manifest::{Loaded, Resource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};
use std::time::Duration;

/// One object as the controller sees it.
#[derive(Clone, Debug)]
pub struct Object {
    /// Which.
    pub key: ObjectKey,
    /// The typed resource (with its metadata).
    pub loaded: Loaded,
    /// The status as last written.
    pub status: Value,
}

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A cloud call failed.
    #[error("{0}")]
    Cloud(#[from] crate::cloud::CloudError),
    /// A Kubernetes write failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Loading failed (it resumes on the next pass).
    #[error("{0}")]
    Load(#[from] crate::ingest::jobs::RunError),
    /// The change could not be made (refused by a guardrail, failed members, …).
    #[error("{0}")]
    Failed(String),
}

impl From<crate::engine::Error> for ReconcileError {
    fn from(e: crate::engine::Error) -> Self {
        match e {
            crate::engine::Error::Cloud(c) => ReconcileError::Cloud(c),
            crate::engine::Error::Load(l) => ReconcileError::Load(l),
            crate::engine::Error::Failed(s) | crate::engine::Error::Incompatible(s) => ReconcileError::Failed(s),
        }
    }
}

impl ReconcileError {
    /// A short category label (metrics, events): a cloud or load error keeps the category of its
    /// cause (`retryable`, `quota`, `terminal`).
    pub fn category(&self) -> &'static str {
        use crate::ingest::jobs::RunError;
        match self {
            ReconcileError::Cloud(e) | ReconcileError::Load(RunError::Cloud(e)) => {
                crate::access::apply::category_label(e)
            }
            ReconcileError::Load(RunError::Exhausted { .. } | RunError::Timeout { .. }) => "retryable",
            ReconcileError::Load(RunError::Budget { .. }) => "quota",
            ReconcileError::Load(RunError::Crash(_)) => "terminal",
            ReconcileError::Kube(_) => "kubernetes",
            ReconcileError::Failed(_) => "refused",
        }
    }

    /// The PascalCase reason of the condition and event.
    fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Cloud(_) | ReconcileError::Load(crate::ingest::jobs::RunError::Cloud(_)) => "CloudError",
            ReconcileError::Kube(_) => "KubernetesError",
            ReconcileError::Load(_) => "LoadFailed",
            ReconcileError::Failed(_) => "ApplyFailed",
        }
    }
}

/// Reconciles one object. `all` is every bqsteward object in the cluster (the ACL compiler and
/// ConsumerProject sources need them). Returns when to look again.
#[tracing::instrument(skip_all, fields(object = %obj.key))]
pub async fn reconcile(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Duration, ReconcileError> {
    let meta = obj.loaded.resource.metadata();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let rv = meta.resource_version.as_deref();
    let uid = meta.uid.as_deref();
    if meta.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == FINALIZER) {
            let note = cleanup(ctx, obj, all).await?;
            ctx.cluster.event(&obj.key, uid, note).await.ok();
            let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
            ctx.cluster.set_finalizers(&obj.key, rest, rv).await?;
        }
        ctx.backoff.succeeded(&obj.key);
        return Ok(ctx.requeue);
    }
    if !finalizers.iter().any(|f| f == FINALIZER) {
        let mut with = finalizers.clone();
        with.push(FINALIZER.to_string());
        ctx.cluster.set_finalizers(&obj.key, with, rv).await?;
    }

    let (problems, resolved) = validated(ctx, obj, all);
    let result = if !problems.is_empty() {
        Ok(Work {
            fields: json!({}),
            conditions: vec![("Ready".into(), false, "InvalidSpec".into(), problems.join("; "))],
            changes: Vec::new(),
            events: Vec::new(),
            requeue: ctx.requeue,
        })
    } else {
        super::work::work(ctx, obj, &resolved.world).await
    };
    let (work, error) = match result {
        Ok(w) => (w, None),
        Err(e) => (
            Work {
                fields: obj.status.clone(),
                conditions: std::iter::once(("Ready".into(), false, e.reason().into(), e.to_string()))
                    .chain(kept_condition(&obj.status, "InSync"))
                    .collect(),
                changes: Vec::new(),
                events: Vec::new(),
                requeue: ctx.requeue,
            },
            Some(e),
        ),
    };
    let status = merge_status(&obj.status, &work, meta.generation);
    if status != obj.status {
        ctx.cluster.apply_status(&obj.key, status.clone()).await?;
        // An event when Ready changes (not on every pass).
        if let Some(note) = ready_changed(&obj.status, &status) {
            ctx.cluster.event(&obj.key, uid, note).await.ok();
        }
    }
    for c in &work.changes {
        let note = Note {
            warning: false,
            reason: "Applied".into(),
            message: c.clone(),
        };
        ctx.cluster.event(&obj.key, uid, note).await.ok();
    }
    for note in &work.events {
        ctx.cluster.event(&obj.key, uid, note.clone()).await.ok();
    }
    match error {
        Some(e) => {
            // Every failure is an event (the recorder folds repeats into one series).
            let note = Note {
                warning: true,
                reason: e.reason().into(),
                message: e.to_string(),
            };
            ctx.cluster.event(&obj.key, uid, note).await.ok();
            Err(e)
        }
        None => {
            ctx.backoff.succeeded(&obj.key);
            Ok(work.requeue)
        }
    }
}

/// A condition of the current status, kept as it is (a failed reconcile does not know better).
fn kept_condition(status: &Value, type_: &str) -> Option<(String, bool, String, String)> {
    let c = status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        type_.to_string(),
        c["status"] == "True",
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The event to send when the Ready condition's status or reason changed.
fn ready_changed(before: &Value, after: &Value) -> Option<Note> {
    let ready = |s: &Value| {
        s["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
    };
    let key = |c: &Value| (c["status"].clone(), c["reason"].clone());
    let now = ready(after)?;
    if ready(before).map(|c| key(&c)) == Some(key(&now)) {
        return None;
    }
    Some(Note {
        warning: now["status"] != "True",
        reason: now["reason"].as_str().unwrap_or("Ready").to_string(),
        message: now["message"].as_str().unwrap_or("").to_string(),
    })
}

/// This object's problems as `field: message` (validation, then resolution), and the resolved set
/// whose world holds the valid objects (cached while the object set is unchanged): an invalid object contributes
/// nothing to any list, whoever is being reconciled.
fn validated(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> (Vec<String>, std::sync::Arc<super::context::Resolved>) {
    // The store normally holds the object; a copy of the set only when it does not yet.
    let with_object: Vec<Loaded>;
    let objects: &[Loaded] = if all.iter().any(|l| same(l, &obj.key)) {
        all
    } else {
        with_object = all.iter().chain(std::iter::once(&obj.loaded)).cloned().collect();
        &with_object
    };
    let resolved = ctx.world(objects);
    let me = qualified(&obj.key);
    let mut problems: Vec<String> = resolved
        .diagnostics
        .iter()
        .filter(|d| d.kind.as_deref() == Some(obj.key.kind) && d.name.as_deref() == Some(&me))
        .map(|d| {
            if d.field.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.field, d.message)
            }
        })
        .collect();
    let resource = format!("{} {me}", obj.key.kind);
    problems.extend(
        resolved
            .problems
            .iter()
            .filter(|p| p.resource == resource)
            .map(|p| p.message.clone()),
    );
    (problems, resolved)
}

fn qualified(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

fn same(l: &Loaded, key: &ObjectKey) -> bool {
    l.resource.kind() == key.kind && l.resource.qualified_name() == qualified(key)
}

/// The new status: kind fields, conditions (keeping `lastTransitionTime` while a condition's
/// status holds), `observedGeneration`.
fn merge_status(current: &Value, work: &Work, generation: Option<i64>) -> Value {
    let mut status = work.fields.clone();
    if !status.is_object() {
        status = json!({});
    }
    let old: Vec<Condition> = serde_json::from_value(current["conditions"].clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions: Vec<Condition> = work
        .conditions
        .iter()
        .map(|(t, ok, reason, message)| {
            let st = if *ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| &c.type_ == t && c.status == st)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: t.clone(),
                status: st.into(),
                reason: reason.clone(),
                message: message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    status["conditions"] = serde_json::to_value(conditions).unwrap_or_default();
    if let Some(g) = generation {
        status["observedGeneration"] = json!(g);
    }
    status
}

/// Deleting: `Retain` leaves everything; `Delete` removes what the object manages (through the
/// engine's cleanup, against the world of the *other* objects). Never blocked by an invalid spec
/// (cleanup is skipped with a warning instead) and idempotent.
async fn cleanup(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Note, ReconcileError> {
    let policy = match &obj.loaded.resource {
        Resource::IngestedTable(r) => r.spec.deletion_policy,
        Resource::DatasetAccess(r) => r.spec.deletion_policy,
        Resource::ConsumerProject(r) => r.spec.deletion_policy,
        Resource::GroupMembership(r) => r.spec.deletion_policy,
    };
    if policy == DeletionPolicy::Retain {
        return Ok(Note {
            warning: false,
            reason: "Retained".into(),
            message: "deletionPolicy Retain: data and access left in place".into(),
        });
    }
    let (problems, resolved) = validated(ctx, obj, all);
    if !problems.is_empty() {
        return Ok(Note {
            warning: true,
            reason: "CleanupSkipped".into(),
            message: format!("the spec is invalid, so nothing was removed: {}", problems.join("; ")),
        });
    }
    // The others' world: the lists written keep what they still need, nothing of this object's.
    let others: Vec<Loaded> = resolved
        .world
        .resources
        .iter()
        .filter(|l| !same(l, &obj.key))
        .cloned()
        .collect();
    let (mut rest, _) = crate::engine::World::build(others, ctx.policy.clone(), ctx.identity.as_deref(), None);
    let scope = crate::engine::Scope::Object {
        kind: obj.key.kind,
        name: qualified(&obj.key),
    };
    let clients = ctx.clients_for(&obj.key.namespace);
    let done = crate::engine::cleanup::cleanup(&mut rest, &clients, &obj.loaded, &scope).await?;
    Ok(Note {
        warning: false,
        reason: "CleanedUp".into(),
        message: format!("deletionPolicy Delete: {done}"),
    })
}
