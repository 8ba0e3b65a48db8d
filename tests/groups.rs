//! GroupMembership end to end: the real binary and the production Cloud Identity client against
//! the stateful fake of the Groups API in `support/cloud_identity.rs` (no emulator exists; the
//! fake's simplifications are listed in its header). Paging with small pages, mixed-case emails,
//! role changes, direct members only, bqsteward's identity kept, last-owner protection, a 429 in
//! the middle of a run, a 403 on one member with the rest applied, and a property test.

mod support;

use support::cli::{Run, ok};

use bqsteward::cloud::groups::GroupsRest;
use bqsteward::cloud::retry::Backoff;
use bqsteward::crd::group_membership::MemberRole;
use bqsteward::groups::apply::{apply, observe};
use bqsteward::groups::{DesiredGroup, plan_group};
use bqsteward::policy::Policy;
use std::collections::BTreeMap;
use std::time::Duration;
use support::cloud_identity::FakeGroups;

const IDENTITY: &str = "serviceAccount:bqsteward@acme-data-eng.iam.gserviceaccount.com";
const IDENTITY_EMAIL: &str = "bqsteward@acme-data-eng.iam.gserviceaccount.com";

async fn bqsteward(fake: &FakeGroups, cmd: &str, manifest: &str) -> Run {
    let env = [
        ("CLOUD_IDENTITY_EMULATOR_HOST", fake.url.as_str()),
        // No BigQuery call is made for groups; an emulator address keeps credentials out of it.
        ("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9"),
        ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9"),
        ("BQSTEWARD_IDENTITY", IDENTITY),
    ];
    support::cli::bqsteward(&[cmd], manifest, &env).await
}

fn manifest(group: &str, members: &[(String, &str)]) -> String {
    let mut m = format!(
        "apiVersion: bqsteward.dev/v1alpha1\nkind: GroupMembership\nmetadata: {{name: g, namespace: t}}\nspec:\n  group: {group}\n  members:\n"
    );
    for (email, role) in members {
        m.push_str(&format!("    - {{email: {email}, role: {role}}}\n"));
    }
    m
}

fn expected(members: &[(String, &str)]) -> BTreeMap<String, String> {
    members.iter().map(|(e, r)| (e.to_lowercase(), r.to_string())).collect()
}

#[tokio::test]
async fn one_hundred_twenty_members_over_many_pages_converge_exactly() {
    let fake = FakeGroups::start(7).await;
    // Live: 120 users stored in mixed case, one owner, four managers; a nested group (whose own
    // members are not direct members); bqsteward's identity as a manager.
    fake.add_group(
        "nested@acme.com",
        &[("x1@acme.com", &["MEMBER"]), ("x2@acme.com", &["MEMBER"])],
    );
    let live: Vec<(String, Vec<&str>)> = (0..120)
        .map(|i| {
            let roles = match i {
                0 => vec!["MEMBER", "OWNER"],
                1..=4 => vec!["MEMBER", "MANAGER"],
                _ => vec!["MEMBER"],
            };
            (format!("User{i:03}@Acme.com"), roles)
        })
        .chain([
            ("nested@acme.com".to_string(), vec!["MEMBER"]),
            (IDENTITY_EMAIL.to_string(), vec!["MEMBER", "MANAGER"]),
        ])
        .collect();
    let live_refs: Vec<(&str, &[&str])> = live.iter().map(|(e, r)| (e.as_str(), r.as_slice())).collect();
    fake.add_group("Analysts@Acme.com", &live_refs);

    // Declared: users 0..110 in lower case (110..120 go), three role changes, ten new members.
    let mut declared: Vec<(String, &str)> = (0..110)
        .map(|i| {
            let role = match i {
                0 | 10 => "OWNER",
                2..=4 | 11 => "MANAGER",
                _ => "MEMBER",
            };
            (format!("user{i:03}@acme.com"), role)
        })
        .collect();
    declared.extend((0..10).map(|i| (format!("new{i}@acme.com"), "MEMBER")));
    declared.push(("nested@acme.com".into(), "MEMBER"));
    let m = manifest("analysts@acme.com", &declared);

    let lists_before = fake.lists();
    let r = bqsteward(&fake, "plan", &m).await;
    ok(&r, 2);
    assert!(fake.lists() - lists_before >= 18, "122 members in pages of 7");
    assert!(r.stdout.contains("+MEMBER  new0@acme.com"), "{}", r.stdout);
    assert!(r.stdout.contains("-MEMBER  user119@acme.com"), "{}", r.stdout);
    assert!(r.stdout.contains("-MANAGER user001@acme.com"), "{}", r.stdout);
    assert!(r.stdout.contains("+MEMBER  user001@acme.com"), "{}", r.stdout);
    assert!(r.stdout.contains("+OWNER   user010@acme.com"), "{}", r.stdout);
    assert!(r.stdout.contains("(+10 ~3 \u{2212}10; 108 unchanged)"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("kept: {IDENTITY_EMAIL} stays MANAGER")),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("x1@acme.com"),
        "indirect members are not members: {}",
        r.stdout
    );
    assert_eq!(fake.writes(), 0, "plan writes nothing");

    let r = bqsteward(&fake, "apply", &m).await;
    ok(&r, 0);
    assert!(
        r.stdout.contains("group analysts@acme.com: applied 23 changes"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stderr.matches("membership changed").count(),
        23,
        "one audit line per change"
    );
    let mut want = expected(&declared);
    want.insert(IDENTITY_EMAIL.into(), "MANAGER".into());
    assert_eq!(fake.members("analysts@acme.com"), want);
    assert_eq!(
        fake.members("nested@acme.com").len(),
        2,
        "the nested group is untouched"
    );

    let writes = fake.writes();
    let r = bqsteward(&fake, "plan", &m).await;
    ok(&r, 0);
    assert!(r.stdout.contains("no changes (122 members)"), "{}", r.stdout);
    ok(&bqsteward(&fake, "apply", &m).await, 0);
    assert_eq!(fake.writes(), writes, "a converged group gets no writes");
}

#[tokio::test]
async fn the_last_owner_is_never_removed() {
    let fake = FakeGroups::start(50).await;
    fake.add_group(
        "team@acme.com",
        &[("boss@acme.com", &["MEMBER", "OWNER"]), ("alice@acme.com", &["MEMBER"])],
    );
    let m = manifest("team@acme.com", &[("alice@acme.com".into(), "MEMBER")]);
    for cmd in ["plan", "apply"] {
        let r = bqsteward(&fake, cmd, &m).await;
        ok(&r, 1);
        assert!(r.stdout.contains("without an OWNER"), "{}", r.stdout);
    }
    assert_eq!(fake.writes(), 0);
    // Handing ownership over in the same plan is fine: the new owner is added first.
    let m = manifest(
        "team@acme.com",
        &[("alice@acme.com".into(), "OWNER"), ("carol@acme.com".into(), "MEMBER")],
    );
    ok(&bqsteward(&fake, "apply", &m).await, 0);
    assert_eq!(
        fake.members("team@acme.com"),
        expected(&[("alice@acme.com".into(), "OWNER"), ("carol@acme.com".into(), "MEMBER")])
    );
    // A group that does not exist is refused, not created.
    let r = bqsteward(
        &fake,
        "plan",
        &manifest("ghost@acme.com", &[("a@acme.com".into(), "OWNER")]),
    )
    .await;
    ok(&r, 1);
    assert!(r.stdout.contains("group ghost@acme.com was not found"), "{}", r.stdout);
}

#[tokio::test]
async fn a_rate_limit_mid_run_is_retried_and_a_forbidden_member_does_not_stop_the_others() {
    let fake = FakeGroups::start(4).await;
    fake.add_group(
        "ops@acme.com",
        &[
            ("owner@acme.com", &["MEMBER", "OWNER"]),
            ("m1@acme.com", &["MEMBER"]),
            ("m2@acme.com", &["MEMBER"]),
            ("gone@acme.com", &["MEMBER"]),
        ],
    );
    let declared: Vec<(String, &str)> = vec![
        ("owner@acme.com".into(), "OWNER"),
        ("m1@acme.com".into(), "MANAGER"),
        ("m2@acme.com".into(), "MEMBER"),
        ("a@acme.com".into(), "MEMBER"),
        ("blocked@partner.com".into(), "MEMBER"),
        ("c@acme.com".into(), "MEMBER"),
    ];
    fake.forbid("blocked@partner.com");
    // The first write meets a 503, then a 429; the client retries it.
    fake.fail_next("POST", "/memberships", 503);
    fake.fail_next("POST", "/memberships", 429);
    let r = bqsteward(&fake, "apply", &manifest("ops@acme.com", &declared)).await;
    ok(&r, 1);
    assert!(
        r.stdout
            .contains("add blocked@partner.com as MEMBER: FAILED (terminal)")
            && r.stdout.contains("PERMISSION_DENIED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1 of 5 changes did not happen; the others were applied"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("transient error; retrying"), "{}", r.stderr);
    let mut want = expected(&declared);
    want.remove("blocked@partner.com");
    assert_eq!(fake.members("ops@acme.com"), want);
}

// ---- property test: random live + declared → apply → live == declared --------------------------

#[test]
fn property_apply_makes_live_equal_declared() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeGroups::start(3));
    let client = GroupsRest::new(Some(&fake.url)).unwrap().with_page_size(1000);
    let pool: Vec<String> = (0..16).map(|i| format!("p{i}@acme.com")).collect();
    let roles = [MemberRole::Member, MemberRole::Manager, MemberRole::Owner];
    let names = ["MEMBER", "MANAGER", "OWNER"];
    let backoff = Backoff {
        initial: Duration::from_millis(1),
        ..Backoff::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::btree_map(0..16usize, (0..3usize, any::<bool>()), 0..16),
        proptest::collection::btree_map(0..16usize, 0..3usize, 0..16),
        0..16usize,
    );
    let n = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(live, declared, owner)| {
            let group = format!("prop{}@acme.com", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            // Live: random members, random roles, emails in random case.
            let live_members: Vec<(String, Vec<&str>)> = live
                .iter()
                .map(|(p, (r, upper))| {
                    let email = if *upper {
                        pool[*p].to_uppercase()
                    } else {
                        pool[*p].clone()
                    };
                    let mut rs = vec!["MEMBER"];
                    if *r > 0 {
                        rs.push(names[*r]);
                    }
                    (email, rs)
                })
                .collect();
            let refs: Vec<(&str, &[&str])> = live_members.iter().map(|(e, r)| (e.as_str(), r.as_slice())).collect();
            fake.add_group(&group, &refs);
            // Declared: random, with at least one owner (otherwise removing live owners is refused).
            let mut declared: BTreeMap<String, MemberRole> =
                declared.iter().map(|(p, r)| (pool[*p].clone(), roles[*r])).collect();
            declared.insert(pool[owner].clone(), MemberRole::Owner);
            let desired = DesiredGroup {
                resource: "t/prop".into(),
                group: group.clone(),
                members: declared.clone(),
                allow_large_removal: true,
            };
            rt.block_on(async {
                let o = observe(&client, &desired, &backoff).await.unwrap();
                let plan = plan_group(&desired, o.name.as_deref(), &o.members, None, &Policy::default(), true);
                prop_assert!(!plan.is_refused(), "{:?}", plan.refusals);
                let report = apply(&client, &plan, &o.members, &backoff).await;
                prop_assert_eq!(report.failures(), 0, "{:?}", report.outcomes);
                let want: BTreeMap<String, String> = declared
                    .iter()
                    .map(|(e, r)| (e.clone(), names[*r as usize].to_string()))
                    .collect();
                prop_assert_eq!(fake.members(&group), want);
                // Converged: a second plan has nothing to do.
                let o = observe(&client, &desired, &backoff).await.unwrap();
                let again = plan_group(&desired, o.name.as_deref(), &o.members, None, &Policy::default(), false);
                prop_assert!(!again.has_changes(), "{:?}", again.ops);
                Ok(())
            })
        })
        .unwrap();
}
