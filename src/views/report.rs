//! Text of a view-layer plan: one line per dataset and view, a unified SQL diff for each view
//! whose SQL changes.

use super::plan::{LayoutPlan, ViewChange};
use similar::TextDiff;
use std::fmt::Write;

/// The plan of one IngestedTable's views, as `plan` prints it (indented under the table's own
/// plan), SQL and diffs included.
pub fn plan_text(p: &LayoutPlan) -> String {
    plan_text_with(p, true)
}

/// The plan of the views, with or without the SQL of each view to write (`apply` shows one line
/// per view unless `--show-sql`).
pub fn plan_text_with(p: &LayoutPlan, sql: bool) -> String {
    let mut out = String::new();
    for ds in &p.create_datasets {
        let _ = writeln!(out, "  views:  + dataset {}.{ds} ({})", p.project, p.location);
    }
    if let Some(salt) = &p.create_salt {
        let _ = writeln!(
            out,
            "  views:  + salt table {salt} (random value generated inside BigQuery; keys the hashed columns)"
        );
    }
    for v in &p.views {
        let t = &v.view.def.table;
        let layer = v.view.layer.layer.as_str();
        match &v.change {
            ViewChange::Unchanged => {
                let _ = writeln!(out, "  views:  = {layer} view {t} as declared");
            }
            ViewChange::Create => {
                let _ = writeln!(
                    out,
                    "  views:  + {layer} view {t}{}",
                    if p.waiting_for_table {
                        " (right after the table is created)"
                    } else {
                        ""
                    }
                );
                if sql {
                    out.push_str(&indent(&v.view.def.sql, "            "));
                }
            }
            ViewChange::Relabel => {
                let _ = writeln!(
                    out,
                    "  views:  ~ {layer} view {t}: labels or description edited outside bqsteward; restore"
                );
            }
            ViewChange::Update { live_sql, adopt } => {
                let why = if *adopt {
                    "exists but was not made by bqsteward for this resource; adopt it (annotation) and replace its SQL"
                } else {
                    "SQL edited outside bqsteward; restore"
                };
                let _ = writeln!(out, "  views:  ~ {layer} view {t}: {why}");
                if !sql {
                    continue;
                }
                match live_sql {
                    Some(live) => out.push_str(&indent(
                        &sql_diff(&t.to_string(), live, &v.view.def.sql),
                        "            ",
                    )),
                    None => {
                        let _ = writeln!(
                            out,
                            "            (live SQL not readable; its {} label does not match the declared SQL {})",
                            super::layout::LABEL_SQL,
                            v.view.hash
                        );
                    }
                }
            }
        }
    }
    for t in &p.delete {
        let _ = writeln!(
            out,
            "  views:  - view {t} (made by bqsteward, no longer declared): delete"
        );
    }
    for r in &p.refusals {
        let _ = writeln!(out, "  views:  REFUSED: {r}");
    }
    for n in &p.notes {
        let _ = writeln!(out, "  views:  note: {n}");
    }
    out
}

/// Unified diff live → declared of a view's SQL.
pub fn sql_diff(name: &str, live: &str, declared: &str) -> String {
    let live = with_newline(live);
    let declared = with_newline(declared);
    TextDiff::from_lines(&live, &declared)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name} (live)"), &format!("{name} (declared)"))
        .to_string()
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_diff_shows_both_sides() {
        let d = sql_diff("p.d.v", "SELECT\n  `a`\nFROM x\n", "SELECT\n  `a`,\n  `b`\nFROM x\n");
        assert!(d.contains("--- p.d.v (live)"), "{d}");
        assert!(d.contains("+++ p.d.v (declared)"), "{d}");
        assert!(
            d.contains("-  `a`\n") && d.contains("+  `a`,\n") && d.contains("+  `b`\n"),
            "{d}"
        );
    }
}
