//! Identifier and address rules: BigQuery projects, datasets, tables, columns; emails; `gs://` URIs.
//! Each check returns `Err(reason)` with a sentence saying what is allowed.

/// Google Cloud project id: 6–30 characters, lowercase letters, digits and hyphens, starting with a
/// letter and not ending with a hyphen; optionally `domain.com:` scoped.
pub fn project_id(id: &str) -> Result<(), String> {
    let bare = match id.rsplit_once(':') {
        Some((domain, bare))
            if !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
        {
            bare
        }
        _ => id,
    };
    let ok = (6..=30).contains(&bare.len())
        && bare.starts_with(|c: char| c.is_ascii_lowercase())
        && !bare.ends_with('-')
        && bare
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid project id: 6-30 lowercase letters, digits or hyphens, starting with a letter, not ending with a hyphen"
        ))
    }
}

/// BigQuery dataset id: letters, digits and underscores, at most 1024 characters.
pub fn dataset_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 1024 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid dataset id: use only letters, digits and underscores (at most 1024)"
        ))
    }
}

/// BigQuery table or view id. bqsteward accepts letters, digits, underscores and hyphens (a subset
/// of what BigQuery allows, chosen so names never need quoting tricks), at most 1024 characters.
/// Names starting with `_bqsteward_` belong to bqsteward's own tables (the salt of hashed PII).
pub fn table_id(id: &str) -> Result<(), String> {
    if id.to_ascii_lowercase().starts_with("_bqsteward_") {
        return Err(format!(
            "{id:?} starts with _bqsteward_, which is reserved for bqsteward's own tables (ledger, hashing salt): \
             choose another name"
        ));
    }
    let ok =
        !id.is_empty() && id.len() <= 1024 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid table id: use letters, digits, underscores and hyphens (at most 1024)"
        ))
    }
}

/// Column-name prefixes BigQuery reserves, plus bqsteward's own lineage prefix.
pub const RESERVED_COLUMN_PREFIXES: [&str; 8] = [
    "_TABLE_",
    "_FILE_",
    "_PARTITION",
    "_ROW_TIMESTAMP",
    "__ROOT__",
    "_COLIDENTIFIER",
    "_CHANGE_",
    "_BQSTEWARD_",
];

/// A column name. Column names reach SQL (always quoted by bqsteward) and API calls, so they are
/// untrusted: at most 300 characters, no control characters, no backticks or backslashes, not
/// starting with a reserved prefix.
pub fn column_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 300 {
        return Err(format!("{name:?} is not a valid column name: 1-300 characters"));
    }
    if name.chars().any(|c| c.is_control() || c == '`' || c == '\\') {
        return Err(format!(
            "{name:?} is not a valid column name: control characters, backticks and backslashes are not allowed"
        ));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(format!(
            "{name:?} is not a valid column name: no leading or trailing spaces"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if let Some(p) = RESERVED_COLUMN_PREFIXES.iter().find(|p| upper.starts_with(*p)) {
        return Err(format!(
            "{name:?} is not a valid column name: the prefix {p} is reserved"
        ));
    }
    Ok(())
}

/// An email address (user, group or service account).
pub fn email(email: &str) -> Result<(), String> {
    let ok = email_address::EmailAddress::parse_with_options(
        email,
        email_address::Options::default()
            .without_display_text()
            .without_domain_literal(),
    )
    .is_ok()
        && email.contains('.')
        && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!("{email:?} is not a valid email address"))
    }
}

/// A DNS domain such as `acme.com`.
pub fn domain(domain: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("{domain:?} is not a valid domain, e.g. acme.com"))
    }
}

/// A Cloud Storage prefix `gs://BUCKET/PREFIX` → `(bucket, prefix)`.
pub fn gcs_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("gs://")
        .ok_or_else(|| format!("{uri:?} is not a Cloud Storage URI: write gs://BUCKET/PREFIX/"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=222).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(format!(
            "{bucket:?} is not a valid bucket name: 3-63 lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    if prefix.contains(['*', '?', '[']) {
        return Err(format!(
            "{uri:?} contains a wildcard: give the prefix in uri and the pattern in source.include"
        ));
    }
    if prefix.is_empty() {
        return Err(format!(
            "{uri:?} names a whole bucket: give the prefix the files are under, e.g. gs://{bucket}/orders/ (every \
             object of the bucket would be loaded, whatever wrote it)"
        ));
    }
    if prefix.split('/').any(|seg| seg == ".." || seg == ".") || prefix.contains("//") {
        return Err(format!(
            "{uri:?}: object names are literal, so '.', '..' and '//' are not path steps and match nothing; write \
             the prefix as the objects are named"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// BigQuery's locations: the two multi-regions and the regions (cloud.google.com/bigquery/docs/locations).
pub const LOCATIONS: [&str; 44] = [
    "US",
    "EU",
    "africa-south1",
    "asia-east1",
    "asia-east2",
    "asia-northeast1",
    "asia-northeast2",
    "asia-northeast3",
    "asia-south1",
    "asia-south2",
    "asia-southeast1",
    "asia-southeast2",
    "australia-southeast1",
    "australia-southeast2",
    "europe-central2",
    "europe-north1",
    "europe-north2",
    "europe-southwest1",
    "europe-west1",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west6",
    "europe-west8",
    "europe-west9",
    "europe-west10",
    "europe-west12",
    "me-central1",
    "me-central2",
    "me-west1",
    "northamerica-northeast1",
    "northamerica-northeast2",
    "northamerica-south1",
    "southamerica-east1",
    "southamerica-west1",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-east5",
    "us-south1",
    "us-west1",
    "us-west2",
    "us-west3",
    "us-west4",
];

/// A BigQuery location (case-insensitive).
pub fn location(loc: &str) -> Result<(), String> {
    if LOCATIONS.iter().any(|l| l.eq_ignore_ascii_case(loc)) {
        return Ok(());
    }
    let hint = crate::schema_check::closest_within(loc, LOCATIONS.iter().copied(), 0.9)
        .map(|l| format!(" (did you mean {l}?)"))
        .unwrap_or_default();
    Err(format!(
        "{loc:?} is not a BigQuery location{hint}: use US, EU or a region such as europe-west1 (see \
         cloud.google.com/bigquery/docs/locations)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_storage_uris() {
        assert!(gcs_uri("gs://acme-raw/orders/").is_ok());
        assert!(gcs_uri("gs://acme-raw").unwrap_err().contains("whole bucket"));
        assert!(gcs_uri("gs://acme-raw/").unwrap_err().contains("whole bucket"));
        assert!(gcs_uri("gs://acme-raw/a/../b/").unwrap_err().contains("literal"));
        assert!(gcs_uri("gs://acme-raw/a//b/").unwrap_err().contains("literal"));
    }

    /// BigQuery locations: the multi-regions and the regions BigQuery lists.
    #[test]
    fn locations() {
        assert!(location("US").is_ok() && location("eu").is_ok() && location("europe-west1").is_ok());
        let e = location("europe-west-1").unwrap_err();
        assert!(e.contains("did you mean europe-west1"), "{e}");
        assert!(location("mars-1").unwrap_err().contains("not a BigQuery location"));
    }

    #[test]
    fn projects() {
        assert!(project_id("acme-data-eng").is_ok());
        assert!(project_id("example.com:acme-data").is_ok());
        assert!(project_id("Acme").is_err());
        assert!(project_id("acme-").is_err());
        assert!(project_id("a; DROP").is_err());
    }

    #[test]
    fn datasets_tables_columns() {
        assert!(dataset_id("payments__views_clean").is_ok());
        assert!(dataset_id("pay-ments").is_err());
        assert!(table_id("transactions-2024").is_ok());
        assert!(table_id("a.b").is_err());
        assert!(table_id("_BQSteward_salt").is_err());
        assert!(column_name("select").is_ok());
        assert!(column_name("amount in €").is_ok());
        assert!(column_name("x`; DROP TABLE t; --").is_err());
        assert!(column_name("_bqsteward_batch_id").is_err());
        assert!(column_name("_PARTITIONTIME").is_err());
    }

    #[test]
    fn emails_domains_uris() {
        assert!(email("Carol.Smith@acme.com").is_ok());
        assert!(email("airflow@acme-data-eng.iam.gserviceaccount.com").is_ok());
        assert!(email("carol").is_err());
        assert!(email("carol@localhost").is_err());
        assert!(email("Carol <carol@acme.com>").is_err());
        assert!(domain("acme.com").is_ok());
        assert!(domain("acme").is_err());
        assert_eq!(
            gcs_uri("gs://acme-raw/payments/").unwrap(),
            ("acme-raw".into(), "payments/".into())
        );
        assert!(gcs_uri("s3://x/y").is_err());
        assert!(gcs_uri("gs://acme-raw/*.json").is_err());
    }
}
