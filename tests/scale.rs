//! Issue 19's measure against the emulators: a `Lexical` table with 20,000 files loaded receives
//! 100 new ones; the next cycle lists only from its cursor and reads only the ledger past it,
//! counted through the controller's own metrics (`bqsteward_cloud_calls_total` for
//! `objects.list` pages, `bqsteward_table_listed_objects_total`,
//! `bqsteward_table_ledger_rows_read_total`), and the totals it reports (files loaded, rows) equal
//! a count of the whole ledger. Its own test binary: the call counter is process-wide, so nothing
//! else may list while it counts.

mod support;

use bqsteward::cloud::bigquery::BigQueryRest;
use bqsteward::cloud::storage::{GcsRest, Storage};
use bqsteward::controller::metrics::Metrics;
use bqsteward::engine::tables;
use bqsteward::ingest::exec::Target;
use futures::StreamExt;
use support::{emulators, unique};

const PROJECT: &str = "bqsteward-test";

/// The value of one sample line of `/metrics` (0 when absent).
fn sample(metrics: &Metrics, line_start: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// (objects.list pages, objects listed, ledger rows read) so far.
fn reads(metrics: &Metrics, table: &str) -> (f64, f64, f64) {
    (
        sample(
            metrics,
            "bqsteward_cloud_calls_total{api=\"storage\",operation=\"objects.list\",outcome=\"ok\"}",
        ),
        sample(
            metrics,
            &format!("bqsteward_table_listed_objects_total{{table=\"{table}\"}}"),
        ),
        sample(
            metrics,
            &format!("bqsteward_table_ledger_rows_read_total{{table=\"{table}\"}}"),
        ),
    )
}

#[tokio::test]
async fn a_cycle_of_a_table_with_20000_files_loaded_reads_what_is_new() {
    let metrics = Metrics::new();
    bqsteward::cloud::observe_calls(metrics.call_observer());
    bqsteward::ingest::observe_delays(metrics.delay_observer());
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("scale").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let upload = |range: std::ops::Range<usize>| {
        let (gcs, bucket) = (&gcs, &bucket);
        futures::stream::iter(range)
            .map(move |i| async move {
                let name = format!("in/2026/11/27/{:02}/f-{i:06}.json", i / 1000);
                support::upload_id_row(gcs, bucket, &name, i).await;
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
    };
    upload(0..20_000).await;
    let spec = serde_yaml::from_str(&format!(
        "source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON, ordering: Lexical, lateArrival: 0s}}\n\
         destination: {{project: {PROJECT}, dataset: {}, table: t}}\n\
         loadPolicy: {{maxFilesPerJob: 10000}}\n\
         schema:\n- {{name: id, type: INT64}}\n",
        unique("scale")
    ))
    .unwrap();
    let t = Target::new("ns/scale", &spec, None).unwrap();
    let table = t.table.to_string();
    let parts = support::EngineParts::new();
    let c = parts.clients(&bq, &gcs);
    // One cycle: (list pages, objects listed, ledger rows read, files loaded, the totals the
    // cycle observed).
    let cycle = || async {
        let before = reads(&metrics, &table);
        let state = tables::plan(&c, &t, chrono::Utc::now().timestamp_millis())
            .await
            .unwrap();
        let after = reads(&metrics, &table);
        let loaded = match tables::apply(&c, &t, &state).await.loads {
            Some(Ok(r)) => r.files_loaded,
            Some(Err(e)) => panic!("{e}"),
            None => 0,
        };
        let s = &state.observed.stats;
        (
            (after.0 - before.0) as usize,
            (after.1 - before.1) as usize,
            (after.2 - before.2) as usize,
            loaded,
            (s.files_loaded, s.rows_loaded),
        )
    };

    // The first cycle lists the whole prefix (20 pages of 1,000) and loads everything; the
    // second still lists from the first name (nothing was settled when the first was planned)
    // and moves the cursor to the last.
    let (pages, listed, ledger_rows, loaded, _) = cycle().await;
    assert_eq!((pages, listed, ledger_rows, loaded), (20, 20_000, 0, 20_000));
    let (pages, listed, ledger_rows, loaded, totals) = cycle().await;
    assert_eq!(
        (pages, listed, ledger_rows, loaded, totals),
        (20, 20_000, 20_000, 0, (20_000, 20_000))
    );
    // 100 new files: one page from the cursor (the last loaded name and the new ones), one
    // ledger row; the totals still count the whole table.
    upload(20_000..20_100).await;
    let (pages, listed, ledger_rows, loaded, totals) = cycle().await;
    assert_eq!(
        (pages, listed, ledger_rows, loaded, totals),
        (1, 101, 1, 100, (20_000, 20_000))
    );
    // The next lists from the last name before the new ones (the cursor recorded when they were
    // still to load), then from the last name.
    let (pages, listed, ledger_rows, loaded, totals) = cycle().await;
    assert_eq!(
        (pages, listed, ledger_rows, loaded, totals),
        (1, 101, 101, 0, (20_100, 20_100))
    );
    let (pages, listed, ledger_rows, _, totals) = cycle().await;
    assert_eq!((pages, listed, ledger_rows, totals), (1, 1, 1, (20_100, 20_100)));
    // The same totals counted over the whole ledger.
    let whole = t.ledger.stats(&bq, &table, None).await.unwrap();
    assert_eq!((whole.files_loaded, whole.rows_loaded), (20_100, 20_100));
}

/// Whether a request bqsteward sent to BigQuery changes something: every method but GET, except
/// the queries and job inserts that only read (`SELECT`, `WITH`).
fn is_write(s: &support::proxy::Seen) -> bool {
    if s.method == "GET" {
        return false;
    }
    let query = serde_json::from_str::<serde_json::Value>(&s.body).ok().and_then(|b| {
        b.get("query")
            .or_else(|| b.pointer("/configuration/query/query"))
            .and_then(|q| q.as_str())
            .map(|q| q.trim_start().to_ascii_uppercase())
    });
    !(s.method == "POST" && query.is_some_and(|q| q.starts_with("SELECT") || q.starts_with("WITH")))
}

/// Issue 19's no-op measure: 50 resources per data dataset (45 tables with full and clean views,
/// the dataset's access list, 4 consumer projects) applied once, then applied again with nothing
/// to do — through a proxy that records every BigQuery request: no write, and each dataset read at
/// most once. Two datasets (100 resources) by default; `BQSTEWARD_NOOP_DATASETS=20` measures
/// 1,000 (the first apply then takes about 15 minutes against bqemulator, which is why CI runs
/// 100).
#[tokio::test]
async fn a_no_op_apply_writes_nothing_and_reads_each_dataset_once() {
    const DATA: &str = "bqsteward-noop";
    const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-noop.iam.gserviceaccount.com";
    let e = emulators();
    let proxy = support::proxy::Proxy::start(&e.bigquery.replace("/bigquery/v2", "")).await;
    let iam = bqsteward::standins::resource_manager::FakeIam::start().await;
    let tag = unique("noop");
    let bucket = tag.replace('_', "-");
    GcsRest::new(&e).unwrap().create_bucket(DATA, &bucket).await.unwrap();
    let datasets: usize = std::env::var("BQSTEWARD_NOOP_DATASETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut m = String::new();
    for d in 0..datasets {
        let dataset = format!("{tag}_{d:02}");
        for t in 0..45 {
            m.push_str(&format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t{d:02}-{t:02}, namespace: team-{d:02}}}\n\
                 spec:\n  source: {{uri: 'gs://{bucket}/{d:02}/{t:02}/', format: NEWLINE_DELIMITED_JSON}}\n  \
                 destination: {{project: {DATA}, dataset: {dataset}, table: t{t:02}}}\n  \
                 schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}, {{name: email, type: STRING}}]\n  piiColumns: [email]\n  primaryKey: [id]\n  versionColumn: v\n  \
                 views: {{full: true, clean: true}}\n---\n"
            ));
        }
        m.push_str(&format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: raw-{d:02}, namespace: team-{d:02}}}\n\
             spec:\n  project: {DATA}\n  dataset: {dataset}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    \
             - {{role: READER, group: auditors-{d:02}@acme.com}}\n---\n"
        ));
        for c in 0..4 {
            m.push_str(&format!(
                "apiVersion: bqsteward.dev/v1alpha1\nkind: ConsumerProject\nmetadata: {{name: shop-{c}, namespace: team-{d:02}}}\n\
                 spec:\n  project: {DATA}\n  dataset: {tag}_c{d:02}_{c}\n  readers: [{{group: shop-{d:02}-{c}@acme.com}}]\n  \
                 views:\n    - {{name: v, source: {{ingestedTable: t{d:02}-{c:02}, layer: clean}}, columns: [id]}}\n---\n"
            ));
        }
    }
    let resources = m.matches("\nkind: ").count();
    assert_eq!(resources, 50 * datasets);
    let bq_host = proxy.url.clone();
    let env = [
        ("BIGQUERY_EMULATOR_HOST", bq_host.as_str()),
        ("STORAGE_EMULATOR_HOST", e.storage.as_str()),
        ("RESOURCE_MANAGER_EMULATOR_HOST", iam.url.as_str()),
        ("BQSTEWARD_IDENTITY", IDENTITY),
    ];
    let first = support::cli::bqsteward(&["apply"], &m, &env).await;
    assert!(first.code == 0 || first.code == 2, "{}\n{}", first.stdout, first.stderr);
    let (before, sets) = (proxy.seen().len(), iam.sets());
    let again = support::cli::bqsteward(&["apply"], &m, &env).await;
    let seen = &proxy.seen()[before..];
    let writes: Vec<String> = seen
        .iter()
        .filter(|s| is_write(s))
        .map(|s| {
            format!(
                "{} {} {}",
                s.method,
                s.path,
                s.body.chars().take(200).collect::<String>()
            )
        })
        .collect();
    assert!(writes.is_empty(), "{} writes:\n{}", writes.len(), writes.join("\n"));
    assert_eq!(iam.sets(), sets, "no IAM policy written");
    let mut per_dataset: std::collections::BTreeMap<String, usize> = Default::default();
    for s in seen.iter().filter(|s| s.method == "GET") {
        let path = s.path.split('?').next().unwrap_or_default();
        if let Some(rest) = path.split("/datasets/").nth(1)
            && !rest.contains('/')
        {
            *per_dataset.entry(rest.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_dataset.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "datasets read more than once: {twice:?}");
    eprintln!(
        "no-op apply of {resources} resources: {} BigQuery requests, {} datasets read once each, 0 writes; exit {}",
        seen.len(),
        per_dataset.len(),
        again.code
    );
}
