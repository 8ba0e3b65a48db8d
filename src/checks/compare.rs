//! The exact check's search: fingerprints of key cells on both sides, split only where they
//! differ, rows read only where a cell is down to a few keys. Independent of SQL: each side is a
//! [`Side`] answering three questions (how many rows and which key bounds, the fingerprints of a
//! cell's children, the rows of a cell), so the search is tested with sides held in memory.
//!
//! Cells are ranges of the primary key when it is one INT64 column (index range scans on the
//! source), hash buckets of the key otherwise (collation-free: MySQL, PostgreSQL and BigQuery
//! order strings differently, but hash them alike).

use async_trait::async_trait;
use std::collections::BTreeMap;

/// Children per split below the first level.
pub const FANOUT: u64 = 16;
/// A cell with at most this many rows on each side is read row by row.
pub const LEAF_ROWS: u64 = 32;
/// Rows listed in a report; beyond it mismatches are counted by cell.
pub const MAX_LISTED: usize = 100;
/// Most rows one leaf read returns (a full page is left unsearched, never compared in part).
pub const LEAF_LIMIT: u64 = 1000;
/// Most statements per side in one search; the cells left are counted as unsearched.
pub const MAX_STATEMENTS: u64 = 500;

/// A set of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Keys `lo <= k < hi` of a one-column integer key.
    Range {
        /// Lowest key.
        lo: i64,
        /// Past the highest key.
        hi: i64,
    },
    /// Keys whose hash is `residue` modulo `modulus`.
    Hash {
        /// Modulus.
        modulus: u64,
        /// Residue.
        residue: u64,
    },
}

impl Cell {
    /// The children `split(fan)` produces, keyed by their bucket number, and the bucket width
    /// (ranges) or modulus (hashes).
    pub fn split(&self, fan: u64) -> Split {
        match *self {
            Cell::Range { lo, hi } => {
                let span = (hi as i128 - lo as i128).max(1);
                let width = ((span + fan as i128 - 1) / fan as i128).max(1) as i64;
                Split {
                    parent: self.clone(),
                    step: width as u64,
                }
            }
            Cell::Hash { modulus, .. } => Split {
                parent: self.clone(),
                step: modulus.saturating_mul(fan),
            },
        }
    }

    /// Whether it can be split further.
    pub fn splittable(&self) -> bool {
        match *self {
            Cell::Range { lo, hi } => hi as i128 - lo as i128 > 1,
            Cell::Hash { modulus, .. } => modulus < (1 << 31),
        }
    }
}

/// A cell cut into buckets: ranges of width `step` from the parent's `lo`, or hashes modulo `step`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The cell cut.
    pub parent: Cell,
    /// Bucket width (range) or the children's modulus (hash).
    pub step: u64,
}

impl Split {
    /// The child of bucket number `b`.
    pub fn child(&self, b: i64) -> Cell {
        match self.parent {
            Cell::Range { lo, hi } => {
                let start = lo as i128 + b as i128 * self.step as i128;
                let end = (start + self.step as i128).min(hi as i128);
                Cell::Range {
                    lo: start as i64,
                    hi: end as i64,
                }
            }
            Cell::Hash { .. } => Cell::Hash {
                modulus: self.step,
                residue: b as u64,
            },
        }
    }
}

/// COUNT(*) and the two hash sums of a set of rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Print {
    /// Rows.
    pub rows: u64,
    /// Sum of the first 32-bit slices of the row hashes (as text: the engines sum exactly).
    pub sum1: String,
    /// Sum of the second slices.
    pub sum2: String,
}

/// One row as read at a leaf: key fields, watermark and each column's field (PII columns: a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRow {
    /// The key's fields (canonical text, `-` for NULL).
    pub key: Vec<String>,
    /// The watermark's canonical text (None: NULL).
    pub watermark: Option<String>,
    /// Every column's field, in declared order.
    pub fields: Vec<String>,
}

/// Overall counts and the key bounds of the compared rows on one side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows older than the cutoff.
    pub rows: u64,
    /// Smallest and greatest key (range cells only).
    pub bounds: Option<(i64, i64)>,
}

/// One side of the comparison.
#[async_trait]
pub trait Side: Send {
    /// Rows older than the cutoff, and the key bounds when cells are ranges.
    async fn totals(&mut self) -> Result<Totals, String>;
    /// The fingerprint of every non-empty bucket of `split` (rows older than the cutoff).
    async fn prints(&mut self, split: &Split) -> Result<BTreeMap<i64, Print>, String>;
    /// Every row of `cell`, whatever its watermark (at most [`LEAF_LIMIT`]).
    async fn rows(&mut self, cell: &Cell) -> Result<Vec<LeafRow>, String>;
}

/// What a row mismatch is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MismatchKind {
    /// In the source, not in BigQuery.
    MissingInBigQuery,
    /// In BigQuery, not (any more) in the source: deleted there, or never there.
    MissingInSource,
    /// In both, with different values.
    Changed,
}

/// One column that differs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ColumnDiff {
    /// Column.
    pub column: String,
    /// The source's value (None: NULL; PII: "differs" instead of values).
    pub source: Option<String>,
    /// BigQuery's value.
    pub bigquery: Option<String>,
}

/// One row that differs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// What.
    pub kind: MismatchKind,
    /// `col=value` of each key column.
    pub key: String,
    /// For `Changed`: the columns that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnDiff>,
}

/// What the search found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// Rows compared on the source side (older than the cutoff).
    pub source_rows: u64,
    /// Rows compared on the BigQuery side.
    pub bigquery_rows: u64,
    /// Rows missing in BigQuery.
    pub missing_in_bigquery: u64,
    /// Rows missing in the source.
    pub missing_in_source: u64,
    /// Rows with different values.
    pub changed: u64,
    /// Rows that differed only because they changed while the check ran (not mismatches).
    pub changed_during_check: u64,
    /// Cells left unsearched once [`MAX_LISTED`] rows were listed, and their row-count gap.
    pub unsearched_cells: u64,
    /// The listed rows (at most [`MAX_LISTED`]).
    pub listed: Vec<Mismatch>,
    /// Statements run on each side (source, BigQuery).
    pub statements: (u64, u64),
}

impl Found {
    /// Any mismatch.
    pub fn in_sync(&self) -> bool {
        self.missing_in_bigquery == 0 && self.missing_in_source == 0 && self.changed == 0 && self.unsearched_cells == 0
    }
}

/// How leaves are compared: column names, which are PII, the key's positions, the cutoff.
#[derive(Clone, Debug)]
pub struct Compare {
    /// Declared column names, in order.
    pub columns: Vec<String>,
    /// Declared type of each column (to show floats).
    pub types: Vec<&'static str>,
    /// PII columns (their fields are hashes).
    pub pii: Vec<bool>,
    /// Key column positions.
    pub key: Vec<usize>,
    /// Watermark cutoff, canonical text: rows at or after it are not compared.
    pub cutoff: String,
    /// Rows per first-level cell.
    pub chunk_rows: u64,
    /// Range cells (one INT64 key) or hash cells.
    pub ranges: bool,
    /// Rows are compared by key only (the row count finding the keys behind a count difference).
    pub count_only: bool,
}

/// Runs the search.
pub async fn search(cmp: &Compare, src: &mut dyn Side, bq: &mut dyn Side) -> Result<Found, String> {
    let mut found = Found::default();
    // Both sides at once: each statement pair costs the slower side, not the sum.
    let (s, b) = futures::join!(src.totals(), bq.totals());
    let (s, b) = (s?, b?);
    found.statements = (1, 1);
    found.source_rows = s.rows;
    found.bigquery_rows = b.rows;
    if s.rows == 0 && b.rows == 0 {
        return Ok(found);
    }
    let cells = s.rows.max(b.rows).div_ceil(cmp.chunk_rows.max(1)).max(1);
    let lo = [s.bounds, b.bounds].iter().flatten().map(|x| x.0).min().unwrap_or(0);
    let hi = [s.bounds, b.bounds].iter().flatten().map(|x| x.1).max().unwrap_or(0);
    // Keys far from zero would overflow `key - lo` in the engines' 64-bit arithmetic: hash
    // cells then, like any other key.
    const LIMIT: i64 = 1 << 62;
    let root = if cmp.ranges && (-LIMIT..LIMIT).contains(&lo) && (-LIMIT..LIMIT).contains(&hi) {
        Cell::Range { lo, hi: hi + 1 }
    } else {
        Cell::Hash { modulus: 1, residue: 0 }
    };
    // Depth first: a table with many mismatches reaches its first listed rows after a few
    // statements and stops at MAX_LISTED; with few mismatches every differing cell is searched
    // (each split once, whatever the order).
    let mut stack: Vec<(Cell, u64, u64)> = Vec::new();
    diff_children(&root.split(cells), src, bq, &mut stack, &mut found).await?;
    stack.reverse();
    while let Some((cell, ns, nb)) = stack.pop() {
        if found.listed.len() >= MAX_LISTED || found.statements.0 >= MAX_STATEMENTS {
            found.unsearched_cells += 1;
            continue;
        }
        if ns.max(nb) <= LEAF_ROWS || !cell.splittable() {
            leaf(cmp, &cell, src, bq, &mut found).await?;
        } else {
            let mut children = Vec::new();
            diff_children(&cell.split(FANOUT), src, bq, &mut children, &mut found).await?;
            children.reverse();
            stack.extend(children);
        }
    }
    Ok(found)
}

async fn diff_children(
    split: &Split,
    src: &mut dyn Side,
    bq: &mut dyn Side,
    out: &mut Vec<(Cell, u64, u64)>,
    found: &mut Found,
) -> Result<(), String> {
    let (s, b) = futures::join!(src.prints(split), bq.prints(split));
    let (s, b) = (s?, b?);
    found.statements.0 += 1;
    found.statements.1 += 1;
    let empty = Print::default();
    let buckets: std::collections::BTreeSet<i64> = s.keys().chain(b.keys()).copied().collect();
    for k in buckets {
        let (ps, pb) = (s.get(&k).unwrap_or(&empty), b.get(&k).unwrap_or(&empty));
        if ps != pb {
            out.push((split.child(k), ps.rows, pb.rows));
        }
    }
    Ok(())
}

async fn leaf(
    cmp: &Compare,
    cell: &Cell,
    src: &mut dyn Side,
    bq: &mut dyn Side,
    found: &mut Found,
) -> Result<(), String> {
    let (s, b) = futures::join!(src.rows(cell), bq.rows(cell));
    let (s, b) = (s?, b?);
    found.statements.0 += 1;
    found.statements.1 += 1;
    if s.len() as u64 >= LEAF_LIMIT || b.len() as u64 >= LEAF_LIMIT {
        // Mostly rows newer than the cutoff: a partial page per side would compare different rows.
        found.unsearched_cells += 1;
        return Ok(());
    }
    let index = |rows: Vec<LeafRow>| rows.into_iter().map(|r| (r.key.clone(), r)).collect::<BTreeMap<_, _>>();
    let (s, b) = (index(s), index(b));
    let keys: std::collections::BTreeSet<&Vec<String>> = s.keys().chain(b.keys()).collect();
    // A row at or past the cutoff on either side changed (or arrived) during the check.
    let recent = |r: Option<&LeafRow>| {
        r.and_then(|r| r.watermark.as_deref())
            .is_some_and(|w| w >= cmp.cutoff.as_str())
    };
    for key in keys {
        let (rs, rb) = (s.get(key), b.get(key));
        // A row without a watermark is in no fingerprint: not compared here either.
        if [rs, rb].iter().any(|r| r.is_some_and(|r| r.watermark.is_none())) {
            continue;
        }
        if recent(rs) || recent(rb) {
            // Counted when it made the sides differ: in one side's compared rows only, or with
            // other values.
            let old = |r: Option<&LeafRow>| r.is_some() && !recent(r);
            if old(rs) != old(rb) || (!cmp.count_only && rs.map(|r| &r.fields) != rb.map(|r| &r.fields)) {
                found.changed_during_check += 1;
            }
            continue;
        }
        let kind = match (rs, rb) {
            (Some(_), None) => MismatchKind::MissingInBigQuery,
            (None, Some(_)) => MismatchKind::MissingInSource,
            (Some(x), Some(y)) if !cmp.count_only && x.fields != y.fields => MismatchKind::Changed,
            _ => continue,
        };
        let columns = match (rs, rb) {
            (Some(x), Some(y)) => column_diffs(cmp, &x.fields, &y.fields),
            _ => Vec::new(),
        };
        match kind {
            MismatchKind::MissingInBigQuery => found.missing_in_bigquery += 1,
            MismatchKind::MissingInSource => found.missing_in_source += 1,
            MismatchKind::Changed => found.changed += 1,
        }
        if found.listed.len() < MAX_LISTED {
            found.listed.push(Mismatch {
                kind,
                key: show_key(cmp, key),
                columns,
            });
        }
    }
    Ok(())
}

fn show_value(cmp: &Compare, i: usize, field: &str) -> Option<String> {
    let v = super::canon::decode_field(field)?;
    Some(if cmp.types[i] == "FLOAT64" {
        super::canon::show_float(&v)
    } else {
        v
    })
}

fn column_diffs(cmp: &Compare, s: &[String], b: &[String]) -> Vec<ColumnDiff> {
    let mut out = Vec::new();
    for (i, (x, y)) in s.iter().zip(b).enumerate() {
        if x == y {
            continue;
        }
        let (source, bigquery) = if cmp.pii[i] {
            (Some("differs".to_string()), Some("differs".to_string()))
        } else {
            (show_value(cmp, i, x), show_value(cmp, i, y))
        };
        out.push(ColumnDiff {
            column: cmp.columns[i].clone(),
            source,
            bigquery,
        });
    }
    out
}

fn show_key(cmp: &Compare, key: &[String]) -> String {
    cmp.key
        .iter()
        .zip(key)
        .map(|(&i, f)| {
            // A PII key column is read as a hash of its field: shown as its first characters.
            let v = if cmp.pii[i] {
                format!("<pii {}>", f.chars().take(8).collect::<String>())
            } else {
                show_value(cmp, i, f).unwrap_or_else(|| "NULL".into())
            };
            format!("{}={v}", cmp.columns[i])
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side held in memory: (key, watermark, value) rows; the fingerprint is a toy hash.
    struct Mem {
        rows: Vec<(i64, String, String)>,
        cutoff: String,
        statements: usize,
    }

    fn h(key: i64, v: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut s = std::collections::hash_map::DefaultHasher::new();
        (key, v).hash(&mut s);
        s.finish() & 0xffff_ffff
    }

    fn inside(c: &Cell, k: i64) -> bool {
        match *c {
            Cell::Range { lo, hi } => k >= lo && k < hi,
            Cell::Hash { modulus, residue } => (k as u64).wrapping_mul(2654435761) % modulus == residue,
        }
    }

    #[async_trait]
    impl Side for Mem {
        async fn totals(&mut self) -> Result<Totals, String> {
            let old: Vec<_> = self.rows.iter().filter(|r| r.1 < self.cutoff).collect();
            Ok(Totals {
                rows: old.len() as u64,
                bounds: old.iter().map(|r| r.0).min().zip(old.iter().map(|r| r.0).max()),
            })
        }
        async fn prints(&mut self, split: &Split) -> Result<BTreeMap<i64, Print>, String> {
            self.statements += 1;
            let mut out: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
            for (k, w, v) in &self.rows {
                if w >= &self.cutoff || !inside(&split.parent, *k) {
                    continue;
                }
                let b = match split.parent {
                    Cell::Range { lo, .. } => (k - lo) / split.step as i64,
                    Cell::Hash { .. } => ((*k as u64).wrapping_mul(2654435761) % split.step) as i64,
                };
                let e = out.entry(b).or_default();
                e.0 += 1;
                e.1 += h(*k, v);
            }
            Ok(out
                .into_iter()
                .map(|(b, (n, s))| {
                    (
                        b,
                        Print {
                            rows: n,
                            sum1: s.to_string(),
                            sum2: String::new(),
                        },
                    )
                })
                .collect())
        }
        async fn rows(&mut self, cell: &Cell) -> Result<Vec<LeafRow>, String> {
            self.statements += 1;
            Ok(self
                .rows
                .iter()
                .filter(|r| inside(cell, r.0))
                .map(|(k, w, v)| LeafRow {
                    key: vec![format!("{}:{k}", k.to_string().len())],
                    watermark: Some(w.clone()),
                    fields: vec![format!("{}:{k}", k.to_string().len()), format!("{}:{v}", v.len())],
                })
                .collect())
        }
    }

    fn cmp(ranges: bool) -> Compare {
        Compare {
            columns: vec!["id".into(), "v".into()],
            types: vec!["INT64", "STRING"],
            pii: vec![false, false],
            key: vec![0],
            cutoff: "5".into(),
            chunk_rows: 1000,
            ranges,
            count_only: false,
        }
    }

    fn side(n: i64) -> Mem {
        Mem {
            rows: (0..n).map(|k| (k, "1".to_string(), format!("v{k}"))).collect(),
            cutoff: "5".into(),
            statements: 0,
        }
    }

    #[tokio::test]
    async fn a_table_in_sync_costs_one_statement_per_side_after_the_totals() {
        for ranges in [true, false] {
            let (mut s, mut b) = (side(10_000), side(10_000));
            let found = search(&cmp(ranges), &mut s, &mut b).await.unwrap();
            assert!(found.in_sync(), "{found:?}");
            assert_eq!((s.statements, b.statements), (1, 1));
        }
    }

    #[tokio::test]
    async fn each_fault_is_found_and_named() {
        for ranges in [true, false] {
            let (mut s, mut b) = (side(10_000), side(10_000));
            s.rows.retain(|r| r.0 != 17);
            b.rows.retain(|r| r.0 != 4242);
            b.rows.push((20_000, "1".into(), "extra".into()));
            b.rows[777].2 = "changed".into();
            // Changed during the check: the source row moved past the cutoff.
            s.rows[900].1 = "9".into();
            s.rows[900].2 = "new".into();
            let found = search(&cmp(ranges), &mut s, &mut b).await.unwrap();
            assert_eq!(
                (
                    found.missing_in_source,
                    found.missing_in_bigquery,
                    found.changed,
                    found.changed_during_check
                ),
                (2, 1, 1, 1),
                "{found:?}"
            );
            let keys: Vec<_> = found.listed.iter().map(|m| (m.kind.clone(), m.key.clone())).collect();
            assert!(
                keys.contains(&(MismatchKind::MissingInSource, "id=17".into())),
                "{keys:?}"
            );
            assert!(
                keys.contains(&(MismatchKind::MissingInSource, "id=20000".into())),
                "{keys:?}"
            );
            assert!(
                keys.contains(&(MismatchKind::MissingInBigQuery, "id=4242".into())),
                "{keys:?}"
            );
            let changed = found.listed.iter().find(|m| m.kind == MismatchKind::Changed).unwrap();
            assert_eq!(changed.key, "id=777");
            assert_eq!(
                changed.columns,
                vec![ColumnDiff {
                    column: "v".into(),
                    source: Some("v777".into()),
                    bigquery: Some("changed".into())
                }]
            );
            // Far fewer statements than rows: only differing cells were split.
            assert!(s.statements < 40, "{}", s.statements);
        }
    }

    #[tokio::test]
    async fn keys_near_the_ends_of_int64_use_hash_cells() {
        let big = |n: i64| Mem {
            rows: (0..n)
                .map(|k| (i64::MAX - k, "1".to_string(), format!("v{k}")))
                .collect(),
            cutoff: "5".into(),
            statements: 0,
        };
        let (mut s, mut b) = (big(3000), big(3000));
        b.rows[10].2 = "changed".into();
        let found = search(&cmp(true), &mut s, &mut b).await.unwrap();
        assert_eq!(found.changed, 1, "{found:?}");
    }
}
