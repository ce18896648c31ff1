//! The audit trail (`audit_log`): every operator verb, token created or revoked, design
//! sync and pin, and window override, with who did it, from where and when. Rows are only
//! appended. Each is also logged to the `audit` tracing target, so a shipped log and the
//! store tell the same story.

use lariat_api_types::{AuditEntry, AuditPage, AuditQuery};
use lariat_db::{DbError, Tables};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

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
    #[error("the audit trail's writer has stopped")]
    Stopped,
}

impl AuditError {
    /// Whether this is the database out of reach ([`lariat_db::is_outage`]).
    pub fn is_outage(&self) -> bool {
        match self {
            AuditError::Db(e) => e.is_outage(),
            AuditError::Sql(e) => lariat_db::is_outage(e),
            _ => false,
        }
    }
}

/// The group-commit writer: whatever is queued goes in one transaction. A batch that
/// cannot be committed is logged with every entry in it, so the log keeps what the
/// table lost.
async fn write_batches(db: Tables, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        // The file has one writer at a time, the engine's group commit among them: a
        // batch gathers for up to LINGER so the trail takes the write lock a few times a
        // second, not once per verb. A flush ends the wait.
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Entry(p) => batch.push(p),
                Write::Flush(done) => {
                    flushes.push(done);
                    while let Ok(w) = rx.try_recv() {
                        match w {
                            Write::Entry(p) => batch.push(p),
                            Write::Flush(done) => flushes.push(done),
                        }
                    }
                    break;
                }
            }
            if batch.len() >= BATCH_MAX {
                break;
            }
            next = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten();
        }
        if !batch.is_empty()
            && let Err(e) = commit(&db, &batch).await
        {
            for p in &batch {
                tracing::error!(
                    target: "audit",
                    who = %p.by.who,
                    action = %p.action,
                    target_name = %p.target,
                    detail = %p.detail,
                    "audit entry not stored: {e}"
                );
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One statement for the whole batch, so the write lock is held for as short a time as
/// the commit itself. SQLite reads the rows from one JSON array, PostgreSQL from one typed
/// array per column; both insert them in the batch's order, which `seq` keeps.
async fn commit(db: &Tables, batch: &[Pending]) -> Result<(), AuditError> {
    match db {
        Tables::Sqlite(db) => {
            let rows: Vec<Value> = batch
                .iter()
                .map(|p| {
                    serde_json::json!([
                        p.at,
                        p.by.who,
                        p.by.role,
                        p.by.from,
                        p.action,
                        p.target,
                        p.detail.to_string()
                    ])
                })
                .collect();
            let rows = Value::Array(rows).to_string();
            let mut w = db.writer().await?;
            sqlx::query(
                "INSERT INTO audit_log (at, who, role, from_addr, action, target, detail)
                 SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3,
                        r.value ->> 4, r.value ->> 5, r.value ->> 6
                 FROM json_each($1) AS r ORDER BY r.key",
            )
            .bind(rows)
            .execute(&mut *w)
            .await?;
        }
        Tables::Postgres(db) => {
            let at: Vec<i64> = batch.iter().map(|p| p.at).collect();
            let who: Vec<&str> = batch.iter().map(|p| p.by.who.as_str()).collect();
            let role: Vec<Option<&str>> = batch.iter().map(|p| p.by.role.as_deref()).collect();
            let from: Vec<Option<&str>> = batch.iter().map(|p| p.by.from.as_deref()).collect();
            let action: Vec<&str> = batch.iter().map(|p| p.action.as_str()).collect();
            let target: Vec<&str> = batch.iter().map(|p| p.target.as_str()).collect();
            let detail: Vec<String> = batch.iter().map(|p| p.detail.to_string()).collect();
            sqlx::query(
                "INSERT INTO audit_log (at, who, role, from_addr, action, target, detail)
                 SELECT at, who, role, from_addr, action, target, detail
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[])
                      WITH ORDINALITY AS r (at, who, role, from_addr, action, target, detail, n)
                 ORDER BY n",
            )
            .bind(at)
            .bind(who)
            .bind(role)
            .bind(from)
            .bind(action)
            .bind(target)
            .bind(detail)
            .execute(db.pool())
            .await?;
        }
    }
    Ok(())
}

/// The statement that appends one entry and returns its `seq`.
pub(crate) const INSERT_ONE: &str = "INSERT INTO audit_log (at, who, role, from_addr, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq";

/// `insert_entry!(conn, at, by, action, target, detail)`: the future that appends one
/// entry on `conn`, inside the caller's transaction or on its own. A macro, so that one
/// bind chain serves both databases' connections.
macro_rules! insert_entry {
    ($conn:expr, $at:expr, $by:expr, $action:expr, $target:expr, $detail:expr) => {
        sqlx::query_scalar::<_, i64>($crate::audit::INSERT_ONE)
            .bind($at)
            .bind(&$by.who)
            .bind($by.role.as_deref())
            .bind($by.from.as_deref())
            .bind($action)
            .bind($target)
            .bind($detail.to_string())
            .fetch_one($conn)
    };
}
pub(crate) use insert_entry;

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

/// An entry waiting for the group commit.
struct Pending {
    at: i64,
    by: AuditActor,
    action: String,
    target: String,
    detail: Value,
}

/// What the group-commit writer is told.
enum Write {
    Entry(Pending),
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// Entries committed in one transaction at most.
const BATCH_MAX: usize = 1000;
/// How long a batch gathers entries before its commit.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The `audit_log` table. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    db: Tables,
    /// The group-commit writer, when there is one.
    queue: Option<mpsc::UnboundedSender<Write>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("group_committed", &self.queue.is_some())
            .finish()
    }
}

impl AuditLog {
    /// The trail of `db`, whose API migrations ([`crate::tokens::MIGRATIONS`]) are applied;
    /// each [`record`](Self::record) is a transaction of its own.
    pub fn new(db: impl Into<Tables>) -> AuditLog {
        AuditLog {
            db: db.into(),
            queue: None,
        }
    }

    /// As [`new`](Self::new), with entries committed together in the background: a
    /// server answering hundreds of verbs a second pays one commit per batch, and a verb's
    /// answer does not wait for it (the verb's own record, a run's log or an override's
    /// row, is durable before the answer; its audit entry follows within a second, and is logged at once).
    /// [`flush`](Self::flush) before closing the database.
    pub fn group_committed(db: impl Into<Tables>) -> AuditLog {
        let db: Tables = db.into();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(db.clone(), rx));
        AuditLog {
            db,
            queue: Some(tx),
        }
    }

    /// Append one entry and log it: committed when this returns, or, group-committed,
    /// queued for the next batch.
    pub async fn record(
        &self,
        by: &AuditActor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), AuditError> {
        let at = lariat_db::now_ms();
        log(by, action, target, &detail);
        let Some(queue) = &self.queue else {
            lariat_db::on_writer!(&self.db, |c| insert_entry!(
                &mut *c, at, by, action, target, &detail
            )
            .await?);
            return Ok(());
        };
        let pending = Pending {
            at,
            by: by.clone(),
            action: action.to_string(),
            target: target.to_string(),
            detail,
        };
        queue
            .send(Write::Entry(pending))
            .map_err(|_| AuditError::Stopped)
    }

    /// Wait until every entry recorded so far is committed.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (done, flushed) = oneshot::channel();
        if queue.send(Write::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// A page of entries matching `q`, newest first.
    pub async fn page(&self, q: &AuditQuery) -> Result<AuditPage, AuditError> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(AuditError::Limit(limit));
        }
        let rows: Vec<Row> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(
            "SELECT seq, at, who, role, from_addr, action, target, detail FROM audit_log
             WHERE ($1 IS NULL OR who = $1)
               AND ($2 IS NULL OR action = $2 OR action LIKE $2 || '.%')
               AND ($3 IS NULL OR target = $3)
               AND ($4 IS NULL OR at >= $4)
               AND ($5 IS NULL OR seq < $5)
             ORDER BY seq DESC LIMIT $6",
        )
        .bind(q.who.as_deref())
        .bind(q.action.as_deref())
        .bind(q.target.as_deref())
        .bind(q.since)
        .bind(q.before)
        .bind(i64::from(limit) + 1)
        .fetch_all(ex)
        .await?);
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
