//! `bqsteward bench`: the load planner on synthetic listings, in-process. Prints CPU seconds and
//! peak memory (the figures in the README come from here).

use super::ledger::add_row;
use super::model::Ledger;
use super::plan::{Settings, plan};
use super::source::Discovery;
use crate::cloud::storage::ObjectInfo;
use crate::crd::ingested_table::{LoadMode, ReuploadPolicy, Source, SourceFormat};
use std::time::Instant;

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Objects listed.
    pub objects: usize,
    /// Of which in the ledger.
    pub loaded: usize,
    /// Files the plan loads now.
    pub to_load: usize,
    /// Batches planned.
    pub batches: usize,
    /// CPU seconds (user + system) of discovery + ledger + plan.
    pub cpu_s: f64,
    /// Wall seconds of the same.
    pub wall_s: f64,
    /// Peak resident memory of the process (MiB), synthetic input included.
    pub peak_mib: f64,
}

/// A LOADED ledger row of a synthetic file (the columns [`add_row`] reads), batch of 1,000.
pub(crate) fn loaded_row(uri: String, i: usize) -> Vec<Option<String>> {
    ledger_row(
        uri,
        1_700_000_000_000_000 + i as i64,
        1000,
        1_795_000_000_000,
        &format!("{:032x}", i / 1000),
    )
}

/// A LOADED ledger row (the columns [`add_row`] reads).
pub(crate) fn ledger_row(uri: String, generation: i64, size: u64, updated_ms: i64, batch: &str) -> Vec<Option<String>> {
    let s = |v: String| Some(v);
    vec![
        s(uri),
        s(generation.to_string()),
        s(size.to_string()),
        s(updated_ms.to_string()),
        s("LOADED".into()),
        s(batch.to_string()),
        s("APPEND".into()),
        s(String::new()),
        None,
        None,
        s("abc".into()),
        s("0".into()),
    ]
}

/// A synthetic file source: NEWLINE_DELIMITED_JSON under `uri`, `**/*.json`.
pub(crate) fn source(uri: &str, ordering: Option<crate::crd::ingested_table::Ordering>) -> Source {
    Source {
        delta: None,
        uri: uri.into(),
        include: Some("**/*.json".into()),
        database: None,
        landing: None,
        format: Some(SourceFormat::NewlineDelimitedJson),
        snapshot_marker: None,
        csv: None,
        ordering,
        late_arrival: None,
        full_listing_every: None,
    }
}

/// The planner settings of a synthetic incremental table over `discovery`.
pub(crate) fn settings(table: &str, discovery: &Discovery, max_files_per_job: usize) -> Settings {
    Settings {
        table: table.into(),
        mode: LoadMode::Incremental,
        max_files_per_job,
        max_bytes_per_job: None,
        daily_job_budget: 1500,
        jobs_today: 0,
        reuploads: ReuploadPolicy::Load,
        schema_hash: "abc".into(),
        snapshot_marker: discovery.marker.clone(),
        source_prefix: discovery.uri_prefix(),
        reload: None,
        now_ms: 1_795_400_000_000,
    }
}

pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Peak resident set size (VmHWM) in MiB, from /proc (Linux).
pub fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Runs the benchmark.
pub fn run(objects: usize, loaded: usize) -> Figures {
    let source = source("gs://acme-landing/orders/", None);
    let discovery = Discovery::new(&source).expect("valid source");
    let name = |i: usize| {
        format!(
            "orders/2026-11-{:02}/h{:02}/part-{i:08}.json",
            1 + (i / 40_000) % 28,
            (i / 1_700) % 24
        )
    };
    // Synthetic input, generated lazily and handed over one item at a time, as the Cloud
    // Storage pages and the ledger query pages are in production.
    let listing = (0..objects).map(|i| ObjectInfo {
        name: name(i),
        size: 1_000 + (i as u64 % 5_000),
        generation: 1_700_000_000_000_000 + i as i64,
        updated: format!(
            "2026-11-{:02}T{:02}:{:02}:00Z",
            1 + (i / 40_000) % 28,
            (i / 1_700) % 24,
            i % 60
        ),
    });
    let ledger_rows = (0..loaded).map(|i| loaded_row(format!("gs://acme-landing/{}", name(i)), i));

    // Only bqsteward's work is timed: each page is generated first, then handed over.
    let mut cpu = 0.0;
    let mut wall = std::time::Duration::ZERO;
    let mut timed = |f: &mut dyn FnMut()| {
        let (c, w) = (cpu_seconds(), Instant::now());
        f();
        cpu += cpu_seconds() - c;
        wall += w.elapsed();
    };
    let mut files = Vec::new();
    let mut listing = listing.peekable();
    while listing.peek().is_some() {
        let page: Vec<ObjectInfo> = listing.by_ref().take(1000).collect();
        let mut page = page;
        timed(&mut || files.extend(page.drain(..).filter_map(|o| discovery.select(o))));
    }
    let mut ledger = Ledger::default();
    let mut rows = ledger_rows.peekable();
    while rows.peek().is_some() {
        let mut page: Vec<Vec<Option<String>>> = rows.by_ref().take(50_000).collect();
        timed(&mut || {
            for row in page.drain(..) {
                add_row(&mut ledger, row).expect("synthetic row");
            }
        });
    }
    let settings = settings("acme-data.sales.orders", &discovery, 1000);
    let mut p = None;
    timed(&mut || p = Some(plan(&settings, &files, &ledger)));
    let p = p.expect("planned");
    let figures = Figures {
        objects,
        loaded,
        to_load: p.files_to_load(),
        batches: p.new.len(),
        cpu_s: cpu,
        wall_s: wall.as_secs_f64(),
        peak_mib: peak_mib(),
    };
    drop((p, ledger, files));
    figures
}
