//! Delta Lake sources against real peers: moto's S3 server (`scripts/lake.sh`), Delta tables written
//! by the `deltalake` package (delta-rs), bqemulator and fake-gcs-server, driven through the real
//! `bqsteward apply` binary with `--secrets-dir`. After every kind of Delta version the table holds
//! exactly the rows the Delta table holds at that version (read back by delta-rs), and moto's own
//! request log shows each data file read from S3 once.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::storage::{GcsRest, Storage};
use support::cli::{bqsteward, emulator_env_with_identity, ok};
use support::{emulators, lake, unique};

const PROJECT: &str = "bqsteward-test";

struct Env {
    bq: BigQueryRest,
    gcs: GcsRest,
    bucket: String,
    lake_bucket: String,
    dataset: String,
    secrets: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    endpoint: String,
    log: String,
    keyed_endpoint: String,
}

async fn env() -> Env {
    let endpoints = emulators();
    let support::Lake {
        endpoint,
        log,
        keyed_endpoint,
        ..
    } = lake();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("dl").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let dir = secrets.path().join("lake-reader");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("AWS_ACCESS_KEY_ID"), "reader\n").unwrap();
    std::fs::write(dir.join("AWS_SECRET_ACCESS_KEY"), "reader-secret-do-not-print\n").unwrap();
    let e = Env {
        bq,
        gcs,
        lake_bucket: unique("lake").replace('_', "-"),
        bucket,
        dataset: unique("dl"),
        secrets,
        env: emulator_env_with_identity(&endpoints),
        endpoint,
        log,
        keyed_endpoint,
    };
    e.writer(&["bucket", &e.lake_bucket]);
    e
}

impl Env {
    /// Runs the Delta writer; its standard output.
    fn writer(&self, args: &[&str]) -> String {
        support::delta_writer(args)
    }

    fn uri(&self, table: &str) -> String {
        format!("s3://{}/silver/{table}", self.lake_bucket)
    }

    async fn apply(&self, manifest: &str) -> support::cli::Run {
        let dir = self.secrets.path().to_str().unwrap().to_string();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bqsteward(&["apply", "--secrets-dir", &dir], manifest, &env).await
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.bq.query(PROJECT, "US", sql, &[]).await.unwrap().rows
    }

    /// The Delta table's rows now, as (id, status, amount) text, sorted — read by delta-rs.
    fn delta_rows(&self, table: &str) -> Vec<Vec<Option<String>>> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&self.writer(&["read", &self.uri(table)])).unwrap();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let mut out: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| vec![text(&r["id"]), text(&r["status"]), text(&r["amount"]), text(&r["day"])])
            .collect();
        out.sort();
        out
    }

    /// The BigQuery table's (or a view's) rows, same shape.
    async fn table_rows(&self, table: &str) -> Vec<Vec<Option<String>>> {
        self.rows_of(&format!("{PROJECT}.{}.{table}", self.dataset)).await
    }

    /// The rows of a table or view (`project.dataset.name`), same shape.
    async fn rows_of(&self, name: &str) -> Vec<Vec<Option<String>>> {
        let mut got = self
            .rows(&format!(
                "SELECT CAST(id AS STRING), status, CAST(amount AS STRING), CAST(day AS STRING) FROM `{name}`"
            ))
            .await;
        for r in &mut got {
            // Float text: BigQuery says 12.5 where JSON says 12.5; integers-as-floats "10.0" vs "10".
            if let Some(Some(a)) = r.get_mut(2)
                && let Ok(f) = a.parse::<f64>()
            {
                *a = serde_json::Value::from(f).to_string();
            }
        }
        got.sort();
        got
    }

    /// Lines of moto's request log from byte `from`: the GETs of `table`'s Parquet data files.
    fn data_gets(&self, from: u64, table: &str) -> Vec<String> {
        let text = std::fs::read(&self.log).unwrap();
        let text = String::from_utf8_lossy(&text[from as usize..]).into_owned();
        let needle = format!("\"GET /{}/silver/{table}/", self.lake_bucket);
        text.lines()
            .filter(|l| l.contains(&needle) && l.contains(".parquet"))
            .map(|l| l.split('"').nth(1).unwrap_or_default().to_string())
            .collect()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }
}

fn manifest(e: &Env, table: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: {name}, namespace: orders}}
spec:
  source:
    delta:
      uri: {uri}/
      region: eu-west-1
      endpoint: {endpoint}
      credentialsSecret: {{name: lake-reader}}
      columns: [id, status, amount, day]
    landing: gs://{bucket}/delta/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  schema:
  - {{name: id, type: INT64}}
  - {{name: status, type: STRING}}
  - {{name: amount, type: FLOAT64}}
  - {{name: day, type: STRING}}
  primaryKey: [id]
{extra}"#,
        name = table.replace('_', "-"),
        uri = e.uri(table),
        endpoint = e.endpoint,
        bucket = e.bucket,
        dataset = e.dataset,
    )
}

fn rows(json: &str) -> String {
    json.to_string()
}

/// Appends, an UPDATE, a DELETE, a MERGE, an OPTIMIZE and an added column: after each version the
/// table holds exactly the Delta table's rows; each data file is read from S3 once; the OPTIMIZE
/// reads nothing; columns not listed never reach BigQuery.
#[tokio::test]
async fn the_table_mirrors_every_kind_of_delta_version_and_copies_each_file_once() {
    let e = env().await;
    let table = unique("orders");
    let uri = e.uri(&table);
    // The dedup (full) and clean views too; the latest row per id is the one with the greatest
    // amount (a mirror has one row per id anyway).
    let m = manifest(
        &e,
        &table,
        "  versionColumn: amount\n  views: {full: true, clean: true}\n",
    );
    let mut gets: Vec<String> = Vec::new();
    let versions: Vec<(&str, Vec<String>)> = vec![
        (
            "create",
            vec![
                "write".into(),
                uri.clone(),
                rows(
                    r#"[{"id":1,"status":"new","amount":10.5,"day":"d1","card":"4111"},{"id":2,"status":"new","amount":20.0,"day":"d1","card":"4222"},{"id":3,"status":"new","amount":30.25,"day":"d2","card":"4333"}]"#,
                ),
                "append".into(),
                "day".into(),
            ],
        ),
        (
            "append",
            vec![
                "write".into(),
                uri.clone(),
                rows(r#"[{"id":4,"status":"new","amount":40.0,"day":"d2","card":"4444"}]"#),
                "append".into(),
                "day".into(),
            ],
        ),
        (
            "update",
            vec![
                "update".into(),
                uri.clone(),
                "id = 2".into(),
                r#"{"status":"'paid'"}"#.into(),
            ],
        ),
        ("delete", vec!["delete".into(), uri.clone(), "id = 3".into()]),
        (
            "merge",
            vec![
                "merge".into(),
                uri.clone(),
                rows(
                    r#"[{"id":1,"status":"shipped","amount":10.5,"day":"d1","card":"4111"},{"id":5,"status":"new","amount":50.0,"day":"d3","card":"4555"}]"#,
                ),
                "id".into(),
            ],
        ),
        // d1 gets a second file, so the OPTIMIZE has something to compact.
        (
            "append before optimize",
            vec![
                "write".into(),
                uri.clone(),
                rows(r#"[{"id":6,"status":"new","amount":60.0,"day":"d1","card":"4666"}]"#),
                "append".into(),
                "day".into(),
            ],
        ),
        ("optimize", vec!["optimize".into(), uri.clone()]),
        // A change inside the compacted file: its group's rows are replaced.
        (
            "update after optimize",
            vec![
                "update".into(),
                uri.clone(),
                "id = 6".into(),
                r#"{"status":"'refunded'"}"#.into(),
            ],
        ),
    ];
    for (kind, args) in &versions {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        e.writer(&args);
        let before = e.log_len();
        let r = e.apply(&m).await;
        ok(&r, 0);
        assert!(
            !r.stdout.contains("reader-secret") && !r.stderr.contains("reader-secret"),
            "the key leaked"
        );
        let read = e.data_gets(before, &table);
        if *kind == "optimize" {
            assert!(read.is_empty(), "OPTIMIZE read data files from S3: {read:?}");
        }
        gets.extend(read);
        let want = e.delta_rows(&table);
        assert_eq!(
            e.table_rows(&table).await,
            want,
            "after the {kind}: the table differs from the Delta table"
        );
        for layer in ["full", "clean"] {
            let view = format!("{PROJECT}.{}__views_{layer}.{table}", e.dataset);
            assert_eq!(
                e.rows_of(&view).await,
                want,
                "after the {kind}: the {layer} view differs"
            );
        }
    }
    // Each data file read from S3 at most once over all versions.
    let mut seen = std::collections::BTreeMap::new();
    for g in &gets {
        *seen.entry(g.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    assert!(!seen.is_empty());
    // The column not listed never reached BigQuery; the lineage column names Delta files.
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let cols =
        e.bq.get_table(&bqsteward::cloud::bqtypes::TableRef::new(PROJECT, &e.dataset, &table))
            .await
            .unwrap()
            .unwrap();
    assert!(!cols.schema.fields.iter().any(|f| f.name == "card"));
    let files = e
        .rows(&format!("SELECT DISTINCT _bqsteward_source_file FROM {raw}"))
        .await;
    assert!(
        files
            .iter()
            .all(|r| r[0].as_deref().is_some_and(|f| f.starts_with(&format!("{uri}/day=")))),
        "{files:?}"
    );
    // Schema evolution: a column added on the Delta side is not loaded until declared.
    e.writer(&[
        "write",
        &uri,
        r#"[{"id":7,"status":"new","amount":70.0,"day":"d3","card":"4777","channel":"web"}]"#,
        "append",
        "day",
        "schema_merge",
    ]);
    let r = e.apply(&m).await;
    ok(&r, 0);
    assert_eq!(
        e.table_rows(&table).await,
        e.delta_rows(&table),
        "after the schema evolution"
    );
    // The egress, version by version (from the markers; `-- --nocapture` prints it).
    let mut compactions = 0;
    let objects = e.gcs.list(&e.bucket, &format!("delta/{table}/")).await.unwrap();
    for o in objects.iter().filter(|o| o.name.ends_with("/_COMPLETE")) {
        let body = e
            .gcs
            .read_head(&e.bucket, &o.name, o.generation, 1 << 20)
            .await
            .unwrap();
        let m: bqsteward::deltasource::Marker = serde_json::from_slice(&body).unwrap();
        let grouped: u64 = m.groups.iter().flat_map(|g| &g.files).map(|f| f.size).sum();
        println!(
            "egress: version {} ({}): {} files, {} B copied; compacted files held under older names: {grouped} B",
            m.version,
            m.kind,
            m.files.len(),
            m.bytes_copied
        );
        if m.kind == "compaction" {
            assert_eq!(m.bytes_copied, 0);
            assert!(grouped > 0, "the compaction's files are tracked, not copied");
            compactions += 1;
        }
    }
    assert_eq!(compactions, 1, "the OPTIMIZE made one compaction version");
    // A second apply with nothing new changes nothing and reads nothing; the status says the
    // table is at the latest version and how much came from S3.
    let before = e.log_len();
    let r = e.apply(&m).await;
    ok(&r, 0);
    assert!(e.data_gets(before, &table).is_empty());
    let latest = e.writer(&["version", &uri]).trim().to_string();
    assert!(
        r.stdout
            .contains(&format!("Delta version {latest} of {latest} (lag 0); "))
            && r.stdout.contains("copied from S3"),
        "{}",
        r.stdout
    );
    assert_eq!(e.table_rows(&table).await, e.delta_rows(&table));
}

/// `bqsteward apply` as a child process, to be killed.
fn spawn_apply(e: &Env, manifest: &str, dir: &std::path::Path) -> tokio::process::Child {
    support::cli::spawn_apply(manifest, dir, e.secrets.path(), &e.env)
}

async fn landing(e: &Env, table: &str) -> Vec<String> {
    e.gcs
        .list(&e.bucket, &format!("delta/{table}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

async fn wait_for(e: &Env, table: &str, what: impl Fn(&[String]) -> bool) {
    for _ in 0..1500 {
        if what(&landing(e, table).await) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "the landing never reached the awaited state: {:?}",
        landing(e, table).await
    );
}

/// `kill -9` of `bqsteward apply` during the copy (some files landed, no marker) and during the
/// load (marker written): the next apply leaves exactly the Delta table's rows.
#[tokio::test]
async fn kill_9_during_the_copy_and_the_load_loses_and_duplicates_nothing() {
    let e = env().await;
    let table = unique("kill");
    let uri = e.uri(&table);
    // 40 partitions: 40 files, copied one after another.
    let first: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":{i},"status":"new","amount":{i}.5,"day":"d{}"}}"#, i % 40))
        .collect();
    e.writer(&["write", &uri, &format!("[{}]", first.join(",")), "append", "day"]);
    let m = manifest(&e, &table, "");
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_apply(&e, &m, dir.path());
    wait_for(&e, &table, |o| o.iter().any(|n| n.ends_with(".parquet"))).await;
    child.kill().await.unwrap(); // SIGKILL, mid-copy
    let objects = landing(&e, &table).await;
    assert!(
        !objects.iter().any(|o| o.ends_with("_COMPLETE")),
        "killed before completing: {objects:?}"
    );

    let more: Vec<String> = (200..260)
        .map(|i| format!(r#"{{"id":{i},"status":"new","amount":{i}.5,"day":"d{}"}}"#, i % 40))
        .collect();
    e.writer(&["write", &uri, &format!("[{}]", more.join(",")), "append", "day"]);
    e.writer(&["delete", &uri, "id < 20"]);
    let mut child = spawn_apply(&e, &m, dir.path());
    wait_for(&e, &table, |o| {
        o.iter().filter(|n| n.ends_with("_COMPLETE")).count() >= 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    child.kill().await.unwrap(); // SIGKILL, loading

    let r = e.apply(&m).await;
    ok(&r, 0);
    assert_eq!(
        e.table_rows(&table).await,
        e.delta_rows(&table),
        "every row exactly once"
    );
    let r = e.apply(&m).await;
    ok(&r, 0);
    assert_eq!(e.table_rows(&table).await, e.delta_rows(&table));
}

/// A table with deletion vectors, or with column mapping, is refused with the feature named,
/// loading nothing; a Secret
/// without the keys is named in the error, and its content never printed.
#[tokio::test]
async fn unsupported_features_and_missing_keys_are_refused_by_name() {
    let e = env().await;
    let table = unique("dv");
    e.writer(&["dvtable", &e.uri(&table)]);
    let r = e.apply(&manifest(&e, &table, "")).await;
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("uses deletionVectors"), "{out}");
    assert!(out.contains("Degraded=True (SourceRefused)"), "{out}");
    let listed = landing(&e, &table).await;
    assert!(listed.is_empty(), "nothing copied: {listed:?}");
    let table = unique("cm");
    e.writer(&["cmtable", &e.uri(&table)]);
    let r = e.apply(&manifest(&e, &table, "")).await;
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("uses columnMapping"), "{out}");
    assert!(landing(&e, &table).await.is_empty());

    let table = unique("keys");
    e.writer(&[
        "write",
        &e.uri(&table),
        r#"[{"id":1,"status":"new","amount":1.0,"day":"d1"}]"#,
    ]);
    let m = manifest(&e, &table, "").replace("name: lake-reader", "name: lake-other");
    std::fs::create_dir_all(e.secrets.path().join("lake-other")).unwrap();
    std::fs::write(
        e.secrets.path().join("lake-other").join("AWS_ACCESS_KEY_ID"),
        "only-the-id\n",
    )
    .unwrap();
    let r = e.apply(&m).await;
    assert_ne!(r.code, 0);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("\"lake-other\"") && out.contains("AWS_SECRET_ACCESS_KEY"),
        "{out}"
    );
    assert!(!out.contains("only-the-id"), "the key id leaked: {out}");

    // Keys S3 does not know: moto with key checking answers 403 InvalidAccessKeyId.
    let table = unique("wrongkeys");
    let m = manifest(&e, &table, "").replace(
        &format!("endpoint: {}", e.endpoint),
        &format!("endpoint: {}", e.keyed_endpoint),
    );
    let r = e.apply(&m).await;
    assert_ne!(r.code, 0);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("S3 refused the keys of Secret \"lake-reader\""), "{out}");
    assert!(out.contains("InvalidAccessKeyId"), "{out}");
    assert!(!out.contains("reader-secret-do-not-print"), "the secret leaked: {out}");
    assert!(landing(&e, &table).await.is_empty());
}

/// `apply --reload "id=… versions=A-B"` reads the files versions A..B added that are still in the
/// table from S3 again and swaps their rows in one statement; the same request twice does nothing.
#[tokio::test]
async fn a_reload_reads_a_version_range_again_once() {
    let e = env().await;
    let table = unique("reload");
    let uri = e.uri(&table);
    let m = manifest(&e, &table, "");
    e.writer(&[
        "write",
        &uri,
        r#"[{"id":1,"status":"new","amount":1.0,"day":"d1"},{"id":2,"status":"new","amount":2.0,"day":"d2"}]"#,
        "append",
        "day",
    ]); // v0: d1, d2
    e.writer(&[
        "write",
        &uri,
        r#"[{"id":3,"status":"new","amount":3.0,"day":"d3"}]"#,
        "append",
        "day",
    ]); // v1: d3
    e.writer(&["update", &uri, "id = 1", r#"{"status":"'paid'"}"#]); // v2: rewrites d1
    let r = e.apply(&m).await;
    ok(&r, 0);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let by_day = format!("SELECT day, _bqsteward_batch_id FROM {raw} ORDER BY day");
    let before_rows = e.rows(&by_day).await;
    let dir = e.secrets.path().to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = e.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["apply", "--secrets-dir", &dir, "--reload", "id=fix-1 versions=0-1"];
    let mark = e.log_len();
    let r = bqsteward(&args, &m, &env).await;
    ok(&r, 0);
    let mut read: Vec<String> = e.data_gets(mark, &table);
    read.sort();
    assert_eq!(read.len(), 2, "the d2 and d3 files, not d1's (removed by v2): {read:?}");
    assert!(
        read.iter().all(|g| g.contains("/day=d2/") || g.contains("/day=d3/")),
        "{read:?}"
    );
    assert_eq!(e.table_rows(&table).await, e.delta_rows(&table), "after the reload");
    let after_rows = e.rows(&by_day).await;
    for (b, a) in before_rows.iter().zip(&after_rows) {
        let reloaded = matches!(a[0].as_deref(), Some("d2" | "d3"));
        assert_eq!(
            b[1] != a[1],
            reloaded,
            "only d2 and d3 rows are new: {before_rows:?} → {after_rows:?}"
        );
    }
    let mark = e.log_len();
    let r = bqsteward(&args, &m, &env).await;
    ok(&r, 0);
    assert!(
        e.data_gets(mark, &table).is_empty(),
        "the same reload twice reads nothing"
    );
    assert_eq!(e.rows(&by_day).await, after_rows);
}
