//! `bqsteward bench day`: a simulated day of Viant's load — 1.7 M files over 100 tables, arriving
//! uniformly, every table reconciled each cycle — through the production cycle of a `Lexical`
//! source: the discovery filter, ledger decoding, the table plan (loads, adaptive batching, next
//! cursor). In-process with a simulated clock, bucket (sorted names answering `startOffset` in
//! pages of 1,000, like `objects.list`) and ledger (rows read from the cursor, as the clustered
//! ledger query does). A batch's files count as loaded `--load-seconds` after their cycle.
//!
//! Prints per cycle length: per table-cycle (mean and worst) list calls, objects listed, ledger
//! rows and bytes read; per day load jobs per table (most and fewest, against the 1,500 budget),
//! files loaded and left, CPU seconds of bqsteward's work, peak memory, and the file-to-loaded
//! delay p50/p99. Ledger bytes are what BigQuery would scan: the columns the read selects, 8
//! bytes per integer and 2 plus the length per string.

use super::ledger::{Cursor, add_row};
use super::model::Ledger;
use super::target::{Observed, Target, plan_table};
use crate::cloud::storage::ObjectInfo;

/// Objects per `objects.list` page.
const PAGE: usize = 1000;
const DAY_MS: i64 = 86_400_000;
/// 2026-11-27T00:00:00Z.
const DAY_START: i64 = 1_795_737_600_000;

/// What is simulated.
#[derive(Clone, Debug)]
pub struct Day {
    /// Tables.
    pub tables: usize,
    /// Files a day over all tables.
    pub files: usize,
    /// Time between two cycles of a table (ms).
    pub cycle_ms: i64,
    /// `source.lateArrival` (ms).
    pub late_ms: i64,
    /// Seconds from a cycle to its files being loaded.
    pub load_ms: i64,
}

/// The figures of one simulated day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Table-cycles run.
    pub cycles: usize,
    /// `objects.list` calls: total and worst per table-cycle.
    pub list_calls: (usize, usize),
    /// Objects listed: total and worst.
    pub objects: (usize, usize),
    /// Ledger rows read: total and worst.
    pub ledger_rows: (usize, usize),
    /// Ledger bytes read: total and worst.
    pub ledger_bytes: (u64, u64),
    /// Load jobs per table: most and fewest.
    pub jobs: (u32, u32),
    /// Files loaded.
    pub loaded: usize,
    /// Files arrived by the day's last cycle and not loaded by it (filling a batch, or over the
    /// budget).
    pub left: usize,
    /// CPU seconds of discovery, ledger decoding and planning.
    pub cpu_s: f64,
    /// File-to-loaded delay p50 and p99 (seconds).
    pub delay_s: (f64, f64),
}

/// One table's simulated source and ledger: file `g` (0-based over yesterday and today) arrives
/// at `arrival(g)`; `loaded[g]` is when it was loaded.
struct Table {
    target: Target,
    per_day: usize,
    offset_ms: i64,
    loaded: Vec<Option<i64>>,
    cursor: Option<Cursor>,
    jobs_today: u32,
}

impl Table {
    fn arrival(&self, g: usize) -> i64 {
        DAY_START - DAY_MS + self.offset_ms + (g as i64 * DAY_MS) / self.per_day as i64
    }

    /// Files arrived by `now`.
    fn arrived(&self, now: i64) -> usize {
        let since = now - (DAY_START - DAY_MS + self.offset_ms);
        if since < 0 {
            return 0;
        }
        ((since as i128 * self.per_day as i128 / DAY_MS as i128) as usize + 1).min(2 * self.per_day)
    }

    fn name(&self, g: usize) -> String {
        let at = self.arrival(g);
        format!(
            "{}d{:05}/h{:02}/part-{g:09}.json",
            self.target.discovery.uri_prefix(),
            at / DAY_MS,
            (at % DAY_MS) / 3_600_000
        )
    }

    fn index_of(uri: &str) -> usize {
        uri.rsplit("part-")
            .next()
            .and_then(|s| s.strip_suffix(".json"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The ledger row of file `g` loaded at `at` (the columns [`add_row`] reads).
fn ledger_row(uri: String, g: usize, arrival: i64, at: i64) -> Vec<Option<String>> {
    super::bench::ledger_row(uri, g as i64 + 1, 2000, arrival, &format!("{at:032x}"))
}

fn row_bytes(row: &[Option<String>]) -> u64 {
    // generation, size, updated_ms and reloaded are integers; the rest strings.
    row.iter()
        .enumerate()
        .map(|(i, v)| match (i, v) {
            (1..=3 | 11, _) => 8,
            (_, Some(s)) => 2 + s.len() as u64,
            (_, None) => 0,
        })
        .sum()
}

/// Simulates one day.
pub fn simulate(day: &Day) -> Figures {
    let per_day = day.files / day.tables.max(1);
    let spec = |j: usize| {
        serde_yaml::from_str(&format!(
            "source: {{uri: 'gs://viant-landing/t{j:03}/', format: NEWLINE_DELIMITED_JSON, include: '**/*.json', \
             ordering: Lexical, lateArrival: {}s}}\n\
             destination: {{project: viant-data, dataset: events, table: t{j:03}}}\n\
             loadPolicy: {{dailyJobBudget: 1500}}\n\
             schema:\n- {{name: id, type: INT64}}\n",
            day.late_ms / 1000
        ))
        .expect("synthetic spec")
    };
    let mut tables: Vec<Table> = (0..day.tables)
        .map(|j| {
            let target = Target::new(&format!("viant/t{j:03}"), &spec(j), None).expect("valid spec");
            let mut t = Table {
                target,
                per_day,
                offset_ms: (j as i64 * DAY_MS) / (per_day * day.tables).max(1) as i64,
                loaded: vec![None; 2 * per_day],
                cursor: None,
                jobs_today: 0,
            };
            // Yesterday's files are loaded; the last full listing was an hour before midnight.
            for g in 0..per_day {
                t.loaded[g] = Some(t.arrival(g) + 60_000);
            }
            t.cursor = Some(Cursor {
                uri: t.name(per_day - 1),
                full_listing_ms: DAY_START - 3_600_000,
                token: String::new(),
                totals: Default::default(),
            });
            t
        })
        .collect();
    let mut f = Figures::default();
    let mut delays: Vec<i64> = Vec::new();
    let mut cpu = 0.0;
    let mut now = DAY_START;
    while now < DAY_START + DAY_MS {
        for t in &mut tables {
            let arrived = t.arrived(now);
            let c = t.cursor.clone();
            let full = c
                .as_ref()
                .is_none_or(|c| now - c.full_listing_ms >= t.target.listing.full_every_ms);
            let from = if full {
                0
            } else {
                c.as_ref().map_or(0, |c| Table::index_of(&c.uri))
            };
            // The listing, page by page, and the ledger rows past the cursor (generated untimed).
            let objects: Vec<ObjectInfo> = (from..arrived)
                .map(|g| ObjectInfo {
                    name: t.name(g)["gs://viant-landing/".len()..].to_string(),
                    size: 2_000,
                    generation: g as i64 + 1,
                    updated: timestamp(t.arrival(g)),
                })
                .collect();
            let rows: Vec<Vec<Option<String>>> = (from..arrived)
                .filter_map(|g| t.loaded[g].map(|at| ledger_row(t.name(g), g, t.arrival(g), at)))
                .collect();
            let pages = objects.len().div_ceil(PAGE).max(1);
            let bytes: u64 = rows.iter().map(|r| row_bytes(r)).sum();
            let (n_objects, n_rows) = (objects.len(), rows.len());
            let started = super::bench::cpu_seconds();
            let listing = objects
                .into_iter()
                .filter_map(|o| t.target.discovery.select(o))
                .collect();
            let mut ledger = Ledger::default();
            for r in rows {
                add_row(&mut ledger, r).expect("synthetic row");
            }
            let o = Observed {
                listing,
                ledger,
                stats: super::ledger::Stats {
                    jobs_today: i64::from(t.jobs_today),
                    files_loaded: 1,
                    ..Default::default()
                },
                listed_from: (!full).then(|| c.as_ref().map(|c| c.uri.clone())).flatten(),
                cursor: c,
                table: None,
            };
            let p = plan_table(&t.target, &o, now);
            cpu += super::bench::cpu_seconds() - started;
            for b in p.loads.resumed.iter().chain(&p.loads.new) {
                t.jobs_today += 1;
                for file in &b.files {
                    let g = Table::index_of(&file.uri);
                    t.loaded[g] = Some(now + day.load_ms);
                    delays.push(now + day.load_ms - t.arrival(g));
                }
            }
            if let Some(next) = p.next_cursor {
                t.cursor = Some(next.cursor);
            }
            f.cycles += 1;
            f.list_calls = (f.list_calls.0 + pages, f.list_calls.1.max(pages));
            f.objects = (f.objects.0 + n_objects, f.objects.1.max(n_objects));
            f.ledger_rows = (f.ledger_rows.0 + n_rows, f.ledger_rows.1.max(n_rows));
            f.ledger_bytes = (f.ledger_bytes.0 + bytes, f.ledger_bytes.1.max(bytes));
        }
        now += day.cycle_ms;
    }
    let last_cycle = now - day.cycle_ms;
    f.jobs = (
        tables.iter().map(|t| t.jobs_today).max().unwrap_or(0),
        tables.iter().map(|t| t.jobs_today).min().unwrap_or(0),
    );
    f.loaded = delays.len();
    f.left = tables
        .iter()
        .map(|t| {
            (per_day..t.arrived(last_cycle))
                .filter(|&g| t.loaded[g].is_none())
                .count()
        })
        .sum();
    f.cpu_s = cpu;
    delays.sort_unstable();
    let q = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |ms| *ms as f64 / 1000.0)
    };
    f.delay_s = (q(0.5), q(0.99));
    f
}

/// The table `bqsteward bench day` prints: one block per cycle length.
pub fn report(tables: usize, files: usize, cycles_ms: &[i64], late_ms: i64, load_ms: i64) -> String {
    let mut out = format!(
        "a simulated day: {files} files over {tables} tables arriving uniformly, source.ordering Lexical, \
         lateArrival {}s, loads done {}s after their cycle, budget 1,500 load jobs per table\n",
        late_ms / 1000,
        load_ms / 1000
    );
    for &cycle_ms in cycles_ms {
        let f = simulate(&Day {
            tables,
            files,
            cycle_ms,
            late_ms,
            load_ms,
        });
        let n = f.cycles.max(1) as f64;
        out.push_str(&format!(
            "\ncycle every {}s: {} table-cycles\n\
             \x20 per table-cycle (mean / worst): list calls {:.2} / {}, objects {:.0} / {}, ledger rows {:.0} / {}, \
             ledger bytes {:.0} / {}\n\
             \x20 per day: list calls {}, ledger rows {}, ledger MB {:.1}, load jobs per table {} most / {} fewest, \
             files loaded {}, left {}\n\
             \x20 cpu {:.1} s for the day, peak memory {:.0} MiB, delay upload → loaded p50 {:.0} s, p99 {:.0} s\n",
            cycle_ms / 1000,
            f.cycles,
            f.list_calls.0 as f64 / n,
            f.list_calls.1,
            f.objects.0 as f64 / n,
            f.objects.1,
            f.ledger_rows.0 as f64 / n,
            f.ledger_rows.1,
            f.ledger_bytes.0 as f64 / n,
            f.ledger_bytes.1,
            f.list_calls.0,
            f.ledger_rows.0,
            f.ledger_bytes.0 as f64 / 1e6,
            f.jobs.0,
            f.jobs.1,
            f.loaded,
            f.left,
            f.cpu_s,
            super::bench::peak_mib(),
            f.delay_s.0,
            f.delay_s.1,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_day_loads_everything_within_the_budget_and_reads_only_the_window() {
        let day = |cycle_ms| Day {
            tables: 2,
            files: 2 * 3_000,
            cycle_ms,
            late_ms: 300_000,
            load_ms: 30_000,
        };
        // 15-minute cycles: one job a cycle, the delay at most a cycle plus the load.
        let f = simulate(&day(900_000));
        assert_eq!(f.cycles, 2 * 96);
        assert_eq!(f.jobs, (96, 95), "the second table's first file arrives after 00:00");
        assert_eq!(f.left, 0);
        assert!(f.delay_s.1 <= 930.0, "{f:?}");
        // Each cycle reads the window (new files, the late-arrival window, a cycle of lag of
        // the cursor: about 70 files), not the 3,000 files of yesterday — except the two daily
        // full listings at 23:00, 5,876 objects in 6 pages each.
        assert_eq!((f.objects.1, f.list_calls.1), (5_876, 6));
        assert!(f.objects.0 < 2 * 5_876 + 190 * 100, "{f:?}");
        assert!(f.ledger_rows.0 < 2 * 5_876 + 190 * 100, "{f:?}");
        // 20-second cycles: 4,320 cycles and 3,000 files against a budget of 1,500; adaptive
        // batching spreads the jobs over the whole day: the budget is spent at its end, and
        // only the last minutes' files wait for the next day's (seconds away).
        let f = simulate(&day(20_000));
        assert_eq!(f.jobs, (1_500, 1_500), "{f:?}");
        assert!(f.left < 10 && f.delay_s.1 < 300.0, "{f:?}");
    }
}
