//! Reading and writing the view layers.

use super::layout::Layout;
use super::plan::{LayoutPlan, ObservedLayout, ObservedView, ViewChange};
use crate::audit::{Action, Event};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{Param, TableRef};
use crate::cloud::retry::{Backoff, with_retry};

/// Reads the layer datasets, the views and the raw table's existence. A view whose table
/// resource carries no SQL (bqemulator) is read from `INFORMATION_SCHEMA.VIEWS` instead.
pub async fn observe(bq: &dyn BigQuery, layout: &Layout, source_exists: bool) -> Result<ObservedLayout, CloudError> {
    let backoff = Backoff::default();
    let mut out = ObservedLayout {
        source_exists,
        ..ObservedLayout::default()
    };
    for ds in &layout.datasets {
        let info = with_retry(&backoff, "datasets.get", || bq.get_dataset(&layout.project, ds)).await?;
        out.datasets.insert(ds.clone(), info.map(|i| i.location));
    }
    for v in &layout.views {
        let t = &v.def.table;
        let info = if out.datasets.get(&t.dataset).is_some_and(Option::is_some) {
            with_retry(&backoff, "tables.get", || bq.get_table(t)).await?
        } else {
            None
        };
        let view = match info {
            None => None,
            Some(info) => {
                let (sql, sql_exact) = match info.view_sql() {
                    Some(sql) => (Some(sql.to_string()), true),
                    None if info.is_view() => match read_view_sql(bq, t, &layout.location, &backoff).await {
                        Ok(sql) => (sql, false),
                        Err(e) => {
                            // Not fatal: the label hash still says whether bqsteward's SQL is there.
                            tracing::debug!(view = %t, error = %e, "cannot read the view's SQL from INFORMATION_SCHEMA");
                            (None, false)
                        }
                    },
                    None => (None, false),
                };
                Some(ObservedView { info, sql, sql_exact })
            }
        };
        out.views.push(view);
    }
    for t in &layout.retired {
        let info = with_retry(&backoff, "tables.get", || bq.get_table(t)).await?;
        if info.is_some_and(|i| i.is_view() && i.belongs_to(&layout.resource)) {
            out.strays.push(t.clone());
        }
    }
    if let Some(salt) = &layout.salt
        && out.datasets.get(&salt.dataset).is_some_and(Option::is_some)
    {
        out.salt = with_retry(&backoff, "tables.get", || bq.get_table(salt)).await?;
    }
    if layout.owns_datasets {
        for ds in &layout.datasets {
            if out.datasets.get(ds).is_some_and(Option::is_none) {
                continue;
            }
            let tables = with_retry(&backoff, "tables.list", || bq.list_tables(&layout.project, ds)).await?;
            for (t, kind) in tables {
                if kind != "VIEW" || layout.views.iter().any(|v| v.def.table == t) {
                    continue;
                }
                // Only views bqsteward made for this resource (tables.list does not return labels
                // everywhere).
                let info = with_retry(&backoff, "tables.get", || bq.get_table(&t)).await?;
                if info.is_some_and(|i| i.belongs_to(&layout.resource)) {
                    out.strays.push(t);
                }
            }
        }
    }
    Ok(out)
}

/// A view's SQL from its dataset's `INFORMATION_SCHEMA.VIEWS`.
async fn read_view_sql(
    bq: &dyn BigQuery,
    view: &TableRef,
    location: &str,
    backoff: &Backoff,
) -> Result<Option<String>, CloudError> {
    let schema = TableRef::new(&view.project, &view.dataset, "INFORMATION_SCHEMA.VIEWS");
    let sql = format!("SELECT view_definition FROM {} WHERE table_name = @name", schema.sql());
    let params = [Param::string("name", &view.table)];
    let rows = with_retry(backoff, "jobs.query INFORMATION_SCHEMA.VIEWS", || {
        bq.query(&view.project, location, &sql, &params)
    })
    .await?;
    Ok(rows
        .rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// What an apply changed, one line each (for the report).
pub type Done = Vec<String>;

/// Deletes views bqsteward made for `resource` that it no longer declares (after their
/// authorizations were retired).
pub async fn delete_views(bq: &dyn BigQuery, resource: &str, views: &[TableRef]) -> Result<Done, CloudError> {
    let backoff = Backoff::default();
    let mut done = Vec::new();
    for t in views {
        with_retry(&backoff, "tables.delete", || bq.delete_table(t)).await?;
        crate::audit::record(Event::new(Action::ViewDeleted, resource, &t.to_string(), "", ""));
        done.push(format!("deleted view {t} (no longer declared)"));
    }
    Ok(done)
}

/// Applies a layout plan: datasets first, then views in order (full before clean). A refused
/// plan writes nothing; a plan waiting for the raw table creates only the datasets.
pub async fn apply(bq: &dyn BigQuery, plan: &LayoutPlan) -> Result<Done, CloudError> {
    let mut done = Vec::new();
    if plan.is_refused() {
        return Ok(done);
    }
    let backoff = Backoff::default();
    for ds in &plan.create_datasets {
        with_retry(&backoff, "datasets.insert", || {
            bq.create_dataset(&plan.project, ds, &plan.location)
        })
        .await?;
        crate::audit::record(
            Event::new(
                Action::DatasetCreated,
                &plan.resource,
                &format!("{}.{ds}", plan.project),
                "",
                "",
            )
            .home(&plan.project, &plan.location),
        );
        done.push(format!("created dataset {}.{ds} ({})", plan.project, plan.location));
    }
    if let Some(salt) = &plan.create_salt {
        let labels = [
            (crate::cloud::bqtypes::LABEL_MANAGED_BY, "bqsteward"),
            ("bqsteward-role", "salt"),
        ];
        let sql = super::sql::create_salt(salt, &labels);
        with_retry(&backoff, "jobs.query CREATE TABLE salt", || {
            bq.query(&plan.project, &plan.location, &sql, &[])
        })
        .await?;
        // The salt itself is never read or logged by bqsteward.
        let mut ev = Event::new(Action::TableCreated, &plan.resource, &salt.to_string(), "", "")
            .home(&plan.project, &plan.location);
        ev.message = "salt table (random, generated inside BigQuery)".into();
        crate::audit::record(ev);
        done.push(format!("created salt table {salt} (random, generated inside BigQuery)"));
    }
    if plan.waiting_for_table {
        return Ok(done);
    }
    done.extend(delete_views(bq, &plan.resource, &plan.delete).await?);
    for v in &plan.views {
        let def = &v.view.def;
        let what = match &v.change {
            ViewChange::Unchanged => continue,
            ViewChange::Create => {
                with_retry(&backoff, "tables.insert", || bq.create_view(def)).await?;
                "created"
            }
            ViewChange::Update { adopt, .. } => {
                let etag = v.etag.clone().unwrap_or_default();
                with_retry(&backoff, "tables.patch", || bq.patch_view(def, &etag)).await?;
                if *adopt {
                    "adopted and replaced the SQL of"
                } else {
                    "restored the SQL of"
                }
            }
            ViewChange::Relabel => {
                let etag = v.etag.clone().unwrap_or_default();
                with_retry(&backoff, "tables.patch", || bq.patch_view(def, &etag)).await?;
                "restored labels and description of"
            }
        };
        let action = if matches!(v.change, ViewChange::Create) {
            Action::ViewCreated
        } else {
            Action::ViewPatched
        };
        let before = v.etag.clone().unwrap_or_default();
        let mut ev = Event::new(
            action,
            &plan.resource,
            &def.table.to_string(),
            "",
            &format!("{before}/{}", v.view.hash),
        )
        .home(&plan.project, &plan.location);
        ev.etag_before = before;
        ev.message = format!("{what} {} view (SQL {})", v.view.layer.layer.as_str(), v.view.hash);
        crate::audit::record(ev);
        done.push(format!("{what} {} view {}", v.view.layer.layer.as_str(), def.table));
    }
    Ok(done)
}

/// Observes and plans the view layers of an IngestedTable given its raw table as observed (the
/// same call for `plan`, `apply` and the controller).
pub async fn plan_for_table(
    bq: &dyn BigQuery,
    t: &crate::ingest::exec::Target,
    table: Option<&crate::cloud::bqtypes::TableInfo>,
) -> Result<LayoutPlan, CloudError> {
    // Columns once marked PII on the table and not released stay out of the clean view.
    let held = crate::ingest::table::held_pii(&t.spec, table, &t.released_pii);
    let mut spec = t.spec.clone();
    spec.pii_columns.extend(held.iter().cloned());
    let mut layout = super::layout(
        &format!("IngestedTable {}", t.name),
        &spec,
        table.map(|i| i.schema.fields.as_slice()),
    );
    layout.adopt = t.adopt;
    if !held.is_empty() && spec.views.clean {
        layout.notes.push(format!(
            "columns {held:?} were once in piiColumns (the table is marked): kept out of the clean view; release them \
             with the annotation {}: \"{}\"",
            crate::crd::ANNOTATION_ALLOW_PII,
            held.join(", ")
        ));
    }
    let observed = observe(bq, &layout, table.is_some()).await?;
    let mut plan = super::plan(&layout, &observed);
    // Views over a table the resource does not own would expose someone else's data.
    if let Some(refusal) = crate::ingest::table::ownership(&t.name, t.adopt, &t.table, table) {
        plan.refusals.push(refusal);
    }
    Ok(plan)
}
