//! `bqsteward validate` end to end, through the real binary: the samples are valid; every broken
//! manifest in `tests/fixtures/invalid/` yields exactly the errors its `# expect:` lines name.

use std::path::Path;
use std::process::Command;

fn bqsteward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .args(args)
        .output()
        .expect("run bqsteward");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn samples_are_valid() {
    let (code, stdout, stderr) = bqsteward(&["validate", "-f", "config/samples"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("4 resources valid"), "{stdout}");
}

#[test]
fn reads_stdin_and_skips_other_kinds() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = std::fs::read_to_string("config/samples/analysts-group.yaml").unwrap();
    input.push_str("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("<stdin>:9 (document 2): skipped apps/v1 Deployment"),
        "{stderr}"
    );
}

/// Every file's `# expect: TEXT` lines, in file order.
fn expectations(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            if let Some(e) = line.strip_prefix("# expect: ") {
                out.push((f.display().to_string(), e.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_broken_manifest_gets_one_precise_message() {
    let dir = Path::new("tests/fixtures/invalid");
    let (code, stdout, stderr) = bqsteward(&["validate", "-f", "tests/fixtures/invalid"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    let expected = expectations(dir);
    assert!(
        expected.len() >= 25,
        "the fixture set shrank to {} expectations",
        expected.len()
    );
    let mut unmatched = Vec::new();
    for (file, text) in &expected {
        let hits: Vec<_> = errors
            .iter()
            .filter(|e| e.starts_with(&format!("error: {file}:")) && e.contains(text.as_str()))
            .collect();
        if hits.len() != 1 {
            unmatched.push(format!(
                "{file}: expected exactly one error containing {text:?}, got {hits:?}"
            ));
        }
    }
    assert!(
        unmatched.is_empty(),
        "{}\n\nfull output:\n{stdout}",
        unmatched.join("\n")
    );
    // Nothing beyond what the fixtures announce: one message per mistake.
    assert_eq!(errors.len(), expected.len(), "unexpected extra errors:\n{stdout}");
    // Each message names file, document, kind/name (when known) and field.
    insta::assert_snapshot!("invalid_manifests", stdout);
    assert!(stderr.contains("skipped v1 ConfigMap"), "{stderr}");
}

#[test]
fn json_report_for_tools() {
    let (code, stdout, _) = bqsteward(&[
        "validate",
        "-f",
        "tests/fixtures/invalid/21-bad-email.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["field"], "spec.access[0].user");
    assert_eq!(v["errors"][0]["kind"], "DatasetAccess");
    assert_eq!(v["errors"][0]["name"], "broken/bad-email");
    assert_eq!(v["errors"][0]["origin"]["document"], 1);
}

#[test]
fn policy_file_can_allow_public_principals_and_restrict_domains() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "forbiddenPrincipals: []\nallowedDomains: [acme.com]\n").unwrap();
    let p = policy.to_str().unwrap();
    let (code, stdout, _) = bqsteward(&[
        "validate",
        "-f",
        "tests/fixtures/invalid/22-forbidden-principal.yaml",
        "--policy",
        p,
    ]);
    assert_eq!(code, 0, "{stdout}");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: bqsteward.dev/v1alpha1\nkind: GroupMembership\nmetadata: {name: g}\nspec:\n  group: g@acme.com\n  members: [{email: x@evil.com}]\n",
    )
    .unwrap();
    let (code, stdout, _) = bqsteward(&["validate", "-f", manifest.to_str().unwrap(), "--policy", p]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("spec.members[0].email: \"x@evil.com\" is outside the allowed domains"),
        "{stdout}"
    );
    // iamMember strings obey the same policy as the typed principals (a security review found
    // `user:eve@evil.com` as OWNER and `domain:gmail.com` accepted).
    std::fs::write(
        &manifest,
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: d}\nspec:\n  project: acme-data-eng\n  dataset: d\n  access:\n    - {role: OWNER, iamMember: 'user:eve@evil.com'}\n    - {role: READER, iamMember: 'domain:gmail.com'}\n    - {role: READER, iamMember: 'group:team@acme.com'}\n",
    )
    .unwrap();
    let (code, stdout, _) = bqsteward(&["validate", "-f", manifest.to_str().unwrap(), "--policy", p]);
    assert_eq!(code, 1, "{stdout}");
    for needle in [
        "spec.access[0].iamMember: \"user:eve@evil.com\" is outside the allowed domains",
        "spec.access[1].iamMember: \"domain:gmail.com\" is outside the allowed domains",
    ] {
        assert!(stdout.contains(needle), "{needle}\n{stdout}");
    }
    assert!(!stdout.contains("spec.access[2]"), "{stdout}");
    let bad_policy = dir.path().join("bad.yaml");
    std::fs::write(&bad_policy, "forbidenPrincipals: []\n").unwrap();
    let (code, _, stderr) = bqsteward(&[
        "validate",
        "-f",
        "config/samples",
        "--policy",
        bad_policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid policy file") && stderr.contains("forbidenPrincipals"),
        "{stderr}"
    );
}

#[test]
fn missing_path_is_an_error() {
    let (code, stdout, _) = bqsteward(&["validate", "-f", "does/not/exist"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("does/not/exist") && stdout.contains("cannot read path"),
        "{stdout}"
    );
}

/// A security review found `validate` spending 85 s of CPU on 400 KB of nested `[[[…` and 2 GB of
/// memory on a 20 MB document (a pull request could stall CI): both are refused before parsing.
#[test]
fn hostile_input_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    let n = 130_000;
    std::fs::write(
        &deep,
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: x, namespace: y}}\nspec: {}{}\n",
            "[".repeat(n),
            "]".repeat(n)
        ),
    )
    .unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: x, namespace: y}}\nspec:\n  project: p\n  dataset: d\n  access: []\n  note: \"{}\"\n",
            "x".repeat(20 * 1024 * 1024)
        ),
    )
    .unwrap();
    let (code, stdout, _) = bqsteward(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("deep.yaml:1 (document 1): the document nests mappings and sequences"),
        "{stdout}"
    );
    assert!(stdout.contains("levels deep; the limit is 64"), "{stdout}");
    assert!(stdout.contains("big.yaml:1 (document 1): the document is"), "{stdout}");
    assert!(stdout.contains("split it into several resources"), "{stdout}");
}

/// An empty file, an empty directory and empty stdin are errors (nothing was checked), not
/// "0 resources valid"; `plan` refuses them the same way before reading anything.
#[test]
fn empty_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty.yaml");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir(&empty_dir).unwrap();
    for path in [empty_file.display().to_string(), empty_dir.display().to_string()] {
        let (code, stdout, stderr) = bqsteward(&["validate", "-f", &path]);
        assert_eq!(code, 1, "{path}: {stdout}{stderr}");
        assert!(stdout.contains("no YAML documents found"), "{path}: {stdout}");
        assert!(stdout.contains("1 error in 1 document checked"), "{path}: {stdout}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<stdin>: no YAML documents found"));
    let (code, _, stderr) = bqsteward(&["plan", "-f", &empty_dir.display().to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no YAML documents found") && stderr.contains("1 error in the manifests"),
        "{stderr}"
    );
}

/// `bqsteward crds | head` stops quietly when the reader goes away.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .arg("crds")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe before it writes (what `head` does once it has its lines; the CRDs would
    // fit in the pipe's buffer, so reading first would let every write succeed).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

/// `bqsteward run` without any Kubernetes configuration says so once, with the fix.
#[test]
fn run_without_a_cluster_says_what_is_missing_once() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach a Kubernetes API server") && stderr.contains("set KUBECONFIG"),
        "{stderr}"
    );
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
}

/// Without any credentials or emulator variables, `plan` says once what is missing and how to
/// provide it, before reading anything.
#[test]
fn no_credentials_is_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bqsteward"));
    cmd.args(["plan", "-f", "config/samples"]).env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for needle in [
        "gcloud auth application-default login",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "Workload Identity",
        "BIGQUERY_EMULATOR_HOST",
    ] {
        assert!(errors[0].contains(needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("transient errors"), "{stderr}");
    assert!(stdout.is_empty(), "nothing was read: {stdout}");
}

/// More consumer readers than an IAM policy holds are refused by `validate`.
#[test]
fn more_readers_than_an_iam_policy_holds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let readers: String = (0..1501).map(|i| format!("{{user: u{i}@acme.com}}, ")).collect();
    let path = dir.path().join("readers.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: bqsteward.dev/v1alpha1\nkind: ConsumerProject\nmetadata: {{name: many, namespace: t}}\nspec:\n  project: acme-mkt\n  dataset: shared\n  readers: [{readers}]\n  views: []\n"),
    )
    .unwrap();
    let (code, stdout, _) = bqsteward(&["validate", "-f", &path.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("spec.readers: 1501 readers; an IAM policy holds at most 1500"),
        "{stdout}"
    );
}

/// An access list larger than BigQuery allows is refused by `validate`, before any read.
#[test]
fn an_access_list_beyond_bigquery_s_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let entries: String = (0..2501)
        .map(|i| format!("    - {{role: READER, user: u{i}@acme.com}}\n"))
        .collect();
    let path = dir.path().join("big.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: big, namespace: t}}\nspec:\n  project: acme-data\n  dataset: big\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n{entries}"),
    )
    .unwrap();
    let (code, stdout, _) = bqsteward(&["validate", "-f", &path.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("spec.access: 2502 entries; bqsteward accepts at most 2500"),
        "{stdout}"
    );
}
