//! `bqsteward run` as a separate process against the real API server (`support::kube`), the way a
//! pod runs it: its own kubeconfig (a ServiceAccount token), the emulators and the Google API fakes
//! through their `*_EMULATOR_HOST` variables, `/metrics` on a loopback port. Killed (SIGKILL) when
//! dropped.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bqsteward run`.
pub struct Controller {
    child: Child,
    /// `POD_NAME` (its Lease identity).
    pub name: String,
    /// Port of `/metrics`.
    pub port: u16,
    /// Its log file (stderr).
    pub log: std::path::PathBuf,
}

/// How to start one.
pub struct Settings<'a> {
    /// Kubeconfig it uses (not the admin's).
    pub kubeconfig: &'a Path,
    /// Environment on top of a cleaned one (emulator hosts, identity).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `run`.
    pub args: Vec<String>,
    /// Directory for the log file.
    pub log_dir: &'a Path,
}

impl Controller {
    /// Starts `bqsteward run` as `name` with `/metrics` on `port`.
    pub fn start(name: &str, port: u16, s: &Settings<'_>) -> Controller {
        let log = s.log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_bqsteward"));
        c.arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(&s.args)
            .env("KUBECONFIG", s.kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,kube=warn,tower=warn,hyper=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for var in super::cli::ENDPOINT_VARS.iter().chain(&["POD_NAMESPACE"]) {
            c.env_remove(var);
        }
        // The audit spool of this replica (kept across its restarts).
        c.env("BQSTEWARD_AUDIT_SPOOL", s.log_dir.join(format!("{name}-audit-spool")));
        c.envs(s.env.iter().map(|(k, v)| (k, v)));
        let child = c.spawn().expect("start bqsteward run");
        Controller {
            child,
            name: name.to_string(),
            port,
            log,
        }
    }

    /// Its `/metrics` text (empty while it does not answer).
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{}/metrics", self.port),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of a counter summed over its label sets (0 when absent).
    pub fn counter(&self, name: &str) -> f64 {
        sum_metric(&self.metrics(), name)
    }

    /// Kills it with SIGKILL (no graceful shutdown: the Lease is not released).
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// The tail of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sums every sample of metric `name` (with or without labels) in OpenMetrics text.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 250 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
