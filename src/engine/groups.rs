//! The GroupMembership adapter: observe and plan each group, write the changes of those not
//! refused (each change attempted; one failing does not stop the others).

use super::{Clients, Reporter, Summary, World};
use crate::groups::{DesiredGroup, GroupPlan, LiveMember, apply::observe, plan_group};

/// Observes and plans each group; a group that cannot be read is planned as refused (with why).
pub async fn plan(
    c: &Clients<'_>,
    w: &World,
    groups: &[&DesiredGroup],
    approved: bool,
) -> Vec<(GroupPlan, Vec<LiveMember>)> {
    let mut out = Vec::new();
    for d in groups {
        let Some(client) = c.groups else {
            let mut p = plan_group(d, None, &[], None, &w.policy, approved);
            p.refusals = vec!["no Cloud Identity client configured".into()];
            out.push((p, Vec::new()));
            continue;
        };
        let (plan, live) = match observe(client, d, &c.backoff).await {
            Ok(o) => (
                plan_group(
                    d,
                    o.name.as_deref(),
                    &o.members,
                    w.identity_email.as_deref(),
                    &w.policy,
                    approved,
                ),
                o.members,
            ),
            Err(e) => {
                let mut p = plan_group(d, None, &[], None, &w.policy, approved);
                p.refusals = vec![format!("cannot read group {}: {e}", d.group)];
                (p, Vec::new())
            }
        };
        out.push((plan, live));
    }
    out
}

/// Plans and applies each group.
pub async fn apply(
    c: &Clients<'_>,
    w: &World,
    groups: &[&DesiredGroup],
    approved: bool,
    r: &mut dyn Reporter,
) -> Summary {
    let mut summary = Summary::default();
    for ((plan, live), d) in plan(c, w, groups, approved).await.into_iter().zip(groups) {
        r.group_planned(d, &plan);
        if plan.is_refused() {
            let why = plan.refusals.join("; ");
            let mut ev = crate::audit::Event::new(
                crate::audit::Action::MembersRefused,
                &format!("GroupMembership {}", plan.resource),
                &plan.group,
                "",
                &why,
            );
            ev.outcome = "refused".into();
            ev.message = why.clone();
            crate::audit::record(ev);
            summary.fail(super::Error::Failed(why));
            continue;
        }
        let Some(client) = c.groups else { continue };
        if !plan.has_changes() {
            continue;
        }
        let report = crate::groups::apply::apply(client, &plan, &live, &c.backoff).await;
        summary.changes = true;
        r.group_applied(&plan, &report);
        if report.failures() > 0 {
            summary.fail(super::Error::Failed(format!(
                "{} of {} membership changes failed",
                report.failures(),
                report.outcomes.len()
            )));
        }
    }
    summary
}

/// Removes the declared members of a deleted GroupMembership (never the last OWNER, never
/// bqsteward itself): the group planned as "the live members not declared".
pub async fn cleanup(
    c: &Clients<'_>,
    w: &World,
    resource: &str,
    spec: &crate::crd::GroupMembershipSpec,
) -> Result<String, super::Error> {
    let Some(client) = c.groups else {
        return Err(super::Error::Failed("no Cloud Identity client configured".into()));
    };
    let desired = DesiredGroup::new(resource, spec, Some("true"));
    let o = observe(client, &desired, &c.backoff).await?;
    let mut after = desired.clone();
    after.members = o
        .members
        .iter()
        .filter(|m| !desired.members.contains_key(&m.email))
        .map(|m| (m.email.clone(), m.role()))
        .collect();
    let plan = plan_group(
        &after,
        o.name.as_deref(),
        &o.members,
        w.identity_email.as_deref(),
        &w.policy,
        true,
    );
    if plan.is_refused() {
        return Ok(format!("kept the declared members: {}", plan.refusals.join("; ")));
    }
    let report = crate::groups::apply::apply(client, &plan, &o.members, &c.backoff).await;
    Ok(format!(
        "removed {} declared members ({} failed)",
        plan.ops.len(),
        report.failures()
    ))
}
