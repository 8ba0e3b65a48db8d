//! `bqsteward bench listing`: one cycle of a table that has a long history and receives a few new
//! files, listed whole (`source.ordering: Unordered`) and from its cursor (`Lexical`), for two
//! history sizes, side by side. In-process: a simulated bucket (sorted names answering Cloud
//! Storage's `prefix` / `startOffset` in pages of 1,000, like `objects.list`) and a simulated
//! ledger (rows sorted by URI, read from the cursor as the clustered ledger query does), through
//! the production discovery filter, ledger decoding and load planner. Prints per cycle: list
//! calls, objects returned, ledger rows read, CPU milliseconds of bqsteward's work.

use super::ledger::add_row;
use super::model::Ledger;
use super::plan::plan;
use super::source::Discovery;
use crate::cloud::storage::ObjectInfo;
use crate::crd::ingested_table::Ordering;

/// Objects per `objects.list` page.
const PAGE: usize = 1000;

/// One cycle's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    /// `objects.list` calls (pages).
    pub list_calls: usize,
    /// Objects the listing returned.
    pub objects: usize,
    /// Ledger rows read.
    pub ledger_rows: usize,
    /// Files the plan loads.
    pub to_load: usize,
    /// CPU milliseconds (user + system) of discovery, ledger decoding and planning.
    pub cpu_ms: f64,
}

fn name(i: usize) -> String {
    // Arrival order: hour folders, then a sequence number.
    format!(
        "events/2026/11/{:02}/{:02}/part-{i:010}.json",
        1 + (i / 400_000) % 28,
        (i / 17_000) % 24
    )
}

/// One cycle with `history` files loaded and `new` arrived, listed whole or from the cursor.
pub fn cycle(history: usize, new: usize, lexical: bool) -> Cycle {
    let source = super::bench::source("gs://acme-landing/events/", lexical.then_some(Ordering::Lexical));
    let discovery = Discovery::new(&source).expect("valid source");
    let total = history + new;
    // The cursor: the last file loaded (lateArrival passed for it).
    let first = if lexical { history.saturating_sub(1) } else { 0 };
    let object = |i: usize| ObjectInfo {
        name: name(i),
        size: 2_000,
        generation: 1_700_000_000_000_000 + i as i64,
        updated: "2026-11-27T10:00:00Z".into(),
    };
    let row = |i: usize| super::bench::loaded_row(format!("gs://acme-landing/{}", name(i)), i);
    let mut cpu = 0.0;
    let mut timed = |f: &mut dyn FnMut()| {
        let c = super::bench::cpu_seconds();
        f();
        cpu += super::bench::cpu_seconds() - c;
    };
    // The listing, page by page (generated outside the timed part).
    let (mut files, mut calls) = (Vec::new(), 0);
    let mut i = first;
    loop {
        let mut page: Vec<ObjectInfo> = (i..total.min(i + PAGE)).map(object).collect();
        calls += 1;
        i += page.len();
        timed(&mut || files.extend(page.drain(..).filter_map(|o| discovery.select(o))));
        if i >= total {
            break;
        }
    }
    // The ledger rows at or after the cursor (all of them without one).
    let mut ledger = Ledger::default();
    let mut read = 0;
    let mut j = first;
    while j < history {
        let mut page: Vec<Vec<Option<String>>> = (j..history.min(j + 50_000)).map(row).collect();
        j += page.len();
        read += page.len();
        timed(&mut || {
            for r in page.drain(..) {
                add_row(&mut ledger, r).expect("synthetic row");
            }
        });
    }
    let settings = super::bench::settings("acme-data.events.events", &discovery, 10_000);
    let mut to_load = 0;
    timed(&mut || to_load = plan(&settings, &files, &ledger).files_to_load());
    Cycle {
        list_calls: calls,
        objects: files.len(),
        ledger_rows: read,
        to_load,
        cpu_ms: cpu * 1000.0,
    }
}

/// The table `bqsteward bench listing` prints: one line per history size and mode.
pub fn report(histories: &[usize], new: usize) -> String {
    let mut out = format!(
        "one cycle of a table with N files loaded and {new} new (pages of {PAGE}):\n\
         {:>12}  {:<10} {:>10} {:>12} {:>12} {:>8} {:>10}\n",
        "history", "ordering", "list calls", "objects", "ledger rows", "to load", "cpu ms"
    );
    for &h in histories {
        for lexical in [false, true] {
            let c = cycle(h, new, lexical);
            out.push_str(&format!(
                "{h:>12}  {:<10} {:>10} {:>12} {:>12} {:>8} {:>10.1}\n",
                if lexical { "Lexical" } else { "Unordered" },
                c.list_calls,
                c.objects,
                c.ledger_rows,
                c.to_load,
                c.cpu_ms
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_cycle_costs_the_same_whatever_the_history() {
        let (small, large) = (cycle(2_000, 100, true), cycle(40_000, 100, true));
        assert_eq!(
            (small.list_calls, small.objects, small.ledger_rows, small.to_load),
            (1, 101, 1, 100)
        );
        assert_eq!(
            (large.list_calls, large.objects, large.ledger_rows, large.to_load),
            (1, 101, 1, 100)
        );
        let whole = cycle(40_000, 100, false);
        assert_eq!(
            (whole.list_calls, whole.objects, whole.ledger_rows, whole.to_load),
            (41, 40_100, 40_000, 100)
        );
    }
}
