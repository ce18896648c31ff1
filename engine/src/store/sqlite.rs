//! The engine's tables in a SQLite file, on its own [`Db`]: one write connection, used by
//! the group-commit writer, and a small pool of readers (WAL lets them read while the
//! writer commits). No other crate uses this connection; their tables live behind their
//! own repositories.
//!
//! Batched writes pass all rows of one table as a single JSON parameter and insert them
//! with `jsonb_each`, so a transaction costs a handful of statements however many
//! transitions it carries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::TryStreamExt;
use lariat_db::{Db, DbOptions};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::{
    AppliedBatch, HostTask, LoadedRun, Loading, MIGRATIONS, Mirror, RunQuery, StoreError,
    StoredWorkflow, TimerRow, WindowWaiter, WriteSet, item_from_db, item_to_db, json_text,
    plan_remote, remote_runs, timer_kind, version_differs,
};
use crate::event::{Event, EventKind, RunRow, TaskRow, WaitFor, now_ms};

/// window, run, step, item, item value, wake at, owner.
type WaiterRow = (
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    String,
);

/// The engine's tables in one SQLite file. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `opts.path`, take its lock file, and
    /// bring the engine's tables up to date.
    pub async fn open(opts: DbOptions) -> Result<SqliteStore, StoreError> {
        let db = Db::open(opts).await?;
        db.migrate(&MIGRATIONS).await?;
        {
            // A file opened read-only only says so on the first write; find out now, not
            // at the first transition.
            let mut w = db.writer().await?;
            sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?1)")
                .bind(now_ms().to_string())
                .execute(&mut *w)
                .await
                .map_err(|e| StoreError::from(db.classify(e)))?;
        }
        Ok(SqliteStore { db })
    }

    /// Close the readers and release the lock file, so that another executor may open
    /// the database. The store must not be used afterwards.
    pub async fn close(&self) {
        self.db.close().await;
    }

    async fn conn(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        Ok(self.db.writer().await?)
    }

    fn reads(&self) -> &sqlx::SqlitePool {
        self.db.readers()
    }

    /// The file's size with its WAL folded back in first.
    pub async fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.db.checkpoint().await?;
        Ok(self.db.disk_bytes())
    }

    /// Whether the store can be read: for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// The executor id kept in this store, created on first use.
    pub async fn executor_id(&self, default: &str) -> Result<String, StoreError> {
        let mut w = self.conn().await?;
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('executor_id', ?1)")
            .bind(default)
            .execute(&mut *w)
            .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'executor_id'")
            .fetch_one(&mut *w)
            .await?;
        Ok(v)
    }

    // ---- writes -------------------------------------------------------------------

    /// Commit one group of transitions in one transaction.
    pub async fn commit(&self, set: &WriteSet) -> Result<(), StoreError> {
        let mut w = self.conn().await?;
        let mut tx = Db::begin_write(&mut w).await?;
        write_set(&mut tx, set, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Store a workflow definition as a new version, unless it equals the latest one.
    /// Returns the version and whether it is new.
    pub async fn put_workflow(
        &self,
        name: &str,
        canonical: &str,
    ) -> Result<(i64, bool), StoreError> {
        let mut w = self.conn().await?;
        let mut tx = Db::begin_write(&mut w).await?;
        let latest: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, definition FROM workflow_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((v, def)) = &latest
            && def == canonical
        {
            return Ok((*v, false));
        }
        let version = latest.map(|(v, _)| v + 1).unwrap_or(1);
        sqlx::query(
            "INSERT INTO workflow_versions (name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(name)
        .bind(version)
        .bind(canonical)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((version, true))
    }

    // ---- reads --------------------------------------------------------------------

    pub async fn workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let row = match version {
            Some(v) => sqlx::query(
                "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = ?1 AND version = ?2",
            )
            .bind(name)
            .bind(v)
            .fetch_optional(self.reads())
            .await?,
            None => sqlx::query(
                "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
            )
            .bind(name)
            .fetch_optional(self.reads())
            .await?,
        };
        Ok(row.map(|r| stored_workflow(&r)))
    }

    /// The latest version number of a workflow, if it has any.
    pub async fn latest_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(version) FROM workflow_versions WHERE name = ?1")
                .bind(name)
                .fetch_one(self.reads())
                .await?,
        )
    }

    /// The latest version of every workflow.
    pub async fn workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, MAX(version) AS version, definition, created_at FROM workflow_versions GROUP BY name ORDER BY name",
        )
        .fetch_all(self.reads())
        .await?;
        Ok(rows.iter().map(stored_workflow).collect())
    }

    /// Every version of one workflow, oldest first.
    pub async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = ?1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(self.reads())
        .await?;
        Ok(rows.iter().map(stored_workflow).collect())
    }

    pub async fn run(&self, id: Uuid) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(RUN_COLUMNS_BY_ID)
            .bind(id.to_string())
            .fetch_optional(self.reads())
            .await?;
        row.map(|r| run_row(&r)).transpose()
    }

    pub async fn run_by_key(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE idempotency_key = ?1 LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(self.reads())
        .await?;
        row.map(|r| run_row(&r)).transpose()
    }

    pub async fn tasks(&self, id: Uuid) -> Result<Vec<TaskRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps s WHERE s.run_id = ?1"
        ))
        .bind(id.to_string())
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(|r| task_row(r).map(|(_, t)| t)).collect()
    }

    /// The unfinished fan-out items of running runs whose item value is `item`, as
    /// (run, step), newest run first. Uses the `steps_by_item_value` index, so it costs
    /// the same however many runs are live.
    pub async fn open_items(&self, item: &Value) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT s.run_id, s.step FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE s.item_value = ?1 AND s.item >= 0
               AND s.status IN ('pending', 'ready', 'running', 'waiting', 'retrying')
               AND r.status = 'running'
             ORDER BY s.run_id DESC",
        )
        .bind(json_text(&Some(item.clone())))
        .fetch_all(self.reads())
        .await?;
        rows.into_iter()
            .map(|(run, step)| parse_uuid(&run).map(|id| (id, step)))
            .collect()
    }

    /// Every fan-out item whose item value is one of `hosts` (a host name), in any run,
    /// with its run's summary: what has been done to those hosts. Uses the
    /// `steps_by_item_value` index, so it costs what those hosts' items cost, however many
    /// runs the store holds.
    pub async fn host_tasks(&self, hosts: &[String]) -> Result<Vec<HostTask>, StoreError> {
        let values: Vec<String> = hosts
            .iter()
            .filter_map(|h| json_text(&Some(Value::String(h.clone()))))
            .collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            ", r.workflow, r.status, r.created_at, r.ended_at FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE s.item_value IN (SELECT value FROM json_each(?1)) AND s.item >= 0"
        ))
        .bind(serde_json::to_string(&values).map_err(|e| StoreError::Decode(e.to_string()))?)
        .fetch_all(self.reads())
        .await?;
        rows.iter()
            .map(|r| {
                let (run, task) = task_row(r)?;
                let status: String = r.get(18);
                Ok(HostTask {
                    run,
                    workflow: r.get(17),
                    run_status: status.parse().map_err(StoreError::Decode)?,
                    run_created_at: r.get(19),
                    run_ended_at: r.get(20),
                    task,
                })
            })
            .collect()
    }

    /// The steps of `runs` that do not fan out (one row per step), as (run, step).
    pub async fn run_level_tasks(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, TaskRow)>, StoreError> {
        let ids: Vec<String> = runs.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps s WHERE s.run_id IN (SELECT value FROM json_each(?1)) AND s.item = -1"
        ))
        .bind(serde_json::to_string(&ids).map_err(|e| StoreError::Decode(e.to_string()))?)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(task_row).collect()
    }

    /// Of `runs`, those with tasks between attempts: (run, tasks retrying, the earliest
    /// next attempt), so a list can tell a run that is retrying from one that is running.
    pub async fn retrying(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, i64, i64)>, StoreError> {
        let ids: Vec<String> = runs.iter().map(Uuid::to_string).collect();
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT run_id, count(*), min(wake_at) FROM steps
             WHERE run_id IN (SELECT value FROM json_each(?1)) AND status = 'retrying'
             GROUP BY run_id",
        )
        .bind(serde_json::to_string(&ids).map_err(|e| StoreError::Decode(e.to_string()))?)
        .fetch_all(self.reads())
        .await?;
        rows.into_iter()
            .map(|(id, n, at)| {
                let id = Uuid::parse_str(&id).map_err(|e| StoreError::Decode(e.to_string()))?;
                Ok((id, n, at.unwrap_or(0)))
            })
            .collect()
    }

    pub async fn list_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        let limit = i64::from(q.limit);
        let before = q.before.map(|u| u.to_string());
        let rows = sqlx::query(
            concat!("SELECT ", run_columns!(), " FROM runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) AND (?3 IS NULL OR id < ?3)
               AND (?5 IS NULL OR group_id = ?5) AND (?6 IS NULL OR owner = ?6)
               AND (?7 IS NULL OR EXISTS (SELECT 1 FROM json_each(runs.targets) WHERE value = ?7))
             ORDER BY id DESC LIMIT ?4"),
        )
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.workflow.as_deref())
        .bind(before)
        .bind(limit)
        .bind(q.group.map(|g| g.to_string()))
        .bind(q.owner.as_deref())
        .bind(q.host.as_deref())
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// Count of runs by status.
    pub async fn run_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status")
                .fetch_all(self.reads())
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Unfinished runs (assigned ones included) by owner.
    pub async fn active_runs_by_owner(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, count(*) FROM runs
             WHERE status IN ('running', 'paused', 'failed', 'rolling_back', 'assigned')
             GROUP BY owner",
        )
        .fetch_all(self.reads())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Tasks waiting for maintenance windows, the window named `window` only when given:
    /// at most `limit`, by window and run.
    pub async fn window_waiters(
        &self,
        window: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WindowWaiter>, StoreError> {
        let rows: Vec<WaiterRow> =
            sqlx::query_as(
                "SELECT s.waiting_for, s.run_id, s.step, s.item, s.item_value, s.wake_at, r.owner
                 FROM steps s JOIN runs r ON r.id = s.run_id
                 WHERE s.status = 'waiting' AND s.waiting_for >= 'window:' AND s.waiting_for < 'window;'
                   AND (?1 IS NULL OR s.waiting_for = ?1)
                 ORDER BY s.waiting_for, s.run_id, s.step, s.item LIMIT ?2",
            )
            .bind(window.map(|w| format!("window:{w}")))
            .bind(i64::from(limit))
            .fetch_all(self.reads())
            .await?;
        rows.into_iter()
            .map(|(w, run, step, item, value, until, owner)| {
                Ok(WindowWaiter {
                    window: w.strip_prefix("window:").unwrap_or(&w).to_string(),
                    run_id: parse_uuid(&run)?,
                    step,
                    item: u32::try_from(item).ok(),
                    item_value: value.and_then(|v| serde_json::from_str(&v).ok()),
                    until,
                    owner,
                })
            })
            .collect()
    }

    /// A run's events with `seq > after`, oldest first.
    pub async fn events(&self, id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events
             WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))
        .bind(id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Events written by `owner` after the cursor `after_owner_seq`, in owner order: what a
    /// mirror pulls to follow that owner.
    pub async fn events_after(
        &self,
        owner: &str,
        after_owner_seq: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events
             WHERE owner = ?1 AND owner_seq > ?2 ORDER BY owner_seq LIMIT ?3"
        ))
        .bind(owner)
        .bind(after_owner_seq)
        .bind(i64::from(limit))
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// The highest owner_seq applied from `owner`, 0 if none: where a mirror resumes.
    pub async fn replica_cursor(&self, owner: &str) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT applied_seq FROM replicas WHERE owner = ?1")
                .bind(owner)
                .fetch_optional(self.reads())
                .await?;
        Ok(v.unwrap_or(0))
    }

    /// Highest owner_seq written by `owner`.
    pub async fn max_owner_seq(&self, owner: &str) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(owner_seq) FROM events WHERE owner = ?1")
                .bind(owner)
                .fetch_one(self.reads())
                .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn load_where(
        &self,
        owner: &str,
        id: Option<Uuid>,
    ) -> Result<Vec<LoadedRun>, StoreError> {
        let id = id.map(|u| u.to_string());
        // One pass per table; the live set is small compared with history.
        let (runs_sql, steps_sql, seq_sql) = if id.is_some() {
            (
                concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM runs WHERE owner = ?1 AND id = ?2"
                ),
                concat!(
                    "SELECT ",
                    step_columns!(),
                    " FROM steps s WHERE s.run_id = ?2"
                ),
                "SELECT run_id, MAX(seq) FROM events WHERE run_id = ?2 GROUP BY run_id",
            )
        } else {
            (
                concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM runs WHERE owner = ?1 AND status IN ('running','paused','failed','rolling_back')"
                ),
                concat!(
                    "SELECT ",
                    step_columns!(),
                    " FROM runs r JOIN steps s ON s.run_id = r.id WHERE r.owner = ?1 AND r.status IN ('running','paused','failed','rolling_back')"
                ),
                "SELECT e.run_id, MAX(e.seq) FROM runs r JOIN events e ON e.run_id = r.id WHERE r.owner = ?1 AND r.status IN ('running','paused','failed','rolling_back') GROUP BY e.run_id",
            )
        };
        let runs = sqlx::query(runs_sql)
            .bind(owner)
            .bind(id.as_deref())
            .fetch_all(self.reads())
            .await?;
        let mut out = Loading::new(runs.iter().map(run_row).collect::<Result<_, _>>()?);
        if out.is_empty() {
            return Ok(Vec::new());
        }
        // Streamed: at ten thousand live runs the rows of a fetch_all cost more memory than
        // the runs they become.
        let mut steps = sqlx::query(steps_sql)
            .bind(owner)
            .bind(id.as_deref())
            .fetch(self.reads());
        while let Some(r) = steps.try_next().await? {
            let (run, t) = task_row(&r)?;
            out.task(run, t);
        }
        drop(steps);
        let seqs: Vec<(String, i64)> = sqlx::query_as(seq_sql)
            .bind(owner)
            .bind(id.as_deref())
            .fetch_all(self.reads())
            .await?;
        for (run, seq) in seqs {
            out.last_seq(parse_uuid(&run)?, seq);
        }
        Ok(out.done())
    }

    /// Every durable timer of `owner`'s runs.
    pub async fn timers(&self, owner: &str) -> Result<Vec<TimerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.run_id, t.step, t.item, t.kind, t.fire_at FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.owner = ?1",
        )
        .bind(owner)
        .fetch_all(self.reads())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TimerRow {
                    run_id: parse_uuid(&r.get::<String, _>(0))?,
                    step: r.get(1),
                    item: item_from_db(r.get(2)),
                    kind: r.get(3),
                    fire_at: r.get(4),
                })
            })
            .collect()
    }

    // ---- replication ----------------------------------------------------------------

    pub async fn apply_remote(&self, events: &[Event]) -> Result<AppliedBatch, StoreError> {
        let mut w = self.conn().await?;
        let mut tx = Db::begin_write(&mut w).await?;
        // One query per table for the whole batch: a batch spans a hundred runs or more,
        // and three lookups each dominated catch-up.
        let mirrors = load_mirrors(&mut tx, &remote_runs(events)).await?;
        let plan = plan_remote(events, mirrors)?;
        write_set(&mut tx, &plan.set, true).await?;
        for (owner, seq) in &plan.cursors {
            sqlx::query(
                "INSERT INTO replicas (owner, applied_seq) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET applied_seq = MAX(applied_seq, excluded.applied_seq)",
            )
            .bind(&**owner)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(AppliedBatch {
            report: plan.report,
            events: plan.set.events,
            gap: plan.gap,
        })
    }

    /// The runs assigned to `owner` that it has not started yet, oldest first.
    pub async fn assigned(&self, owner: &str) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE owner = ?1 AND status = 'assigned' ORDER BY id"
        ))
        .bind(owner)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// The runs that one submit made, one per site.
    pub async fn group(&self, group: Uuid) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE group_id = ?1 ORDER BY id"
        ))
        .bind(group.to_string())
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// The event of `run`'s log that acknowledges queued command `command`: the verb it
    /// carried out (`operator`) or its refusal (`command_refused`).
    pub async fn command_ack(&self, run: Uuid, command: &str) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE run_id = ?1 AND kind IN ('operator', 'command_refused')
               AND data->'actor'->>'command' = ?2 ORDER BY seq LIMIT 1"
        ))
        .bind(run.to_string())
        .bind(command)
        .fetch_optional(self.reads())
        .await?;
        row.map(|r| event_row(&r)).transpose()
    }

    /// Store a version of a workflow as another executor numbered it (an agent mirrors
    /// the centre's versions, so that a run pinned to one means the same everywhere).
    /// Nothing changes when it is there already; a different definition under the same
    /// name and version is refused.
    pub async fn put_workflow_version(&self, w: &StoredWorkflow) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let mut tx = Db::begin_write(&mut c).await?;
        let have: Option<String> = sqlx::query_scalar(
            "SELECT definition FROM workflow_versions WHERE name = ?1 AND version = ?2",
        )
        .bind(&w.name)
        .bind(w.version)
        .fetch_optional(&mut *tx)
        .await?;
        match have {
            Some(d) if d == w.definition => return Ok(false),
            Some(_) => return Err(version_differs(w)),
            None => {}
        }
        sqlx::query(
            "INSERT INTO workflow_versions (name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&w.name)
        .bind(w.version)
        .bind(&w.definition)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every workflow version created at or after `since` (ms), oldest first: what a
    /// mirror of this store's versions asks for.
    pub async fn workflow_versions_since(
        &self,
        since: i64,
    ) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, definition, created_at FROM workflow_versions
             WHERE created_at >= ?1 ORDER BY created_at, name, version",
        )
        .bind(since)
        .fetch_all(self.reads())
        .await?;
        Ok(rows.iter().map(stored_workflow).collect())
    }
}

/// The stored rows of every run in `ids` that has any; runs not yet known are absent.
async fn load_mirrors(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Mirror>, StoreError> {
    let ids = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    let mut out = HashMap::new();
    for r in sqlx::query(RUN_COLUMNS_IN)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let run = run_row(&r)?;
        out.insert(run.id, Mirror::blank(run));
    }
    if out.is_empty() {
        return Ok(out);
    }
    for r in sqlx::query(LAST_SEQ_IN)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let id = parse_uuid(&r.get::<String, _>(0))?;
        if let Some(m) = out.get_mut(&id) {
            m.run.last_seq = r.get(1);
        }
    }
    for r in sqlx::query(STEP_COLUMNS_IN)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let (id, t) = task_row(&r)?;
        if let Some(m) = out.get_mut(&id) {
            m.tasks.insert((t.step.to_string(), t.item), t);
        }
    }
    Ok(out)
}

const RUN_COLUMNS_BY_ID: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?1");
const RUN_COLUMNS_IN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE id IN (SELECT value FROM json_each(?1))"
);
const LAST_SEQ_IN: &str = "SELECT run_id, MAX(seq) FROM events
    WHERE run_id IN (SELECT value FROM json_each(?1)) GROUP BY run_id";
const STEP_COLUMNS_IN: &str = concat!(
    "SELECT ",
    step_columns!(),
    " FROM steps s WHERE s.run_id IN (SELECT value FROM json_each(?1))"
);

// `jsonb_each`, not `json_each`: the value it gives for each row is JSONB, which `->>`
// reads as it is; `json_each` renders each row as text that every `->>` parses again.
// `lariat-bench engine` (normal durability): 2,420 -> 3,476 workflows/s.
const INSERT_EVENTS: &str = "INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, step, item, attempt, error, data)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10
    FROM jsonb_each(?1)";
const INSERT_EVENTS_IGNORE: &str = "INSERT OR IGNORE INTO events (run_id, seq, owner, owner_seq, at, kind, step, item, attempt, error, data)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10
    FROM jsonb_each(?1)";
const UPSERT_RUNS: &str = "INSERT INTO runs (id, workflow, version, owner, status, input, targets, idempotency_key, error, created_at, updated_at, ended_at, group_id)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10, value->>11, value->>12
    FROM jsonb_each(?1) WHERE true
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
        updated_at = excluded.updated_at, ended_at = excluded.ended_at,
        workflow = excluded.workflow, version = excluded.version, owner = excluded.owner,
        input = excluded.input, targets = excluded.targets,
        idempotency_key = excluded.idempotency_key, created_at = excluded.created_at,
        group_id = excluded.group_id";
const UPSERT_STEPS: &str = "INSERT INTO steps (run_id, step, item, status, attempt, series_start, interruptions, item_value, input, output, error, waiting_for, wake_at, started_at, ended_at, compensating, updated_at)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, value->>16
    FROM jsonb_each(?1) WHERE true
    ON CONFLICT (run_id, step, item) DO UPDATE SET status = excluded.status, attempt = excluded.attempt,
        series_start = excluded.series_start, interruptions = excluded.interruptions,
        item_value = excluded.item_value, input = excluded.input, output = excluded.output,
        error = excluded.error, waiting_for = excluded.waiting_for, wake_at = excluded.wake_at,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        compensating = excluded.compensating, updated_at = excluded.updated_at";
const DELETE_TIMERS: &str = "DELETE FROM timers WHERE (run_id, step, item) IN
    (SELECT value->>0, value->>1, value->>2 FROM jsonb_each(?1))";
const UPSERT_TIMERS: &str = "INSERT INTO timers (run_id, step, item, kind, fire_at)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM jsonb_each(?1) WHERE true
    ON CONFLICT (run_id, step, item) DO UPDATE SET kind = excluded.kind, fire_at = excluded.fire_at";

async fn write_set(
    conn: &mut SqliteConnection,
    set: &WriteSet,
    ignore_existing_events: bool,
) -> Result<(), StoreError> {
    if !set.events.is_empty() {
        let rows: Vec<_> = set
            .events
            .iter()
            .map(|e| {
                (
                    e.run_id.to_string(),
                    e.seq,
                    &*e.owner,
                    e.owner_seq,
                    e.at,
                    e.kind.name(),
                    e.step.as_deref(),
                    e.item,
                    e.attempt,
                    e.error.as_deref(),
                    e.kind.data().map(|d| d.to_string()),
                )
            })
            .collect();
        let sql = if ignore_existing_events {
            INSERT_EVENTS_IGNORE
        } else {
            INSERT_EVENTS
        };
        sqlx::query(sql)
            .bind(serde_json::to_string(&rows).map_err(|e| StoreError::Decode(e.to_string()))?)
            .execute(&mut *conn)
            .await?;
    }
    if !set.runs.is_empty() {
        let rows: Vec<_> = set
            .runs
            .iter()
            .map(|r| {
                (
                    r.id.to_string(),
                    &r.workflow,
                    r.version,
                    &*r.owner,
                    r.status.as_str(),
                    r.input.to_string(),
                    serde_json::to_string(&*r.targets).unwrap_or_default(),
                    r.idempotency_key.as_deref(),
                    r.error.as_deref(),
                    r.created_at,
                    r.updated_at,
                    r.ended_at,
                    r.group.map(|g| g.to_string()),
                )
            })
            .collect();
        sqlx::query(UPSERT_RUNS)
            .bind(serde_json::to_string(&rows).map_err(|e| StoreError::Decode(e.to_string()))?)
            .execute(&mut *conn)
            .await?;
    }
    if !set.tasks.is_empty() {
        let mut no_timer = Vec::new();
        let mut timers = Vec::new();
        for (run, t) in &set.tasks {
            let item = item_to_db(t.item);
            match (timer_kind(t), t.wake_at) {
                (Some(kind), Some(at)) => timers.push((run.to_string(), &*t.step, item, kind, at)),
                _ => no_timer.push((run.to_string(), &*t.step, item)),
            }
        }
        let rows: Vec<StepSql> = set.tasks.iter().map(|(run, t)| StepSql(run, t)).collect();
        sqlx::query(UPSERT_STEPS)
            .bind(serde_json::to_string(&rows).map_err(|e| StoreError::Decode(e.to_string()))?)
            .execute(&mut *conn)
            .await?;
        if !no_timer.is_empty() {
            sqlx::query(DELETE_TIMERS)
                .bind(
                    serde_json::to_string(&no_timer)
                        .map_err(|e| StoreError::Decode(e.to_string()))?,
                )
                .execute(&mut *conn)
                .await?;
        }
        if !timers.is_empty() {
            sqlx::query(UPSERT_TIMERS)
                .bind(
                    serde_json::to_string(&timers)
                        .map_err(|e| StoreError::Decode(e.to_string()))?,
                )
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A step row as the JSON array `UPSERT_STEPS` reads, in `step_columns!` order. Written
/// by hand because serde's tuples stop at 16 fields.
struct StepSql<'a>(&'a Uuid, &'a TaskRow);

impl serde::Serialize for StepSql<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let (run, t) = (self.0, self.1);
        let mut seq = s.serialize_tuple(17)?;
        seq.serialize_element(&run.to_string())?;
        seq.serialize_element(&*t.step)?;
        seq.serialize_element(&item_to_db(t.item))?;
        seq.serialize_element(t.status.as_str())?;
        seq.serialize_element(&t.attempt)?;
        seq.serialize_element(&t.series_start)?;
        seq.serialize_element(&t.interruptions)?;
        seq.serialize_element(&json_text(&t.item_value))?;
        seq.serialize_element(&json_text(&t.input))?;
        seq.serialize_element(&json_text(&t.output))?;
        seq.serialize_element(&t.error)?;
        seq.serialize_element(&t.waiting_for.as_ref().map(|w| w.to_string()))?;
        seq.serialize_element(&t.wake_at)?;
        seq.serialize_element(&t.started_at)?;
        seq.serialize_element(&t.ended_at)?;
        seq.serialize_element(&t.compensating)?;
        seq.serialize_element(&t.updated_at)?;
        seq.end()
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Decode(format!("run id '{s}': {e}")))
}

fn parse_json(s: Option<String>) -> Result<Option<Value>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Decode(format!("json: {e}"))))
        .transpose()
}

fn stored_workflow(r: &SqliteRow) -> StoredWorkflow {
    StoredWorkflow {
        name: r.get(0),
        version: r.get(1),
        definition: r.get(2),
        created_at: r.get(3),
    }
}

fn run_row(r: &SqliteRow) -> Result<RunRow, StoreError> {
    let status: String = r.get(4);
    let targets: Option<String> = r.get(6);
    Ok(RunRow {
        id: parse_uuid(&r.get::<String, _>(0))?,
        workflow: r.get(1),
        version: r.get(2),
        owner: Arc::from(r.get::<String, _>(3)),
        status: status.parse().map_err(StoreError::Decode)?,
        input: Arc::new(parse_json(r.get(5))?.unwrap_or(Value::Null)),
        targets: Arc::new(match targets {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Decode(e.to_string()))?,
            None => Vec::new(),
        }),
        idempotency_key: r.get(7),
        error: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        ended_at: r.get(11),
        group: r
            .get::<Option<String>, _>(12)
            .map(|g| parse_uuid(&g))
            .transpose()?,
        last_seq: 0,
    })
}

fn task_row(r: &SqliteRow) -> Result<(Uuid, TaskRow), StoreError> {
    let status: String = r.get(3);
    let waiting: Option<String> = r.get(11);
    Ok((
        parse_uuid(&r.get::<String, _>(0))?,
        TaskRow {
            step: Arc::from(r.get::<String, _>(1)),
            item: item_from_db(r.get(2)),
            status: status.parse().map_err(StoreError::Decode)?,
            attempt: r.get::<i64, _>(4) as u32,
            series_start: r.get::<i64, _>(5) as u32,
            interruptions: r.get::<i64, _>(6) as u32,
            item_value: parse_json(r.get(7))?,
            input: parse_json(r.get(8))?,
            output: parse_json(r.get(9))?,
            error: r.get(10),
            waiting_for: waiting
                .map(|w| w.parse::<WaitFor>().map_err(StoreError::Decode))
                .transpose()?,
            wake_at: r.get(12),
            started_at: r.get(13),
            ended_at: r.get(14),
            compensating: r.get::<i64, _>(15) != 0,
            updated_at: r.get(16),
        },
    ))
}

fn event_row(r: &SqliteRow) -> Result<Event, StoreError> {
    let kind: String = r.get(5);
    let data = parse_json(r.get(10))?;
    Ok(Event {
        run_id: parse_uuid(&r.get::<String, _>(0))?,
        seq: r.get(1),
        owner: Arc::from(r.get::<String, _>(2)),
        owner_seq: r.get(3),
        at: r.get(4),
        step: r.get::<Option<String>, _>(6).map(Arc::from),
        item: r.get::<Option<i64>, _>(7).and_then(item_from_db),
        attempt: r.get::<Option<i64>, _>(8).map(|a| a as u32),
        error: r.get(9),
        kind: EventKind::from_parts(&kind, data)
            .map_err(|e| StoreError::Decode(format!("event kind '{kind}': {e}")))?,
    })
}
