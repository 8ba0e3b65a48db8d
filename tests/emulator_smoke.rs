//! Smoke test of the emulator harness through the production clients: a dataset on bqemulator,
//! objects on fake-gcs-server listed back with their generations.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::storage::{GcsRest, Storage};

#[tokio::test]
async fn bigquery_dataset_round_trip() {
    let endpoints = support::emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let project = "bqsteward-smoke";
    let dataset = support::unique("smoke");

    assert_eq!(
        bq.get_dataset(project, &dataset).await.unwrap(),
        None,
        "a fresh dataset must not exist yet"
    );
    bq.create_dataset(project, &dataset, "US").await.unwrap();
    let info = bq
        .get_dataset(project, &dataset)
        .await
        .unwrap()
        .expect("dataset exists after create");
    assert_eq!(info.location, "US");
    assert!(!info.etag.is_empty(), "datasets carry an etag");
    assert_eq!(info.labels.get("managed-by").map(String::as_str), Some("bqsteward"));
    // Creating again is not an error: reconcile is idempotent.
    bq.create_dataset(project, &dataset, "US").await.unwrap();
}

#[tokio::test]
async fn storage_upload_and_list_with_generations() {
    let endpoints = support::emulators();
    let gcs = GcsRest::new(&endpoints).unwrap().with_page_size(2);
    let bucket = support::unique("smoke").replace('_', "-");
    gcs.create_bucket("bqsteward-smoke", &bucket).await.unwrap();
    gcs.create_bucket("bqsteward-smoke", &bucket).await.unwrap();

    for name in [
        "in/a.json",
        "in/b.json",
        "in/sub/c.json",
        "in-other/d.json",
        "out/e.json",
    ] {
        let o = gcs
            .upload(&bucket, name, b"{\"id\":1}\n".to_vec(), "application/json")
            .await
            .unwrap();
        assert_eq!(o.name, name);
        assert_eq!(o.size, 9);
        assert!(o.generation > 0);
    }
    // Five objects, pages of two: the listing must follow page tokens and honour the prefix.
    let listed = gcs.list(&bucket, "in/").await.unwrap();
    let names: Vec<_> = listed.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["in/a.json", "in/b.json", "in/sub/c.json"]);

    // Writing an object again gives it a new generation: that is how a re-upload is recognised.
    let before = listed[0].generation;
    let again = gcs
        .upload(&bucket, "in/a.json", b"{\"id\":2}\n".to_vec(), "application/json")
        .await
        .unwrap();
    assert_ne!(again.generation, before);
    let relisted = gcs.list(&bucket, "in/a.json").await.unwrap();
    assert_eq!(relisted.len(), 1);
    assert_eq!(relisted[0].generation, again.generation);
}

#[tokio::test]
async fn api_errors_are_classified() {
    let endpoints = support::emulators();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let err = gcs.list("no-such-bucket-bqsteward", "x/").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.category(), bqsteward::cloud::ErrorCategory::Terminal);
}

/// `scripts/upload.sh` puts a directory's files into the local Cloud Storage (bucket created),
/// keeping relative paths; the production client lists them back with generations.
#[tokio::test]
async fn the_upload_helper_puts_files_where_bqsteward_lists_them() {
    let endpoints = support::emulators();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("2026-01-02")).unwrap();
    std::fs::write(dir.path().join("a.json"), "{\"id\": 1}\n").unwrap();
    std::fs::write(dir.path().join("2026-01-02/b.json"), "{\"id\": 2}\n").unwrap();
    let bucket = support::unique("upload").replace('_', "-");
    let out = std::process::Command::new("scripts/upload.sh")
        .arg(format!("gs://{bucket}/orders"))
        .arg(dir.path())
        .env("STORAGE_EMULATOR_HOST", &endpoints.storage)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("gs://{bucket}/orders/2026-01-02/b.json (generation ")),
        "{stdout}"
    );
    let gcs = GcsRest::new(&endpoints).unwrap();
    let listed = gcs.list(&bucket, "orders/").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["orders/2026-01-02/b.json", "orders/a.json"]);
    assert!(listed.iter().all(|o| o.generation > 0));
}
