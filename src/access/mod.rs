//! DatasetAccess: exact dataset access lists.
//!
//! The pipeline is observe → plan → apply: [`compile`] turns manifests into the desired list of
//! every dataset bqsteward writes (the one place other kinds add the entries they need),
//! [`plan`] compares it with the live list (pure), [`apply`] writes it back guarded by the etag.

pub mod apply;
pub mod compile;
pub mod declare;
pub mod entry;
pub mod plan;

pub use compile::{DatasetKey, DesiredAcl, compile};
pub use entry::{AclEntry, Principal};
pub use plan::{DatasetPlan, Observed, plan_dataset};
