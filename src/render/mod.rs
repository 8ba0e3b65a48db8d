//! Rendering plans for people and tools: a unified diff per dataset (coloured on a terminal),
//! Markdown for a pull-request comment, and JSON. Pure: returns strings.

pub mod plan;

use crate::access::DatasetPlan;
use similar::TextDiff;
use std::fmt::Write;

/// Totals over a set of dataset plans.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Datasets whose list would change.
    pub datasets_to_change: usize,
    /// Entries to add, over all datasets.
    pub add: usize,
    /// Entries to remove, over all datasets.
    pub remove: usize,
    /// Datasets refused (nothing would be written to them).
    pub refused: usize,
    /// Datasets already as declared.
    pub unchanged: usize,
}

impl Summary {
    /// Totals of `plans`.
    pub fn of(plans: &[DatasetPlan]) -> Summary {
        let mut s = Summary::default();
        for p in plans {
            if p.is_refused() {
                s.refused += 1;
            } else if p.has_changes() {
                s.datasets_to_change += 1;
                s.add += p.add.len();
                s.remove += p.remove.len();
            } else {
                s.unchanged += 1;
            }
        }
        s
    }

    /// E.g. `Access lists: 2 datasets to change: +3 −5 entries` (only about access lists: the
    /// plan's last line sums up every kind).
    pub fn line(&self) -> String {
        let mut line = if self.datasets_to_change == 0 {
            format!(
                "Access lists: no changes ({} dataset{} as declared)",
                self.unchanged,
                if self.unchanged == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "Access lists: {} dataset{} to change: +{} \u{2212}{} entries",
                self.datasets_to_change,
                if self.datasets_to_change == 1 { "" } else { "s" },
                self.add,
                self.remove
            )
        };
        if self.refused > 0 {
            let _ = write!(line, "; {} refused", self.refused);
        }
        line
    }
}

/// The unified diff of one dataset's list, live → declared. A list no resource owns is only added
/// to (and rid of authorizations bqsteward retired): just those lines, not the whole list.
fn diff(plan: &DatasetPlan) -> String {
    if plan.resource.is_none() {
        return plan
            .add
            .iter()
            .map(|e| format!("+{e}\n"))
            .chain(plan.remove.iter().map(|e| format!("-{e}\n")))
            .collect();
    }
    let text = |entries: &[crate::access::AclEntry]| entries.iter().map(|e| format!("{e}\n")).collect::<String>();
    let (before, after) = (text(&plan.before), text(&plan.after));
    TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(2)
        .header(
            &format!("{} (live)", plan.dataset),
            &format!("{} (declared)", plan.dataset),
        )
        .to_string()
}

fn title(plan: &DatasetPlan) -> String {
    let t = match &plan.resource {
        Some(r) => format!("{} {r} \u{2192} {}", plan.resource_kind, plan.dataset),
        None => format!("{} (entries bqsteward requires)", plan.dataset),
    };
    if plan.will_be_created {
        format!("{t} [dataset created by this apply]")
    } else {
        t
    }
}

/// Plain text, coloured with ANSI codes when `color`.
pub fn text(plans: &[DatasetPlan], color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    for p in plans {
        if p.is_refused() {
            let _ = writeln!(out, "{}", paint("1", &title(p)));
            for r in &p.refusals {
                let _ = writeln!(out, "  {} {r}", paint("31;1", "refused:"));
            }
            if p.has_changes() {
                out.push_str(&indent(&diff(p), |l| colorize(l, &paint)));
            }
        } else if p.has_changes() {
            let _ = writeln!(out, "{}", paint("1", &title(p)));
            out.push_str(&indent(&diff(p), |l| colorize(l, &paint)));
            if p.resource.is_none() {
                let _ = writeln!(
                    out,
                    "  ({} other entries left as they are: no DatasetAccess owns this list)",
                    p.unchanged
                );
            } else {
                let _ = writeln!(out, "  ({} unchanged)", p.unchanged);
            }
        } else {
            let _ = writeln!(out, "{}: no changes ({} entries)", title(p), p.unchanged);
        }
        out.push('\n');
    }
    out.push_str(&Summary::of(plans).line());
    out.push('\n');
    out
}

fn colorize(line: &str, paint: &dyn Fn(&str, &str) -> String) -> String {
    if line.starts_with("+++") || line.starts_with("---") {
        paint("1", line)
    } else if line.starts_with('+') {
        paint("32", line)
    } else if line.starts_with('-') {
        paint("31", line)
    } else if line.starts_with("@@") {
        paint("36", line)
    } else {
        line.to_string()
    }
}

fn indent(text: &str, f: impl Fn(&str) -> String) -> String {
    text.lines().map(|l| format!("  {}\n", f(l))).collect()
}

/// Markdown for a pull-request comment.
pub fn markdown(plans: &[DatasetPlan]) -> String {
    let mut out = format!("### {}\n\n", Summary::of(plans).line());
    for p in plans.iter().filter(|p| p.has_changes() || p.is_refused()) {
        let _ = writeln!(out, "#### {}\n", title(p).replace('`', "'"));
        for r in &p.refusals {
            let _ = writeln!(out, "> **Refused:** {r}\n");
        }
        if p.has_changes() {
            let _ = writeln!(out, "```diff\n{}```\n", diff(p).replace("```", "'''"));
        }
    }
    let unchanged: Vec<String> = plans
        .iter()
        .filter(|p| !p.has_changes() && !p.is_refused())
        .map(|p| format!("`{}`", p.dataset))
        .collect();
    if !unchanged.is_empty() {
        let _ = writeln!(out, "Unchanged: {}", unchanged.join(", "));
    }
    out
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    summary: Summary,
    datasets: &'a [DatasetPlan],
}

/// JSON for tools.
pub fn json(plans: &[DatasetPlan]) -> String {
    serde_json::to_string_pretty(&JsonReport {
        summary: Summary::of(plans),
        datasets: plans,
    })
    .expect("plans serialize")
}
