//! The controller's narrow view of the Kubernetes API: finalizers, status, events. [`KubeCluster`]
//! implements it with kube; tests use an in-memory stand-in (there is no API server here).

use async_trait::async_trait;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

/// The field manager bqsteward writes status with (server-side apply).
pub const FIELD_MANAGER: &str = "bqsteward";
/// The finalizer bqsteward puts on every resource it reconciles.
pub const FINALIZER: &str = "bqsteward.dev/cleanup";

/// Which object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `IngestedTable`, `DatasetAccess`, `ConsumerProject`, `GroupMembership`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// An event to record on an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason, e.g. `Applied`, `InvalidSpec`.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// What the controller writes to Kubernetes.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Replaces `metadata.finalizers` (guarded by `resource_version` when given).
    async fn set_finalizers(
        &self,
        key: &ObjectKey,
        finalizers: Vec<String>,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error>;
    /// Writes `.status` by server-side apply (field manager `bqsteward`).
    async fn apply_status(&self, key: &ObjectKey, status: serde_json::Value) -> Result<(), kube::Error>;
    /// Records an event on the object.
    async fn event(&self, key: &ObjectKey, uid: Option<&str>, note: Note) -> Result<(), kube::Error>;
}

/// [`Cluster`] on a real API server.
pub struct KubeCluster {
    client: kube::Client,
    recorder: Recorder,
}

impl KubeCluster {
    /// A cluster writer on `client`; events are reported as `bqsteward` from `instance` (the pod).
    pub fn new(client: kube::Client, instance: Option<String>) -> KubeCluster {
        let reporter = Reporter {
            controller: "bqsteward".into(),
            instance,
        };
        KubeCluster {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(crate::crd::GROUP, crate::crd::VERSION, key.kind);
        let ar = ApiResource::from_gvk(&gvk);
        Api::namespaced_with(self.client.clone(), &key.namespace, &ar)
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn set_finalizers(
        &self,
        key: &ObjectKey,
        finalizers: Vec<String>,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error> {
        let mut meta = json!({ "finalizers": finalizers });
        if let Some(rv) = resource_version {
            meta["resourceVersion"] = json!(rv);
        }
        self.api(key)
            .patch(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": meta })),
            )
            .await
            .map(|_| ())
    }

    async fn apply_status(&self, key: &ObjectKey, status: serde_json::Value) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": crate::crd::API_VERSION,
            "kind": key.kind,
            "status": status,
        });
        self.api(key)
            .patch_status(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map(|_| ())
    }

    async fn event(&self, key: &ObjectKey, uid: Option<&str>, note: Note) -> Result<(), kube::Error> {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(crate::crd::API_VERSION.into()),
            kind: Some(key.kind.into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: uid.map(String::from),
            ..Default::default()
        };
        let ev = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason,
            note: Some(note.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.recorder.publish(&ev, &reference).await
    }
}
