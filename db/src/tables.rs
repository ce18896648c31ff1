//! The handle every repository of the central node keeps its tables on: the SQLite file
//! or a PostgreSQL database. A repository writes each query once, in SQL both databases
//! read (`$1` placeholders, `ON CONFLICT`, `RETURNING`, `COALESCE`), and runs it through
//! [`on_reader!`](crate::on_reader), [`on_writer!`](crate::on_writer) or
//! [`in_transaction!`](crate::in_transaction), which type-check it once per database. A query
//! the two spell differently matches on [`Tables`] itself.

use sqlx::Transaction;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;

use crate::{Db, DbError, DbOptions, Durability, PgDb, PgOptions};

/// Where a repository's tables are. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Tables {
    /// The SQLite file, shared with the engine (no lock file; the engine holds it).
    Sqlite(Db),
    /// A PostgreSQL database, shared by every replica.
    Postgres(PgDb),
}

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    let lower = db.get(..13).unwrap_or(db).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Tables {
    /// Open the tables `db` names: a `postgres://` URL, or anything else as a SQLite path.
    pub async fn open(db: &str, durability: Durability) -> Result<Tables, DbError> {
        if is_postgres_url(db) {
            Ok(Tables::Postgres(PgDb::connect(PgOptions::new(db)).await?))
        } else {
            Ok(Tables::Sqlite(
                Db::open(DbOptions {
                    durability,
                    ..DbOptions::shared(db)
                })
                .await?,
            ))
        }
    }

    /// Apply a crate's migrations for this database: `sqlite` or `postgres`.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<(), DbError> {
        match self {
            Tables::Sqlite(db) => db.migrate(sqlite).await,
            Tables::Postgres(db) => db.migrate(postgres).await,
        }
    }

    /// Refuse a database past the newest migration this binary knows for its kind.
    pub async fn check_not_newer(
        &self,
        newest_sqlite: i64,
        newest_postgres: i64,
    ) -> Result<(), DbError> {
        match self {
            Tables::Sqlite(db) => db.check_not_newer(newest_sqlite).await,
            Tables::Postgres(db) => db.check_not_newer(newest_postgres).await,
        }
    }

    /// Close every connection. The handle must not be used afterwards.
    pub async fn close(&self) {
        match self {
            Tables::Sqlite(db) => db.close().await,
            Tables::Postgres(db) => db.close().await,
        }
    }
}

impl From<Db> for Tables {
    fn from(db: Db) -> Tables {
        Tables::Sqlite(db)
    }
}

impl PgDb {
    /// A connection for a write outside a transaction.
    pub async fn writer(&self) -> Result<PoolConnection<Postgres>, DbError> {
        Ok(self.pool().acquire().await?)
    }

    /// Begin a write transaction.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, DbError> {
        Ok(self.pool().begin().await?)
    }
}

/// `on_reader!(tables, |ex| body)`: `body` with `ex` a reader of `tables` (SQLite's reader pool,
/// PostgreSQL's pool), type-checked once per database.
#[macro_export]
macro_rules! on_reader {
    ($tables:expr, |$ex:ident| $body:expr) => {
        match $tables {
            $crate::Tables::Sqlite(db) => {
                let $ex = db.readers();
                $body
            }
            $crate::Tables::Postgres(db) => {
                let $ex = db.pool();
                $body
            }
        }
    };
}

/// `on_writer!(tables, |c| body)`: `body` with `c` a `&mut` connection that may write, outside
/// a transaction (SQLite's one writer, held until `body` ends). `?` in the caller's
/// function takes a [`DbError`](crate::DbError).
#[macro_export]
macro_rules! on_writer {
    ($tables:expr, |$c:ident| $body:expr) => {
        match $tables {
            $crate::Tables::Sqlite(db) => {
                let mut held = db.writer().await?;
                let $c = &mut *held;
                $body
            }
            $crate::Tables::Postgres(db) => {
                let mut held = db.writer().await?;
                let $c = &mut *held;
                $body
            }
        }
    };
}

/// `in_transaction!(tables, |tx| body)`: `body` with `tx` a write transaction, which `body`
/// commits (`tx.commit().await?`); dropped uncommitted, it rolls back. On SQLite it holds
/// the write lock from its first statement ([`Db::begin_write`](crate::Db::begin_write)).
/// `in_transaction!(tables, postgres_first: SQL, |tx| body)` runs `SQL` first on
/// PostgreSQL only: the lock that makes its writers take turns where SQLite's one writer
/// already does.
#[macro_export]
macro_rules! in_transaction {
    ($tables:expr, |$tx:ident| $body:expr) => {
        $crate::in_transaction!($tables, postgres_first: "", |$tx| $body)
    };
    ($tables:expr, postgres_first: $first:expr, |$tx:ident| $body:expr) => {
        match $tables {
            $crate::Tables::Sqlite(db) => {
                let mut held = db.writer().await?;
                #[allow(unused_mut)]
                let mut $tx = $crate::Db::begin_write(&mut held).await?;
                $body
            }
            $crate::Tables::Postgres(db) => {
                #[allow(unused_mut)]
                let mut $tx = db.begin_write().await?;
                let first: &'static str = $first;
                if !first.is_empty() {
                    sqlx::query(first).execute(&mut *$tx).await?;
                }
                $body
            }
        }
    };
}

/// Whether `e` is the database out of reach rather than refusing: the network, a pool
/// that cannot connect, a PostgreSQL server shutting down or terminating the session
/// (SQLSTATE class 57), a connection exception (08), too few resources (53: too many
/// connections, disk full) or a database not taking connections for now (55000, as
/// `ALLOW_CONNECTIONS false` during maintenance). Such a failure may pass; a request that
/// meets one is answered 503, not 500.
pub fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("57") || c.starts_with("08") || c.starts_with("53") || c == "55000"
        }),
        _ => false,
    }
}

impl DbError {
    /// Whether this is the database out of reach ([`is_outage`]).
    pub fn is_outage(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Sql(e) => is_outage(e),
            _ => false,
        }
    }
}
