//! Connections to source databases: one engine-neutral [`Conn`] over sqlx's MySQL and PostgreSQL
//! drivers, sessions in UTC and utf8mb4, a statement timeout, a bounded number of connections per
//! database ([`Limits`]) and at most one pull per table at a time. Errors never carry the URL or its
//! password ([`redact`]).

use super::secrets::SecretText;
use crate::crd::DatabaseEngine;
use futures::TryStreamExt;
use sqlx::{Connection, Row};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a database step failed (already redacted; names the Secret where it matters).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    /// What failed.
    pub message: String,
    /// Whether trying again may work (the connection dropped, the server restarts).
    pub transient: bool,
}

impl DbError {
    /// A failure trying again cannot fix.
    pub fn fatal(message: String) -> DbError {
        DbError {
            message,
            transient: false,
        }
    }

    /// A driver error, redacted, classified.
    pub fn sqlx(what: &str, e: &sqlx::Error, url: &SecretText) -> DbError {
        DbError {
            message: redact(&format!("{what}: {e}"), url),
            transient: transient(e),
        }
    }
}

/// Whether a driver error is the connection's (dropped, refused, server shutting down), not the
/// query's or the credentials'.
pub fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // SQLSTATE: connection exceptions (08…, both engines), PostgreSQL operator
            // intervention (57P…: shutting down), MariaDB "connection was killed" (70100). A
            // dropped connection itself surfaces as an I/O error.
            code.starts_with("08") || code.starts_with("57P") || code == "70100"
        }
        _ => false,
    }
}

/// Replaces the URL, and its password and user info, wherever they appear in `text`.
pub fn redact(text: &str, url: &SecretText) -> String {
    let mut out = text.replace(url.expose(), "<connection URL>");
    if let Ok(u) = url::Url::parse(url.expose())
        && let Some(p) = u.password().filter(|p| !p.is_empty())
    {
        out = out.replace(p, "<redacted>");
        if let Ok(decoded) = urlencoding_decode(p) {
            out = out.replace(&decoded, "<redacted>");
        }
    }
    out
}

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(())
}

/// A short reason for a Kubernetes API error (403 → what the RBAC must allow).
pub fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            "forbidden: bqsteward's service account needs `get` on secrets in this namespace (the chart grants it)"
                .into()
        }
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Process-wide limits: connections per database and one pull per table.
#[derive(Debug)]
pub struct Limits {
    per_database: usize,
    databases: Mutex<HashMap<String, Arc<Semaphore>>>,
    pulling: Mutex<HashSet<String>>,
}

impl Limits {
    /// At most `per_database` connections to one database (host, port, database) at a time.
    pub fn new(per_database: usize) -> Limits {
        Limits {
            per_database: per_database.max(1),
            databases: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashSet::new()),
        }
    }

    /// Waits for a connection slot of the database `url` points at.
    pub async fn slot(&self, url: &SecretText) -> OwnedSemaphorePermit {
        let key = url::Url::parse(url.expose())
            .map(|u| format!("{}:{:?}{}", u.host_str().unwrap_or(""), u.port(), u.path()))
            .unwrap_or_default();
        let sem = self
            .databases
            .lock()
            .expect("limits lock")
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_database)))
            .clone();
        sem.acquire_owned().await.expect("semaphore never closed")
    }

    /// Marks `table` as being pulled; `None` when a pull of it runs already in this process.
    pub fn begin_pull(self: &Arc<Self>, table: &str) -> Option<PullGuard> {
        self.pulling
            .lock()
            .expect("limits lock")
            .insert(table.to_string())
            .then(|| PullGuard {
                limits: self.clone(),
                table: table.to_string(),
            })
    }
}

/// Held while a table is pulled.
#[derive(Debug)]
pub struct PullGuard {
    limits: Arc<Limits>,
    table: String,
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.limits.pulling.lock() {
            p.remove(&self.table);
        }
    }
}

/// The driver connection of a [`Conn`].
enum Inner {
    Mysql(sqlx::MySqlConnection),
    Postgres(sqlx::PgConnection),
}

/// Rows of text columns (NULL as `None`).
pub type TextRow = Vec<Option<String>>;

/// An open connection to a replica. Each query runs in a task of its own that owns the driver
/// connection and hands it back at the end (sqlx's borrowed streams cannot be held across the
/// controller's `Send` futures otherwise).
pub struct Conn {
    inner: Option<Inner>,
}

impl Conn {
    /// Connects with the URL of `secret_name` (sessions in UTC; MySQL in utf8mb4).
    pub async fn open(engine: DatabaseEngine, url: &SecretText, secret_name: &str) -> Result<Conn, DbError> {
        let fail = |what: &str, e: sqlx::Error| DbError {
            message: format!(
                "{what} the {} database of Secret {secret_name:?}: {}",
                engine.as_str(),
                redact(&e.to_string(), url)
            ),
            transient: transient(&e),
        };
        let scheme_ok = match engine {
            DatabaseEngine::Mysql => url.expose().starts_with("mysql://") || url.expose().starts_with("mariadb://"),
            DatabaseEngine::Postgres => {
                url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")
            }
        };
        if !scheme_ok {
            return Err(DbError::fatal(format!(
                "Secret {secret_name:?} does not hold a {} URL (it must start with {}); fix the Secret or spec.source.database.engine",
                engine.as_str(),
                match engine {
                    DatabaseEngine::Mysql => "mysql://",
                    DatabaseEngine::Postgres => "postgres://",
                }
            )));
        }
        let text = url.expose().replacen("mariadb://", "mysql://", 1);
        let timed_out = || DbError {
            message: format!("connecting to the database of Secret {secret_name:?} timed out after 30 s"),
            transient: true,
        };
        let limit = std::time::Duration::from_secs(30);
        let inner = match engine {
            DatabaseEngine::Mysql => {
                let opts: sqlx::mysql::MySqlConnectOptions =
                    text.parse().map_err(|e| fail("cannot parse the URL of", e))?;
                // Statements are bqsteward's own; the audit log says what each pull read.
                let opts = sqlx::ConnectOptions::disable_statement_logging(
                    opts.charset("utf8mb4").timezone(Some("+00:00".into())),
                );
                Inner::Mysql(
                    tokio::time::timeout(limit, sqlx::MySqlConnection::connect_with(&opts))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| fail("cannot connect to", e))?,
                )
            }
            DatabaseEngine::Postgres => {
                let opts: sqlx::postgres::PgConnectOptions =
                    text.parse().map_err(|e| fail("cannot parse the URL of", e))?;
                let opts = sqlx::ConnectOptions::disable_statement_logging(
                    opts.options([("TimeZone", "UTC"), ("DateStyle", "ISO")]),
                );
                Inner::Postgres(
                    tokio::time::timeout(limit, sqlx::PgConnection::connect_with(&opts))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| fail("cannot connect to", e))?,
                )
            }
        };
        Ok(Conn { inner: Some(inner) })
    }

    fn take(&mut self) -> Result<Inner, sqlx::Error> {
        self.inner
            .take()
            .ok_or_else(|| sqlx::Error::Protocol("connection lost by an earlier failed query".into()))
    }

    /// Sets a MySQL/MariaDB session's statement timeout: MariaDB's `max_statement_time` (s), else
    /// MySQL's `max_execution_time` (ms) — each refuses the other's.
    pub async fn mysql_statement_timeout(&mut self, timeout: std::time::Duration) -> Result<(), sqlx::Error> {
        let secs = timeout.as_secs().max(1);
        if self
            .exec(&format!("SET SESSION max_statement_time = {secs}"))
            .await
            .is_err()
        {
            self.exec(&format!("SET SESSION max_execution_time = {}", timeout.as_millis()))
                .await?;
        }
        Ok(())
    }

    /// Runs statements without results (simple protocol: transaction control, SET).
    pub async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let mut inner = self.take()?;
        let sql = sql.to_string();
        let (inner, r) = tokio::spawn(async move {
            let r = match &mut inner {
                // A plain `&str` query runs over the simple (text) protocol.
                Inner::Mysql(c) => sqlx::Executor::execute(&mut *c, sql.as_str()).await.map(|_| ()),
                Inner::Postgres(c) => sqlx::Executor::execute(&mut *c, sql.as_str()).await.map(|_| ()),
            };
            (inner, r)
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("query task failed: {e}")))?;
        self.inner = Some(inner);
        r
    }

    /// Streams the rows of a query into `tx`, one at a time (bounded by the channel: memory stays
    /// bounded whatever the result's size). Returns when every row was sent or the receiver left.
    pub async fn rows(
        &mut self,
        sql: &str,
        binds: &[String],
        tx: tokio::sync::mpsc::Sender<TextRow>,
    ) -> Result<(), sqlx::Error> {
        let mut inner = self.take()?;
        let (sql, binds) = (sql.to_string(), binds.to_vec());
        let (inner, r) = tokio::spawn(async move {
            let r = stream_into(&mut inner, &sql, &binds, &tx).await;
            (inner, r)
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("query task failed: {e}")))?;
        self.inner = Some(inner);
        r
    }

    /// Rows of text columns, all in memory: for small results only.
    pub async fn texts(&mut self, sql: &str, binds: &[&str]) -> Result<Vec<TextRow>, sqlx::Error> {
        let binds: Vec<String> = binds.iter().map(|b| b.to_string()).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let collect = async {
            let mut out = Vec::new();
            while let Some(r) = rx.recv().await {
                out.push(r);
            }
            out
        };
        let (r, out) = tokio::join!(self.rows(sql, &binds, tx), collect);
        r.map(|()| out)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = match self.inner {
            Some(Inner::Mysql(c)) => c.close().await,
            Some(Inner::Postgres(c)) => c.close().await,
            None => Ok(()),
        };
    }
}

async fn stream_into(
    inner: &mut Inner,
    sql: &str,
    binds: &[String],
    tx: &tokio::sync::mpsc::Sender<TextRow>,
) -> Result<(), sqlx::Error> {
    match inner {
        Inner::Mysql(c) => {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(b.as_str());
            }
            let mut rows = q.fetch(c);
            while let Some(row) = rows.try_next().await? {
                let v = (0..row.len()).map(|i| mysql_text(&row, i)).collect::<Result<_, _>>()?;
                if tx.send(v).await.is_err() {
                    break;
                }
            }
        }
        Inner::Postgres(c) => {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(b.as_str());
            }
            let mut rows = q.fetch(c);
            while let Some(row) = rows.try_next().await? {
                let v = (0..row.len())
                    .map(|i| row.try_get::<Option<String>, _>(i))
                    .collect::<Result<_, _>>()?;
                if tx.send(v).await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A MySQL column as text: strings as they are, binary-collated results (CONCAT over a binary
/// argument) as UTF-8.
fn mysql_text(row: &sqlx::mysql::MySqlRow, i: usize) -> Result<Option<String>, sqlx::Error> {
    match row.try_get::<Option<String>, _>(i) {
        Ok(v) => Ok(v),
        Err(_) => {
            let bytes: Option<Vec<u8>> = row.try_get(i)?;
            bytes
                .map(|b| String::from_utf8(b).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_url_and_the_password() {
        let url = SecretText::new("mysql://reader:p%40ss@db.internal:3306/payments");
        let text = "error with mysql://reader:p%40ss@db.internal:3306/payments and p%40ss and p@ss";
        let r = redact(text, &url);
        assert!(!r.contains("p%40ss") && !r.contains("p@ss"), "{r}");
        assert!(r.contains("<connection URL>"));
    }

    #[test]
    fn one_pull_per_table() {
        let l = Arc::new(Limits::new(2));
        let g = l.begin_pull("a").expect("first");
        assert!(l.begin_pull("a").is_none());
        assert!(l.begin_pull("b").is_some());
        drop(g);
        assert!(l.begin_pull("a").is_some());
    }
}
