//! A real Kubernetes API server for the tests: kube-apiserver + etcd started by the project's own
//! `scripts/kube.sh` (built from their Go modules on first use, then cached), reused when already
//! running. `kubectl` and `helm` are run as processes, the way users run them.
//!
//! The tests that use it share one API server (and the cluster-scoped CRDs, ClusterRoles and Lease
//! namespace), so they take [`exclusive`] first and run one at a time.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The running API server as the tests reach it.
pub struct Kube {
    /// The admin kubeconfig (static token in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Where `scripts/kube.sh` put the tools it built (`helm`, maybe `kubectl`).
    pub bin: PathBuf,
    /// The API server's audit log: every request made by a ServiceAccount.
    pub audit_log: PathBuf,
    /// kubectl's discovery cache for this server (`KUBECACHEDIR`).
    pub cache_dir: PathBuf,
}

/// What a command printed and returned.
#[derive(Debug)]
pub struct Out {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Standard output, asserting success.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// The API server; starts it on first use (idempotent across test binaries).
pub fn kube() -> &'static Kube {
    static KUBE: OnceLock<Kube> = OnceLock::new();
    KUBE.get_or_init(|| {
        bqsteward::cloud::install_crypto_provider();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube.sh");
        let start = Command::new("bash")
            .arg(script)
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kube.sh");
        let text = String::from_utf8_lossy(&start.stdout).into_owned();
        assert!(
            start.status.success(),
            "scripts/kube.sh start failed; the cluster tests need a real API server:\n{text}"
        );
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/kube.sh start printed no {name}:\n{text}"))
                .to_string()
        };
        Kube {
            kubeconfig: var("KUBECONFIG").into(),
            bin: var("BQSTEWARD_KUBE_BIN").into(),
            audit_log: var("BQSTEWARD_KUBE_AUDIT_LOG").into(),
            cache_dir: var("KUBECACHEDIR").into(),
        }
    })
}

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One cluster test at a time (they share the API server's cluster-scoped objects): for tests
/// without a runtime.
pub fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.blocking_lock()
}

/// [`exclusive`] for async tests.
pub async fn exclusive_async() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.lock().await
}

impl Kube {
    /// `PATH` with the built tools first.
    pub fn path(&self) -> String {
        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default())
    }

    fn command(&self, program: &str, kubeconfig: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("KUBECONFIG", kubeconfig)
            .env("PATH", self.path())
            .env("KUBECACHEDIR", &self.cache_dir);
        c.current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    }

    /// Runs `kubectl ARGS` as the admin, with `stdin` as standard input.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Out {
        self.kubectl_as(&self.kubeconfig, args, stdin)
    }

    /// Runs `kubectl ARGS` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_as(&self.kubeconfig, args, "")
    }

    /// Runs `kubectl ARGS` with another kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: &str) -> Out {
        run(self.command("kubectl", kubeconfig).args(args), stdin)
    }

    /// Runs `helm ARGS` (the one `scripts/kube.sh` built).
    pub fn helm(&self, args: &[&str]) -> Out {
        run(self.command("helm", &self.kubeconfig).args(args), "")
    }

    /// Installs the CRDs from `crds/` (server-side apply) and waits until they are served.
    pub fn install_crds(&self) {
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"])
            .ok();
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/ingestedtables.bqsteward.dev",
            "crd/datasetaccesses.bqsteward.dev",
            "crd/consumerprojects.bqsteward.dev",
            "crd/groupmemberships.bqsteward.dev",
        ])
        .ok();
    }

    /// Creates namespace `ns` unless it exists (a bare API server never deletes namespaces).
    pub fn namespace(&self, ns: &str) {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
        self.kubectl_in(&["apply", "-f", "-"], &yaml).ok();
    }

    /// A kubeconfig at `path` for ServiceAccount `ns/sa`, holding a token from the TokenRequest
    /// API (`kubectl create token`) instead of the admin's.
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str, path: &Path) {
        let token = self
            .kubectl(&["create", "token", sa, "-n", ns, "--duration=2h"])
            .ok()
            .trim()
            .to_string();
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
        config["users"][0]["name"] = format!("{ns}-{sa}").into();
        config["users"][0]["user"] = serde_yaml::from_str(&format!("{{token: {token}}}")).unwrap();
        config["contexts"][0]["context"]["user"] = format!("{ns}-{sa}").into();
        config["contexts"][0]["context"]["namespace"] = ns.into();
        std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
    }

    /// Removes every bqsteward object of namespace `ns` left by an earlier run, finalizers first
    /// (no controller runs to clear them).
    pub fn purge(&self, ns: &str) {
        let kinds = "ingestedtables.bqsteward.dev,datasetaccesses.bqsteward.dev,consumerprojects.bqsteward.dev,groupmemberships.bqsteward.dev";
        let names = self.kubectl(&["get", kinds, "-n", ns, "-o", "name"]).ok();
        for name in names.lines().filter(|l| !l.is_empty()) {
            self.kubectl(&[
                "patch",
                name,
                "-n",
                ns,
                "--type=merge",
                "-p",
                r#"{"metadata": {"finalizers": null}}"#,
            ])
            .ok();
            self.kubectl(&["delete", name, "-n", ns, "--ignore-not-found"]).ok();
        }
    }

    /// An object as JSON (`kubectl get KIND NAME -n NS -o json`), or `None` when it is gone.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl(&["get", kind, name, "-n", ns, "-o", "json", "--ignore-not-found"]);
        let text = out.ok();
        if text.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).unwrap())
        }
    }

    /// The requests `user` made, as `verb group/resource[/subresource]` (from the audit log).
    pub fn requests_by(&self, user: &str) -> Vec<AuditedRequest> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // Long-running requests (watches) are logged at ResponseStarted and only complete
            // when they end; the others at ResponseComplete.
            .filter(|e| {
                e["user"]["username"].as_str() == Some(user)
                    && (e["stage"] == "ResponseComplete" || (e["stage"] == "ResponseStarted" && e["verb"] == "watch"))
            })
            .filter_map(|e| {
                let o = e.get("objectRef")?;
                Some(AuditedRequest {
                    verb: e["verb"].as_str()?.to_string(),
                    group: o["apiGroup"].as_str().unwrap_or("").to_string(),
                    resource: o["resource"].as_str()?.to_string(),
                    subresource: o["subresource"].as_str().map(String::from),
                    namespace: o["namespace"].as_str().map(String::from),
                    code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
                })
            })
            .collect()
    }
}

/// One request of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditedRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, …).
    pub subresource: Option<String>,
    /// Namespace, when namespaced.
    pub namespace: Option<String>,
    /// HTTP status code.
    pub code: i64,
}

impl AuditedRequest {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }
}

fn run(c: &mut Command, stdin: &str) -> Out {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the API server holds for one object, as the controller tests read it.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// `metadata.finalizers` (empty when the object is gone).
    pub finalizers: Vec<String>,
    /// `.status` (`null` when never written or gone).
    pub status: serde_json::Value,
    /// `metadata.resourceVersion` (empty when gone).
    pub resource_version: String,
    /// The whole object (`null` when gone).
    pub object: serde_json::Value,
}

/// The controller's [`Cluster`] writer on the real API server (bqsteward's own [`KubeCluster`] with
/// the admin's credentials), counting the status writes it sends, with readers for what the tests
/// check: objects, their finalizers and status, and their events.
///
/// [`Cluster`]: bqsteward::controller::cluster::Cluster
/// [`KubeCluster`]: bqsteward::controller::cluster::KubeCluster
pub struct RealCluster {
    inner: bqsteward::controller::cluster::KubeCluster,
    status_writes: std::sync::atomic::AtomicUsize,
    /// The API server.
    pub kube: &'static Kube,
}

impl RealCluster {
    /// A writer on the API server (started if needed) with the CRDs installed.
    pub async fn new() -> RealCluster {
        let k = kube();
        k.install_crds();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&k.kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        RealCluster {
            inner: bqsteward::controller::cluster::KubeCluster::new(client, Some("controller-test".into())),
            status_writes: Default::default(),
            kube: k,
        }
    }

    /// Status writes sent so far (all objects).
    pub fn status_writes(&self) -> usize {
        self.status_writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The object as the API server holds it now.
    pub fn get(&self, key: &bqsteward::controller::cluster::ObjectKey) -> Stored {
        let kind = format!("{}.bqsteward.dev", key.kind.to_lowercase());
        let Some(o) = self.kube.get(&kind, &key.namespace, &key.name) else {
            return Stored::default();
        };
        Stored {
            finalizers: o["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(String::from))
                .collect(),
            status: o["status"].clone(),
            resource_version: o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object: o,
        }
    }

    /// The events (events.k8s.io) recorded on the object, oldest first.
    pub fn events(&self, key: &bqsteward::controller::cluster::ObjectKey) -> Vec<bqsteward::controller::cluster::Note> {
        let text = self
            .kube
            .kubectl(&["get", "events.v1.events.k8s.io", "-n", &key.namespace, "-o", "json"])
            .ok();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut items: Vec<&serde_json::Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["kind"] == key.kind && e["regarding"]["name"] == key.name.as_str())
            .collect();
        items.sort_by_key(|e| {
            e["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        items
            .iter()
            .map(|e| bqsteward::controller::cluster::Note {
                warning: e["type"] == "Warning",
                reason: e["reason"].as_str().unwrap_or_default().to_string(),
                message: e["note"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl bqsteward::controller::cluster::Cluster for RealCluster {
    async fn set_finalizers(
        &self,
        key: &bqsteward::controller::cluster::ObjectKey,
        finalizers: Vec<String>,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error> {
        self.inner.set_finalizers(key, finalizers, resource_version).await
    }

    async fn apply_status(
        &self,
        key: &bqsteward::controller::cluster::ObjectKey,
        status: serde_json::Value,
    ) -> Result<(), kube::Error> {
        self.status_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.apply_status(key, status).await
    }

    async fn event(
        &self,
        key: &bqsteward::controller::cluster::ObjectKey,
        uid: Option<&str>,
        note: bqsteward::controller::cluster::Note,
    ) -> Result<(), kube::Error> {
        self.inner.event(key, uid, note).await
    }
}

/// A controller context for reconcile tests: the emulators' clients, `kube` as the writer, no
/// Cloud Identity or Resource Manager client (set them when a test needs them), default policy,
/// bqsteward's `identity`, quick call retries.
pub async fn test_ctx(kube: std::sync::Arc<RealCluster>, identity: &str) -> bqsteward::controller::reconcile::Ctx {
    use bqsteward::cloud::bigquery::BigQueryRest;
    use bqsteward::cloud::retry::Backoff;
    use bqsteward::cloud::storage::GcsRest;
    use std::time::Duration;
    let e = super::emulators();
    bqsteward::controller::reconcile::Ctx {
        bq: std::sync::Arc::new(BigQueryRest::new(&e).await.unwrap()),
        gcs: std::sync::Arc::new(GcsRest::new(&e).unwrap()),
        groups: None,
        iam: None,
        cluster: kube,
        policy: bqsteward::policy::Policy::default(),
        identity: Some(identity.into()),
        requeue: Duration::from_secs(600),
        backoff: bqsteward::controller::reconcile::FailureBackoff::new(
            Duration::from_secs(5),
            Duration::from_secs(300),
        ),
        call_backoff: Backoff {
            initial: Duration::from_millis(10),
            ..Backoff::default()
        },
        tenants: Default::default(),
        pacer: Default::default(),
        cache: Default::default(),
        sources: bqsteward::dbsource::Sources::new(std::sync::Arc::new(bqsteward::dbsource::secrets::NoSecrets), 2),
        audit: None,
        revision: String::new(),
    }
}
