//! What a ConsumerProject declares to the ACL compiler: its own dataset's list, exact (its
//! readers), the authorization of each of its views on the dataset the view reads, and its
//! dataset as one it creates.

use super::layout::ConsumerTarget;
use crate::access::declare::{DeclaresAccess, OwnedList};
use crate::access::{AclEntry, DatasetKey};
use crate::manifest::Loaded;

impl DeclaresAccess for crate::crd::ConsumerProject {
    fn owned_list(&self) -> Option<OwnedList> {
        let target = ConsumerTarget {
            resource: String::new(),
            spec: self.spec.clone(),
            views: Vec::new(),
            adopt: false,
        };
        Some(OwnedList {
            key: target.dataset(),
            entries: target.reader_entries(),
        })
    }

    fn requires(&self, loaded: &Loaded, all: &[Loaded]) -> Vec<(DatasetKey, AclEntry)> {
        let r = &loaded.resource;
        match ConsumerTarget::resolve(&r.qualified_name(), r.namespace(), &self.spec, all) {
            Ok(t) => t.authorizations(),
            Err(_) => Vec::new(), // validation reports unresolved sources
        }
    }

    fn creates(&self) -> Vec<DatasetKey> {
        vec![DatasetKey {
            project: self.spec.project.clone(),
            dataset: self.spec.dataset.clone(),
        }]
    }
}
