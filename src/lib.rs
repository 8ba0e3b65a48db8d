//! bqsteward: BigQuery ingestion and governance as code.
//!
//! The library holds everything the `bqsteward` binary does, so that tests drive the same code:
//! [`crd`] (the resource types), [`manifest`] (loading YAML), [`validate`] (offline checks),
//! [`policy`] (the guardrail file) and [`cloud`] (narrow clients of Google Cloud APIs).

pub mod access;
pub mod audit;
pub mod checks;
pub mod cli;
pub mod cloud;
pub mod commands;
pub mod consumer;
pub mod controller;
pub mod crd;
pub mod dbsource;
pub mod deltasource;
pub mod engine;
pub mod groups;
pub mod ingest;
pub mod input_limits;
pub mod manifest;
pub mod policy;
pub mod render;
pub mod schema_check;
pub mod standins;
pub mod validate;
pub mod views;
