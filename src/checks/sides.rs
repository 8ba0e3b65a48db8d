//! The two [`Side`]s of a check as SQL: the replica table (through a [`Conn`]) and the BigQuery
//! table's latest row per key (the `full` view's query over the raw table). Each statement reads
//! only fingerprints or the few rows of a leaf; bytes received are counted for the metrics.

use super::canon::{self, CanonColumn, Dialect};
use super::compare::{Cell, LEAF_LIMIT, LeafRow, Print, Side, Split, Totals};
use crate::cloud::bigquery::BigQuery;
use crate::dbsource::conn::Conn;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// The SQL of one side.
#[derive(Clone, Debug)]
pub struct SideSql {
    /// Dialect.
    pub d: Dialect,
    /// `FROM` target: a table, or a parenthesised query with an alias.
    pub from: String,
    /// Every declared column, in order.
    pub cols: Vec<CanonColumn>,
    /// Key column positions.
    pub key: Vec<usize>,
    /// PII columns (leaf reads return a hash of their field).
    pub pii: Vec<bool>,
    /// Watermark column position.
    pub wm: usize,
    /// The cutoff as a literal of the watermark's type in this dialect.
    pub cutoff_sql: String,
    /// Fingerprints cover the keys only and leaves read keys only (the row count).
    pub count_only: bool,
}

impl SideSql {
    fn old(&self) -> String {
        format!("{} < {}", self.cols[self.wm].sql, self.cutoff_sql)
    }

    fn key_col(&self) -> &str {
        &self.cols[self.key[0]].sql
    }

    /// The key's hash as a non-negative 32-bit integer.
    fn key_hash(&self) -> String {
        let key: Vec<CanonColumn> = self.key.iter().map(|&i| self.cols[i].clone()).collect();
        canon::hex_int(self.d, &canon::md5_hex(self.d, &canon::row_text(self.d, &key)), 1)
    }

    fn filter(&self, cell: &Cell) -> String {
        match *cell {
            Cell::Range { lo, hi } => format!("{k} >= {lo} AND {k} < {hi}", k = self.key_col()),
            Cell::Hash { modulus: 1, .. } => "TRUE".into(),
            Cell::Hash { modulus, residue } => format!("MOD(({}), {modulus}) = {residue}", self.key_hash()),
        }
    }

    fn bucket(&self, split: &Split) -> String {
        match split.parent {
            Cell::Range { lo, .. } => {
                let (k, w) = (self.key_col(), split.step);
                match self.d {
                    Dialect::Mysql => format!("({k} - ({lo})) DIV {w}"),
                    Dialect::Postgres => format!("(({k})::bigint - ({lo})) / {w}"),
                    // Parenthesised: bqemulator turns DIV(a, b) into `a // b`, which binds tighter than `-`.
                    Dialect::BigQuery => format!("DIV(({k} - ({lo})), {w})"),
                }
            }
            Cell::Hash { .. } => format!("MOD(({}), {})", self.key_hash(), split.step),
        }
    }

    /// Rows older than the cutoff, and the key bounds (`ranges`).
    pub fn totals_sql(&self, ranges: bool) -> String {
        let t = |e: &str| canon::as_text(self.d, e);
        let bounds = if ranges {
            format!(
                ", {}, {}",
                t(&format!("MIN({})", self.key_col())),
                t(&format!("MAX({})", self.key_col()))
            )
        } else {
            ", NULL, NULL".into()
        };
        format!(
            "SELECT {}{bounds} FROM {} WHERE {}",
            t("COUNT(*)"),
            self.from,
            self.old()
        )
    }

    /// The fingerprint of every bucket of `split`.
    pub fn prints_sql(&self, split: &Split) -> String {
        let t = |e: &str| canon::as_text(self.d, e);
        // Counts alone would let a row missing on each side of one cell cancel out: the row count
        // fingerprints the set of keys, the exact check whole rows.
        let hash = if self.count_only {
            let key: Vec<CanonColumn> = self.key.iter().map(|&i| self.cols[i].clone()).collect();
            canon::md5_hex(self.d, &canon::row_text(self.d, &key))
        } else {
            canon::md5_hex(self.d, &canon::row_text(self.d, &self.cols))
        };
        format!(
            "SELECT {}, {}, {}, {} FROM (SELECT {} AS _b, {hash} AS _h FROM {} WHERE {} AND {}) _x GROUP BY _b",
            t("_b"),
            t("COUNT(*)"),
            t(&format!("SUM({})", canon::hex_int(self.d, "_h", 1))),
            t(&format!("SUM({})", canon::hex_int(self.d, "_h", 9))),
            self.bucket(split),
            self.from,
            self.old(),
            self.filter(&split.parent),
        )
    }

    /// Every row of `cell`: key fields, the watermark's text, each column's field (a hash of it
    /// for PII columns: their values never leave either side).
    pub fn rows_sql(&self, cell: &Cell) -> String {
        // Key fields match rows across sides; a PII key column's as a hash, like its value.
        let mut sel: Vec<String> = self
            .key
            .iter()
            .map(|&i| {
                let f = canon::field(self.d, &self.cols[i]);
                if self.pii[i] { canon::md5_hex(self.d, &f) } else { f }
            })
            .collect();
        let w = &self.cols[self.wm];
        sel.push(format!(
            "CASE WHEN {} IS NULL THEN NULL ELSE {} END",
            w.sql,
            canon::value(self.d, w)
        ));
        for (i, c) in self.cols.iter().enumerate() {
            if self.count_only {
                break;
            }
            let f = canon::field(self.d, c);
            sel.push(if self.pii[i] { canon::md5_hex(self.d, &f) } else { f });
        }
        format!(
            "SELECT {} FROM {} WHERE {} LIMIT {LEAF_LIMIT}",
            sel.join(", "),
            self.from,
            self.filter(cell)
        )
    }

    fn leaf_rows(&self, rows: Vec<Vec<Option<String>>>) -> Vec<LeafRow> {
        let nk = self.key.len();
        rows.into_iter()
            .map(|r| LeafRow {
                key: r[..nk].iter().map(|c| c.clone().unwrap_or_default()).collect(),
                watermark: r[nk].clone(),
                fields: r[nk + 1..].iter().map(|c| c.clone().unwrap_or_default()).collect(),
            })
            .collect()
    }
}

fn parse_totals(rows: &[Vec<Option<String>>]) -> Result<Totals, String> {
    let r = rows.first().ok_or("no result row")?;
    let n = |i: usize| r.get(i).cloned().flatten();
    let rows = n(0).and_then(|v| v.parse().ok()).unwrap_or(0);
    let bounds = match (n(1), n(2)) {
        (Some(a), Some(b)) => Some((
            a.parse().map_err(|_| format!("key bound {a:?} is not an integer"))?,
            b.parse().map_err(|_| format!("key bound {b:?} is not an integer"))?,
        )),
        _ => None,
    };
    Ok(Totals { rows, bounds })
}

fn parse_prints(rows: Vec<Vec<Option<String>>>) -> Result<BTreeMap<i64, Print>, String> {
    let mut out = BTreeMap::new();
    for r in rows {
        let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let b: i64 = cell(0)
            .parse()
            .map_err(|_| format!("bucket {:?} is not an integer", cell(0)))?;
        out.insert(
            b,
            Print {
                rows: cell(1).parse().unwrap_or(0),
                sum1: cell(2),
                sum2: cell(3),
            },
        );
    }
    Ok(out)
}

fn bytes(rows: &[Vec<Option<String>>]) -> u64 {
    rows.iter()
        .flat_map(|r| r.iter())
        .map(|c| c.as_ref().map_or(0, |s| s.len() as u64))
        .sum()
}

/// Runs one statement of a side and returns its rows as text.
#[async_trait]
pub trait Statements: Send {
    /// Runs `sql`.
    async fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String>;
}

/// A side answered by SQL statements: the replica's or BigQuery's.
pub struct SqlSide<S> {
    /// Its SQL.
    pub sql: SideSql,
    /// Cells are key ranges.
    pub ranges: bool,
    /// Where statements run.
    pub runner: S,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds spent in statements.
    pub seconds: f64,
}

impl<S: Statements> SqlSide<S> {
    /// A side running `sql`'s statements on `runner`.
    pub fn new(sql: SideSql, ranges: bool, runner: S) -> Self {
        SqlSide {
            sql,
            ranges,
            runner,
            bytes: 0,
            seconds: 0.0,
        }
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let started = std::time::Instant::now();
        let rows = self.runner.run(sql).await?;
        self.seconds += started.elapsed().as_secs_f64();
        self.bytes += bytes(&rows);
        Ok(rows)
    }
}

#[async_trait]
impl<S: Statements> Side for SqlSide<S> {
    async fn totals(&mut self) -> Result<Totals, String> {
        let sql = self.sql.totals_sql(self.ranges);
        parse_totals(&self.query(&sql).await?)
    }
    async fn prints(&mut self, split: &Split) -> Result<BTreeMap<i64, Print>, String> {
        let sql = self.sql.prints_sql(split);
        parse_prints(self.query(&sql).await?)
    }
    async fn rows(&mut self, cell: &Cell) -> Result<Vec<LeafRow>, String> {
        let sql = self.sql.rows_sql(cell);
        let rows = self.query(&sql).await?;
        Ok(self.sql.leaf_rows(rows))
    }
}

/// The replica (driver errors redacted of the URL).
pub struct Replica<'a> {
    /// The connection.
    pub conn: &'a mut Conn,
    /// Redacts driver errors.
    pub url: &'a crate::dbsource::secrets::SecretText,
}

#[async_trait]
impl Statements for Replica<'_> {
    async fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        self.conn
            .texts(sql, &[])
            .await
            .map_err(|e| crate::dbsource::conn::redact(&format!("source: {e}"), self.url))
    }
}

/// BigQuery, running queries in `project` and `location`.
pub struct Warehouse<'a> {
    /// The client.
    pub bq: &'a dyn BigQuery,
    /// Project that runs the queries.
    pub project: String,
    /// Location.
    pub location: String,
}

#[async_trait]
impl Statements for Warehouse<'_> {
    async fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        Ok(self
            .bq
            .query(&self.project, &self.location, sql, &[])
            .await
            .map_err(|e| format!("BigQuery: {e}"))?
            .rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(d: Dialect) -> SideSql {
        let col = |n: &str, t: &'static str| CanonColumn {
            sql: format!("`{n}`"),
            type_: t,
            source_type: String::new(),
            presence_only: false,
        };
        SideSql {
            d,
            from: "`p.d.t`".into(),
            cols: vec![col("id", "INT64"), col("email", "STRING"), col("at", "DATETIME")],
            key: vec![0],
            pii: vec![false, true, false],
            wm: 2,
            cutoff_sql: "DATETIME '2026-01-01 00:00:00'".into(),
            count_only: false,
        }
    }

    #[test]
    fn a_leaf_read_never_returns_a_pii_value() {
        for d in [Dialect::Mysql, Dialect::Postgres, Dialect::BigQuery] {
            let s = side(d);
            let sql = s.rows_sql(&Cell::Range { lo: 0, hi: 10 });
            let email = canon::field(d, &s.cols[1]);
            let hashed = canon::md5_hex(d, &email);
            assert!(sql.contains(&hashed), "{sql}");
            // The email's field appears only inside its hash.
            assert_eq!(sql.matches(&email).count(), 1, "{sql}");
            assert!(sql.contains(&canon::field(d, &s.cols[0])), "{sql}");
        }
    }

    #[test]
    fn fingerprints_filter_on_the_cutoff_and_the_cell() {
        let s = side(Dialect::BigQuery);
        let split = Cell::Range { lo: 100, hi: 300 }.split(4);
        let sql = s.prints_sql(&split);
        assert!(sql.contains("`at` < DATETIME '2026-01-01 00:00:00'"), "{sql}");
        assert!(sql.contains("`id` >= 100 AND `id` < 300"), "{sql}");
        assert!(sql.contains("DIV((`id` - (100)), 50)"), "{sql}");
        assert_eq!(split.child(3), Cell::Range { lo: 250, hi: 300 });
    }
}
