//! The destination table: its definition from the spec, and how the live schema must change.

use crate::cloud::bqtypes::{Field, LABEL_MANAGED_BY, TableDef, TableInfo, TableRef, canonical_type};
use crate::crd::ingested_table::{ColumnMode, IngestedTableSpec};
use std::collections::BTreeMap;

/// Lineage column: the batch that brought the row.
pub const BATCH_COLUMN: &str = "_bqsteward_batch_id";
/// Lineage column: when the row was moved into the table.
pub const LOADED_AT_COLUMN: &str = "_bqsteward_loaded_at";
/// Lineage column of Delta sources: the Delta data file (`s3://…`) each row came from.
pub const SOURCE_FILE_COLUMN: &str = "_bqsteward_source_file";

/// The columns files are loaded with (the declared schema, in order).
pub fn load_fields(spec: &IngestedTableSpec) -> Vec<Field> {
    spec.schema
        .iter()
        .map(|c| Field {
            name: c.name.clone(),
            type_: c.type_.canonical().into(),
            mode: match c.mode {
                ColumnMode::Nullable => "NULLABLE",
                ColumnMode::Required => "REQUIRED",
                ColumnMode::Repeated => "REPEATED",
            }
            .into(),
            description: c.description.clone(),
        })
        .collect()
}

/// The destination's columns: declared + lineage.
pub fn table_fields(spec: &IngestedTableSpec) -> Vec<Field> {
    let mut f = load_fields(spec);
    f.push(Field {
        description: Some(
            "bqsteward: id of the load batch that brought this row (see _bqsteward_<location>.load_batches)".into(),
        ),
        ..Field::new(BATCH_COLUMN, "STRING", "NULLABLE")
    });
    f.push(Field {
        description: Some("bqsteward: when this row was moved into the table".into()),
        ..Field::new(LOADED_AT_COLUMN, "TIMESTAMP", "NULLABLE")
    });
    if spec.source.is_delta() {
        f.push(Field {
            description: Some("bqsteward: the Delta data file (s3://…) this row came from".into()),
            ..Field::new(SOURCE_FILE_COLUMN, "STRING", "NULLABLE")
        });
    }
    f
}

pub use crate::cloud::bqtypes::LABEL_OWNER;
/// Annotation by which an IngestedTable takes over an existing table bqsteward did not create.
pub const ANNOTATION_ADOPT: &str = "bqsteward.dev/adopt";

/// The [`LABEL_OWNER`] value of resource `namespace/name`.
pub fn owner_label(resource: &str) -> String {
    crate::cloud::bqtypes::owner_value(&format!("IngestedTable {resource}"))
}

/// Why resource `namespace/name` may not load into the live destination, if it may not. bqsteward
/// writes only into a table it created for this resource (its [`LABEL_OWNER`] label), into a table
/// it created before owner labels existed (`managed-by` only), or into a table the resource adopts
/// explicitly (annotation [`ANNOTATION_ADOPT`]); never into a view, nor into another resource's
/// table. Pure.
pub fn ownership(resource: &str, adopt: bool, table: &TableRef, live: Option<&TableInfo>) -> Option<String> {
    let info = live?;
    if !info.kind.is_empty() && info.kind != "TABLE" {
        return Some(format!(
            "destination {table} is a {}, not a table: bqsteward loads only into tables it owns; choose another \
             destination",
            info.kind
        ));
    }
    match info.labels.get(LABEL_OWNER) {
        Some(o) if *o == owner_label(resource) => None,
        Some(o) => Some(format!(
            "destination {table} belongs to another bqsteward resource (label {LABEL_OWNER}={o}); one table has one \
             IngestedTable: choose another destination"
        )),
        None if info.made_by_bqsteward() || adopt => None,
        None => Some(format!(
            "destination {table} exists and was not created by bqsteward; nothing is loaded into it unless this \
             IngestedTable adopts it explicitly with the annotation {ANNOTATION_ADOPT}: \"true\""
        )),
    }
}

/// Why resource `namespace/name` must stamp its owner label on the live destination before
/// loading, if it must: the table has no owner label yet and the resource may use it (made by
/// bqsteward before owner labels existed, or adopted). Once stamped, no other resource can load
/// into it. Pure.
pub fn claim(resource: &str, adopt: bool, table: &TableRef, live: Option<&TableInfo>) -> Option<String> {
    let info = live?;
    if info.labels.contains_key(LABEL_OWNER) || ownership(resource, adopt, table, live).is_some() {
        return None;
    }
    Some(if info.made_by_bqsteward() {
        "made by bqsteward before owner labels existed".to_string()
    } else {
        format!("adopted with the annotation {ANNOTATION_ADOPT}")
    })
}

/// The label marking column `name` as once listed in `piiColumns` (label keys cannot hold every
/// column name, so a hash of the lowercased name). Set on the raw table and never removed: a
/// column taken out of `piiColumns` stays out of the clean view until the IngestedTable releases
/// it with the annotation `bqsteward.dev/allow-pii: "<column>, …"`.
pub fn pii_label(name: &str) -> String {
    format!(
        "bqsteward-pii-{}",
        crate::ingest::model::short_hash(&name.to_lowercase())
    )
}

/// Columns of the live table once marked as PII that `spec` no longer lists in `piiColumns` and
/// that `released` (the annotation's columns, lowercase) does not release. Pure.
pub fn held_pii(spec: &IngestedTableSpec, live: Option<&TableInfo>, released: &[String]) -> Vec<String> {
    let Some(info) = live else { return Vec::new() };
    spec.schema
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| info.labels.contains_key(&pii_label(n)))
        .filter(|n| !spec.pii_columns.iter().any(|p| p.eq_ignore_ascii_case(n)))
        .filter(|n| !released.contains(&n.to_lowercase()))
        .collect()
}

/// The PII columns of `spec` whose mark the live table lacks.
pub fn unmarked_pii(spec: &IngestedTableSpec, live: &TableInfo) -> Vec<String> {
    spec.pii_columns
        .iter()
        .filter(|c| !live.labels.contains_key(&pii_label(c)))
        .cloned()
        .collect()
}

/// The destination table to create for resource `namespace/name`.
pub fn table_def(spec: &IngestedTableSpec, table: TableRef, resource: &str) -> TableDef {
    let (time_partitioning, require) = match &spec.partitioning {
        Some(p) => {
            let mut v = serde_json::json!({
                "type": format!("{:?}", p.granularity).to_uppercase(),
                "field": p.column.clone().unwrap_or_else(|| LOADED_AT_COLUMN.into()),
            });
            if let Some(d) = p.expiration_days {
                v["expirationMs"] = serde_json::Value::String((i64::from(d) * 86_400_000).to_string());
            }
            (Some(v), p.require_partition_filter)
        }
        None => (None, false),
    };
    TableDef {
        table,
        fields: table_fields(spec),
        time_partitioning,
        clustering: (!spec.clustering.is_empty()).then(|| serde_json::json!({ "fields": spec.clustering })),
        require_partition_filter: require,
        labels: [
            (LABEL_MANAGED_BY.to_string(), "bqsteward".to_string()),
            (LABEL_OWNER.to_string(), owner_label(resource)),
        ]
        .into_iter()
        .chain(spec.pii_columns.iter().map(|c| (pii_label(c), "true".to_string())))
        .collect(),
        expiration_ms: None,
        description: None,
    }
}

/// How the live schema must change to hold the declared one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    /// The table does not exist: create it.
    Create,
    /// Nothing to do.
    None,
    /// Additive: new NULLABLE columns and/or REQUIRED columns relaxed to NULLABLE.
    Additive { add: Vec<Field>, relax: Vec<String> },
    /// Changes BigQuery cannot make in place; loads stop until the manifest or table is fixed.
    Incompatible(Vec<String>),
}

/// Compares the desired columns with the live ones (names case-insensitively, types canonical).
pub fn diff_schema(desired: &[Field], live: Option<&[Field]>) -> SchemaChange {
    let Some(live) = live else { return SchemaChange::Create };
    let by_name: BTreeMap<String, &Field> = live.iter().map(|f| (f.name.to_lowercase(), f)).collect();
    let mut add = Vec::new();
    let mut relax = Vec::new();
    let mut problems = Vec::new();
    for d in desired {
        match by_name.get(&d.name.to_lowercase()) {
            None if d.mode == "REQUIRED" => problems.push(format!(
                "column {} is new and REQUIRED; BigQuery can only add NULLABLE columns — declare it NULLABLE",
                d.name
            )),
            None => add.push(d.clone()),
            Some(l) => {
                if canonical_type(&l.type_) != canonical_type(&d.type_) {
                    problems.push(format!(
                        "column {} is {} in the table but declared {}; a type change needs a new table (or a reload into one)",
                        d.name, l.type_, d.type_
                    ));
                } else if l.mode != d.mode {
                    match (l.mode.as_str(), d.mode.as_str()) {
                        ("REQUIRED", "NULLABLE") => relax.push(d.name.clone()),
                        (from, to) => problems.push(format!(
                            "column {} is {from} in the table but declared {to}; only REQUIRED → NULLABLE can change in place",
                            d.name
                        )),
                    }
                }
            }
        }
    }
    let declared: std::collections::HashSet<String> = desired.iter().map(|f| f.name.to_lowercase()).collect();
    for l in live {
        if l.mode == "REQUIRED" && !declared.contains(&l.name.to_lowercase()) {
            problems.push(format!(
                "column {} is REQUIRED in the table but no longer declared; loads would fail — declare it again (NULLABLE to relax it)",
                l.name
            ));
        }
    }
    if !problems.is_empty() {
        SchemaChange::Incompatible(problems)
    } else if add.is_empty() && relax.is_empty() {
        SchemaChange::None
    } else {
        SchemaChange::Additive { add, relax }
    }
}

/// The live schema after an additive change: live columns (relaxed as asked) then the new ones.
pub fn merged_schema(live: &[Field], add: &[Field], relax: &[String]) -> Vec<Field> {
    let mut out: Vec<Field> = live
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if relax.iter().any(|r| r.eq_ignore_ascii_case(&f.name)) {
                f.mode = "NULLABLE".into();
            }
            f
        })
        .collect();
    out.extend(add.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_diffs() {
        let live = vec![
            Field::new("id", "INTEGER", "REQUIRED"),
            Field::new("name", "STRING", "NULLABLE"),
        ];
        let same = vec![
            Field::new("id", "INT64", "REQUIRED"),
            Field::new("NAME", "STRING", "NULLABLE"),
        ];
        assert_eq!(diff_schema(&same, Some(&live)), SchemaChange::None);
        assert_eq!(diff_schema(&same, None), SchemaChange::Create);
        let mut more = same.clone();
        more.push(Field::new("email", "STRING", "NULLABLE"));
        assert!(matches!(diff_schema(&more, Some(&live)), SchemaChange::Additive { add, .. } if add.len() == 1));
        let retyped = vec![
            Field::new("id", "STRING", "REQUIRED"),
            Field::new("name", "STRING", "NULLABLE"),
        ];
        assert!(
            matches!(diff_schema(&retyped, Some(&live)), SchemaChange::Incompatible(p) if p[0].contains("type change"))
        );
        let dropped = vec![Field::new("name", "STRING", "NULLABLE")];
        assert!(
            matches!(diff_schema(&dropped, Some(&live)), SchemaChange::Incompatible(p) if p[0].contains("no longer declared"))
        );
        let relaxed = vec![
            Field::new("id", "INT64", "NULLABLE"),
            Field::new("name", "STRING", "NULLABLE"),
        ];
        assert_eq!(
            diff_schema(&relaxed, Some(&live)),
            SchemaChange::Additive {
                add: vec![],
                relax: vec!["id".into()]
            }
        );
        let new_required = vec![
            Field::new("id", "INT64", "REQUIRED"),
            Field::new("x", "STRING", "REQUIRED"),
        ];
        assert!(matches!(
            diff_schema(&new_required, Some(&live)),
            SchemaChange::Incompatible(_)
        ));
    }
}
