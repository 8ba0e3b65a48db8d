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
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: events, namespace: ops}}\nspec:\n  source: {{uri: \"gs://{bucket}/in/\", format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {dataset}, table: events}}\n  schema: [{{name: id, type: INT64}}]\n  loadPolicy: {{dailyJobBudget: 50}}\n"
    );
    let env = emulator_env(&endpoints);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(&bqsteward(&["apply"], &manifest, &env).await, 0);
    // Two more files arrive after the load: waiting.
    put("d.json", "{\"id\": 4}\n").await;
    put("e.json", "{\"id\": 5}\n").await;

    let r = bqsteward(&["status", "--output", "json"], &manifest, &env).await;
    ok(&r, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let s = &v[0];
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

    let text = bqsteward(&["status"], &manifest, &env).await;
    ok(&text, 0);
    for line in [
        "IngestedTable ops/events (",
        "  waiting        2 files, the oldest for ",
        " over 2 files (upload to loaded)",
        "  quarantined    1 (Corrupt 1)",
        " today of 50",
    ] {
        assert!(text.stdout.contains(line), "{line:?} not in:\n{}", text.stdout);
    }
}
