//! Loading manifests: files, directories (recursive `*.yaml`/`*.yml`) or stdin, multi-document
//! YAML, into typed bqsteward resources. Objects of other kinds are skipped with a note; every
//! problem becomes a [`Diagnostic`] naming the file, document, resource and field.

use crate::crd::{API_VERSION, ConsumerProject, DatasetAccess, GROUP, GroupMembership, IngestedTable};
use serde::Serialize;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::input_limits::MAX_INPUT_BYTES;

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// File path as given (or `<stdin>`).
    pub file: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole-file problems (unreadable, too large, empty) have no line or document.
        if self.line == 0 && self.document == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{} (document {})", self.file, self.line, self.document)
        }
    }
}

/// One problem found in the manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Where.
    pub origin: Origin,
    /// Resource kind, when known.
    pub kind: Option<String>,
    /// `namespace/name`, when known.
    pub name: Option<String>,
    /// Field path, e.g. `spec.access[2].user` (empty for a whole document).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " {k} {n}")?,
            (Some(k), None) => write!(f, " {k}")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A bqsteward resource of any kind.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    /// An IngestedTable.
    IngestedTable(IngestedTable),
    /// A DatasetAccess.
    DatasetAccess(DatasetAccess),
    /// A ConsumerProject.
    ConsumerProject(ConsumerProject),
    /// A GroupMembership.
    GroupMembership(GroupMembership),
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::IngestedTable(_) => "IngestedTable",
            Resource::DatasetAccess(_) => "DatasetAccess",
            Resource::ConsumerProject(_) => "ConsumerProject",
            Resource::GroupMembership(_) => "GroupMembership",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &kube::core::ObjectMeta {
        match self {
            Resource::IngestedTable(r) => &r.metadata,
            Resource::DatasetAccess(r) => &r.metadata,
            Resource::ConsumerProject(r) => &r.metadata,
            Resource::GroupMembership(r) => &r.metadata,
        }
    }

    /// The namespace, `default` when the manifest names none.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.metadata().name.as_deref().unwrap_or(""))
    }

    /// What this resource declares to the ACL compiler (the one place that picks a kind's
    /// implementation).
    pub fn declares(&self) -> &dyn crate::access::declare::DeclaresAccess {
        match self {
            Resource::IngestedTable(r) => r,
            Resource::DatasetAccess(r) => r,
            Resource::ConsumerProject(r) => r,
            Resource::GroupMembership(r) => r,
        }
    }

    /// The whole object as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Resource::IngestedTable(r) => serde_json::to_value(r),
            Resource::DatasetAccess(r) => serde_json::to_value(r),
            Resource::ConsumerProject(r) => serde_json::to_value(r),
            Resource::GroupMembership(r) => serde_json::to_value(r),
        }
        .unwrap_or_default()
    }

    /// A comma-separated annotation as its items, trimmed and lowercased (empty when unset).
    pub fn annotation_list(&self, key: &str) -> Vec<String> {
        self.annotation(key)
            .unwrap_or("")
            .split(',')
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    }

    /// The value of an annotation, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata().annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A resource and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The typed resource.
    pub resource: Resource,
    /// Where it came from.
    pub origin: Origin,
}

/// A document that is not a bqsteward resource and was skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Where.
    pub origin: Origin,
    /// Its `apiVersion`/`kind`, as far as readable.
    pub what: String,
}

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Resources parsed successfully.
    pub resources: Vec<Loaded>,
    /// Documents of other kinds.
    pub skipped: Vec<Skipped>,
    /// Problems: unreadable paths, YAML syntax, schema errors.
    pub errors: Vec<Diagnostic>,
}

/// Reads every path (file, directory, or `-` for stdin) and parses all documents in it.
pub fn load_paths(paths: &[PathBuf]) -> LoadReport {
    let mut report = LoadReport::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().take(MAX_INPUT_BYTES + 1).read_to_string(&mut text) {
                Ok(n) if n as u64 > MAX_INPUT_BYTES => report.errors.push(file_error("<stdin>", too_large())),
                Ok(_) => load_str("<stdin>", &text, &mut report),
                Err(e) => report
                    .errors
                    .push(file_error("<stdin>", format!("cannot read stdin: {e}"))),
            }
            continue;
        }
        let mut files = Vec::new();
        if let Err(message) = collect_files(path, &mut files) {
            report.errors.push(file_error(&path.display().to_string(), message));
            continue;
        }
        for file in files {
            let name = file.display().to_string();
            if std::fs::metadata(&file).is_ok_and(|m| m.len() > MAX_INPUT_BYTES) {
                report.errors.push(file_error(&name, too_large()));
                continue;
            }
            match std::fs::read_to_string(&file) {
                Ok(text) => load_str(&name, &text, &mut report),
                Err(e) => report.errors.push(file_error(&name, format!("cannot read file: {e}"))),
            }
        }
    }
    // Nothing at all is a mistake (a wrong path, an empty file, a pipe that produced nothing), not
    // a healthy "0 resources valid".
    if report.resources.is_empty() && report.skipped.is_empty() && report.errors.is_empty() {
        let named: Vec<String> = paths
            .iter()
            .map(|p| {
                if p.as_os_str() == "-" {
                    "<stdin>".to_string()
                } else {
                    p.display().to_string()
                }
            })
            .collect();
        report.errors.push(file_error(
            &named.join(", "),
            "no YAML documents found: nothing to check; point -f at the files or directories holding your manifests \
             (an empty file, directory or stdin is an error)"
                .to_string(),
        ));
    }
    report
}

fn too_large() -> String {
    format!("larger than {MAX_INPUT_BYTES} bytes: not read (split the manifests into several files)")
}

fn file_error(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        origin: Origin {
            file: file.to_string(),
            document: 0,
            line: 0,
        },
        kind: None,
        name: None,
        field: String::new(),
        message,
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read path: {e}"))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read directory: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let hidden = entry.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Splits a YAML stream into documents: `(first line, text)`, 1-based lines. A document marker is
/// `---` at the start of a line (block scalars are indented, so it cannot occur inside one).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker || line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 1;
            // `--- {inline: doc}` keeps its content on the marker line.
            if let Some(rest) = line.strip_prefix("---") {
                current.push_str(rest);
            }
            current.push('\n');
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter().filter(|(_, d)| has_content(d)).collect()
}

fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// Parses every document of one YAML stream into `report`.
pub fn load_str(file: &str, text: &str, report: &mut LoadReport) {
    for (number, (line, doc)) in split_documents(text).into_iter().enumerate() {
        let origin = Origin {
            file: file.to_string(),
            document: number + 1,
            line,
        };
        load_document(origin, &doc, report);
    }
}

fn load_document(origin: Origin, doc: &str, report: &mut LoadReport) {
    let diag = |kind: Option<&str>, name: Option<String>, field: &str, message: String| Diagnostic {
        origin: origin.clone(),
        kind: kind.map(str::to_string),
        name,
        field: field.to_string(),
        message,
    };
    if let Err(message) = crate::input_limits::check_document(doc) {
        report.errors.push(diag(None, None, "", message));
        return;
    }
    let value: serde_yaml::Value = match serde_yaml::from_str(doc) {
        Ok(v) => v,
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!(" at line {}", origin.line + l.line() - 1))
                .unwrap_or_default();
            report.errors.push(diag(
                None,
                None,
                "",
                format!("not valid YAML{at}: {}", strip_location(&e.to_string())),
            ));
            return;
        }
    };
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
    let group = api_version.split('/').next().unwrap_or_default();
    if group != GROUP {
        let what = if api_version.is_empty() && kind.is_empty() {
            "a document without apiVersion/kind".to_string()
        } else {
            format!("{api_version} {kind}")
        };
        report.skipped.push(Skipped { origin, what });
        return;
    }
    let meta = value.get("metadata");
    let name_of = |key: &str| meta.and_then(|m| m.get(key)).and_then(|v| v.as_str());
    let qualified = name_of("name").map(|n| format!("{}/{n}", name_of("namespace").unwrap_or("default")));
    const KINDS: [&str; 4] = ["IngestedTable", "DatasetAccess", "ConsumerProject", "GroupMembership"];
    if !KINDS.contains(&kind) {
        let message = format!("unknown kind {kind:?} in {GROUP}; expected one of {}", KINDS.join(", "));
        report.errors.push(diag(None, qualified, "kind", message));
        return;
    }
    if api_version != API_VERSION {
        let message = format!("unsupported apiVersion {api_version:?}; this bqsteward reads {API_VERSION}");
        report.errors.push(diag(Some(kind), qualified, "apiVersion", message));
        return;
    }
    // Every problem of the document at once: the name, then the whole schema (serde stops at
    // the first problem; the schema walk does not).
    let name_problem = check_name(name_of("name"));
    if let Some(message) = &name_problem {
        report
            .errors
            .push(diag(Some(kind), qualified.clone(), "metadata.name", message.clone()));
    }
    let parsed = match kind {
        "IngestedTable" => typed(doc).map(Resource::IngestedTable),
        "DatasetAccess" => typed(doc).map(Resource::DatasetAccess),
        "ConsumerProject" => typed(doc).map(Resource::ConsumerProject),
        _ => typed(doc).map(Resource::GroupMembership),
    };
    match parsed {
        Ok(resource) if name_problem.is_none() => report.resources.push(Loaded { resource, origin }),
        Ok(_) => {}
        Err((field, message)) => {
            let walked = serde_json::to_value(&value)
                .map(|v| crate::schema_check::check(kind, &v))
                .unwrap_or_default();
            if walked.is_empty() {
                report.errors.push(diag(Some(kind), qualified, &field, message));
            } else {
                for (field, message) in walked {
                    report.errors.push(diag(Some(kind), qualified.clone(), &field, message));
                }
            }
        }
    }
}

/// A Kubernetes object name (a Secret's, say): `Err` says what is wrong.
pub fn k8s_name(name: &str) -> Result<(), String> {
    check_name(Some(name)).map_or(Ok(()), Err)
}

/// A Kubernetes object name: a DNS subdomain (RFC 1123), at most 253 characters.
fn check_name(name: Option<&str>) -> Option<String> {
    let Some(name) = name else {
        return Some("missing: every resource needs metadata.name".into());
    };
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(ok_label) {
        return Some(format!(
            "{name:?} is not a valid Kubernetes name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    None
}

/// Deserializes one document into `T`, returning the failing field path and a readable message.
fn typed<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, (String, String)> {
    let de = serde_yaml::Deserializer::from_str(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut path = if path == "." { String::new() } else { path };
        let message = strip_location(&e.inner().to_string());
        // serde_yaml prefixes its own rendering of the path; the diagnostic carries it already.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => rest.to_string(),
            _ => message,
        };
        // Name the offending field itself, not only the object holding it.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            && !path.ends_with(field)
        {
            path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        (path, message)
    })
}

/// serde_yaml appends " at line L column C" relative to the document; the origin already says
/// where the document is, and the field path says where in it.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_tracks_lines() {
        let docs = split_documents("# c\n---\na: 1\n---\n\n---\nb: 2\n...\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 2);
        assert_eq!(docs[1].0, 6);
    }

    #[test]
    fn skips_other_kinds_and_reports_unknown_fields() {
        let mut report = LoadReport::default();
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: bqsteward.dev/v1alpha1\nkind: GroupMembership\nmetadata: {name: g}\nspec:\n  group: a@b.com\n  members: [{email: x@b.com, rol: OWNER}]\n";
        load_str("t.yaml", text, &mut report);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(e.field, "spec.members[0].rol");
        assert!(e.message.contains("unknown field `rol`"), "{}", e.message);
        assert_eq!(e.origin.document, 2);
        assert_eq!(e.name.as_deref(), Some("default/g"));
    }
}
