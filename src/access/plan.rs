//! Planning one dataset's access list: a pure function of the desired list, the live list and
//! the policy. What it returns is what `plan` prints and what `apply` sends.

use super::compile::{DatasetKey, DesiredAcl, Reason};
use super::entry::{AclEntry, Principal};
use crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL;
use crate::policy::Policy;
use std::collections::BTreeSet;

/// A dataset's live access list.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The etag of the read this list came from; writes are guarded by it.
    pub etag: String,
    /// The entries, normalised.
    pub entries: Vec<AclEntry>,
}

impl Observed {
    /// From a dataset read.
    pub fn from_info(info: &crate::cloud::bigquery::DatasetInfo) -> Observed {
        Observed {
            etag: info.etag.clone(),
            entries: info.access.iter().map(AclEntry::from_api).collect(),
        }
    }
}

/// What would change on one dataset, or why it may not.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetPlan {
    /// Which dataset.
    pub dataset: DatasetKey,
    /// The resource owning the list (`namespace/name`), if any.
    pub resource: Option<String>,
    /// Its kind (`DatasetAccess` or `ConsumerProject`).
    #[serde(skip)]
    pub resource_kind: &'static str,
    /// Entries to add.
    pub add: Vec<AclEntry>,
    /// Entries to remove.
    pub remove: Vec<AclEntry>,
    /// Entries already right.
    pub unchanged: usize,
    /// Why this dataset may not be written (missing dataset, no OWNER left, too many removals,
    /// forbidden principal). Non-empty = refused: nothing is written.
    pub refusals: Vec<String>,
    /// The live list, sorted (for the diff).
    #[serde(skip)]
    pub before: Vec<AclEntry>,
    /// The complete list to send, sorted.
    #[serde(skip)]
    pub after: Vec<AclEntry>,
    /// The etag `after` was computed from.
    #[serde(skip)]
    pub etag: Option<String>,
    /// The dataset does not exist yet; another resource in this apply creates it first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub will_be_created: bool,
}

impl DatasetPlan {
    /// Whether applying would write.
    pub fn has_changes(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }

    /// Whether the plan is refused.
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }
}

/// BigQuery's limit on authorized resources (views, routines, datasets) in one access list.
pub const MAX_AUTHORIZED: usize = 2500;

/// Plans one dataset. `approved` is `apply --allow-large-removal`.
pub fn plan_dataset(desired: &DesiredAcl, observed: Option<&Observed>, policy: &Policy, approved: bool) -> DatasetPlan {
    let mut plan = DatasetPlan {
        dataset: desired.key.clone(),
        resource: desired.owner.clone(),
        resource_kind: desired.owner_kind,
        add: Vec::new(),
        remove: Vec::new(),
        unchanged: 0,
        refusals: Vec::new(),
        before: Vec::new(),
        after: Vec::new(),
        etag: None,
        will_be_created: false,
    };
    let fresh;
    let observed = match (observed, &desired.created_by) {
        (Some(o), _) => o,
        (None, Some(_)) => {
            // Created by another resource in this same apply, before access lists are written.
            fresh = Observed {
                etag: String::new(),
                entries: Vec::new(),
            };
            plan.will_be_created = true;
            &fresh
        }
        (None, None) if desired.owner.is_none() && desired.entries.is_empty() => {
            // Only retiring entries on a dataset that is gone: nothing to do.
            return plan;
        }
        (None, None) => {
            plan.refusals.push(format!(
                "dataset {} does not exist; bqsteward does not create datasets for a DatasetAccess: create it \
             (or declare the IngestedTable/ConsumerProject that owns it) and fix spec.project/spec.dataset",
                desired.key
            ));
            return plan;
        }
    };
    let before: BTreeSet<AclEntry> = observed.entries.iter().cloned().collect();
    let mut after: BTreeSet<AclEntry> = desired.entries.keys().cloned().collect();
    if desired.owner.is_none() {
        // No resource owns this list: only add what bqsteward requires, keep the rest — except
        // entries of views bqsteward itself deleted.
        after.extend(before.iter().filter(|e| !desired.retire.contains(e)).cloned());
    }
    plan.add = after.difference(&before).cloned().collect();
    plan.remove = before.difference(&after).cloned().collect();
    plan.unchanged = after.intersection(&before).count();
    plan.etag = Some(observed.etag.clone());

    for e in &plan.add {
        match &e.principal {
            Principal::SpecialGroup(id) if policy.is_forbidden(id) => plan.refusals.push(format!(
                "{id} is a forbidden principal; remove it from the manifest or from the policy file's forbiddenPrincipals"
            )),
            Principal::IamMember(m) => {
                if let Err(reason) = policy.check_iam_member(m) {
                    plan.refusals.push(reason);
                }
            }
            _ => {}
        }
    }
    // BigQuery's documented limit: 2,500 authorized views, routines and datasets per list.
    let authorized = after
        .iter()
        .filter(|e| {
            matches!(
                e.principal,
                Principal::View(_) | Principal::Routine(_) | Principal::Dataset(_)
            )
        })
        .count();
    if authorized > MAX_AUTHORIZED {
        plan.refusals.push(format!(
            "the list of {} would hold {authorized} authorized views, routines and datasets; BigQuery allows at most \
             {MAX_AUTHORIZED}: authorize a dataset of views instead of each view",
            desired.key
        ));
    }
    // A dataset created without a DatasetAccess gets BigQuery's default entries (project owners
    // as OWNER), which this list keeps.
    let defaults_kept = plan.will_be_created && desired.owner.is_none();
    if !after.iter().any(AclEntry::is_owner) && !defaults_kept {
        plan.refusals.push(format!(
            "the list would leave dataset {} without an OWNER (BigQuery refuses that, and nobody could manage \
             it); declare one, e.g. {{role: OWNER, specialGroup: projectOwners}}, or configure bqsteward's identity",
            desired.key
        ));
    }
    let limit = policy.max_removals_per_dataset;
    if plan.remove.len() > limit && !approved && !desired.allow_large_removal {
        let who = format!(
            "{} {}",
            desired.owner_kind,
            desired.owner.as_deref().unwrap_or("(owner)")
        );
        plan.refusals.push(format!(
            "would remove {} entries from dataset {} (limit {limit}); review the plan, then approve by setting the \
             annotation {ANNOTATION_ALLOW_LARGE_REMOVAL}: \"true\" on {who} or by running apply --allow-large-removal",
            plan.remove.len(),
            desired.key
        ));
    }
    plan.before = before.into_iter().collect();
    plan.after = after.into_iter().collect();
    plan
}

/// Whether `entry` may never be removed from `desired` (bqsteward's identity, required entries).
pub fn is_protected(desired: &DesiredAcl, entry: &AclEntry) -> bool {
    matches!(
        desired.entries.get(entry),
        Some(Reason::Identity | Reason::Required { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::entry::identity_entry;
    use std::collections::BTreeMap;

    fn e(role: &str, p: Principal) -> AclEntry {
        AclEntry::new(role, p)
    }

    fn desired(entries: Vec<AclEntry>, owner: bool) -> DesiredAcl {
        DesiredAcl {
            key: DatasetKey {
                project: "p".into(),
                dataset: "d".into(),
            },
            owner: owner.then(|| "ns/da".to_string()),
            entries: entries
                .into_iter()
                .map(|x| (x, Reason::Declared))
                .collect::<BTreeMap<_, _>>(),
            allow_large_removal: false,
            created_by: None,
            owner_kind: "DatasetAccess",
            retire: Default::default(),
        }
    }

    fn live(entries: Vec<AclEntry>) -> Observed {
        Observed {
            etag: "e1".into(),
            entries,
        }
    }

    #[test]
    fn exact_list_adds_and_removes() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let alice = e("READER", Principal::User("alice@acme.com".into()));
        let mallory = e("READER", Principal::User("mallory@evil.com".into()));
        let p = plan_dataset(
            &desired(vec![owner.clone(), alice.clone()], true),
            Some(&live(vec![owner.clone(), mallory.clone()])),
            &Policy::default(),
            false,
        );
        assert_eq!(p.add, vec![alice]);
        assert_eq!(p.remove, vec![mallory]);
        assert_eq!(p.unchanged, 1);
        assert!(!p.is_refused());
        assert_eq!(p.etag.as_deref(), Some("e1"));
    }

    #[test]
    fn without_owner_resource_only_adds() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let view =
            AclEntry::from_api(&serde_json::json!({"view": {"projectId": "p", "datasetId": "v", "tableId": "t"}}));
        let other = e("READER", Principal::Group("g@acme.com".into()));
        let p = plan_dataset(
            &desired(vec![view.clone()], false),
            Some(&live(vec![owner, other])),
            &Policy::default(),
            false,
        );
        assert_eq!(p.add, vec![view]);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn refuses_a_list_without_owner_and_a_missing_dataset() {
        let reader = e("READER", Principal::Group("g@acme.com".into()));
        let owner = e("OWNER", Principal::User("o@acme.com".into()));
        let p = plan_dataset(
            &desired(vec![reader.clone()], true),
            Some(&live(vec![owner])),
            &Policy::default(),
            false,
        );
        assert!(
            p.refusals.iter().any(|r| r.contains("without an OWNER")),
            "{:?}",
            p.refusals
        );
        let p = plan_dataset(&desired(vec![reader], true), None, &Policy::default(), false);
        assert!(p.refusals[0].contains("does not exist"));
    }

    #[test]
    fn retiring_removes_only_what_bqsteward_deleted_and_a_missing_dataset_is_fine() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let gone =
            AclEntry::from_api(&serde_json::json!({"view": {"projectId": "p", "datasetId": "v", "tableId": "gone"}}));
        let other =
            AclEntry::from_api(&serde_json::json!({"view": {"projectId": "p", "datasetId": "v", "tableId": "other"}}));
        let mut d = desired(vec![], false);
        d.retire.insert(gone.clone());
        let p = plan_dataset(
            &d,
            Some(&live(vec![owner, gone.clone(), other])),
            &Policy::default(),
            false,
        );
        assert_eq!(p.remove, vec![gone]);
        assert!(p.add.is_empty() && !p.is_refused());
        let p = plan_dataset(&d, None, &Policy::default(), false);
        assert!(!p.is_refused() && !p.has_changes());
    }

    #[test]
    fn identity_keeps_an_owner() {
        let id = identity_entry("serviceAccount:bq@p.iam.gserviceaccount.com").unwrap();
        let mut d = desired(vec![e("READER", Principal::Group("g@acme.com".into()))], true);
        d.entries.insert(id.clone(), Reason::Identity);
        let p = plan_dataset(&d, Some(&live(vec![id.clone()])), &Policy::default(), false);
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert!(!p.remove.contains(&id));
        assert!(is_protected(&d, &id));
    }

    #[test]
    fn blast_radius_needs_approval() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let many: Vec<_> = (0..11)
            .map(|i| e("READER", Principal::User(format!("u{i}@acme.com"))))
            .collect();
        let mut all = many.clone();
        all.push(owner.clone());
        let d = desired(vec![owner], true);
        let p = plan_dataset(&d, Some(&live(all.clone())), &Policy::default(), false);
        assert_eq!(p.remove.len(), 11);
        assert!(
            p.refusals[0].contains("would remove 11 entries from dataset p.d (limit 10)"),
            "{:?}",
            p.refusals
        );
        assert!(p.refusals[0].contains("bqsteward.dev/allow-large-removal"));
        assert!(!plan_dataset(&d, Some(&live(all.clone())), &Policy::default(), true).is_refused());
        let mut annotated = d.clone();
        annotated.allow_large_removal = true;
        assert!(!plan_dataset(&annotated, Some(&live(all)), &Policy::default(), false).is_refused());
    }

    #[test]
    fn forbidden_principals_are_refused_but_removed_when_live() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let public = e("READER", Principal::IamMember("allUsers".into()));
        let p = plan_dataset(
            &desired(vec![owner.clone(), public.clone()], true),
            Some(&live(vec![owner.clone()])),
            &Policy::default(),
            false,
        );
        assert!(p.refusals[0].contains("\"allUsers\" is a forbidden principal"));
        let p = plan_dataset(
            &desired(vec![owner.clone()], true),
            Some(&live(vec![owner, public.clone()])),
            &Policy::default(),
            false,
        );
        assert_eq!(p.remove, vec![public]);
        assert!(!p.is_refused());
    }

    /// The pure planner over random lists (no emulator): for an exact list the planned result is
    /// exactly the declared entries plus bqsteward's identity; for a list no resource owns, live
    /// plus the declared; the result planned again has no changes; nothing is both added and
    /// removed. (`tests/dataset_access.rs` checks the same against the emulator through the writes.)
    #[test]
    fn planning_converges_in_one_step() {
        use proptest::prelude::*;
        let pool: Vec<AclEntry> = (0..12)
            .flat_map(|i| {
                ["READER", "WRITER", "OWNER"].map(|r| match i % 3 {
                    0 => e(r, Principal::User(format!("u{i}@acme.com"))),
                    1 => e(r, Principal::Group(format!("g{i}@acme.com"))),
                    _ => e(r, Principal::Domain(format!("d{i}.acme.com"))),
                })
            })
            .collect();
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let id = identity_entry("serviceAccount:bqsteward@p.iam.gserviceaccount.com").unwrap();
        let n = pool.len();
        proptest!(ProptestConfig::with_cases(200), |(
            live_idx in proptest::collection::btree_set(0..n, 0..n),
            declared_idx in proptest::collection::btree_set(0..n, 0..n),
            exact in any::<bool>(),
        )| {
            let live_entries: Vec<AclEntry> = live_idx.iter().map(|i| pool[*i].clone()).collect();
            let mut d = desired(
                std::iter::once(owner.clone()).chain(declared_idx.iter().map(|i| pool[*i].clone())).collect(),
                exact,
            );
            d.entries.insert(id.clone(), Reason::Identity);
            d.allow_large_removal = true;
            let p = plan_dataset(&d, Some(&live(live_entries.clone())), &Policy::default(), true);
            prop_assert!(!p.is_refused(), "{:?}", p.refusals);
            let after: std::collections::BTreeSet<AclEntry> = p.after.iter().cloned().collect();
            let want: std::collections::BTreeSet<AclEntry> = if exact {
                d.entries.keys().cloned().collect()
            } else {
                d.entries.keys().cloned().chain(live_entries.iter().cloned()).collect()
            };
            prop_assert_eq!(&after, &want);
            prop_assert!(p.add.iter().all(|a| !p.remove.contains(a)));
            let again = plan_dataset(&d, Some(&live(p.after.clone())), &Policy::default(), true);
            prop_assert!(!again.has_changes(), "{:?}", again);
        });
    }

    #[test]
    fn more_authorized_resources_than_bigquery_allows_is_refused() {
        let owner = e("OWNER", Principal::SpecialGroup("projectOwners".into()));
        let views: Vec<AclEntry> = (0..=MAX_AUTHORIZED)
            .map(|i| e("READER", Principal::View(format!("p.v.t{i}"))))
            .collect();
        let p = plan_dataset(
            &desired(std::iter::once(owner).chain(views).collect(), true),
            Some(&live(Vec::new())),
            &Policy::default(),
            true,
        );
        assert!(
            p.refusals
                .iter()
                .any(|r| r.contains("2501 authorized views") && r.contains("at most 2500")),
            "{:?}",
            p.refusals
        );
    }
}
