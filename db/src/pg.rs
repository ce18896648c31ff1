//! PostgreSQL, the database that several central replicas will share (DESIGN.md,
//! "PostgreSQL"; the repositories on it are planned). What is here is what every one of
//! them needs: a pool connected with errors an operator can act on, the URL shown without
//! its password, each crate's migrations (`migrations/postgres`), and the schema check
//! that refuses a database a newer Lariat has written.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::DbError;

/// Options for [`PgDb::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Connections the pool keeps at most.
    pub max_connections: u32,
    /// How long a connection may take before the server counts as unreachable.
    pub connect_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of connections to one PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgDb {
    pool: PgPool,
    /// The URL without its password, for messages and logs.
    shown: Arc<str>,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb").field("url", &self.shown).finish()
    }
}

/// `url` with the password of its user part replaced, so that it can be shown.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user part ends at the last `@`: a password typed without percent-encoding may
    // hold `@`, `/` or `?`, and a database name never holds `@`.
    let rest = match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***@{}", &rest[at + 1..]),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    };
    // libpq also takes the password as a parameter.
    let rest = match rest.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

impl PgDb {
    /// Connect, failing at once with what is wrong: a URL that does not read, a server
    /// that does not answer, a password or a database it refuses.
    pub async fn connect(opts: PgOptions) -> Result<PgDb, DbError> {
        let shown: Arc<str> = redact(&opts.url).into();
        let connect = PgConnectOptions::from_str(&opts.url)
            .map_err(|e| DbError::BadUrl {
                url: shown.to_string(),
                detail: e.to_string(),
            })?
            // Named so that `pg_stat_activity`, and a refusal that names the holder of a
            // database, say which process a connection is.
            .application_name(&format!("lariat pid {}", std::process::id()));
        // One connection first, on its own: the pool retries a refused connection until
        // its timeout and then reports only that it timed out, not why.
        let probe =
            tokio::time::timeout(opts.connect_timeout, PgConnection::connect_with(&connect))
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)
                .and_then(|c| c)
                .map_err(|e| classify(&shown, e, opts.connect_timeout))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| classify(&shown, e, opts.connect_timeout))?;
        Ok(PgDb { pool, shown })
    }

    /// The URL without its password, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The pool, for a repository's queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply the migrations of one crate that are not applied yet. Every crate's share
    /// one history table, as on SQLite, so versions are unique across crates.
    pub async fn migrate(&self, migrations: &Migrator) -> Result<(), DbError> {
        crate::beside_others(migrations)
            .run(&self.pool)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(inner) => classify(&self.shown, inner, Duration::ZERO),
                other => DbError::Migrate {
                    path: self.shown.to_string().into(),
                    detail: other.to_string(),
                },
            })
    }

    /// The highest migration version applied to this database, by any crate; none on a
    /// database no Lariat has used.
    pub async fn newest_migration(&self) -> Result<Option<i64>, DbError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| classify(&self.shown, e, Duration::ZERO))?;
        if exists.is_none() {
            return Ok(None);
        }
        sqlx::query_scalar(crate::NEWEST_MIGRATION)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&self.shown, e, Duration::ZERO))
    }

    /// Refuse a database whose schema is newer than every migration this binary knows:
    /// it was written by a newer Lariat, whose tables this one would misread.
    pub async fn check_not_newer(&self, newest_known: i64) -> Result<(), DbError> {
        let found = self.newest_migration().await?;
        crate::not_newer(Path::new(&*self.shown), found, newest_known)
    }

    /// Whether the server answers: for readiness probes.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| classify(&self.shown, e, Duration::ZERO))?;
        Ok(())
    }

    /// Close every connection. The handle must not be used afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Map a connection's failure to what an operator can act on. PostgreSQL's SQLSTATE names
/// the refusals; a failure without one is the network's.
fn classify(url: &str, e: sqlx::Error, waited: Duration) -> DbError {
    let url = url.to_string();
    if let sqlx::Error::Database(d) = &e {
        let code = d.code().unwrap_or_default();
        let detail = d.message().to_string();
        let hint = match code.as_ref() {
            "28P01" | "28000" => "check the user and password in the URL",
            "3D000" => "create the database (createdb NAME) or fix its name in the URL",
            "53300" => {
                "the server has no connection left: raise its max_connections or lower the replicas' pools"
            }
            "57P03" => "the server is starting up or shutting down: try again shortly",
            _ => return DbError::Sql(e),
        };
        return DbError::Refused { url, detail, hint };
    }
    match e {
        sqlx::Error::Io(io) => DbError::Unreachable {
            url,
            detail: io.to_string(),
        },
        sqlx::Error::PoolTimedOut => DbError::Unreachable {
            url,
            detail: format!("no answer within {waited:?}"),
        },
        sqlx::Error::Tls(t) => DbError::Unreachable {
            url,
            detail: format!("TLS: {t}"),
        },
        sqlx::Error::Configuration(c) => DbError::BadUrl {
            url,
            detail: c.to_string(),
        },
        other => DbError::Sql(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redact("postgres://ops:s3cr@t@db1:5432/lariat"),
            "postgres://ops:***@db1:5432/lariat"
        );
        assert_eq!(
            redact("postgres://ops@db1/lariat"),
            "postgres://ops@db1/lariat"
        );
        assert_eq!(redact("postgres://db1/lariat"), "postgres://db1/lariat");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(
            redact("postgres://ops:a/b?c@db1/lariat"),
            "postgres://ops:***@db1/lariat"
        );
        assert_eq!(
            redact("postgres://db1/lariat?user=ops&password=pw&sslmode=require"),
            "postgres://db1/lariat?user=ops&password=***&sslmode=require"
        );
    }
}
