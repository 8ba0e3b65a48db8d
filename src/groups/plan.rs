//! Planning one group's membership: a pure function of the declared members, the live direct
//! memberships, bqsteward's identity and the policy.

use crate::cloud::groups::Membership;
use crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL;
use crate::crd::group_membership::{GroupMembershipSpec, MemberRole};
use crate::policy::Policy;
use std::collections::{BTreeMap, BTreeSet};

/// The roles a membership must hold for a declared role (`MEMBER` is always one).
pub fn role_names(role: MemberRole) -> BTreeSet<String> {
    let mut s = BTreeSet::from(["MEMBER".to_string()]);
    match role {
        MemberRole::Member => {}
        MemberRole::Manager => {
            s.insert("MANAGER".into());
        }
        MemberRole::Owner => {
            s.insert("OWNER".into());
        }
    }
    s
}

/// The effective role of a set of role names (the highest).
pub fn effective(roles: &BTreeSet<String>) -> MemberRole {
    if roles.contains("OWNER") {
        MemberRole::Owner
    } else if roles.contains("MANAGER") {
        MemberRole::Manager
    } else {
        MemberRole::Member
    }
}

/// Upper-case role name.
pub fn role_str(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Member => "MEMBER",
        MemberRole::Manager => "MANAGER",
        MemberRole::Owner => "OWNER",
    }
}

/// One GroupMembership, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredGroup {
    /// `namespace/name`.
    pub resource: String,
    /// The group's email, lowercased.
    pub group: String,
    /// Declared members: lowercased email → role.
    pub members: BTreeMap<String, MemberRole>,
    /// The resource carries `bqsteward.dev/allow-large-removal: "true"`.
    pub allow_large_removal: bool,
}

impl DesiredGroup {
    /// From a validated spec.
    pub fn new(resource: &str, spec: &GroupMembershipSpec, annotation: Option<&str>) -> DesiredGroup {
        DesiredGroup {
            resource: resource.to_string(),
            group: spec.group.trim().to_lowercase(),
            members: spec
                .members
                .iter()
                .map(|m| (m.email.trim().to_lowercase(), m.role))
                .collect(),
            allow_large_removal: annotation == Some("true"),
        }
    }
}

/// A live direct member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveMember {
    /// Membership resource name.
    pub name: String,
    /// Email, lowercased.
    pub email: String,
    /// Role names held.
    pub roles: BTreeSet<String>,
}

impl LiveMember {
    /// From a listed membership.
    pub fn from_api(m: &Membership) -> LiveMember {
        LiveMember {
            name: m.name.clone(),
            email: m.preferred_member_key.id.trim().to_lowercase(),
            roles: m.roles.iter().map(|r| r.name.to_uppercase()).collect(),
        }
    }

    /// Effective role.
    pub fn role(&self) -> MemberRole {
        effective(&self.roles)
    }
}

/// A change to the group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Op {
    /// Add a member.
    Add {
        /// Email.
        email: String,
        /// Role.
        role: MemberRole,
    },
    /// Change a member's roles.
    Change {
        /// Membership resource name.
        membership: String,
        /// Email.
        email: String,
        /// Effective role now.
        from: MemberRole,
        /// Effective role after.
        to: MemberRole,
        /// Role names to add.
        add: Vec<String>,
        /// Role names to remove (never `MEMBER`).
        remove: Vec<String>,
    },
    /// Remove a member.
    Remove {
        /// Membership resource name.
        membership: String,
        /// Email.
        email: String,
        /// Effective role now.
        role: MemberRole,
    },
}

impl Op {
    /// The member's email.
    pub fn email(&self) -> &str {
        match self {
            Op::Add { email, .. } | Op::Change { email, .. } | Op::Remove { email, .. } => email,
        }
    }

    /// Whether, once done, this op takes OWNER away from someone.
    pub fn drops_owner(&self) -> bool {
        match self {
            Op::Remove { role, .. } => *role == MemberRole::Owner,
            Op::Change { from, to, .. } => *from == MemberRole::Owner && *to != MemberRole::Owner,
            Op::Add { .. } => false,
        }
    }

    /// Whether, once done, this op makes someone an OWNER.
    pub fn grants_owner(&self) -> bool {
        match self {
            Op::Add { role, .. } => *role == MemberRole::Owner,
            Op::Change { from, to, .. } => *from != MemberRole::Owner && *to == MemberRole::Owner,
            Op::Remove { .. } => false,
        }
    }
}

/// What would change in one group, or why it may not.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPlan {
    /// `namespace/name` of the GroupMembership.
    pub resource: String,
    /// The group's email.
    pub group: String,
    /// The group's resource name (`groups/{id}`), when found.
    pub group_name: Option<String>,
    /// Changes, in a safe order: adds (owners first), promotions, demotions, removals.
    pub ops: Vec<Op>,
    /// Members already as declared.
    pub unchanged: usize,
    /// Live members not declared but kept (bqsteward's own identity), with why.
    pub kept: Vec<String>,
    /// Why nothing may be written. Non-empty = refused.
    pub refusals: Vec<String>,
    /// Live members, `ROLE email`, sorted (the diff's left side).
    #[serde(skip)]
    pub before: Vec<String>,
    /// Members after the plan, `ROLE email`, sorted.
    #[serde(skip)]
    pub after: Vec<String>,
}

impl GroupPlan {
    /// Whether applying would write.
    pub fn has_changes(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Whether the plan is refused.
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    /// Counts: added, changed, removed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for op in &self.ops {
            match op {
                Op::Add { .. } => c.0 += 1,
                Op::Change { .. } => c.1 += 1,
                Op::Remove { .. } => c.2 += 1,
            }
        }
        c
    }
}

fn line(role: MemberRole, email: &str) -> String {
    format!("{:<7} {email}", role_str(role))
}

/// Plans one group. `live` is `None` when the group was not found. `identity` is bqsteward's own
/// email (lowercased): never removed, never demoted. `approved` is `apply --allow-large-removal`.
pub fn plan_group(
    desired: &DesiredGroup,
    group_name: Option<&str>,
    live: &[LiveMember],
    identity: Option<&str>,
    policy: &Policy,
    approved: bool,
) -> GroupPlan {
    let mut plan = GroupPlan {
        resource: desired.resource.clone(),
        group: desired.group.clone(),
        group_name: group_name.map(String::from),
        ops: Vec::new(),
        unchanged: 0,
        kept: Vec::new(),
        refusals: Vec::new(),
        before: Vec::new(),
        after: Vec::new(),
    };
    if group_name.is_none() {
        plan.refusals.push(format!(
            "group {} was not found, or bqsteward's identity may not see it; bqsteward does not create groups: \
             create it (and make bqsteward a manager or a Groups Admin) or fix spec.group",
            desired.group
        ));
        return plan;
    }
    let live_by_email: BTreeMap<&str, &LiveMember> = live.iter().map(|m| (m.email.as_str(), m)).collect();
    let mut after: BTreeMap<String, MemberRole> = BTreeMap::new();
    let (mut adds, mut promotions, mut demotions, mut removals) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());

    for (email, &role) in &desired.members {
        match live_by_email.get(email.as_str()) {
            None => {
                adds.push(Op::Add {
                    email: email.clone(),
                    role,
                });
                after.insert(email.clone(), role);
            }
            Some(m) => {
                let want = role_names(role);
                let managed = ["MANAGER", "OWNER"];
                let add: Vec<String> = want.difference(&m.roles).cloned().collect();
                let remove: Vec<String> = m
                    .roles
                    .iter()
                    .filter(|r| managed.contains(&r.as_str()) && !want.contains(*r))
                    .cloned()
                    .collect();
                let from = m.role();
                let is_identity = identity == Some(email.as_str());
                if is_identity && role < from {
                    plan.kept.push(format!(
                        "{email} stays {} (bqsteward's own identity is never demoted; declared {})",
                        role_str(from),
                        role_str(role)
                    ));
                    after.insert(email.clone(), from);
                    plan.unchanged += 1;
                } else if add.is_empty() && remove.is_empty() {
                    after.insert(email.clone(), role);
                    plan.unchanged += 1;
                } else {
                    let op = Op::Change {
                        membership: m.name.clone(),
                        email: email.clone(),
                        from,
                        to: role,
                        add,
                        remove,
                    };
                    if role >= from {
                        promotions.push(op);
                    } else {
                        demotions.push(op);
                    }
                    after.insert(email.clone(), role);
                }
            }
        }
    }
    for m in live {
        if desired.members.contains_key(&m.email) {
            continue;
        }
        if identity == Some(m.email.as_str()) {
            plan.kept.push(format!(
                "{} stays {} (bqsteward's own identity)",
                m.email,
                role_str(m.role())
            ));
            after.insert(m.email.clone(), m.role());
            continue;
        }
        removals.push(Op::Remove {
            membership: m.name.clone(),
            email: m.email.clone(),
            role: m.role(),
        });
    }
    // Owners first, so the group always has one while the plan runs.
    adds.sort_by_key(|op| !op.grants_owner());
    plan.ops = adds
        .into_iter()
        .chain(promotions)
        .chain(demotions)
        .chain(removals)
        .collect();

    let live_owners = live.iter().filter(|m| m.role() == MemberRole::Owner).count();
    let owners_after = after.values().filter(|r| **r == MemberRole::Owner).count();
    if live_owners > 0 && owners_after == 0 {
        plan.refusals.push(format!(
            "the plan would leave group {} without an OWNER (nobody could manage it); declare at least one member with role: OWNER",
            desired.group
        ));
    }
    let removing = plan.ops.iter().filter(|o| matches!(o, Op::Remove { .. })).count();
    let limit = policy.max_removals_per_dataset;
    if removing > limit && !approved && !desired.allow_large_removal {
        plan.refusals.push(format!(
            "would remove {removing} members from group {} (limit {limit}); review the plan, then approve by setting the \
             annotation {ANNOTATION_ALLOW_LARGE_REMOVAL}: \"true\" on GroupMembership {} or by running apply --allow-large-removal",
            desired.group, desired.resource
        ));
    }
    let mut before: Vec<String> = live.iter().map(|m| line(m.role(), &m.email)).collect();
    before.sort();
    plan.before = before;
    plan.after = after.iter().map(|(e, r)| line(*r, e)).collect();
    plan.after.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(email: &str, roles: &[&str]) -> LiveMember {
        LiveMember {
            name: format!("groups/g1/memberships/{email}"),
            email: email.to_lowercase(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn desired(members: &[(&str, MemberRole)]) -> DesiredGroup {
        DesiredGroup {
            resource: "ns/g".into(),
            group: "g@acme.com".into(),
            members: members.iter().map(|(e, r)| (e.to_string(), *r)).collect(),
            allow_large_removal: false,
        }
    }

    use MemberRole::*;

    #[test]
    fn adds_changes_and_removes_in_a_safe_order() {
        let p = plan_group(
            &desired(&[
                ("alice@acme.com", Member),
                ("bob@acme.com", Owner),
                ("carol@acme.com", Member),
            ]),
            Some("groups/g1"),
            &[
                live("Carol@Acme.com", &["MEMBER", "OWNER"]),
                live("dave@acme.com", &["MEMBER"]),
                live("bob@acme.com", &["MEMBER"]),
            ],
            None,
            &Policy::default(),
            false,
        );
        assert!(!p.is_refused(), "{:?}", p.refusals);
        let kinds: Vec<String> = p
            .ops
            .iter()
            .map(|o| match o {
                Op::Add { email, .. } => format!("+{email}"),
                Op::Change { email, to, .. } => format!("~{email}:{}", role_str(*to)),
                Op::Remove { email, .. } => format!("-{email}"),
            })
            .collect();
        // bob is promoted before carol is demoted, so an OWNER exists throughout.
        assert_eq!(
            kinds,
            [
                "+alice@acme.com",
                "~bob@acme.com:OWNER",
                "~carol@acme.com:MEMBER",
                "-dave@acme.com"
            ]
        );
        assert_eq!(p.counts(), (1, 2, 1));
        let Op::Change { add, remove, .. } = &p.ops[2] else {
            panic!()
        };
        assert!(add.is_empty() && remove == &["OWNER".to_string()]);
    }

    #[test]
    fn mixed_case_and_exact_roles_are_unchanged() {
        let p = plan_group(
            &desired(&[("alice@acme.com", Manager), ("bob@acme.com", Owner)]),
            Some("groups/g1"),
            &[
                live("ALICE@acme.com", &["MEMBER", "MANAGER"]),
                live("Bob@Acme.COM", &["OWNER", "MEMBER"]),
            ],
            None,
            &Policy::default(),
            false,
        );
        assert!(!p.has_changes(), "{:?}", p.ops);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn last_owner_identity_and_blast_radius() {
        // Removing the only owner is refused.
        let p = plan_group(
            &desired(&[("alice@acme.com", Member)]),
            Some("groups/g1"),
            &[
                live("alice@acme.com", &["MEMBER"]),
                live("boss@acme.com", &["MEMBER", "OWNER"]),
            ],
            None,
            &Policy::default(),
            false,
        );
        assert!(p.refusals[0].contains("without an OWNER"), "{:?}", p.refusals);
        // The identity is kept (and not demoted); it is the owner, so the plan is fine.
        let p = plan_group(
            &desired(&[("alice@acme.com", Member), ("bot@p.iam.gserviceaccount.com", Member)]),
            Some("groups/g1"),
            &[live("bot@p.iam.gserviceaccount.com", &["MEMBER", "OWNER"])],
            Some("bot@p.iam.gserviceaccount.com"),
            &Policy::default(),
            false,
        );
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(p.ops.len(), 1);
        assert!(p.kept[0].contains("never demoted"));
        // Too many removals need approval.
        let many: Vec<LiveMember> = (0..11).map(|i| live(&format!("u{i}@acme.com"), &["MEMBER"])).collect();
        let d = desired(&[]);
        let p = plan_group(&d, Some("groups/g1"), &many, None, &Policy::default(), false);
        assert!(p.refusals[0].contains("would remove 11 members"), "{:?}", p.refusals);
        assert!(!plan_group(&d, Some("groups/g1"), &many, None, &Policy::default(), true).is_refused());
        // A group that does not exist.
        let p = plan_group(&d, None, &[], None, &Policy::default(), false);
        assert!(p.refusals[0].contains("not found"));
    }
}
