//! Wiring of `bqsteward run`: one kube-runtime Controller per kind over the same [`reconcile`],
//! reflector stores so every reconcile sees all objects (the ACL compiler needs them), cross-kind
//! triggers (a changed IngestedTable reconciles the objects that depend on it), leader
//! election on a Lease (kube-lease-manager) so only one replica writes, `/metrics`, `/healthz`,
//! `/readyz`, and graceful shutdown on SIGTERM.
//!
//! Verified against a real API server by `tests/cluster.rs` (the binary as a process).

use super::cluster::{KubeCluster, ObjectKey};
use super::metrics::{FailureLabels, KindLabels, Metrics, TableLabels};
use super::reconcile::{Ctx, FailureBackoff, Object, ReconcileError, reconcile};
use crate::cloud::Endpoints;
use crate::cloud::bigquery::BigQueryRest;
use crate::cloud::groups::GroupsRest;
use crate::cloud::iam::IamRest;
use crate::cloud::retry::Backoff;
use crate::cloud::storage::GcsRest;
use crate::crd::{ConsumerProject, DatasetAccess, GroupMembership, IngestedTable};
use crate::manifest::{Loaded, Origin, Resource};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Settings of `bqsteward run`.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// Guardrail policy.
    pub policy: crate::policy::Policy,
    /// bqsteward's identity (`serviceAccount:EMAIL`).
    pub identity: Option<String>,
    /// Periodic requeue of every object (IngestedTable: its `schedule.every`).
    pub requeue: Duration,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// Elect a leader on a Lease; without it, run only one replica.
    pub leader_election: bool,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// How long the Lease lasts without renewal (a standby takes over within it).
    pub lease_duration: Duration,
    /// Most connections open at once to one source database.
    pub db_connections: usize,
    /// Where the audit log goes.
    pub audit: crate::cli::AuditArgs,
    /// How often spooled audit events are written.
    pub audit_flush_interval: Duration,
}

/// The controllers watch untyped objects and convert each one, so that one object that does not
/// match the Rust types (a malformed object) gets a `Malformed` condition instead of stalling the
/// watch of its whole kind.
struct Stores {
    it: Store<DynamicObject>,
    da: Store<DynamicObject>,
    cp: Store<DynamicObject>,
    gm: Store<DynamicObject>,
}

struct Shared {
    ctx: Ctx,
    metrics: Arc<Metrics>,
    stores: OnceLock<Stores>,
}

/// A bqsteward kind as the runner handles it.
trait Kind:
    kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static
{
    const KIND: &'static str;
    fn resource(&self) -> Resource;
    fn status_json(&self) -> serde_json::Value;
}

macro_rules! kind {
    ($t:ty, $k:literal, $v:ident) => {
        impl Kind for $t {
            const KIND: &'static str = $k;
            fn resource(&self) -> Resource {
                Resource::$v(self.clone())
            }
            fn status_json(&self) -> serde_json::Value {
                serde_json::to_value(&self.status).unwrap_or_default()
            }
        }
    };
}
kind!(IngestedTable, "IngestedTable", IngestedTable);
kind!(DatasetAccess, "DatasetAccess", DatasetAccess);
kind!(ConsumerProject, "ConsumerProject", ConsumerProject);
kind!(GroupMembership, "GroupMembership", GroupMembership);

fn loaded(resource: Resource) -> Loaded {
    Loaded {
        resource,
        origin: Origin {
            file: "cluster".into(),
            document: 0,
            line: 0,
        },
    }
}

/// An untyped object as `K`.
fn typed<K: Kind>(obj: &DynamicObject) -> Result<K, String> {
    let v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize::<_, K>(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn typed_all<K: Kind>(store: &Store<DynamicObject>) -> Vec<Loaded> {
    store
        .state()
        .iter()
        .filter_map(|o| typed::<K>(o).ok())
        .map(|k| loaded(k.resource()))
        .collect()
}

impl Shared {
    fn all(&self) -> Vec<Loaded> {
        let Some(s) = self.stores.get() else { return Vec::new() };
        let mut out: Vec<Loaded> = typed_all::<IngestedTable>(&s.it);
        out.extend(typed_all::<DatasetAccess>(&s.da));
        out.extend(typed_all::<ConsumerProject>(&s.cp));
        out.extend(typed_all::<GroupMembership>(&s.gm));
        out
    }
}

fn key_of<K: Kind>(obj: &DynamicObject) -> ObjectKey {
    ObjectKey {
        kind: K::KIND,
        namespace: obj.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: obj.metadata.name.clone().unwrap_or_default(),
    }
}

async fn reconcile_kind<K: Kind>(raw: Arc<DynamicObject>, shared: Arc<Shared>) -> Result<Action, ReconcileError> {
    let key = key_of::<K>(&raw);
    let obj = match typed::<K>(&raw) {
        Ok(o) => o,
        Err(e) => {
            // Not blocking anyone: say so on the object and look again later.
            let status = serde_json::json!({"conditions": [{
                "type": "Ready", "status": "False", "reason": "Malformed",
                "message": format!("the object does not match the {} schema: {e}", K::KIND),
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            }]});
            let ctx = &shared.ctx;
            ctx.cluster.apply_status(&key, status).await.ok();
            let note = super::cluster::Note {
                warning: true,
                reason: "Malformed".into(),
                message: e,
            };
            ctx.cluster.event(&key, raw.metadata.uid.as_deref(), note).await.ok();
            return Ok(Action::requeue(ctx.requeue));
        }
    };
    let object = Object {
        key,
        loaded: loaded(obj.resource()),
        status: obj.status_json(),
    };
    let labels = KindLabels { kind: K::KIND.into() };
    // The last check results, so the gauge (and its alert) survives a restart; a check that runs
    // in this reconcile sets it again.
    if let Resource::IngestedTable(it) = &object.loaded.resource
        && let Some(checks) = it.status.as_ref().and_then(|s| s.checks.as_ref())
    {
        let d = &it.spec.destination;
        let table = format!("{}.{}.{}", d.project, d.dataset, d.table);
        for (check, r) in [("rowCount", &checks.row_count), ("exact", &checks.exact)] {
            if let Some(r) = r {
                shared.metrics.seed_in_sync(&table, check, r.in_sync);
            }
        }
    }
    let started = Instant::now();
    let result = reconcile(&shared.ctx, &object, &shared.all()).await;
    shared.metrics.reconciles.get_or_create(&labels).inc();
    shared
        .metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if let Resource::IngestedTable(it) = &object.loaded.resource
        && let Some(st) = &it.status
    {
        let d = &it.spec.destination;
        let t = TableLabels {
            table: format!("{}.{}.{}", d.project, d.dataset, d.table),
        };
        shared
            .metrics
            .quarantined
            .get_or_create(&t)
            .set(st.quarantined_files.unwrap_or(0));
        let lag = st
            .lag
            .as_deref()
            .and_then(|l| l.parse::<kube::core::Duration>().ok())
            .map(|d| Duration::from(d).as_secs_f64())
            .unwrap_or(0.0);
        shared.metrics.lag.get_or_create(&t).set(lag);
        shared
            .metrics
            .jobs_today
            .get_or_create(&t)
            .set(st.jobs_today.unwrap_or(0));
        shared
            .metrics
            .job_budget
            .get_or_create(&t)
            .set(i64::from(it.spec.load_policy.daily_job_budget));
    }
    result.map(Action::requeue)
}

fn error_policy<K: Kind>(obj: Arc<DynamicObject>, error: &ReconcileError, shared: Arc<Shared>) -> Action {
    let key = key_of::<K>(&obj);
    shared
        .metrics
        .failures
        .get_or_create(&FailureLabels {
            kind: K::KIND.into(),
            category: error.category().into(),
        })
        .inc();
    let delay = shared.ctx.backoff.failed(&key);
    tracing::warn!(object = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get({
                let m = metrics.clone();
                move || {
                    let m = m.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.encode(),
                        )
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// Runs the controller until SIGTERM (or until leadership is lost, which exits so the pod restarts
/// as a candidate — only the leader ever writes).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a Kubernetes API server ({e}): set KUBECONFIG (or ~/.kube/config), or run in a pod with a \
             service account"
        )
    })?;
    let endpoints = Endpoints::from_env();
    if !endpoints.bigquery_emulated || !endpoints.storage_emulated {
        // One clear error at startup instead of the same auth failure in every reconcile.
        crate::cloud::Auth::application_default()?.check().await?;
    }
    let groups = match GroupsRest::from_env() {
        Ok(g) => Some(Arc::new(g) as Arc<dyn crate::cloud::groups::Groups>),
        Err(e) => {
            tracing::warn!(error = %e, "no Cloud Identity client: GroupMembership objects will fail");
            None
        }
    };
    let iam = match IamRest::from_env() {
        Ok(i) => Some(Arc::new(i) as Arc<dyn crate::cloud::iam::ProjectIam>),
        Err(e) => {
            tracing::warn!(error = %e, "no Resource Manager client: ConsumerProject billing is not managed");
            None
        }
    };
    let instance = std::env::var("POD_NAME").ok();
    let audit = crate::audit::open(&args.audit, args.identity.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let ctx = Ctx {
        audit: Some(audit.clone()),
        revision: args.audit.revision.clone().unwrap_or_default(),
        bq: Arc::new(BigQueryRest::new(&endpoints).await?),
        gcs: Arc::new(GcsRest::new(&endpoints)?),
        groups,
        iam,
        cluster: Arc::new(KubeCluster::new(client.clone(), instance.clone())),
        policy: args.policy.clone(),
        identity: args.identity.clone(),
        requeue: args.requeue,
        backoff: FailureBackoff::new(Duration::from_secs(5), Duration::from_secs(15 * 60)),
        call_backoff: Backoff::default(),
        pacer: Default::default(),
        cache: Default::default(),
        tenants: super::reconcile::tenant_clients(&args.policy, &endpoints).await?,
        sources: crate::dbsource::Sources::new(
            Arc::new(crate::dbsource::secrets::KubeSecrets { client: client.clone() }),
            args.db_connections,
        )
        .on_schedule(),
    };
    let metrics = Arc::new(Metrics::new());
    crate::cloud::observe_calls(metrics.call_observer());
    crate::checks::observe_checks(metrics.check_observer());
    crate::ingest::observe_delays(metrics.delay_observer());
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve(args.listen, metrics.clone(), ready.clone()));
    // The audit log: spooled events (this process's, and any an earlier one left) written every
    // interval, in one insert job per audit table.
    {
        let (audit, metrics, bq) = (audit.clone(), metrics.clone(), ctx.bq.clone());
        let every = args.audit_flush_interval;
        tokio::spawn(async move {
            loop {
                let f = audit.flush(bq.as_ref()).await;
                metrics.audit_written.inc_by(f.written as u64);
                metrics.audit_pending.set(f.pending as i64);
                if !f.errors.is_empty() {
                    metrics.audit_failures.inc();
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    let mut lost_leadership = None;
    if args.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_duration(args.lease_duration.as_secs())
            .with_grace((args.lease_duration.as_secs() / 6).max(1))
            .with_identity(
                instance
                    .clone()
                    .unwrap_or_else(|| format!("bqsteward-{}", std::process::id())),
            )
            .build()
            .await?;
        let (mut leader, _task) = manager.watch().await;
        ready.store(true, Ordering::Relaxed); // a standby replica is healthy and ready
        tracing::info!(lease = %args.lease_name, "waiting to become the leader");
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                anyhow::bail!("leader election stopped");
            }
        }
        tracing::info!("leading: starting the controllers");
        lost_leadership = Some(async move {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                    return;
                }
            }
        });
    }

    let cfg = watcher::Config::default();
    let controller = |ar: ApiResource| {
        Controller::new_with(Api::<DynamicObject>::all_with(client.clone(), &ar), cfg.clone(), ar).shutdown_on_signal()
    };
    let shared = Arc::new(Shared {
        ctx,
        metrics,
        stores: OnceLock::new(),
    });
    // A change to an IngestedTable also reconciles the ConsumerProjects and DatasetAccess lists
    // that depend on it (see `engine::world::dependents`), instead of waiting for their requeue.
    let it_ar = ApiResource::erase::<IngestedTable>(&());
    let dependents_of = |kind: &'static str| {
        let shared = shared.clone();
        let ar = match kind {
            "ConsumerProject" => ApiResource::erase::<ConsumerProject>(&()),
            _ => ApiResource::erase::<DatasetAccess>(&()),
        };
        move |obj: DynamicObject| {
            let Ok(table) = typed::<IngestedTable>(&obj) else {
                return Vec::new();
            };
            crate::engine::world::dependents(&loaded(table.resource()), &shared.all())
                .into_iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, ns, name)| kube::runtime::reflector::ObjectRef::new_with(&name, ar.clone()).within(&ns))
                .collect::<Vec<_>>()
        }
    };
    let it = controller(it_ar.clone());
    let da = controller(ApiResource::erase::<DatasetAccess>(&())).watches_with(
        Api::<DynamicObject>::all_with(client.clone(), &it_ar),
        it_ar.clone(),
        cfg.clone(),
        dependents_of("DatasetAccess"),
    );
    let cp = controller(ApiResource::erase::<ConsumerProject>(&())).watches_with(
        Api::<DynamicObject>::all_with(client.clone(), &it_ar),
        it_ar.clone(),
        cfg.clone(),
        dependents_of("ConsumerProject"),
    );
    let gm = controller(ApiResource::erase::<GroupMembership>(&()));
    let _ = shared.stores.set(Stores {
        it: it.store(),
        da: da.store(),
        cp: cp.store(),
        gm: gm.store(),
    });
    ready.store(true, Ordering::Relaxed);
    let drain = |s: futures::stream::BoxStream<'static, ()>| s.for_each(|_| async {});
    let controllers = futures::future::join4(
        drain(
            it.run(
                reconcile_kind::<IngestedTable>,
                error_policy::<IngestedTable>,
                shared.clone(),
            )
            .map(|_| ())
            .boxed(),
        ),
        drain(
            da.run(
                reconcile_kind::<DatasetAccess>,
                error_policy::<DatasetAccess>,
                shared.clone(),
            )
            .map(|_| ())
            .boxed(),
        ),
        drain(
            cp.run(
                reconcile_kind::<ConsumerProject>,
                error_policy::<ConsumerProject>,
                shared.clone(),
            )
            .map(|_| ())
            .boxed(),
        ),
        drain(
            gm.run(
                reconcile_kind::<GroupMembership>,
                error_policy::<GroupMembership>,
                shared.clone(),
            )
            .map(|_| ())
            .boxed(),
        ),
    );
    match lost_leadership {
        Some(lost) => {
            tokio::select! {
                _ = controllers => tracing::info!("controllers stopped (signal)"),
                _ = lost => anyhow::bail!("lost leadership: exiting so that only the leader writes"),
            }
        }
        None => {
            controllers.await;
        }
    }
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_object_is_named_not_fatal() {
        let good: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "bqsteward.dev/v1alpha1", "kind": "DatasetAccess",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"project": "proj-123", "dataset": "d", "access": [{"role": "READER", "group": "g@acme.com"}]}
        }))
        .unwrap();
        assert!(typed::<DatasetAccess>(&good).is_ok());
        let bad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "bqsteward.dev/v1alpha1", "kind": "DatasetAccess",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"project": "proj-123", "dataset": "d", "access": [{"role": "KING", "group": "g@acme.com"}]}
        }))
        .unwrap();
        let e = typed::<DatasetAccess>(&bad).unwrap_err();
        assert!(e.contains("spec.access[0].role"), "{e}");
        assert_eq!(key_of::<DatasetAccess>(&bad).to_string(), "DatasetAccess n/b");
    }

    /// The delay of an `Action` (its field is private; its Debug form is `Action { requeue_after:
    /// Some(1.02s) }`).
    fn delay(a: &Action) -> Duration {
        let d = format!("{a:?}");
        let inner = d
            .split("Some(")
            .nth(1)
            .and_then(|x| x.split(')').next())
            .expect("a requeue");
        if let Some(ms) = inner.strip_suffix("ms") {
            Duration::from_secs_f64(ms.parse::<f64>().unwrap() / 1000.0)
        } else {
            Duration::from_secs_f64(inner.strip_suffix('s').unwrap().parse().unwrap())
        }
    }

    /// `error_policy` as the controllers call it: exponential backoff per object with ±20 % jitter,
    /// capped, reset by a success; each failure counted by kind and by the category of its cause.
    #[tokio::test]
    async fn error_policy_backs_off_counts_by_category_and_resets() {
        let endpoints = Endpoints::from_vars(Some("127.0.0.1:9".into()), Some("127.0.0.1:9".into()));
        let (service, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = kube::Client::new(service, "default");
        let ctx = Ctx {
            bq: Arc::new(BigQueryRest::new(&endpoints).await.unwrap()),
            gcs: Arc::new(GcsRest::new(&endpoints).unwrap()),
            groups: None,
            iam: None,
            cluster: Arc::new(KubeCluster::new(client, None)),
            policy: crate::policy::Policy::default(),
            identity: None,
            requeue: Duration::from_secs(600),
            backoff: FailureBackoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            call_backoff: Backoff::default(),
            pacer: Default::default(),
            cache: Default::default(),
            tenants: Default::default(),
            sources: crate::dbsource::Sources::new(Arc::new(crate::dbsource::secrets::NoSecrets), 1),
            audit: None,
            revision: String::new(),
        };
        let shared = Arc::new(Shared {
            ctx,
            metrics: Arc::new(Metrics::new()),
            stores: OnceLock::new(),
        });
        let obj: Arc<DynamicObject> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "bqsteward.dev/v1alpha1", "kind": "DatasetAccess",
                "metadata": {"name": "a", "namespace": "n"}, "spec": {}
            }))
            .unwrap(),
        );
        let transient = ReconcileError::Cloud(crate::cloud::CloudError::Api {
            api: "bigquery",
            operation: "datasets.patch".into(),
            status: 503,
            reason: "backendError".into(),
            message: "try again".into(),
        });
        let within = |d: Duration, base: f64| {
            let s = d.as_secs_f64();
            assert!(
                s >= base * 0.8 - 1e-3 && s <= base * 1.2 + 1e-3,
                "{s} not within 20 % of {base}"
            );
        };
        for base in [1.0, 2.0, 4.0, 4.0] {
            within(
                delay(&error_policy::<DatasetAccess>(obj.clone(), &transient, shared.clone())),
                base,
            );
        }
        // A success resets the object's backoff (what `reconcile` does when it succeeds).
        shared.ctx.backoff.succeeded(&key_of::<DatasetAccess>(&obj));
        let refused = ReconcileError::Failed("refused by a guardrail".into());
        within(
            delay(&error_policy::<DatasetAccess>(obj.clone(), &refused, shared.clone())),
            1.0,
        );
        let budget = ReconcileError::Load(crate::ingest::jobs::RunError::Budget { budget: 0 });
        within(
            delay(&error_policy::<IngestedTable>(obj.clone(), &budget, shared.clone())),
            1.0,
        );
        let text = shared.metrics.encode();
        for needle in [
            "bqsteward_reconcile_failures_total{kind=\"DatasetAccess\",category=\"retryable\"} 4",
            "bqsteward_reconcile_failures_total{kind=\"DatasetAccess\",category=\"refused\"} 1",
            "bqsteward_reconcile_failures_total{kind=\"IngestedTable\",category=\"quota\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
    }
}
