//! Tenancy: with a `tenancy` section in the policy file, every resource may touch only what its
//! namespace is granted — the datasets it writes (an IngestedTable's destination and view-layer
//! datasets, a DatasetAccess's dataset, a ConsumerProject's dataset), the source prefixes it reads,
//! the consumer projects it bills, the groups it manages. A resource outside its grant is invalid,
//! so `plan`/`apply` refuse the run and the controller marks it `InvalidSpec`: nothing is read or
//! written for it, and it contributes nothing to any compiled access list. Pure; part of
//! `validate`.

use super::Checker;
use crate::manifest::{Loaded, Resource};
use crate::policy::{Grant, Tenancy};

/// Checks every resource against its namespace's grant.
pub(super) fn check(resources: &[Loaded], tenancy: &Tenancy, out: &mut Vec<crate::manifest::Diagnostic>) {
    for loaded in resources {
        let ns = loaded.resource.namespace();
        let mut c = Checker { loaded, out };
        let Some(grant) = tenancy.namespaces.get(ns) else {
            c.err(
                "metadata.namespace",
                format!(
                    "namespace {ns} has no grant in the policy file's tenancy section, so its resources may use \
                     nothing; ask the platform team to add tenancy.namespaces.{ns}"
                ),
            );
            continue;
        };
        let mut need = |field: String, what: &str, value: &str, key: &str, patterns: &[String]| {
            if !Grant::allows(patterns, value) {
                c.err(
                    field,
                    format!(
                        "{what} {value} is outside namespace {ns}'s grant (tenancy.namespaces.{ns}.{key}: {patterns:?}); \
                         nothing is read or written for this resource: use what the namespace is granted, or ask \
                         the platform team to extend the grant"
                    ),
                );
            }
        };
        match &loaded.resource {
            Resource::IngestedTable(r) => {
                for (i, ds) in super::table_datasets(&r.spec).iter().enumerate() {
                    let (field, what) = if i == 0 {
                        ("spec.destination", "dataset")
                    } else {
                        ("spec.views", "view-layer dataset")
                    };
                    need(field.into(), what, ds, "datasets", &grant.datasets);
                }
                if let Some(d) = &r.spec.source.delta {
                    need(
                        "spec.source.delta.uri".into(),
                        "source",
                        &d.uri,
                        "sources",
                        &grant.sources,
                    );
                }
                let field = if r.spec.source.landed() {
                    "spec.source.landing"
                } else {
                    "spec.source.uri"
                };
                need(
                    field.into(),
                    "source",
                    r.spec.source.files_uri(),
                    "sources",
                    &grant.sources,
                );
            }
            Resource::DatasetAccess(r) => need(
                "spec.dataset".into(),
                "dataset",
                &format!("{}.{}", r.spec.project, r.spec.dataset),
                "datasets",
                &grant.datasets,
            ),
            Resource::ConsumerProject(r) => {
                need(
                    "spec.project".into(),
                    "consumer project",
                    &r.spec.project,
                    "consumerProjects",
                    &grant.consumer_projects,
                );
                need(
                    "spec.dataset".into(),
                    "dataset",
                    &format!("{}.{}", r.spec.project, r.spec.dataset),
                    "datasets",
                    &grant.datasets,
                );
            }
            Resource::GroupMembership(r) => need("spec.group".into(), "group", &r.spec.group, "groups", &grant.groups),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::access::compile::{Reason, compile};
    use crate::manifest::{LoadReport, Loaded, Resource, load_str};
    use crate::policy::{Grant, Policy};
    use proptest::prelude::*;

    const POLICY: &str = r#"
tenancy:
  namespaces:
    sales:
      datasets: ["acme-data.sales_*", "acme-sales.shared_*"]
      sources: ["gs://raw/sales/*"]
      consumerProjects: [acme-sales]
      groups: ["*@sales.acme.com"]
    hr:
      datasets: ["acme-data.hr_*"]
      sources: ["gs://raw/hr/*"]
      consumerProjects: [acme-hr]
      groups: ["*@hr.acme.com"]
"#;

    fn policy() -> Policy {
        serde_yaml::from_str(POLICY).unwrap()
    }

    fn grant_of<'a>(p: &'a Policy, ns: &str) -> Option<&'a Grant> {
        p.tenancy.as_ref()?.namespaces.get(ns)
    }

    /// One random resource: (kind, namespace, target choices).
    fn resource(i: usize, kind: u8, ns: &str, a: &str, b: &str, suffix: &str) -> String {
        match kind % 4 {
            0 => format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t{i}, namespace: {ns}}}\nspec:\n  source: {{uri: 'gs://raw/{b}/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: acme-data, dataset: {a}, table: t{i}}}\n  schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  views: {{full: true, clean: true, cleanSuffix: '{suffix}'}}\n"
            ),
            1 => format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: d{i}, namespace: {ns}}}\nspec:\n  project: acme-data\n  dataset: {a}\n  access: [{{role: OWNER, specialGroup: projectOwners}}, {{role: READER, group: r@acme.com}}]\n"
            ),
            2 => format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: ConsumerProject\nmetadata: {{name: c{i}, namespace: {ns}}}\nspec:\n  project: acme-{b}\n  dataset: shared_{a}\n  readers: [{{group: r@acme.com}}]\n  views:\n    - {{name: v, source: {{ingestedTable: t0, layer: clean}}, columns: [id]}}\n"
            ),
            _ => format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: GroupMembership\nmetadata: {{name: g{i}, namespace: {ns}}}\nspec:\n  group: team@{b}.acme.com\n  members: [{{email: x@acme.com, role: OWNER}}]\n"
            ),
        }
    }

    fn load(docs: &[String]) -> LoadReport {
        let mut report = LoadReport::default();
        load_str("random.yaml", &docs.join("---\n"), &mut report);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        report
    }

    #[test]
    fn outside_the_grant_is_refused_with_the_grant_named() {
        let report = load(&[
            resource(0, 0, "sales", "hr_payroll", "sales", "__views_clean"),
            resource(1, 1, "sales", "hr_payroll", "sales", ""),
            resource(2, 3, "sales", "", "hr", ""),
            resource(3, 1, "marketing", "sales_x", "", ""),
        ]);
        let errors: Vec<String> = super::super::validate(&report, &policy())
            .iter()
            .map(|d| d.to_string())
            .collect();
        let has = |needle: &str| assert!(errors.iter().any(|e| e.contains(needle)), "{needle}\n{errors:#?}");
        has(
            "IngestedTable sales/t0: spec.destination: dataset acme-data.hr_payroll is outside namespace sales's grant (tenancy.namespaces.sales.datasets",
        );
        has("DatasetAccess sales/d1: spec.dataset: dataset acme-data.hr_payroll is outside namespace sales's grant");
        has("GroupMembership sales/g2: spec.group: group team@hr.acme.com is outside namespace sales's grant");
        has("DatasetAccess marketing/d3: metadata.namespace: namespace marketing has no grant");
        // Without a tenancy section the same set is single-tenant: no tenancy errors.
        let single = super::super::validate(&report, &Policy::default());
        assert!(!single.iter().any(|d| d.message.contains("grant")), "{single:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random multi-namespace manifest sets: whatever passes validation never leads to a write
        /// (a table, a view layer, a consumer dataset, an access list, an authorization, a group)
        /// outside the grant of the namespace it comes from.
        #[test]
        fn no_write_outside_the_grants(
            picks in proptest::collection::vec(
                (0u8..4, 0usize..3, 0usize..4, 0usize..3, 0usize..3),
                1..10,
            )
        ) {
            let namespaces = ["sales", "hr", "marketing"];
            let datasets = ["sales_a", "hr_a", "other", "sales_b"];
            let sources = ["sales", "hr", "elsewhere"];
            let suffixes = ["__views_clean", "_clean", ""];
            let docs: Vec<String> = picks
                .iter()
                .enumerate()
                .map(|(i, (k, n, d, s, x))| resource(i, *k, namespaces[*n], datasets[*d], sources[*s], suffixes[*x]))
                .collect();
            let report = load(&docs);
            let policy = policy();
            let diagnostics = super::super::validate(&report, &policy);
            let broken: std::collections::HashSet<String> =
                diagnostics.iter().filter_map(|d| d.name.clone()).collect();
            let valid: Vec<Loaded> = report
                .resources
                .iter()
                .filter(|l| !broken.contains(&l.resource.qualified_name()))
                .cloned()
                .collect();
            let ns_of = |qualified: &str| qualified.split('/').next().unwrap_or_default().to_string();
            let granted_dataset = |ns: &str, ds: &str| {
                grant_of(&policy, ns).is_some_and(|g| Grant::allows(&g.datasets, ds))
            };
            for l in &valid {
                let ns = l.resource.namespace();
                let g = grant_of(&policy, ns);
                prop_assert!(g.is_some(), "{} valid without a grant", l.resource.qualified_name());
                let g = g.unwrap();
                match &l.resource {
                    Resource::IngestedTable(r) => {
                        // Computed here from the layers, not with the helper the check uses.
                        let d = &r.spec.destination;
                        let ds = format!("{}.{}", d.project, d.dataset);
                        prop_assert!(granted_dataset(ns, &ds), "{}", ds);
                        for layer in crate::views::layers(&r.spec) {
                            let v = &layer.view;
                            prop_assert!(granted_dataset(ns, &format!("{}.{}", v.project, v.dataset)), "{}", v);
                        }
                        prop_assert!(Grant::allows(&g.sources, &r.spec.source.uri));
                    }
                    Resource::DatasetAccess(r) => {
                        let ds = format!("{}.{}", r.spec.project, r.spec.dataset);
                        prop_assert!(granted_dataset(ns, &ds), "{}", ds);
                    }
                    Resource::ConsumerProject(r) => {
                        prop_assert!(Grant::allows(&g.consumer_projects, &r.spec.project));
                        let ds = format!("{}.{}", r.spec.project, r.spec.dataset);
                        prop_assert!(granted_dataset(ns, &ds), "{}", ds);
                    }
                    Resource::GroupMembership(r) => prop_assert!(Grant::allows(&g.groups, &r.spec.group)),
                }
            }
            // Every access list the valid set compiles is written only for resources granted it.
            for acl in compile(&valid, None) {
                let ds = acl.key.to_string();
                if let Some(owner) = &acl.owner {
                    prop_assert!(granted_dataset(&ns_of(owner), &ds), "{owner} owns {ds}");
                }
                for reason in acl.entries.values() {
                    if let Reason::Required { by } = reason {
                        let qualified = by.split(' ').nth(1).unwrap_or_default();
                        prop_assert!(granted_dataset(&ns_of(qualified), &ds), "{by} writes {ds}");
                    }
                }
            }
        }
    }
}
