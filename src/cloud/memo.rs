//! One run's memory of the datasets it read: each dataset is read from BigQuery once per run
//! (`plan`, `apply`, one controller reconcile), however many tables, views and lists refer to it —
//! a no-op `apply` of a thousand resources reads each dataset once.
//!
//! Any write bqsteward makes in a dataset (its access list, a table or view created, patched or
//! deleted in it) forgets that dataset first, whether the write succeeds or not, so the next read
//! is fresh; a job (a load, a query, DDL) forgets every dataset. A change made by someone else
//! between two reads of one run is seen as it would be with one read: an access-list write is
//! guarded by the etag read, and BigQuery refuses it (412) if the list changed meanwhile — the
//! refusal forgets the dataset, so the retry reads it again.

use super::CloudError;
use super::bigquery::{BigQuery, DatasetInfo};
use super::bqtypes::{Field, Job, Param, Rows, TableDef, TableInfo, TableRef, ViewDef};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// A [`BigQuery`] that remembers the datasets it read for the length of one run.
pub struct DatasetMemo<'a> {
    inner: &'a dyn BigQuery,
    seen: Mutex<HashMap<(String, String), Option<DatasetInfo>>>,
}

impl<'a> DatasetMemo<'a> {
    /// Remembers what `inner` answers, from now on.
    pub fn new(inner: &'a dyn BigQuery) -> DatasetMemo<'a> {
        DatasetMemo {
            inner,
            seen: Mutex::default(),
        }
    }

    fn forget(&self, project: &str, dataset: &str) {
        self.seen
            .lock()
            .unwrap()
            .remove(&(project.to_string(), dataset.to_string()));
    }

    fn forget_all(&self) {
        self.seen.lock().unwrap().clear();
    }
}

#[async_trait]
impl BigQuery for DatasetMemo<'_> {
    async fn get_dataset(&self, project: &str, dataset: &str) -> Result<Option<DatasetInfo>, CloudError> {
        let key = (project.to_string(), dataset.to_string());
        if let Some(found) = self.seen.lock().unwrap().get(&key) {
            return Ok(found.clone());
        }
        let found = self.inner.get_dataset(project, dataset).await?;
        self.seen.lock().unwrap().insert(key, found.clone());
        Ok(found)
    }

    async fn create_dataset(&self, project: &str, dataset: &str, location: &str) -> Result<(), CloudError> {
        self.forget(project, dataset);
        self.inner.create_dataset(project, dataset, location).await
    }

    async fn patch_dataset_access(
        &self,
        project: &str,
        dataset: &str,
        access: Vec<serde_json::Value>,
        etag: &str,
    ) -> Result<DatasetInfo, CloudError> {
        self.forget(project, dataset);
        self.inner.patch_dataset_access(project, dataset, access, etag).await
    }

    async fn get_table(&self, table: &TableRef) -> Result<Option<TableInfo>, CloudError> {
        self.inner.get_table(table).await
    }

    async fn create_table(&self, def: &TableDef) -> Result<(), CloudError> {
        self.forget(&def.table.project, &def.table.dataset);
        self.inner.create_table(def).await
    }

    async fn patch_table_schema(&self, table: &TableRef, fields: &[Field], etag: &str) -> Result<(), CloudError> {
        self.forget(&table.project, &table.dataset);
        self.inner.patch_table_schema(table, fields, etag).await
    }

    async fn patch_table_labels(
        &self,
        table: &TableRef,
        labels: &std::collections::BTreeMap<String, String>,
        etag: &str,
    ) -> Result<(), CloudError> {
        self.forget(&table.project, &table.dataset);
        self.inner.patch_table_labels(table, labels, etag).await
    }

    async fn create_view(&self, def: &ViewDef) -> Result<(), CloudError> {
        self.forget(&def.table.project, &def.table.dataset);
        self.inner.create_view(def).await
    }

    async fn patch_view(&self, def: &ViewDef, etag: &str) -> Result<(), CloudError> {
        self.forget(&def.table.project, &def.table.dataset);
        self.inner.patch_view(def, etag).await
    }

    async fn delete_table(&self, table: &TableRef) -> Result<(), CloudError> {
        self.forget(&table.project, &table.dataset);
        self.inner.delete_table(table).await
    }

    async fn list_tables(&self, project: &str, dataset: &str) -> Result<Vec<(TableRef, String)>, CloudError> {
        self.inner.list_tables(project, dataset).await
    }

    async fn dry_run(&self, project: &str, location: &str, sql: &str) -> Result<(), CloudError> {
        self.inner.dry_run(project, location, sql).await
    }

    async fn get_job(&self, project: &str, location: &str, job_id: &str) -> Result<Option<Job>, CloudError> {
        self.inner.get_job(project, location, job_id).await
    }

    async fn insert_job(
        &self,
        project: &str,
        location: &str,
        job_id: &str,
        configuration: serde_json::Value,
    ) -> Result<Job, CloudError> {
        self.forget_all();
        self.inner.insert_job(project, location, job_id, configuration).await
    }

    async fn query_each(
        &self,
        project: &str,
        location: &str,
        sql: &str,
        params: &[Param],
        sink: &mut (dyn for<'c> FnMut(&'c [String], Vec<Option<String>>) + Send),
    ) -> Result<(), CloudError> {
        self.inner.query_each(project, location, sql, params, sink).await
    }

    async fn query(&self, project: &str, location: &str, sql: &str, params: &[Param]) -> Result<Rows, CloudError> {
        self.inner.query(project, location, sql, params).await
    }
}
