//! Test helpers shared by the integration tests: the local emulators (started through the
//! project's own `scripts/emulators.sh`, or reused when already running) and unique names.
//!
//! A test that needs an emulator and cannot get one fails; it never skips.

#![allow(dead_code)]

pub mod argocd;
pub mod cli;
pub mod controller;
pub mod kube;
pub mod proxy;
pub mod sql;

// The Cloud Identity and Resource Manager stand-ins live in the crate (scripts/emulators.sh starts
// them for the demo); the tests use them in-process.
#[allow(unused_imports)]
pub use bqsteward::standins::{cloud_identity, http1, resource_manager};

use bqsteward::cloud::Endpoints;
use std::process::Command;
use std::sync::OnceLock;

/// Runs `scripts/<script> start` and returns a reader of the `export NAME=value` lines it prints
/// (`what`: which tests need it, for the failure message).
fn start_script(script: &str, what: &str) -> impl Fn(&str) -> String {
    let path = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let start = Command::new("bash")
        .arg(&path)
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        start.status.success(),
        "scripts/{script} start failed; {what} need it:\n{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let out = String::from_utf8_lossy(&start.stdout).into_owned();
    let script = script.to_string();
    move |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("scripts/{script} printed no {name}:\n{out}"))
            .to_string()
    }
}

/// The source databases' admin URLs (MariaDB, PostgreSQL); starts them on first use through
/// `scripts/databases.sh` (idempotent across test binaries).
pub fn databases() -> (String, String) {
    static URLS: OnceLock<(String, String)> = OnceLock::new();
    URLS.get_or_init(|| {
        let var = start_script("databases.sh", "the database-source tests");
        (var("BQSTEWARD_TEST_MYSQL_URL"), var("BQSTEWARD_TEST_POSTGRES_URL"))
    })
    .clone()
}

/// The local S3 (moto) and the Delta writer.
#[derive(Clone, Debug)]
pub struct Lake {
    /// moto's endpoint.
    pub endpoint: String,
    /// The Delta writer's python.
    pub python: String,
    /// moto's request log.
    pub log: String,
    /// A second moto that checks keys (and knows none).
    pub keyed_endpoint: String,
}

/// The local S3; starts moto on first use through `scripts/lake.sh` (idempotent across test
/// binaries).
pub fn lake() -> Lake {
    static LAKE: OnceLock<Lake> = OnceLock::new();
    LAKE.get_or_init(|| {
        let var = start_script("lake.sh", "the Delta-source tests");
        Lake {
            endpoint: var("BQSTEWARD_S3_ENDPOINT"),
            python: var("BQSTEWARD_LAKE_PYTHON"),
            log: var("BQSTEWARD_S3_LOG"),
            keyed_endpoint: var("BQSTEWARD_S3_AUTH_ENDPOINT"),
        }
    })
    .clone()
}

/// Runs the Delta writer (`scripts/delta_writer.py`, delta-rs) against the local S3; its standard
/// output.
pub fn delta_writer(args: &[&str]) -> String {
    let lake = lake();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/delta_writer.py");
    let out = Command::new(&lake.python)
        .arg(script)
        .args(args)
        .env("BQSTEWARD_S3_ENDPOINT", &lake.endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delta_writer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Uploads `gs://bucket/name` holding one JSON row, `{"id": i}`.
pub async fn upload_id_row(gcs: &dyn bqsteward::cloud::storage::Storage, bucket: &str, name: &str, i: usize) {
    gcs.upload(
        bucket,
        name,
        format!("{{\"id\": {i}}}\n").into_bytes(),
        "application/json",
    )
    .await
    .unwrap();
}

/// The emulators' endpoints; starts them on first use (idempotent across test binaries).
pub fn emulators() -> Endpoints {
    static ENDPOINTS: OnceLock<Endpoints> = OnceLock::new();
    ENDPOINTS
        .get_or_init(|| {
            bqsteward::cloud::install_crypto_provider();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulators.sh");
            let start = Command::new("bash")
                .arg(script)
                .arg("start")
                .output()
                .expect("run scripts/emulators.sh");
            assert!(
                start.status.success(),
                "scripts/emulators.sh start failed; the emulator-backed tests need it:\n{}",
                String::from_utf8_lossy(&start.stderr)
            );
            let env = Command::new("bash")
                .arg(script)
                .arg("env")
                .output()
                .expect("run scripts/emulators.sh env");
            let text = String::from_utf8_lossy(&env.stdout).into_owned();
            let var = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                    .unwrap_or_else(|| panic!("scripts/emulators.sh env printed no {name}:\n{text}"))
                    .to_string()
            };
            Endpoints::from_vars(Some(var("BIGQUERY_EMULATOR_HOST")), Some(var("STORAGE_EMULATOR_HOST")))
        })
        .clone()
}

/// A private set of emulators with fresh state (its own ports and state directory, as the demo's),
/// for a test that must use fixed project and bucket names (the samples'); stopped when dropped.
pub struct PrivateEmulators {
    /// Their endpoints.
    pub endpoints: Endpoints,
    state: tempfile::TempDir,
    ports: (u16, u16),
}

impl PrivateEmulators {
    /// Starts them: BigQuery on `bq_port` (gRPC on the next port), Cloud Storage on `gcs_port`.
    pub fn start(bq_port: u16, gcs_port: u16) -> PrivateEmulators {
        bqsteward::cloud::install_crypto_provider();
        let state = tempfile::tempdir().unwrap();
        let e = PrivateEmulators {
            endpoints: Endpoints::from_vars(
                Some(format!("http://127.0.0.1:{bq_port}")),
                Some(format!("http://127.0.0.1:{gcs_port}")),
            ),
            state,
            ports: (bq_port, gcs_port),
        };
        let out = e.script("stop");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = e.script("start");
        assert!(
            out.status.success(),
            "scripts/emulators.sh start (private set) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        e
    }

    fn script(&self, verb: &str) -> std::process::Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulators.sh"))
            .arg(verb)
            .env("BQSTEWARD_EMU_STATE", self.state.path())
            .env("BQSTEWARD_BQ_PORT", self.ports.0.to_string())
            .env("BQSTEWARD_BQ_GRPC_PORT", (self.ports.0 + 1).to_string())
            .env("BQSTEWARD_GCS_PORT", self.ports.1.to_string())
            .output()
            .expect("run scripts/emulators.sh")
    }
}

impl Drop for PrivateEmulators {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// A name unique to this test run, e.g. `prefix_1a2b3c4d` (valid as a dataset id and, with
/// hyphens swapped in, as a bucket name).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{:x}{:x}{n}", std::process::id(), nanos)
}

/// A dataset's live access list as `ROLE principal` lines (`-` for entries without a role).
pub async fn access_lines(
    bq: &dyn bqsteward::cloud::bigquery::BigQuery,
    project: &str,
    dataset: &str,
) -> std::collections::BTreeSet<String> {
    let info = bq.get_dataset(project, dataset).await.unwrap().expect("dataset exists");
    info.access
        .iter()
        .map(|e| {
            let e = bqsteward::access::AclEntry::from_api(e);
            format!("{} {}", e.role.as_deref().unwrap_or("-"), e.principal)
        })
        .collect()
}

/// What the engine's clients borrow besides BigQuery and Cloud Storage, for tests that drive the
/// engine's table phase directly: a default pacer, no groups or IAM, database sources without
/// Secrets.
pub struct EngineParts {
    pacer: bqsteward::cloud::retry::Pacer,
    sources: bqsteward::dbsource::Sources,
}

impl EngineParts {
    pub fn new() -> EngineParts {
        EngineParts {
            pacer: Default::default(),
            sources: bqsteward::dbsource::Sources::new(std::sync::Arc::new(bqsteward::dbsource::secrets::NoSecrets), 1),
        }
    }

    /// The engine's clients over `bq` and `gcs`.
    pub fn clients<'a>(
        &'a self,
        bq: &'a dyn bqsteward::cloud::bigquery::BigQuery,
        gcs: &'a dyn bqsteward::cloud::storage::Storage,
    ) -> bqsteward::engine::Clients<'a> {
        bqsteward::engine::Clients {
            bq,
            gcs,
            groups: None,
            iam: None,
            pacer: &self.pacer,
            backoff: Default::default(),
            sources: &self.sources,
        }
    }
}
