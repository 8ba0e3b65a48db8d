//! Delta Lake sources: an IngestedTable mirroring a Delta table on S3. bqsteward reads the
//! transaction log ([`log`]), decides what each version does to the table ([`mirror`]), copies the
//! data files a version needs into the landing prefix once ([`copy`]) — one folder per version,
//! `v-<version>/`, complete once its `_COMPLETE` marker is written — and loads complete versions in
//! order through the same exactly-once path as any files ([`loads`]; one statement per version
//! deletes the rows of removed files and inserts the new files' rows).
//!
//! observe ([`observe`]: the Secret, the landing, the last complete version's marker, the log from
//! there) → plan ([`plan`], pure: refused features, the versions to land) → apply ([`run`]: the
//! copies and markers).

pub mod copy;
pub mod loads;
pub mod log;
pub mod mirror;

use crate::cloud::storage::{ObjectInfo, Storage};
use crate::crd::{DeltaSource, IngestedTableSpec};
use crate::dbsource::secrets::{SecretText, Secrets};
use log::{Commit, DeltaFile};
use mirror::Group;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A version's completion marker.
pub const COMPLETE: &str = "_COMPLETE";
/// Commits read per run at most (the rest next run).
const MAX_COMMITS: u64 = 200;
/// The Secret's keys.
pub const KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The Secret's keys.
pub const SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// The Secret's keys.
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// One landed data file, as its version's marker records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Landed {
    /// Object name inside the version folder.
    pub name: String,
    /// The Delta file, `s3://bucket/table/part-….parquet` (the rows' lineage).
    pub source: String,
    /// Bytes.
    pub bytes: u64,
    /// Rows, from the log's statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Partition column → value: not in the Parquet file; set by the load.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partition: BTreeMap<String, Option<String>>,
}

/// The `_COMPLETE` marker of a version folder: what loading it does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// The Delta version the table is at once this folder is loaded.
    pub version: u64,
    /// `snapshot` (first load: replaces the table), `commit` or `compaction`.
    pub kind: String,
    /// Files to load.
    pub files: Vec<Landed>,
    /// Lineage (`s3://…` Delta files) whose rows leave the table.
    pub deletes: Vec<String>,
    /// Compacted files whose rows the table holds under other names, after this version.
    pub groups: Vec<Group>,
    /// Bytes copied from S3 for this version.
    pub bytes_copied: u64,
    /// The Delta table's top-level columns and BigQuery types when this version landed: a data
    /// file's columns besides its partition columns (undeclared ones are loaded into staging and
    /// dropped there).
    #[serde(default)]
    pub columns: Vec<(String, String)>,
}

/// What was read of a Delta source.
#[derive(Clone, Debug, Default)]
pub struct DeltaObserved {
    /// The landing prefix: version folder (`v-<version>`, `v-<version>-reload-<id>`) → its
    /// objects; folder names sort in loading order.
    pub landing: BTreeMap<String, Vec<ObjectInfo>>,
    /// The re-ingestion request, if one was made and has not landed yet.
    pub reload: Option<crate::ingest::reload::Reload>,
    /// The newest complete version's marker.
    pub last: Option<Marker>,
    /// The log from there.
    pub log: log::LogRead,
    /// The S3 store opened with the Secret's keys (the copies use it too).
    pub store: Option<Arc<dyn delta_kernel::object_store::ObjectStore>>,
}

/// One version (or reload) to land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionPlan {
    /// Its folder under the landing prefix.
    pub folder: String,
    /// The marker to write once the copies are in.
    pub marker: Marker,
    /// Delta files to copy: (file, object name under the landing prefix).
    pub copies: Vec<(DeltaFile, String)>,
}

/// What applying does to a Delta source.
#[derive(Clone, Debug, Default)]
pub struct DeltaPlan {
    /// Why nothing is copied or loaded (a feature bqsteward cannot honour).
    pub problems: Vec<String>,
    /// The latest Delta version.
    pub latest: u64,
    /// The newest version landed (complete in the landing prefix).
    pub landed: Option<u64>,
    /// The versions to land, in order.
    pub versions: Vec<VersionPlan>,
    /// Bytes those copies read from S3 (at most: files already copied are skipped).
    pub bytes_to_copy: u64,
    /// Worth knowing, changes nothing (a reload with nothing to reload).
    pub notes: Vec<String>,
    /// Bytes of the data files landed so far (complete folders): what was copied from S3.
    pub bytes_landed: u64,
}

/// What the copies of one apply did.
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Versions landed.
    pub versions: usize,
    /// Files copied.
    pub files: usize,
    /// Files found already copied (an interrupted run's).
    pub reused: usize,
    /// Bytes read from S3.
    pub bytes: u64,
}

fn spec_delta(spec: &IngestedTableSpec) -> &DeltaSource {
    spec.source.delta.as_ref().expect("a Delta source")
}

/// `namespace/name` → namespace.
fn namespace(resource: &str) -> &str {
    resource.split_once('/').map_or("default", |(ns, _)| ns)
}

/// The table root as a URL, with a trailing `/`.
pub fn table_root(d: &DeltaSource) -> Result<url::Url, String> {
    let (bucket, path) = crate::validate::delta::s3_uri(&d.uri)?;
    url::Url::parse(&format!("s3://{bucket}/{path}")).map_err(|e| format!("{}: {e}", d.uri))
}

/// The lineage of a Delta path: the file's `s3://` URI.
pub fn lineage(root: &url::Url, path: &str) -> String {
    format!("{root}{path}")
}

/// The version folder of `version`.
pub fn folder(version: u64) -> String {
    format!("v-{version:020}")
}

/// The folder of reload `id` at `version`: sorts after that version's folder, before the next.
pub fn reload_folder(version: u64, id: &str) -> String {
    format!("{}-reload-{id}", folder(version))
}

/// The version of a folder name (a version's or a reload's).
pub fn folder_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("v-")?;
    let (v, rest) = digits.split_at_checked(20)?;
    if !(rest.is_empty() || rest.starts_with("-reload-")) {
        return None;
    }
    v.parse().ok()
}

/// The `_COMPLETE` marker among a version folder's objects, if the folder is complete.
fn marker_in(objects: &[ObjectInfo]) -> Option<&ObjectInfo> {
    objects.iter().find(|o| o.name.ends_with(&format!("/{COMPLETE}")))
}

/// Reads the Secret's keys and opens the table's S3 store.
pub async fn store(
    secrets: &dyn Secrets,
    resource: &str,
    d: &DeltaSource,
) -> Result<Arc<dyn delta_kernel::object_store::ObjectStore>, String> {
    let ns = namespace(resource);
    let name = &d.credentials_secret.name;
    let key_id = secrets.read(ns, name, KEY_ID).await?;
    let secret = secrets.read(ns, name, SECRET_KEY).await?;
    let token: Option<SecretText> = secrets.read(ns, name, SESSION_TOKEN).await.ok();
    let (bucket, _) = crate::validate::delta::s3_uri(&d.uri)?;
    log::store(&log::S3Access {
        bucket,
        region: d.region.clone(),
        endpoint: d.endpoint.clone(),
        key_id,
        secret,
        token,
    })
}

/// Bucket and object prefix of `source.landing`.
pub fn landing_of(spec: &IngestedTableSpec) -> Result<(String, String), String> {
    crate::validate::ident::gcs_uri(spec.source.landing.as_deref().unwrap_or(""))
}

/// Says why S3 refused, naming the Secret whose keys were used.
fn refused(d: &DeltaSource, what: &str, e: &str) -> String {
    let keys = if [
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
    ]
    .iter()
    .any(|m| e.contains(m))
    {
        format!(
            " — S3 refused the keys of Secret {:?} (check {KEY_ID}/{SECRET_KEY} and that they may read {})",
            d.credentials_secret.name, d.uri
        )
    } else {
        String::new()
    };
    format!(
        "cannot read {what} of Delta table {} (keys of Secret {:?}): {e}{keys}",
        d.uri, d.credentials_secret.name
    )
}

/// Reads the landing prefix, the newest complete version's marker and the log from there.
pub async fn observe(
    secrets: &dyn Secrets,
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
    reload: Option<&crate::ingest::reload::Reload>,
) -> Result<DeltaObserved, String> {
    let d = spec_delta(spec);
    let (bucket, prefix) = landing_of(spec)?;
    let objects = gcs
        .list(&bucket, &prefix)
        .await
        .map_err(|e| format!("cannot list the landing prefix: {e}"))?;
    let mut landing: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
    for o in objects {
        let rest = o.name.strip_prefix(prefix.as_str()).unwrap_or(&o.name);
        if let Some((f, _)) = rest.split_once('/')
            && folder_version(f).is_some()
        {
            landing.entry(f.to_string()).or_default().push(o);
        }
    }
    let last = match landing.values().rev().find_map(|objs| marker_in(objs)) {
        Some(m) => {
            let body = gcs
                .read_head(&bucket, &m.name, m.generation, 256 << 20)
                .await
                .map_err(|e| format!("cannot read gs://{bucket}/{}: {e}", m.name))?;
            Some(serde_json::from_slice::<Marker>(&body).map_err(|e| {
                format!(
                    "gs://{bucket}/{} is not a version marker ({e}); was it written by hand?",
                    m.name
                )
            })?)
        }
        None => None,
    };
    // A reload runs once: its folder, once complete, says it ran.
    let reload = reload.filter(|r| {
        let done = format!("-reload-{}", r.id);
        !landing
            .iter()
            .any(|(f, objs)| f.ends_with(&done) && marker_in(objs).is_some())
    });
    let store = store(secrets, resource, d).await?;
    let root = table_root(d)?;
    let after = last.as_ref().map(|m| m.version);
    let versions = reload.and_then(|r| r.versions);
    let engine_store = store.clone();
    let read = tokio::task::spawn_blocking(move || {
        let engine = Arc::new(delta_kernel_default_engine::DefaultEngine::builder(engine_store).build());
        log::read(engine, &root, after, MAX_COMMITS, versions)
    })
    .await
    .map_err(|e| format!("the Delta log reader stopped: {e}"))?
    .map_err(|e| refused(d, "the log", &e))?;
    Ok(DeltaObserved {
        landing,
        last,
        log: read,
        reload: reload.cloned(),
        store: Some(store),
    })
}

/// Plans the versions to land (pure).
pub fn plan(spec: &IngestedTableSpec, o: &DeltaObserved) -> DeltaPlan {
    let d = spec_delta(spec);
    let mut out = DeltaPlan {
        latest: o.log.latest,
        landed: o.last.as_ref().map(|m| m.version),
        bytes_landed: o
            .landing
            .values()
            .filter(|objs| marker_in(objs).is_some())
            .flatten()
            .filter(|x| x.name.ends_with(".parquet"))
            .map(|x| x.size)
            .sum(),
        ..DeltaPlan::default()
    };
    for f in &o.log.refused {
        out.problems.push(format!(
            "Delta table {} uses {f}: bqsteward cannot load it exactly and loads nothing from it; turn the \
             feature off on the table (and rewrite its files), or remove this source",
            d.uri
        ));
    }
    if !out.problems.is_empty() {
        return out;
    }
    let Ok(root) = table_root(d) else {
        out.problems
            .push("spec.source.delta.uri is not an s3:// table root".into());
        return out;
    };
    let name = |folder: &str, f: &DeltaFile| {
        let h = crate::ingest::model::short_hash(&f.path);
        format!("{folder}/{h}-{}.parquet", safe_stem(&f.path))
    };
    let landed = |folder: String, files: &[DeltaFile], mut m: Marker| {
        m.files = files
            .iter()
            .map(|f| Landed {
                name: name(&folder, f).rsplit('/').next().unwrap_or_default().to_string(),
                source: lineage(&root, &f.path),
                bytes: f.size,
                rows: f.rows,
                partition: f.partition.clone(),
            })
            .collect();
        m.bytes_copied = files.iter().map(|f| f.size).sum();
        m.columns = o.log.columns.clone();
        VersionPlan {
            copies: files.iter().map(|f| (f.clone(), name(&folder, f))).collect(),
            folder,
            marker: m,
        }
    };
    if let Some(r) = &o.reload {
        match (r.versions, &o.last, &o.log.reload) {
            (None, _, _) => out.notes.push(format!(
                "reload {}: a Delta source reloads versions (versions=A-B), not prefix/since/until: nothing reloaded",
                r.id
            )),
            (Some(_), None, _) => out.notes.push(format!(
                "reload {}: nothing is loaded yet (the first load reads every live file)",
                r.id
            )),
            (Some((a, b)), Some(last), files) => {
                let files = files.clone().unwrap_or_default();
                if files.is_empty() {
                    out.notes.push(format!(
                        "reload {}: versions {a}-{b} added no file still in the table at version {}",
                        r.id, last.version
                    ));
                }
                // The files are removed and added again: their rows (or their compaction
                // group's) are replaced, read from S3 anew.
                let again = Commit {
                    version: last.version,
                    adds: files.iter().map(|f| (f.clone(), true)).collect(),
                    removes: files.iter().map(|f| (f.path.clone(), true)).collect(),
                };
                let (groups, step) = mirror::step(&last.groups, &again);
                if !files.is_empty() {
                    out.versions.push(landed(
                        reload_folder(last.version, &r.id),
                        &step.copies,
                        Marker {
                            version: last.version,
                            kind: "reload".into(),
                            deletes: step.deletes.iter().map(|p| lineage(&root, p)).collect(),
                            groups,
                            ..Marker::default()
                        },
                    ));
                }
            }
        }
    }
    if let Some(files) = &o.log.snapshot {
        out.versions.push(landed(
            folder(o.log.latest),
            files,
            Marker {
                version: o.log.latest,
                kind: "snapshot".into(),
                ..Marker::default()
            },
        ));
    } else {
        let mut groups = match out.versions.last() {
            Some(reload) => reload.marker.groups.clone(),
            None => o.last.as_ref().map(|m| m.groups.clone()).unwrap_or_default(),
        };
        for c in &o.log.commits {
            let (next, step) = mirror::step(&groups, c);
            groups = next;
            out.versions.push(landed(
                folder(c.version),
                &step.copies,
                Marker {
                    version: c.version,
                    kind: if step.compaction { "compaction" } else { "commit" }.into(),
                    deletes: step.deletes.iter().map(|p| lineage(&root, p)).collect(),
                    groups: groups.clone(),
                    ..Marker::default()
                },
            ));
        }
    }
    out.bytes_to_copy = out.versions.iter().map(|v| v.marker.bytes_copied).sum();
    out
}

/// The last path segment without its extension, for readable landing names.
fn safe_stem(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split('.').next().unwrap_or(base);
    stem.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(60)
        .collect()
}

/// Lands the planned versions in order: each file copied once (a file an interrupted run copied is
/// kept), then the version's marker. `read` counts the bytes read from S3.
pub async fn run(
    gcs: &dyn Storage,
    resource: &str,
    spec: &IngestedTableSpec,
    o: &DeltaObserved,
    p: &DeltaPlan,
    read: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, String> {
    let mut report = CopyReport::default();
    if !p.problems.is_empty() || p.versions.is_empty() {
        return Ok(report);
    }
    let d = spec_delta(spec);
    let (bucket, prefix) = landing_of(spec)?;
    let store = o.store.as_ref().ok_or("the S3 store was not opened (observe first)")?;
    let root = table_root(d)?;
    let base = root.path().trim_start_matches('/').to_string();
    for v in &p.versions {
        let present: BTreeSet<(&str, u64)> = o
            .landing
            .get(&v.folder)
            .into_iter()
            .flatten()
            .map(|x| (x.name.as_str(), x.size))
            .collect();
        if o.landing.get(&v.folder).is_some_and(|objs| marker_in(objs).is_some()) {
            continue;
        }
        let started = std::time::Instant::now();
        let mut copied = 0u64;
        for (f, name) in &v.copies {
            let object = format!("{prefix}{name}");
            if present.contains(&(object.as_str(), f.size)) {
                report.reused += 1;
                continue;
            }
            let source = delta_kernel::object_store::path::Path::from_url_path(format!("{base}{}", f.path))
                .map_err(|e| format!("Delta file path {:?}: {e}", f.path))?;
            let c = copy::copy(store.as_ref(), &source, f.size, gcs, &bucket, &object, read)
                .await
                .map_err(|e| refused(d, &format!("version {}", v.marker.version), &e))?;
            copied += c.bytes;
            report.files += 1;
        }
        let name = format!("{prefix}{}/{COMPLETE}", v.folder);
        let mut marker = v.marker.clone();
        marker.bytes_copied = copied;
        let body = serde_json::to_vec(&marker).expect("a marker serializes");
        match gcs.create(&bucket, &name, body, "application/json").await {
            Ok(_) => {}
            // Another run completed this version first: same content.
            Err(e) if e.status() == Some(412) => {}
            Err(e) => return Err(format!("cannot write gs://{bucket}/{name}: {e}")),
        }
        report.versions += 1;
        report.bytes += copied;
        let dest = &spec.destination;
        let mut ev = crate::audit::Event::new(
            crate::audit::Action::Pull,
            &format!("IngestedTable {resource}"),
            &format!("{}.{}.{}", dest.project, dest.dataset, dest.table),
            &v.folder,
            &v.folder,
        )
        .home(&dest.project, &dest.location);
        ev.files = Some(v.copies.len() as i64);
        ev.bytes = Some(copied as i64);
        ev.duration_ms = Some(started.elapsed().as_millis() as i64);
        ev.message = format!(
            "landed Delta version {} of {} ({}): {} files copied, {} deletes",
            v.marker.version,
            d.uri,
            v.marker.kind,
            v.copies.len(),
            v.marker.deletes.len()
        );
        crate::audit::record(ev);
    }
    Ok(report)
}
