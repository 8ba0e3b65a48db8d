//! The job configurations of a batch: the load job into staging and the query job that moves the
//! staging rows into the destination with the lineage columns. Pure.

use super::model::{Batch, BatchKind};
use super::table::{BATCH_COLUMN, LOADED_AT_COLUMN};
use crate::cloud::bqtypes::{Field, Param, TableRef, ident};
use crate::crd::ingested_table::{IngestedTableSpec, SourceFormat};

/// The `JobConfiguration` of a GoogleSQL query job with named parameters.
pub fn query_config(sql: &str, params: &[Param]) -> serde_json::Value {
    serde_json::json!({
        "query": {
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params.iter().map(Param::to_api).collect::<Vec<_>>(),
        },
        "labels": { "managed-by": "bqsteward" },
    })
}

/// The load job configuration of a batch.
pub fn load_config(spec: &IngestedTableSpec, fields: &[Field], b: &Batch, staging: &TableRef) -> serde_json::Value {
    let mut load = serde_json::json!({
        "sourceUris": b.files.iter().map(|f| f.uri.as_str()).collect::<Vec<_>>(),
        "sourceFormat": spec.source.format().as_bigquery(),
        "destinationTable": staging.to_api(),
        "writeDisposition": "WRITE_TRUNCATE",
        "createDisposition": "CREATE_IF_NEEDED",
        "schema": { "fields": fields },
        "maxBadRecords": spec.load_policy.max_bad_records,
        // Excluded columns (and a Delta table's columns not loaded) are dropped by ignoring every
        // undeclared field; otherwise an undeclared field is an error (quarantined as
        // IncompatibleSchema).
        "ignoreUnknownValues": !spec.excluded_columns.is_empty() || spec.source.is_delta(),
    });
    if spec.source.format() == SourceFormat::Csv {
        let csv = spec.source.csv.clone().unwrap_or_default();
        load["skipLeadingRows"] = csv.skip_leading_rows.into();
        load["allowQuotedNewlines"] = csv.allow_quoted_newlines.into();
        if let Some(d) = csv.field_delimiter {
            load["fieldDelimiter"] = d.into();
        }
    }
    serde_json::json!({ "load": load, "labels": { "managed-by": "bqsteward", "bqsteward-batch": b.id } })
}

/// The statement that moves staging rows into the destination, adding lineage:
/// append (`INSERT … SELECT`), reload (`MERGE` deleting the replaced batches' rows) or snapshot
/// (`MERGE` deleting every row). Column names are validated identifiers, quoted; values are
/// parameters.
/// The rows a [`BatchKind::Day`] batch replaces: `column` (of BigQuery type `type_`) in `[lo, hi)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Watermark column.
    pub column: String,
    /// Its BigQuery type (TIMESTAMP, DATETIME or DATE).
    pub type_: &'static str,
    /// First value of the day (UTC text).
    pub lo: String,
    /// First value after it.
    pub hi: String,
}

pub fn move_sql(
    dest: &TableRef,
    fields: &[Field],
    b: &Batch,
    stagings: &[TableRef],
    window: Option<&Window>,
) -> (String, Vec<Param>) {
    let cols: Vec<String> = fields.iter().map(|f| ident(&f.name)).collect();
    let list = cols.join(", ");
    let source = stagings
        .iter()
        .map(|s| {
            format!(
                "SELECT {list}, @batch_id AS {BATCH_COLUMN}, CURRENT_TIMESTAMP() AS {LOADED_AT_COLUMN} FROM {}",
                s.sql()
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n");
    let all = format!("{list}, {BATCH_COLUMN}, {LOADED_AT_COLUMN}");
    let mut params = vec![Param::string("batch_id", &b.id)];
    let sql = match b.kind {
        BatchKind::Append | BatchKind::Delta => format!("INSERT INTO {} ({all})\n{source}", dest.sql()),
        BatchKind::Reload | BatchKind::Snapshot | BatchKind::Day => {
            let values = std::iter::once(&list)
                .flat_map(|_| cols.iter().map(|c| format!("S.{c}")))
                .chain([format!("S.{BATCH_COLUMN}"), format!("S.{LOADED_AT_COLUMN}")])
                .collect::<Vec<_>>()
                .join(", ");
            let delete = match (b.kind, window) {
                (BatchKind::Reload, _) => {
                    params.push(Param::strings("replaces", &b.replaces));
                    format!("WHEN NOT MATCHED BY SOURCE AND T.{BATCH_COLUMN} IN UNNEST(@replaces) THEN DELETE")
                }
                (BatchKind::Day, Some(w)) => {
                    params.push(Param::string("day_lo", &w.lo));
                    params.push(Param::string("day_hi", &w.hi));
                    let c = ident(&w.column);
                    format!(
                        "WHEN NOT MATCHED BY SOURCE AND T.{c} >= CAST(@day_lo AS {t}) AND T.{c} < CAST(@day_hi AS {t}) THEN DELETE",
                        t = w.type_
                    )
                }
                // A day without its window deletes nothing (never everything).
                (BatchKind::Day, None) => String::new(),
                (BatchKind::Snapshot | BatchKind::Append | BatchKind::Delta, _) => {
                    "WHEN NOT MATCHED BY SOURCE THEN DELETE".to_string()
                }
            };
            format!(
                "MERGE {} AS T\nUSING (\n{source}\n) AS S\nON FALSE\n{delete}\nWHEN NOT MATCHED THEN INSERT ({all}) VALUES ({values})",
                dest.sql()
            )
        }
    };
    (sql, params)
}

/// One landed Delta file of a version batch, loaded into its own staging table.
#[derive(Clone, Debug)]
pub struct DeltaPart<'a> {
    /// Its staging table.
    pub staging: TableRef,
    /// The Delta file (lineage).
    pub source: &'a str,
    /// Partition values (not in the file).
    pub partition: &'a std::collections::BTreeMap<String, Option<String>>,
}

/// The statement of one Delta version: the rows of `deletes` (lineage) leave the table — all rows
/// when `replaces` (a first load) — and each part's rows come in tagged with their Delta file, in
/// one statement. `None`: the version changes no rows.
pub fn delta_sql(
    dest: &TableRef,
    fields: &[Field],
    b: &Batch,
    parts: &[DeltaPart<'_>],
    deletes: &[String],
    replaces: bool,
) -> Option<(String, Vec<Param>)> {
    use super::table::SOURCE_FILE_COLUMN;
    let mut params = vec![Param::string("batch_id", &b.id)];
    let delete_when = if replaces {
        "TRUE".to_string()
    } else {
        if deletes.is_empty() && parts.is_empty() {
            return None;
        }
        params.push(Param::strings("deletes", deletes));
        format!("{} IN UNNEST(@deletes)", ident(SOURCE_FILE_COLUMN))
    };
    if parts.is_empty() {
        return Some((format!("DELETE FROM {} WHERE {delete_when}", dest.sql()), params));
    }
    let cols: Vec<String> = fields.iter().map(|f| ident(&f.name)).collect();
    let all = format!(
        "{}, {BATCH_COLUMN}, {LOADED_AT_COLUMN}, {}",
        cols.join(", "),
        ident(SOURCE_FILE_COLUMN)
    );
    let mut selects = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let mut exprs = Vec::new();
        for (j, f) in fields.iter().enumerate() {
            let value = p
                .partition
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                .map(|(_, v)| v);
            exprs.push(match value {
                None => ident(&f.name),
                Some(None) => format!("CAST(NULL AS {}) AS {}", f.type_, ident(&f.name)),
                Some(Some(v)) => {
                    let name = format!("p{i}_{j}");
                    params.push(Param::string(&name, v));
                    format!("CAST(@{name} AS {}) AS {}", f.type_, ident(&f.name))
                }
            });
        }
        params.push(Param::string(&format!("file_{i}"), p.source));
        selects.push(format!(
            "SELECT {}, @batch_id AS {BATCH_COLUMN}, CURRENT_TIMESTAMP() AS {LOADED_AT_COLUMN}, @file_{i} AS {} FROM {}",
            exprs.join(", "),
            ident(SOURCE_FILE_COLUMN),
            p.staging.sql()
        ));
    }
    let values = fields
        .iter()
        .map(|f| format!("S.{}", ident(&f.name)))
        .chain([
            format!("S.{BATCH_COLUMN}"),
            format!("S.{LOADED_AT_COLUMN}"),
            format!("S.{}", ident(SOURCE_FILE_COLUMN)),
        ])
        .collect::<Vec<_>>()
        .join(", ");
    let delete = if replaces {
        "WHEN NOT MATCHED BY SOURCE THEN DELETE".to_string()
    } else if deletes.is_empty() {
        String::new()
    } else {
        format!("WHEN NOT MATCHED BY SOURCE AND T.{delete_when} THEN DELETE")
    };
    Some((
        format!(
            "MERGE {} AS T\nUSING (\n{}\n) AS S\nON FALSE\n{delete}\nWHEN NOT MATCHED THEN INSERT ({all}) VALUES ({values})",
            dest.sql(),
            selects.join("\nUNION ALL\n")
        ),
        params,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::model::SourceFile;
    use crate::ingest::table;

    #[test]
    fn excluded_columns_are_not_in_the_load_schema_and_unknown_fields_are_dropped() {
        let spec: IngestedTableSpec = serde_yaml::from_str(
            r#"
source: {uri: "gs://b/p/", format: NEWLINE_DELIMITED_JSON}
destination: {project: proj-1, dataset: pay, table: payments}
schema: [{name: id, type: INT64}, {name: email, type: STRING}]
excludedColumns: [card_number]
"#,
        )
        .unwrap();
        let fields = table::load_fields(&spec);
        let file = SourceFile {
            uri: "gs://b/p/a.json".into(),
            generation: 1,
            size: 10,
            updated_ms: 0,
        };
        let b = Batch::new("t", BatchKind::Append, vec![file], "", Vec::new());
        let cfg = load_config(&spec, &fields, &b, &TableRef::new("proj-1", "_bqsteward_us", "stg_x"));
        let names: Vec<&str> = cfg["load"]["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["id", "email"]);
        assert_eq!(cfg["load"]["ignoreUnknownValues"], true);
        assert_eq!(cfg["load"]["destinationTable"]["tableId"], "stg_x");
    }
}
