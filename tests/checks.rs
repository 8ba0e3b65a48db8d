//! Data-quality checks against real servers: MariaDB and PostgreSQL (`scripts/databases.sh`),
//! bqemulator and fake-gcs-server. The canonical encoding is compared type by type across the three
//! engines; then tables loaded by `bqsteward apply` are checked with `bqsteward check`, in sync and
//! with each fault injected.
//!
//! bqemulator keeps a BYTES column's base64 text as its bytes (see `database_sources.rs`), so BYTES
//! are compared across engines on values written in each engine's own syntax, not on loaded tables.

mod support;

use bqsteward::checks::canon::{self, CanonColumn, Dialect};
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::storage::GcsRest;
use support::cli::{bqsteward, emulator_env_with_identity, ok};
use support::sql::{my, mysql, pg, postgres};
use support::{databases, emulators, unique};

const PROJECT: &str = "bqsteward-test";

async fn my_texts(c: &mut sqlx::MySqlConnection, sql: &str) -> Vec<Option<String>> {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_all(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            r.try_get::<Option<String>, _>(0).unwrap_or_else(|_| {
                r.try_get::<Option<Vec<u8>>, _>(0)
                    .unwrap()
                    .map(|b| String::from_utf8(b).unwrap())
            })
        })
        .collect()
}

async fn pg_texts(c: &mut sqlx::PgConnection, sql: &str) -> Vec<Option<String>> {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_all(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<Option<String>, _>(0))
        .collect()
}

fn column(d: Dialect, type_: &'static str, source_type: &str) -> CanonColumn {
    CanonColumn {
        sql: match d {
            Dialect::Mysql => "`c`".into(),
            Dialect::Postgres => "\"c\"".into(),
            Dialect::BigQuery => "`c`".into(),
        },
        type_,
        source_type: source_type.into(),
        presence_only: false,
    }
}

/// One type family: the column type in each database and the same values written in each
/// engine's syntax (`None`: the engine cannot hold that value; the others are still compared).
struct Case {
    type_: &'static str,
    mysql_type: &'static str,
    pg_type: &'static str,
    values: Vec<(Option<&'static str>, Option<&'static str>, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            type_: "BOOL",
            mysql_type: "TINYINT(1)",
            pg_type: "boolean",
            values: vec![
                (Some("1"), Some("true"), "TRUE"),
                (Some("0"), Some("false"), "FALSE"),
                (Some("NULL"), Some("NULL"), "CAST(NULL AS BOOL)"),
            ],
        },
        Case {
            type_: "INT64",
            mysql_type: "BIGINT",
            pg_type: "bigint",
            values: vec![
                (
                    Some("-9223372036854775808"),
                    Some("-9223372036854775808"),
                    "-9223372036854775808",
                ),
                (Some("0"), Some("0"), "0"),
                (Some("42"), Some("42"), "42"),
            ],
        },
        Case {
            type_: "NUMERIC",
            mysql_type: "DECIMAL(38,9)",
            pg_type: "numeric(38,9)",
            values: vec![
                (Some("1.50"), Some("1.50"), "NUMERIC '1.5'"),
                (Some("10"), Some("10"), "NUMERIC '10'"),
                (Some("0"), Some("0"), "NUMERIC '0'"),
                (Some("-0.000000001"), Some("-0.000000001"), "NUMERIC '-0.000000001'"),
                (
                    Some("12345678901234567890123456789.123456789"),
                    Some("12345678901234567890123456789.123456789"),
                    "NUMERIC '12345678901234567890123456789.123456789'",
                ),
                (Some("100.10"), Some("100.10"), "NUMERIC '100.1'"),
            ],
        },
        Case {
            type_: "FLOAT64",
            mysql_type: "DOUBLE",
            pg_type: "double precision",
            values: vec![
                (Some("0.1"), Some("0.1"), "0.1"),
                (Some("-2.5"), Some("-2.5"), "-2.5"),
                (Some("1e300"), Some("1e300"), "1e300"),
                (Some("1e15"), Some("1e15"), "1e15"),
                (Some("1e-7"), Some("1e-7"), "1e-7"),
                (
                    Some("123456789012345678"),
                    Some("123456789012345678"),
                    "123456789012345678.0",
                ),
                (Some("0.3333333333333333"), Some("0.3333333333333333"), "1/3"),
                (
                    Some("2.2250738585072014e-308"),
                    Some("2.2250738585072014e-308"),
                    "2.2250738585072014e-308",
                ),
                (
                    Some("1.7976931348623157e308"),
                    Some("1.7976931348623157e308"),
                    "1.7976931348623157e308",
                ),
                (Some("0"), Some("0"), "0.0"),
                (Some("-0e0"), Some("'-0'"), "CAST('-0' AS FLOAT64)"),
                (None, Some("'NaN'"), "CAST('NaN' AS FLOAT64)"),
                (None, Some("'Infinity'"), "CAST('inf' AS FLOAT64)"),
                (None, Some("'-Infinity'"), "CAST('-inf' AS FLOAT64)"),
                (None, Some("'4.9e-324'"), "CAST('4.9e-324' AS FLOAT64)"),
            ],
        },
        Case {
            type_: "DATE",
            mysql_type: "DATE",
            pg_type: "date",
            values: vec![
                (Some("'2024-02-29'"), Some("'2024-02-29'"), "DATE '2024-02-29'"),
                (Some("'0001-01-01'"), Some("'0001-01-01'"), "DATE '0001-01-01'"),
                (Some("'9999-12-31'"), Some("'9999-12-31'"), "DATE '9999-12-31'"),
            ],
        },
        Case {
            type_: "DATETIME",
            mysql_type: "DATETIME(6)",
            pg_type: "timestamp",
            values: vec![
                (
                    Some("'2024-01-02 03:04:05.123456'"),
                    Some("'2024-01-02 03:04:05.123456'"),
                    "DATETIME '2024-01-02 03:04:05.123456'",
                ),
                (
                    Some("'2024-01-02 03:04:05.123457'"),
                    Some("'2024-01-02 03:04:05.123457'"),
                    "DATETIME '2024-01-02 03:04:05.123457'",
                ),
                (
                    Some("'1000-01-01 00:00:00'"),
                    Some("'1000-01-01 00:00:00'"),
                    "DATETIME '1000-01-01 00:00:00'",
                ),
                (
                    Some("'9999-12-31 23:59:59.999999'"),
                    Some("'9999-12-31 23:59:59.999999'"),
                    "DATETIME '9999-12-31 23:59:59.999999'",
                ),
            ],
        },
        Case {
            type_: "TIMESTAMP",
            mysql_type: "TIMESTAMP(6) NULL",
            pg_type: "timestamptz",
            values: vec![
                (
                    Some("'2024-01-02 03:04:05.5'"),
                    Some("'2024-01-02 05:04:05.5+02'"),
                    "TIMESTAMP '2024-01-02 03:04:05.5+00:00'",
                ),
                (
                    Some("'1970-01-01 00:00:01'"),
                    Some("'1970-01-01 00:00:01+00'"),
                    "TIMESTAMP '1970-01-01 00:00:01+00:00'",
                ),
                (
                    Some("'2038-01-19 03:14:07.999999'"),
                    Some("'2038-01-19 03:14:07.999999+00'"),
                    "TIMESTAMP '2038-01-19 03:14:07.999999+00:00'",
                ),
            ],
        },
        Case {
            type_: "TIME",
            mysql_type: "TIME(6)",
            pg_type: "time",
            values: vec![
                (Some("'00:00:00'"), Some("'00:00:00'"), "TIME '00:00:00'"),
                (
                    Some("'23:59:59.999999'"),
                    Some("'23:59:59.999999'"),
                    "TIME '23:59:59.999999'",
                ),
                (Some("'12:30:00.5'"), Some("'12:30:00.5'"), "TIME '12:30:00.5'"),
            ],
        },
        Case {
            type_: "STRING",
            mysql_type: "VARCHAR(100)",
            pg_type: "text",
            values: vec![
                (Some("''"), Some("''"), "''"),
                (Some("NULL"), Some("NULL"), "CAST(NULL AS STRING)"),
                (
                    Some("'héllo 😀 ünïcode'"),
                    Some("'héllo 😀 ünïcode'"),
                    "'héllo 😀 ünïcode'",
                ),
                (
                    Some("'it''s \\\\ a \"q\"'"),
                    Some("'it''s \\ a \"q\"'"),
                    "'it\\'s \\\\ a \"q\"'",
                ),
                (Some("'-'"), Some("'-'"), "'-'"),
                (Some("'1:x'"), Some("'1:x'"), "'1:x'"),
            ],
        },
        Case {
            type_: "BYTES",
            mysql_type: "VARBINARY(20)",
            pg_type: "bytea",
            values: vec![
                (Some("X'00FF10'"), Some("'\\x00ff10'"), "FROM_HEX('00ff10')"),
                (Some("X''"), Some("'\\x'"), "FROM_HEX('')"),
            ],
        },
    ]
}

/// Every value of every type family gives the same field text in MySQL, PostgreSQL and BigQuery.
#[tokio::test]
async fn the_canonical_encoding_agrees_across_engines_type_by_type() {
    let bq = BigQueryRest::new(&emulators()).await.unwrap();
    let (mut m, mut p) = (mysql().await, postgres().await);
    my(&mut m, "SET SESSION sql_mode = ''").await;
    let mut compared = 0;
    for case in cases() {
        let t = unique("canon");
        my(
            &mut m,
            &format!("CREATE TABLE {t} (id INT PRIMARY KEY, c {})", case.mysql_type),
        )
        .await;
        pg(
            &mut p,
            &format!("CREATE TABLE {t} (id int PRIMARY KEY, c {})", case.pg_type),
        )
        .await;
        for (i, (mv, pv, _)) in case.values.iter().enumerate() {
            if let Some(v) = mv {
                my(&mut m, &format!("INSERT INTO {t} VALUES ({i}, {v})")).await;
            }
            if let Some(v) = pv {
                pg(&mut p, &format!("INSERT INTO {t} VALUES ({i}, {v})")).await;
            }
        }
        let mf = canon::field(
            Dialect::Mysql,
            &column(Dialect::Mysql, case.type_, &case.mysql_type.to_lowercase()),
        );
        let pf = canon::field(Dialect::Postgres, &column(Dialect::Postgres, case.type_, case.pg_type));
        let bf = canon::field(Dialect::BigQuery, &column(Dialect::BigQuery, case.type_, ""));
        let mine = my_texts(&mut m, &format!("SELECT {mf} FROM {t} ORDER BY id")).await;
        let pgs = pg_texts(&mut p, &format!("SELECT {pf} FROM {t} ORDER BY id")).await;
        let structs: Vec<String> = case
            .values
            .iter()
            .enumerate()
            .map(|(i, (_, _, b))| format!("STRUCT({i} AS id, {b} AS c)"))
            .collect();
        let bqs = bq
            .query(
                PROJECT,
                "US",
                &format!("SELECT {bf} FROM UNNEST([{}]) ORDER BY id", structs.join(", ")),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.type_))
            .rows
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>();
        let (mut mi, mut pi) = (mine.iter(), pgs.iter());
        for (i, (mv, pv, b)) in case.values.iter().enumerate() {
            let want = &bqs[i];
            if mv.is_some() {
                assert_eq!(mi.next().unwrap(), want, "{} MySQL {mv:?} vs BigQuery {b}", case.type_);
                compared += 1;
            }
            if pv.is_some() {
                assert_eq!(
                    pi.next().unwrap(),
                    want,
                    "{} PostgreSQL {pv:?} vs BigQuery {b}",
                    case.type_
                );
                compared += 1;
            }
        }
        // Distinct values stay distinct: the encoding folds nothing together but −0 into 0.
        let mut distinct = bqs.clone();
        distinct.sort();
        distinct.dedup();
        let folded = usize::from(case.type_ == "FLOAT64");
        assert_eq!(distinct.len(), bqs.len() - folded, "{}: {bqs:?}", case.type_);
    }
    assert!(compared > 80, "{compared}");
    // A MySQL FLOAT (single precision) compares as the double it widens to, as it is loaded.
    let t = unique("canon");
    my(&mut m, &format!("CREATE TABLE {t} (id INT PRIMARY KEY, c FLOAT)")).await;
    my(&mut m, &format!("INSERT INTO {t} VALUES (1, 0.1)")).await;
    let mf = canon::field(Dialect::Mysql, &column(Dialect::Mysql, "FLOAT64", "float"));
    let bf = canon::field(Dialect::BigQuery, &column(Dialect::BigQuery, "FLOAT64", ""));
    let got = my_texts(&mut m, &format!("SELECT {mf} FROM {t}")).await;
    let want = bq
        .query(
            PROJECT,
            "US",
            &format!("SELECT {bf} FROM (SELECT 0.10000000149011612 AS c)"),
            &[],
        )
        .await
        .unwrap()
        .rows[0][0]
        .clone();
    assert_eq!(got[0], want);
    // PostgreSQL `real` compares as the shortest text the load sends (0.1, not 0.100000001…),
    // `char(n)` with the padding the load keeps; a NULL array as BigQuery's empty one.
    let t = unique("canon");
    pg(
        &mut p,
        &format!("CREATE TABLE {t} (id int PRIMARY KEY, r real, ch char(5), a int[])"),
    )
    .await;
    pg(&mut p, &format!("INSERT INTO {t} VALUES (1, 0.1, 'ab', NULL)")).await;
    let col = |d: Dialect, n: &str, t: &'static str, st: &str, presence_only: bool| CanonColumn {
        sql: if d == Dialect::Postgres {
            format!("\"{n}\"")
        } else {
            format!("`{n}`")
        },
        type_: t,
        source_type: st.into(),
        presence_only,
    };
    let pgf = [
        canon::field(
            Dialect::Postgres,
            &col(Dialect::Postgres, "r", "FLOAT64", "real", false),
        ),
        canon::field(
            Dialect::Postgres,
            &col(Dialect::Postgres, "ch", "STRING", "character", false),
        ),
        canon::field(Dialect::Postgres, &col(Dialect::Postgres, "a", "INT64", "_int4", true)),
    ];
    let bqf = [
        canon::field(Dialect::BigQuery, &col(Dialect::BigQuery, "r", "FLOAT64", "", false)),
        canon::field(Dialect::BigQuery, &col(Dialect::BigQuery, "ch", "STRING", "", false)),
        canon::field(Dialect::BigQuery, &col(Dialect::BigQuery, "a", "INT64", "", true)),
    ];
    let got = pg_texts(&mut p, &format!("SELECT {} FROM {t}", pgf.join(" || '|' || "))).await;
    let want = bq
        .query(
            PROJECT,
            "US",
            &format!(
                "SELECT CONCAT({}) FROM (SELECT 0.1 AS r, 'ab   ' AS ch, CAST([] AS ARRAY<INT64>) AS a)",
                bqf.join(", '|', ")
            ),
            &[],
        )
        .await
        .unwrap()
        .rows[0][0]
        .clone();
    assert_eq!(got[0], want);
}

struct Env {
    bq: BigQueryRest,
    bucket: String,
    dataset: String,
    secrets: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

async fn env() -> Env {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("chk").replace('_', "-");
    bqsteward::cloud::storage::Storage::create_bucket(&gcs, PROJECT, &bucket)
        .await
        .unwrap();
    let (mysql, postgres) = databases();
    let secrets = tempfile::tempdir().unwrap();
    for (name, url) in [("mysql-replica", &mysql), ("pg-replica", &postgres)] {
        std::fs::create_dir_all(secrets.path().join(name)).unwrap();
        std::fs::write(secrets.path().join(name).join("url"), format!("{url}\n")).unwrap();
    }
    Env {
        bq,
        bucket,
        dataset: unique("chk"),
        secrets,
        env: emulator_env_with_identity(&endpoints),
    }
}

impl Env {
    async fn run(&self, args: &[&str], manifest: &str) -> support::cli::Run {
        let dir = self.secrets.path().to_str().unwrap().to_string();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--secrets-dir", &dir]);
        bqsteward(&all, manifest, &env).await
    }

    async fn exec(&self, sql: &str) {
        self.bq
            .query(PROJECT, "US", sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `bqsteward check --output json` of the manifest's only table: its one result.
    async fn check(&self, manifest: &str, code: i32) -> serde_json::Value {
        let r = self.run(&["check", "--output", "json"], manifest).await;
        ok(&r, code);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
        v[0].clone()
    }
}

fn kinds(v: &serde_json::Value) -> Vec<(String, String)> {
    v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_string(),
                m["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn changed<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "changed" && m["key"] == key)
        .unwrap_or_else(|| panic!("no change listed for {key}: {v:#}"))
}

/// A MariaDB table loaded by `apply` is in sync; then each fault is found and named exactly, and
/// a row updated after the cutoff raises nothing.
#[tokio::test]
async fn a_mysql_table_in_sync_passes_and_each_injected_fault_is_named() {
    let e = env().await;
    let table = unique("chkmy");
    let mut c = mysql().await;
    my(
        &mut c,
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, amount DECIMAL(12,2), price DOUBLE, note VARCHAR(40), \
             created DATETIME(6), ts TIMESTAMP(6) NULL, d DATE, t TIME(6), flag TINYINT(1), email VARCHAR(60), \
             modify_time DATETIME(6) NOT NULL)"
        ),
    )
    .await;
    // 2,500 rows, all modified two days ago (older than the check's cutoff).
    my(&mut c, "SET SESSION max_recursive_iterations = 100000").await;
    my(
        &mut c,
        &format!(
            "INSERT INTO {table} \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             SELECT i, i * 1.25, i / 3e0, IF(i % 7 = 0, NULL, CONCAT('note ', i, ' ü')), \
             TIMESTAMP('2026-01-01') + INTERVAL i SECOND + INTERVAL i MICROSECOND, \
             TIMESTAMP('2025-06-01') + INTERVAL i MINUTE, DATE('2020-01-01') + INTERVAL i DAY, \
             SEC_TO_TIME(i * 17), i % 2, CONCAT('person', i, '@example.com'), \
             UTC_TIMESTAMP(6) - INTERVAL 2 DAY + INTERVAL i MICROSECOND FROM n"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: checked, namespace: payments}}
spec:
  source:
    database:
      engine: mysql
      table: bqsteward.{table}
      connectionSecret: {{name: mysql-replica}}
      watermark: {{column: modify_time}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  primaryKey: [id]
  piiColumns: [email]
  schema:
  - {{name: id, type: INT64, mode: REQUIRED}}
  - {{name: amount, type: NUMERIC}}
  - {{name: price, type: FLOAT64}}
  - {{name: note, type: STRING}}
  - {{name: created, type: DATETIME}}
  - {{name: ts, type: TIMESTAMP}}
  - {{name: d, type: DATE}}
  - {{name: t, type: TIME}}
  - {{name: flag, type: BOOL}}
  - {{name: email, type: STRING}}
  - {{name: modify_time, type: DATETIME, mode: REQUIRED}}
  checks:
    rowCount: {{every: 2h, olderThan: 1h}}
    exact: {{every: 2h, olderThan: 1h, chunkRows: 1000}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    ok(&e.run(&["apply"], &manifest).await, 0);
    let plan = e.run(&["plan"], &manifest).await;
    assert!(
        plan.stdout
            .contains("checks: rowCount every 2h (rows older than 1h), exact every 2h (rows older than 1h)"),
        "{}",
        plan.stdout
    );

    // In sync: one aggregate statement per side after the totals.
    let r = e.run(&["check"], &manifest).await;
    ok(&r, 0);
    assert!(
        r.stdout.contains("rowCount check") && r.stdout.contains("in sync: source 2500 rows, BigQuery 2500 rows"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("(2 statements on the source, 2 on BigQuery)"),
        "{}",
        r.stdout
    );

    // A row updated after the last pull: the source's count loses it (its watermark is past the
    // cutoff), BigQuery's still holds its old version — not a mismatch.
    my(
        &mut c,
        &format!("UPDATE {table} SET note = 'late', modify_time = UTC_TIMESTAMP(6) WHERE id = 41"),
    )
    .await;
    let rc_only = manifest.replace("    exact: {every: 2h, olderThan: 1h, chunkRows: 1000}\n", "");
    let rc = e.check(&rc_only, 0).await;
    assert_eq!(
        (
            rc["result"]["sourceRows"].clone(),
            rc["result"]["bigqueryRows"].clone(),
            rc["result"]["inSync"].clone()
        ),
        (
            serde_json::json!(2499),
            serde_json::json!(2500),
            serde_json::json!(true)
        ),
        "{rc:#}"
    );
    assert_eq!(rc["result"]["changedDuringCheck"], 1, "{rc:#}");

    // Faults: on the source side, on BigQuery's side, one per type family.
    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    my(&mut c, &format!("DELETE FROM {table} WHERE id = 10")).await;
    e.exec(&format!("DELETE FROM {raw} WHERE id = 20")).await;
    e.exec(&format!(
        "INSERT INTO {raw} (id, amount, modify_time) VALUES (99999, NUMERIC '1', DATETIME '2026-01-01 00:00:00')"
    ))
    .await;
    for (id, set) in [
        (30, "amount = amount + NUMERIC '0.01'"),
        (31, "price = price * 2"),
        (33, "created = DATETIME_ADD(created, INTERVAL 1 MICROSECOND)"),
        (34, "d = DATE_ADD(d, INTERVAL 1 DAY)"),
        (35, "t = TIME '00:00:01'"),
        (36, "flag = NOT flag"),
        (37, "email = 'someone.else@example.com'"),
        (38, "ts = TIMESTAMP_ADD(ts, INTERVAL 1 SECOND)"),
        (42, "note = 'changed'"),
    ] {
        e.exec(&format!("UPDATE {raw} SET {set} WHERE id = {id}")).await;
    }
    // NULL in the source, an empty string in BigQuery (row 49: 49 % 7 = 0, note NULL).
    e.exec(&format!("UPDATE {raw} SET note = '' WHERE id = 49")).await;
    // Updated after the cutoff (as by an application while the check runs): no alarm.
    my(
        &mut c,
        &format!("UPDATE {table} SET amount = 0, modify_time = UTC_TIMESTAMP(6) WHERE id = 40"),
    )
    .await;

    let v = e
        .check(&manifest.replace("    rowCount: {every: 2h, olderThan: 1h}\n", ""), 1)
        .await;
    let res = &v["result"];
    assert_eq!(res["inSync"], false);
    assert_eq!(res["missingInSource"], 2, "{v:#}");
    assert_eq!(res["missingInBigQuery"], 1, "{v:#}");
    assert_eq!(res["changed"], 10, "{v:#}");
    assert_eq!(res["changedDuringCheck"], 2, "{v:#}");
    let k = kinds(&v);
    for want in [
        ("missingInSource", "id=10"),
        ("missingInSource", "id=99999"),
        ("missingInBigQuery", "id=20"),
    ] {
        assert!(
            k.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {k:?}"
        );
    }
    assert!(!k.iter().any(|(_, key)| key == "id=40"), "{k:?}");
    let col = |key: &str| changed(&v, key)["columns"][0].clone();
    assert_eq!(
        col("id=30"),
        serde_json::json!({"column": "amount", "source": "37.5", "bigquery": "37.51"})
    );
    assert_eq!(
        col("id=31"),
        serde_json::json!({"column": "price", "source": "10.333333333333334", "bigquery": "20.666666666666668"})
    );
    assert_eq!(col("id=33")["source"], "2026-01-01 00:00:33.000033");
    assert_eq!(col("id=33")["bigquery"], "2026-01-01 00:00:33.000034");
    assert_eq!(col("id=34")["column"], "d");
    assert_eq!(col("id=35")["bigquery"], "00:00:01.000000");
    assert_eq!(
        col("id=36"),
        serde_json::json!({"column": "flag", "source": "false", "bigquery": "true"})
    );
    assert_eq!(
        col("id=37"),
        serde_json::json!({"column": "email", "source": "differs", "bigquery": "differs"})
    );
    assert_eq!(col("id=38")["column"], "ts");
    assert_eq!(col("id=42")["bigquery"], "changed");
    assert_eq!(
        col("id=49"),
        serde_json::json!({"column": "note", "source": null, "bigquery": ""})
    );
    for m in v["mismatches"].as_array().unwrap() {
        assert_eq!(
            m["columns"].as_array().map_or(1, |c| c.len().max(1)),
            1,
            "one column per injected change: {m}"
        );
    }
    let text = v.to_string();
    assert!(!text.contains("example.com"), "a PII value was reported: {text}");

    // The row count names the same missing rows (by counts of key cells), not the changed ones.
    let rc = e.check(&rc_only, 1).await;
    assert_eq!(rc["check"], "rowCount");
    assert_eq!(
        (rc["result"]["sourceRows"].clone(), rc["result"]["bigqueryRows"].clone()),
        (serde_json::json!(2497), serde_json::json!(2500)),
        "{rc:#}"
    );
    assert_eq!(
        (
            rc["result"]["missingInSource"].clone(),
            rc["result"]["missingInBigQuery"].clone(),
            rc["result"]["changed"].clone()
        ),
        (serde_json::json!(2), serde_json::json!(1), serde_json::Value::Null),
        "{rc:#}"
    );
    let k = kinds(&rc);
    assert!(k.contains(&("missingInSource".into(), "id=10".into())), "{k:?}");
    assert!(k.contains(&("missingInBigQuery".into(), "id=20".into())), "{k:?}");
}

/// A PostgreSQL table with a text key (hash cells): in sync with floats' NaN and infinities,
/// then a decimal off in the last place and a row deleted in the source are named.
#[tokio::test]
async fn a_postgres_table_with_a_text_key_is_checked_by_hash_cells() {
    let e = env().await;
    let table = unique("chkpg");
    let mut c = postgres().await;
    pg(&mut c, "CREATE SCHEMA IF NOT EXISTS shop").await;
    pg(
        &mut c,
        &format!(
            "CREATE TABLE shop.{table} (code text PRIMARY KEY, total numeric(14,4), ratio float8, at timestamptz, \
             label text, updated_at timestamp NOT NULL)"
        ),
    )
    .await;
    pg(
        &mut c,
        &format!(
            "INSERT INTO shop.{table} SELECT 'order-' || i, i * 1.0001, CASE WHEN i = 1 THEN 'NaN' WHEN i = 2 THEN 'Infinity' \
             ELSE i / 7.0 END, timestamptz '2026-03-01 00:00:00+00' + i * interval '1 second', \
             CASE WHEN i % 5 = 0 THEN '' ELSE 'lábel ' || i END, \
             (now() AT TIME ZONE 'UTC') - interval '3 hours' + i * interval '1 microsecond' FROM generate_series(1, 1500) i"
        ),
    )
    .await;
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: orders, namespace: shop}}
spec:
  source:
    database:
      engine: postgres
      table: shop.{table}
      connectionSecret: {{name: pg-replica}}
      watermark: {{column: updated_at}}
    landing: gs://{bucket}/{table}/
  destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}
  primaryKey: [code]
  schema:
  - {{name: code, type: STRING, mode: REQUIRED}}
  - {{name: total, type: NUMERIC}}
  - {{name: ratio, type: FLOAT64}}
  - {{name: at, type: TIMESTAMP}}
  - {{name: label, type: STRING}}
  - {{name: updated_at, type: DATETIME, mode: REQUIRED}}
  checks:
    exact: {{olderThan: 1h, chunkRows: 1000}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    ok(&e.run(&["apply"], &manifest).await, 0);
    let v = e.check(&manifest, 0).await;
    assert_eq!(v["result"]["inSync"], true, "{v:#}");
    assert_eq!(v["result"]["sourceRows"], 1500);
    assert_eq!(v["statements"], serde_json::json!({"source": 2, "bigquery": 2}));

    let raw = format!("`{PROJECT}.{}.{table}`", e.dataset);
    e.exec(&format!(
        "UPDATE {raw} SET total = total + NUMERIC '0.0001' WHERE code = 'order-77'"
    ))
    .await;
    pg(&mut c, &format!("DELETE FROM shop.{table} WHERE code = 'order-500'")).await;
    let v = e.check(&manifest, 1).await;
    assert_eq!(
        (
            v["result"]["changed"].clone(),
            v["result"]["missingInSource"].clone(),
            v["result"]["missingInBigQuery"].clone()
        ),
        (serde_json::json!(1), serde_json::json!(1), serde_json::Value::Null),
        "{v:#}"
    );
    assert_eq!(
        changed(&v, "code=order-77")["columns"][0],
        serde_json::json!({"column": "total", "source": "77.0077", "bigquery": "77.0078"})
    );
    assert!(kinds(&v).contains(&("missingInSource".into(), "code=order-500".into())));
}

/// A file source's row count: the rows the ledger recorded for each appended batch against the
/// rows of that batch in the table; a row lost in BigQuery and a row of no batch are both named.
#[tokio::test]
async fn a_file_table_row_count_compares_each_batch_with_the_ledger() {
    let e = env().await;
    let gcs = GcsRest::new(&emulators()).unwrap();
    let prefix = unique("files");
    for (file, ids) in [("a.jsonl", 1..4), ("b.jsonl", 4..8)] {
        let body: String = ids.map(|i| format!("{{\"id\": {i}, \"v\": \"row {i}\"}}\n")).collect();
        bqsteward::cloud::storage::Storage::upload(
            &gcs,
            &e.bucket,
            &format!("{prefix}/{file}"),
            body.into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    }
    let manifest = format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: events, namespace: files}}
spec:
  source: {{uri: "gs://{bucket}/{prefix}/", format: NEWLINE_DELIMITED_JSON}}
  destination: {{project: {PROJECT}, dataset: {dataset}, table: events}}
  schema:
  - {{name: id, type: INT64}}
  - {{name: v, type: STRING}}
  checks:
    rowCount: {{every: 1h, olderThan: 0s}}
"#,
        bucket = e.bucket,
        dataset = e.dataset
    );
    ok(&e.run(&["apply"], &manifest).await, 0);
    let v = e.check(&manifest, 0).await;
    assert_eq!(
        (
            v["result"]["inSync"].clone(),
            v["result"]["sourceRows"].clone(),
            v["result"]["bigqueryRows"].clone()
        ),
        (serde_json::json!(true), serde_json::json!(7), serde_json::json!(7)),
        "{v:#}"
    );
    let raw = format!("`{PROJECT}.{}.events`", e.dataset);
    e.exec(&format!("DELETE FROM {raw} WHERE id = 2")).await;
    e.exec(&format!("INSERT INTO {raw} (id, v) VALUES (99, 'by hand')"))
        .await;
    let r = e.run(&["check"], &manifest).await;
    ok(&r, 1);
    assert!(
        r.stdout
            .contains("rowCount check, batches recorded in the ledger before "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("MISMATCH: ledger 7 rows, BigQuery 7 rows"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(": 7 rows in the ledger, 6 in the table"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("- 1 rows of no loaded batch of the ledger"),
        "{}",
        r.stdout
    );
}
