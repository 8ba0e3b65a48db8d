//! Semantic checks of IngestedTables, DatasetAccess lists and GroupMemberships, called by
//! [`super::validate`] (ConsumerProjects: [`super::consumer`]).

use super::{Checker, ident};
use crate::crd::{AccessEntry, ColumnMode, DatasetAccessSpec, GroupMembershipSpec, IngestedTableSpec, SourceFormat};
use crate::policy::Policy;
use std::collections::{HashMap, HashSet};

/// Entries one DatasetAccess may declare (the CRD's `maxItems` too).
const MAX_ENTRIES: usize = 2500;

/// Special groups BigQuery access entries accept.
const SPECIAL_GROUPS: [&str; 4] = [
    "projectOwners",
    "projectWriters",
    "projectReaders",
    "allAuthenticatedUsers",
];

/// `source.ordering`, `lateArrival`, `fullListingEvery`: cursor listing is for incremental file
/// sources; the windows are durations.
fn listing(c: &mut Checker, spec: &IngestedTableSpec) {
    use crate::crd::ingested_table::Ordering;
    let src = &spec.source;
    let lexical = src.ordering == Some(Ordering::Lexical);
    if lexical && src.database.is_some() {
        c.err(
            "spec.source.ordering",
            "Lexical is for file sources (a database source's landing folders are listed whole); remove it",
        );
    }
    if lexical && spec.mode == crate::crd::LoadMode::Snapshot {
        c.err(
            "spec.source.ordering",
            "Lexical is for mode: Incremental (a snapshot needs every set listed to pick the newest complete one); remove it",
        );
    }
    for (field, value, min_s) in [
        ("spec.source.lateArrival", &src.late_arrival, 0u64),
        ("spec.source.fullListingEvery", &src.full_listing_every, 60),
    ] {
        let Some(v) = value else { continue };
        if !lexical {
            c.err(
                field,
                "only with ordering: Lexical; remove it or set source.ordering: Lexical",
            );
            continue;
        }
        match super::database::duration(v) {
            Ok(d) if d.as_secs() < min_s => c.err(field, format!("{v:?} is too short: at least {min_s}s")),
            Ok(_) => {}
            Err(e) => c.err(field, e),
        }
    }
}

pub(super) fn ingested_table(c: &mut Checker, spec: &IngestedTableSpec) {
    let d = &spec.destination;
    c.check("spec.destination.project", ident::project_id(&d.project));
    c.check("spec.destination.dataset", ident::dataset_id(&d.dataset));
    c.check("spec.destination.table", ident::table_id(&d.table));
    location(c, "spec.destination.location", &d.location);

    match (&spec.source.database, &spec.source.delta) {
        (_, Some(delta)) => super::delta::check(c, spec, delta),
        (None, None) => {
            c.check("spec.source.uri", ident::gcs_uri(&spec.source.uri).map(|_| ()));
            if spec.source.format.is_none() {
                c.err(
                    "spec.source.format",
                    "required for files: NEWLINE_DELIMITED_JSON, CSV, PARQUET or AVRO",
                );
            }
            if spec.source.landing.is_some() {
                c.err(
                    "spec.source.landing",
                    "only with source.database or source.delta (files are loaded from source.uri where they are); remove it",
                );
            }
            if let Some(checks) = &spec.checks {
                super::database::schedules(c, spec, checks);
                if checks.exact.is_some() {
                    c.err(
                        "spec.checks.exact",
                        "needs a database source (source.database): rows are compared by key with the source table; \
                         for files use rowCount (rows per loaded batch, ledger against table)",
                    );
                }
                if checks.row_count.is_some() && spec.mode == crate::crd::LoadMode::Snapshot {
                    c.err(
                        "spec.checks.rowCount",
                        "compares the rows of appended batches; mode: Snapshot replaces the table with each batch: \
                         remove the check",
                    );
                }
            }
            if spec.daily_reload.is_some() {
                c.err(
                    "spec.dailyReload",
                    "only for database sources; for files use the bqsteward.dev/reload annotation",
                );
            }
        }
        (Some(db), None) => super::database::check(c, spec, db),
    }
    listing(c, spec);
    if let Some(include) = &spec.source.include
        && let Err(e) = globset::GlobBuilder::new(include).literal_separator(true).build()
    {
        c.err(
            "spec.source.include",
            format!("{include:?} is not a valid glob: {}", e.kind()),
        );
    }
    if let Some(csv) = &spec.source.csv {
        if spec.source.format() != SourceFormat::Csv {
            c.err(
                "spec.source.csv",
                "CSV options are only allowed with format: CSV; remove them or change the format",
            );
        }
        if let Some(d) = &csv.field_delimiter
            && d.chars().count() != 1
        {
            c.err(
                "spec.source.csv.fieldDelimiter",
                format!("{d:?} must be exactly one character"),
            );
        }
    }

    // Columns: valid, unique (BigQuery compares names case-insensitively).
    let mut columns: HashMap<String, (usize, &crate::crd::Column)> = HashMap::new();
    for (i, col) in spec.schema.iter().enumerate() {
        c.check(format!("spec.schema[{i}].name"), ident::column_name(&col.name));
        if let Some((first, _)) = columns.insert(col.name.to_lowercase(), (i, col)) {
            c.err(
                format!("spec.schema[{i}].name"),
                format!(
                    "column {:?} is declared twice (also spec.schema[{first}]); column names are case-insensitive",
                    col.name
                ),
            );
        }
    }
    let excluded: HashSet<String> = spec.excluded_columns.iter().map(|s| s.to_lowercase()).collect();
    let reference = |c: &mut Checker, field: String, name: &str, role: &str| {
        if excluded.contains(&name.to_lowercase()) {
            c.err(
                field,
                format!("column {name:?} is in excludedColumns, so it never reaches BigQuery and cannot be used as {role}; remove it from one of the two"),
            );
            return None;
        }
        match columns.get(&name.to_lowercase()) {
            Some((_, col)) => Some(*col),
            None => {
                c.err(
                    field,
                    format!("column {name:?} is not in spec.schema; add it to spec.schema or fix the name"),
                );
                None
            }
        }
    };

    let mut seen_key = HashSet::new();
    for (i, k) in spec.primary_key.iter().enumerate() {
        let field = format!("spec.primaryKey[{i}]");
        if !seen_key.insert(k.to_lowercase()) {
            c.err(field, format!("column {k:?} is listed twice"));
        } else if let Some(col) = reference(c, field.clone(), k, "a primary key")
            && col.mode == ColumnMode::Repeated
        {
            c.err(
                field,
                format!("column {k:?} is REPEATED and cannot be part of a primary key"),
            );
        }
    }
    if let Some(v) = &spec.version_column
        && let Some(col) = reference(c, "spec.versionColumn".into(), v, "the version column")
        && (col.mode == ColumnMode::Repeated
            || matches!(col.type_.canonical(), "JSON" | "GEOGRAPHY" | "BOOL" | "BYTES"))
    {
        c.err(
            "spec.versionColumn",
            format!(
                "column {v:?} ({} {:?}) cannot order versions; use a TIMESTAMP, DATETIME, DATE or number column",
                col.type_.canonical(),
                col.mode
            ),
        );
    }
    let pii: HashSet<String> = spec.pii_columns.iter().map(|s| s.to_lowercase()).collect();
    for (i, p) in spec.pii_columns.iter().enumerate() {
        if let Some(col) = reference(c, format!("spec.piiColumns[{i}]"), p, "a PII column")
            && spec.primary_key.iter().any(|k| k.eq_ignore_ascii_case(&col.name))
            && !spec
                .hashed_pii_columns
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&col.name))
        {
            c.err(
                format!("spec.piiColumns[{i}]"),
                format!("column {p:?} is part of the primary key, so dropping it would leave the clean view without its key; list it in hashedPiiColumns too"),
            );
        }
    }
    for (i, h) in spec.hashed_pii_columns.iter().enumerate() {
        if !pii.contains(&h.to_lowercase()) {
            c.err(
                format!("spec.hashedPiiColumns[{i}]"),
                format!("column {h:?} must also be listed in piiColumns"),
            );
        }
    }
    if let Some(p) = &spec.partitioning {
        if let Some(col) = &p.column
            && let Some(found) = reference(c, "spec.partitioning.column".into(), col, "the partitioning column")
            && (!found.type_.can_partition() || found.mode == ColumnMode::Repeated)
        {
            c.err(
                "spec.partitioning.column",
                format!(
                    "column {col:?} is {}; partition by a TIMESTAMP, DATE or DATETIME column",
                    found.type_.canonical()
                ),
            );
        }
        if p.expiration_days == Some(0) {
            c.err(
                "spec.partitioning.expirationDays",
                "must be at least 1 (or absent for no expiration)",
            );
        }
    }
    if spec.clustering.len() > 4 {
        c.err(
            "spec.clustering",
            format!(
                "{} columns given; BigQuery clusters by at most 4",
                spec.clustering.len()
            ),
        );
    }
    for (i, k) in spec.clustering.iter().enumerate() {
        if let Some(col) = reference(c, format!("spec.clustering[{i}]"), k, "a clustering column")
            && (!col.type_.can_cluster() || col.mode == ColumnMode::Repeated)
        {
            c.err(
                format!("spec.clustering[{i}]"),
                format!("column {k:?} ({}) cannot be clustered on", col.type_.canonical()),
            );
        }
    }
    for (i, x) in spec.excluded_columns.iter().enumerate() {
        c.check(format!("spec.excludedColumns[{i}]"), ident::column_name(x));
        if let Some((j, _)) = columns.get(&x.to_lowercase()) {
            c.err(
                format!("spec.excludedColumns[{i}]"),
                format!(
                    "column {x:?} is also declared in spec.schema[{j}], so it would be loaded; an excluded column must never \
                     reach BigQuery: remove it from spec.schema"
                ),
            );
        }
    }
    if !spec.excluded_columns.is_empty() && !spec.source.format().can_drop_fields_during_load() {
        c.err(
            "spec.excludedColumns",
            format!(
                "format {} cannot drop a field during the load, so excluded columns would reach a BigQuery table; \
                 remove them from the files before upload, or deliver NEWLINE_DELIMITED_JSON",
                spec.source.format().as_bigquery()
            ),
        );
    }

    if spec.views.clean && !spec.views.full {
        c.err(
            "spec.views.clean",
            "the clean view is built on the full (dedup) view: set views.full: true as well",
        );
    }
    if spec.views.full {
        if spec.partitioning.as_ref().is_some_and(|p| p.require_partition_filter) {
            c.err(
                "spec.partitioning.requirePartitionFilter",
                "views.full must read every partition (the latest version of a row can be in any of them), so its queries \
                 could never satisfy a required partition filter; set requirePartitionFilter: false or turn views.full off",
            );
        }
        if spec.primary_key.is_empty() {
            c.err(
                "spec.primaryKey",
                "views.full keeps one row per primary key: list the key columns in primaryKey",
            );
        }
        if spec.version_column.is_none() {
            c.err(
                "spec.versionColumn",
                "views.full keeps the latest version of each row: name the version column",
            );
        }
    }
    for (field, suffix) in [
        ("spec.views.fullSuffix", spec.views.full_suffix()),
        ("spec.views.cleanSuffix", spec.views.clean_suffix()),
    ] {
        if suffix.is_empty() {
            c.err(field, "must not be empty: the view layer needs a dataset of its own");
        } else if ident::dataset_id(&d.dataset).is_ok() {
            c.check(field, ident::dataset_id(&format!("{}{suffix}", d.dataset)));
        }
    }
    if spec.views.full_suffix() == spec.views.clean_suffix() {
        c.err(
            "spec.views.cleanSuffix",
            "must differ from fullSuffix: each layer needs its own dataset",
        );
    }

    match spec.schedule.every.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() && std::time::Duration::from(d) >= std::time::Duration::from_secs(60) => {}
        Ok(_) => c.err(
            "spec.schedule.every",
            format!("{:?} is too short: at least 1m", spec.schedule.every),
        ),
        Err(_) => c.err(
            "spec.schedule.every",
            format!(
                "{:?} is not a duration: write e.g. 90s, 15m, 1h or 1h30m",
                spec.schedule.every
            ),
        ),
    }
    let lp = &spec.load_policy;
    if !(1..=10_000).contains(&lp.max_files_per_job) {
        c.err(
            "spec.loadPolicy.maxFilesPerJob",
            format!(
                "{} is out of range: 1 to 10000 (BigQuery's limit per load job)",
                lp.max_files_per_job
            ),
        );
    }
    if !(1..=1500).contains(&lp.daily_job_budget) {
        c.err(
            "spec.loadPolicy.dailyJobBudget",
            format!(
                "{} is out of range: 1 to 1500 (BigQuery allows about 1500 load jobs per table per day)",
                lp.daily_job_budget
            ),
        );
    }
    if lp.max_bytes_per_job == Some(0) {
        c.err(
            "spec.loadPolicy.maxBytesPerJob",
            "must be at least 1 (or absent for BigQuery's limit)",
        );
    }
}

pub(super) fn location(c: &mut Checker, field: &str, loc: &str) {
    c.check(field, ident::location(loc));
}

/// The principals set on an access entry: `(field name, value)`.
fn entry_principals(e: &AccessEntry) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = [
        ("user", &e.user),
        ("group", &e.group),
        ("serviceAccount", &e.service_account),
        ("domain", &e.domain),
        ("specialGroup", &e.special_group),
        ("iamMember", &e.iam_member),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect();
    if let Some(t) = &e.view {
        v.push(("view", format!("{}.{}.{}", t.project, t.dataset, t.table)));
    }
    if let Some(r) = &e.routine {
        v.push(("routine", format!("{}.{}.{}", r.project, r.dataset, r.routine)));
    }
    if let Some(d) = &e.dataset {
        v.push(("dataset", format!("{}.{}", d.project, d.dataset)));
    }
    v
}

/// Checks one principal value of kind `key` at `field`.
pub(super) fn principal(c: &mut Checker, field: &str, key: &str, value: &str, policy: &Policy) {
    let forbidden = |c: &mut Checker| {
        c.err(
            field,
            format!("{value:?} is a forbidden principal (it would make the data public); remove it, or remove it from the policy file's forbiddenPrincipals"),
        )
    };
    match key {
        "user" | "group" | "serviceAccount" => {
            if let Err(reason) = ident::email(value) {
                c.err(field, reason);
            } else if !policy.domain_allowed(value) {
                c.err(
                    field,
                    format!(
                        "{value:?} is outside the allowed domains {:?} of the policy file",
                        policy.allowed_domains
                    ),
                );
            }
            if key == "serviceAccount" && !value.to_lowercase().ends_with(".gserviceaccount.com") {
                c.err(field, format!("{value:?} is not a service account email (…@PROJECT.iam.gserviceaccount.com); use user: or group: instead"));
            }
        }
        "domain" => {
            if let Err(reason) = ident::domain(value) {
                c.err(field, reason);
            } else if !policy.domain_allowed(value) {
                c.err(
                    field,
                    format!(
                        "domain {value:?} is outside the allowed domains {:?} of the policy file",
                        policy.allowed_domains
                    ),
                );
            }
        }
        "specialGroup" => {
            if !SPECIAL_GROUPS.contains(&value) {
                c.err(
                    field,
                    format!(
                        "{value:?} is not a special group; use one of {}",
                        SPECIAL_GROUPS.join(", ")
                    ),
                );
            } else if policy.is_forbidden(value) {
                forbidden(c);
            }
        }
        "iamMember" => {
            if value.trim().is_empty() || value.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                c.err(field, format!("{value:?} is not an IAM principal identifier"));
            } else if let Err(reason) = policy.check_iam_member(value) {
                c.err(field, reason);
            }
        }
        _ => {}
    }
}

pub(super) fn dataset_access(c: &mut Checker, spec: &DatasetAccessSpec, policy: &Policy) {
    c.check("spec.project", ident::project_id(&spec.project));
    c.check("spec.dataset", ident::dataset_id(&spec.dataset));
    if spec.access.len() > MAX_ENTRIES {
        c.err(
            "spec.access",
            format!(
                "{} entries; bqsteward accepts at most {MAX_ENTRIES} per dataset (BigQuery's limit on authorized \
                 resources, and far beyond a reviewable list): grant groups instead of individual users",
                spec.access.len()
            ),
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, e) in spec.access.iter().enumerate() {
        let base = format!("spec.access[{i}]");
        let principals = entry_principals(e);
        if principals.len() != 1 {
            let named: Vec<_> = principals.iter().map(|(k, _)| *k).collect();
            c.err(
                base.clone(),
                format!(
                    "each entry names exactly one principal (user, group, serviceAccount, domain, specialGroup, iamMember, view, routine or dataset); this one names {}",
                    if named.is_empty() { "none".to_string() } else { named.join(" and ") }
                ),
            );
            continue;
        }
        let (key, value) = &principals[0];
        let field = format!("{base}.{key}");
        principal(c, &field, key, value, policy);
        let authorized = matches!(*key, "view" | "routine" | "dataset");
        if authorized {
            if e.role.is_some() {
                c.err(
                    format!("{base}.role"),
                    format!("an authorized {key} takes no role; remove role"),
                );
            }
            authorized_ref(c, &field, e);
        } else if e.role.is_none() {
            c.err(format!("{base}.role"), "missing: give READER, WRITER or OWNER");
        }
        let identity = if matches!(*key, "user" | "group" | "serviceAccount" | "domain") {
            value.to_lowercase()
        } else {
            value.clone()
        };
        if let Some(first) = seen.insert(format!("{key}:{identity}"), i) {
            c.err(
                field,
                format!("{key} {value:?} is already declared in spec.access[{first}]; keep one entry per principal (OWNER includes WRITER includes READER)"),
            );
        }
    }
}

fn authorized_ref(c: &mut Checker, field: &str, e: &AccessEntry) {
    let (project, dataset, object) = match (&e.view, &e.routine, &e.dataset) {
        (Some(t), _, _) => (&t.project, &t.dataset, Some(&t.table)),
        (_, Some(r), _) => (&r.project, &r.dataset, Some(&r.routine)),
        (_, _, Some(d)) => (&d.project, &d.dataset, None),
        _ => return,
    };
    c.check(format!("{field}.project"), ident::project_id(project));
    c.check(format!("{field}.dataset"), ident::dataset_id(dataset));
    if let Some(o) = object {
        let leaf = if e.view.is_some() { "table" } else { "routine" };
        c.check(format!("{field}.{leaf}"), ident::table_id(o));
    }
}

pub(super) fn group_membership(c: &mut Checker, spec: &GroupMembershipSpec, policy: &Policy) {
    c.check("spec.group", ident::email(&spec.group));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, m) in spec.members.iter().enumerate() {
        let field = format!("spec.members[{i}].email");
        if let Err(reason) = ident::email(&m.email) {
            c.err(field, reason);
            continue;
        }
        if !policy.domain_allowed(&m.email) {
            c.err(
                field.clone(),
                format!(
                    "{:?} is outside the allowed domains {:?} of the policy file",
                    m.email, policy.allowed_domains
                ),
            );
        }
        if m.email.eq_ignore_ascii_case(&spec.group) {
            c.err(field.clone(), "a group cannot be a member of itself");
        }
        if let Some(first) = seen.insert(m.email.to_lowercase(), i) {
            c.err(
                field,
                format!(
                    "{:?} is already a member in spec.members[{first}] (emails are case-insensitive); keep one entry",
                    m.email
                ),
            );
        }
    }
}
