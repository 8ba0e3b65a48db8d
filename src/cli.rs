//! The command line: argument definitions and the commands that need no cloud access
//! (`crds`, `validate`). `main` only sets up logging and maps results to exit codes.

use crate::crd;
use crate::manifest::{self, Diagnostic, Skipped};
use crate::policy::Policy;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

/// BigQuery ingestion and governance as code.
#[derive(Parser, Debug)]
#[command(name = "bqsteward", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `bqsteward=debug` (also `RUST_LOG`). The audit trail is not
    /// affected: see `--audit-log`.
    #[arg(long, env = "RUST_LOG", default_value = "warn", global = true)]
    pub log: String,
    /// Where the audit trail goes — one line per change bqsteward makes (access entries, views,
    /// tables, loads): `stderr` (default, compact, apart from the filter), a file path (appended,
    /// one JSON object per line) or `off`.
    #[arg(long, env = "BQSTEWARD_AUDIT_LOG", default_value = "stderr", global = true)]
    pub audit_log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Output format of reports.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON, for tools.
    Json,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the local stand-ins for Cloud Identity Groups and Resource Manager IAM (no public
    /// emulator exists); `scripts/emulators.sh` starts it. Never for production.
    #[command(hide = true)]
    StandIns {
        /// Loopback port of the Cloud Identity stand-in.
        #[arg(long, default_value_t = 19054)]
        cloud_identity_port: u16,
        /// Loopback port of the Resource Manager stand-in.
        #[arg(long, default_value_t = 19055)]
        resource_manager_port: u16,
    },
    /// Print the CustomResourceDefinitions, or write one file per kind into a directory.
    Crds {
        /// Directory to write `<plural>.<group>.yaml` files into (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show what `apply` would change, without writing anything. Exit 0 = no changes,
    /// 2 = changes, 1 = error or refusal (like `terraform plan -detailed-exitcode`).
    Plan {
        #[command(flatten)]
        common: LiveArgs,
        /// Report format: a unified diff (coloured on a terminal), Markdown for a PR comment, or JSON.
        #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
        output: PlanOutput,
    },
    /// Make the live state match the manifests. Exit 0 = done (or nothing to do), 1 = any error
    /// or refusal; a refused plan writes nothing at all.
    Apply {
        #[command(flatten)]
        common: LiveArgs,
        /// Approve plans that remove more entries than the policy's blast-radius limit.
        #[arg(long)]
        allow_large_removal: bool,
        /// Print the SQL of every view written (by default one line per view; `plan` shows the
        /// SQL and its diff).
        #[arg(long)]
        show_sql: bool,
    },
    /// Measure the load planner (discovery filter + ledger diff + batching) on synthetic
    /// listings in-process, and print CPU seconds and peak memory.
    Bench {
        /// Another benchmark instead of the load planner.
        #[command(subcommand)]
        what: Option<BenchWhat>,
        /// Objects listed.
        #[arg(long, default_value_t = 1_000_000)]
        objects: usize,
        /// Of those, already in the ledger.
        #[arg(long, default_value_t = 900_000)]
        loaded: usize,
    },
    /// Run the Kubernetes controller: reconcile every IngestedTable, DatasetAccess,
    /// ConsumerProject and GroupMembership in the cluster, continuously.
    Run {
        /// Guardrail policy file (YAML); defaults apply without it.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// bqsteward's own identity: `serviceAccount:EMAIL` (kept as OWNER everywhere it writes).
        #[arg(long, env = "BQSTEWARD_IDENTITY")]
        identity: Option<String>,
        /// Look at every object again after this long (drift correction), e.g. `10m`.
        /// IngestedTables use their `schedule.every`.
        #[arg(long, default_value = "10m")]
        requeue: String,
        /// Address of `/metrics`, `/healthz` and `/readyz`.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Do not elect a leader (run exactly one replica then).
        #[arg(long)]
        no_leader_election: bool,
        /// Namespace of the leader-election Lease (default: the pod's, from POD_NAMESPACE).
        #[arg(long, env = "POD_NAMESPACE", default_value = "bqsteward-system")]
        lease_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "bqsteward-leader")]
        lease_name: String,
        /// How long a leader's Lease lasts without renewal, e.g. `30s`: a standby replica takes
        /// over at most this long after the leader stops renewing (it renews well before).
        #[arg(long, default_value = "30s")]
        lease_duration: String,
        /// Most connections open at once to one source database (database sources' pulls).
        #[arg(long, default_value_t = 2)]
        db_connections: usize,
        #[command(flatten)]
        #[allow(missing_docs)]
        audit: AuditArgs,
        /// How often spooled audit events are written to BigQuery (one insert job per audit
        /// table per flush), e.g. `60s`.
        #[arg(long, default_value = "60s")]
        audit_flush_interval: String,
    },
    /// Per IngestedTable: last load, files waiting and the oldest's age, end-to-end delay p50/p99
    /// over the last 24 hours, quarantined files by category, load jobs today against the budget.
    /// Read-only (the listing and the ledger). Exit 0, or 1 when a table cannot be read.
    Status {
        #[command(flatten)]
        common: LiveArgs,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the data-quality checks of `spec.checks` once (row count, exact comparison against the
    /// database source), read-only. Exit 0 = in sync, 1 = any mismatch or error.
    Check {
        #[command(flatten)]
        common: LiveArgs,
        /// Only this IngestedTable (`namespace/name`, `name` or `project.dataset.table`); runs both
        /// checks with their defaults if it declares none.
        #[arg(long)]
        table: Option<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the `schema:` block of an IngestedTable for a table of a MySQL/MariaDB or PostgreSQL
    /// database (types mapped as database sources load them), so nobody writes it by hand.
    ImportSchema {
        /// `mysql` (MySQL, MariaDB) or `postgres`.
        #[arg(long)]
        engine: String,
        /// A file holding the connection URL (e.g. a mounted Secret's key); the URL is never printed.
        #[arg(long)]
        url_file: PathBuf,
        /// `schema.table` (for MySQL the schema is the database).
        #[arg(long)]
        table: String,
    },
    /// Check manifests offline: schema, identifiers, emails, column references, guardrails and
    /// duplicates. Exit 0 when valid, 1 when any error is found.
    Validate {
        /// Files, directories (searched recursively for *.yaml and *.yml) or `-` for stdin.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// Guardrail policy file (YAML); defaults apply without it.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Arguments shared by the commands that read live state.
#[derive(clap::Args, Debug)]
pub struct LiveArgs {
    /// Files, directories (searched recursively for *.yaml and *.yml) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Guardrail policy file (YAML); defaults apply without it.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// bqsteward's own identity, kept as OWNER on every dataset it writes so it can never lock
    /// itself out: `serviceAccount:EMAIL`, `user:EMAIL` or `group:EMAIL`.
    #[arg(long, env = "BQSTEWARD_IDENTITY")]
    pub identity: Option<String>,
    /// Re-ingest loaded files of every IngestedTable (exactly once: their rows are replaced, not
    /// doubled): `prefix=gs://BUCKET/PATH/`, `since=RFC3339`, `until=RFC3339`, optional `id=NAME`.
    /// Same syntax as the `bqsteward.dev/reload` annotation, which it overrides.
    #[arg(long)]
    pub reload: Option<String>,
    /// List every IngestedTable's whole prefix this run, also those with `source.ordering:
    /// Lexical` that list from a cursor (catches files that arrived later than `lateArrival`).
    #[arg(long)]
    pub full_listing: bool,
    /// Where database sources' connection Secrets are: `DIR/<secret name>/<key>` (the layout of a
    /// mounted Secret). Needed by IngestedTables with `source.database`.
    #[arg(long, env = "BQSTEWARD_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Most connections open at once to one source database.
    #[arg(long, default_value_t = 2)]
    pub db_connections: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditArgs,
}

/// Where the audit log goes (rows in BigQuery, one per change made or refused).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuditArgs {
    /// BigQuery table of the audit log: `PROJECT.DATASET.TABLE` (every row there; the dataset
    /// must exist), or `off`. Default: `PROJECT._bqsteward_<location>.audit` of each change's
    /// project and location, beside the load ledger (group changes: the first table's).
    #[arg(long, env = "BQSTEWARD_AUDIT_TABLE")]
    pub audit_table: Option<String>,
    /// Directory keeping audit events until BigQuery has them (a crash or an outage loses none;
    /// the next run writes them). Default: `$XDG_STATE_HOME/bqsteward/audit` or
    /// `~/.local/state/bqsteward/audit`.
    #[arg(long, env = "BQSTEWARD_AUDIT_SPOOL")]
    pub audit_spool: Option<PathBuf>,
    /// The manifests' source revision, written on every audit row (e.g. `$(git rev-parse
    /// HEAD)`); an object's `bqsteward.dev/revision` annotation takes precedence.
    #[arg(long, env = "BQSTEWARD_REVISION")]
    pub revision: Option<String>,
}

/// The database table a database benchmark uses (`bqsteward_bench.rows_<n>`, created once).
#[derive(clap::Args, Debug)]
pub struct BenchDb {
    /// `mysql` or `postgres`.
    #[arg(long)]
    pub engine: String,
    /// A file holding the connection URL of a user that may create the table.
    #[arg(long)]
    pub url_file: PathBuf,
    /// Rows in the table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
}

/// Benchmarks besides the load planner.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// What one controller reconcile costs besides its cloud calls (fingerprint of the object
    /// set, validate and resolve after a change, scoping the access lists), per store size, in
    /// process: CPU ms side by side.
    Controller {
        /// Objects in the store, comma-separated sizes to compare.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 5_000])]
        objects: Vec<usize>,
    },
    /// One cycle of a table with a long history and a few new files, listed whole and from its
    /// cursor (`source.ordering: Lexical`), for each history size, in-process against a simulated
    /// bucket and ledger: list calls, objects returned, ledger rows read, CPU ms.
    Listing {
        /// Files already loaded, comma-separated sizes to compare.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 1_000_000])]
        histories: Vec<usize>,
        /// New files in the cycle.
        #[arg(long, default_value_t = 100)]
        new: usize,
    },
    /// A simulated day of Viant's load (files over tables, arriving uniformly, every table
    /// reconciled each cycle) through the production cycle of a `Lexical` source, in process
    /// with a simulated clock, bucket and ledger, for each cycle length: list calls, objects,
    /// ledger rows and bytes per table-cycle; load jobs per table, files loaded, CPU seconds,
    /// peak memory and the delay upload → loaded p50/p99 per day.
    Day {
        /// Tables.
        #[arg(long, default_value_t = 100)]
        tables: usize,
        /// Files a day over all tables.
        #[arg(long, default_value_t = 1_700_000)]
        files: usize,
        /// Seconds between two cycles of a table, comma-separated lengths to compare.
        #[arg(long, value_delimiter = ',', default_values_t = [900i64, 60, 20])]
        cycle_seconds: Vec<i64>,
        /// `source.lateArrival` in seconds.
        #[arg(long, default_value_t = 300)]
        late_arrival_seconds: i64,
        /// Seconds from a cycle to its batches being loaded.
        #[arg(long, default_value_t = 30)]
        load_seconds: i64,
    },
    /// The exact check of a table in sync (`bqsteward_bench.rows_<n>`, copied once into
    /// BigQuery) against a WePay-style copy-and-join of the same table, in the same run: seconds,
    /// bytes moved and statements of each, and their ratio. Uses the BigQuery and Cloud Storage
    /// of `BIGQUERY_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST`.
    Check {
        #[command(flatten)]
        db: BenchDb,
    },
    /// A database pull (snapshot, JSON encoding, part files) of a table of `--rows` rows (created
    /// once as `bqsteward_bench.rows_<n>`) against the engine's own export of the same rows
    /// (`mariadb --batch`, `psql \copy … TO STDOUT`), in the same run: rows/s, MB/s, the ratio and
    /// peak memory.
    Extract {
        #[command(flatten)]
        db: BenchDb,
        /// Part file size (MiB).
        #[arg(long, default_value_t = 64)]
        file_size_mib: u32,
    },
}

/// Output format of `plan`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanOutput {
    /// A unified diff per dataset and a summary line.
    Text,
    /// JSON, for tools.
    Json,
    /// Markdown, for a pull-request comment.
    Markdown,
}

/// `bqsteward crds`: print all CRDs, or write them to `out`.
pub fn crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = crd::all_crds();
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            for (i, c) in crds.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout, "---")?;
                }
                write!(stdout, "{}", crd::crd_yaml(c)?)?;
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for c in &crds {
                let path = dir.join(crd::crd_file_name(c));
                std::fs::write(&path, crd::crd_yaml(c)?)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct ValidateReport<'a> {
    valid: bool,
    resources: usize,
    skipped: &'a [Skipped],
    errors: &'a [Diagnostic],
}

/// `n word` or `n words`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `bqsteward validate`: returns the process exit code (0 valid, 1 errors).
pub fn validate(paths: &[PathBuf], policy: Option<PathBuf>, output: Output) -> anyhow::Result<i32> {
    let policy = Policy::load(policy.as_deref())?;
    let report = manifest::load_paths(paths);
    let errors = crate::validate::validate(&report, &policy);
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => {
            let r = ValidateReport {
                valid: errors.is_empty(),
                resources: report.resources.len(),
                skipped: &report.skipped,
                errors: &errors,
            };
            writeln!(stdout, "{}", serde_json::to_string_pretty(&r)?)?;
        }
        Output::Text => {
            for s in &report.skipped {
                eprintln!("note: {}: skipped {} (not a bqsteward resource)", s.origin, s.what);
            }
            for e in &errors {
                writeln!(stdout, "error: {e}")?;
            }
            if errors.is_empty() {
                writeln!(
                    stdout,
                    "{} resources valid ({} other documents skipped)",
                    report.resources.len(),
                    report.skipped.len()
                )?;
            } else {
                // Documents that failed to parse may carry several errors each: count them once.
                let broken: std::collections::BTreeSet<(&str, usize)> = report
                    .errors
                    .iter()
                    .map(|e| (e.origin.file.as_str(), e.origin.document))
                    .collect();
                let documents = report.resources.len() + report.skipped.len() + broken.len();
                writeln!(
                    stdout,
                    "{} in {} checked",
                    plural(errors.len(), "error"),
                    plural(documents, "document")
                )?;
            }
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// `bqsteward import-schema`: exit 0 with the block on stdout, 1 with the reason on stderr.
pub async fn import_schema(engine: &str, url_file: &std::path::Path, table: &str) -> i32 {
    let (engine, url) = match engine_and_url(engine, url_file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match crate::dbsource::import_schema(engine, &url, table).await {
        Ok(block) => {
            print!("{block}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `bqsteward bench extract`.
pub async fn bench_extract(engine: &str, url_file: &std::path::Path, rows: u64, file_mib: u32) -> i32 {
    let (engine, url) = match engine_and_url(engine, url_file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match crate::dbsource::bench::run(engine, &url, rows, file_mib).await {
        Ok(f) => {
            let mb = |b: u64, s: f64| b as f64 / 1e6 / s.max(1e-9);
            println!(
                "extract ({}): {} rows, {:.1} MB of JSON lines in {:.2} s: {:.0} rows/s, {:.1} MB/s; peak memory {:.0} MiB\n\
                 engine's own export: {:.1} MB in {:.2} s: {:.0} rows/s, {:.1} MB/s\n\
                 ratio (pull time / export time): {:.2}",
                engine.as_str(),
                f.rows,
                f.bytes as f64 / 1e6,
                f.pull_s,
                f.rows as f64 / f.pull_s.max(1e-9),
                mb(f.bytes, f.pull_s),
                f.peak_mib,
                f.baseline_bytes as f64 / 1e6,
                f.baseline_s,
                f.rows as f64 / f.baseline_s.max(1e-9),
                mb(f.baseline_bytes, f.baseline_s),
                f.pull_s / f.baseline_s.max(1e-9)
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `bqsteward bench check`: the exact check of a table in sync against a copy-and-join of it.
pub async fn bench_check(engine: &str, url_file: &std::path::Path, rows: u64) -> i32 {
    let (engine, url) = match engine_and_url(engine, url_file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match crate::checks::bench::run(engine, &url, rows).await {
        Ok(f) => {
            let total = f.check_bytes.0 + f.check_bytes.1;
            println!(
                "exact check ({}): {} rows in sync = {}: {:.2} s ({:.2} s in the source, {:.2} s in BigQuery), {} statements on the source and {} on BigQuery, \
                 {:.3} MB received ({} B from the source, {} B from BigQuery)\n\
                 copy-and-join: {:.2} s, {:.1} MB pulled, loaded and joined, {} rows differ\n\
                 ratio (copy-and-join / exact check): time {:.1}x, bytes {:.0}x",
                engine.as_str(),
                f.rows,
                f.check_in_sync,
                f.check_s,
                f.check_side_s.0,
                f.check_side_s.1,
                f.check_statements.0,
                f.check_statements.1,
                total as f64 / 1e6,
                f.check_bytes.0,
                f.check_bytes.1,
                f.copy_s,
                f.copy_bytes as f64 / 1e6,
                f.copy_mismatches,
                f.copy_s / f.check_s.max(1e-9),
                f.copy_bytes as f64 / (total.max(1)) as f64
            );
            if f.check_in_sync && f.copy_mismatches == 0 {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `--engine` and the URL in `--url-file` (never printed); `Err(1)` after saying what is wrong.
fn engine_and_url(
    engine: &str,
    url_file: &std::path::Path,
) -> Result<(crd::DatabaseEngine, crate::dbsource::secrets::SecretText), i32> {
    let engine = match engine {
        "mysql" | "mariadb" => crd::DatabaseEngine::Mysql,
        "postgres" | "postgresql" => crd::DatabaseEngine::Postgres,
        other => {
            eprintln!("error: --engine {other:?}: use mysql or postgres");
            return Err(1);
        }
    };
    match std::fs::read_to_string(url_file) {
        Ok(t) => Ok((engine, crate::dbsource::secrets::SecretText::new(&t))),
        Err(e) => {
            eprintln!("error: cannot read --url-file {}: {}", url_file.display(), e.kind());
            Err(1)
        }
    }
}
