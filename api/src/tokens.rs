//! The API's bearer tokens (`api_tokens`).
//!
//! A token is 32 random bytes, shown once when created. The table keeps only its SHA-256,
//! which is all a lookup needs: a high-entropy secret needs no salt or slow hash.

use std::fmt;
use std::str::FromStr;

use lariat_db::{Db, DbError, secret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// Register workflows, manage tokens.
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

/// Errors managing tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named '{0}' already exists; choose another --name")]
    NameTaken(String),
    #[error("token name '{0}' is not valid: use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    InvalidName(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("storage error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored token '{name}' has an unknown role: {detail}")]
    Corrupt { name: String, detail: String },
}

/// A token just created. `token` is the secret: it is not stored and cannot be shown again.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub token: String,
    pub created_at: i64,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
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

/// The `api_tokens` table. Cheap to clone.
#[derive(Clone)]
pub struct TokenStore {
    db: Db,
}

impl TokenStore {
    /// The tokens of `db`, its table brought up to date. Works on a database opened
    /// without the executor lock, next to a running server.
    pub async fn open(db: Db) -> Result<TokenStore, TokenError> {
        db.migrate(&MIGRATIONS).await?;
        Ok(TokenStore { db })
    }

    /// Create a token with `role`, named `name` (or `<role>-<8 hex digits>`).
    pub async fn create(&self, role: Role, name: Option<&str>) -> Result<NewToken, TokenError> {
        let token = secret::generate(TOKEN_PREFIX);
        let name = match name {
            Some(n) if valid_name(n) => n.to_string(),
            Some(n) => return Err(TokenError::InvalidName(n.escape_default().to_string())),
            None => format!("{role}-{}", &token[TOKEN_PREFIX.len()..][..8]),
        };
        let created_at = lariat_db::now_ms();
        let mut w = self.db.writer().await?;
        let res = sqlx::query(
            "INSERT INTO api_tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(hash_token(&token))
        .bind(created_at)
        .execute(&mut *w)
        .await;
        match res {
            Ok(_) => Ok(NewToken {
                name,
                role,
                token,
                created_at,
            }),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Err(TokenError::NameTaken(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored token, oldest first, without secrets.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, role, created_at FROM api_tokens ORDER BY created_at, name",
        )
        .fetch_all(self.db.readers())
        .await?;
        rows.into_iter()
            .map(|(name, role, created_at)| {
                let role = role.parse().map_err(|detail| TokenError::Corrupt {
                    name: name.clone(),
                    detail,
                })?;
                Ok(TokenInfo {
                    name,
                    role,
                    created_at,
                })
            })
            .collect()
    }

    /// The name and role of the token with this hash, if there is one.
    pub(crate) async fn by_hash(&self, hash: &str) -> Result<Option<(String, Role)>, TokenError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT name, role FROM api_tokens WHERE hash = ?1")
                .bind(hash)
                .fetch_optional(self.db.readers())
                .await?;
        row.map(|(name, role)| {
            let role = role.parse().map_err(|detail| TokenError::Corrupt {
                name: name.clone(),
                detail,
            })?;
            Ok((name, role))
        })
        .transpose()
    }
}
