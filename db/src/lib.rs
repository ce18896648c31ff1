//! The database a Lariat process keeps its tables in.
//!
//! One SQLite file in WAL mode holds every crate's tables. Each crate owns its tables: it
//! keeps its SQL in one repository type built on a [`Db`], and brings its tables up to
//! date with its own migrations ([`Db::migrate`]). The engine opens its own [`Db`] with the
//! executor lock (`<db>.lock`); the other crates' repositories share a second one, so that
//! no crate but the engine writes through the engine's connection (others read the
//! engine's tables only through its `Store`).
//!
//! Opening names what is wrong with a file an operator gave (in use, locked by another
//! program, read-only, not SQLite, a missing folder, a URL where a path goes, a schema a
//! newer Lariat wrote) and says what to do about it. [`pg`] is the PostgreSQL handle the
//! central node may keep its tables on instead, and [`Tables`] the handle its
//! repositories take: either database.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

pub mod pg;
pub use pg::{PgDb, PgOptions};
pub mod tables;
/// A crate's migrations, for those that only count them.
pub use sqlx::migrate::Migrator;
pub use tables::{Tables, is_outage, is_postgres_url};
#[cfg(feature = "test-support")]
pub mod testing;

/// Milliseconds since the Unix epoch: the unit of every timestamp column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time a process runs by: the system clock, or the system clock shifted so that it
/// starts at a given moment (tests and drills of maintenance windows, which must not wait
/// for hours for a night or a daylight-saving change). Timestamps and timers of the engine
/// and the windows it opens read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `at_ms` now and runs at the system clock's pace.
    pub fn starting_at(at_ms: i64) -> Clock {
        Clock {
            offset_ms: at_ms.saturating_sub(now_ms()),
        }
    }

    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.offset_ms)
    }

    /// Whether it differs from the system clock.
    pub fn is_shifted(&self) -> bool {
        self.offset_ms != 0
    }
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: a committed transition survives power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, not power loss.
    Normal,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            _ => Err(format!("unknown durability '{s}' (full or normal)")),
        }
    }
}

/// Why a database cannot be opened or used. Open-time variants name the file and what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "database {path} is in use by another lariat process{}; stop it or choose another --db",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error(
        "database {path} is locked by another program and stayed locked for {waited:?}; close it and try again"
    )]
    Locked { path: PathBuf, waited: Duration },
    #[error(
        "database {path} is read-only: {detail}; lariat needs to write to it and to its -wal and -shm files"
    )]
    ReadOnly { path: PathBuf, detail: String },
    #[error(
        "database {path} is not a lariat database or is corrupt: {detail}; restore it from a backup or move it aside"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot open database {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    /// A database past every migration this binary knows.
    #[error(
        "database {path} was written by a newer Lariat (schema version {found}; this binary knows up to {known}): run that version or newer, or restore a backup made before the upgrade"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A PostgreSQL URL that does not read.
    #[error(
        "PostgreSQL URL {url} does not read: {detail}; it is postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl { url: String, detail: String },
    /// No PostgreSQL server answered there.
    #[error(
        "PostgreSQL at {url} does not answer: {detail}; is the server running and listening there?"
    )]
    Unreachable { url: String, detail: String },
    /// The server answered and refused.
    #[error("PostgreSQL at {url} refused: {detail}; {hint}")]
    Refused {
        url: String,
        detail: String,
        hint: &'static str,
    },
    /// `--db` was given a URL; it takes a SQLite file's path.
    #[error("--db {given}: {detail}")]
    NotAPath { given: String, detail: String },
    #[error("cannot migrate database {path}: {detail}")]
    Migrate { path: PathBuf, detail: String },
    #[error("storage error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the database is closed")]
    Closed,
}

/// Options for [`Db::open`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// How long to wait for a lock held by another connection before giving up.
    pub busy_timeout: Duration,
    pub readers: u32,
    /// Take `<db>.lock` so no second executor opens the file. Only the engine's own
    /// database takes it; repositories opened beside it, and short-lived admin commands
    /// (creating a token next to a running server), do not.
    pub exclusive: bool,
}

impl DbOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DbOptions {
            path: path.into(),
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(3),
            readers: 4,
            exclusive: true,
        }
    }

    /// A handle for repositories beside an engine that holds the lock: no lock, two
    /// readers, and a longer wait for the write lock, which the engine's group commits
    /// hold in turn (a token write should wait, not fail).
    pub fn shared(path: impl Into<PathBuf>) -> Self {
        DbOptions {
            readers: 2,
            exclusive: false,
            busy_timeout: Duration::from_secs(10),
            ..DbOptions::new(path)
        }
    }
}

/// An open database: a pool of readers and one writer. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    /// None once closed.
    write: Mutex<Option<SqliteConnection>>,
    read: SqlitePool,
    /// Held for the life of the handle when exclusive; released by [`Db::close`].
    lock: std::sync::Mutex<Option<File>>,
}

/// What is wrong with a `--db` that is a URL rather than a file's path. Without this a
/// typo such as `postgres:lariat` would quietly become a new SQLite file of that name.
fn url_not_path(path: &Path) -> Option<String> {
    let given = path.to_str()?;
    let (scheme, rest) = given.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        return None;
    }
    match scheme.as_str() {
        "postgres" | "postgresql" if rest.starts_with("//") => Some(
            "PostgreSQL holds the central node's tables only (`lariat server`, `lariat token`, `lariat site`); this keeps its tables in a SQLite file: give a file's path, e.g. --db ./lariat-agent.db".into(),
        ),
        "postgres" | "postgresql" => Some(
            "not a PostgreSQL URL, which is postgres://USER:PASSWORD@HOST:PORT/DATABASE, nor a SQLite file's path".into(),
        ),
        "sqlite" => Some(format!(
            "give the SQLite file's path itself, without `sqlite:` (here: {})",
            rest.trim_start_matches("//")
        )),
        // A Windows drive (`C:\...`) is a path; anything else with `://` is a URL.
        _ if rest.starts_with("//") => Some(format!(
            "a {scheme}: URL is not a database lariat opens; give a SQLite file's path"
        )),
        _ => None,
    }
}

fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i64>().ok()),
        _ => None,
    }
}

/// Map an error seen while opening to the open-time variant an operator can act on.
fn classify(path: &Path, e: sqlx::Error, busy: Duration) -> DbError {
    let detail = e.to_string();
    let path = path.to_path_buf();
    match sqlite_code(&e).map(|c| c & 0xff) {
        Some(5) | Some(6) => DbError::Locked { path, waited: busy },
        Some(8) => DbError::ReadOnly { path, detail },
        Some(11) | Some(26) => DbError::Corrupt { path, detail },
        _ => DbError::Open { path, detail },
    }
}

impl Db {
    /// Open (creating if missing) the database at `opts.path`, and take its lock file when
    /// `opts.exclusive`. Tables come from each crate's [`migrate`](Self::migrate).
    pub async fn open(opts: DbOptions) -> Result<Db, DbError> {
        let path = opts.path.clone();
        if let Some(detail) = url_not_path(&path) {
            return Err(DbError::NotAPath {
                given: pg::redact(&path.display().to_string()),
                detail,
            });
        }
        if path.is_dir() {
            return Err(DbError::Open {
                path,
                detail: "it is a directory".into(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(DbError::Open {
                detail: format!("folder {} does not exist", parent.display()),
                path,
            });
        }
        let lock = if opts.exclusive {
            Some(take_lock(&path)?)
        } else {
            None
        };

        let sync = match opts.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(false)
            .pragma("temp_store", "memory");
        let mut write = SqliteConnection::connect_with(
            &base
                .clone()
                .create_if_missing(true)
                .pragma("cache_size", "-16000"),
        )
        .await
        .map_err(|e| classify(&path, e, opts.busy_timeout))?;
        // Reading the schema is the first thing that fails on a file that is not SQLite.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&mut write)
            .await
            .map_err(|e| classify(&path, e, opts.busy_timeout))?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.readers.max(1))
            .min_connections(1)
            .connect_with(
                base.pragma("query_only", "ON")
                    // Readers share the OS page cache; a small private cache each is enough.
                    .pragma("cache_size", "-2000"),
            )
            .await
            .map_err(|e| classify(&path, e, opts.busy_timeout))?;
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                busy_timeout: opts.busy_timeout,
                write: Mutex::new(Some(write)),
                read,
                lock: std::sync::Mutex::new(lock),
            }),
        })
    }

    /// Apply the migrations of one crate that are not applied yet.
    ///
    /// Every crate's migrations share one history table, so a migration's version must be
    /// unique across crates; migrations of other crates found there are left alone.
    pub async fn migrate(&self, migrations: &Migrator) -> Result<(), DbError> {
        let m = beside_others(migrations);
        let mut w = self.writer().await?;
        m.run_direct(None, &mut *w, false)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(inner) => {
                    classify(&self.inner.path, inner, self.inner.busy_timeout)
                }
                other => DbError::Migrate {
                    path: self.inner.path.clone(),
                    detail: other.to_string(),
                },
            })
    }

    /// The highest migration version applied to this database, by any crate; none on a
    /// database no Lariat has used.
    pub async fn newest_migration(&self) -> Result<Option<i64>, DbError> {
        let has: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.inner.read)
        .await
        .map_err(|e| self.classify(e))?;
        if has == 0 {
            return Ok(None);
        }
        sqlx::query_scalar(NEWEST_MIGRATION)
            .fetch_one(&self.inner.read)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Refuse a database whose schema is newer than every migration this binary knows:
    /// a newer Lariat wrote it, and this one would misread its tables (each crate's
    /// migrator leaves versions it does not know alone, so nothing else would notice).
    pub async fn check_not_newer(&self, newest_known: i64) -> Result<(), DbError> {
        let found = self.newest_migration().await?;
        not_newer(&self.inner.path, found, newest_known)
    }

    /// Map an error of a first write to the open-time variant an operator can act on (a
    /// file opened read-only only says so on its first write).
    pub fn classify(&self, e: sqlx::Error) -> DbError {
        classify(&self.inner.path, e, self.inner.busy_timeout)
    }

    /// The readers. Read-only: writes go through [`writer`](Self::writer).
    pub fn readers(&self) -> &SqlitePool {
        &self.inner.read
    }

    /// The single write connection, held until the guard drops. Keep it short: every
    /// other writer of this handle waits for it.
    pub async fn writer(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, DbError> {
        MutexGuard::try_map(self.inner.write.lock().await, |w| w.as_mut())
            .map_err(|_| DbError::Closed)
    }

    /// Begin a write transaction on `conn` that holds the write lock from its first
    /// statement, so that a read inside it cannot be overtaken by another connection's
    /// commit (a deferred transaction would then fail with SQLITE_BUSY).
    pub async fn begin_write(
        conn: &mut SqliteConnection,
    ) -> Result<Transaction<'_, Sqlite>, sqlx::Error> {
        conn.begin_with("BEGIN IMMEDIATE").await
    }

    /// Close the readers and the writer and release the lock file, so that another
    /// executor may open the database. The handle must not be used afterwards.
    pub async fn close(&self) {
        if let Some(w) = self.inner.write.lock().await.take() {
            let _ = w.close().await;
        }
        self.inner.read.close().await;
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Size of the database and its WAL, in bytes.
    pub fn disk_bytes(&self) -> u64 {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        size(self.inner.path.clone()) + size(PathBuf::from(wal))
    }

    /// Fold the WAL back into the main file (used before measuring size).
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        let mut w = self.writer().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *w)
            .await?;
        Ok(())
    }

    /// Whether a reader can read: for readiness probes.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.inner.read).await?;
        Ok(())
    }
}

/// One crate's migrations, run so that the other crates' versions in the shared history
/// table are left alone.
fn beside_others(migrations: &Migrator) -> Migrator {
    let mut m = Migrator::with_migrations(migrations.iter().cloned().collect());
    m.set_ignore_missing(true);
    m
}

/// The newest migration applied, by any crate (on both databases).
const NEWEST_MIGRATION: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";

/// `found`, the newest migration applied to the database at `path`, against the newest
/// this binary knows.
fn not_newer(path: &Path, found: Option<i64>, known: i64) -> Result<(), DbError> {
    match found {
        Some(found) if found > known => Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// Hold `<db>.lock` for the life of the handle, so two executors never drive the same runs.
fn take_lock(db: &Path) -> Result<File, DbError> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                DbError::ReadOnly {
                    path: db.to_path_buf(),
                    detail: format!("cannot create lock file {}: {e}", lock_path.display()),
                }
            }
            _ => DbError::Open {
                path: db.to_path_buf(),
                detail: format!("lock file {}: {e}", lock_path.display()),
            },
        })?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(DbError::InUse {
                path: db.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(DbError::Open {
                path: db.to_path_buf(),
                detail: format!("lock file {}: {e}", lock_path.display()),
            });
        }
    }
    let _ = f.set_len(0);
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Credentials kept in a table (API tokens, node tokens): a random secret shown once, and
/// the form stored, its SHA-256 in hex. A high-entropy secret needs no salt or slow hash.
pub mod secret {
    use rand::RngCore;
    use sha2::{Digest, Sha256};

    /// 32 random bytes in hex, after `prefix` (which says what the secret is for).
    pub fn generate(prefix: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{prefix}{}", hex(&bytes))
    }

    /// The stored form of a secret.
    pub fn hash(secret: &str) -> String {
        hex(&Sha256::digest(secret.as_bytes()))
    }

    /// Bytes as lowercase hex.
    pub fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_given_as_the_database_is_named_not_made_a_file() {
        for (given, says) in [
            (
                "postgres://ops@db1/lariat",
                "PostgreSQL holds the central node's tables only",
            ),
            (
                "PostgreSQL:lariat",
                "not a PostgreSQL URL, which is postgres://",
            ),
            (
                "sqlite:///var/lib/lariat.db",
                "without `sqlite:` (here: /var/lib/lariat.db)",
            ),
            ("https://example.net/x.db", "a https: URL is not a database"),
        ] {
            let detail = url_not_path(Path::new(given)).unwrap_or_default();
            assert!(detail.contains(says), "{given}: {detail}");
        }
        for path in [
            "./lariat.db",
            "/var/lib/lariat.db",
            "C:\\lariat.db",
            "a:b.db",
        ] {
            assert_eq!(url_not_path(Path::new(path)), None, "{path} is a path");
        }
    }
}
