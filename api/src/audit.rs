//! The audit trail (`audit_log`): every operator verb, token created or revoked, design
//! sync and pin, and window override, with who did it, from where and when. Rows are only
//! appended. Each is also logged to the `audit` tracing target, so a shipped log and the
//! store tell the same story.

use lariat_api_types::{AuditEntry, AuditPage, AuditQuery};
use lariat_db::{Db, DbError};
use serde_json::Value;
use sqlx::SqliteConnection;

/// Who did something: the credential, its role, the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// A token's name, `local:<user>` for the CLI on the database, `webhook`.
    pub who: String,
    /// `viewer`, `operator` or `admin`: the role of the token, when it was one.
    pub role: Option<String>,
    pub from: Option<String>,
}

impl AuditActor {
    /// Someone with the database file at hand (`lariat token create`, `lariat site
    /// reset`): named by the user the CLI runs as, since they hold no token.
    pub fn local() -> AuditActor {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        AuditActor {
            who: format!("local:{user}"),
            role: None,
            from: None,
        }
    }
}

/// Errors reading or writing the trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("storage error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("`limit` must be 1 to 1000, not {0}")]
    Limit(u32),
}

/// Append one entry inside the caller's transaction.
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    at: i64,
    by: &AuditActor,
    action: &str,
    target: &str,
    detail: &Value,
) -> Result<i64, sqlx::Error> {
    let (seq,): (i64,) = sqlx::query_as(
        "INSERT INTO audit_log (at, who, role, from_addr, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
    )
    .bind(at)
    .bind(&by.who)
    .bind(by.role.as_deref())
    .bind(by.from.as_deref())
    .bind(action)
    .bind(target)
    .bind(detail.to_string())
    .fetch_one(conn)
    .await?;
    Ok(seq)
}

/// Log an entry to the `audit` target.
pub(crate) fn log(by: &AuditActor, action: &str, target: &str, detail: &Value) {
    tracing::info!(
        target: "audit",
        who = %by.who,
        from = by.from.as_deref().unwrap_or(""),
        action,
        target_name = target,
        detail = %detail,
        "{action} {target}"
    );
}

type Row = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

/// The `audit_log` table. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    db: Db,
}

impl AuditLog {
    /// The trail of `db`, whose API migrations ([`crate::tokens::MIGRATIONS`]) are applied.
    pub fn new(db: Db) -> AuditLog {
        AuditLog { db }
    }

    /// Append one entry and log it.
    pub async fn record(
        &self,
        by: &AuditActor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<i64, AuditError> {
        let at = lariat_db::now_ms();
        let seq = {
            let mut w = self.db.writer().await?;
            insert(&mut w, at, by, action, target, &detail).await?
        };
        log(by, action, target, &detail);
        Ok(seq)
    }

    /// A page of entries matching `q`, newest first.
    pub async fn page(&self, q: &AuditQuery) -> Result<AuditPage, AuditError> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(AuditError::Limit(limit));
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, at, who, role, from_addr, action, target, detail FROM audit_log
             WHERE (?1 IS NULL OR who = ?1)
               AND (?2 IS NULL OR action = ?2 OR action LIKE ?2 || '.%')
               AND (?3 IS NULL OR target = ?3)
               AND (?4 IS NULL OR at >= ?4)
               AND (?5 IS NULL OR seq < ?5)
             ORDER BY seq DESC LIMIT ?6",
        )
        .bind(q.who.as_deref())
        .bind(q.action.as_deref())
        .bind(q.target.as_deref())
        .bind(q.since)
        .bind(q.before)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.db.readers())
        .await?;
        let more = rows.len() > limit as usize;
        let entries: Vec<AuditEntry> = rows
            .into_iter()
            .take(limit as usize)
            .map(
                |(seq, at, who, role, from, action, target, detail)| AuditEntry {
                    seq,
                    at,
                    who,
                    role,
                    from,
                    action,
                    target,
                    // Written by `insert` from a Value; text that does not read stays text.
                    detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                },
            )
            .collect();
        let next_before = more.then(|| entries.last().map(|e| e.seq)).flatten();
        Ok(AuditPage {
            entries,
            next_before,
        })
    }
}
