//! Observing a group and applying a plan. Every change is attempted: one member's error does not
//! stop the others; all outcomes are reported.

use super::plan::{DesiredGroup, GroupPlan, LiveMember, Op, role_names, role_str};
use crate::cloud::CloudError;
use crate::cloud::groups::{Groups, list_all};
use crate::cloud::retry::{Backoff, with_retry};
use crate::crd::group_membership::MemberRole;

/// A group as observed: its resource name (`None` = not found) and direct members.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedGroup {
    /// `groups/{id}`.
    pub name: Option<String>,
    /// Direct members.
    pub members: Vec<LiveMember>,
}

/// Looks the group up and lists its direct members (every page).
pub async fn observe(
    groups: &dyn Groups,
    desired: &DesiredGroup,
    backoff: &Backoff,
) -> Result<ObservedGroup, CloudError> {
    let name = with_retry(backoff, "groups.lookup", || groups.lookup_group(&desired.group)).await?;
    let Some(name) = name else {
        return Ok(ObservedGroup::default());
    };
    let members = list_all(groups, &name, backoff)
        .await?
        .iter()
        .map(LiveMember::from_api)
        .collect();
    Ok(ObservedGroup {
        name: Some(name),
        members,
    })
}

/// What happened to one change.
#[derive(Debug)]
pub enum OpOutcome {
    /// Done.
    Done,
    /// The API refused or failed (after retries).
    Failed(CloudError),
    /// Not attempted, and why (it would have left the group without an OWNER after an earlier
    /// change failed).
    Skipped(String),
}

/// Every change of a plan and its outcome.
#[derive(Debug)]
pub struct GroupReport {
    /// In plan order.
    pub outcomes: Vec<(Op, OpOutcome)>,
}

impl GroupReport {
    /// Changes that did not happen.
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, OpOutcome::Done))
            .count()
    }
}

/// Applies a (not refused) plan. Owners are tracked as changes land: a change that would take
/// away the last OWNER — because the change that was to add another failed — is skipped.
pub async fn apply(groups: &dyn Groups, plan: &GroupPlan, live: &[LiveMember], backoff: &Backoff) -> GroupReport {
    let mut report = GroupReport { outcomes: Vec::new() };
    let Some(group) = plan.group_name.as_deref() else {
        return report;
    };
    let mut owners: std::collections::BTreeSet<String> = live
        .iter()
        .filter(|m| m.role() == MemberRole::Owner)
        .map(|m| m.email.clone())
        .collect();
    for op in &plan.ops {
        if op.drops_owner() && owners.len() == 1 && owners.contains(op.email()) {
            report.outcomes.push((
                op.clone(),
                OpOutcome::Skipped(format!(
                    "{} is the group's only OWNER left (an earlier change that would have added another failed)",
                    op.email()
                )),
            ));
            continue;
        }
        let result = match op {
            Op::Add { email, role } => {
                let roles: Vec<String> = role_names(*role).into_iter().collect();
                match with_retry(backoff, "memberships.create", || {
                    groups.create_membership(group, email, &roles)
                })
                .await
                {
                    // Already a member (an earlier attempt landed, or someone added it): the next
                    // reconcile compares roles.
                    Err(e) if e.status() == Some(409) => Ok(()),
                    other => other,
                }
            }
            Op::Change {
                membership,
                add,
                remove,
                ..
            } => {
                with_retry(backoff, "memberships.modifyMembershipRoles", || {
                    groups.modify_roles(membership, add, remove)
                })
                .await
            }
            Op::Remove { membership, .. } => {
                with_retry(backoff, "memberships.delete", || groups.delete_membership(membership)).await
            }
        };
        let outcome = match result {
            Ok(()) => {
                if op.grants_owner() {
                    owners.insert(op.email().to_string());
                }
                if op.drops_owner() {
                    owners.remove(op.email());
                }
                audit(plan, op);
                OpOutcome::Done
            }
            Err(e) => OpOutcome::Failed(e),
        };
        report.outcomes.push((op.clone(), outcome));
    }
    report
}

/// The audit event of one membership change (no home: it goes to the fallback audit table).
fn audit(plan: &GroupPlan, op: &Op) {
    use crate::audit::{Action, Event};
    let (action, role) = match op {
        Op::Add { role, .. } => (Action::MemberAdded, role_str(*role).to_string()),
        Op::Change { from, to, .. } => (
            Action::MemberRoleChanged,
            format!("{}->{}", role_str(*from), role_str(*to)),
        ),
        Op::Remove { role, .. } => (Action::MemberRemoved, role_str(*role).to_string()),
    };
    let mut ev = Event::new(
        action,
        &format!("GroupMembership {}", plan.resource),
        &plan.group,
        op.email(),
        "",
    );
    ev.role = role;
    crate::audit::record(ev);
}
