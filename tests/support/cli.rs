//! Running the real `bqsteward` binary from the integration tests.

use bqsteward::cloud::Endpoints;

/// What a run printed and returned.
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Asserts the exit status, showing both outputs when it differs.
pub fn ok(r: &Run, code: i32) {
    assert_eq!(r.code, code, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// Every endpoint and identity variable bqsteward reads: cleared before a test runs the binary, so
/// only what the test sets applies.
pub const ENDPOINT_VARS: [&str; 5] = [
    "BIGQUERY_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "CLOUD_IDENTITY_EMULATOR_HOST",
    "RESOURCE_MANAGER_EMULATOR_HOST",
    "BQSTEWARD_IDENTITY",
];

/// Runs `bqsteward <args> -f <file holding manifests>` with `env` set on top of an environment
/// cleared of every endpoint and identity variable bqsteward reads.
pub async fn bqsteward(args: &[&str], manifests: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, manifests).unwrap();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_bqsteward"));
    c.args(args).arg("-f").arg(&file);
    for var in ENDPOINT_VARS {
        c.env_remove(var);
    }
    // Each run its own audit spool, unless the test shares one between runs.
    c.env("BQSTEWARD_AUDIT_SPOOL", dir.path().join("audit-spool"));
    c.envs(env.iter().copied());
    let out = c.output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`emulator_env`] and bqsteward's own identity (`BQSTEWARD_IDENTITY`), which it keeps as an
/// OWNER of the datasets it writes.
pub fn emulator_env_with_identity(endpoints: &Endpoints) -> Vec<(&'static str, String)> {
    emulator_env(endpoints)
        .into_iter()
        .chain([(
            "BQSTEWARD_IDENTITY",
            "serviceAccount:bqsteward@bqsteward-test.iam.gserviceaccount.com".to_string(),
        )])
        .collect()
}

/// The emulator variables for `endpoints` (hosts as bqsteward reads them).
pub fn emulator_env(endpoints: &Endpoints) -> [(&'static str, String); 2] {
    [
        (
            "BIGQUERY_EMULATOR_HOST",
            endpoints.bigquery.trim_end_matches("/bigquery/v2").to_string(),
        ),
        ("STORAGE_EMULATOR_HOST", endpoints.storage.clone()),
    ]
}

/// Whether a diff line of `stdout` adds something containing `needle`.
pub fn adds(stdout: &str, needle: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.trim_start().starts_with('+') && l.contains(needle))
}

/// `bqsteward apply --secrets-dir <secrets> -f <dir>/manifest.yaml` as a child process (output
/// discarded), to be killed mid-way; `env` on top of an environment without [`ENDPOINT_VARS`].
pub fn spawn_apply(
    manifest: &str,
    dir: &std::path::Path,
    secrets: &std::path::Path,
    env: &[(&'static str, String)],
) -> tokio::process::Child {
    let file = dir.join("manifest.yaml");
    std::fs::write(&file, manifest).unwrap();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_bqsteward"));
    c.args(["apply", "--secrets-dir", secrets.to_str().unwrap(), "-f"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for var in ENDPOINT_VARS {
        c.env_remove(var);
    }
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c.spawn().unwrap()
}
