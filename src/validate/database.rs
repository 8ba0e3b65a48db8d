//! Semantic checks of an IngestedTable's `source.database` (and `landing`, `dailyReload`), called
//! by [`super::kinds`]: every problem at once, each naming its field and the fix.

use super::{Checker, ident};
use crate::crd::{ColumnMode, DatabaseEngine, DatabaseSource, IngestedTableSpec, LoadMode, SourceFormat};
use crate::dbsource::types::WatermarkKind;

/// A duration field, e.g. `30m`.
pub(crate) fn duration(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => Ok(d.into()),
        _ => Err(format!("{text:?} is not a duration: write e.g. 90s, 15m, 1h or 1h30m")),
    }
}

/// `HH:MM`.
pub(crate) fn time_of_day(text: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day: write HH:MM, e.g. \"04:00\""))
}

/// An IANA time zone.
pub(crate) fn time_zone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{text:?} is not an IANA time zone: write e.g. UTC, Europe/Paris or America/New_York"))
}

pub(super) fn check(c: &mut Checker, spec: &IngestedTableSpec, db: &DatabaseSource) {
    let src = &spec.source;
    if !src.uri.is_empty() {
        c.err(
            "spec.source.uri",
            "not with source.database: the extracted files are loaded from source.landing; remove uri",
        );
    }
    if src.format.is_some_and(|f| f != SourceFormat::NewlineDelimitedJson) {
        c.err(
            "spec.source.format",
            "a database source is extracted as NEWLINE_DELIMITED_JSON; remove format",
        );
    }
    for (set, field) in [
        (src.include.is_some(), "spec.source.include"),
        (src.snapshot_marker.is_some(), "spec.source.snapshotMarker"),
        (src.csv.is_some(), "spec.source.csv"),
    ] {
        if set {
            c.err(field, "only for file sources (source.uri); remove it");
        }
    }
    match &src.landing {
        None => c.err(
            "spec.source.landing",
            "required with source.database: the gs://BUCKET/PREFIX/ the extracted files land under",
        ),
        Some(l) => c.check("spec.source.landing", ident::gcs_uri(l).map(|_| ())),
    }
    c.check(
        "spec.source.database.table",
        crate::dbsource::types::source_table(&db.table).map(|_| ()),
    );
    c.check(
        "spec.source.database.connectionSecret.name",
        crate::manifest::k8s_name(&db.connection_secret.name),
    );
    let key = &db.connection_secret.key;
    if key.is_empty()
        || key.len() > 253
        || !key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        c.err(
            "spec.source.database.connectionSecret.key",
            format!("{key:?} is not a Secret key: letters, digits, '-', '_' or '.'"),
        );
    }
    if let Some(t) = &db.statement_timeout {
        c.check(
            "spec.source.database.statementTimeout",
            duration(t).and_then(|d| {
                if d.as_secs() >= 1 {
                    Ok(())
                } else {
                    Err(format!("{t:?} is too short: at least 1s"))
                }
            }),
        );
    }
    if let Some(n) = db.file_size_mib
        && !(1..=1024).contains(&n)
    {
        c.err(
            "spec.source.database.fileSizeMib",
            format!("{n} is out of range: 1 to 1024"),
        );
    }
    for (i, col) in spec.schema.iter().enumerate() {
        if col.mode == ColumnMode::Repeated && db.engine == DatabaseEngine::Mysql {
            c.err(
                format!("spec.schema[{i}].mode"),
                "REPEATED needs a PostgreSQL array column; MySQL has none (declare JSON or STRING)",
            );
        }
    }

    let wm_kind = db.watermark.as_ref().map(|w| {
        let col = spec.schema.iter().find(|c| c.name.eq_ignore_ascii_case(&w.column));
        match col {
            None => {
                c.err(
                    "spec.source.database.watermark.column",
                    format!(
                        "{:?} is not a declared column; declare it in spec.schema (the watermark is read like any column)",
                        w.column
                    ),
                );
                None
            }
            Some(col) => match WatermarkKind::of(col.type_) {
                Some(k) => Some(k),
                None => {
                    c.err(
                        "spec.source.database.watermark.column",
                        format!(
                            "{:?} is {}: a watermark is a time (TIMESTAMP, DATETIME, DATE) or a growing key (INT64, NUMERIC)",
                            w.column,
                            col.type_.canonical()
                        ),
                    );
                    None
                }
            },
        }
    });
    match (spec.mode, &db.watermark) {
        (LoadMode::Incremental, None) => c.err(
            "spec.source.database.watermark",
            "required for mode: Incremental: the column pulls resume from ({column: modify_time} for tables \
             with updates, the primary key for append-only tables); or set mode: Snapshot",
        ),
        (LoadMode::Snapshot, Some(_)) => c.err(
            "spec.source.database.watermark",
            "mode: Snapshot pulls the whole table each time; remove watermark (or set mode: Incremental)",
        ),
        _ => {}
    }
    if let Some(o) = &db.overlap {
        match duration(o) {
            Err(e) => c.err("spec.source.database.overlap", e),
            Ok(_) if matches!(wm_kind, Some(Some(WatermarkKind::Key))) => c.err(
                "spec.source.database.overlap",
                "a key watermark has no time to go back by: each pull starts at the greatest key already read; \
                 remove overlap",
            ),
            Ok(_) => {}
        }
    }
    if let Some(checks) = &spec.checks {
        let time_wm = matches!(wm_kind, Some(Some(WatermarkKind::Time(_))));
        if !time_wm && wm_kind.as_ref().is_none_or(|k| k.is_some()) {
            c.err(
                "spec.checks",
                "needs a time watermark (TIMESTAMP, DATETIME or DATE): only rows older than olderThan are compared, \
                 so rows still on their way or changed during a check never raise an alarm",
            );
        }
        if spec.primary_key.is_empty() {
            c.err(
                "spec.checks",
                "needs spec.primaryKey: BigQuery's side is the latest row per key (rows are matched by key)",
            );
        }
        schedules(c, spec, checks);
    }
    if let Some(r) = &spec.daily_reload {
        c.check("spec.dailyReload.at", time_of_day(&r.at).map(|_| ()));
        c.check("spec.dailyReload.timeZone", time_zone(&r.time_zone).map(|_| ()));
        if spec.mode == LoadMode::Snapshot {
            c.err(
                "spec.dailyReload",
                "mode: Snapshot replaces the whole table on every pull already; remove dailyReload",
            );
        } else if matches!(wm_kind, Some(Some(WatermarkKind::Key))) {
            c.err(
                "spec.dailyReload",
                "needs a time watermark (TIMESTAMP, DATETIME or DATE) to tell which rows belong to a day",
            );
        }
    }
}

/// The schedules of `spec.checks` (both kinds of source): intervals, `olderThan`, `chunkRows`.
pub(crate) fn schedules(c: &mut Checker, spec: &IngestedTableSpec, checks: &crate::crd::Checks) {
    if let Some(p) = &spec.partitioning {
        if p.require_partition_filter {
            c.err(
                "spec.checks",
                "compares every row, and partitioning.requirePartitionFilter refuses queries over all partitions: \
                 set it to false or remove checks",
            );
        }
        if p.expiration_days.is_some() {
            c.err(
                "spec.checks",
                "compares every row the source holds, and partitioning.expirationDays makes BigQuery drop old ones \
                 (each would be reported missing): remove expirationDays or the checks",
            );
        }
    }
    if checks.row_count.is_none() && checks.exact.is_none() {
        c.err(
            "spec.checks",
            "declares no check: add rowCount and/or exact, or remove checks",
        );
    }
    let mut schedule = |field: &str, every: &str, older: &str| {
        match duration(every) {
            Err(e) => c.err(format!("spec.checks.{field}.every"), e),
            Ok(d) if d.as_secs() < 60 => c.err(
                format!("spec.checks.{field}.every"),
                format!("{every:?} is too short: at least 1m"),
            ),
            Ok(_) => {}
        }
        c.check(format!("spec.checks.{field}.olderThan"), duration(older).map(|_| ()));
    };
    if let Some(r) = &checks.row_count {
        schedule("rowCount", &r.every, &r.older_than);
    }
    if let Some(x) = &checks.exact {
        schedule("exact", &x.every, &x.older_than);
        if !(1000..=10_000_000).contains(&x.chunk_rows) {
            c.err(
                "spec.checks.exact.chunkRows",
                format!("{} is out of range: 1000 to 10000000", x.chunk_rows),
            );
        }
    }
}
