//! Prometheus metrics of the controller (prometheus-client), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Resource kind.
    pub kind: String,
}

/// Labels of a reconcile failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Resource kind.
    pub kind: String,
    /// `retryable`, `quota`, `terminal`, `kubernetes`, `refused`.
    pub category: String,
}

/// Labels of a cloud call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `bigquery`, `storage`, `cloudidentity`, `cloudresourcemanager`.
    pub api: String,
    /// e.g. `datasets.get`.
    pub operation: String,
    /// `ok`, or the HTTP status, or `transport`.
    pub outcome: String,
}

/// Labels of a table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `project.dataset.table`.
    pub table: String,
}

/// Labels of a check run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `rowCount` or `exact`.
    pub check: String,
    /// `ok`, `mismatch` or `error`.
    pub outcome: String,
}

/// Labels of mismatching rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MismatchLabels {
    /// `project.dataset.table`.
    pub table: String,
    /// `missingInBigQuery`, `missingInSource`, `changed` or `rowCount` (the count difference).
    pub kind: String,
}

/// Labels of a table's check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableCheckLabels {
    /// `project.dataset.table`.
    pub table: String,
    /// `rowCount` or `exact`.
    pub check: String,
}

/// Labels of bytes read by checks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabels {
    /// `source` or `bigquery`.
    pub side: String,
}

/// The check metrics: the controller's [`crate::checks::CheckObserver`].
#[derive(Clone)]
struct CheckCounter {
    runs: Family<CheckLabels, Counter>,
    mismatches: Family<MismatchLabels, Counter>,
    in_sync: Family<TableCheckLabels, Gauge>,
    duration: Family<KindLabels, Histogram>,
    bytes: Family<SideLabels, Counter>,
}

impl crate::checks::CheckObserver for CheckCounter {
    fn ran(&self, m: &crate::checks::Measured) {
        let check = m.kind.as_str().to_string();
        self.runs
            .get_or_create(&CheckLabels {
                check: check.clone(),
                outcome: m.outcome.into(),
            })
            .inc();
        for (kind, n) in &m.mismatches {
            self.mismatches
                .get_or_create(&MismatchLabels {
                    table: m.table.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(*n);
        }
        self.in_sync
            .get_or_create(&TableCheckLabels {
                table: m.table.clone(),
                check: check.clone(),
            })
            .set(i64::from(m.outcome == "ok"));
        self.duration
            .get_or_create(&KindLabels { kind: check })
            .observe(m.seconds);
        for (side, n) in [("source", m.bytes.0), ("bigquery", m.bytes.1)] {
            self.bytes.get_or_create(&SideLabels { side: side.into() }).inc_by(n);
        }
    }
}

/// Every metric.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Reconciles by kind.
    pub reconciles: Family<KindLabels, Counter>,
    /// Failed reconciles by kind and error category.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile duration by kind.
    pub duration: Family<KindLabels, Histogram>,
    /// Per-table lag (age of the oldest file waiting), seconds.
    pub lag: Family<TableLabels, Gauge<f64, AtomicU64>>,
    /// Per-table quarantined files.
    pub quarantined: Family<TableLabels, Gauge>,
    /// Cloud calls by api, operation and outcome.
    calls: Family<CallLabels, Counter>,
    /// Data-quality checks.
    checks: CheckCounter,
    /// Per-table end-to-end delay (object upload → loaded), seconds.
    pub delivery: Family<TableLabels, Histogram>,
    /// Per-table source objects listed.
    pub listed: Family<TableLabels, Counter>,
    /// Per-table ledger rows read.
    pub ledger_rows: Family<TableLabels, Counter>,
    /// Per-table bytes read from S3 (Delta sources).
    pub delta_bytes: Family<TableLabels, Counter>,
    /// Per-table Delta version lag.
    pub delta_lag: Family<TableLabels, Gauge>,
    /// Per-table load jobs started today (UTC).
    pub jobs_today: Family<TableLabels, Gauge>,
    /// Per-table daily load-job budget.
    pub job_budget: Family<TableLabels, Gauge>,
    /// Audit events spooled, not yet in BigQuery.
    pub audit_pending: Gauge,
    /// Audit rows written to BigQuery.
    pub audit_written: Counter,
    /// Audit flushes BigQuery did not take in full.
    pub audit_failures: Counter,
}

/// Observes delivery delays into the histogram and each cycle's reads into the counters: the
/// controller's [`crate::ingest::DelayObserver`].
#[derive(Clone)]
struct DelayHistogram {
    delivery: Family<TableLabels, Histogram>,
    listed: Family<TableLabels, Counter>,
    ledger_rows: Family<TableLabels, Counter>,
    delta_bytes: Family<TableLabels, Counter>,
    delta_lag: Family<TableLabels, Gauge>,
}

impl crate::ingest::DelayObserver for DelayHistogram {
    fn delivered(&self, table: &str, seconds: &[f64]) {
        let h = self.delivery.get_or_create(&TableLabels { table: table.into() });
        for s in seconds {
            h.observe(*s);
        }
    }

    fn observed(&self, table: &str, objects: u64, ledger_rows: u64) {
        let t = TableLabels { table: table.into() };
        self.listed.get_or_create(&t).inc_by(objects);
        self.ledger_rows.get_or_create(&t).inc_by(ledger_rows);
    }

    fn delta_copied(&self, table: &str, bytes: u64) {
        self.delta_bytes
            .get_or_create(&TableLabels { table: table.into() })
            .inc_by(bytes);
    }

    fn delta_versions(&self, table: &str, latest: u64, loaded: Option<u64>) {
        let lag = latest as i64 - loaded.map_or(-1, |l| l as i64);
        self.delta_lag
            .get_or_create(&TableLabels { table: table.into() })
            .set(lag);
    }
}

/// Counts cloud calls: the controller's [`crate::cloud::CallObserver`].
#[derive(Clone)]
struct CallCounter(Family<CallLabels, Counter>);

impl crate::cloud::CallObserver for CallCounter {
    fn call(&self, api: &str, operation: &str, outcome: &str) {
        self.0
            .get_or_create(&CallLabels {
                api: api.into(),
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

impl Metrics {
    /// Creates and registers every metric (cloud calls are process-wide).
    pub fn new() -> Metrics {
        let mut registry = <Registry>::with_prefix("bqsteward");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 14))
        });
        let lag = Family::<TableLabels, Gauge<f64, AtomicU64>>::default();
        let quarantined = Family::<TableLabels, Gauge>::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by kind and error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            duration.clone(),
        );
        registry.register(
            "cloud_calls",
            "Cloud API calls by api, operation and outcome",
            calls.clone(),
        );
        registry.register(
            "table_lag_seconds",
            "Age of the oldest file not yet loaded, per table",
            lag.clone(),
        );
        registry.register(
            "table_quarantined_files",
            "Quarantined files per table",
            quarantined.clone(),
        );
        let checks = CheckCounter {
            runs: Family::default(),
            mismatches: Family::default(),
            in_sync: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.5, 2.0, 14))),
            bytes: Family::default(),
        };
        registry.register(
            "check_runs",
            "Data-quality check runs by check and outcome (ok, mismatch, error)",
            checks.runs.clone(),
        );
        registry.register(
            "check_mismatches",
            "Mismatching rows found by data-quality checks, by table and kind",
            checks.mismatches.clone(),
        );
        registry.register(
            "check_in_sync",
            "1 when the table's last check found it in sync with its source, 0 otherwise",
            checks.in_sync.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Data-quality check duration by check",
            checks.duration.clone(),
        );
        registry.register(
            "check_read_bytes",
            "Bytes data-quality checks received, by side (source, bigquery)",
            checks.bytes.clone(),
        );
        // 5 s to ~3.8 days, doubling.
        let delivery = Family::<TableLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(5.0, 2.0, 17))
        });
        let jobs_today = Family::<TableLabels, Gauge>::default();
        let job_budget = Family::<TableLabels, Gauge>::default();
        let (listed, ledger_rows) = (Family::default(), Family::default());
        registry.register(
            "table_listed_objects",
            "Source objects listed per table (a Lexical source lists from its cursor)",
            listed.clone(),
        );
        registry.register(
            "table_ledger_rows_read",
            "Ledger rows read per table (a Lexical source reads from its cursor)",
            ledger_rows.clone(),
        );
        let (delta_bytes, delta_lag) = (Family::default(), Family::default());
        registry.register(
            "table_delta_copied_bytes",
            "Bytes read from S3 copying a Delta source's data files into landing, per table",
            delta_bytes.clone(),
        );
        registry.register(
            "table_delta_version_lag",
            "Delta versions the table is behind its Delta source (latest minus loaded; latest + 1 before the first load)",
            delta_lag.clone(),
        );
        registry.register(
            "table_delivery_delay_seconds",
            "End-to-end delay per file, from its upload to its load, per table",
            delivery.clone(),
        );
        registry.register(
            "table_load_jobs_today",
            "Load jobs started today (UTC) per table",
            jobs_today.clone(),
        );
        registry.register(
            "table_load_job_budget",
            "Daily load-job budget per table (loadPolicy.dailyJobBudget)",
            job_budget.clone(),
        );
        let (audit_pending, audit_written, audit_failures) = (Gauge::default(), Counter::default(), Counter::default());
        registry.register(
            "audit_pending_events",
            "Audit events kept in the spool, not yet written to BigQuery",
            audit_pending.clone(),
        );
        registry.register(
            "audit_rows_written",
            "Audit rows written to BigQuery",
            audit_written.clone(),
        );
        registry.register(
            "audit_flush_failures",
            "Audit flushes BigQuery did not take in full (the events stay spooled and are retried)",
            audit_failures.clone(),
        );
        Metrics {
            listed,
            ledger_rows,
            delta_bytes,
            delta_lag,
            audit_pending,
            audit_written,
            audit_failures,
            delivery,
            jobs_today,
            job_budget,
            checks,
            registry,
            reconciles,
            failures,
            duration,
            lag,
            quarantined,
            calls,
        }
    }

    /// The observer counting cloud calls into `bqsteward_cloud_calls_total` (give it to
    /// [`crate::cloud::observe_calls`]).
    pub fn call_observer(&self) -> Box<dyn crate::cloud::CallObserver> {
        Box::new(CallCounter(self.calls.clone()))
    }

    /// Sets a table's `check_in_sync` from its last result in the status (after a restart, before
    /// the check runs again).
    pub fn seed_in_sync(&self, table: &str, check: &str, in_sync: bool) {
        self.checks
            .in_sync
            .get_or_create(&TableCheckLabels {
                table: table.into(),
                check: check.into(),
            })
            .set(i64::from(in_sync));
    }

    /// The observer of delivery delays (give it to [`crate::ingest::observe_delays`]).
    pub fn delay_observer(&self) -> Box<dyn crate::ingest::DelayObserver> {
        Box::new(DelayHistogram {
            delivery: self.delivery.clone(),
            listed: self.listed.clone(),
            ledger_rows: self.ledger_rows.clone(),
            delta_bytes: self.delta_bytes.clone(),
            delta_lag: self.delta_lag.clone(),
        })
    }

    /// The observer of data-quality checks (give it to [`crate::checks::observe_checks`]).
    pub fn check_observer(&self) -> Box<dyn crate::checks::CheckObserver> {
        Box::new(self.checks.clone())
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_family() {
        let m = Metrics::new();
        let k = KindLabels {
            kind: "IngestedTable".into(),
        };
        m.reconciles.get_or_create(&k).inc();
        m.duration.get_or_create(&k).observe(0.3);
        m.failures
            .get_or_create(&FailureLabels {
                kind: "DatasetAccess".into(),
                category: "retryable".into(),
            })
            .inc();
        m.lag.get_or_create(&TableLabels { table: "p.d.t".into() }).set(42.0);
        m.call_observer().call("bigquery", "datasets.get", "ok");
        m.check_observer().ran(&crate::checks::Measured {
            kind: crate::checks::Kind::Exact,
            table: "p.d.t".into(),
            outcome: "mismatch",
            mismatches: vec![("changed", 2)],
            seconds: 1.5,
            bytes: (100, 200),
        });
        let text = m.encode();
        for needle in [
            "bqsteward_reconciles_total{kind=\"IngestedTable\"} 1",
            "bqsteward_reconcile_failures_total{kind=\"DatasetAccess\",category=\"retryable\"} 1",
            "bqsteward_reconcile_duration_seconds_count{kind=\"IngestedTable\"} 1",
            "bqsteward_cloud_calls_total{api=\"bigquery\",operation=\"datasets.get\",outcome=\"ok\"} 1",
            "bqsteward_table_lag_seconds{table=\"p.d.t\"} 42.0",
            "bqsteward_check_runs_total{check=\"exact\",outcome=\"mismatch\"} 1",
            "bqsteward_check_mismatches_total{table=\"p.d.t\",kind=\"changed\"} 2",
            "bqsteward_check_in_sync{table=\"p.d.t\",check=\"exact\"} 0",
            "bqsteward_check_duration_seconds_count{kind=\"exact\"} 1",
            "bqsteward_check_read_bytes_total{side=\"bigquery\"} 200",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }

    /// Every metric a panel of the shipped Grafana dashboard queries is one `/metrics` serves.
    #[test]
    fn every_dashboard_metric_exists() {
        let m = Metrics::new();
        // One sample in every family (a family without samples is not exposed).
        let k = KindLabels {
            kind: "IngestedTable".into(),
        };
        let t = TableLabels { table: "p.d.t".into() };
        m.reconciles.get_or_create(&k).inc();
        m.duration.get_or_create(&k).observe(0.3);
        m.failures
            .get_or_create(&FailureLabels {
                kind: "IngestedTable".into(),
                category: "retryable".into(),
            })
            .inc();
        m.lag.get_or_create(&t).set(1.0);
        m.quarantined.get_or_create(&t).set(1);
        m.jobs_today.get_or_create(&t).set(1);
        m.job_budget.get_or_create(&t).set(1000);
        m.call_observer().call("bigquery", "jobs.insert", "ok");
        m.delay_observer().delivered("p.d.t", &[42.0]);
        m.check_observer().ran(&crate::checks::Measured {
            kind: crate::checks::Kind::Exact,
            table: "p.d.t".into(),
            outcome: "ok",
            mismatches: vec![("changed", 0)],
            seconds: 1.0,
            bytes: (1, 1),
        });
        let text = m.encode();
        // Served names: each family's TYPE line, with the suffixes its samples carry.
        let mut served = std::collections::BTreeSet::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("#") || parts.next() != Some("TYPE") {
                continue;
            }
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                served.insert(format!("{name}{s}"));
            }
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../charts/bqsteward/dashboards/bqsteward.json")).unwrap();
        let mut used = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                while let Some(at) = rest.find("bqsteward_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    used.insert(name);
                }
            }
        }
        assert!(used.len() >= 12, "{used:?}");
        let missing: Vec<_> = used.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "the dashboard queries metrics /metrics does not serve: {missing:?}\n{text}"
        );
    }
}
