//! Reading a Delta table's transaction log with `delta_kernel` (the Delta project's Rust kernel and
//! its default engine over `object_store`): the latest version, the features bqsteward must refuse,
//! the live files of a version (first load) and the files each later commit adds and removes.
//!
//! The kernel's calls block (its engine runs the I/O on a background runtime): callers run
//! [`read`] under `spawn_blocking`.

use delta_kernel::commit_range::{CommitRange, DeltaAction};
use delta_kernel::engine_data::{GetData, RowVisitor, TypedGetData as _};
use delta_kernel::expressions::ColumnName;
use delta_kernel::object_store::ObjectStore;
use delta_kernel::schema::{DataType, MapType};
use delta_kernel::{Engine, Snapshot};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// One data file as the log describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeltaFile {
    /// Path relative to the table root, as recorded in the log (percent-encoded).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Partition column → value (`None`: null).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partition: BTreeMap<String, Option<String>>,
    /// Rows, from the file's statistics when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// What one commit does to the data files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// Version.
    pub version: u64,
    /// Added files, with their `dataChange` flag.
    pub adds: Vec<(DeltaFile, bool)>,
    /// Removed paths, with their `dataChange` flag.
    pub removes: Vec<(String, bool)>,
}

/// What was read of the table.
#[derive(Clone, Debug, Default)]
pub struct LogRead {
    /// The latest version.
    pub latest: u64,
    /// Features the reader cannot honour, by name (nothing is loaded while any is present).
    pub refused: Vec<String>,
    /// First load: the live files at `latest`.
    pub snapshot: Option<Vec<DeltaFile>>,
    /// Later loads: the commits after the last loaded version, in order.
    pub commits: Vec<Commit>,
    /// A reload: the files the requested versions added that are still live at the last landed
    /// version.
    pub reload: Option<Vec<DeltaFile>>,
    /// The latest version's top-level columns and their BigQuery types (partition columns
    /// included): what a data file may hold besides the declared columns.
    pub columns: Vec<(String, String)>,
}

/// The BigQuery type a Delta column loads as from Parquet (complex types as their BigQuery
/// counterparts' closest scalar: they are only ever dropped, never selected, unless declared).
fn bigquery_type(t: &DataType) -> &'static str {
    use delta_kernel::schema::PrimitiveType as P;
    match t {
        DataType::Primitive(p) => match p {
            P::String => "STRING",
            P::Long | P::Integer | P::Short | P::Byte => "INT64",
            P::Float | P::Double => "FLOAT64",
            P::Boolean => "BOOL",
            P::Binary => "BYTES",
            P::Date => "DATE",
            P::Timestamp => "TIMESTAMP",
            P::TimestampNtz => "DATETIME",
            P::Decimal(d) if d.precision() <= 38 && d.scale() <= 9 => "NUMERIC",
            P::Decimal(_) => "BIGNUMERIC",
            _ => "STRING",
        },
        _ => "JSON",
    }
}

/// Reads the log: from `after` (the last loaded version) to the latest, or the live files of the
/// latest version when nothing was loaded yet. At most `max_commits` commits are read.
pub fn read(
    engine: Arc<dyn Engine>,
    table_root: &url::Url,
    after: Option<u64>,
    max_commits: u64,
    reload: Option<(u64, u64)>,
) -> Result<LogRead, String> {
    let snapshot = Snapshot::builder_for(table_root.as_str())
        .build(engine.as_ref())
        .map_err(|e| describe(&e))?;
    let mut out = LogRead {
        latest: snapshot.version(),
        ..LogRead::default()
    };
    refusals(&snapshot, &mut out.refused);
    out.columns = snapshot
        .schema()
        .fields()
        .map(|f| (f.name().clone(), bigquery_type(f.data_type()).to_string()))
        .collect();
    if let (Some(at), Some((from, to))) = (after, reload)
        && from <= at
    {
        let at_snapshot = if at == out.latest {
            snapshot.clone()
        } else {
            Snapshot::builder_for(table_root.as_str())
                .at_version(at)
                .build(engine.as_ref())
                .map_err(|e| describe(&e))?
        };
        let (live, _) = live_files(engine.as_ref(), at_snapshot)?;
        let (commits, _) = read_commits(&engine, table_root, from, to.min(at))?;
        let added: std::collections::BTreeSet<String> = commits
            .into_iter()
            .flat_map(|c| c.adds.into_iter().map(|(f, _)| f.path))
            .collect();
        out.reload = Some(live.into_iter().filter(|f| added.contains(&f.path)).collect());
    }
    match after {
        None => {
            let (files, dv) = live_files(engine.as_ref(), snapshot)?;
            if dv {
                push_once(&mut out.refused, DELETION_VECTORS);
            }
            out.snapshot = Some(files);
        }
        Some(v) if v >= out.latest => {}
        Some(v) => {
            let (commits, dv) = read_commits(&engine, table_root, v + 1, out.latest.min(v + max_commits))?;
            if dv {
                push_once(&mut out.refused, DELETION_VECTORS);
            }
            out.commits = commits;
        }
    }
    Ok(out)
}

/// The data files commits `from..=to` add and remove, and whether any action carries a deletion
/// vector.
fn read_commits(
    engine: &Arc<dyn Engine>,
    table_root: &url::Url,
    from: u64,
    to: u64,
) -> Result<(Vec<Commit>, bool), String> {
    let range = CommitRange::builder_for(table_root.as_str(), from)
        .with_end_version(to)
        .build(engine.as_ref())
        .map_err(|e| describe(&e))?;
    let (mut out, mut dv) = (Vec::new(), false);
    for c in range
        .commits(engine.clone(), None, &[DeltaAction::Add, DeltaAction::Remove])
        .map_err(|e| describe(&e))?
    {
        let c = c.map_err(|e| describe(&e))?;
        let mut visitor = ActionVisitor::default();
        for batch in c.get_actions(engine.as_ref()).map_err(|e| describe(&e))? {
            let batch = batch.map_err(|e| describe(&e))?;
            visitor.visit_rows_of(batch.as_ref()).map_err(|e| describe(&e))?;
        }
        dv |= visitor.deletion_vector;
        out.push(Commit {
            version: c.version(),
            adds: visitor.adds,
            removes: visitor.removes,
        });
    }
    Ok((out, dv))
}

/// The live files of a snapshot, and whether any carries a deletion vector.
fn live_files(engine: &dyn Engine, snapshot: delta_kernel::SnapshotRef) -> Result<(Vec<DeltaFile>, bool), String> {
    let mut files = Vec::new();
    let scan = snapshot.scan_builder().build().map_err(|e| describe(&e))?;
    for meta in scan.scan_metadata(engine).map_err(|e| describe(&e))? {
        let meta = meta.map_err(|e| describe(&e))?;
        files = meta
            .visit_scan_files(files, |files: &mut Vec<(DeltaFile, bool)>, f| {
                files.push((
                    DeltaFile {
                        path: f.path.clone(),
                        size: u64::try_from(f.size).unwrap_or(0),
                        partition: f
                            .partition_values
                            .iter()
                            .map(|(k, v)| (k.clone(), Some(v.clone())))
                            .collect(),
                        rows: f.stats.as_ref().map(|s| s.num_records),
                    },
                    f.dv_info.has_vector(),
                ))
            })
            .map_err(|e| describe(&e))?;
    }
    let dv = files.iter().any(|(_, dv)| *dv);
    Ok((files.into_iter().map(|(f, _)| f).collect(), dv))
}

const DELETION_VECTORS: &str = "deletionVectors (rows deleted by a deletion vector would still be loaded)";

fn push_once(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Table features bqsteward does not honour: deletion vectors (BigQuery would load rows the vector
/// deletes) and column mapping (Parquet column names are not the table's).
fn refusals(snapshot: &Snapshot, out: &mut Vec<String>) {
    let p = snapshot.table_properties();
    if p.enable_deletion_vectors == Some(true) {
        push_once(out, DELETION_VECTORS);
    }
    if let Some(mode) = p.column_mapping_mode
        && !matches!(mode, delta_kernel::table_features::ColumnMappingMode::None)
    {
        push_once(
            out,
            &format!("columnMapping (mode {mode:?}: the Parquet files' column names are not the table's)"),
        );
    }
}

/// A kernel error as one line, credentials never included (the kernel's messages hold URLs and
/// S3 error bodies, not keys).
pub fn describe(e: &delta_kernel::KernelError) -> String {
    let text = e.to_string();
    let line = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if line.len() > 600 {
        format!("{}…", &line[..line.floor_char_boundary(600)])
    } else {
        line
    }
}

#[derive(Default)]
struct ActionVisitor {
    adds: Vec<(DeltaFile, bool)>,
    removes: Vec<(String, bool)>,
    deletion_vector: bool,
}

static COLUMNS: LazyLock<(Vec<ColumnName>, Vec<DataType>)> = LazyLock::new(|| {
    let names = [
        "add.path",
        "add.partitionValues",
        "add.size",
        "add.dataChange",
        "add.stats",
        "add.deletionVector.storageType",
        "remove.path",
        "remove.dataChange",
        "remove.deletionVector.storageType",
    ];
    let types = vec![
        DataType::STRING,
        DataType::Map(Box::new(MapType::new(DataType::STRING, DataType::STRING, true))),
        DataType::LONG,
        DataType::BOOLEAN,
        DataType::STRING,
        DataType::STRING,
        DataType::STRING,
        DataType::BOOLEAN,
        DataType::STRING,
    ];
    (names.iter().map(|n| ColumnName::new(n.split('.'))).collect(), types)
});

impl RowVisitor for ActionVisitor {
    fn selected_column_names_and_types(&self) -> (&'static [ColumnName], &'static [DataType]) {
        (&COLUMNS.0, &COLUMNS.1)
    }

    fn visit<'a>(&mut self, row_count: usize, getters: &[&'a dyn GetData<'a>]) -> delta_kernel::KernelResult<()> {
        for i in 0..row_count {
            if let Some(path) = getters[0].get_opt(i, "add.path")? {
                let path: String = path;
                let partition: Option<std::collections::HashMap<String, String>> =
                    getters[1].get_opt(i, "add.partitionValues")?;
                let size: Option<i64> = getters[2].get_opt(i, "add.size")?;
                let change: Option<bool> = getters[3].get_opt(i, "add.dataChange")?;
                let stats: Option<String> = getters[4].get_opt(i, "add.stats")?;
                let dv: Option<String> = getters[5].get_opt(i, "add.deletionVector.storageType")?;
                self.deletion_vector |= dv.is_some();
                let rows = stats
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .and_then(|v| v.get("numRecords").and_then(serde_json::Value::as_u64));
                self.adds.push((
                    DeltaFile {
                        path,
                        size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                        partition: partition
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, Some(v)))
                            .collect(),
                        rows,
                    },
                    change.unwrap_or(true),
                ));
            }
            if let Some(path) = getters[6].get_opt(i, "remove.path")? {
                let change: Option<bool> = getters[7].get_opt(i, "remove.dataChange")?;
                let dv: Option<String> = getters[8].get_opt(i, "remove.deletionVector.storageType")?;
                self.deletion_vector |= dv.is_some();
                self.removes.push((path, change.unwrap_or(true)));
            }
        }
        Ok(())
    }
}

/// The S3 store of a table's bucket, with the reader's keys.
pub struct S3Access {
    /// `s3://bucket/`.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Endpoint override.
    pub endpoint: Option<String>,
    /// Access key id.
    pub key_id: crate::dbsource::secrets::SecretText,
    /// Secret key.
    pub secret: crate::dbsource::secrets::SecretText,
    /// Session token.
    pub token: Option<crate::dbsource::secrets::SecretText>,
}

/// The object store for `a` (path-style requests; plain http only when the endpoint says so).
pub fn store(a: &S3Access) -> Result<Arc<dyn ObjectStore>, String> {
    use delta_kernel::object_store::aws::AmazonS3Builder;
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&a.bucket)
        .with_region(&a.region)
        .with_access_key_id(a.key_id.expose())
        .with_secret_access_key(a.secret.expose())
        .with_virtual_hosted_style_request(false);
    if let Some(t) = &a.token {
        b = b.with_token(t.expose());
    }
    if let Some(e) = &a.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    b.build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| format!("cannot open the S3 client: {e}"))
}
