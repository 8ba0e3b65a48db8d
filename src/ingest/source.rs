//! Discovery: the objects under `source.uri` that match `source.include`, as [`SourceFile`]s.

use super::model::SourceFile;
use crate::cloud::CloudError;
use crate::cloud::storage::{ObjectInfo, Storage};
use crate::crd::ingested_table::Source;

/// A parsed `source`: bucket, prefix and include filter.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// Bucket.
    pub bucket: String,
    /// Object name prefix.
    pub prefix: String,
    include: Option<globset::GlobMatcher>,
    /// Snapshot completion marker (`source.snapshotMarker`, default `_SUCCESS`; "" = none).
    pub marker: String,
    /// Keep only files of sets (first folder level) that hold the marker (database landing).
    pub complete_sets_only: bool,
    /// The glob Cloud Storage filters names with (`matchGlob`): the prefix and `include`, for
    /// incremental file sources whose prefix has no glob character. The same filter runs here
    /// too (servers that ignore `matchGlob`, like fake-gcs-server, stay correct).
    pub server_glob: Option<String>,
}

impl Discovery {
    /// From a validated `source` (errors repeat validation's message).
    pub fn new(source: &Source) -> Result<Discovery, String> {
        let (bucket, prefix) = crate::validate::ident::gcs_uri(source.files_uri())?;
        if source.landed() {
            // The landing prefix: data files of sets whose pull (database) or copy (Delta version)
            // completed, and their markers.
            let files = if source.is_delta() {
                "*/*.parquet"
            } else {
                "*/part-*.jsonl"
            };
            return Ok(Discovery {
                bucket,
                prefix,
                include: Some(
                    globset::GlobBuilder::new(files)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| e.to_string())?
                        .compile_matcher(),
                ),
                marker: crate::dbsource::landing::COMPLETE.into(),
                complete_sets_only: true,
                server_glob: None,
            });
        }
        let include = match &source.include {
            Some(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("source.include {g:?}: {}", e.kind()))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let literal = |p: &str| !p.contains(['*', '?', '[', ']', '{', '}', '\\']);
        let server_glob = match &source.include {
            Some(g) if literal(&prefix) => Some(format!("{prefix}{g}")),
            _ => None,
        };
        Ok(Discovery {
            bucket,
            prefix,
            include,
            marker: source.snapshot_marker.clone().unwrap_or_else(|| "_SUCCESS".into()),
            complete_sets_only: false,
            server_glob,
        })
    }

    /// The object name of a `gs://bucket/name` URI of this bucket.
    pub fn object_name<'a>(&self, uri: &'a str) -> Option<&'a str> {
        uri.strip_prefix("gs://")?
            .strip_prefix(self.bucket.as_str())?
            .strip_prefix('/')
    }

    /// `gs://bucket/prefix`.
    pub fn uri_prefix(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
    }

    /// Lists and filters page by page (transient errors are retried per page by the client).
    pub async fn discover(&self, storage: &dyn Storage) -> Result<Vec<SourceFile>, CloudError> {
        self.discover_from(storage, None, false).await
    }

    /// [`Discovery::discover`] of the names at or after `start` (an object name), with the
    /// server-side glob when `server_filter` (incremental sources: no snapshot marker to keep).
    pub async fn discover_from(
        &self,
        storage: &dyn Storage,
        start: Option<&str>,
        server_filter: bool,
    ) -> Result<Vec<SourceFile>, CloudError> {
        let mut out = Vec::new();
        let glob = self.server_glob.as_deref().filter(|_| server_filter);
        let mut keep = |o: ObjectInfo| {
            if let Some(f) = self.select(o) {
                out.push(f);
            }
        };
        if start.is_none() && glob.is_none() {
            storage.list_each(&self.bucket, &self.prefix, &mut keep).await?;
        } else {
            storage
                .list_each_from(&self.bucket, &self.prefix, start.unwrap_or(""), glob, &mut keep)
                .await?;
        }
        if self.complete_sets_only {
            out = self.complete_sets(out);
        }
        Ok(out)
    }

    /// The files of sets that hold the marker (and the markers).
    fn complete_sets(&self, files: Vec<SourceFile>) -> Vec<SourceFile> {
        let root = self.uri_prefix();
        let suffix = format!("/{}", self.marker);
        let complete: std::collections::HashSet<String> = files
            .iter()
            .filter(|f| f.uri.ends_with(&suffix))
            .map(|f| super::plan::snapshot_set(&root, &f.uri).to_string())
            .collect();
        files
            .into_iter()
            .filter(|f| complete.contains(super::plan::snapshot_set(&root, &f.uri)))
            .collect()
    }

    /// Keeps the objects the source selects (see [`Discovery::select`]).
    pub fn filter(&self, objects: Vec<ObjectInfo>) -> Vec<SourceFile> {
        let files = objects.into_iter().filter_map(|o| self.select(o)).collect();
        if self.complete_sets_only {
            self.complete_sets(files)
        } else {
            files
        }
    }

    /// The object as a source file, if the source selects it. Folder placeholders (`name/`) and
    /// empty objects are skipped; the snapshot marker is kept (the planner needs it) whatever
    /// `include` says.
    pub fn select(&self, o: ObjectInfo) -> Option<SourceFile> {
        if o.name.ends_with('/') {
            return None;
        }
        let rel = o.name.strip_prefix(self.prefix.as_str()).unwrap_or(&o.name);
        let base = rel.rsplit('/').next().unwrap_or(rel);
        let is_marker = !self.marker.is_empty() && base == self.marker;
        if !is_marker {
            if o.size == 0 {
                return None;
            }
            if let Some(m) = &self.include
                && !m.is_match(rel)
            {
                return None;
            }
        }
        Some(SourceFile {
            uri: format!("gs://{}/{}", self.bucket, o.name),
            generation: o.generation,
            size: o.size,
            updated_ms: parse_time_ms(&o.updated).unwrap_or(0),
        })
    }
}

/// RFC 3339 → milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ingested_table::SourceFormat;

    fn obj(name: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size,
            generation: 7,
            updated: "2026-11-22T10:00:00.5Z".into(),
        }
    }

    #[test]
    fn include_is_relative_to_the_prefix() {
        let d = Discovery::new(&Source {
            delta: None,
            uri: "gs://bkt/in/".into(),
            database: None,
            landing: None,
            include: Some("*.json".into()),
            format: Some(SourceFormat::NewlineDelimitedJson),
            snapshot_marker: None,
            csv: None,
            ordering: None,
            late_arrival: None,
            full_listing_every: None,
        })
        .unwrap();
        let got = d.filter(vec![
            obj("in/a.json", 3),
            obj("in/sub/b.json", 3),
            obj("in/c.csv", 3),
            obj("in/empty.json", 0),
            obj("in/dir/", 0),
            obj("in/sub/_SUCCESS", 0),
        ]);
        let uris: Vec<_> = got.iter().map(|f| f.uri.as_str()).collect();
        assert_eq!(uris, ["gs://bkt/in/a.json", "gs://bkt/in/sub/_SUCCESS"]);
        assert_eq!(got[0].updated_ms, 1_795_341_600_500);
    }
}
