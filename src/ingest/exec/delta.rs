//! Loading one Delta version (a [`BatchKind::Delta`] batch): its marker says which landed files to
//! load — each into its own staging table, without its partition columns, which the statement sets
//! — and which Delta files' rows leave the table. One statement does both, so the table moves from
//! one Delta version to the next at once; the ledger then records the version's files LOADED.

use super::{Executor, Moved, Report, Step, batch_event, event};
use crate::cloud::CloudError;
use crate::deltasource::{COMPLETE, Marker};
use crate::ingest::job_config::{DeltaPart, delta_sql};
use crate::ingest::jobs::RunError;
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
                    bad = Some((f.clone(), &l.source, category, message));
                    break;
                }
            }
        }
        self.crash(Step::StagingLoaded)?;
        let jobs = i64::from(self.runner.loads_inserted() - before);
        if let Some((f, source, category, message)) = bad {
            let message = format!(
                "Delta version {} not loaded: {message} ({source}); the versions after it wait",
                marker.version
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
        let move_job = match statement {
            Some((sql, params)) => self.run_move(batch, &sql, &params).await?.0,
            None => String::new(),
        };
        let done = Moved {
            rows,
            jobs,
            move_job: &move_job,
            started,
            jobs_before,
            files: marker.files.len(),
        };
        self.record_loaded(batch, &meta, done, report).await?;
        for p in &parts {
            self.bq.delete_table(&p.staging).await?;
        }
        Ok(true)
    }
}
