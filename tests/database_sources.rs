//! Database sources against real servers: MariaDB and PostgreSQL (started by
//! `scripts/databases.sh`), bqemulator and fake-gcs-server, driven through the real `bqsteward
//! apply` binary with `--secrets-dir`.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::storage::{GcsRest, Storage};
use sqlx::Connection;
use support::cli::{bqsteward, emulator_env_with_identity, ok};
use support::sql::{my, mysql, pg, postgres};
use support::{databases, emulators, unique};

const PROJECT: &str = "bqsteward-test";

struct Env {
    bq: BigQueryRest,
    gcs: GcsRest,
    bucket: String,
    dataset: String,
    secrets: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

async fn env() -> Env {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("dbs").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let (mysql, postgres) = databases();
    let secrets = tempfile::tempdir().unwrap();
    for (name, url) in [("mysql-replica", &mysql), ("pg-replica", &postgres)] {
        std::fs::create_dir_all(secrets.path().join(name)).unwrap();
        std::fs::write(secrets.path().join(name).join("url"), format!("{url}\n")).unwrap();
    }
    Env {
        bq,
        gcs,
        bucket,
        dataset: unique("dbs"),
        secrets,
        env: emulator_env_with_identity(&endpoints),
    }
}

impl Env {
    async fn apply(&self, manifest: &str) -> support::cli::Run {
        let dir = self.secrets.path().to_str().unwrap().to_string();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bqsteward(&["apply", "--secrets-dir", &dir], manifest, &env).await
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.bq.query(PROJECT, "US", sql, &[]).await.unwrap().rows
    }

    /// The text of an object of the bucket.
    async fn object(&self, name: &str) -> String {
        String::from_utf8(self.gcs.read_head(&self.bucket, name, 0, 1 << 20).await.unwrap()).unwrap()
    }

    async fn landing(&self, prefix: &str) -> Vec<String> {
        self.gcs
            .list(&self.bucket, prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect()
    }
}

/// Source rows as text, ordered by the first column.
async fn mysql_rows(c: &mut sqlx::MySqlConnection, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_all(&mut *c)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    // utf8mb4_bin columns come back flagged binary.
                    r.try_get::<Option<String>, _>(i).unwrap_or_else(|_| {
                        r.try_get::<Option<Vec<u8>>, _>(i)
                            .unwrap()
                            .map(|b| String::from_utf8(b).unwrap())
                    })
                })
                .collect()
        })
        .collect()
}

fn payments_manifest(e: &Env, table: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: {name}, namespace: payments}}
spec:
  source:
    database:
      engine: mysql
      table: bqsteward.{table}
      connectionSecret: {{name: mysql-replica, key: url}}
      watermark: {{column: modify_time}}
      overlap: 48h
      fileSizeMib: 1
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  schema:
  - {{name: id, type: INT64, mode: REQUIRED}}
  - {{name: amount, type: NUMERIC}}
  - {{name: status, type: STRING}}
  - {{name: modify_time, type: DATETIME}}
  primaryKey: [id]
  versionColumn: modify_time
  excludedColumns: [card_number]
  views: {{full: true}}
{extra}"#,
        name = table.replace('_', "-"),
        bucket = e.bucket,
        dataset = e.dataset,
    )
}

#[tokio::test]
async fn a_mysql_table_pulled_twice_with_overlap_then_reloaded_mirrors_the_source() {
    let e = env().await;
    let table = unique("pay");
    let mut c = mysql().await;
    my(
        &mut c,
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), \
             card_number VARCHAR(19), modify_time DATETIME(6) NOT NULL)"
        ),
    )
    .await;
    // 10,000 rows spread over yesterday and today (database clock, UTC), a card number each.
    my(
        &mut c,
        &format!(
            "INSERT INTO {table} SELECT seq, seq * 1.25, IF(seq % 3 = 0, 'refunded', 'paid'), '4111111111111111', \
             UTC_TIMESTAMP(6) - INTERVAL (seq * 13) SECOND FROM seq_1_to_10000"
        ),
    )
    .await;

    // First cycle: every row (no watermark yet).
    let r = e.apply(&payments_manifest(&e, &table, "")).await;
    ok(&r, 0);
    assert!(!r.stderr.contains("bqsteward-test@"), "the URL leaked:\n{}", r.stderr);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let full = format!("`{PROJECT}.{}__views_full.{table}`", e.dataset);
    assert_eq!(
        e.rows(&format!("SELECT COUNT(*) FROM {raw}")).await[0][0].as_deref(),
        Some("10000")
    );
    // The excluded column was never read: no file holds it.
    let objects = e.landing(&format!("{table}/")).await;
    assert!(
        objects.iter().filter(|o| o.ends_with(".jsonl")).count() >= 1,
        "{objects:?}"
    );

    // Between the cycles: updates, a delete, and a row committed late with a modify_time inside
    // the overlap (older than the first pull's high mark).
    my(
        &mut c,
        &format!("UPDATE {table} SET status = 'chargeback', modify_time = UTC_TIMESTAMP(6) WHERE id <= 5"),
    )
    .await;
    my(&mut c, &format!("DELETE FROM {table} WHERE id = 9999")).await;
    my(
        &mut c,
        &format!("INSERT INTO {table} VALUES (20000, 7.5, 'late', '4000', UTC_TIMESTAMP(6) - INTERVAL 20 MINUTE)"),
    )
    .await;
    let r = e.apply(&payments_manifest(&e, &table, "")).await;
    ok(&r, 0);

    // The full view equals the source row for row, every column (but the deleted row: a watermark
    // pull cannot see deletes; the daily reload removes it).
    let source = mysql_rows(
        &mut c,
        &format!(
            "SELECT CAST(id AS CHAR), CAST(amount AS CHAR), status, DATE_FORMAT(modify_time, '%Y-%m-%dT%H:%i:%s.%f') \
             FROM {table} ORDER BY id"
        ),
    )
    .await;
    let view = e
        .rows(&format!(
            "SELECT CAST(id AS STRING), CAST(amount AS STRING), status, FORMAT_DATETIME('%Y-%m-%dT%H:%M:%E6S', modify_time) \
             FROM {full} WHERE id <> 9999 ORDER BY id"
        ))
        .await;
    assert_eq!(view.len(), source.len());
    let norm = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    // NUMERIC prints without trailing zeros; DECIMAL(12,2) with them.
                    .map(|v| {
                        v.map(|s| {
                            if s.contains('.') && !s.contains('T') {
                                s.trim_end_matches('0').trim_end_matches('.').to_string()
                            } else {
                                s
                            }
                        })
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(norm(view), norm(source.clone()));
    // The overlap re-read rows: the raw table holds duplicates the dedup view hides.
    let raw_count: i64 = e.rows(&format!("SELECT COUNT(*) FROM {raw}")).await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        raw_count > 10_001,
        "overlap duplicates expected in the raw table, got {raw_count}"
    );

    // The daily reload (due: its time has passed) re-pulls yesterday and replaces its rows:
    // afterwards the raw table holds exactly the source's rows of that day, once each.
    let r = e
        .apply(&payments_manifest(
            &e,
            &table,
            "  dailyReload: {at: \"00:00\", timeZone: UTC}\n",
        ))
        .await;
    ok(&r, 0);
    let today = chrono::Utc::now().date_naive();
    let yesterday = format!(
        "modify_time >= DATETIME '{} 00:00:00' AND modify_time < DATETIME '{today} 00:00:00'",
        today.pred_opt().unwrap()
    );
    let bq_day = e
        .rows(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM {raw} WHERE {yesterday}"
        ))
        .await;
    let src_day = mysql_rows(
        &mut c,
        &format!(
            "SELECT CAST(COUNT(*) AS CHAR) FROM {table} WHERE modify_time >= UTC_DATE() - INTERVAL 1 DAY \
             AND modify_time < UTC_DATE()"
        ),
    )
    .await;
    assert_eq!(bq_day[0][0], src_day[0][0], "yesterday's rows after the reload");
    assert_eq!(bq_day[0][0], bq_day[0][1], "no duplicates left for yesterday");
    if src_day[0][0].as_deref() != Some("0") {
        // The row deleted in the source is gone from yesterday's rows (when it was yesterday's).
        let gone = e
            .rows(&format!("SELECT COUNT(*) FROM {raw} WHERE id = 9999 AND {yesterday}"))
            .await;
        assert_eq!(gone[0][0].as_deref(), Some("0"));
    }
    // Rows outside the reloaded day are untouched: the full view still equals the source.
    let view = e
        .rows(&format!(
            "SELECT CAST(id AS STRING), CAST(amount AS STRING), status, FORMAT_DATETIME('%Y-%m-%dT%H:%M:%E6S', modify_time) \
             FROM {full} WHERE id <> 9999 ORDER BY id"
        ))
        .await;
    let (after, expected) = (norm(view), norm(source));
    assert!(
        after == expected,
        "the reload replaced only its day: the view holds {} rows, the source {}",
        after.len(),
        expected.len()
    );
    // A reload that already ran does not run again.
    let r = e
        .apply(&payments_manifest(
            &e,
            &table,
            "  dailyReload: {at: \"00:00\", timeZone: UTC}\n",
        ))
        .await;
    ok(&r, 0);
    let days: Vec<String> = e
        .landing(&format!("{table}/day-"))
        .await
        .into_iter()
        .filter(|o| o.ends_with("/_COMPLETE"))
        .collect();
    assert_eq!(days.len(), 1, "{days:?}");
}

#[tokio::test]
async fn a_wrong_password_names_the_secret_and_writes_nothing() {
    let e = env().await;
    let table = unique("pw");
    let mut c = mysql().await;
    my(&mut c, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), modify_time DATETIME(6))")).await;
    let bad = databases().0.replace(":bqsteward-test@", ":not-the-password@");
    std::fs::write(e.secrets.path().join("mysql-replica/url"), &bad).unwrap();
    let r = e.apply(&payments_manifest(&e, &table, "")).await;
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("\"mysql-replica\""), "the Secret is named:\n{all}");
    assert!(!all.contains("not-the-password"), "the password leaked:\n{all}");
    assert!(e.landing(&format!("{table}/")).await.is_empty(), "nothing written");
    let table_ref = bqsteward::cloud::bqtypes::TableRef::new(PROJECT, &e.dataset, &table);
    assert!(e.bq.get_table(&table_ref).await.unwrap().is_none(), "no table created");
}

#[tokio::test]
async fn an_interrupted_pull_is_never_loaded_and_the_next_pull_covers_its_rows() {
    let e = env().await;
    let table = unique("crash");
    let mut c = mysql().await;
    my(&mut c, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), modify_time DATETIME(6) NOT NULL)")).await;
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_100"),
    )
    .await;
    // What a process killed in the middle of a pull leaves: the intent and a half-written part,
    // no _COMPLETE.
    e.gcs
        .create(
            &e.bucket,
            &format!("{table}/pull-0000000001/_PULL"),
            b"{}".to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    e.gcs
        .create(
            &e.bucket,
            &format!("{table}/pull-0000000001/part-00000.jsonl"),
            b"{\"id\": 1, \"status\": \"half\"}\n".to_vec(),
            "application/x-ndjson",
        )
        .await
        .unwrap();
    let r = e.apply(&payments_manifest(&e, &table, "")).await;
    ok(&r, 0);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id), COUNTIF(status = 'half') FROM {raw}"
        ))
        .await;
    assert_eq!(got[0], [Some("100".into()), Some("100".into()), Some("0".into())]);
    // The next pull took the next number; the interrupted one stays unloaded.
    let objects = e.landing(&format!("{table}/")).await;
    assert!(
        objects.iter().any(|o| o.ends_with("pull-0000000002/_COMPLETE")),
        "{objects:?}"
    );
    // Running again pulls only the overlap: still 100 distinct rows.
    ok(&e.apply(&payments_manifest(&e, &table, "")).await, 0);
    let got = e.rows(&format!("SELECT COUNT(DISTINCT id) FROM {raw}")).await;
    assert_eq!(got[0][0].as_deref(), Some("100"));
}

#[tokio::test]
async fn a_postgres_snapshot_replaces_the_table_in_one_step() {
    let e = env().await;
    let table = unique("snap");
    let mut c = postgres().await;
    pg(&mut c, "CREATE SCHEMA IF NOT EXISTS shop").await;
    pg(
        &mut c,
        &format!("CREATE TABLE shop.{table} (sku text PRIMARY KEY, price numeric(10,2), tags text[])"),
    )
    .await;
    pg(
        &mut c,
        &format!(
            "INSERT INTO shop.{table} SELECT 'sku-' || i, i * 0.5, ARRAY['a', 'b'] FROM generate_series(1, 500) i"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: catalog, namespace: shop}}
spec:
  source:
    database:
      engine: postgres
      table: shop.{table}
      connectionSecret: {{name: pg-replica}}
    landing: gs://{bucket}/{table}/
  mode: Snapshot
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  schema:
  - {{name: sku, type: STRING, mode: REQUIRED}}
  - {{name: price, type: NUMERIC}}
  - {{name: tags, type: STRING, mode: REPEATED}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    ok(&e.apply(&manifest).await, 0);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT COUNT(*), CAST(CAST(SUM(price) AS INT64) AS STRING) FROM {raw}"
        ))
        .await;
    assert_eq!(got[0], [Some("500".into()), Some("62625".into())]);
    pg(&mut c, &format!("DELETE FROM shop.{table} WHERE price > 100")).await;
    ok(&e.apply(&manifest).await, 0);
    let got = e.rows(&format!("SELECT COUNT(*) FROM {raw}")).await;
    assert_eq!(
        got[0][0].as_deref(),
        Some("200"),
        "the table holds exactly the second snapshot"
    );
}

/// Every type of the MySQL mapping, with extremes, NULLs and Unicode, as BigQuery holds it; a
/// zero date is reported by key and column, never loaded changed. `big` (DECIMAL(60,20) →
/// BIGNUMERIC) stays undeclared — so never read: bqemulator cannot create BIGNUMERIC columns
/// (DuckDB's DECIMAL stops at 38 digits); BIGNUMERIC shares NUMERIC's encoding (exact text).
#[tokio::test]
async fn every_mysql_type_arrives_as_the_mapping_says() {
    let e = env().await;
    let table = unique("mytypes");
    let mut c = mysql().await;
    my(&mut c, "SET SESSION sql_mode = ''").await;
    my(
        &mut c,
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, b TINYINT(1), i BIGINT, u BIGINT UNSIGNED, d DECIMAL(38,9), \
             big DECIMAL(60,20), f DOUBLE, fl FLOAT, dt DATETIME(6), ts TIMESTAMP(6) NULL, dd DATE, tm TIME(6), s VARCHAR(50), \
             e ENUM('a','b'), st SET('x','y'), bl VARBINARY(20), j JSON)"
        ),
    )
    .await;
    my(
        &mut c,
        &format!(
            "INSERT INTO {table} VALUES \
             (1, 1, -9223372036854775808, 18446744073709551615, 12345678901234567890123456789.123456789, \
              -1234567890123456789012345678901234567890.12345678901234567890, 1.5e300, 0.1, '9999-12-31 23:59:59.999999', \
              '2038-01-19 03:14:07.999999', '1000-01-01', '23:59:59.999999', 'héllo 😀 \"q\" \\\\ \\n end', 'b', 'x,y', \
              X'00FF10', '{{\"k\": [1, 2.5, null], \"u\": \"ü\"}}'), \
             (2, 0, 0, 0, 0, 0, -0.5, -2.5, '1000-01-01 00:00:00', '1970-01-01 00:00:01', '2024-02-29', '00:00:00', '', 'a', '', X'', '[]'), \
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
             (4, 1, 1, 1, 1, 1, 1, 1, '2026-01-01', NULL, '0000-00-00', '10:00:00', 'zero date', 'a', 'x', X'01', '{{}}')"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: types, namespace: payments}}
spec:
  source:
    database:
      engine: mysql
      table: bqsteward.{table}
      connectionSecret: {{name: mysql-replica}}
      watermark: {{column: id}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  primaryKey: [id]
  schema:
  - {{name: id, type: INT64, mode: REQUIRED}}
  - {{name: b, type: BOOL}}
  - {{name: i, type: INT64}}
  - {{name: u, type: NUMERIC}}
  - {{name: d, type: NUMERIC}}
  - {{name: f, type: FLOAT64}}
  - {{name: fl, type: FLOAT64}}
  - {{name: dt, type: DATETIME}}
  - {{name: ts, type: TIMESTAMP}}
  - {{name: dd, type: DATE}}
  - {{name: tm, type: TIME}}
  - {{name: s, type: STRING}}
  - {{name: e, type: STRING}}
  - {{name: st, type: STRING}}
  - {{name: bl, type: BYTES}}
  - {{name: j, type: JSON}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    let r = e.apply(&manifest).await;
    ok(&r, 0);
    assert!(r.stdout.contains("1 rows not loaded"), "{}", r.stdout);
    let rejected = e.landing(&format!("{table}/pull-0000000001/_REJECTED.jsonl")).await;
    assert_eq!(rejected.len(), 1);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT CAST(id AS STRING), CAST(b AS STRING), CAST(i AS STRING), CAST(u AS STRING), CAST(d AS STRING), \
             CAST(f AS STRING), CAST(fl AS STRING), CAST(dt AS STRING), CAST(ts AS STRING), \
             CAST(dd AS STRING), CAST(tm AS STRING), s, e, st, TO_BASE64(bl), TO_JSON_STRING(j) FROM {raw} ORDER BY id"
        ))
        .await;
    for row in &got {
        println!("{row:?}");
    }
    let s = |v: &str| Some(v.to_string());
    assert_eq!(got.len(), 3, "rows 1-3 loaded, row 4 (zero date) reported instead");
    assert_eq!(got[2][1..], vec![None; 15][..], "NULLs stay NULL");
    assert_eq!(got[0][0], s("1"));
    assert_eq!(got[0][1], s("true"));
    assert_eq!(got[0][2], s("-9223372036854775808"));
    // bqemulator prints NUMERIC with its scale's trailing zeros; BigQuery without.
    let num = |v: &Option<String>| {
        v.as_deref()
            .map(|t| t.trim_end_matches('0').trim_end_matches('.').to_string())
    };
    assert_eq!(
        num(&got[0][3]),
        s("18446744073709551615"),
        "BIGINT UNSIGNED beyond INT64"
    );
    assert_eq!(num(&got[0][4]), s("12345678901234567890123456789.123456789"));
    assert_eq!(got[0][5], s("1.5e+300"));
    assert_eq!(got[0][6], s("0.10000000149011612"), "FLOAT widened to DOUBLE exactly");
    assert_eq!(got[0][7], s("9999-12-31 23:59:59.999999"));
    assert_eq!(got[0][8], s("2038-01-19 03:14:07.999999+00"));
    assert_eq!(got[0][9], s("1000-01-01"));
    assert_eq!(got[0][10], s("23:59:59.999999"));
    assert_eq!(got[0][15], s("{\"k\":[1,2.5,null],\"u\":\"ü\"}"));
    assert_eq!(got[1][16 - 1], s("[]"));
    assert_eq!(got[0][11], s("héllo 😀 \"q\" \\ \n end"));
    assert_eq!(got[0][12], s("b"));
    assert_eq!(got[0][13], s("x,y"));
    // BYTES arrive base64-encoded in the file (AP8Q = 00 FF 10). BigQuery decodes it on load;
    // bqemulator keeps the text as the bytes, so TO_BASE64 shows base64("AP8Q"). Either way the
    // file carried exactly 00 FF 10.
    assert!(
        got[0][14] == s("AP8Q") || got[0][14] == s("QVA4UQ=="),
        "{:?}",
        got[0][14]
    );
    assert_eq!(got[1][1], s("false"));
    assert_eq!(got[1][14], s(""));
    // The zero-date row is in the report with its key and column, not in the data.
    let data = e.object(&format!("{table}/pull-0000000001/part-00000.jsonl")).await;
    assert!(!data.contains("\"big\""), "an undeclared column is never read: {data}");
    assert!(!data.contains("zero date"), "{data}");
    let report = e.object(&format!("{table}/pull-0000000001/_REJECTED.jsonl")).await;
    assert_eq!(
        report.trim(),
        r#"{"columns":["dd"],"key":{"id":4},"values":{"dd":"0000-00-00"}}"#
    );
}

/// Every type of the PostgreSQL mapping as BigQuery holds it: time zones read in UTC, NaN and
/// infinities of floats kept, arrays as REPEATED; `infinity` dates and NULL array elements
/// reported, never loaded changed.
#[tokio::test]
async fn every_postgres_type_arrives_as_the_mapping_says() {
    let e = env().await;
    let table = unique("pgtypes");
    let mut c = postgres().await;
    pg(&mut c, "CREATE SCHEMA IF NOT EXISTS shop").await;
    pg(
        &mut c,
        &format!(
            "CREATE TABLE shop.{table} (id bigint PRIMARY KEY, b boolean, n numeric(20,6), f double precision, \
             ts timestamp, tz timestamptz, d date, t time, s text, u uuid, by bytea, j jsonb, a int[], x text[])"
        ),
    )
    .await;
    pg(
        &mut c,
        &format!(
            "INSERT INTO shop.{table} VALUES \
             (1, true, 12345678901234.123456, 'NaN', '2026-11-27 10:00:00.123456', '2026-11-27 12:00:00.5+02', \
              '0001-01-01', '23:59:59.999999', E'ünï \"q\" \\\\ \\n 😀', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
              '\\x00ff10', '{{\"k\": [1, 2.5]}}', ARRAY[1, -2], ARRAY['a', 'b c']), \
             (2, false, -0.000001, 'Infinity', NULL, NULL, '9999-12-31', '00:00:00', '', NULL, '', '[]', ARRAY[]::int[], NULL), \
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
             (4, true, 1, 1, 'infinity', NULL, NULL, NULL, 'infinite', NULL, NULL, NULL, NULL, NULL), \
             (5, true, 1, 1, NULL, NULL, NULL, NULL, 'null element', NULL, NULL, NULL, ARRAY[1, NULL], NULL)"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: pgtypes, namespace: shop}}
spec:
  source:
    database:
      engine: postgres
      table: shop.{table}
      connectionSecret: {{name: pg-replica}}
      watermark: {{column: id}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  primaryKey: [id]
  piiColumns: [s]
  schema:
  - {{name: id, type: INT64, mode: REQUIRED}}
  - {{name: b, type: BOOL}}
  - {{name: n, type: NUMERIC}}
  - {{name: f, type: FLOAT64}}
  - {{name: ts, type: DATETIME}}
  - {{name: tz, type: TIMESTAMP}}
  - {{name: d, type: DATE}}
  - {{name: t, type: TIME}}
  - {{name: s, type: STRING}}
  - {{name: u, type: STRING}}
  - {{name: by, type: BYTES}}
  - {{name: j, type: JSON}}
  - {{name: a, type: INT64, mode: REPEATED}}
  - {{name: x, type: STRING, mode: REPEATED}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    let r = e.apply(&manifest).await;
    ok(&r, 0);
    assert!(r.stdout.contains("2 rows not loaded"), "{}", r.stdout);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT CAST(id AS STRING), CAST(b AS STRING), CAST(n AS STRING), CAST(f AS STRING), CAST(ts AS STRING), \
             CAST(tz AS STRING), CAST(d AS STRING), CAST(t AS STRING), s, u, TO_BASE64(`by`), TO_JSON_STRING(j), \
             ARRAY_TO_STRING(ARRAY(SELECT CAST(v AS STRING) FROM UNNEST(a) v), ','), ARRAY_TO_STRING(x, '|') \
             FROM {raw} ORDER BY id"
        ))
        .await;
    for row in &got {
        println!("{row:?}");
    }
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got.len(),
        3,
        "rows 1-3 loaded; 4 (infinity) and 5 (NULL array element) reported"
    );
    let num = |v: &Option<String>| {
        v.as_deref()
            .map(|t| t.trim_end_matches('0').trim_end_matches('.').to_string())
    };
    assert_eq!(got[0][1], s("true"));
    assert_eq!(num(&got[0][2]), s("12345678901234.123456"));
    assert_eq!(got[0][3], s("nan"), "NaN kept (BigQuery spells it nan)");
    assert_eq!(got[0][4], s("2026-11-27 10:00:00.123456"));
    assert_eq!(got[0][5], s("2026-11-27 10:00:00.5+00"), "timestamptz in UTC");
    assert_eq!(got[0][6], s("0001-01-01"));
    assert_eq!(got[0][7], s("23:59:59.999999"));
    assert_eq!(got[0][8], s("ünï \"q\" \\ \n 😀"));
    assert_eq!(got[0][9], s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert!(
        got[0][10] == s("AP8Q") || got[0][10] == s("QVA4UQ=="),
        "{:?}",
        got[0][10]
    );
    assert_eq!(got[0][11], s("{\"k\":[1,2.5]}"));
    assert_eq!(got[0][12], s("1,-2"));
    assert_eq!(got[0][13], s("a|b c"));
    assert_eq!(got[1][3], s("inf"), "Infinity kept (BigQuery spells it inf)");
    assert_eq!(got[1][6], s("9999-12-31"));
    assert_eq!(got[1][12], s(""));
    let report = e.object(&format!("{table}/pull-0000000001/_REJECTED.jsonl")).await;
    // Keys and columns named; the PII column's value is never reported.
    assert!(report.contains(r#""columns":["ts"],"key":{"id":4}"#), "{report}");
    assert!(report.contains(r#""columns":["a"],"key":{"id":5}"#), "{report}");
    assert!(
        !report.contains("infinite") && !report.contains("null element"),
        "{report}"
    );
}

/// A private PostgreSQL (restarting the shared one would disturb the other tests), through the
/// project's own script with its own state and ports.
struct PrivateDatabases {
    state: tempfile::TempDir,
}

impl PrivateDatabases {
    fn script(&self, verb: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/databases.sh"))
            .arg(verb)
            .env("BQSTEWARD_DB_STATE", self.state.path())
            .env("BQSTEWARD_MYSQL_PORT", "19072")
            .env("BQSTEWARD_POSTGRES_PORT", "19073")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "databases.sh {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> (PrivateDatabases, String) {
        let state = tempfile::tempdir().unwrap();
        // The servers run as unprivileged users: they must be able to enter the directory.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let d = PrivateDatabases { state };
        let out = d.script("start");
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("export BQSTEWARD_TEST_POSTGRES_URL="))
            .unwrap()
            .to_string();
        (d, url)
    }
}

impl Drop for PrivateDatabases {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_pull_is_retried_and_nothing_is_half_loaded() {
    let e = env().await;
    let (private, url) = PrivateDatabases::start();
    std::fs::create_dir_all(e.secrets.path().join("pg-private")).unwrap();
    std::fs::write(e.secrets.path().join("pg-private/url"), &url).unwrap();
    let table = unique("drop");
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    pg(
        &mut c,
        &format!("CREATE TABLE public.{table} (id bigint PRIMARY KEY, v text)"),
    )
    .await;
    pg(
        &mut c,
        &format!("INSERT INTO public.{table} SELECT i, 'v' || i FROM generate_series(1, 1000) i"),
    )
    .await;
    // Another session holds the table: the pull's first read of it waits — mid-pull — until the
    // server restarts under it.
    pg(&mut c, "BEGIN").await;
    pg(&mut c, &format!("LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")).await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: dropped, namespace: shop}}
spec:
  source:
    database:
      engine: postgres
      table: public.{table}
      connectionSecret: {{name: pg-private}}
      watermark: {{column: id}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  schema:
  - {{name: id, type: INT64, mode: REQUIRED}}
  - {{name: v, type: STRING}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    let e = std::sync::Arc::new(e);
    let run = {
        let e = e.clone();
        let manifest = manifest.clone();
        tokio::spawn(async move { e.apply(&manifest).await })
    };
    let intent = format!("{table}/pull-0000000001/_PULL");
    let mut seen = false;
    for _ in 0..200 {
        if e.landing(&intent).await.len() == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the pull never started");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The lock holder stays connected until the server goes down under both sessions.
    private.script("stop");
    drop(c);
    private.script("start");
    let r = run.await.unwrap();
    ok(&r, 0);
    assert!(r.stderr.contains("pull interrupted; retrying"), "{}", r.stderr);
    assert!(!r.stderr.contains("bqsteward-test@"), "the URL leaked:\n{}", r.stderr);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e.rows(&format!("SELECT COUNT(*), COUNT(DISTINCT id) FROM {raw}")).await;
    assert_eq!(got[0], [Some("1000".into()), Some("1000".into())], "every row once");
    let objects = e.landing(&format!("{table}/")).await;
    assert_eq!(
        objects.iter().filter(|o| o.ends_with("/_COMPLETE")).count(),
        1,
        "one complete pull: {objects:?}"
    );
}

/// `bqsteward apply` as a child process, to be killed.
fn spawn_apply(e: &Env, manifest: &str, dir: &std::path::Path) -> tokio::process::Child {
    support::cli::spawn_apply(manifest, dir, e.secrets.path(), &e.env)
}

/// Waits until an object of the table's landing ends with `suffix`.
async fn wait_for(e: &Env, table: &str, suffix: &str) {
    for _ in 0..500 {
        if e.landing(&format!("{table}/"))
            .await
            .iter()
            .any(|o| o.ends_with(suffix))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{suffix} never appeared");
}

/// `kill -9` of `bqsteward apply` during the extraction, right after it completed, and during the
/// load: whatever the moment, the next apply leaves every source row exactly once.
#[tokio::test]
async fn kill_9_during_extraction_and_load_loses_and_duplicates_nothing() {
    let e = env().await;
    let table = unique("kill");
    let mut c = mysql().await;
    my(&mut c, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), modify_time DATETIME(6) NOT NULL)")).await;
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_20000"),
    )
    .await;
    let manifest = payments_manifest(&e, &table, "").replace(
        "watermark: {column: modify_time}\n      overlap: 48h",
        "watermark: {column: id}",
    );
    let dir = tempfile::tempdir().unwrap();
    // 1. During the extraction: the table is locked, so the pull waits inside its snapshot.
    let mut locker = mysql().await;
    my(&mut locker, &format!("LOCK TABLES {table} WRITE")).await;
    let mut child = spawn_apply(&e, &manifest, dir.path());
    wait_for(&e, &table, "pull-0000000001/_PULL").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().await.unwrap(); // SIGKILL
    my(&mut locker, "UNLOCK TABLES").await;
    let objects = e.landing(&format!("{table}/")).await;
    assert!(
        !objects.iter().any(|o| o.ends_with("_COMPLETE")),
        "killed before completing: {objects:?}"
    );

    // 2. Right after a pull completed (between extraction and load, or early in the load).
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq + 20000, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_5000"),
    )
    .await;
    let mut child = spawn_apply(&e, &manifest, dir.path());
    wait_for(&e, &table, "pull-0000000002/_COMPLETE").await;
    child.kill().await.unwrap();

    // 3. During the load, a moment later.
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq + 25000, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_5000"),
    )
    .await;
    let mut child = spawn_apply(&e, &manifest, dir.path());
    wait_for(&e, &table, "pull-0000000003/_COMPLETE").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    child.kill().await.unwrap();

    // Recovery: one ordinary apply.
    let r = e.apply(&manifest).await;
    ok(&r, 0);
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id), CAST(SUM(id) AS STRING) FROM {raw}"
        ))
        .await;
    assert_eq!(
        got[0],
        [
            Some("30000".into()),
            Some("30000".into()),
            Some((30000i64 * 30001 / 2).to_string())
        ],
        "every row exactly once"
    );
    // No object was ever replaced and the interrupted pull was never loaded.
    let r = e.apply(&manifest).await;
    ok(&r, 0);
    let got = e.rows(&format!("SELECT COUNT(*) FROM {raw}")).await;
    assert_eq!(got[0][0].as_deref(), Some("30000"));
}

/// A declared column dropped on the replica stops the pulls with the reason (plan and apply); a
/// replica column not declared is named and ignored.
#[tokio::test]
async fn schema_drift_on_the_replica_stops_pulls_with_the_reason() {
    let e = env().await;
    let table = unique("drift");
    let mut c = mysql().await;
    my(&mut c, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), modify_time DATETIME(6) NOT NULL)")).await;
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_10"),
    )
    .await;
    let manifest = payments_manifest(&e, &table, "");
    ok(&e.apply(&manifest).await, 0);
    my(
        &mut c,
        &format!("ALTER TABLE {table} DROP COLUMN status, ADD COLUMN region CHAR(2)"),
    )
    .await;
    let dir = e.secrets.path().to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = e.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let plan = bqsteward(&["plan", "--secrets-dir", &dir], &manifest, &env).await;
    assert!(
        plan.stdout
            .contains("source: ! declared column \"status\" is not on the replica table"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("replica column \"region\" (char(2)) is not declared"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("~ pull"), "no pull planned: {}", plan.stdout);
    let r = e.apply(&manifest).await;
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let pulls: Vec<String> = e
        .landing(&format!("{table}/"))
        .await
        .into_iter()
        .filter(|o| o.ends_with("/_PULL"))
        .collect();
    assert_eq!(pulls.len(), 1, "nothing pulled after the drift: {pulls:?}");
}

/// fake-gcs-server ignores `ifGenerationMatch=0` (it overwrites); the proxy in front of it answers
/// as Cloud Storage does (412). Through it: an object is created once, and a pull whose folder
/// another process started first is refused before it reads a row, leaving that folder alone.
#[tokio::test]
async fn an_object_is_created_once_and_a_started_pull_is_not_run_twice() {
    let e = env().await;
    let endpoints = emulators();
    let proxy = support::proxy::Proxy::start(&endpoints.storage).await;
    let gcs = GcsRest::new(&bqsteward::cloud::Endpoints::from_vars(
        Some(endpoints.bigquery.trim_end_matches("/bigquery/v2").to_string()),
        Some(proxy.url.clone()),
    ))
    .unwrap();
    gcs.create(&e.bucket, "once.json", b"1".to_vec(), "application/json")
        .await
        .unwrap();
    let again = gcs
        .create(&e.bucket, "once.json", b"2".to_vec(), "application/json")
        .await;
    assert_eq!(again.unwrap_err().status(), Some(412));
    assert!(proxy.seen().iter().any(|s| s.path.contains("ifGenerationMatch=0")));

    let table = unique("twice");
    let mut c = mysql().await;
    my(&mut c, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20), modify_time DATETIME(6) NOT NULL)")).await;
    my(
        &mut c,
        &format!("INSERT INTO {table} SELECT seq, seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_10"),
    )
    .await;
    let manifest = payments_manifest(&e, &table, "");
    let mut report = bqsteward::manifest::LoadReport::default();
    bqsteward::manifest::load_str("m.yaml", &manifest, &mut report);
    let bqsteward::manifest::Resource::IngestedTable(r) = &report.resources[0].resource else {
        panic!("an IngestedTable")
    };
    let sources = bqsteward::dbsource::Sources::new(
        std::sync::Arc::new(bqsteward::dbsource::secrets::DirSecrets {
            dir: e.secrets.path().into(),
        }),
        2,
    );
    let observed = bqsteward::dbsource::observe(&sources, &gcs, "payments/twice", &r.spec)
        .await
        .unwrap();
    let plan = bqsteward::dbsource::plan(&r.spec, &observed, chrono::Utc::now(), false);
    assert_eq!(plan.pulls[0].set, "pull-0000000001");
    // Another process started the same pull a moment ago.
    let intent = format!("{table}/pull-0000000001/_PULL");
    gcs.create(&e.bucket, &intent, b"{\"low\":\"theirs\"}".to_vec(), "application/json")
        .await
        .unwrap();
    let err = bqsteward::dbsource::run(&sources, &gcs, "payments/twice", &r.spec, &plan)
        .await
        .unwrap_err();
    assert!(err.contains("started by another process"), "{err}");
    let objects = e.landing(&format!("{table}/")).await;
    assert_eq!(objects, std::slice::from_ref(&intent), "nothing else written");
    let theirs = e.gcs.read_head(&e.bucket, &intent, 0, 1024).await.unwrap();
    assert_eq!(theirs, b"{\"low\":\"theirs\"}", "their intent is untouched");
}

/// Values the plain mapping would change are reported instead (TINYINT(1) holding 2, invalid JSON
/// text in MariaDB); PostgreSQL arrays of times keep their order and zone; a pretty-printed `json`
/// value stays on its one line.
#[tokio::test]
async fn edge_values_are_reported_or_kept_exactly() {
    let e = env().await;
    let table = unique("edge");
    let mut c = mysql().await;
    my(
        &mut c,
        &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, flag TINYINT(1), doc LONGTEXT)"),
    )
    .await;
    my(
        &mut c,
        &format!("INSERT INTO {table} VALUES (1, 1, '{{\"a\": 1}}'), (2, 2, '{{}}'), (3, 0, 'not json')"),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: edge, namespace: payments}}
spec:
  source:
    database: {{engine: mysql, table: bqsteward.{table}, connectionSecret: {{name: mysql-replica}}, watermark: {{column: id}}}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  primaryKey: [id]
  schema: [{{name: id, type: INT64, mode: REQUIRED}}, {{name: flag, type: BOOL}}, {{name: doc, type: JSON}}]
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    let r = e.apply(&manifest).await;
    ok(&r, 0);
    assert!(r.stdout.contains("2 rows not loaded"), "{}", r.stdout);
    let report = e.object(&format!("{table}/pull-0000000001/_REJECTED.jsonl")).await;
    assert!(report.contains(r#""columns":["flag"],"key":{"id":2}"#), "{report}");
    assert!(report.contains(r#""columns":["doc"],"key":{"id":3}"#), "{report}");

    let ptable = unique("pgedge");
    let mut p = postgres().await;
    pg(&mut p, "CREATE SCHEMA IF NOT EXISTS shop").await;
    pg(
        &mut p,
        &format!("CREATE TABLE shop.{ptable} (id bigint PRIMARY KEY, at timestamptz[], doc json)"),
    )
    .await;
    pg(
        &mut p,
        &format!(
            "INSERT INTO shop.{ptable} VALUES (1, ARRAY['2026-11-27 12:00:00+02', '2026-01-01 00:00:00.5+00']::timestamptz[], \
             E'{{\\n  \"k\": [1,\\n 2]\\n}}')"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: pgedge, namespace: shop}}
spec:
  source:
    database: {{engine: postgres, table: shop.{ptable}, connectionSecret: {{name: pg-replica}}, watermark: {{column: id}}}}
    landing: gs://{bucket}/{ptable}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {ptable}}}
  schema: [{{name: id, type: INT64, mode: REQUIRED}}, {{name: at, type: TIMESTAMP, mode: REPEATED}}, {{name: doc, type: JSON}}]
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    ok(&e.apply(&manifest).await, 0);
    let raw = format!("`{PROJECT}.{}.{ptable}`", e.dataset);
    let got = e
        .rows(&format!(
            "SELECT ARRAY_TO_STRING(ARRAY(SELECT CAST(t AS STRING) FROM UNNEST(at) t WITH OFFSET o ORDER BY o), '|'), \
             TO_JSON_STRING(doc) FROM {raw}"
        ))
        .await;
    assert_eq!(
        got[0],
        [
            Some("2026-11-27 10:00:00+00|2026-01-01 00:00:00.5+00".into()),
            Some("{\"k\":[1,2]}".into())
        ]
    );
}
