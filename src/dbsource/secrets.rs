//! Connection Secrets of database sources: read from the cluster (`bqsteward run`) or from a
//! directory laid out like a mounted Secret (`plan`/`apply --secrets-dir DIR`: `DIR/<name>/<key>`).
//! A [`SecretText`] never prints its content (its `Debug` and `Display` are redacted), and every
//! error names the Secret and key — never what is in it.

use async_trait::async_trait;

/// A secret value. Read it with [`SecretText::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a value (trailing newlines of a mounted file are not part of it).
    pub fn new(text: &str) -> SecretText {
        SecretText(text.trim_end_matches(['\n', '\r']).to_string())
    }
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Reads one key of a Secret in a namespace.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The value of `key` in Secret `name` of `namespace`; the error names both, never the value.
    async fn read(&self, namespace: &str, name: &str, key: &str) -> Result<SecretText, String>;
}

/// Secrets from a directory: `DIR/<name>/<key>` (the layout of a Secret mounted as a volume).
/// Manifests of every namespace read the same directory.
#[derive(Clone, Debug)]
pub struct DirSecrets {
    /// The directory.
    pub dir: std::path::PathBuf,
}

#[async_trait]
impl Secrets for DirSecrets {
    async fn read(&self, _namespace: &str, name: &str, key: &str) -> Result<SecretText, String> {
        let path = self.dir.join(name).join(key);
        tokio::fs::read_to_string(&path)
            .await
            .map(|t| SecretText::new(&t))
            .map_err(|e| {
                format!(
                    "cannot read Secret {name:?} key {key:?} from {}: {}",
                    path.display(),
                    e.kind()
                )
            })
    }
}

/// No Secrets configured: every read fails with how to give them.
#[derive(Clone, Copy, Debug)]
pub struct NoSecrets;

#[async_trait]
impl Secrets for NoSecrets {
    async fn read(&self, _namespace: &str, name: &str, key: &str) -> Result<SecretText, String> {
        Err(format!(
            "Secret {name:?} key {key:?} is needed to reach the database: pass --secrets-dir DIR holding DIR/{name}/{key}"
        ))
    }
}

/// Secrets from the Kubernetes API (`get` on one Secret in the object's namespace).
#[derive(Clone)]
pub struct KubeSecrets {
    /// The client.
    pub client: kube::Client,
}

#[async_trait]
impl Secrets for KubeSecrets {
    async fn read(&self, namespace: &str, name: &str, key: &str) -> Result<SecretText, String> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(self.client.clone(), namespace);
        let secret = api.get_opt(name).await.map_err(|e| {
            format!(
                "cannot read Secret {namespace}/{name}: {}",
                crate::dbsource::conn::kube_reason(&e)
            )
        })?;
        let Some(secret) = secret else {
            return Err(format!(
                "Secret {namespace}/{name} does not exist: create it with the key {key:?} holding the connection URL"
            ));
        };
        let data = secret.data.unwrap_or_default();
        let Some(value) = data.get(key) else {
            return Err(format!(
                "Secret {namespace}/{name} has no key {key:?} (keys: {})",
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let text = String::from_utf8(value.0.clone())
            .map_err(|_| format!("Secret {namespace}/{name} key {key:?} is not UTF-8 text"))?;
        Ok(SecretText::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_secret_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("replica")).unwrap();
        std::fs::write(dir.path().join("replica/url"), "mysql://u:hunter2@h/db\n").unwrap();
        let s = DirSecrets { dir: dir.path().into() };
        let v = s.read("ns", "replica", "url").await.unwrap();
        assert_eq!(v.expose(), "mysql://u:hunter2@h/db");
        assert!(!format!("{v:?}").contains("hunter2"));
        let e = s.read("ns", "replica", "password").await.unwrap_err();
        assert!(e.contains("\"replica\"") && e.contains("\"password\""), "{e}");
    }
}
