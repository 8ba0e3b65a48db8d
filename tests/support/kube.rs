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
        c.env("KUBECONFIG", kubeconfig).env("PATH", self.path());
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
            .filter(|e| e["user"]["username"].as_str() == Some(user) && e["stage"] == "ResponseComplete")
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
