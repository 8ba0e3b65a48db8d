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
        Metrics {
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
        let text = m.encode();
        for needle in [
            "bqsteward_reconciles_total{kind=\"IngestedTable\"} 1",
            "bqsteward_reconcile_failures_total{kind=\"DatasetAccess\",category=\"retryable\"} 1",
            "bqsteward_reconcile_duration_seconds_count{kind=\"IngestedTable\"} 1",
            "bqsteward_cloud_calls_total{api=\"bigquery\",operation=\"datasets.get\",outcome=\"ok\"} 1",
            "bqsteward_table_lag_seconds{table=\"p.d.t\"} 42.0",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
