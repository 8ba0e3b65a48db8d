//! The data the load planner works on: source files, the ledger's view of them, batches.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One object generation in Cloud Storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// `gs://bucket/name`.
    pub uri: String,
    /// Object generation (a re-upload gets a new one).
    pub generation: i64,
    /// Bytes.
    pub size: u64,
    /// Last update, milliseconds since the epoch.
    pub updated_ms: i64,
}

/// Where a file generation stands, by the latest ledger event about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileState {
    /// Written to the ledger before its load job: in flight, resumed after a crash.
    Planned,
    /// In the destination table.
    Loaded,
    /// Excluded after a failed load; see the category.
    Quarantined,
    /// Given up with its batch without fault of its own (a snapshot set with a bad file).
    Abandoned,
}

impl FileState {
    /// Ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Planned => "PLANNED",
            FileState::Loaded => "LOADED",
            FileState::Quarantined => "QUARANTINED",
            FileState::Abandoned => "ABANDONED",
        }
    }

    /// Parses the ledger spelling.
    pub fn parse(s: &str) -> Option<FileState> {
        Some(match s {
            "PLANNED" => FileState::Planned,
            "LOADED" => FileState::Loaded,
            "QUARANTINED" => FileState::Quarantined,
            "ABANDONED" => FileState::Abandoned,
            _ => return None,
        })
    }
}

/// Why a file was quarantined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// The file cannot be parsed in its format.
    Corrupt,
    /// The file parses but does not fit the table (a type change, a missing required column, an
    /// undeclared field). Retried automatically when the declared schema changes.
    IncompatibleSchema,
    /// The object is gone.
    NotFound,
}

impl Category {
    /// Ledger and status spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Corrupt => "Corrupt",
            Category::IncompatibleSchema => "IncompatibleSchema",
            Category::NotFound => "NotFound",
        }
    }

    /// Parses the ledger spelling.
    pub fn parse(s: &str) -> Option<Category> {
        Some(match s {
            "Corrupt" => Category::Corrupt,
            "IncompatibleSchema" => Category::IncompatibleSchema,
            "NotFound" => Category::NotFound,
            _ => return None,
        })
    }
}

/// How a batch reaches the destination table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Appended (incremental mode).
    Append,
    /// Replaces the rows of earlier batches (`replaces`) in one statement (re-ingestion).
    Reload,
    /// Replaces the whole table (snapshot mode).
    Snapshot,
    /// Replaces the rows of one day (database sources' daily reload; `reload_id` is the day,
    /// `YYYY-MM-DD`): rows whose watermark falls in it are deleted in the statement that inserts
    /// the day's rows pulled again.
    Day,
    /// One Delta version (`reload_id` is the version, 20 digits): each file loads into its own
    /// staging table; one statement deletes the rows of the files the version removed and inserts
    /// the new rows, each tagged with its Delta file.
    Delta,
}

impl BatchKind {
    /// Ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Append => "APPEND",
            BatchKind::Reload => "RELOAD",
            BatchKind::Snapshot => "SNAPSHOT",
            BatchKind::Day => "DAY",
            BatchKind::Delta => "DELTA",
        }
    }

    /// Parses the ledger spelling.
    pub fn parse(s: &str) -> Option<BatchKind> {
        Some(match s {
            "APPEND" => BatchKind::Append,
            "RELOAD" => BatchKind::Reload,
            "SNAPSHOT" => BatchKind::Snapshot,
            "DAY" => BatchKind::Day,
            "DELTA" => BatchKind::Delta,
            _ => return None,
        })
    }
}

/// The latest ledger event of one file generation (compact: a million of these fit in memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// State.
    pub state: FileState,
    /// Index into [`Ledger::batches`].
    pub batch: u32,
    /// Quarantine category.
    pub category: Option<Category>,
    /// Whether a LOADED event of the requested reload exists for this generation.
    pub reloaded: bool,
    /// Size (for resuming PLANNED batches).
    pub size: u64,
    /// Object update time (for resuming PLANNED batches and lag).
    pub updated_ms: i64,
}

/// What a batch id stands for (shared by all its files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// Batch id.
    pub id: String,
    /// Kind.
    pub kind: BatchKind,
    /// Re-ingestion request id ("" for ordinary loads).
    pub reload_id: String,
    /// Batches whose rows a reload batch replaces.
    pub replaces: Vec<String>,
    /// Declared-schema hash when the event was written (quarantine retry on schema change).
    pub schema_hash: String,
}

/// The ledger of one destination table: latest event per (uri, generation).
///
/// Keyed by a 128-bit hash of (uri, generation) so a million entries take tens of megabytes,
/// not hundreds; uris are kept only for in-flight (PLANNED) files, which must be resumed by name.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    files: HashMap<u128, Entry>,
    planned: Vec<(String, i64)>,
    loaded_uris: std::collections::HashSet<u128>,
    /// Batches referenced by the entries.
    pub batches: Vec<BatchMeta>,
    index: HashMap<String, u32>,
}

fn key(uri: &str, generation: i64) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        uri.hash(&mut h);
        generation.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

fn uri_key(uri: &str) -> u128 {
    key(uri, i64::MIN)
}

impl Ledger {
    /// Interns a batch, returning its index.
    pub fn batch_index(&mut self, meta: BatchMeta) -> u32 {
        if let Some(&i) = self.index.get(&meta.id) {
            return i;
        }
        let i = u32::try_from(self.batches.len()).expect("fewer than 4G batches");
        self.index.insert(meta.id.clone(), i);
        self.batches.push(meta);
        i
    }

    /// Records the latest event of a file generation (each generation once).
    pub fn insert(&mut self, uri: &str, generation: i64, entry: Entry) {
        if entry.state == FileState::Planned {
            self.planned.push((uri.to_string(), generation));
        }
        if entry.state == FileState::Loaded {
            self.loaded_uris.insert(uri_key(uri));
        }
        self.files.insert(key(uri, generation), entry);
    }

    /// The latest event of a file generation.
    pub fn get(&self, uri: &str, generation: i64) -> Option<&Entry> {
        self.files.get(&key(uri, generation))
    }

    /// Whether some generation of `uri` is loaded.
    pub fn uri_loaded(&self, uri: &str) -> bool {
        self.loaded_uris.contains(&uri_key(uri))
    }

    /// In-flight files: (uri, generation, entry).
    pub fn planned(&self) -> impl Iterator<Item = (&str, i64, &Entry)> {
        self.planned.iter().filter_map(|(u, g)| {
            self.get(u, *g)
                .filter(|e| e.state == FileState::Planned)
                .map(|e| (u.as_str(), *g, e))
        })
    }

    /// Number of file generations whose latest state is `state`.
    pub fn count(&self, state: FileState) -> i64 {
        self.files.values().filter(|e| e.state == state).count() as i64
    }

    /// The batches (indexes into [`Ledger::batches`]) some file of which is in `state`.
    pub fn batches_in(&self, state: FileState) -> std::collections::BTreeSet<u32> {
        self.files
            .values()
            .filter(|e| e.state == state)
            .map(|e| e.batch)
            .collect()
    }

    /// Number of file generations recorded.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The batch of an entry.
    pub fn batch(&self, e: &Entry) -> &BatchMeta {
        &self.batches[e.batch as usize]
    }
}

/// A group of files loaded by one load job (or, for a snapshot, one set of jobs) and moved into
/// the destination by one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Deterministic id: see [`batch_id`].
    pub id: String,
    /// Kind.
    pub kind: BatchKind,
    /// Files, sorted by uri.
    pub files: Vec<SourceFile>,
    /// Re-ingestion request id ("" for ordinary loads).
    pub reload_id: String,
    /// Batches whose rows this one replaces (reloads).
    pub replaces: Vec<String>,
    /// Whether this batch was already in the ledger (PLANNED) before this run: a resumed batch.
    pub resumed: bool,
}

impl Batch {
    /// A batch over `files` (sorted here), with its deterministic id.
    pub fn new(
        table: &str,
        kind: BatchKind,
        mut files: Vec<SourceFile>,
        reload_id: &str,
        replaces: Vec<String>,
    ) -> Batch {
        files.sort_by(|a, b| a.uri.cmp(&b.uri).then(a.generation.cmp(&b.generation)));
        Batch {
            id: batch_id(table, kind, reload_id, &files),
            kind,
            files,
            reload_id: reload_id.into(),
            replaces,
            resumed: false,
        }
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The two halves of this batch (bisection); each keeps the kind, reload and replaces.
    pub fn split(&self, table: &str) -> (Batch, Batch) {
        let mid = self.files.len() / 2;
        let half =
            |files: &[SourceFile]| Batch::new(table, self.kind, files.to_vec(), &self.reload_id, self.replaces.clone());
        (half(&self.files[..mid]), half(&self.files[mid..]))
    }
}

/// `sha256(version, table, kind, reload, sorted uri#generation…)`, 32 hex characters. The same
/// files for the same table always give the same id — across runs, restarts and replicas — so
/// job ids derived from it make BigQuery itself refuse a second run of the same work.
pub fn batch_id(table: &str, kind: BatchKind, reload_id: &str, sorted_files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    h.update(b"bqsteward-batch-v1\0");
    h.update(table.as_bytes());
    h.update(b"\0");
    h.update(kind.as_str().as_bytes());
    h.update(b"\0");
    h.update(reload_id.as_bytes());
    h.update(b"\0");
    for f in sorted_files {
        h.update(f.uri.as_bytes());
        h.update(b"#");
        h.update(f.generation.to_string().as_bytes());
        h.update(b"\0");
    }
    hex::encode(&h.finalize()[..16])
}

/// Short stable hash of any text (load configuration, declared schema).
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}
