//! `bqsteward bench controller`: what one reconcile costs the controller besides its cloud calls,
//! for stores of different sizes, side by side (pure, no I/O): the fingerprint of the object set
//! every reconcile computes, validating and resolving the whole set when it changed (a cache
//! miss), and scoping the access lists to the reconciled object. Objects: IngestedTables with a
//! full view layer and a DatasetAccess on each table's dataset, in 100 namespaces, with the uid
//! and generation an API server gives them.

use crate::engine::{Scope, World};
use crate::manifest::{LoadReport, load_str};
use crate::policy::Policy;

/// One store size's figures (CPU milliseconds per operation).
#[derive(Clone, Debug)]
pub struct Figures {
    /// Objects in the store.
    pub objects: usize,
    /// Fingerprint of the set (every reconcile).
    pub fingerprint_ms: f64,
    /// Validate and resolve the whole set (the first reconcile).
    pub resolve_ms: f64,
    /// Of which each object's own checks.
    pub own_checks_ms: f64,
    /// Of which the checks between objects.
    pub across_ms: f64,
    /// Of which resolving the world.
    pub build_ms: f64,
    /// Validate and resolve after one object changed (its own checks cached for the others).
    pub change_ms: f64,
    /// Copy what the reconcile touches of the resolved world for its engine run (every
    /// reconcile).
    pub world_copy_ms: f64,
    /// Scope the access lists to one object (every reconcile).
    pub scope_ms: f64,
}

fn manifests(objects: usize) -> String {
    let tables = objects.div_ceil(2);
    let mut out = String::new();
    for i in 0..tables {
        let ns = format!("team-{:02}", i % 100);
        out.push_str(&format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t{i}, namespace: {ns}, uid: u-t{i}, generation: 1}}\nspec:\n  \
             source: {{uri: 'gs://acme-raw/t{i}/', format: NEWLINE_DELIMITED_JSON}}\n  \
             destination: {{project: acme-data, dataset: ds{i}, table: t}}\n  \
             schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  \
             views: {{full: true}}\n---\n"
        ));
        if tables + i < objects {
            out.push_str(&format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: a{i}, namespace: {ns}, uid: u-a{i}, generation: 1}}\nspec:\n  \
                 project: acme-data\n  dataset: ds{i}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    \
                 - {{role: READER, group: team{i}@acme.com}}\n---\n"
            ));
        }
    }
    out
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let c = crate::ingest::bench::cpu_seconds();
    let out = f();
    (out, (crate::ingest::bench::cpu_seconds() - c) * 1000.0)
}

/// Measures a store of `objects` objects.
pub fn run(objects: usize) -> Figures {
    let mut report = LoadReport::default();
    load_str("bench.yaml", &manifests(objects), &mut report);
    assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    let all = report.resources.clone();
    let policy = Policy::default();
    let (_, fingerprint_ms) = timed(|| super::context::fingerprint(&all));
    let cache = super::context::WorldCache::default();
    let identity = Some("serviceAccount:bqsteward@acme-data.iam.gserviceaccount.com");
    let (resolved, resolve_ms) = timed(|| cache.resolve(&all, &policy, identity));
    assert!(resolved.diagnostics.is_empty(), "{:?}", resolved.diagnostics.first());
    let world = &resolved.world;
    let (_, own_checks_ms) = timed(|| {
        for l in &all {
            crate::validate::one(l, &policy, &all);
        }
    });
    let (_, across_ms) = timed(|| crate::validate::across(&all, &policy));
    let (_, build_ms) = timed(|| World::build(all.clone(), policy.clone(), identity, None));
    // One object changes (a new generation), as an edit through the API server would.
    let mut changed = all.clone();
    if let crate::manifest::Resource::IngestedTable(t) = &mut changed[0].resource {
        t.metadata.generation = t.metadata.generation.map(|g| g + 1);
    }
    let (after, change_ms) = timed(|| cache.resolve(&changed, &policy, identity));
    assert!(after.diagnostics.is_empty());
    let scope = Scope::Object {
        kind: "IngestedTable",
        name: "team-00/t0".into(),
    };
    let (_, world_copy_ms) = timed(|| after.world.scoped_copy(&scope));
    let (lists, scope_ms) = timed(|| {
        let keys = crate::engine::lists::consumer_source_datasets(world, &scope);
        crate::engine::lists::in_scope(world, &scope, &[], Some(&keys))
    });
    assert!(!lists.is_empty());
    Figures {
        objects: all.len(),
        fingerprint_ms,
        resolve_ms,
        own_checks_ms,
        across_ms,
        build_ms,
        change_ms,
        world_copy_ms,
        scope_ms,
    }
}

/// The table `bqsteward bench controller` prints.
pub fn report(sizes: &[usize]) -> String {
    let mut out = format!(
        "controller work per reconcile besides cloud calls (CPU ms):\n{:>8} {:>12} {:>14} {:>11} {:>9} {:>9} {:>14} {:>11} {:>12}\n",
        "objects",
        "fingerprint",
        "whole set",
        "own checks",
        "across",
        "resolve",
        "one changed",
        "copy world",
        "scope lists"
    );
    for &n in sizes {
        let f = run(n);
        out.push_str(&format!(
            "{:>8} {:>12.2} {:>14.1} {:>11.1} {:>9.1} {:>9.1} {:>14.1} {:>11.1} {:>12.2}\n",
            f.objects,
            f.fingerprint_ms,
            f.resolve_ms,
            f.own_checks_ms,
            f.across_ms,
            f.build_ms,
            f.change_ms,
            f.world_copy_ms,
            f.scope_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_synthetic_store_is_valid_and_the_object_is_in_scope() {
        let f = super::run(4);
        assert_eq!(f.objects, 4);
    }

    #[test]
    fn a_change_rechecks_the_changed_object() {
        use crate::manifest::{LoadReport, load_str};
        let mut report = LoadReport::default();
        load_str("bench.yaml", &super::manifests(6), &mut report);
        let mut all = report.resources;
        let policy = crate::policy::Policy::default();
        let cache = crate::controller::context::WorldCache::default();
        assert!(cache.resolve(&all, &policy, None).diagnostics.is_empty());
        assert_eq!(cache.cached_own(), 6, "each object's own problems are kept");
        // A changed object is checked anew: an invalid edit is found.
        if let crate::manifest::Resource::IngestedTable(t) = &mut all[0].resource {
            t.spec.destination.table = "bad table!".into();
            t.metadata.generation = Some(2);
        }
        let after = cache.resolve(&all, &policy, None);
        assert!(
            after.diagnostics.iter().any(|d| d.field.contains("destination.table")),
            "{:?}",
            after.diagnostics
        );
    }
}
