//! What an IngestedTable declares to the ACL compiler: the authorization of each view layer on
//! the dataset it reads, and the datasets it creates (its own and the layers').

use crate::access::declare::DeclaresAccess;
use crate::access::{AclEntry, DatasetKey};
use crate::manifest::Loaded;

impl DeclaresAccess for crate::crd::IngestedTable {
    fn requires(&self, _loaded: &Loaded, _all: &[Loaded]) -> Vec<(DatasetKey, AclEntry)> {
        super::layers(&self.spec).iter().map(|l| l.authorization()).collect()
    }

    fn creates(&self) -> Vec<DatasetKey> {
        let d = &self.spec.destination;
        let mut out = vec![DatasetKey {
            project: d.project.clone(),
            dataset: d.dataset.clone(),
        }];
        out.extend(super::layers(&self.spec).into_iter().map(|l| DatasetKey {
            project: l.view.project,
            dataset: l.view.dataset,
        }));
        out
    }
}
