//! IngestedTable: files in Cloud Storage loaded into BigQuery exactly once.
//!
//! - [`source`]: discovery (list + include filter).
//! - [`ledger`]: the load ledger in BigQuery (what was loaded, by which batch, job, rows).
//! - [`plan`]: listing × ledger → batches (pure; benchmarked by `bqsteward bench`).
//! - [`jobs`]: exactly-once job runner (deterministic ids, look up before insert, adopt on 409).
//! - [`exec`]: observe → plan → apply per table: staging load, atomic move with lineage, ledger,
//!   bisection and quarantine, snapshots, re-ingestion.

pub mod bench;
pub mod bench_day;
pub mod bench_listing;
pub mod classify;
pub mod exec;
pub mod job_config;
pub mod jobs;
pub mod ledger;
pub mod model;
pub mod plan;
pub mod precheck;
pub mod reload;
pub mod report;
pub mod source;
pub mod status;
pub mod table;
pub mod target;

/// Receives the end-to-end delay of every file loaded and what each cycle read (the
/// controller's delivery-delay histogram and read counters).
pub trait DelayObserver: Send + Sync {
    /// Files of `table` (`project.dataset.table`) were loaded `seconds` after their upload.
    fn delivered(&self, table: &str, seconds: &[f64]);
    /// One cycle of `table` listed `objects` source objects and read `ledger_rows` ledger rows.
    fn observed(&self, table: &str, objects: u64, ledger_rows: u64);
    /// `bytes` were read from S3 copying a Delta source's files for `table`.
    fn delta_copied(&self, table: &str, bytes: u64) {
        let _ = (table, bytes);
    }
    /// A Delta source of `table` is at `latest`; the table holds `loaded` (None: nothing yet).
    fn delta_versions(&self, table: &str, latest: u64, loaded: Option<u64>) {
        let _ = (table, latest, loaded);
    }
}

static DELAYS: std::sync::OnceLock<Box<dyn DelayObserver>> = std::sync::OnceLock::new();

/// Installs the process-wide observer (once).
pub fn observe_delays(o: Box<dyn DelayObserver>) {
    let _ = DELAYS.set(o);
}

/// Reports the end-to-end delays of one apply's loaded files (no-op without an observer).
pub fn delivered(table: &str, delays_ms: &[i64]) {
    if let Some(o) = DELAYS.get()
        && !delays_ms.is_empty()
    {
        let secs: Vec<f64> = delays_ms.iter().map(|ms| *ms as f64 / 1000.0).collect();
        o.delivered(table, &secs);
    }
}

/// Reports what one cycle's observation read (no-op without an observer).
pub fn observed(table: &str, objects: usize, ledger_rows: usize) {
    if let Some(o) = DELAYS.get() {
        o.observed(table, objects as u64, ledger_rows as u64);
    }
}

/// Reports bytes read from S3 for a Delta source (no-op without an observer).
pub fn delta_copied(table: &str, bytes: u64) {
    if let Some(o) = DELAYS.get() {
        o.delta_copied(table, bytes);
    }
}

/// Reports a Delta source's latest and loaded versions (no-op without an observer).
pub fn delta_versions(table: &str, latest: u64, loaded: Option<u64>) {
    if let Some(o) = DELAYS.get() {
        o.delta_versions(table, latest, loaded);
    }
}
