//! Semantic checks of an IngestedTable's `source.delta` (and its `landing`), called by
//! [`super::kinds`]: every problem at once, each naming its field and the fix.

use super::{Checker, ident};
use crate::crd::{DeltaSource, IngestedTableSpec, LoadMode};

/// `s3://BUCKET/PATH/` → (bucket, path with a trailing `/`).
pub fn s3_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{uri:?} is not an S3 URI: write s3://BUCKET/PATH/ (the folder holding _delta_log/)"))?;
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(format!(
            "{bucket:?} is not a valid S3 bucket name: 3-63 lowercase letters, digits, '-' or '.'"
        ));
    }
    let path = path.trim_end_matches('/');
    if path.split('/').any(|seg| seg == ".." || seg == ".") || path.contains("//") {
        return Err(format!("{uri:?}: '.', '..' and '//' are not allowed in the table path"));
    }
    if path.chars().any(|c| c.is_control() || matches!(c, '?' | '#' | '*')) {
        return Err(format!(
            "{uri:?}: the table path may not hold control characters, '?', '#' or '*'"
        ));
    }
    Ok((
        bucket.to_string(),
        if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        },
    ))
}

/// An S3 region name, e.g. `eu-west-1`.
fn region(r: &str) -> Result<(), String> {
    let ok = (2..=32).contains(&r.len())
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !r.starts_with('-')
        && !r.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{r:?} is not a region name: write e.g. eu-west-1"))
    }
}

/// An S3-compatible endpoint: `http(s)://host[:port]`, nothing after the authority.
fn endpoint(e: &str) -> Result<(), String> {
    let url = url::Url::parse(e).map_err(|_| format!("{e:?} is not a URL: write e.g. https://s3.example:9000"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{e:?}: write http(s)://HOST[:PORT]"));
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{e:?}: only scheme, host and port (no path, query or credentials; keys go in credentialsSecret)"
        ));
    }
    Ok(())
}

pub(super) fn check(c: &mut Checker, spec: &IngestedTableSpec, d: &DeltaSource) {
    let src = &spec.source;
    if !src.uri.is_empty() {
        c.err(
            "spec.source.uri",
            "not with source.delta: the copied files are loaded from source.landing; remove uri",
        );
    }
    if src.database.is_some() {
        c.err("spec.source.database", "one source per table: remove database or delta");
    }
    if src.format.is_some_and(|f| f != crate::crd::SourceFormat::Parquet) {
        c.err("spec.source.format", "Delta data files are Parquet; remove format");
    }
    for (set, field) in [
        (src.include.is_some(), "spec.source.include"),
        (src.snapshot_marker.is_some(), "spec.source.snapshotMarker"),
        (src.csv.is_some(), "spec.source.csv"),
        (src.ordering.is_some(), "spec.source.ordering"),
    ] {
        if set {
            c.err(field, "only for file sources (source.uri); remove it");
        }
    }
    match &src.landing {
        None => c.err(
            "spec.source.landing",
            "required with source.delta: the gs://BUCKET/PREFIX/ the Delta data files are copied under",
        ),
        Some(l) => c.check("spec.source.landing", ident::gcs_uri(l).map(|_| ())),
    }
    c.check("spec.source.delta.uri", s3_uri(&d.uri).map(|_| ()));
    c.check("spec.source.delta.region", region(&d.region));
    if let Some(e) = &d.endpoint {
        c.check("spec.source.delta.endpoint", endpoint(e));
    }
    c.check(
        "spec.source.delta.credentialsSecret.name",
        crate::manifest::k8s_name(&d.credentials_secret.name),
    );
    if spec.mode == LoadMode::Snapshot {
        c.err(
            "spec.mode",
            "a Delta source mirrors the table version by version (only what changed is copied); remove mode: Snapshot",
        );
    }
    if spec.daily_reload.is_some() {
        c.err("spec.dailyReload", "only for database sources; remove it");
    }
    if spec.checks.as_ref().is_some_and(|ch| ch.exact.is_some()) {
        c.err(
            "spec.checks.exact",
            "needs a database source; a Delta table is mirrored version by version (status.delta shows the lag)",
        );
    }
    if spec.checks.as_ref().is_some_and(|ch| ch.row_count.is_some()) {
        c.err(
            "spec.checks.rowCount",
            "compares appended batches with the table; a Delta source also deletes rows (removed files): remove it",
        );
    }
    if !d.columns.is_empty() {
        let declared = |n: &str| spec.schema.iter().any(|c| c.name.eq_ignore_ascii_case(n));
        let listed = |n: &str| d.columns.iter().any(|c| c.eq_ignore_ascii_case(n));
        for (i, col) in d.columns.iter().enumerate() {
            if !declared(col) {
                c.err(
                    format!("spec.source.delta.columns[{i}]"),
                    format!("{col:?} is not declared in spec.schema; declare its type there or remove it"),
                );
            }
        }
        for (i, col) in spec.schema.iter().enumerate() {
            if !listed(&col.name) {
                c.err(
                    format!("spec.schema[{i}]"),
                    format!(
                        "{:?} is not in source.delta.columns, so it would stay NULL: add it to columns or remove it",
                        col.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_parse_and_bad_ones_say_why() {
        assert_eq!(
            s3_uri("s3://acme-lake/silver/orders/").unwrap(),
            ("acme-lake".into(), "silver/orders/".into())
        );
        assert_eq!(s3_uri("s3://acme-lake/silver/orders").unwrap().1, "silver/orders/");
        assert!(s3_uri("gs://acme/x/").unwrap_err().contains("not an S3 URI"));
        assert!(s3_uri("s3://Acme/x/").unwrap_err().contains("bucket name"));
        assert!(s3_uri("s3://acme/a/../b/").unwrap_err().contains(".."));
        assert!(endpoint("http://127.0.0.1:9000").is_ok());
        assert!(
            endpoint("http://k:s@127.0.0.1:9000")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(region("eu-west-1").is_ok());
        assert!(region("EU").is_err());
    }
}
