//! The landing prefix of a database source: one folder ("set") per pull, written in an order that
//! makes a crash harmless, and what a listing of it says.
//!
//! - `pull-<n>/` (incremental), `snap-<n>/` (snapshot mode) and `day-<YYYY-MM-DD>/` (daily reload),
//!   `n` zero-padded so names sort like numbers.
//! - `_PULL` is created first (only if absent: `ifGenerationMatch=0`), recording the range the pull
//!   reads — a second process starting the same pull fails right there.
//! - `part-<k>.jsonl` data files, each created only if absent, then `_REJECTED.jsonl` (rows with
//!   values BigQuery cannot hold) when there are any.
//! - `_COMPLETE` last, with the pull's high mark and counts. Only sets with `_COMPLETE` are loaded;
//!   the files of a set without it (an interrupted pull) are never loaded and are deleted by a later
//!   pull, which starts again from the last complete one.

use crate::cloud::storage::ObjectInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The intent object, created first.
pub const INTENT: &str = "_PULL";
/// The completion marker, created last.
pub const COMPLETE: &str = "_COMPLETE";
/// Rows not loaded, with the key and the columns at fault.
pub const REJECTED: &str = "_REJECTED.jsonl";

/// The kind of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    /// Incremental pull.
    Pull,
    /// Whole table (snapshot mode).
    Snap,
    /// Daily reload of one day.
    Day,
}

impl SetKind {
    /// Folder prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            SetKind::Pull => "pull-",
            SetKind::Snap => "snap-",
            SetKind::Day => "day-",
        }
    }
}

/// The folder name of a numbered set.
pub fn numbered(kind: SetKind, n: u64) -> String {
    format!("{}{n:010}", kind.prefix())
}

/// The data file name of part `k`.
pub fn part(k: u32) -> String {
    format!("part-{k:05}.jsonl")
}

/// What `_PULL` and `_COMPLETE` hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// Rows read are at or after this watermark (text as the database prints it; none = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<String>,
    /// Rows read are before this (day reloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<String>,
    /// The high mark: the greatest watermark of the snapshot (for times, bounded by the database's
    /// clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<String>,
    /// The database's clock at the snapshot (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_time: Option<String>,
    /// Rows written to data files.
    #[serde(default)]
    pub rows: u64,
    /// Data files.
    #[serde(default)]
    pub files: u32,
    /// Bytes of data files.
    #[serde(default)]
    pub bytes: u64,
    /// Rows not loaded (see `_REJECTED.jsonl`).
    #[serde(default)]
    pub rejected: u64,
}

/// One set, as listed.
#[derive(Clone, Debug, Default)]
pub struct SetState {
    /// `_PULL` exists.
    pub started: bool,
    /// `_COMPLETE` exists (its generation).
    pub complete: Option<i64>,
    /// Every object of the set and its generation (for cleaning up an interrupted one).
    pub objects: Vec<(String, i64)>,
    /// When its newest object was written (ms since the epoch).
    pub newest_ms: i64,
    /// When `_COMPLETE` was written (ms since the epoch).
    pub complete_ms: Option<i64>,
}

/// What the landing prefix holds.
#[derive(Clone, Debug, Default)]
pub struct Landing {
    /// Sets by folder name.
    pub sets: BTreeMap<String, SetState>,
}

impl Landing {
    /// From a listing of the prefix (`prefix` is the object-name prefix, ending in `/`).
    pub fn from_listing(prefix: &str, objects: &[ObjectInfo]) -> Landing {
        let mut sets: BTreeMap<String, SetState> = BTreeMap::new();
        for o in objects {
            let rel = o.name.strip_prefix(prefix).unwrap_or(&o.name);
            let Some((set, file)) = rel.split_once('/') else {
                continue;
            };
            if file.contains('/') {
                continue;
            }
            let s = sets.entry(set.to_string()).or_default();
            s.objects.push((o.name.clone(), o.generation));
            s.newest_ms = s
                .newest_ms
                .max(crate::ingest::source::parse_time_ms(&o.updated).unwrap_or(0));
            match file {
                INTENT => s.started = true,
                COMPLETE => {
                    s.complete = Some(o.generation);
                    s.complete_ms = crate::ingest::source::parse_time_ms(&o.updated);
                }
                _ => {}
            }
        }
        Landing { sets }
    }

    /// The number the next pull or snapshot takes.
    pub fn next_number(&self) -> u64 {
        self.sets.keys().filter_map(|k| number(k)).max().map_or(1, |n| n + 1)
    }

    /// The newest complete pull or snapshot set.
    pub fn last_complete(&self) -> Option<&str> {
        self.sets
            .iter()
            .filter(|(k, s)| number(k).is_some() && s.complete.is_some())
            .map(|(k, _)| k.as_str())
            .next_back()
    }

    /// Whether the daily reload of `day` (`YYYY-MM-DD`) is complete.
    pub fn day_complete(&self, day: &str) -> bool {
        self.sets
            .get(&format!("{}{day}", SetKind::Day.prefix()))
            .is_some_and(|s| s.complete.is_some())
    }

    /// Whether the daily reload of `day` was started after `since_ms` and is not complete: a pull
    /// may still be writing it.
    pub fn day_started_recently(&self, day: &str, since_ms: i64) -> bool {
        self.sets
            .get(&format!("{}{day}", SetKind::Day.prefix()))
            .is_some_and(|s| s.complete.is_none() && s.newest_ms >= since_ms)
    }
}

/// The number of a `pull-`/`snap-` set.
pub fn number(set: &str) -> Option<u64> {
    set.strip_prefix(SetKind::Pull.prefix())
        .or_else(|| set.strip_prefix(SetKind::Snap.prefix()))
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size: 1,
            generation: 5,
            updated: String::new(),
        }
    }

    #[test]
    fn a_listing_tells_complete_interrupted_and_next() {
        let l = Landing::from_listing(
            "land/",
            &[
                o("land/pull-0000000001/_PULL"),
                o("land/pull-0000000001/part-00000.jsonl"),
                o("land/pull-0000000001/_COMPLETE"),
                o("land/pull-0000000002/_PULL"),
                o("land/pull-0000000002/part-00000.jsonl"),
                o("land/day-2026-11-26/_PULL"),
                o("land/day-2026-11-26/_COMPLETE"),
            ],
        );
        assert_eq!(l.next_number(), 3);
        assert_eq!(l.last_complete(), Some("pull-0000000001"));
        assert!(l.day_complete("2026-11-26"));
        assert!(!l.day_complete("2026-11-25"));
        assert_eq!(
            l.sets["pull-0000000002"].objects,
            [
                ("land/pull-0000000002/_PULL".to_string(), 5),
                ("land/pull-0000000002/part-00000.jsonl".to_string(), 5)
            ]
        );
        assert_eq!(numbered(SetKind::Pull, 3), "pull-0000000003");
    }
}
