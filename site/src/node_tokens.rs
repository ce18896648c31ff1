//! One-time node callback tokens (`node_tokens`): scoped to one host and the run step
//! that waits for it, used up by the node's state report. Only their SHA-256 is kept.

use lariat_db::secret::{self, hash as hash_token};
use lariat_db::{DbError, Tables};
use uuid::Uuid;

/// The migrations of the site's tables (`site/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The same tables on PostgreSQL (`site/migrations/postgres`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A token's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeToken {
    pub host: String,
    pub run: Uuid,
    pub step: String,
}

/// The marker written into `used_at` while a report is being delivered: the report's
/// time would do, but a constant lets a failed delivery give the token back exactly.
/// Distinct from any real time (ms since 1970 are positive).
const DELIVERING: i64 = -1;

/// The `node_tokens` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeTokens {
    db: Tables,
}

impl NodeTokens {
    /// The node tokens of `db`, their table brought up to date.
    pub async fn open(db: impl Into<Tables>) -> Result<NodeTokens, DbError> {
        let db = db.into();
        db.migrate(&MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        Ok(NodeTokens { db })
    }

    /// A new token for `host`'s callback to `step` of `run`; the secret is returned once.
    pub async fn issue(&self, host: &str, run: Uuid, step: &str) -> Result<String, DbError> {
        let token = secret::generate("nt_");
        lariat_db::on_writer!(&self.db, |c| {
            sqlx::query(
            "INSERT INTO node_tokens (hash, host, run_id, step, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_token(&token))
        .bind(host)
        .bind(run.to_string())
        .bind(step)
        .bind(lariat_db::now_ms())
        .execute(&mut *c).await?;
        });
        Ok(token)
    }

    /// The token's row, if it exists and is not used up; `None` for a malformed row too.
    pub async fn find(&self, token: &str) -> Result<Option<NodeToken>, DbError> {
        let row: Option<(String, String, String)> =
            lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(
                "SELECT host, run_id, step FROM node_tokens WHERE hash = $1 AND used_at IS NULL",
            )
            .bind(hash_token(token))
            .fetch_optional(ex)
            .await?);
        Ok(row.and_then(|(host, run, step)| {
            Some(NodeToken {
                host,
                run: Uuid::parse_str(&run).ok()?,
                step,
            })
        }))
    }

    /// Holds the token while its report is delivered; `false` when another request holds
    /// or used it first.
    pub async fn claim(&self, token: &str) -> Result<bool, DbError> {
        self.mark(
            token,
            "UPDATE node_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
        )
        .await
    }

    /// Gives a claimed token back after a failed delivery, for the node's next try.
    pub async fn release(&self, token: &str) -> Result<bool, DbError> {
        self.mark(
            token,
            "UPDATE node_tokens SET used_at = NULL WHERE hash = $1 AND used_at = $2",
        )
        .await
    }

    /// Records a claimed token as used up by a delivered report.
    pub async fn used(&self, token: &str) -> Result<(), DbError> {
        lariat_db::on_writer!(&self.db, |c| {
            sqlx::query("UPDATE node_tokens SET used_at = $2 WHERE hash = $1")
                .bind(hash_token(token))
                .bind(lariat_db::now_ms())
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    async fn mark(&self, token: &str, sql: &'static str) -> Result<bool, DbError> {
        let done = lariat_db::on_writer!(&self.db, |c| sqlx::query(sql)
            .bind(hash_token(token))
            .bind(DELIVERING)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(done == 1)
    }
}
