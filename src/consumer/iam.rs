//! Billing separation: the consumer's readers get `roles/bigquery.jobUser` on the consumer project,
//! so their queries run (and are billed) there.
//!
//! bqsteward owns exactly one binding per ConsumerProject: role `roles/bigquery.jobUser` with a
//! condition titled `bqsteward: ConsumerProject <namespace>/<name>` (an always-true expression).
//! Its members are made exactly the readers; every other binding — other roles, and jobUser
//! bindings bqsteward did not write — is left untouched. Writes carry the etag of the read; on 409
//! (someone changed the policy in between) bqsteward reads again and recomputes.

use crate::cloud::CloudError;
use crate::cloud::iam::{Binding, Condition, IamPolicy, ProjectIam};
use crate::cloud::retry::{Backoff, with_retry};
use std::collections::BTreeSet;

/// The role readers get.
pub const JOB_USER: &str = "roles/bigquery.jobUser";
/// The condition expression of bqsteward's binding: always true (CEL), so the binding only marks
/// ownership.
pub const ALWAYS: &str = "request.time < timestamp(\"9999-12-31T00:00:00Z\")";
/// How many times a write is retried after a 409.
pub const MAX_CONFLICT_RETRIES: u32 = 5;

/// The condition title marking the binding of `resource` (`namespace/name`).
pub fn title(resource: &str) -> String {
    format!("bqsteward: ConsumerProject {resource}")
}

fn is_ours(b: &Binding, title: &str) -> bool {
    b.role == JOB_USER && b.condition.as_ref().is_some_and(|c| c.title == title)
}

/// What changes in the project's policy.
#[derive(Clone, Debug, PartialEq)]
pub struct IamPlan {
    /// Project.
    pub project: String,
    /// Members to add to bqsteward's binding.
    pub add: Vec<String>,
    /// Members to remove from it.
    pub remove: Vec<String>,
    /// The policy to write (when there are changes).
    pub policy: Option<IamPolicy>,
}

impl IamPlan {
    /// Whether applying would write.
    pub fn has_changes(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }
}

/// Plans the binding of `resource` against the live policy (pure).
pub fn plan(resource: &str, project: &str, members: &BTreeSet<String>, live: &IamPolicy) -> IamPlan {
    let title = title(resource);
    let current: BTreeSet<String> = live
        .bindings
        .iter()
        .filter(|b| is_ours(b, &title))
        .flat_map(|b| b.members.iter().cloned())
        .collect();
    let add: Vec<String> = members.difference(&current).cloned().collect();
    let remove: Vec<String> = current.difference(members).cloned().collect();
    let policy = (!add.is_empty() || !remove.is_empty()).then(|| {
        let mut p = live.clone();
        p.bindings.retain(|b| !is_ours(b, &title));
        if !members.is_empty() {
            p.bindings.push(Binding {
                role: JOB_USER.into(),
                members: members.iter().cloned().collect(),
                condition: Some(Condition {
                    title: title.clone(),
                    expression: ALWAYS.into(),
                    description: Some(
                        "Managed by bqsteward: readers of the consumer dataset run their queries in this project"
                            .into(),
                    ),
                }),
            });
        }
        // Conditional bindings need policy version 3.
        p.version = 3;
        p
    });
    IamPlan {
        project: project.into(),
        add,
        remove,
        policy,
    }
}

/// Reads the policy and plans.
pub async fn observe_and_plan(
    iam: &dyn ProjectIam,
    resource: &str,
    project: &str,
    members: &BTreeSet<String>,
    backoff: &Backoff,
) -> Result<IamPlan, CloudError> {
    let live = with_retry(backoff, "projects.getIamPolicy", || iam.get_iam_policy(project)).await?;
    Ok(plan(resource, project, members, &live))
}

/// Makes the binding exact: read, plan, write with the read's etag; on 409 read again.
/// Returns the plan that was written (or found already true).
pub async fn apply(
    iam: &dyn ProjectIam,
    resource: &str,
    project: &str,
    members: &BTreeSet<String>,
    backoff: &Backoff,
) -> Result<IamPlan, CloudError> {
    let mut conflicts = 0;
    loop {
        let p = observe_and_plan(iam, resource, project, members, backoff).await?;
        let Some(policy) = &p.policy else { return Ok(p) };
        match with_retry(backoff, "projects.setIamPolicy", || iam.set_iam_policy(project, policy)).await {
            Ok(after) => {
                use crate::audit::{Action, Event};
                for (action, list) in [
                    (Action::IamBindingAdded, &p.add),
                    (Action::IamBindingRemoved, &p.remove),
                ] {
                    for m in list {
                        let mut ev =
                            Event::new(action, &format!("ConsumerProject {resource}"), project, m, &policy.etag);
                        ev.role = JOB_USER.into();
                        ev.etag_before = policy.etag.clone();
                        ev.etag_after = after.etag.clone();
                        crate::audit::record(ev);
                    }
                }
                return Ok(p);
            }
            Err(e) if e.status() == Some(409) && conflicts < MAX_CONFLICT_RETRIES => {
                conflicts += 1;
                tracing::info!(
                    project,
                    attempt = conflicts,
                    "IAM policy changed since it was read (409); reading again"
                );
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_its_own_binding_changes() {
        let unrelated = Binding {
            role: JOB_USER.into(),
            members: vec!["user:someone@acme.com".into()],
            condition: None,
        };
        let owner = Binding {
            role: "roles/owner".into(),
            members: vec!["user:boss@acme.com".into()],
            condition: None,
        };
        let live = IamPolicy {
            version: 1,
            etag: "e1".into(),
            bindings: vec![unrelated.clone(), owner.clone()],
            other: Default::default(),
        };
        let p = plan("ns/mkt", "proj", &set(&["group:mkt@acme.com"]), &live);
        assert_eq!(p.add, ["group:mkt@acme.com"]);
        let written = p.policy.clone().unwrap();
        assert_eq!(written.version, 3);
        assert_eq!(written.etag, "e1");
        assert_eq!(&written.bindings[..2], &[unrelated.clone(), owner.clone()]);
        assert_eq!(
            written.bindings[2].condition.as_ref().unwrap().title,
            "bqsteward: ConsumerProject ns/mkt"
        );

        // Applied: nothing to do; a reader removed: only that member goes; none left: binding goes.
        let p2 = plan("ns/mkt", "proj", &set(&["group:mkt@acme.com"]), &written);
        assert!(!p2.has_changes());
        let p3 = plan("ns/mkt", "proj", &set(&[]), &written);
        assert_eq!(p3.remove, ["group:mkt@acme.com"]);
        assert_eq!(p3.policy.unwrap().bindings, vec![unrelated, owner]);
        // Another ConsumerProject's binding is not ours.
        assert!(plan("ns/other", "proj", &set(&[]), &written).policy.is_none());
    }
}
