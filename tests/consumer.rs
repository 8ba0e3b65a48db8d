//! ConsumerProject end to end: the real binary against bqemulator + fake-gcs-server (BigQuery
//! side) and the Resource Manager IAM fake in `support/resource_manager.rs` (no emulator exists;
//! its simplifications are in its header). A consumer dataset with views in a second project,
//! results equal to the filtered projection, authorizations on the source kept by an exact
//! DatasetAccess and restored when removed by hand, exact reader access, the jobUser binding with
//! a concurrent IAM change, views no longer declared deleted; injection attempts, a query BigQuery
//! rejects in a dry run, and the PII reachability check.

mod support;

use support::cli::{Run, adds, emulator_env, ok};

use bqsteward::cloud::Endpoints;
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::{Rows, TableRef};
use bqsteward::cloud::storage::{GcsRest, Storage};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::resource_manager::FakeIam;

const DATA: &str = "bqsteward-data";
const CONSUMER: &str = "bqsteward-mkt";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-data.iam.gserviceaccount.com";

struct Env {
    endpoints: Endpoints,
    bq: BigQueryRest,
    iam: FakeIam,
    bucket: String,
    dataset: String,
    consumer_ds: String,
}

impl Env {
    async fn new() -> Env {
        let endpoints = support::emulators();
        let bq = BigQueryRest::new(&endpoints).await.unwrap();
        let gcs = GcsRest::new(&endpoints).unwrap();
        let bucket = support::unique("cons").replace('_', "-");
        gcs.create_bucket(DATA, &bucket).await.unwrap();
        let rows: String = (1..=10)
            .map(|i| {
                format!(
                    "{}\n",
                    json!({"id": i, "amount": i * 30, "status": if i % 2 == 0 { "paid" } else { "open" },
                           "email": format!("c{i}@x.com"), "modify_time": "2026-01-01T00:00:00Z"})
                )
            })
            .collect();
        gcs.upload(&bucket, "pay/a.json", rows.into_bytes(), "application/octet-stream")
            .await
            .unwrap();
        Env {
            bq,
            iam: FakeIam::start().await,
            bucket,
            dataset: support::unique("pay"),
            consumer_ds: support::unique("shared"),
            endpoints,
        }
    }

    async fn bqsteward(&self, cmd: &str, manifests: &str) -> Run {
        let [bq, gcs] = emulator_env(&self.endpoints);
        let env = [
            (bq.0, bq.1.as_str()),
            (gcs.0, gcs.1.as_str()),
            ("RESOURCE_MANAGER_EMULATOR_HOST", self.iam.url.as_str()),
            ("BQSTEWARD_IDENTITY", IDENTITY),
        ];
        support::cli::bqsteward(&[cmd], manifests, &env).await
    }

    /// The IngestedTable, an exact DatasetAccess on its clean layer, and the ConsumerProject
    /// (`annotations` and `views` YAML spliced in).
    fn manifests(&self, annotations: &str, readers: &str, views: &str) -> String {
        let (b, d, c) = (&self.bucket, &self.dataset, &self.consumer_ds);
        format!(
            r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: payments, namespace: pay}}
spec:
  source: {{uri: "gs://{b}/pay/", format: NEWLINE_DELIMITED_JSON}}
  destination: {{project: {DATA}, dataset: {d}, table: tx}}
  schema:
    - {{name: id, type: INT64, mode: REQUIRED}}
    - {{name: amount, type: INT64}}
    - {{name: status, type: STRING}}
    - {{name: email, type: STRING}}
    - {{name: modify_time, type: TIMESTAMP}}
  primaryKey: [id]
  versionColumn: modify_time
  piiColumns: [email]
  views: {{full: true, clean: true}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: DatasetAccess
metadata: {{name: clean, namespace: pay}}
spec:
  project: {DATA}
  dataset: {d}__views_clean
  access:
    - {{role: OWNER, specialGroup: projectOwners}}
    - {{role: READER, group: analysts@acme.com}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: ConsumerProject
metadata:
  name: marketing
  namespace: pay
{annotations}spec:
  project: {CONSUMER}
  dataset: {c}
  readers: [{readers}]
  views:
{views}"#
        )
    }

    async fn query(&self, sql: &str) -> Rows {
        self.bq.query(CONSUMER, "US", sql, &[]).await.unwrap()
    }

    async fn access(&self, project: &str, dataset: &str) -> BTreeSet<String> {
        support::access_lines(&self.bq, project, dataset).await
    }

    fn view(&self, name: &str) -> TableRef {
        TableRef::new(CONSUMER, &self.consumer_ds, name)
    }

    fn clean(&self) -> TableRef {
        TableRef::new(DATA, &format!("{}__views_clean", self.dataset), "tx")
    }
}

const TWO_VIEWS: &str = "    - {name: big_tx, source: {ingestedTable: payments}, columns: [id, amount, status], rowFilter: \"amount > 100 AND status = 'paid'\"}\n    - {name: all_clean, source: {ingestedTable: payments, layer: clean}}\n";
const READERS: &str = "{group: Marketing@acme.com}, {user: ana@acme.com}";

fn binding(policy: &Value) -> Option<Vec<String>> {
    policy["bindings"].as_array()?.iter().find_map(|b| {
        (b["role"] == "roles/bigquery.jobUser" && b["condition"]["title"] == "bqsteward: ConsumerProject pay/marketing")
            .then(|| {
                b["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect()
            })
    })
}

#[tokio::test]
async fn consumer_views_authorizations_access_and_billing() {
    let env = Env::new().await;
    let m = env.manifests("", READERS, TWO_VIEWS);

    let r = env.bqsteward("plan", &m).await;
    ok(&r, 2);
    assert!(
        r.stdout.contains(&format!("+ consumer view {}", env.view("big_tx"))),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("WHERE (amount > 100 AND status = 'paid')"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("iam:    + group:marketing@acme.com roles/bigquery.jobUser"),
        "{}",
        r.stdout
    );

    let r = env.bqsteward("apply", &m).await;
    ok(&r, 0);
    ok(&env.bqsteward("plan", &m).await, 0);

    // The view's rows are exactly the filtered projection of the clean view.
    let got = env
        .query(&format!("SELECT * FROM {} ORDER BY id", env.view("big_tx").sql()))
        .await;
    let want = env
        .query(&format!(
            "SELECT id, amount, status FROM {} WHERE amount > 100 AND status = 'paid' ORDER BY id",
            env.clean().sql()
        ))
        .await;
    assert_eq!(got.columns, ["id", "amount", "status"]);
    assert_eq!(got.rows, want.rows);
    assert_eq!(
        got.rows.len(),
        4,
        "paid (even ids) above 100: 4, 6, 8, 10: {:?}",
        got.rows
    );
    let all = env
        .query(&format!("SELECT * FROM {}", env.view("all_clean").sql()))
        .await;
    assert!(!all.columns.contains(&"email".to_string()), "{:?}", all.columns);

    // Authorizations on the clean dataset, kept by its exact DatasetAccess.
    let clean_ds = format!("{}__views_clean", env.dataset);
    let acl = env.access(DATA, &clean_ds).await;
    for v in ["big_tx", "all_clean"] {
        assert!(acl.contains(&format!("- view:{}", env.view(v))), "{acl:?}");
    }
    assert!(acl.contains("READER group:analysts@acme.com"), "{acl:?}");
    // The consumer dataset's list is exactly the readers and bqsteward.
    let consumer_acl = env.access(CONSUMER, &env.consumer_ds).await;
    let expected: BTreeSet<String> = [
        "READER group:marketing@acme.com",
        "READER user:ana@acme.com",
        "OWNER serviceAccount:bqsteward@bqsteward-data.iam.gserviceaccount.com",
    ]
    .map(String::from)
    .into();
    assert_eq!(consumer_acl, expected);
    // Billing: readers are job users of the consumer project; other bindings untouched.
    let policy = env.iam.policy(CONSUMER);
    assert_eq!(
        binding(&policy).unwrap(),
        ["group:marketing@acme.com", "user:ana@acme.com"]
    );
    assert!(
        policy["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["role"] == "roles/owner")
    );

    // Someone removes an authorization by hand: plan shows it, apply restores it.
    let info = env.bq.get_dataset(DATA, &clean_ds).await.unwrap().unwrap();
    let kept: Vec<Value> = info
        .access
        .into_iter()
        .filter(|e| e["view"]["tableId"] != "big_tx")
        .collect();
    let r = reqwest::Client::new()
        .patch(format!(
            "{}/projects/{DATA}/datasets/{clean_ds}",
            env.endpoints.bigquery
        ))
        .json(&json!({ "access": kept }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = env.bqsteward("plan", &m).await;
    ok(&r, 2);
    assert!(adds(&r.stdout, &format!("view:{}", env.view("big_tx"))), "{}", r.stdout);
    ok(&env.bqsteward("apply", &m).await, 0);
    assert!(
        env.access(DATA, &clean_ds)
            .await
            .contains(&format!("- view:{}", env.view("big_tx")))
    );

    // A view and a reader go; someone changes the IAM policy between bqsteward's read and write.
    env.iam.change_before_next_set();
    let one_view = "    - {name: big_tx, source: {ingestedTable: payments}, columns: [id, amount, status], rowFilter: \"amount > 100 AND status = 'paid'\"}\n";
    let m2 = env.manifests("", "{group: Marketing@acme.com}", one_view);
    let r = env.bqsteward("plan", &m2).await;
    ok(&r, 2);
    assert!(
        r.stdout.contains(&format!(
            "- view {} (made by bqsteward, no longer declared)",
            env.view("all_clean")
        )),
        "{}",
        r.stdout
    );
    let r = env.bqsteward("apply", &m2).await;
    ok(&r, 0);
    assert!(env.iam.conflicts() >= 1, "the concurrent change must have caused a 409");
    assert!(env.bq.get_table(&env.view("all_clean")).await.unwrap().is_none());
    assert!(
        !env.access(DATA, &clean_ds)
            .await
            .contains(&format!("- view:{}", env.view("all_clean")))
    );
    let policy = env.iam.policy(CONSUMER);
    assert_eq!(binding(&policy).unwrap(), ["group:marketing@acme.com"]);
    assert!(
        policy["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["role"] == "roles/viewer"),
        "the other writer's binding survives"
    );
    assert!(
        !env.access(CONSUMER, &env.consumer_ds)
            .await
            .contains("READER user:ana@acme.com")
    );
    ok(&env.bqsteward("plan", &m2).await, 0);
}

#[tokio::test]
async fn injection_dry_run_and_pii_are_refused_before_anything_is_written() {
    let env = Env::new().await;
    // Injection attempts in rowFilter and in a column name.
    for views in [
        "    - {name: v, source: {ingestedTable: payments}, rowFilter: \"amount > 0) OR (TRUE\"}\n",
        "    - {name: v, source: {ingestedTable: payments}, rowFilter: \"id IN (SELECT id FROM `bqsteward-data.secret.t`)\"}\n",
        "    - {name: v, source: {ingestedTable: payments}, columns: [\"id` FROM x; --\"]}\n",
    ] {
        let r = env.bqsteward("plan", &env.manifests("", READERS, views)).await;
        ok(&r, 1);
        assert!(
            r.stderr.contains("ConsumerProject pay/marketing: spec.views[0].")
                && r.stderr.contains("nothing was read or written"),
            "{}",
            r.stderr
        );
    }
    // PII: the full layer's email needs the annotation.
    let full = "    - {name: risk, source: {ingestedTable: payments, layer: full}, columns: [id, email]}\n";
    let r = env.bqsteward("validate", &env.manifests("", READERS, full)).await;
    ok(&r, 1);
    assert!(
        r.stdout.contains("would expose PII columns [\"email\"]"),
        "{}",
        r.stdout
    );
    let allowed = "  annotations: {bqsteward.dev/allow-pii: \"email\"}\n";
    ok(
        &env.bqsteward("validate", &env.manifests(allowed, READERS, full)).await,
        0,
    );

    // A filter that passes the checker but not BigQuery: refused by the dry run, nothing written.
    let bad_types = "    - {name: v, source: {ingestedTable: payments}, rowFilter: \"status + 1 > 0\"}\n";
    let m = env.manifests("", READERS, bad_types);
    let r = env.bqsteward("apply", &m).await;
    ok(&r, 1);
    assert!(
        r.stdout.contains("BigQuery rejects its query in a dry run"),
        "{}",
        r.stdout
    );
    assert!(env.bq.get_dataset(CONSUMER, &env.consumer_ds).await.unwrap().is_none());
    assert_eq!(env.iam.sets(), 0);
    // The refusal is said once: no second error from the access step about the consumer dataset
    // that was never created, and the rest of the apply went through.
    assert!(
        !r.stdout
            .contains(&format!("dataset {CONSUMER}.{} does not exist", env.consumer_ds)),
        "{}",
        r.stdout
    );
    assert!(
        // ("HTTP 404", not "404": the test's unique dataset names can hold those digits.)
        !r.stdout.contains("notFound") && !r.stdout.contains("HTTP 404"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn deleting_with_policy_delete_removes_views_authorizations_and_binding_once() {
    use bqsteward::cloud::iam::IamRest;
    use bqsteward::consumer::layout::ConsumerTarget;
    use bqsteward::consumer::reconcile::cleanup;
    use bqsteward::manifest::{LoadReport, Resource, load_str};
    use bqsteward::policy::Policy;

    let env = Env::new().await;
    let one = "    - {name: big_tx, source: {ingestedTable: payments}, columns: [id, amount]}\n";
    let retain = env.manifests("", READERS, one);
    let delete = retain.replace("  readers:", "  deletionPolicy: Delete\n  readers:");
    ok(&env.bqsteward("apply", &delete).await, 0);
    let clean_ds = format!("{}__views_clean", env.dataset);
    let entry = format!("- view:{}", env.view("big_tx"));
    assert!(env.access(DATA, &clean_ds).await.contains(&entry));

    let target = |text: &str| {
        let mut report = LoadReport::default();
        load_str("m.yaml", text, &mut report);
        let l = report
            .resources
            .iter()
            .find(|l| matches!(l.resource, Resource::ConsumerProject(_)))
            .unwrap();
        let Resource::ConsumerProject(cp) = &l.resource else {
            unreachable!()
        };
        ConsumerTarget::resolve("pay/marketing", "pay", &cp.spec, &report.resources).unwrap()
    };
    let iam = IamRest::new(Some(&env.iam.url)).unwrap();
    let backoff = bqsteward::cloud::retry::Backoff::default();

    // Retain: nothing is touched.
    let done = cleanup(&env.bq, Some(&iam), &target(&retain), &Policy::default(), &backoff)
        .await
        .unwrap();
    assert_eq!(done, Default::default());
    assert!(env.bq.get_table(&env.view("big_tx")).await.unwrap().is_some());

    // Delete: the view, its authorization and the binding go; the dataset stays.
    let done = cleanup(&env.bq, Some(&iam), &target(&delete), &Policy::default(), &backoff)
        .await
        .unwrap();
    assert_eq!(done.views_deleted, [env.view("big_tx").to_string()]);
    assert_eq!(done.authorizations_removed, [format!("{DATA}.{clean_ds}")]);
    assert_eq!(
        done.iam_members_removed,
        ["group:marketing@acme.com", "user:ana@acme.com"]
    );
    assert!(env.bq.get_table(&env.view("big_tx")).await.unwrap().is_none());
    assert!(!env.access(DATA, &clean_ds).await.contains(&entry));
    assert!(binding(&env.iam.policy(CONSUMER)).is_none());
    assert!(env.bq.get_dataset(CONSUMER, &env.consumer_ds).await.unwrap().is_some());

    // Idempotent.
    let again = cleanup(&env.bq, Some(&iam), &target(&delete), &Policy::default(), &backoff)
        .await
        .unwrap();
    assert_eq!(again, Default::default());
}

/// A security review found a column dropped from an IngestedTable's schema reaching consumers: it
/// stays in the table and the full view (queries keep working), and a consumer view without
/// `columns` was `SELECT *`. Consumer views now list the layer's declared columns, so a column
/// bqsteward no longer knows (PII or not) never reaches a consumer.
#[tokio::test]
async fn a_column_dropped_from_the_schema_never_reaches_a_consumer() {
    let env = Env::new().await;
    let views = "    - {name: everything, source: {ingestedTable: payments, layer: full}}\n";
    let annotations = "  annotations: {bqsteward.dev/allow-pii: \"email\"}\n";
    let m = env.manifests(annotations, "{group: marketing@acme.com}", views);
    ok(&env.bqsteward("apply", &m).await, 0);
    // What a reader of each view sees (the emulator returns no schema for views: ask a query).
    let columns = |t: TableRef| {
        let bq = env.bq.clone();
        async move {
            bq.query(DATA, "US", &format!("SELECT * FROM {} LIMIT 1", t.sql()), &[])
                .await
                .unwrap()
                .columns
        }
    };
    assert!(columns(env.view("everything")).await.contains(&"status".to_string()));
    // `status` leaves the schema: it stays in the full view, never in the consumer's.
    let dropped = m.replace("    - {name: status, type: STRING}\n", "");
    assert_ne!(dropped, m);
    ok(&env.bqsteward("apply", &dropped).await, 0);
    let full = TableRef::new(DATA, &format!("{}__views_full", env.dataset), "tx");
    assert!(
        columns(full).await.contains(&"status".to_string()),
        "the full view keeps it"
    );
    let consumer = columns(env.view("everything")).await;
    assert!(!consumer.contains(&"status".to_string()), "{consumer:?}");
    assert!(
        consumer.contains(&"email".to_string()),
        "the released PII column stays: {consumer:?}"
    );
}
