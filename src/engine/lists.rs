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
pub fn in_scope(
    w: &World,
    scope: &Scope,
    retire_anywhere: &[AclEntry],
    anywhere_keys: Option<&std::collections::BTreeSet<crate::access::DatasetKey>>,
) -> Vec<DesiredAcl> {
    let anywhere_here = |key: &crate::access::DatasetKey| anywhere_keys.is_none_or(|k| k.contains(key));
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
        let anywhere: &[AclEntry] = if anywhere_here(&d.key) { retire_anywhere } else { &[] };
        if covered {
            let mut d = d.clone();
            d.retire.extend(anywhere.iter().cloned());
            out.push(d);
        } else if !d.retire.is_empty() || !anywhere.is_empty() {
            // Only retiring here — but never what another resource requires or bqsteward's identity.
            let mut only = DesiredAcl::new(d.key.clone());
            only.entries = d
                .entries
                .iter()
                .filter(|(_, r)| matches!(r, Reason::Required { .. } | Reason::Identity))
                .map(|(e, r)| (e.clone(), r.clone()))
                .collect();
            only.retire = d
                .retire
                .iter()
                .chain(anywhere)
                .filter(|e| !only.entries.contains_key(e))
                .cloned()
                .collect();
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
        for p in plans.iter().filter(|p| p.is_refused()) {
            crate::access::apply::audit_refused(p);
        }
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

/// The datasets a ConsumerProject in `scope` reads or could have read: the datasets of every
/// IngestedTable of its namespace (with their view layers) and of its current views' sources.
pub fn consumer_source_datasets(w: &World, scope: &Scope) -> std::collections::BTreeSet<crate::access::DatasetKey> {
    let mut out = std::collections::BTreeSet::new();
    let Scope::Object {
        kind: "ConsumerProject",
        name,
    } = scope
    else {
        return out;
    };
    let ns = name.split_once('/').map_or("", |(ns, _)| ns);
    for l in w.resources.iter() {
        if matches!(l.resource, crate::manifest::Resource::IngestedTable(_)) && l.resource.namespace() == ns {
            out.extend(crate::access::compile::creates(&l.resource));
        }
    }
    for t in w.consumers.iter().filter(|t| &t.resource == name) {
        out.extend(t.views.iter().map(|v| crate::access::DatasetKey::from(&v.source)));
    }
    out
}
