//! The audit log: every change bqsteward makes or refuses — access entries, group memberships,
//! IAM bindings, datasets, tables, views, load batches, quarantined files, reloads, quality-check
//! results — as one [`Event`], written once as a row of a BigQuery table and as one line of the
//! audit trail (`--audit-log`).
//!
//! The way of an event: the code that made the change calls [`record`] right after the cloud
//! answered; the event goes to the run's [`Recorder`] (a task-local set by the front end with
//! [`within`]), which stamps the actor, run id and source revision and appends it to the durable
//! [`spool`] (fsync) before the caller goes on. [`Recorder::flush`] then writes the spooled events
//! to their audit tables in one `INSERT` job per table per flush ([`table`]) — never one job per
//! event — and removes them from the spool only once BigQuery took them. When BigQuery refuses,
//! the change stays made, the events stay spooled and the next flush (the next run, or the
//! controller's next tick) writes them; nothing is dropped.
//!
//! Exactly once: every event has a deterministic id (what changed, and the state it changed from,
//! e.g. the dataset's etag, or the load batch id), so an event recorded again by a resumed run, or
//! a spool segment flushed twice, still gives one row: the insert skips ids the table has.
//!
//! Outside [`within`] (tests of single phases, `plan`), [`record`] only writes the trail line.

pub mod spool;
pub mod table;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What changed (the `action` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An access entry was added to a dataset.
    AccessAdded,
    /// An access entry was removed from a dataset.
    AccessRemoved,
    /// A dataset's access list was refused (guardrails): nothing written.
    AccessRefused,
    /// A member was added to a group.
    MemberAdded,
    /// A member was removed from a group.
    MemberRemoved,
    /// A member's role changed.
    MemberRoleChanged,
    /// A group's changes were refused (guardrails): nothing written.
    MembersRefused,
    /// An IAM binding member was added.
    IamBindingAdded,
    /// An IAM binding member was removed.
    IamBindingRemoved,
    /// A dataset was created.
    DatasetCreated,
    /// A table was created.
    TableCreated,
    /// A table's labels (ownership, PII policy tags) were written.
    TableLabelled,
    /// A table's schema was widened.
    SchemaChanged,
    /// A view was created.
    ViewCreated,
    /// A view's SQL, labels or description were written.
    ViewPatched,
    /// A view no longer declared was deleted.
    ViewDeleted,
    /// A load batch reached the table.
    LoadBatch,
    /// A file was quarantined.
    Quarantined,
    /// A re-ingestion batch replaced earlier rows.
    Reload,
    /// A database pull landed rows.
    Pull,
    /// A quality check ran.
    Check,
}

impl Action {
    /// The column value, e.g. `access_added`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AccessAdded => "access_added",
            Action::AccessRemoved => "access_removed",
            Action::AccessRefused => "access_refused",
            Action::MemberAdded => "member_added",
            Action::MemberRemoved => "member_removed",
            Action::MemberRoleChanged => "member_role_changed",
            Action::MembersRefused => "members_refused",
            Action::IamBindingAdded => "iam_binding_added",
            Action::IamBindingRemoved => "iam_binding_removed",
            Action::DatasetCreated => "dataset_created",
            Action::TableCreated => "table_created",
            Action::TableLabelled => "table_labelled",
            Action::SchemaChanged => "schema_changed",
            Action::ViewCreated => "view_created",
            Action::ViewPatched => "view_patched",
            Action::ViewDeleted => "view_deleted",
            Action::LoadBatch => "load_batch",
            Action::Quarantined => "quarantined",
            Action::Reload => "reload",
            Action::Pull => "pull",
            Action::Check => "check",
        }
    }

    /// The trail line's message (kept from the earlier log-only trail).
    fn message(self) -> &'static str {
        match self {
            Action::AccessAdded | Action::AccessRemoved => "access changed",
            Action::AccessRefused => "access list refused",
            Action::MemberAdded | Action::MemberRemoved | Action::MemberRoleChanged => "membership changed",
            Action::MembersRefused => "membership refused",
            Action::IamBindingAdded | Action::IamBindingRemoved => "IAM binding changed",
            Action::DatasetCreated => "created dataset",
            Action::TableCreated => "created table",
            Action::TableLabelled => "labelled table",
            Action::SchemaChanged => "schema changed",
            Action::ViewCreated | Action::ViewPatched | Action::ViewDeleted => "view written",
            Action::LoadBatch | Action::Reload => "loaded batch",
            Action::Quarantined => "quarantined file",
            Action::Pull => "pulled rows",
            Action::Check => "checked",
        }
    }
}

/// Where an event's row goes by default: the hidden bqsteward dataset of this project and
/// location (the ledger's).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Home {
    /// Project.
    pub project: String,
    /// BigQuery location.
    pub location: String,
}

/// One change made or refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic id (see [`Event::new`]).
    pub id: String,
    /// When (ms since the epoch).
    pub time_ms: i64,
    /// `Kind namespace/name` of the resource that declared it.
    pub resource: String,
    /// What changed.
    pub action: Action,
    /// What was changed: `project.dataset`, `project.dataset.table`, a group's email, a project.
    pub target: String,
    /// Within the target: the access entry, the member, the file (`uri#generation`), the column.
    pub subject: String,
    /// A role (access entry, membership, binding), or `from->to`.
    pub role: String,
    /// `done` or `refused`.
    pub outcome: String,
    /// Dataset etag before the write (access lists).
    pub etag_before: String,
    /// Dataset etag after the write.
    pub etag_after: String,
    /// Files (load batch).
    pub files: Option<i64>,
    /// Rows (load batch, pull, check).
    pub rows: Option<i64>,
    /// Bytes (load batch).
    pub bytes: Option<i64>,
    /// BigQuery job ids.
    pub job_ids: Vec<String>,
    /// How long it took, ms.
    pub duration_ms: Option<i64>,
    /// Per file of a load batch: upload → loaded, ms.
    pub delays_ms: Vec<i64>,
    /// Quarantine category, check kind.
    pub category: String,
    /// The error or refusal, or a short summary.
    pub message: String,
    /// Who made it: bqsteward's identity.
    pub actor: String,
    /// The run (one `apply`, one controller reconcile).
    pub run_id: String,
    /// The manifests' source revision, when known.
    pub revision: String,
    /// The default audit table's home.
    pub home: Option<Home>,
}

impl Event {
    /// An event whose id is derived from `action`, `target`, `subject` and `key` — the state it
    /// changed from (an etag, a batch id, a generation) or, for changes that cannot recur
    /// unnoticed, the run id (`key` empty: the recorder uses the run id).
    pub fn new(action: Action, resource: &str, target: &str, subject: &str, key: &str) -> Event {
        Event {
            id: key.to_string(),
            time_ms: chrono::Utc::now().timestamp_millis(),
            resource: resource.into(),
            action,
            target: target.into(),
            subject: subject.into(),
            role: String::new(),
            outcome: "done".into(),
            etag_before: String::new(),
            etag_after: String::new(),
            files: None,
            rows: None,
            bytes: None,
            job_ids: Vec::new(),
            duration_ms: None,
            delays_ms: Vec::new(),
            category: String::new(),
            message: String::new(),
            actor: String::new(),
            run_id: String::new(),
            revision: String::new(),
            home: None,
        }
    }

    /// Sets the home (the project and location of the target).
    pub fn home(mut self, project: &str, location: &str) -> Event {
        if !project.is_empty() && !location.is_empty() {
            self.home = Some(Home {
                project: project.into(),
                location: location.into(),
            });
        }
        self
    }

    fn finish(&mut self, run_id: &str) {
        let key = if self.id.is_empty() { run_id } else { &self.id };
        let mut h = Sha256::new();
        for part in [
            self.action.as_str(),
            self.resource.as_str(),
            self.target.as_str(),
            self.subject.as_str(),
            self.role.as_str(),
            key,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        self.id = hex::encode(&h.finalize()[..16]);
    }
}

/// The audit trail line of an event.
fn trail(e: &Event) {
    let message = e.action.message();
    // The fields every event has, then only the details this one has (a short line).
    let mut details: Vec<String> = Vec::new();
    let mut add = |k: &str, v: String| {
        if !v.is_empty() {
            details.push(format!("{k}={v}"));
        }
    };
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    add("role", e.role.clone());
    add("etag_before", e.etag_before.clone());
    add("etag_after", e.etag_after.clone());
    add("files", opt(e.files));
    add("rows", opt(e.rows));
    add("bytes", opt(e.bytes));
    add("jobs", e.job_ids.join(","));
    add("duration_ms", opt(e.duration_ms));
    add("category", e.category.clone());
    add("revision", e.revision.clone());
    add("message", e.message.clone());
    let details = details.join(" ");
    let level_warn = e.outcome != "done" || e.action == Action::Quarantined;
    macro_rules! line {
        ($lvl:ident) => {
            tracing::$lvl!(target: "bqsteward::audit", event_id = %e.id, action = e.action.as_str(), resource = %e.resource,
                target = %e.target, subject = %e.subject, outcome = %e.outcome, actor = %e.actor, run_id = %e.run_id,
                details = %details, "{message}")
        };
    }
    if level_warn { line!(warn) } else { line!(info) }
}

/// Who and what a run's events belong to.
pub struct RunContext {
    /// Where events go.
    pub recorder: Arc<Recorder>,
    /// This run's id.
    pub run_id: String,
    /// Source revision per `Kind namespace/name` (the `bqsteward.dev/revision` annotation).
    pub revisions: BTreeMap<String, String>,
    /// Revision of resources without one (`--revision`).
    pub revision: String,
    /// Home of events that have none (group changes): the first table's or consumer dataset's.
    pub fallback: Option<Home>,
}

impl RunContext {
    /// A context with a fresh run id.
    pub fn new(recorder: Arc<Recorder>, revision: &str) -> RunContext {
        RunContext {
            recorder,
            run_id: new_run_id(),
            revisions: BTreeMap::new(),
            revision: revision.into(),
            fallback: None,
        }
    }

    /// Takes the revisions and the fallback home from `w`.
    pub fn for_world(self, w: &crate::engine::World) -> RunContext {
        let mut c = self.with_revisions(w.resources.iter().map(|l| &l.resource));
        c.fallback = fallback_home(w);
        c
    }

    /// Takes the revisions of `resources` from their annotations.
    pub fn with_revisions<'a>(
        mut self,
        resources: impl IntoIterator<Item = &'a crate::manifest::Resource>,
    ) -> RunContext {
        for r in resources {
            if let Some(rev) = r
                .metadata()
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REVISION))
            {
                self.revisions
                    .insert(format!("{} {}", r.kind(), r.qualified_name()), rev.clone());
            }
        }
        self
    }
}

/// The annotation carrying the manifests' source revision (e.g. set by ArgoCD from
/// `${ARGOCD_APP_REVISION}` through kustomize's `commonAnnotations`).
pub const ANNOTATION_REVISION: &str = "bqsteward.dev/revision";

tokio::task_local! {
    static CURRENT: Arc<RunContext>;
}

/// Runs `f` with `ctx` as the run its events belong to.
pub async fn within<F: std::future::Future>(ctx: Arc<RunContext>, f: F) -> F::Output {
    CURRENT.scope(ctx, f).await
}

/// Records an event: the trail line, and the spooled row when inside [`within`].
pub fn record(mut e: Event) {
    let ctx = CURRENT.try_with(Arc::clone).ok();
    let run_id = ctx.as_ref().map(|c| c.run_id.clone()).unwrap_or_default();
    e.finish(&run_id);
    if let Some(c) = &ctx {
        e.run_id = c.run_id.clone();
        e.revision = c
            .revisions
            .get(&e.resource)
            .cloned()
            .unwrap_or_else(|| c.revision.clone());
        e.actor = c.recorder.actor.clone();
        if e.home.is_none() {
            e.home = c.fallback.clone();
        }
    }
    trail(&e);
    if let Some(c) = ctx {
        c.recorder.append(e);
    }
}

/// A fresh run id: time and randomness, sortable.
pub fn new_run_id() -> String {
    format!(
        "{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        fastrand::u32(..)
    )
}

/// Where audit rows go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Not to BigQuery (the trail only).
    Off,
    /// Every event to this table (`--audit-table PROJECT.DATASET.TABLE`) in `location`.
    Table(crate::cloud::bqtypes::TableRef),
    /// Each event to its home's hidden dataset (events without a home stay in the trail only).
    PerHome,
}

/// What a flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Rows BigQuery took (events already there not counted).
    pub written: usize,
    /// Events still waiting (BigQuery refused or could not be reached).
    pub pending: usize,
    /// Why some are waiting.
    pub errors: Vec<String>,
}

/// A process's recorder: the spool, the destination, bqsteward's identity.
pub struct Recorder {
    spool: Mutex<spool::Spool>,
    destination: Destination,
    /// bqsteward's identity (`serviceAccount:…`), or `bqsteward`.
    pub actor: String,
    flush_lock: tokio::sync::Mutex<()>,
    ensured: Mutex<std::collections::BTreeSet<String>>,
}

impl Recorder {
    /// A recorder spooling into `dir` (created if missing).
    pub fn open(dir: &std::path::Path, destination: Destination, actor: Option<&str>) -> std::io::Result<Recorder> {
        Ok(Recorder {
            spool: Mutex::new(spool::Spool::open(dir)?),
            destination,
            actor: actor.unwrap_or("bqsteward").to_string(),
            flush_lock: tokio::sync::Mutex::new(()),
            ensured: Mutex::new(Default::default()),
        })
    }

    /// Where rows go.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    fn append(&self, e: Event) {
        let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = spool.append(&e) {
            // The change is made; the trail line above has it. Say loudly that the row may be lost.
            tracing::error!(event_id = %e.id, error = %err, "audit spool: could not write the event; it is in the audit trail only");
        }
    }

    /// Events spooled and not yet written.
    pub fn pending(&self) -> usize {
        self.spool.lock().unwrap_or_else(|p| p.into_inner()).pending()
    }

    /// Writes every spooled event (this process's and those left by earlier processes) to
    /// BigQuery: one insert job per audit table per flush, deterministic job ids, ids already in
    /// the table skipped. Events stay spooled until written.
    pub async fn flush(&self, bq: &dyn crate::cloud::bigquery::BigQuery) -> Flushed {
        let _one = self.flush_lock.lock().await;
        let segments = {
            let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            spool.seal()
        };
        let mut out = Flushed::default();
        for seg in segments {
            let Some(mut claimed) = spool::claim(&seg) else {
                continue;
            };
            let events = match claimed.read() {
                Ok(ev) => ev,
                Err(e) => {
                    out.errors.push(format!("{}: {e}", seg.display()));
                    continue;
                }
            };
            if self.destination == Destination::Off {
                claimed.remove();
                continue;
            }
            match table::write(bq, &self.destination, &events, &self.ensured).await {
                Ok(n) => {
                    out.written += n;
                    claimed.remove();
                }
                Err(e) => {
                    out.pending += events.len();
                    out.errors.push(e.to_string());
                }
            }
        }
        out.pending += self.pending();
        if !out.errors.is_empty() {
            tracing::warn!(pending = out.pending, errors = %out.errors.join("; "),
                "audit log: BigQuery did not take every row; they stay spooled and are written by the next flush");
        }
        out
    }
}

/// The homes of `w`'s changes: its IngestedTables' (project, location), then its
/// ConsumerProjects', each set sorted.
pub fn homes(w: &crate::engine::World) -> (Vec<Home>, Vec<Home>) {
    let tables: std::collections::BTreeSet<Home> = w
        .tables
        .iter()
        .map(|t| Home {
            project: t.table.project.clone(),
            location: t.ledger.location.clone(),
        })
        .collect();
    let consumers: std::collections::BTreeSet<Home> = w
        .consumers
        .iter()
        .map(|c| Home {
            project: c.spec.project.clone(),
            location: c.spec.location.clone(),
        })
        .collect();
    (tables.into_iter().collect(), consumers.into_iter().collect())
}

/// The home of events that have none: the first IngestedTable's (by project, location), else the
/// first ConsumerProject's.
pub fn fallback_home(w: &crate::engine::World) -> Option<Home> {
    let (tables, consumers) = homes(w);
    tables.into_iter().next().or_else(|| consumers.into_iter().next())
}

/// `--audit-table`: `off`, `PROJECT.DATASET.TABLE`, or absent (per home).
pub fn destination(audit_table: Option<&str>) -> Result<Destination, String> {
    match audit_table.map(str::trim) {
        None | Some("") => Ok(Destination::PerHome),
        Some(t) if t.eq_ignore_ascii_case("off") => Ok(Destination::Off),
        Some(t) => {
            let parts: Vec<&str> = t.split('.').collect();
            let ok = parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !ok {
                return Err(format!(
                    "--audit-table {t:?}: expected PROJECT.DATASET.TABLE (letters, digits, '_' and '-') or off"
                ));
            }
            Ok(Destination::Table(crate::cloud::bqtypes::TableRef::new(
                parts[0], parts[1], parts[2],
            )))
        }
    }
}

/// The recorder `args` configure, with bqsteward's `identity` as the actor.
pub fn open(args: &crate::cli::AuditArgs, identity: Option<&str>) -> Result<Arc<Recorder>, String> {
    let destination = destination(args.audit_table.as_deref())?;
    let dir = args.audit_spool.clone().unwrap_or_else(default_spool_dir);
    Recorder::open(&dir, destination, identity)
        .map(Arc::new)
        .map_err(|e| format!("--audit-spool {}: {e}", dir.display()))
}

/// The default spool directory: `$BQSTEWARD_AUDIT_SPOOL`, else `$XDG_STATE_HOME/bqsteward/audit`,
/// else `$HOME/.local/state/bqsteward/audit`, else `./.bqsteward-audit`.
pub fn default_spool_dir() -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(state) = var("XDG_STATE_HOME") {
        return std::path::Path::new(&state).join("bqsteward/audit");
    }
    if let Some(home) = var("HOME") {
        return std::path::Path::new(&home).join(".local/state/bqsteward/audit");
    }
    ".bqsteward-audit".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_what_changed_and_its_prior_state_only() {
        let mut a = Event::new(Action::AccessAdded, "DatasetAccess a/b", "p.ds", "user:x@y.z", "etag1");
        let mut b = a.clone();
        b.time_ms += 5000;
        a.finish("run1");
        b.finish("run2");
        assert_eq!(a.id, b.id, "same change from the same etag: same id whatever the run");
        let mut c = Event::new(Action::AccessAdded, "DatasetAccess a/b", "p.ds", "user:x@y.z", "etag2");
        c.finish("run1");
        assert_ne!(a.id, c.id);
        let mut d = Event::new(Action::MemberAdded, "GroupMembership a/g", "g@x", "u@x", "");
        let mut e = d.clone();
        d.finish("run1");
        e.finish("run2");
        assert_ne!(d.id, e.id, "without a key the run tells events apart");
    }

    #[test]
    fn every_action_has_a_message() {
        assert_eq!(Action::AccessRemoved.message(), "access changed");
        assert_eq!(Action::Check.as_str(), "check");
    }
}
