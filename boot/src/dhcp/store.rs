//! Leases and discovered hosts in their own SQLite file.
//!
//! One write connection, used by the group-commit writer; a small read pool for the API
//! (WAL lets it read while the writer commits). A batch passes all its rows of a table
//! as one JSON parameter expanded with `jsonb_each`, so a commit costs two statements
//! however many leases it carries.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::config::{Durability, MacAddr};
use super::handler::{DiscoveredHost, Lease, LeaseState};

/// Lease store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open lease database {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("lease database {path}: cannot create its tables: {detail}")]
    Schema { path: PathBuf, detail: String },
    #[error("lease database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("lease database holds a malformed row: {0}")]
    Decode(String),
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS dhcp_leases (
        mac TEXT PRIMARY KEY,
        ip TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        hostname TEXT,
        network TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS dhcp_discovered_hosts (
        mac TEXT PRIMARY KEY,
        network TEXT,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        vendor_class TEXT,
        arch INTEGER,
        hostname TEXT
    )",
    "CREATE TABLE IF NOT EXISTS dhcp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT OR IGNORE INTO dhcp_meta (key, value) VALUES ('schema_version', '1')",
];

const UPSERT_LEASES: &str = "INSERT INTO dhcp_leases (mac, ip, expires_at, state, hostname, network, updated_at)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM jsonb_each(?1) WHERE true
    ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, expires_at = excluded.expires_at,
        state = excluded.state, hostname = coalesce(excluded.hostname, dhcp_leases.hostname),
        network = excluded.network, updated_at = excluded.updated_at";
const UPSERT_DISCOVERED: &str = "INSERT INTO dhcp_discovered_hosts (mac, network, first_seen, last_seen, vendor_class, arch, hostname)
    SELECT value->>0, value->>1, value->>2, value->>2, value->>3, value->>4, value->>5 FROM jsonb_each(?1) WHERE true
    ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen,
        network = coalesce(excluded.network, dhcp_discovered_hosts.network),
        vendor_class = coalesce(excluded.vendor_class, dhcp_discovered_hosts.vendor_class),
        arch = coalesce(excluded.arch, dhcp_discovered_hosts.arch),
        hostname = coalesce(excluded.hostname, dhcp_discovered_hosts.hostname)";

/// The lease database.
pub struct LeaseStore {
    write: SqliteConnection,
    read: SqlitePool,
}

/// A read-only view for the API: list leases and discovered hosts.
#[derive(Clone)]
pub struct LeaseReader {
    read: SqlitePool,
}

impl LeaseStore {
    /// Open (creating if missing) the lease file and its tables.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let open_err = |e: sqlx::Error| StoreError::Open {
            path: path.clone(),
            detail: e.to_string(),
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(3));
        let mut write = SqliteConnection::connect_with(&base.clone().create_if_missing(true))
            .await
            .map_err(open_err)?;
        for stmt in SCHEMA.iter().copied() {
            sqlx::query(stmt)
                .execute(&mut write)
                .await
                .map_err(|e| StoreError::Schema {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(open_err)?;
        Ok(LeaseStore { write, read })
    }

    /// A reader sharing this store's read pool.
    pub fn reader(&self) -> LeaseReader {
        LeaseReader {
            read: self.read.clone(),
        }
    }

    /// Commit a batch of leases and discovered hosts in one transaction.
    pub async fn commit(
        &mut self,
        leases: &[&Lease],
        discovered: &[&DiscoveredHost],
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        if !leases.is_empty() {
            let rows: Vec<_> = leases
                .iter()
                .map(|l| {
                    json!([
                        l.mac.to_string(),
                        l.ip.to_string(),
                        l.expires_at,
                        l.state.as_str(),
                        l.hostname,
                        l.network,
                        now
                    ])
                })
                .collect();
            sqlx::query(UPSERT_LEASES)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
        }
        if !discovered.is_empty() {
            let rows: Vec<_> = discovered
                .iter()
                .map(|d| {
                    json!([
                        d.mac.to_string(),
                        d.network,
                        d.first_seen,
                        d.vendor_class,
                        d.arch,
                        d.hostname
                    ])
                })
                .collect();
            sqlx::query(UPSERT_DISCOVERED)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Close both connections.
    pub async fn close(self) {
        let _ = self.write.close().await;
        self.read.close().await;
    }
}

impl LeaseReader {
    /// Leases bound and not expired at `now` (Unix seconds).
    pub async fn active(&self, now: u64) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dhcp_leases WHERE state = 'bound' AND expires_at > ?1",
        )
        .bind(i64::try_from(now).unwrap_or(i64::MAX))
        .fetch_one(&self.read)
        .await?;
        Ok(n)
    }

    /// The address bound to `mac` (as `52:54:00:…`) and not expired at `now`.
    pub async fn bound_address(&self, mac: &str, now: u64) -> Result<Option<Ipv4Addr>, StoreError> {
        let ip: Option<String> = sqlx::query_scalar(
            "SELECT ip FROM dhcp_leases WHERE mac = ?1 AND state = 'bound' AND expires_at > ?2",
        )
        .bind(mac)
        .bind(i64::try_from(now).unwrap_or(i64::MAX))
        .fetch_optional(&self.read)
        .await?;
        ip.map(|ip| {
            Ipv4Addr::from_str(&ip).map_err(|_| StoreError::Decode(format!("lease ip '{ip}'")))
        })
        .transpose()
    }

    /// Every lease row (bound and released), ordered by address.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(
            "SELECT mac, ip, expires_at, state, hostname, network FROM dhcp_leases ORDER BY ip",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let mac: String = r.try_get(0)?;
                let ip: String = r.try_get(1)?;
                let expires_at: i64 = r.try_get(2)?;
                let state: String = r.try_get(3)?;
                Ok(Lease {
                    mac: MacAddr::from_str(&mac).map_err(StoreError::Decode)?,
                    ip: Ipv4Addr::from_str(&ip)
                        .map_err(|_| StoreError::Decode(format!("lease ip '{ip}'")))?,
                    expires_at: u64::try_from(expires_at).unwrap_or(0),
                    state: match state.as_str() {
                        "bound" => LeaseState::Bound,
                        "released" => LeaseState::Released,
                        other => return Err(StoreError::Decode(format!("lease state '{other}'"))),
                    },
                    hostname: r.try_get(4)?,
                    network: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Hosts seen in discovery mode, oldest first.
    pub async fn discovered_hosts(&self) -> Result<Vec<DiscoveredHost>, StoreError> {
        let rows = sqlx::query(
            "SELECT mac, network, first_seen, vendor_class, arch, hostname
             FROM dhcp_discovered_hosts ORDER BY first_seen, mac",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let mac: String = r.try_get(0)?;
                let first_seen: i64 = r.try_get(2)?;
                let arch: Option<i64> = r.try_get(4)?;
                Ok(DiscoveredHost {
                    mac: MacAddr::from_str(&mac).map_err(StoreError::Decode)?,
                    network: r.try_get(1)?,
                    first_seen: u64::try_from(first_seen).unwrap_or(0),
                    vendor_class: r.try_get(3)?,
                    arch: arch.and_then(|a| u16::try_from(a).ok()),
                    hostname: r.try_get(5)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(last: u8, expires_at: u64, state: LeaseState) -> Lease {
        Lease {
            mac: MacAddr::from_str(&format!("52:54:00:00:00:{last:02x}")).unwrap(),
            ip: Ipv4Addr::new(10, 0, 0, last),
            expires_at,
            state,
            hostname: None,
            network: "prov".into(),
        }
    }

    #[tokio::test]
    async fn active_counts_bound_leases_that_have_not_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LeaseStore::open(&dir.path().join("leases.db"), Durability::Normal)
            .await
            .unwrap();
        let rows = [
            lease(1, 2_000, LeaseState::Bound),
            lease(2, 3_000, LeaseState::Bound),
            lease(3, 900, LeaseState::Bound),
            lease(4, 5_000, LeaseState::Released),
        ];
        store
            .commit(&rows.iter().collect::<Vec<_>>(), &[], 1_000)
            .await
            .unwrap();
        let r = store.reader();
        assert_eq!(r.active(1_000).await.unwrap(), 2);
        assert_eq!(r.active(2_500).await.unwrap(), 1);
        assert_eq!(r.active(3_000).await.unwrap(), 0);
        store.close().await;
    }
}
