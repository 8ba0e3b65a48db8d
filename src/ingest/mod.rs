//! IngestedTable: files in Cloud Storage loaded into BigQuery exactly once.
//!
//! - [`source`]: discovery (list + include filter).
//! - [`ledger`]: the load ledger in BigQuery (what was loaded, by which batch, job, rows).
//! - [`plan`]: listing × ledger → batches (pure; benchmarked by `bqsteward bench`).
//! - [`jobs`]: exactly-once job runner (deterministic ids, look up before insert, adopt on 409).
//! - [`exec`]: observe → plan → apply per table: staging load, atomic move with lineage, ledger,
//!   bisection and quarantine, snapshots, re-ingestion.

pub mod bench;
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
