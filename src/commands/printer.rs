//! What `apply` prints, phase by phase, as the engine reports it: each plan before it is applied,
//! then one line per change made or failure.

use crate::access::apply::{Outcome, category_label};
use crate::access::{DatasetPlan, DesiredAcl};
use crate::cloud::CloudError;
use crate::consumer::iam::{IamPlan, JOB_USER};
use crate::consumer::layout::ConsumerTarget;
use crate::consumer::reconcile::ConsumerPlan;
use crate::engine::Reporter;
use crate::engine::tables::{TableApplied, TableState};
use crate::groups::{self, DesiredGroup, GroupPlan};
use crate::ingest::exec::Target;
use crate::ingest::report as ingest_report;

/// Prints to stdout.
pub struct Printer {
    color: bool,
    show_sql: bool,
    lists_failed: usize,
}

impl Printer {
    /// A printer; `color` for a terminal; `show_sql` prints the SQL of every view written (`plan`
    /// shows it anyway).
    pub fn new(color: bool, show_sql: bool) -> Printer {
        Printer {
            color,
            show_sql,
            lists_failed: 0,
        }
    }
}

impl Reporter for Printer {
    fn table_planned(&mut self, t: &Target, state: &Result<TableState, crate::engine::PlanFailure>) {
        match state {
            Ok(s) => print!("{}", crate::render::plan::table_text(t, s, self.show_sql)),
            Err(e) => println!("error: {e}"),
        }
    }

    fn table_applied(&mut self, t: &Target, state: &TableState, applied: &TableApplied) {
        match &applied.pulled {
            None => {}
            Some(Ok(r)) => {
                for (set, m) in &r.pulls {
                    println!(
                        "IngestedTable {}: pulled {set}: {} rows in {} files ({}){}",
                        t.name,
                        m.rows,
                        m.files,
                        ingest_report::bytes(m.bytes),
                        if m.rejected > 0 {
                            format!(
                                "; {} rows not loaded: values BigQuery cannot hold (see {}{set}/_REJECTED.jsonl)",
                                m.rejected,
                                t.spec.source.landing.as_deref().unwrap_or("")
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Some(Err(e)) => println!("IngestedTable {}: pull failed: {e}", t.name),
        }
        match &applied.loads {
            None => println!("{}: nothing to load", t.table),
            Some(Ok(r)) => print!("{}", ingest_report::apply_text(t, r)),
            Some(Err(e)) => println!(
                "{}: failed: {e} (everything done so far is recorded; the next run resumes)",
                t.table
            ),
        }
        let _ = state;
        match &applied.views {
            Err(e) => println!(
                "IngestedTable {}: views: cannot read {} or its views: {e}",
                t.name, t.table
            ),
            Ok(p) if p.is_refused() => {
                for r in &p.refusals {
                    println!("IngestedTable {}: views refused: {r}", t.name);
                }
            }
            Ok(p) => {
                match &applied.views_done {
                    Ok(done) => {
                        for d in done {
                            println!("IngestedTable {}: {d}", t.name);
                        }
                    }
                    Err(e) => println!("IngestedTable {}: views failed: {e}", t.name),
                }
                if p.waiting_for_table && !p.views.is_empty() {
                    println!(
                        "IngestedTable {}: views wait for {} (created by the first load)",
                        t.name, t.table
                    );
                }
            }
        }
    }

    fn consumer_planned(&mut self, t: &ConsumerTarget, plan: &Result<ConsumerPlan, crate::engine::PlanFailure>) {
        match plan {
            Ok(p) => {
                print!("{}", crate::consumer::reconcile::plan_text_with(t, p, self.show_sql));
                if p.views.is_refused() {
                    println!("ConsumerProject {}: refused: nothing was written", t.resource);
                }
            }
            Err(e) => println!("ConsumerProject {}: {e}", t.resource),
        }
    }

    fn consumer_applied(&mut self, t: &ConsumerTarget, done: &Result<Vec<String>, CloudError>) {
        match done {
            Ok(done) => {
                for d in done {
                    println!("ConsumerProject {}: {d}", t.resource);
                }
            }
            Err(e) => println!("ConsumerProject {}: views failed: {e}", t.resource),
        }
    }

    fn note(&mut self, note: &str) {
        println!("{note}");
    }

    fn views_deleted(&mut self, resource: &str, done: &Result<Vec<String>, CloudError>) {
        match done {
            Ok(done) => {
                for d in done {
                    println!("{resource}: {d}");
                }
            }
            Err(e) => println!("{resource}: deleting views no longer declared failed: {e}"),
        }
    }

    fn lists_planned(&mut self, plans: &[DatasetPlan]) {
        print!("{}", crate::render::text(plans, self.color));
        if plans.iter().any(DatasetPlan::is_refused) {
            println!("Refused: nothing was written. Fix or approve the refusals above and run apply again.");
        }
    }

    fn list_applied(&mut self, desired: &DesiredAcl, outcome: &Outcome) {
        match outcome {
            Outcome::Unchanged => println!("{}: already as declared", desired.key),
            Outcome::Applied { plan, writes } => println!(
                "{}: applied +{} \u{2212}{} ({} write{})",
                desired.key,
                plan.add.len(),
                plan.remove.len(),
                writes,
                if *writes == 1 { "" } else { "s" }
            ),
            Outcome::Refused(plan) => {
                self.lists_failed += 1;
                for r in &plan.refusals {
                    println!("{}: refused: {r}", desired.key);
                }
            }
            Outcome::Failed(e) => {
                self.lists_failed += 1;
                println!("{}: failed ({}): {e}", desired.key, category_label(e));
            }
        }
    }

    fn lists_done(&mut self) {
        if self.lists_failed > 0 {
            println!("{} datasets failed; the others were applied", self.lists_failed);
        } else {
            println!("Apply complete.");
        }
    }

    fn iam_applied(&mut self, t: &ConsumerTarget, result: &Result<IamPlan, CloudError>) {
        match result {
            Ok(p) if p.has_changes() => println!(
                "ConsumerProject {}: {JOB_USER} on project {}: +{} \u{2212}{}",
                t.resource,
                p.project,
                p.add.len(),
                p.remove.len()
            ),
            Ok(_) => {}
            Err(e) => println!(
                "ConsumerProject {}: IAM failed ({}): {e}",
                t.resource,
                category_label(e)
            ),
        }
    }

    fn group_planned(&mut self, _d: &DesiredGroup, plan: &GroupPlan) {
        print!("{}", groups::plan_text(plan));
        if plan.is_refused() {
            println!("group {}: refused: nothing was written", plan.group);
        }
    }

    fn group_applied(&mut self, plan: &GroupPlan, report: &groups::apply::GroupReport) {
        for (op, outcome) in &report.outcomes {
            let what = match op {
                groups::Op::Add { email, role } => format!("add {email} as {}", groups::plan::role_str(*role)),
                groups::Op::Change { email, from, to, .. } => format!(
                    "change {email} {} \u{2192} {}",
                    groups::plan::role_str(*from),
                    groups::plan::role_str(*to)
                ),
                groups::Op::Remove { email, .. } => format!("remove {email}"),
            };
            match outcome {
                groups::apply::OpOutcome::Done => println!("group {}: {what}: done", plan.group),
                groups::apply::OpOutcome::Failed(e) => {
                    println!("group {}: {what}: FAILED ({}): {e}", plan.group, category_label(e))
                }
                groups::apply::OpOutcome::Skipped(why) => println!("group {}: {what}: SKIPPED: {why}", plan.group),
            }
        }
        let failed = report.failures();
        if failed > 0 {
            println!(
                "group {}: {failed} of {} changes did not happen; the others were applied",
                plan.group,
                report.outcomes.len()
            );
        } else {
            println!("group {}: applied {} changes", plan.group, report.outcomes.len());
        }
    }
}
