//! IngestedTable loads against the real emulators (bqemulator + fake-gcs-server), through the
//! production clients and executor. Where bqemulator lacks BigQuery behaviour (409 on a duplicate
//! job id, transient 5xx/429), a fault proxy in front of it supplies BigQuery's documented answers.

mod support;

use bqsteward::cloud::Endpoints;
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::Param;
use bqsteward::cloud::storage::{GcsRest, Storage};
use bqsteward::crd::ingested_table::IngestedTableSpec;
use bqsteward::ingest::exec::{Executor, Report, Step, Target, observe, plan_table};
use bqsteward::ingest::jobs::RunError;
use bqsteward::ingest::model::Category;
use bqsteward::ingest::reload::Reload;
use support::proxy::{Fault, Proxy};
use support::{emulators, unique};

const PROJECT: &str = "bqsteward-test";

struct Env {
    bq: BigQueryRest,
    gcs: GcsRest,
    bucket: String,
    dataset: String,
}

async fn env(endpoints: &Endpoints) -> Env {
    let bq = BigQueryRest::new(endpoints).await.unwrap();
    let gcs = GcsRest::new(endpoints).unwrap();
    let bucket = unique("igt").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let dataset = unique("igt");
    Env {
        bq,
        gcs,
        bucket,
        dataset,
    }
}

fn spec(env: &Env, table: &str, extra: &str) -> IngestedTableSpec {
    let yaml = format!(
        "source: {{uri: 'gs://{b}/in/', format: NEWLINE_DELIMITED_JSON}}\n\
         destination: {{project: {PROJECT}, dataset: {d}, table: {table}}}\n\
         schema:\n- {{name: id, type: INT64, mode: REQUIRED}}\n- {{name: name, type: STRING}}\n{extra}",
        b = env.bucket,
        d = env.dataset
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// NDJSON with `rows` rows, ids starting at `first`.
fn ndjson(first: i64, rows: i64) -> Vec<u8> {
    (first..first + rows)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

async fn put(env: &Env, name: &str, data: Vec<u8>) {
    env.gcs
        .upload(&env.bucket, name, data, "application/octet-stream")
        .await
        .unwrap();
}

/// One reconcile: observe → plan → apply.
async fn run(bq: &dyn BigQuery, gcs: &dyn Storage, t: &Target, crash: Option<Step>) -> Result<Report, RunError> {
    let o = observe(bq, gcs, t).await?;
    let p = plan_table(t, &o, chrono::Utc::now().timestamp_millis());
    let mut exec = Executor::new(bq, t, p.loads.budget_left).with_storage(gcs);
    exec.crash_after = crash;
    exec.apply(&p, &o).await
}

async fn scalar(bq: &dyn BigQuery, sql: &str, params: &[Param]) -> i64 {
    let rows = bq.query(PROJECT, "US", sql, params).await.unwrap();
    rows.rows[0][0].as_deref().unwrap_or("0").parse().unwrap()
}

async fn row_count(env: &Env, t: &Target) -> i64 {
    scalar(&env.bq, &format!("SELECT COUNT(*) FROM {}", t.table.sql()), &[]).await
}

async fn distinct_ids(env: &Env, t: &Target) -> i64 {
    scalar(
        &env.bq,
        &format!("SELECT COUNT(DISTINCT id) FROM {}", t.table.sql()),
        &[],
    )
    .await
}

/// (files with a LOADED event, the largest number of LOADED events of one file generation).
async fn ledger_loaded(env: &Env, t: &Target) -> (i64, i64) {
    let sql = format!(
        "SELECT COUNT(*), COALESCE(MAX(n), 0) FROM (SELECT uri, generation, COUNT(*) AS n FROM {} \
         WHERE table_ref = @t AND state = 'LOADED' GROUP BY uri, generation)",
        t.ledger.table("load_files").sql()
    );
    let rows = env
        .bq
        .query(PROJECT, "US", &sql, &[Param::string("t", &t.table.to_string())])
        .await
        .unwrap();
    let get = |i: usize| rows.rows[0][i].as_deref().unwrap_or("0").parse().unwrap();
    (get(0), get(1))
}

async fn assert_nothing_to_do(env: &Env, t: &Target) {
    let o = observe(&env.bq, &env.gcs, t).await.unwrap();
    let p = plan_table(t, &o, chrono::Utc::now().timestamp_millis());
    assert!(p.is_empty(), "expected an empty plan, got {:?}", p.loads);
}

#[tokio::test]
async fn two_hundred_files_across_prefixes_load_exactly_once() {
    let env = env(&emulators()).await;
    for i in 0..200 {
        put(&env, &format!("in/p{}/f{i:03}.json", i % 4), ndjson(i * 10, 3)).await;
    }
    let t = Target::new(
        "default/orders",
        &spec(&env, "orders", "loadPolicy: {maxFilesPerJob: 60}\n"),
        None,
    )
    .unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(
        (r.files_loaded, r.rows_loaded, r.batches_loaded),
        (200, 600, 4),
        "{r:?}"
    );
    assert_eq!(r.load_jobs, 4);
    assert_eq!(row_count(&env, &t).await, 600);
    assert_eq!(ledger_loaded(&env, &t).await, (200, 1));
    // Lineage: every row carries its batch.
    let unlabelled = scalar(
        &env.bq,
        &format!(
            "SELECT COUNT(*) FROM {} WHERE _bqsteward_batch_id IS NULL OR _bqsteward_loaded_at IS NULL",
            t.table.sql()
        ),
        &[],
    )
    .await;
    assert_eq!(unlabelled, 0);
    // Second apply: nothing to do, no job.
    assert_nothing_to_do(&env, &t).await;
    let again = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert!(again.jobs.is_empty(), "second apply ran jobs: {:?}", again.jobs);
    // New files: only they load.
    put(&env, "in/p9/late.json", ndjson(5000, 2)).await;
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!((r.files_loaded, r.rows_loaded), (1, 2));
    assert_eq!(row_count(&env, &t).await, 602);
    let o = observe(&env.bq, &env.gcs, &t).await.unwrap();
    assert_eq!(
        (o.stats.files_loaded, o.stats.rows_loaded, o.stats.jobs_today),
        (201, 602, 5)
    );
}

#[tokio::test]
async fn a_crash_after_any_step_neither_loses_nor_duplicates() {
    let endpoints = emulators();
    for step in [
        Step::LoadInserted,
        Step::StagingLoaded,
        Step::Moved,
        Step::LedgerWritten,
    ] {
        let env = env(&endpoints).await;
        for i in 0..12 {
            put(&env, &format!("in/f{i:02}.json"), ndjson(i * 100, 5)).await;
        }
        let t = Target::new(
            "default/crash",
            &spec(&env, "crash", "loadPolicy: {maxFilesPerJob: 5}\n"),
            None,
        )
        .unwrap();
        let err = run(&env.bq, &env.gcs, &t, Some(step)).await.unwrap_err();
        assert!(matches!(err, RunError::Crash(s) if s == step), "{step:?}: {err}");
        // The next run (a restarted process) finishes the work.
        let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
        assert!(r.stopped.is_none(), "{step:?}: {r:?}");
        assert_eq!(row_count(&env, &t).await, 60, "{step:?}: rows after recovery");
        assert_eq!(distinct_ids(&env, &t).await, 60, "{step:?}: duplicates after recovery");
        assert_eq!(
            ledger_loaded(&env, &t).await,
            (12, 1),
            "{step:?}: ledger after recovery"
        );
        assert_nothing_to_do(&env, &t).await;
    }
}

#[tokio::test]
async fn bad_files_are_bisected_out_and_quarantined() {
    let env = env(&emulators()).await;
    for i in 0..50 {
        put(&env, &format!("in/good{i:02}.json"), ndjson(i * 10, 3)).await;
    }
    for i in 0..3 {
        put(
            &env,
            &format!("in/corrupt{i}.json"),
            b"{\"id\": 1, \"name\": \n".to_vec(),
        )
        .await;
    }
    put(
        &env,
        "in/retyped.json",
        b"{\"id\": \"not-a-number\", \"name\": \"x\"}\n".to_vec(),
    )
    .await;
    let t = Target::new("default/bad", &spec(&env, "bad", ""), None).unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(row_count(&env, &t).await, 150, "{r:?}");
    assert_eq!(distinct_ids(&env, &t).await, 150);
    let mut cats: Vec<(String, Category)> = r
        .quarantined
        .iter()
        .map(|(u, _, c, _)| (u.rsplit('/').next().unwrap().to_string(), *c))
        .collect();
    cats.sort();
    assert_eq!(
        cats,
        [
            ("corrupt0.json".into(), Category::Corrupt),
            ("corrupt1.json".into(), Category::Corrupt),
            ("corrupt2.json".into(), Category::Corrupt),
            ("retyped.json".into(), Category::IncompatibleSchema),
        ]
    );
    // Minimum is 1 job; bisection isolates k bad files among n with at most 2·k·⌈log2 n⌉ more.
    let bound = 1 + 2 * 4 * 54f64.log2().ceil() as u32;
    println!(
        "bad-file isolation: {} load jobs for 54 files with 4 bad (bound {bound})",
        r.load_jobs
    );
    assert!(r.load_jobs <= bound, "{} load jobs", r.load_jobs);
    assert_eq!(ledger_loaded(&env, &t).await, (50, 1));
    let o = observe(&env.bq, &env.gcs, &t).await.unwrap();
    assert_eq!(o.stats.quarantined, 4);
    assert_eq!(o.stats.recent_quarantined.len(), 4);
    // Quarantined files are not retried; a new generation of a fixed file is.
    assert_nothing_to_do(&env, &t).await;
    put(&env, "in/corrupt0.json", ndjson(9000, 1)).await;
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!((r.files_loaded, r.rows_loaded), (1, 1));
}

#[tokio::test]
async fn snapshot_mode_replaces_the_table_with_the_newest_complete_set() {
    let env = env(&emulators()).await;
    put(&env, "in/dt=2026-11-20/a.json", ndjson(0, 4)).await;
    put(&env, "in/dt=2026-11-20/b.json", ndjson(4, 4)).await;
    put(&env, "in/dt=2026-11-20/_SUCCESS", b"ok".to_vec()).await;
    let t = Target::new("default/snap", &spec(&env, "snap", "mode: Snapshot\n"), None).unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!((r.files_loaded, r.rows_loaded), (2, 8), "{r:?}");
    assert_eq!(row_count(&env, &t).await, 8);
    // An incomplete newer set changes nothing.
    put(&env, "in/dt=2026-11-21/a.json", ndjson(100, 3)).await;
    assert_nothing_to_do(&env, &t).await;
    // Once complete, it replaces the table in one statement.
    put(&env, "in/dt=2026-11-21/_SUCCESS", b"ok".to_vec()).await;
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!((r.files_loaded, r.rows_loaded), (1, 3), "{r:?}");
    assert_eq!(row_count(&env, &t).await, 3);
    assert_eq!(
        scalar(
            &env.bq,
            &format!("SELECT COUNT(DISTINCT _bqsteward_batch_id) FROM {}", t.table.sql()),
            &[]
        )
        .await,
        1
    );
    // A newer set with a corrupt file is quarantined; the table keeps the previous snapshot.
    put(&env, "in/dt=2026-11-22/a.json", ndjson(200, 3)).await;
    put(&env, "in/dt=2026-11-22/b.json", b"{broken\n".to_vec()).await;
    put(&env, "in/dt=2026-11-22/_SUCCESS", b"ok".to_vec()).await;
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert!(r.snapshot_blocked, "{r:?}");
    assert_eq!(r.quarantined.len(), 1);
    assert_eq!(row_count(&env, &t).await, 3);
    assert_nothing_to_do(&env, &t).await;
}

#[tokio::test]
async fn csv_and_parquet_load_and_additive_schema_changes_flow_through() {
    let env = env(&emulators()).await;
    // CSV with a header and a quoted comma.
    put(&env, "csv/a.csv", b"id,name\n1,\"a,b\"\n2,c\n".to_vec()).await;
    let mut s = spec(&env, "from_csv", "");
    s.source.uri = format!("gs://{}/csv/", env.bucket);
    s.source.format = Some(bqsteward::crd::ingested_table::SourceFormat::Csv);
    s.source.csv = Some(bqsteward::crd::ingested_table::CsvOptions {
        skip_leading_rows: 1,
        ..Default::default()
    });
    let t = Target::new("default/csv", &s, None).unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(r.rows_loaded, 2, "{r:?}");
    // Parquet written by pyarrow (from the emulators' venv).
    let py = concat!(env!("CARGO_MANIFEST_DIR"), "/.emulators/venv/bin/python");
    let out = std::process::Command::new(py)
        .args([
            "-c",
            "import sys, io, pyarrow as pa, pyarrow.parquet as pq\n\
             b = io.BytesIO(); pq.write_table(pa.table({'id': [1, 2, 3], 'name': ['x', 'y', 'z']}), b)\n\
             sys.stdout.buffer.write(b.getvalue())",
        ])
        .output()
        .expect("run the emulators' python (scripts/emulators.sh install)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    put(&env, "pq/a.parquet", out.stdout).await;
    let mut s = spec(&env, "from_parquet", "");
    s.source.uri = format!("gs://{}/pq/", env.bucket);
    s.source.format = Some(bqsteward::crd::ingested_table::SourceFormat::Parquet);
    let t = Target::new("default/pq", &s, None).unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(r.rows_loaded, 3, "{r:?}");

    // Additive change: a new NULLABLE column declared; old rows keep NULL, new files fill it.
    put(&env, "in/old.json", ndjson(0, 2)).await;
    let t = Target::new("default/grow", &spec(&env, "grow", ""), None).unwrap();
    run(&env.bq, &env.gcs, &t, None).await.unwrap();
    put(
        &env,
        "in/new.json",
        b"{\"id\": 10, \"name\": \"n\", \"email\": \"a@example.com\"}\n".to_vec(),
    )
    .await;
    let grown = spec(&env, "grow", "")
        .schema
        .into_iter()
        .chain([serde_yaml::from_str("{name: email, type: STRING}").unwrap()]);
    let mut s = spec(&env, "grow", "");
    s.schema = grown.collect();
    let t = Target::new("default/grow", &s, None).unwrap();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert!(r.schema_changed, "{r:?}");
    assert_eq!(r.rows_loaded, 1);
    let with_email = scalar(&env.bq, &format!("SELECT COUNT(email) FROM {}", t.table.sql()), &[]).await;
    assert_eq!((row_count(&env, &t).await, with_email), (3, 1));
    // An incompatible change (type change) loads nothing and says why.
    let mut s2 = s.clone();
    s2.schema[1] = serde_yaml::from_str("{name: name, type: INT64}").unwrap();
    let t2 = Target::new("default/grow", &s2, None).unwrap();
    put(&env, "in/newer.json", ndjson(20, 1)).await;
    let r = run(&env.bq, &env.gcs, &t2, None).await.unwrap();
    assert!(r.stopped.as_deref().unwrap_or("").contains("type change"), "{r:?}");
    assert_eq!(row_count(&env, &t).await, 3);
}

#[tokio::test]
async fn reingestion_replaces_rows_once() {
    let env = env(&emulators()).await;
    for i in 0..6 {
        put(&env, &format!("in/d{}/f{i}.json", i % 2), ndjson(i * 10, 2)).await;
    }
    let t = Target::new(
        "default/re",
        &spec(&env, "re", "loadPolicy: {maxFilesPerJob: 2}\n"),
        None,
    )
    .unwrap();
    run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(row_count(&env, &t).await, 12);
    let reload = Reload::parse(&format!("id=fix-1 prefix=gs://{}/in/d0/", env.bucket)).unwrap();
    let tr = Target::new(
        "default/re",
        &spec(&env, "re", "loadPolicy: {maxFilesPerJob: 2}\n"),
        Some(reload),
    )
    .unwrap();
    let r = run(&env.bq, &env.gcs, &tr, None).await.unwrap();
    assert!(r.files_loaded >= 3, "{r:?}");
    assert_eq!(row_count(&env, &t).await, 12, "reload doubled or lost rows");
    assert_eq!(distinct_ids(&env, &t).await, 12);
    // The same request again does nothing.
    let again = run(&env.bq, &env.gcs, &tr, None).await.unwrap();
    assert!(again.jobs.is_empty(), "{again:?}");
}

#[tokio::test]
async fn transient_faults_and_lost_answers_converge_without_duplicates() {
    let endpoints = emulators();
    let proxy = Proxy::start(&endpoints.bigquery.replace("/bigquery/v2", "")).await;
    let via = Endpoints {
        bigquery: format!("{}/bigquery/v2", proxy.url),
        ..endpoints.clone()
    };
    let env = env(&via).await;
    for i in 0..10 {
        put(&env, &format!("in/f{i}.json"), ndjson(i * 10, 3)).await;
    }
    let t = Target::new(
        "default/flaky",
        &spec(&env, "flaky", "loadPolicy: {maxFilesPerJob: 4}\n"),
        None,
    )
    .unwrap();
    // Transient refusals, an insert whose answer is lost after the job ran, and one that ran
    // while the client was told 503 (its retry then meets BigQuery's 409 duplicate).
    proxy.inject("POST", "/jobs", Fault::Status(503, "backendError"));
    proxy.inject("POST", "/jobs", Fault::ResetAfterForward);
    proxy.inject("POST", "/jobs", Fault::Status(429, "rateLimitExceeded"));
    proxy.inject("POST", "/jobs", Fault::ForwardThenStatus(503, "backendError"));
    proxy.inject("GET", "/jobs/", Fault::Status(500, "internalError"));
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(proxy.pending_faults(), 0, "every fault fired");
    assert_eq!(r.rows_loaded, 30, "{r:?}");
    assert_eq!(row_count(&env, &t).await, 30);
    assert_eq!(distinct_ids(&env, &t).await, 30);
    assert_eq!(ledger_loaded(&env, &t).await, (10, 1));
    assert_nothing_to_do(&env, &t).await;
}

/// With `excludedColumns`, undeclared fields must still be caught: the load ignores unknown values
/// (that is how excluded fields are dropped), so the first lines of each new file are read first
/// and a file with a field that is neither declared nor excluded is quarantined — the others load,
/// card numbers included nowhere. The read's cost is printed.
#[tokio::test]
async fn an_undeclared_field_is_quarantined_even_with_excluded_columns() {
    let e = emulators();
    let env = env(&e).await;
    put(
        &env,
        "in/a.json",
        b"{\"id\": 1, \"name\": \"a\", \"card_number\": \"4111111111111111\"}\n".to_vec(),
    )
    .await;
    put(
        &env,
        "in/b.json",
        b"{\"id\": 2, \"name\": \"b\", \"card_number\": \"4111111111111111\", \"coupon\": \"SUMMER\"}\n".to_vec(),
    )
    .await;
    let t = Target::new(
        "default/excl",
        &spec(&env, "excl", "excludedColumns: [card_number]\n"),
        None,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let r = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    println!(
        "undeclared-field check: {} files, {} bytes read, whole run {:?}",
        r.prechecked.0,
        r.prechecked.1,
        started.elapsed()
    );
    assert_eq!(r.prechecked.0, 2, "{r:?}");
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    let (uri, _, cat, msg) = &r.quarantined[0];
    assert!(
        uri.ends_with("in/b.json") && *cat == Category::IncompatibleSchema,
        "{r:?}"
    );
    assert!(msg.contains("`coupon`") && msg.contains("excludedColumns"), "{msg}");
    assert_eq!(row_count(&env, &t).await, 1);
    let info = env.bq.get_table(&t.table).await.unwrap().unwrap();
    assert!(
        !info
            .schema
            .fields
            .iter()
            .any(|f| f.name == "card_number" || f.name == "coupon")
    );
    // The next run reads nothing again: the files are in the ledger.
    let again = run(&env.bq, &env.gcs, &t, None).await.unwrap();
    assert_eq!(again.prechecked.0, 0, "{again:?}");
}
