//! Attacks from the security review, through the `bqsteward` binary on the emulators: an
//! IngestedTable may not load into (or build views over) a table it does not own — a table nobody
//! declared, another resource's table, or a view — unless it adopts a foreign table explicitly;
//! BigQuery is queried to show nothing changed. (The cross-manifest rules — excluded columns
//! following the files, one owner per dataset list, PII through row filters, iamMember policy,
//! input limits — are refused by `validate`: `tests/fixtures/invalid/3[4-7]-*.yaml`,
//! `tests/validate_cli.rs`; the controller's "invalid objects contribute nothing" is in
//! `tests/controller.rs`.)

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::{Field, TableDef, TableRef, ViewDef};
use bqsteward::cloud::storage::{GcsRest, Storage};
use std::collections::BTreeMap;
use support::cli::{bqsteward, emulator_env, ok};

const PROJECT: &str = "bqsteward-tenancy";

fn manifest(name: &str, bucket: &str, dataset: &str, table: &str, mode: &str, annotations: &str) -> String {
    format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: {name}, namespace: marketing{annotations}}}\nspec:\n  source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}\n  mode: {mode}\n  schema: [{{name: id, type: INT64}}, {{name: salary, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: salary\n  views: {{full: true}}\n"
    )
}

async fn rows(bq: &BigQueryRest, t: &TableRef) -> Vec<Vec<Option<String>>> {
    bq.query(
        PROJECT,
        "US",
        &format!("SELECT id, salary FROM {} ORDER BY id", t.sql()),
        &[],
    )
    .await
    .unwrap()
    .rows
}

/// The emulator variables and bqsteward's identity, a BigQuery client, and a fresh bucket holding
/// one file `in/a.json` with `rows`.
async fn setup(rows: &[u8]) -> (Vec<(&'static str, String)>, BigQueryRest, String) {
    let e = support::emulators();
    let mut env: Vec<(&'static str, String)> = emulator_env(&e).into_iter().collect();
    env.push((
        "BQSTEWARD_IDENTITY",
        "serviceAccount:bqsteward@bqsteward-tenancy.iam.gserviceaccount.com".into(),
    ));
    let gcs = GcsRest::new(&e).unwrap();
    let bucket = support::unique("tenancy").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    gcs.upload(&bucket, "in/a.json", rows.to_vec(), "application/json")
        .await
        .unwrap();
    (env, BigQueryRest::new(&e).await.unwrap(), bucket)
}

#[tokio::test]
async fn an_ingested_table_never_writes_into_a_table_or_view_it_does_not_own() {
    let (env, bq, bucket) = setup(b"{\"id\": 666, \"salary\": 1}\n").await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // HR's payroll: a table no manifest declares, and a view over it.
    let ds = support::unique("salaries");
    bq.create_dataset(PROJECT, &ds, "US").await.unwrap();
    let payroll = TableRef::new(PROJECT, &ds, "payroll");
    bq.create_table(&TableDef {
        table: payroll.clone(),
        fields: vec![
            Field::new("id", "INT64", "NULLABLE"),
            Field::new("salary", "INT64", "NULLABLE"),
        ],
        time_partitioning: None,
        clustering: None,
        require_partition_filter: false,
        labels: BTreeMap::new(),
        expiration_ms: None,
        description: None,
    })
    .await
    .unwrap();
    bq.query(
        PROJECT,
        "US",
        &format!(
            "INSERT INTO {} (id, salary) VALUES (1, 100000), (2, 120000)",
            payroll.sql()
        ),
        &[],
    )
    .await
    .unwrap();
    let view = TableRef::new(PROJECT, &ds, "payroll_view");
    bq.create_view(&ViewDef {
        table: view.clone(),
        sql: format!("SELECT id, salary FROM {}", payroll.sql()),
        labels: BTreeMap::new(),
        description: "HR's view".into(),
    })
    .await
    .unwrap();
    let before = rows(&bq, &payroll).await;
    let schema_before = bq.get_table(&payroll).await.unwrap().unwrap().schema.fields.len();

    // Snapshot and Incremental into the foreign table, and into the view: refused, nothing written.
    for (name, table, mode, needle) in [
        ("snap", "payroll", "Snapshot", "was not created by bqsteward"),
        ("incr", "payroll", "Incremental", "was not created by bqsteward"),
        ("view", "payroll_view", "Incremental", "is a VIEW, not a table"),
    ] {
        let m = manifest(name, &bucket, &ds, table, mode, "");
        let plan = bqsteward(&["plan"], &m, &env).await;
        assert!(
            plan.stdout.contains(needle),
            "plan {name}:\n{}\n{}",
            plan.stdout,
            plan.stderr
        );
        let apply = bqsteward(&["apply"], &m, &env).await;
        ok(&apply, 1);
        assert!(apply.stdout.contains(needle), "apply {name}:\n{}", apply.stdout);
    }
    assert_eq!(rows(&bq, &payroll).await, before, "the payroll rows changed");
    let live = bq.get_table(&payroll).await.unwrap().unwrap();
    assert_eq!(live.schema.fields.len(), schema_before, "no _bqsteward_* columns added");
    assert!(live.labels.is_empty(), "{:?}", live.labels);
    assert!(
        bq.get_table(&TableRef::new(PROJECT, &format!("{ds}__views_full"), "payroll"))
            .await
            .unwrap()
            .is_none(),
        "no view was built over the foreign table"
    );

    // Another resource's table: marketing/incr2 cannot load into the table marketing/own created.
    let own = manifest("own", &bucket, &ds, "own", "Incremental", "");
    ok(&bqsteward(&["apply"], &own, &env).await, 0);
    let owned = TableRef::new(PROJECT, &ds, "own");
    let other = bqsteward(
        &["apply"],
        &manifest("intruder", &bucket, &ds, "own", "Incremental", ""),
        &env,
    )
    .await;
    ok(&other, 1);
    assert!(
        other.stdout.contains("belongs to another bqsteward resource"),
        "{}",
        other.stdout
    );
    assert_eq!(rows(&bq, &owned).await.len(), 1, "loaded once, by its owner only");

    // Adopting the foreign table explicitly is what lets a resource load into it.
    let adopt = manifest(
        "adopt",
        &bucket,
        &ds,
        "payroll",
        "Incremental",
        ", annotations: {bqsteward.dev/adopt: \"true\"}",
    );
    let r = bqsteward(&["plan"], &adopt, &env).await;
    assert!(
        r.stdout.contains("adopted with the annotation bqsteward.dev/adopt"),
        "{}",
        r.stdout
    );
    ok(&bqsteward(&["apply"], &adopt, &env).await, 0);
    assert_eq!(rows(&bq, &payroll).await.len(), 3);
    // …and the adoption is recorded on the table: from then on it is that resource's, and another
    // resource cannot adopt it too.
    let labels = bq.get_table(&payroll).await.unwrap().unwrap().labels;
    assert_eq!(
        labels.get("bqsteward-owner").map(String::as_str),
        Some(owner("marketing/adopt").as_str())
    );
    let second = manifest(
        "adopt2",
        &bucket,
        &ds,
        "payroll",
        "Incremental",
        ", annotations: {bqsteward.dev/adopt: \"true\"}",
    );
    let r = bqsteward(&["apply"], &second, &env).await;
    ok(&r, 1);
    assert!(
        r.stdout.contains("belongs to another bqsteward resource"),
        "{}",
        r.stdout
    );
    assert_eq!(rows(&bq, &payroll).await.len(), 3);

    // A table bqsteward made before owner labels existed (managed-by only): the first resource
    // that loads into it stamps its owner label; then it is that resource's alone.
    let legacy = TableRef::new(PROJECT, &ds, "legacy");
    bq.create_table(&TableDef {
        table: legacy.clone(),
        fields: vec![
            Field::new("id", "INT64", "NULLABLE"),
            Field::new("salary", "INT64", "NULLABLE"),
        ],
        time_partitioning: None,
        clustering: None,
        require_partition_filter: false,
        labels: BTreeMap::from([("managed-by".to_string(), "bqsteward".to_string())]),
        expiration_ms: None,
        description: None,
    })
    .await
    .unwrap();
    let r = bqsteward(
        &["apply"],
        &manifest("legacy", &bucket, &ds, "legacy", "Incremental", ""),
        &env,
    )
    .await;
    ok(&r, 0);
    let labels = bq.get_table(&legacy).await.unwrap().unwrap().labels;
    assert_eq!(
        labels.get("bqsteward-owner").map(String::as_str),
        Some(owner("marketing/legacy").as_str())
    );
    assert_eq!(labels.get("managed-by").map(String::as_str), Some("bqsteward"));
    let r = bqsteward(
        &["apply"],
        &manifest("legacy2", &bucket, &ds, "legacy", "Incremental", ""),
        &env,
    )
    .await;
    ok(&r, 1);
    assert_eq!(rows(&bq, &legacy).await.len(), 1);
}

fn owner(resource: &str) -> String {
    bqsteward::cloud::bqtypes::owner_value(&format!("IngestedTable {resource}"))
}

/// Views are written only for the resource their owner label names: a view another resource owns
/// is refused even with the adopt annotation; a hand-made view is taken over only with it.
#[tokio::test]
async fn a_view_is_replaced_or_deleted_only_by_the_resource_it_belongs_to() {
    let (env, bq, bucket) = setup(b"{\"id\": 1, \"salary\": 1}\n").await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ds = support::unique("views");
    let own = manifest("own", &bucket, &ds, "own", "Incremental", "");
    ok(&bqsteward(&["apply"], &own, &env).await, 0);
    let own_view = TableRef::new(PROJECT, &format!("{ds}__views_full"), "own");
    let before = bq.get_table(&own_view).await.unwrap().unwrap();

    // marketing/thief's own table is `{ds}__views.own`; with fullSuffix `_full` its full view is
    // the view of marketing/own.
    let thief = |annotations: &str| {
        manifest(
            "thief",
            &bucket,
            &format!("{ds}__views"),
            "own",
            "Incremental",
            annotations,
        )
        .replace("views: {full: true}", "views: {full: true, fullSuffix: _full}")
    };
    for annotations in ["", ", annotations: {bqsteward.dev/adopt: \"true\"}"] {
        let r = bqsteward(&["apply"], &thief(annotations), &env).await;
        ok(&r, 1);
        assert!(
            r.stdout
                .contains(&format!("view {own_view} belongs to another bqsteward resource")),
            "{annotations}: {}",
            r.stdout
        );
    }
    let after = bq.get_table(&own_view).await.unwrap().unwrap();
    assert_eq!(
        (after.etag, after.labels),
        (before.etag, before.labels),
        "the view was written"
    );

    // A hand-made view where a full view belongs: left alone, then adopted with the annotation.
    let hand = TableRef::new(PROJECT, &format!("{ds}__views_full"), "hand");
    bq.create_view(&ViewDef {
        table: hand.clone(),
        sql: "SELECT 1 AS id".into(),
        labels: BTreeMap::new(),
        description: "someone's".into(),
    })
    .await
    .unwrap();
    let r = bqsteward(
        &["apply"],
        &manifest("hand", &bucket, &ds, "hand", "Incremental", ""),
        &env,
    )
    .await;
    ok(&r, 1);
    assert!(
        r.stdout.contains("exists and was not made by bqsteward"),
        "{}",
        r.stdout
    );
    assert_eq!(
        bq.get_table(&hand).await.unwrap().unwrap().description.as_deref(),
        Some("someone's")
    );
    let adopting = manifest(
        "hand",
        &bucket,
        &ds,
        "hand",
        "Incremental",
        ", annotations: {bqsteward.dev/adopt: \"true\"}",
    );
    let r = bqsteward(&["plan"], &adopting, &env).await;
    assert!(
        r.stdout.contains("adopt it (annotation) and replace its SQL"),
        "{}",
        r.stdout
    );
    ok(&bqsteward(&["apply"], &adopting, &env).await, 0);
    let labels = bq.get_table(&hand).await.unwrap().unwrap().labels;
    assert_eq!(
        labels.get("bqsteward-owner").map(String::as_str),
        Some(owner("marketing/hand").as_str())
    );
}

/// With a tenancy section in the policy file, a namespace's manifests may use only what it is
/// granted: a marketing manifest aiming at HR's dataset is refused by name, and nothing is written.
#[tokio::test]
async fn a_namespace_uses_only_its_grant() {
    let (env, bq, bucket) = setup(b"{\"id\": 1, \"salary\": 1}\n").await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mine = support::unique("marketing");
    let hr = support::unique("hr");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "tenancy:\n  namespaces:\n    marketing:\n      datasets: ['{PROJECT}.marketing_*']\n      sources: ['gs://{bucket}/*']\n"
        ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let into_hr = manifest("payroll", &bucket, &hr, "payroll", "Snapshot", "");
    let r = bqsteward(&["apply", "--policy", p], &into_hr, &env).await;
    ok(&r, 1);
    assert!(
        r.stderr.contains(&format!(
            "spec.destination: dataset {PROJECT}.{hr} is outside namespace marketing's grant (tenancy.namespaces.marketing.datasets"
        )) && r.stderr.contains("nothing was read or written"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        bq.get_dataset(PROJECT, &hr).await.unwrap().is_none(),
        "nothing was created"
    );
    // The same manifest inside the grant applies.
    let own = manifest("own", &bucket, &mine, "t", "Incremental", "");
    ok(&bqsteward(&["apply", "--policy", p], &own, &env).await, 0);
    assert_eq!(rows(&bq, &TableRef::new(PROJECT, &mine, "t")).await.len(), 1);
}
