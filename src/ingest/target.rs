//! One IngestedTable resolved for loading ([`Target`]), what is read of it ([`Observed`]) and its
//! pure plan ([`TablePlan`]): schema change, ownership claim, PII marks and loads.

use super::ledger::{LedgerTables, Stats};
use super::model::{Batch, BatchMeta, Ledger, SourceFile, short_hash};
use super::plan::{LoadPlan, Settings, plan};
use super::reload::Reload;
use super::source::Discovery;
use super::table::{self, SchemaChange};
use crate::cloud::CloudError;
use crate::cloud::bigquery::BigQuery;
use crate::cloud::bqtypes::{Field, TableInfo, TableRef};
use crate::cloud::storage::Storage;
use crate::crd::ingested_table::IngestedTableSpec;

/// One IngestedTable, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    /// `namespace/name` of the resource.
    pub name: String,
    /// The spec.
    pub spec: IngestedTableSpec,
    /// Destination.
    pub table: TableRef,
    /// Ledger (and staging) of the destination's project and location.
    pub ledger: LedgerTables,
    /// Source.
    pub discovery: Discovery,
    /// Load columns.
    pub load_fields: Vec<Field>,
    /// Hash of the declared schema.
    pub schema_hash: String,
    /// Re-ingestion request.
    pub reload: Option<Reload>,
    /// The resource adopts an existing table bqsteward did not create (annotation
    /// `bqsteward.dev/adopt: "true"`).
    pub adopt: bool,
    /// Columns once in `piiColumns` that the resource releases to the clean view (annotation
    /// `bqsteward.dev/allow-pii`), lowercase.
    pub released_pii: Vec<String>,
}

impl Target {
    /// Sets [`Target::adopt`] from the resource's annotation `bqsteward.dev/adopt: "true"`.
    pub fn adopting(mut self, resource: &crate::manifest::Resource) -> Target {
        self.adopt = resource.annotation(table::ANNOTATION_ADOPT) == Some("true");
        self.released_pii = resource.annotation_list(crate::crd::ANNOTATION_ALLOW_PII);
        self
    }

    /// Resolves a validated spec.
    pub fn new(name: &str, spec: &IngestedTableSpec, reload: Option<Reload>) -> Result<Target, String> {
        let d = &spec.destination;
        let load_fields = table::load_fields(spec);
        Ok(Target {
            name: name.into(),
            table: TableRef::new(&d.project, &d.dataset, &d.table),
            ledger: LedgerTables::new(&d.project, &d.location),
            discovery: Discovery::new(&spec.source)?,
            schema_hash: short_hash(&serde_json::to_string(&load_fields).unwrap_or_default()),
            load_fields,
            adopt: false,
            released_pii: Vec::new(),
            spec: spec.clone(),
            reload,
        })
    }

    pub(crate) fn settings(&self, jobs_today: u32, now_ms: i64) -> Settings {
        let lp = &self.spec.load_policy;
        Settings {
            table: self.table.to_string(),
            mode: self.spec.mode,
            max_files_per_job: lp.max_files_per_job as usize,
            max_bytes_per_job: lp.max_bytes_per_job,
            daily_job_budget: lp.daily_job_budget,
            jobs_today,
            reuploads: lp.reuploaded_files,
            schema_hash: self.schema_hash.clone(),
            snapshot_marker: self.discovery.marker.clone(),
            source_prefix: self.discovery.uri_prefix(),
            reload: self.reload.clone(),
            now_ms,
        }
    }

    /// The rows a daily-reload batch replaces (database sources with `dailyReload` and a time
    /// watermark), from the batch's day and the spec's time zone.
    pub(crate) fn day_window(&self, b: &Batch) -> Option<super::job_config::Window> {
        if b.kind != super::model::BatchKind::Day {
            return None;
        }
        let spec = &self.spec;
        let wm = spec.source.database.as_ref()?.watermark.as_ref()?;
        let col = spec.schema.iter().find(|c| c.name.eq_ignore_ascii_case(&wm.column))?;
        let type_ = col.type_.canonical();
        let zone = spec.daily_reload.as_ref().map_or("UTC", |r| r.time_zone.as_str());
        let tz = crate::validate::database::time_zone(zone).ok()?;
        let day = chrono::NaiveDate::parse_from_str(&b.reload_id, "%Y-%m-%d").ok()?;
        let (lo, hi) = crate::dbsource::day_bounds(&tz, day, type_ == "DATE")?;
        Some(super::job_config::Window {
            column: col.name.clone(),
            type_,
            lo,
            hi,
        })
    }

    pub(crate) fn staging(&self, batch_id: &str) -> TableRef {
        self.ledger.table(&format!("stg_{batch_id}"))
    }

    pub(crate) fn meta(&self, b: &Batch) -> BatchMeta {
        BatchMeta {
            id: b.id.clone(),
            kind: b.kind,
            reload_id: b.reload_id.clone(),
            replaces: b.replaces.clone(),
            schema_hash: self.schema_hash.clone(),
        }
    }
}

/// What was read.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Source files.
    pub listing: Vec<SourceFile>,
    /// Ledger of the table.
    pub ledger: Ledger,
    /// Destination table, if it exists.
    pub table: Option<TableInfo>,
    /// Ledger aggregates.
    pub stats: Stats,
}

/// The plan of one table.
#[derive(Clone, Debug)]
pub struct TablePlan {
    /// Destination schema change.
    pub schema: SchemaChange,
    /// Loads.
    pub loads: LoadPlan,
    /// The live table gets this resource's owner label first, and why (see [`table::claim`]).
    pub claim: Option<String>,
    /// PII columns the live table gets a mark for (see [`table::pii_label`]).
    pub mark_pii: Vec<String>,
    /// Why the source looks wrong, when nothing is under its prefix and nothing was ever loaded.
    pub no_source_files: Option<String>,
    /// A database source's problems that stop its pulls (schema drift, an unmappable column):
    /// set by the engine from the source plan; the table is `Degraded` with them.
    pub source_problems: Vec<String>,
}

impl TablePlan {
    /// Whether applying changes anything.
    pub fn is_empty(&self) -> bool {
        self.schema == SchemaChange::None && self.loads.is_empty() && self.claim.is_none() && self.mark_pii.is_empty()
    }
}

/// Reads everything the plan needs. Read-only: a missing ledger reads as empty.
pub async fn observe(bq: &dyn BigQuery, storage: &dyn Storage, t: &Target) -> Result<Observed, CloudError> {
    let listing = t.discovery.discover(storage).await?;
    let table = bq.get_table(&t.table).await?;
    let (ledger, stats) = if t.ledger.exists(bq).await? {
        let table_ref = t.table.to_string();
        let ledger = t
            .ledger
            .read(bq, &table_ref, t.reload.as_ref().map(|r| r.id.as_str()))
            .await?;
        (ledger, t.ledger.stats(bq, &table_ref).await?)
    } else {
        (Ledger::default(), Stats::default())
    };
    Ok(Observed {
        listing,
        ledger,
        table,
        stats,
    })
}

/// Plans one table (pure). A destination the resource does not own plans as incompatible: nothing
/// is loaded or changed (see [`table::ownership`]).
pub fn plan_table(t: &Target, o: &Observed, now_ms: i64) -> TablePlan {
    let desired = table::table_fields(&t.spec);
    let schema = match table::ownership(&t.name, t.adopt, &t.table, o.table.as_ref()) {
        Some(refusal) => SchemaChange::Incompatible(vec![refusal]),
        None => table::diff_schema(&desired, o.table.as_ref().map(|i| i.schema.fields.as_slice())),
    };
    let settings = t.settings(u32::try_from(o.stats.jobs_today).unwrap_or(u32::MAX), now_ms);
    let mut loads = if t.spec.source.database.is_some() && t.spec.mode == crate::crd::LoadMode::Incremental {
        crate::dbsource::loads::plan(&settings, &o.listing, &o.ledger)
    } else {
        plan(&settings, &o.listing, &o.ledger)
    };
    if matches!(schema, SchemaChange::Incompatible(_)) {
        // Nothing loads into a table whose schema cannot hold the files.
        loads.deferred_files += loads.files_to_load();
        loads.new.clear();
        loads.resumed.clear();
    }
    let claim = table::claim(&t.name, t.adopt, &t.table, o.table.as_ref());
    let mark_pii = match (&schema, &o.table) {
        (SchemaChange::Incompatible(_), _) | (_, None) => Vec::new(),
        (_, Some(live)) => table::unmarked_pii(&t.spec, live),
    };
    // Nothing under the prefix and nothing ever loaded: most likely a wrong uri, not "up to date".
    let files_source = t.spec.source.database.is_none();
    let no_source_files =
        (files_source && o.listing.is_empty() && o.stats.files_loaded == 0 && o.stats.quarantined == 0).then(|| {
            format!(
                "no objects under {}{}: nothing has ever been loaded; check spec.source.uri (and source.include) if \
             files are expected there",
                t.spec.source.uri,
                if t.spec.source.include.is_none() {
                    ""
                } else {
                    " matching source.include"
                }
            )
        });
    TablePlan {
        schema,
        loads,
        claim,
        mark_pii,
        no_source_files,
        source_problems: Vec::new(),
    }
}
