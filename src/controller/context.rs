//! What every reconcile shares: the clients (and each namespace's, when it acts as its own
//! service account), the guardrails, the per-object failure backoff, the process-wide ACL pacer,
//! and the world resolved from the cluster's objects — validated and resolved once per change of
//! the object set (keyed by uid, generation and annotations), not once per reconcile.

use crate::cloud::bigquery::BigQuery;
use crate::cloud::groups::Groups;
use crate::cloud::iam::ProjectIam;
use crate::cloud::retry::{Backoff, Pacer};
use crate::cloud::storage::Storage;
use crate::engine::{Clients, World};
use crate::manifest::{Diagnostic, Loaded};
use crate::policy::Policy;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::{Cluster, ObjectKey};

/// Everything a reconcile needs.
pub struct Ctx {
    /// BigQuery.
    pub bq: Arc<dyn BigQuery>,
    /// Cloud Storage.
    pub gcs: Arc<dyn Storage>,
    /// Cloud Identity (GroupMembership), if configured.
    pub groups: Option<Arc<dyn Groups>>,
    /// Resource Manager (ConsumerProject), if configured.
    pub iam: Option<Arc<dyn ProjectIam>>,
    /// Kubernetes writes.
    pub cluster: Arc<dyn Cluster>,
    /// Guardrails.
    pub policy: Policy,
    /// bqsteward's identity (`serviceAccount:EMAIL`).
    pub identity: Option<String>,
    /// Periodic requeue (IngestedTable: its `schedule.every`).
    pub requeue: Duration,
    /// Per-object failure backoff.
    pub backoff: FailureBackoff,
    /// Retries of single cloud calls.
    pub call_backoff: Backoff,
    /// Paces access-list writes per dataset across every reconcile of the process (BigQuery allows
    /// five metadata updates per dataset per 10 s, whoever sends them).
    pub pacer: Pacer,
    /// Namespace → clients acting as its service account (policy
    /// `tenancy.namespaces.<ns>.serviceAccount`); other namespaces use `bq` and `gcs`.
    pub tenants: BTreeMap<String, TenantClients>,
    /// The last validated and resolved object set.
    pub cache: WorldCache,
    /// Database sources: Secrets read from the cluster, connection limits.
    pub sources: crate::dbsource::Sources,
    /// The audit log's recorder (`None`: the trail only).
    pub audit: Option<Arc<crate::audit::Recorder>>,
    /// The manifests' revision of objects without a `bqsteward.dev/revision` annotation.
    pub revision: String,
}

/// BigQuery and Cloud Storage clients acting as one namespace's service account.
#[derive(Clone)]
pub struct TenantClients {
    /// BigQuery.
    pub bq: Arc<dyn BigQuery>,
    /// Cloud Storage.
    pub gcs: Arc<dyn Storage>,
}

/// The clients of every namespace whose tenancy grant names a service account (the controller
/// acts as it for that namespace's BigQuery and Cloud Storage requests).
pub async fn tenant_clients(
    policy: &Policy,
    endpoints: &crate::cloud::Endpoints,
) -> Result<BTreeMap<String, TenantClients>, crate::cloud::CloudError> {
    let mut out = BTreeMap::new();
    for (ns, grant) in policy.tenancy.iter().flat_map(|t| &t.namespaces) {
        let Some(sa) = &grant.service_account else { continue };
        // One token source per account, shared by both clients (one token, one cache).
        let auth = crate::cloud::impersonate::auth(sa, endpoints)?;
        let bq = crate::cloud::bigquery::BigQueryRest::with_auth(endpoints, auth.clone()).await?;
        let gcs = crate::cloud::storage::GcsRest::with_auth(endpoints, auth)?;
        out.insert(
            ns.clone(),
            TenantClients {
                bq: Arc::new(bq),
                gcs: Arc::new(gcs),
            },
        );
    }
    Ok(out)
}

impl Ctx {
    /// The BigQuery client for resources of namespace `ns`.
    pub fn bq_for(&self, ns: &str) -> &dyn BigQuery {
        self.tenants.get(ns).map_or(self.bq.as_ref(), |t| t.bq.as_ref())
    }

    /// The clients the engine uses for resources of namespace `ns`.
    pub fn clients_for(&self, ns: &str) -> Clients<'_> {
        let tenant = self.tenants.get(ns);
        Clients {
            bq: tenant.map_or(self.bq.as_ref(), |t| t.bq.as_ref()),
            gcs: tenant.map_or(self.gcs.as_ref(), |t| t.gcs.as_ref()),
            groups: self.groups.as_deref(),
            iam: self.iam.as_deref(),
            pacer: &self.pacer,
            backoff: self.call_backoff.clone(),
            sources: &self.sources,
        }
    }

    /// Validates and resolves `all` (cached while the set is unchanged): every diagnostic, and the
    /// world of the objects without any — the only ones whose declarations may reach a compiled
    /// access list or a ConsumerProject's sources.
    pub fn world(&self, all: &[Loaded]) -> Arc<Resolved> {
        self.cache.resolve(all, &self.policy, self.identity.as_deref())
    }
}

impl WorldCache {
    /// Objects whose own problems are kept.
    #[cfg(test)]
    pub(crate) fn cached_own(&self) -> usize {
        self.own.lock().unwrap().len()
    }

    /// Validates and resolves `all` unless it is the set last resolved. Each object's own checks
    /// are kept per object while it is unchanged: a change re-checks what changed, then what lies
    /// between objects, then resolves the valid ones.
    pub fn resolve(&self, all: &[Loaded], policy: &Policy, identity: Option<&str>) -> Arc<Resolved> {
        let key = fingerprint(all);
        let mut cache = self.last.lock().unwrap();
        if let Some((k, r)) = cache.as_ref()
            && *k == key
        {
            return r.clone();
        }
        let mut diagnostics = Vec::new();
        {
            let mut own = self.own.lock().unwrap();
            let mut next = HashMap::with_capacity(all.len());
            for l in all {
                let id = (l.resource.kind(), l.resource.qualified_name());
                let version = object_hash(l);
                let found = match own.remove(&id) {
                    Some((v, d)) if v == version => d,
                    _ => crate::validate::one(l, policy, all),
                };
                diagnostics.extend(found.iter().cloned());
                if crate::validate::stands_alone(l) {
                    next.insert(id, (version, found));
                }
            }
            *own = next;
        }
        diagnostics.extend(crate::validate::across(all, policy));
        let broken: std::collections::HashSet<(&str, &str)> = diagnostics
            .iter()
            .filter_map(|d| Some((d.kind.as_deref()?, d.name.as_deref()?)))
            .collect();
        let valid: Vec<Loaded> = all
            .iter()
            .filter(|l| !broken.contains(&(l.resource.kind(), l.resource.qualified_name().as_str())))
            .cloned()
            .collect();
        let (world, problems) = World::build(valid, policy.clone(), identity, None);
        let resolved = Arc::new(Resolved {
            diagnostics,
            world,
            problems,
        });
        *cache = Some((key, resolved.clone()));
        resolved
    }
}

/// A validated, resolved object set.
pub struct Resolved {
    /// Every validation problem, of every object.
    pub diagnostics: Vec<Diagnostic>,
    /// The world of the valid objects.
    pub world: World,
    /// Valid objects the world could not resolve.
    pub problems: Vec<crate::engine::Problem>,
}

/// Each object's own problems, by (kind, name): the object's version ([`object_hash`]) and them.
type OwnProblems = HashMap<(&'static str, String), (u64, Vec<Diagnostic>)>;

/// The last resolved object set and its fingerprint; each object's own problems by its version.
#[derive(Default)]
pub struct WorldCache {
    last: Mutex<Option<(u64, Arc<Resolved>)>>,
    own: Mutex<OwnProblems>,
}

/// What identifies an object set's content: each object's kind, name, uid, generation and
/// annotations (which change behaviour without a new generation); without a generation (not from
/// an API server), its whole spec.
pub(crate) fn fingerprint(all: &[Loaded]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in all {
        object_hash(l).hash(&mut h);
    }
    h.finish()
}

/// What identifies one object's content (see [`fingerprint`]).
pub(crate) fn object_hash(l: &Loaded) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let r = &l.resource;
    let meta = r.metadata();
    (r.kind(), r.qualified_name(), &meta.uid, meta.generation).hash(&mut h);
    // Annotations change behaviour without a new generation; hashed entry by entry (no JSON).
    for (k, v) in meta.annotations.iter().flatten() {
        (k, v).hash(&mut h);
    }
    meta.annotations.as_ref().map(|a| a.len()).hash(&mut h);
    if meta.generation.is_none() {
        l.resource.to_json().to_string().hash(&mut h);
    }
    h.finish()
}

/// Per-object exponential backoff with jitter, reset on success.
pub struct FailureBackoff {
    failures: Mutex<HashMap<ObjectKey, u32>>,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl FailureBackoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> FailureBackoff {
        FailureBackoff {
            failures: Mutex::default(),
            base,
            max,
        }
    }

    /// Records a failure; the delay before the next attempt (base·2^(n-1), capped, ±20 % jitter).
    pub fn failed(&self, key: &ObjectKey) -> Duration {
        let mut f = self.failures.lock().unwrap();
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        let exp = self.base.saturating_mul(1u32 << (*n - 1).min(16)).min(self.max);
        exp.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// Failures in a row so far.
    pub fn failures(&self, key: &ObjectKey) -> u32 {
        self.failures.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Records a success.
    pub fn succeeded(&self, key: &ObjectKey) {
        self.failures.lock().unwrap().remove(key);
    }
}
