//! Copying one Delta data file from S3 into the landing prefix: streamed (memory holds one 8 MiB
//! chunk), uploaded with a resumable upload that creates the object only when complete (a crash
//! leaves nothing half-written), and verified — the bytes read equal the size the log records,
//! their MD5 equals S3's ETag (single-part objects) and the MD5 Cloud Storage computed.

use crate::cloud::storage::Storage;
use base64::Engine as _;
use delta_kernel::object_store::{ObjectStore, ObjectStoreExt as _, path::Path};
use futures::StreamExt;
use md5::{Digest, Md5};

/// Bytes per uploaded chunk (a multiple of 256 KiB).
pub const CHUNK: usize = 8 << 20;

/// A verified copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Bytes copied.
    pub bytes: u64,
    /// MD5 of the bytes, hex.
    pub md5: String,
}

/// Copies `source` (expected `size` bytes) to `gs://bucket/name`. `read` counts every byte read
/// from S3 as it arrives (egress), also of a copy that fails.
pub async fn copy(
    store: &dyn ObjectStore,
    source: &Path,
    size: u64,
    gcs: &dyn Storage,
    bucket: &str,
    name: &str,
    read: &(dyn Fn(u64) + Send + Sync),
) -> Result<Copied, String> {
    let got = store
        .get(source)
        .await
        .map_err(|e| format!("cannot read s3 object {source}: {}", one_line(&e.to_string())))?;
    let etag = got.meta.e_tag.clone().unwrap_or_default();
    let mut stream = got.into_stream();
    let session = gcs
        .begin_upload(bucket, name, "application/vnd.apache.parquet")
        .await
        .map_err(|e| format!("cannot start the copy to gs://{bucket}/{name}: {e}"))?;
    let mut md5 = Md5::new();
    let (mut buf, mut offset) = (Vec::with_capacity(CHUNK), 0u64);
    let done = loop {
        let next = stream.next().await;
        let last = next.is_none();
        if let Some(part) = next {
            let part = part.map_err(|e| format!("reading s3 object {source}: {}", one_line(&e.to_string())))?;
            read(part.len() as u64);
            md5.update(&part);
            buf.extend_from_slice(&part);
            if buf.len() < CHUNK {
                continue;
            }
        }
        // Whole chunks go now; the rest waits for more bytes or the end.
        let send = if last { buf.len() } else { buf.len() / CHUNK * CHUNK };
        let rest = buf.split_off(send);
        let len = buf.len() as u64;
        let answer = gcs
            .upload_chunk(&session, offset, std::mem::replace(&mut buf, rest), last)
            .await
            .map_err(|e| format!("copying to gs://{bucket}/{name}: {e}"))?;
        offset += len;
        if last {
            break answer;
        }
    };
    let digest = md5.finalize();
    let hex = hex::encode(digest);
    if offset != size {
        return Err(format!(
            "s3 object {source} has {offset} bytes but the Delta log records {size}: not loaded (was it rewritten in place?)"
        ));
    }
    let etag = etag.trim_matches('"');
    if etag.len() == 32 && !etag.contains('-') && !etag.eq_ignore_ascii_case(&hex) {
        return Err(format!(
            "s3 object {source}: the bytes read do not match its ETag (MD5): not loaded"
        ));
    }
    match done {
        Some((info, gcs_md5)) => {
            if info.size != size {
                return Err(format!(
                    "gs://{bucket}/{name} holds {} bytes, {size} were sent",
                    info.size
                ));
            }
            if let Some(m) = gcs_md5
                && m != base64::engine::general_purpose::STANDARD.encode(digest)
            {
                return Err(format!(
                    "gs://{bucket}/{name}: Cloud Storage's MD5 differs from the bytes sent"
                ));
            }
            Ok(Copied {
                bytes: offset,
                md5: hex,
            })
        }
        None => Err(format!("gs://{bucket}/{name}: the upload did not finish")),
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}
