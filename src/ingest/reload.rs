//! Re-ingestion requests: reload the files under a prefix and/or updated in a time range, once.
//!
//! Spelled the same on the resource annotation `bqsteward.dev/reload` and on `apply --reload`:
//! space-separated `key=value` pairs, e.g. `id=fix-1 prefix=gs://bucket/orders/2026-11-01/
//! since=2026-11-01T00:00:00Z until=2026-11-02T00:00:00Z`. `id` names the request; a request
//! with an id that already ran does nothing, so leaving the annotation in place is harmless.
//! Without `id`, the id is derived from the selectors. A Delta source takes `versions=A-B` (or one
//! version `versions=A`): the files those versions added that are still in the table are read from
//! S3 again and their rows replaced in one statement.

use super::model::{SourceFile, short_hash};

/// The annotation that requests a reload.
pub const ANNOTATION_RELOAD: &str = "bqsteward.dev/reload";

/// A parsed re-ingestion request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reload {
    /// Request id (recorded in the ledger with every reloaded file).
    pub id: String,
    /// Only files whose uri starts with this.
    pub prefix: Option<String>,
    /// Only files updated at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only files updated before this (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Delta sources: the versions whose added files are read again (inclusive).
    pub versions: Option<(u64, u64)>,
}

impl Reload {
    /// Parses `key=value` pairs; the error names the bad pair and the accepted keys.
    pub fn parse(text: &str) -> Result<Reload, String> {
        let mut r = Reload {
            id: String::new(),
            prefix: None,
            since_ms: None,
            until_ms: None,
            versions: None,
        };
        for pair in text.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value; use id=, prefix=, since=, until= or versions="))?;
            let time = |v: &str| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| format!("`{k}={v}`: not an RFC 3339 time like 2026-11-01T00:00:00Z ({e})"))
            };
            match k {
                "id" => {
                    if v.is_empty()
                        || v.len() > 63
                        || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(format!("`id={v}`: use 1-63 letters, digits, '-' or '_'"));
                    }
                    r.id = v.into();
                }
                "prefix" => {
                    if !v.starts_with("gs://") {
                        return Err(format!("`prefix={v}`: give a full gs://bucket/path/ prefix"));
                    }
                    r.prefix = Some(v.into());
                }
                "since" => r.since_ms = Some(time(v)?),
                "until" => r.until_ms = Some(time(v)?),
                "versions" => {
                    let bad = || {
                        format!("`versions={v}`: write a Delta version or a range, e.g. versions=12 or versions=12-40")
                    };
                    let (a, b) = v.split_once('-').unwrap_or((v, v));
                    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if a > b {
                        return Err(bad());
                    }
                    r.versions = Some((a, b));
                }
                _ => {
                    return Err(format!(
                        "unknown key `{k}`; use id=, prefix=, since=, until= or versions="
                    ));
                }
            }
        }
        if r.versions.is_some() && (r.prefix.is_some() || r.since_ms.is_some() || r.until_ms.is_some()) {
            return Err("versions= (Delta sources) goes alone: remove prefix=, since= and until=".into());
        }
        if r.prefix.is_none() && r.since_ms.is_none() && r.until_ms.is_none() && r.versions.is_none() {
            return Err(
                "select what to reload with prefix=, since= and/or until= (files), or versions= (Delta)".into(),
            );
        }
        if r.id.is_empty() {
            r.id = format!(
                "r{}",
                short_hash(&format!(
                    "{:?}|{:?}|{:?}|{:?}",
                    r.prefix, r.since_ms, r.until_ms, r.versions
                ))
            );
        }
        Ok(r)
    }

    /// Whether the request covers this file.
    pub fn selects(&self, f: &SourceFile) -> bool {
        self.prefix.as_ref().is_none_or(|p| f.uri.starts_with(p.as_str()))
            && self.since_ms.is_none_or(|t| f.updated_ms >= t)
            && self.until_ms.is_none_or(|t| f.updated_ms < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        let r = Reload::parse("id=fix-1 prefix=gs://b/p/ since=2026-11-01T00:00:00Z").unwrap();
        assert_eq!(r.id, "fix-1");
        let f = |uri: &str, t: i64| SourceFile {
            uri: uri.into(),
            generation: 1,
            size: 1,
            updated_ms: t,
        };
        let nov1 = 1_793_491_200_000;
        assert!(r.selects(&f("gs://b/p/x.json", nov1)));
        assert!(!r.selects(&f("gs://b/q/x.json", nov1)));
        assert!(!r.selects(&f("gs://b/p/x.json", nov1 - 1)));
        let derived = Reload::parse("prefix=gs://b/p/").unwrap();
        assert_eq!(derived.id, Reload::parse("prefix=gs://b/p/").unwrap().id);
        assert!(derived.id.starts_with('r'));
    }

    #[test]
    fn errors_name_the_fix() {
        assert!(Reload::parse("").unwrap_err().contains("prefix="));
        assert!(Reload::parse("prefix=b/p").unwrap_err().contains("gs://"));
        assert!(Reload::parse("since=yesterday").unwrap_err().contains("RFC 3339"));
        assert!(Reload::parse("colour=red").unwrap_err().contains("unknown key"));
        assert!(Reload::parse("id=a;b prefix=gs://b/").unwrap_err().contains("letters"));
        assert_eq!(Reload::parse("versions=3-7").unwrap().versions, Some((3, 7)));
        assert_eq!(Reload::parse("versions=4").unwrap().versions, Some((4, 4)));
        assert!(Reload::parse("versions=7-3").unwrap_err().contains("range"));
        assert!(
            Reload::parse("versions=3 prefix=gs://b/")
                .unwrap_err()
                .contains("alone")
        );
    }
}
