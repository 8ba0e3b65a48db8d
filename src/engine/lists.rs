//! The access-list phase: which compiled lists a run covers, observing and planning them, and
//! writing the ones that change — all or nothing: a refused list stops every write of the run.

use super::{Clients, Error, Reporter, Scope, Summary, World};
use crate::access::apply::{Applier, Outcome, observe};
use crate::access::compile::Reason;
use crate::access::{AclEntry, DatasetPlan, DesiredAcl, plan_dataset};
use crate::policy::Policy;

/// The lists a run covers. Everything for [`Scope::All`]; for one object, the lists it owns or
/// has required entries on, plus every list holding something to retire. `retire_anywhere`:
/// authorizations of deleted views whose dataset is not known, removed from every list (from
/// lists the run does not otherwise cover, only those entries — nothing is added there).
pub fn in_scope(w: &World, scope: &Scope, retire_anywhere: &[AclEntry]) -> Vec<DesiredAcl> {
    let mut out: Vec<DesiredAcl> = Vec::new();
    for d in &w.desired {
        let covered = match scope {
            Scope::All => true,
            Scope::Object { kind, name } => {
                let by = format!("{kind} {name}");
                (d.owner.as_deref() == Some(name) && d.owner_kind == *kind)
                    || d.entries
                        .values()
                        .any(|r| matches!(r, Reason::Required { by: b } if *b == by))
            }
        };
        if covered {
            let mut d = d.clone();
            d.retire.extend(retire_anywhere.iter().cloned());
            out.push(d);
        } else if !d.retire.is_empty() || !retire_anywhere.is_empty() {
            let mut only = DesiredAcl::new(d.key.clone());
            only.retire = d.retire.iter().chain(retire_anywhere).cloned().collect();
            out.push(only);
        }
    }
    out
}

/// Observes and plans `lists`. A list that cannot be read is planned as refused (with why), so
/// one unreadable dataset does not hide the others.
pub async fn plan(c: &Clients<'_>, policy: &Policy, lists: &[DesiredAcl], approved: bool) -> Vec<DatasetPlan> {
    let mut plans = Vec::new();
    for desired in lists {
        let plan = match observe(c.bq, desired, &c.backoff).await {
            Ok(observed) => plan_dataset(desired, observed.as_ref(), policy, approved),
            Err(e) => {
                // Unreadable is not missing: never "created by this apply", nothing to add.
                let mut p = plan_dataset(desired, None, policy, approved);
                p.will_be_created = false;
                p.add.clear();
                p.after.clear();
                p.refusals = vec![format!("cannot read dataset {}: {e}", desired.key)];
                p
            }
        };
        plans.push(plan);
    }
    plans
}

/// Plans `lists` and, when none is refused, writes those that change (each read again and written
/// with its etag, paced per dataset).
pub async fn apply(
    c: &Clients<'_>,
    policy: &Policy,
    lists: &[DesiredAcl],
    approved: bool,
    r: &mut dyn Reporter,
) -> Summary {
    let plans = plan(c, policy, lists, approved).await;
    r.lists_planned(&plans);
    let mut summary = Summary::default();
    let refusals: Vec<String> = plans
        .iter()
        .flat_map(|p| p.refusals.iter().map(move |r| format!("{}: {r}", p.dataset)))
        .collect();
    if !refusals.is_empty() {
        summary.fail(Error::Failed(refusals.join("; ")));
        return summary;
    }
    let applier = Applier {
        bq: c.bq,
        policy,
        approved,
        backoff: c.backoff.clone(),
        pacer: c.pacer,
    };
    for (desired, plan) in lists.iter().zip(&plans) {
        if !plan.has_changes() {
            continue;
        }
        let outcome = applier.apply(desired).await;
        r.list_applied(desired, &outcome);
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Applied { .. } => summary.changes = true,
            Outcome::Refused(p) => summary.fail(Error::Failed(format!("{}: {}", desired.key, p.refusals.join("; ")))),
            Outcome::Failed(e) => summary.fail(e.into()),
        }
    }
    r.lists_done();
    summary
}
