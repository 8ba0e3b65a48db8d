//! Connections to the test databases of `scripts/databases.sh` (sessions in UTC) and statement
//! helpers that panic with the statement on failure.

use sqlx::Connection;

/// A MariaDB connection (UTC, utf8mb4).
pub async fn mysql() -> sqlx::MySqlConnection {
    let opts: sqlx::mysql::MySqlConnectOptions = super::databases().0.parse().unwrap();
    sqlx::MySqlConnection::connect_with(&opts.timezone(Some("+00:00".into())).charset("utf8mb4"))
        .await
        .unwrap()
}

/// A PostgreSQL connection.
pub async fn postgres() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&super::databases().1).await.unwrap()
}

/// Runs a MySQL statement.
pub async fn my(c: &mut sqlx::MySqlConnection, sql: &str) {
    sqlx::Executor::execute(&mut *c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs a PostgreSQL statement.
pub async fn pg(c: &mut sqlx::PgConnection, sql: &str) {
    sqlx::Executor::execute(&mut *c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
