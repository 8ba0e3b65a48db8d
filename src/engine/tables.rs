//! The IngestedTable adapter: observe and plan the loads and the view layers, apply them, and say
//! which authorizations of deleted views to retire.

use super::Clients;
use crate::access::{AclEntry, DatasetKey};
use crate::cloud::CloudError;
use crate::dbsource::{PullReport, SourcePlan};
use crate::deltasource::{CopyReport, DeltaObserved, DeltaPlan};
use crate::ingest::exec::{Executor, Observed, Report, TablePlan, Target, observe, plan_table};
use crate::ingest::jobs::RunError;
use crate::views::{self, LayoutPlan};

/// One IngestedTable, observed and planned: loads and view layers.
pub struct TableState {
    /// What was read.
    pub observed: Observed,
    /// Schema change and loads.
    pub plan: TablePlan,
    /// The view layers as planned against the table as read.
    pub views: LayoutPlan,
    /// A database source: its pulls as planned, or why the replica or the landing could not be
    /// read (then the table is not touched at all this run — not even complete pulls load — so a
    /// wrong Secret writes nothing).
    pub source: Option<Result<SourcePlan, String>>,
    /// A Delta source: what was read of it and the versions to land, or why it could not be read
    /// (then nothing is copied or loaded this run).
    pub delta: Option<Result<(DeltaObserved, DeltaPlan), String>>,
}

impl TableState {
    /// Pulls a database source would run.
    pub fn pulls(&self) -> usize {
        match &self.source {
            Some(Ok(p)) => p.pulls.len(),
            _ => 0,
        }
    }

    /// Versions (and reloads) a Delta source would land.
    pub fn delta_versions(&self) -> usize {
        match &self.delta {
            Some(Ok((_, p))) => p.versions.len(),
            _ => 0,
        }
    }

    /// Whether a database or Delta source cannot be read or its pulls stop (schema drift, a Delta
    /// feature bqsteward cannot honour).
    pub fn source_refused(&self) -> bool {
        match (&self.source, &self.delta) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => true,
            (Some(Ok(p)), _) => !p.problems.is_empty(),
            (_, Some(Ok((_, p)))) => !p.problems.is_empty(),
            (None, None) => false,
        }
    }
}

/// What applying one IngestedTable did.
pub struct TableApplied {
    /// A database source's pulls (`None` when it has none or none were due), or why they failed.
    pub pulled: Option<Result<PullReport, String>>,
    /// A Delta source's copies (`None` when it had nothing to land), or why they failed.
    pub copied: Option<Result<CopyReport, String>>,
    /// The load report (`None` when there was nothing to load), or why loading failed.
    pub loads: Option<Result<Report, RunError>>,
    /// The view layers as planned again after the loads (new columns reach the views in the same
    /// apply), or why they could not be read.
    pub views: Result<LayoutPlan, CloudError>,
    /// What writing the views did (empty when refused or not reached), or why it failed.
    pub views_done: Result<Vec<String>, CloudError>,
    /// Authorizations of the views it will delete, with the dataset each is on (retired by the
    /// lists phase first).
    pub retired: Vec<(DatasetKey, AclEntry)>,
    /// Views no longer declared: deleted once the lists phase has retired their authorizations
    /// (so a failed list write leaves them, and the next run retries both).
    pub to_delete: Vec<crate::cloud::bqtypes::TableRef>,
}

impl TableApplied {
    /// Whether anything failed or was refused (the table's own schema refusal included).
    pub fn failed(&self, plan: &TablePlan) -> bool {
        let loads = match &self.loads {
            Some(Ok(r)) => {
                r.stopped.is_some() && matches!(plan.schema, crate::ingest::table::SchemaChange::Incompatible(_))
            }
            Some(Err(_)) => true,
            None => false,
        };
        loads
            || !plan.source_problems.is_empty()
            || matches!(self.pulled, Some(Err(_)))
            || matches!(self.copied, Some(Err(_)))
            || self.views.as_ref().map_or(true, LayoutPlan::is_refused)
            || self.views_done.is_err()
    }

    /// The failure, when [`TableApplied::failed`]: the load error, the schema refusal, the view
    /// refusals or the views' cloud error, first of these.
    pub fn into_error(self, plan: &TablePlan) -> super::Error {
        if let Some(Err(e)) = self.loads {
            return e.into();
        }
        if let Some(Err(e)) = self.pulled {
            return super::Error::Failed(e);
        }
        if let Some(Err(e)) = self.copied {
            return super::Error::Failed(e);
        }
        if !plan.source_problems.is_empty() {
            // Like an incompatible schema: the table's status says why (Degraded).
            return super::Error::Incompatible(format!("source: {}", plan.source_problems.join("; ")));
        }
        match (self.views, self.views_done) {
            (Err(e), _) | (_, Err(e)) => e.into(),
            (Ok(p), _) if p.is_refused() => super::Error::Failed(format!("views: {}", p.refusals.join("; "))),
            _ => match &plan.schema {
                crate::ingest::table::SchemaChange::Incompatible(why) => super::Error::Incompatible(why.join("; ")),
                _ => super::Error::Failed("failed".into()),
            },
        }
    }
}

/// Observes and plans one IngestedTable.
#[tracing::instrument(skip_all, fields(table = %t.name))]
pub async fn plan(c: &Clients<'_>, t: &Target, now_ms: i64) -> Result<TableState, crate::engine::PlanFailure> {
    let observed = observe(c.bq, c.gcs, t).await.map_err(|cause| super::PlanFailure {
        message: format!("IngestedTable {}: cannot read {} or its source", t.name, t.table),
        cause,
    })?;
    let mut plan = plan_table(t, &observed, now_ms);
    let source = match &t.spec.source.database {
        None => None,
        Some(_) => Some(
            crate::dbsource::observe(c.sources, c.gcs, &t.name, &t.spec)
                .await
                .map(|o| {
                    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
                    crate::dbsource::plan(&t.spec, &o, now, c.sources.on_schedule)
                }),
        ),
    };
    if let Some(Ok(p)) = &source {
        plan.source_problems = p.problems.clone();
    }
    let delta = match &t.spec.source.delta {
        None => None,
        Some(_) => Some(
            crate::deltasource::observe(c.sources.secrets.as_ref(), c.gcs, &t.name, &t.spec, t.reload.as_ref())
                .await
                .map(|o| {
                    let p = crate::deltasource::plan(&t.spec, &o);
                    (o, p)
                }),
        ),
    };
    if let Some(Ok((_, p))) = &delta {
        plan.source_problems = p.problems.clone();
        let loaded = loaded_version(&observed);
        crate::ingest::delta_versions(&t.table.to_string(), p.latest, loaded);
        plan.delta = Some(delta_status(p.latest, loaded, p.bytes_landed));
    }
    let views = views::apply::plan_for_table(c.bq, t, observed.table.as_ref())
        .await
        .map_err(|cause| super::PlanFailure {
            message: format!("IngestedTable {}: cannot read its view layers", t.name),
            cause,
        })?;
    Ok(TableState {
        observed,
        plan,
        views,
        source,
        delta,
    })
}

/// A Delta source's status.
pub fn delta_status(latest: u64, loaded: Option<u64>, bytes: u64) -> crate::crd::DeltaStatus {
    crate::crd::DeltaStatus {
        latest_version: latest as i64,
        loaded_version: loaded.map(|v| v as i64),
        version_lag: latest as i64 - loaded.map_or(-1, |v| v as i64),
        bytes_copied: bytes as i64,
    }
}

/// The newest Delta version the table holds, by its ledger (`None`: none yet).
pub fn loaded_version(o: &Observed) -> Option<u64> {
    o.ledger
        .batches_in(crate::ingest::model::FileState::Loaded)
        .into_iter()
        .map(|i| &o.ledger.batches[i as usize])
        .filter(|b| b.kind == crate::ingest::model::BatchKind::Delta)
        .filter_map(|b| b.reload_id.parse::<u64>().ok())
        .max()
}

/// Applies one planned IngestedTable: the loads, then its view layers planned again against the
/// table as the loads left it. A refused view plan writes nothing.
#[tracing::instrument(skip_all, fields(table = %t.name))]
pub async fn apply(c: &Clients<'_>, t: &Target, state: &TableState) -> TableApplied {
    // A source that cannot be read (a wrong password, an unreachable replica) writes nothing at
    // all. (Drift is not this: pulls stop, complete pulls still load.)
    if let Some(Err(e)) = &state.delta {
        return TableApplied {
            pulled: None,
            copied: Some(Err(e.clone())),
            loads: None,
            views: Ok(state.views.clone()),
            views_done: Ok(Vec::new()),
            retired: Vec::new(),
            to_delete: Vec::new(),
        };
    }
    if let Some(Err(e)) = &state.source {
        return TableApplied {
            copied: None,
            pulled: Some(Err(e.clone())),
            loads: None,
            views: Ok(state.views.clone()),
            views_done: Ok(Vec::new()),
            retired: Vec::new(),
            to_delete: Vec::new(),
        };
    }
    // A database source pulls first (into its landing prefix), then loads what is complete —
    // observed and planned again, so this apply loads the pulls it just made.
    let pulled = match &state.source {
        Some(Ok(p)) if p.problems.is_empty() && !p.pulls.is_empty() => {
            Some(crate::dbsource::run(c.sources, c.gcs, &t.name, &t.spec, p).await)
        }
        _ => None,
    };
    // A Delta source lands its versions first (copies, then each version's marker), then loads
    // what is landed — observed and planned again.
    let copied = match &state.delta {
        Some(Ok((o, p))) if p.problems.is_empty() && !p.versions.is_empty() => {
            let table = t.table.to_string();
            let read = |n: u64| crate::ingest::delta_copied(&table, n);
            Some(crate::deltasource::run(c.gcs, &t.name, &t.spec, o, p, &read).await)
        }
        _ => None,
    };
    let replanned;
    let mut unreadable = None;
    let (plan, observed) = match (&pulled, &copied) {
        (None, None) => (&state.plan, &state.observed),
        _ => match observe(c.bq, c.gcs, t).await {
            Ok(o) => {
                let mut p = plan_table(t, &o, chrono::Utc::now().timestamp_millis());
                p.source_problems = state.plan.source_problems.clone();
                p.delta = state.plan.delta.clone();
                replanned = (p, o);
                (&replanned.0, &replanned.1)
            }
            Err(e) => {
                unreadable = Some(e);
                (&state.plan, &state.observed)
            }
        },
    };
    let mut loads = if let Some(e) = unreadable {
        Some(Err(e.into()))
    } else if plan.is_empty() {
        None
    } else {
        Some(
            Executor::new(c.bq, t, plan.loads.budget_left)
                .with_storage(c.gcs)
                .apply(plan, observed)
                .await,
        )
    };
    // A source listed from a cursor: the cursor moves once the cycle went through.
    if let Some(cursor) = &plan.next_cursor
        && !matches!(loads, Some(Err(_)))
        && let Err(e) = crate::ingest::exec::record_cursor(c.bq, t, cursor).await
    {
        loads = Some(Err(e));
    }
    let views = match c.bq.get_table(&t.table).await {
        Ok(table) => views::apply::plan_for_table(c.bq, t, table.as_ref()).await,
        Err(e) => Err(e),
    };
    let (views_done, retired, to_delete) = match &views {
        Ok(p) if !p.is_refused() => {
            let keep = LayoutPlan {
                delete: Vec::new(),
                ..p.clone()
            };
            match views::apply::apply(c.bq, &keep).await {
                Ok(done) => (
                    Ok(done),
                    views::layout::retired_entries(&t.spec, &p.delete),
                    p.delete.clone(),
                ),
                Err(e) => (Err(e), Vec::new(), Vec::new()),
            }
        }
        _ => (Ok(Vec::new()), Vec::new(), Vec::new()),
    };
    TableApplied {
        pulled,
        copied,
        loads,
        views,
        views_done,
        retired,
        to_delete,
    }
}
