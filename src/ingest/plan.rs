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
    /// Files held back to fill a batch: the budget runs ahead of the day (see [`Pace`]).
    pub filling_files: usize,
    /// Load jobs the day would use at today's pace (after this plan), from the first hour on.
    pub projected_jobs: Option<u32>,
}

/// Milliseconds in a day: the budget is counted per UTC day, as the ledger counts jobs today.
const DAY_MS: i64 = 86_400_000;

/// Adaptive batching. Full batches always go (they use a job as well as a job can be used). While
/// the jobs used stay within the day's share of the budget — `budget × elapsed / day`, plus a
/// tenth of the budget as headroom early in the day, shrinking to none at midnight — a partial
/// batch goes too. Past it, a partial batch waits to
/// fill until its oldest file has waited `spacing`: the rest of the day divided by the jobs left,
/// the gap at which the budget lasts until midnight. So a table receiving files continuously
/// spends its budget evenly instead of running out in the afternoon and waiting for tomorrow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Jobs the day's share allows now.
    pub allowance: u32,
    /// The gap between jobs at which the jobs left last the day (ms).
    pub spacing_ms: i64,
    /// Milliseconds of the day gone.
    pub elapsed_ms: i64,
}

impl Pace {
    /// The pace at `s.now_ms`.
    pub fn of(s: &Settings) -> Pace {
        let elapsed_ms = s.now_ms.rem_euclid(DAY_MS);
        let budget = i64::from(s.daily_job_budget);
        let share = (budget * elapsed_ms + DAY_MS - 1) / DAY_MS;
        // The headroom shrinks with the day, so the allowance reaches the budget at midnight.
        let headroom = (budget / 10).max(1) * (DAY_MS - elapsed_ms) / DAY_MS;
        let left = budget.saturating_sub(i64::from(s.jobs_today)).max(1);
        Pace {
            allowance: u32::try_from(share + headroom).unwrap_or(u32::MAX),
            spacing_ms: (DAY_MS - elapsed_ms) / left,
            elapsed_ms,
        }
    }

    /// Whether a partial batch whose oldest file was updated at `oldest_ms` goes now, with `used`
    /// jobs used today (this plan's included).
    pub fn partial_goes(&self, used: u32, oldest_ms: i64, now_ms: i64) -> bool {
        used < self.allowance || now_ms - oldest_ms >= self.spacing_ms
    }

    /// Jobs the day would use at the pace of the `used` so far (from the first hour on).
    pub fn projected(&self, used: u32) -> Option<u32> {
        (self.elapsed_ms >= 3_600_000)
            .then(|| u32::try_from(i64::from(used) * DAY_MS / self.elapsed_ms).unwrap_or(u32::MAX))
    }
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
    let mut out = resuming(settings, ledger);
    let in_flight = out.resumed.clone();
    let in_flight_keys = file_keys(&in_flight);
    let mut oldest: Option<i64> = in_flight.iter().flat_map(|b| &b.files).map(|f| f.updated_ms).min();

    match settings.mode {
        LoadMode::Incremental => {
            let mut pending = incremental_candidates(settings, listing, ledger, &in_flight_keys, &mut out);
            out.pending_files += pending.len();
            oldest = oldest.into_iter().chain(pending.iter().map(|f| f.updated_ms)).min();
            // Oldest first, so lag shrinks fastest; ties by name for determinism.
            pending.sort_unstable_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then_with(|| a.uri.cmp(&b.uri)));
            let slots = out.budget_left.saturating_sub(out.resumed.len() as u32) as usize;
            let pace = Pace::of(settings);
            let mut rest = pending.as_slice();
            while !rest.is_empty() && out.new.len() < slots {
                let n = take_batch(rest, settings.max_files_per_job, settings.max_bytes_per_job);
                let used = settings.jobs_today + (out.resumed.len() + out.new.len()) as u32;
                let partial = n == rest.len() && n < settings.max_files_per_job;
                if partial && !pace.partial_goes(used, rest[0].updated_ms, settings.now_ms) {
                    out.filling_files = rest.len();
                    rest = &[];
                    break;
                }
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
            out.projected_jobs = pace.projected(settings.jobs_today + (out.resumed.len() + out.new.len()) as u32);
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

/// A load plan that starts with the day's budget and the batches to resume (their files pending).
pub(crate) fn resuming(s: &Settings, ledger: &Ledger) -> LoadPlan {
    let resumed = resumed_batches(s, ledger);
    LoadPlan {
        budget_left: s.daily_job_budget.saturating_sub(s.jobs_today),
        pending_files: file_keys(&resumed).len(),
        resumed,
        ..LoadPlan::default()
    }
}

/// The (uri, generation) of every file of `batches`.
pub(crate) fn file_keys(batches: &[Batch]) -> HashSet<(&str, i64)> {
    batches
        .iter()
        .flat_map(|b| b.files.iter().map(|f| (f.uri.as_str(), f.generation)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 1_795_392_000_000 + DAY_MS / 2;

    fn settings(jobs_today: u32) -> Settings {
        let source = crate::ingest::bench::source("gs://bkt/in/", None);
        let discovery = crate::ingest::source::Discovery::new(&source).unwrap();
        Settings {
            jobs_today,
            now_ms: NOON,
            ..crate::ingest::bench::settings("p.d.t", &discovery, 100)
        }
    }

    fn files(n: usize, age_ms: i64) -> Vec<SourceFile> {
        (0..n)
            .map(|i| SourceFile {
                uri: format!("gs://bkt/in/f-{i:04}"),
                generation: 1,
                size: 10,
                updated_ms: NOON - age_ms,
            })
            .collect()
    }

    #[test]
    fn a_partial_batch_waits_to_fill_only_when_the_budget_runs_ahead_of_the_day() {
        assert_eq!(NOON.rem_euclid(DAY_MS), DAY_MS / 2);
        // Noon, 1,500 a day: the share is 750, plus half the headroom of 150.
        let pace = Pace::of(&settings(0));
        assert_eq!(pace.allowance, 825);
        // Within the share: a batch of 3 fresh files goes.
        let p = plan(&settings(824), &files(3, 1_000), &Ledger::default());
        assert_eq!((p.new.len(), p.filling_files, p.deferred_files), (1, 0, 0));
        // Ahead of it: 675 jobs left for 12 hours, one every 64 s; files 10 s old wait to fill...
        let ahead = settings(825);
        assert_eq!(Pace::of(&ahead).spacing_ms, 64_000);
        let p = plan(&ahead, &files(3, 10_000), &Ledger::default());
        assert_eq!((p.new.len(), p.filling_files, p.deferred_files), (0, 3, 0));
        assert_eq!(p.pending_files, 3);
        // ...files that waited the spacing go...
        let p = plan(&ahead, &files(3, 64_000), &Ledger::default());
        assert_eq!((p.new.len(), p.filling_files), (1, 0));
        // ...and a full batch always goes, the rest waits.
        let p = plan(&ahead, &files(103, 10_000), &Ledger::default());
        assert_eq!((p.new.len(), p.new[0].files.len(), p.filling_files), (1, 100, 3));
    }

    #[test]
    fn the_plan_projects_the_day_from_the_jobs_used_so_far() {
        let p = plan(&settings(599), &files(3, 1_000), &Ledger::default());
        assert_eq!(p.projected_jobs, Some(1_200));
        // Not in the first hour: too little to go on.
        let early = Settings {
            now_ms: NOON - DAY_MS / 2 + 60_000,
            ..settings(1)
        };
        assert_eq!(plan(&early, &files(1, 1_000), &Ledger::default()).projected_jobs, None);
    }
}
