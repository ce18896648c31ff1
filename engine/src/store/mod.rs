//! The engine's tables (workflow versions, runs, steps, events, timers, replicas) behind
//! one [`Store`], on either of two databases: an embedded SQLite file (the default,
//! [`sqlite`]) or a PostgreSQL server ([`postgres`]). Both keep the same rows with the same
//! meaning; what they share (the types, the rebuilding of a mirrored run from its events)
//! lives here, and each backend owns its SQL.
//!
//! A batch of transitions commits in one transaction of a handful of statements however
//! many rows it carries: SQLite reads each table's rows from one JSON parameter, PostgreSQL
//! from one typed array per column.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lariat_db::{DbError, DbOptions, PgOptions};
use serde_json::Value;
use uuid::Uuid;

pub use lariat_db::Durability;

use crate::event::{Event, EventKind, Rows, RunRow, RunStatus, StepStatus, TaskRow, apply};

// Each list is written once: both backends' row decoders read columns by position.
macro_rules! run_columns {
    () => {
        "id, workflow, version, owner, status, input, targets, idempotency_key, error, created_at, updated_at, ended_at, group_id"
    };
}
macro_rules! step_columns {
    () => {
        "s.run_id, s.step, s.item, s.status, s.attempt, s.series_start, s.interruptions, s.item_value, s.input, s.output, s.error, s.waiting_for, s.wake_at, s.started_at, s.ended_at, s.compensating, s.updated_at"
    };
}
macro_rules! event_columns {
    () => {
        "run_id, seq, owner, owner_seq, at, kind, step, item, attempt, error, data"
    };
}

pub mod nul;
pub mod postgres;
pub mod sqlite;

/// Where the engine keeps its tables.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// A SQLite file, with its lock file beside it.
    Sqlite(DbOptions),
    /// A PostgreSQL database.
    Postgres(PgOptions),
}

impl StoreOptions {
    /// A SQLite file at `path`, durable on every commit.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions::Sqlite(DbOptions::new(path))
    }

    /// A PostgreSQL database at `url` (`postgres://user:password@host/database`).
    pub fn postgres(url: impl Into<String>) -> Self {
        StoreOptions::Postgres(PgOptions::new(url))
    }

    /// What a `--db` argument names: a PostgreSQL URL (`postgres://` or `postgresql://`),
    /// or else the path of a SQLite file.
    pub fn from_arg(arg: &str) -> Self {
        if lariat_db::is_postgres_url(arg) {
            StoreOptions::postgres(arg)
        } else {
            StoreOptions::new(arg)
        }
    }

    /// The SQLite settings, when the store is a file: durability and readers are SQLite's
    /// (PostgreSQL commits durably and pools its connections).
    pub fn sqlite_mut(&mut self) -> Option<&mut DbOptions> {
        match self {
            StoreOptions::Sqlite(o) => Some(o),
            StoreOptions::Postgres(_) => None,
        }
    }
}

/// A fan-out item that works on one host, with a summary of its run
/// ([`Store::host_tasks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTask {
    pub run: Uuid,
    pub workflow: String,
    pub run_status: RunStatus,
    pub run_created_at: i64,
    pub run_ended_at: Option<i64>,
    pub task: TaskRow,
}

/// Store failures. Open-time variants name the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    #[error("cannot migrate database {path}: {detail}")]
    Migrate { path: PathBuf, detail: String },
    #[error("storage error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored data is malformed: {0}")]
    Decode(String),
    #[error("replication: {0}")]
    Replication(String),
    /// Events of one executor for a run another executor owns: only the owner appends.
    #[error("run {run} is owned by {owner}; events of {by} cannot change it")]
    NotOwner {
        run: Uuid,
        owner: String,
        by: String,
    },
    #[error("the store is closed")]
    Closed,
    /// Another executor holds the PostgreSQL database: until replicas share one (planned),
    /// one executor works on a database, as one does on a SQLite file.
    #[error(
        "database {database} is in use by another lariat executor{}; stop it or choose another --db",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    HeldElsewhere {
        database: String,
        holder: Option<String>,
    },
    /// The PostgreSQL connection that holds this executor's claim on the database ended:
    /// another executor may have it now, so this one writes nothing until it has the
    /// claim again ([`Store::reclaim`]).
    #[error(
        "lost the claim on database {database}: {detail}; the executor stops writing until it has it again"
    )]
    ClaimLost { database: String, detail: String },
    /// Another executor took the claim while this one was cut off from the database: the
    /// runs this one holds in memory may have moved on without it.
    #[error(
        "another executor took database {database} while this one was cut off from it (claim {ours}, now {now}); this one stops, as what it holds in memory is stale: start it again"
    )]
    TakenOver {
        database: String,
        ours: i64,
        now: i64,
    },
    /// The database itself refused: a URL where a path goes, a newer schema, a PostgreSQL
    /// server that does not answer or refuses. Its message names it.
    #[error("{0}")]
    Db(DbError),
}

impl StoreError {
    /// Whether this is the database out of reach rather than refusing
    /// ([`lariat_db::is_outage`]): the claim's session gone, the network, the server
    /// restarting. It may pass.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::ClaimLost { .. } => true,
            StoreError::Sql(e) => lariat_db::is_outage(e),
            StoreError::Db(e) => e.is_outage(),
            _ => false,
        }
    }
}

/// A workflow version as stored.
#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    pub name: String,
    pub version: i64,
    pub definition: String,
    pub created_at: i64,
}

/// A task waiting for a maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowWaiter {
    pub window: String,
    pub run_id: Uuid,
    pub step: String,
    /// The fan-out item, for an item.
    pub item: Option<u32>,
    pub item_value: Option<Value>,
    /// When the window may next let it start, as the executor last saw it.
    pub until: Option<i64>,
    /// The executor that owns the run (a site's agent, for a site's run).
    pub owner: String,
}

/// Filter and page for listing runs, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    /// Only the runs of this group.
    pub group: Option<Uuid>,
    /// Only the runs of this executor.
    pub owner: Option<String>,
    /// Only the runs that target this host.
    pub host: Option<String>,
    /// Only runs older than this one (the cursor of the previous page).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// A run and its task rows, as loaded for resume or for an operator verb.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub row: RunRow,
    pub tasks: Vec<TaskRow>,
}

/// Runs being loaded, filled table by table: their rows first, then their tasks and last
/// seqs; [`done`](Self::done) gives them in the order their rows came.
pub(crate) struct Loading {
    runs: HashMap<Uuid, LoadedRun>,
    order: Vec<Uuid>,
}

impl Loading {
    pub(crate) fn new(rows: Vec<RunRow>) -> Loading {
        let order = rows.iter().map(|r| r.id).collect();
        let runs = rows
            .into_iter()
            .map(|row| {
                (
                    row.id,
                    LoadedRun {
                        row,
                        tasks: Vec::new(),
                    },
                )
            })
            .collect();
        Loading { runs, order }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub(crate) fn task(&mut self, run: Uuid, t: TaskRow) {
        if let Some(l) = self.runs.get_mut(&run) {
            l.tasks.push(t);
        }
    }

    pub(crate) fn last_seq(&mut self, run: Uuid, seq: i64) {
        if let Some(l) = self.runs.get_mut(&run) {
            l.row.last_seq = seq;
        }
    }

    pub(crate) fn done(mut self) -> Vec<LoadedRun> {
        self.order
            .into_iter()
            .filter_map(|id| self.runs.remove(&id))
            .collect()
    }
}

/// A durable timer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRow {
    pub run_id: Uuid,
    pub step: String,
    pub item: Option<u32>,
    pub kind: String,
    pub fire_at: i64,
}

/// What a committed batch writes.
#[derive(Debug, Default)]
pub struct WriteSet {
    pub events: Vec<Event>,
    /// Run rows changed by run-level events.
    pub runs: Vec<RunRow>,
    /// Task rows changed by the events, one per task (the latest).
    pub tasks: Vec<(Uuid, TaskRow)>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.runs.is_empty() && self.tasks.is_empty()
    }
}

/// Result of applying remote events to a mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: usize,
    /// Already present (a repeat delivery).
    pub skipped: usize,
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::InUse { path, pid } => StoreError::InUse { path, pid },
            DbError::Locked { path, waited } => StoreError::Locked { path, waited },
            DbError::ReadOnly { path, detail } => StoreError::ReadOnly { path, detail },
            DbError::Corrupt { path, detail } => StoreError::Corrupt { path, detail },
            DbError::Open { path, detail } => StoreError::Open { path, detail },
            DbError::Migrate { path, detail } => StoreError::Migrate { path, detail },
            DbError::Sql(e) => StoreError::Sql(e),
            DbError::Closed => StoreError::Closed,
            other @ (DbError::NotAPath { .. }
            | DbError::NewerSchema { .. }
            | DbError::BadUrl { .. }
            | DbError::Unreachable { .. }
            | DbError::Refused { .. }) => StoreError::Db(other),
        }
    }
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The engine's migrations (`engine/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The engine's tables on PostgreSQL (`engine/migrations/postgres`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

// Every method means the same on both backends; each backend's doc says how it does it.
macro_rules! on_backend {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Open the store: a SQLite file (created if missing, its lock file taken) or a
    /// PostgreSQL database (this executor's claim on it taken), with the engine's tables
    /// brought up to date.
    pub async fn open(opts: StoreOptions) -> Result<Store, StoreError> {
        let backend = match opts {
            StoreOptions::Sqlite(o) => Backend::Sqlite(sqlite::SqliteStore::open(o).await?),
            StoreOptions::Postgres(o) => Backend::Postgres(postgres::PgStore::open(o).await?),
        };
        Ok(Store { backend })
    }

    /// Close the connections and release the lock or claim, so that another executor may
    /// open the database. The store must not be used afterwards.
    pub async fn close(&self) {
        on_backend!(self, s => s.close().await)
    }

    /// Bytes the engine's data takes on disk: the file and its WAL folded in (SQLite), or
    /// the database's size (PostgreSQL).
    pub async fn disk_bytes(&self) -> Result<u64, StoreError> {
        on_backend!(self, s => s.disk_bytes().await)
    }

    /// Whether the store can be read: for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.ping().await)
    }

    /// The executor id kept in this store, created on first use.
    pub async fn executor_id(&self, default: &str) -> Result<String, StoreError> {
        on_backend!(self, s => s.executor_id(default).await)
    }

    /// Commit one group of transitions in one transaction.
    pub async fn commit(&self, set: &WriteSet) -> Result<(), StoreError> {
        on_backend!(self, s => s.commit(set).await)
    }

    /// Whether `e` is the database being out of reach (a PostgreSQL server restarting, a
    /// cut connection), which may pass: the writer then waits and [`reclaim`](Self::reclaim)s
    /// rather than stopping. Never for SQLite, whose file does not go away.
    pub fn is_outage(&self, e: &StoreError) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(_) => e.is_outage(),
        }
    }

    /// After an outage: connect again and take the claim back, provided no other executor
    /// took it meanwhile ([`StoreError::TakenOver`] otherwise). SQLite: nothing to do.
    pub async fn reclaim(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(s) => s.reclaim().await,
        }
    }

    /// Whether `set`, whose commit failed with the connection, was committed after all
    /// (its answer lost on the way back): its last event is in the log.
    pub async fn committed(&self, set: &WriteSet) -> Result<bool, StoreError> {
        let Some(last) = set.events.last() else {
            // Upserts alone: committing them again changes nothing.
            return Ok(false);
        };
        Ok(self
            .events(last.run_id, last.seq - 1, 1)
            .await?
            .first()
            .is_some_and(|e| e.seq == last.seq))
    }

    /// Store a workflow definition as a new version, unless it equals the latest one.
    /// Returns the version and whether it is new.
    pub async fn put_workflow(
        &self,
        name: &str,
        canonical: &str,
    ) -> Result<(i64, bool), StoreError> {
        on_backend!(self, s => s.put_workflow(name, canonical).await)
    }

    /// One version of a workflow, the latest when `version` is none.
    pub async fn workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        on_backend!(self, s => s.workflow(name, version).await)
    }

    /// The latest version number of a workflow, if it has any.
    pub async fn latest_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        on_backend!(self, s => s.latest_version(name).await)
    }

    /// The latest version of every workflow, by name.
    pub async fn workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        on_backend!(self, s => s.workflows().await)
    }

    /// Every version of one workflow, oldest first.
    pub async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        on_backend!(self, s => s.workflow_versions(name).await)
    }

    /// A run's row.
    pub async fn run(&self, id: Uuid) -> Result<Option<RunRow>, StoreError> {
        on_backend!(self, s => s.run(id).await)
    }

    /// A run with this idempotency key, of any owner.
    pub async fn run_by_key(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        on_backend!(self, s => s.run_by_key(key).await)
    }

    /// A run's task rows.
    pub async fn tasks(&self, id: Uuid) -> Result<Vec<TaskRow>, StoreError> {
        on_backend!(self, s => s.tasks(id).await)
    }

    /// The unfinished fan-out items of running runs whose item value is `item`, as
    /// (run, step), newest run first. Uses the `steps_by_item_value` index, so it costs
    /// the same however many runs are live.
    pub async fn open_items(&self, item: &Value) -> Result<Vec<(Uuid, String)>, StoreError> {
        on_backend!(self, s => s.open_items(item).await)
    }

    /// Every fan-out item whose item value is one of `hosts` (a host name), in any run,
    /// with its run's summary: what has been done to those hosts. Uses the
    /// `steps_by_item_value` index, so it costs what those hosts' items cost, however many
    /// runs the store holds.
    pub async fn host_tasks(&self, hosts: &[String]) -> Result<Vec<HostTask>, StoreError> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, s => s.host_tasks(hosts).await)
    }

    /// The steps of `runs` that do not fan out (one row per step), as (run, step).
    pub async fn run_level_tasks(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, TaskRow)>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, s => s.run_level_tasks(runs).await)
    }

    /// Of `runs`, those with tasks between attempts: (run, tasks retrying, the earliest
    /// next attempt), so a list can tell a run that is retrying from one that is running.
    pub async fn retrying(&self, runs: &[Uuid]) -> Result<Vec<(Uuid, i64, i64)>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, s => s.retrying(runs).await)
    }

    /// Runs that pass the filter, newest first, one page (of 1 to 1,000).
    pub async fn list_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        let q = RunQuery {
            limit: q.limit.clamp(1, 1000),
            ..q.clone()
        };
        on_backend!(self, s => s.list_runs(&q).await)
    }

    /// Count of runs by status.
    pub async fn run_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        on_backend!(self, s => s.run_counts().await)
    }

    /// Unfinished runs (assigned ones included) by owner.
    pub async fn active_runs_by_owner(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        on_backend!(self, s => s.active_runs_by_owner().await)
    }

    /// Tasks waiting for maintenance windows, the window named `window` only when given:
    /// at most `limit`, by window and run.
    pub async fn window_waiters(
        &self,
        window: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WindowWaiter>, StoreError> {
        on_backend!(self, s => s.window_waiters(window, limit.clamp(1, 100_000)).await)
    }

    /// A run's events with `seq > after`, oldest first.
    pub async fn events(&self, id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        on_backend!(self, s => s.events(id, after, limit.clamp(1, 10_000)).await)
    }

    /// Events written by `owner` after the cursor `after_owner_seq`, in owner order: what a
    /// mirror pulls to follow that owner.
    pub async fn events_after(
        &self,
        owner: &str,
        after_owner_seq: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        on_backend!(self, s => s.events_after(owner, after_owner_seq, limit.clamp(1, 10_000)).await)
    }

    /// The highest owner_seq applied from `owner`, 0 if none: where a mirror resumes.
    pub async fn replica_cursor(&self, owner: &str) -> Result<i64, StoreError> {
        on_backend!(self, s => s.replica_cursor(owner).await)
    }

    /// Highest owner_seq written by `owner`.
    pub async fn max_owner_seq(&self, owner: &str) -> Result<i64, StoreError> {
        on_backend!(self, s => s.max_owner_seq(owner).await)
    }

    /// Every run of `owner` the executor keeps working on, with its tasks and last seq.
    pub async fn load_live(&self, owner: &str) -> Result<Vec<LoadedRun>, StoreError> {
        on_backend!(self, s => s.load_where(owner, None).await)
    }

    /// One run of `owner` with its tasks, whatever its status.
    pub async fn load_run(&self, owner: &str, id: Uuid) -> Result<Option<LoadedRun>, StoreError> {
        Ok(on_backend!(self, s => s.load_where(owner, Some(id)).await)?.pop())
    }

    /// Every durable timer of `owner`'s runs.
    pub async fn timers(&self, owner: &str) -> Result<Vec<TimerRow>, StoreError> {
        on_backend!(self, s => s.timers(owner).await)
    }

    /// Apply events received from other owners, idempotently: events already present are
    /// skipped, rows are rebuilt with the same [`apply`] the owner used. Events of one run
    /// must arrive in seq order without gaps; a gap stops that run with an error after
    /// what came before it is applied.
    pub async fn apply_remote(
        &self,
        local_owner: &str,
        events: &[Event],
    ) -> Result<ApplyReport, StoreError> {
        let done = self.apply_remote_batch(local_owner, events).await?;
        match done.gap {
            Some(g) => Err(StoreError::Replication(g)),
            None => Ok(done.report),
        }
    }

    /// [`apply_remote`](Self::apply_remote), saying what it applied (to publish once
    /// committed) and where a run's events had a gap, instead of failing on it.
    pub async fn apply_remote_batch(
        &self,
        local_owner: &str,
        events: &[Event],
    ) -> Result<AppliedBatch, StoreError> {
        if let Some(e) = events.iter().find(|e| &*e.owner == local_owner) {
            return Err(StoreError::Replication(format!(
                "event {}#{} is owned by this executor ({local_owner}); only the owner writes its runs",
                e.run_id, e.seq
            )));
        }
        on_backend!(self, s => s.apply_remote(events).await)
    }

    /// Records a run that `owner` (a site agent) will start, before its first event: a
    /// row with status `assigned` and no steps, which its `run_created` replaces.
    pub async fn assign(&self, row: &RunRow) -> Result<(), StoreError> {
        self.commit(&WriteSet {
            runs: vec![row.clone()],
            ..Default::default()
        })
        .await
    }

    /// The runs assigned to `owner` that it has not started yet, oldest first.
    pub async fn assigned(&self, owner: &str) -> Result<Vec<RunRow>, StoreError> {
        on_backend!(self, s => s.assigned(owner).await)
    }

    /// The runs that one submit made, one per site.
    pub async fn group(&self, group: Uuid) -> Result<Vec<RunRow>, StoreError> {
        on_backend!(self, s => s.group(group).await)
    }

    /// The event of `run`'s log that acknowledges queued command `command`: the verb it
    /// carried out (`operator`) or its refusal (`command_refused`).
    pub async fn command_ack(&self, run: Uuid, command: &str) -> Result<Option<Event>, StoreError> {
        on_backend!(self, s => s.command_ack(run, command).await)
    }

    /// Store a version of a workflow as another executor numbered it (an agent mirrors
    /// the centre's versions, so that a run pinned to one means the same everywhere).
    /// Nothing changes when it is there already; a different definition under the same
    /// name and version is refused.
    pub async fn put_workflow_version(&self, w: &StoredWorkflow) -> Result<bool, StoreError> {
        on_backend!(self, s => s.put_workflow_version(w).await)
    }

    /// Every workflow version created at or after `since` (ms), oldest first: what a
    /// mirror of this store's versions asks for.
    pub async fn workflow_versions_since(
        &self,
        since: i64,
    ) -> Result<Vec<StoredWorkflow>, StoreError> {
        on_backend!(self, s => s.workflow_versions_since(since).await)
    }
}

/// A different definition already stored under a version another executor sent.
fn version_differs(w: &StoredWorkflow) -> StoreError {
    StoreError::Replication(format!(
        "workflow {} version {} here differs from the one sent; this store's versions must come from one place",
        w.name, w.version
    ))
}

/// What a batch of remote events writes, worked out from the stored rows of their runs:
/// the same for both backends, which load the rows and commit the result.
pub(crate) struct RemotePlan {
    pub(crate) set: WriteSet,
    /// The highest owner_seq applied per owner: each mirror's new cursor.
    pub(crate) cursors: BTreeMap<Arc<str>, i64>,
    pub(crate) report: ApplyReport,
    pub(crate) gap: Option<String>,
}

/// The runs a batch of remote events touches.
pub(crate) fn remote_runs(events: &[Event]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.run_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Rebuild each run's rows from `mirrors` (the stored rows of runs already known) and its
/// new events, skipping events already applied and stopping a run at a gap.
pub(crate) fn plan_remote(
    events: &[Event],
    mut mirrors: HashMap<Uuid, Mirror>,
) -> Result<RemotePlan, StoreError> {
    let mut by_run: BTreeMap<Uuid, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_run.entry(e.run_id).or_default().push(e);
    }
    let mut report = ApplyReport::default();
    let mut set = WriteSet::default();
    let mut cursors: BTreeMap<Arc<str>, i64> = BTreeMap::new();
    let mut gap = None;
    for (run_id, mut evs) in by_run {
        evs.sort_by_key(|e| e.seq);
        let mut mirror = mirrors
            .remove(&run_id)
            .unwrap_or_else(|| Mirror::blank(RunRow::blank(run_id, evs[0].owner.clone())));
        if let Some(e) = evs.iter().find(|e| e.owner != mirror.run.owner) {
            return Err(StoreError::NotOwner {
                run: run_id,
                owner: mirror.run.owner.to_string(),
                by: e.owner.to_string(),
            });
        }
        for e in evs {
            if e.seq <= mirror.run.last_seq {
                report.skipped += 1;
                continue;
            }
            if e.seq != mirror.run.last_seq + 1 {
                gap.get_or_insert(format!(
                    "run {run_id}: expected seq {} next, got {}",
                    mirror.run.last_seq + 1,
                    e.seq
                ));
                break;
            }
            apply(&mut mirror, e);
            mirror.touched_run |= e.step.is_none();
            if let Some(s) = &e.step {
                mirror.touched.insert((s.to_string(), e.item));
                if let EventKind::Expanded { items } = &e.kind {
                    for i in 0..items.len() {
                        mirror.touched.insert((s.to_string(), Some(i as u32)));
                    }
                }
            }
            let c = cursors.entry(e.owner.clone()).or_insert(0);
            *c = (*c).max(e.owner_seq);
            set.events.push(e.clone());
            report.applied += 1;
        }
        mirror.drain_into(&mut set);
    }
    Ok(RemotePlan {
        set,
        cursors,
        report,
        gap,
    })
}

/// What [`Store::apply_remote_batch`] did.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub report: ApplyReport,
    /// The events applied, in the order committed.
    pub events: Vec<Event>,
    /// The first gap found, if any: that run's later events were not applied.
    pub gap: Option<String>,
}

/// Rows of one run being rebuilt from remote events.
pub(crate) struct Mirror {
    pub(crate) run: RunRow,
    pub(crate) tasks: BTreeMap<(String, Option<u32>), TaskRow>,
    touched: std::collections::BTreeSet<(String, Option<u32>)>,
    touched_run: bool,
}

impl Mirror {
    pub(crate) fn blank(run: RunRow) -> Mirror {
        Mirror {
            run,
            tasks: BTreeMap::new(),
            touched: Default::default(),
            touched_run: false,
        }
    }

    fn drain_into(self, set: &mut WriteSet) {
        let id = self.run.id;
        for key in &self.touched {
            if let Some(t) = self.tasks.get(key) {
                set.tasks.push((id, t.clone()));
            }
        }
        if self.touched_run {
            set.runs.push(self.run);
        }
    }
}

impl Rows for Mirror {
    fn run_row(&mut self) -> &mut RunRow {
        &mut self.run
    }
    fn task_row(&mut self, step: &str, item: Option<u32>) -> &mut TaskRow {
        self.touched.insert((step.to_string(), item));
        self.tasks
            .entry((step.to_string(), item))
            .or_insert_with(|| TaskRow::new(Arc::from(step), item))
    }
}

pub(crate) fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

pub(crate) fn item_to_db(item: Option<u32>) -> i64 {
    item.map(i64::from).unwrap_or(-1)
}

pub(crate) fn item_from_db(v: i64) -> Option<u32> {
    u32::try_from(v).ok()
}

/// The kind of durable timer a task row implies, if any.
pub(crate) fn timer_kind(t: &TaskRow) -> Option<&'static str> {
    t.wake_at?;
    match t.status {
        StepStatus::Retrying => Some("retry"),
        // A window wait's `wake_at` is when the window may next open: the scheduler asks
        // the gate then, and again at once after a restart; no durable timer is needed.
        StepStatus::Waiting if t.waiting_window().is_some() => None,
        StepStatus::Waiting => Some("wait_deadline"),
        StepStatus::Compensating => Some("compensation_retry"),
        _ => None,
    }
}
