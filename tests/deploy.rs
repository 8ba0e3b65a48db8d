//! What ships for clusters, checked without one: `kubectl kustomize config/default` renders offline
//! with the CRDs, least-privilege RBAC and a hardened Deployment; the ArgoCD health check (Lua)
//! runs under `lua5.4` against sample statuses of every kind; the Helm chart's templates use only
//! values its `values.yaml` defines (there is no helm binary here to render it).

mod support;

use serde_json::{Value, json};
use std::process::Command;
use support::argocd::health;

fn kustomize(dir: &str) -> Vec<serde_yaml::Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .expect("kubectl must be installed (tests render the kustomize bases with it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [serde_yaml::Value], k: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(k)).collect()
}

#[test]
fn kustomize_default_renders_everything_the_controller_needs() {
    let docs = kustomize("config/default");
    assert_eq!(kind(&docs, "CustomResourceDefinition").len(), 4);
    let deploy = kind(&docs, "Deployment")[0];
    assert_eq!(deploy["metadata"]["namespace"].as_str(), Some("bqsteward-system"));
    assert_eq!(deploy["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0].as_str(), Some("run"));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    // The policy ConfigMap (hash-suffixed by kustomize) is what the pod mounts.
    let cm = kind(&docs, "ConfigMap")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pod["volumes"][0]["configMap"]["name"].as_str(), Some(cm.as_str()));
    // Least privilege: no wildcard, no secrets, only what reconcile does.
    let role = kind(&docs, "ClusterRole")[0];
    let text = serde_yaml::to_string(role).unwrap();
    assert!(
        !text.contains('*') && !text.contains("secrets") && !text.contains("delete"),
        "{text}"
    );
    let lease = kind(&docs, "Role")[0];
    assert_eq!(lease["rules"][0]["resources"][0].as_str(), Some("leases"));
    let sa = kind(&docs, "ServiceAccount")[0];
    assert!(sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].is_string());
    // Samples render too.
    assert_eq!(kustomize("config/samples").len(), 4);
}

fn cond(t: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": status, "reason": reason, "message": message})
}

#[test]
fn argocd_health_maps_conditions_for_every_kind() {
    let obj = |generation: i64, observed: Option<i64>, conditions: Vec<Value>| {
        let mut o = json!({"metadata": {"generation": generation}});
        if let Some(g) = observed {
            o["status"] = json!({"observedGeneration": g, "conditions": conditions});
        }
        o
    };
    let ready = cond("Ready", "True", "UpToDate", "every source file is loaded");
    assert_eq!(health(obj(1, None, vec![])).0, "Progressing");
    assert_eq!(
        health(obj(2, Some(1), vec![ready.clone()])).0,
        "Progressing",
        "status older than the spec"
    );
    assert_eq!(
        health(obj(1, Some(1), vec![ready.clone()])),
        ("Healthy".into(), "every source file is loaded".into())
    );
    let loading = vec![
        cond("Ready", "False", "FilesPending", "3 files waiting"),
        cond("Loading", "True", "FilesPending", "3 files pending"),
        cond("Degraded", "False", "AsExpected", ""),
    ];
    assert_eq!(health(obj(1, Some(1), loading)).0, "Progressing");
    let quarantined = vec![
        cond("Ready", "True", "UpToDate", ""),
        cond("Degraded", "True", "FilesQuarantined", "2 files quarantined"),
    ];
    assert_eq!(
        health(obj(1, Some(1), quarantined)),
        ("Degraded".into(), "2 files quarantined".into())
    );
    let invalid = vec![cond(
        "Ready",
        "False",
        "InvalidSpec",
        "spec.access[2].iamMember: forbidden",
    )];
    assert_eq!(
        health(obj(1, Some(1), invalid)),
        (
            "Degraded".into(),
            "InvalidSpec: spec.access[2].iamMember: forbidden".into()
        )
    );
    let plan_only = vec![
        cond("Ready", "False", "PlanOnly", "plan only"),
        cond(
            "Planned",
            "True",
            "PendingChanges",
            "Plan: access lists: 1 dataset to change (+1 \u{2212}0 entries)",
        ),
    ];
    assert_eq!(
        health(obj(1, Some(1), plan_only)),
        (
            "Suspended".into(),
            "Plan: access lists: 1 dataset to change (+1 \u{2212}0 entries)".into()
        )
    );
    let failed = vec![cond("Ready", "False", "ApplyFailed", "dataset p.d does not exist")];
    assert_eq!(health(obj(3, Some(3), failed)).0, "Degraded");

    // The argocd-cm patch carries exactly this script for each kind.
    let script = std::fs::read_to_string("config/argocd/health.lua").unwrap();
    let cm: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("config/argocd/argocd-cm.yaml").unwrap()).unwrap();
    for k in ["IngestedTable", "DatasetAccess", "ConsumerProject", "GroupMembership"] {
        let key = format!("resource.customizations.health.bqsteward.dev_{k}");
        assert_eq!(
            cm["data"][key.as_str()].as_str(),
            Some(script.as_str()),
            "{key} differs from health.lua"
        );
    }
}

#[test]
fn chart_templates_use_only_defined_values() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("charts/bqsteward/values.yaml").unwrap()).unwrap();
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("charts/bqsteward/Chart.yaml").unwrap()).unwrap();
    assert_eq!(chart["name"].as_str(), Some("bqsteward"));
    let mut used = 0;
    for entry in std::fs::read_dir("charts/bqsteward/templates").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices(".Values.") {
            let rest = &text[i + ".Values.".len()..];
            let path_expr: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            let mut v = &values;
            for part in path_expr.trim_end_matches('.').split('.') {
                v = &v[part];
                assert!(
                    !v.is_null(),
                    "{}: .Values.{path_expr} is not in values.yaml",
                    path.display()
                );
            }
            used += 1;
        }
    }
    assert!(used > 15, "templates reference {used} values");
    assert!(
        !std::path::Path::new("charts/bqsteward/crds").exists(),
        "CRDs are installed from crds/, not the chart"
    );
}
