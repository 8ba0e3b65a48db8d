//! What each kind declares to the ACL compiler, so the compiler knows no kind's internals: the list
//! a resource owns exactly (a DatasetAccess's dataset, a ConsumerProject's own dataset), the
//! entries it needs on lists it does not own (authorized views), and the datasets it creates when
//! they are missing. Each kind implements [`DeclaresAccess`] next to the code that knows it
//! (IngestedTable in `views::access`, ConsumerProject in `consumer::access`, DatasetAccess here);
//! [`crate::manifest::Resource::declares`] is the one place that picks the implementation.

use super::compile::DatasetKey;
use super::entry::AclEntry;
use crate::manifest::Loaded;

/// A list a resource owns: every entry in it is declared by the resource; anything else is removed.
pub struct OwnedList {
    /// The dataset.
    pub key: DatasetKey,
    /// Its entries.
    pub entries: Vec<AclEntry>,
}

/// What a kind declares about access lists. Every method defaults to nothing.
pub trait DeclaresAccess {
    /// The list this resource owns exactly, if any.
    fn owned_list(&self) -> Option<OwnedList> {
        None
    }
    /// Entries this resource (`loaded`, among `all`) needs on datasets it does not own.
    fn requires(&self, loaded: &Loaded, all: &[Loaded]) -> Vec<(DatasetKey, AclEntry)> {
        let _ = (loaded, all);
        Vec::new()
    }
    /// Datasets this resource creates when they are missing.
    fn creates(&self) -> Vec<DatasetKey> {
        Vec::new()
    }
}

impl DeclaresAccess for crate::crd::DatasetAccess {
    fn owned_list(&self) -> Option<OwnedList> {
        Some(OwnedList {
            key: DatasetKey {
                project: self.spec.project.clone(),
                dataset: self.spec.dataset.clone(),
            },
            entries: self.spec.access.iter().map(AclEntry::from_spec).collect(),
        })
    }
}

/// A GroupMembership touches no access list.
impl DeclaresAccess for crate::crd::GroupMembership {}
