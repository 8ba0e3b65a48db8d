//! The load plan of an incremental database source (pure): every complete set not yet loaded, in
//! the order the sets were completed — a pull's files as append batches, a daily reload's files as
//! one batch that replaces that day's rows.

use super::landing;
use crate::ingest::model::{Batch, BatchKind, Ledger, SourceFile};
use crate::ingest::plan::{LoadPlan, Settings, Settled, file_keys, resuming, settled, snapshot_set, take_batch};
use std::collections::BTreeMap;

/// Plans the loads of complete sets (`listing` holds only complete sets' data files and their
/// `_COMPLETE` markers, see [`crate::ingest::source::Discovery`]).
pub fn plan(s: &Settings, listing: &[SourceFile], ledger: &Ledger) -> LoadPlan {
    let mut out = resuming(s, ledger);
    let in_flight = file_keys(&out.resumed);
    // set → (completed at, files not yet loaded)
    let mut sets: BTreeMap<&str, (i64, Vec<SourceFile>)> = BTreeMap::new();
    for f in listing {
        let set = snapshot_set(&s.source_prefix, &f.uri);
        let entry = sets.entry(set).or_insert((i64::MAX, Vec::new()));
        if f.uri.ends_with(&format!("/{}", landing::COMPLETE)) {
            entry.0 = f.updated_ms;
            continue;
        }
        if in_flight.contains(&(f.uri.as_str(), f.generation)) {
            continue;
        }
        // A pull's files are never abandoned; a daily reload's are when one of them was bad (the
        // day keeps its rows; the next day's reload is another set).
        match settled(s, ledger, f, true) {
            Settled::Done => continue,
            Settled::Retry => out.retried_quarantined += 1,
            Settled::New => {}
        }
        entry.1.push(f.clone());
    }
    let mut ordered: Vec<(&str, i64, Vec<SourceFile>)> = sets
        .into_iter()
        .filter(|(_, (_, files))| !files.is_empty())
        .map(|(k, (at, files))| (k, at, files))
        .collect();
    ordered.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    let mut oldest = out.resumed.iter().flat_map(|b| &b.files).map(|f| f.updated_ms).min();
    let mut slots = out.budget_left.saturating_sub(out.resumed.len() as u32) as usize;
    for (set, _, mut files) in ordered {
        out.pending_files += files.len();
        oldest = oldest.into_iter().chain(files.iter().map(|f| f.updated_ms)).min();
        files.sort_by(|a, b| a.uri.cmp(&b.uri));
        if let Some(day) = set.strip_prefix(landing::SetKind::Day.prefix()) {
            // One batch, however many files: its statement deletes the day's rows once.
            if slots == 0 {
                out.deferred_files += files.len();
                continue;
            }
            out.new.push(Batch::new(&s.table, BatchKind::Day, files, day, vec![]));
            slots = slots.saturating_sub(1);
            continue;
        }
        let mut rest = files.as_slice();
        while !rest.is_empty() && slots > 0 {
            let n = take_batch(rest, s.max_files_per_job, s.max_bytes_per_job);
            out.new
                .push(Batch::new(&s.table, BatchKind::Append, rest[..n].to_vec(), "", vec![]));
            rest = &rest[n..];
            slots -= 1;
        }
        out.deferred_files += rest.len();
    }
    out.lag_ms = oldest.map(|o| (s.now_ms - o).max(0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LoadMode, ReuploadPolicy};

    fn settings() -> Settings {
        Settings {
            table: "p.d.t".into(),
            mode: LoadMode::Incremental,
            max_files_per_job: 2,
            max_bytes_per_job: None,
            daily_job_budget: 100,
            jobs_today: 0,
            reuploads: ReuploadPolicy::Load,
            schema_hash: "h".into(),
            snapshot_marker: "_COMPLETE".into(),
            source_prefix: "gs://b/land/".into(),
            reload: None,
            now_ms: 10_000,
        }
    }

    fn f(name: &str, at: i64) -> SourceFile {
        SourceFile {
            uri: format!("gs://b/land/{name}"),
            generation: 1,
            size: 10,
            updated_ms: at,
        }
    }

    #[test]
    fn sets_load_in_completion_order_and_a_day_is_one_batch() {
        let listing = vec![
            f("day-2026-11-26/part-00000.jsonl", 50),
            f("day-2026-11-26/part-00001.jsonl", 51),
            f("day-2026-11-26/part-00002.jsonl", 52),
            f("day-2026-11-26/_COMPLETE", 60),
            f("pull-0000000001/part-00000.jsonl", 10),
            f("pull-0000000001/_COMPLETE", 11),
            f("pull-0000000002/part-00000.jsonl", 70),
            f("pull-0000000002/_COMPLETE", 71),
        ];
        let p = plan(&settings(), &listing, &Ledger::default());
        let kinds: Vec<(BatchKind, usize, &str)> = p
            .new
            .iter()
            .map(|b| (b.kind, b.files.len(), b.reload_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (BatchKind::Append, 1, ""),
                (BatchKind::Day, 3, "2026-11-26"),
                (BatchKind::Append, 1, "")
            ]
        );
        assert_eq!(p.pending_files, 5);
    }
}
