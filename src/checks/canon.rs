//! The canonical encoding of a row, written once per dialect (MySQL/MariaDB, PostgreSQL,
//! BigQuery): each engine turns each value into the same text, so a hash of the row computed
//! inside MySQL equals the one computed inside BigQuery when — and only when — the values are equal.
//!
//! | BigQuery type       | canonical text                                                       |
//! |---------------------|----------------------------------------------------------------------|
//! | BOOL                | `true` / `false`                                                     |
//! | INT64               | decimal digits                                                       |
//! | NUMERIC, BIGNUMERIC | decimal text without trailing zeros (`1.50` → `1.5`, `10.00` → `10`)  |
//! | FLOAT64             | `[-]MpE`: the exact binary value M·2^(E−52), M the 53-bit mantissa as an integer (`nan`, `inf`, `-inf`, `0`; −0 is `0`) |
//! | DATE                | `YYYY-MM-DD`                                                         |
//! | DATETIME, TIMESTAMP | `YYYY-MM-DD HH:MM:SS.ffffff` (TIMESTAMP in UTC)                      |
//! | TIME                | `HH:MM:SS.ffffff`                                                    |
//! | STRING              | the text (UTF-8; PostgreSQL `char(n)` with its padding, as loaded)    |
//! | BYTES               | lowercase hex                                                        |
//! | JSON, REPEATED      | `present`: compared as NULL or not only (engines print JSON differently); JSON `null` and an empty array count as NULL |
//!
//! Floats go through arithmetic that is exact in IEEE 754 (division by powers of two), not through
//! each engine's own float printing, which differs (`1e+20`, `1e20`, `100000000000000000000`).
//! Each value becomes a field `LEN:TEXT` (LEN in characters) and NULL the field `-`, so a NULL and
//! an empty string differ and no two rows concatenate to the same text. A row's hash is the MD5 of
//! its fields; the fingerprint of a set of rows is `COUNT(*)` and the sums of two 32-bit slices of
//! the hashes (order-free, so both engines may read rows in any order).
//!
//! Every name reaching SQL is quoted ([`crate::dbsource::types::quote`], [`crate::views::sql::ident`]);
//! every literal is made here from numbers or from dates bqsteward formatted itself.

use crate::crd::DatabaseEngine;

/// A SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
    /// BigQuery (GoogleSQL).
    BigQuery,
}

impl From<DatabaseEngine> for Dialect {
    fn from(e: DatabaseEngine) -> Self {
        match e {
            DatabaseEngine::Mysql => Dialect::Mysql,
            DatabaseEngine::Postgres => Dialect::Postgres,
        }
    }
}

/// How one column is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonColumn {
    /// The quoted column reference in this dialect.
    pub sql: String,
    /// The declared (BigQuery) type, canonical name.
    pub type_: &'static str,
    /// The source's own data type (lowercase), when it changes the encoding (PostgreSQL `real`
    /// and `character`); empty on BigQuery.
    pub source_type: String,
    /// REPEATED (or any column compared as NULL-or-not only).
    pub presence_only: bool,
}

/// The canonical text of a non-NULL value of `c` (the caller handles NULL).
pub fn value(d: Dialect, c: &CanonColumn) -> String {
    let q = c.sql.as_str();
    if c.presence_only || c.type_ == "JSON" || c.type_ == "GEOGRAPHY" {
        return "'present'".into();
    }
    match (d, c.type_) {
        (Dialect::Mysql, "BOOL") => format!("IF({q} <> 0, 'true', 'false')"),
        (Dialect::Postgres, "BOOL") => format!("CASE WHEN {q} THEN 'true' ELSE 'false' END"),
        (Dialect::BigQuery, "BOOL") => format!("IF({q}, 'true', 'false')"),
        (Dialect::Mysql, "INT64") => format!("CAST({q} AS CHAR)"),
        (Dialect::Postgres, "INT64") => format!("{q}::text"),
        (Dialect::BigQuery, "INT64") => format!("CAST({q} AS STRING)"),
        (Dialect::Mysql, "NUMERIC" | "BIGNUMERIC") => {
            let s = format!("CAST({q} AS CHAR)");
            format!("IF(LOCATE('.', {s}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {s})), {s})")
        }
        (Dialect::Postgres, "NUMERIC" | "BIGNUMERIC") => format!("trim_scale({q}::numeric)::text"),
        (Dialect::BigQuery, "NUMERIC" | "BIGNUMERIC") => {
            let s = format!("CAST({q} AS STRING)");
            format!("IF(STRPOS({s}, '.') > 0, RTRIM(RTRIM({s}, '0'), '.'), {s})")
        }
        // PostgreSQL `real` is loaded from its shortest text (0.1), not widened (0.100000001…).
        (Dialect::Postgres, "FLOAT64") if matches!(c.source_type.as_str(), "real" | "float4") => {
            float(d, &format!("{q}::text::float8"))
        }
        (_, "FLOAT64") => float(d, q),
        (Dialect::Mysql, "DATE") => format!("DATE_FORMAT({q}, '%Y-%m-%d')"),
        (Dialect::Postgres, "DATE") => format!("to_char({q}, 'YYYY-MM-DD')"),
        // The year padded by hand: `%Y` leaves years below 1000 unpadded in some formatters.
        (Dialect::BigQuery, "DATE") => format!("CONCAT({}, FORMAT_DATE('-%m-%d', {q}))", bq_year(q)),
        (Dialect::Mysql, "DATETIME" | "TIMESTAMP") => format!("DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f')"),
        (Dialect::Postgres, "DATETIME") => format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        (Dialect::Postgres, "TIMESTAMP") => format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"),
        (Dialect::BigQuery, "DATETIME") => {
            format!("CONCAT({}, FORMAT_DATETIME('-%m-%d %H:%M:%E6S', {q}))", bq_year(q))
        }
        (Dialect::BigQuery, "TIMESTAMP") => {
            format!(
                "CONCAT({}, FORMAT_TIMESTAMP('-%m-%d %H:%M:%E6S', {q}, 'UTC'))",
                bq_year(q)
            )
        }
        (Dialect::Mysql, "TIME") => format!("TIME_FORMAT({q}, '%H:%i:%s.%f')"),
        (Dialect::Postgres, "TIME") => format!("to_char({q}, 'HH24:MI:SS.US')"),
        (Dialect::BigQuery, "TIME") => format!("FORMAT_TIME('%H:%M:%E6S', {q})"),
        (Dialect::Mysql, "BYTES") => format!("LOWER(HEX({q}))"),
        (Dialect::Postgres, "BYTES") => format!("encode({q}, 'hex')"),
        (Dialect::BigQuery, "BYTES") => format!("TO_HEX({q})"),
        // STRING and anything else read as text: MySQL in UTF-8 whatever the column's charset.
        (Dialect::Mysql, _) => format!("CONVERT({q} USING utf8mb4)"),
        // `char(n)` keeps its padding, as the load's row_to_json does (`::text` would trim it).
        (Dialect::Postgres, _) if matches!(c.source_type.as_str(), "character" | "bpchar") => {
            format!("format('%s', {q})")
        }
        (Dialect::Postgres, _) => format!("{q}::text"),
        (Dialect::BigQuery, _) => format!("CAST({q} AS STRING)"),
    }
}

/// When a value counts as NULL: SQL NULL; for REPEATED columns also an empty array (BigQuery
/// stores a NULL array as empty); for JSON also the JSON `null` (loaded as NULL).
pub fn null_check(d: Dialect, c: &CanonColumn) -> String {
    let q = c.sql.as_str();
    match (d, c.presence_only, c.type_) {
        (Dialect::Postgres, true, _) => format!("({q} IS NULL OR cardinality({q}) = 0)"),
        (Dialect::BigQuery, true, _) => format!("({q} IS NULL OR ARRAY_LENGTH({q}) = 0)"),
        (Dialect::Mysql, false, "JSON") => format!("({q} IS NULL OR TRIM({q}) = 'null')"),
        (Dialect::Postgres, false, "JSON") => format!("({q} IS NULL OR btrim({q}::text) = 'null')"),
        (Dialect::BigQuery, false, "JSON") => format!("({q} IS NULL OR TO_JSON_STRING({q}) = 'null')"),
        _ => format!("{q} IS NULL"),
    }
}

/// The (UTC) year of a BigQuery date or time, four digits.
fn bq_year(q: &str) -> String {
    format!("LPAD(CAST(EXTRACT(YEAR FROM {q}) AS STRING), 4, '0')")
}

/// A double as `[-]MpE` through exact arithmetic (see the module header).
fn float(d: Dialect, q: &str) -> String {
    let x = match d {
        // FLOAT (single) widens exactly; the extraction read it the same way.
        Dialect::Mysql => format!("CAST({q} AS DOUBLE)"),
        Dialect::Postgres => format!("{q}::float8"),
        Dialect::BigQuery => q.to_string(),
    };
    let (nan, inf, ninf) = match d {
        // MySQL stores neither NaN nor infinities.
        Dialect::Mysql => ("FALSE".to_string(), "FALSE".to_string(), "FALSE".to_string()),
        Dialect::Postgres => (
            format!("{x} = 'NaN'::float8"),
            format!("{x} = 'Infinity'::float8"),
            format!("{x} = '-Infinity'::float8"),
        ),
        Dialect::BigQuery => (
            format!("IS_NAN({x})"),
            format!("IS_INF({x}) AND {x} > 0"),
            format!("IS_INF({x}) AND {x} < 0"),
        ),
    };
    // |x| where it has a logarithm, 1 elsewhere (those cases are answered before the arithmetic).
    let a = format!("(CASE WHEN {x} = 0 OR ({nan}) OR ({inf}) OR ({ninf}) THEN 1 ELSE ABS({x}) END)");
    let pow = |e: &str| match d {
        Dialect::Mysql => format!("POW(2, {e})"),
        Dialect::Postgres => format!("power(2::float8, {e})"),
        Dialect::BigQuery => format!("POW(2, {e})"),
    };
    let log2 = match d {
        Dialect::Mysql => format!("LOG2({a})"),
        Dialect::Postgres => format!("(ln({a}) / ln(2::float8))"),
        Dialect::BigQuery => format!("LOG({a}, 2)"),
    };
    // Clamped to the exponents doubles have: log2 of the largest double may round up to 1024,
    // whose power of two overflows.
    let e0 = format!("LEAST(GREATEST(FLOOR({log2}), -1074), 1023)");
    // The logarithm may miss by one next to a power of two: the comparison (exact) corrects it.
    let e = format!(
        "({e0} + CASE WHEN {a} / {p} >= 2 THEN 1 WHEN {a} / {p} < 1 THEN -1 ELSE 0 END)",
        p = pow(&e0)
    );
    let mant = format!("({a} / {} * {})", pow(&e), pow("52"));
    let (int_text_e, int_text_m) = match d {
        Dialect::Mysql => (format!("CAST({e} AS SIGNED)"), format!("CAST({mant} AS SIGNED)")),
        Dialect::Postgres => (format!("({e})::bigint::text"), format!("({mant})::bigint::text")),
        Dialect::BigQuery => (
            format!("CAST(CAST({e} AS INT64) AS STRING)"),
            format!("CAST(CAST({mant} AS INT64) AS STRING)"),
        ),
    };
    let parts = concat(
        d,
        &[
            format!("CASE WHEN {x} < 0 THEN '-' ELSE '' END"),
            int_text_m,
            "'p'".into(),
            int_text_e,
        ],
    );
    format!(
        "CASE WHEN {nan} THEN 'nan' WHEN {inf} THEN 'inf' WHEN {ninf} THEN '-inf' WHEN {x} = 0 THEN '0' ELSE {parts} END"
    )
}

/// Concatenation of non-NULL texts.
pub fn concat(d: Dialect, parts: &[String]) -> String {
    match d {
        Dialect::Postgres => format!("({})", parts.join(" || ")),
        _ => format!("CONCAT({})", parts.join(", ")),
    }
}

/// The field of a column: `LEN:TEXT`, or `-` for NULL.
pub fn field(d: Dialect, c: &CanonColumn) -> String {
    let v = value(d, c);
    let len = match d {
        Dialect::Mysql => format!("CHAR_LENGTH({v})"),
        Dialect::Postgres => format!("char_length({v})::text"),
        Dialect::BigQuery => format!("CAST(CHAR_LENGTH({v}) AS STRING)"),
    };
    format!(
        "CASE WHEN {} THEN '-' ELSE {} END",
        null_check(d, c),
        concat(d, &[len, "':'".into(), v])
    )
}

/// The fields of `cols` as one text.
pub fn row_text(d: Dialect, cols: &[CanonColumn]) -> String {
    let fields: Vec<String> = cols.iter().map(|c| field(d, c)).collect();
    if fields.len() == 1 {
        return fields.into_iter().next().unwrap_or_default();
    }
    concat(d, &fields)
}

/// Lowercase hex MD5 of a text (UTF-8).
pub fn md5_hex(d: Dialect, text: &str) -> String {
    match d {
        Dialect::Mysql => format!("MD5(CONVERT({text} USING utf8mb4))"),
        Dialect::Postgres => format!("md5({text})"),
        Dialect::BigQuery => format!("TO_HEX(MD5({text}))"),
    }
}

/// The unsigned 32-bit integer of 8 hex characters of `hex` from `start` (1-based).
pub fn hex_int(d: Dialect, hex: &str, start: usize) -> String {
    match d {
        Dialect::Mysql => format!("CAST(CONV(SUBSTR({hex}, {start}, 8), 16, 10) AS UNSIGNED)"),
        Dialect::Postgres => format!("('x' || substr({hex}, {start}, 8))::bit(32)::bigint"),
        Dialect::BigQuery => format!("CAST(CONCAT('0x', SUBSTR({hex}, {start}, 8)) AS INT64)"),
    }
}

/// An aggregate (or any expression) as text.
pub fn as_text(d: Dialect, e: &str) -> String {
    match d {
        Dialect::Mysql => format!("CAST({e} AS CHAR)"),
        Dialect::Postgres => format!("({e})::text"),
        Dialect::BigQuery => format!("CAST({e} AS STRING)"),
    }
}

/// Decodes a field fetched from either side: `None` for NULL, the text otherwise.
pub fn decode_field(f: &str) -> Option<String> {
    if f == "-" {
        return None;
    }
    Some(f.split_once(':').map_or(f, |(_, t)| t).to_string())
}

/// A canonical float (`[-]MpE`) shown as the shortest text of the double.
pub fn show_float(text: &str) -> String {
    let parse = || -> Option<f64> {
        let (neg, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (m, e) = rest.split_once('p')?;
        let (e, m): (i32, i64) = (e.parse().ok()?, m.parse().ok()?);
        // m·2^-52 is in [1, 2) exactly; scaling by 2^e in two steps never underflows early.
        let mut v = m as f64 / 2f64.powi(52);
        let (half, rest) = (e / 2, e - e / 2);
        v = v * 2f64.powi(half) * 2f64.powi(rest);
        Some(if neg { -v } else { v })
    };
    match parse() {
        Some(v) => format!("{v:?}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_null_and_empty_apart() {
        assert_eq!(decode_field("-"), None);
        assert_eq!(decode_field("0:"), Some(String::new()));
        assert_eq!(decode_field("3:a:b"), Some("a:b".into()));
    }

    #[test]
    fn floats_decode_exactly() {
        assert_eq!(show_float("6755399441055744p0"), "1.5");
        assert_eq!(show_float("-4503599627370496p3"), "-8.0");
        assert_eq!(show_float("4503599627370496p-1074"), "5e-324");
        assert_eq!(show_float("9007199254740991p1023"), "1.7976931348623157e308");
        assert_eq!(show_float("nan"), "nan");
    }
}
