//! The world the engine reconciles: every valid resource, resolved once — IngestedTable targets,
//! ConsumerProject targets, desired groups and the compiled access lists — from the manifests
//! (`plan`/`apply`) or from the cluster's objects (the controller). Pure: no I/O.

use crate::access::entry::{identity_email, identity_entry};
use crate::access::{AclEntry, DesiredAcl, compile};
use crate::consumer::layout::ConsumerTarget;
use crate::groups::DesiredGroup;
use crate::ingest::exec::Target;
use crate::ingest::reload::{ANNOTATION_RELOAD, Reload};
use crate::manifest::{Loaded, Resource};
use crate::policy::Policy;

/// A resource the world could not resolve.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// `Kind namespace/name` (empty for a problem of the configuration).
    pub resource: String,
    /// What is wrong, with where it was read.
    pub message: String,
}

/// Everything resolved from a set of valid resources.
#[derive(Clone)]
pub struct World {
    /// Guardrails.
    pub policy: Policy,
    /// bqsteward's own principal (OWNER on every list it writes).
    pub identity: Option<AclEntry>,
    /// bqsteward's own email, lowercased.
    pub identity_email: Option<String>,
    /// The resources (all valid).
    pub resources: std::sync::Arc<Vec<Loaded>>,
    /// IngestedTables, in manifest order.
    pub tables: Vec<Target>,
    /// ConsumerProjects.
    pub consumers: Vec<ConsumerTarget>,
    /// GroupMemberships.
    pub groups: Vec<DesiredGroup>,
    /// The desired access list of every dataset bqsteward writes (retirements added by the phases
    /// that delete views).
    pub desired: Vec<DesiredAcl>,
    /// Resources annotated `bqsteward.dev/mode: plan` (`Kind namespace/name`): observed and
    /// planned, never applied — by the controller or by `bqsteward apply` — and the access lists
    /// they own are not written.
    pub plan_only: std::collections::BTreeSet<(&'static str, String)>,
}

/// The annotation that makes an object plan-only: `bqsteward.dev/mode: plan`.
pub const ANNOTATION_MODE: &str = "bqsteward.dev/mode";

/// Whether `r` is annotated plan-only.
pub fn is_plan_only(r: &Resource) -> bool {
    r.metadata()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_MODE))
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("plan"))
}

impl World {
    /// Resolves `resources` (already validated). `identity` is `serviceAccount:EMAIL` (or
    /// `user:`/`group:`); `reload` overrides every IngestedTable's reload annotation. A resource
    /// that cannot be resolved is left out of the world and named in the problems (`Kind
    /// namespace/name`, message), all of them.
    pub fn build(
        resources: Vec<Loaded>,
        policy: Policy,
        identity: Option<&str>,
        reload: Option<&Reload>,
    ) -> (World, Vec<Problem>) {
        let mut errors = Vec::new();
        let owner = match identity.map(identity_entry).transpose() {
            Ok(i) => i,
            Err(e) => {
                errors.push(Problem {
                    resource: String::new(),
                    message: format!("--identity / BQSTEWARD_IDENTITY: {e}"),
                });
                None
            }
        };
        let (mut tables, mut consumers, mut groups) = (Vec::new(), Vec::new(), Vec::new());
        for l in &resources {
            let name = l.resource.qualified_name();
            let mut problem = |message: String| {
                errors.push(Problem {
                    resource: format!("{} {name}", l.resource.kind()),
                    message: format!("{}: {} {name}: {message}", l.origin, l.resource.kind()),
                })
            };
            match &l.resource {
                Resource::ConsumerProject(cp) => {
                    match ConsumerTarget::resolve(&name, l.resource.namespace(), &cp.spec, &resources) {
                        Ok(t) => consumers.push(t.adopting(&l.resource)),
                        Err(e) => problem(e),
                    }
                }
                Resource::DatasetAccess(_) => {}
                Resource::GroupMembership(gm) => groups.push(DesiredGroup::new(
                    &name,
                    &gm.spec,
                    l.resource.annotation(crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL),
                )),
                Resource::IngestedTable(it) => {
                    let reload = match (reload, l.resource.annotation(ANNOTATION_RELOAD)) {
                        (Some(r), _) => Some(r.clone()),
                        (None, Some(text)) => match Reload::parse(text) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                problem(format!("metadata.annotations[{ANNOTATION_RELOAD}]: {e}"));
                                continue;
                            }
                        },
                        (None, None) => None,
                    };
                    match Target::new(&name, &it.spec, reload) {
                        Ok(t) => tables.push(t.adopting(&l.resource)),
                        Err(e) => problem(e),
                    }
                }
            }
        }
        let mut desired = compile(&resources, owner.as_ref());
        crate::access::compile::add_tenant_identities(&mut desired, &policy);
        let plan_only = resources
            .iter()
            .filter(|l| is_plan_only(&l.resource))
            .map(|l| (l.resource.kind(), l.resource.qualified_name()))
            .collect();
        let world = World {
            plan_only,
            identity_email: identity.and_then(identity_email),
            identity: owner,
            policy,
            resources: std::sync::Arc::new(resources),
            tables,
            consumers,
            groups,
            desired,
        };
        (world, errors)
    }

    /// A copy for one reconcile scoped to `scope`: its tables, consumers and groups, every list
    /// (the engine scopes those itself), the resources shared. What a controller reconcile costs
    /// to copy then depends on what it touches, not on the whole set.
    pub fn scoped_copy(&self, scope: &crate::engine::Scope) -> World {
        World {
            policy: self.policy.clone(),
            identity: self.identity.clone(),
            identity_email: self.identity_email.clone(),
            resources: self.resources.clone(),
            tables: self
                .tables
                .iter()
                .filter(|t| scope.covers("IngestedTable", &t.name))
                .cloned()
                .collect(),
            consumers: self
                .consumers
                .iter()
                .filter(|t| scope.covers("ConsumerProject", &t.resource))
                .cloned()
                .collect(),
            groups: self
                .groups
                .iter()
                .filter(|g| scope.covers("GroupMembership", &g.resource))
                .cloned()
                .collect(),
            desired: self.desired.clone(),
            plan_only: self.plan_only.clone(),
        }
    }

    /// Whether `kind` `name` (`namespace/name`) is plan-only.
    pub fn is_plan_only(&self, kind: &str, name: &str) -> bool {
        self.plan_only.iter().any(|(k, n)| *k == kind && n == name)
    }

    /// Adds entries of views bqsteward deleted to the lists it plans: to the dataset named
    /// (creating a list that only retires), or — when the dataset is not known — to every list.
    pub fn retire(&mut self, entries: impl IntoIterator<Item = (Option<crate::access::DatasetKey>, AclEntry)>) {
        for (key, entry) in entries {
            match key {
                Some(key) => {
                    if !self.desired.iter().any(|d| d.key == key) {
                        self.desired.push(DesiredAcl::new(key.clone()));
                    }
                    for d in self.desired.iter_mut().filter(|d| d.key == key) {
                        d.retire.insert(entry.clone());
                    }
                }
                None => {
                    for d in &mut self.desired {
                        d.retire.insert(entry.clone());
                    }
                }
            }
        }
    }
}

/// The objects whose reconcile depends on IngestedTable `it` (`kind`, `namespace`, `name`):
/// ConsumerProjects of its namespace with a view over it, and DatasetAccess lists of a dataset it
/// creates (its own or a view layer's, where its authorizations live). The controller
/// re-reconciles them when the table changes, instead of waiting for their next requeue.
pub fn dependents(it: &Loaded, all: &[Loaded]) -> Vec<(&'static str, String, String)> {
    let Resource::IngestedTable(table) = &it.resource else {
        return Vec::new();
    };
    let ns = it.resource.namespace();
    let name = table.metadata.name.as_deref().unwrap_or_default();
    let datasets = crate::access::compile::creates(&it.resource);
    let mut out = Vec::new();
    for l in all {
        let r = &l.resource;
        let depends = match r {
            Resource::ConsumerProject(cp) => {
                r.namespace() == ns
                    && cp
                        .spec
                        .views
                        .iter()
                        .any(|v| v.source.ingested_table.as_deref() == Some(name))
            }
            Resource::DatasetAccess(da) => datasets
                .iter()
                .any(|k| k.project == da.spec.project && k.dataset == da.spec.dataset),
            _ => false,
        };
        if depends {
            let n = r.metadata().name.clone().unwrap_or_default();
            out.push((r.kind(), r.namespace().to_string(), n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_s_dependents_are_its_consumers_and_the_lists_of_its_datasets() {
        let text = "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {name: orders, namespace: shop}\nspec:\n  source: {uri: 'gs://b/o/', format: NEWLINE_DELIMITED_JSON}\n  destination: {project: p, dataset: sales, table: orders}\n  schema: [{name: id, type: INT64}]\n  primaryKey: [id]\n  versionColumn: id\n  views: {full: true, clean: true}\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: ConsumerProject\nmetadata: {name: mkt, namespace: shop}\nspec:\n  project: c\n  dataset: d\n  readers: [{group: r@acme.com}]\n  views: [{name: v, source: {ingestedTable: orders, layer: clean}, columns: [id]}]\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: ConsumerProject\nmetadata: {name: other-ns, namespace: elsewhere}\nspec:\n  project: c\n  dataset: e\n  readers: [{group: r@acme.com}]\n  views: [{name: v, source: {ingestedTable: orders, layer: clean}, columns: [id]}]\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: clean, namespace: ops}\nspec:\n  project: p\n  dataset: sales__views_clean\n  access: [{role: OWNER, specialGroup: projectOwners}]\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: unrelated, namespace: shop}\nspec:\n  project: p\n  dataset: hr\n  access: [{role: OWNER, specialGroup: projectOwners}]\n";
        let mut report = crate::manifest::LoadReport::default();
        crate::manifest::load_str("t.yaml", text, &mut report);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let all = report.resources;
        let deps = dependents(&all[0], &all);
        assert_eq!(
            deps,
            vec![
                ("ConsumerProject", "shop".to_string(), "mkt".to_string()),
                ("DatasetAccess", "ops".to_string(), "clean".to_string()),
            ]
        );
        assert!(dependents(&all[1], &all).is_empty(), "only tables have dependents");
    }
}
