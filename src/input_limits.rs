//! Limits checked on manifest text **before** it is parsed: manifest content is untrusted (a pull
//! request can carry anything), and a YAML parser's time and memory are not linear in every input
//! (a few hundred kilobytes of nested `[[[…` kept `validate` busy for 97 s; a 20 MB document took
//! 2 GB). Pure functions over the text, linear in its size; `manifest` calls them.

/// Largest input read from one file or stdin.
pub const MAX_INPUT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest single document: Kubernetes stores objects up to about 1.5 MiB, so no larger
/// bqsteward object can exist in a cluster either.
pub const MAX_DOCUMENT_BYTES: usize = 1536 * 1024;
/// Deepest nesting of mappings and sequences (a bqsteward manifest needs fewer than ten).
pub const MAX_NESTING: usize = 64;

/// Why a document is refused before parsing, or `Ok`.
pub fn check_document(doc: &str) -> Result<(), String> {
    if doc.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is {} bytes; the limit is {MAX_DOCUMENT_BYTES} (Kubernetes stores objects up to about \
             1.5 MiB): split it into several resources",
            doc.len()
        ));
    }
    let depth = nesting(doc);
    if depth > MAX_NESTING {
        return Err(format!(
            "the document nests mappings and sequences {depth} levels deep; the limit is {MAX_NESTING} (a bqsteward \
             manifest needs fewer than ten): it was refused before parsing"
        ));
    }
    Ok(())
}

/// An upper estimate of a document's nesting: open flow collections (`[`, `{` outside quotes and
/// comments) plus block levels (distinct indentations still open), at the deepest point. One pass.
pub fn nesting(doc: &str) -> usize {
    let mut deepest = 0;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for line in doc.lines() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if flow == 0 {
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut previous = ' ';
        for ch in content.chars() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if ch == '\\' => escaped = true,
                Some(q) if ch == q => quote = None,
                Some(_) => {}
                None => match ch {
                    '"' | '\'' => quote = Some(ch),
                    '#' if previous.is_whitespace() => break,
                    '[' | '{' => {
                        flow += 1;
                        deepest = deepest.max(flow + indents.len());
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = ch;
        }
        deepest = deepest.max(flow + indents.len());
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_manifests_are_shallow() {
        let sample = include_str!("../config/samples/payments-transactions.yaml");
        assert!(nesting(sample) < 8, "{}", nesting(sample));
        assert_eq!(check_document(sample), Ok(()));
        let access = include_str!("../config/samples/payments-clean-access.yaml");
        assert!(nesting(access) < 8);
    }

    #[test]
    fn deep_flow_nesting_is_refused_in_linear_time() {
        let n = 200_000;
        let doc = format!("spec: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(nesting(&doc), n + 1);
        let e = check_document(&doc).unwrap_err();
        assert!(e.contains("levels deep"), "{e}");
        let at_limit = format!("spec: {}{}\n", "[".repeat(MAX_NESTING - 1), "]".repeat(MAX_NESTING - 1));
        assert_eq!(check_document(&at_limit), Ok(()));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let doc = "a: \"[[[[[[\"\nb: '{{{{ it''s'\nc: x # [[[[[[[\nd: \"\\\"[[[\"\n";
        assert_eq!(nesting(doc), 1);
    }

    #[test]
    fn deep_block_nesting_counts_indentation() {
        let doc: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(nesting(&doc) >= 100);
    }

    #[test]
    fn large_documents_are_refused() {
        let doc = format!("a: \"{}\"\n", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(check_document(&doc).unwrap_err().contains("split it"));
    }
}
