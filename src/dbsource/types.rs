//! The type mapping of database sources, for both engines: which BigQuery type a replica column
//! maps to (used by `import-schema` and the schema-drift check), how each column is encoded into
//! the JSON line the load reads (the database does the encoding: no row is decoded in Rust), and
//! which values BigQuery cannot hold (reported per row and column, never changed).
//!
//! | MySQL / MariaDB                      | PostgreSQL                       | BigQuery            |
//! |--------------------------------------|----------------------------------|---------------------|
//! | TINYINT(1), BOOL                     | boolean                          | BOOL                |
//! | TINYINT … BIGINT, YEAR               | smallint, integer, bigint        | INT64               |
//! | BIGINT UNSIGNED                      |                                  | NUMERIC             |
//! | DECIMAL(p,s), p−s ≤ 29 and s ≤ 9     | numeric(p,s), same bounds        | NUMERIC             |
//! | other DECIMAL                        | other numeric, unconstrained     | BIGNUMERIC          |
//! | FLOAT, DOUBLE                        | real, double precision           | FLOAT64 (NaN, ±Inf) |
//! | DATE                                 | date                             | DATE                |
//! | DATETIME                             | timestamp                        | DATETIME            |
//! | TIMESTAMP (read in UTC)              | timestamptz (read in UTC)        | TIMESTAMP           |
//! | TIME                                 | time                             | TIME                |
//! | CHAR, VARCHAR, TEXT…, ENUM, SET      | char, varchar, text, uuid, enums | STRING              |
//! | BINARY, VARBINARY, BLOB…             | bytea                            | BYTES               |
//! | JSON                                 | json, jsonb                      | JSON                |
//! |                                      | arrays of the above              | REPEATED element    |
//!
//! Not loadable, reported per row and column: MySQL zero dates (`0000-00-00`, zero month or day),
//! TIME outside 00:00–23:59:59, TINYINT(1) other than 0/1, invalid JSON text (MariaDB); PostgreSQL
//! `infinity` dates and times, years outside 1–9999, `24:00:00`, numeric `NaN` (also in arrays),
//! arrays with NULL elements or more than one dimension.

use crate::crd::{ColumnMode, ColumnType, DatabaseEngine};

/// Whether a watermark is a time or a growing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkKind {
    /// TIMESTAMP, DATETIME or DATE (the BigQuery type).
    Time(ColumnType),
    /// INT64 or NUMERIC.
    Key,
}

impl WatermarkKind {
    /// The kind of a declared watermark column of this type, if it can be one.
    pub fn of(t: ColumnType) -> Option<WatermarkKind> {
        match t.canonical() {
            "TIMESTAMP" | "DATETIME" | "DATE" => Some(WatermarkKind::Time(t)),
            "INT64" | "NUMERIC" | "BIGNUMERIC" => Some(WatermarkKind::Key),
            _ => None,
        }
    }
}

/// `schema.table` → (schema, table). Plain identifiers only (letters, digits, `_`, `$`), so a
/// manifest can never smuggle SQL into the query.
pub fn source_table(text: &str) -> Result<(String, String), String> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    match text.split_once('.') {
        Some((s, t)) if ok(s) && ok(t) => Ok((s.to_string(), t.to_string())),
        _ => Err(format!(
            "{text:?} is not schema.table: write e.g. payments.transactions (letters, digits, '_' or '$'; \
             for MySQL the schema is the database)"
        )),
    }
}

/// One column of the replica table, as its information schema describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceColumn {
    /// Name, exactly as on the replica.
    pub name: String,
    /// `DATA_TYPE`, lowercase (`udt_name` for PostgreSQL arrays and user-defined types).
    pub data_type: String,
    /// MySQL `COLUMN_TYPE` (e.g. `tinyint(1)`, `bigint(20) unsigned`); PostgreSQL: `ARRAY`,
    /// `USER-DEFINED` or the data type.
    pub column_type: String,
    /// Numeric precision and scale, when the type has them.
    pub precision: Option<i64>,
    /// Numeric scale.
    pub scale: Option<i64>,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// What a replica column maps to: a BigQuery type and mode, or why it cannot be loaded.
pub fn bigquery_type(engine: DatabaseEngine, c: &SourceColumn) -> Result<(ColumnType, ColumnMode), String> {
    let dt = c.data_type.as_str();
    let numeric = |p: Option<i64>, s: Option<i64>| match (p, s) {
        (Some(p), Some(s)) if p - s <= 29 && s <= 9 => ColumnType::Numeric,
        _ => ColumnType::Bignumeric,
    };
    let scalar = |dt: &str| -> Option<ColumnType> {
        Some(match engine {
            DatabaseEngine::Mysql => match dt {
                "tinyint" if c.column_type.starts_with("tinyint(1)") => ColumnType::Bool,
                "bool" | "boolean" => ColumnType::Bool,
                "bigint" if c.column_type.contains("unsigned") => ColumnType::Numeric,
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => ColumnType::Int64,
                "decimal" | "numeric" => numeric(c.precision, c.scale),
                "float" | "double" | "real" => ColumnType::Float64,
                "date" => ColumnType::Date,
                "datetime" => ColumnType::Datetime,
                "timestamp" => ColumnType::Timestamp,
                "time" => ColumnType::Time,
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
                    ColumnType::String
                }
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnType::Bytes,
                "json" => ColumnType::Json,
                _ => return None,
            },
            DatabaseEngine::Postgres => match dt {
                "bool" | "boolean" => ColumnType::Bool,
                "int2" | "int4" | "int8" | "smallint" | "integer" | "bigint" => ColumnType::Int64,
                "numeric" => numeric(c.precision, c.scale),
                "float4" | "float8" | "real" | "double precision" => ColumnType::Float64,
                "date" => ColumnType::Date,
                "timestamp" | "timestamp without time zone" => ColumnType::Datetime,
                "timestamptz" | "timestamp with time zone" => ColumnType::Timestamp,
                "time" | "time without time zone" => ColumnType::Time,
                "text" | "varchar" | "bpchar" | "character varying" | "character" | "uuid" | "citext" | "name" => {
                    ColumnType::String
                }
                "bytea" => ColumnType::Bytes,
                "json" | "jsonb" => ColumnType::Json,
                _ => return None,
            },
        })
    };
    let unsupported = || {
        format!(
            "column {:?}: {} type {} has no BigQuery mapping; leave it out of spec.schema (or list it in excludedColumns)",
            c.name,
            engine.as_str(),
            c.column_type
        )
    };
    if engine == DatabaseEngine::Postgres && c.column_type == "ARRAY" {
        // udt_name of an array is the element's name with a leading underscore.
        let elem = c.data_type.trim_start_matches('_');
        return scalar(elem).map(|t| (t, ColumnMode::Repeated)).ok_or_else(unsupported);
    }
    if engine == DatabaseEngine::Postgres && c.column_type == "USER-DEFINED" {
        // Enums (and domains over text) read as their text.
        return Ok((ColumnType::String, mode(c)));
    }
    scalar(dt).map(|t| (t, mode(c))).ok_or_else(unsupported)
}

fn mode(c: &SourceColumn) -> ColumnMode {
    if c.nullable {
        ColumnMode::Nullable
    } else {
        ColumnMode::Required
    }
}

/// Whether a column declared as `declared` can be loaded from a replica column mapping to
/// `mapped`: the same type, or a wider numeric one, or JSON from MariaDB's JSON (a LONGTEXT).
pub fn compatible(declared: ColumnType, mapped: ColumnType) -> bool {
    let (d, m) = (declared.canonical(), mapped.canonical());
    d == m
        || matches!(
            (m, d),
            ("INT64", "NUMERIC") | ("INT64", "BIGNUMERIC") | ("NUMERIC", "BIGNUMERIC") | ("STRING", "JSON")
        )
}

/// Quotes an identifier for the engine (names come from the replica's own information schema or
/// from validated manifests; quotes inside are doubled anyway).
pub fn quote(engine: DatabaseEngine, name: &str) -> String {
    match engine {
        DatabaseEngine::Mysql => format!("`{}`", name.replace('`', "``")),
        DatabaseEngine::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A SQL string literal (for JSON keys; single quotes doubled, MySQL backslashes doubled).
fn literal(engine: DatabaseEngine, text: &str) -> String {
    let t = text.replace('\'', "''");
    match engine {
        DatabaseEngine::Mysql => format!("'{}'", t.replace('\\', "\\\\")),
        DatabaseEngine::Postgres => format!("'{t}'"),
    }
}

/// A column to extract: its name on the replica, the name in BigQuery, and both types.
#[derive(Clone, Debug)]
pub struct Extracted {
    /// Replica column.
    pub source: SourceColumn,
    /// Declared name (the JSON key).
    pub name: String,
    /// Declared BigQuery type.
    pub declared: ColumnType,
    /// Mapped BigQuery type of the replica column.
    pub mapped: ColumnType,
}

/// The expression that encodes a row as one JSON object (NULL columns left out) — MySQL — or the
/// select list of the sub-select `row_to_json` encodes — PostgreSQL.
pub fn row_json(engine: DatabaseEngine, cols: &[Extracted]) -> String {
    match engine {
        DatabaseEngine::Mysql => {
            let parts: Vec<String> = cols
                .iter()
                .map(|c| {
                    let q = quote(engine, &c.source.name);
                    let key = literal(engine, &serde_json::to_string(&c.name).unwrap_or_default());
                    format!("IF({q} IS NULL, NULL, CONCAT({key}, ':', {}))", mysql_value(c, &q))
                })
                .collect();
            format!("CONCAT('{{', CONCAT_WS(',', {}), '}}')", parts.join(", "))
        }
        DatabaseEngine::Postgres => cols
            .iter()
            .map(|c| {
                let q = quote(engine, &c.source.name);
                format!("{} AS {}", postgres_value(c, &q), quote(engine, &c.name))
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One MySQL value as JSON text.
fn mysql_value(c: &Extracted, q: &str) -> String {
    let dt = c.source.data_type.as_str();
    match c.mapped.canonical() {
        "BOOL" => format!("IF({q} <> 0, 'true', 'false')"),
        "INT64" => format!("CAST({q} AS CHAR)"),
        // Exact decimal text, as a JSON string (BigQuery parses NUMERIC strings exactly).
        "NUMERIC" | "BIGNUMERIC" => format!("JSON_QUOTE(CAST({q} AS CHAR))"),
        // Shortest round-trip text of the double; FLOAT (single) through DOUBLE.
        "FLOAT64" if dt == "float" => format!("CAST(CAST({q} AS DOUBLE) AS CHAR)"),
        "FLOAT64" => format!("CAST({q} AS CHAR)"),
        "DATE" => format!("JSON_QUOTE(DATE_FORMAT({q}, '%Y-%m-%d'))"),
        "DATETIME" => format!("JSON_QUOTE(DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f'))"),
        "TIMESTAMP" => format!("JSON_QUOTE(CONCAT(DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f'), '+00:00'))"),
        "TIME" => format!("JSON_QUOTE(TIME_FORMAT({q}, '%H:%i:%s.%f'))"),
        "BYTES" => format!("JSON_QUOTE(REPLACE(TO_BASE64({q}), '\\n', ''))"),
        // MySQL's JSON type prints as one line; MariaDB's JSON is a LONGTEXT (checked valid by
        // `bad_values`), compacted onto one line.
        _ if c.declared.canonical() == "JSON" && dt == "json" => format!("CAST({q} AS CHAR)"),
        _ if c.declared.canonical() == "JSON" => format!("JSON_COMPACT({q})"),
        _ => format!("JSON_QUOTE({q})"),
    }
}

/// One PostgreSQL value, as what `row_to_json` should see.
fn postgres_value(c: &Extracted, q: &str) -> String {
    let array = c.source.column_type == "ARRAY";
    let ts = |e: &str| format!("to_char({e} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')");
    let dt = |e: &str| format!("to_char({e}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')");
    let tm = |e: &str| format!("to_char({e}, 'HH24:MI:SS.US')");
    let by = |e: &str| format!("translate(encode({e}, 'base64'), E'\\n', '')");
    // Each element of an array through `f`, in order.
    let each = |f: String| format!("(SELECT array_agg({f} ORDER BY n) FROM unnest({q}) WITH ORDINALITY AS u(e, n))");
    match c.mapped.canonical() {
        "NUMERIC" | "BIGNUMERIC" if array => format!("{q}::text[]"),
        "NUMERIC" | "BIGNUMERIC" => format!("{q}::text"),
        "BYTES" if array => each(by("e")),
        "BYTES" => by(q),
        "TIMESTAMP" if array => each(ts("e")),
        "TIMESTAMP" => ts(q),
        "DATETIME" if array => each(dt("e")),
        "DATETIME" => dt(q),
        "TIME" if array => each(tm("e")),
        "TIME" => tm(q),
        "STRING" if c.source.column_type == "USER-DEFINED" || c.source.data_type == "uuid" => {
            format!("{q}::text")
        }
        // MariaDB aside, a STRING declared for JSON/JSONB: the JSON text.
        "JSON" if c.declared.canonical() == "STRING" => format!("{q}::text"),
        // `json` keeps its text as written, newlines included: through jsonb it is one line.
        "JSON" if c.source.data_type == "json" => format!("{q}::jsonb"),
        _ => q.to_string(),
    }
}

/// The expression naming the columns of a row whose value BigQuery cannot hold (comma-separated;
/// empty or NULL when none), so such rows are reported instead of loaded wrong.
pub fn bad_values(engine: DatabaseEngine, cols: &[Extracted]) -> String {
    let mut checks = Vec::new();
    for c in cols {
        let q = quote(engine, &c.source.name);
        let name = literal(engine, &c.name);
        let array = c.source.column_type == "ARRAY";
        let cond = match (engine, c.mapped.canonical()) {
            (_, "NUMERIC" | "BIGNUMERIC") if array => Some(format!(
                "(array_position({q}, NULL) IS NOT NULL OR array_ndims({q}) > 1 OR 'NaN'::numeric = ANY({q}))"
            )),
            (_, _) if array => Some(format!(
                "(array_position({q}, NULL) IS NOT NULL OR array_ndims({q}) > 1)"
            )),
            // TINYINT(1) is a display width, not a type: 2 or -1 would become true.
            (DatabaseEngine::Mysql, "BOOL") if c.source.data_type == "tinyint" => {
                Some(format!("({q} IS NOT NULL AND {q} NOT IN (0, 1))"))
            }
            // MariaDB's JSON is a LONGTEXT: invalid text would load as NULL.
            (DatabaseEngine::Mysql, _) if c.declared.canonical() == "JSON" && c.source.data_type != "json" => {
                Some(format!("({q} IS NOT NULL AND NOT JSON_VALID({q}))"))
            }
            (DatabaseEngine::Mysql, "DATE" | "DATETIME" | "TIMESTAMP") => Some(format!(
                "({q} IS NOT NULL AND (YEAR({q}) = 0 OR MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0))"
            )),
            (DatabaseEngine::Mysql, "TIME") => Some(format!("({q} < '00:00:00' OR {q} >= '24:00:00')")),
            (DatabaseEngine::Postgres, "DATE") => Some(format!(
                "(NOT isfinite({q}) OR {q} < '0001-01-01'::date OR {q} >= '10000-01-01'::date)"
            )),
            (DatabaseEngine::Postgres, "DATETIME") => Some(format!(
                "(NOT isfinite({q}) OR {q} < '0001-01-01'::timestamp OR {q} >= '10000-01-01'::timestamp)"
            )),
            (DatabaseEngine::Postgres, "TIMESTAMP") => Some(format!(
                "(NOT isfinite({q}) OR {q} < '0001-01-01 00:00:00+00'::timestamptz OR {q} >= '10000-01-01 00:00:00+00'::timestamptz)"
            )),
            (DatabaseEngine::Postgres, "TIME") => Some(format!("({q} >= '24:00:00'::time)")),
            (DatabaseEngine::Postgres, "NUMERIC" | "BIGNUMERIC") => Some(format!("({q} = 'NaN'::numeric)")),
            _ => None,
        };
        if let Some(cond) = cond {
            checks.push(match engine {
                DatabaseEngine::Mysql => format!("IF({cond}, {name}, NULL)"),
                DatabaseEngine::Postgres => format!("CASE WHEN {cond} THEN {name} END"),
            });
        }
    }
    if checks.is_empty() {
        return "NULL".into();
    }
    match engine {
        DatabaseEngine::Mysql => format!("CONCAT_WS(',', {})", checks.join(", ")),
        DatabaseEngine::Postgres => format!("NULLIF(concat_ws(',', {}), '')", checks.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(dt: &str, ct: &str, p: Option<i64>, s: Option<i64>) -> SourceColumn {
        SourceColumn {
            name: "c".into(),
            data_type: dt.into(),
            column_type: ct.into(),
            precision: p,
            scale: s,
            nullable: true,
        }
    }

    #[test]
    fn mysql_mapping_follows_the_table() {
        let m = |dt, ct, p, s| bigquery_type(DatabaseEngine::Mysql, &col(dt, ct, p, s)).map(|(t, _)| t.canonical());
        assert_eq!(m("tinyint", "tinyint(1)", None, None), Ok("BOOL"));
        assert_eq!(m("tinyint", "tinyint(4)", None, None), Ok("INT64"));
        assert_eq!(m("bigint", "bigint(20) unsigned", None, None), Ok("NUMERIC"));
        assert_eq!(m("decimal", "decimal(38,9)", Some(38), Some(9)), Ok("NUMERIC"));
        assert_eq!(m("decimal", "decimal(40,2)", Some(40), Some(2)), Ok("BIGNUMERIC"));
        assert_eq!(m("timestamp", "timestamp(6)", None, None), Ok("TIMESTAMP"));
        assert_eq!(m("set", "set('a','b')", None, None), Ok("STRING"));
        assert!(
            m("geometry", "geometry", None, None)
                .unwrap_err()
                .contains("no BigQuery mapping")
        );
    }

    #[test]
    fn postgres_arrays_are_repeated() {
        let (t, mode) = bigquery_type(DatabaseEngine::Postgres, &col("_int4", "ARRAY", None, None)).unwrap();
        assert_eq!((t.canonical(), mode), ("INT64", ColumnMode::Repeated));
        let (t, _) = bigquery_type(DatabaseEngine::Postgres, &col("numeric", "numeric", None, None)).unwrap();
        assert_eq!(t.canonical(), "BIGNUMERIC");
    }

    #[test]
    fn source_tables_are_plain_identifiers() {
        assert_eq!(
            source_table("payments.transactions"),
            Ok(("payments".into(), "transactions".into()))
        );
        for bad in ["transactions", "a.b; DROP TABLE x", "a.`b`", ".b", "a."] {
            assert!(source_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_names_are_quoted() {
        assert_eq!(quote(DatabaseEngine::Mysql, "we`ird"), "`we``ird`");
        assert_eq!(quote(DatabaseEngine::Postgres, "we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal(DatabaseEngine::Mysql, "it's \\"), "'it''s \\\\'");
    }
}
