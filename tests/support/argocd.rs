//! The ArgoCD health check (`config/argocd/health.lua`) run under `lua5.4` against an object, as
//! ArgoCD runs it: `obj` is the object, the script returns `{status, message}`.

#![allow(dead_code)]

use serde_json::Value;
use std::process::Command;

/// A JSON value as a Lua table literal.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The (status, message) the health check returns for `obj`.
pub fn health(obj: Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/argocd/health.lua")).unwrap();
    let program = format!(
        "obj = {}\nlocal function check()\n{script}\nend\nlocal hs = check()\nio.write(hs.status, \"|\", hs.message or \"\")",
        lua(&obj)
    );
    let out = Command::new("lua5.4")
        .args(["-e", &program])
        .output()
        .expect("lua5.4 must be installed (scripts/test.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (s, m) = text.split_once('|').unwrap();
    (s.to_string(), m.to_string())
}
