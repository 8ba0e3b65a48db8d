//! `plan` and `apply`: load and validate manifests, compile desired state, observe, plan, and
//! (for apply) write. Both share every step up to the write, so what `plan` shows is what `apply`
//! does.

use crate::access::apply::{Applier, Outcome, category_label, observe};
use crate::access::entry::identity_entry;
use crate::access::{DatasetPlan, DesiredAcl, compile, plan_dataset};
use crate::cli::{LiveArgs, PlanOutput};
use crate::cloud::Endpoints;
use crate::cloud::bigquery::{BigQuery, BigQueryRest};
use crate::cloud::retry::{Backoff, Pacer};
use crate::manifest;
use crate::policy::Policy;
use crate::render;
use std::io::IsTerminal;

/// Exit status: no changes.
pub const EXIT_OK: i32 = 0;
/// Exit status: an error or a refusal.
pub const EXIT_ERROR: i32 = 1;
/// Exit status of `plan`: changes pending.
pub const EXIT_CHANGES: i32 = 2;

/// What `plan` and `apply` share: validated inputs and the desired lists.
struct Prepared {
    policy: Policy,
    desired: Vec<DesiredAcl>,
}

/// Loads and validates; prints every problem and returns `Err(exit code)` when there is one.
fn prepare(args: &LiveArgs) -> Result<Prepared, i32> {
    let policy = match Policy::load(args.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_ERROR);
        }
    };
    let identity = match args.identity.as_deref().map(identity_entry).transpose() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: --identity / BQSTEWARD_IDENTITY: {e}");
            return Err(EXIT_ERROR);
        }
    };
    if identity.is_none() {
        tracing::warn!(
            "no --identity / BQSTEWARD_IDENTITY configured: bqsteward cannot keep its own OWNER entry on datasets it writes"
        );
    }
    let report = manifest::load_paths(&args.paths);
    let errors = crate::validate::validate(&report, &policy);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("{} errors in the manifests: nothing was read or written", errors.len());
        return Err(EXIT_ERROR);
    }
    for l in &report.resources {
        if !matches!(l.resource, manifest::Resource::DatasetAccess(_)) {
            eprintln!(
                "note: {} {}: validated, but not yet planned or applied by this version (DatasetAccess only)",
                l.resource.kind(),
                l.resource.qualified_name()
            );
        }
    }
    Ok(Prepared {
        desired: compile(&report.resources, identity.as_ref()),
        policy,
    })
}

/// [`prepare`], then a BigQuery client for the configured endpoint.
async fn prepare_with_client(args: &LiveArgs) -> Result<(Prepared, BigQueryRest), i32> {
    let prepared = prepare(args)?;
    let bq = BigQueryRest::new(&Endpoints::from_env()).await.map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ERROR
    })?;
    Ok((prepared, bq))
}

/// Observes and plans every dataset. Cloud errors are reported per dataset (as refusals) so one
/// unreadable dataset does not hide the others.
async fn plan_all(bq: &dyn BigQuery, prepared: &Prepared, approved: bool) -> Vec<DatasetPlan> {
    let backoff = Backoff::default();
    let mut plans = Vec::new();
    for desired in &prepared.desired {
        let plan = match observe(bq, desired, &backoff).await {
            Ok(observed) => plan_dataset(desired, observed.as_ref(), &prepared.policy, approved),
            Err(e) => {
                let mut p = plan_dataset(desired, None, &prepared.policy, approved);
                p.refusals = vec![format!("cannot read dataset {}: {e}", desired.key)];
                p
            }
        };
        plans.push(plan);
    }
    plans
}

/// `bqsteward plan`.
pub async fn plan(args: &LiveArgs, output: PlanOutput) -> i32 {
    let (prepared, bq) = match prepare_with_client(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let plans = plan_all(&bq, &prepared, false).await;
    let rendered = match output {
        PlanOutput::Text => render::text(&plans, std::io::stdout().is_terminal()),
        PlanOutput::Markdown => render::markdown(&plans),
        PlanOutput::Json => render::json(&plans),
    };
    print!("{rendered}");
    if plans.iter().any(DatasetPlan::is_refused) {
        EXIT_ERROR
    } else if plans.iter().any(DatasetPlan::has_changes) {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// `bqsteward apply`.
pub async fn apply(args: &LiveArgs, allow_large_removal: bool) -> i32 {
    match prepare_with_client(args).await {
        Ok((prepared, bq)) => apply_with(&bq, &prepared, allow_large_removal).await,
        Err(code) => code,
    }
}

async fn apply_with(bq: &dyn BigQuery, prepared: &Prepared, approved: bool) -> i32 {
    let color = std::io::stdout().is_terminal();
    let plans = plan_all(bq, prepared, approved).await;
    print!("{}", render::text(&plans, color));
    if plans.iter().any(DatasetPlan::is_refused) {
        println!("Refused: nothing was written. Fix or approve the refusals above and run apply again.");
        return EXIT_ERROR;
    }
    let pacer = Pacer::default();
    let applier = Applier {
        bq,
        policy: &prepared.policy,
        approved,
        backoff: Backoff::default(),
        pacer: &pacer,
    };
    let mut failed = 0;
    for (desired, plan) in prepared.desired.iter().zip(&plans) {
        if !plan.has_changes() {
            continue;
        }
        match applier.apply(desired).await {
            Outcome::Unchanged => println!("{}: already as declared", desired.key),
            Outcome::Applied { plan, writes } => println!(
                "{}: applied +{} \u{2212}{} ({} write{})",
                desired.key,
                plan.add.len(),
                plan.remove.len(),
                writes,
                if writes == 1 { "" } else { "s" }
            ),
            Outcome::Refused(plan) => {
                failed += 1;
                for r in &plan.refusals {
                    println!("{}: refused: {r}", desired.key);
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                println!("{}: failed ({}): {e}", desired.key, category_label(&e));
            }
        }
    }
    if failed > 0 {
        println!("{failed} datasets failed; the others were applied");
        EXIT_ERROR
    } else {
        println!("Apply complete.");
        EXIT_OK
    }
}
