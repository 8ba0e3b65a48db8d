//! Every schema problem of a manifest document at once, in plain words: the document's `spec`
//! walked against the OpenAPI schema of its CRD (generated from the same Rust types), collecting
//! unknown fields (with a "did you mean" and the fields allowed), wrong types (with the range or
//! the form expected), values outside an enum (with the allowed values), and missing required
//! fields. Used when typed parsing fails — serde stops at the first problem; this does not. Pure.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// One problem: field path (`spec.members[0].rol`) and message.
pub type Problem = (String, String);

/// The `spec` schema of each kind.
fn schemas() -> &'static HashMap<String, Value> {
    static SCHEMAS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        crate::crd::all_crds()
            .into_iter()
            .filter_map(|crd| {
                let version = crd.spec.versions.first()?;
                let schema = serde_json::to_value(version.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()?;
                Some((crd.spec.names.kind.clone(), schema))
            })
            .collect()
    })
}

/// The problems of document `doc` (a bqsteward object of `kind`): top-level fields, and `spec`
/// against its schema.
pub fn check(kind: &str, doc: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(schema) = schemas().get(kind) else { return out };
    let Some(obj) = doc.as_object() else {
        out.push((
            String::new(),
            format!("expected a mapping (the {kind} object), found {}", describe(doc)),
        ));
        return out;
    };
    let top = ["apiVersion", "kind", "metadata", "spec", "status"];
    for key in obj.keys() {
        if !top.contains(&key.as_str()) {
            out.push((key.clone(), unknown(key, &top)));
        }
    }
    match obj.get("spec") {
        Some(spec) => walk("spec", spec, &schema["properties"]["spec"], &mut out),
        None => out.push(("spec".into(), "missing: every resource needs a spec".into())),
    }
    out
}

fn walk(path: &str, value: &Value, schema: &Value, out: &mut Vec<Problem>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            out.push((path.into(), format!("is empty; expected {}", expected(schema))));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .collect();
        let hint = value
            .as_str()
            .and_then(|s| closest(s, list.iter().map(String::as_str)))
            .map(|c| format!(" (did you mean {c}?)"))
            .unwrap_or_default();
        out.push((
            path.into(),
            format!(
                "{} is not allowed; use one of {}{hint}",
                describe(value),
                list.join(", ")
            ),
        ));
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                out.push((
                    path.into(),
                    format!("expected {}, found {}", expected(schema), describe(value)),
                ));
                return;
            };
            let props = schema["properties"].as_object();
            let extra = &schema["additionalProperties"];
            for (key, v) in obj {
                let child = format!("{path}.{key}");
                match props.and_then(|p| p.get(key)) {
                    Some(s) => walk(&child, v, s, out),
                    None if extra.is_object() => walk(&child, v, extra, out),
                    None if extra == &Value::Bool(true) || props.is_none() => {}
                    None => {
                        let names: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        out.push((child, unknown(key, &names)));
                    }
                }
            }
            for r in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(r) {
                    out.push((format!("{path}.{r}"), "missing: this field is required".into()));
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push((path.into(), format!("expected a list, found {}", describe(value))));
                return;
            };
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.push((
                    path.into(),
                    format!("has {} items; at most {max} are allowed", items.len()),
                ));
            }
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), v, &schema["items"], out);
            }
        }
        Some("string") if !value.is_string() && schema["x-kubernetes-int-or-string"] != Value::Bool(true) => {
            out.push((
                path.into(),
                format!("expected {}, found {}", expected(schema), describe(value)),
            ));
        }
        Some("integer") => match integer_range(schema) {
            (lo, hi)
                if value
                    .as_i64()
                    .is_some_and(|v| i128::from(v) >= lo && i128::from(v) <= hi) => {}
            (lo, hi)
                if value
                    .as_u64()
                    .is_some_and(|v| i128::from(v) >= lo && i128::from(v) <= hi) => {}
            _ => out.push((
                path.into(),
                format!("expected {}, found {}", expected(schema), describe(value)),
            )),
        },
        Some("number") if !value.is_number() => {
            out.push((path.into(), format!("expected a number, found {}", describe(value))));
        }
        Some("boolean") if !value.is_boolean() => {
            out.push((
                path.into(),
                format!("expected true or false, found {}", describe(value)),
            ));
        }
        _ => {}
    }
}

/// The allowed range of an integer schema (its format, then `minimum`/`maximum`).
fn integer_range(schema: &Value) -> (i128, i128) {
    let (mut lo, mut hi) = match schema["format"].as_str() {
        Some("uint32") => (0, i128::from(u32::MAX)),
        Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
        Some("uint64") | Some("uint") => (0, i128::from(u64::MAX)),
        _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
    };
    if let Some(m) = schema["minimum"].as_f64() {
        lo = lo.max(m.ceil() as i128);
    }
    if let Some(m) = schema["maximum"].as_f64() {
        hi = hi.min(m.floor() as i128);
    }
    (lo, hi)
}

/// What a schema expects, in words.
fn expected(schema: &Value) -> String {
    match schema["type"].as_str() {
        Some("object") => "a mapping (key: value pairs)".into(),
        Some("array") => "a list".into(),
        Some("string") => "text".into(),
        Some("boolean") => "true or false".into(),
        Some("number") => "a number".into(),
        Some("integer") => {
            let (lo, hi) = integer_range(schema);
            if lo == 0 && hi >= i128::from(u32::MAX) {
                format!("a whole number from 0 to {hi}")
            } else if lo <= i128::from(i64::MIN) {
                "a whole number".into()
            } else {
                format!("a whole number from {lo} to {hi}")
            }
        }
        _ => "a value".into(),
    }
}

/// A value, in words (`the number -5`, `the text "x"`, `a list`).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn unknown(key: &str, allowed: &[&str]) -> String {
    let hint = closest(key, allowed.iter().copied())
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    format!("unknown field `{key}`{hint} (allowed here: {})", allowed.join(", "))
}

/// The allowed name closest to `word`, when it is close enough to be a misspelling.
fn closest<'a>(word: &str, allowed: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    closest_within(word, allowed, 0.8)
}

/// The candidate most similar to `word` (case-insensitive Jaro-Winkler), if at least `min`.
pub fn closest_within<'a>(word: &str, candidates: impl Iterator<Item = &'a str>, min: f64) -> Option<&'a str> {
    candidates
        .map(|a| (strsim::jaro_winkler(&word.to_lowercase(), &a.to_lowercase()), a))
        .filter(|(score, _)| *score >= min)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_a_document_at_once() {
        let doc: Value = serde_yaml::from_str(
            r#"
apiVersion: bqsteward.dev/v1alpha1
kind: IngestedTable
metadata: {name: t}
spec:
  source: {uri: "gs://b/p/", format: NDJSON}
  destinaton: {project: p, dataset: d, table: t}
  schema: [{name: id, type: INT64, mod: REQUIRED}]
  loadPolicy: {maxFilesPerJob: -5}
  primaryKey: id
"#,
        )
        .unwrap();
        let problems = check("IngestedTable", &doc);
        let text: String = problems.iter().map(|(f, m)| format!("{f}: {m}\n")).collect();
        for needle in [
            "spec.source.format",
            "did you mean",
            "spec.destinaton",
            "did you mean `destination`",
            "spec.schema[0].mod",
            "spec.loadPolicy.maxFilesPerJob",
            "a whole number from 1 to 10000, found the number -5",
            "spec.primaryKey",
            "expected a list, found the text \"id\"",
            "spec.destination",
            "missing: this field is required",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }
}
