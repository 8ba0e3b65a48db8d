//! bqsteward against a real Kubernetes API server (kube-apiserver + etcd from `scripts/kube.sh`),
//! with BigQuery and Cloud Storage on the emulators and the Cloud Identity / Resource Manager fakes:
//! the CRDs as the server takes them (schema, CEL, printer columns, `kubectl explain`), what the
//! server refuses, `bqsteward run` as a separate process with a ServiceAccount token bound to the
//! shipped RBAC (checked against the audit log: nothing missing, nothing superfluous), the samples
//! reconciled to Ready, spec changes, drift, no status churn, deletion policies, two replicas with a
//! leader killed by SIGKILL, and the Helm chart rendered and accepted by the server.
//!
//! The tests share one API server, so they run one at a time ([`kube::exclusive`]).

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::bqtypes::TableRef;
use bqsteward::cloud::storage::{GcsRest, Storage};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::argocd::health;
use support::cloud_identity::FakeGroups;
use support::controller::{Controller, Settings, eventually};
use support::kube::{self, Kube};
use support::resource_manager::FakeIam;
use support::{PrivateEmulators, access_lines};

const IDENTITY: &str = "serviceAccount:bqsteward@acme-data-eng.iam.gserviceaccount.com";

#[test]
fn crds_are_accepted_explained_and_printed() {
    let _one = kube::exclusive();
    let k = kube::kube();
    k.install_crds();
    // Served as structural schemas with their field docs (the Rust doc comments). The server
    // publishes a new CRD's OpenAPI a moment after it is Established.
    let explain_when_published = |what: &str| {
        for _ in 0..40 {
            let out = k.kubectl(&["explain", what]);
            if out.code == 0 {
                return out.stdout;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        k.kubectl(&["explain", what]).ok()
    };
    let explain = explain_when_published("ingestedtables.spec.source");
    assert!(
        explain.contains("KIND:") && explain.contains("IngestedTable"),
        "{explain}"
    );
    assert!(explain.contains("include"), "{explain}");
    let explain = explain_when_published("datasetaccesses.spec.access");
    assert!(explain.contains("The complete list"), "{explain}");
    for (short, kind) in [
        ("igt", "ingestedtables"),
        ("dsa", "datasetaccesses"),
        ("cp", "consumerprojects"),
        ("gm", "groupmemberships"),
    ] {
        let doc = explain_when_published(kind);
        assert!(doc.contains("bqsteward.dev"), "{doc}");
        k.kubectl(&["get", short, "-A"]).ok();
    }
    // Printer columns.
    k.namespace("printers");
    k.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        &dsa("printers", "p", "proj-1", "d", ""),
    )
    .ok();
    let table = k.kubectl(&["get", "dsa", "-n", "printers"]).ok();
    let header = table.lines().next().unwrap_or_default().to_string();
    for col in ["NAME", "PROJECT", "DATASET", "ENTRIES", "READY", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains("proj-1"), "{table}");
    let header = k.kubectl(&["get", "igt,cp,gm", "-A"]).ok();
    assert!(!header.contains("error"), "{header}");
    // An IngestedTable shows Ready, Lag, Files loaded, Quarantined and Age, in that order.
    k.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {name: t, namespace: printers}\nspec:\n  source: {uri: gs://b/p/, format: NEWLINE_DELIMITED_JSON}\n  destination: {project: proj-1, dataset: d, table: t}\n  schema: [{name: id, type: INT64}]\n",
    )
    .ok();
    let table = k.kubectl(&["get", "igt", "-n", "printers"]).ok();
    let header = table.lines().next().unwrap_or_default().to_string();
    let at = |col: &str| header.find(col).unwrap_or_else(|| panic!("{col} missing: {header}"));
    assert!(
        at("READY") < at("LAG")
            && at("LAG") < at("FILES LOADED")
            && at("FILES LOADED") < at("QUARANTINED")
            && at("QUARANTINED") < at("AGE"),
        "{header}"
    );
    k.kubectl(&["delete", "igt", "t", "-n", "printers", "--wait=false"])
        .ok();
    k.kubectl(&["delete", "dsa", "p", "-n", "printers", "--wait=false"])
        .ok();
}

fn dsa(ns: &str, name: &str, project: &str, dataset: &str, extra: &str) -> String {
    format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  project: {project}\n  dataset: {dataset}\n  access:\n    - {{role: OWNER, specialGroup: projectOwners}}\n    - {{role: READER, group: analysts@acme.com}}\n{extra}"
    )
}

#[test]
fn the_api_server_refuses_what_the_schema_and_cel_catch() {
    let _one = kube::exclusive();
    let k = kube::kube();
    k.install_crds();
    k.namespace("refusals");
    let apply = |text: &str| k.kubectl_in(&["apply", "--server-side", "-f", "-"], text);
    let refused = |text: &str, needle: &str| {
        let out = apply(text);
        assert_ne!(out.code, 0, "accepted:\n{text}");
        assert!(out.stderr.contains(needle), "wanted {needle:?} in:\n{}", out.stderr);
    };
    // Unknown field (strict field validation, the default of server-side apply).
    refused(&dsa("refusals", "unknown", "proj-1", "d", "  bogus: 1\n"), "bogus");
    // Wrong enum.
    refused(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: enum, namespace: refusals}\nspec:\n  project: proj-1\n  dataset: d\n  access: [{role: KING, group: g@acme.com}]\n",
        "Unsupported value: \"KING\"",
    );
    // Missing required field.
    refused(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: required, namespace: refusals}\nspec:\n  project: proj-1\n  access: [{role: READER, group: g@acme.com}]\n",
        "spec.dataset: Required value",
    );
    // CEL: exactly one principal per entry.
    refused(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata: {name: two, namespace: refusals}\nspec:\n  project: proj-1\n  dataset: d\n  access: [{role: READER, group: g@acme.com, user: u@acme.com}]\n",
        "each access entry names exactly one principal",
    );
    // CEL: an immutable field changed on update.
    apply(&dsa("refusals", "immutable", "proj-1", "d1", "")).ok();
    refused(
        &dsa("refusals", "immutable", "proj-1", "d2", ""),
        "dataset is immutable",
    );
    refused(
        &dsa("refusals", "immutable", "proj-2", "d1", ""),
        "project is immutable",
    );
    let it = "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {name: mode, namespace: refusals}\nspec:\n  source: {uri: 'gs://b/p/', format: NEWLINE_DELIMITED_JSON}\n  destination: {project: proj-1, dataset: d, table: t}\n  mode: Sometimes\n  schema: [{name: id, type: INT64}]\n";
    refused(it, "Unsupported value: \"Sometimes\"");
    // Nothing refused was stored; the valid one was.
    let names = k.kubectl(&["get", "dsa,igt", "-n", "refusals", "-o", "name"]).ok();
    assert_eq!(names.trim(), "datasetaccess.bqsteward.dev/immutable", "{names}");
    k.kubectl(&["delete", "dsa", "immutable", "-n", "refusals", "--wait=false"])
        .ok();
}

/// Applies the ServiceAccount and roles of `rbac` (YAML documents) into namespace `ns` and returns
/// a kubeconfig holding a token of that ServiceAccount.
fn install_rbac(k: &Kube, ns: &str, rbac: &str, dir: &Path) -> std::path::PathBuf {
    k.namespace(ns);
    k.kubectl_in(&["apply", "-n", ns, "-f", "-"], rbac).ok();
    let path = dir.join(format!("{ns}.kubeconfig"));
    k.service_account_kubeconfig(ns, "bqsteward", &path);
    path
}

/// The shipped RBAC of `config/rbac`, with the namespace of its subjects set to `ns`.
fn kustomize_rbac(k: &Kube, ns: &str) -> String {
    k.kubectl(&["kustomize", "config/rbac"])
        .ok()
        .replace("namespace: bqsteward-system", &format!("namespace: {ns}"))
}

/// Every (apiGroup, resource, verb) a ClusterRole or Role in `rbac` grants.
fn granted(rbac: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for doc in rbac.split("\n---\n") {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(doc) else {
            continue;
        };
        if !matches!(v["kind"].as_str(), Some("ClusterRole") | Some("Role")) {
            continue;
        }
        for rule in v["rules"].as_sequence().into_iter().flatten() {
            let list = |f: &str| -> Vec<String> {
                rule[f]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for verb in list("verbs") {
                        out.insert((g.clone(), r.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// Nothing the controller (ServiceAccount `ns/bqsteward`) asked was refused, per the audit log.
fn assert_never_refused(k: &Kube, ns: &str) -> Vec<kube::AuditedRequest> {
    let user = format!("system:serviceaccount:{ns}:bqsteward");
    let requests = k.requests_by(&user);
    assert!(!requests.is_empty(), "no request of {user} in the audit log");
    let refused: Vec<_> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "RBAC refused the controller: {refused:#?}");
    requests
}

/// The RBAC check: the controller was never refused (nothing missing) and used every permission
/// its roles grant (nothing superfluous), read from the API server's audit log.
fn assert_rbac_exact(k: &Kube, ns: &str, rbac: &str) {
    let requests = assert_never_refused(k, ns);
    let used: BTreeSet<(String, String, String)> = requests
        .iter()
        .map(|r| (r.group.clone(), r.rbac_resource(), r.verb.clone()))
        .collect();
    let granted = granted(rbac);
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the roles grant permissions the controller never used (superfluous): {unused:?}\nused: {used:?}"
    );
}

/// Ready=True with observedGeneration = generation.
fn ready(obj: &Value) -> bool {
    let cond = obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    cond.is_some_and(|c| c["status"] == "True") && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

fn condition(obj: &Value, t: &str) -> (String, String) {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

const SAMPLES: [(&str, &str); 4] = [
    ("igt", "payments-transactions"),
    ("dsa", "payments-clean"),
    ("cp", "marketing"),
    ("gm", "analysts"),
];

/// Payment files for the sample IngestedTable (card numbers included: they must never load).
fn payments(first: i64, n: i64) -> Vec<u8> {
    (first..first + n)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"amount\": {i}.5, \"email\": \"c{i}@example.com\", \"modify_time\": \"2026-11-0{}T10:00:00Z\", \"card_number\": \"4111111111111{i:03}\"}}\n",
                1 + i % 9
            )
        })
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reconciles_the_samples_in_a_real_cluster() {
    let _one = kube::exclusive_async().await;
    let k = kube::kube();
    k.install_crds();
    let emu = PrivateEmulators::start(19170, 19172);
    let bq = BigQueryRest::new(&emu.endpoints).await.unwrap();
    let gcs = GcsRest::new(&emu.endpoints).unwrap();
    gcs.create_bucket("acme-data-eng", "acme-raw").await.unwrap();
    for (name, first) in [("2026-11-01-a.json", 1), ("2026-11-01-b.json", 11)] {
        gcs.upload(
            "acme-raw",
            &format!("payments/transactions/{name}"),
            payments(first, 10),
            "application/json",
        )
        .await
        .unwrap();
    }
    let groups = FakeGroups::start(50).await;
    groups.add_group(
        "analysts@acme.com",
        &[
            ("bob@acme.com", &["MEMBER", "OWNER"]),
            ("mallory@acme.com", &["MEMBER"]),
        ],
    );
    let iam = FakeIam::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = "bqsteward-system";
    let rbac = kustomize_rbac(k, ns);
    let kubeconfig = install_rbac(k, ns, &rbac, dir.path());
    k.namespace("data-platform");
    k.purge("data-platform");
    let lease = support::unique("lease").replace('_', "-");

    // The samples first, as ArgoCD would sync them: no status yet, so ArgoCD shows Progressing.
    k.kubectl(&["apply", "-k", "config/samples"]).ok();
    for (kind, name) in SAMPLES {
        let obj = k.get(kind, "data-platform", name).unwrap();
        assert_eq!(health(obj).0, "Progressing", "{kind}/{name} before the controller");
    }

    let settings = Settings {
        kubeconfig: &kubeconfig,
        env: vec![
            (
                "BIGQUERY_EMULATOR_HOST".into(),
                emu.endpoints.bigquery.trim_end_matches("/bigquery/v2").into(),
            ),
            ("STORAGE_EMULATOR_HOST".into(), emu.endpoints.storage.clone()),
            ("CLOUD_IDENTITY_EMULATOR_HOST".into(), groups.url.clone()),
            ("RESOURCE_MANAGER_EMULATOR_HOST".into(), iam.url.clone()),
            ("BQSTEWARD_IDENTITY".into(), IDENTITY.into()),
        ],
        args: [
            "--requeue",
            "3s",
            "--lease-namespace",
            ns,
            "--lease-name",
            &lease,
            "--audit-flush-interval",
            "2s",
        ]
        .map(String::from)
        .to_vec(),
        log_dir: dir.path(),
    };
    let ctl = Controller::start("story", 19181, &settings);

    // Every sample reaches Ready with observedGeneration.
    for (kind, name) in SAMPLES {
        eventually(
            Duration::from_secs(120),
            &format!("{kind}/{name} Ready\n{}", ctl.log_tail()),
            || async { k.get(kind, "data-platform", name).filter(ready) },
        )
        .await;
    }
    for (kind, name) in SAMPLES {
        let obj = k.get(kind, "data-platform", name).unwrap();
        assert_eq!(health(obj.clone()).0, "Healthy", "{kind}/{name}: {}", obj["status"]);
        let finalizers = obj["metadata"]["finalizers"].to_string();
        assert!(
            finalizers.contains("bqsteward.dev/cleanup"),
            "{kind}/{name}: {finalizers}"
        );
    }
    // Status fields survive the server's pruning (they are in the CRD schemas).
    let igt = k.get("igt", "data-platform", "payments-transactions").unwrap();
    assert_eq!(igt["status"]["filesLoaded"], json!(2), "{}", igt["status"]);
    assert_eq!(igt["status"]["rowsLoaded"], json!(20), "{}", igt["status"]);
    // The dashboard's per-table series: both files' end-to-end delay, jobs against the budget.
    assert!(ctl.counter("bqsteward_table_delivery_delay_seconds_count") >= 2.0);
    assert!(ctl.counter("bqsteward_table_load_job_budget") >= 1000.0);
    // The audit log: the controller's periodic flushes write the rows of what it changed.
    eventually(Duration::from_secs(60), "audit rows written", || async {
        (ctl.counter("bqsteward_audit_rows_written_total") >= 5.0
            && ctl.counter("bqsteward_audit_pending_events") == 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(ctl.counter("bqsteward_audit_flush_failures_total"), 0.0);
    assert!(
        igt["status"]["jobsToday"].as_i64().is_some_and(|n| n >= 1),
        "{}",
        igt["status"]
    );
    let dsa_status = &k.get("dsa", "data-platform", "payments-clean").unwrap()["status"];
    assert!(dsa_status["entries"].as_i64().is_some_and(|n| n >= 7), "{dsa_status}");
    assert_eq!(
        k.get("cp", "data-platform", "marketing").unwrap()["status"]["views"],
        json!(1)
    );
    assert_eq!(
        k.get("gm", "data-platform", "analysts").unwrap()["status"]["members"],
        json!(2)
    );
    // The table is loaded (no card number), the views exist, the lists are exact.
    let raw = TableRef::new("acme-data-eng", "payments", "transactions");
    let rows = bq
        .query(
            "acme-data-eng",
            "US",
            &format!("SELECT COUNT(*) FROM {}", raw.sql()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Some("20".to_string())]]);
    let columns: Vec<String> = bq
        .get_table(&raw)
        .await
        .unwrap()
        .unwrap()
        .schema
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    assert!(!columns.iter().any(|c| c == "card_number"), "{columns:?}");
    let clean = TableRef::new("acme-data-eng", "payments__views_clean", "transactions");
    let consumer = TableRef::new("acme-marketing-analytics", "shared_payments", "transactions");
    for t in [
        &TableRef::new("acme-data-eng", "payments__views_full", "transactions"),
        &clean,
        &consumer,
    ] {
        assert!(bq.get_table(t).await.unwrap().is_some(), "{t} missing");
    }
    let list = access_lines(&bq, "acme-data-eng", "payments__views_clean").await;
    assert!(list.contains(&format!("- view:{consumer}")), "{list:?}");
    assert!(list.contains("READER domain:acme.com"), "{list:?}");
    assert_eq!(
        groups.members("analysts@acme.com").into_iter().collect::<Vec<_>>(),
        vec![
            ("alice@acme.com".into(), "MEMBER".into()),
            ("bob@acme.com".into(), "OWNER".into())
        ]
    );
    assert!(
        iam.policy("acme-marketing-analytics")
            .to_string()
            .contains("group:marketing@acme.com")
    );
    // What the controller made is exactly what `plan` declares: no changes.
    let all: String = [
        "payments-transactions",
        "payments-clean-access",
        "marketing-consumer",
        "analysts-group",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(format!("config/samples/{f}.yaml")).unwrap())
    .collect::<Vec<_>>()
    .join("\n---\n");
    let env = settings
        .env
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect::<Vec<_>>();
    let plan = support::cli::bqsteward(&["plan"], &all, &env).await;
    support::cli::ok(&plan, 0);

    // A spec change is applied: the domain reader goes.
    k.kubectl(&[
        "patch",
        "dsa",
        "payments-clean",
        "-n",
        "data-platform",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/access/4"}]"#,
    ])
    .ok();
    eventually(Duration::from_secs(60), "the spec change applied", || async {
        let obj = k.get("dsa", "data-platform", "payments-clean")?;
        (ready(&obj) && obj["metadata"]["generation"] == json!(2)).then_some(())
    })
    .await;
    let list = access_lines(&bq, "acme-data-eng", "payments__views_clean").await;
    assert!(!list.contains("READER domain:acme.com"), "{list:?}");

    // Drift made by hand in BigQuery is corrected within the requeue interval.
    let info = bq
        .get_dataset("acme-data-eng", "payments__views_clean")
        .await
        .unwrap()
        .unwrap();
    let mut access = info.access.clone();
    access.push(json!({"role": "READER", "userByEmail": "eve@evil.example"}));
    bq.patch_dataset_access("acme-data-eng", "payments__views_clean", access, &info.etag)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the hand-made reader removed", || async {
        let list = access_lines(&bq, "acme-data-eng", "payments__views_clean").await;
        (!list.iter().any(|l| l.contains("eve@evil.example"))).then_some(())
    })
    .await;

    // Idle requeues write nothing: resourceVersions hold.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let versions = |k: &Kube| -> Vec<String> {
        SAMPLES
            .iter()
            .map(|(kind, name)| {
                k.get(kind, "data-platform", name).unwrap()["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let before = versions(k);
    let reconciles = ctl.counter("bqsteward_reconciles_total");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        ctl.counter("bqsteward_reconciles_total") >= reconciles + 6.0,
        "the idle objects were not requeued"
    );
    assert_eq!(versions(k), before, "status churn on idle requeues");

    // What only `bqsteward validate` catches is reported on the object; it stays deletable.
    let public = dsa(
        "data-platform",
        "public",
        "acme-data-eng",
        "payments",
        "    - {role: READER, iamMember: allUsers}\n",
    );
    k.kubectl_in(&["apply", "--server-side", "-f", "-"], &public).ok();
    let obj = eventually(Duration::from_secs(30), "InvalidSpec on dsa/public", || async {
        k.get("dsa", "data-platform", "public")
            .filter(|o| condition(o, "Ready").0 == "InvalidSpec")
    })
    .await;
    assert!(
        condition(&obj, "Ready").1.contains("forbidden principal"),
        "{}",
        obj["status"]
    );
    assert_eq!(health(obj).0, "Degraded");
    let list = access_lines(&bq, "acme-data-eng", "payments").await;
    assert!(!list.iter().any(|l| l.contains("allUsers")), "{list:?}");
    k.kubectl(&["delete", "dsa", "public", "-n", "data-platform", "--timeout=30s"])
        .ok();

    // Delete with deletionPolicy Delete: the consumer's view and its authorization go, then the
    // table and its views; Retain leaves the cloud as it is.
    for (kind, name) in [("cp", "marketing"), ("igt", "payments-transactions")] {
        k.kubectl(&[
            "patch",
            kind,
            name,
            "-n",
            "data-platform",
            "--type=merge",
            "-p",
            r#"{"spec": {"deletionPolicy": "Delete"}}"#,
        ])
        .ok();
        k.kubectl(&["delete", kind, name, "-n", "data-platform", "--timeout=60s"])
            .ok();
        assert!(k.get(kind, "data-platform", name).is_none());
    }
    assert!(bq.get_table(&consumer).await.unwrap().is_none());
    assert!(bq.get_table(&clean).await.unwrap().is_none());
    assert!(bq.get_table(&raw).await.unwrap().is_none());
    let list = access_lines(&bq, "acme-data-eng", "payments__views_clean").await;
    assert!(!list.iter().any(|l| l.contains("view:")), "{list:?}");
    for (kind, name) in [("dsa", "payments-clean"), ("gm", "analysts")] {
        k.kubectl(&["delete", kind, name, "-n", "data-platform", "--timeout=60s"])
            .ok();
    }
    let list = access_lines(&bq, "acme-data-eng", "payments__views_clean").await;
    assert!(
        list.contains("READER group:analysts@acme.com"),
        "Retain kept the list: {list:?}"
    );
    assert_eq!(groups.members("analysts@acme.com").len(), 2, "Retain kept the members");

    // The controller used exactly what config/rbac grants.
    assert_rbac_exact(k, ns, &rbac);
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_a_kill_9_takeover_with_the_charts_rbac() {
    let _one = kube::exclusive_async().await;
    let k = kube::kube();
    k.install_crds();
    let emu = PrivateEmulators::start(19170, 19172);
    let proxy = support::proxy::Proxy::start(emu.endpoints.bigquery.trim_end_matches("/bigquery/v2")).await;
    let bq = BigQueryRest::new(&emu.endpoints).await.unwrap();
    let gcs = GcsRest::new(&emu.endpoints).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The chart's RBAC, rendered by helm, bound to its ServiceAccount.
    let ns = "bqsteward-chart";
    let rendered = k.helm(&["template", "bqs", "charts/bqsteward", "--namespace", ns]).ok();
    let rbac: String = rendered
        .split("\n---\n")
        .filter(|d| {
            [
                "kind: ServiceAccount",
                "kind: ClusterRole",
                "kind: ClusterRoleBinding",
                "kind: Role",
                "kind: RoleBinding",
            ]
            .iter()
            .any(|k| d.lines().any(|l| l.trim() == *k))
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    let kubeconfig = install_rbac(k, ns, &rbac, dir.path());

    // A dataset with a declared list and a table with one file.
    let project = "acme-failover";
    let dataset = support::unique("failover");
    bq.create_dataset(project, &dataset, "US").await.unwrap();
    let bucket = support::unique("failover").replace('_', "-");
    gcs.create_bucket(project, &bucket).await.unwrap();
    gcs.upload(&bucket, "in/1.json", b"{\"id\": 1}\n".to_vec(), "application/json")
        .await
        .unwrap();
    k.namespace("failover");
    k.purge("failover");
    let table = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: IngestedTable\nmetadata: {{name: t, namespace: failover}}\nspec:\n  source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON}}\n  destination: {{project: {project}, dataset: {dataset}, table: t}}\n  schema: [{{name: id, type: INT64}}]\n  schedule: {{every: 1m}}\n"
    );
    k.kubectl_in(&["apply", "--server-side", "-f", "-"], &table).ok();
    k.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        &dsa("failover", "list", project, &dataset, ""),
    )
    .ok();

    let lease = support::unique("lease").replace('_', "-");
    let settings = Settings {
        kubeconfig: &kubeconfig,
        env: vec![
            ("BIGQUERY_EMULATOR_HOST".into(), proxy.url.clone()),
            ("STORAGE_EMULATOR_HOST".into(), emu.endpoints.storage.clone()),
            ("BQSTEWARD_IDENTITY".into(), IDENTITY.into()),
        ],
        args: [
            "--requeue",
            "3s",
            "--lease-namespace",
            ns,
            "--lease-name",
            &lease,
            "--lease-duration",
            "6s",
        ]
        .map(String::from)
        .to_vec(),
        log_dir: dir.path(),
    };
    let holder = || {
        k.get("lease", ns, &lease)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    let mut a = Controller::start("replica-a", 19182, &settings);
    eventually(Duration::from_secs(30), "replica-a leads", || async {
        (holder().as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut b = Controller::start("replica-b", 19183, &settings);
    for (kind, name) in [("igt", "t"), ("dsa", "list")] {
        eventually(
            Duration::from_secs(60),
            &format!("{kind}/{name} Ready\n{}", a.log_tail()),
            || async { k.get(kind, "failover", name).filter(ready) },
        )
        .await;
    }
    // Exactly one holds the Lease and writes: the standby answers but reconciles nothing.
    eventually(Duration::from_secs(10), "replica-b serves /metrics", || async {
        (!b.metrics().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(holder().as_deref(), Some("replica-a"));
    assert!(a.counter("bqsteward_reconciles_total") >= 2.0);
    assert_eq!(b.counter("bqsteward_reconciles_total"), 0.0, "the standby reconciled");

    // New work, then the leader dies without releasing the Lease.
    gcs.upload(&bucket, "in/2.json", b"{\"id\": 2}\n".to_vec(), "application/json")
        .await
        .unwrap();
    k.kubectl(&[
        "patch",
        "dsa",
        "list",
        "-n",
        "failover",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/access/-", "value": {"role": "READER", "user": "carol@acme.com"}}]"#,
    ])
    .ok();
    a.kill9();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(30),
        &format!("replica-b takes over\n{}", b.log_tail()),
        || async { (holder().as_deref() == Some("replica-b")).then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(6 + 3),
        "takeover took {takeover:?} (lease 6s)"
    );
    eventually(
        Duration::from_secs(60),
        &format!("the change finished by replica-b\n{}", b.log_tail()),
        || async {
            let obj = k.get("dsa", "failover", "list")?;
            (ready(&obj) && obj["metadata"]["generation"] == json!(2)).then_some(())
        },
    )
    .await;
    let rows = eventually(Duration::from_secs(90), "the second file loaded", || async {
        let r = bq
            .query(
                project,
                "US",
                &format!(
                    "SELECT id FROM {} ORDER BY id",
                    TableRef::new(project, &dataset, "t").sql()
                ),
                &[],
            )
            .await
            .ok()?;
        (r.rows.len() == 2).then_some(r.rows)
    })
    .await;
    assert_eq!(rows, vec![vec![Some("1".to_string())], vec![Some("2".to_string())]]);
    assert!(
        access_lines(&bq, project, &dataset)
            .await
            .contains("READER user:carol@acme.com")
    );
    assert!(b.running(), "{}", b.log_tail());

    // Nothing was written twice: one access-list write per change, one job per id.
    let seen = proxy.seen();
    let acl_writes = seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.contains(&format!("/datasets/{dataset}")) && s.status == 200)
        .count();
    assert_eq!(acl_writes, 2, "the first list and the change, each written once");
    let mut job_ids: Vec<String> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains("/jobs") && s.status == 200)
        .filter_map(|s| {
            serde_json::from_str::<Value>(&s.body).ok()?["jobReference"]["jobId"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let n = job_ids.len();
    job_ids.sort();
    job_ids.dedup();
    assert_eq!(job_ids.len(), n, "a job id was run twice");
    assert_eq!(
        job_ids.iter().filter(|j| j.starts_with("bqsteward_load_")).count(),
        2,
        "one load per file batch: {job_ids:?}"
    );

    for (kind, name) in [("igt", "t"), ("dsa", "list")] {
        k.kubectl(&["delete", kind, name, "-n", "failover", "--timeout=60s"])
            .ok();
    }
    // The chart grants exactly what config/rbac grants (which the sample story proves exact), and
    // the controller running on it was never refused.
    assert_never_refused(k, ns);
    assert_eq!(
        granted(&rbac),
        granted(&kustomize_rbac(k, ns)),
        "chart RBAC differs from config/rbac"
    );
    drop(b);
}

#[test]
fn the_helm_chart_lints_renders_and_the_server_accepts_it() {
    let _one = kube::exclusive();
    let k = kube::kube();
    let lint = k.helm(&["lint", "charts/bqsteward"]).ok();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let ns = "bqsteward-dry";
    k.namespace(ns);
    let rendered = k.helm(&["template", "bqs", "charts/bqsteward", "--namespace", ns]).ok();
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(rendered.contains(&format!("kind: {kind}")), "{kind} not rendered");
    }
    let out = k.kubectl_in(&["apply", "--dry-run=server", "-n", ns, "-f", "-"], &rendered);
    let text = out.ok();
    assert!(
        text.contains("deployment.apps/bqs-bqsteward created (server dry run)") || text.contains("(server dry run)"),
        "{text}"
    );
    // Optional parts render too (their CRDs are the Prometheus Operator's, not served here).
    let monitoring = k
        .helm(&[
            "template",
            "bqs",
            "charts/bqsteward",
            "--namespace",
            ns,
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
        ])
        .ok();
    assert!(monitoring.contains("kind: ServiceMonitor") && monitoring.contains("kind: PrometheusRule"));
    // The dashboard's ConfigMap is core API: the server takes it as rendered.
    assert!(monitoring.contains("grafana_dashboard: \"1\""), "{monitoring}");
    let dashboard = k
        .helm(&[
            "template",
            "bqs",
            "charts/bqsteward",
            "--namespace",
            ns,
            "--show-only",
            "templates/grafana-dashboard.yaml",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
        ])
        .ok();
    assert!(
        dashboard.contains("bqsteward_table_delivery_delay_seconds_bucket"),
        "{dashboard}"
    );
    let out = k.kubectl_in(&["apply", "--dry-run=server", "-n", ns, "-f", "-"], &dashboard);
    assert!(
        out.ok()
            .contains("configmap/bqs-bqsteward-dashboard created (server dry run)")
    );
}

#[test]
fn the_demo_runs_its_cluster_part() {
    let _one = kube::exclusive();
    let k = kube::kube();
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .arg("--cluster")
        .env("BQSTEWARD_BIN", env!("CARGO_BIN_EXE_bqsteward"))
        .env("PATH", k.path())
        .env_remove("BIGQUERY_EMULATOR_HOST")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run scripts/demo.sh --cluster");
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo --cluster failed:\n{all}");
    let part = all
        .split("10. The same manifests in Kubernetes")
        .nth(1)
        .unwrap_or_else(|| panic!("no cluster part:\n{all}"));
    // `kubectl get` shows every object Ready (the READY printer column).
    let table: Vec<&str> = part
        .lines()
        .filter(|l| (l.starts_with("ingestedtable.") || l.starts_with("datasetaccess.")) && l.contains("acme-data-eng"))
        .collect();
    assert_eq!(table.len(), 5, "{part}");
    for line in &table {
        let want = if line.starts_with("ingestedtable.bqsteward.dev/clicks") {
            " False " // 2 corrupt files quarantined: Degraded, not Ready
        } else {
            " True "
        };
        assert!(line.contains(want), "{line}\n{part}");
    }
    // The drift granted by hand was removed by the controller: plan exits 0 again.
    assert!(
        part.contains("Access lists: no changes (3 datasets as declared)"),
        "{part}"
    );
    assert!(part.contains("Plan: no changes"), "{part}");
    assert!(
        part.contains("ingestedtable.bqsteward.dev \"payments\" deleted"),
        "{part}"
    );
    // The API server it used is left running (the tests started it), the controller is gone.
    assert!(k.kubectl(&["get", "ns", "demo"]).code == 0);
}
