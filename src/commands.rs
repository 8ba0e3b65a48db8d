//! `plan` and `apply`: load and validate manifests, compile desired state, observe, plan, and
//! (for apply) write. Both share every step up to the write, so what `plan` shows is what `apply`
//! does.

use crate::access::AclEntry;
use crate::access::apply::{Applier, Outcome, category_label, drop_missing_views, observe};
use crate::access::entry::{identity_email, identity_entry};
use crate::access::{DatasetPlan, DesiredAcl, compile, plan_dataset};
use crate::cli::{LiveArgs, PlanOutput};
use crate::cloud::Endpoints;
use crate::cloud::bigquery::{BigQuery, BigQueryRest};
use crate::cloud::bqtypes::TableInfo;
use crate::cloud::groups::{Groups, GroupsRest};
use crate::cloud::iam::{IamRest, ProjectIam};
use crate::cloud::retry::{Backoff, Pacer};
use crate::cloud::storage::{GcsRest, Storage};
use crate::consumer::{self, layout::ConsumerTarget, reconcile::ConsumerPlan};
use crate::groups::{self, DesiredGroup, GroupPlan, plan_group};
use crate::ingest::exec::{Executor, Observed, TablePlan, Target, observe as observe_table, plan_table};
use crate::ingest::reload::{ANNOTATION_RELOAD, Reload};
use crate::ingest::report as ingest_report;
use crate::manifest;
use crate::policy::Policy;
use crate::render;
use crate::views::{self, LayoutPlan};
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
    tables: Vec<Target>,
    groups: Vec<DesiredGroup>,
    consumers: Vec<ConsumerTarget>,
    /// bqsteward's own email, lowercased (from `--identity`).
    identity_email: Option<String>,
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
    let cli_reload = match args.reload.as_deref().map(Reload::parse).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --reload: {e}");
            return Err(EXIT_ERROR);
        }
    };
    let mut tables = Vec::new();
    let mut groups = Vec::new();
    let mut consumers = Vec::new();
    for l in &report.resources {
        match &l.resource {
            manifest::Resource::ConsumerProject(cp) => {
                let name = l.resource.qualified_name();
                match ConsumerTarget::resolve(&name, l.resource.namespace(), &cp.spec, &report.resources) {
                    Ok(t) => consumers.push(t.adopting(&l.resource)),
                    Err(e) => {
                        eprintln!("error: {}: ConsumerProject {name}: {e}", l.origin);
                        return Err(EXIT_ERROR);
                    }
                }
            }
            manifest::Resource::DatasetAccess(_) => {}
            manifest::Resource::GroupMembership(gm) => groups.push(DesiredGroup::new(
                &l.resource.qualified_name(),
                &gm.spec,
                l.resource.annotation(crate::crd::ANNOTATION_ALLOW_LARGE_REMOVAL),
            )),
            manifest::Resource::IngestedTable(it) => {
                let name = l.resource.qualified_name();
                let reload = match (&cli_reload, l.resource.annotation(ANNOTATION_RELOAD)) {
                    (Some(r), _) => Some(r.clone()),
                    (None, Some(text)) => match Reload::parse(text) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            eprintln!(
                                "error: {}: {name}: metadata.annotations[{ANNOTATION_RELOAD}]: {e}",
                                l.origin
                            );
                            return Err(EXIT_ERROR);
                        }
                    },
                    (None, None) => None,
                };
                match Target::new(&name, &it.spec, reload) {
                    Ok(t) => tables.push(t.adopting(&l.resource)),
                    Err(e) => {
                        eprintln!("error: {}: IngestedTable {name}: {e}", l.origin);
                        return Err(EXIT_ERROR);
                    }
                }
            }
        }
    }
    let mut desired = compile(&report.resources, identity.as_ref());
    crate::access::compile::add_tenant_identities(&mut desired, &policy);
    Ok(Prepared {
        desired,
        policy,
        tables,
        groups,
        consumers,
        identity_email: args.identity.as_deref().and_then(identity_email),
    })
}

/// [`prepare`], then a BigQuery client for the configured endpoint.
async fn prepare_with_client(args: &LiveArgs) -> Result<(Prepared, Clients), i32> {
    let prepared = prepare(args)?;
    let endpoints = Endpoints::from_env();
    let fail = |e: crate::cloud::CloudError| {
        eprintln!("error: {e}");
        EXIT_ERROR
    };
    let bq = BigQueryRest::new(&endpoints).await.map_err(fail)?;
    let gcs = GcsRest::new(&endpoints).map_err(fail)?;
    // Cloud Identity credentials are only needed when there are groups to manage.
    let groups = if prepared.groups.is_empty() {
        None
    } else {
        Some(GroupsRest::from_env().map_err(fail)?)
    };
    // Resource Manager likewise, for ConsumerProjects.
    let iam = if prepared.consumers.is_empty() {
        None
    } else {
        Some(IamRest::from_env().map_err(fail)?)
    };
    Ok((prepared, Clients { bq, gcs, groups, iam }))
}

/// The production clients.
struct Clients {
    bq: BigQueryRest,
    gcs: GcsRest,
    groups: Option<GroupsRest>,
    iam: Option<IamRest>,
}

/// One IngestedTable, observed and planned: loads and view layers.
struct TableState {
    observed: Observed,
    plan: TablePlan,
    views: LayoutPlan,
}

/// Observes and plans the view layers of `t` given its raw table as observed.
async fn plan_views(bq: &dyn BigQuery, t: &Target, table: Option<&TableInfo>) -> Result<LayoutPlan, String> {
    views::apply::plan_for_table(bq, t, table)
        .await
        .map_err(|e| format!("IngestedTable {}: cannot read its view layers: {e}", t.name))
}

/// Observes and plans every IngestedTable; a table that cannot be read is reported and skipped.
async fn plan_tables(bq: &dyn BigQuery, gcs: &dyn Storage, prepared: &Prepared) -> Vec<Result<TableState, String>> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for t in &prepared.tables {
        let state = match observe_table(bq, gcs, t).await {
            Ok(o) => {
                let p = plan_table(t, &o, now);
                plan_views(bq, t, o.table.as_ref()).await.map(|views| TableState {
                    observed: o,
                    plan: p,
                    views,
                })
            }
            Err(e) => Err(format!(
                "IngestedTable {}: cannot read {} or its source: {e}",
                t.name, t.table
            )),
        };
        out.push(state);
    }
    out
}

fn print_table_plans(prepared: &Prepared, plans: &[Result<TableState, String>]) {
    for (t, p) in prepared.tables.iter().zip(plans) {
        match p {
            Ok(s) => {
                print!("{}", ingest_report::plan_text(t, &s.plan, &s.observed));
                print!("{}", views::report::plan_text(&s.views));
            }
            Err(e) => println!("error: {e}"),
        }
    }
}

/// Adds entries of views bqsteward deleted to the access lists it plans: to the dataset named
/// (creating a list that only retires), or — when the dataset is not known — to every list.
fn retire(prepared: &mut Prepared, entries: impl Iterator<Item = (Option<crate::access::DatasetKey>, AclEntry)>) {
    for (key, entry) in entries {
        match key {
            Some(key) => {
                if !prepared.desired.iter().any(|d| d.key == key) {
                    prepared.desired.push(DesiredAcl::new(key.clone()));
                }
                for d in prepared.desired.iter_mut().filter(|d| d.key == key) {
                    d.retire.insert(entry.clone());
                }
            }
            None => {
                for d in &mut prepared.desired {
                    d.retire.insert(entry.clone());
                }
            }
        }
    }
}

/// Observes and plans every ConsumerProject.
async fn plan_consumers(
    bq: &dyn BigQuery,
    iam: Option<&dyn ProjectIam>,
    prepared: &Prepared,
) -> Vec<Result<ConsumerPlan, String>> {
    let backoff = Backoff::default();
    let mut out = Vec::new();
    for t in &prepared.consumers {
        out.push(
            consumer::reconcile::plan(bq, iam, t, &backoff)
                .await
                .map_err(|e| format!("cannot read its dataset, views or sources: {e}")),
        );
    }
    out
}

/// Plans each ConsumerProject again (after the tables and their views exist) and writes its
/// dataset and views; a refused one writes nothing. Returns the exit status, the authorizations
/// to retire and the consumers that were applied (their IAM follows the access lists).
async fn apply_consumer_views(
    bq: &dyn BigQuery,
    iam: Option<&dyn ProjectIam>,
    prepared: &Prepared,
) -> (i32, Vec<AclEntry>, Vec<ConsumerTarget>) {
    let mut code = EXIT_OK;
    let mut retired = Vec::new();
    let mut applied = Vec::new();
    for (t, p) in prepared.consumers.iter().zip(plan_consumers(bq, iam, prepared).await) {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                println!("ConsumerProject {}: {e}", t.resource);
                code = EXIT_ERROR;
                continue;
            }
        };
        print!("{}", consumer::reconcile::plan_text(t, &p));
        if p.views.is_refused() {
            println!("ConsumerProject {}: refused: nothing was written", t.resource);
            code = EXIT_ERROR;
            continue;
        }
        match consumer::reconcile::apply_views(bq, &p).await {
            Ok(done) => {
                for d in done {
                    println!("ConsumerProject {}: {d}", t.resource);
                }
                retired.extend(p.retire.iter().cloned());
                applied.push(t.clone());
            }
            Err(e) => {
                println!("ConsumerProject {}: views failed: {e}", t.resource);
                code = EXIT_ERROR;
            }
        }
    }
    (code, retired, applied)
}

/// Writes the jobUser binding of each applied ConsumerProject.
async fn apply_consumer_iam(iam: &dyn ProjectIam, applied: &[ConsumerTarget]) -> i32 {
    let backoff = Backoff::default();
    let mut code = EXIT_OK;
    for t in applied {
        match consumer::reconcile::apply_iam(iam, t, &backoff).await {
            Ok(p) if p.has_changes() => println!(
                "ConsumerProject {}: {} on project {}: +{} \u{2212}{}",
                t.resource,
                consumer::iam::JOB_USER,
                p.project,
                p.add.len(),
                p.remove.len()
            ),
            Ok(_) => {}
            Err(e) => {
                println!(
                    "ConsumerProject {}: IAM failed ({}): {e}",
                    t.resource,
                    category_label(&e)
                );
                code = EXIT_ERROR;
            }
        }
    }
    code
}

/// Observes and plans every group; a group that cannot be read is reported as refused.
async fn plan_groups(
    client: &dyn Groups,
    prepared: &Prepared,
    approved: bool,
) -> Vec<(GroupPlan, Vec<groups::LiveMember>)> {
    let backoff = Backoff::default();
    let mut out = Vec::new();
    for d in &prepared.groups {
        let (plan, live) = match groups::apply::observe(client, d, &backoff).await {
            Ok(o) => (
                plan_group(
                    d,
                    o.name.as_deref(),
                    &o.members,
                    prepared.identity_email.as_deref(),
                    &prepared.policy,
                    approved,
                ),
                o.members,
            ),
            Err(e) => {
                let mut p = plan_group(d, None, &[], None, &prepared.policy, approved);
                p.refusals = vec![format!("cannot read group {}: {e}", d.group)];
                (p, Vec::new())
            }
        };
        out.push((plan, live));
    }
    out
}

/// Applies every group: each change attempted, every outcome printed; one group's failure does
/// not stop the others.
async fn apply_groups(client: &dyn Groups, prepared: &Prepared, approved: bool) -> i32 {
    let backoff = Backoff::default();
    let mut code = EXIT_OK;
    for (plan, live) in plan_groups(client, prepared, approved).await {
        print!("{}", groups::plan_text(&plan));
        if plan.is_refused() {
            println!("group {}: refused: nothing was written", plan.group);
            code = EXIT_ERROR;
            continue;
        }
        if !plan.has_changes() {
            continue;
        }
        let report = groups::apply::apply(client, &plan, &live, &backoff).await;
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
            code = EXIT_ERROR;
        } else {
            println!("group {}: applied {} changes", plan.group, report.outcomes.len());
        }
    }
    code
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
    let (mut prepared, clients) = match prepare_with_client(args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let bq = clients.bq;
    let consumer_plans = plan_consumers(&bq, clients.iam.as_ref().map(|c| c as &dyn ProjectIam), &prepared).await;
    retire(
        &mut prepared,
        consumer_plans
            .iter()
            .flatten()
            .flat_map(|p| p.retire.iter().map(|e| (None, e.clone()))),
    );
    let table_plans = plan_tables(&bq, &clients.gcs, &prepared).await;
    let retired_views: Vec<_> = prepared
        .tables
        .iter()
        .zip(&table_plans)
        .filter_map(|(t, p)| p.as_ref().ok().map(|s| retired_entries(t, &s.views)))
        .flatten()
        .collect();
    retire(&mut prepared, retired_views.into_iter());
    let plans = plan_all(&bq, &prepared, false).await;
    let rendered = match output {
        PlanOutput::Text => render::text(&plans, std::io::stdout().is_terminal()),
        PlanOutput::Markdown => render::markdown(&plans),
        PlanOutput::Json => render::json(&plans),
    };
    if output != PlanOutput::Json
        && (!prepared.desired.is_empty() || (prepared.tables.is_empty() && prepared.groups.is_empty()))
    {
        print!("{rendered}");
    }
    if output != PlanOutput::Json {
        print_table_plans(&prepared, &table_plans);
    }
    if output != PlanOutput::Json {
        for (t, p) in prepared.consumers.iter().zip(&consumer_plans) {
            match p {
                Ok(p) => print!("{}", consumer::reconcile::plan_text(t, p)),
                Err(e) => println!("error: ConsumerProject {}: {e}", t.resource),
            }
        }
    }
    let consumer_error = consumer_plans
        .iter()
        .any(|p| p.as_ref().map_or(true, |p| p.views.is_refused()));
    let consumer_changes = consumer_plans.iter().any(|p| p.as_ref().is_ok_and(|p| p.has_changes()));
    let group_plans = match &clients.groups {
        Some(g) => plan_groups(g, &prepared, false).await,
        None => Vec::new(),
    };
    if output != PlanOutput::Json {
        for (p, _) in &group_plans {
            print!("{}", groups::plan_text(p));
        }
    }
    if output == PlanOutput::Json {
        let mut doc: serde_json::Value = serde_json::from_str(&rendered).unwrap_or_default();
        doc["tables"] = prepared
            .tables
            .iter()
            .zip(&table_plans)
            .map(|(t, p)| table_json(t, p))
            .collect();
        doc["consumers"] = prepared
            .consumers
            .iter()
            .zip(&consumer_plans)
            .map(|(t, p)| match p {
                Ok(p) => serde_json::json!({
                    "resource": t.resource,
                    "dataset": format!("{}.{}", t.spec.project, t.spec.dataset),
                    "views": views_json(&p.views),
                    "iam": p.iam.as_ref().map(|i| serde_json::json!({"project": i.project, "add": i.add, "remove": i.remove})),
                }),
                Err(e) => serde_json::json!({"resource": t.resource, "error": e}),
            })
            .collect();
        doc["groups"] =
            serde_json::to_value(group_plans.iter().map(|(p, _)| p).collect::<Vec<_>>()).unwrap_or_default();
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    let group_error = group_plans.iter().any(|(p, _)| p.is_refused());
    let group_changes = group_plans.iter().any(|(p, _)| p.has_changes());
    let table_error = table_plans
        .iter()
        .any(|p| p.as_ref().map_or(true, |s| s.views.is_refused()));
    let table_changes = table_plans
        .iter()
        .any(|p| p.as_ref().is_ok_and(|s| !s.plan.is_empty() || s.views.has_changes()));
    if plans.iter().any(DatasetPlan::is_refused) || table_error || group_error || consumer_error {
        EXIT_ERROR
    } else if plans.iter().any(DatasetPlan::has_changes) || table_changes || group_changes || consumer_changes {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// A view-layer plan for tools.
fn views_json(p: &LayoutPlan) -> serde_json::Value {
    serde_json::json!({
        "createDatasets": p.create_datasets,
        "createSalt": p.create_salt.as_ref().map(|t| t.to_string()),
        "views": p.views.iter().map(|v| serde_json::json!({
            "view": v.view.def.table.to_string(),
            "layer": v.view.layer.layer.as_str(),
            "change": match &v.change {
                views::ViewChange::Create => "create",
                views::ViewChange::Update { adopt: true, .. } => "adopt",
                views::ViewChange::Update { .. } => "update",
                views::ViewChange::Relabel => "relabel",
                views::ViewChange::Unchanged => "unchanged",
            },
            "sql": v.view.def.sql,
        })).collect::<Vec<_>>(),
        "delete": p.delete.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "refusals": p.refusals,
        "notes": p.notes,
    })
}

/// A table plan for tools.
fn table_json(t: &Target, p: &Result<TableState, String>) -> serde_json::Value {
    match p {
        Ok(s) => {
            let l = &s.plan.loads;
            serde_json::json!({
                "resource": t.name,
                "table": t.table.to_string(),
                "schema": match &s.plan.schema {
                    crate::ingest::table::SchemaChange::Create => serde_json::json!("create"),
                    crate::ingest::table::SchemaChange::None => serde_json::json!("unchanged"),
                    crate::ingest::table::SchemaChange::Additive { add, relax } => serde_json::json!({
                        "add": add.iter().map(|f| &f.name).collect::<Vec<_>>(), "relax": relax }),
                    crate::ingest::table::SchemaChange::Incompatible(why) => serde_json::json!({"incompatible": why}),
                },
                "claim": s.plan.claim,
                "markPii": s.plan.mark_pii,
                "newBatches": l.new.len(),
                "newFiles": l.new.iter().map(|b| b.files.len()).sum::<usize>(),
                "resumedBatches": l.resumed.len(),
                "deferredFiles": l.deferred_files,
                "views": views_json(&s.views),
            })
        }
        Err(e) => serde_json::json!({"resource": t.name, "table": t.table.to_string(), "error": e}),
    }
}

/// `bqsteward apply`: tables and their view layers first (they create the datasets that access
/// lists and authorizations refer to), then access lists.
pub async fn apply(args: &LiveArgs, allow_large_removal: bool) -> i32 {
    match prepare_with_client(args).await {
        Ok((mut prepared, clients)) => {
            let (tables, retired_views) = apply_tables(&clients.bq, &clients.gcs, &prepared).await;
            retire(&mut prepared, retired_views.into_iter());
            let iam_client = clients.iam.as_ref().map(|c| c as &dyn ProjectIam);
            let (consumers, retired, applied) = apply_consumer_views(&clients.bq, iam_client, &prepared).await;
            retire(&mut prepared, retired.into_iter().map(|e| (None, e)));
            for note in drop_missing_views(&clients.bq, &mut prepared.desired).await {
                println!("{note}");
            }
            let datasets =
                if prepared.desired.is_empty() && (!prepared.tables.is_empty() || !prepared.groups.is_empty()) {
                    EXIT_OK
                } else {
                    apply_with(&clients.bq, &prepared, allow_large_removal).await
                };
            let iam = match iam_client {
                Some(c) => apply_consumer_iam(c, &applied).await,
                None => EXIT_OK,
            };
            let groups = match &clients.groups {
                Some(g) => apply_groups(g, &prepared, allow_large_removal).await,
                None => EXIT_OK,
            };
            datasets.max(tables).max(consumers).max(iam).max(groups)
        }
        Err(code) => code,
    }
}

/// Applies every IngestedTable (loads, then view layers); one failing table does not stop the
/// others.
async fn apply_tables(
    bq: &dyn BigQuery,
    gcs: &dyn Storage,
    prepared: &Prepared,
) -> (i32, Vec<(Option<crate::access::DatasetKey>, AclEntry)>) {
    let plans = plan_tables(bq, gcs, prepared).await;
    print_table_plans(prepared, &plans);
    let mut code = EXIT_OK;
    let mut retired = Vec::new();
    for (t, p) in prepared.tables.iter().zip(plans) {
        let Ok(state) = p else {
            code = EXIT_ERROR;
            continue;
        };
        code = code.max(apply_loads(bq, t, &state).await);
        let (c, r) = apply_views(bq, t).await;
        code = code.max(c);
        retired.extend(r);
    }
    (code, retired)
}

/// The authorization entries of views a plan of `t` deletes, with the dataset each is on.
fn retired_entries(t: &Target, plan: &LayoutPlan) -> Vec<(Option<crate::access::DatasetKey>, AclEntry)> {
    views::layout::retired_entries(&t.spec, &plan.delete)
        .into_iter()
        .map(|(k, e)| (Some(k), e))
        .collect()
}

async fn apply_loads(bq: &dyn BigQuery, t: &Target, state: &TableState) -> i32 {
    let p = &state.plan;
    if p.is_empty() {
        println!("{}: nothing to load", t.table);
        return EXIT_OK;
    }
    let exec = Executor::new(bq, t, p.loads.budget_left);
    match exec.apply(p, &state.observed).await {
        Ok(r) => {
            print!("{}", ingest_report::apply_text(t, &r));
            if r.stopped.is_some() && matches!(p.schema, crate::ingest::table::SchemaChange::Incompatible(_)) {
                EXIT_ERROR
            } else {
                EXIT_OK
            }
        }
        Err(e) => {
            println!(
                "{}: failed: {e} (everything done so far is recorded; the next run resumes)",
                t.table
            );
            EXIT_ERROR
        }
    }
}

/// Plans the view layers again against the table as the loads left it (new columns show up in the
/// views in the same apply), then writes them.
async fn apply_views(bq: &dyn BigQuery, t: &Target) -> (i32, Vec<(Option<crate::access::DatasetKey>, AclEntry)>) {
    let table = match bq.get_table(&t.table).await {
        Ok(info) => info,
        Err(e) => {
            println!("IngestedTable {}: views: cannot read {}: {e}", t.name, t.table);
            return (EXIT_ERROR, Vec::new());
        }
    };
    let plan = match plan_views(bq, t, table.as_ref()).await {
        Ok(p) => p,
        Err(e) => {
            println!("{e}");
            return (EXIT_ERROR, Vec::new());
        }
    };
    if plan.is_refused() {
        for r in &plan.refusals {
            println!("IngestedTable {}: views refused: {r}", t.name);
        }
        return (EXIT_ERROR, Vec::new());
    }
    match views::apply::apply(bq, &plan).await {
        Ok(done) => {
            for d in &done {
                println!("IngestedTable {}: {d}", t.name);
            }
            if plan.waiting_for_table && !plan.views.is_empty() {
                println!(
                    "IngestedTable {}: views wait for {} (created by the first load)",
                    t.name, t.table
                );
            }
            (EXIT_OK, retired_entries(t, &plan))
        }
        Err(e) => {
            println!("IngestedTable {}: views failed: {e}", t.name);
            (EXIT_ERROR, Vec::new())
        }
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
