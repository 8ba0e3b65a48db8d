//! Semantic checks of a ConsumerProject, called by [`super::validate`]: its project and dataset,
//! readers, and each view — source resolvable in the same namespace (or allowed by the policy),
//! columns and row filter, and PII reachability.

use super::kinds::{location, principal};
use super::{Checker, ident};
use crate::crd::{ANNOTATION_ALLOW_PII, ConsumerProjectSpec, IngestedTableSpec, Layer, Principal};
use crate::manifest::{Loaded, Resource};
use crate::policy::Policy;
use std::collections::HashSet;

/// Readers of one ConsumerProject (members of its jobUser binding).
const MAX_READERS: usize = 1500;

pub(super) fn consumer_project(c: &mut Checker, spec: &ConsumerProjectSpec, policy: &Policy, all: &[Loaded]) {
    c.check("spec.project", ident::project_id(&spec.project));
    c.check("spec.dataset", ident::dataset_id(&spec.dataset));
    location(c, "spec.location", &spec.location);
    // The readers become members of one IAM binding; an allow policy holds at most 1,500 principals.
    if spec.readers.len() > MAX_READERS {
        c.err(
            "spec.readers",
            format!(
                "{} readers; an IAM policy holds at most {MAX_READERS} principals (the jobUser binding is one of its \
                 bindings): use groups",
                spec.readers.len()
            ),
        );
    }
    for (i, r) in spec.readers.iter().enumerate() {
        let set = reader_principals(r);
        if set.len() != 1 {
            c.err(
                format!("spec.readers[{i}]"),
                "each reader names exactly one of user, group, serviceAccount or domain",
            );
            continue;
        }
        let (key, value) = set[0];
        principal(c, &format!("spec.readers[{i}].{key}"), key, value, policy);
    }
    let namespace = c.loaded.resource.namespace().to_string();
    let mut names = HashSet::new();
    for (i, view) in spec.views.iter().enumerate() {
        let base = format!("spec.views[{i}]");
        c.check(format!("{base}.name"), ident::table_id(&view.name));
        if !names.insert(view.name.to_lowercase()) {
            c.err(
                format!("{base}.name"),
                format!("view {:?} is declared twice", view.name),
            );
        }
        let s = &view.source;
        let source_columns: Option<Vec<String>> = match (&s.ingested_table, &s.table) {
            (Some(_), Some(_)) | (None, None) => {
                c.err(format!("{base}.source"), "give exactly one of ingestedTable or table");
                None
            }
            (None, Some(t)) => {
                if s.layer.is_some() {
                    c.err(
                        format!("{base}.source.layer"),
                        "layer applies to ingestedTable sources only; remove it",
                    );
                }
                let parts: Vec<&str> = t.split('.').collect();
                if parts.len() != 3 {
                    c.err(
                        format!("{base}.source.table"),
                        format!("{t:?} must be written project.dataset.table"),
                    );
                } else {
                    c.check(format!("{base}.source.table"), ident::project_id(parts[0]));
                    c.check(format!("{base}.source.table"), ident::dataset_id(parts[1]));
                    c.check(format!("{base}.source.table"), ident::table_id(parts[2]));
                }
                // An explicit table could be anything bqsteward's identity can read (raw PII
                // included): only tables the policy names, and only listed columns.
                if !policy.consumer_table_allowed(t) {
                    c.err(
                        format!("{base}.source.table"),
                        format!(
                            "{t:?} is not in the policy file's consumerSourceTables; read an IngestedTable's layer \
                             (source: {{ingestedTable: NAME}}), or allow the table in the policy file"
                        ),
                    );
                }
                if view.columns.is_empty() {
                    c.err(
                        format!("{base}.columns"),
                        "a view over an explicit table must list its columns (bqsteward cannot tell which of them \
                         hold PII)",
                    );
                }
                None // columns of an explicit table are only known to BigQuery: checked by plan
            }
            (Some(name), None) => {
                let found = all.iter().find_map(|l| match &l.resource {
                    Resource::IngestedTable(t)
                        if t.metadata.name.as_deref() == Some(name) && l.resource.namespace() == namespace =>
                    {
                        Some(t)
                    }
                    _ => None,
                });
                match found {
                    None => {
                        c.err(
                            format!("{base}.source.ingestedTable"),
                            format!("no IngestedTable {namespace}/{name} in the given manifests; include its file or fix the name"),
                        );
                        None
                    }
                    Some(t) => {
                        let layer = s.layer.unwrap_or_default();
                        let enabled = match layer {
                            Layer::Clean => t.spec.views.clean,
                            Layer::Full => t.spec.views.full,
                        };
                        if !enabled {
                            c.err(
                                format!("{base}.source.layer"),
                                format!("IngestedTable {name} does not manage a {layer:?} view; set spec.views on it or choose another layer"),
                            );
                        }
                        if !t.spec.destination.location.eq_ignore_ascii_case(&spec.location) {
                            c.err(
                                "spec.location",
                                format!(
                                    "{:?} differs from the location {:?} of IngestedTable {name}; BigQuery views cannot read across locations",
                                    spec.location, t.spec.destination.location
                                ),
                            );
                        }
                        let exposed: Vec<String> = if view.columns.is_empty() {
                            layer_columns(&t.spec, layer)
                        } else {
                            view.columns.clone()
                        };
                        let allowed: Vec<String> = c.loaded.resource.annotation_list(ANNOTATION_ALLOW_PII);
                        let layer_pii: Vec<String> = crate::views::layout::layer_pii(&t.spec, view_layer(layer))
                            .into_iter()
                            .filter(|p| !allowed.contains(&p.to_lowercase()))
                            .collect();
                        let pii: Vec<String> = layer_pii
                            .iter()
                            .filter(|p| exposed.iter().any(|e| e.eq_ignore_ascii_case(p)))
                            .cloned()
                            .collect();
                        // A filter reveals what it reads: `email = 'x@y.com'` tells who is in the
                        // view without selecting the column. Columns a filter reads count as exposed.
                        let read_by_filter = view
                            .row_filter
                            .as_deref()
                            .and_then(|f| {
                                crate::consumer::rowfilter::check(f, Some(layer_columns(&t.spec, layer).as_slice()))
                                    .ok()
                            })
                            .unwrap_or_default();
                        let filter_pii: Vec<String> = layer_pii
                            .iter()
                            .filter(|p| read_by_filter.iter().any(|e| e.eq_ignore_ascii_case(p)))
                            .filter(|p| !pii.contains(p))
                            .cloned()
                            .collect();
                        if !filter_pii.is_empty() {
                            c.err(
                                format!("{base}.rowFilter"),
                                format!(
                                    "the row filter of view {} reads PII columns {filter_pii:?} of IngestedTable {name} ({layer:?} layer), \
                                     and a filter reveals what it reads (which rows match); filter on other columns, use the clean \
                                     layer, or allow them explicitly with the annotation {ANNOTATION_ALLOW_PII}: \"{}\"",
                                    view.name,
                                    filter_pii.join(", ")
                                ),
                            );
                        }
                        if !pii.is_empty() {
                            c.err(
                                if view.columns.is_empty() { format!("{base}.source.layer") } else { format!("{base}.columns") },
                                format!(
                                    "view {} would expose PII columns {pii:?} of IngestedTable {name} ({layer:?} layer); use the clean layer, \
                                     leave them out of columns, or allow them explicitly with the annotation {ANNOTATION_ALLOW_PII}: \"{}\"",
                                    view.name,
                                    pii.join(", ")
                                ),
                            );
                        }
                        Some(layer_columns(&t.spec, layer))
                    }
                }
            }
        };
        if let Some(f) = &view.row_filter
            && let Err(e) = crate::consumer::rowfilter::check(f, source_columns.as_deref())
        {
            c.err(
                format!("{base}.rowFilter"),
                format!("{e}; it is refused before anything is written"),
            );
        }
        let mut seen = HashSet::new();
        for (j, col) in view.columns.iter().enumerate() {
            let field = format!("{base}.columns[{j}]");
            c.check(field.clone(), ident::column_name(col));
            if !seen.insert(col.to_lowercase()) {
                c.err(field.clone(), format!("column {col:?} is listed twice"));
            }
            if let Some(cols) = &source_columns
                && !cols.iter().any(|x| x.eq_ignore_ascii_case(col))
            {
                c.err(
                    field,
                    format!(
                        "column {col:?} is not in the source view; available: {}",
                        cols.join(", ")
                    ),
                );
            }
        }
    }
}

fn reader_principals(p: &Principal) -> Vec<(&'static str, &String)> {
    [
        ("user", &p.user),
        ("group", &p.group),
        ("serviceAccount", &p.service_account),
        ("domain", &p.domain),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect()
}

/// Columns a view layer of an IngestedTable exposes (see [`crate::views::layout::layer_columns`]).
fn layer_columns(spec: &IngestedTableSpec, layer: Layer) -> Vec<String> {
    crate::views::layout::layer_columns(spec, view_layer(layer))
}

fn view_layer(layer: Layer) -> crate::views::Layer {
    match layer {
        Layer::Clean => crate::views::Layer::Clean,
        Layer::Full => crate::views::Layer::Full,
    }
}
