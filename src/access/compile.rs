//! The ACL compiler: the desired access list of each dataset bqsteward writes =
//! its DatasetAccess entries ∪ entries other bqsteward resources need there (authorized views)
//! ∪ the controller's own identity as OWNER. One writer per dataset: everything for a dataset is
//! merged here and written in one request.

use super::entry::AclEntry;
use crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL;
use crate::manifest::{Loaded, Resource};
use std::collections::BTreeMap;
use std::fmt;

/// A dataset, by project and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DatasetKey {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
}

impl From<&crate::cloud::bqtypes::TableRef> for DatasetKey {
    /// The dataset holding a table.
    fn from(t: &crate::cloud::bqtypes::TableRef) -> DatasetKey {
        DatasetKey {
            project: t.project.clone(),
            dataset: t.dataset.clone(),
        }
    }
}

impl fmt::Display for DatasetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.project, self.dataset)
    }
}

/// Why an entry is in a desired list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum Reason {
    /// Declared in a DatasetAccess.
    Declared,
    /// Needed by another bqsteward resource (e.g. an authorized view); never removed by a
    /// DatasetAccess.
    Required {
        /// `Kind namespace/name` of the resource that needs it.
        by: String,
    },
    /// bqsteward's own identity: never removed, so it cannot lock itself out.
    Identity,
}

/// The desired access list of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredAcl {
    /// Which dataset.
    pub key: DatasetKey,
    /// The resource owning the list (`namespace/name`), if any: a DatasetAccess, or the
    /// ConsumerProject whose dataset it is. With one, the list is exact (undeclared entries are
    /// removed); without, bqsteward only adds what it requires.
    pub owner: Option<String>,
    /// Kind of the owner (`DatasetAccess` or `ConsumerProject`).
    pub owner_kind: &'static str,
    /// Entries bqsteward wrote for views it has since deleted: removed even from a list no
    /// resource owns.
    pub retire: std::collections::BTreeSet<AclEntry>,
    /// Every desired entry and why.
    pub entries: BTreeMap<AclEntry, Reason>,
    /// The owner carries `bqsteward.dev/allow-large-removal: "true"`.
    pub allow_large_removal: bool,
    /// `Kind namespace/name` of the resource that creates this dataset when it is missing (an
    /// IngestedTable creates its dataset and view-layer datasets), if any.
    pub created_by: Option<String>,
}

impl DesiredAcl {
    /// A list no resource owns, with no entries yet (bqsteward only adds what it requires, and
    /// removes what it `retire`s).
    pub fn new(key: DatasetKey) -> DesiredAcl {
        DesiredAcl {
            key,
            owner: None,
            owner_kind: "DatasetAccess",
            entries: BTreeMap::new(),
            allow_large_removal: false,
            created_by: None,
            retire: Default::default(),
        }
    }
}

/// An entry another resource needs on a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    /// Where.
    pub key: DatasetKey,
    /// What.
    pub entry: AclEntry,
    /// `Kind namespace/name` of the resource that needs it.
    pub by: String,
}

/// Entries a resource needs on datasets it does not own (authorized views), as it declares them
/// ([`super::declare::DeclaresAccess::requires`]): a DatasetAccess can never remove them, and a
/// view recreated by someone (which loses its authorization) is authorized again on the next
/// apply.
pub fn requirements(loaded: &Loaded, all: &[Loaded]) -> Vec<Requirement> {
    let resource = &loaded.resource;
    let by = format!("{} {}", resource.kind(), resource.qualified_name());
    resource
        .declares()
        .requires(loaded, all)
        .into_iter()
        .map(|(key, entry)| Requirement {
            key,
            entry,
            by: by.clone(),
        })
        .collect()
}

/// Datasets a resource creates when they are missing, as it declares them.
pub fn creates(resource: &Resource) -> Vec<DatasetKey> {
    resource.declares().creates()
}

/// Compiles the desired list of every dataset bqsteward writes, in dataset order.
/// `identity` is bqsteward's own principal (added as OWNER everywhere it writes).
pub fn compile(resources: &[Loaded], identity: Option<&AclEntry>) -> Vec<DesiredAcl> {
    fn slot(out: &mut BTreeMap<DatasetKey, DesiredAcl>, key: DatasetKey) -> &mut DesiredAcl {
        out.entry(key.clone()).or_insert_with(|| DesiredAcl::new(key))
    }
    let mut out: BTreeMap<DatasetKey, DesiredAcl> = BTreeMap::new();
    for loaded in resources {
        let r = &loaded.resource;
        if let Some(owned) = r.declares().owned_list() {
            // The list is exact: what the owner declares (and bqsteward's identity).
            let acl = slot(&mut out, owned.key);
            acl.owner = Some(r.qualified_name());
            acl.owner_kind = r.kind();
            acl.allow_large_removal = r.annotation(ANNOTATION_ALLOW_LARGE_REMOVAL) == Some("true");
            for e in owned.entries {
                acl.entries.entry(e).or_insert(Reason::Declared);
            }
        }
        for r in requirements(loaded, resources) {
            let acl = slot(&mut out, r.key);
            acl.entries.insert(r.entry, Reason::Required { by: r.by });
        }
    }
    for loaded in resources {
        for key in creates(&loaded.resource) {
            if let Some(acl) = out.get_mut(&key) {
                acl.created_by
                    .get_or_insert_with(|| format!("{} {}", loaded.resource.kind(), loaded.resource.qualified_name()));
            }
        }
    }
    // Lists that would near BigQuery's limit on authorized resources authorize whole datasets of
    // bqsteward's views instead of each view.
    let managed: std::collections::BTreeSet<DatasetKey> = resources
        .iter()
        .flat_map(|l| {
            let owned = match &l.resource {
                Resource::ConsumerProject(_) => l.resource.declares().owned_list().map(|o| o.key),
                _ => None,
            };
            creates(&l.resource).into_iter().chain(owned)
        })
        .collect();
    for acl in out.values_mut() {
        authorize_datasets(acl, &managed);
    }
    if let Some(id) = identity {
        for acl in out.values_mut() {
            acl.entries.insert(id.clone(), Reason::Identity);
        }
    }
    out.into_values().collect()
}

/// Above this many authorized views, routines and datasets on one list, the views bqsteward
/// requires there are authorized by their dataset (BigQuery allows 2,500 per list).
pub const AUTHORIZE_DATASETS_ABOVE: usize = 2000;

/// When `acl` holds more than [`AUTHORIZE_DATASETS_ABOVE`] authorized resources, replaces the
/// required authorized views of each dataset in `managed` — datasets whose every view bqsteward
/// manages: view layers, consumer datasets — by one authorized-dataset entry (`targetTypes:
/// VIEWS`). Views in other datasets keep their own entries.
pub fn authorize_datasets(acl: &mut DesiredAcl, managed: &std::collections::BTreeSet<DatasetKey>) {
    use super::entry::Principal;
    let authorized = acl
        .entries
        .keys()
        .filter(|e| {
            matches!(
                e.principal,
                Principal::View(_) | Principal::Routine(_) | Principal::Dataset(_)
            )
        })
        .count();
    if authorized <= AUTHORIZE_DATASETS_ABOVE {
        return;
    }
    let mut groups: BTreeMap<DatasetKey, (Vec<AclEntry>, String)> = BTreeMap::new();
    for (e, reason) in &acl.entries {
        let (Principal::View(v), Reason::Required { by }) = (&e.principal, reason) else {
            continue;
        };
        let mut parts = v.splitn(3, '.');
        let (Some(project), Some(dataset)) = (parts.next(), parts.next()) else {
            continue;
        };
        let key = DatasetKey {
            project: project.into(),
            dataset: dataset.into(),
        };
        if managed.contains(&key) {
            groups
                .entry(key)
                .or_insert_with(|| (Vec::new(), by.clone()))
                .0
                .push(e.clone());
        }
    }
    for (key, (views, by)) in groups {
        for v in &views {
            acl.entries.remove(v);
        }
        acl.entries.insert(
            AclEntry {
                principal: Principal::Dataset(format!("{}.{}:VIEWS", key.project, key.dataset)),
                role: None,
            },
            Reason::Required { by },
        );
    }
}

/// Adds the service account each namespace acts as (policy `tenancy.namespaces.<ns>.serviceAccount`)
/// as OWNER of the exact lists that namespace's resources own: the identity writing a list must
/// never remove itself. Lists no resource owns are only added to, so they need nothing.
pub fn add_tenant_identities(desired: &mut [DesiredAcl], policy: &crate::policy::Policy) {
    for acl in desired {
        let Some(ns) = acl.owner.as_deref().and_then(|o| o.split_once('/')).map(|(ns, _)| ns) else {
            continue;
        };
        if let Some(entry) = policy
            .service_account(ns)
            .and_then(|sa| super::entry::identity_entry(&format!("serviceAccount:{sa}")).ok())
        {
            acl.entries.insert(entry, Reason::Identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::entry::Principal;

    fn view(dataset: &str, i: usize) -> AclEntry {
        AclEntry {
            principal: Principal::View(format!("p.{dataset}.v{i}")),
            role: None,
        }
    }

    #[test]
    fn a_list_nearing_the_limit_authorizes_bqsteward_datasets_of_views_instead_of_each_view() {
        let key = |d: &str| DatasetKey {
            project: "p".into(),
            dataset: d.into(),
        };
        let managed = [key("raw__views_full")].into_iter().collect();
        let required = |by: &str| Reason::Required { by: by.into() };
        let mut acl = DesiredAcl::new(key("raw"));
        for i in 0..AUTHORIZE_DATASETS_ABOVE {
            acl.entries
                .insert(view("raw__views_full", i), required("IngestedTable ns/t"));
        }
        let before = acl.clone();
        authorize_datasets(&mut acl, &managed);
        assert_eq!(acl, before, "at the threshold each view keeps its entry");

        // Past it: the managed layer's views become one dataset entry; others keep theirs.
        for i in 0..5 {
            acl.entries
                .insert(view("someone_elses", i), required("ConsumerProject ns/c"));
        }
        authorize_datasets(&mut acl, &managed);
        let dataset = AclEntry {
            principal: Principal::Dataset("p.raw__views_full:VIEWS".into()),
            role: None,
        };
        assert_eq!(acl.entries.get(&dataset), Some(&required("IngestedTable ns/t")));
        assert_eq!(
            acl.entries.len(),
            6,
            "{:?}",
            acl.entries.keys().take(8).collect::<Vec<_>>()
        );
        assert_eq!(
            dataset.to_api(),
            serde_json::json!({"dataset": {"dataset": {"projectId": "p", "datasetId": "raw__views_full"}, "targetTypes": ["VIEWS"]}})
        );
    }
}
