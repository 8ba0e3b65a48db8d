//! `bqsteward bench extract`: rows/s and MB/s of a database pull against the engine's own export
//! (`mariadb --batch` / `psql \copy … TO STDOUT`) of the same rows on the same machine in the same
//! run, and the pull's peak memory.
//!
//! The pull is the production one ([`super::extract::pull`]: snapshot, JSON encoding in the
//! database, part files of `fileSizeMib`) writing into a Cloud Storage that keeps nothing, so the
//! figure is the extraction's cost, not an emulator's. The baseline writes to `/dev/null`.

use super::conn::Conn;
use super::extract::{Extraction, PullRequest};
use super::landing::SetKind;
use super::secrets::SecretText;
use super::types::{self, Extracted, WatermarkKind};
use crate::cloud::CloudError;
use crate::cloud::storage::{ObjectInfo, Storage};
use crate::crd::DatabaseEngine;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};

/// A Cloud Storage that counts what it is given and keeps nothing.
#[derive(Default)]
struct Discard {
    bytes: AtomicU64,
}

#[async_trait]
impl Storage for Discard {
    async fn list_each(
        &self,
        _bucket: &str,
        _prefix: &str,
        _sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        Ok(())
    }
    async fn read_head(&self, _: &str, _: &str, _: i64, _: u64) -> Result<Vec<u8>, CloudError> {
        Ok(Vec::new())
    }
    async fn upload(&self, b: &str, n: &str, d: Vec<u8>, c: &str) -> Result<ObjectInfo, CloudError> {
        self.create(b, n, d, c).await
    }
    async fn create(&self, _: &str, name: &str, data: Vec<u8>, _: &str) -> Result<ObjectInfo, CloudError> {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(ObjectInfo {
            name: name.into(),
            size: data.len() as u64,
            generation: 1,
            updated: String::new(),
        })
    }
    async fn delete(&self, _: &str, _: &str, _: i64) -> Result<(), CloudError> {
        Ok(())
    }
    async fn create_bucket(&self, _: &str, _: &str) -> Result<(), CloudError> {
        Ok(())
    }
}

/// The figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Rows pulled.
    pub rows: u64,
    /// Bytes of JSON lines written.
    pub bytes: u64,
    /// Pull wall seconds.
    pub pull_s: f64,
    /// Baseline wall seconds.
    pub baseline_s: f64,
    /// Bytes the baseline printed.
    pub baseline_bytes: u64,
    /// Peak resident memory of this process after the pull (MiB).
    pub peak_mib: f64,
}

const COLUMNS: [(&str, &str, &str); 5] = [
    ("id", "BIGINT", "bigint"),
    ("amount", "DECIMAL(12,2)", "numeric(12,2)"),
    ("status", "VARCHAR(20)", "varchar(20)"),
    ("email", "VARCHAR(64)", "varchar(64)"),
    ("modify_time", "DATETIME(6)", "timestamp"),
];

/// Creates `bqsteward_bench.rows_<n>` when missing (n rows); returns a connection and the
/// extraction of the table (also used by `bqsteward bench check`).
pub(crate) async fn prepare(
    engine: DatabaseEngine,
    url: &SecretText,
    rows: u64,
    file_mib: u32,
) -> Result<(Conn, Extraction), String> {
    let table = format!("rows_{rows}");
    let mut conn = Conn::open(engine, url, "--url-file").await.map_err(|e| e.message)?;
    let err = |e: sqlx::Error| super::conn::redact(&e.to_string(), url);
    let exists = match engine {
        DatabaseEngine::Mysql => {
            conn.exec("CREATE DATABASE IF NOT EXISTS bqsteward_bench")
                .await
                .map_err(err)?;
            conn.texts(
                "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bqsteward_bench' AND TABLE_NAME = ?",
                &[&table],
            )
            .await
            .map_err(err)?
        }
        DatabaseEngine::Postgres => {
            conn.exec("CREATE SCHEMA IF NOT EXISTS bqsteward_bench")
                .await
                .map_err(err)?;
            conn.texts(
                "SELECT COUNT(*)::text FROM information_schema.tables WHERE table_schema = 'bqsteward_bench' AND table_name = $1",
                &[&table],
            )
            .await
            .map_err(err)?
        }
    };
    if exists.first().and_then(|r| r[0].as_deref()) != Some("1") {
        let cols: Vec<String> = COLUMNS
            .iter()
            .map(|(n, my, pg)| format!("{n} {}", if engine == DatabaseEngine::Mysql { my } else { pg }))
            .collect();
        let fill = match engine {
            DatabaseEngine::Mysql => format!(
                "INSERT INTO bqsteward_bench.{table} SELECT seq, seq * 1.25, IF(seq % 3 = 0, 'refunded', 'paid'), \
                 CONCAT('user', seq, '@example.com'), '2026-11-01' + INTERVAL seq SECOND FROM seq_1_to_{rows}"
            ),
            DatabaseEngine::Postgres => format!(
                "INSERT INTO bqsteward_bench.{table} SELECT i, i * 1.25, CASE WHEN i % 3 = 0 THEN 'refunded' ELSE 'paid' END, \
                 'user' || i || '@example.com', '2026-11-01'::timestamp + i * interval '1 second' FROM generate_series(1, {rows}) i"
            ),
        };
        conn.exec(&format!(
            "CREATE TABLE bqsteward_bench.{table} ({}, PRIMARY KEY (id))",
            cols.join(", ")
        ))
        .await
        .map_err(err)?;
        conn.exec(&fill).await.map_err(err)?;
    }
    let source: Vec<types::SourceColumn> = COLUMNS
        .iter()
        .map(|(n, my, pg)| types::SourceColumn {
            name: n.to_string(),
            data_type: match engine {
                DatabaseEngine::Mysql => my.split('(').next().unwrap_or(my).to_lowercase(),
                DatabaseEngine::Postgres => match *pg {
                    "timestamp" => "timestamp without time zone".into(),
                    "varchar(20)" | "varchar(64)" => "character varying".into(),
                    "numeric(12,2)" => "numeric".into(),
                    other => other.into(),
                },
            },
            column_type: match engine {
                DatabaseEngine::Mysql => my.to_lowercase(),
                DatabaseEngine::Postgres => pg.to_string(),
            },
            precision: Some(12),
            scale: Some(2),
            nullable: true,
        })
        .collect();
    let columns: Vec<Extracted> = source
        .into_iter()
        .map(|s| {
            let (mapped, _) = types::bigquery_type(engine, &s).expect("bench columns map");
            Extracted {
                name: s.name.clone(),
                declared: mapped,
                mapped,
                source: s,
            }
        })
        .collect();
    let x = Extraction {
        engine,
        schema: "bqsteward_bench".into(),
        table: table.clone(),
        columns,
        watermark: Some((
            "modify_time".into(),
            WatermarkKind::Time(crate::crd::ColumnType::Datetime),
        )),
        bucket: "bench".into(),
        prefix: "bench/".into(),
        file_bytes: (file_mib as usize) << 20,
        timeout: std::time::Duration::from_secs(3600),
        primary_key: vec!["id".into()],
        pii: Vec::new(),
    };
    Ok((conn, x))
}

/// Creates `bqsteward_bench.rows_<n>` when missing (n rows), pulls it, runs the baseline.
pub async fn run(engine: DatabaseEngine, url: &SecretText, rows: u64, file_mib: u32) -> Result<Figures, String> {
    let (mut conn, x) = prepare(engine, url, rows, file_mib).await?;
    let table = x.table.clone();
    let sink = Discard::default();
    let req = PullRequest {
        kind: SetKind::Pull,
        set: "pull-bench".into(),
        low: None,
        below: None,
    };
    let started = std::time::Instant::now();
    let marker = super::extract::pull(&mut conn, &sink, &x, &req, url)
        .await
        .map_err(|e| e.message)?;
    let pull_s = started.elapsed().as_secs_f64();
    let peak_mib = crate::ingest::bench::peak_mib();
    conn.close().await;
    let (baseline_s, baseline_bytes) = baseline(engine, url, &table)?;
    Ok(Figures {
        rows: marker.rows,
        bytes: sink.bytes.load(Ordering::Relaxed),
        pull_s,
        baseline_s,
        baseline_bytes,
        peak_mib,
    })
}

/// The engine's own export of the same columns to a pipe we count and drop.
fn baseline(engine: DatabaseEngine, url: &SecretText, table: &str) -> Result<(f64, u64), String> {
    let u = url::Url::parse(url.expose()).map_err(|e| format!("the URL does not parse: {e}"))?;
    let cols = COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ");
    let select = format!("SELECT {cols} FROM bqsteward_bench.{table}");
    let host = u.host_str().unwrap_or("127.0.0.1").to_string();
    let user = u.username().to_string();
    let password = u.password().map(|p| {
        url::form_urlencoded::parse(format!("p={p}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    });
    let mut cmd = match engine {
        DatabaseEngine::Mysql => {
            let mut c = std::process::Command::new("mariadb");
            c.args(["--batch", "--skip-column-names", "--protocol=TCP", "-h", &host])
                .arg(format!("-P{}", u.port().unwrap_or(3306)))
                .arg(format!("-u{user}"))
                .args(["-e", &select]);
            if let Some(p) = &password {
                c.env("MYSQL_PWD", p);
            }
            c
        }
        DatabaseEngine::Postgres => {
            let mut c = std::process::Command::new("psql");
            c.args([
                "-h",
                &host,
                "-p",
                &u.port().unwrap_or(5432).to_string(),
                "-U",
                &user,
                "-d",
            ])
            .arg(u.path().trim_start_matches('/'))
            .args(["-c", &format!("\\copy ({select}) TO STDOUT")]);
            if let Some(p) = &password {
                c.env("PGPASSWORD", p);
            }
            c
        }
    };
    let started = std::time::Instant::now();
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run the engine's client: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "the baseline export failed: {}",
            super::conn::redact(&String::from_utf8_lossy(&out.stderr), url)
        ));
    }
    Ok((secs, out.stdout.len() as u64))
}
