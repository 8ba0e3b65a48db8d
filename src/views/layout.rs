//! The view layers an IngestedTable asks for: which datasets, which views, their SQL, and which
//! authorizations they need. Pure: a function of the spec and the live table's columns.

use super::sql::{self, CleanColumn};
use crate::access::{AclEntry, DatasetKey};
use crate::cloud::bqtypes::{Field, TableRef, ViewDef};
use crate::crd::ingested_table::{ColumnMode, IngestedTableSpec};
use crate::ingest::table::{BATCH_COLUMN, LOADED_AT_COLUMN, SOURCE_FILE_COLUMN};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label holding the hash of the SQL bqsteward wrote (drift check where the API does not return
/// view SQL).
pub const LABEL_SQL: &str = "bqsteward-sql";
pub use crate::cloud::bqtypes::{LABEL_MANAGED_BY, LABEL_OWNER};

/// A view layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Layer {
    /// Latest row per primary key, every column (PII included), lineage visible.
    Full,
    /// The full layer without PII (dropped or hashed) and without private lineage.
    Clean,
    /// A view of a ConsumerProject.
    Consumer,
}

impl Layer {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Full => "full",
            Layer::Clean => "clean",
            Layer::Consumer => "consumer",
        }
    }
}

/// Where a layer's view lives and what it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRef {
    /// Which layer.
    pub layer: Layer,
    /// The view.
    pub view: TableRef,
    /// What it reads: the raw table (full) or the full view (clean).
    pub source: TableRef,
}

impl LayerRef {
    /// The access entry that authorizes this view on its source's dataset.
    pub fn authorization(&self) -> (DatasetKey, AclEntry) {
        ((&self.source).into(), AclEntry::authorized_view(&self.view))
    }
}

/// The layers a spec enables, in creation order (full before clean: clean reads full).
pub fn layers(spec: &IngestedTableSpec) -> Vec<LayerRef> {
    let d = &spec.destination;
    let raw = TableRef::new(&d.project, &d.dataset, &d.table);
    let full = TableRef::new(
        &d.project,
        &format!("{}{}", d.dataset, spec.views.full_suffix()),
        &d.table,
    );
    let clean = TableRef::new(
        &d.project,
        &format!("{}{}", d.dataset, spec.views.clean_suffix()),
        &d.table,
    );
    let mut out = Vec::new();
    if spec.views.full {
        out.push(LayerRef {
            layer: Layer::Full,
            view: full.clone(),
            source: raw,
        });
        if spec.views.clean {
            out.push(LayerRef {
                layer: Layer::Clean,
                view: clean,
                source: full,
            });
        }
    }
    out
}

/// One view bqsteward wants.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredView {
    /// Which layer, where, reading what.
    pub layer: LayerRef,
    /// The view to write (SQL, labels with the SQL hash, description).
    pub def: ViewDef,
    /// Hash of `def.sql` (also in the `bqsteward-sql` label).
    pub hash: String,
}

impl DesiredView {
    /// A view bqsteward owns for `resource` (`Kind namespace/name`): `sql` hashed into the
    /// `bqsteward-sql` label next to `managed-by` and the owner label.
    pub fn new(resource: &str, layer: LayerRef, sql: String, description: String) -> DesiredView {
        let hash = sql_hash(&sql);
        DesiredView {
            def: ViewDef {
                table: layer.view.clone(),
                sql,
                labels: BTreeMap::from([
                    (LABEL_MANAGED_BY.to_string(), "bqsteward".to_string()),
                    (LABEL_OWNER.to_string(), crate::cloud::bqtypes::owner_value(resource)),
                    (LABEL_SQL.to_string(), hash.clone()),
                ]),
                description,
            },
            hash,
            layer,
        }
    }
}

/// Everything one IngestedTable wants in its view layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// `Kind namespace/name` (`IngestedTable …` or `ConsumerProject …`): named by the owner label
    /// and the description of every view.
    pub resource: String,
    /// The resource takes over existing views bqsteward did not make for it (annotation
    /// `bqsteward.dev/adopt: "true"`); never views another resource owns.
    pub adopt: bool,
    /// The salt table of the hashed columns, when the clean layer hashes any (created if missing).
    pub salt: Option<TableRef>,
    /// Project of every layer dataset.
    pub project: String,
    /// Location every layer dataset must have (the destination's).
    pub location: String,
    /// Layer datasets, in creation order.
    pub datasets: Vec<String>,
    /// The views, full before clean.
    pub views: Vec<DesiredView>,
    /// Things a reviewer should know (columns left out of a layer and why).
    pub notes: Vec<String>,
    /// The datasets belong to this resource alone: views in them that bqsteward made and that are
    /// no longer declared are deleted (a ConsumerProject's dataset; not the shared layer datasets).
    pub owns_datasets: bool,
    /// Views of layers this resource no longer enables: deleted if bqsteward made them for this
    /// resource (label and description say so).
    pub retired: Vec<TableRef>,
}

/// The columns a layer's view exposes by the spec alone (undeclared live columns aside): what a
/// ConsumerProject may select from it.
pub fn layer_columns(spec: &IngestedTableSpec, layer: Layer) -> Vec<String> {
    let declared = spec.schema.iter().map(|c| c.name.clone());
    match layer {
        Layer::Full => declared
            .chain(spec.source.is_delta().then(|| SOURCE_FILE_COLUMN.to_string()))
            .chain([BATCH_COLUMN.to_string(), LOADED_AT_COLUMN.to_string()])
            .collect(),
        Layer::Clean => declared
            .filter(|n| !contains(&spec.pii_columns, n) || contains(&spec.hashed_pii_columns, n))
            .chain([LOADED_AT_COLUMN.to_string()])
            .collect(),
        Layer::Consumer => Vec::new(),
    }
}

/// PII columns a layer's view shows in the clear: every PII column in the full layer (hashed ones
/// too — they are only hashed in the clean layer), none in the clean layer.
pub fn layer_pii(spec: &IngestedTableSpec, layer: Layer) -> Vec<String> {
    match layer {
        Layer::Full => spec.pii_columns.clone(),
        Layer::Clean | Layer::Consumer => Vec::new(),
    }
}

/// Hash of a view's SQL as it goes in the label (label values: at most 63 lowercase characters).
pub fn sql_hash(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))[..32].to_string()
}

fn contains(list: &[String], name: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(name))
}

/// The layout of `spec`'s views. `live` is the raw table's current columns (None before it
/// exists): columns still in the table but no longer declared stay in the full view so queries
/// keep working, and are left out of the clean view (bqsteward cannot tell whether they hold PII).
pub fn layout(resource: &str, spec: &IngestedTableSpec, live: Option<&[Field]>) -> Layout {
    let d = &spec.destination;
    let mut notes = Vec::new();
    let lineage = [BATCH_COLUMN, LOADED_AT_COLUMN];
    // A Delta source's rows also say which Delta file they came from (full view only).
    let source_file: &[&str] = if spec.source.is_delta() {
        &[SOURCE_FILE_COLUMN]
    } else {
        &[]
    };
    let declared: Vec<&str> = spec.schema.iter().map(|c| c.name.as_str()).collect();
    let mut undeclared: Vec<String> = Vec::new();
    for f in live.unwrap_or_default() {
        let name = f.name.as_str();
        if declared.iter().any(|c| c.eq_ignore_ascii_case(name))
            || lineage.iter().chain(source_file).any(|c| c.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if contains(&spec.excluded_columns, name) {
            notes.push(format!(
                "column {name:?} is in excludedColumns but exists in table {}.{}.{} (loaded before it was excluded): \
                 left out of every view; purge it with ALTER TABLE … DROP COLUMN",
                d.project, d.dataset, d.table
            ));
        } else {
            undeclared.push(name.to_string());
        }
    }
    if !undeclared.is_empty() && spec.views.full {
        notes.push(format!(
            "columns {undeclared:?} are in the table but no longer in spec.schema: kept in the full view so queries keep \
             working{}; declare them again (NULLABLE) to keep them in the clean view too",
            if spec.views.clean { ", left out of the clean view (bqsteward cannot tell whether they hold PII)" } else { "" }
        ));
    }

    let mut views = Vec::new();
    let mut datasets = Vec::new();
    let mut salt = None;
    for l in layers(spec) {
        let sql = match l.layer {
            Layer::Full => {
                let columns: Vec<String> = declared
                    .iter()
                    .map(|c| c.to_string())
                    .chain(undeclared.iter().cloned())
                    .chain(source_file.iter().map(|c| c.to_string()))
                    .chain(lineage.iter().map(|c| c.to_string()))
                    .collect();
                let version = spec.version_column.as_deref().unwrap_or_default();
                sql::dedup(&l.source, &columns, &spec.primary_key, version, lineage)
            }
            Layer::Clean => {
                let mut columns = Vec::new();
                for c in &spec.schema {
                    if contains(&spec.hashed_pii_columns, &c.name) {
                        columns.push(CleanColumn::Hash {
                            name: c.name.clone(),
                            type_: c.type_.canonical().to_string(),
                            repeated: c.mode == ColumnMode::Repeated,
                        });
                    } else if !contains(&spec.pii_columns, &c.name) {
                        columns.push(CleanColumn::Keep(c.name.clone()));
                    }
                }
                // When a row arrived is useful to everyone; which batch brought it is internal.
                columns.push(CleanColumn::Keep(LOADED_AT_COLUMN.to_string()));
                let salt_table = TableRef::new(&l.source.project, &l.source.dataset, sql::SALT_TABLE);
                if columns.iter().any(|c| matches!(c, CleanColumn::Hash { .. })) {
                    salt = Some(salt_table.clone());
                }
                sql::clean(&l.source, &columns, &salt_table)
            }
            Layer::Consumer => continue,
        };
        let description = match l.layer {
            Layer::Full => format!(
                "Latest row of {} per {} (greatest {}). Managed by bqsteward ({resource}): edits are reverted.",
                l.source,
                spec.primary_key.join(", "),
                spec.version_column.as_deref().unwrap_or_default()
            ),
            Layer::Clean => format!(
                "{} without personal data. Managed by bqsteward ({resource}): edits are reverted.",
                l.source
            ),
            Layer::Consumer => continue,
        };
        if !datasets.contains(&l.view.dataset) {
            datasets.push(l.view.dataset.clone());
        }
        views.push(DesiredView::new(resource, l, sql, description));
    }
    Layout {
        resource: resource.to_string(),
        adopt: false,
        salt,
        project: d.project.clone(),
        location: d.location.clone(),
        datasets,
        views,
        notes,
        owns_datasets: false,
        retired: retired_layers(spec),
    }
}

/// The authorization entries of `deleted` views of layers `spec` no longer enables, each with the
/// dataset it is on (views that are not such layers are skipped).
pub fn retired_entries(spec: &IngestedTableSpec, deleted: &[TableRef]) -> Vec<(DatasetKey, AclEntry)> {
    let known = retired_authorizations(spec);
    deleted
        .iter()
        .filter_map(|v| {
            known
                .iter()
                .find(|(r, _)| r == v)
                .map(|(_, k)| (k.clone(), AclEntry::authorized_view(v)))
        })
        .collect()
}

/// Where the views of layers `spec` does not enable would be.
fn retired_layers(spec: &IngestedTableSpec) -> Vec<TableRef> {
    retired_authorizations(spec).into_iter().map(|(v, _)| v).collect()
}

/// The views of layers `spec` does not enable, and the dataset each would be authorized on
/// (clean on the full layer's dataset, full on the primary dataset), clean first.
pub fn retired_authorizations(spec: &IngestedTableSpec) -> Vec<(TableRef, DatasetKey)> {
    let d = &spec.destination;
    let full_ds = format!("{}{}", d.dataset, spec.views.full_suffix());
    let key = |dataset: &str| DatasetKey {
        project: d.project.clone(),
        dataset: dataset.to_string(),
    };
    let mut out = Vec::new();
    if !spec.views.clean {
        let clean = TableRef::new(
            &d.project,
            &format!("{}{}", d.dataset, spec.views.clean_suffix()),
            &d.table,
        );
        out.push((clean, key(&full_ds)));
    }
    if !spec.views.full {
        out.push((TableRef::new(&d.project, &full_ds, &d.table), key(&d.dataset)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;

    fn spec(views: &str) -> IngestedTableSpec {
        serde_yaml::from_str(&format!(
            r#"
source: {{uri: "gs://b/p/", format: NEWLINE_DELIMITED_JSON}}
destination: {{project: proj-1, dataset: pay, table: payments}}
schema:
  - {{name: id, type: INT64}}
  - {{name: email, type: STRING}}
  - {{name: ssn, type: STRING}}
  - {{name: modify_time, type: TIMESTAMP}}
primaryKey: [id]
versionColumn: modify_time
piiColumns: [email, ssn]
hashedPiiColumns: [ssn]
excludedColumns: [card_number]
views: {views}
"#
        ))
        .unwrap()
    }

    #[test]
    fn layers_and_authorizations() {
        let s = spec("{full: true, clean: true}");
        let l = layers(&s);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].view.to_string(), "proj-1.pay__views_full.payments");
        assert_eq!(l[0].source.to_string(), "proj-1.pay.payments");
        assert_eq!(l[1].view.to_string(), "proj-1.pay__views_clean.payments");
        assert_eq!(l[1].source.to_string(), "proj-1.pay__views_full.payments");
        let (key, entry) = l[1].authorization();
        assert_eq!(key.to_string(), "proj-1.pay__views_full");
        assert_eq!(
            entry.principal,
            Principal::View("proj-1.pay__views_clean.payments".into())
        );
        assert!(layers(&spec("{}")).is_empty());
        let custom = spec("{full: true, fullSuffix: _f}");
        assert_eq!(layers(&custom)[0].view.dataset, "pay_f");
    }

    #[test]
    fn clean_view_has_no_pii_and_hashes_what_is_asked() {
        let s = spec("{full: true, clean: true}");
        let l = layout("IngestedTable ns/pay", &s, None);
        assert_eq!(l.datasets, vec!["pay__views_full", "pay__views_clean"]);
        assert_eq!(
            l.salt.as_ref().map(|t| t.to_string()).as_deref(),
            Some("proj-1.pay__views_full._bqsteward_salt")
        );
        assert!(l.views[0].def.labels[LABEL_OWNER].starts_with("igt-"));
        let full = &l.views[0].def.sql;
        assert!(
            full.contains("`email`") && full.contains("`_bqsteward_batch_id`"),
            "{full}"
        );
        let clean = &l.views[1].def.sql;
        assert!(!clean.contains("`email`"), "{clean}");
        assert!(
            clean.contains(
                "TO_HEX(SHA256(CONCAT((SELECT `salt` FROM `proj-1.pay__views_full._bqsteward_salt`), CAST(`ssn` AS STRING)))) AS `ssn`"
            ),
            "{clean}"
        );
        assert!(!clean.contains("_bqsteward_batch_id"), "{clean}");
        assert!(clean.contains("`_bqsteward_loaded_at`"), "{clean}");
        assert!(!full.contains("card_number") && !clean.contains("card_number"));
        assert_eq!(l.views[0].def.labels[LABEL_SQL], sql_hash(full));
        assert_eq!(l.views[0].hash.len(), 32);
        // Nothing hashed: no salt.
        let mut plain = spec("{full: true, clean: true}");
        plain.hashed_pii_columns.clear();
        assert_eq!(layout("IngestedTable ns/pay", &plain, None).salt, None);
    }

    #[test]
    fn undeclared_live_columns_stay_in_full_only_and_excluded_ones_nowhere() {
        let s = spec("{full: true, clean: true}");
        let live = vec![
            Field::new("id", "INTEGER", "NULLABLE"),
            Field::new("legacy_code", "STRING", "NULLABLE"),
            Field::new("card_number", "STRING", "NULLABLE"),
            Field::new("_bqsteward_batch_id", "STRING", "NULLABLE"),
        ];
        let l = layout("ns/pay", &s, Some(&live));
        assert!(l.views[0].def.sql.contains("`legacy_code`"));
        assert!(!l.views[1].def.sql.contains("legacy_code"));
        assert!(!l.views[0].def.sql.contains("card_number"));
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(l.notes[0].contains("card_number") && l.notes[0].contains("DROP COLUMN"));
        assert!(l.notes[1].contains("legacy_code"));
        // The same spec and columns always give the same SQL (the drift check relies on it).
        assert_eq!(layout("ns/pay", &s, Some(&live)), l);
    }
}
