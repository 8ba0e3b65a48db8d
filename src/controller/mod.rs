//! `bqsteward run`: the Kubernetes controller. [`reconcile`] holds one reconcile of one object for
//! every kind, on the same observe → plan → apply functions as `plan`/`apply`; [`cluster`] is the
//! narrow Kubernetes side (finalizers, status, events).

pub mod cluster;
pub mod metrics;
pub mod reconcile;
pub mod run;
