//! Undeclared fields in NEWLINE_DELIMITED_JSON files of a source with `excludedColumns`. Such a
//! load must ignore unknown values (that is how excluded fields are dropped before BigQuery holds
//! them), which would also drop any *other* undeclared field silently; so the first lines of each
//! new file are read before its load, and a file carrying a field that is neither declared nor
//! excluded is quarantined (IncompatibleSchema), as it is on sources without exclusions.
//!
//! Cost: one ranged read of at most [`HEAD_BYTES`] per new file, before its first load (not for
//! files already in the ledger). Only complete lines within that head are checked: a field that
//! first appears further into a file is not seen (it is dropped, as before) — the check catches a
//! producer's new field, which shows in every record, not a single odd record deep in a file.

/// Bytes read from the start of each file.
pub const HEAD_BYTES: u64 = 64 * 1024;

/// The top-level field names in the complete JSON lines of `head` that are neither in `declared`
/// nor in `excluded` (case-insensitive), in order of appearance.
pub fn undeclared_fields(head: &[u8], declared: &[String], excluded: &[String]) -> Vec<String> {
    let known = |k: &str| declared.iter().chain(excluded).any(|d| d.eq_ignore_ascii_case(k));
    let mut out: Vec<String> = Vec::new();
    // The last line may be cut by the ranged read: only lines that end are checked.
    let complete = match head.iter().rposition(|b| *b == b'\n') {
        Some(i) => &head[..i],
        None if (head.len() as u64) < HEAD_BYTES => head,
        None => &[],
    };
    for line in complete.split(|b| *b == b'\n') {
        let Ok(serde_json::Value::Object(record)) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue; // not a record: BigQuery's own parse reports corrupt files
        };
        for key in record.keys() {
            if !known(key) && !out.iter().any(|k| k == key) {
                out.push(key.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_undeclared_fields_in_complete_lines_only() {
        let declared = vec!["id".to_string(), "Email".to_string()];
        let excluded = vec!["card_number".to_string()];
        let head = b"{\"id\": 1, \"email\": \"a\", \"card_number\": \"4111\"}\n{\"id\": 2, \"coupon\": \"X\"}\n{\"id\": 3, \"cut";
        assert_eq!(undeclared_fields(head, &declared, &excluded), ["coupon"]);
        assert!(undeclared_fields(b"{\"id\": 1}\n", &declared, &excluded).is_empty());
        // A whole small file without a final newline is complete.
        assert_eq!(
            undeclared_fields(b"{\"ID\": 1, \"extra\": 2}", &declared, &excluded),
            ["extra"]
        );
        // Not JSON records: left to BigQuery.
        assert!(undeclared_fields(b"not json\n[1,2]\n", &declared, &excluded).is_empty());
    }
}
