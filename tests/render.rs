//! Plan rendering, as reviewers and tools see it: text (plain and coloured), Markdown and JSON,
//! checked against reviewed snapshot files in `tests/snapshots/`.

use bqsteward::access::{AclEntry, DatasetKey, DatasetPlan, DesiredAcl, Observed, plan_dataset};
use bqsteward::policy::Policy;
use bqsteward::render;
use serde_json::json;

fn desired(dataset: &str, owner: Option<&str>, entries: &[serde_json::Value]) -> DesiredAcl {
    DesiredAcl {
        key: DatasetKey {
            project: "acme-data-eng".into(),
            dataset: dataset.into(),
        },
        owner: owner.map(str::to_string),
        entries: entries
            .iter()
            .map(|e| (AclEntry::from_api(e), bqsteward::access::compile::Reason::Declared))
            .collect(),
        allow_large_removal: false,
        created_by: None,
        owner_kind: "DatasetAccess",
        retire: Default::default(),
    }
}

fn observed(entries: &[serde_json::Value]) -> Observed {
    Observed {
        etag: "\"e\"".into(),
        entries: entries.iter().map(AclEntry::from_api).collect(),
    }
}

fn plans() -> Vec<DatasetPlan> {
    let owners = json!({"role": "OWNER", "specialGroup": "projectOwners"});
    let analysts = json!({"role": "READER", "groupByEmail": "analysts@acme.com"});
    let carol = json!({"role": "roles/bigquery.dataViewer", "userByEmail": "Carol.Smith@acme.com"});
    let intruder = json!({"role": "READER", "userByEmail": "intruder@evil.com"});
    let view =
        json!({"view": {"projectId": "acme-data-eng", "datasetId": "payments__views_full", "tableId": "transactions"}});
    let policy = Policy::default();
    vec![
        plan_dataset(
            &desired(
                "payments__views_clean",
                Some("data-platform/payments-clean"),
                &[owners.clone(), analysts.clone(), carol.clone()],
            ),
            Some(&observed(&[owners.clone(), carol.clone(), intruder.clone()])),
            &policy,
            false,
        ),
        plan_dataset(
            &desired(
                "payments",
                Some("data-platform/payments"),
                &[owners.clone(), view.clone()],
            ),
            Some(&observed(&[owners.clone(), view.clone()])),
            &policy,
            false,
        ),
        plan_dataset(
            &desired("missing", Some("data-platform/missing"), std::slice::from_ref(&owners)),
            None,
            &policy,
            false,
        ),
    ]
}

#[test]
fn text_plan() {
    insta::assert_snapshot!("plan_text", render::text(&plans(), false));
}

#[test]
fn coloured_text_plan_marks_additions_and_removals() {
    let coloured = render::text(&plans(), true);
    assert!(
        coloured.contains("\x1b[32m+READER group:analysts@acme.com\x1b[0m"),
        "{coloured}"
    );
    assert!(
        coloured.contains("\x1b[31m-READER user:intruder@evil.com\x1b[0m"),
        "{coloured}"
    );
}

#[test]
fn markdown_plan() {
    insta::assert_snapshot!("plan_markdown", render::markdown(&plans()));
}

#[test]
fn json_plan() {
    insta::assert_snapshot!("plan_json", render::json(&plans()));
}

#[test]
fn summary_line() {
    let s = render::Summary::of(&plans());
    assert_eq!(
        s.line(),
        "Access lists: 1 dataset to change: +1 \u{2212}1 entries; 1 refused"
    );
}

/// A list no resource owns is only added to: its plan shows the additions, not the whole list.
#[test]
fn a_list_nobody_owns_shows_only_what_is_added() {
    let owners = json!({"role": "OWNER", "specialGroup": "projectOwners"});
    let someone = json!({"role": "READER", "userByEmail": "someone@acme.com"});
    let view = json!({"view": {"projectId": "acme-data-eng", "datasetId": "payments__views_clean", "tableId": "t"}});
    let p = plan_dataset(
        &desired("payments__views_full", None, &[view]),
        Some(&observed(&[owners, someone])),
        &Policy::default(),
        false,
    );
    let text = render::text(&[p], false);
    assert!(
        text.contains("  +AUTHORIZED view:acme-data-eng.payments__views_clean.t"),
        "{text}"
    );
    assert!(!text.contains("someone@acme.com") && !text.contains("(live)"), "{text}");
    assert!(
        text.contains("(2 other entries left as they are: no DatasetAccess owns this list)"),
        "{text}"
    );
}
