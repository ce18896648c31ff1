//! The engine's interface: what the API, the agent and the tests call. The machinery
//! behind it lives in `scheduler`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::action::Actions;
use crate::error::EngineError;
use crate::event::{Actor, Event, RunRow, RunStatus};
use crate::groups::Scheduling;
use crate::model::{self, Format, Workflow};
use crate::request::{NewRun, Registered, ResumeReport, Submitted};
use crate::scheduler::{self, Command, Env, Scheduler, SchedulerStats, Verb};
use crate::store::{ApplyReport, RunQuery, Store, StoreError, StoreOptions, StoredWorkflow};
use crate::view::{RunView, build_view};
use crate::windows::ManualWindows;

/// Settings for [`Engine::start`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub store: StoreOptions,
    /// This executor's id in the event log; kept in the store after first start.
    pub executor_id: String,
    /// Attempts executing at once, across all runs.
    pub max_running: usize,
    /// Restarts in a row that may interrupt one task before it fails.
    pub max_interruptions: u32,
    /// Most events the writer puts in one transaction.
    pub max_batch_events: usize,
    /// Committed events buffered for slow subscribers.
    pub event_buffer: usize,
    /// The time events are stamped with and timers and windows run by.
    pub clock: lariat_db::Clock,
}

impl EngineConfig {
    /// An engine on the SQLite file at `db`.
    pub fn new(db: impl Into<std::path::PathBuf>) -> Self {
        Self::at(StoreOptions::new(db))
    }

    /// An engine on the store `store` names.
    pub fn at(store: StoreOptions) -> Self {
        EngineConfig {
            store,
            executor_id: "central".into(),
            max_running: 512,
            max_interruptions: 20,
            max_batch_events: 8192,
            event_buffer: 4096,
            clock: lariat_db::Clock::system(),
        }
    }
}

struct Inner {
    store: Store,
    actions: Actions,
    owner: Arc<str>,
    inbox: mpsc::UnboundedSender<Command>,
    bus: broadcast::Sender<Arc<Event>>,
    fatal: Arc<OnceLock<String>>,
    outages: Arc<scheduler::Outages>,
    workflows: RwLock<HashMap<(String, i64), Arc<Workflow>>>,
    resume: OnceLock<ResumeReport>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    keys: crate::keys::KeyTurns,
    clock: lariat_db::Clock,
}

/// The durable workflow engine. Cheap to clone; every clone drives the same executor.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Start with manually opened maintenance windows (all closed until opened).
    pub async fn start(config: EngineConfig, actions: Actions) -> Result<Engine, EngineError> {
        Self::start_with(
            config,
            actions,
            Scheduling::manual(Arc::new(ManualWindows::new())),
        )
        .await
    }

    /// Open the store, take over every live run this executor owns, and start executing.
    /// Returns once resumed runs are scheduled again.
    pub async fn start_with(
        config: EngineConfig,
        actions: Actions,
        scheduling: Scheduling,
    ) -> Result<Engine, EngineError> {
        let began = Instant::now();
        let store = Store::open(config.store.clone()).await?;
        let owner: Arc<str> = Arc::from(store.executor_id(&config.executor_id).await?);
        let owner_seq = store.max_owner_seq(&owner).await?;
        let live = store.load_live(&owner).await?;
        let timers = store.timers(&owner).await?;

        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (bus, _) = broadcast::channel(config.event_buffer.max(16));
        let fatal = Arc::new(OnceLock::new());
        let outages = Arc::new(scheduler::Outages::default());
        let env = Arc::new(Env {
            actions: actions.clone(),
            gate: scheduling.windows,
            groups: scheduling.groups,
            clock: config.clock,
            max_running: config.max_running.max(1),
            max_interruptions: config.max_interruptions,
        });
        let engine = Engine {
            inner: Arc::new(Inner {
                store: store.clone(),
                actions,
                owner: owner.clone(),
                inbox: inbox_tx.clone(),
                bus: bus.clone(),
                fatal: fatal.clone(),
                outages: outages.clone(),
                workflows: RwLock::new(HashMap::new()),
                resume: OnceLock::new(),
                tasks: Mutex::new(Vec::new()),
                keys: Default::default(),
                clock: config.clock,
            }),
        };

        let mut runs = Vec::with_capacity(live.len());
        for l in live {
            let wf = engine.pinned(&l.row.workflow, l.row.version, false).await?;
            runs.push((l, wf));
        }
        let mut sched = Scheduler::new(env, owner, owner_seq, writer_tx);
        let mut report = sched.resume(runs, timers);
        let writer = tokio::spawn(scheduler::writer(
            store,
            writer_rx,
            bus,
            fatal,
            inbox_tx.clone(),
            config.max_batch_events.max(1),
            outages,
        ));
        let sched = tokio::spawn(sched.run(inbox_rx));
        engine.barrier().await?;
        report.elapsed_ms = began.elapsed().as_secs_f64() * 1000.0;
        let _ = engine.inner.resume.set(report);
        engine
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([writer, sched]);
        Ok(engine)
    }

    /// Wait until everything decided so far is committed.
    async fn barrier(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Barrier { reply: tx })?;
        rx.await.map_err(|_| self.stopped())
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.inner.inbox.send(cmd).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> EngineError {
        EngineError::Stopped(
            self.inner
                .fatal
                .get()
                .cloned()
                .unwrap_or_else(|| "the executor has shut down".into()),
        )
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(scheduler::Reply<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// What start found and did.
    pub fn resume_report(&self) -> ResumeReport {
        self.inner.resume.get().cloned().unwrap_or_default()
    }

    /// This executor's id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn actions(&self) -> &Actions {
        &self.inner.actions
    }

    /// Whether the database is out of reach now: nothing commits until it answers again,
    /// and new runs are refused ([`EngineError::Unavailable`]).
    pub fn store_down(&self) -> bool {
        self.inner
            .outages
            .down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many times the database went out of reach and the executor waited for it.
    pub fn store_outages(&self) -> u64 {
        self.inner
            .outages
            .count
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why the engine stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner.fatal.get().cloned()
    }

    /// Resolves when the executor has stopped, with the reason if it failed.
    pub async fn stopped_reason(&self) -> Option<String> {
        self.inner.inbox.closed().await;
        self.failure()
    }

    /// Committed events, live. Slow receivers see `Lagged` and should re-read the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.bus.subscribe()
    }

    /// Scheduler gauges: live runs, attempts running, ready-queue depth, timers.
    pub async fn stats(&self) -> Result<SchedulerStats, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats { reply: tx })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Ask waiting steps to look at their maintenance windows again.
    pub fn windows_changed(&self) {
        let _ = self.send(Command::WindowsChanged);
    }

    /// Stop executing. Attempts still running are abandoned; the next start records them
    /// as interrupted and runs them again, exactly as after a crash.
    pub async fn shutdown(&self) {
        let _ = self.inner.inbox.send(Command::Shutdown);
        let handles: Vec<_> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.await;
        }
        self.inner.store.close().await;
    }

    // ---- workflows ----------------------------------------------------------------

    /// Validate and store a definition. Each change makes a new version; submitting the
    /// latest definition again changes nothing.
    pub async fn register_workflow(
        &self,
        text: &str,
        format: Format,
    ) -> Result<Registered, EngineError> {
        let wf = model::compile(text, format, 0, &self.inner.actions)?;
        let canonical = Workflow::canonical_json(&wf.def);
        if let Ok(def) = serde_json::from_str::<Value>(&canonical) {
            crate::request::refuse_nul(&format!("workflow {}", wf.name), &def)?;
        }
        let (version, created) = self.inner.store.put_workflow(&wf.name, &canonical).await?;
        Ok(Registered {
            name: wf.name,
            version,
            created,
        })
    }

    /// A workflow version, compiled (cached; versions never change). Without a version,
    /// the latest.
    pub async fn workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Arc<Workflow>, EngineError> {
        let unknown = || EngineError::UnknownWorkflow {
            name: name.into(),
            version,
        };
        let v = match version {
            Some(v) => v,
            None => self
                .inner
                .store
                .latest_version(name)
                .await?
                .ok_or_else(unknown)?,
        };
        if let Some(w) = self.cached(name, v) {
            return Ok(w);
        }
        let stored = self
            .inner
            .store
            .workflow(name, Some(v))
            .await?
            .ok_or_else(unknown)?;
        self.compile_stored(stored, true)
    }

    fn cached(&self, name: &str, version: i64) -> Option<Arc<Workflow>> {
        self.inner
            .workflows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(name.to_string(), version))
            .cloned()
    }

    /// The definition a run is pinned to. A stored version that no longer validates (an
    /// action was removed from this build) still loads when `strict` is off, so its runs
    /// resume and fail at that step with a clear error instead of vanishing.
    async fn pinned(
        &self,
        name: &str,
        version: i64,
        strict: bool,
    ) -> Result<Arc<Workflow>, EngineError> {
        if let Some(w) = self.cached(name, version) {
            return Ok(w);
        }
        let stored = self
            .inner
            .store
            .workflow(name, Some(version))
            .await?
            .ok_or_else(|| EngineError::UnknownWorkflow {
                name: name.into(),
                version: Some(version),
            })?;
        self.compile_stored(stored, strict)
    }

    fn compile_stored(
        &self,
        stored: StoredWorkflow,
        strict: bool,
    ) -> Result<Arc<Workflow>, EngineError> {
        let def = model::parse(&stored.definition, Format::Json)?;
        let wf = if strict {
            model::validate(def, stored.version, &self.inner.actions)?
        } else {
            model::validate_shape(def, stored.version)?
        };
        let wf = Arc::new(wf);
        self.inner
            .workflows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((stored.name, stored.version), wf.clone());
        Ok(wf)
    }

    pub async fn workflows(&self) -> Result<Vec<StoredWorkflow>, EngineError> {
        Ok(self.inner.store.workflows().await?)
    }

    pub async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, EngineError> {
        Ok(self.inner.store.workflow_versions(name).await?)
    }

    // ---- runs -----------------------------------------------------------------------

    /// Start a run of a registered workflow, pinned to `version` or the latest. This is
    /// the one way in for a new run: its names, targets and key are checked, a key used
    /// before answers with its first run (whatever the workflow became since), and the
    /// input is checked against the parameters of the version it is pinned to, with
    /// defaults filled in.
    pub async fn submit(&self, run: NewRun, actor: Actor) -> Result<Submitted, EngineError> {
        run.check()?;
        if self.store_down() {
            return Err(EngineError::Unavailable(
                "the database is out of reach; new runs are refused until it answers again (runs under way wait for it)".into(),
            ));
        }
        if run.idempotency_key.is_none() {
            return self.submit_checked(run, actor).await;
        }
        // A keyed submit holds its key's turn until its run is committed, even if the
        // caller goes away meanwhile: a retry must find that run, not start another.
        let me = self.clone();
        tokio::spawn(async move {
            let key = run.idempotency_key.clone().unwrap_or_default();
            let _turn = me.inner.keys.take(&key).await;
            me.submit_checked(run, actor).await
        })
        .await
        .map_err(|e| EngineError::Stopped(format!("a submit failed: {e}")))?
    }

    async fn submit_checked(
        &self,
        mut run: NewRun,
        actor: Actor,
    ) -> Result<Submitted, EngineError> {
        if let Some(id) = run.id
            && self.inner.store.run(id).await?.is_some()
        {
            return Ok(Submitted {
                run_id: id,
                created: false,
            });
        }
        if let Some(key) = &run.idempotency_key
            && let Some(existing) = self.inner.store.run_by_key(key).await?
        {
            return Ok(Submitted {
                run_id: existing.id,
                created: false,
            });
        }
        let wf = self.workflow(&run.workflow, run.version).await?;
        fit_input(&wf, &mut run)?;
        run.version = Some(wf.version);
        self.call(|reply| Command::Submit {
            wf,
            run,
            actor,
            reply,
        })
        .await
    }

    /// Deliver a signal to a waiting step; the payload becomes its output. `item` names the
    /// fan-out item (its host name, or its index) for steps that fan out. A signal from
    /// anyone but [`Actor::system`] is recorded in the run's history as an operator action.
    pub async fn signal(
        &self,
        run: Uuid,
        step: &str,
        item: Option<&str>,
        payload: Value,
        actor: Actor,
    ) -> Result<(), EngineError> {
        crate::request::refuse_nul("the signal's payload", &payload)?;
        let res = self
            .call(|reply| Command::Signal {
                run,
                step: step.into(),
                item: item.map(str::to_string),
                payload,
                actor,
                reply,
            })
            .await;
        match res {
            Err(EngineError::NotLive(id)) => Err(self.not_live_error(id, step, "signal").await),
            other => other,
        }
    }

    async fn not_live_error(&self, id: Uuid, step: &str, verb: &'static str) -> EngineError {
        let row = match self.inner.store.run(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return EngineError::UnknownRun(id),
            Err(e) => return e.into(),
        };
        if verb == "signal" {
            let tasks = self.inner.store.tasks(id).await.unwrap_or_default();
            return match tasks.iter().find(|t| &*t.step == step && t.item.is_none()) {
                Some(t) => EngineError::NotWaiting {
                    run: id,
                    step: step.into(),
                    status: t.status,
                    waiting_for: None,
                },
                None => EngineError::UnknownStep {
                    run: id,
                    step: step.into(),
                },
            };
        }
        if &*row.owner != self.owner() {
            return EngineError::InvalidState {
                run: id,
                verb,
                status: row.status,
                reason: format!(
                    "it is owned by executor '{}'; send the command there",
                    row.owner
                ),
            };
        }
        EngineError::InvalidState {
            run: id,
            verb,
            status: row.status,
            reason: format!("a {} run cannot be changed that way", row.status),
        }
    }

    async fn verb(&self, run: Uuid, verb: Verb, actor: Actor) -> Result<(), EngineError> {
        let name = verb.name();
        let again = verb.clone();
        let again_actor = actor.clone();
        match self
            .call(|reply| Command::Verb {
                run,
                verb,
                actor,
                reply,
            })
            .await
        {
            Err(EngineError::NotLive(id)) => {
                let Some(loaded) = self.inner.store.load_run(self.owner(), id).await? else {
                    return Err(self.not_live_error(id, "", name).await);
                };
                let wf = self
                    .pinned(&loaded.row.workflow, loaded.row.version, false)
                    .await?;
                self.call(|reply| Command::Adopt {
                    loaded: Box::new(loaded),
                    wf,
                    verb: again,
                    actor: again_actor,
                    reply,
                })
                .await
            }
            other => other,
        }
    }

    /// Cancel a run: running attempts are told to stop, nothing more starts.
    pub async fn cancel(&self, run: Uuid, actor: Actor) -> Result<(), EngineError> {
        self.verb(run, Verb::Cancel, actor).await
    }

    /// Start no new attempts until resumed; running ones finish and are recorded.
    pub async fn pause(&self, run: Uuid, actor: Actor) -> Result<(), EngineError> {
        self.verb(run, Verb::Pause, actor).await
    }

    pub async fn resume(&self, run: Uuid, actor: Actor) -> Result<(), EngineError> {
        self.verb(run, Verb::Resume, actor).await
    }

    /// Retry a failed step and everything downstream of it, as a new attempt series;
    /// `input` replaces the step's input from now on.
    pub async fn retry(
        &self,
        run: Uuid,
        step: &str,
        input: Option<Value>,
        actor: Actor,
    ) -> Result<(), EngineError> {
        if let Some(input) = &input {
            crate::request::refuse_nul("the retry's input", input)?;
        }
        self.verb(
            run,
            Verb::Retry {
                step: step.into(),
                input,
            },
            actor,
        )
        .await
    }

    /// Records in `run`'s log that a queued command (`actor.command`) asking for `verb`
    /// was not carried out, and why; works on a finished run too.
    pub async fn refuse(
        &self,
        run: Uuid,
        verb: &str,
        reason: &str,
        actor: Actor,
    ) -> Result<(), EngineError> {
        self.verb(
            run,
            Verb::Refuse {
                verb: verb.into(),
                reason: reason.into(),
            },
            actor,
        )
        .await
    }

    /// Run the compensations of succeeded steps in reverse dependency order.
    pub async fn rollback(&self, run: Uuid, actor: Actor) -> Result<(), EngineError> {
        self.verb(run, Verb::Rollback, actor).await
    }

    pub async fn run_row(&self, id: Uuid) -> Result<RunRow, EngineError> {
        self.inner
            .store
            .run(id)
            .await?
            .ok_or(EngineError::UnknownRun(id))
    }

    /// A run with every step and attempt, as committed.
    pub async fn run_view(&self, id: Uuid) -> Result<RunView, EngineError> {
        let run = self.run_row(id).await?;
        let tasks = self.inner.store.tasks(id).await?;
        let events = self.all_events(id).await?;
        let wf = self.pinned(&run.workflow, run.version, false).await.ok();
        Ok(build_view(run, tasks, &events, wf.as_deref()))
    }

    async fn all_events(&self, id: Uuid) -> Result<Vec<Event>, EngineError> {
        let mut out = Vec::new();
        loop {
            let after = out.last().map(|e: &Event| e.seq).unwrap_or(0);
            let page = self.inner.store.events(id, after, 10_000).await?;
            let done = page.len() < 10_000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    pub async fn list_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>, EngineError> {
        Ok(self.inner.store.list_runs(q).await?)
    }

    /// Tasks waiting for maintenance windows (one window's, when named), at most `limit`;
    /// at the centre, those of site agents' runs too, as replicated.
    pub async fn window_waiters(
        &self,
        window: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::store::WindowWaiter>, EngineError> {
        Ok(self.inner.store.window_waiters(window, limit).await?)
    }

    /// The clock the engine runs by.
    pub fn clock(&self) -> lariat_db::Clock {
        self.inner.clock
    }

    /// A run's events after `after` (a seq), oldest first.
    pub async fn events(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, EngineError> {
        Ok(self.inner.store.events(id, after, limit).await?)
    }

    // ---- replication ----------------------------------------------------------------

    /// Events this executor wrote after `cursor` (an owner_seq), in order.
    pub async fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>, EngineError> {
        Ok(self
            .inner
            .store
            .events_after(self.owner(), cursor, limit)
            .await?)
    }

    /// Mirror runs owned by other executors from their events (idempotent). What is
    /// applied reaches subscribers like this executor's own events, once committed; a
    /// gap in a run's events stops that run's part of the batch with an error after the
    /// rest is applied.
    pub async fn apply_remote(&self, events: &[Event]) -> Result<ApplyReport, EngineError> {
        let done = self
            .inner
            .store
            .apply_remote_batch(self.owner(), events)
            .await?;
        for ev in done.events {
            let _ = self.inner.bus.send(Arc::new(ev));
        }
        match done.gap {
            Some(g) => Err(StoreError::Replication(g).into()),
            None => Ok(done.report),
        }
    }

    /// Records a run that executor `owner` (a site agent) will start: its row, with
    /// status `assigned`, until the run's own events arrive. The run's input is checked
    /// against the version it is pinned to, as a submit's is.
    pub async fn assign(
        &self,
        owner: &str,
        mut run: NewRun,
        actor: &Actor,
    ) -> Result<RunRow, EngineError> {
        run.check()?;
        let wf = self.workflow(&run.workflow, run.version).await?;
        fit_input(&wf, &mut run)?;
        let now = self.inner.clock.now_ms();
        let row = RunRow {
            workflow: wf.name.clone(),
            version: wf.version,
            status: RunStatus::Assigned,
            input: Arc::new(run.input),
            targets: Arc::new(run.targets),
            idempotency_key: run.idempotency_key,
            created_at: now,
            updated_at: now,
            group: run.group,
            ..RunRow::blank(run.id.unwrap_or_else(Uuid::now_v7), Arc::from(owner))
        };
        self.inner.store.assign(&row).await?;
        tracing::info!(run = %row.id, owner, by = %actor.who, "run assigned");
        Ok(row)
    }
}

/// Check `run`'s input against the parameters `wf` declares, filling in defaults.
fn fit_input(wf: &Workflow, run: &mut NewRun) -> Result<(), EngineError> {
    let refused = |problems: Vec<String>| EngineError::InvalidParameters {
        workflow: run.workflow.clone(),
        problems,
    };
    let params = wf
        .parameters
        .as_ref()
        .map_err(|e| refused(e.problems.clone()))?;
    if !params.0.is_empty() {
        run.input = params.apply(&run.input).map_err(|e| refused(e.problems))?;
    }
    Ok(())
}

/// Wait up to `timeout` for a run to reach one of `statuses`, by polling the store.
/// Meant for tests and tools; services should subscribe.
pub async fn wait_for_status(
    engine: &Engine,
    run: Uuid,
    statuses: &[RunStatus],
    timeout: Duration,
) -> Result<RunRow, EngineError> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = engine.run_row(run).await?;
        if statuses.contains(&r.status) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            return Err(EngineError::InvalidState {
                run,
                verb: "wait",
                status: r.status,
                reason: format!("still {} after {timeout:?}", r.status),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
