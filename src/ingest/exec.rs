//! Applying the plan of one IngestedTable (the target, observation and plan are in
//! [`super::target`], re-exported here; the job configurations in [`super::job_config`]).
//!
//! Per batch: (1) its files are written to the ledger as PLANNED (so a crash resumes exactly
//! this batch); (2) a load job with a deterministic id fills a staging table (`WRITE_TRUNCATE`,
//! so a re-run or a partial failed load never leaves extra rows); (3) a query job with a
//! deterministic id moves the staging rows into the destination in one statement, adding the
//! lineage columns; (4) the ledger records the files as LOADED; (5) staging is dropped. Jobs are
//! looked up before they are inserted ([`super::jobs`]), so a crash between any two steps resumes
//! at the step that did not finish — no loss, no duplicate. A batch that fails on bad data is split
//! in two (recorded in the ledger first) until the bad files are alone, then quarantined.

use super::classify::Failure;
use super::jobs::{Finished, RunError, Runner};
use super::ledger::{BatchEvent, FileEvent};
use super::model::{Batch, BatchKind, BatchMeta, Category, FileState, SourceFile, short_hash};
use super::table::{self, SchemaChange};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{LABEL_MANAGED_BY, TableDef, TableInfo, TableRef, ident};
use std::collections::BTreeMap;

mod delta;

use super::job_config::query_config;
pub use super::job_config::{load_config, move_sql};
pub use super::target::{Observed, TablePlan, Target, observe, plan_table};

/// A step after which the crash tests stop a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A load job was inserted.
    LoadInserted,
    /// The staging table holds the batch.
    StagingLoaded,
    /// The rows are in the destination.
    Moved,
    /// The ledger records the batch.
    LedgerWritten,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Batches moved into the table.
    pub batches_loaded: usize,
    /// Files moved into the table.
    pub files_loaded: usize,
    /// Rows moved into the table.
    pub rows_loaded: i64,
    /// Files quarantined: uri, generation, category, message.
    pub quarantined: Vec<(String, i64, Category, String)>,
    /// Load jobs inserted.
    pub load_jobs: u32,
    /// Every job inserted, in order.
    pub jobs: Vec<String>,
    /// Columns added / relaxed.
    pub schema_changed: bool,
    /// Why the run stopped early (budget, an error no file can fix), if it did.
    pub stopped: Option<String>,
    /// Snapshot: set blocked by quarantined files.
    pub snapshot_blocked: bool,
    /// Files whose first lines were read for undeclared fields, and the bytes read
    /// ([`super::precheck`]).
    pub prechecked: (usize, u64),
    /// Per file loaded, milliseconds from the object's last update (its upload) to its batch's
    /// ledger record: the end-to-end delay.
    pub delays_ms: Vec<i64>,
}

impl Report {
    /// Records the end-to-end delay of `files`, loaded now.
    fn delays(&mut self, files: &[super::model::SourceFile]) {
        let now = chrono::Utc::now().timestamp_millis();
        self.delays_ms.extend(
            files
                .iter()
                .filter(|f| f.updated_ms > 0)
                .map(|f| (now - f.updated_ms).max(0)),
        );
    }
}

/// Applies a plan.
pub struct Executor<'a> {
    bq: &'a dyn BigQuery,
    /// Reads the first lines of new files when the source has excluded columns.
    gcs: Option<&'a dyn crate::cloud::storage::Storage>,
    t: &'a Target,
    runner: Runner<'a>,
    /// Stop (as if the process died) right after this step — crash tests only.
    pub crash_after: Option<Step>,
}

/// Why apply failed.
pub type ExecError = RunError;

impl<'a> Executor<'a> {
    /// An executor for `t` that may insert `budget_left` load jobs.
    pub fn new(bq: &'a dyn BigQuery, t: &'a Target, budget_left: u32) -> Executor<'a> {
        Executor {
            bq,
            gcs: None,
            t,
            runner: Runner::new(bq, &t.table.project, &t.ledger.location, budget_left),
            crash_after: None,
        }
    }

    /// Checks new NEWLINE_DELIMITED_JSON files of a source with excluded columns for undeclared
    /// fields before loading them ([`super::precheck`]), reading them through `gcs`.
    pub fn with_storage(mut self, gcs: &'a dyn crate::cloud::storage::Storage) -> Executor<'a> {
        self.gcs = Some(gcs);
        self
    }

    /// The files of `files` carrying a field that is neither declared nor excluded, as quarantine
    /// entries (only for NEWLINE_DELIMITED_JSON sources with excluded columns, when a storage
    /// client was given).
    async fn undeclared(
        &self,
        files: &[SourceFile],
        report: &mut Report,
    ) -> Result<Vec<(SourceFile, Category, String)>, RunError> {
        let spec = &self.t.spec;
        let Some(gcs) = self.gcs else { return Ok(Vec::new()) };
        // Database pulls never read excluded or undeclared columns: nothing to check.
        if spec.excluded_columns.is_empty()
            || spec.source.database.is_some()
            || spec.source.format() != crate::crd::ingested_table::SourceFormat::NewlineDelimitedJson
        {
            return Ok(Vec::new());
        }
        let declared: Vec<String> = spec.schema.iter().map(|c| c.name.clone()).collect();
        let mut bad = Vec::new();
        for f in files {
            let Some((bucket, name)) = f.uri.strip_prefix("gs://").and_then(|r| r.split_once('/')) else {
                continue;
            };
            let head = match gcs
                .read_head(bucket, name, f.generation, super::precheck::HEAD_BYTES)
                .await
            {
                Ok(h) => h,
                // Gone: the load reports it (NotFound) like any other missing file.
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e.into()),
            };
            report.prechecked.0 += 1;
            report.prechecked.1 += head.len() as u64;
            let fields = super::precheck::undeclared_fields(&head, &declared, &spec.excluded_columns);
            if !fields.is_empty() {
                let message = format!(
                    "undeclared field{} {} (neither in spec.schema nor in excludedColumns): with excludedColumns set, \
                     BigQuery would drop {} silently; declare {} in spec.schema (NULLABLE) or list {} in excludedColumns",
                    if fields.len() == 1 { "" } else { "s" },
                    fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
                    if fields.len() == 1 { "it" } else { "them" },
                    if fields.len() == 1 { "it" } else { "them" },
                    if fields.len() == 1 { "it" } else { "them" },
                );
                bad.push((f.clone(), Category::IncompatibleSchema, message));
            }
        }
        Ok(bad)
    }

    /// Reports a file as quarantined (after the ledger recorded it): one audit line with the short
    /// error, the full error in the report.
    fn quarantined(&self, report: &mut Report, f: SourceFile, category: Category, message: String) {
        let t = self.t;
        let subject = format!("{}#{}", f.uri, f.generation);
        let mut ev = crate::audit::Event::new(
            crate::audit::Action::Quarantined,
            &format!("IngestedTable {}", t.name),
            &t.table.to_string(),
            &subject,
            &subject,
        )
        .home(&t.table.project, &t.ledger.location);
        ev.outcome = "refused".into();
        ev.category = category.as_str().into();
        ev.message = super::classify::short(&message).to_string();
        ev.bytes = Some(f.size as i64);
        crate::audit::record(ev);
        report.quarantined.push((f.uri, f.generation, category, message));
    }

    /// Quarantines the files of `batch` with undeclared fields before any load (recorded in the
    /// ledger first), and returns the batch of the other files to load, if any.
    async fn precheck(&self, batch: &Batch, report: &mut Report) -> Result<Option<Batch>, RunError> {
        let bad = self.undeclared(&batch.files, report).await?;
        if bad.is_empty() {
            return Ok(Some(batch.clone()));
        }
        let keys: std::collections::HashSet<(&str, i64)> =
            bad.iter().map(|(f, _, _)| (f.uri.as_str(), f.generation)).collect();
        let rest_files: Vec<SourceFile> = batch
            .files
            .iter()
            .filter(|f| !keys.contains(&(f.uri.as_str(), f.generation)))
            .cloned()
            .collect();
        let rest = (!rest_files.is_empty()).then(|| {
            Batch::new(
                &self.t.table.to_string(),
                batch.kind,
                rest_files,
                &batch.reload_id,
                batch.replaces.clone(),
            )
        });
        let meta = self.t.meta(batch);
        let rest_meta = rest.as_ref().map(|r| self.t.meta(r));
        let mut events: Vec<FileEvent<'_>> = bad
            .iter()
            .map(|(f, c, m)| event(f, FileState::Quarantined, &meta, Some(*c), Some(m)))
            .collect();
        if let (Some(r), Some(rm)) = (&rest, &rest_meta) {
            events.extend(r.files.iter().map(|f| planned(f, rm)));
        }
        let why = "files with undeclared fields quarantined before the load";
        let be = batch_event(batch, &meta, "SPLIT", 0, 0, "", Some(why));
        self.ledger_write(&format!("{}_precheck", batch.id), &events, &[be])
            .await?;
        for (f, c, m) in bad {
            self.quarantined(report, f, c, m);
        }
        Ok(rest)
    }

    /// Records the audit event of a batch that reached the table (before the ledger says so: a
    /// crash in between re-records it on resume, under the same id).
    fn audit_loaded(&self, b: &Batch, rows: i64, jobs_before: usize, move_job: &str, started: std::time::Instant) {
        use crate::audit::{Action, Event};
        let t = self.t;
        let action = if b.kind == BatchKind::Reload {
            Action::Reload
        } else {
            Action::LoadBatch
        };
        let mut ev = Event::new(
            action,
            &format!("IngestedTable {}", t.name),
            &t.table.to_string(),
            &b.id,
            &b.id,
        )
        .home(&t.table.project, &t.ledger.location);
        let now = chrono::Utc::now().timestamp_millis();
        ev.files = Some(b.files.len() as i64);
        ev.rows = Some(rows);
        ev.bytes = Some(b.files.iter().map(|f| f.size as i64).sum());
        ev.job_ids = self.runner.inserted().into_iter().skip(jobs_before).collect();
        if !ev.job_ids.iter().any(|j| j == move_job) {
            ev.job_ids.push(move_job.to_string());
        }
        ev.duration_ms = Some(started.elapsed().as_millis() as i64);
        ev.delays_ms = b
            .files
            .iter()
            .filter(|f| f.updated_ms > 0)
            .map(|f| (now - f.updated_ms).max(0))
            .collect();
        ev.category = b.kind.as_str().to_string();
        if !b.replaces.is_empty() {
            ev.message = format!("replaces batches {}", b.replaces.join(", "));
        }
        crate::audit::record(ev);
    }

    /// After a batch's statement ran: the audit event, its files LOADED in the ledger (the
    /// batch's event with them), and the report.
    async fn record_loaded(
        &self,
        b: &Batch,
        meta: &BatchMeta,
        done: Moved<'_>,
        report: &mut Report,
    ) -> Result<(), RunError> {
        self.audit_loaded(b, done.rows, done.jobs_before, done.move_job, done.started);
        self.crash(Step::Moved)?;
        let events: Vec<_> = b
            .files
            .iter()
            .map(|f| event(f, FileState::Loaded, meta, None, None))
            .collect();
        let be = batch_event(b, meta, "LOADED", done.rows, done.jobs, done.move_job, None);
        self.ledger_write(&format!("{}_loaded", b.id), &events, &[be]).await?;
        self.crash(Step::LedgerWritten)?;
        report.batches_loaded += 1;
        report.files_loaded += done.files;
        report.rows_loaded += done.rows;
        report.delays(&b.files);
        Ok(())
    }

    fn crash(&self, step: Step) -> Result<(), RunError> {
        match self.crash_after {
            Some(s) if s == step => Err(RunError::Crash(step)),
            _ => Ok(()),
        }
    }

    /// Applies `p` (observed as `o`). Returns what happened; an error leaves everything
    /// resumable (batches stay PLANNED in the ledger).
    pub async fn apply(&self, p: &TablePlan, o: &Observed) -> Result<Report, ExecError> {
        let mut report = Report::default();
        let result = self.apply_inner(p, o, &mut report).await;
        report.load_jobs = self.runner.loads_inserted();
        report.jobs = self.runner.inserted();
        match result {
            Ok(()) => Ok(report),
            Err(RunError::Budget { budget }) => {
                report.stopped = Some(format!(
                    "daily load-job budget used up ({budget} left at the start of this run)"
                ));
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }

    async fn apply_inner(&self, p: &TablePlan, o: &Observed, report: &mut Report) -> Result<(), RunError> {
        let t = self.t;
        if let SchemaChange::Incompatible(problems) = &p.schema {
            report.stopped = Some(problems.join("; "));
            return Ok(());
        }
        t.ledger.ensure(self.bq).await?;
        let mut live = o.table.clone();
        if let Some(info) = o.table.as_ref()
            && (p.claim.is_some() || !p.mark_pii.is_empty())
        {
            let mut labels = info.labels.clone();
            if let Some(why) = &p.claim {
                labels.insert(LABEL_MANAGED_BY.to_string(), "bqsteward".to_string());
                labels.insert(table::LABEL_OWNER.to_string(), table::owner_label(&t.name));
                let mut ev = crate::audit::Event::new(
                    crate::audit::Action::TableLabelled,
                    &format!("IngestedTable {}", t.name),
                    &t.table.to_string(),
                    "",
                    &info.etag,
                )
                .home(&t.table.project, &t.ledger.location);
                ev.etag_before = info.etag.clone();
                ev.message = format!("labelled as owned: {why}");
                crate::audit::record(ev);
            }
            for c in &p.mark_pii {
                labels.insert(table::pii_label(c), "true".to_string());
            }
            self.bq.patch_table_labels(&t.table, &labels, &info.etag).await?;
            if !p.mark_pii.is_empty() {
                let mut ev = crate::audit::Event::new(
                    crate::audit::Action::TableLabelled,
                    &format!("IngestedTable {}", t.name),
                    &t.table.to_string(),
                    &p.mark_pii.join(","),
                    &info.etag,
                )
                .home(&t.table.project, &t.ledger.location);
                ev.etag_before = info.etag.clone();
                ev.message = "marked PII columns".into();
                crate::audit::record(ev);
            }
            // The etag changed; the schema patch below needs the new one.
            live = self.bq.get_table(&t.table).await?;
        }
        self.ensure_table(&p.schema, live.as_ref()).await?;
        report.schema_changed = matches!(p.schema, SchemaChange::Additive { .. });
        // Write-ahead: every new batch is PLANNED in the ledger before any of its jobs.
        for chunk in chunk_batches(&p.loads.new, 10_000) {
            let metas: Vec<BatchMeta> = chunk.iter().map(|b| t.meta(b)).collect();
            let events: Vec<FileEvent<'_>> = chunk
                .iter()
                .zip(&metas)
                .flat_map(|(b, m)| b.files.iter().map(move |f| planned(f, m)))
                .collect();
            let key = short_hash(&chunk.iter().map(|b| b.id.as_str()).collect::<Vec<_>>().join(","));
            self.ledger_write(&format!("plan_{key}"), &events, &[]).await?;
        }
        for b in p.loads.resumed.iter().chain(&p.loads.new) {
            match b.kind {
                // A day replaces its rows in one statement after all its files loaded, like a snapshot.
                BatchKind::Snapshot | BatchKind::Day => self.snapshot(b, report).await?,
                // A Delta version that did not load stops the versions after it.
                BatchKind::Delta => {
                    if !self.delta(b, report).await? {
                        break;
                    }
                }
                _ => self.incremental(b, report).await?,
            }
        }
        Ok(())
    }

    async fn ensure_table(&self, change: &SchemaChange, live: Option<&TableInfo>) -> Result<(), RunError> {
        let t = self.t;
        match change {
            SchemaChange::Create => {
                self.bq
                    .create_dataset(&t.table.project, &t.table.dataset, &t.ledger.location)
                    .await?;
                self.bq
                    .create_table(&table::table_def(&t.spec, t.table.clone(), &t.name))
                    .await?;
                crate::audit::record(
                    crate::audit::Event::new(
                        crate::audit::Action::TableCreated,
                        &format!("IngestedTable {}", t.name),
                        &t.table.to_string(),
                        "",
                        "",
                    )
                    .home(&t.table.project, &t.ledger.location),
                );
            }
            SchemaChange::Additive { add, relax } => {
                let live = live.expect("additive change of an existing table");
                let merged = table::merged_schema(&live.schema.fields, add, relax);
                self.bq.patch_table_schema(&t.table, &merged, &live.etag).await?;
                // BigQuery applied the patch already (this is a no-op there); bqemulator keeps its
                // data columns apart from metadata and needs the DDL to add them — one column per
                // statement (its engine takes one ALTER command per statement).
                for f in add {
                    let sql = format!(
                        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                        t.table.sql(),
                        ident(&f.name),
                        f.type_
                    );
                    self.bq.query(&t.table.project, &t.ledger.location, &sql, &[]).await?;
                }
                let added: Vec<&str> = add.iter().map(|f| f.name.as_str()).collect();
                let mut ev = crate::audit::Event::new(
                    crate::audit::Action::SchemaChanged,
                    &format!("IngestedTable {}", t.name),
                    &t.table.to_string(),
                    &added.join(","),
                    &live.etag,
                )
                .home(&t.table.project, &t.ledger.location);
                ev.etag_before = live.etag.clone();
                ev.message = format!("added {}; relaxed {}", added.join(", "), relax.join(", "));
                crate::audit::record(ev);
            }
            SchemaChange::None | SchemaChange::Incompatible(_) => {}
        }
        Ok(())
    }

    /// One incremental or reload batch, with bisection on bad data.
    async fn incremental(&self, batch: &Batch, report: &mut Report) -> Result<(), RunError> {
        let mut stack: Vec<Batch> = self.precheck(batch, report).await?.into_iter().collect();
        while let Some(b) = stack.pop() {
            let meta = self.t.meta(&b);
            let before = self.runner.loads_inserted();
            let (started, jobs_before) = (std::time::Instant::now(), self.runner.inserted().len());
            let staging = self.t.staging(&b.id);
            match self.load(&b, &staging).await? {
                Ok(rows) => {
                    self.crash(Step::StagingLoaded)?;
                    let (move_job, _) = self.move_rows(&b, std::slice::from_ref(&staging)).await?;
                    let jobs = i64::from(self.runner.loads_inserted() - before);
                    let done = Moved {
                        rows,
                        jobs,
                        move_job: &move_job,
                        started,
                        jobs_before,
                        files: b.files.len(),
                    };
                    self.record_loaded(&b, &meta, done, report).await?;
                    self.bq.delete_table(&staging).await?;
                }
                Err((category, message)) if b.files.len() == 1 => {
                    let f = &b.files[0];
                    let jobs = i64::from(self.runner.loads_inserted() - before);
                    let events = [event(f, FileState::Quarantined, &meta, Some(category), Some(&message))];
                    let be = batch_event(&b, &meta, "QUARANTINED", 0, jobs, "", Some(&message));
                    self.ledger_write(&format!("{}_quarantined", b.id), &events, &[be])
                        .await?;
                    self.bq.delete_table(&staging).await?;
                    self.quarantined(report, f.clone(), category, message);
                }
                Err((_, message)) => {
                    let (left, right) = b.split(&self.t.table.to_string());
                    let (lm, rm) = (self.t.meta(&left), self.t.meta(&right));
                    let events: Vec<_> = left
                        .files
                        .iter()
                        .map(|f| planned(f, &lm))
                        .chain(right.files.iter().map(|f| planned(f, &rm)))
                        .collect();
                    let jobs = i64::from(self.runner.loads_inserted() - before);
                    let be = batch_event(&b, &meta, "SPLIT", 0, jobs, "", Some(&message));
                    self.ledger_write(&format!("{}_split", b.id), &events, &[be]).await?;
                    self.bq.delete_table(&staging).await?;
                    tracing::info!(resource = %self.t.name, batch = %b.id, files = b.files.len(), "batch failed on bad data; bisecting");
                    stack.push(right);
                    stack.push(left);
                }
            }
        }
        Ok(())
    }

    /// A snapshot: every chunk loads into its own staging table; only if all files are good is the
    /// table replaced (one statement); otherwise the bad files are isolated and quarantined and the
    /// table keeps its current contents.
    async fn snapshot(&self, batch: &Batch, report: &mut Report) -> Result<(), RunError> {
        let table_name = self.t.table.to_string();
        let meta = self.t.meta(batch);
        let before = self.runner.loads_inserted();
        let (started, jobs_before) = (std::time::Instant::now(), self.runner.inserted().len());
        let per_job = self.t.spec.load_policy.max_files_per_job.max(1) as usize;
        let mut stagings = Vec::new();
        // Files with undeclared fields make the set incomplete, like any quarantined file.
        let mut bad: Vec<(SourceFile, Category, String)> = self.undeclared(&batch.files, report).await?;
        let loadable: Vec<SourceFile> = batch
            .files
            .iter()
            .filter(|f| {
                !bad.iter()
                    .any(|(b, _, _)| b.uri == f.uri && b.generation == f.generation)
            })
            .cloned()
            .collect();
        let mut scratch = Vec::new();
        let mut rows = 0;
        for files in loadable.chunks(per_job) {
            let chunk = Batch::new(&table_name, BatchKind::Snapshot, files.to_vec(), "", vec![]);
            let staging = self.t.staging(&chunk.id);
            let mut stack = vec![chunk];
            let mut first = true;
            while let Some(c) = stack.pop() {
                let st = self.t.staging(&c.id);
                let res = self.load(&c, &st).await?;
                if first {
                    first = false;
                } else {
                    scratch.push(st.clone());
                }
                match res {
                    Ok(n) => rows += n,
                    Err((cat, msg)) if c.files.len() == 1 => bad.push((c.files[0].clone(), cat, msg)),
                    Err(_) => {
                        let (l, r) = c.split(&table_name);
                        stack.push(r);
                        stack.push(l);
                    }
                }
            }
            stagings.push(staging);
        }
        self.crash(Step::StagingLoaded)?;
        let jobs = i64::from(self.runner.loads_inserted() - before);
        if bad.is_empty() {
            let (move_job, _) = self.move_rows(batch, &stagings).await?;
            let done = Moved {
                rows,
                jobs,
                move_job: &move_job,
                started,
                jobs_before,
                files: batch.files.len(),
            };
            self.record_loaded(batch, &meta, done, report).await?;
        } else {
            let bad_keys: std::collections::HashSet<(&str, i64)> =
                bad.iter().map(|(f, _, _)| (f.uri.as_str(), f.generation)).collect();
            let mut events: Vec<_> = bad
                .iter()
                .map(|(f, c, m)| event(f, FileState::Quarantined, &meta, Some(*c), Some(m)))
                .collect();
            events.extend(
                batch
                    .files
                    .iter()
                    .filter(|f| !bad_keys.contains(&(f.uri.as_str(), f.generation)))
                    .map(|f| {
                        event(
                            f,
                            FileState::Abandoned,
                            &meta,
                            None,
                            Some("snapshot set has quarantined files"),
                        )
                    }),
            );
            let msg = format!(
                "{} of {} files quarantined; table keeps its previous snapshot",
                bad.len(),
                batch.files.len()
            );
            let be = batch_event(batch, &meta, "ABANDONED", 0, jobs, "", Some(&msg));
            self.ledger_write(&format!("{}_abandoned", batch.id), &events, &[be])
                .await?;
            for (f, c, m) in bad {
                self.quarantined(report, f, c, m);
            }
            report.snapshot_blocked = true;
        }
        for st in stagings.iter().chain(&scratch) {
            self.bq.delete_table(st).await?;
        }
        Ok(())
    }

    /// Loads `b` into `staging`. `Err((category, message))` when a file's content is at fault.
    async fn load(&self, b: &Batch, staging: &TableRef) -> Result<Result<i64, (Category, String)>, RunError> {
        self.load_as(b, staging, &self.t.load_fields).await
    }

    /// [`Executor::load`] with the staging table's columns given (a Delta file lacks its
    /// partition columns).
    async fn load_as(
        &self,
        b: &Batch,
        staging: &TableRef,
        fields: &[crate::cloud::bqtypes::Field],
    ) -> Result<Result<i64, (Category, String)>, RunError> {
        let t = self.t;
        // Pre-create staging with an expiry, so a batch abandoned by a crash cleans itself up.
        let week = chrono::Utc::now().timestamp_millis() + 7 * 86_400_000;
        self.bq
            .create_table(&TableDef {
                table: staging.clone(),
                fields: fields.to_vec(),
                time_partitioning: None,
                clustering: None,
                require_partition_filter: false,
                labels: BTreeMap::from([(crate::cloud::bqtypes::LABEL_MANAGED_BY.into(), "bqsteward".into())]),
                expiration_ms: Some(week),
                description: Some(format!("bqsteward staging for {} (batch {})", t.table, b.id)),
            })
            .await?;
        let config = load_config(&t.spec, fields, b, staging);
        let base = format!("bqsteward_load_{}_{}", b.id, short_hash(&config.to_string()));
        let after = || self.crash(Step::LoadInserted);
        match self.runner.run(&base, &config, true, after).await? {
            // With WRITE_TRUNCATE, outputRows is this batch's rows (on BigQuery and bqemulator).
            Finished::Ok(job) => Ok(Ok(job.output_rows.unwrap_or(0))),
            Finished::Failed(_, Failure::Data(c, m)) => Ok(Err((c, m))),
            Finished::Failed(job, f) => Err(job_failed("load job", job, &f)),
        }
    }

    /// Moves staging rows into the destination in one statement; returns (job id, rows changed —
    /// for a MERGE that counts deleted rows too).
    async fn move_rows(&self, b: &Batch, stagings: &[TableRef]) -> Result<(String, i64), RunError> {
        let window = self.t.day_window(b);
        let (sql, params) = move_sql(&self.t.table, &self.t.load_fields, b, stagings, window.as_ref());
        self.run_move(b, &sql, &params).await
    }

    /// Runs a batch's statement under its deterministic job id (`bqsteward_move_<batch>`: a
    /// second run of the same batch adopts the first's job); returns (job id, rows changed).
    async fn run_move(
        &self,
        b: &Batch,
        sql: &str,
        params: &[crate::cloud::bqtypes::Param],
    ) -> Result<(String, i64), RunError> {
        let config = query_config(sql, params);
        let base = format!("bqsteward_move_{}", b.id);
        match self.runner.run(&base, &config, false, || Ok(())).await? {
            Finished::Ok(job) => {
                tracing::debug!(resource = %self.t.name, table = %self.t.table,
                    batch = %b.id, kind = b.kind.as_str(), files = b.files.len(), rows_affected = job.dml_rows.unwrap_or(0), job = %job.id, "moved batch");
                Ok((job.id, job.dml_rows.unwrap_or(0)))
            }
            Finished::Failed(job, f) => Err(job_failed("move job", job, &f)),
        }
    }

    async fn ledger_write(
        &self,
        key: &str,
        files: &[FileEvent<'_>],
        batches: &[BatchEvent<'_>],
    ) -> Result<(), RunError> {
        for (part, sql, params) in self.t.ledger.write_sql(&self.t.table.to_string(), files, batches) {
            let config = query_config(&sql, &params);
            let base = format!("bqsteward_ledger_{key}_{part}");
            if let Finished::Failed(job, f) = self.runner.run(&base, &config, false, || Ok(())).await? {
                return Err(job_failed("ledger write", job, &f));
            }
        }
        Ok(())
    }
}

/// Records `t`'s next listing cursor (a `Lexical` source) after its cycle: one insert under a
/// deterministic job id (a retried cycle adopts it).
pub async fn record_cursor(bq: &dyn BigQuery, t: &Target, next: &super::target::NextCursor) -> Result<(), RunError> {
    t.ledger.ensure(bq).await?;
    let table_ref = t.table.to_string();
    let c = &next.cursor;
    let (sql, params) = t.ledger.cursor_sql(&table_ref, c, next.from.as_ref());
    let runner = Runner::new(bq, &t.table.project, &t.ledger.location, 0);
    let base = format!(
        "bqsteward_cursor_{}",
        short_hash(&format!(
            "{table_ref}\n{}\n{}\n{}\n{:?}",
            c.uri,
            c.full_listing_ms,
            c.token,
            next.from.as_ref().map(|f| f.totals.at_us)
        ))
    );
    match runner
        .run(&base, &query_config(&sql, &params), false, || Ok(()))
        .await?
    {
        Finished::Ok(_) => Ok(()),
        Finished::Failed(job, f) => Err(job_failed("cursor write", job, &f)),
    }
}

/// A job that finished with an error no new attempt or bisection can fix, as an error.
fn job_failed(what: &str, job: crate::cloud::bqtypes::Job, f: &Failure) -> RunError {
    RunError::Cloud(CloudError::Api {
        api: "bigquery",
        operation: format!("{what} {}", job.id),
        status: 400,
        reason: job.error.map(|e| e.reason).unwrap_or_default(),
        message: format!("{f:?}"),
    })
}

/// What a batch's statement did, for [`Executor::record_loaded`].
struct Moved<'a> {
    /// Rows loaded.
    rows: i64,
    /// Load jobs the batch used.
    jobs: i64,
    /// The statement's job id ("" when the batch needed none).
    move_job: &'a str,
    /// When the batch started, and the jobs inserted before it (for the audit event).
    started: std::time::Instant,
    jobs_before: usize,
    /// Files the report counts as loaded.
    files: usize,
}

fn chunk_batches(batches: &[Batch], max_files: usize) -> Vec<&[Batch]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut files = 0;
    for (i, b) in batches.iter().enumerate() {
        if files > 0 && files + b.files.len() > max_files {
            out.push(&batches[start..i]);
            start = i;
            files = 0;
        }
        files += b.files.len();
    }
    if start < batches.len() {
        out.push(&batches[start..]);
    }
    out
}

fn planned<'a>(f: &'a SourceFile, m: &'a BatchMeta) -> FileEvent<'a> {
    event(f, FileState::Planned, m, None, None)
}

fn event<'a>(
    f: &'a SourceFile,
    state: FileState,
    m: &'a BatchMeta,
    category: Option<Category>,
    message: Option<&'a str>,
) -> FileEvent<'a> {
    FileEvent {
        file: f,
        state,
        batch: m,
        category,
        message,
    }
}

fn batch_event<'a>(
    b: &Batch,
    m: &'a BatchMeta,
    state: &'a str,
    rows: i64,
    load_jobs: i64,
    job_id: &'a str,
    message: Option<&'a str>,
) -> BatchEvent<'a> {
    BatchEvent {
        batch: m,
        state,
        files: b.files.len() as i64,
        bytes: b.bytes() as i64,
        rows,
        load_jobs,
        job_id,
        message,
    }
}
