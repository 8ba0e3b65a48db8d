//! Loading one Delta version (a [`BatchKind::Delta`] batch): its marker says which landed files to
//! load — each into its own staging table, without its partition columns, which the statement sets
//! — and which Delta files' rows leave the table. One statement does both, so the table moves from
//! one Delta version to the next at once; the ledger then records the version's files LOADED.

use super::{Executor, Report, Step, batch_event, event, job_failed};
use crate::cloud::CloudError;
use crate::deltasource::{COMPLETE, Marker};
use crate::ingest::job_config::{DeltaPart, delta_sql, query_config};
use crate::ingest::jobs::{Finished, RunError};
use crate::ingest::model::{Batch, BatchKind, FileState};

impl Executor<'_> {
    /// Loads one Delta version. `false`: it did not load (its data was refused and quarantined);
    /// the versions after it must wait.
    pub(super) async fn delta(&self, batch: &Batch, report: &mut Report) -> Result<bool, RunError> {
        let t = self.t;
        let broken = |message: String| {
            RunError::Cloud(CloudError::Decode {
                api: "storage",
                operation: format!("Delta version {}", batch.reload_id),
                message,
            })
        };
        let gcs = self
            .gcs
            .ok_or_else(|| broken("no storage client to read the version marker".into()))?;
        let marker_file = batch
            .files
            .iter()
            .find(|f| f.uri.ends_with(&format!("/{COMPLETE}")))
            .ok_or_else(|| broken("the version folder has no marker".into()))?;
        let (bucket, name) = marker_file
            .uri
            .strip_prefix("gs://")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| broken(format!("{} is not a gs:// URI", marker_file.uri)))?;
        let body = gcs.read_head(bucket, name, marker_file.generation, 256 << 20).await?;
        let marker: Marker = serde_json::from_slice(&body)
            .map_err(|e| broken(format!("{} is not a version marker: {e}", marker_file.uri)))?;
        let folder = marker_file.uri.trim_end_matches(COMPLETE);
        let meta = t.meta(batch);
        let before = self.runner.loads_inserted();
        let (started, jobs_before) = (std::time::Instant::now(), self.runner.inserted().len());
        let table_name = t.table.to_string();
        let mut parts = Vec::new();
        let mut rows = 0;
        let mut bad = None;
        for l in &marker.files {
            let uri = format!("{folder}{}", l.name);
            let Some(f) = batch.files.iter().find(|f| f.uri == uri) else {
                return Err(broken(format!(
                    "the marker lists {uri}, which is not in the version folder"
                )));
            };
            let one = Batch::new(&table_name, BatchKind::Delta, vec![f.clone()], &batch.reload_id, vec![]);
            let staging = t.staging(&one.id);
            // The file's columns, in the Delta schema's order (Parquet columns are matched by
            // name on BigQuery, by position on some loaders): declared ones as declared, the others
            // as the Delta schema types them (dropped by the statement); partition columns are not
            // in the file.
            let in_file = |name: &str| !l.partition.keys().any(|k| k.eq_ignore_ascii_case(name));
            let declared = |name: &str| t.load_fields.iter().find(|c| c.name.eq_ignore_ascii_case(name));
            let mut fields: Vec<_> = marker
                .columns
                .iter()
                .filter(|(name, _)| in_file(name))
                .map(|(name, type_)| {
                    declared(name)
                        .cloned()
                        .unwrap_or_else(|| crate::cloud::bqtypes::Field::new(name, type_, "NULLABLE"))
                })
                .collect();
            for c in &t.load_fields {
                if in_file(&c.name) && !fields.iter().any(|f| f.name.eq_ignore_ascii_case(&c.name)) {
                    fields.push(c.clone());
                }
            }
            let loaded = self.load_as(&one, &staging, &fields).await?;
            parts.push(DeltaPart {
                staging,
                source: &l.source,
                partition: &l.partition,
            });
            match loaded {
                Ok(n) => rows += n,
                Err((category, message)) => {
                    bad = Some((f.clone(), category, message));
                    break;
                }
            }
        }
        self.crash(Step::StagingLoaded)?;
        let jobs = i64::from(self.runner.loads_inserted() - before);
        if let Some((f, category, message)) = bad {
            let message = format!(
                "Delta version {} not loaded: {} ({}); the versions after it wait",
                marker.version,
                message,
                l_source(&marker, &f.uri, folder)
            );
            let events: Vec<_> = batch
                .files
                .iter()
                .map(|x| event(x, FileState::Quarantined, &meta, Some(category), Some(&message)))
                .collect();
            let be = batch_event(batch, &meta, "QUARANTINED", 0, jobs, "", Some(&message));
            self.ledger_write(&format!("{}_quarantined", batch.id), &events, &[be])
                .await?;
            for p in &parts {
                self.bq.delete_table(&p.staging).await?;
            }
            self.quarantined(report, f, category, message);
            return Ok(false);
        }
        let statement = delta_sql(
            &t.table,
            &t.load_fields,
            batch,
            &parts,
            &marker.deletes,
            marker.kind == "snapshot",
        );
        let mut move_job = String::new();
        if let Some((sql, params)) = statement {
            let config = query_config(&sql, &params);
            match self
                .runner
                .run(&format!("bqsteward_move_{}", batch.id), &config, false, || Ok(()))
                .await?
            {
                Finished::Ok(job) => move_job = job.id,
                Finished::Failed(job, f) => return Err(job_failed("move job", job, &f)),
            }
        }
        self.audit_loaded(batch, rows, jobs_before, &move_job, started);
        self.crash(Step::Moved)?;
        let events: Vec<_> = batch
            .files
            .iter()
            .map(|f| event(f, FileState::Loaded, &meta, None, None))
            .collect();
        let be = batch_event(batch, &meta, "LOADED", rows, jobs, &move_job, None);
        self.ledger_write(&format!("{}_loaded", batch.id), &events, &[be])
            .await?;
        self.crash(Step::LedgerWritten)?;
        for p in &parts {
            self.bq.delete_table(&p.staging).await?;
        }
        report.batches_loaded += 1;
        report.files_loaded += marker.files.len();
        report.rows_loaded += rows;
        report.delays(&batch.files);
        Ok(true)
    }
}

/// The Delta file a landed object copies.
fn l_source(marker: &Marker, uri: &str, folder: &str) -> String {
    let name = uri.strip_prefix(folder).unwrap_or(uri);
    marker
        .files
        .iter()
        .find(|l| l.name == name)
        .map_or_else(|| uri.to_string(), |l| l.source.clone())
}
