//! DatasetAccess end to end against bqemulator, through the production client and the real
//! binary: drift, guardrails, controller identity, faults the emulator cannot produce (through
//! the fault proxy in `support/proxy.rs`), and a property test of convergence.

mod support;

use bqsteward::access::apply::{Applier, Outcome, observe};
use bqsteward::access::entry::identity_entry;
use bqsteward::access::{AclEntry, compile, plan_dataset};
use bqsteward::cloud::Endpoints;
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::retry::{Backoff, Pacer};
use bqsteward::manifest::{self, LoadReport};
use bqsteward::policy::Policy;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use support::cli::Run;
use support::proxy::{Fault, Proxy};

const PROJECT: &str = "bqsteward-access";
const IDENTITY: &str = "serviceAccount:bqsteward@bqsteward-access.iam.gserviceaccount.com";

fn emulator_host(e: &Endpoints) -> String {
    e.bigquery.trim_end_matches("/bigquery/v2").to_string()
}

/// Creates a fresh dataset whose live access list is exactly `access` (written directly).
async fn dataset_with(access: Vec<Value>) -> String {
    let e = support::emulators();
    let bq = BigQueryRest::new(&e).await.unwrap();
    let ds = support::unique("acl");
    bq.create_dataset(PROJECT, &ds, "US").await.unwrap();
    set_live(&ds, access).await;
    ds
}

/// Another writer: replaces the live list directly, bypassing bqsteward.
async fn set_live(ds: &str, access: Vec<Value>) {
    let e = support::emulators();
    let r = reqwest::Client::new()
        .patch(format!("{}/projects/{PROJECT}/datasets/{ds}", e.bigquery))
        .json(&json!({ "access": access }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn live(ds: &str) -> BTreeSet<AclEntry> {
    let bq = BigQueryRest::new(&support::emulators()).await.unwrap();
    let info = bq.get_dataset(PROJECT, ds).await.unwrap().expect("dataset exists");
    info.access.iter().map(AclEntry::from_api).collect()
}

fn manifest(name: &str, ds: &str, entries: &str, annotations: &str) -> String {
    format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: DatasetAccess\nmetadata:\n  name: {name}\n  namespace: t\n{annotations}spec:\n  project: {PROJECT}\n  dataset: {ds}\n  access:\n{entries}"
    )
}

/// Runs the binary against `bq_host` with the manifest text.
async fn bqsteward(bq_host: &str, cmd: &[&str], manifest_text: &str, identity: bool) -> Run {
    let mut env = vec![("BIGQUERY_EMULATOR_HOST", bq_host)];
    if identity {
        env.push(("BQSTEWARD_IDENTITY", IDENTITY));
    }
    support::cli::bqsteward(cmd, manifest_text, &env).await
}

const OWNERS: &str = "    - {role: OWNER, specialGroup: projectOwners}\n";

#[tokio::test]
async fn drift_is_shown_by_plan_and_removed_by_apply() {
    let e = support::emulators();
    let host = emulator_host(&e);
    let ds = dataset_with(vec![json!({"role": "OWNER", "specialGroup": "projectOwners"})]).await;
    let entries = format!(
        "{OWNERS}    - {{role: READER, group: Analysts@acme.com}}\n    - {{role: roles/bigquery.dataEditor, user: Carol.Smith@acme.com}}\n"
    );
    let m = manifest("drift", &ds, &entries, "");

    let r = bqsteward(&host, &["plan"], &m, true).await;
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("+READER group:analysts@acme.com"), "{}", r.stdout);
    assert!(
        r.stdout.contains("1 dataset to change: +3 \u{2212}0 entries"),
        "{}",
        r.stdout
    );

    let r = bqsteward(&host, &["apply"], &m, true).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // The audit trail: one structured line per change.
    assert_eq!(r.stderr.matches("access changed").count(), 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("action=\"access_added\"") && r.stderr.contains(&format!("actor={IDENTITY}")),
        "{}",
        r.stderr
    );

    let r = bqsteward(&host, &["plan"], &m, true).await;
    assert_eq!(
        r.code, 0,
        "normalised roles and email case must not diff forever:\n{}",
        r.stdout
    );

    // Someone grants an undeclared reader directly.
    let mut access: Vec<Value> = live(&ds).await.iter().map(AclEntry::to_api).collect();
    access.push(json!({"role": "READER", "userByEmail": "Intruder@Evil.com"}));
    set_live(&ds, access).await;
    let r = bqsteward(&host, &["plan"], &m, true).await;
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stdout.contains("-READER user:intruder@evil.com"), "{}", r.stdout);
    // The audit trail where `--audit-log` says: a file of JSON lines, nothing on stderr.
    let audit = tempfile::NamedTempFile::new().unwrap();
    let audit_path = audit.path().display().to_string();
    let r = bqsteward(&host, &["apply", "--audit-log", &audit_path], &m, true).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("access changed"), "{}", r.stderr);
    let lines: Vec<Value> = std::fs::read_to_string(audit.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["action"], "access_removed", "{lines:?}");
    assert!(
        lines[0]["fields"]["subject"]
            .as_str()
            .unwrap()
            .contains("intruder@evil.com"),
        "{lines:?}"
    );
    assert!(
        !live(&ds)
            .await
            .iter()
            .any(|e| e.principal.to_string().contains("intruder"))
    );
    // `off`: no audit line anywhere.
    let mut access: Vec<Value> = live(&ds).await.iter().map(AclEntry::to_api).collect();
    access.push(json!({"role": "READER", "userByEmail": "again@evil.com"}));
    set_live(&ds, access).await;
    let r = bqsteward(&host, &["apply", "--audit-log", "off"], &m, true).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("access changed"), "{}", r.stderr);
    let r = bqsteward(&host, &["plan", "--output", "json"], &m, true).await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["summary"]["datasetsToChange"], 0);
}

#[tokio::test]
async fn controller_identity_and_last_owner_survive() {
    let e = support::emulators();
    let proxy = Proxy::start(&emulator_host(&e)).await;
    let id = identity_entry(IDENTITY).unwrap();
    let ds = dataset_with(vec![
        id.to_api(),
        json!({"role": "OWNER", "userByEmail": "admin@acme.com"}),
    ])
    .await;
    let readers_only = manifest("readers", &ds, "    - {role: READER, group: analysts@acme.com}\n", "");

    // Without the identity configured, the declared list has no OWNER: refused, nothing written.
    let r = bqsteward(&proxy.url, &["apply"], &readers_only, false).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("without an OWNER"), "{}", r.stdout);
    assert_eq!(proxy.count("PATCH"), 0, "a refused plan writes nothing");

    // With it, bqsteward keeps itself as OWNER and removes the undeclared admin.
    let r = bqsteward(&proxy.url, &["apply"], &readers_only, true).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let now = live(&ds).await;
    assert!(now.contains(&id), "{now:?}");
    assert_eq!(now.len(), 2, "{now:?}");
    for s in proxy.seen().iter().filter(|s| s.method == "PATCH") {
        let body: Value = serde_json::from_str(&s.body).unwrap();
        assert!(
            body["access"].as_array().unwrap().iter().any(|e| e["role"] == "OWNER"),
            "a PATCH without OWNER was sent: {}",
            s.body
        );
    }
}

#[tokio::test]
async fn blast_radius_is_refused_until_approved() {
    let e = support::emulators();
    let host = emulator_host(&e);
    let proxy = Proxy::start(&host).await;
    let mut access = vec![json!({"role": "OWNER", "specialGroup": "projectOwners"})];
    access.extend((0..12).map(|i| json!({"role": "READER", "userByEmail": format!("u{i}@acme.com")})));
    let ds = dataset_with(access.clone()).await;
    let m = manifest("blast", &ds, OWNERS, "");

    let r = bqsteward(&proxy.url, &["apply"], &m, false).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "would remove 12 entries from dataset {PROJECT}.{ds} (limit 10)"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("bqsteward.dev/allow-large-removal: \"true\""),
        "{}",
        r.stdout
    );
    assert_eq!(proxy.count("PATCH"), 0);
    assert_eq!(live(&ds).await.len(), 13);

    let r = bqsteward(&proxy.url, &["apply", "--allow-large-removal"], &m, false).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(live(&ds).await.len(), 1);

    // The annotation approves too.
    set_live(&ds, access).await;
    let annotated = manifest(
        "blast",
        &ds,
        OWNERS,
        "  annotations: {bqsteward.dev/allow-large-removal: \"true\"}\n",
    );
    let r = bqsteward(&host, &["apply"], &annotated, false).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(live(&ds).await.len(), 1);
}

#[tokio::test]
async fn forbidden_principal_and_missing_dataset_write_nothing() {
    let e = support::emulators();
    let proxy = Proxy::start(&emulator_host(&e)).await;
    let ds = dataset_with(vec![json!({"role": "OWNER", "specialGroup": "projectOwners"})]).await;
    let public = manifest(
        "public",
        &ds,
        &format!("{OWNERS}    - {{role: READER, iamMember: allUsers}}\n"),
        "",
    );
    let r = bqsteward(&proxy.url, &["apply"], &public, true).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("\"allUsers\" is a forbidden principal"),
        "{}",
        r.stderr
    );
    assert!(
        proxy.seen().is_empty(),
        "invalid manifests are refused before any API call"
    );

    let missing = manifest("missing", "no_such_dataset_here", OWNERS, "");
    let r = bqsteward(&proxy.url, &["plan"], &missing, true).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("dataset bqsteward-access.no_such_dataset_here does not exist"),
        "{}",
        r.stdout
    );
    assert_eq!(
        proxy.count("PATCH") + proxy.count("POST"),
        0,
        "plan never writes, and never creates datasets"
    );

    // A dataset that cannot be read (no permission) is reported as unreadable — never as missing
    // or "created by this apply" — and the summary and exit code say so.
    let unreadable = manifest("unreadable", &ds, OWNERS, "");
    proxy.inject("GET", &format!("/datasets/{ds}"), Fault::Status(403, "accessDenied"));
    let r = bqsteward(&proxy.url, &["plan"], &unreadable, true).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("cannot read dataset {PROJECT}.{ds}")),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("created by this apply") && !r.stdout.contains("does not exist"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("refused or unreadable: 1 access list"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn converges_through_conflicts_rate_limits_outages_and_resets() {
    let e = support::emulators();
    let proxy = Proxy::start(&emulator_host(&e)).await;
    let ds = dataset_with(vec![
        json!({"role": "OWNER", "specialGroup": "projectOwners"}),
        json!({"role": "READER", "userByEmail": "old@acme.com"}),
    ])
    .await;
    let m = manifest(
        "faults",
        &ds,
        &format!("{OWNERS}    - {{role: READER, group: analysts@acme.com}}\n"),
        "",
    );
    let path = format!("/datasets/{ds}");
    // First write: another writer sneaks in an entry between bqsteward's read and write → 412.
    proxy.inject(
        "PATCH",
        &path,
        Fault::ConcurrentAccessEntry(json!({"role": "READER", "userByEmail": "sneaky@acme.com"})),
    );
    // Then: 429 rateLimitExceeded, 503 backendError, a reset before and one after forwarding.
    proxy.inject("PATCH", &path, Fault::Status(429, "rateLimitExceeded"));
    proxy.inject("PATCH", &path, Fault::Status(503, "backendError"));
    proxy.inject("PATCH", &path, Fault::Reset);
    proxy.inject("PATCH", &path, Fault::ResetAfterForward);
    proxy.inject("GET", &path, Fault::Status(503, "backendError"));

    let r = bqsteward(&proxy.url, &["apply"], &m, false).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(proxy.pending_faults(), 0, "every fault fired");
    let expected: BTreeSet<AclEntry> = [
        AclEntry::from_api(&json!({"role": "OWNER", "specialGroup": "projectOwners"})),
        AclEntry::from_api(&json!({"role": "READER", "groupByEmail": "analysts@acme.com"})),
    ]
    .into();
    assert_eq!(
        live(&ds).await,
        expected,
        "the concurrent writer's entry is removed, nothing else survives"
    );
    let patches: Vec<_> = proxy.seen().into_iter().filter(|s| s.method == "PATCH").collect();
    assert!(patches.iter().any(|s| s.status == 412), "{patches:?}");
    // Every write that reached the emulator was built from the read just before it: a list that
    // still carried `old@` or lacked `sneaky@`'s removal would have met a stale etag (412).
    for s in patches.iter().filter(|s| s.status == 200) {
        assert!(
            !s.body.contains("old@acme.com") && !s.body.contains("sneaky@acme.com"),
            "{}",
            s.body
        );
    }
    let r = bqsteward(&proxy.url, &["plan"], &m, false).await;
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[tokio::test]
async fn samples_plan_and_apply_against_the_emulator() {
    let e = support::emulators();
    let host = emulator_host(&e);
    let bq = BigQueryRest::new(&e).await.unwrap();
    bq.create_dataset("acme-data-eng", "payments__views_clean", "US")
        .await
        .unwrap();
    let run = |args: Vec<&'static str>| {
        let host = host.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bqsteward"))
                .args(args)
                // The DatasetAccess sample; the IngestedTable sample's source bucket is not in the
                // emulator (tests/ingest.rs covers loads).
                .args(["-f", "config/samples/payments-clean-access.yaml"])
                .env("BIGQUERY_EMULATOR_HOST", host)
                .env("BQSTEWARD_IDENTITY", IDENTITY)
                .output()
                .await
                .unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (code, out) = run(vec!["apply"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(vec!["plan"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("acme-data-eng.payments__views_clean: no changes (7 entries)"),
        "{out}"
    );
}

// ---- property test: random live + random declared → apply → live == declared ----------------

fn principal_pool() -> Vec<(Value, &'static str)> {
    // (API form of the principal without role, manifest key)
    let mut v = Vec::new();
    for i in 0..4 {
        v.push((json!({"userByEmail": format!("User{i}@Acme.com")}), "user"));
        v.push((json!({"groupByEmail": format!("g{i}@acme.com")}), "group"));
    }
    v.push((json!({"domain": "acme.com"}), "domain"));
    v.push((json!({"specialGroup": "projectReaders"}), "specialGroup"));
    v.push((json!({"specialGroup": "projectOwners"}), "specialGroup"));
    v.push((
        json!({"iamMember": "principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g"}),
        "iamMember",
    ));
    v
}

const ROLES: [&str; 6] = [
    "READER",
    "WRITER",
    "OWNER",
    "roles/bigquery.dataViewer",
    "roles/bigquery.dataEditor",
    "roles/bigquery.dataOwner",
];

fn with_role(p: &Value, role: &str) -> Value {
    let mut e = p.clone();
    e["role"] = json!(role);
    e
}

fn declared_yaml(entries: &[(usize, usize)]) -> String {
    let pool = principal_pool();
    let mut s = String::new();
    for (pi, ri) in entries {
        let (p, key) = &pool[*pi];
        let value = p.as_object().unwrap().values().next().unwrap().as_str().unwrap();
        s.push_str(&format!("    - {{role: \"{}\", {key}: \"{value}\"}}\n", ROLES[*ri]));
    }
    s
}

#[test]
fn property_apply_makes_live_equal_declared() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = support::emulators();
    let proxy = rt.block_on(Proxy::start(&emulator_host(&e)));
    let bq = rt
        .block_on(BigQueryRest::new(&Endpoints::from_vars(Some(proxy.url.clone()), None)))
        .unwrap();
    let pool_len = principal_pool().len();
    let id = identity_entry(IDENTITY).unwrap();
    let policy = Policy::default();
    let pacer = Pacer::new(1000, Duration::from_secs(10));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 100,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::btree_map(0..pool_len, 0..ROLES.len(), 0..pool_len),
        proptest::collection::btree_map(0..pool_len, 0..ROLES.len(), 0..pool_len),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(live_map, declared_map, deleted)| {
            rt.block_on(async {
                let pool = principal_pool();
                let mut live_api: Vec<Value> = live_map
                    .iter()
                    .map(|(p, r)| with_role(&pool[*p].0, ROLES[*r]))
                    .collect();
                if deleted {
                    live_api.push(json!({"role": "READER", "iamMember": "deleted:user:gone@acme.com?uid=123"}));
                }
                let ds = dataset_with(live_api).await;
                let declared: Vec<(usize, usize)> = declared_map.into_iter().collect();
                let text = manifest("prop", &ds, &declared_yaml(&declared), "");
                let mut report = LoadReport::default();
                manifest::load_str("prop.yaml", &text, &mut report);
                let errors = bqsteward::validate::validate(&report, &policy);
                prop_assert!(errors.is_empty(), "{errors:?}\n{text}");
                let desired = compile(&report.resources, Some(&id));
                prop_assert_eq!(desired.len(), 1);
                let applier = Applier {
                    bq: &bq,
                    policy: &policy,
                    approved: true,
                    backoff: Backoff::default(),
                    pacer: &pacer,
                };
                let outcome = applier.apply(&desired[0]).await;
                prop_assert!(
                    matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged),
                    "{outcome:?}"
                );
                let want: BTreeSet<AclEntry> = desired[0].entries.keys().cloned().collect();
                prop_assert_eq!(live(&ds).await, want);
                // A second plan: no changes, and no writes.
                let writes = proxy.count("PATCH");
                let observed = observe(&bq, &desired[0], &Backoff::default()).await.unwrap();
                let again = plan_dataset(&desired[0], observed.as_ref(), &policy, false);
                prop_assert!(!again.has_changes(), "{again:?}");
                prop_assert_eq!(proxy.count("PATCH"), writes);
                Ok(())
            })
        })
        .unwrap();
}
