//! IngestedTable view layers end to end: the real binary against bqemulator + fake-gcs-server.
//! Loads rows with repeated keys, equal versions and later corrections; queries the dedup and
//! clean views for exact answers; checks the authorizations survive an exact DatasetAccess; edits
//! a view and an access list by hand and watches `plan` report it and `apply` restore it; evolves
//! the schema; and refuses a column name that would break out of its quotes.

mod support;

use support::cli::{Run, adds, emulator_env, ok};

use bqsteward::cloud::Endpoints;
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::{Rows, TableRef};
use bqsteward::cloud::storage::{GcsRest, Storage};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

const PROJECT: &str = "bqsteward-views";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-views.iam.gserviceaccount.com";

struct Env {
    endpoints: Endpoints,
    bq: BigQueryRest,
    gcs: GcsRest,
    bucket: String,
    dataset: String,
}

impl Env {
    async fn new() -> Env {
        let endpoints = support::emulators();
        let bq = BigQueryRest::new(&endpoints).await.unwrap();
        let gcs = GcsRest::new(&endpoints).unwrap();
        let bucket = support::unique("views").replace('_', "-");
        gcs.create_bucket(PROJECT, &bucket).await.unwrap();
        Env {
            bq,
            gcs,
            bucket,
            dataset: support::unique("pay"),
            endpoints,
        }
    }

    async fn put(&self, name: &str, rows: &[Value]) {
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        self.gcs
            .upload(&self.bucket, name, body.into_bytes(), "application/octet-stream")
            .await
            .unwrap();
    }

    /// Writes the manifests and runs the binary on them.
    async fn bqsteward(&self, cmd: &[&str], manifests: &str) -> Run {
        let [bq, gcs] = emulator_env(&self.endpoints);
        let env = [
            (bq.0, bq.1.as_str()),
            (gcs.0, gcs.1.as_str()),
            ("BQSTEWARD_IDENTITY", IDENTITY),
        ];
        support::cli::bqsteward(cmd, manifests, &env).await
    }

    fn table(&self, suffix: &str) -> TableRef {
        TableRef::new(PROJECT, &format!("{}{suffix}", self.dataset), "payments")
    }

    async fn query(&self, sql: &str) -> Rows {
        self.bq.query(PROJECT, "US", sql, &[]).await.unwrap()
    }

    async fn access(&self, dataset: &str) -> BTreeSet<String> {
        support::access_lines(&self.bq, PROJECT, dataset).await
    }

    /// Someone else's REST call.
    async fn rest(&self, method: reqwest::Method, path: &str, body: Value) {
        let r = reqwest::Client::new()
            .request(method, format!("{}/projects/{PROJECT}/{path}", self.endpoints.bigquery))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
}

/// The IngestedTable (with `extra_columns` appended to its schema) and two exact DatasetAccess
/// lists: the raw dataset locked to project owners, the clean layer readable by analysts.
fn manifests(env: &Env, extra_columns: &str) -> String {
    let (b, d) = (&env.bucket, &env.dataset);
    format!(
        r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: payments, namespace: pay}}
spec:
  source: {{uri: "gs://{b}/payments/", format: NEWLINE_DELIMITED_JSON}}
  destination: {{project: {PROJECT}, dataset: {d}, table: payments}}
  schema:
    - {{name: id, type: INT64, mode: REQUIRED}}
    - {{name: select, type: STRING}}
    - {{name: status, type: STRING}}
    - {{name: email, type: STRING}}
    - {{name: ssn, type: STRING}}
    - {{name: modify_time, type: TIMESTAMP}}
{extra_columns}  primaryKey: [id]
  versionColumn: modify_time
  piiColumns: [email, ssn]
  hashedPiiColumns: [ssn]
  excludedColumns: [card_number]
  views: {{full: true, clean: true}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: DatasetAccess
metadata: {{name: raw-locked, namespace: pay}}
spec:
  project: {PROJECT}
  dataset: {d}
  access:
    - {{role: OWNER, specialGroup: projectOwners}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: DatasetAccess
metadata: {{name: clean-readers, namespace: pay}}
spec:
  project: {PROJECT}
  dataset: {d}__views_clean
  access:
    - {{role: OWNER, specialGroup: projectOwners}}
    - {{role: READER, group: analysts@acme.com}}
"#
    )
}

fn row(id: i64, status: &str, time: Option<&str>, email: &str) -> Value {
    json!({
        "id": id, "select": format!("kw{id}"), "status": status, "email": email,
        "ssn": format!("ssn-{id}"), "modify_time": time, "card_number": "4111111111111111",
    })
}

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-02T00:00:00Z";
const T3: &str = "2026-01-03T00:00:00Z";

/// `id → status` of a view, ordered by id.
async fn statuses(env: &Env, view: &TableRef) -> Vec<(String, String)> {
    let rows = env
        .query(&format!("SELECT id, status FROM {} ORDER BY id", view.sql()))
        .await;
    rows.rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
        .collect()
}

fn pairs(v: &[(i64, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(i, s)| (i.to_string(), s.to_string())).collect()
}

#[tokio::test]
async fn dedup_and_clean_views_authorized_restored_and_evolving() {
    let env = Env::new().await;
    let m = manifests(&env, "");
    let (full, clean, raw) = (env.table("__views_full"), env.table("__views_clean"), env.table(""));

    // Batch 1: id 1 updated later; id 2 twice with the same version in one file; id 3 with and
    // without a version.
    env.put(
        "payments/2026-01-02/part-1.json",
        &[
            row(1, "new", Some(T1), "a@x.com"),
            row(1, "paid", Some(T2), "a@x.com"),
            row(2, "x", Some(T1), "b@x.com"),
            row(2, "y", Some(T1), "b@x.com"),
            row(3, "versioned", Some(T1), "c@x.com"),
            row(3, "no-version", None, "c@x.com"),
        ],
    )
    .await;

    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 2);
    // The last line tells the same story as the exit code, for every kind.
    assert!(
        r.stdout.trim_end().ends_with("Plan: 1 table to load or change (1 file); 1 table with view changes; access lists: 3 datasets to change (+8 \u{2212}0 entries)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("+ dataset {PROJECT}.{}__views_full (US)", env.dataset)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!("+ clean view {clean}")), "{}", r.stdout);
    let salt = TableRef::new(PROJECT, &format!("{}__views_full", env.dataset), "_bqsteward_salt");
    assert!(r.stdout.contains(&format!("+ salt table {salt}")), "{}", r.stdout);
    assert!(r.stdout.contains("[dataset created by this apply]"), "{}", r.stdout);
    assert!(adds(&r.stdout, &format!("view:{full}")), "{}", r.stdout);

    let r = env.bqsteward(&["apply"], &m).await;
    ok(&r, 0);
    assert!(r.stdout.contains(&format!("created full view {full}")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("created salt table {salt}")), "{}", r.stdout);
    // `apply` says what it writes in one line per view; the SQL is `plan`'s (or `--show-sql`).
    assert!(r.stdout.contains(&format!("+ full view {full}")), "{}", r.stdout);
    assert!(!r.stdout.contains("QUALIFY ROW_NUMBER()"), "{}", r.stdout);
    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 0);
    assert!(r.stdout.trim_end().ends_with("Plan: no changes"), "{}", r.stdout);

    // Exactly one row per key: greatest version; equal versions in one batch broken by row
    // content (stable); a NULL version loses.
    let expected = pairs(&[(1, "paid"), (2, "y"), (3, "versioned")]);
    assert_eq!(statuses(&env, &full).await, expected);
    assert_eq!(statuses(&env, &full).await, expected, "same data, same answer");
    assert_eq!(statuses(&env, &clean).await, expected);

    // The clean view: no PII column, the hashed one hashed, no private lineage.
    let rows = env.query(&format!("SELECT * FROM {} ORDER BY id", clean.sql())).await;
    assert_eq!(
        rows.columns,
        ["id", "select", "status", "ssn", "modify_time", "_bqsteward_loaded_at"],
        "clean view columns"
    );
    // Keyed: SHA-256 of the salt (64 random hex characters, one row, made inside BigQuery) and the
    // value — not the unsalted hash a dictionary of known SSNs would reverse.
    let salt_rows = env.query(&format!("SELECT salt FROM {}", salt.sql())).await;
    assert_eq!(salt_rows.rows.len(), 1, "one salt row");
    let salt_value = salt_rows.rows[0][0].clone().unwrap();
    assert!(
        salt_value.len() == 64 && salt_value.chars().all(|c| c.is_ascii_hexdigit()),
        "{salt_value}"
    );
    let ssn1 = hex::encode(Sha256::digest(format!("{salt_value}ssn-1").as_bytes()));
    assert_eq!(rows.rows[0][3].as_deref(), Some(ssn1.as_str()));
    let unsalted = hex::encode(Sha256::digest(b"ssn-1"));
    assert!(rows.rows.iter().all(|r| r[3].as_deref() != Some(unsalted.as_str())));
    assert_eq!(rows.rows[0][1].as_deref(), Some("kw1"), "a keyword column works");
    let full_cols = env
        .query(&format!("SELECT * FROM {} LIMIT 1", full.sql()))
        .await
        .columns;
    assert!(full_cols.contains(&"email".to_string()) && full_cols.contains(&"_bqsteward_batch_id".to_string()));

    // PCI never reached BigQuery: not a column anywhere, not a value anywhere.
    for t in [&raw, &full, &clean] {
        let info = env.bq.get_table(t).await.unwrap().unwrap();
        assert!(
            !info.schema.fields.iter().any(|f| f.name == "card_number"),
            "{t} has card_number"
        );
    }
    let leaked = env
        .query(&format!(
            "SELECT COUNT(*) FROM {} AS r WHERE STRPOS(TO_JSON_STRING(r), '4111111111111111') > 0",
            raw.sql()
        ))
        .await;
    assert_eq!(leaked.rows[0][0].as_deref(), Some("0"));

    // The salt never leaves BigQuery: not in any output of bqsteward.
    let r = env.bqsteward(&["plan", "--output", "json"], &m).await;
    assert!(!r.stdout.contains(&salt_value) && !r.stderr.contains(&salt_value));

    // Authorizations: full on raw, clean on full — kept by the exact DatasetAccess on raw.
    let raw_acl = env.access(&env.dataset).await;
    assert!(raw_acl.contains(&format!("- view:{full}")), "{raw_acl:?}");
    assert!(!raw_acl.iter().any(|e| e.contains("analysts")), "{raw_acl:?}");
    let full_acl = env.access(&format!("{}__views_full", env.dataset)).await;
    assert!(full_acl.contains(&format!("- view:{clean}")), "{full_acl:?}");
    let clean_acl = env.access(&format!("{}__views_clean", env.dataset)).await;
    assert!(clean_acl.contains("READER group:analysts@acme.com"), "{clean_acl:?}");

    // Batch 2: a correction for id 1, an equal-version row for id 2 that wins only because it
    // arrived later, and a new id.
    env.put(
        "payments/2026-01-03/part-1.json",
        &[
            row(1, "refunded", Some(T3), "a@x.com"),
            row(2, "a-later", Some(T1), "b@x.com"),
            row(4, "new", Some(T1), "d@x.com"),
        ],
    )
    .await;
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    let expected = pairs(&[(1, "refunded"), (2, "a-later"), (3, "versioned"), (4, "new")]);
    assert_eq!(statuses(&env, &full).await, expected);
    assert_eq!(statuses(&env, &clean).await, expected);

    // Someone edits the full view by hand: plan shows the SQL diff, apply restores it in place.
    env.rest(
        reqwest::Method::PATCH,
        &format!("datasets/{}__views_full/tables/payments", env.dataset),
        json!({"view": {"query": format!("SELECT * FROM {}", raw.sql()), "useLegacySql": false}}),
    )
    .await;
    assert_eq!(
        env.query(&format!("SELECT COUNT(*) FROM {}", full.sql())).await.rows[0][0].as_deref(),
        Some("9")
    );
    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 2);
    assert!(
        r.stdout
            .contains(&format!("~ full view {full}: SQL edited outside bqsteward")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("-SELECT * FROM {}", raw.sql())),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("+QUALIFY ROW_NUMBER() OVER ("), "{}", r.stdout);
    let r = env.bqsteward(&["apply"], &m).await;
    ok(&r, 0);
    assert!(
        r.stdout.contains(&format!("restored the SQL of full view {full}")),
        "{}",
        r.stdout
    );
    assert_eq!(statuses(&env, &full).await, expected);
    ok(&env.bqsteward(&["plan"], &m).await, 0);

    // Someone drops the clean view's authorization (as recreating a view does): restored.
    let mut access: Vec<Value> = env
        .bq
        .get_dataset(PROJECT, &format!("{}__views_full", env.dataset))
        .await
        .unwrap()
        .unwrap()
        .access;
    access.retain(|e| e.get("view").is_none());
    env.rest(
        reqwest::Method::PATCH,
        &format!("datasets/{}__views_full", env.dataset),
        json!({ "access": access }),
    )
    .await;
    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 2);
    assert!(adds(&r.stdout, &format!("view:{clean}")), "{}", r.stdout);
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    assert!(
        env.access(&format!("{}__views_full", env.dataset))
            .await
            .contains(&format!("- view:{clean}"))
    );

    // Someone deletes the clean view: recreated.
    env.bq.delete_table(&clean).await.unwrap();
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    assert_eq!(statuses(&env, &clean).await, expected);

    // Schema evolution: a new nullable column reaches both views in the same apply.
    let evolved = manifests(&env, "    - {name: channel, type: STRING}\n");
    let mut r5 = row(5, "new", Some(T1), "e@x.com");
    r5["channel"] = json!("web");
    env.put("payments/2026-01-04/part-1.json", &[r5]).await;
    let r = env.bqsteward(&["plan"], &evolved).await;
    ok(&r, 2);
    assert!(r.stdout.contains("+  `channel`,"), "{}", r.stdout);
    let r = env.bqsteward(&["apply", "--show-sql"], &evolved).await;
    ok(&r, 0);
    assert!(
        r.stdout.contains("+  `channel`,"),
        "--show-sql prints the SQL diff:\n{}",
        r.stdout
    );
    for v in [&full, &clean] {
        let rows = env
            .query(&format!(
                "SELECT id, channel FROM {} WHERE id >= 4 ORDER BY id",
                v.sql()
            ))
            .await;
        assert_eq!(
            rows.rows,
            vec![vec![Some("4".into()), None], vec![Some("5".into()), Some("web".into())]],
            "{v}"
        );
    }
    ok(&env.bqsteward(&["plan"], &evolved).await, 0);

    // The column is dropped from the manifest again (deprecated upstream): the full view keeps
    // it so queries keep working; the clean view leaves it out, and plan says why.
    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 2);
    assert!(
        r.stdout
            .contains("columns [\"channel\"] are in the table but no longer in spec.schema"),
        "{}",
        r.stdout
    );
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    let rows = env
        .query(&format!("SELECT channel FROM {} WHERE id = 5", full.sql()))
        .await;
    assert_eq!(rows.rows, vec![vec![Some("web".to_string())]]);
    let cols = env
        .query(&format!("SELECT * FROM {} LIMIT 1", clean.sql()))
        .await
        .columns;
    assert!(!cols.contains(&"channel".to_string()), "{cols:?}");
}

#[tokio::test]
async fn a_column_name_that_breaks_quoting_is_refused_before_anything_is_written() {
    let env = Env::new().await;
    let m = manifests(&env, "    - {name: \"x` FROM t; DROP TABLE y; --\", type: STRING}\n");
    for cmd in ["validate", "plan", "apply"] {
        let args: &[&str] = &[cmd];
        let r = env.bqsteward(args, &m).await;
        ok(&r, 1);
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains("IngestedTable pay/payments: spec.schema[6].name"),
            "{cmd}: {said}"
        );
        assert!(said.contains("backticks"), "{cmd}: {said}");
    }
    assert!(env.bq.get_dataset(PROJECT, &env.dataset).await.unwrap().is_none());
}

#[tokio::test]
async fn a_table_where_a_view_belongs_is_refused_and_left_alone() {
    let env = Env::new().await;
    let m = manifests(&env, "");
    env.put("payments/a.json", &[row(1, "new", Some(T1), "a@x.com")]).await;
    let full_ds = format!("{}__views_full", env.dataset);
    env.bq.create_dataset(PROJECT, &full_ds, "US").await.unwrap();
    env.rest(
        reqwest::Method::POST,
        &format!("datasets/{full_ds}/tables"),
        json!({"tableReference": {"projectId": PROJECT, "datasetId": full_ds, "tableId": "payments"},
               "schema": {"fields": [{"name": "keep", "type": "STRING"}]}}),
    )
    .await;
    let r = env.bqsteward(&["plan"], &m).await;
    ok(&r, 1);
    assert!(
        r.stdout.contains("is a TABLE where the full view belongs"),
        "{}",
        r.stdout
    );
    let r = env.bqsteward(&["apply"], &m).await;
    ok(&r, 1);
    // No access entry for views that could not be made (BigQuery would refuse the whole list).
    assert!(
        r.stdout.contains(&format!(
            "authorization of view {} (IngestedTable pay/payments) skipped",
            env.table("__views_full")
        )),
        "{}",
        r.stdout
    );
    let raw_acl = env.access(&env.dataset).await;
    assert!(!raw_acl.iter().any(|e| e.contains("view:")), "{raw_acl:?}");
    let info = env.bq.get_table(&env.table("__views_full")).await.unwrap().unwrap();
    assert_eq!(info.kind, "TABLE");
    assert!(env.bq.get_table(&env.table("__views_clean")).await.unwrap().is_none());
}

#[tokio::test]
async fn turning_a_layer_off_deletes_its_view_and_authorization() {
    let env = Env::new().await;
    env.put("payments/a.json", &[row(1, "new", Some(T1), "a@x.com")]).await;
    let m = manifests(&env, "");
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    let (full, clean) = (env.table("__views_full"), env.table("__views_clean"));
    let full_ds = format!("{}__views_full", env.dataset);
    assert!(env.access(&full_ds).await.contains(&format!("- view:{clean}")));

    // views.clean off (and the DatasetAccess on the clean dataset with it).
    let only_full = m
        .replace("views: {full: true, clean: true}", "views: {full: true}")
        .split("---\n")
        .filter(|d| !d.contains("clean-readers"))
        .collect::<Vec<_>>()
        .join("---\n");
    let r = env.bqsteward(&["plan"], &only_full).await;
    ok(&r, 2);
    assert!(
        r.stdout.contains(&format!(
            "- view {clean} (made by bqsteward, no longer declared): delete"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with('-') && l.contains(&format!("view:{clean}"))),
        "{}",
        r.stdout
    );
    // The same plan for tools.
    let r = env.bqsteward(&["plan", "--output", "json"], &only_full).await;
    ok(&r, 2);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["tables"][0]["views"]["delete"][0], clean.to_string(), "{doc}");
    assert_eq!(doc["tables"][0]["views"]["views"][0]["change"], "unchanged", "{doc}");
    assert_eq!(doc["tables"][0]["schema"], "unchanged", "{doc}");
    assert!(
        doc["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["remove"].as_array().is_some_and(|r| !r.is_empty())),
        "{doc}"
    );
    // While any access list of the run is refused (here: another dataset's large removal), the
    // view stays with its authorization: deleting it first would lose the retirement for good.
    let other = format!("{}_other", env.dataset);
    env.bq.create_dataset(PROJECT, &other, "US").await.unwrap();
    let mut readers = vec![json!({"role": "OWNER", "specialGroup": "projectOwners"})];
    readers.extend((0..12).map(|i| json!({"role": "READER", "userByEmail": format!("r{i}@acme.com")})));
    env.rest(
        reqwest::Method::PATCH,
        &format!("datasets/{other}"),
        json!({ "access": readers }),
    )
    .await;
    let with_refusal = format!(
        "{only_full}---\napiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: other, namespace: pay}}\nspec:\n  project: {PROJECT}\n  dataset: {other}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n"
    );
    let r = env.bqsteward(&["apply"], &with_refusal).await;
    ok(&r, 1);
    assert!(r.stdout.contains("Refused: nothing was written"), "{}", r.stdout);
    assert!(
        env.bq.get_table(&clean).await.unwrap().is_some(),
        "deleted before its authorization was retired"
    );
    assert!(env.access(&full_ds).await.contains(&format!("- view:{clean}")));

    let r = env.bqsteward(&["apply"], &only_full).await;
    ok(&r, 0);
    assert!(env.bq.get_table(&clean).await.unwrap().is_none());
    assert!(!env.access(&full_ds).await.contains(&format!("- view:{clean}")));
    assert!(env.bq.get_table(&full).await.unwrap().is_some());
    ok(&env.bqsteward(&["plan"], &only_full).await, 0);

    // A view someone else made at that name is not bqsteward's: left alone.
    env.rest(
        reqwest::Method::POST,
        &format!("datasets/{}__views_clean/tables", env.dataset),
        json!({"tableReference": {"projectId": PROJECT, "datasetId": format!("{}__views_clean", env.dataset), "tableId": "payments"},
               "view": {"query": format!("SELECT id FROM {}", env.table("").sql()), "useLegacySql": false}}),
    )
    .await;
    ok(&env.bqsteward(&["plan"], &only_full).await, 0);
    ok(&env.bqsteward(&["apply"], &only_full).await, 0);
    assert!(env.bq.get_table(&clean).await.unwrap().is_some());
}

/// A column once in `piiColumns` is marked on the table: taking it out of the list does not put it
/// in the clean view; only the IngestedTable's `bqsteward.dev/allow-pii` annotation releases it.
#[tokio::test]
async fn a_column_once_pii_stays_out_of_the_clean_view_until_released() {
    let env = Env::new().await;
    env.put("payments/a.json", &[row(1, "new", Some(T1), "a@x.com")]).await;
    let m = manifests(&env, "");
    ok(&env.bqsteward(&["apply"], &m).await, 0);
    let clean = env.table("__views_clean");
    let sql = format!("SELECT * FROM {} LIMIT 1", clean.sql());
    assert!(!env.query(&sql).await.columns.contains(&"email".to_string()));

    let unmarked = m.replace("piiColumns: [email, ssn]", "piiColumns: [ssn]");
    let r = env.bqsteward(&["plan"], &unmarked).await;
    assert!(
        r.stdout.contains("columns [\"email\"] were once in piiColumns"),
        "{}",
        r.stdout
    );
    ok(&env.bqsteward(&["apply"], &unmarked).await, 0);
    assert!(
        !env.query(&sql).await.columns.contains(&"email".to_string()),
        "released without the annotation"
    );

    let released = unmarked.replace(
        "metadata: {name: payments, namespace: pay}",
        "metadata: {name: payments, namespace: pay, annotations: {bqsteward.dev/allow-pii: email}}",
    );
    assert_ne!(released, unmarked);
    ok(&env.bqsteward(&["apply"], &released).await, 0);
    assert!(env.query(&sql).await.columns.contains(&"email".to_string()));
}
