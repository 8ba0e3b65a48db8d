//! `plan` and `apply`: the command-line front end of the engine. Load and validate the manifests,
//! resolve the [`World`](crate::engine::World), make the clients, run the engine — read-only for
//! `plan`, everything for `apply` — print what happened and choose the exit status. The phases
//! themselves live in [`crate::engine`], shared with the controller. May touch: stdout/stderr, the
//! environment (endpoints, credentials); the cloud only through the engine.

mod check;
mod printer;
mod status;

pub use check::check;

pub use status::status;

use crate::cli::{LiveArgs, PlanOutput};
use crate::cloud::Endpoints;
use crate::cloud::bigquery::BigQueryRest;
use crate::cloud::groups::{Groups, GroupsRest};
use crate::cloud::iam::{IamRest, ProjectIam};
use crate::cloud::retry::{Backoff, Pacer};
use crate::cloud::storage::GcsRest;
use crate::engine::{self, Clients, Scope, World};
use crate::ingest::reload::Reload;
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

/// Loads, validates and resolves; prints every problem and returns `Err(exit code)` when there is
/// one.
fn prepare(args: &LiveArgs) -> Result<World, i32> {
    let policy = Policy::load(args.policy.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ERROR
    })?;
    if args.identity.is_none() {
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
        eprintln!(
            "{} in the manifests: nothing was read or written",
            crate::cli::plural(errors.len(), "error")
        );
        return Err(EXIT_ERROR);
    }
    let reload = args.reload.as_deref().map(Reload::parse).transpose().map_err(|e| {
        eprintln!("error: --reload: {e}");
        EXIT_ERROR
    })?;
    let (mut world, problems) = World::build(report.resources, policy, args.identity.as_deref(), reload.as_ref());
    for t in &mut world.tables {
        t.listing.force_full = args.full_listing;
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {}", p.message);
        }
        return Err(EXIT_ERROR);
    }
    Ok(world)
}

/// [`prepare`], then the clients.
async fn setup(args: &LiveArgs) -> Result<(World, Owned), i32> {
    let world = prepare(args)?;
    let owned = Owned::new(&world, args).await?;
    Ok((world, owned))
}

/// The production clients, for the configured endpoints.
struct Owned {
    bq: BigQueryRest,
    gcs: GcsRest,
    groups: Option<GroupsRest>,
    iam: Option<IamRest>,
    pacer: Pacer,
    sources: crate::dbsource::Sources,
}

impl Owned {
    /// Clients for `w`: Cloud Identity only when there are groups, Resource Manager only when there
    /// are ConsumerProjects.
    async fn new(w: &World, args: &LiveArgs) -> Result<Owned, i32> {
        let endpoints = Endpoints::from_env();
        let fail = |e: crate::cloud::CloudError| {
            eprintln!("error: {e}");
            EXIT_ERROR
        };
        // Credentials first: one clear error before anything is read.
        let needs_adc = !endpoints.bigquery_emulated
            || (!w.tables.is_empty() && !endpoints.storage_emulated)
            || (!w.groups.is_empty() && crate::cloud::emulator_host("CLOUD_IDENTITY_EMULATOR_HOST").is_none())
            || (!w.consumers.is_empty() && crate::cloud::emulator_host("RESOURCE_MANAGER_EMULATOR_HOST").is_none());
        if needs_adc {
            crate::cloud::Auth::application_default()
                .map_err(fail)?
                .check()
                .await
                .map_err(fail)?;
        }
        Ok(Owned {
            bq: BigQueryRest::new(&endpoints).await.map_err(fail)?,
            gcs: GcsRest::new(&endpoints).map_err(fail)?,
            groups: if w.groups.is_empty() {
                None
            } else {
                Some(GroupsRest::from_env().map_err(fail)?)
            },
            iam: if w.consumers.is_empty() {
                None
            } else {
                Some(IamRest::from_env().map_err(fail)?)
            },
            pacer: Pacer::default(),
            sources: crate::dbsource::Sources::new(
                match &args.secrets_dir {
                    Some(dir) => std::sync::Arc::new(crate::dbsource::secrets::DirSecrets { dir: dir.clone() }),
                    None => std::sync::Arc::new(crate::dbsource::secrets::NoSecrets),
                },
                args.db_connections,
            ),
        })
    }

    fn clients(&self) -> Clients<'_> {
        self.clients_with(&self.bq)
    }

    /// The clients with `bq` in place of the plain BigQuery client (a run's [`DatasetMemo`]).
    ///
    /// [`DatasetMemo`]: crate::cloud::memo::DatasetMemo
    fn clients_with<'a>(&'a self, bq: &'a dyn crate::cloud::bigquery::BigQuery) -> Clients<'a> {
        Clients {
            bq,
            gcs: &self.gcs,
            groups: self.groups.as_ref().map(|g| g as &dyn Groups),
            iam: self.iam.as_ref().map(|i| i as &dyn ProjectIam),
            pacer: &self.pacer,
            backoff: Backoff::default(),
            sources: &self.sources,
        }
    }
}

/// Opens the audit recorder `args` configure and the run of `world` its events belong to
/// (before anything is changed: an unusable spool is an error, nothing applied).
fn audit_run(args: &LiveArgs, world: &World) -> Result<std::sync::Arc<crate::audit::RunContext>, i32> {
    let rec = crate::audit::open(&args.audit, args.identity.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ERROR
    })?;
    let run = crate::audit::RunContext::new(rec, args.audit.revision.as_deref().unwrap_or("")).for_world(world);
    Ok(std::sync::Arc::new(run))
}

/// Runs `f` as the audited `run`, then writes the audit rows (this run's and any an earlier run
/// left) to BigQuery. Rows BigQuery does not take stay spooled, with a warning.
async fn audited<F: std::future::Future>(
    run: std::sync::Arc<crate::audit::RunContext>,
    args: &LiveArgs,
    bq: &dyn crate::cloud::bigquery::BigQuery,
    f: F,
) -> F::Output {
    let rec = run.recorder.clone();
    let out = crate::audit::within(run, f).await;
    let flushed = rec.flush(bq).await;
    if !flushed.errors.is_empty() {
        eprintln!(
            "warning: {} audit {} not written to BigQuery ({}); kept in {} and written by the next run",
            flushed.pending,
            if flushed.pending == 1 { "row" } else { "rows" },
            flushed.errors.join("; "),
            args.audit
                .audit_spool
                .clone()
                .unwrap_or_else(crate::audit::default_spool_dir)
                .display()
        );
    }
    out
}

/// `bqsteward plan`: every kind observed and planned, nothing written. Exit 0 = no changes,
/// 2 = changes pending, 1 = an error or a refusal.
pub async fn plan(args: &LiveArgs, output: PlanOutput) -> i32 {
    let (mut world, owned) = match setup(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let memo = crate::cloud::memo::DatasetMemo::new(&owned.bq);
    let set = engine::plan(&mut world, &owned.clients_with(&memo)).await;
    let rendered = match output {
        PlanOutput::Text => render::plan::text(&world, &set, std::io::stdout().is_terminal()),
        PlanOutput::Markdown => render::plan::markdown(&world, &set),
        PlanOutput::Json => format!("{}\n", render::plan::json(&world, &set)),
    };
    print!("{rendered}");
    if set.failed() {
        EXIT_ERROR
    } else if set.changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// `bqsteward apply`: tables and their view layers first (they create the datasets that access
/// lists and authorizations refer to), consumer views, access lists, consumer IAM, groups.
pub async fn apply(args: &LiveArgs, allow_large_removal: bool, show_sql: bool) -> i32 {
    let (mut world, owned) = match setup(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run = match audit_run(args, &world) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut out = printer::Printer::new(std::io::stdout().is_terminal(), show_sql);
    let memo = crate::cloud::memo::DatasetMemo::new(&owned.bq);
    let clients = owned.clients_with(&memo);
    let summary = audited(
        run,
        args,
        &owned.bq,
        engine::apply(&mut world, &clients, &Scope::All, allow_large_removal, &mut out),
    )
    .await;
    if summary.failed { EXIT_ERROR } else { EXIT_OK }
}
