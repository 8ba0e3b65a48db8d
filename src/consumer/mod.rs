//! ConsumerProject: a consumer team's project with authorized views over bqsteward-managed data.

pub mod iam;
pub mod layout;
pub mod reconcile;
pub mod rowfilter;
