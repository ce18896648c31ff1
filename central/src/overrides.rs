//! Operators' overrides of maintenance windows (`window_overrides`): every statement on
//! the table is in this file. Nothing is deleted, so the table is also the audit of who
//! opened or closed which window, from where, when and why.
//!
//! The set in force travels to every executor: to this process's site role through
//! [`Overrides::feed`], to each agent in its sync answer with the set's version, which
//! the agent reports back (so operators see which sites hold an override).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use lariat_api_types::WindowOverride;
use lariat_db::{Clock, DbError, Tables};
use lariat_workflows::windows::{Override, OverrideAction};
use tokio::sync::watch;
use uuid::Uuid;

/// An override as the centre keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverride {
    pub made: Override,
    /// The client's address.
    pub from_addr: Option<String>,
    /// Ended by an operator before it expired: when, and by whom.
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    /// The last change to it (its making or ending), in the order of the set's versions.
    pub version: i64,
}

/// An override as the API and the link carry it.
pub fn override_body(o: &Override) -> WindowOverride {
    WindowOverride {
        id: o.id.clone(),
        window: o.window.clone(),
        action: action_text(o.action).into(),
        site: o.site.clone(),
        starts_at: o.from,
        ends_at: o.until,
        reason: o.reason.clone(),
        who: o.who.clone(),
        from: None,
        ended_at: None,
        ended_by: None,
        seq: o.seq,
        awaiting: Vec::new(),
    }
}

impl StoredOverride {
    /// As the API carries it.
    pub fn body(&self) -> WindowOverride {
        WindowOverride {
            from: self.from_addr.clone(),
            ended_at: self.ended_at,
            ended_by: self.ended_by.clone(),
            ..override_body(&self.made)
        }
    }

    /// Whether it is in force at `t`: made, not ended, not expired.
    pub fn in_force(&self, t: i64) -> bool {
        self.ended_at.is_none() && self.made.in_force(t)
    }
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct NewOverride {
    pub window: String,
    pub action: OverrideAction,
    pub site: Option<String>,
    /// From when: now, by the clock `until` was reckoned by.
    pub from: i64,
    pub until: i64,
    pub reason: String,
    pub who: String,
    pub from_addr: Option<String>,
}

/// The overrides table, and the set in force as it changes. Cheap to clone.
#[derive(Clone)]
pub struct Overrides {
    db: Tables,
    clock: Clock,
    feed: Arc<watch::Sender<Arc<Vec<Override>>>>,
    /// The version of the set in `feed`: stored after the set, read before it, so that a
    /// reader never holds a version newer than its set.
    version: Arc<AtomicI64>,
    /// Publishing in turns keeps an older set from replacing a newer one.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

type Row = (
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

macro_rules! columns {
    () => {
        "seq, id, \"window\", action, site, starts_at, ends_at, reason, who, from_addr, ended_at, ended_by, version"
    };
}

fn stored(
    (
        seq,
        id,
        window,
        action,
        site,
        from,
        until,
        reason,
        who,
        from_addr,
        ended_at,
        ended_by,
        version,
    ): Row,
) -> StoredOverride {
    StoredOverride {
        made: Override {
            id,
            seq,
            window,
            action: if action == "open" {
                OverrideAction::Open
            } else {
                OverrideAction::Close
            },
            site,
            from,
            until,
            reason,
            who,
        },
        from_addr,
        ended_at,
        ended_by,
        version,
    }
}

/// On PostgreSQL, where writers do not take turns by themselves as on SQLite's one
/// writer, a change takes the table's numbering for the rest of its transaction: the
/// next version is read from the table, and two changes must not read the same one.
const NUMBERING: &str = "LOCK TABLE window_overrides IN SHARE ROW EXCLUSIVE MODE";

fn action_text(a: OverrideAction) -> &'static str {
    match a {
        OverrideAction::Open => "open",
        OverrideAction::Close => "close",
    }
}

impl Overrides {
    /// The table in `db`, with the set in force by `clock`.
    pub async fn open(db: impl Into<Tables>, clock: Clock) -> Result<Overrides, DbError> {
        let db = db.into();
        db.migrate(&crate::MIGRATIONS, &crate::POSTGRES_MIGRATIONS)
            .await?;
        let (tx, _) = watch::channel(Arc::new(Vec::new()));
        let me = Overrides {
            db,
            clock,
            feed: Arc::new(tx),
            version: Arc::new(AtomicI64::new(0)),
            publishing: Default::default(),
        };
        me.publish().await?;
        Ok(me)
    }

    /// The overrides not ended nor expired when last changed; each is checked against
    /// the clock where it is used.
    pub fn feed(&self) -> watch::Receiver<Arc<Vec<Override>>> {
        self.feed.subscribe()
    }

    async fn publish(&self) -> Result<(), DbError> {
        let _turn = self.publishing.lock().await;
        let version = self.version().await?;
        let now = self.clock.now_ms();
        let rows: Vec<Row> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM window_overrides WHERE ended_at IS NULL AND ends_at > $1 ORDER BY seq"
        ))
        .bind(now)
        .fetch_all(ex)
        .await?);
        let set: Vec<Override> = rows.into_iter().map(|r| stored(r).made).collect();
        self.feed.send_replace(Arc::new(set));
        self.version.store(version, Ordering::Release);
        Ok(())
    }

    /// The version of the table: its last change.
    async fn version(&self) -> Result<i64, DbError> {
        Ok(lariat_db::on_reader!(&self.db, |ex| sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM window_overrides"
        )
        .fetch_one(ex)
        .await?))
    }

    /// Makes an override, in force from `n.from`.
    pub async fn make(&self, n: NewOverride) -> Result<StoredOverride, DbError> {
        let id = Uuid::now_v7().to_string();
        let row: Row = lariat_db::in_transaction!(&self.db, postgres_first: NUMBERING, |tx| {
            let row = sqlx::query_as(concat!(
            "INSERT INTO window_overrides
               (seq, id, \"window\", action, site, starts_at, ends_at, reason, who, from_addr, version)
             SELECT v, $1, $2, $3, $4, $5, $6, $7, $8, $9, v
               FROM (SELECT COALESCE(MAX(version), 0) + 1 AS v FROM window_overrides) AS next
             RETURNING ",
            columns!()
        ))
        .bind(&id)
        .bind(&n.window)
        .bind(action_text(n.action))
        .bind(&n.site)
        .bind(n.from)
        .bind(n.until)
        .bind(&n.reason)
        .bind(&n.who)
        .bind(&n.from_addr)
        .fetch_one(&mut *tx).await?;
            tx.commit().await?;
            row
        });
        let made = stored(row);
        tracing::info!(
            target: "audit",
            override_id = %made.made.id,
            window = %made.made.window,
            action = action_text(made.made.action),
            site = made.made.site.as_deref().unwrap_or("all"),
            until = made.made.until,
            who = %made.made.who,
            from = made.from_addr.as_deref().unwrap_or(""),
            reason = %made.made.reason,
            "window override made"
        );
        self.publish().await?;
        Ok(made)
    }

    /// Ends the overrides of `window` in force now (those of `site` only, when given;
    /// otherwise every one), so that its schedule decides again. The ones ended.
    pub async fn end(
        &self,
        window: &str,
        site: Option<&str>,
        by: &str,
    ) -> Result<Vec<StoredOverride>, DbError> {
        let now = self.clock.now_ms();
        let rows: Vec<Row> = lariat_db::in_transaction!(&self.db, postgres_first: NUMBERING, |tx| {
            let rows = sqlx::query_as(concat!(
                "UPDATE window_overrides SET ended_at = $1, ended_by = $2,
               version = (SELECT COALESCE(MAX(version), 0) + 1 FROM window_overrides)
             WHERE \"window\" = $3 AND ended_at IS NULL AND starts_at <= $1 AND ends_at > $1
               AND ($4 IS NULL OR site IS NOT DISTINCT FROM $4)
             RETURNING ",
                columns!()
            ))
            .bind(now)
            .bind(by)
            .bind(window)
            .bind(site)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows
        });
        let ended: Vec<StoredOverride> = rows.into_iter().map(stored).collect();
        for e in &ended {
            tracing::info!(
                target: "audit",
                override_id = %e.made.id,
                window = %e.made.window,
                who = by,
                "window override ended"
            );
        }
        // Even when nothing ended: a publish that failed after an earlier change is
        // made good by the next call.
        self.publish().await?;
        Ok(ended)
    }

    /// The latest overrides of `window` (of every window when None), newest first, at
    /// most `limit`: the audit.
    pub async fn history(
        &self,
        window: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredOverride>, DbError> {
        let rows: Vec<Row> = lariat_db::on_reader!(&self.db, |ex| {
            sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM window_overrides WHERE $1 IS NULL OR \"window\" = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(window)
        .bind(i64::from(limit))
        .fetch_all(ex).await?
        });
        Ok(rows.into_iter().map(stored).collect())
    }

    /// The overrides in force now for `site`'s executor (those of every site and its
    /// own), and the version of the set they come from.
    pub fn for_site(&self, site: &str) -> (i64, Vec<Override>) {
        let version = self.version.load(Ordering::Acquire);
        let now = self.clock.now_ms();
        let set = self
            .feed
            .borrow()
            .iter()
            .filter(|o| o.in_force(now) && o.site.as_deref().is_none_or(|s| s == site))
            .cloned()
            .collect();
        (version, set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lariat_db::DbOptions;

    fn new(window: &str, action: OverrideAction, site: Option<&str>, until: i64) -> NewOverride {
        NewOverride {
            window: window.into(),
            action,
            site: site.map(str::to_string),
            from: Clock::system().now_ms(),
            until,
            reason: "why".into(),
            who: "alice".into(),
            from_addr: Some("10.0.0.9".into()),
        }
    }

    #[tokio::test]
    async fn overrides_are_kept_ended_by_site_and_audited_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db = lariat_db::Db::open(DbOptions::new(&path)).await.unwrap();
        let clock = Clock::system();
        let o = Overrides::open(db.clone(), clock).await.unwrap();
        let feed = o.feed();
        let now = clock.now_ms();
        let all = o
            .make(new("fw", OverrideAction::Open, None, now + 3_600_000))
            .await
            .unwrap();
        let ams = o
            .make(new(
                "fw",
                OverrideAction::Close,
                Some("ams1"),
                now + 3_600_000,
            ))
            .await
            .unwrap();
        o.make(new("other", OverrideAction::Open, None, now - 1))
            .await
            .unwrap();
        assert!(
            ams.made.seq > all.made.seq,
            "later overrides win: they come later"
        );
        assert_eq!(feed.borrow().len(), 2, "an expired one is not in force");
        let (v, fra) = o.for_site("fra1");
        assert_eq!(
            fra.iter().map(|x| &x.id).collect::<Vec<_>>(),
            [&all.made.id]
        );
        let (_, here) = o.for_site("ams1");
        assert_eq!(here.len(), 2);

        let ended = o.end("fw", Some("ams1"), "bob").await.unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].made.id, ams.made.id);
        assert_eq!(ended[0].ended_by.as_deref(), Some("bob"));
        let (after, _) = o.for_site("ams1");
        assert!(after > v, "an ending is a new version of the set");
        assert_eq!(feed.borrow().len(), 1);
        db.close().await;

        // Reopened (a restart): the set in force and the whole history are still there.
        let db = lariat_db::Db::open(DbOptions::new(&path)).await.unwrap();
        let o = Overrides::open(db, clock).await.unwrap();
        assert_eq!(o.for_site("ams1").1, vec![all.made.clone()]);
        assert_eq!(o.for_site("ams1").0, after);
        let history = o.history(Some("fw"), 10).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].made.id, ams.made.id, "newest first");
        assert_eq!(history[1].from_addr.as_deref(), Some("10.0.0.9"));
        assert!(history[1].in_force(clock.now_ms()));
        assert!(!history[0].in_force(clock.now_ms()));
    }
}
