//! Planning the view layers against what exists: pure.

use super::layout::{DesiredView, LABEL_SQL, Layout};
use crate::cloud::bqtypes::{TableInfo, TableRef};
use std::collections::BTreeMap;

/// A live view (or whatever holds its name).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedView {
    /// The table resource.
    pub info: TableInfo,
    /// The view's SQL: from the table resource, else from `INFORMATION_SCHEMA.VIEWS`; `None`
    /// when neither said.
    pub sql: Option<String>,
    /// `sql` is verbatim (the table resource). bqemulator's `INFORMATION_SCHEMA.VIEWS` drops the
    /// quotes of string literals, so SQL read there is compared loosely (see [`loose`]).
    pub sql_exact: bool,
}

/// SQL without quote characters and with whitespace collapsed: how SQL read back from
/// bqemulator's `INFORMATION_SCHEMA.VIEWS` (which drops quotes) is compared. The label hash still
/// catches what this misses.
pub fn loose(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(['\'', '"'], "")
}

/// What exists of a layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedLayout {
    /// Layer dataset → its location (`None`: missing).
    pub datasets: BTreeMap<String, Option<String>>,
    /// Parallel to `Layout::views`: the live view, if any.
    pub views: Vec<Option<ObservedView>>,
    /// Whether the raw table exists (views cannot be created before it).
    pub source_exists: bool,
    /// Views bqsteward made for this resource that it no longer declares.
    pub strays: Vec<TableRef>,
    /// The salt table, when the layout has one and it exists.
    pub salt: Option<TableInfo>,
}

/// What happens to one view.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewChange {
    /// Create it.
    Create,
    /// Its SQL differs from the declared one: replace it in place.
    Update {
        /// The live SQL, when readable (the diff's left side).
        live_sql: Option<String>,
        /// The view was not made by bqsteward (no `managed-by` label): it is taken over.
        adopt: bool,
    },
    /// Only labels or the description differ.
    Relabel,
    /// As declared.
    Unchanged,
}

/// The plan of one view.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewPlan {
    /// The declared view.
    pub view: DesiredView,
    /// What happens.
    pub change: ViewChange,
    /// Etag of the live view (guards the update).
    pub etag: Option<String>,
}

/// The plan of one IngestedTable's view layers.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutPlan {
    /// `IngestedTable namespace/name`.
    pub resource: String,
    /// Project of the layer datasets.
    pub project: String,
    /// Their location.
    pub location: String,
    /// Layer datasets to create.
    pub create_datasets: Vec<String>,
    /// Every declared view.
    pub views: Vec<ViewPlan>,
    /// Why nothing of this layout may be written. Non-empty = refused.
    pub refusals: Vec<String>,
    /// Things to know.
    pub notes: Vec<String>,
    /// The raw table does not exist yet: the views wait for the first load.
    pub waiting_for_table: bool,
    /// Views bqsteward made that are no longer declared: deleted.
    pub delete: Vec<TableRef>,
    /// The salt table to create (random, generated inside BigQuery).
    pub create_salt: Option<TableRef>,
}

impl LayoutPlan {
    /// Whether applying would write something.
    pub fn has_changes(&self) -> bool {
        !self.create_datasets.is_empty()
            || !self.delete.is_empty()
            || self.create_salt.is_some()
            || self.views.iter().any(|v| v.change != ViewChange::Unchanged)
    }

    /// Whether the plan is refused.
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }
}

/// Compares the layout with what exists.
pub fn plan(layout: &Layout, observed: &ObservedLayout) -> LayoutPlan {
    let mut p = LayoutPlan {
        resource: layout.resource.clone(),
        project: layout.project.clone(),
        location: layout.location.clone(),
        create_datasets: Vec::new(),
        views: Vec::new(),
        refusals: Vec::new(),
        notes: layout.notes.clone(),
        waiting_for_table: !observed.source_exists,
        delete: observed.strays.clone(),
        create_salt: None,
    };
    for ds in &layout.datasets {
        match observed.datasets.get(ds) {
            Some(Some(loc)) if !loc.eq_ignore_ascii_case(&layout.location) => p.refusals.push(format!(
                "dataset {}.{ds} is in location {loc}, but the table is in {}: a view cannot read across locations; \
                 delete or rename that dataset, or set spec.views suffixes to use another one",
                layout.project, layout.location
            )),
            Some(Some(_)) => {}
            _ => p.create_datasets.push(ds.clone()),
        }
    }
    if let Some(salt) = &layout.salt {
        match &observed.salt {
            None => p.create_salt = Some(salt.clone()),
            Some(o) if !o.kind.is_empty() && o.kind != "TABLE" => p.refusals.push(format!(
                "{salt} is a {} where bqsteward keeps the salt of hashed columns; delete it (it is not bqsteward's)",
                o.kind
            )),
            Some(_) => {}
        }
    }
    for (i, want) in layout.views.iter().enumerate() {
        let live = observed.views.get(i).and_then(Option::as_ref);
        let (change, etag) = match live {
            None => (ViewChange::Create, None),
            Some(o) if o.info.is_view() && !o.info.belongs_to(&layout.resource) && !adoptable(layout, &o.info) => {
                p.refusals.push(refusal(layout, want, &o.info));
                (ViewChange::Unchanged, None)
            }
            Some(o) if !o.info.is_view() => {
                p.refusals.push(format!(
                    "{} is a {} where the {} view belongs; bqsteward never drops a table: rename or delete it",
                    want.def.table,
                    if o.info.kind.is_empty() { "TABLE" } else { &o.info.kind },
                    want.layer.layer.as_str()
                ));
                (ViewChange::Unchanged, None)
            }
            Some(o) => {
                let managed = o.info.belongs_to(&layout.resource);
                let label_differs = o.info.labels.get(LABEL_SQL) != Some(&want.hash);
                let sql_differs = match &o.sql {
                    Some(sql) if o.sql_exact => *sql != want.def.sql,
                    Some(sql) => loose(sql) != loose(&want.def.sql) || label_differs,
                    // SQL not readable: trust the hash bqsteward wrote, if it wrote one.
                    None => label_differs,
                };
                let change = if sql_differs || !managed {
                    ViewChange::Update {
                        live_sql: o.sql.clone(),
                        adopt: !managed,
                    }
                } else if o.info.labels != want.def.labels
                    || o.info.description.as_deref() != Some(&want.def.description)
                {
                    ViewChange::Relabel
                } else {
                    ViewChange::Unchanged
                };
                (change, Some(o.info.etag.clone()))
            }
        };
        p.views.push(ViewPlan {
            view: want.clone(),
            change,
            etag,
        });
    }
    p
}

/// Whether the resource may take over a live view bqsteward did not make for it: only with the
/// adopt annotation, and never a view whose owner label names another resource.
fn adoptable(layout: &Layout, live: &TableInfo) -> bool {
    layout.adopt && !live.labels.contains_key(super::layout::LABEL_OWNER)
}

/// Why a live view that is not this resource's stays untouched.
fn refusal(layout: &Layout, want: &DesiredView, live: &TableInfo) -> String {
    let t = &want.def.table;
    let layer = want.layer.layer.as_str();
    match live.labels.get(super::layout::LABEL_OWNER) {
        Some(o) => format!(
            "view {t} belongs to another bqsteward resource (label {}={o}); one view has one owner: choose another \
             name{} for the {layer} view",
            super::layout::LABEL_OWNER,
            if layer == "consumer" { "" } else { " or views suffix" }
        ),
        None if live.made_by_bqsteward() => format!(
            "view {t} was made by bqsteward for another resource (its description does not name {}); it is left \
             alone unless this resource adopts it with the annotation bqsteward.dev/adopt: \"true\"",
            layout.resource
        ),
        None => format!(
            "view {t} exists and was not made by bqsteward; it is left alone unless this resource adopts it with the \
             annotation bqsteward.dev/adopt: \"true\" (plan then shows the SQL it replaces)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ingested_table::IngestedTableSpec;
    use crate::views::layout::{LABEL_OWNER, layout};

    fn the_layout() -> Layout {
        let spec: IngestedTableSpec = serde_yaml::from_str(
            r#"
source: {uri: "gs://b/p/", format: NEWLINE_DELIMITED_JSON}
destination: {project: proj-1, dataset: pay, table: payments, location: EU}
schema: [{name: id, type: INT64}, {name: v, type: INT64}, {name: email, type: STRING}]
primaryKey: [id]
versionColumn: v
piiColumns: [email]
views: {full: true, clean: true}
"#,
        )
        .unwrap();
        layout("IngestedTable ns/pay", &spec, None)
    }

    fn live(v: &DesiredView, sql: Option<&str>) -> ObservedView {
        ObservedView {
            info: TableInfo {
                etag: "e1".into(),
                kind: "VIEW".into(),
                labels: v.def.labels.clone(),
                description: Some(v.def.description.clone()),
                ..TableInfo::default()
            },
            sql: sql.map(String::from),
            sql_exact: true,
        }
    }

    fn all_datasets(l: &Layout, loc: &str) -> BTreeMap<String, Option<String>> {
        l.datasets.iter().map(|d| (d.clone(), Some(loc.to_string()))).collect()
    }

    #[test]
    fn creates_what_is_missing() {
        let l = the_layout();
        let p = plan(&l, &ObservedLayout::default());
        assert_eq!(p.create_datasets, l.datasets);
        assert!(p.views.iter().all(|v| v.change == ViewChange::Create));
        assert!(p.waiting_for_table && p.has_changes() && !p.is_refused());
    }

    #[test]
    fn unchanged_drifted_and_unreadable_sql() {
        let l = the_layout();
        let (full, clean) = (&l.views[0], &l.views[1]);
        let observed = ObservedLayout {
            datasets: all_datasets(&l, "eu"),
            views: vec![Some(live(full, Some(&full.def.sql))), Some(live(clean, None))],
            source_exists: true,
            strays: Vec::new(),
            salt: None,
        };
        let p = plan(&l, &observed);
        assert!(!p.has_changes(), "{p:?}");

        // Edited by hand: the SQL differs although the label still carries the old hash.
        let edited = "SELECT 1 AS id";
        let observed = ObservedLayout {
            views: vec![Some(live(full, Some(edited))), Some(live(clean, None))],
            ..observed
        };
        let p = plan(&l, &observed);
        assert_eq!(
            p.views[0].change,
            ViewChange::Update {
                live_sql: Some(edited.into()),
                adopt: false
            }
        );
        assert_eq!(p.views[0].etag.as_deref(), Some("e1"));

        // SQL unreadable and the label hash is stale.
        let mut stale = live(clean, None);
        stale.info.labels.insert(LABEL_SQL.into(), "0".repeat(32));
        let p = plan(
            &l,
            &ObservedLayout {
                views: vec![Some(live(full, Some(&full.def.sql))), Some(stale)],
                ..observed.clone()
            },
        );
        assert!(matches!(p.views[1].change, ViewChange::Update { live_sql: None, .. }));

        // Same SQL, description edited: metadata only.
        let mut redescribed = live(full, Some(&full.def.sql));
        redescribed.info.description = Some("mine".into());
        let p = plan(
            &l,
            &ObservedLayout {
                views: vec![Some(redescribed), Some(live(clean, None))],
                ..observed
            },
        );
        assert_eq!(p.views[0].change, ViewChange::Relabel);
    }

    #[test]
    fn sql_read_without_quotes_compares_loosely() {
        let l = the_layout();
        let full = &l.views[0];
        let mut o = live(full, None);
        o.sql = Some(format!("{}  ", full.def.sql.replace('\'', "")));
        o.sql_exact = false;
        let observed = ObservedLayout {
            datasets: all_datasets(&l, "EU"),
            views: vec![Some(o.clone()), None],
            source_exists: true,
            strays: Vec::new(),
            salt: None,
        };
        assert_eq!(plan(&l, &observed).views[0].change, ViewChange::Unchanged);
        o.sql = Some("SELECT 1".into());
        let observed = ObservedLayout {
            views: vec![Some(o), None],
            ..observed
        };
        assert!(matches!(plan(&l, &observed).views[0].change, ViewChange::Update { .. }));
    }

    #[test]
    fn hand_made_views_only_with_adopt_and_refuses_tables_and_other_locations() {
        let mut l = the_layout();
        let (full, clean) = (l.views[0].clone(), l.views[1].clone());
        let mut hand_made = live(&full, Some("SELECT * FROM x"));
        hand_made.info.labels.clear();
        let mut table = live(&clean, None);
        table.info.kind = "TABLE".into();
        let mut datasets = all_datasets(&l, "EU");
        datasets.insert(l.datasets[1].clone(), Some("US".into()));
        let observed = ObservedLayout {
            datasets,
            views: vec![Some(hand_made), Some(table)],
            source_exists: true,
            strays: Vec::new(),
            salt: None,
        };
        let p = plan(&l, &observed);
        assert_eq!(p.views[0].change, ViewChange::Unchanged);
        assert_eq!(p.refusals.len(), 3, "{:?}", p.refusals);
        assert!(p.refusals[0].contains("location US"));
        assert!(p.refusals[1].contains("not made by bqsteward") && p.refusals[1].contains("bqsteward.dev/adopt"));
        assert!(p.refusals[2].contains("is a TABLE") && p.refusals[2].contains("never drops a table"));
        l.adopt = true;
        let p = plan(&l, &observed);
        assert!(matches!(p.views[0].change, ViewChange::Update { adopt: true, .. }));
        assert_eq!(p.refusals.len(), 2, "{:?}", p.refusals);
    }

    #[test]
    fn views_of_other_resources_are_never_taken_even_with_adopt() {
        let mut l = the_layout();
        l.adopt = true;
        let theirs = layout(
            "IngestedTable other/pay",
            &serde_yaml::from_str(
                "source: {uri: 'gs://b/p/', format: NEWLINE_DELIMITED_JSON}\ndestination: {project: proj-1, dataset: pay, table: payments}\nschema: [{name: id, type: INT64}]\nprimaryKey: [id]\nversionColumn: id\nviews: {full: true}\n",
            )
            .unwrap(),
            None,
        );
        let other = live(&theirs.views[0], Some(&theirs.views[0].def.sql));
        // Made before owner labels for another resource: its description names that one.
        let mut legacy_other = other.clone();
        legacy_other.info.labels.remove(LABEL_OWNER);
        // Made before owner labels for this resource: taken back, labels restored.
        let mut legacy_ours = live(&l.views[1], None);
        legacy_ours.info.labels.remove(LABEL_OWNER);
        let observed = ObservedLayout {
            datasets: all_datasets(&l, "EU"),
            views: vec![Some(other), Some(legacy_ours)],
            source_exists: true,
            strays: Vec::new(),
            salt: Some(TableInfo {
                kind: "TABLE".into(),
                ..TableInfo::default()
            }),
        };
        let p = plan(&l, &observed);
        assert_eq!(p.refusals.len(), 1, "{:?}", p.refusals);
        assert!(
            p.refusals[0].contains("belongs to another bqsteward resource"),
            "{:?}",
            p.refusals
        );
        assert_eq!(p.views[0].change, ViewChange::Unchanged);
        assert_eq!(p.views[1].change, ViewChange::Relabel);
        l.adopt = false;
        let p = plan(
            &l,
            &ObservedLayout {
                views: vec![Some(legacy_other), None],
                ..observed
            },
        );
        assert!(
            p.refusals[0].contains("made by bqsteward for another resource"),
            "{:?}",
            p.refusals
        );
    }

    #[test]
    fn salt_is_created_once_and_never_replaced_by_a_view() {
        let mut l = the_layout();
        l.salt = Some(TableRef::new("proj-1", "pay__views_full", "_bqsteward_salt"));
        let p = plan(&l, &ObservedLayout::default());
        assert_eq!(p.create_salt, l.salt);
        let observed = ObservedLayout {
            salt: Some(TableInfo {
                kind: "TABLE".into(),
                ..TableInfo::default()
            }),
            ..ObservedLayout::default()
        };
        assert_eq!(plan(&l, &observed).create_salt, None);
        let observed = ObservedLayout {
            salt: Some(TableInfo {
                kind: "VIEW".into(),
                ..TableInfo::default()
            }),
            ..ObservedLayout::default()
        };
        let p = plan(&l, &observed);
        assert!(p.is_refused() && p.refusals[0].contains("salt"), "{:?}", p.refusals);
    }
}
