//! The CI recipe for config repositories (`docs/ci/`): the script both the GitHub Actions workflow
//! and the GitLab CI job run, against the emulators through this build's binary — a clean plan, a
//! plan with changes (both exit 0 with the Markdown plan written for the comment), invalid
//! manifests and a refused plan (exit 1, the reason in the comment) — and the recipes calling it.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};

const PROJECT: &str = "bqsteward-ci";

fn run(manifests: &std::path::Path, plan_file: &std::path::Path) -> (i32, String) {
    let e = support::emulators();
    let out = std::process::Command::new("bash")
        .arg("docs/ci/bqsteward-ci.sh")
        .env("BQSTEWARD", env!("CARGO_BIN_EXE_bqsteward"))
        .env("BQSTEWARD_MANIFESTS", manifests)
        .env("BQSTEWARD_PLAN_FILE", plan_file)
        .env("BIGQUERY_EMULATOR_HOST", e.bigquery.replace("/bigquery/v2", ""))
        .env("STORAGE_EMULATOR_HOST", &e.storage)
        .env(
            "BQSTEWARD_IDENTITY",
            "serviceAccount:bqsteward@bqsteward-ci.iam.gserviceaccount.com",
        )
        .env_remove("GITHUB_OUTPUT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_ci_script_validates_plans_and_writes_the_comment() {
    let bq = BigQueryRest::new(&support::emulators()).await.unwrap();
    let ds = support::unique("ci");
    bq.create_dataset(PROJECT, &ds, "US").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let plan = dir.path().join("plan.md");
    let write = |extra: &str| {
        std::fs::write(
            manifests.join("access.yaml"),
            format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: ci, namespace: t}}\nspec:\n  project: {PROJECT}\n  dataset: {ds}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n{extra}"
            ),
        )
        .unwrap()
    };

    // Changes pending: exit 0, the plan for the comment says so.
    write("    - {role: READER, group: analysts@acme.com}\n");
    let (code, said) = run(&manifests, &plan);
    assert_eq!(code, 0, "{said}");
    let md = std::fs::read_to_string(&plan).unwrap();
    assert!(md.contains("**Plan: access lists: 1 dataset to change (+3"), "{md}");
    assert!(
        md.contains("```diff") && md.contains("+READER group:analysts@acme.com"),
        "{md}"
    );

    // Invalid manifests: exit 1, the errors in the comment.
    write("    - {role: KING, group: analysts@acme.com}\n");
    let (code, said) = run(&manifests, &plan);
    assert_eq!(code, 1, "{said}");
    let md = std::fs::read_to_string(&plan).unwrap();
    assert!(
        md.contains("the manifests are invalid") && md.contains("spec.access[1].role"),
        "{md}"
    );

    // A refused plan (a public reader): exit 1, the refusal in the comment.
    write("    - {role: READER, iamMember: allUsers}\n");
    let (code, said) = run(&manifests, &plan);
    assert_eq!(code, 1, "{said}");

    // Clean: exit 0, no changes.
    write("");
    let apply = std::process::Command::new(env!("CARGO_BIN_EXE_bqsteward"))
        .args(["apply", "-f", &manifests.display().to_string()])
        .env(
            "BIGQUERY_EMULATOR_HOST",
            support::emulators().bigquery.replace("/bigquery/v2", ""),
        )
        .env(
            "BQSTEWARD_IDENTITY",
            "serviceAccount:bqsteward@bqsteward-ci.iam.gserviceaccount.com",
        )
        .output()
        .unwrap();
    assert!(apply.status.success(), "{}", String::from_utf8_lossy(&apply.stdout));
    let (code, said) = run(&manifests, &plan);
    assert_eq!(code, 0, "{said}");
    assert!(std::fs::read_to_string(&plan).unwrap().contains("**Plan: no changes**"));
}

#[test]
fn both_recipes_run_the_script_and_post_the_plan() {
    let github = std::fs::read_to_string("docs/ci/github-actions.yml").unwrap();
    let gitlab = std::fs::read_to_string("docs/ci/gitlab-ci.yml").unwrap();
    for (name, text) in [("github", &github), ("gitlab", &gitlab)] {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!doc.is_null(), "{name}");
        assert!(
            text.contains("bash docs/ci/bqsteward-ci.sh"),
            "{name} does not run the script"
        );
        assert!(text.contains("BQSTEWARD_PLAN_FILE: bqsteward-plan.md"), "{name}");
    }
    assert!(github.contains("gh pr comment") && github.contains("--body-file bqsteward-plan.md"));
    assert!(gitlab.contains("merge_requests/$CI_MERGE_REQUEST_IID/notes"));
}
