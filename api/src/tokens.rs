//! The API's bearer tokens (`api_tokens`): created with an end, revoked at once, their
//! last use remembered.
//!
//! A token is 32 random bytes, shown once when created. The table keeps only its SHA-256,
//! which is all a lookup needs: a high-entropy secret needs no salt or slow hash. Every
//! request looks its token up (no cache), so a revoke from any process, the CLI on the
//! database included, holds from the next request.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lariat_api_types as types;
use lariat_db::{DbError, Tables, secret};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, AuditActor, AuditLog};

/// What a token may do. Each role may do everything the roles below it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read workflows, runs, events, metrics.
    Viewer,
    /// Submit runs and act on them: signal, retry, rollback, cancel, pause, resume.
    Operator,
    /// Register workflows, manage tokens, read the audit trail.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role '{s}' (one of: viewer, operator, admin)"
            )),
        }
    }
}

/// How long a token is accepted when its creator does not say.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
const MIN_EXPIRY: Duration = Duration::from_secs(60);
const MAX_EXPIRY: Duration = Duration::from_secs(5 * 366 * 24 * 3600);

/// A token's lifetime as asked for on creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Accepted for this long from its creation.
    After(Duration),
    /// Accepted until revoked.
    Never,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry::After(DEFAULT_EXPIRY)
    }
}

impl FromStr for Expiry {
    type Err = String;
    /// `never`, or a duration of a minute to 5 years (`30d`, `12h`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "never" {
            return Ok(Expiry::Never);
        }
        let d = humantime::parse_duration(s).map_err(|e| {
            format!("expiry '{s}' is not `never` or a duration such as 90d or 12h: {e}")
        })?;
        if !(MIN_EXPIRY..=MAX_EXPIRY).contains(&d) {
            return Err(format!(
                "expiry '{s}' is out of bounds: a token lasts from a minute to 5 years, or `never`"
            ));
        }
        Ok(Expiry::After(d))
    }
}

/// Errors managing tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named '{0}' exists or existed (names are never reused); choose another name")]
    NameTaken(String),
    #[error("token name '{0}' is not valid: use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    InvalidName(String),
    #[error("no token named '{0}'")]
    Unknown(String),
    #[error("token '{name}' was already revoked, by {by}")]
    AlreadyRevoked { name: String, by: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("storage error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored token '{name}' has an unknown role: {detail}")]
    Corrupt { name: String, detail: String },
}

impl TokenError {
    /// Whether this is the database out of reach ([`lariat_db::is_outage`]).
    pub fn is_outage(&self) -> bool {
        match self {
            TokenError::Db(e) => e.is_outage(),
            TokenError::Sql(e) => lariat_db::is_outage(e),
            _ => false,
        }
    }
}

/// A token just created. `token` is the secret: it is not stored and cannot be shown again.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<i64>,
    pub last_used_from: Option<String>,
}

impl TokenInfo {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    /// The API's shape of it, its state reckoned at `now`.
    pub fn dto(&self, now: i64) -> types::Token {
        types::Token {
            name: self.name.clone(),
            role: self.role.to_string(),
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by.clone(),
            last_used_at: self.last_used_at,
            last_used_from: self.last_used_from.clone(),
            state: self.state(now).to_string(),
        }
    }
}

/// What a presented token is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Valid {
        name: String,
        role: Role,
        expires_at: Option<i64>,
    },
    Expired {
        name: String,
        at: i64,
    },
    Revoked {
        name: String,
        by: String,
    },
    Unknown,
}

const TOKEN_PREFIX: &str = "lariat_";

/// The stored form of a token: its SHA-256, in hex.
pub fn hash_token(token: &str) -> String {
    secret::hash(token)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// The migrations of the API's tables (`api/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The same tables on PostgreSQL (`api/migrations/postgres`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

type Row = (
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

macro_rules! columns {
    () => {
        "name, role, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at, last_used_from"
    };
}

fn info(row: Row) -> Result<TokenInfo, TokenError> {
    let (name, role, created_at, created_by, expires_at, revoked_at, revoked_by, used, from) = row;
    let role = role.parse().map_err(|detail| TokenError::Corrupt {
        name: name.clone(),
        detail,
    })?;
    Ok(TokenInfo {
        name,
        role,
        created_at,
        created_by,
        expires_at,
        revoked_at,
        revoked_by,
        last_used_at: used,
        last_used_from: from,
    })
}

/// The `api_tokens` table. Cheap to clone.
#[derive(Clone)]
pub struct TokenStore {
    db: Tables,
}

impl TokenStore {
    /// The tokens of `db`, its table brought up to date. Works on a database opened
    /// without the executor lock, next to a running server.
    pub async fn open(db: impl Into<Tables>) -> Result<TokenStore, TokenError> {
        let db = db.into();
        db.migrate(&MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        Ok(TokenStore { db })
    }

    /// The database the tokens are kept in.
    pub(crate) fn db(&self) -> &Tables {
        &self.db
    }

    /// The audit trail kept in the same database.
    pub fn audit(&self) -> AuditLog {
        AuditLog::new(self.db.clone())
    }

    /// Create a token with `role`, named `name` (or `<role>-<8 hex digits>`), accepted
    /// for `expiry`; recorded in the audit trail as done `by`, in the same transaction.
    pub async fn create(
        &self,
        role: Role,
        name: Option<&str>,
        expiry: Expiry,
        by: &AuditActor,
    ) -> Result<NewToken, TokenError> {
        let token = secret::generate(TOKEN_PREFIX);
        let name = match name {
            Some(n) if valid_name(n) => n.to_string(),
            Some(n) => return Err(TokenError::InvalidName(n.escape_default().to_string())),
            None => format!("{role}-{}", &token[TOKEN_PREFIX.len()..][..8]),
        };
        let created_at = lariat_db::now_ms();
        let expires_at = match expiry {
            Expiry::After(d) => Some(created_at.saturating_add(d.as_millis() as i64)),
            Expiry::Never => None,
        };
        let detail = json!({ "role": role, "expires_at": expires_at });
        lariat_db::in_transaction!(&self.db, |tx| {
            let res = sqlx::query(
            "INSERT INTO api_tokens (name, role, hash, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(hash_token(&token))
        .bind(created_at)
        .bind(&by.who)
        .bind(expires_at)
        .execute(&mut *tx)
        .await;
            match res {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    return Err(TokenError::NameTaken(name));
                }
                Err(e) => return Err(e.into()),
            }
            sqlx::query("UPDATE api_tokens_version SET version = version + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            audit::insert_entry!(&mut *tx, created_at, by, "token.create", &name, &detail).await?;
            tx.commit().await?;
        });
        audit::log(by, "token.create", &name, &detail);
        Ok(NewToken {
            token,
            info: TokenInfo {
                name,
                role,
                created_at,
                created_by: by.who.clone(),
                expires_at,
                revoked_at: None,
                revoked_by: None,
                last_used_at: None,
                last_used_from: None,
            },
        })
    }

    /// Revoke the token named `name`: refused from the next request on. Recorded in the
    /// audit trail as done `by`, in the same transaction.
    pub async fn revoke(&self, name: &str, by: &AuditActor) -> Result<TokenInfo, TokenError> {
        let at = lariat_db::now_ms();
        let (mut t, detail) = lariat_db::in_transaction!(&self.db, |tx| {
            let row: Option<Row> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM api_tokens WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let t = info(row.ok_or_else(|| TokenError::Unknown(name.to_string()))?)?;
            if let Some(prev) = &t.revoked_by {
                return Err(TokenError::AlreadyRevoked {
                    name: t.name,
                    by: prev.clone(),
                });
            }
            sqlx::query("UPDATE api_tokens SET revoked_at = $2, revoked_by = $3 WHERE name = $1")
                .bind(name)
                .bind(at)
                .bind(&by.who)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE api_tokens_version SET version = version + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let detail = json!({ "role": t.role });
            audit::insert_entry!(&mut *tx, at, by, "token.revoke", name, &detail).await?;
            tx.commit().await?;
            (t, detail)
        });
        audit::log(by, "token.revoke", name, &detail);
        t.revoked_at = Some(at);
        t.revoked_by = Some(by.who.clone());
        Ok(t)
    }

    /// Every stored token, oldest first, without secrets.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows: Vec<Row> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens ORDER BY created_at, name"
        ))
        .fetch_all(ex)
        .await?);
        rows.into_iter().map(info).collect()
    }

    /// A number that changes whenever a token is created or revoked, by any process.
    pub(crate) async fn version(&self) -> Result<i64, TokenError> {
        let (v,): (i64,) = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(
            "SELECT version FROM api_tokens_version WHERE id = 1"
        )
        .fetch_one(ex)
        .await?);
        Ok(v)
    }

    /// What the token with this hash is worth at `now`.
    pub(crate) async fn check(&self, hash: &str, now: i64) -> Result<Check, TokenError> {
        let row: Option<(String, String, Option<i64>, Option<String>)> =
            lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(
                "SELECT name, role, expires_at, revoked_by FROM api_tokens WHERE hash = $1",
            )
            .bind(hash)
            .fetch_optional(ex)
            .await?);
        let Some((name, role, expires_at, revoked_by)) = row else {
            return Ok(Check::Unknown);
        };
        if let Some(by) = revoked_by {
            return Ok(Check::Revoked { name, by });
        }
        if let Some(at) = expires_at.filter(|&e| e <= now) {
            return Ok(Check::Expired { name, at });
        }
        let role = role.parse().map_err(|detail| TokenError::Corrupt {
            name: name.clone(),
            detail,
        })?;
        Ok(Check::Valid {
            name,
            role,
            expires_at,
        })
    }

    /// Remember that `name` authenticated a request at `at` from `from`.
    pub(crate) async fn touch(
        &self,
        name: &str,
        at: i64,
        from: Option<&str>,
    ) -> Result<(), TokenError> {
        lariat_db::on_writer!(&self.db, |c| {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2, last_used_from = $3 WHERE name = $1",
            )
            .bind(name)
            .bind(at)
            .bind(from)
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = lariat_db::Db::open(lariat_db::DbOptions::shared(dir.path().join("t.db")))
            .await
            .unwrap();
        (dir, TokenStore::open(db).await.unwrap())
    }

    fn admin() -> AuditActor {
        AuditActor {
            who: "root-admin".into(),
            role: Some("admin".into()),
            from: Some("192.0.2.7".into()),
        }
    }

    #[tokio::test]
    async fn a_token_is_valid_until_it_expires_or_is_revoked() {
        let (_dir, s) = store().await;
        let t = s
            .create(Role::Operator, Some("ops"), "1h".parse().unwrap(), &admin())
            .await
            .unwrap();
        let hash = hash_token(&t.token);
        let now = t.info.created_at;
        assert_eq!(
            s.check(&hash, now).await.unwrap(),
            Check::Valid {
                name: "ops".into(),
                role: Role::Operator,
                expires_at: t.info.expires_at,
            }
        );
        let end = t.info.expires_at.unwrap();
        assert_eq!(end - now, 3_600_000);
        assert_eq!(
            s.check(&hash, end).await.unwrap(),
            Check::Expired {
                name: "ops".into(),
                at: end
            }
        );
        assert_eq!(
            s.check(&hash_token("lariat_nope"), now).await.unwrap(),
            Check::Unknown
        );

        s.touch("ops", now + 5, Some("198.51.100.1")).await.unwrap();
        let revoked = s.revoke("ops", &admin()).await.unwrap();
        assert_eq!(revoked.revoked_by.as_deref(), Some("root-admin"));
        assert_eq!(
            s.check(&hash, now).await.unwrap(),
            Check::Revoked {
                name: "ops".into(),
                by: "root-admin".into()
            }
        );
        assert!(matches!(
            s.revoke("ops", &admin()).await,
            Err(TokenError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            s.revoke("nobody", &admin()).await,
            Err(TokenError::Unknown(_))
        ));
        // The name stays taken, so the audit trail's `ops` is one credential.
        assert!(matches!(
            s.create(Role::Viewer, Some("ops"), Expiry::Never, &admin())
                .await,
            Err(TokenError::NameTaken(_))
        ));
        let listed = s.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at, Some(now + 5));
        assert_eq!(listed[0].last_used_from.as_deref(), Some("198.51.100.1"));
        assert_eq!(listed[0].state(now), "revoked");

        let trail = s.audit().page(&Default::default()).await.unwrap();
        let actions: Vec<_> = trail.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["token.revoke", "token.create"]);
        assert_eq!(trail.entries[1].from.as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn expiries_are_bounded() {
        assert_eq!("never".parse::<Expiry>(), Ok(Expiry::Never));
        assert_eq!(
            "30d".parse::<Expiry>(),
            Ok(Expiry::After(Duration::from_secs(30 * 86400)))
        );
        for bad in ["10s", "6years", "soon", ""] {
            let e = bad.parse::<Expiry>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
