//! Offline validation of loaded manifests: identifiers, emails, column references, guardrails and
//! duplicates across resources. Pure: no I/O. Every problem is a [`Diagnostic`] with a field path
//! and a sentence saying how to fix it; all of them are reported, not just the first.

mod consumer;
pub(crate) mod database;
pub mod delta;
pub mod ident;
mod kinds;
mod tenancy;

use crate::manifest::{Diagnostic, LoadReport, Loaded, Resource};
use crate::policy::Policy;
use std::collections::HashMap;

/// Collects diagnostics for one resource.
pub(crate) struct Checker<'a> {
    loaded: &'a Loaded,
    out: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Records a problem at `field`.
    pub(crate) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic {
            origin: self.loaded.origin.clone(),
            kind: Some(self.loaded.resource.kind().to_string()),
            name: Some(self.loaded.resource.qualified_name()),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records `Err(reason)` of an identifier check at `field`.
    pub(crate) fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(reason) = result {
            self.err(field, reason);
        }
    }
}

/// Validates everything in `report` against `policy`; returns every problem found, load errors
/// first, in input order.
pub fn validate(report: &LoadReport, policy: &Policy) -> Vec<Diagnostic> {
    let mut out = report.errors.clone();
    for loaded in &report.resources {
        out.extend(one(loaded, policy, &report.resources));
    }
    out.extend(across(&report.resources, policy));
    out
}

/// Whether [`one`]'s answer for `loaded` depends on that object (and the policy) alone: true for
/// every kind but ConsumerProject, whose views are checked against the IngestedTables they read.
pub fn stands_alone(loaded: &Loaded) -> bool {
    !matches!(loaded.resource, Resource::ConsumerProject(_))
}

/// The problems of one resource by itself (`all`: every resource, which a ConsumerProject's
/// checks read; see [`stands_alone`]).
pub fn one(loaded: &Loaded, policy: &Policy, all: &[Loaded]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut c = Checker { loaded, out: &mut out };
    match &loaded.resource {
        Resource::IngestedTable(r) => kinds::ingested_table(&mut c, &r.spec),
        Resource::DatasetAccess(r) => kinds::dataset_access(&mut c, &r.spec, policy),
        Resource::ConsumerProject(r) => consumer::consumer_project(&mut c, &r.spec, policy, all),
        Resource::GroupMembership(r) => kinds::group_membership(&mut c, &r.spec, policy),
    }
    out
}

/// The problems between resources: duplicates, one writer per table, exclusions that follow the
/// data, tenancy.
pub fn across(resources: &[Loaded], policy: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicates(resources, &mut out);
    one_writer_per_table(resources, &mut out);
    exclusions_follow_the_data(resources, &mut out);
    if let Some(t) = &policy.tenancy {
        tenancy::check(resources, t, &mut out);
    }
    out
}

/// The datasets an IngestedTable writes, as `project.dataset`: its destination's first, then each
/// view-layer dataset that differs from it.
pub(crate) fn table_datasets(spec: &crate::crd::IngestedTableSpec) -> Vec<String> {
    let d = &spec.destination;
    let mut out = vec![format!("{}.{}", d.project, d.dataset)];
    for l in crate::views::layers(spec) {
        let ds = format!("{}.{}", l.view.project, l.view.dataset);
        if !out.contains(&ds) {
            out.push(ds);
        }
    }
    out
}

/// Every table or view an IngestedTable writes has one writer. Suffixes could otherwise aim one
/// table's layer view at another's (`pay` + `__views_full` = `pay__views` + `_full`), and the second
/// would rewrite it. (Two destinations alike are reported by `duplicates`; a ConsumerProject cannot
/// use an IngestedTable's datasets at all.)
fn one_writer_per_table(resources: &[Loaded], out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, &Loaded> = HashMap::new();
    for loaded in resources {
        if let Resource::IngestedTable(r) = &loaded.resource {
            let d = &r.spec.destination;
            seen.entry(format!("{}.{}.{}", d.project, d.dataset, d.table).to_lowercase())
                .or_insert(loaded);
        }
    }
    for loaded in resources {
        let Resource::IngestedTable(r) = &loaded.resource else {
            continue;
        };
        for l in crate::views::layers(&r.spec) {
            let view = l.view.to_string();
            match seen.get(&view.to_lowercase()) {
                Some(first) if !std::ptr::eq(*first, loaded) => Checker { loaded, out }.err(
                    "spec.views",
                    format!(
                        "{view} is already written by {} {} ({}); one table or view has one writer: choose another \
                         dataset or suffix",
                        first.resource.kind(),
                        first.resource.qualified_name(),
                        first.origin
                    ),
                ),
                _ => {
                    seen.insert(view.to_lowercase(), loaded);
                }
            }
        }
    }
}

/// Excluded columns (card numbers) are a property of the files, not of one manifest: every
/// IngestedTable reading files under an overlapping prefix must exclude what any of them excludes,
/// or a second manifest would load what the first keeps out. Names compare case-insensitively. A
/// JSON column is refused on such a source: it keeps every nested field, so an excluded name inside a
/// JSON value would be loaded.
fn exclusions_follow_the_data(resources: &[Loaded], out: &mut Vec<Diagnostic>) {
    let tables: Vec<(&Loaded, &crate::crd::IngestedTableSpec)> = resources
        .iter()
        .filter_map(|l| match &l.resource {
            Resource::IngestedTable(r) => Some((l, &r.spec)),
            _ => None,
        })
        .collect();
    let lower = |v: &[String]| -> Vec<String> { v.iter().map(|x| x.to_lowercase()).collect() };
    // Only tables that exclude something can make another miss an exclusion: compare every table
    // with those (usually few), not with every other table.
    let excluding: Vec<(&Loaded, &str, Vec<String>)> = tables
        .iter()
        .filter(|(_, s)| !s.excluded_columns.is_empty())
        .map(|(l, s)| (*l, s.source.files_uri(), lower(&s.excluded_columns)))
        .collect();
    for (loaded, spec) in &tables {
        let own = lower(&spec.excluded_columns);
        let mut missing: Vec<(String, &Loaded, &str)> = Vec::new();
        let a = spec.source.files_uri();
        for (other, b, excluded) in &excluding {
            if std::ptr::eq(*loaded, *other) || !(a.starts_with(*b) || b.starts_with(a)) {
                continue;
            }
            for x in excluded {
                if !own.contains(x) && !missing.iter().any(|(m, _, _)| m == x) {
                    missing.push((x.clone(), other, b));
                }
            }
        }
        let mut c = Checker { loaded, out };
        for (x, other, prefix) in &missing {
            c.err(
                "spec.excludedColumns",
                format!(
                    "IngestedTable {} reads files under the overlapping prefix {prefix} and excludes {x:?} from them; \
                     every table reading those files must exclude it too: add {x:?} to excludedColumns (and remove \
                     it from schema)",
                    other.resource.qualified_name(),
                ),
            );
        }
        if own.is_empty() && missing.is_empty() {
            continue;
        }
        for (j, col) in spec.schema.iter().enumerate() {
            if col.type_.canonical() == "JSON" {
                c.err(
                    format!("spec.schema[{j}].type"),
                    format!(
                        "column {:?} is JSON, which keeps every nested field, on a source with excluded columns: an \
                         excluded name inside a JSON value would be loaded; declare the fields you need as columns",
                        col.name
                    ),
                );
            }
        }
    }
}

/// One owner per dataset access list (across kinds: a DatasetAccess and a ConsumerProject both own
/// their dataset's list), per group and per destination table: a second resource claiming the same
/// thing would fight the first forever. And a ConsumerProject's dataset is its own: never one that
/// holds an IngestedTable's table or view layers (it would rewrite or delete their views as strays,
/// or grant readers on raw data).
fn duplicates(resources: &[Loaded], out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(&'static str, String), &Loaded> = HashMap::new();
    let mut datasets_of_tables: HashMap<String, &Loaded> = HashMap::new();
    for loaded in resources {
        if let Resource::IngestedTable(r) = &loaded.resource {
            for ds in table_datasets(&r.spec) {
                datasets_of_tables.entry(ds).or_insert(loaded);
            }
        }
    }
    for loaded in resources {
        let (key, field, what) = match &loaded.resource {
            Resource::DatasetAccess(r) => (
                format!("{}.{}", r.spec.project, r.spec.dataset),
                "spec.dataset",
                "the access list of dataset",
            ),
            Resource::GroupMembership(r) => (r.spec.group.to_lowercase(), "spec.group", "the members of group"),
            Resource::IngestedTable(r) => {
                let d = &r.spec.destination;
                (
                    format!("{}.{}.{}", d.project, d.dataset, d.table),
                    "spec.destination",
                    "the destination table",
                )
            }
            Resource::ConsumerProject(r) => (
                format!("{}.{}", r.spec.project, r.spec.dataset),
                "spec.dataset",
                "the consumer dataset",
            ),
        };
        if let Resource::ConsumerProject(_) = &loaded.resource
            && let Some(t) = datasets_of_tables.get(&key)
        {
            Checker { loaded, out }.err(
                field,
                format!(
                    "dataset {key} holds the table or views of IngestedTable {} ({}); a ConsumerProject needs a dataset of \
                     its own (it manages every view and the access list in it)",
                    t.resource.qualified_name(),
                    t.origin
                ),
            );
        }
        // DatasetAccess and ConsumerProject both own their dataset's access list: one key for both.
        let owner_kind = match loaded.resource.kind() {
            "DatasetAccess" | "ConsumerProject" => "dataset access list",
            k => k,
        };
        match seen.get(&(owner_kind, key.clone())) {
            Some(first) => {
                let message = format!(
                    "{what} {key} is already managed by {} {} ({}); keep one resource per {} and merge the two",
                    first.resource.kind(),
                    first.resource.qualified_name(),
                    first.origin,
                    if what.contains("group") {
                        "group"
                    } else if what.contains("table") {
                        "table"
                    } else {
                        "dataset"
                    },
                );
                Checker { loaded, out }.err(field, message);
            }
            None => {
                seen.insert((owner_kind, key), loaded);
            }
        }
    }
}
