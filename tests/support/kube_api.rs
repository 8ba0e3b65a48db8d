//! An in-memory stand-in for the part of the Kubernetes API the controller writes (there is no API
//! server here): `metadata.finalizers` (a merge patch replacing the list, refused with 409 when the
//! given `resourceVersion` is stale), the `status` subresource by server-side apply (the applied
//! status replaces bqsteward's fields), and Events. Every write bumps the object's
//! `resourceVersion`.
//!
//! Simplified (relied on by the tests): no watch, no admission, no field ownership merging — a
//! status apply replaces the whole status, which is what a single field manager gets.

#![allow(dead_code)]

use async_trait::async_trait;
use bqsteward::controller::cluster::{Cluster, Note, ObjectKey};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What the stand-in holds for one object.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// `.status`.
    pub status: serde_json::Value,
    /// `metadata.resourceVersion`.
    pub resource_version: u64,
}

/// The stand-in.
#[derive(Default)]
pub struct FakeKube {
    objects: Mutex<BTreeMap<ObjectKey, Stored>>,
    events: Mutex<Vec<(ObjectKey, Note)>>,
    status_writes: Mutex<usize>,
}

impl FakeKube {
    /// The object's state (created empty on first sight, as if `kubectl apply` made it).
    pub fn get(&self, key: &ObjectKey) -> Stored {
        let mut o = self.objects.lock().unwrap();
        o.entry(key.clone())
            .or_insert_with(|| Stored {
                resource_version: 1,
                status: serde_json::Value::Null,
                ..Stored::default()
            })
            .clone()
    }

    /// Events recorded on `key`.
    pub fn events(&self, key: &ObjectKey) -> Vec<Note> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Status writes so far (all objects).
    pub fn status_writes(&self) -> usize {
        *self.status_writes.lock().unwrap()
    }
}

fn conflict() -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(
            "the object has been modified; please apply your changes to the latest version",
            "Conflict",
        )
        .with_code(409),
    ))
}

#[async_trait]
impl Cluster for FakeKube {
    async fn set_finalizers(
        &self,
        key: &ObjectKey,
        finalizers: Vec<String>,
        rv: Option<&str>,
    ) -> Result<(), kube::Error> {
        self.get(key);
        let mut o = self.objects.lock().unwrap();
        let s = o.get_mut(key).unwrap();
        if let Some(rv) = rv
            && rv != s.resource_version.to_string()
        {
            return Err(conflict());
        }
        s.finalizers = finalizers;
        s.resource_version += 1;
        Ok(())
    }

    async fn apply_status(&self, key: &ObjectKey, status: serde_json::Value) -> Result<(), kube::Error> {
        self.get(key);
        let mut o = self.objects.lock().unwrap();
        let s = o.get_mut(key).unwrap();
        s.status = status;
        s.resource_version += 1;
        *self.status_writes.lock().unwrap() += 1;
        Ok(())
    }

    async fn event(&self, key: &ObjectKey, _uid: Option<&str>, note: Note) -> Result<(), kube::Error> {
        self.events.lock().unwrap().push((key.clone(), note));
        Ok(())
    }
}
