//! One behaviour, two front ends: the same manifests applied with `bqsteward apply` (the binary)
//! and reconciled object by object by the controller (`reconcile`, against the real API server)
//! leave the cloud in the same state — tables and views, every access list (including the
//! authorization of a ConsumerProject view removed from the spec, retired by both), the consumer
//! project's jobUser binding and a group's members. Each front end gets its own datasets, consumer
//! project, group and fakes; the states are compared with those names replaced by placeholders.

mod support;

use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::groups::GroupsRest;
use bqsteward::cloud::iam::IamRest;
use bqsteward::cloud::storage::{GcsRest, Storage};
use bqsteward::controller::cluster::ObjectKey;
use bqsteward::controller::reconcile::{Object, reconcile};
use bqsteward::manifest::{LoadReport, Loaded, load_str};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::cloud_identity::FakeGroups;
use support::kube::RealCluster;
use support::resource_manager::FakeIam;

const DATA: &str = "bqsteward-parity";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-parity.iam.gserviceaccount.com";

/// One front end's corner of the cloud.
struct World {
    tag: String,
    dataset: String,
    consumer: String,
    group: String,
    groups: FakeGroups,
    iam: FakeIam,
}

impl World {
    async fn new(tag: &str) -> World {
        let groups = FakeGroups::start(50).await;
        let group = format!("{tag}-team@acme.com");
        groups.add_group(
            &group,
            &[
                ("stale@acme.com", &["MEMBER"]),
                (
                    "bqsteward@bqsteward-parity.iam.gserviceaccount.com",
                    &["MEMBER", "OWNER"],
                ),
            ],
        );
        World {
            tag: tag.to_string(),
            dataset: support::unique(&format!("par_{tag}")),
            consumer: support::unique(&format!("cons_{tag}")),
            group,
            groups,
            iam: FakeIam::start().await,
        }
    }

    /// The manifests; `both_views` keeps the second consumer view.
    fn manifests(&self, bucket: &str, both_views: bool) -> String {
        let (d, c, g, ns) = (&self.dataset, &self.consumer, &self.group, format!("par-{}", self.tag));
        let second = if both_views {
            "    - {name: open_orders, source: {ingestedTable: orders, layer: clean}, columns: [id, status], rowFilter: \"status = 'open'\"}\n"
        } else {
            ""
        };
        format!(
            r#"apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {{name: orders, namespace: {ns}}}
spec:
  source: {{uri: "gs://{bucket}/orders/", format: NEWLINE_DELIMITED_JSON}}
  destination: {{project: {DATA}, dataset: {d}, table: orders}}
  schema:
    - {{name: id, type: INT64, mode: REQUIRED}}
    - {{name: status, type: STRING}}
    - {{name: email, type: STRING}}
    - {{name: v, type: INT64}}
  primaryKey: [id]
  versionColumn: v
  piiColumns: [email]
  hashedPiiColumns: [email]
  views: {{full: true, clean: true}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: DatasetAccess
metadata: {{name: raw, namespace: {ns}}}
spec:
  project: {DATA}
  dataset: {d}
  access:
    - {{role: OWNER, specialGroup: projectOwners}}
    - {{role: READER, group: auditors@acme.com}}
---
apiVersion: bqsteward.dev/v1alpha1
kind: ConsumerProject
metadata: {{name: shop, namespace: {ns}}}
spec:
  project: {DATA}
  dataset: {c}
  readers: [{{group: {g}}}]
  views:
    - {{name: orders, source: {{ingestedTable: orders, layer: clean}}, columns: [id, status, email]}}
{second}---
apiVersion: bqsteward.dev/v1alpha1
kind: GroupMembership
metadata: {{name: team, namespace: {ns}}}
spec:
  group: {g}
  members:
    - {{email: alice@acme.com, role: MEMBER}}
    - {{email: bob@acme.com, role: MANAGER}}
"#
        )
    }

    /// Everything the manifests touch, with this world's names replaced by placeholders.
    async fn state(&self, bq: &BigQueryRest) -> BTreeMap<String, String> {
        let d = &self.dataset;
        let mut out = BTreeMap::new();
        for ds in [
            d.clone(),
            format!("{d}__views_full"),
            format!("{d}__views_clean"),
            self.consumer.clone(),
        ] {
            let acl: Vec<String> = support::access_lines(bq, DATA, &ds).await.into_iter().collect();
            let tables: Vec<String> = bq
                .list_tables(DATA, &ds)
                .await
                .unwrap()
                .into_iter()
                .map(|(t, kind)| format!("{} {kind}", t.table))
                .collect();
            out.insert(format!("{ds} acl"), acl.join("\n"));
            out.insert(format!("{ds} tables"), tables.join("\n"));
        }
        let rows = bq
            .query(DATA, "US", &format!("SELECT COUNT(*) FROM `{DATA}.{d}.orders`"), &[])
            .await
            .unwrap();
        out.insert("raw rows".into(), format!("{:?}", rows.rows));
        for view in ["orders", "open_orders"] {
            let sql = bq
                .query(
                    DATA,
                    "US",
                    &format!(
                        "SELECT view_definition FROM `{DATA}.{}.INFORMATION_SCHEMA.VIEWS` WHERE table_name = '{view}'",
                        self.consumer
                    ),
                    &[],
                )
                .await
                .unwrap();
            out.insert(format!("consumer view {view}"), format!("{:?}", sql.rows));
        }
        out.insert("iam".into(), self.iam.policy(DATA)["bindings"].to_string());
        out.insert("group".into(), format!("{:?}", self.groups.members(&self.group)));
        let text = serde_json::to_string_pretty(&out).unwrap();
        let normalized = text
            .replace(&self.consumer, "<consumer>")
            .replace(d, "<dataset>")
            .replace(&self.group, "<group>")
            .replace(&format!("par-{}", self.tag), "<ns>");
        serde_json::from_str(&normalized).unwrap()
    }
}

fn load(text: &str) -> Vec<Loaded> {
    let mut report = LoadReport::default();
    load_str("parity.yaml", text, &mut report);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.resources
}

fn object(kube: &RealCluster, l: &Loaded) -> Object {
    let key = ObjectKey {
        kind: l.resource.kind(),
        namespace: l.resource.namespace().to_string(),
        name: l.resource.qualified_name().split('/').nth(1).unwrap().to_string(),
    };
    let mut manifest = match &l.resource {
        bqsteward::manifest::Resource::IngestedTable(r) => serde_json::to_value(r),
        bqsteward::manifest::Resource::DatasetAccess(r) => serde_json::to_value(r),
        bqsteward::manifest::Resource::ConsumerProject(r) => serde_json::to_value(r),
        bqsteward::manifest::Resource::GroupMembership(r) => serde_json::to_value(r),
    }
    .unwrap();
    manifest.as_object_mut().unwrap().remove("status");
    kube.kube
        .kubectl_in(&["apply", "--server-side", "-f", "-"], &manifest.to_string())
        .ok();
    let stored = kube.get(&key);
    let mut loaded = l.clone();
    let meta = match &mut loaded.resource {
        bqsteward::manifest::Resource::IngestedTable(r) => &mut r.metadata,
        bqsteward::manifest::Resource::DatasetAccess(r) => &mut r.metadata,
        bqsteward::manifest::Resource::ConsumerProject(r) => &mut r.metadata,
        bqsteward::manifest::Resource::GroupMembership(r) => &mut r.metadata,
    };
    meta.finalizers = Some(stored.finalizers.clone());
    meta.resource_version = stored.object["metadata"]["resourceVersion"].as_str().map(String::from);
    meta.generation = stored.object["metadata"]["generation"].as_i64();
    meta.uid = stored.object["metadata"]["uid"].as_str().map(String::from);
    Object {
        key,
        loaded,
        status: stored.status,
    }
}

#[tokio::test]
async fn apply_and_the_controller_leave_the_same_state() {
    let e = support::emulators();
    let bq = BigQueryRest::new(&e).await.unwrap();
    let gcs = GcsRest::new(&e).unwrap();
    let bucket = support::unique("parity").replace('_', "-");
    gcs.create_bucket(DATA, &bucket).await.unwrap();
    let rows: String = (1..=6)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": i, "status": if i % 2 == 0 {"paid"} else {"open"}, "email": format!("c{i}@x.com"), "v": 1})
            )
        })
        .collect();
    gcs.upload(&bucket, "orders/a.json", rows.into_bytes(), "application/octet-stream")
        .await
        .unwrap();
    let (cli, ctl) = (World::new("cli").await, World::new("ctl").await);

    // The binary.
    let [bq_var, gcs_var] = support::cli::emulator_env(&e);
    let env = [
        (bq_var.0, bq_var.1.as_str()),
        (gcs_var.0, gcs_var.1.as_str()),
        ("RESOURCE_MANAGER_EMULATOR_HOST", cli.iam.url.as_str()),
        ("CLOUD_IDENTITY_EMULATOR_HOST", cli.groups.url.as_str()),
        ("BQSTEWARD_IDENTITY", IDENTITY),
    ];
    let apply = |both: bool| {
        let m = cli.manifests(&bucket, both);
        async move { support::cli::bqsteward(&["apply"], &m, &env).await }
    };

    // The controller, one reconcile per object in manifest order (twice: a second pass settles
    // what depends on objects reconciled after it, as the controller's requeues do).
    let kube = Arc::new(RealCluster::new().await);
    kube.kube.namespace("par-ctl");
    kube.kube.purge("par-ctl");
    let mut ctx = support::kube::test_ctx(kube.clone(), IDENTITY).await;
    ctx.groups = Some(Arc::new(GroupsRest::new(Some(&ctl.groups.url)).unwrap()));
    ctx.iam = Some(Arc::new(IamRest::new(Some(&ctl.iam.url)).unwrap()));
    let reconcile_all = |both: bool| {
        let all = load(&ctl.manifests(&bucket, both));
        let (ctx, kube) = (&ctx, &kube);
        async move {
            for _ in 0..2 {
                for l in &all {
                    reconcile(ctx, &object(kube, l), &all)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", l.resource.qualified_name()));
                }
            }
        }
    };

    for both in [true, false] {
        let r = apply(both).await;
        support::cli::ok(&r, 0);
        reconcile_all(both).await;
        let (a, b) = (cli.state(&bq).await, ctl.state(&bq).await);
        for k in a.keys().chain(b.keys()) {
            assert_eq!(
                a.get(k),
                b.get(k),
                "both_views={both}: {k} differs\napply:\n{a:#?}\ncontroller:\n{b:#?}"
            );
        }
    }
    // The removed view and its authorization are gone (not merely equal in both).
    let clean_acl = cli.state(&bq).await["<dataset>__views_clean acl"].clone();
    assert!(
        clean_acl.contains("<consumer>.orders") && !clean_acl.contains("open_orders"),
        "{clean_acl}"
    );
    let group = cli.state(&bq).await["group"].clone();
    assert!(
        group.contains("alice@acme.com") && !group.contains("stale@acme.com"),
        "{group}"
    );
}
