//! ConsumerProject: a consumer team's project with authorized views over bqsteward-managed data.

mod access;
pub mod iam;
pub mod layout;
pub mod reconcile;
pub mod rowfilter;
