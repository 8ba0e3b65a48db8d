//! A ConsumerProject resolved against the manifests: its dataset, its views (SQL generated from
//! the spec), the access entries and IAM members it needs. Pure.

use crate::access::{AclEntry, DatasetKey, Principal};
use crate::cloud::bqtypes::{TableRef, ident};
use crate::crd::consumer_project::{ConsumerProjectSpec, ConsumerView, Layer as SourceLayer};
use crate::manifest::{Loaded, Resource};
use crate::views::layout::{DesiredView, Layer, LayerRef, Layout, layer_columns};
use std::collections::BTreeSet;
use std::fmt::Write;

/// One consumer view, its source resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedView {
    /// The view in the consumer dataset.
    pub view: TableRef,
    /// What it reads.
    pub source: TableRef,
    /// The source's columns when the manifests say (IngestedTable layers); `None` for explicit
    /// tables (read from BigQuery by `plan`).
    pub source_columns: Option<Vec<String>>,
    /// Columns to expose (empty: all).
    pub columns: Vec<String>,
    /// Row filter.
    pub row_filter: Option<String>,
    /// Description.
    pub description: Option<String>,
}

impl ResolvedView {
    /// The view's SQL.
    pub fn sql(&self) -> String {
        let mut sql = String::from("SELECT\n");
        if self.columns.is_empty() {
            sql.push_str("  *\n");
        } else {
            let n = self.columns.len();
            for (i, c) in self.columns.iter().enumerate() {
                let _ = writeln!(sql, "  {}{}", ident(c), if i + 1 < n { "," } else { "" });
            }
        }
        let _ = writeln!(sql, "FROM {}", self.source.sql());
        if let Some(f) = &self.row_filter {
            // The filter was checked (tokens, balanced parentheses) and stays inside these.
            let _ = writeln!(sql, "WHERE ({})", f.trim());
        }
        sql
    }
}

/// A ConsumerProject, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerTarget {
    /// `namespace/name`.
    pub resource: String,
    /// The spec.
    pub spec: ConsumerProjectSpec,
    /// Its views.
    pub views: Vec<ResolvedView>,
    /// It takes over existing views bqsteward did not make for it (annotation
    /// `bqsteward.dev/adopt: "true"`).
    pub adopt: bool,
}

fn resolve_source(v: &ConsumerView, namespace: &str, all: &[Loaded]) -> Option<(TableRef, Option<Vec<String>>)> {
    if let Some(t) = &v.source.table {
        let p: Vec<&str> = t.split('.').collect();
        return (p.len() == 3).then(|| (TableRef::new(p[0], p[1], p[2]), None));
    }
    let name = v.source.ingested_table.as_deref()?;
    let it = all.iter().find_map(|l| match &l.resource {
        Resource::IngestedTable(t)
            if t.metadata.name.as_deref() == Some(name) && l.resource.namespace() == namespace =>
        {
            Some(t)
        }
        _ => None,
    })?;
    let layer = match v.source.layer.unwrap_or_default() {
        SourceLayer::Clean => Layer::Clean,
        SourceLayer::Full => Layer::Full,
    };
    let l = crate::views::layers(&it.spec).into_iter().find(|l| l.layer == layer)?;
    Some((l.view, Some(layer_columns(&it.spec, layer))))
}

impl ConsumerTarget {
    /// Resolves a validated ConsumerProject against the other manifests.
    pub fn resolve(
        resource: &str,
        namespace: &str,
        spec: &ConsumerProjectSpec,
        all: &[Loaded],
    ) -> Result<ConsumerTarget, String> {
        let mut views = Vec::new();
        for (i, v) in spec.views.iter().enumerate() {
            let (source, source_columns) = resolve_source(v, namespace, all)
                .ok_or_else(|| format!("spec.views[{i}].source: cannot resolve the source of view {}", v.name))?;
            views.push(ResolvedView {
                view: TableRef::new(&spec.project, &spec.dataset, &v.name),
                // Never `SELECT *`: without `columns`, the layer's declared columns. A column dropped
                // from the IngestedTable's schema stays in its full view, and bqsteward cannot tell
                // whether it holds PII, so it never reaches a consumer.
                columns: if v.columns.is_empty() {
                    source_columns.clone().unwrap_or_default()
                } else {
                    v.columns.clone()
                },
                source,
                source_columns,
                row_filter: v.row_filter.clone().filter(|f| !f.trim().is_empty()),
                description: v.description.clone(),
            });
        }
        Ok(ConsumerTarget {
            resource: resource.to_string(),
            spec: spec.clone(),
            views,
            adopt: false,
        })
    }

    /// Sets [`ConsumerTarget::adopt`] from the resource's annotation `bqsteward.dev/adopt: "true"`.
    pub fn adopting(mut self, resource: &crate::manifest::Resource) -> ConsumerTarget {
        self.adopt = resource.annotation(crate::ingest::table::ANNOTATION_ADOPT) == Some("true");
        self
    }

    /// The consumer dataset.
    pub fn dataset(&self) -> DatasetKey {
        DatasetKey {
            project: self.spec.project.clone(),
            dataset: self.spec.dataset.clone(),
        }
    }

    /// The views as a layout the view planner handles (the dataset is this resource's alone).
    pub fn layout(&self) -> Layout {
        let by = format!("ConsumerProject {}", self.resource);
        let views = self
            .views
            .iter()
            .map(|v| {
                let description = format!(
                    "{}Reads {}. Managed by bqsteward ({by}): edits are reverted.",
                    v.description.as_deref().map(|d| format!("{d} ")).unwrap_or_default(),
                    v.source
                );
                let layer = LayerRef {
                    layer: Layer::Consumer,
                    view: v.view.clone(),
                    source: v.source.clone(),
                };
                DesiredView::new(&by, layer, v.sql(), description)
            })
            .collect();
        Layout {
            resource: by,
            adopt: self.adopt,
            salt: None,
            project: self.spec.project.clone(),
            location: self.spec.location.clone(),
            datasets: vec![self.spec.dataset.clone()],
            views,
            notes: Vec::new(),
            owns_datasets: true,
            retired: Vec::new(),
        }
    }

    /// The consumer dataset's access entries: every reader as READER.
    pub fn reader_entries(&self) -> Vec<AclEntry> {
        self.spec
            .readers
            .iter()
            .filter_map(|r| {
                let lower = |s: &String| s.trim().to_lowercase();
                let p = if let Some(u) = r.user.as_ref().or(r.service_account.as_ref()) {
                    Principal::User(lower(u))
                } else if let Some(g) = &r.group {
                    Principal::Group(lower(g))
                } else {
                    Principal::Domain(lower(r.domain.as_ref()?))
                };
                Some(AclEntry::new("READER", p))
            })
            .collect()
    }

    /// IAM members that get `roles/bigquery.jobUser` on the consumer project.
    pub fn iam_members(&self) -> BTreeSet<String> {
        self.spec
            .readers
            .iter()
            .filter_map(|r| {
                let lower = |s: &String| s.trim().to_lowercase();
                Some(if let Some(u) = &r.user {
                    format!("user:{}", lower(u))
                } else if let Some(s) = &r.service_account {
                    format!("serviceAccount:{}", lower(s))
                } else if let Some(g) = &r.group {
                    format!("group:{}", lower(g))
                } else {
                    format!("domain:{}", lower(r.domain.as_ref()?))
                })
            })
            .collect()
    }

    /// The authorizations the views need: each on its source's dataset.
    pub fn authorizations(&self) -> Vec<(DatasetKey, AclEntry)> {
        self.views
            .iter()
            .map(|v| ((&v.source).into(), AclEntry::authorized_view(&v.view)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LoadReport, load_str};

    #[test]
    fn resolves_layers_and_writes_sql() {
        let text = r#"
apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {name: pay, namespace: ns}
spec:
  source: {uri: "gs://b/p/", format: NEWLINE_DELIMITED_JSON}
  destination: {project: data-eng, dataset: payments, table: tx}
  schema: [{name: id, type: INT64}, {name: amount, type: FLOAT64}, {name: email, type: STRING}, {name: t, type: TIMESTAMP}]
  primaryKey: [id]
  versionColumn: t
  piiColumns: [email]
  views: {full: true, clean: true}
---
apiVersion: bqsteward.dev/v1alpha1
kind: ConsumerProject
metadata: {name: mkt, namespace: ns}
spec:
  project: mkt-analytics
  dataset: shared
  readers: [{group: Mkt@Acme.com}, {serviceAccount: sa@mkt.iam.gserviceaccount.com}]
  views:
    - {name: tx, source: {ingestedTable: pay}, columns: [id, amount], rowFilter: "amount > 0"}
    - {name: raw, source: {table: other-proj.ds.tbl}, columns: [a]}
    - {name: all, source: {ingestedTable: pay}}
"#;
        let mut report = LoadReport::default();
        load_str("m.yaml", text, &mut report);
        let Resource::ConsumerProject(cp) = &report.resources[1].resource else {
            panic!()
        };
        let t = ConsumerTarget::resolve("ns/mkt", "ns", &cp.spec, &report.resources).unwrap();
        assert_eq!(t.views[0].source.to_string(), "data-eng.payments__views_clean.tx");
        assert_eq!(
            t.views[0].sql(),
            "SELECT\n  `id`,\n  `amount`\nFROM `data-eng.payments__views_clean.tx`\nWHERE (amount > 0)\n"
        );
        assert_eq!(t.views[1].sql(), "SELECT\n  `a`\nFROM `other-proj.ds.tbl`\n");
        // Without `columns`: the layer's declared columns, never `*` (a column dropped from the
        // schema stays in the full view and must not reach consumers).
        let all = t.views[2].sql();
        assert!(all.starts_with("SELECT\n  `id`,\n") && !all.contains('*'), "{all}");
        assert!(
            t.views[0]
                .source_columns
                .as_ref()
                .unwrap()
                .contains(&"_bqsteward_loaded_at".to_string())
        );
        assert_eq!(
            t.iam_members().into_iter().collect::<Vec<_>>(),
            ["group:mkt@acme.com", "serviceAccount:sa@mkt.iam.gserviceaccount.com"]
        );
        let auth = t.authorizations();
        assert_eq!(auth[0].0.to_string(), "data-eng.payments__views_clean");
        assert_eq!(auth[0].1.principal, Principal::View("mkt-analytics.shared.tx".into()));
        let l = t.layout();
        assert!(l.owns_datasets);
        assert_eq!(l.views.len(), 3);
    }
}
