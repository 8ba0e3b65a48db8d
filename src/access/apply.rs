//! Observing and writing access lists. A write is always the complete list computed from one read,
//! guarded by that read's etag; on 412 (someone else wrote in between) bqsteward reads again,
//! plans again and retries, a bounded number of times. It never sends a list built from a stale read.

use super::compile::{DesiredAcl, Reason};
use super::entry::AclEntry;
use super::entry::Principal;
use super::plan::{DatasetPlan, Observed, plan_dataset};
use crate::audit::{Action, Event};
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::TableRef;
use crate::cloud::retry::{Backoff, Pacer, with_retry};
use crate::cloud::{CloudError, ErrorCategory};
use crate::policy::Policy;

/// How many times a write is retried after a 412 (a concurrent change).
pub const MAX_CONFLICT_RETRIES: u32 = 5;

/// Reads a dataset's access list (retrying transient errors); `None` if the dataset is missing.
pub async fn observe(
    bq: &dyn BigQuery,
    desired: &DesiredAcl,
    backoff: &Backoff,
) -> Result<Option<Observed>, CloudError> {
    let key = &desired.key;
    let info = with_retry(backoff, "datasets.get", || bq.get_dataset(&key.project, &key.dataset)).await?;
    Ok(info.as_ref().map(Observed::from_info))
}

/// The result of applying one dataset.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do.
    Unchanged,
    /// Written.
    Applied {
        /// What was added and removed in the write that succeeded.
        plan: DatasetPlan,
        /// Writes attempted (more than one after 412s).
        writes: u32,
    },
    /// Refused by a guardrail; nothing written.
    Refused(DatasetPlan),
    /// A cloud error that retries did not overcome.
    Failed(CloudError),
}

/// Everything one apply needs besides the desired list.
pub struct Applier<'a> {
    /// BigQuery.
    pub bq: &'a dyn BigQuery,
    /// Guardrails.
    pub policy: &'a Policy,
    /// `--allow-large-removal`.
    pub approved: bool,
    /// Backoff for transient errors.
    pub backoff: Backoff,
    /// Write pacing per dataset.
    pub pacer: &'a Pacer,
}

impl Applier<'_> {
    /// Makes the dataset's live list equal the desired one: read, plan, write with `If-Match`;
    /// on 412 read again. Every change written is logged as one audit line.
    pub async fn apply(&self, desired: &DesiredAcl) -> Outcome {
        let mut writes = 0;
        loop {
            let observed = match observe(self.bq, desired, &self.backoff).await {
                Ok(o) => o,
                Err(e) => return Outcome::Failed(e),
            };
            let plan = plan_dataset(desired, observed.as_ref(), self.policy, self.approved);
            if plan.is_refused() {
                audit_refused(&plan);
                return Outcome::Refused(plan);
            }
            if !plan.has_changes() {
                return if writes == 0 {
                    Outcome::Unchanged
                } else {
                    Outcome::Applied { plan, writes }
                };
            }
            let key = desired.key.to_string();
            let etag = plan.etag.clone().unwrap_or_default();
            let body: Vec<_> = plan.after.iter().map(AclEntry::to_api).collect();
            self.pacer.acquire(&key).await;
            writes += 1;
            let result = with_retry(&self.backoff, "datasets.patch", || {
                self.bq
                    .patch_dataset_access(&desired.key.project, &desired.key.dataset, body.clone(), &etag)
            })
            .await;
            match result {
                Ok(info) => {
                    audit(&plan, &info);
                    return Outcome::Applied { plan, writes };
                }
                Err(e) if e.status() == Some(412) && writes <= MAX_CONFLICT_RETRIES => {
                    tracing::info!(dataset = %key, attempt = writes, "dataset changed since it was read (412); reading again");
                }
                Err(e) => return Outcome::Failed(e),
            }
        }
    }
}

/// Drops the authorizations other resources require for views that do not exist (a view whose
/// creation was refused or failed): BigQuery refuses an access entry naming a missing view, which
/// would block the whole list. Returns one note per entry dropped. Used before writing lists, by
/// `apply` and by the controller.
pub async fn drop_missing_views(bq: &dyn BigQuery, desired: &mut [DesiredAcl]) -> Vec<String> {
    let mut exists: std::collections::BTreeMap<String, bool> = std::collections::BTreeMap::new();
    let mut notes = Vec::new();
    for d in desired {
        let mut missing = Vec::new();
        for (e, reason) in &d.entries {
            let (Principal::View(v), Reason::Required { by }) = (&e.principal, reason) else {
                continue;
            };
            let known = match exists.get(v) {
                Some(k) => *k,
                None => {
                    let parts: Vec<&str> = v.rsplitn(3, '.').collect();
                    let k = match parts.as_slice() {
                        [t, ds, p] => match bq.get_table(&TableRef::new(p, ds, t)).await {
                            Ok(Some(info)) => info.is_view(),
                            Ok(None) => false,
                            Err(_) => true, // unknown: keep it, the write will tell
                        },
                        _ => true,
                    };
                    exists.insert(v.clone(), k);
                    k
                }
            };
            if !known {
                notes.push(format!(
                    "{}: authorization of view {v} ({by}) skipped: the view does not exist",
                    d.key
                ));
                missing.push(e.clone());
            }
        }
        for e in missing {
            d.entries.remove(&e);
        }
    }
    notes
}

/// The audit events of a list written: one per entry added or removed, keyed by the etag the
/// write was made against (so the same change recorded again is the same event).
fn audit(plan: &DatasetPlan, after: &crate::cloud::bigquery::DatasetInfo) {
    let resource = resource_label(plan);
    let target = format!("{}.{}", plan.dataset.project, plan.dataset.dataset);
    let before = plan.etag.clone().unwrap_or_default();
    for (action, entries) in [(Action::AccessAdded, &plan.add), (Action::AccessRemoved, &plan.remove)] {
        for e in entries {
            let mut ev = Event::new(action, &resource, &target, &e.principal.to_string(), &before)
                .home(&plan.dataset.project, &after.location);
            ev.role = e.role.clone().unwrap_or_default();
            ev.etag_before = before.clone();
            ev.etag_after = after.etag.clone();
            crate::audit::record(ev);
        }
    }
}

/// The audit event of a refused list (nothing written): the refusals, keyed by the etag read.
pub fn audit_refused(plan: &DatasetPlan) {
    let target = format!("{}.{}", plan.dataset.project, plan.dataset.dataset);
    let before = plan.etag.clone().unwrap_or_default();
    let mut ev = Event::new(
        Action::AccessRefused,
        &resource_label(plan),
        &target,
        "",
        &format!("{before}/{}", plan.refusals.join(";")),
    );
    ev.outcome = "refused".into();
    ev.etag_before = before;
    ev.message = plan.refusals.join("; ");
    crate::audit::record(ev);
}

fn resource_label(plan: &DatasetPlan) -> String {
    match &plan.resource {
        Some(r) => format!(
            "{} {r}",
            if plan.resource_kind.is_empty() {
                "DatasetAccess"
            } else {
                plan.resource_kind
            }
        ),
        None => format!("(authorizations) {}.{}", plan.dataset.project, plan.dataset.dataset),
    }
}

/// A short label for an outcome's error category (reports, metrics).
pub fn category_label(e: &CloudError) -> &'static str {
    match e.category() {
        ErrorCategory::Retryable => "retryable",
        ErrorCategory::Wait => "quota",
        ErrorCategory::Terminal => "terminal",
    }
}
