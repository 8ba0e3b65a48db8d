//! One object's reconcile through the engine, turned into what the controller writes: status
//! fields, conditions, the changes to announce as events, and when to look again. May touch: the
//! cloud through the engine (and one dataset read for a DatasetAccess's entry count).

use super::context::Ctx;
use super::reconcile::{Object, ReconcileError};
use crate::access::DesiredAcl;
use crate::access::apply::Outcome;
use crate::cloud::CloudError;
use crate::consumer::iam::IamPlan;
use crate::consumer::layout::ConsumerTarget;
use crate::engine::tables::{TableApplied, TableState};
use crate::engine::{Reporter, Scope, World};
use crate::groups::{DesiredGroup, GroupPlan};
use crate::ingest::exec::Target;
use crate::manifest::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};
use std::time::Duration;

/// What the kind-specific work produced.
pub struct Work {
    /// Kind-specific status fields (without `conditions` / `observedGeneration`).
    pub fields: Value,
    /// Conditions: (type, true?, reason, message).
    pub conditions: Vec<(String, bool, String, String)>,
    /// Changes made, for events.
    pub changes: Vec<String>,
    /// Other events (check results).
    pub events: Vec<super::cluster::Note>,
    /// When to look again.
    pub requeue: Duration,
}

/// Collects what the engine did to one object.
#[derive(Default)]
struct Collect {
    changes: Vec<String>,
    table_status: Option<Value>,
    members: Option<i64>,
}

impl Reporter for Collect {
    fn table_applied(&mut self, t: &Target, state: &TableState, applied: &TableApplied) {
        let report = applied.loads.as_ref().and_then(|r| r.as_ref().ok());
        if let Some(r) = report {
            let d = &t.spec.destination;
            crate::ingest::delivered(&format!("{}.{}.{}", d.project, d.dataset, d.table), &r.delays_ms);
            if r.files_loaded > 0 {
                self.changes
                    .push(format!("loaded {} files ({} rows)", r.files_loaded, r.rows_loaded));
            }
            for (uri, g, cat, _) in &r.quarantined {
                self.changes.push(format!("quarantined {uri}#{g} ({})", cat.as_str()));
            }
        }
        if let Ok(done) = &applied.views_done {
            self.changes.extend(done.iter().cloned());
        }
        let st = crate::ingest::status::status(&state.observed, &state.plan, report, None, chrono::Utc::now());
        self.table_status = Some(serde_json::to_value(&st).unwrap_or_default());
    }

    fn consumer_applied(&mut self, _t: &ConsumerTarget, done: &Result<Vec<String>, CloudError>) {
        if let Ok(done) = done {
            self.changes.extend(done.iter().cloned());
        }
    }

    fn views_deleted(&mut self, _resource: &str, done: &Result<Vec<String>, CloudError>) {
        if let Ok(done) = done {
            self.changes.extend(done.iter().cloned());
        }
    }

    fn list_applied(&mut self, d: &DesiredAcl, outcome: &Outcome) {
        if let Outcome::Applied { plan, .. } = outcome {
            self.changes.push(format!(
                "access list of {}: +{} \u{2212}{}",
                d.key,
                plan.add.len(),
                plan.remove.len()
            ));
        }
    }

    fn iam_applied(&mut self, _t: &ConsumerTarget, result: &Result<IamPlan, CloudError>) {
        if let Ok(p) = result
            && p.has_changes()
        {
            self.changes
                .push(format!("jobUser binding: +{} \u{2212}{}", p.add.len(), p.remove.len()));
        }
    }

    fn group_planned(&mut self, _d: &DesiredGroup, plan: &GroupPlan) {
        self.members = Some(plan.after.len() as i64);
        if plan.has_changes() && !plan.is_refused() {
            let (a, c, r) = plan.counts();
            self.changes
                .push(format!("group {}: +{a} ~{c} \u{2212}{r}", plan.group));
        }
    }
}

/// Reconciles `obj` (valid, in `world`) through the engine, scoped to it (on a copy of the world
/// holding what the scope touches); what it changes is recorded in the audit log under one run id
/// per reconcile.
pub async fn work(ctx: &Ctx, obj: &Object, world: &World) -> Result<Work, ReconcileError> {
    let name = format!("{}/{}", obj.key.namespace, obj.key.name);
    let scope = Scope::Object {
        kind: obj.key.kind,
        name: name.clone(),
    };
    let scoped = world.scoped_copy(&scope);
    match &ctx.audit {
        Some(rec) => {
            let run = crate::audit::RunContext::new(rec.clone(), &ctx.revision).for_world(world);
            crate::audit::within(std::sync::Arc::new(run), work_inner(ctx, obj, scoped, &name, &scope)).await
        }
        None => work_inner(ctx, obj, scoped, &name, &scope).await,
    }
}

/// [`work`] on `world`, the copy scoped to `scope` (the object `name`).
async fn work_inner(
    ctx: &Ctx,
    obj: &Object,
    mut world: World,
    name: &str,
    scope: &Scope,
) -> Result<Work, ReconcileError> {
    let plain = ctx.clients_for(&obj.key.namespace);
    // Each dataset read once per reconcile.
    let memo = crate::cloud::memo::DatasetMemo::new(plain.bq);
    let clients = crate::engine::Clients { bq: &memo, ..plain };
    if world.is_plan_only(obj.key.kind, name) {
        return Ok(plan_only(ctx, &clients, world, scope).await);
    }
    let mut collect = Collect::default();
    let summary = crate::engine::apply(&mut world, &clients, scope, false, &mut collect).await;
    // An incompatible schema is the table's status (Ready=False with the reason); any other
    // failure fails the reconcile — the first one, whatever came before it.
    let has_status = collect.table_status.is_some();
    if let Some(e) = summary
        .errors
        .into_iter()
        .find(|e| !(has_status && matches!(e, crate::engine::Error::Incompatible(_))))
    {
        return Err(e.into());
    }
    let mut requeue = ctx.requeue;
    let mut events = Vec::new();
    let (fields, conditions) = match &obj.loaded.resource {
        Resource::IngestedTable(it) => {
            let mut fields = collect.table_status.unwrap_or_else(|| json!({}));
            let mut conditions = take_conditions(&mut fields);
            // After the loads: a check never holds them up, and its failure is its own condition.
            let mut check_due = None;
            if let Some(c) =
                super::checks::run_due(&clients, name, &it.spec, &obj.status["checks"], chrono::Utc::now()).await
            {
                fields["checks"] = c.status;
                conditions.push(c.condition);
                events = c.events;
                check_due = Some(c.next_due);
            }
            requeue = it
                .spec
                .schedule
                .every
                .parse::<kube::core::Duration>()
                .map(Duration::from)
                .unwrap_or(ctx.requeue);
            // Back when the next check is due, if that comes before the next pull or listing.
            if let Some(d) = check_due {
                requeue = requeue.min(d.max(Duration::from_secs(60)));
            }
            (fields, conditions)
        }
        Resource::DatasetAccess(da) => {
            let entries = clients
                .bq
                .get_dataset(&da.spec.project, &da.spec.dataset)
                .await?
                .map(|i| i.access.len() as i64);
            (json!({ "entries": entries }), ready("access list as declared"))
        }
        Resource::ConsumerProject(cp) => (
            json!({ "views": cp.spec.views.len() as i64 }),
            ready("dataset, views, access and billing as declared"),
        ),
        Resource::GroupMembership(_) => (json!({ "members": collect.members }), ready("members as declared")),
    };
    Ok(Work {
        fields,
        conditions,
        changes: collect.changes,
        events,
        requeue,
    })
}

/// A plan-only object (`bqsteward.dev/mode: plan`): observed and planned, nothing applied. The
/// status says what apply would change (`status.plan`, condition `Planned`); `Ready` is False with
/// reason `PlanOnly` (ArgoCD shows it as Suspended).
async fn plan_only(ctx: &Ctx, clients: &crate::engine::Clients<'_>, mut world: World, scope: &Scope) -> Work {
    let now = chrono::Utc::now();
    let set = crate::engine::plan_scoped(&mut world, clients, scope).await;
    let planned = crate::render::plan::planned_changes(&set, now);
    let mut fields = json!({});
    // A table's observed state (files waiting, loaded so far) as usual, without its conditions.
    if let (Some(Ok(state)), Some(_)) = (set.tables.first(), world.tables.first()) {
        let st = crate::ingest::status::status(&state.observed, &state.plan, None, None, now);
        fields = serde_json::to_value(&st).unwrap_or_default();
        take_conditions(&mut fields);
    }
    let reason = if planned.refused {
        "Refused"
    } else if planned.changes {
        "PendingChanges"
    } else {
        "NoChanges"
    };
    fields["plan"] = serde_json::to_value(&planned).unwrap_or_default();
    Work {
        fields,
        conditions: vec![
            (
                "Ready".into(),
                false,
                "PlanOnly".into(),
                format!(
                    "plan only ({}: plan): nothing is applied; remove the annotation to apply",
                    crate::engine::world::ANNOTATION_MODE
                ),
            ),
            (
                "Planned".into(),
                !planned.refused,
                reason.into(),
                planned.summary.clone(),
            ),
        ],
        changes: Vec::new(),
        events: Vec::new(),
        requeue: ctx.requeue,
    }
}

fn ready(message: &str) -> Vec<(String, bool, String, String)> {
    vec![("Ready".into(), true, "Applied".into(), message.into())]
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
