//! `bqsteward status` against bqemulator and fake-gcs-server through the real binary: a table with
//! loaded files, a corrupt one quarantined and files still waiting shows each figure correctly.

mod support;

use bqsteward::cloud::storage::{GcsRest, Storage};
use support::cli::{bqsteward, emulator_env, ok};
use support::{emulators, unique};

const PROJECT: &str = "bqsteward-test";

#[tokio::test]
async fn status_shows_waiting_files_delay_quarantine_and_jobs() {
    let endpoints = emulators();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("status").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let dataset = unique("status");
    let put = |name: &'static str, body: &'static str| {
        let (gcs, bucket) = (&gcs, &bucket);
        async move {
            gcs.upload(
                bucket,
                &format!("in/{name}"),
                body.as_bytes().to_vec(),
                "application/json",
            )
            .await
            .unwrap();
        }
    };
    put("a.json", "{\"id\": 1}\n{\"id\": 2}\n").await;
    put("b.json", "{\"id\": 3}\n").await;
    put("c.json", "{\"id\": not json\n").await;
    let manifest = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: events, namespace: ops}}\nspec:\n  source: {{uri: \"gs://{bucket}/in/\", format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {dataset}, table: events}}\n  schema: [{{name: id, type: INT64}}]\n  loadPolicy: {{dailyJobBudget: 50}}\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: planned, namespace: ops, annotations: {{bqsteward.dev/mode: plan}}}}\nspec:\n  project: {PROJECT}\n  dataset: {dataset}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, user: planned@acme.com}}\n"
    );
    let env = emulator_env(&endpoints);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let applied = bqsteward(&["apply"], &manifest, &env).await;
    ok(&applied, 0);
    assert!(
        applied.stdout.contains("DatasetAccess ops/planned (access list of"),
        "{}",
        applied.stdout
    );
    let bq = bqsteward::cloud::bigquery::BigQueryRest::new(&endpoints).await.unwrap();
    let live = bqsteward::cloud::bigquery::BigQuery::get_dataset(&bq, PROJECT, &dataset)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !live.access.iter().any(|e| e.to_string().contains("planned@acme.com")),
        "a plan-only object is not applied: {:?}",
        live.access
    );
    // A check, for the status's last check.
    ok(
        &bqsteward(&["check", "--table", "ops/events"], &manifest, &env).await,
        0,
    );
    // Two more files arrive after the load: waiting.
    put("d.json", "{\"id\": 4}\n").await;
    put("e.json", "{\"id\": 5}\n").await;

    let r = bqsteward(&["status", "--output", "json"], &manifest, &env).await;
    ok(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let s = &v["tables"][0];
    assert_eq!(s["resource"], "ops/events");
    assert_eq!(s["filesWaiting"], 2, "{s:#}");
    assert!(s["oldestWaiting"].is_string(), "{s:#}");
    assert_eq!(s["loaded24h"], 2, "{s:#}");
    let (p50, p99) = (s["delayP50S"].as_f64().unwrap(), s["delayP99S"].as_f64().unwrap());
    assert!((0.0..600.0).contains(&p50) && p50 <= p99 && p99 < 600.0, "{s:#}");
    assert_eq!(s["quarantined"], serde_json::json!({"Corrupt": 1}), "{s:#}");
    assert!(s["jobsToday"].as_i64().is_some_and(|n| n >= 1), "{s:#}");
    assert_eq!(s["jobBudget"], 50);
    assert!(s["lastLoad"].is_string(), "{s:#}");
    assert_eq!(s["nextLoad"], "now", "files are waiting: {s:#}");
    let checks = s["lastChecks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{s:#}");
    assert_eq!(
        (checks[0]["subject"].as_str(), checks[0]["outcome"].as_str()),
        (Some("rowCount"), Some("in_sync"))
    );
    assert_eq!(v["datasets"][0]["target"], format!("{PROJECT}.{dataset}"));
    assert_eq!(v["datasets"][0]["time"], "", "nothing applied to its list: {v:#}");
    let planned = &v["planOnly"][0];
    assert_eq!(planned["resource"], "DatasetAccess ops/planned");
    assert!(
        planned["plan"]["pending"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(format!(
                "+READER user:planned@acme.com on {PROJECT}.{dataset}"
            ))),
        "{planned:#}"
    );

    let text = bqsteward(&["status"], &manifest, &env).await;
    ok(&text, 0);
    for line in [
        "IngestedTable ops/events (",
        "  waiting        2 files, the oldest for ",
        " over 2 files (upload to loaded)",
        "  quarantined    1 (Corrupt 1)",
        " today of 50",
        "  next load      now",
        "  last check     rowCount in_sync at ",
        "DatasetAccess ops/planned (plan only): Plan: access lists: 1 dataset to change",
        "  +READER user:planned@acme.com on ",
    ] {
        assert!(text.stdout.contains(line), "{line:?} not in:\n{}", text.stdout);
    }
}
