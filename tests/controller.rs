//! The controller's reconcile, driven object by object against a real Kubernetes API server
//! (`scripts/kube.sh`, through bqsteward's own `KubeCluster` writer) with the cloud side on the real
//! emulators: finalizers added and removed on delete under each deletion policy, status written
//! once and not rewritten when nothing changed, an invalid object gets a clear condition without
//! blocking others, a failure backs off and recovers, and an IngestedTable with its views end to
//! end. `bqsteward run` itself (watches, leader election, RBAC) is tested in `tests/cluster.rs`.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::TableRef;
use bqsteward::cloud::storage::{GcsRest, Storage};
use bqsteward::controller::cluster::{FINALIZER, ObjectKey};
use bqsteward::controller::reconcile::{Ctx, Object, reconcile};
use bqsteward::manifest::{LoadReport, Loaded, Resource, load_str};
use bqsteward::policy::Policy;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::kube::RealCluster;

const PROJECT: &str = "bqsteward-ctl";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-ctl.iam.gserviceaccount.com";

async fn ctx(kube: Arc<RealCluster>) -> (Ctx, BigQueryRest, GcsRest) {
    let e = support::emulators();
    let ctx = support::kube::test_ctx(kube, IDENTITY).await;
    (ctx, BigQueryRest::new(&e).await.unwrap(), GcsRest::new(&e).unwrap())
}

fn load(text: &str) -> Vec<Loaded> {
    let mut report = LoadReport::default();
    load_str("cluster.yaml", text, &mut report);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.resources
}

fn key_of(l: &Loaded) -> ObjectKey {
    ObjectKey {
        kind: l.resource.kind(),
        namespace: l.resource.namespace().to_string(),
        name: l.resource.qualified_name().split('/').nth(1).unwrap().to_string(),
    }
}

fn meta_mut(l: &mut Loaded) -> &mut kube::core::ObjectMeta {
    match &mut l.resource {
        Resource::IngestedTable(r) => &mut r.metadata,
        Resource::DatasetAccess(r) => &mut r.metadata,
        Resource::ConsumerProject(r) => &mut r.metadata,
        Resource::GroupMembership(r) => &mut r.metadata,
    }
}

/// The object as the API server hands it to the controller now: applied from its manifest on first
/// sight (server-side apply, as `kubectl apply` would), deleted first when `deleting` (the server
/// sets `deletionTimestamp` and keeps the object while a finalizer is on it). An object already
/// gone is handed over as a last delete event would be: deleting, without finalizers.
fn object(kube: &RealCluster, l: &Loaded, deleting: bool) -> Object {
    let key = key_of(l);
    let kind = format!("{}.bqsteward.dev", key.kind.to_lowercase());
    let k = kube.kube;
    let gone = kube.get(&key).object.is_null();
    if gone && !deleting {
        let mut manifest = match &l.resource {
            Resource::IngestedTable(r) => serde_json::to_value(r),
            Resource::DatasetAccess(r) => serde_json::to_value(r),
            Resource::ConsumerProject(r) => serde_json::to_value(r),
            Resource::GroupMembership(r) => serde_json::to_value(r),
        }
        .unwrap();
        manifest.as_object_mut().unwrap().remove("status");
        k.kubectl_in(&["apply", "--server-side", "-f", "-"], &manifest.to_string())
            .ok();
    }
    if deleting && !gone {
        k.kubectl(&["delete", &kind, &key.name, "-n", &key.namespace, "--wait=false"])
            .ok();
    }
    let stored = kube.get(&key);
    let mut loaded = l.clone();
    let m = meta_mut(&mut loaded);
    if stored.object.is_null() {
        m.finalizers = Some(Vec::new());
        m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    } else {
        *m = serde_json::from_value(stored.object["metadata"].clone()).unwrap();
    }
    Object {
        key,
        loaded,
        status: stored.status,
    }
}

/// A fresh namespace for one test (objects of an earlier run removed).
fn namespace(kube: &RealCluster, ns: &str) {
    kube.kube.namespace(ns);
    kube.kube.purge(ns);
}

fn condition(status: &Value, t: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

async fn access(bq: &BigQueryRest, ds: &str) -> Vec<String> {
    let info = bq.get_dataset(PROJECT, ds).await.unwrap().unwrap();
    info.access
        .iter()
        .map(|e| bqsteward::access::AclEntry::from_api(e).principal.to_string())
        .collect()
}

fn dataset_access(name: &str, ds: &str, policy: &str, extra: &str) -> String {
    format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: {name}, namespace: ctl-access}}\nspec:\n  project: {PROJECT}\n  dataset: {ds}\n  deletionPolicy: {policy}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, group: {name}@acme.com}}\n{extra}"
    )
}

#[tokio::test]
async fn finalizers_status_deletion_policies_invalid_objects_and_backoff() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-access");
    let (ctx, bq, _) = ctx(kube.clone()).await;
    let (ds_a, ds_b) = (support::unique("ctl"), support::unique("ctl"));
    for ds in [&ds_a, &ds_b] {
        bq.create_dataset(PROJECT, ds, "US").await.unwrap();
    }
    let missing = support::unique("ctl");
    let text = [
        dataset_access("retained", &ds_a, "Retain", ""),
        dataset_access("deleted", &ds_b, "Delete", ""),
        dataset_access(
            "public",
            &support::unique("ctl"),
            "Retain",
            "    - {role: READER, iamMember: allUsers}\n",
        ),
        dataset_access("later", &missing, "Retain", ""),
    ]
    .join("---\n");
    let all = load(&text);
    let (retained, deleted, public, later) = (&all[0], &all[1], &all[2], &all[3]);

    // First pass: finalizer added, access applied, status written with Ready=True.
    for l in [retained, deleted] {
        let requeue = reconcile(&ctx, &object(&kube, l, false), &all).await.unwrap();
        assert_eq!(requeue, Duration::from_secs(600));
        let s = kube.get(&key_of(l));
        assert_eq!(s.finalizers, [FINALIZER]);
        assert_eq!(condition(&s.status, "Ready").0, "True", "{}", s.status);
        assert_eq!(s.status["observedGeneration"], 1);
        assert!(kube.events(&key_of(l)).iter().any(|n| n.reason == "Applied"));
    }
    assert!(
        access(&bq, &ds_a)
            .await
            .contains(&"group:retained@acme.com".to_string())
    );
    assert!(
        access(&bq, &ds_a)
            .await
            .contains(&format!("serviceAccount:{}", IDENTITY.split_once(':').unwrap().1))
    );

    // Second pass: nothing changed, so nothing is written (no status churn, no events).
    let writes = kube.status_writes();
    let events = kube.events(&key_of(retained)).len();
    let first = kube.get(&key_of(retained)).status;
    reconcile(&ctx, &object(&kube, retained, false), &all).await.unwrap();
    assert_eq!(kube.status_writes(), writes);
    assert_eq!(kube.events(&key_of(retained)).len(), events);
    assert_eq!(kube.get(&key_of(retained)).status, first);

    // An invalid object: a clear condition and a warning, no cloud call — and it blocks nobody.
    reconcile(&ctx, &object(&kube, public, false), &all).await.unwrap();
    let s = kube.get(&key_of(public));
    let (st, reason, message) = condition(&s.status, "Ready");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.contains("spec.access[2].iamMember") && message.contains("forbidden"),
        "{message}"
    );
    assert!(
        kube.events(&key_of(public))
            .iter()
            .any(|n| n.warning && n.reason == "InvalidSpec")
    );
    reconcile(&ctx, &object(&kube, retained, false), &all).await.unwrap();

    // A failure backs off (growing delays) and recovers once the dataset exists.
    let k = key_of(later);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let e = reconcile(&ctx, &object(&kube, later, false), &all).await.unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        delays.push(ctx.backoff.failed(&k));
    }
    assert!(
        delays[0] >= Duration::from_secs(4) && delays[0] <= Duration::from_secs(6),
        "{delays:?}"
    );
    assert!(delays[2] > delays[0] * 2, "{delays:?}");
    let (st, reason, _) = condition(&kube.get(&k).status, "Ready");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    bq.create_dataset(PROJECT, &missing, "US").await.unwrap();
    reconcile(&ctx, &object(&kube, later, false), &all).await.unwrap();
    assert_eq!(ctx.backoff.failures(&k), 0, "reset on success");
    assert_eq!(condition(&kube.get(&k).status, "Ready").0, "True");

    // Deletion. Retain: the finalizer goes, the access stays.
    reconcile(&ctx, &object(&kube, retained, true), &all).await.unwrap();
    assert!(kube.get(&key_of(retained)).finalizers.is_empty());
    assert!(
        access(&bq, &ds_a)
            .await
            .contains(&"group:retained@acme.com".to_string())
    );
    assert!(kube.events(&key_of(retained)).iter().any(|n| n.reason == "Retained"));
    // Delete: the declared entries go (never bqsteward's identity), then the finalizer.
    reconcile(&ctx, &object(&kube, deleted, true), &all).await.unwrap();
    assert!(kube.get(&key_of(deleted)).finalizers.is_empty());
    let left = access(&bq, &ds_b).await;
    assert!(!left.contains(&"group:deleted@acme.com".to_string()), "{left:?}");
    assert!(
        left.contains(&format!("serviceAccount:{}", IDENTITY.split_once(':').unwrap().1)),
        "{left:?}"
    );
    // Idempotent: a repeated delete pass finds no finalizer and does nothing.
    reconcile(&ctx, &object(&kube, deleted, true), &all).await.unwrap();
    // An invalid object is never stuck on delete.
    reconcile(&ctx, &object(&kube, public, true), &all).await.unwrap();
    assert!(kube.get(&key_of(public)).finalizers.is_empty());
}

#[tokio::test]
async fn an_ingested_table_loads_writes_views_status_and_is_deleted_with_policy_delete() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-table");
    let (ctx, bq, gcs) = ctx(kube.clone()).await;
    let bucket = support::unique("ctl").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    gcs.upload(
        &bucket,
        "in/a.json",
        b"{\"id\": 1, \"v\": 1}\n{\"id\": 1, \"v\": 2}\n".to_vec(),
        "application/octet-stream",
    )
    .await
    .unwrap();
    let ds = support::unique("ctl");
    let text = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t, namespace: ctl-table}}\nspec:\n  source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {ds}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  views: {{full: true}}\n  schedule: {{every: 5m}}\n  deletionPolicy: Delete\n"
    );
    let all = load(&text);
    let requeue = reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(
        requeue,
        Duration::from_secs(300),
        "IngestedTable requeues at schedule.every"
    );
    let s = kube.get(&key_of(&all[0]));
    assert_eq!(s.status["filesLoaded"], json!(1), "{}", s.status);
    assert_eq!(s.status["rowsLoaded"], json!(2));
    assert_eq!(condition(&s.status, "Ready").0, "True", "{}", s.status);
    let full = TableRef::new(PROJECT, &format!("{ds}__views_full"), "t");
    let rows = bq
        .query(PROJECT, "US", &format!("SELECT v FROM {}", full.sql()), &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Some("2".to_string())]]);
    assert!(access(&bq, &ds).await.contains(&format!("view:{full}")));
    assert!(
        kube.events(&key_of(&all[0]))
            .iter()
            .any(|n| n.message.contains("loaded 1 files"))
    );

    // Nothing new: no status write. (The pass right after a load may write once more: the status of
    // a loading pass is computed from the report, the next from the ledger's figures.)
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let writes = kube.status_writes();
    let before = kube.get(&key_of(&all[0])).status;
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(
        kube.status_writes(),
        writes,
        "{before}\n{}",
        kube.get(&key_of(&all[0])).status
    );

    // Another IngestedTable naming the same destination with deletionPolicy Delete (applied where
    // the owner is not, so it validates alone), then deleted: it removes nothing of the owner's.
    let intruder = load(
        &text
            .replace("name: t, namespace", "name: intruder, namespace")
            .replace("schedule: {every: 5m}", "schedule: {every: 6m}"),
    );
    let r = reconcile(&ctx, &object(&kube, &intruder[0], false), &intruder).await;
    assert!(r.is_err(), "the intruder's reconcile must be refused");
    reconcile(&ctx, &object(&kube, &intruder[0], true), &intruder)
        .await
        .unwrap();
    assert!(
        bq.get_table(&full).await.unwrap().is_some(),
        "the owner's view was deleted"
    );
    assert!(
        bq.get_table(&TableRef::new(PROJECT, &ds, "t")).await.unwrap().is_some(),
        "the owner's table was deleted"
    );
    assert!(
        kube.events(&key_of(&intruder[0]))
            .iter()
            .any(|n| n.message.contains("kept") && n.message.contains("not this resource's")),
        "{:?}",
        kube.events(&key_of(&intruder[0]))
    );
    assert!(access(&bq, &ds).await.contains(&format!("view:{full}")));

    // Delete with deletionPolicy Delete: views, their authorization and the table go.
    reconcile(&ctx, &object(&kube, &all[0], true), &all).await.unwrap();
    assert!(kube.get(&key_of(&all[0])).finalizers.is_empty());
    assert!(bq.get_table(&full).await.unwrap().is_none());
    assert!(bq.get_table(&TableRef::new(PROJECT, &ds, "t")).await.unwrap().is_none());
    assert!(!access(&bq, &ds).await.contains(&format!("view:{full}")));
}

/// The real Kubernetes writer, against kube's `tower-test` mock service: the requests it sends are
/// the ones the API expects (merge patch of finalizers with the resourceVersion guard, server-side
/// apply of status as field manager `bqsteward` on the status subresource, events.k8s.io Events).
#[tokio::test]
async fn the_kube_writer_sends_the_requests_the_api_expects() {
    use bqsteward::controller::cluster::{Cluster, KubeCluster, Note};
    use http_body_util::BodyExt;
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let client = kube::Client::new(service, "default");
    let writer = KubeCluster::new(client, Some("pod-1".into()));
    let key = ObjectKey {
        kind: "DatasetAccess",
        namespace: "team".into(),
        name: "clean".into(),
    };
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (req, send) = handle.next_request().await.expect("a request");
            let ct = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let line = format!("{} {}", req.method(), req.uri());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let parsed: Value = serde_json::from_slice(&body)
                .or_else(|_| serde_yaml::from_slice(&body))
                .unwrap_or(Value::Null);
            // Echo an object back so the client can decode the answer.
            let answer = json!({"apiVersion": "bqsteward.dev/v1alpha1", "kind": "DatasetAccess",
                "metadata": {"name": "clean", "namespace": "team"}});
            let answer = if line.contains("events") {
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "team"},
                       "eventTime": "2026-11-22T00:00:00.000000Z"})
            } else {
                answer
            };
            send.send_response(
                http::Response::builder()
                    .body(kube::client::Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
            seen.push((line, ct, parsed));
        }
        seen
    });
    writer
        .set_finalizers(&key, vec![FINALIZER.into()], Some("7"))
        .await
        .unwrap();
    writer
        .apply_status(&key, json!({"entries": 3, "observedGeneration": 2}))
        .await
        .unwrap();
    writer
        .event(
            &key,
            Some("uid-1"),
            Note {
                warning: true,
                reason: "InvalidSpec".into(),
                message: "spec.access[0]: bad".into(),
            },
        )
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let (line, ct, body) = &seen[0];
    assert_eq!(
        line,
        "PATCH /apis/bqsteward.dev/v1alpha1/namespaces/team/datasetaccesses/clean?"
    );
    assert_eq!(ct, "application/merge-patch+json");
    assert_eq!(
        body,
        &json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "7"}})
    );
    let (line, ct, body) = &seen[1];
    assert!(
        line.starts_with("PATCH /apis/bqsteward.dev/v1alpha1/namespaces/team/datasetaccesses/clean/status?")
            && line.contains("fieldManager=bqsteward")
            && line.contains("force=true"),
        "{line}"
    );
    assert_eq!(ct, "application/apply-patch+yaml");
    assert_eq!(body["kind"], "DatasetAccess");
    assert_eq!(body["apiVersion"], "bqsteward.dev/v1alpha1");
    assert_eq!(body["status"]["entries"], 3);
    let (line, _, body) = &seen[2];
    assert!(
        line.starts_with("POST /apis/events.k8s.io/v1/namespaces/team/events"),
        "{line}"
    );
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "InvalidSpec");
    assert_eq!(body["regarding"]["kind"], "DatasetAccess");
    assert_eq!(body["reportingController"], "bqsteward");
}

/// A security review found the controller writing entries of an invalid DatasetAccess: the ACL
/// compile used every object, so reconciling a valid IngestedTable wrote an out-of-domain reader
/// declared by an invalid DatasetAccess on the same dataset. Invalid objects contribute nothing.
#[tokio::test]
async fn an_invalid_object_contributes_nothing_to_a_list_another_object_writes() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-invalid");
    let (mut ctx, bq, gcs) = ctx(kube.clone()).await;
    ctx.policy = serde_yaml::from_str("allowedDomains: [acme.com, gserviceaccount.com]").unwrap();
    let bucket = support::unique("ctl").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    gcs.upload(
        &bucket,
        "in/a.json",
        b"{\"id\": 1, \"v\": 1}\n".to_vec(),
        "application/octet-stream",
    )
    .await
    .unwrap();
    let ds = support::unique("ctl");
    let text = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t, namespace: ctl-invalid}}\nspec:\n  source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {ds}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  views: {{full: true}}\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: takeover, namespace: ctl-invalid}}\nspec:\n  project: {PROJECT}\n  dataset: {ds}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, user: eve@evil.example}}\n"
    );
    let all = load(&text);
    let (table, takeover) = (&all[0], &all[1]);
    reconcile(&ctx, &object(&kube, takeover, false), &all).await.unwrap();
    let s = kube.get(&key_of(takeover));
    assert_eq!(condition(&s.status, "Ready").1, "InvalidSpec", "{}", s.status);
    reconcile(&ctx, &object(&kube, table, false), &all).await.unwrap();
    let s = kube.get(&key_of(table));
    assert_eq!(condition(&s.status, "Ready").0, "True", "{}", s.status);
    let list = access(&bq, &ds).await;
    assert!(
        list.iter().any(|p| p.starts_with("view:")),
        "the table's own authorization is written: {list:?}"
    );
    assert!(!list.iter().any(|p| p.contains("evil.example")), "{list:?}");
}

/// With `tenancy.namespaces.<ns>.serviceAccount` in the policy, the controller acts as that account
/// for the namespace's BigQuery and Cloud Storage requests: one `generateAccessToken` call to the
/// IAM Credentials API (a loopback stand-in following the published request and answer shapes),
/// then every BigQuery request — through a recording proxy — carries the minted token, and the
/// account stays OWNER of the access list the namespace owns. A refused exchange fails the
/// reconcile with what to grant, and nothing is written.
#[tokio::test]
async fn a_namespace_with_a_service_account_is_reconciled_as_that_account() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-tenant");
    let e = support::emulators();
    let proxy = support::proxy::Proxy::start(&e.bigquery.replace("/bigquery/v2", "")).await;
    let minted: Arc<std::sync::Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let seen = minted.clone();
    let iam_url = support::http1::serve_json(move |method, path, body| {
        seen.lock().unwrap().push((method.to_string(), path.to_string(), body));
        if path.contains("forbidden@") {
            return support::http1::google_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getAccessToken' denied",
            );
        }
        (
            200,
            json!({"accessToken": "ya29.tenant-token", "expireTime": "2099-01-01T00:00:00Z"}),
        )
    })
    .await;
    let via = bqsteward::cloud::Endpoints {
        bigquery: format!("{}/bigquery/v2", proxy.url),
        iam_credentials: iam_url,
        ..e.clone()
    };
    let sa = "bq-tenant@bqsteward-ctl.iam.gserviceaccount.com";
    let policy: Policy = serde_yaml::from_str(&format!(
        "tenancy:\n  namespaces:\n    ctl-tenant:\n      datasets: ['{PROJECT}.*']\n      sources: ['gs://*']\n      serviceAccount: {sa}\n    ctl-denied:\n      datasets: ['{PROJECT}.*']\n      sources: ['gs://*']\n      serviceAccount: forbidden@bqsteward-ctl.iam.gserviceaccount.com\n"
    ))
    .unwrap();
    let (mut ctx, bq, gcs) = ctx(kube.clone()).await;
    ctx.tenants = bqsteward::controller::reconcile::tenant_clients(&policy, &via)
        .await
        .unwrap();
    ctx.policy = policy;
    let bucket = support::unique("tenant").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    gcs.upload(
        &bucket,
        "in/a.json",
        b"{\"id\": 1, \"v\": 1}\n".to_vec(),
        "application/octet-stream",
    )
    .await
    .unwrap();
    let ds = support::unique("tenant");
    let table = |ns: &str| {
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t, namespace: {ns}}}\nspec:\n  source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {PROJECT}, dataset: {ds}_{}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: v, type: INT64}}]\n  primaryKey: [id]\n  versionColumn: v\n  views: {{full: true}}\n",
            ns.replace('-', "_")
        )
    };
    let text = format!(
        "{}---\n{}",
        table("ctl-tenant"),
        dataset_access("raw", &format!("{ds}_ctl_tenant"), "Retain", "")
            .replace("namespace: ctl-access", "namespace: ctl-tenant")
    );
    let all = load(&text);
    assert_eq!(all.len(), 2, "{text}");
    for l in &all {
        reconcile(&ctx, &object(&kube, l, false), &all).await.unwrap();
    }
    // One exchange, in the documented shape; the token is cached for every later call.
    let calls = minted.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (method, path, body) = &calls[0];
    assert_eq!(method, "POST");
    assert_eq!(
        path,
        &format!("/v1/projects/-/serviceAccounts/{sa}:generateAccessToken")
    );
    assert_eq!(
        body,
        &json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"})
    );
    // Every BigQuery request of the namespace carried the minted token.
    let requests = proxy.seen();
    assert!(requests.len() > 5, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer ya29.tenant-token"),
            "{} {}",
            r.method,
            r.path
        );
    }
    // The table loaded, and the account is OWNER of the list its namespace owns.
    let rows = bq
        .query(
            PROJECT,
            "US",
            &format!("SELECT COUNT(*) FROM `{PROJECT}.{ds}_ctl_tenant.t`"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0].as_deref(), Some("1"));
    let acl = access(&bq, &format!("{ds}_ctl_tenant")).await;
    assert!(acl.iter().any(|p| p.contains(sa)), "{acl:?}");

    // A namespace whose account the controller may not act as: refused with what to grant.
    namespace(&kube, "ctl-denied");
    let denied = load(&table("ctl-denied"));
    let before = proxy.seen().len();
    let err = reconcile(&ctx, &object(&kube, &denied[0], false), &denied)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("serviceAccountTokenCreator"), "{err}");
    assert_eq!(
        proxy.seen().len(),
        before,
        "a request was made without the namespace's token"
    );
    assert!(
        bq.get_dataset(PROJECT, &format!("{ds}_ctl_denied"))
            .await
            .unwrap()
            .is_none()
    );
}

/// Sources whose Secrets are read from the API server (as `bqsteward run` reads them), pulling on
/// schedule.
async fn read_secrets_from_the_cluster(ctx: &mut Ctx, kube: &RealCluster) {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kube.kube.kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    ctx.sources = bqsteward::dbsource::Sources::new(
        Arc::new(bqsteward::dbsource::secrets::KubeSecrets {
            client: kube::Client::try_from(config).unwrap(),
        }),
        2,
    )
    .on_schedule();
}

/// (Re)creates Secret `name` in `namespace` with these keys.
fn put_secret(kube: &RealCluster, namespace: &str, name: &str, keys: &[(&str, &str)]) {
    kube.kube
        .kubectl(&["delete", "secret", name, "-n", namespace, "--ignore-not-found"])
        .ok();
    let literals: Vec<String> = keys.iter().map(|(k, v)| format!("--from-literal={k}={v}")).collect();
    let mut args = vec!["create", "secret", "generic", name, "-n", namespace];
    args.extend(literals.iter().map(String::as_str));
    kube.kube.kubectl(&args).ok();
}

/// A database source through the controller on a real API server: the connection URL comes from a
/// Secret in the object's namespace (read with the Kubernetes API), the pull runs on the object's
/// schedule (a reconcile right after does not pull again), and a column dropped on the replica
/// makes the table Degraded with the reason.
#[tokio::test]
async fn a_database_source_reads_its_secret_pulls_on_schedule_and_reports_drift() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-db");
    let (mut ctx, bq, gcs) = ctx(kube.clone()).await;
    read_secrets_from_the_cluster(&mut ctx, &kube).await;
    let (mysql_url, _) = support::databases();
    put_secret(&kube, "ctl-db", "replica", &[("url", &mysql_url)]);
    let table = support::unique("ctldb");
    let opts: sqlx::mysql::MySqlConnectOptions = mysql_url.parse().unwrap();
    let mut c = <sqlx::MySqlConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .unwrap();
    for sql in [
        format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, status VARCHAR(20), modify_time DATETIME(6) NOT NULL)"),
        format!("INSERT INTO {table} SELECT seq, 'paid', UTC_TIMESTAMP(6) FROM seq_1_to_50"),
    ] {
        sqlx::Executor::execute(&mut c, sql.as_str()).await.unwrap();
    }
    let bucket = support::unique("ctldb").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let ds = support::unique("ctldb");
    let text = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: replica-table, namespace: ctl-db}}\nspec:\n  source:\n    database: {{engine: mysql, table: bqsteward.{table}, connectionSecret: {{name: replica}}, watermark: {{column: modify_time}}}}\n    landing: gs://{bucket}/land/\n  destination: {{project: {PROJECT}, dataset: {ds}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: status, type: STRING}}, {{name: modify_time, type: DATETIME}}]\n  schedule: {{every: 1h}}\n"
    );
    let all = load(&text);
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let s = kube.get(&key_of(&all[0]));
    assert_eq!(s.status["rowsLoaded"], json!(50), "{}", s.status);
    assert_eq!(condition(&s.status, "Ready").0, "True", "{}", s.status);
    // Right after: not due (schedule.every 1h), nothing pulled again.
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let pulls = gcs
        .list(&bucket, "land/")
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.name.ends_with("/_PULL"))
        .count();
    assert_eq!(pulls, 1);
    let rows = bq
        .query(
            PROJECT,
            "US",
            &format!("SELECT COUNT(*) FROM {}", TableRef::new(PROJECT, &ds, "t").sql()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0].as_deref(), Some("50"));
    // The replica drops a declared column: Degraded, with the column named; never the URL.
    sqlx::Executor::execute(&mut c, format!("ALTER TABLE {table} DROP COLUMN status").as_str())
        .await
        .unwrap();
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let s = kube.get(&key_of(&all[0]));
    let (status, reason, message) = condition(&s.status, "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SourceSchemaDrift"),
        "{}",
        s.status
    );
    assert!(message.contains("\"status\""), "{message}");
    assert!(
        !s.status.to_string().contains("bqsteward-test@"),
        "the URL leaked: {}",
        s.status
    );
    // A Secret that does not exist: the reconcile fails naming it.
    let mut missing = all.clone();
    if let Resource::IngestedTable(r) = &mut missing[0].resource {
        r.spec.source.database.as_mut().unwrap().connection_secret.name = "no-such-secret".into();
    }
    let err = reconcile(&ctx, &object(&kube, &missing[0], false), &missing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ctl-db/no-such-secret"), "{err}");
}

/// A Delta source through the controller on a real API server: the S3 keys come from a Secret in
/// the object's namespace, the table follows the Delta table version by version (a DELETE's rows
/// leave), and the status says which version it holds — never the keys.
#[tokio::test]
async fn a_delta_source_reads_its_keys_from_the_namespace_and_follows_the_versions() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-delta");
    let (mut ctx, bq, gcs) = ctx(kube.clone()).await;
    read_secrets_from_the_cluster(&mut ctx, &kube).await;
    put_secret(
        &kube,
        "ctl-delta",
        "lake-reader",
        &[
            ("AWS_ACCESS_KEY_ID", "ctl-reader"),
            ("AWS_SECRET_ACCESS_KEY", "ctl-secret-never-shown"),
        ],
    );
    let lake_bucket = support::unique("ctllake").replace('_', "-");
    support::delta_writer(&["bucket", &lake_bucket]);
    let uri = format!("s3://{lake_bucket}/orders");
    support::delta_writer(&["write", &uri, r#"[{"id":1,"status":"new"},{"id":2,"status":"new"}]"#]);
    support::delta_writer(&["write", &uri, r#"[{"id":3,"status":"new"}]"#]);
    let bucket = support::unique("ctldelta").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let ds = support::unique("ctldelta");
    let endpoint = support::lake().endpoint;
    let text = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: orders, namespace: ctl-delta}}\nspec:\n  source:\n    delta: {{uri: '{uri}/', region: eu-west-1, endpoint: '{endpoint}', credentialsSecret: {{name: lake-reader}}}}\n    landing: gs://{bucket}/land/\n  destination: {{project: {PROJECT}, dataset: {ds}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: status, type: STRING}}]\n"
    );
    let all = load(&text);
    let (bq_ref, ds_ref) = (&bq, &ds);
    let count = || async move {
        bq_ref
            .query(
                PROJECT,
                "US",
                &format!("SELECT COUNT(*) FROM {}", TableRef::new(PROJECT, ds_ref, "t").sql()),
                &[],
            )
            .await
            .unwrap()
            .rows[0][0]
            .clone()
    };
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(count().await.as_deref(), Some("3"));
    support::delta_writer(&["delete", &uri, "id = 2"]);
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(count().await.as_deref(), Some("2"), "the DELETE's row left");
    // A reconcile with nothing new: the status holds the latest version.
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let s = kube.get(&key_of(&all[0]));
    assert_eq!(s.status["delta"]["latestVersion"], json!(2), "{}", s.status);
    assert_eq!(s.status["delta"]["loadedVersion"], json!(2), "{}", s.status);
    assert_eq!(s.status["delta"]["versionLag"], json!(0), "{}", s.status);
    assert!(s.status["delta"]["bytesCopied"].as_i64().unwrap() > 0, "{}", s.status);
    assert_eq!(condition(&s.status, "Ready").0, "True", "{}", s.status);
    assert!(
        !s.status.to_string().contains("ctl-secret-never-shown"),
        "the key leaked: {}",
        s.status
    );
}

/// A table with `checks` through the controller: the check runs after the loads (which it never
/// stops), a row the source holds but BigQuery cannot (a MySQL zero date, reported by the pull)
/// makes `InSync` False with the key named and a Warning event, and the next reconcile before
/// `every` has passed keeps the result instead of checking again.
#[tokio::test]
async fn a_failing_check_sets_in_sync_false_with_an_event_and_loads_go_on() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-chk");
    let (mut ctx, _bq, gcs) = ctx(kube.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mysql_url, _) = support::databases();
    std::fs::create_dir_all(dir.path().join("replica")).unwrap();
    std::fs::write(dir.path().join("replica").join("url"), &mysql_url).unwrap();
    ctx.sources = bqsteward::dbsource::Sources::new(
        Arc::new(bqsteward::dbsource::secrets::DirSecrets {
            dir: dir.path().to_path_buf(),
        }),
        2,
    )
    .on_schedule();
    let table = support::unique("ctlchk");
    let opts: sqlx::mysql::MySqlConnectOptions = mysql_url.parse().unwrap();
    let mut c = <sqlx::MySqlConnection as sqlx::Connection>::connect_with(&opts.timezone(Some("+00:00".into())))
        .await
        .unwrap();
    for sql in [
        "SET SESSION sql_mode = ''".to_string(),
        format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, paid_on DATE, modify_time DATETIME(6) NOT NULL)"),
        format!(
            "INSERT INTO {table} SELECT seq, IF(seq = 7, '0000-00-00', '2026-01-01'), \
             UTC_TIMESTAMP(6) - INTERVAL 2 DAY FROM seq_1_to_20"
        ),
    ] {
        sqlx::Executor::execute(&mut c, sql.as_str()).await.unwrap();
    }
    let bucket = support::unique("ctlchk").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let ds = support::unique("ctlchk");
    let text = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: checked, namespace: ctl-chk}}\nspec:\n  source:\n    database: {{engine: mysql, table: bqsteward.{table}, connectionSecret: {{name: replica}}, watermark: {{column: modify_time}}}}\n    landing: gs://{bucket}/land/\n  destination: {{project: {PROJECT}, dataset: {ds}, table: t}}\n  schema: [{{name: id, type: INT64}}, {{name: paid_on, type: DATE}}, {{name: modify_time, type: DATETIME}}]\n  primaryKey: [id]\n  schedule: {{every: 1h}}\n  checks:\n    exact: {{every: 1h, olderThan: 1h, chunkRows: 1000}}\n"
    );
    let all = load(&text);
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let s = kube.get(&key_of(&all[0]));
    assert_eq!(s.status["rowsLoaded"], json!(19), "{}", s.status);
    assert_eq!(condition(&s.status, "Ready").0, "True", "loads go on: {}", s.status);
    let (status, reason, message) = condition(&s.status, "InSync");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Mismatch"),
        "{}",
        s.status
    );
    assert!(
        message.contains("1 missing in BigQuery") && message.contains("id=7"),
        "{message}"
    );
    let exact = &s.status["checks"]["exact"];
    assert_eq!(
        (
            exact["sourceRows"].clone(),
            exact["bigqueryRows"].clone(),
            exact["missingInBigQuery"].clone()
        ),
        (json!(20), json!(19), json!(1)),
        "{}",
        s.status
    );
    assert!(
        kube.events(&key_of(&all[0]))
            .iter()
            .any(|n| n.warning && n.reason == "OutOfSync" && n.message.contains("id=7")),
        "{:?}",
        kube.events(&key_of(&all[0]))
    );
    // Not due again within `every`: the result is kept, not recomputed.
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    let again = kube.get(&key_of(&all[0]));
    assert_eq!(again.status["checks"], s.status["checks"]);
    assert_eq!(condition(&again.status, "InSync").0, "False");
}

/// A plan-only object (`bqsteward.dev/mode: plan`) changes nothing in the cloud and shows its plan
/// in the status; removing the annotation applies it and the plan goes away.
#[tokio::test]
async fn a_plan_only_object_changes_nothing_shows_its_plan_and_applies_when_the_annotation_goes() {
    let kube = Arc::new(RealCluster::new().await);
    namespace(&kube, "ctl-plan");
    let (ctx, bq, _) = ctx(kube.clone()).await;
    let ds = support::unique("ctl");
    bq.create_dataset(PROJECT, &ds, "US").await.unwrap();
    let before = access(&bq, &ds).await;
    let text = |annotations: &str| {
        format!(
            "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: planned, namespace: ctl-plan{annotations}}}\nspec:\n  project: {PROJECT}\n  dataset: {ds}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, group: planned@acme.com}}\n"
        )
    };
    let all = load(&text(", annotations: {bqsteward.dev/mode: plan}"));
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(access(&bq, &ds).await, before, "nothing applied");
    let s = kube.get(&key_of(&all[0])).status;
    let (st, reason, _) = condition(&s, "Ready");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "PlanOnly"), "{s:#}");
    let (st, reason, message) = condition(&s, "Planned");
    assert_eq!((st.as_str(), reason.as_str()), ("True", "PendingChanges"), "{s:#}");
    assert!(message.contains("access lists: 1 dataset to change"), "{message}");
    assert!(
        s["plan"]["pending"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &serde_json::json!(format!("+READER group:planned@acme.com on {PROJECT}.{ds}"))),
        "{s:#}"
    );
    assert_eq!(
        s["plan"]["counts"]["entriesToAdd"], 3,
        "the group, projectOwners and bqsteward's OWNER entry: {s:#}"
    );
    // Planned again: still nothing applied.
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert_eq!(access(&bq, &ds).await, before);

    // The annotation goes: applied, Ready, no plan left in the status.
    kube.kube
        .kubectl(&[
            "annotate",
            "datasetaccess.bqsteward.dev",
            "planned",
            "-n",
            "ctl-plan",
            "bqsteward.dev/mode-",
        ])
        .ok();
    let all = load(&text(""));
    reconcile(&ctx, &object(&kube, &all[0], false), &all).await.unwrap();
    assert!(access(&bq, &ds).await.contains(&"group:planned@acme.com".to_string()));
    let s = kube.get(&key_of(&all[0])).status;
    assert_eq!(condition(&s, "Ready").0, "True", "{s:#}");
    assert_eq!(condition(&s, "Planned").0, "", "{s:#}");
    assert!(s["plan"].is_null(), "{s:#}");
}
