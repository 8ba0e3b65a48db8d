//! Running a BigQuery job exactly once under a deterministic id.
//!
//! Job ids are `{base}_{attempt}`. Before inserting attempt *n* the runner looks it up: a job that
//! exists is adopted (waited for, its result used), never submitted again. An insert answered
//! with 409 `duplicate` (BigQuery's answer for an existing id) is adopted the same way; an insert
//! whose answer was lost (reset, 5xx) is looked up before it is retried. Only a job that finished
//! with a *transient* error moves on to attempt *n+1* (BigQuery refuses to re-run an id, even a
//! failed one). So a crash or a retry at any point never runs the same work twice — on BigQuery,
//! and on bqemulator (which would re-run a duplicate id) because the lookup comes first.

use super::classify::{Failure, failure};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::Job;
use crate::cloud::retry::{Backoff, with_retry};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Attempts per job before giving up (each is a new id).
pub const MAX_ATTEMPTS: u32 = 5;

/// The result of a job that finished.
#[derive(Clone, Debug, PartialEq)]
pub enum Finished {
    /// Succeeded (possibly in an earlier run: adopted).
    Ok(Job),
    /// Failed for a reason a new attempt cannot fix.
    Failed(Job, Failure),
}

/// Why a job could not be brought to an end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A call to BigQuery failed (after retries).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// Every attempt ended in a transient error.
    #[error("job {base}: {attempts} attempts ended in transient errors; last: {last}")]
    Exhausted { base: String, attempts: u32, last: String },
    /// The day's load-job budget of the table is used up.
    #[error("the table's daily load-job budget ({budget}) is used up; the rest waits for tomorrow")]
    Budget { budget: u32 },
    /// The job did not finish in time.
    #[error("job {id} still {state} after {waited:?}")]
    Timeout {
        id: String,
        state: String,
        waited: Duration,
    },
    /// A simulated crash (tests).
    #[error("simulated crash after {0:?}")]
    Crash(super::exec::Step),
}

/// Runs jobs for one table in one location.
pub struct Runner<'a> {
    bq: &'a dyn BigQuery,
    project: String,
    location: String,
    backoff: Backoff,
    poll: Duration,
    timeout: Duration,
    load_budget: u32,
    loads_inserted: AtomicU32,
    inserted: Mutex<Vec<String>>,
}

impl<'a> Runner<'a> {
    /// A runner in `project`/`location` that may insert at most `load_budget` load jobs.
    pub fn new(bq: &'a dyn BigQuery, project: &str, location: &str, load_budget: u32) -> Runner<'a> {
        Runner {
            bq,
            project: project.into(),
            location: location.into(),
            backoff: Backoff::default(),
            poll: Duration::from_millis(500),
            timeout: Duration::from_secs(6 * 3600),
            load_budget,
            loads_inserted: AtomicU32::new(0),
            inserted: Mutex::new(Vec::new()),
        }
    }

    /// Load jobs inserted by this runner (each counts against the table's daily quota, failed or not).
    pub fn loads_inserted(&self) -> u32 {
        self.loads_inserted.load(Ordering::SeqCst)
    }

    /// Ids of every job this runner inserted, in order.
    pub fn inserted(&self) -> Vec<String> {
        self.inserted.lock().expect("not poisoned").clone()
    }

    /// Runs the job `base` (`configuration` is the REST `JobConfiguration`) to its end, exactly
    /// once. `is_load` jobs count against the load budget. `after_insert` runs right after this
    /// runner inserted a job (the crash tests stop there).
    pub async fn run(
        &self,
        base: &str,
        configuration: &serde_json::Value,
        is_load: bool,
        after_insert: impl Fn() -> Result<(), RunError>,
    ) -> Result<Finished, RunError> {
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let id = format!("{base}_{attempt}");
            let job = match self.lookup(&id).await? {
                Some(job) => {
                    tracing::debug!(job = %id, state = %job.state, "adopting existing job");
                    job
                }
                None => {
                    if is_load && self.loads_inserted() >= self.load_budget {
                        return Err(RunError::Budget {
                            budget: self.load_budget,
                        });
                    }
                    let job = self.insert(&id, configuration).await?;
                    if is_load {
                        self.loads_inserted.fetch_add(1, Ordering::SeqCst);
                    }
                    self.inserted.lock().expect("not poisoned").push(id.clone());
                    after_insert()?;
                    job
                }
            };
            let job = self.wait(job).await?;
            match &job.error {
                None => return Ok(Finished::Ok(job)),
                Some(_) => match failure(&job) {
                    Failure::Transient(msg) => {
                        tracing::warn!(job = %id, error = %msg, "job failed transiently; next attempt gets a new id");
                        last = msg;
                        tokio::time::sleep(self.backoff.delay(attempt + 1)).await;
                    }
                    f => return Ok(Finished::Failed(job, f)),
                },
            }
        }
        Err(RunError::Exhausted {
            base: base.into(),
            attempts: MAX_ATTEMPTS,
            last,
        })
    }

    async fn lookup(&self, id: &str) -> Result<Option<Job>, CloudError> {
        with_retry(&self.backoff, "jobs.get", || {
            self.bq.get_job(&self.project, &self.location, id)
        })
        .await
    }

    /// Inserts `id`; a 409 or a lost answer is resolved by looking the job up.
    async fn insert(&self, id: &str, configuration: &serde_json::Value) -> Result<Job, RunError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .bq
                .insert_job(&self.project, &self.location, id, configuration.clone())
                .await
            {
                Ok(job) => return Ok(job),
                Err(e) if e.status() == Some(409) => {
                    tracing::info!(job = %id, "job id exists (409 duplicate): adopting it");
                    if let Some(job) = self.lookup(id).await? {
                        return Ok(job);
                    }
                    return Err(e.into());
                }
                Err(e) if e.is_retryable() && tries < self.backoff.attempts => {
                    // The insert may have reached BigQuery: look before trying again.
                    tracing::warn!(job = %id, error = %e, "insert answer lost or refused; checking whether the job exists");
                    tokio::time::sleep(self.backoff.delay(tries)).await;
                    if let Some(job) = self.lookup(id).await? {
                        return Ok(job);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn wait(&self, mut job: Job) -> Result<Job, RunError> {
        let started = std::time::Instant::now();
        let mut delay = self.poll.min(Duration::from_millis(100));
        while !job.is_done() {
            if started.elapsed() > self.timeout {
                return Err(RunError::Timeout {
                    id: job.id,
                    state: job.state,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            let id = job.id.clone();
            job = match self.lookup(&id).await? {
                Some(j) => j,
                None => {
                    return Err(RunError::Cloud(CloudError::Api {
                        api: "bigquery",
                        operation: format!("jobs.get {id}"),
                        status: 404,
                        reason: "notFound".into(),
                        message: "a job seen running is gone".into(),
                    }));
                }
            };
        }
        Ok(job)
    }
}
