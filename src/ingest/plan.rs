//! The load planner: listing × ledger → batches. Pure (no I/O), so `plan` and `apply` agree and
//! the benchmark measures exactly this.

use super::model::{Batch, BatchKind, Category, FileState, Ledger, SourceFile};
use super::reload::Reload;
use crate::crd::ingested_table::{LoadMode, ReuploadPolicy};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What the planner needs besides the listing and the ledger.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `project.dataset.table` of the destination (part of every batch id).
    pub table: String,
    /// Incremental or snapshot.
    pub mode: LoadMode,
    /// Files per load job.
    pub max_files_per_job: usize,
    /// Bytes per load job.
    pub max_bytes_per_job: Option<u64>,
    /// Load jobs allowed per table per day.
    pub daily_job_budget: u32,
    /// Load jobs used today (from the ledger).
    pub jobs_today: u32,
    /// What to do with a new generation of an already loaded file.
    pub reuploads: ReuploadPolicy,
    /// Hash of the declared schema (IncompatibleSchema quarantines are retried when it changes).
    pub schema_hash: String,
    /// Snapshot completion marker (object name within a set), empty for none.
    pub snapshot_marker: String,
    /// The source prefix (`gs://bucket/prefix/`), for snapshot set names.
    pub source_prefix: String,
    /// A re-ingestion request.
    pub reload: Option<Reload>,
    /// Now, milliseconds since the epoch (for lag).
    pub now_ms: i64,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadPlan {
    /// Batches already in flight (PLANNED in the ledger), resumed first.
    pub resumed: Vec<Batch>,
    /// New batches, oldest files first, within the day's job budget.
    pub new: Vec<Batch>,
    /// Files not yet loaded that wait for tomorrow's budget.
    pub deferred_files: usize,
    /// New generations of loaded files skipped (`reuploadedFiles: Ignore`).
    pub ignored_reuploads: usize,
    /// Quarantined files retried because the declared schema changed.
    pub retried_quarantined: usize,
    /// Files not yet in the table (new + resumed + deferred).
    pub pending_files: usize,
    /// Age of the oldest file not yet in the table (milliseconds).
    pub lag_ms: Option<i64>,
    /// Snapshot mode: the set chosen, or why none is loaded.
    pub snapshot: Option<SnapshotChoice>,
    /// Load jobs left today before this plan runs.
    pub budget_left: u32,
}

/// Snapshot mode: which set of files the table should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotChoice {
    /// The table already holds the newest complete set.
    UpToDate(String),
    /// Load this set (its batch is in `new` or `resumed`).
    Load(String),
    /// The newest complete set has quarantined files; the table keeps its current contents.
    Blocked { set: String, quarantined: usize },
    /// No complete set exists yet.
    NoCompleteSet,
}

impl LoadPlan {
    /// Whether applying would do anything.
    pub fn is_empty(&self) -> bool {
        self.resumed.is_empty() && self.new.is_empty()
    }

    /// Files in new and resumed batches.
    pub fn files_to_load(&self) -> usize {
        self.resumed.iter().chain(&self.new).map(|b| b.files.len()).sum()
    }
}

/// Plans the loads of one table.
pub fn plan(settings: &Settings, listing: &[SourceFile], ledger: &Ledger) -> LoadPlan {
    let budget_left = settings.daily_job_budget.saturating_sub(settings.jobs_today);
    let mut out = LoadPlan {
        budget_left,
        ..LoadPlan::default()
    };
    let in_flight = resumed_batches(settings, ledger);
    let in_flight_keys: HashSet<(&str, i64)> = in_flight
        .iter()
        .flat_map(|b| b.files.iter().map(|f| (f.uri.as_str(), f.generation)))
        .collect();
    let mut oldest: Option<i64> = in_flight.iter().flat_map(|b| &b.files).map(|f| f.updated_ms).min();
    out.pending_files = in_flight_keys.len();
    out.resumed = in_flight.clone();

    match settings.mode {
        LoadMode::Incremental => {
            let mut pending = incremental_candidates(settings, listing, ledger, &in_flight_keys, &mut out);
            out.pending_files += pending.len();
            oldest = oldest.into_iter().chain(pending.iter().map(|f| f.updated_ms)).min();
            // Oldest first, so lag shrinks fastest; ties by name for determinism.
            pending.sort_unstable_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then_with(|| a.uri.cmp(&b.uri)));
            let slots = budget_left.saturating_sub(out.resumed.len() as u32) as usize;
            let mut rest = pending.as_slice();
            while !rest.is_empty() && out.new.len() < slots {
                let n = take_batch(rest, settings.max_files_per_job, settings.max_bytes_per_job);
                out.new.push(Batch::new(
                    &settings.table,
                    BatchKind::Append,
                    rest[..n].to_vec(),
                    "",
                    vec![],
                ));
                rest = &rest[n..];
            }
            out.deferred_files = rest.len();
            if let Some(r) = &settings.reload {
                plan_reload(settings, r, listing, ledger, &in_flight_keys, &mut out);
            }
        }
        LoadMode::Snapshot => {
            plan_snapshot(settings, listing, ledger, &in_flight_keys, &mut out);
            oldest = oldest
                .into_iter()
                .chain(out.new.iter().flat_map(|b| &b.files).map(|f| f.updated_ms))
                .min();
        }
    }
    out.lag_ms = oldest.map(|o| (settings.now_ms - o).max(0));
    out
}

/// Files of the listing that are not in the table, not in flight, and not excluded.
fn incremental_candidates(
    s: &Settings,
    listing: &[SourceFile],
    ledger: &Ledger,
    in_flight: &HashSet<(&str, i64)>,
    out: &mut LoadPlan,
) -> Vec<SourceFile> {
    let ignore_reuploads = s.reuploads == ReuploadPolicy::Ignore;
    let mut pending = Vec::new();
    for f in listing {
        if in_flight.contains(&(f.uri.as_str(), f.generation)) {
            continue;
        }
        match settled(s, ledger, f, false) {
            Settled::Done => continue,
            Settled::Retry => out.retried_quarantined += 1,
            Settled::New => {
                if ignore_reuploads && ledger.uri_loaded(&f.uri) {
                    out.ignored_reuploads += 1;
                    continue;
                }
            }
        }
        pending.push(f.clone());
    }
    pending
}

/// What the ledger says of one file generation.
pub(crate) enum Settled {
    /// Loaded (or abandoned, see [`settled`]), or quarantined for good: nothing to do.
    Done,
    /// Quarantined as IncompatibleSchema under another declared schema: load it again.
    Retry,
    /// Not in the ledger (or only planned elsewhere): load it.
    New,
}

/// What the ledger says of `f`. An ABANDONED file (of a snapshot set or a daily reload that had a
/// bad file) is done when `abandoned_is_done`, new otherwise (files loaded incrementally since).
pub(crate) fn settled(s: &Settings, ledger: &Ledger, f: &SourceFile, abandoned_is_done: bool) -> Settled {
    match ledger.get(&f.uri, f.generation) {
        Some(e) if e.state == FileState::Loaded || (abandoned_is_done && e.state == FileState::Abandoned) => {
            Settled::Done
        }
        Some(e) if e.state == FileState::Quarantined => {
            if e.category == Some(Category::IncompatibleSchema) && ledger.batch(e).schema_hash != s.schema_hash {
                Settled::Retry
            } else {
                Settled::Done
            }
        }
        _ => Settled::New,
    }
}

/// How many files from the front of `files` make one batch.
pub(crate) fn take_batch(files: &[SourceFile], max_files: usize, max_bytes: Option<u64>) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for f in files.iter().take(max_files.max(1)) {
        if let Some(limit) = max_bytes
            && n > 0
            && bytes + f.size > limit
        {
            break;
        }
        bytes += f.size;
        n += 1;
    }
    n.max(1)
}

/// Batches whose files' latest ledger event is PLANNED, rebuilt exactly as they were written.
pub(crate) fn resumed_batches(s: &Settings, ledger: &Ledger) -> Vec<Batch> {
    let mut groups: BTreeMap<u32, Vec<SourceFile>> = BTreeMap::new();
    for (uri, generation, e) in ledger.planned() {
        groups.entry(e.batch).or_default().push(SourceFile {
            uri: uri.to_string(),
            generation,
            size: e.size,
            updated_ms: e.updated_ms,
        });
    }
    let mut out: Vec<Batch> = groups
        .into_iter()
        .map(|(i, files)| {
            let meta = &ledger.batches[i as usize];
            let mut b = Batch::new(&s.table, meta.kind, files, &meta.reload_id, meta.replaces.clone());
            // Keep the recorded id: it names the jobs that may already exist.
            b.id = meta.id.clone();
            b.resumed = true;
            b
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Re-ingestion: the loaded files selected by the request, widened to whole batches (rows carry
/// their batch id, not their file), loaded again and swapped for the old rows in one statement.
fn plan_reload(
    s: &Settings,
    r: &Reload,
    listing: &[SourceFile],
    ledger: &Ledger,
    in_flight: &HashSet<(&str, i64)>,
    out: &mut LoadPlan,
) {
    let mut old_batches: BTreeSet<u32> = BTreeSet::new();
    for f in listing {
        if let Some(e) = ledger.get(&f.uri, f.generation)
            && e.state == FileState::Loaded
            && !e.reloaded
            && r.selects(f)
            && !in_flight.contains(&(f.uri.as_str(), f.generation))
        {
            old_batches.insert(e.batch);
        }
    }
    if old_batches.is_empty() {
        return;
    }
    let mut files: Vec<SourceFile> = listing
        .iter()
        .filter(|f| {
            ledger
                .get(&f.uri, f.generation)
                .is_some_and(|e| e.state == FileState::Loaded && old_batches.contains(&e.batch))
        })
        .cloned()
        .collect();
    files.sort_by(|a, b| a.uri.cmp(&b.uri));
    let replaces: Vec<String> = old_batches
        .iter()
        .map(|&i| ledger.batches[i as usize].id.clone())
        .collect();
    let slots = out
        .budget_left
        .saturating_sub((out.resumed.len() + out.new.len()) as u32) as usize;
    let mut rest = files.as_slice();
    let mut made = 0;
    while !rest.is_empty() && made < slots {
        let n = take_batch(rest, s.max_files_per_job, s.max_bytes_per_job);
        out.new.push(Batch::new(
            &s.table,
            BatchKind::Reload,
            rest[..n].to_vec(),
            &r.id,
            replaces.clone(),
        ));
        rest = &rest[n..];
        made += 1;
    }
    out.deferred_files += rest.len();
    out.pending_files += files.len();
}

/// The snapshot set a file belongs to: its first path segment below the source prefix (files
/// directly under the prefix form the set "").
pub fn snapshot_set<'a>(prefix: &str, uri: &'a str) -> &'a str {
    let rel = uri.strip_prefix(prefix).unwrap_or(uri);
    match rel.find('/') {
        Some(i) => &rel[..i],
        None => "",
    }
}

fn plan_snapshot(
    s: &Settings,
    listing: &[SourceFile],
    ledger: &Ledger,
    in_flight: &HashSet<(&str, i64)>,
    out: &mut LoadPlan,
) {
    if !out.resumed.is_empty() {
        // A snapshot is in flight: finish it first.
        out.snapshot = Some(SnapshotChoice::Load("(in flight)".into()));
        return;
    }
    let mut sets: BTreeMap<&str, Vec<&SourceFile>> = BTreeMap::new();
    let mut complete: BTreeSet<&str> = BTreeSet::new();
    for f in listing {
        let set = snapshot_set(&s.source_prefix, &f.uri);
        let name = f.uri.rsplit('/').next().unwrap_or_default();
        if !s.snapshot_marker.is_empty() && name == s.snapshot_marker {
            complete.insert(set);
            continue;
        }
        sets.entry(set).or_default().push(f);
    }
    let newest = sets
        .keys()
        .rev()
        .find(|k| s.snapshot_marker.is_empty() || complete.contains(*k))
        .copied();
    let Some(set) = newest else {
        out.snapshot = Some(SnapshotChoice::NoCompleteSet);
        return;
    };
    let files: Vec<SourceFile> = sets[set].iter().map(|f| (*f).clone()).collect();
    let quarantined = files
        .iter()
        .filter(|f| {
            ledger.get(&f.uri, f.generation).is_some_and(|e| {
                e.state == FileState::Quarantined
                    && !(e.category == Some(Category::IncompatibleSchema)
                        && ledger.batch(e).schema_hash != s.schema_hash)
            })
        })
        .count();
    if quarantined > 0 {
        out.snapshot = Some(SnapshotChoice::Blocked {
            set: set.to_string(),
            quarantined,
        });
        return;
    }
    let batch = Batch::new(&s.table, BatchKind::Snapshot, files, "", vec![]);
    let loaded = batch.files.iter().all(|f| {
        ledger
            .get(&f.uri, f.generation)
            .is_some_and(|e| e.state == FileState::Loaded && ledger.batch(e).id == batch.id)
    });
    if loaded {
        out.snapshot = Some(SnapshotChoice::UpToDate(set.to_string()));
        return;
    }
    debug_assert!(
        batch
            .files
            .iter()
            .all(|f| !in_flight.contains(&(f.uri.as_str(), f.generation)))
    );
    let jobs_needed = batch.files.len().div_ceil(s.max_files_per_job.max(1)) as u32;
    out.pending_files += batch.files.len();
    if jobs_needed > out.budget_left {
        out.deferred_files += batch.files.len();
        out.snapshot = Some(SnapshotChoice::Load(set.to_string()));
        return;
    }
    out.snapshot = Some(SnapshotChoice::Load(set.to_string()));
    out.new.push(batch);
}
