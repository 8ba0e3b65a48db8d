//! observe → plan → apply of one ConsumerProject's dataset and views, and its IAM binding. (Its
//! dataset's access list and the views' authorizations go through the ACL compiler like every
//! other list.)

use super::iam::{self, IamPlan};
use super::layout::ConsumerTarget;
use super::rowfilter;
use crate::access::AclEntry;
use crate::cloud::CloudError;
use crate::cloud::bigquery::{BigQuery, DatasetInfo};
use crate::cloud::bqtypes::TableInfo;
use crate::cloud::iam::ProjectIam;
use crate::cloud::retry::{Backoff, with_retry};
use crate::views::{self, LayoutPlan, ViewChange};
use std::collections::BTreeMap;

/// The plan of one ConsumerProject.
#[derive(Clone, Debug)]
pub struct ConsumerPlan {
    /// Dataset and views (refusals included).
    pub views: LayoutPlan,
    /// The jobUser binding (`None` when the IAM policy could not be planned; see `refusals`).
    pub iam: Option<IamPlan>,
    /// Authorizations of deleted views, to remove from source datasets.
    pub retire: Vec<AclEntry>,
}

impl ConsumerPlan {
    /// Whether applying would write (access lists aside).
    pub fn has_changes(&self) -> bool {
        self.views.has_changes() || self.iam.as_ref().is_some_and(IamPlan::has_changes)
    }
}

/// Observes and plans. `dry_run`: confirm the SQL of every view to be written with a BigQuery
/// dry run (skipped for views whose source does not exist yet — an IngestedTable layer the same
/// apply creates; apply dry-runs them once it does).
pub async fn plan(
    bq: &dyn BigQuery,
    iam_client: Option<&dyn ProjectIam>,
    t: &ConsumerTarget,
    backoff: &Backoff,
) -> Result<ConsumerPlan, CloudError> {
    let layout = t.layout();
    let observed = views::apply::observe(bq, &layout, true).await?;
    let mut p = views::plan(&layout, &observed);
    let loc = &t.spec.location;

    // Sources (each read once, however many views share it): present, in the consumer's
    // location, with the named columns.
    let mut sources: BTreeMap<String, (Option<DatasetInfo>, Option<TableInfo>)> = BTreeMap::new();
    for v in &t.views {
        if sources.contains_key(&v.source.to_string()) {
            continue;
        }
        let ds = with_retry(backoff, "datasets.get", || {
            bq.get_dataset(&v.source.project, &v.source.dataset)
        })
        .await?;
        let table = match ds {
            Some(_) => with_retry(backoff, "tables.get", || bq.get_table(&v.source)).await?,
            None => None,
        };
        sources.insert(v.source.to_string(), (ds, table));
    }
    for (i, v) in t.views.iter().enumerate() {
        let (ds, table) = &sources[&v.source.to_string()];
        if let Some(ds) = ds
            && !ds.location.is_empty()
            && !ds.location.eq_ignore_ascii_case(loc)
        {
            p.refusals.push(format!(
                "view {}: source dataset {}.{} is in {}, the consumer dataset in {loc}; a view cannot read across \
                 locations: set spec.location to {}",
                v.view.table, v.source.project, v.source.dataset, ds.location, ds.location
            ));
        }
        let live_columns: Option<Vec<String>> = table
            .as_ref()
            .filter(|t| !t.schema.fields.is_empty())
            .map(|t| t.schema.fields.iter().map(|f| f.name.clone()).collect());
        match (table, &v.source_columns) {
            (None, None) => p.refusals.push(format!(
                "view {}: source table {} does not exist (or bqsteward cannot see it); fix spec.views[{i}].source.table",
                v.view.table, v.source
            )),
            (Some(_), None) => {
                // An explicit table: its columns are known only now.
                if let Some(cols) = &live_columns {
                    for c in &v.columns {
                        if !cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                            p.refusals.push(format!(
                                "view {}: column {c:?} is not in {}; available: {}",
                                v.view.table,
                                v.source,
                                cols.join(", ")
                            ));
                        }
                    }
                    if let Some(f) = &v.row_filter
                        && let Err(e) = rowfilter::check(f, Some(cols))
                    {
                        p.refusals.push(format!("view {}: spec.views[{i}].rowFilter: {e}", v.view.table));
                    }
                }
            }
            _ => {}
        }
    }
    // BigQuery's word on every SQL to be written.
    for vp in &p.views {
        let needs = matches!(vp.change, ViewChange::Create | ViewChange::Update { .. });
        let source_exists = sources
            .get(&vp.view.layer.source.to_string())
            .is_some_and(|(_, table)| table.is_some());
        if !needs || !source_exists {
            continue;
        }
        let sql = &vp.view.def.sql;
        if let Err(e) = bq.dry_run(&t.spec.project, loc, sql).await {
            p.refusals.push(format!(
                "view {}: BigQuery rejects its query in a dry run: {e}",
                vp.view.def.table
            ));
        }
    }
    let iam = match iam_client {
        Some(c) => match iam::observe_and_plan(c, &t.resource, &t.spec.project, &t.iam_members(), backoff).await {
            Ok(ip) => Some(ip),
            Err(e) => {
                p.refusals
                    .push(format!("cannot read the IAM policy of project {}: {e}", t.spec.project));
                None
            }
        },
        None => None,
    };
    let retire = p.delete.iter().map(AclEntry::authorized_view).collect();
    Ok(ConsumerPlan { views: p, iam, retire })
}

/// Applies the dataset and views of a plan made right before (refused plans write nothing).
pub async fn apply_views(bq: &dyn BigQuery, p: &ConsumerPlan) -> Result<Vec<String>, CloudError> {
    views::apply::apply(bq, &p.views).await
}

/// Applies the IAM binding (read, plan, write with etag; on 409 read again).
pub async fn apply_iam(
    iam_client: &dyn ProjectIam,
    t: &ConsumerTarget,
    backoff: &Backoff,
) -> Result<IamPlan, CloudError> {
    iam::apply(iam_client, &t.resource, &t.spec.project, &t.iam_members(), backoff).await
}

/// Text of a plan (dataset/views via the view report, then IAM).
pub fn plan_text(t: &ConsumerTarget, p: &ConsumerPlan) -> String {
    plan_text_with(t, p, true)
}

/// [`plan_text`], with the SQL of each view to write only when `sql`.
pub fn plan_text_with(t: &ConsumerTarget, p: &ConsumerPlan, sql: bool) -> String {
    let mut out = format!(
        "ConsumerProject {} \u{2192} {}.{} ({})\n",
        t.resource, t.spec.project, t.spec.dataset, t.spec.location
    );
    out.push_str(&views::report::plan_text_with(&p.views, sql));
    match &p.iam {
        Some(ip) if ip.has_changes() => {
            for m in &ip.add {
                out.push_str(&format!(
                    "  iam:    + {m} {} on project {}\n",
                    iam::JOB_USER,
                    ip.project
                ));
            }
            for m in &ip.remove {
                out.push_str(&format!(
                    "  iam:    - {m} {} on project {}\n",
                    iam::JOB_USER,
                    ip.project
                ));
            }
        }
        Some(ip) => out.push_str(&format!(
            "  iam:    = {} bindings as declared on project {}\n",
            iam::JOB_USER,
            ip.project
        )),
        None => out.push_str("  iam:    not planned (no Resource Manager client)\n"),
    }
    out
}

/// What deleting a ConsumerProject did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Views deleted.
    pub views_deleted: Vec<String>,
    /// Source datasets whose authorization entries were removed.
    pub authorizations_removed: Vec<String>,
    /// Members removed from the jobUser binding.
    pub iam_members_removed: Vec<String>,
}

/// Deleting a ConsumerProject with `deletionPolicy: Delete`: its views (only those bqsteward
/// made), their authorizations on the source datasets, and its jobUser binding go. The consumer
/// dataset itself and its access list stay (they hold no data; delete the dataset by hand if
/// wanted). With `Retain`, nothing is touched. Idempotent: running it again finds nothing to do.
pub async fn cleanup(
    bq: &dyn BigQuery,
    iam_client: Option<&dyn ProjectIam>,
    t: &ConsumerTarget,
    policy: &crate::policy::Policy,
    backoff: &Backoff,
) -> Result<Cleanup, CloudError> {
    use crate::access::apply::{Applier, Outcome};
    use crate::access::{DatasetKey, DesiredAcl};
    let mut done = Cleanup::default();
    if t.spec.deletion_policy != crate::crd::DeletionPolicy::Delete {
        return Ok(done);
    }
    let layout = t.layout();
    let observed = views::apply::observe(bq, &layout, true).await?;
    let mut ours: Vec<crate::cloud::bqtypes::TableRef> = observed.strays.clone();
    for (want, live) in layout.views.iter().zip(&observed.views) {
        if live
            .as_ref()
            .is_some_and(|o| o.info.is_view() && o.info.belongs_to(&layout.resource))
        {
            ours.push(want.def.table.clone());
        }
    }
    for v in &ours {
        with_retry(backoff, "tables.delete", || bq.delete_table(v)).await?;
        crate::audit::record(crate::audit::Event::new(
            crate::audit::Action::ViewDeleted,
            &format!("ConsumerProject {}", t.resource),
            &v.to_string(),
            "",
            "",
        ));
        done.views_deleted.push(v.to_string());
    }
    // Authorizations: every declared view's entry on its source dataset.
    let mut by_dataset: BTreeMap<DatasetKey, DesiredAcl> = BTreeMap::new();
    for (key, entry) in t.authorizations() {
        by_dataset
            .entry(key.clone())
            .or_insert_with(|| DesiredAcl {
                allow_large_removal: true,
                ..DesiredAcl::new(key)
            })
            .retire
            .insert(entry);
    }
    let pacer = crate::cloud::retry::Pacer::default();
    let applier = Applier {
        bq,
        policy,
        approved: true,
        backoff: backoff.clone(),
        pacer: &pacer,
    };
    for (key, desired) in &by_dataset {
        match applier.apply(desired).await {
            Outcome::Applied { .. } => done.authorizations_removed.push(key.to_string()),
            Outcome::Unchanged => {}
            Outcome::Refused(p) => {
                // A missing source dataset has nothing to remove.
                if !p.refusals.iter().all(|r| r.contains("does not exist")) {
                    tracing::warn!(dataset = %key, refusals = ?p.refusals, "authorizations not removed");
                }
            }
            Outcome::Failed(e) => return Err(e),
        }
    }
    if let Some(c) = iam_client {
        let p = iam::apply(c, &t.resource, &t.spec.project, &Default::default(), backoff).await?;
        done.iam_members_removed = p.remove;
    }
    Ok(done)
}
