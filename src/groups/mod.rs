//! GroupMembership: exact direct membership of Google groups through the Cloud Identity Groups
//! API. observe ([`apply::observe`]: lookup + every page of direct memberships) → plan
//! ([`plan::plan_group`], pure: case-insensitive emails, exact role sets, identity kept, never an
//! owner-less group, blast-radius limit) → apply ([`apply::apply`]: every change attempted, all
//! outcomes reported).

pub mod apply;
pub mod plan;

pub use plan::{DesiredGroup, GroupPlan, LiveMember, Op, plan_group};

use similar::TextDiff;
use std::fmt::Write;

/// Text of a group plan, in the same shape as a dataset's: a unified diff live → declared.
pub fn plan_text(p: &GroupPlan) -> String {
    let mut out = String::new();
    let title = format!("GroupMembership {} \u{2192} group {}", p.resource, p.group);
    if p.is_refused() {
        let _ = writeln!(out, "{title}");
        for r in &p.refusals {
            let _ = writeln!(out, "  refused: {r}");
        }
    }
    if p.has_changes() {
        if !p.is_refused() {
            let _ = writeln!(out, "{title}");
        }
        let before: String = p.before.iter().map(|l| format!("{l}\n")).collect();
        let after: String = p.after.iter().map(|l| format!("{l}\n")).collect();
        let diff = TextDiff::from_lines(&before, &after)
            .unified_diff()
            .context_radius(2)
            .header(&format!("{} (live)", p.group), &format!("{} (declared)", p.group))
            .to_string();
        for l in diff.lines() {
            let _ = writeln!(out, "  {l}");
        }
        let (a, c, r) = p.counts();
        let _ = writeln!(out, "  (+{a} ~{c} \u{2212}{r}; {} unchanged)", p.unchanged);
    } else if !p.is_refused() {
        let _ = writeln!(out, "{title}: no changes ({} members)", p.unchanged + p.kept.len());
    }
    for k in &p.kept {
        let _ = writeln!(out, "  kept: {k}");
    }
    out
}
