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
    /// How the source is listed.
    pub listing: Listing,
}

/// The annotation asking for a full listing of a `Lexical` source now: any value; a new value
/// asks again.
pub const ANNOTATION_FULL_LISTING: &str = "bqsteward.dev/full-listing";

/// How a source is listed: whole every cycle, or from a cursor (`source.ordering: Lexical`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Names sort by arrival: list from the cursor (incremental file sources only).
    pub lexical: bool,
    /// `source.lateArrival`, ms.
    pub late_ms: i64,
    /// `source.fullListingEvery`, ms.
    pub full_every_ms: i64,
    /// The `bqsteward.dev/full-listing` annotation's value.
    pub token: String,
    /// List the whole prefix this time (`--full-listing`).
    pub force_full: bool,
}

impl Listing {
    /// From a validated spec.
    pub fn of(spec: &IngestedTableSpec) -> Listing {
        let ms = |v: Option<&String>, default: i64| {
            v.and_then(|v| crate::validate::database::duration(v).ok())
                .map_or(default, |d| d.as_millis() as i64)
        };
        let src = &spec.source;
        Listing {
            lexical: src.ordering == Some(crate::crd::ingested_table::Ordering::Lexical)
                && !src.landed()
                && spec.mode == crate::crd::LoadMode::Incremental,
            late_ms: ms(src.late_arrival.as_ref(), 3_600_000),
            full_every_ms: ms(src.full_listing_every.as_ref(), 86_400_000),
            token: String::new(),
            force_full: false,
        }
    }
}

impl Target {
    /// Sets [`Target::adopt`] from the resource's annotation `bqsteward.dev/adopt: "true"`.
    pub fn adopting(mut self, resource: &crate::manifest::Resource) -> Target {
        self.adopt = resource.annotation(table::ANNOTATION_ADOPT) == Some("true");
        self.released_pii = resource.annotation_list(crate::crd::ANNOTATION_ALLOW_PII);
        self.listing.token = resource
            .annotation(ANNOTATION_FULL_LISTING)
            .unwrap_or_default()
            .to_string();
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
            listing: Listing::of(spec),
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
    /// The listing cursor last recorded (`Lexical` sources).
    pub cursor: Option<super::ledger::Cursor>,
    /// The URI the listing and the ledger read started at; `None`: the whole prefix was listed.
    pub listed_from: Option<String>,
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
    /// The Degraded reason of `source_problems`: `SourceSchemaDrift` (database), `SourceRefused`
    /// (a Delta feature bqsteward cannot honour).
    pub source_reason: &'static str,
    /// A Delta source: its latest version, the version the table holds, the bytes landed (set by
    /// the engine from the Delta plan).
    pub delta: Option<crate::crd::DeltaStatus>,
    /// The listing cursor to record after the apply (`Lexical` sources: when it moves, after a
    /// full listing, or when files are loaded — the totals kept with it move).
    pub next_cursor: Option<NextCursor>,
}

impl TablePlan {
    /// Whether applying changes anything.
    pub fn is_empty(&self) -> bool {
        self.schema == SchemaChange::None && self.loads.is_empty() && self.claim.is_none() && self.mark_pii.is_empty()
    }
}

/// Reads everything the plan needs. Read-only: a missing ledger reads as empty. A `Lexical`
/// source is listed, and its ledger read, from its cursor — unless a full listing is due (never
/// listed fully, `fullListingEvery` passed, a new `bqsteward.dev/full-listing` value,
/// `--full-listing`, or a re-ingestion request).
pub async fn observe(bq: &dyn BigQuery, storage: &dyn Storage, t: &Target) -> Result<Observed, CloudError> {
    let table_ref = t.table.to_string();
    let ledger_exists = t.ledger.exists(bq).await?;
    let cursor = if t.listing.lexical && ledger_exists {
        t.ledger.cursor(bq, &table_ref).await?
    } else {
        None
    };
    let now = chrono::Utc::now().timestamp_millis();
    let listed_from = cursor
        .as_ref()
        .filter(|c| {
            !t.listing.force_full
                && t.reload.is_none()
                && c.token == t.listing.token
                && now - c.full_listing_ms < t.listing.full_every_ms
        })
        .filter(|c| t.discovery.object_name(&c.uri).is_some())
        .map(|c| c.uri.clone());
    let start = listed_from.as_deref().and_then(|u| t.discovery.object_name(u));
    let server_filter = !t.spec.source.landed() && t.spec.mode == crate::crd::LoadMode::Incremental;
    let listing = t.discovery.discover_from(storage, start, server_filter).await?;
    let table = bq.get_table(&t.table).await?;
    let since = cursor.as_ref().filter(|_| listed_from.is_some());
    let (ledger, stats) = if ledger_exists {
        let ledger = t
            .ledger
            .read_from(
                bq,
                &table_ref,
                t.reload.as_ref().map(|r| r.id.as_str()),
                listed_from.as_deref(),
            )
            .await?;
        let mut stats = t.ledger.stats(bq, &table_ref, since).await?;
        if since.is_some() {
            // Past the cursor: the files of the window just read.
            stats.files_loaded += ledger.count(super::model::FileState::Loaded);
            stats.quarantined += ledger.count(super::model::FileState::Quarantined);
        }
        (ledger, stats)
    } else {
        (Ledger::default(), Stats::default())
    };
    super::observed(&table_ref, listing.len(), ledger.len());
    Ok(Observed {
        listing,
        ledger,
        table,
        stats,
        cursor,
        listed_from,
    })
}

/// A cursor to record after a cycle, and the cursor its totals build on (`None` after a full
/// listing: counted whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextCursor {
    /// The cursor.
    pub cursor: super::ledger::Cursor,
    /// The cursor this cycle listed from.
    pub from: Option<super::ledger::Cursor>,
}

/// The cursor to record after this cycle (pure): the greatest URI already in the ledger (loaded
/// or quarantined) uploaded more than `lateArrival` ago, never past a file still to load; after
/// a full listing also the time of it. `None` when it does not change and nothing is loaded
/// (loads move the totals kept with it).
pub fn next_cursor(t: &Target, o: &Observed, now_ms: i64, loading: bool) -> Option<NextCursor> {
    use super::model::FileState;
    if !t.listing.lexical {
        return None;
    }
    let settled = |f: &SourceFile| {
        o.ledger.get(&f.uri, f.generation).is_some_and(|e| {
            matches!(
                e.state,
                FileState::Loaded | FileState::Quarantined | FileState::Abandoned
            )
        })
    };
    let late_cut = now_ms - t.listing.late_ms;
    let done = o
        .listing
        .iter()
        .filter(|f| settled(f) && f.updated_ms <= late_cut)
        .map(|f| f.uri.as_str())
        .max();
    let open = o.listing.iter().filter(|f| !settled(f)).map(|f| f.uri.as_str()).min();
    let moved = match (done, open) {
        (Some(d), Some(u)) => Some(d.min(u)),
        (Some(d), None) => Some(d),
        (None, Some(u)) if o.listed_from.is_none() => Some(u),
        (None, _) => None,
    };
    let full = o.listed_from.is_none();
    let prev = o.cursor.clone().unwrap_or_default();
    let next = super::ledger::Cursor {
        uri: moved.map(str::to_string).unwrap_or_else(|| prev.uri.clone()),
        full_listing_ms: if full { now_ms } else { prev.full_listing_ms },
        token: if full {
            t.listing.token.clone()
        } else {
            prev.token.clone()
        },
        totals: Default::default(),
    };
    let moved = o.cursor.as_ref().is_none_or(|c| !c.same_place(&next));
    (moved || loading).then(|| NextCursor {
        cursor: next,
        from: o.cursor.clone().filter(|_| !full),
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
    let mut loads = if t.spec.source.is_delta() {
        crate::deltasource::loads::plan(&settings, &o.listing, &o.ledger)
    } else if t.spec.source.database.is_some() && t.spec.mode == crate::crd::LoadMode::Incremental {
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
    let files_source = !t.spec.source.landed();
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
        next_cursor: next_cursor(t, o, now_ms, !loads.is_empty()),
        schema,
        loads,
        claim,
        mark_pii,
        no_source_files,
        source_problems: Vec::new(),
        source_reason: if t.spec.source.is_delta() {
            "SourceRefused"
        } else {
            "SourceSchemaDrift"
        },
        delta: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ledger::Cursor;
    use crate::ingest::model::{Entry, FileState};

    fn target() -> Target {
        let spec: IngestedTableSpec = serde_yaml::from_str(
            "source: {uri: 'gs://bkt/in/', format: NEWLINE_DELIMITED_JSON, ordering: Lexical, lateArrival: 1h}\n\
             destination: {project: p, dataset: d, table: t}\nschema:\n- {name: id, type: INT64}\n",
        )
        .unwrap();
        Target::new("ns/t", &spec, None).unwrap()
    }

    fn file(name: &str, updated_ms: i64) -> SourceFile {
        SourceFile {
            uri: format!("gs://bkt/in/{name}"),
            generation: 1,
            size: 1,
            updated_ms,
        }
    }

    fn observed(files: &[(&str, i64, Option<FileState>)], from: Option<&str>) -> Observed {
        let mut ledger = Ledger::default();
        for (name, updated, state) in files {
            if let Some(state) = state {
                ledger.insert(
                    &format!("gs://bkt/in/{name}"),
                    1,
                    Entry {
                        state: *state,
                        batch: 0,
                        category: None,
                        reloaded: false,
                        size: 1,
                        updated_ms: *updated,
                    },
                );
            }
        }
        Observed {
            listing: files.iter().map(|(n, u, _)| file(n, *u)).collect(),
            ledger,
            listed_from: from.map(|f| format!("gs://bkt/in/{f}")),
            cursor: from.map(|f| Cursor {
                uri: format!("gs://bkt/in/{f}"),
                full_listing_ms: 5,
                token: String::new(),
                totals: Default::default(),
            }),
            ..Observed::default()
        }
    }

    #[test]
    fn the_cursor_stops_at_a_file_still_to_load_and_lags_by_the_late_arrival_window() {
        let t = target();
        let hour = 3_600_000;
        let now = 10 * hour;
        let loaded = Some(FileState::Loaded);
        // a, c loaded long ago; b still to load (deferred): the cursor stops at b.
        let o = observed(
            &[("a", hour, loaded), ("b", hour, None), ("c", hour, loaded)],
            Some("a"),
        );
        let next = next_cursor(&t, &o, now, false).unwrap().cursor;
        assert_eq!(next.uri, "gs://bkt/in/b");
        assert_eq!(
            next.full_listing_ms, 5,
            "a partial listing keeps the full listing's time"
        );
        // All loaded, but c uploaded within the window: the cursor stays behind it.
        let o = observed(
            &[("a", hour, loaded), ("b", hour, loaded), ("c", now - 60_000, loaded)],
            Some("a"),
        );
        assert_eq!(next_cursor(&t, &o, now, false).unwrap().cursor.uri, "gs://bkt/in/b");
        // Quarantined files are settled; unchanged cursor: nothing to record.
        let o = observed(&[("a", hour, Some(FileState::Quarantined))], Some("a"));
        assert_eq!(next_cursor(&t, &o, now, false), None);
        // ... unless something is loaded: the totals kept with the cursor move.
        let again = next_cursor(&t, &o, now, true).unwrap();
        assert_eq!(
            (again.cursor.uri.as_str(), again.from.is_some()),
            ("gs://bkt/in/a", true)
        );
        // A full listing records its time.
        let o = observed(&[("a", hour, loaded)], None);
        assert_eq!(
            next_cursor(&t, &o, now, false),
            Some(NextCursor {
                cursor: Cursor {
                    uri: "gs://bkt/in/a".into(),
                    full_listing_ms: now,
                    token: String::new(),
                    totals: Default::default(),
                },
                from: None,
            })
        );
    }
}
