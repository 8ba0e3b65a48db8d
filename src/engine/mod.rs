//! The one reconcile engine behind `bqsteward plan`, `bqsteward apply` and the controller.
//!
//! A [`World`] is resolved once from the manifests or the cluster; per-kind adapters
//! ([`tables`], [`consumers`], [`lists`], [`groups`]) each observe, plan (pure) and apply; [`run`]
//! runs the phases in their one order — tables and their view layers, consumer datasets and views,
//! access lists (with the authorizations of deleted views retired), consumer IAM, group
//! memberships — for everything (`plan`/`apply`) or for one object and what it touches (a
//! controller reconcile). What happens is told to a [`Reporter`]: the CLI prints it, the controller
//! turns it into status and events.
//!
//! May touch: the cloud traits (`crate::cloud`) and the per-kind modules. Never Kubernetes (the
//! controller's part) nor stdout (the front ends').

pub mod cleanup;
pub mod consumers;
pub mod groups;
pub mod lists;
pub mod tables;
pub mod world;

pub use world::{Problem, World};

use crate::access::apply::Outcome;
use crate::access::{DatasetPlan, DesiredAcl};
use crate::cloud::bigquery::BigQuery;
use crate::cloud::groups::Groups;
use crate::cloud::iam::ProjectIam;
use crate::cloud::retry::{Backoff, Pacer};
use crate::cloud::storage::Storage;
use crate::consumer::iam::IamPlan;
use crate::consumer::layout::ConsumerTarget;
use crate::consumer::reconcile::ConsumerPlan;
use crate::groups::{DesiredGroup, GroupPlan};
use crate::ingest::exec::Target;

/// The cloud clients and the process-wide helpers every phase uses.
pub struct Clients<'a> {
    /// BigQuery.
    pub bq: &'a dyn BigQuery,
    /// Cloud Storage.
    pub gcs: &'a dyn Storage,
    /// Cloud Identity (GroupMembership), if configured.
    pub groups: Option<&'a dyn Groups>,
    /// Resource Manager (ConsumerProject billing), if configured.
    pub iam: Option<&'a dyn ProjectIam>,
    /// Paces access-list writes per dataset (one per process).
    pub pacer: &'a Pacer,
    /// Retries of single calls.
    pub backoff: Backoff,
    /// Database sources: their Secrets and connection limits.
    pub sources: &'a crate::dbsource::Sources,
}

/// What a run covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every resource of the world (`plan`, `apply`).
    All,
    /// One object — `kind` and `namespace/name` — and the access lists it owns or has entries on
    /// (a controller reconcile).
    Object {
        /// `IngestedTable`, `DatasetAccess`, `ConsumerProject` or `GroupMembership`.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
    },
}

impl Scope {
    /// Whether the resource `kind` `name` is in scope.
    pub fn covers(&self, kind: &str, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Object { kind: k, name: n } => *k == kind && n == name,
        }
    }
}

/// Told what happens, phase by phase, in order. Every method has a default that ignores it.
#[allow(unused_variables)]
pub trait Reporter: Send {
    /// An IngestedTable was observed and planned (or could not be read).
    fn table_planned(&mut self, t: &Target, state: &Result<tables::TableState, crate::engine::PlanFailure>) {}
    /// An IngestedTable was applied.
    fn table_applied(&mut self, t: &Target, state: &tables::TableState, applied: &tables::TableApplied) {}
    /// A ConsumerProject was observed and planned (or could not be read).
    fn consumer_planned(&mut self, t: &ConsumerTarget, plan: &Result<ConsumerPlan, crate::engine::PlanFailure>) {}
    /// A ConsumerProject's dataset and views were written (or failed).
    fn consumer_applied(&mut self, t: &ConsumerTarget, done: &Result<Vec<String>, crate::cloud::CloudError>) {}
    /// Authorizations dropped because their view does not exist.
    fn note(&mut self, note: &str) {}
    /// Views no longer declared were deleted (after their authorizations were retired), or not.
    fn views_deleted(&mut self, resource: &str, done: &Result<Vec<String>, crate::cloud::CloudError>) {}
    /// The access lists were observed and planned.
    fn lists_planned(&mut self, plans: &[DatasetPlan]) {}
    /// One access list was applied.
    fn list_applied(&mut self, desired: &DesiredAcl, outcome: &Outcome) {}
    /// Every access list that changes was applied (not called when the lists were refused).
    fn lists_done(&mut self) {}
    /// A ConsumerProject's jobUser binding was applied (or failed).
    fn iam_applied(&mut self, t: &ConsumerTarget, result: &Result<IamPlan, crate::cloud::CloudError>) {}
    /// A group was observed and planned.
    fn group_planned(&mut self, d: &DesiredGroup, plan: &GroupPlan) {}
    /// A group's changes were applied.
    fn group_applied(&mut self, plan: &GroupPlan, report: &crate::groups::apply::GroupReport) {}
}

/// Why an engine step could not be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cloud call failed (after retries); its category says whether to retry.
    #[error("{0}")]
    Cloud(#[from] crate::cloud::CloudError),
    /// Loading failed (everything done so far is recorded; the next run resumes).
    #[error("{0}")]
    Load(#[from] crate::ingest::jobs::RunError),
    /// It cannot be done as declared (refused, unresolvable, not configured).
    #[error("{0}")]
    Failed(String),
    /// A table's schema cannot hold the declared one: nothing loads until the manifest or the
    /// table is fixed (the table's status says why).
    #[error("{0}")]
    Incompatible(String),
}

/// Why something could not be observed or planned: what, in words, and the cloud error (whose
/// category says whether to retry).
#[derive(Debug)]
pub struct PlanFailure {
    /// What could not be read, naming the resource.
    pub message: String,
    /// The error.
    pub cause: crate::cloud::CloudError,
}

impl std::fmt::Display for PlanFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.message, self.cause)
    }
}

/// Whether a run wrote everything it planned.
#[derive(Debug, Default)]
pub struct Summary {
    /// Something failed or was refused.
    pub failed: bool,
    /// Something would change (plan) or changed (apply).
    pub changes: bool,
    /// Every failure, in order: cloud or load errors (with their category), refusals.
    pub errors: Vec<Error>,
}

impl Summary {
    /// Records a failure.
    fn fail(&mut self, e: Error) {
        self.failed = true;
        self.errors.push(e);
    }

    /// Takes in another phase's summary.
    fn merge(&mut self, other: Summary) {
        self.changes |= other.changes;
        self.failed |= other.failed;
        self.errors.extend(other.errors);
    }
}

/// Applies the world (or one object of it), phase by phase. `approved`: large removals are allowed
/// (`--allow-large-removal`).
#[tracing::instrument(skip_all, fields(scope = ?scope))]
pub async fn apply(w: &mut World, c: &Clients<'_>, scope: &Scope, approved: bool, r: &mut dyn Reporter) -> Summary {
    let mut summary = Summary::default();
    let now = chrono::Utc::now().timestamp_millis();

    // 1. Tables and their view layers (they create the datasets everything else refers to).
    let mut retired = Vec::new();
    // Views to delete once the lists phase has retired their authorizations: (resource, views).
    let mut to_delete: Vec<(String, Vec<crate::cloud::bqtypes::TableRef>)> = Vec::new();
    for t in w.tables.iter().filter(|t| scope.covers("IngestedTable", &t.name)) {
        if w.is_plan_only("IngestedTable", &t.name) {
            r.note(&format!(
                "IngestedTable {}: plan only ({}: plan): not applied",
                t.name,
                world::ANNOTATION_MODE
            ));
            continue;
        }
        let state = tables::plan(c, t, now).await;
        r.table_planned(t, &state);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                summary.fail(Error::Cloud(e.cause));
                continue;
            }
        };
        let applied = tables::apply(c, t, &state).await;
        summary.changes |= !state.plan.is_empty() || applied.views.as_ref().is_ok_and(|v| v.has_changes());
        retired.extend(applied.retired.iter().map(|(k, e)| (Some(k.clone()), e.clone())));
        if !applied.to_delete.is_empty() {
            to_delete.push((format!("IngestedTable {}", t.name), applied.to_delete.clone()));
        }
        r.table_applied(t, &state, &applied);
        if applied.failed(&state.plan) {
            summary.fail(applied.into_error(&state.plan));
        }
    }
    w.retire(retired);

    // 2. Consumer datasets and views (their sources exist now).
    let mut applied_consumers = Vec::new();
    let mut not_applied: Vec<String> = Vec::new();
    let mut retire_anywhere = Vec::new();
    for t in w
        .consumers
        .iter()
        .filter(|t| scope.covers("ConsumerProject", &t.resource))
    {
        if w.is_plan_only("ConsumerProject", &t.resource) {
            r.note(&format!(
                "ConsumerProject {}: plan only ({}: plan): not applied",
                t.resource,
                world::ANNOTATION_MODE
            ));
            not_applied.push(t.resource.clone());
            continue;
        }
        let plan = consumers::plan(c, t).await;
        r.consumer_planned(t, &plan);
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                summary.fail(Error::Cloud(e.cause));
                not_applied.push(t.resource.clone());
                continue;
            }
        };
        if plan.views.is_refused() {
            summary.fail(Error::Failed(plan.views.refusals.join("; ")));
            not_applied.push(t.resource.clone());
            continue;
        }
        // Views no longer declared wait until their authorizations are retired.
        let keep = ConsumerPlan {
            views: crate::views::LayoutPlan {
                delete: Vec::new(),
                ..plan.views.clone()
            },
            ..plan.clone()
        };
        let done = consumers::apply_views(c, &keep).await;
        summary.changes |= plan.has_changes();
        r.consumer_applied(t, &done);
        match done {
            Ok(_) => {
                retire_anywhere.extend(plan.retire.iter().cloned());
                if !plan.views.delete.is_empty() {
                    to_delete.push((format!("ConsumerProject {}", t.resource), plan.views.delete.clone()));
                }
                applied_consumers.push(t.clone());
            }
            Err(e) => {
                summary.fail(e.into());
                not_applied.push(t.resource.clone());
            }
        }
    }

    // 3. Access lists: the ones in scope, the authorizations of deleted views retired. Where a
    // retired authorization's dataset is unknown (a consumer view removed from the spec), only the
    // datasets its views could have read are searched for one object: its namespace's
    // IngestedTable datasets and its current sources — never other namespaces' lists.
    let anywhere_keys = match scope {
        Scope::All => None,
        Scope::Object { .. } => Some(lists::consumer_source_datasets(w, scope)),
    };
    let mut lists = lists::in_scope(w, scope, &retire_anywhere, anywhere_keys.as_ref());
    // The list of a consumer dataset whose ConsumerProject was refused or failed waits with it (its
    // dataset may not exist; the refusal was reported once, above).
    lists.retain(|d| !(d.owner_kind == "ConsumerProject" && d.owner.as_ref().is_some_and(|o| not_applied.contains(o))));
    // Nor is the list of a plan-only owner written.
    lists.retain(|d| {
        let plan_only = d.owner.as_ref().is_some_and(|o| w.is_plan_only(d.owner_kind, o));
        if plan_only {
            r.note(&format!(
                "{} {} (access list of {}): plan only ({}: plan): not written",
                d.owner_kind,
                d.owner.as_deref().unwrap_or_default(),
                d.key,
                world::ANNOTATION_MODE
            ));
        }
        !plan_only
    });
    if !lists.is_empty() {
        for note in crate::access::apply::drop_missing_views(c.bq, &mut lists).await {
            r.note(&note);
        }
        summary.merge(lists::apply(c, &w.policy, &lists, approved, r).await);
    }

    // 3b. Then the views no longer declared, unless a list could not be written (they stay, and the
    // next run retires their authorizations and deletes them).
    if !summary.failed || summary.errors.iter().all(|e| matches!(e, Error::Incompatible(_))) {
        for (resource, views) in &to_delete {
            let done = crate::views::apply::delete_views(c.bq, resource, views).await;
            r.views_deleted(resource, &done);
            match done {
                Ok(_) => summary.changes = true,
                Err(e) => summary.fail(e.into()),
            }
        }
    }

    // 4. The jobUser binding of each consumer applied.
    if let Some(iam) = c.iam {
        for t in &applied_consumers {
            let result = consumers::apply_iam(iam, t, &c.backoff).await;
            summary.changes |= result.as_ref().is_ok_and(IamPlan::has_changes);
            r.iam_applied(t, &result);
            if let Err(e) = result {
                summary.fail(e.into());
            }
        }
    }

    // 5. Group memberships.
    let in_scope: Vec<&DesiredGroup> = w
        .groups
        .iter()
        .filter(|g| scope.covers("GroupMembership", &g.resource))
        .filter(|g| {
            let plan_only = w.is_plan_only("GroupMembership", &g.resource);
            if plan_only {
                r.note(&format!(
                    "GroupMembership {}: plan only ({}: plan): not applied",
                    g.resource,
                    world::ANNOTATION_MODE
                ));
            }
            !plan_only
        })
        .collect();
    if !in_scope.is_empty() {
        summary.merge(groups::apply(c, w, &in_scope, approved, r).await);
    }
    summary
}

/// Everything `plan` shows: each kind observed and planned, nothing written.
pub struct PlanSet {
    /// Per IngestedTable of the world, in order.
    pub tables: Vec<Result<tables::TableState, crate::engine::PlanFailure>>,
    /// Per ConsumerProject of the world, in order.
    pub consumers: Vec<Result<ConsumerPlan, crate::engine::PlanFailure>>,
    /// Every access list (authorizations of views the plans delete retired).
    pub lists: Vec<DatasetPlan>,
    /// Per GroupMembership of the world, in order.
    pub groups: Vec<(GroupPlan, Vec<crate::groups::LiveMember>)>,
}

impl PlanSet {
    /// Something is refused or could not be read.
    pub fn failed(&self) -> bool {
        self.lists.iter().any(DatasetPlan::is_refused)
            || self
                .tables
                .iter()
                .any(|p| p.as_ref().map_or(true, |s| s.views.is_refused() || s.source_refused()))
            || self
                .consumers
                .iter()
                .any(|p| p.as_ref().map_or(true, |p| p.views.is_refused()))
            || self.groups.iter().any(|(p, _)| p.is_refused())
    }

    /// Something would change.
    pub fn changes(&self) -> bool {
        self.lists.iter().any(DatasetPlan::has_changes)
            || self.tables.iter().any(|p| {
                p.as_ref().is_ok_and(|s| {
                    !s.plan.is_empty() || s.views.has_changes() || s.pulls() > 0 || s.delta_versions() > 0
                })
            })
            || self
                .consumers
                .iter()
                .any(|p| p.as_ref().is_ok_and(ConsumerPlan::has_changes))
            || self.groups.iter().any(|(p, _)| p.has_changes())
    }
}

/// Observes and plans the whole world, read-only, in the phase order of [`apply`].
#[tracing::instrument(skip_all)]
pub async fn plan(w: &mut World, c: &Clients<'_>) -> PlanSet {
    plan_scoped(w, c, &Scope::All).await
}

/// Observes and plans what `scope` covers, read-only: the world keeps only the tables, consumers
/// and groups in scope (the [`PlanSet`] follows its order), and the access lists are those a run
/// of [`apply`] with this scope would write. The controller's plan-only objects.
pub async fn plan_scoped(w: &mut World, c: &Clients<'_>, scope: &Scope) -> PlanSet {
    w.tables.retain(|t| scope.covers("IngestedTable", &t.name));
    w.consumers.retain(|t| scope.covers("ConsumerProject", &t.resource));
    w.groups.retain(|g| scope.covers("GroupMembership", &g.resource));
    let now = chrono::Utc::now().timestamp_millis();
    let mut tables_planned = Vec::new();
    for t in &w.tables {
        tables_planned.push(tables::plan(c, t, now).await);
    }
    let retired: Vec<_> = w
        .tables
        .iter()
        .zip(&tables_planned)
        .filter_map(|(t, p)| {
            p.as_ref()
                .ok()
                .map(|s| crate::views::layout::retired_entries(&t.spec, &s.views.delete))
        })
        .flatten()
        .map(|(k, e)| (Some(k), e))
        .collect();
    w.retire(retired);
    let mut consumers_planned = Vec::new();
    for t in &w.consumers {
        consumers_planned.push(consumers::plan(c, t).await);
    }
    let anywhere: Vec<_> = consumers_planned
        .iter()
        .flatten()
        .flat_map(|p| p.retire.iter().cloned())
        .collect();
    let anywhere_keys = match scope {
        Scope::All => None,
        Scope::Object { .. } => Some(lists::consumer_source_datasets(w, scope)),
    };
    let lists = lists::in_scope(w, scope, &anywhere, anywhere_keys.as_ref());
    let lists = lists::plan(c, &w.policy, &lists, false).await;
    let all_groups: Vec<&DesiredGroup> = w.groups.iter().collect();
    let groups = if all_groups.is_empty() {
        Vec::new()
    } else {
        groups::plan(c, w, &all_groups, false).await
    };
    PlanSet {
        tables: tables_planned,
        consumers: consumers_planned,
        lists,
        groups,
    }
}
