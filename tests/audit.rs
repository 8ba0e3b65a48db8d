//! The audit log in BigQuery, against bqemulator and fake-gcs-server through the real binary (and,
//! for the crash, the production executor in-process): each kind of change writes exactly one row
//! with the right fields, a rerun with nothing to do writes none, the saved queries in
//! `config/audit/queries.sql` return what the test did, a crash after the change and before the
//! audit write leaves exactly one row after the rerun, and BigQuery refusing the audit writes (a
//! fault proxy answering 403) blocks no change — the rows arrive with the next run.

mod support;

use bqsteward::audit::{Destination, Recorder, RunContext};
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::Param;
use bqsteward::cloud::storage::{GcsRest, Storage};
use bqsteward::ingest::exec::{Executor, Step, Target, observe, plan_table};
use std::sync::Arc;
use support::cli::{bqsteward, emulator_env, ok};
use support::{emulators, unique};

const PROJECT: &str = "bqsteward-test";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-test.iam.gserviceaccount.com";
const AUDIT: &str = "`bqsteward-test._bqsteward_us.audit`";

/// Rows of the audit table matching `filter` (SQL over its columns), as column → value maps.
async fn rows(bq: &BigQueryRest, filter: &str, params: &[Param]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let cols = [
        "event_id",
        "action",
        "resource",
        "target",
        "subject",
        "role",
        "outcome",
        "etag_before",
        "etag_after",
        "files",
        "rows",
        "category",
        "message",
        "actor",
        "run_id",
        "revision",
    ];
    let sql = format!(
        "SELECT {}, ARRAY_LENGTH(job_ids), ARRAY_LENGTH(delays_ms) FROM {AUDIT} WHERE {filter} ORDER BY time",
        cols.join(", ")
    );
    let r = bq.query(PROJECT, "US", &sql, params).await.unwrap();
    r.rows
        .into_iter()
        .map(|row| {
            cols.iter()
                .chain(&["jobs", "delays"])
                .zip(row)
                .map(|(c, v)| {
                    (
                        c.to_string(),
                        v.map_or(serde_json::Value::Null, serde_json::Value::String),
                    )
                })
                .collect()
        })
        .collect()
}

fn count(rows: &[serde_json::Map<String, serde_json::Value>], action: &str) -> usize {
    rows.iter().filter(|r| r["action"] == action).count()
}

/// The saved queries: `-- name: NAME` then the SQL, `{audit}` standing for the table.
fn saved_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("config/audit/queries.sql").unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- name: ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, sql)) = out.last_mut()
            && !line.starts_with("--")
        {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out.into_iter()
        .map(|(n, s)| (n, s.replace("{audit}", AUDIT).trim().trim_end_matches(';').to_string()))
        .collect()
}

#[tokio::test]
async fn each_change_is_one_row_a_rerun_adds_none_and_the_saved_queries_find_them() {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("audit").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let dataset = unique("audit");
    for (name, body) in [
        ("a.json", "{\"id\": 1}\n{\"id\": 2}\n"),
        ("c.json", "{\"id\": not json\n"),
    ] {
        gcs.upload(
            &bucket,
            &format!("in/{name}"),
            body.as_bytes().to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    }
    let revision = unique("rev");
    let fake = bqsteward::standins::cloud_identity::FakeGroups::start(50).await;
    let group = format!("{}@acme.com", unique("team").replace('_', "-"));
    fake.add_group(&group, &[("old@acme.com", &["MEMBER"])]);
    let table_manifest = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: events, namespace: audit, annotations: {{bqsteward.dev/revision: {revision}}}}}\nspec:\n  source: {{uri: \"gs://{bucket}/in/\", format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {dataset}, table: events}}\n  schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  views: {{full: true}}\n"
    );
    let access = |readers: &str| {
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: readers, namespace: audit}}\nspec:\n  project: {PROJECT}\n  dataset: {dataset}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n{readers}"
        )
    };
    let groups = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: GroupMembership\nmetadata: {{name: team, namespace: audit}}\nspec:\n  group: {group}\n  members:\n    - {{email: new@acme.com, role: MEMBER}}\n"
    );
    let manifest = |readers: &str| [table_manifest.clone(), access(readers), groups.clone()].join("---\n");
    let env = emulator_env(&endpoints);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("BQSTEWARD_IDENTITY", IDENTITY),
        ("BQSTEWARD_REVISION", "cli-rev"),
        ("CLOUD_IDENTITY_EMULATOR_HOST", fake.url.as_str()),
    ]);
    let analyst = "    - {role: READER, user: analyst@acme.com}\n";
    ok(&bqsteward(&["apply"], &manifest(analyst), &env).await, 0);

    let target = format!("{PROJECT}.{dataset}");
    let table = format!("{target}.events");
    let mine = "(target LIKE CONCAT(@ds, '%') OR target = @group)";
    let params = [Param::string("ds", &target), Param::string("group", &group)];
    let all = rows(&bq, mine, &params).await;
    let table_rows: Vec<_> = all
        .iter()
        .filter(|r| r["resource"] == "IngestedTable audit/events")
        .cloned()
        .collect();
    assert_eq!(count(&table_rows, "table_created"), 1, "{table_rows:#?}");
    assert_eq!(count(&table_rows, "load_batch"), 1, "{table_rows:#?}");
    assert_eq!(count(&table_rows, "quarantined"), 1, "{table_rows:#?}");
    assert!(count(&table_rows, "view_created") >= 1, "{table_rows:#?}");
    let load = table_rows.iter().find(|r| r["action"] == "load_batch").unwrap();
    assert_eq!(
        (load["target"].as_str(), load["files"].as_str(), load["rows"].as_str()),
        (Some(table.as_str()), Some("1"), Some("2"))
    );
    assert!(load["jobs"].as_str().is_some_and(|n| n != "0"), "{load:#?}");
    assert_eq!(load["delays"], "1", "one delay per file: {load:#?}");
    let q = table_rows.iter().find(|r| r["action"] == "quarantined").unwrap();
    assert_eq!(q["category"], "Corrupt");
    assert!(q["subject"].as_str().unwrap().contains("/in/c.json#"), "{q:#?}");
    for r in &table_rows {
        assert_eq!(r["revision"], revision.as_str(), "the annotation wins: {r:#?}");
        assert_eq!(r["actor"], IDENTITY);
    }
    let granted: Vec<_> = all.iter().filter(|r| r["action"] == "access_added").collect();
    let analyst_row = granted
        .iter()
        .find(|r| r["subject"] == "user:analyst@acme.com")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(analyst_row["resource"], "DatasetAccess audit/readers");
    assert_eq!(analyst_row["role"], "READER");
    assert_eq!(analyst_row["revision"], "cli-rev", "no annotation: --revision");
    let (before, after) = (
        analyst_row["etag_before"].as_str().unwrap(),
        analyst_row["etag_after"].as_str().unwrap(),
    );
    assert!(
        !before.is_empty() && !after.is_empty() && before != after,
        "{analyst_row:#?}"
    );
    let members: Vec<_> = all.iter().filter(|r| r["target"] == group.as_str()).collect();
    assert_eq!(members.len(), 2, "{members:#?}");
    assert!(
        members
            .iter()
            .any(|r| r["action"] == "member_added" && r["subject"] == "new@acme.com")
    );
    assert!(
        members
            .iter()
            .any(|r| r["action"] == "member_removed" && r["subject"] == "old@acme.com")
    );
    let runs: std::collections::BTreeSet<String> = all.iter().map(|r| r["run_id"].to_string()).collect();
    assert_eq!(runs.len(), 1, "one run: {runs:?}");

    // Nothing to do: no row.
    ok(&bqsteward(&["apply"], &manifest(analyst), &env).await, 0);
    assert_eq!(rows(&bq, mine, &params).await.len(), all.len());

    // The analyst goes: one row.
    ok(&bqsteward(&["apply"], &manifest(""), &env).await, 0);
    let now = rows(&bq, mine, &params).await;
    assert_eq!(now.len(), all.len() + 1);
    let removed = now.iter().find(|r| r["action"] == "access_removed").unwrap();
    assert_eq!(removed["subject"], "user:analyst@acme.com");
    assert_eq!(
        removed["etag_before"], analyst_row["etag_after"],
        "written against the etag the grant left"
    );

    // The saved queries return what happened.
    let queries = saved_queries();
    let names: Vec<&str> = queries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "access-to-dataset",
            "delay-per-table",
            "quarantined-by-category",
            "changes-per-revision"
        ]
    );
    let run = |i: usize, params: Vec<Param>| {
        let (bq, sql) = (&bq, queries[i].1.clone());
        async move {
            bq.query(PROJECT, "US", &sql, &params)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .rows
        }
    };
    let who = run(0, vec![Param::string("dataset", &target)]).await;
    let who: Vec<(String, String)> = who
        .iter()
        .map(|r| (r[1].clone().unwrap(), r[2].clone().unwrap()))
        .filter(|(_, p)| p.contains("analyst"))
        .collect();
    assert_eq!(
        who,
        [
            ("access_added".to_string(), "user:analyst@acme.com".to_string()),
            ("access_removed".to_string(), "user:analyst@acme.com".to_string())
        ]
    );
    let delays = run(1, vec![]).await;
    let mine_delay = delays
        .iter()
        .find(|r| r[0].as_deref() == Some(&table))
        .unwrap_or_else(|| panic!("{delays:?}"));
    assert_eq!(mine_delay[1].as_deref(), Some("1"), "one file: {mine_delay:?}");
    let p50: f64 = mine_delay[2].as_deref().unwrap().parse().unwrap();
    assert!((0.0..600.0).contains(&p50), "{mine_delay:?}");
    let quarantined = run(2, vec![]).await;
    assert!(
        quarantined.iter().any(|r| r[0].as_deref() == Some(&table)
            && r[1].as_deref() == Some("Corrupt")
            && r[2].as_deref() == Some("1")),
        "{quarantined:?}"
    );
    // A schema change and a re-ingestion: one row each.
    let widened = manifest("").replace(
        "{name: v, type: INT64}]",
        "{name: v, type: INT64}, {name: w, type: STRING}]",
    );
    ok(&bqsteward(&["apply"], &widened, &env).await, 0);
    let reload = format!("prefix=gs://{bucket}/in/a.json id=fix1");
    ok(&bqsteward(&["apply", "--reload", &reload], &widened, &env).await, 0);
    ok(&bqsteward(&["apply", "--reload", &reload], &widened, &env).await, 0);
    let later = rows(&bq, mine, &params).await;
    let schema: Vec<_> = later.iter().filter(|r| r["action"] == "schema_changed").collect();
    assert_eq!(schema.len(), 1, "{later:#?}");
    assert_eq!(schema[0]["subject"], "w");
    let reloads: Vec<_> = later.iter().filter(|r| r["action"] == "reload").collect();
    assert_eq!(reloads.len(), 1, "the same request again does nothing: {later:#?}");
    assert_eq!(
        (reloads[0]["files"].as_str(), reloads[0]["rows"].as_str()),
        (Some("1"), Some("2"))
    );
    let revisions = run(3, vec![]).await;
    let by_rev = revisions
        .iter()
        .find(|r| r[0].as_deref() == Some(&revision))
        .unwrap_or_else(|| panic!("{revisions:?}"));
    let of_revision = later.iter().filter(|r| r["revision"] == revision.as_str()).count();
    assert_eq!(
        by_rev[3].as_deref(),
        Some(of_revision.to_string().as_str()),
        "{by_rev:?}"
    );
}

#[tokio::test]
async fn a_crash_after_the_load_and_before_the_audit_write_leaves_one_row() {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = GcsRest::new(&endpoints).unwrap();
    let bucket = unique("auditcrash").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let dataset = unique("auditcrash");
    gcs.upload(&bucket, "in/a.json", b"{\"id\": 1}\n".to_vec(), "application/json")
        .await
        .unwrap();
    // Two tables on the same file: for the first the spool survives the crash; for the second it
    // is lost too (a crash between the change and the spool write), and the rerun records it.
    for (table, keep_spool) in [("kept", true), ("lost", false)] {
        let spool = tempfile::tempdir().unwrap();
        let spec = serde_yaml::from_str(&format!(
            "source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n\
             destination: {{project: {PROJECT}, dataset: {dataset}, table: {table}}}\n\
             schema:\n- {{name: id, type: INT64}}\n"
        ))
        .unwrap();
        let t = Target::new(&format!("audit/{table}"), &spec, None).unwrap();
        let once = |crash: Option<Step>| {
            let (bq, gcs, t, dir) = (&bq, &gcs, &t, spool.path().to_path_buf());
            async move {
                let rec = Arc::new(Recorder::open(&dir, Destination::PerHome, Some(IDENTITY)).unwrap());
                let run = Arc::new(RunContext::new(rec.clone(), "r"));
                let result = bqsteward::audit::within(run, async {
                    let o = observe(bq, gcs, t).await.unwrap();
                    let p = plan_table(t, &o, chrono::Utc::now().timestamp_millis());
                    let mut exec = Executor::new(bq, t, p.loads.budget_left).with_storage(gcs);
                    exec.crash_after = crash;
                    exec.apply(&p, &o).await.map(|_| ())
                })
                .await;
                (rec, result)
            }
        };
        // The "crash": the batch is in the table, the process ends before any flush.
        let (rec, result) = once(Some(Step::Moved)).await;
        assert!(result.is_err(), "simulated crash");
        assert_eq!(rec.pending(), 2, "the table created and the load batch are spooled");
        drop(rec);
        if !keep_spool {
            for e in std::fs::read_dir(spool.path()).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        // The rerun adopts the batch's jobs and flushes.
        let (rec, result) = once(None).await;
        result.unwrap();
        let f = rec.flush(&bq).await;
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.pending, 0);
        let found = rows(
            &bq,
            "target = @t AND action = 'load_batch'",
            &[Param::string("t", &format!("{PROJECT}.{dataset}.{table}"))],
        )
        .await;
        assert_eq!(found.len(), 1, "{table}: {found:#?}");
        assert_eq!(found[0]["rows"], "1");
        // Flushing again (a segment taken twice) adds nothing.
        assert_eq!(rec.flush(&bq).await.written, 0);
        assert!(
            std::fs::read_dir(spool.path()).unwrap().next().is_none(),
            "the spool is empty"
        );
    }
}

#[tokio::test]
async fn bigquery_refusing_audit_writes_blocks_no_change_and_the_rows_arrive_later() {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let dataset = unique("auditrefused");
    bq.create_dataset(PROJECT, &dataset, "US").await.unwrap();
    let proxy = support::proxy::Proxy::start(endpoints.bigquery.trim_end_matches("/bigquery/v2")).await;
    proxy.refuse(
        &["bqsteward_audit_", "/tables/audit", "\"tableId\":\"audit\""],
        403,
        "accessDenied",
    );
    let spool = tempfile::tempdir().unwrap();
    let spool_path = spool.path().display().to_string();
    let manifest = |reader: &str| {
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: refused, namespace: audit}}\nspec:\n  project: {PROJECT}\n  dataset: {dataset}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, user: {reader}}}\n"
        )
    };
    let env = [
        ("BIGQUERY_EMULATOR_HOST", proxy.url.as_str()),
        ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9"),
        ("BQSTEWARD_IDENTITY", IDENTITY),
        ("BQSTEWARD_AUDIT_SPOOL", spool_path.as_str()),
    ];
    let r = bqsteward(&["apply"], &manifest("first@acme.com"), &env).await;
    ok(&r, 0);
    assert!(r.stderr.contains("not written to BigQuery"), "{}", r.stderr);
    let live = bq.get_dataset(PROJECT, &dataset).await.unwrap().unwrap();
    assert!(
        live.access.iter().any(|e| e["userByEmail"] == "first@acme.com"),
        "the change is made: {:?}",
        live.access
    );
    let params = [Param::string("ds", &format!("{PROJECT}.{dataset}"))];
    let filter = "target = @ds AND action = 'access_added'";
    // The audit table may not exist yet (a fresh emulator): then there is no row either.
    let existing = bq
        .get_table(&bqsteward::cloud::bqtypes::TableRef::new(
            PROJECT,
            "_bqsteward_us",
            "audit",
        ))
        .await
        .unwrap();
    if existing.is_some() {
        assert!(rows(&bq, filter, &params).await.is_empty());
    }
    // Still refused: a second change is made too, and both rows wait.
    let r = bqsteward(&["apply"], &manifest("second@acme.com"), &env).await;
    ok(&r, 0);
    assert!(r.stderr.contains("not written to BigQuery"), "{}", r.stderr);
    // BigQuery takes rows again: the next run (nothing to change) writes them, once.
    proxy.stop_refusing();
    let r = bqsteward(&["apply"], &manifest("second@acme.com"), &env).await;
    ok(&r, 0);
    assert!(!r.stderr.contains("not written"), "{}", r.stderr);
    let found = rows(&bq, filter, &params).await;
    let subjects: Vec<_> = found
        .iter()
        .map(|r| r["subject"].as_str().unwrap().to_string())
        .filter(|s| s.contains("acme.com"))
        .collect();
    assert_eq!(subjects, ["user:first@acme.com", "user:second@acme.com"], "{found:#?}");
    let removed = rows(&bq, "target = @ds AND action = 'access_removed'", &params).await;
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert_eq!(removed[0]["subject"], "user:first@acme.com");
    assert!(
        std::fs::read_dir(spool.path()).unwrap().next().is_none(),
        "the spool is empty"
    );
}
