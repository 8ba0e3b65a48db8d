//! `bqsteward run`: the Kubernetes controller. [`reconcile`] holds one reconcile of one object —
//! finalizer, status, events, errors — with the work done by the engine (`crate::engine`, the
//! same phases as `plan`/`apply`) scoped to the object; [`context`] what every reconcile shares;
//! [`checks`] the data-quality checks' schedule and results; [`cluster`] the narrow Kubernetes side (finalizers, status, events); [`run`] the watches,
//! leader election and HTTP endpoints.

pub mod bench;
pub mod checks;
pub mod cluster;
pub mod context;
pub mod metrics;
pub mod reconcile;
pub mod run;
mod work;
