//! One reconcile of one object, for every kind, on the same observe → plan → apply functions that
//! `plan` and `apply` use. Finalizer first; deletion honours `deletionPolicy`; an invalid spec
//! gets a clear condition and no cloud call; status is written (server-side apply) only when it
//! changed, with conditions keeping their `lastTransitionTime` while their status holds.

use super::cluster::{Cluster, FINALIZER, Note, ObjectKey};
use crate::access::apply::{Applier, Outcome};
use crate::access::{AclEntry, DatasetKey, DesiredAcl, compile};
use crate::cloud::bigquery::BigQuery;
use crate::cloud::groups::Groups;
use crate::cloud::iam::ProjectIam;
use crate::cloud::retry::{Backoff, Pacer};
use crate::cloud::storage::Storage;
use crate::crd::{DeletionPolicy, IngestedTableStatus};
use crate::ingest::exec::{Executor, Target, observe as observe_table, plan_table};
use crate::manifest::{Loaded, Resource};
use crate::policy::Policy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything a reconcile needs.
pub struct Ctx {
    /// BigQuery.
    pub bq: Arc<dyn BigQuery>,
    /// Cloud Storage.
    pub gcs: Arc<dyn Storage>,
    /// Cloud Identity (GroupMembership), if configured.
    pub groups: Option<Arc<dyn Groups>>,
    /// Resource Manager (ConsumerProject), if configured.
    pub iam: Option<Arc<dyn ProjectIam>>,
    /// Kubernetes writes.
    pub cluster: Arc<dyn Cluster>,
    /// Guardrails.
    pub policy: Policy,
    /// bqsteward's identity (`serviceAccount:EMAIL`).
    pub identity: Option<String>,
    /// Periodic requeue (IngestedTable: its `schedule.every`).
    pub requeue: Duration,
    /// Per-object failure backoff.
    pub backoff: FailureBackoff,
    /// Retries of single cloud calls.
    pub call_backoff: Backoff,
    /// Paces access-list writes per dataset across every reconcile of the process (BigQuery allows
    /// five metadata updates per dataset per 10 s, whoever sends them).
    pub pacer: Pacer,
    /// Namespace → clients acting as its service account (policy
    /// `tenancy.namespaces.<ns>.serviceAccount`); other namespaces use `bq` and `gcs`.
    pub tenants: std::collections::BTreeMap<String, TenantClients>,
}

/// BigQuery and Cloud Storage clients acting as one namespace's service account.
#[derive(Clone)]
pub struct TenantClients {
    /// BigQuery.
    pub bq: Arc<dyn BigQuery>,
    /// Cloud Storage.
    pub gcs: Arc<dyn Storage>,
}

/// The clients of every namespace whose tenancy grant names a service account (the controller
/// acts as it for that namespace's BigQuery and Cloud Storage requests).
pub async fn tenant_clients(
    policy: &Policy,
    endpoints: &crate::cloud::Endpoints,
) -> Result<std::collections::BTreeMap<String, TenantClients>, crate::cloud::CloudError> {
    let mut out = std::collections::BTreeMap::new();
    for (ns, grant) in policy.tenancy.iter().flat_map(|t| &t.namespaces) {
        let Some(sa) = &grant.service_account else { continue };
        // One token source per account, shared by both clients (one token, one cache).
        let auth = crate::cloud::impersonate::auth(sa, endpoints)?;
        let bq = crate::cloud::bigquery::BigQueryRest::with_auth(endpoints, auth.clone()).await?;
        let gcs = crate::cloud::storage::GcsRest::with_auth(endpoints, auth)?;
        out.insert(
            ns.clone(),
            TenantClients {
                bq: Arc::new(bq),
                gcs: Arc::new(gcs),
            },
        );
    }
    Ok(out)
}

impl Ctx {
    /// The BigQuery client for resources of namespace `ns`.
    pub fn bq_for(&self, ns: &str) -> &dyn BigQuery {
        self.tenants.get(ns).map_or(self.bq.as_ref(), |t| t.bq.as_ref())
    }

    /// The Cloud Storage client for resources of namespace `ns`.
    pub fn gcs_for(&self, ns: &str) -> &dyn Storage {
        self.tenants.get(ns).map_or(self.gcs.as_ref(), |t| t.gcs.as_ref())
    }

    /// bqsteward's own email, lowercased.
    fn identity_email(&self) -> Option<String> {
        self.identity.as_deref().and_then(crate::access::entry::identity_email)
    }

    /// The Cloud Identity client, which GroupMembership needs.
    fn groups(&self) -> Result<&dyn Groups, ReconcileError> {
        self.groups
            .as_deref()
            .ok_or_else(|| ReconcileError::Failed("no Cloud Identity client configured".into()))
    }
}

/// Per-object exponential backoff with jitter, reset on success.
pub struct FailureBackoff {
    failures: Mutex<HashMap<ObjectKey, u32>>,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl FailureBackoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> FailureBackoff {
        FailureBackoff {
            failures: Mutex::default(),
            base,
            max,
        }
    }

    /// Records a failure; the delay before the next attempt (base·2^(n-1), capped, ±20 % jitter).
    pub fn failed(&self, key: &ObjectKey) -> Duration {
        let mut f = self.failures.lock().unwrap();
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        let exp = self.base.saturating_mul(1u32 << (*n - 1).min(16)).min(self.max);
        exp.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// Failures in a row so far.
    pub fn failures(&self, key: &ObjectKey) -> u32 {
        self.failures.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Records a success.
    pub fn succeeded(&self, key: &ObjectKey) {
        self.failures.lock().unwrap().remove(key);
    }
}

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

impl Object {
    fn meta(&self) -> &kube::core::ObjectMeta {
        match &self.loaded.resource {
            Resource::IngestedTable(r) => &r.metadata,
            Resource::DatasetAccess(r) => &r.metadata,
            Resource::ConsumerProject(r) => &r.metadata,
            Resource::GroupMembership(r) => &r.metadata,
        }
    }
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

impl ReconcileError {
    /// A short category label (metrics, events).
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Cloud(e) => crate::access::apply::category_label(e),
            ReconcileError::Kube(_) => "kubernetes",
            ReconcileError::Load(e) => match e {
                crate::ingest::jobs::RunError::Cloud(c) => crate::access::apply::category_label(c),
                crate::ingest::jobs::RunError::Exhausted { .. } | crate::ingest::jobs::RunError::Timeout { .. } => {
                    "retryable"
                }
                crate::ingest::jobs::RunError::Budget { .. } => "quota",
                crate::ingest::jobs::RunError::Crash(_) => "terminal",
            },
            ReconcileError::Failed(_) => "refused",
        }
    }
}

/// What the kind-specific work produced.
struct Work {
    /// Kind-specific status fields (without `conditions` / `observedGeneration`).
    fields: Value,
    /// Conditions: (type, true?, reason, message).
    conditions: Vec<(String, bool, String, String)>,
    /// Changes made, for events.
    changes: Vec<String>,
    /// When to look again.
    requeue: Duration,
}

/// Reconciles one object. `all` is every bqsteward object in the cluster (the ACL compiler and
/// ConsumerProject sources need them). Returns when to look again.
pub async fn reconcile(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Duration, ReconcileError> {
    let meta = obj.meta();
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

    let (problems, all) = validated(ctx, obj, all);
    let all = all.as_slice();
    let result = if !problems.is_empty() {
        Ok(Work {
            fields: json!({}),
            conditions: vec![("Ready".into(), false, "InvalidSpec".into(), problems.join("; "))],
            changes: Vec::new(),
            requeue: ctx.requeue,
        })
    } else {
        match &obj.loaded.resource {
            Resource::IngestedTable(_) => ingested_table(ctx, obj, all).await,
            Resource::DatasetAccess(_) => dataset_access(ctx, obj, all).await,
            Resource::ConsumerProject(_) => consumer_project(ctx, obj, all).await,
            Resource::GroupMembership(_) => group_membership(ctx, obj).await,
        }
    };
    let (work, error) = match result {
        Ok(w) => (w, None),
        Err(e) => (
            Work {
                fields: obj.status.clone(),
                conditions: vec![("Ready".into(), false, reason_of(&e).into(), e.to_string())],
                changes: Vec::new(),
                requeue: ctx.requeue,
            },
            Some(e),
        ),
    };
    let status = merge_status(&obj.status, &work, meta.generation);
    if status != obj.status {
        ctx.cluster.apply_status(&obj.key, status.clone()).await?;
        // An event when Ready changes (not on every pass).
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
                .map(|c| (c["status"].clone(), c["reason"].clone()))
        };
        if ready(&status) != ready(&obj.status)
            && let Some((st, reason)) = ready(&status)
        {
            let message = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_string();
            let note = Note {
                warning: st != "True",
                reason: reason.as_str().unwrap_or("Ready").to_string(),
                message,
            };
            ctx.cluster.event(&obj.key, uid, note).await.ok();
        }
    }
    for c in &work.changes {
        ctx.cluster
            .event(
                &obj.key,
                uid,
                Note {
                    warning: false,
                    reason: "Applied".into(),
                    message: c.clone(),
                },
            )
            .await
            .ok();
    }
    match error {
        Some(e) => {
            // Every failure is an event (the recorder folds repeats into one series).
            let note = Note {
                warning: true,
                reason: reason_of(&e).into(),
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

fn reason_of(e: &ReconcileError) -> &'static str {
    match e {
        ReconcileError::Cloud(_) => "CloudError",
        ReconcileError::Kube(_) => "KubernetesError",
        ReconcileError::Load(crate::ingest::jobs::RunError::Cloud(_)) => "CloudError",
        ReconcileError::Load(_) => "LoadFailed",
        ReconcileError::Failed(_) => "ApplyFailed",
    }
}

/// Validates every object once (this one in the context of all others): this object's problems as
/// `field: message`, and the objects without any problem — the only ones whose declarations may
/// reach a compiled access list or a ConsumerProject's sources (an invalid object contributes
/// nothing, whoever is being reconciled).
fn validated(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> (Vec<String>, Vec<Loaded>) {
    let mut report = crate::manifest::LoadReport {
        resources: all.to_vec(),
        ..Default::default()
    };
    if !all.iter().any(|l| same(l, &obj.key)) {
        report.resources.push(obj.loaded.clone());
    }
    let diagnostics = crate::validate::validate(&report, &ctx.policy);
    let me = qualified(&obj.key);
    let problems = diagnostics
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
    let broken: std::collections::HashSet<(&str, &str)> = diagnostics
        .iter()
        .filter_map(|d| Some((d.kind.as_deref()?, d.name.as_deref()?)))
        .collect();
    let valid = report
        .resources
        .into_iter()
        .filter(|l| !broken.contains(&(l.resource.kind(), l.resource.qualified_name().as_str())))
        .collect();
    (problems, valid)
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

/// Applies every access list this object owns, creates, or has entries on (the full compiled
/// list, so the result is the same whichever resource writes it; writes are etag-guarded).
/// `retire` entries are removed from the named dataset; `retire_anywhere` entries (authorizations
/// of views whose source is no longer known, as `apply` does) from every list bqsteward manages —
/// from lists of other objects only those entries, nothing else.
async fn apply_acls(
    ctx: &Ctx,
    obj: &Object,
    all: &[Loaded],
    retire: &[(DatasetKey, AclEntry)],
    retire_anywhere: &[AclEntry],
) -> Result<Vec<String>, ReconcileError> {
    let identity = ctx
        .identity
        .as_deref()
        .and_then(|i| crate::access::entry::identity_entry(i).ok());
    let me = qualified(&obj.key);
    let by = format!("{} {me}", obj.key.kind);
    let mut compiled = compile(all, identity.as_ref());
    crate::access::compile::add_tenant_identities(&mut compiled, &ctx.policy);
    let elsewhere: Vec<DatasetKey> = compiled.iter().map(|d| d.key.clone()).collect();
    let mut desired: Vec<DesiredAcl> = compiled
        .into_iter()
        .filter(|d| {
            (d.owner.as_deref() == Some(&me) && d.owner_kind == obj.key.kind)
                || d.entries
                    .values()
                    .any(|r| matches!(r, crate::access::compile::Reason::Required { by: b } if *b == by))
        })
        .collect();
    for (key, entry) in retire {
        match desired.iter_mut().find(|d| &d.key == key) {
            Some(d) => {
                d.retire.insert(entry.clone());
            }
            None => desired.push(DesiredAcl {
                retire: [entry.clone()].into(),
                ..DesiredAcl::new(key.clone())
            }),
        }
    }
    if !retire_anywhere.is_empty() {
        for key in elsewhere {
            match desired.iter_mut().find(|d| d.key == key) {
                Some(d) => d.retire.extend(retire_anywhere.iter().cloned()),
                None => desired.push(DesiredAcl {
                    retire: retire_anywhere.iter().cloned().collect(),
                    ..DesiredAcl::new(key)
                }),
            }
        }
    }
    let bq = ctx.bq_for(&obj.key.namespace);
    for note in crate::access::apply::drop_missing_views(bq, &mut desired).await {
        tracing::warn!(object = %obj.key, "{note}");
    }
    let applier = Applier {
        bq,
        policy: &ctx.policy,
        approved: false,
        backoff: ctx.call_backoff.clone(),
        pacer: &ctx.pacer,
    };
    let mut changes = Vec::new();
    for d in &desired {
        match applier.apply(d).await {
            Outcome::Unchanged => {}
            Outcome::Applied { plan, .. } => changes.push(format!(
                "access list of {}: +{} \u{2212}{}",
                d.key,
                plan.add.len(),
                plan.remove.len()
            )),
            Outcome::Refused(p) => return Err(ReconcileError::Failed(format!("{}: {}", d.key, p.refusals.join("; ")))),
            Outcome::Failed(e) => return Err(e.into()),
        }
    }
    Ok(changes)
}

async fn ingested_table(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Work, ReconcileError> {
    let Resource::IngestedTable(it) = &obj.loaded.resource else {
        unreachable!()
    };
    let name = qualified(&obj.key);
    let reload = obj
        .loaded
        .resource
        .annotation(crate::ingest::reload::ANNOTATION_RELOAD)
        .map(crate::ingest::reload::Reload::parse)
        .transpose()
        .map_err(ReconcileError::Failed)?;
    let t = Target::new(&name, &it.spec, reload)
        .map_err(ReconcileError::Failed)?
        .adopting(&obj.loaded.resource);
    let (bq, gcs) = (ctx.bq_for(&obj.key.namespace), ctx.gcs_for(&obj.key.namespace));
    let o = observe_table(bq, gcs, &t).await?;
    let p = plan_table(&t, &o, chrono::Utc::now().timestamp_millis());
    let mut changes = Vec::new();
    let report = if p.is_empty() {
        None
    } else {
        let r = Executor::new(bq, &t, p.loads.budget_left).apply(&p, &o).await?;
        if r.files_loaded > 0 {
            changes.push(format!("loaded {} files ({} rows)", r.files_loaded, r.rows_loaded));
        }
        for (uri, g, cat, _) in &r.quarantined {
            changes.push(format!("quarantined {uri}#{g} ({})", cat.as_str()));
        }
        Some(r)
    };
    let table = bq.get_table(&t.table).await?;
    let vp = crate::views::apply::plan_for_table(bq, &t, table.as_ref()).await?;
    if vp.is_refused() {
        return Err(ReconcileError::Failed(format!("views: {}", vp.refusals.join("; "))));
    }
    changes.extend(crate::views::apply::apply(bq, &vp).await?);
    let retire = crate::views::layout::retired_entries(&it.spec, &vp.delete);
    changes.extend(apply_acls(ctx, obj, all, &retire, &[]).await?);
    let st: IngestedTableStatus = crate::ingest::status::status(&o, &p, report.as_ref(), None, chrono::Utc::now());
    let mut fields = serde_json::to_value(&st).unwrap_or_default();
    let conditions = take_conditions(&mut fields);
    let every = it
        .spec
        .schedule
        .every
        .parse::<kube::core::Duration>()
        .map(std::time::Duration::from)
        .unwrap_or(ctx.requeue);
    Ok(Work {
        fields,
        conditions,
        changes,
        requeue: every,
    })
}

/// Moves the conditions out of a serialized status (they are merged separately).
fn take_conditions(fields: &mut Value) -> Vec<(String, bool, String, String)> {
    let list: Vec<Condition> = serde_json::from_value(fields["conditions"].take()).unwrap_or_default();
    if let Some(o) = fields.as_object_mut() {
        o.remove("conditions");
        o.remove("observedGeneration");
    }
    list.into_iter()
        .map(|c| (c.type_, c.status == "True", c.reason, c.message))
        .collect()
}

async fn dataset_access(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Work, ReconcileError> {
    let Resource::DatasetAccess(da) = &obj.loaded.resource else {
        unreachable!()
    };
    let changes = apply_acls(ctx, obj, all, &[], &[]).await?;
    let entries = ctx
        .bq_for(&obj.key.namespace)
        .get_dataset(&da.spec.project, &da.spec.dataset)
        .await?
        .map(|i| i.access.len() as i64);
    Ok(Work {
        fields: json!({ "entries": entries }),
        conditions: vec![("Ready".into(), true, "Applied".into(), "access list as declared".into())],
        changes,
        requeue: ctx.requeue,
    })
}

async fn group_membership(ctx: &Ctx, obj: &Object) -> Result<Work, ReconcileError> {
    let Resource::GroupMembership(gm) = &obj.loaded.resource else {
        unreachable!()
    };
    let groups = ctx.groups()?;
    let desired = crate::groups::DesiredGroup::new(
        &qualified(&obj.key),
        &gm.spec,
        obj.loaded
            .resource
            .annotation(crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL),
    );
    let identity = ctx.identity_email();
    let o = crate::groups::apply::observe(groups, &desired, &ctx.call_backoff).await?;
    let plan = crate::groups::plan_group(
        &desired,
        o.name.as_deref(),
        &o.members,
        identity.as_deref(),
        &ctx.policy,
        false,
    );
    if plan.is_refused() {
        return Err(ReconcileError::Failed(plan.refusals.join("; ")));
    }
    let mut changes = Vec::new();
    if plan.has_changes() {
        let report = crate::groups::apply::apply(groups, &plan, &o.members, &ctx.call_backoff).await;
        let failed = report.failures();
        let (a, c, r) = plan.counts();
        changes.push(format!("group {}: +{a} ~{c} \u{2212}{r}", plan.group));
        if failed > 0 {
            return Err(ReconcileError::Failed(format!(
                "{failed} of {} membership changes failed",
                report.outcomes.len()
            )));
        }
    }
    Ok(Work {
        fields: json!({ "members": plan.after.len() as i64 }),
        conditions: vec![("Ready".into(), true, "Applied".into(), "members as declared".into())],
        changes,
        requeue: ctx.requeue,
    })
}

async fn consumer_project(ctx: &Ctx, obj: &Object, all: &[Loaded]) -> Result<Work, ReconcileError> {
    let Resource::ConsumerProject(cp) = &obj.loaded.resource else {
        unreachable!()
    };
    let t = crate::consumer::layout::ConsumerTarget::resolve(&qualified(&obj.key), &obj.key.namespace, &cp.spec, all)
        .map_err(ReconcileError::Failed)?
        .adopting(&obj.loaded.resource);
    let iam = ctx.iam.as_deref();
    let bq = ctx.bq_for(&obj.key.namespace);
    let p = crate::consumer::reconcile::plan(bq, iam, &t, &ctx.call_backoff).await?;
    if p.views.is_refused() {
        return Err(ReconcileError::Failed(p.views.refusals.join("; ")));
    }
    let mut changes = crate::consumer::reconcile::apply_views(bq, &p).await?;
    // Authorizations of the views this apply deleted (removed from the spec).
    changes.extend(apply_acls(ctx, obj, all, &[], &p.retire).await?);
    if let Some(c) = iam {
        let ip = crate::consumer::reconcile::apply_iam(c, &t, &ctx.call_backoff).await?;
        if ip.has_changes() {
            changes.push(format!(
                "jobUser binding: +{} \u{2212}{}",
                ip.add.len(),
                ip.remove.len()
            ));
        }
    }
    Ok(Work {
        fields: json!({ "views": t.views.len() as i64 }),
        conditions: vec![(
            "Ready".into(),
            true,
            "Applied".into(),
            "dataset, views, access and billing as declared".into(),
        )],
        changes,
        requeue: ctx.requeue,
    })
}

/// Deleting: `Retain` leaves everything; `Delete` removes what the object manages. Never blocked
/// by an invalid spec (cleanup is skipped with a warning instead) and idempotent.
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
    let (problems, all) = validated(ctx, obj, all);
    let all = all.as_slice();
    if !problems.is_empty() {
        return Ok(Note {
            warning: true,
            reason: "CleanupSkipped".into(),
            message: format!("the spec is invalid, so nothing was removed: {}", problems.join("; ")),
        });
    }
    let bq = ctx.bq_for(&obj.key.namespace);
    let done = match &obj.loaded.resource {
        Resource::IngestedTable(it) => {
            // Views (clean first), their authorizations, then the table — each only if its owner
            // label names this resource: deleting an object never removes what another owns.
            let resource = format!("IngestedTable {}", qualified(&obj.key));
            let mut removed = Vec::new();
            let mut kept = Vec::new();
            let mut retire = Vec::new();
            for l in crate::views::layers(&it.spec).into_iter().rev() {
                match bq.get_table(&l.view).await? {
                    Some(info) if info.is_view() && info.belongs_to(&resource) => {
                        bq.delete_table(&l.view).await?;
                        removed.push(l.view.to_string());
                        retire.push(l.authorization());
                    }
                    Some(_) => kept.push(l.view.to_string()),
                    None => retire.push(l.authorization()),
                }
            }
            let others: Vec<Loaded> = all.iter().filter(|l| !same(l, &obj.key)).cloned().collect();
            apply_acls(ctx, obj, &others, &retire, &[]).await?;
            let d = &it.spec.destination;
            let table = crate::cloud::bqtypes::TableRef::new(&d.project, &d.dataset, &d.table);
            match bq.get_table(&table).await? {
                Some(info)
                    if info.kind != "VIEW"
                        && info.labels.get(crate::cloud::bqtypes::LABEL_OWNER)
                            == Some(&crate::cloud::bqtypes::owner_value(&resource)) =>
                {
                    bq.delete_table(&table).await?;
                    removed.push(table.to_string());
                }
                Some(_) => kept.push(table.to_string()),
                None => {}
            }
            let mut said = format!("deleted {}", removed.join(", "));
            if !kept.is_empty() {
                said.push_str(&format!("; kept {} (not this resource's)", kept.join(", ")));
            }
            said
        }
        Resource::DatasetAccess(da) => {
            let identity = ctx
                .identity
                .as_deref()
                .and_then(|i| crate::access::entry::identity_entry(i).ok());
            let key = DatasetKey {
                project: da.spec.project.clone(),
                dataset: da.spec.dataset.clone(),
            };
            let retire: Vec<(DatasetKey, AclEntry)> = da
                .spec
                .access
                .iter()
                .map(AclEntry::from_spec)
                .filter(|e| Some(e) != identity.as_ref())
                .map(|e| (key.clone(), e))
                .collect();
            let others: Vec<Loaded> = all.iter().filter(|l| !same(l, &obj.key)).cloned().collect();
            match apply_acls(ctx, obj, &others, &retire, &[]).await {
                Ok(_) => format!("removed the declared entries from {key}"),
                Err(ReconcileError::Failed(why)) => format!("kept the declared entries of {key}: {why}"),
                Err(e) => return Err(e),
            }
        }
        Resource::ConsumerProject(cp) => {
            let t = crate::consumer::layout::ConsumerTarget::resolve(
                &qualified(&obj.key),
                &obj.key.namespace,
                &cp.spec,
                all,
            )
            .map_err(ReconcileError::Failed)?;
            let c =
                crate::consumer::reconcile::cleanup(bq, ctx.iam.as_deref(), &t, &ctx.policy, &ctx.call_backoff).await?;
            format!(
                "deleted views {:?}; removed authorizations on {:?}; removed {} job users",
                c.views_deleted,
                c.authorizations_removed,
                c.iam_members_removed.len()
            )
        }
        Resource::GroupMembership(gm) => {
            let groups = ctx.groups()?;
            let desired = crate::groups::DesiredGroup::new(&qualified(&obj.key), &gm.spec, Some("true"));
            let identity = ctx.identity_email();
            let o = crate::groups::apply::observe(groups, &desired, &ctx.call_backoff).await?;
            // The group after removing the declared members: the live ones not declared.
            let mut after = desired.clone();
            after.members = o
                .members
                .iter()
                .filter(|m| !desired.members.contains_key(&m.email))
                .map(|m| (m.email.clone(), m.role()))
                .collect();
            let plan = crate::groups::plan_group(
                &after,
                o.name.as_deref(),
                &o.members,
                identity.as_deref(),
                &ctx.policy,
                true,
            );
            if plan.is_refused() {
                format!("kept the declared members: {}", plan.refusals.join("; "))
            } else {
                let report = crate::groups::apply::apply(groups, &plan, &o.members, &ctx.call_backoff).await;
                format!(
                    "removed {} declared members ({} failed)",
                    plan.ops.len(),
                    report.failures()
                )
            }
        }
    };
    Ok(Note {
        warning: false,
        reason: "CleanedUp".into(),
        message: format!("deletionPolicy Delete: {done}"),
    })
}
