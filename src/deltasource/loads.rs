//! The load plan of a Delta source (pure): every landed version not yet loaded, one batch each, in
//! version order — a version waits for the one before it. A version whose load failed on its data
//! (quarantined) stops the versions after it until it loads (the table never skips a version).

use crate::ingest::model::{Batch, BatchKind, FileState, Ledger, SourceFile};
use crate::ingest::plan::{LoadPlan, Settings, Settled, file_keys, resuming, settled, snapshot_set};
use std::collections::BTreeMap;

/// Plans the loads of landed versions (`listing`: complete version folders' files and markers).
pub fn plan(s: &Settings, listing: &[SourceFile], ledger: &Ledger) -> LoadPlan {
    let mut out = resuming(s, ledger);
    out.resumed.sort_by(|a, b| a.reload_id.cmp(&b.reload_id));
    let in_flight = file_keys(&out.resumed);
    // Folder names sort in loading order (a reload right after its version).
    let mut versions: BTreeMap<&str, Vec<SourceFile>> = BTreeMap::new();
    for f in listing {
        let set = snapshot_set(&s.source_prefix, &f.uri);
        if super::folder_version(set).is_some() {
            versions.entry(set).or_default().push(f.clone());
        }
    }
    let mut oldest = out.resumed.iter().flat_map(|b| &b.files).map(|f| f.updated_ms).min();
    let mut slots = out
        .budget_left
        .saturating_sub(out.resumed.iter().map(jobs).sum::<u32>());
    let mut blocked = false;
    for (version, files) in versions {
        if files
            .iter()
            .any(|f| in_flight.contains(&(f.uri.as_str(), f.generation)))
        {
            continue;
        }
        let mut done = true;
        for f in &files {
            match settled(s, ledger, f, false) {
                Settled::Done
                    if ledger
                        .get(&f.uri, f.generation)
                        .is_some_and(|e| e.state == FileState::Quarantined) =>
                {
                    blocked = true;
                }
                Settled::Done => {}
                Settled::Retry => {
                    out.retried_quarantined += 1;
                    done = false;
                }
                Settled::New => done = false,
            }
        }
        if done && !blocked {
            continue;
        }
        let data = files.iter().filter(|f| !f.uri.ends_with(super::COMPLETE)).count();
        out.pending_files += data;
        oldest = oldest.into_iter().chain(files.iter().map(|f| f.updated_ms)).min();
        let id = version.strip_prefix("v-").unwrap_or(version);
        let b = Batch::new(&s.table, BatchKind::Delta, files, id, vec![]);
        // A version is atomic (one statement): it waits for a day whose budget has room for all
        // its jobs — or, larger than a whole day's budget, for a day nothing has run yet.
        let whole_day =
            jobs(&b) > s.daily_job_budget && s.jobs_today == 0 && out.new.is_empty() && out.resumed.is_empty();
        if blocked || (jobs(&b) > slots && !whole_day) {
            // Versions load in order: the rest wait.
            out.deferred_files += data;
            blocked = true;
            continue;
        }
        slots = slots.saturating_sub(jobs(&b));
        out.new.push(b);
    }
    out.lag_ms = oldest.map(|o| (s.now_ms - o).max(0));
    out
}

/// Load jobs of a version: one per data file.
fn jobs(b: &Batch) -> u32 {
    b.files.iter().filter(|f| !f.uri.ends_with(super::COMPLETE)).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LoadMode, ReuploadPolicy};
    use crate::ingest::model::{BatchMeta, Entry};

    fn settings(budget: u32) -> Settings {
        Settings {
            table: "p.d.t".into(),
            mode: LoadMode::Incremental,
            max_files_per_job: 10,
            max_bytes_per_job: None,
            daily_job_budget: budget,
            jobs_today: 0,
            reuploads: ReuploadPolicy::Load,
            schema_hash: "h".into(),
            snapshot_marker: "_COMPLETE".into(),
            source_prefix: "gs://b/land/".into(),
            reload: None,
            now_ms: 10_000,
        }
    }

    fn f(name: &str) -> SourceFile {
        SourceFile {
            uri: format!("gs://b/land/{name}"),
            generation: 1,
            size: 10,
            updated_ms: 5,
        }
    }

    fn listing() -> Vec<SourceFile> {
        vec![
            f("v-00000000000000000003/_COMPLETE"),
            f("v-00000000000000000003/a.parquet"),
            f("v-00000000000000000004/_COMPLETE"),
            f("v-00000000000000000005/_COMPLETE"),
            f("v-00000000000000000005/b.parquet"),
            f("v-00000000000000000005/c.parquet"),
        ]
    }

    #[test]
    fn versions_load_in_order_each_one_batch_and_wait_for_the_budget_in_order() {
        let p = plan(&settings(100), &listing(), &Ledger::default());
        let got: Vec<(&str, usize)> = p.new.iter().map(|b| (b.reload_id.as_str(), b.files.len())).collect();
        assert_eq!(
            got,
            [
                ("00000000000000000003", 2),
                ("00000000000000000004", 1),
                ("00000000000000000005", 3)
            ]
        );
        assert!(p.new.iter().all(|b| b.kind == BatchKind::Delta));
        // Two jobs left: version 5 needs two more than version 3's one — it waits, whole.
        let p = plan(&settings(2), &listing(), &Ledger::default());
        assert_eq!(p.new.len(), 2);
        assert_eq!(p.deferred_files, 2);
    }

    #[test]
    fn a_version_larger_than_a_days_budget_goes_alone_on_an_untouched_day() {
        // Version 5 has two files; the budget is one job a day.
        let listing: Vec<SourceFile> = listing().into_iter().filter(|f| f.uri.contains("0005")).collect();
        let p = plan(&settings(1), &listing, &Ledger::default());
        assert_eq!(p.new.len(), 1, "it would never fit otherwise");
        let mut used = settings(1);
        used.jobs_today = 1;
        assert!(plan(&used, &listing, &Ledger::default()).new.is_empty());
    }

    #[test]
    fn a_quarantined_version_stops_the_ones_after_it() {
        let mut ledger = Ledger::default();
        let i = ledger.batch_index(BatchMeta {
            id: "x".into(),
            kind: BatchKind::Delta,
            reload_id: "00000000000000000003".into(),
            replaces: vec![],
            schema_hash: "h".into(),
        });
        for name in ["v-00000000000000000003/_COMPLETE", "v-00000000000000000003/a.parquet"] {
            ledger.insert(
                &f(name).uri,
                1,
                Entry {
                    state: FileState::Quarantined,
                    batch: i,
                    category: Some(crate::ingest::model::Category::Corrupt),
                    reloaded: false,
                    size: 10,
                    updated_ms: 5,
                },
            );
        }
        let p = plan(&settings(100), &listing(), &ledger);
        assert!(p.new.is_empty(), "{:?}", p.new);
        assert_eq!(p.deferred_files, 3);
    }
}
