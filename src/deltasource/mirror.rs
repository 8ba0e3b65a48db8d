//! How each Delta version reaches the BigQuery table (pure): the files to copy and load, and the
//! files whose rows leave the table — keyed by the Delta file each row came from (the lineage
//! column `_bqsteward_source_file`).
//!
//! A version that changes data (append, DELETE, UPDATE, MERGE) deletes the rows of the files it
//! removes and loads the files it adds, in one statement. A compaction (OPTIMIZE: every action
//! `dataChange: false`) rewrites rows without changing them: nothing is copied or loaded; the new
//! files join a *group* whose rows the table already holds under the old files' names (`held`).
//! Only when a later version changes data in a group's file are the group's rows replaced: its
//! held rows are deleted and its remaining files copied and loaded then (with their own names).
//! So OPTIMIZE costs no egress; a change to compacted data costs one copy of that group's files.

use super::log::{Commit, DeltaFile};
use std::collections::BTreeSet;

/// Compacted files whose rows the table holds under other names.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// The live Delta files of the group.
    pub files: Vec<DeltaFile>,
    /// The lineage (Delta paths) the table holds the group's rows under.
    pub held: BTreeSet<String>,
}

/// What one version does to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Files to copy and load (with their own lineage).
    pub copies: Vec<DeltaFile>,
    /// Lineage whose rows leave the table.
    pub deletes: BTreeSet<String>,
    /// Whether this was a compaction (nothing copied or loaded).
    pub compaction: bool,
}

/// The mirror's state after `commit`, and what the commit does to the table.
pub fn step(groups: &[Group], commit: &Commit) -> (Vec<Group>, Step) {
    let data_change = commit.adds.iter().any(|(_, c)| *c) || commit.removes.iter().any(|(_, c)| *c);
    let removed: BTreeSet<&str> = commit.removes.iter().map(|(p, _)| p.as_str()).collect();
    let touches = |g: &Group| g.files.iter().any(|f| removed.contains(f.path.as_str()));
    let (touched, mut kept): (Vec<Group>, Vec<Group>) = groups.iter().cloned().partition(touches);
    let grouped: BTreeSet<String> = touched
        .iter()
        .flat_map(|g| g.files.iter().map(|f| f.path.clone()))
        .collect();
    let compaction = !data_change && !commit.removes.is_empty() && !commit.adds.is_empty();
    let mut out = Step {
        compaction,
        ..Step::default()
    };
    if compaction {
        // The rows stay; their names in the table do not change.
        let mut held: BTreeSet<String> = touched.iter().flat_map(|g| g.held.iter().cloned()).collect();
        held.extend(removed.iter().filter(|p| !grouped.contains(**p)).map(|p| p.to_string()));
        let mut files: Vec<DeltaFile> = touched
            .into_iter()
            .flat_map(|g| g.files)
            .filter(|f| !removed.contains(f.path.as_str()))
            .collect();
        files.extend(commit.adds.iter().map(|(f, _)| f.clone()));
        kept.push(Group { files, held });
        return (kept, out);
    }
    for g in touched {
        out.deletes.extend(g.held);
        out.copies
            .extend(g.files.into_iter().filter(|f| !removed.contains(f.path.as_str())));
    }
    out.deletes
        .extend(removed.iter().filter(|p| !grouped.contains(**p)).map(|p| p.to_string()));
    out.copies.extend(commit.adds.iter().map(|(f, _)| f.clone()));
    (kept, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    fn file(path: &str) -> DeltaFile {
        DeltaFile {
            path: path.into(),
            size: 1,
            partition: BTreeMap::new(),
            rows: None,
        }
    }

    /// A random history: appends, deletes/updates (rewrite some rows of a file), compactions.
    #[derive(Clone, Debug)]
    enum Op {
        Append(u8),
        Rewrite(usize, u8),
        Drop(usize),
        Compact(Vec<usize>, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..4).prop_map(Op::Append),
            (any::<usize>(), 0u8..3).prop_map(|(i, n)| Op::Rewrite(i, n)),
            any::<usize>().prop_map(Op::Drop),
            (proptest::collection::vec(any::<usize>(), 1..4), 1u8..3).prop_map(|(v, n)| Op::Compact(v, n)),
        ]
    }

    proptest! {
        /// After every version, the table (rows tagged by lineage, with deletes and loads applied)
        /// holds exactly the Delta table's rows — none twice — and compactions load nothing.
        #[test]
        fn the_table_holds_exactly_the_live_rows(ops in proptest::collection::vec(op(), 1..40)) {
            let mut live: BTreeMap<String, Vec<u32>> = BTreeMap::new(); // Delta: file → rows
            let mut table: Vec<(u32, String)> = Vec::new(); // BigQuery: (row, lineage)
            let mut groups: Vec<Group> = Vec::new();
            let (mut next_row, mut next_file) = (0u32, 0u32);
            let mut new_file = |live: &mut BTreeMap<String, Vec<u32>>, rows: Vec<u32>| {
                next_file += 1;
                let p = format!("f{next_file}");
                live.insert(p.clone(), rows);
                p
            };
            for (v, op) in ops.into_iter().enumerate() {
                let names: Vec<String> = live.keys().cloned().collect();
                let mut c = Commit { version: v as u64, ..Commit::default() };
                match op {
                    Op::Append(n) => {
                        let rows: Vec<u32> = (0..n).map(|_| { next_row += 1; next_row }).collect();
                        let p = new_file(&mut live, rows);
                        c.adds.push((file(&p), true));
                    }
                    Op::Rewrite(i, keep) if !names.is_empty() => {
                        let old = &names[i % names.len()];
                        let mut rows = live.remove(old).unwrap();
                        rows.truncate(keep as usize);
                        c.removes.push((old.clone(), true));
                        let p = new_file(&mut live, rows);
                        c.adds.push((file(&p), true));
                    }
                    Op::Drop(i) if !names.is_empty() => {
                        let old = &names[i % names.len()];
                        live.remove(old);
                        c.removes.push((old.clone(), true));
                    }
                    Op::Compact(pick, into) if !names.is_empty() => {
                        let chosen: BTreeSet<String> = pick.iter().map(|i| names[i % names.len()].clone()).collect();
                        let mut rows = Vec::new();
                        for old in &chosen {
                            rows.extend(live.remove(old).unwrap());
                            c.removes.push((old.clone(), false));
                        }
                        let per = rows.len().div_ceil(into as usize).max(1);
                        let chunks: Vec<Vec<u32>> = if rows.is_empty() { vec![vec![]] } else { rows.chunks(per).map(<[u32]>::to_vec).collect() };
                        for chunk in chunks {
                            let p = new_file(&mut live, chunk);
                            c.adds.push((file(&p), false));
                        }
                    }
                    _ => continue,
                }
                let (g, s) = step(&groups, &c);
                groups = g;
                if s.compaction {
                    prop_assert!(s.copies.is_empty() && s.deletes.is_empty());
                }
                table.retain(|(_, l)| !s.deletes.contains(l));
                for f in &s.copies {
                    for r in &live[&f.path] {
                        table.push((*r, f.path.clone()));
                    }
                }
                let mut have: HashMap<u32, usize> = HashMap::new();
                for (r, _) in &table { *have.entry(*r).or_default() += 1; }
                let mut want: HashMap<u32, usize> = HashMap::new();
                for rows in live.values() { for r in rows { *want.entry(*r).or_default() += 1; } }
                prop_assert_eq!(have, want);
            }
        }
    }

    #[test]
    fn a_compaction_copies_nothing_and_a_later_update_replaces_its_group() {
        let append = |v, p: &str| Commit {
            version: v,
            adds: vec![(file(p), true)],
            removes: vec![],
        };
        let (g, _) = step(&[], &append(0, "a"));
        let (g, _) = step(&g, &append(1, "b"));
        let compact = Commit {
            version: 2,
            adds: vec![(file("ab1"), false), (file("ab2"), false)],
            removes: vec![("a".into(), false), ("b".into(), false)],
        };
        let (g, s) = step(&g, &compact);
        assert!(s.compaction && s.copies.is_empty() && s.deletes.is_empty());
        let update = Commit {
            version: 3,
            adds: vec![(file("ab1x"), true)],
            removes: vec![("ab1".into(), true)],
        };
        let (g, s) = step(&g, &update);
        assert!(g.is_empty());
        assert_eq!(s.deletes, ["a", "b"].into_iter().map(String::from).collect());
        let copied: Vec<&str> = s.copies.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(copied, ["ab2", "ab1x"]);
    }
}
