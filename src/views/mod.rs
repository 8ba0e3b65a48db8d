//! IngestedTable view layers: the dedup view (`<dataset>__views_full`) and the PII-free view
//! (`<dataset>__views_clean`).
//!
//! observe → plan → apply like everything else: [`layout`] derives the datasets, views and SQL
//! from the spec (pure), [`plan`] compares them with the live views (pure; drift = the live SQL
//! differs, or — where the API returns no SQL — the hash label does), [`apply`] creates datasets
//! and views and patches drifted ones in place. The authorizations the views need on their source
//! datasets go through the ACL compiler ([`crate::access::compile`]), so a DatasetAccess never
//! removes them.

mod access;
pub mod apply;
pub mod layout;
pub mod plan;
pub mod report;
pub mod sql;

pub use layout::{Layer, LayerRef, Layout, layers, layout};
pub use plan::{LayoutPlan, ObservedLayout, ViewChange, plan};
