//! The engine's tables in a PostgreSQL database, on a [`PgDb`] pool.
//!
//! A batch commits in one transaction: each table's rows go in one statement, one typed
//! array per column zipped by `UNNEST` (`lariat-bench pg-commit`: 1.22-1.34x the rate of
//! one JSON parameter read with `jsonb_to_recordset`).
//!
//! One executor works on a database at a time, as on a SQLite file: it holds a session
//! advisory lock (its claim) on a connection of its own for as long as it runs, and every
//! write commits on that connection, so an executor whose claim ended (its session gone,
//! and another executor may have taken the database) cannot write. Reads use the pool.
//! Replicas sharing one database with a lease per run are planned (DESIGN.md).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use lariat_db::{PgDb, PgOptions};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use tokio::sync::{MappedMutexGuard, MutexGuard};
use uuid::Uuid;

use super::nul;
use super::{
    AppliedBatch, HostTask, LoadedRun, Loading, Mirror, POSTGRES_MIGRATIONS, RunQuery, StoreError,
    StoredWorkflow, TimerRow, WindowWaiter, WriteSet, item_from_db, item_to_db, json_text,
    plan_remote, remote_runs, timer_kind, version_differs,
};
use crate::event::{Event, EventKind, RunRow, TaskRow, WaitFor, now_ms};

/// The advisory lock of the engine's claim on a database, in its two-key form (`pg_locks`
/// shows the keys as `classid` and `objid`, with `objsubid` 2): "LARI", 1.
const CLAIM: (i64, i64) = (0x4c41_5249, 1);

/// The engine's tables in one PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    db: PgDb,
    claim: Arc<Claim>,
}

/// The connection that holds the advisory lock, on which every write commits, and its
/// server process id.
struct Claim {
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    pid: std::sync::atomic::AtomicI32,
    /// `meta.claim_epoch` as this executor's claim set it: every executor that takes the
    /// claim counts it up, so a different number after an outage means another took it.
    epoch: std::sync::atomic::AtomicI64,
}

impl PgStore {
    /// Connect, take the claim on the database (refused while another executor holds
    /// it), and bring the engine's tables up to date.
    pub async fn open(opts: PgOptions) -> Result<PgStore, StoreError> {
        let db = PgDb::connect(opts).await?;
        let claim = match take_claim(&db).await {
            Ok(c) => c,
            Err(e) => {
                db.close().await;
                return Err(e);
            }
        };
        let store = PgStore {
            db,
            claim: Arc::new(claim),
        };
        store.db.migrate(&POSTGRES_MIGRATIONS).await?;
        let epoch: String = sqlx::query_scalar(
            "INSERT INTO meta (key, value) VALUES ('claim_epoch', '1')
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text
             RETURNING value",
        )
        .fetch_one(store.reads())
        .await?;
        store
            .claim
            .epoch
            .store(epoch.parse().unwrap_or(0), Ordering::Release);
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('opened_at', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(store.reads())
        .await?;
        Ok(store)
    }

    /// Release the claim and close the pool.
    pub async fn close(&self) {
        if let Some(c) = self.claim.conn.lock().await.take() {
            // Closing the session releases its advisory lock.
            let _ = c.close().await;
        }
        self.db.close().await;
    }

    fn reads(&self) -> &sqlx::PgPool {
        self.db.pool()
    }

    /// The claim's own session, for a write transaction: a session advisory lock lasts
    /// as long as its session, so whatever commits on it commits under the claim, with
    /// no check of its own. Once that session has ended (a server restart, a cut
    /// connection, `pg_terminate_backend`), another executor may hold the claim: this
    /// one writes nothing more ([`StoreError::ClaimLost`]).
    async fn writer(&self) -> Result<MappedMutexGuard<'_, PgConnection>, StoreError> {
        let lost = || StoreError::ClaimLost {
            database: self.location(),
            detail: format!(
                "the connection that held it (server pid {}) is closed",
                self.claim.pid.load(Ordering::Acquire)
            ),
        };
        MutexGuard::try_map(self.claim.conn.lock().await, Option::as_mut).map_err(|_| lost())
    }

    /// Begin a write transaction on the claim's session ([`writer`](Self::writer)); a
    /// failure there that is not the database refusing the statement means the session is
    /// gone.
    async fn begin<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<Transaction<'c, Postgres>, StoreError> {
        conn.begin().await.map_err(|e| {
            // The server's own refusal, unless it is the session ending.
            if !lariat_db::is_outage(&e) {
                return StoreError::from(e);
            }
            StoreError::ClaimLost {
                database: self.location(),
                detail: format!(
                    "the connection that held it (server pid {}) failed: {e}",
                    self.claim.pid.load(Ordering::Acquire)
                ),
            }
        })
    }

    /// Take the claim again on a new connection after an outage: refused if another
    /// executor holds it now, or took it meanwhile (the epoch moved on).
    pub async fn reclaim(&self) -> Result<(), StoreError> {
        let mut held = self.claim.conn.lock().await;
        // Its session is gone or going: let it go without a goodbye it cannot deliver.
        held.take();
        // A cut connection's session may live on at the server until it notices: it is
        // this executor's own, so it is ended rather than waited for. (Were the pid
        // reused by another executor's claim, the epoch check below still stops this one.)
        sqlx::query(
            "SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid::bigint = $2 AND l.objid::bigint = $3 AND l.objsubid = 2",
        )
        .bind(self.claim.pid.load(Ordering::Acquire))
        .bind(CLAIM.0)
        .bind(CLAIM.1)
        .execute(self.reads())
        .await?;
        let fresh = take_claim_now(&self.db).await?;
        let mut conn = fresh
            .conn
            .into_inner()
            .expect("a fresh claim has its connection");
        let now: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'claim_epoch'")
                .fetch_optional(&mut conn)
                .await?;
        let now = now.and_then(|v| v.parse().ok()).unwrap_or(0);
        let ours = self.claim.epoch.load(Ordering::Acquire);
        if now != ours {
            let _ = conn.close().await;
            return Err(StoreError::TakenOver {
                database: self.location(),
                ours,
                now,
            });
        }
        self.claim
            .pid
            .store(fresh.pid.load(Ordering::Acquire), Ordering::Release);
        *held = Some(conn);
        Ok(())
    }

    fn location(&self) -> String {
        self.db.shown().to_string()
    }

    pub async fn disk_bytes(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(self.reads())
            .await?;
        Ok(n.max(0) as u64)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    pub async fn executor_id(&self, default: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('executor_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(default)
        .execute(self.reads())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'executor_id'")
                .fetch_one(self.reads())
                .await?,
        )
    }

    // ---- writes -------------------------------------------------------------------

    pub async fn commit(&self, set: &WriteSet) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = self.begin(&mut conn).await?;
        write_set(&mut tx, set, false).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn put_workflow(
        &self,
        name: &str,
        canonical: &str,
    ) -> Result<(i64, bool), StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = self.begin(&mut conn).await?;
        // Numbering reads the latest version and writes the next: two registrations of
        // one name take turns, as SQLite's single writer makes them.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('workflow_versions'), hashtext($1))")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let latest: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, definition FROM workflow_versions WHERE name = $1 ORDER BY version DESC LIMIT 1",
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
            "INSERT INTO workflow_versions (name, version, definition, created_at) VALUES ($1, $2, $3, $4)",
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

    pub async fn put_workflow_version(&self, w: &StoredWorkflow) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = self.begin(&mut conn).await?;
        let added = sqlx::query(
            "INSERT INTO workflow_versions (name, version, definition, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&w.name)
        .bind(w.version)
        .bind(&w.definition)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !added {
            let have: String = sqlx::query_scalar(
                "SELECT definition FROM workflow_versions WHERE name = $1 AND version = $2",
            )
            .bind(&w.name)
            .bind(w.version)
            .fetch_one(&mut *tx)
            .await?;
            if have != w.definition {
                return Err(version_differs(w));
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    pub async fn apply_remote(&self, events: &[Event]) -> Result<AppliedBatch, StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = self.begin(&mut conn).await?;
        let mirrors = load_mirrors(&mut tx, &remote_runs(events)).await?;
        let plan = plan_remote(events, mirrors)?;
        write_set(&mut tx, &plan.set, true).await?;
        if !plan.cursors.is_empty() {
            let (owners, seqs): (Vec<&str>, Vec<i64>) =
                plan.cursors.iter().map(|(o, s)| (&**o, *s)).unzip();
            sqlx::query(
                "INSERT INTO replicas (owner, applied_seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])
                 ON CONFLICT (owner) DO UPDATE SET applied_seq = GREATEST(replicas.applied_seq, excluded.applied_seq)",
            )
            .bind(owners)
            .bind(seqs)
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

    // ---- reads --------------------------------------------------------------------

    pub async fn workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query(
                    "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = $1 AND version = $2",
                )
                .bind(name)
                .bind(v)
                .fetch_optional(self.reads())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = $1 ORDER BY version DESC LIMIT 1",
                )
                .bind(name)
                .fetch_optional(self.reads())
                .await?
            }
        };
        row.map(|r| stored_workflow(&r)).transpose()
    }

    pub async fn latest_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(version) FROM workflow_versions WHERE name = $1")
                .bind(name)
                .fetch_one(self.reads())
                .await?,
        )
    }

    pub async fn workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (name) name, version, definition, created_at FROM workflow_versions
             ORDER BY name, version DESC",
        )
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(stored_workflow).collect()
    }

    pub async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, definition, created_at FROM workflow_versions WHERE name = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(stored_workflow).collect()
    }

    pub async fn workflow_versions_since(
        &self,
        since: i64,
    ) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, definition, created_at FROM workflow_versions
             WHERE created_at >= $1 ORDER BY created_at, name, version",
        )
        .bind(since)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(stored_workflow).collect()
    }

    pub async fn run(&self, id: Uuid) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reads())
        .await?;
        row.map(|r| run_row(&r)).transpose()
    }

    pub async fn run_by_key(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE idempotency_key = $1 LIMIT 1"
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
            " FROM steps s WHERE s.run_id = $1"
        ))
        .bind(id)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(|r| task_row(r).map(|(_, t)| t)).collect()
    }

    pub async fn open_items(&self, item: &Value) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.run_id, s.step FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE s.item_value = $1 AND s.item >= 0
               AND s.status IN ('pending', 'ready', 'running', 'waiting', 'retrying')
               AND r.status = 'running'
             ORDER BY s.run_id DESC",
        )
        .bind(item)
        .fetch_all(self.reads())
        .await?)
    }

    pub async fn host_tasks(&self, hosts: &[String]) -> Result<Vec<HostTask>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            ", r.workflow, r.status, r.created_at, r.ended_at FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE s.item_value IN (SELECT jsonb_array_elements($1)) AND s.item >= 0"
        ))
        .bind(Value::from(hosts.to_vec()))
        .fetch_all(self.reads())
        .await?;
        rows.iter()
            .map(|r| {
                let (run, task) = task_row(r)?;
                let status: String = r.try_get(18)?;
                Ok(HostTask {
                    run,
                    workflow: r.try_get(17)?,
                    run_status: status.parse().map_err(StoreError::Decode)?,
                    run_created_at: r.try_get(19)?,
                    run_ended_at: r.try_get(20)?,
                    task,
                })
            })
            .collect()
    }

    pub async fn run_level_tasks(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, TaskRow)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps s WHERE s.run_id = ANY($1) AND s.item = -1"
        ))
        .bind(runs)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(task_row).collect()
    }

    pub async fn retrying(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, i64, i64)>, StoreError> {
        let rows: Vec<(Uuid, i64, Option<i64>)> = sqlx::query_as(
            "SELECT run_id, count(*), min(wake_at) FROM steps
             WHERE run_id = ANY($1) AND status = 'retrying'
             GROUP BY run_id",
        )
        .bind(runs)
        .fetch_all(self.reads())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n, at)| (id, n, at.unwrap_or(0)))
            .collect())
    }

    pub async fn list_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        let limit = i64::from(q.limit);
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
               AND ($3::uuid IS NULL OR id < $3)
               AND ($5::uuid IS NULL OR group_id = $5) AND ($6::text IS NULL OR owner = $6)
               AND ($7::text IS NULL OR targets @> jsonb_build_array($7::text))
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.workflow.as_deref())
        .bind(q.before)
        .bind(limit)
        .bind(q.group)
        .bind(q.owner.as_deref())
        .bind(q.host.as_deref())
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn run_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status")
                .fetch_all(self.reads())
                .await?;
        Ok(rows.into_iter().collect())
    }

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

    pub async fn window_waiters(
        &self,
        window: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WindowWaiter>, StoreError> {
        type Waiter = (
            String,
            Uuid,
            String,
            i64,
            Option<Value>,
            Option<i64>,
            String,
        );
        // `waiting_for` compares in the C collation (the schema says so), so the range is
        // the prefix whatever the database's collation.
        let rows: Vec<Waiter> = sqlx::query_as(
            "SELECT s.waiting_for, s.run_id, s.step, s.item, s.item_value, s.wake_at, r.owner
             FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE s.status = 'waiting' AND s.waiting_for >= 'window:' AND s.waiting_for < 'window;'
               AND ($1::text IS NULL OR s.waiting_for = $1)
             ORDER BY s.waiting_for, s.run_id, s.step, s.item LIMIT $2",
        )
        .bind(window.map(|w| format!("window:{w}")))
        .bind(i64::from(limit))
        .fetch_all(self.reads())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(w, run_id, step, item, item_value, until, owner)| WindowWaiter {
                    window: w.strip_prefix("window:").unwrap_or(&w).to_string(),
                    run_id,
                    step,
                    item: u32::try_from(item).ok(),
                    item_value,
                    until,
                    owner,
                },
            )
            .collect())
    }

    pub async fn events(&self, id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(event_row).collect()
    }

    pub async fn events_after(
        &self,
        owner: &str,
        after_owner_seq: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE owner = $1 AND owner_seq > $2 ORDER BY owner_seq LIMIT $3"
        ))
        .bind(owner)
        .bind(after_owner_seq)
        .bind(i64::from(limit))
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(event_row).collect()
    }

    pub async fn replica_cursor(&self, owner: &str) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT applied_seq FROM replicas WHERE owner = $1")
                .bind(owner)
                .fetch_optional(self.reads())
                .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn max_owner_seq(&self, owner: &str) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(owner_seq) FROM events WHERE owner = $1")
                .bind(owner)
                .fetch_one(self.reads())
                .await?;
        Ok(v.unwrap_or(0))
    }

    /// The live runs of `owner`, or the one run `id` of it, with their tasks and last seq.
    pub async fn load_where(
        &self,
        owner: &str,
        id: Option<Uuid>,
    ) -> Result<Vec<LoadedRun>, StoreError> {
        let runs = match id {
            Some(id) => sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE owner = $1 AND id = $2"
            ))
            .bind(owner)
            .bind(id),
            None => sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE owner = $1 AND status IN ('running','paused','failed','rolling_back')"
            ))
            .bind(owner),
        }
        .fetch_all(self.reads())
        .await?;
        let mut out = Loading::new(runs.iter().map(run_row).collect::<Result<_, _>>()?);
        if out.is_empty() {
            return Ok(Vec::new());
        }
        let (steps_sql, seq_sql) = match id {
            Some(_) => (
                concat!(
                    "SELECT ",
                    step_columns!(),
                    " FROM steps s WHERE s.run_id = $1"
                ),
                "SELECT run_id, MAX(seq) FROM events WHERE run_id = $1 GROUP BY run_id",
            ),
            None => (
                concat!(
                    "SELECT ",
                    step_columns!(),
                    " FROM runs r JOIN steps s ON s.run_id = r.id WHERE r.owner = $1 AND r.status IN ('running','paused','failed','rolling_back')"
                ),
                "SELECT e.run_id, MAX(e.seq) FROM runs r JOIN events e ON e.run_id = r.id WHERE r.owner = $1 AND r.status IN ('running','paused','failed','rolling_back') GROUP BY e.run_id",
            ),
        };
        let steps = sqlx::query(steps_sql);
        let steps = match id {
            Some(id) => steps.bind(id),
            None => steps.bind(owner),
        };
        // Streamed: at ten thousand live runs the rows of a fetch_all cost more memory than
        // the runs they become.
        let mut steps = steps.fetch(self.reads());
        while let Some(r) = steps.try_next().await? {
            let (run, t) = task_row(&r)?;
            out.task(run, t);
        }
        drop(steps);
        let seqs = sqlx::query_as::<_, (Uuid, i64)>(seq_sql);
        let seqs = match id {
            Some(id) => seqs.bind(id),
            None => seqs.bind(owner),
        };
        for (run, seq) in seqs.fetch_all(self.reads()).await? {
            out.last_seq(run, seq);
        }
        Ok(out.done())
    }

    pub async fn timers(&self, owner: &str) -> Result<Vec<TimerRow>, StoreError> {
        let rows: Vec<(Uuid, String, i64, String, i64)> = sqlx::query_as(
            "SELECT t.run_id, t.step, t.item, t.kind, t.fire_at FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.owner = $1",
        )
        .bind(owner)
        .fetch_all(self.reads())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, step, item, kind, fire_at)| TimerRow {
                run_id,
                step,
                item: item_from_db(item),
                kind,
                fire_at,
            })
            .collect())
    }

    pub async fn assigned(&self, owner: &str) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE owner = $1 AND status = 'assigned' ORDER BY id"
        ))
        .bind(owner)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn group(&self, group: Uuid) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE group_id = $1 ORDER BY id"
        ))
        .bind(group)
        .fetch_all(self.reads())
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn command_ack(&self, run: Uuid, command: &str) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE run_id = $1 AND kind IN ('operator', 'command_refused')
               AND data->'actor'->>'command' = $2 ORDER BY seq LIMIT 1"
        ))
        .bind(run)
        .bind(command)
        .fetch_optional(self.reads())
        .await?;
        row.map(|r| event_row(&r)).transpose()
    }
}

/// An error's text as PostgreSQL can store it (see [`nul`]).
fn storable(error: &Option<impl AsRef<str>>) -> Option<String> {
    error.as_ref().map(|e| nul::text(e.as_ref()).into_owned())
}

/// How long a start waits for a claim held by another session before refusing.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Take the advisory lock on a connection kept for it, or say who holds it.
async fn take_claim(db: &PgDb) -> Result<Claim, StoreError> {
    claim_within(db, CLAIM_WAIT).await
}

/// Take the claim if it is free now.
async fn take_claim_now(db: &PgDb) -> Result<Claim, StoreError> {
    claim_within(db, std::time::Duration::ZERO).await
}

/// Take the claim, trying for up to `wait` while another session holds it.
async fn claim_within(db: &PgDb, wait: std::time::Duration) -> Result<Claim, StoreError> {
    let mut conn = db.pool().acquire().await?.detach();
    // An executor killed a moment ago still holds the claim until the server notices
    // its connection closed (milliseconds): a restart waits that long before refusing.
    let waiting_since = std::time::Instant::now();
    let taken = loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1::int, $2::int)")
            .bind(CLAIM.0 as i32)
            .bind(CLAIM.1 as i32)
            .fetch_one(&mut conn)
            .await?;
        if taken || waiting_since.elapsed() >= wait {
            break taken;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    if !taken {
        let holder: Option<(i32, String, Option<String>)> = sqlx::query_as(
            "SELECT a.pid, a.application_name, host(a.client_addr)
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2",
        )
        .bind(CLAIM.0)
        .bind(CLAIM.1)
        .fetch_optional(&mut conn)
        .await
        .unwrap_or(None);
        let _ = conn.close().await;
        return Err(StoreError::HeldElsewhere {
            database: db.shown().to_string(),
            holder: holder.map(|(pid, app, addr)| {
                format!(
                    "{}, server pid {pid}{}",
                    if app.is_empty() { "unnamed" } else { &app },
                    addr.map(|a| format!(", from {a}")).unwrap_or_default()
                )
            }),
        });
    }
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await?;
    Ok(Claim {
        conn: tokio::sync::Mutex::new(Some(conn)),
        pid: pid.into(),
        epoch: 0.into(),
    })
}

/// The stored rows of every run in `ids` that has any; runs not yet known are absent.
async fn load_mirrors(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Mirror>, StoreError> {
    let mut out = HashMap::new();
    for r in sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?
    {
        let run = run_row(&r)?;
        out.insert(run.id, Mirror::blank(run));
    }
    if out.is_empty() {
        return Ok(out);
    }
    let seqs: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT run_id, MAX(seq) FROM events WHERE run_id = ANY($1) GROUP BY run_id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    for (id, seq) in seqs {
        if let Some(m) = out.get_mut(&id) {
            m.run.last_seq = seq;
        }
    }
    for r in sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps s WHERE s.run_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?
    {
        let (id, t) = task_row(&r)?;
        if let Some(m) = out.get_mut(&id) {
            m.tasks.insert((t.step.to_string(), t.item), t);
        }
    }
    Ok(out)
}

/// The last of `items` for each key, in the order of their first appearance: an upsert
/// statement may touch a row once only.
fn last_per_key<'a, K: Hash + Eq, T>(items: impl Iterator<Item = (K, &'a T)>) -> Vec<&'a T> {
    let mut at: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::new();
    for (k, t) in items {
        match at.get(&k) {
            Some(&i) => out[i] = t,
            None => {
                at.insert(k, out.len());
                out.push(t);
            }
        }
    }
    out
}

macro_rules! insert_events {
    () => {
        "INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, step, item, attempt, error, data)
    SELECT r, s, o, os, a, k, st, i, att, er, d::jsonb
    FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[])
      AS x(r, s, o, os, a, k, st, i, att, er, d)"
    };
}
const INSERT_EVENTS: &str = insert_events!();
const INSERT_EVENTS_IGNORE: &str = concat!(insert_events!(), " ON CONFLICT DO NOTHING");
const UPSERT_RUNS: &str = "INSERT INTO runs (id, workflow, version, owner, status, input, targets, idempotency_key, error, created_at, updated_at, ended_at, group_id)
    SELECT id, wf, v, o, st, inp::jsonb, tg::jsonb, k, er, ca, ua, ea, g
    FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::uuid[])
      AS x(id, wf, v, o, st, inp, tg, k, er, ca, ua, ea, g)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
        updated_at = excluded.updated_at, ended_at = excluded.ended_at,
        workflow = excluded.workflow, version = excluded.version, owner = excluded.owner,
        input = excluded.input, targets = excluded.targets,
        idempotency_key = excluded.idempotency_key, created_at = excluded.created_at,
        group_id = excluded.group_id";
const UPSERT_STEPS: &str = "INSERT INTO steps (run_id, step, item, status, attempt, series_start, interruptions, item_value, input, output, error, waiting_for, wake_at, started_at, ended_at, compensating, updated_at)
    SELECT r, st, i, status, att, ss, intr, iv::jsonb, inp::jsonb, outp::jsonb, er, wf, wa, sa, ea, comp, ua
    FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::boolean[], $17::bigint[])
      AS x(r, st, i, status, att, ss, intr, iv, inp, outp, er, wf, wa, sa, ea, comp, ua)
    ON CONFLICT (run_id, step, item) DO UPDATE SET status = excluded.status, attempt = excluded.attempt,
        series_start = excluded.series_start, interruptions = excluded.interruptions,
        item_value = excluded.item_value, input = excluded.input, output = excluded.output,
        error = excluded.error, waiting_for = excluded.waiting_for, wake_at = excluded.wake_at,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        compensating = excluded.compensating, updated_at = excluded.updated_at";
const DELETE_TIMERS: &str =
    "DELETE FROM timers t USING UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS d(r, st, i)
    WHERE t.run_id = d.r AND t.step = d.st AND t.item = d.i";
const UPSERT_TIMERS: &str = "INSERT INTO timers (run_id, step, item, kind, fire_at)
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
    ON CONFLICT (run_id, step, item) DO UPDATE SET kind = excluded.kind, fire_at = excluded.fire_at";

async fn write_set(
    tx: &mut PgConnection,
    set: &WriteSet,
    ignore_existing_events: bool,
) -> Result<(), StoreError> {
    if !set.events.is_empty() {
        let e = &set.events;
        let sql = if ignore_existing_events {
            INSERT_EVENTS_IGNORE
        } else {
            INSERT_EVENTS
        };
        sqlx::query(sql)
            .bind(e.iter().map(|e| e.run_id).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(e.iter().map(|e| &*e.owner).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.owner_seq).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.kind.name()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.step.as_deref()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.item.map(i64::from)).collect::<Vec<_>>())
            .bind(
                e.iter()
                    .map(|e| e.attempt.map(i64::from))
                    .collect::<Vec<_>>(),
            )
            .bind(e.iter().map(|e| storable(&e.error)).collect::<Vec<_>>())
            .bind(
                e.iter()
                    .map(|e| e.kind.data().map(|d| nul::json(d.to_string())))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
    }
    if !set.runs.is_empty() {
        let r = last_per_key(set.runs.iter().map(|r| (r.id, r)));
        sqlx::query(UPSERT_RUNS)
            .bind(r.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.workflow.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(r.iter().map(|r| &*r.owner).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(
                r.iter()
                    .map(|r| nul::json(r.input.to_string()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                r.iter()
                    .map(|r| Value::from(r.targets.to_vec()).to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                r.iter()
                    .map(|r| r.idempotency_key.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(r.iter().map(|r| storable(&r.error)).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.ended_at).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.group).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    if !set.tasks.is_empty() {
        let t = last_per_key(
            set.tasks
                .iter()
                .map(|task| ((task.0, task.1.step.clone(), task.1.item), task)),
        );
        sqlx::query(UPSERT_STEPS)
            .bind(t.iter().map(|(run, _)| *run).collect::<Vec<_>>())
            .bind(t.iter().map(|(_, t)| &*t.step).collect::<Vec<_>>())
            .bind(
                t.iter()
                    .map(|(_, t)| item_to_db(t.item))
                    .collect::<Vec<_>>(),
            )
            .bind(t.iter().map(|(_, t)| t.status.as_str()).collect::<Vec<_>>())
            .bind(
                t.iter()
                    .map(|(_, t)| i64::from(t.attempt))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| i64::from(t.series_start))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| i64::from(t.interruptions))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| json_text(&t.item_value).map(nul::json))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| json_text(&t.input).map(nul::json))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| json_text(&t.output).map(nul::json))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| storable(&t.error))
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|(_, t)| t.waiting_for.as_ref().map(WaitFor::to_string))
                    .collect::<Vec<_>>(),
            )
            .bind(t.iter().map(|(_, t)| t.wake_at).collect::<Vec<_>>())
            .bind(t.iter().map(|(_, t)| t.started_at).collect::<Vec<_>>())
            .bind(t.iter().map(|(_, t)| t.ended_at).collect::<Vec<_>>())
            .bind(t.iter().map(|(_, t)| t.compensating).collect::<Vec<_>>())
            .bind(t.iter().map(|(_, t)| t.updated_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        let (mut gone, mut timers) = (Vec::new(), Vec::new());
        for (run, t) in t {
            match (timer_kind(t), t.wake_at) {
                (Some(kind), Some(at)) => {
                    timers.push((*run, &*t.step, item_to_db(t.item), kind, at))
                }
                _ => gone.push((*run, &*t.step, item_to_db(t.item))),
            }
        }
        if !gone.is_empty() {
            sqlx::query(DELETE_TIMERS)
                .bind(gone.iter().map(|g| g.0).collect::<Vec<_>>())
                .bind(gone.iter().map(|g| g.1).collect::<Vec<_>>())
                .bind(gone.iter().map(|g| g.2).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        if !timers.is_empty() {
            sqlx::query(UPSERT_TIMERS)
                .bind(timers.iter().map(|t| t.0).collect::<Vec<_>>())
                .bind(timers.iter().map(|t| t.1).collect::<Vec<_>>())
                .bind(timers.iter().map(|t| t.2).collect::<Vec<_>>())
                .bind(timers.iter().map(|t| t.3).collect::<Vec<_>>())
                .bind(timers.iter().map(|t| t.4).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

fn stored_workflow(r: &PgRow) -> Result<StoredWorkflow, StoreError> {
    Ok(StoredWorkflow {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        definition: r.try_get(2)?,
        created_at: r.try_get(3)?,
    })
}

fn run_row(r: &PgRow) -> Result<RunRow, StoreError> {
    let status: String = r.try_get(4)?;
    let targets: Option<Value> = r.try_get(6)?;
    Ok(RunRow {
        id: r.try_get(0)?,
        workflow: r.try_get(1)?,
        version: r.try_get(2)?,
        owner: Arc::from(r.try_get::<String, _>(3)?),
        status: status.parse().map_err(StoreError::Decode)?,
        input: Arc::new(r.try_get::<Option<Value>, _>(5)?.unwrap_or(Value::Null)),
        targets: Arc::new(match targets {
            Some(t) => serde_json::from_value(t).map_err(|e| StoreError::Decode(e.to_string()))?,
            None => Vec::new(),
        }),
        idempotency_key: r.try_get(7)?,
        error: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        ended_at: r.try_get(11)?,
        group: r.try_get(12)?,
        last_seq: 0,
    })
}

fn task_row(r: &PgRow) -> Result<(Uuid, TaskRow), StoreError> {
    let status: String = r.try_get(3)?;
    let waiting: Option<String> = r.try_get(11)?;
    let count = |i: usize| -> Result<u32, StoreError> {
        let v: i64 = r.try_get(i)?;
        u32::try_from(v).map_err(|_| StoreError::Decode(format!("column {i}: {v} is no count")))
    };
    Ok((
        r.try_get(0)?,
        TaskRow {
            step: Arc::from(r.try_get::<String, _>(1)?),
            item: item_from_db(r.try_get(2)?),
            status: status.parse().map_err(StoreError::Decode)?,
            attempt: count(4)?,
            series_start: count(5)?,
            interruptions: count(6)?,
            item_value: r.try_get(7)?,
            input: r.try_get(8)?,
            output: r.try_get(9)?,
            error: r.try_get(10)?,
            waiting_for: waiting
                .map(|w| w.parse::<WaitFor>().map_err(StoreError::Decode))
                .transpose()?,
            wake_at: r.try_get(12)?,
            started_at: r.try_get(13)?,
            ended_at: r.try_get(14)?,
            compensating: r.try_get(15)?,
            updated_at: r.try_get(16)?,
        },
    ))
}

fn event_row(r: &PgRow) -> Result<Event, StoreError> {
    let kind: String = r.try_get(5)?;
    let data: Option<Value> = r.try_get(10)?;
    Ok(Event {
        run_id: r.try_get(0)?,
        seq: r.try_get(1)?,
        owner: Arc::from(r.try_get::<String, _>(2)?),
        owner_seq: r.try_get(3)?,
        at: r.try_get(4)?,
        step: r.try_get::<Option<String>, _>(6)?.map(Arc::from),
        item: r.try_get::<Option<i64>, _>(7)?.and_then(item_from_db),
        attempt: r
            .try_get::<Option<i64>, _>(8)?
            .and_then(|a| u32::try_from(a).ok()),
        error: r.try_get(9)?,
        kind: EventKind::from_parts(&kind, data)
            .map_err(|e| StoreError::Decode(format!("event kind '{kind}': {e}")))?,
    })
}
