//! Removing what a deleted object manages (`deletionPolicy: Delete`), for every kind — only what
//! carries its own mark: views and tables whose owner label names it, declared entries that no
//! other resource needs, declared members. Idempotent. `w` is the world of the *other* objects, so
//! the lists written keep everything they still need.

use super::{Clients, Error, Reporter, Scope, World};
use crate::access::{AclEntry, DatasetKey};
use crate::cloud::bqtypes::{LABEL_OWNER, TableRef, owner_value};
use crate::manifest::{Loaded, Resource};

/// What cleanup did, in words (for an event).
pub type Done = String;

/// Nothing to report: cleanup says what it did in one line.
struct Quiet;
impl Reporter for Quiet {}

/// Removes `retire` entries from their datasets (keeping whatever the other objects need).
/// `Ok(refusals)`: a guardrail kept the entries (e.g. the last OWNER).
async fn retire(
    w: &mut World,
    c: &Clients<'_>,
    scope: &Scope,
    entries: Vec<(DatasetKey, AclEntry)>,
) -> Result<Option<String>, Error> {
    w.retire(entries.into_iter().map(|(k, e)| (Some(k), e)));
    let lists = super::lists::in_scope(w, scope, &[], None);
    let mut refusals = Vec::new();
    for e in super::lists::apply(c, &w.policy, &lists, true, &mut Quiet).await.errors {
        match e {
            Error::Failed(why) | Error::Incompatible(why) => refusals.push(why),
            e => return Err(e),
        }
    }
    Ok((!refusals.is_empty()).then(|| refusals.join("; ")))
}

/// Cleans up after object `l` (`Kind namespace/name` in `scope`).
pub async fn cleanup(w: &mut World, c: &Clients<'_>, l: &Loaded, scope: &Scope) -> Result<Done, Error> {
    let name = l.resource.qualified_name();
    match &l.resource {
        Resource::IngestedTable(it) => {
            // Views (clean first), their authorizations, then the table — each only if its owner
            // label names this resource: deleting an object never removes what another owns.
            let resource = format!("IngestedTable {name}");
            let (mut removed, mut kept, mut entries) = (Vec::new(), Vec::new(), Vec::new());
            for layer in crate::views::layers(&it.spec).into_iter().rev() {
                match c.bq.get_table(&layer.view).await? {
                    Some(info) if info.is_view() && info.belongs_to(&resource) => {
                        c.bq.delete_table(&layer.view).await?;
                        removed.push(layer.view.to_string());
                        entries.push(layer.authorization());
                    }
                    Some(_) => kept.push(layer.view.to_string()),
                    None => entries.push(layer.authorization()),
                }
            }
            if let Some(why) = retire(w, c, scope, entries).await? {
                return Err(Error::Failed(why));
            }
            let d = &it.spec.destination;
            let table = TableRef::new(&d.project, &d.dataset, &d.table);
            match c.bq.get_table(&table).await? {
                Some(info) if !info.is_view() && info.labels.get(LABEL_OWNER) == Some(&owner_value(&resource)) => {
                    c.bq.delete_table(&table).await?;
                    removed.push(table.to_string());
                }
                Some(_) => kept.push(table.to_string()),
                None => {}
            }
            let mut said = format!("deleted {}", removed.join(", "));
            if !kept.is_empty() {
                said.push_str(&format!("; kept {} (not this resource's)", kept.join(", ")));
            }
            Ok(said)
        }
        Resource::DatasetAccess(da) => {
            let key = DatasetKey {
                project: da.spec.project.clone(),
                dataset: da.spec.dataset.clone(),
            };
            let entries: Vec<(DatasetKey, AclEntry)> = da
                .spec
                .access
                .iter()
                .map(AclEntry::from_spec)
                .filter(|e| Some(e) != w.identity.as_ref())
                .map(|e| (key.clone(), e))
                .collect();
            Ok(match retire(w, c, scope, entries).await? {
                None => format!("removed the declared entries from {key}"),
                Some(why) => format!("kept the declared entries of {key}: {why}"),
            })
        }
        Resource::ConsumerProject(cp) => {
            let t =
                crate::consumer::layout::ConsumerTarget::resolve(&name, l.resource.namespace(), &cp.spec, &w.resources)
                    .map_err(Error::Failed)?;
            let done = crate::consumer::reconcile::cleanup(c.bq, c.iam, &t, &w.policy, &c.backoff).await?;
            Ok(format!(
                "deleted views {:?}; removed authorizations on {:?}; removed {} job users",
                done.views_deleted,
                done.authorizations_removed,
                done.iam_members_removed.len()
            ))
        }
        Resource::GroupMembership(gm) => super::groups::cleanup(c, w, &name, &gm.spec).await,
    }
}
