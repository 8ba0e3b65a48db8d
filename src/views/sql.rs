//! GoogleSQL of the view layers, generated from the spec. Pure.
//!
//! Every identifier goes through [`ident`]: column names come from manifests and files and are
//! untrusted (validation already refuses backticks and backslashes in them; quoting escapes them
//! anyway, so a validation bug cannot open an injection). Table references go through
//! [`TableRef::sql`]. The text is laid out one column per line so `plan` shows readable diffs.

use crate::cloud::bqtypes::TableRef;
pub use crate::cloud::bqtypes::ident;
use std::fmt::Write;

/// The row alias of the dedup query: the reserved `_bqsteward_` prefix means no column can take
/// the name (a column named like the alias would shadow it in `TO_JSON_STRING`).
const ROW: &str = "`_bqsteward_row`";

/// The dedup query: one row per `key`, the one with the greatest `version`.
///
/// Ties are broken deterministically so the same data always gives the same answer: a NULL version
/// loses to any value, then the later load wins (`loaded_at`, then batch id), then — for rows of
/// one batch with equal key and version — the row whose JSON text sorts last. Rows that tie on all
/// of that are identical, so either is the same answer.
pub fn dedup(source: &TableRef, columns: &[String], key: &[String], version: &str, lineage: [&str; 2]) -> String {
    let [batch, loaded_at] = lineage;
    let mut sql = String::from("SELECT\n");
    push_list(&mut sql, columns.iter().map(|c| ident(c)));
    let _ = write!(
        sql,
        "FROM {} AS {ROW}\nWHERE TRUE\nQUALIFY ROW_NUMBER() OVER (\n  PARTITION BY {}\n  ORDER BY {} DESC NULLS LAST, {} DESC NULLS LAST, {} DESC NULLS LAST, TO_JSON_STRING({ROW}) DESC\n) = 1\n",
        source.sql(),
        key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", "),
        ident(version),
        ident(loaded_at),
        ident(batch),
    );
    sql
}

/// How the clean layer shows one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanColumn {
    /// As it is.
    Keep(String),
    /// Replaced by the hex SHA-256 of its value (NULL stays NULL), under the same name.
    Hash {
        /// Column name.
        name: String,
        /// Canonical BigQuery type (decides how the value becomes bytes).
        type_: String,
        /// REPEATED column.
        repeated: bool,
    },
}

/// The stable hash of a column: hex SHA-256 of the value as text (BYTES hashed as they are;
/// arrays, JSON and GEOGRAPHY as their JSON / WKT text).
pub fn hash_expr(name: &str, type_: &str, repeated: bool) -> String {
    let col = ident(name);
    let text = match (repeated, type_) {
        (true, _) | (false, "JSON") => format!("TO_JSON_STRING({col})"),
        (false, "BYTES") => col,
        (false, "GEOGRAPHY") => format!("ST_ASTEXT({col})"),
        (false, _) => format!("CAST({col} AS STRING)"),
    };
    format!("TO_HEX(SHA256({text}))")
}

/// The clean query: the full view's rows with only the given columns, PII hashed where asked.
pub fn clean(full: &TableRef, columns: &[CleanColumn]) -> String {
    let mut sql = String::from("SELECT\n");
    push_list(
        &mut sql,
        columns.iter().map(|c| match c {
            CleanColumn::Keep(name) => ident(name),
            CleanColumn::Hash { name, type_, repeated } => {
                format!("{} AS {}", hash_expr(name, type_, *repeated), ident(name))
            }
        }),
    );
    let _ = writeln!(sql, "FROM {}", full.sql());
    sql
}

fn push_list(sql: &mut String, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let _ = writeln!(sql, "  {item}{}", if i + 1 < n { "," } else { "" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("select"), "`select`");
        assert_eq!(ident("a`b"), "`a\\`b`");
        assert_eq!(ident("a\\`; DROP"), "`a\\\\\\`; DROP`");
        assert_eq!(ident("x\ny"), "`x\\ny`");
    }

    #[test]
    fn hash_expressions_by_type() {
        assert_eq!(
            hash_expr("email", "STRING", false),
            "TO_HEX(SHA256(CAST(`email` AS STRING)))"
        );
        assert_eq!(hash_expr("b", "BYTES", false), "TO_HEX(SHA256(`b`))");
        assert_eq!(hash_expr("j", "JSON", false), "TO_HEX(SHA256(TO_JSON_STRING(`j`)))");
        assert_eq!(hash_expr("a", "INT64", true), "TO_HEX(SHA256(TO_JSON_STRING(`a`)))");
        assert_eq!(hash_expr("g", "GEOGRAPHY", false), "TO_HEX(SHA256(ST_ASTEXT(`g`)))");
    }

    #[test]
    fn dedup_and_clean_text() {
        let src = TableRef::new("p", "ds", "t");
        let cols = ["id", "order", "v", "_bqsteward_batch_id", "_bqsteward_loaded_at"].map(String::from);
        let sql = dedup(
            &src,
            &cols,
            &["id".into(), "order".into()],
            "v",
            ["_bqsteward_batch_id", "_bqsteward_loaded_at"],
        );
        insta::assert_snapshot!(sql, @r"
        SELECT
          `id`,
          `order`,
          `v`,
          `_bqsteward_batch_id`,
          `_bqsteward_loaded_at`
        FROM `p.ds.t` AS `_bqsteward_row`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (
          PARTITION BY `id`, `order`
          ORDER BY `v` DESC NULLS LAST, `_bqsteward_loaded_at` DESC NULLS LAST, `_bqsteward_batch_id` DESC NULLS LAST, TO_JSON_STRING(`_bqsteward_row`) DESC
        ) = 1
        ");
        let sql = clean(
            &TableRef::new("p", "ds__views_full", "t"),
            &[
                CleanColumn::Keep("id".into()),
                CleanColumn::Hash {
                    name: "email".into(),
                    type_: "STRING".into(),
                    repeated: false,
                },
            ],
        );
        insta::assert_snapshot!(sql, @r"
        SELECT
          `id`,
          TO_HEX(SHA256(CAST(`email` AS STRING))) AS `email`
        FROM `p.ds__views_full.t`
        ");
    }
}
