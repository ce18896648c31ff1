//! The executor's machinery: one scheduler task that owns the state of every live run,
//! and one writer task that commits what the scheduler decided.
//!
//! The scheduler changes state only by emitting events through [`apply`], so its memory
//! always equals the fold of the log. It may run ahead of the disk, because the writer
//! commits batches in the order they were made; but nothing leaves the process (an action
//! starting, a reply to a caller, an event to a subscriber) before its batch is committed.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::action::{Action, Actions, Output, StepContext, StepError};
use crate::engine::{EngineError, NewRun, ResumeReport, Submitted};
use crate::event::{
    Actor, Event, EventKind, Rows, RunRow, RunStatus, StepStatus, TaskRow, WaitFor, apply, now_ms,
};
use crate::model::{ItemSource, Workflow};
use crate::store::{LoadedRun, Store, TimerRow, WriteSet};
use crate::windows::WindowGate;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// A step, or one fan-out item of it, within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskKey {
    step: usize,
    item: Option<u32>,
}

/// Which side of a step an attempt runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Run,
    Compensate,
}

/// An operator verb on a run.
#[derive(Debug, Clone)]
pub(crate) enum Verb {
    Cancel,
    Pause,
    Resume,
    Retry { step: String, input: Option<Value> },
    Rollback,
}

impl Verb {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Verb::Cancel => "cancel",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Retry { .. } => "retry",
            Verb::Rollback => "rollback",
        }
    }
}

pub(crate) enum Command {
    Submit {
        wf: Arc<Workflow>,
        run: NewRun,
        actor: Actor,
        reply: Reply<Submitted>,
    },
    Signal {
        run: Uuid,
        step: String,
        item: Option<String>,
        payload: Value,
        actor: Actor,
        reply: Reply<()>,
    },
    Verb {
        run: Uuid,
        verb: Verb,
        actor: Actor,
        reply: Reply<()>,
    },
    /// Bring a run that is not live back into memory for a verb (rollback of a finished run).
    Adopt {
        loaded: Box<LoadedRun>,
        wf: Arc<Workflow>,
        verb: Verb,
        actor: Actor,
        reply: Reply<()>,
    },
    Done {
        run: Uuid,
        key: TaskKey,
        attempt: u32,
        phase: Phase,
        result: Result<Output, StepError>,
    },
    WindowsChanged,
    Stats {
        reply: oneshot::Sender<SchedulerStats>,
    },
    /// Answered once everything decided before it is committed.
    Barrier {
        reply: oneshot::Sender<()>,
    },
    Shutdown,
}

/// A point-in-time view of the scheduler, for metrics.
#[derive(Debug, Clone, Default)]
pub struct SchedulerStats {
    pub live_runs: usize,
    pub running_attempts: usize,
    pub ready_queue: usize,
    pub timers: usize,
}

/// Something to do once a batch is committed.
pub(crate) enum Effect {
    Dispatch(Box<Dispatch>),
    Reply(Box<dyn FnOnce() + Send>),
}

pub(crate) struct Dispatch {
    run: Uuid,
    key: TaskKey,
    attempt: u32,
    phase: Phase,
    action: Option<Arc<dyn Action>>,
    action_name: String,
    /// Call the action's own `compensate` rather than `run`.
    own_compensate: bool,
    ctx: StepContext,
    timeout: Duration,
}

/// A scheduler's decisions, waiting for the writer.
pub(crate) struct Batch {
    set: WriteSet,
    effects: Vec<Effect>,
}

/// Settings the scheduler needs.
pub(crate) struct Env {
    pub actions: Actions,
    pub gate: Arc<dyn WindowGate>,
    pub max_running: usize,
    pub max_interruptions: u32,
}

struct Task {
    row: TaskRow,
    /// Set while an attempt of this task executes.
    token: Option<CancellationToken>,
    /// In the global ready queue.
    queued: bool,
}

impl Task {
    fn new(row: TaskRow) -> Self {
        Task {
            row,
            token: None,
            queued: false,
        }
    }
}

struct Slot {
    task: Task,
    items: Vec<Task>,
}

struct RunState {
    wf: Arc<Workflow>,
    row: RunRow,
    steps: Vec<Slot>,
    /// Attempts of this run whose action is executing.
    inflight: u32,
    /// A step failed for good: start nothing new until an operator retries.
    failing: bool,
}

impl RunState {
    fn new(wf: Arc<Workflow>, row: RunRow, tasks: Vec<TaskRow>) -> Self {
        let mut steps: Vec<Slot> = wf
            .step_names
            .iter()
            .map(|n| Slot {
                task: Task::new(TaskRow::new(n.clone(), None)),
                items: Vec::new(),
            })
            .collect();
        let mut items: Vec<(usize, TaskRow)> = Vec::new();
        for t in tasks {
            let Some(i) = wf.step_index(&t.step) else {
                continue;
            };
            match t.item {
                None => steps[i].task = Task::new(t),
                Some(_) => items.push((i, t)),
            }
        }
        items.sort_by_key(|(i, t)| (*i, t.item));
        for (i, t) in items {
            let idx = t.item.unwrap_or(0) as usize;
            let slot = &mut steps[i];
            while slot.items.len() < idx {
                let n = slot.items.len() as u32;
                slot.items
                    .push(Task::new(TaskRow::new(wf.step_names[i].clone(), Some(n))));
            }
            slot.items.push(Task::new(t));
        }
        RunState {
            wf,
            row,
            steps,
            inflight: 0,
            failing: false,
        }
    }

    fn task(&self, k: TaskKey) -> &Task {
        let s = &self.steps[k.step];
        match k.item {
            None => &s.task,
            Some(i) => &s.items[i as usize],
        }
    }

    fn task_mut(&mut self, k: TaskKey) -> &mut Task {
        let s = &mut self.steps[k.step];
        match k.item {
            None => &mut s.task,
            Some(i) => &mut s.items[i as usize],
        }
    }

    fn has_task(&self, k: TaskKey) -> bool {
        k.step < self.steps.len()
            && k.item
                .is_none_or(|i| (i as usize) < self.steps[k.step].items.len())
    }

    /// Every task key, step tasks and items.
    fn keys(&self) -> Vec<TaskKey> {
        let mut v = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            v.push(TaskKey {
                step: i,
                item: None,
            });
            for j in 0..s.items.len() {
                v.push(TaskKey {
                    step: i,
                    item: Some(j as u32),
                });
            }
        }
        v
    }
}

impl Rows for RunState {
    fn run_row(&mut self) -> &mut RunRow {
        &mut self.row
    }

    fn task_row(&mut self, step: &str, item: Option<u32>) -> &mut TaskRow {
        let i = self
            .wf
            .step_index(step)
            .expect("the scheduler only emits events for steps of the run's workflow");
        let name = self.wf.step_names[i].clone();
        let slot = &mut self.steps[i];
        match item {
            None => &mut slot.task.row,
            Some(j) => {
                while slot.items.len() <= j as usize {
                    let n = slot.items.len() as u32;
                    slot.items
                        .push(Task::new(TaskRow::new(name.clone(), Some(n))));
                }
                &mut slot.items[j as usize].row
            }
        }
    }
}

/// Events and effects gathered since the last flush.
struct Log {
    owner: Arc<str>,
    owner_seq: i64,
    events: Vec<Event>,
    dirty_tasks: Vec<(Uuid, TaskKey)>,
    dirty_seen: HashSet<(Uuid, TaskKey)>,
    dirty_runs: HashSet<Uuid>,
    effects: Vec<Effect>,
}

impl Log {
    fn touch(&mut self, run: Uuid, k: TaskKey) {
        if self.dirty_seen.insert((run, k)) {
            self.dirty_tasks.push((run, k));
        }
    }
}

/// State shared by all runs.
struct Shared {
    env: Arc<Env>,
    timers: BTreeSet<(i64, Uuid, TaskKey)>,
    ready: VecDeque<(Uuid, TaskKey)>,
    running: usize,
    window_waiters: HashSet<(Uuid, TaskKey)>,
    evict: Vec<Uuid>,
}

pub(crate) struct Scheduler {
    runs: HashMap<Uuid, RunState>,
    log: Log,
    sh: Shared,
    /// Idempotency keys of runs created by this process, for submits that raced past the
    /// store lookup; forgotten after `IDEMPOTENCY_MEMORY`.
    recent_keys: HashMap<String, (Uuid, Instant)>,
    writer: mpsc::UnboundedSender<Batch>,
}

const IDEMPOTENCY_MEMORY: Duration = Duration::from_secs(600);
const WINDOW_RECHECK: Duration = Duration::from_secs(1);

/// Per-run context for the state machine: the run plus what all runs share.
struct Cx<'a> {
    run: &'a mut RunState,
    log: &'a mut Log,
    sh: &'a mut Shared,
}

fn item_key(v: &Value, index: u32) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => ["name", "id", "host"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| index.to_string()),
        _ => index.to_string(),
    }
}

impl Cx<'_> {
    fn id(&self) -> Uuid {
        self.run.row.id
    }

    fn emit(
        &mut self,
        key: Option<TaskKey>,
        attempt: Option<u32>,
        error: Option<String>,
        kind: EventKind,
    ) {
        self.log.owner_seq += 1;
        let id = self.id();
        let ev = Event {
            run_id: id,
            seq: self.run.row.last_seq + 1,
            owner: self.log.owner.clone(),
            owner_seq: self.log.owner_seq,
            at: now_ms(),
            step: key.map(|k| self.run.wf.step_names[k.step].clone()),
            item: key.and_then(|k| k.item),
            attempt,
            error,
            kind,
        };
        apply(self.run, &ev);
        match key {
            Some(k) => {
                self.log.touch(id, k);
                if let EventKind::Expanded { items } = &ev.kind {
                    for j in 0..items.len() {
                        self.log.touch(
                            id,
                            TaskKey {
                                step: k.step,
                                item: Some(j as u32),
                            },
                        );
                    }
                }
            }
            None => {
                self.log.dirty_runs.insert(id);
                if matches!(ev.kind, EventKind::RunCreated { .. }) {
                    for i in 0..self.run.steps.len() {
                        self.log.touch(
                            id,
                            TaskKey {
                                step: i,
                                item: None,
                            },
                        );
                    }
                }
            }
        }
        self.log.events.push(ev);
    }

    fn task_event(&mut self, k: TaskKey, kind: EventKind) {
        let a = self.run.task(k).row.attempt;
        self.emit(Some(k), (a > 0).then_some(a), None, kind);
    }

    fn operator(&mut self, verb: &str, actor: &Actor, detail: Value) {
        self.emit(
            None,
            None,
            None,
            EventKind::Operator {
                verb: verb.into(),
                actor: actor.clone(),
                detail,
            },
        );
    }

    fn reply_after_commit<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        self.log.effects.push(Effect::Reply(Box::new(move || {
            let _ = reply.send(Ok(value));
        })));
    }

    fn active(&self) -> bool {
        self.run.row.status == RunStatus::Running && !self.run.failing
    }

    fn is_fanout(&self, i: usize) -> bool {
        self.run.wf.step(i).for_each.is_some()
    }

    /// The step-level task of a fan-out step: it never runs an attempt of its own, its
    /// items do, and `pump_items` settles it.
    fn is_fanout_parent(&self, k: TaskKey) -> bool {
        k.item.is_none() && self.is_fanout(k.step)
    }

    fn deps_satisfied(&self, i: usize) -> bool {
        self.run.wf.deps[i]
            .iter()
            .all(|&d| self.run.steps[d].task.row.status.satisfies())
    }

    fn arm(&mut self, k: TaskKey, at: i64) {
        self.sh.timers.insert((at, self.id(), k));
    }

    /// Move every step that can move.
    fn advance(&mut self) {
        match self.run.row.status {
            RunStatus::RollingBack => return self.advance_rollback(),
            RunStatus::Running | RunStatus::Paused => {}
            _ => return,
        }
        let wf = self.run.wf.clone();
        for &i in &wf.topo {
            match self.run.steps[i].task.row.status {
                StepStatus::Pending if self.deps_satisfied(i) => self.begin_step(i),
                StepStatus::Running if self.is_fanout(i) => self.pump_items(i),
                _ => {}
            }
        }
        self.check_settled();
    }

    /// Start every ready task that can start (after resume, retry or a restart).
    fn kick(&mut self) {
        for k in self.run.keys() {
            if self.is_fanout_parent(k) {
                continue;
            }
            let t = self.run.task(k);
            if t.row.status == StepStatus::Ready && !t.queued && t.token.is_none() {
                self.try_start(k);
            }
        }
    }

    fn begin_step(&mut self, i: usize) {
        let wf = self.run.wf.clone();
        let Some(fe) = &wf.step(i).for_each else {
            return self.try_start(TaskKey {
                step: i,
                item: None,
            });
        };
        let items: Vec<Value> = if !self.run.steps[i].items.is_empty() {
            // A retried fan-out keeps its items; those that succeeded stay done.
            self.run.steps[i]
                .items
                .iter()
                .map(|t| t.row.item_value.clone().unwrap_or(Value::Null))
                .collect()
        } else {
            match &fe.over {
                ItemSource::Targets => self
                    .run
                    .row
                    .targets
                    .iter()
                    .map(|t| Value::String(t.clone()))
                    .collect(),
                ItemSource::List(v) => v.clone(),
            }
        };
        let k = TaskKey {
            step: i,
            item: None,
        };
        if items.is_empty() {
            return self.task_event(
                k,
                EventKind::Skipped {
                    reason: "for_each has no items".into(),
                },
            );
        }
        self.task_event(k, EventKind::Expanded { items });
        self.pump_items(i);
    }

    /// Start items of a fan-out step up to `max_parallel`, and settle the step when its
    /// items are done.
    fn pump_items(&mut self, i: usize) {
        let wf = self.run.wf.clone();
        let fe = wf
            .step(i)
            .for_each
            .as_ref()
            .expect("pump_items is only called on fan-out steps");
        let max_parallel = fe.max_parallel.unwrap_or(u32::MAX) as usize;
        let count = |run: &RunState, f: &dyn Fn(StepStatus) -> bool| {
            run.steps[i]
                .items
                .iter()
                .filter(|t| f(t.row.status))
                .count()
        };
        let in_progress = |s: StepStatus| {
            matches!(
                s,
                StepStatus::Ready
                    | StepStatus::Running
                    | StepStatus::Waiting
                    | StepStatus::Retrying
            )
        };
        let lost = |s: StepStatus| matches!(s, StepStatus::Failed | StepStatus::Cancelled);
        let failed = count(self.run, &lost);
        let over = failed > fe.max_failures as usize;
        let mut busy = count(self.run, &in_progress);
        if !over {
            let n = self.run.steps[i].items.len();
            for j in 0..n {
                if busy >= max_parallel {
                    break;
                }
                let k = TaskKey {
                    step: i,
                    item: Some(j as u32),
                };
                if self.run.task(k).row.status == StepStatus::Pending {
                    self.try_start(k);
                    busy += 1;
                }
            }
        }
        let busy = count(self.run, &in_progress);
        let pending = count(self.run, &|s| s == StepStatus::Pending);
        if busy > 0 || (pending > 0 && !over) {
            return;
        }
        let k = TaskKey {
            step: i,
            item: None,
        };
        let items = &self.run.steps[i].items;
        if over {
            let (first_key, first_err) = items
                .iter()
                .enumerate()
                .find(|(_, t)| lost(t.row.status))
                .map(|(j, t)| {
                    (
                        item_key(t.row.item_value.as_ref().unwrap_or(&Value::Null), j as u32),
                        t.row
                            .error
                            .clone()
                            .unwrap_or_else(|| t.row.status.to_string()),
                    )
                })
                .unwrap_or_default();
            let msg = format!(
                "{failed} of {} items failed (max_failures {}); first: {first_key}: {first_err}",
                items.len(),
                fe.max_failures
            );
            self.emit(Some(k), None, Some(msg), EventKind::Failed);
            self.run.failing = true;
        } else {
            let output = Value::Array(
                items
                    .iter()
                    .map(|t| t.row.output.clone().unwrap_or(Value::Null))
                    .collect(),
            );
            self.task_event(k, EventKind::Succeeded { output });
        }
    }

    fn try_start(&mut self, k: TaskKey) {
        let now = now_ms();
        if !self.active() {
            if self.run.task(k).row.status != StepStatus::Ready {
                self.task_event(k, EventKind::Ready);
            }
            return;
        }
        let wf = self.run.wf.clone();
        if let Some(w) = &wf.step(k.step).window
            && !self.sh.env.gate.is_open(w, now)
        {
            let t = &self.run.task(k).row;
            let already = t.status == StepStatus::Waiting
                && matches!(&t.waiting_for, Some(WaitFor::Window { window }) if window == w);
            if !already {
                self.task_event(
                    k,
                    EventKind::Waiting {
                        wait: WaitFor::Window { window: w.clone() },
                        until: None,
                    },
                );
            }
            self.sh.window_waiters.insert((self.id(), k));
            return;
        }
        if self.sh.running >= self.sh.env.max_running {
            if self.run.task(k).row.status != StepStatus::Ready {
                self.task_event(k, EventKind::Ready);
            }
            let id = self.id();
            let t = self.run.task_mut(k);
            if !t.queued {
                t.queued = true;
                self.sh.ready.push_back((id, k));
            }
            return;
        }
        self.start_attempt(k, Phase::Run);
    }

    fn step_input(&self, k: TaskKey) -> Value {
        let def = self.run.wf.step(k.step);
        self.run.steps[k.step]
            .task
            .row
            .input
            .clone()
            .unwrap_or_else(|| def.input.clone())
    }

    fn start_attempt(&mut self, k: TaskKey, phase: Phase) {
        let attempt = self.run.task(k).row.attempt + 1;
        let kind = match phase {
            Phase::Run => EventKind::Started,
            Phase::Compensate => EventKind::Compensating,
        };
        self.emit(Some(k), Some(attempt), None, kind);
        let token = CancellationToken::new();
        {
            let t = self.run.task_mut(k);
            t.token = Some(token.clone());
            t.queued = false;
        }
        self.run.inflight += 1;
        self.sh.running += 1;

        let def = self.run.wf.step(k.step);
        let (action_name, input, own_compensate, undoing) = match phase {
            Phase::Run => (def.action.clone(), self.step_input(k), false, None),
            Phase::Compensate => {
                let undoing = self.run.task(k).row.output.clone();
                match &def.compensation {
                    Some(c) => (c.action.clone(), c.input.clone(), false, undoing),
                    None => (def.action.clone(), self.step_input(k), true, undoing),
                }
            }
        };
        let needs = self.run.wf.deps[k.step]
            .iter()
            .map(|&d| {
                (
                    self.run.wf.step_names[d].to_string(),
                    self.run.steps[d]
                        .task
                        .row
                        .output
                        .clone()
                        .unwrap_or(Value::Null),
                )
            })
            .collect();
        let item = k.item.and_then(|_| self.run.task(k).row.item_value.clone());
        let step = self.run.wf.step_names[k.step].clone();
        let item_part = match (k.item, &item) {
            (Some(j), Some(v)) => format!("[{}]", item_key(v, j)),
            _ => String::new(),
        };
        let suffix = if phase == Phase::Compensate {
            "/compensate"
        } else {
            ""
        };
        let ctx = StepContext {
            run_id: self.id(),
            workflow: Arc::from(self.run.wf.name.as_str()),
            idempotency_key: format!("{}/{step}{item_part}/{attempt}{suffix}", self.id()),
            step,
            item,
            attempt,
            input,
            run_input: self.run.row.input.clone(),
            targets: self.run.row.targets.clone(),
            needs,
            undoing,
            cancel: token,
        };
        let action = self.sh.env.actions.get(&action_name);
        self.log.effects.push(Effect::Dispatch(Box::new(Dispatch {
            run: self.id(),
            key: k,
            attempt,
            phase,
            action,
            action_name,
            own_compensate,
            ctx,
            timeout: def.timeout,
        })));
    }

    fn on_done(
        &mut self,
        k: TaskKey,
        attempt: u32,
        phase: Phase,
        result: Result<Output, StepError>,
    ) {
        self.run.inflight = self.run.inflight.saturating_sub(1);
        if !self.run.has_task(k) {
            return;
        }
        let expect = match phase {
            Phase::Run => StepStatus::Running,
            Phase::Compensate => StepStatus::Compensating,
        };
        {
            let t = self.run.task_mut(k);
            if t.row.status != expect || t.row.attempt != attempt || t.token.is_none() {
                // A cancelled or superseded attempt: its outcome is no longer wanted.
                return self.advance();
            }
            t.token = None;
        }
        match (phase, result) {
            (Phase::Run, Ok(Output::Done(output))) => self.emit(
                Some(k),
                Some(attempt),
                None,
                EventKind::Succeeded { output },
            ),
            (Phase::Run, Ok(Output::AwaitSignal { timeout })) => {
                let wait = timeout.unwrap_or(self.run.wf.step(k.step).timeout);
                let until = now_ms() + wait.as_millis() as i64;
                self.emit(
                    Some(k),
                    Some(attempt),
                    None,
                    EventKind::Waiting {
                        wait: WaitFor::Signal,
                        until: Some(until),
                    },
                );
                self.arm(k, until);
            }
            (Phase::Run, Err(e)) => self.on_error(k, e, Phase::Run),
            (Phase::Compensate, Ok(Output::Done(output))) => self.emit(
                Some(k),
                Some(attempt),
                None,
                EventKind::Compensated { output },
            ),
            (Phase::Compensate, Ok(Output::AwaitSignal { .. })) => self.on_error(
                k,
                StepError::fatal("unsupported", "a compensation cannot wait for a signal"),
                Phase::Compensate,
            ),
            (Phase::Compensate, Err(e)) => self.on_error(k, e, Phase::Compensate),
        }
        self.advance();
    }

    /// An attempt failed: retry it on a durable timer, or fail the task for good.
    fn on_error(&mut self, k: TaskKey, e: StepError, phase: Phase) {
        let policy = &self.run.wf.step(k.step).retry;
        let row = &self.run.task(k).row;
        let attempt = row.attempt;
        let used = row.attempts_used();
        let kind_retries = policy.retry_on.is_empty() || policy.retry_on.contains(&e.kind);
        let text = e.to_string();
        if e.retryable && kind_retries && used < policy.max_attempts {
            let delay = policy.backoff(used, rand::random::<f64>());
            let next_at = now_ms() + delay.as_millis() as i64;
            let kind = match phase {
                Phase::Run => EventKind::Retrying { next_at },
                Phase::Compensate => EventKind::CompensationRetrying { next_at },
            };
            self.emit(Some(k), Some(attempt), Some(text), kind);
            self.arm(k, next_at);
            metrics::counter!("lariat_retries_total").increment(1);
            return;
        }
        let why = if !e.retryable {
            "not retryable".to_string()
        } else if !kind_retries {
            format!("kind '{}' is not in retry_on", e.kind)
        } else {
            format!("attempt {used} of {}, none left", policy.max_attempts)
        };
        let kind = match phase {
            Phase::Run => EventKind::Failed,
            Phase::Compensate => EventKind::CompensationFailed,
        };
        self.emit(
            Some(k),
            Some(attempt),
            Some(format!("{text} ({why})")),
            kind,
        );
        if phase == Phase::Run && k.item.is_none() {
            self.run.failing = true;
        }
    }

    /// End the run if nothing more can happen in it.
    fn check_settled(&mut self) {
        if self.run.row.status != RunStatus::Running || self.run.inflight > 0 {
            return;
        }
        if self.run.steps.iter().all(|s| s.task.row.status.satisfies()) {
            self.emit(None, None, None, EventKind::RunSucceeded);
            self.sh.evict.push(self.id());
            return;
        }
        let failed: Vec<String> = self
            .run
            .steps
            .iter()
            .filter(|s| s.task.row.status == StepStatus::Failed)
            .map(|s| {
                format!(
                    "step '{}' failed: {}",
                    s.task.row.step,
                    s.task.row.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        if failed.is_empty() {
            return;
        }
        let stuck = !self.run.failing
            && !(0..self.run.steps.len()).any(|i| {
                let st = self.run.steps[i].task.row.status;
                matches!(
                    st,
                    StepStatus::Ready
                        | StepStatus::Running
                        | StepStatus::Waiting
                        | StepStatus::Retrying
                ) || (st == StepStatus::Pending && self.deps_satisfied(i))
            });
        if self.run.failing || stuck {
            self.emit(None, None, Some(failed.join("; ")), EventKind::RunFailed);
        }
    }

    fn fire(&mut self, k: TaskKey, at: i64) {
        if !self.run.has_task(k) {
            return;
        }
        let t = &self.run.task(k).row;
        if t.wake_at != Some(at) {
            return;
        }
        match (t.status, &t.waiting_for) {
            (StepStatus::Retrying, _) => self.try_start(k),
            (StepStatus::Waiting, Some(WaitFor::Signal)) => {
                self.on_error(
                    k,
                    StepError::timeout("no signal arrived before the wait deadline"),
                    Phase::Run,
                );
            }
            (StepStatus::Compensating, _) if self.run.task(k).token.is_none() => {
                self.start_attempt(k, Phase::Compensate)
            }
            _ => return,
        }
        self.advance();
    }

    fn find_task(&self, step: &str, item: Option<&str>) -> Result<TaskKey, EngineError> {
        let run = self.id();
        let i = self
            .run
            .wf
            .step_index(step)
            .ok_or_else(|| EngineError::UnknownStep {
                run,
                step: step.into(),
            })?;
        match (self.is_fanout(i), item) {
            (false, None) => Ok(TaskKey {
                step: i,
                item: None,
            }),
            (false, Some(it)) => Err(EngineError::InvalidInput(format!(
                "step '{step}' does not fan out, so it has no item '{it}'"
            ))),
            (true, None) => Err(EngineError::InvalidInput(format!(
                "step '{step}' fans out over items; say which item the signal is for"
            ))),
            (true, Some(it)) => self.run.steps[i]
                .items
                .iter()
                .enumerate()
                .find(|(j, t)| {
                    let v = t.row.item_value.as_ref().unwrap_or(&Value::Null);
                    item_key(v, *j as u32) == it || j.to_string() == it
                })
                .map(|(j, _)| TaskKey {
                    step: i,
                    item: Some(j as u32),
                })
                .ok_or_else(|| EngineError::UnknownItem {
                    run,
                    step: step.into(),
                    item: it.into(),
                }),
        }
    }

    fn signal(
        &mut self,
        step: &str,
        item: Option<&str>,
        payload: Value,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        let k = self.find_task(step, item)?;
        let t = &self.run.task(k).row;
        if !(t.status == StepStatus::Waiting && t.waiting_for == Some(WaitFor::Signal)) {
            return Err(EngineError::NotWaiting {
                run: self.id(),
                step: step.into(),
                status: t.status,
                waiting_for: t.waiting_for.as_ref().map(|w| w.to_string()),
            });
        }
        // Signals from outside are audited like verbs; the engine's own callers are not.
        if !actor.is_system() {
            let detail = match item {
                Some(i) => json!({"step": step, "item": i}),
                None => json!({"step": step}),
            };
            self.operator("signal", actor, detail);
        }
        self.task_event(k, EventKind::Signalled { payload });
        self.advance();
        Ok(())
    }

    fn invalid(&self, verb: &Verb, reason: impl Into<String>) -> EngineError {
        EngineError::InvalidState {
            run: self.id(),
            verb: verb.name(),
            status: self.run.row.status,
            reason: reason.into(),
        }
    }

    fn verb(&mut self, verb: Verb, actor: &Actor) -> Result<(), EngineError> {
        let status = self.run.row.status;
        match &verb {
            Verb::Cancel => {
                if !matches!(
                    status,
                    RunStatus::Running | RunStatus::Paused | RunStatus::Failed
                ) {
                    return Err(self.invalid(&verb, format!("a {status} run cannot be cancelled")));
                }
                self.operator("cancel", actor, Value::Null);
                for k in self.run.keys() {
                    let t = self.run.task_mut(k);
                    if t.row.status.is_settled() {
                        continue;
                    }
                    if let Some(tok) = t.token.take() {
                        tok.cancel();
                    }
                    t.queued = false;
                    self.task_event(k, EventKind::Cancelled);
                }
                self.emit(None, None, None, EventKind::RunCancelled);
                self.sh.evict.push(self.id());
            }
            Verb::Pause => {
                if status != RunStatus::Running {
                    return Err(self.invalid(
                        &verb,
                        format!("only a running run can be paused; this one is {status}"),
                    ));
                }
                self.operator("pause", actor, Value::Null);
                self.emit(None, None, None, EventKind::RunPaused);
            }
            Verb::Resume => {
                if status != RunStatus::Paused {
                    return Err(self.invalid(
                        &verb,
                        format!("only a paused run can be resumed; this one is {status}"),
                    ));
                }
                self.operator("resume", actor, Value::Null);
                self.emit(None, None, None, EventKind::RunResumed);
                self.kick();
                self.advance();
            }
            Verb::Retry { step, input } => {
                if status != RunStatus::Failed {
                    let reason = if status == RunStatus::Running && self.run.failing {
                        format!(
                            "it is still stopping after a failure ({} attempts running); retry once it is failed",
                            self.run.inflight
                        )
                    } else {
                        format!("only a failed run can be retried; this one is {status}")
                    };
                    return Err(self.invalid(&verb, reason));
                }
                let k = self.find_task(step, None).or_else(|e| match e {
                    EngineError::InvalidInput(_) => self
                        .run
                        .wf
                        .step_index(step)
                        .map(|i| TaskKey {
                            step: i,
                            item: None,
                        })
                        .ok_or(e),
                    e => Err(e),
                })?;
                let row = &self.run.task(k).row;
                if row.status != StepStatus::Failed || row.compensating {
                    return Err(EngineError::StepNotFailed {
                        run: self.id(),
                        step: step.clone(),
                        status: row.status,
                    });
                }
                let detail = match input {
                    Some(i) => json!({"step": step, "input": i}),
                    None => json!({"step": step}),
                };
                self.operator("retry", actor, detail);
                self.task_event(
                    k,
                    EventKind::Reset {
                        input: input.clone(),
                    },
                );
                self.reset_items(k.step);
                for d in self.run.wf.downstream(k.step) {
                    let dk = TaskKey {
                        step: d,
                        item: None,
                    };
                    if self.run.task(dk).row.status != StepStatus::Pending {
                        self.task_event(dk, EventKind::Reset { input: None });
                    }
                    self.reset_items(d);
                }
                self.run.failing = false;
                self.emit(None, None, None, EventKind::RunRetried);
                self.kick();
                self.advance();
            }
            Verb::Rollback => {
                let allowed = matches!(
                    status,
                    RunStatus::Failed
                        | RunStatus::Cancelled
                        | RunStatus::Succeeded
                        | RunStatus::CompensationFailed
                );
                if !allowed {
                    let reason = match status {
                        RunStatus::RolledBack => "it is already rolled back".to_string(),
                        RunStatus::RollingBack => "it is already rolling back".to_string(),
                        s => format!(
                            "a {s} run cannot be rolled back; cancel it first or wait for it to fail"
                        ),
                    };
                    return Err(self.invalid(&verb, reason));
                }
                if self.run.inflight > 0 {
                    return Err(self.invalid(
                        &verb,
                        format!("{} attempts are still running", self.run.inflight),
                    ));
                }
                self.operator("rollback", actor, Value::Null);
                self.emit(None, None, None, EventKind::RollbackStarted);
                self.run.failing = false;
                for k in self.run.keys() {
                    let t = &self.run.task(k).row;
                    match t.status {
                        StepStatus::Ready | StepStatus::Waiting | StepStatus::Retrying => {
                            self.run.task_mut(k).queued = false;
                            self.task_event(k, EventKind::Cancelled);
                        }
                        StepStatus::Failed if t.compensating => {
                            // Its dependents were compensated when it first failed; try again.
                            self.start_attempt(k, Phase::Compensate);
                        }
                        _ => {}
                    }
                }
                self.advance_rollback();
            }
        }
        Ok(())
    }

    fn reset_items(&mut self, i: usize) {
        for j in 0..self.run.steps[i].items.len() {
            let k = TaskKey {
                step: i,
                item: Some(j as u32),
            };
            if matches!(
                self.run.task(k).row.status,
                StepStatus::Failed | StepStatus::Cancelled | StepStatus::Ready
            ) {
                self.task_event(k, EventKind::Reset { input: None });
            }
        }
    }

    fn has_compensation(&self, i: usize) -> bool {
        let def = self.run.wf.step(i);
        def.compensation.is_some()
            || self
                .sh
                .env
                .actions
                .get(&def.action)
                .is_some_and(|a| a.compensates())
    }

    /// Compensate succeeded tasks in reverse dependency order: a step is undone only once
    /// everything downstream of it is undone (or had nothing to undo).
    fn advance_rollback(&mut self) {
        let wf = self.run.wf.clone();
        let mut done = vec![false; wf.def.steps.len()];
        let mut busy = false;
        let mut failures = Vec::new();
        for &i in wf.topo.iter().rev() {
            let downstream_done = wf.dependents[i].iter().all(|&d| done[d]);
            let compensable = self.has_compensation(i);
            let keys: Vec<TaskKey> = if self.run.steps[i].items.is_empty() {
                vec![TaskKey {
                    step: i,
                    item: None,
                }]
            } else {
                (0..self.run.steps[i].items.len())
                    .map(|j| TaskKey {
                        step: i,
                        item: Some(j as u32),
                    })
                    .collect()
            };
            let mut step_done = true;
            for k in keys {
                let t = self.run.task(k);
                match t.row.status {
                    StepStatus::Compensating => {
                        step_done = false;
                        busy = true;
                        if t.token.is_none() && t.row.wake_at.is_none() {
                            // Interrupted by a restart.
                            self.start_attempt(k, Phase::Compensate);
                        }
                    }
                    StepStatus::Failed if t.row.compensating => {
                        step_done = false;
                        failures.push(format!(
                            "compensation of step '{}' failed: {}",
                            t.row.step,
                            t.row.error.as_deref().unwrap_or("unknown error")
                        ));
                    }
                    StepStatus::Succeeded if compensable => {
                        step_done = false;
                        if downstream_done {
                            self.start_attempt(k, Phase::Compensate);
                            busy = true;
                        }
                    }
                    _ => {}
                }
            }
            let parent = TaskKey {
                step: i,
                item: None,
            };
            if step_done
                && !self.run.steps[i].items.is_empty()
                && matches!(
                    self.run.task(parent).row.status,
                    StepStatus::Succeeded | StepStatus::Failed
                )
                && self.run.steps[i]
                    .items
                    .iter()
                    .any(|t| t.row.status == StepStatus::Compensated)
            {
                self.task_event(
                    parent,
                    EventKind::Compensated {
                        output: Value::Null,
                    },
                );
            }
            done[i] = downstream_done && step_done;
        }
        if done.iter().all(|d| *d) {
            self.emit(None, None, None, EventKind::RunRolledBack);
            self.sh.evict.push(self.id());
        } else if !busy && !failures.is_empty() && self.run.inflight == 0 {
            self.emit(
                None,
                None,
                Some(failures.join("; ")),
                EventKind::RunCompensationFailed,
            );
            self.sh.evict.push(self.id());
        }
    }
}

impl Scheduler {
    pub(crate) fn new(
        env: Arc<Env>,
        owner: Arc<str>,
        owner_seq: i64,
        writer: mpsc::UnboundedSender<Batch>,
    ) -> Self {
        Scheduler {
            runs: HashMap::new(),
            log: Log {
                owner,
                owner_seq,
                events: Vec::new(),
                dirty_tasks: Vec::new(),
                dirty_seen: HashSet::new(),
                dirty_runs: HashSet::new(),
                effects: Vec::new(),
            },
            sh: Shared {
                env,
                timers: BTreeSet::new(),
                ready: VecDeque::new(),
                running: 0,
                window_waiters: HashSet::new(),
                evict: Vec::new(),
            },
            recent_keys: HashMap::new(),
            writer,
        }
    }

    fn cx(&mut self, id: Uuid) -> Option<Cx<'_>> {
        let run = self.runs.get_mut(&id)?;
        Some(Cx {
            run,
            log: &mut self.log,
            sh: &mut self.sh,
        })
    }

    /// Take over live runs loaded from the store: attempts that were executing when the
    /// process stopped are recorded as interrupted and started again; timers and waits
    /// are re-armed. Returns what was done.
    pub(crate) fn resume(
        &mut self,
        runs: Vec<(LoadedRun, Arc<Workflow>)>,
        timers: Vec<TimerRow>,
    ) -> ResumeReport {
        let mut report = ResumeReport {
            runs: runs.len(),
            ..Default::default()
        };
        for (loaded, wf) in runs {
            let id = loaded.row.id;
            self.adopt(loaded, wf);
            let max = self.sh.env.max_interruptions;
            let Some(mut cx) = self.cx(id) else { continue };
            for k in cx.run.keys() {
                if cx.is_fanout_parent(k) {
                    continue;
                }
                let t = &cx.run.task(k).row;
                let restart = match t.status {
                    StepStatus::Running => true,
                    StepStatus::Compensating => t.wake_at.is_none(),
                    _ => false,
                };
                if !restart {
                    continue;
                }
                report.interrupted += 1;
                cx.task_event(k, EventKind::Interrupted);
                let t = &cx.run.task(k).row;
                if t.interruptions > max && !t.compensating {
                    let msg = format!(
                        "interrupted by {} restarts in a row; not trying again (max_interruptions {max})",
                        t.interruptions
                    );
                    let a = t.attempt;
                    cx.emit(Some(k), Some(a), Some(msg), EventKind::Failed);
                    if k.item.is_none() {
                        cx.run.failing = true;
                    }
                }
            }
            match cx.run.row.status {
                RunStatus::Running | RunStatus::Paused => {
                    cx.kick();
                    cx.advance();
                }
                RunStatus::RollingBack => cx.advance_rollback(),
                _ => {}
            }
        }
        for t in timers {
            let Some(run) = self.runs.get(&t.run_id) else {
                continue;
            };
            if let Some(i) = run.wf.step_index(&t.step) {
                let k = TaskKey {
                    step: i,
                    item: t.item,
                };
                if run.has_task(k) && run.task(k).row.wake_at == Some(t.fire_at) {
                    self.sh.timers.insert((t.fire_at, t.run_id, k));
                    report.timers += 1;
                }
            }
        }
        report
    }

    /// Put a loaded run in memory, without emitting anything.
    fn adopt(&mut self, loaded: LoadedRun, wf: Arc<Workflow>) {
        let id = loaded.row.id;
        let mut run = RunState::new(wf, loaded.row, loaded.tasks);
        run.failing = run.row.status == RunStatus::Running
            && run
                .steps
                .iter()
                .any(|s| s.task.row.status == StepStatus::Failed);
        for k in run.keys() {
            let t = &run.task(k).row;
            if matches!(t.waiting_for, Some(WaitFor::Window { .. })) {
                self.sh.window_waiters.insert((id, k));
            }
        }
        self.runs.insert(id, run);
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                wf,
                run,
                actor,
                reply,
            } => self.submit(wf, run, actor, reply),
            Command::Signal {
                run,
                step,
                item,
                payload,
                actor,
                reply,
            } => {
                let Some(mut cx) = self.cx(run) else {
                    let _ = reply.send(Err(EngineError::NotLive(run)));
                    return;
                };
                match cx.signal(&step, item.as_deref(), payload, &actor) {
                    Ok(()) => cx.reply_after_commit(reply, ()),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Verb {
                run,
                verb,
                actor,
                reply,
            } => {
                let Some(mut cx) = self.cx(run) else {
                    let _ = reply.send(Err(EngineError::NotLive(run)));
                    return;
                };
                match cx.verb(verb, &actor) {
                    Ok(()) => cx.reply_after_commit(reply, ()),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Adopt {
                loaded,
                wf,
                verb,
                actor,
                reply,
            } => {
                let id = loaded.row.id;
                if !self.runs.contains_key(&id) {
                    self.adopt(*loaded, wf);
                }
                let mut cx = self.cx(id).expect("adopted just above");
                let res = cx.verb(verb, &actor);
                let keep = cx.run.row.status.is_live();
                match res {
                    Ok(()) => cx.reply_after_commit(reply, ()),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        if !keep {
                            self.sh.evict.push(id);
                        }
                    }
                }
            }
            Command::Done {
                run,
                key,
                attempt,
                phase,
                result,
            } => {
                self.sh.running = self.sh.running.saturating_sub(1);
                if let Some(mut cx) = self.cx(run) {
                    cx.on_done(key, attempt, phase, result);
                }
            }
            Command::WindowsChanged => self.recheck_windows(),
            Command::Stats { reply } => {
                let _ = reply.send(SchedulerStats {
                    live_runs: self.runs.len(),
                    running_attempts: self.sh.running,
                    ready_queue: self.sh.ready.len(),
                    timers: self.sh.timers.len(),
                });
            }
            Command::Barrier { reply } => {
                self.log.effects.push(Effect::Reply(Box::new(move || {
                    let _ = reply.send(());
                })))
            }
            Command::Shutdown => {}
        }
    }

    fn submit(&mut self, wf: Arc<Workflow>, new: NewRun, actor: Actor, reply: Reply<Submitted>) {
        if let Some(key) = &new.idempotency_key
            && let Some((id, at)) = self.recent_keys.get(key)
            && at.elapsed() < IDEMPOTENCY_MEMORY
        {
            let (id, log) = (*id, &mut self.log);
            log.effects.push(Effect::Reply(Box::new(move || {
                let _ = reply.send(Ok(Submitted {
                    run_id: id,
                    created: false,
                }));
            })));
            return;
        }
        let id = Uuid::now_v7();
        if let Some(key) = &new.idempotency_key {
            if self.recent_keys.len() > 100_000 {
                self.recent_keys
                    .retain(|_, (_, at)| at.elapsed() < IDEMPOTENCY_MEMORY);
            }
            self.recent_keys.insert(key.clone(), (id, Instant::now()));
        }
        let row = RunRow::blank(id, self.log.owner.clone());
        self.runs
            .insert(id, RunState::new(wf.clone(), row, Vec::new()));
        let mut cx = self.cx(id).expect("inserted just above");
        cx.emit(
            None,
            None,
            None,
            EventKind::RunCreated {
                workflow: wf.name.clone(),
                version: wf.version,
                input: Arc::new(new.input),
                targets: Arc::new(new.targets),
                steps: wf.step_names.clone(),
                idempotency_key: new.idempotency_key,
            },
        );
        if !actor.is_system() {
            cx.operator("submit", &actor, Value::Null);
        }
        cx.advance();
        cx.reply_after_commit(
            reply,
            Submitted {
                run_id: id,
                created: true,
            },
        );
    }

    fn recheck_windows(&mut self) {
        if self.sh.window_waiters.is_empty() {
            return;
        }
        let now = now_ms();
        let waiters: Vec<(Uuid, TaskKey)> = self.sh.window_waiters.iter().copied().collect();
        let gate = self.sh.env.gate.clone();
        for (id, k) in waiters {
            let Some(mut cx) = self.cx(id) else {
                self.sh.window_waiters.remove(&(id, k));
                continue;
            };
            let t = &cx.run.task(k).row;
            let window = match (&t.status, &t.waiting_for) {
                (StepStatus::Waiting, Some(WaitFor::Window { window })) => window.clone(),
                _ => {
                    cx.sh.window_waiters.remove(&(id, k));
                    continue;
                }
            };
            if gate.is_open(&window, now) {
                cx.sh.window_waiters.remove(&(id, k));
                cx.try_start(k);
                cx.advance();
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        while let Some(&(at, id, k)) = self.sh.timers.first() {
            if at > now {
                break;
            }
            self.sh.timers.pop_first();
            if let Some(mut cx) = self.cx(id) {
                cx.fire(k, at);
            }
        }
    }

    /// Start queued tasks while there are free attempt slots.
    fn fill_slots(&mut self) {
        while self.sh.running < self.sh.env.max_running {
            let Some((id, k)) = self.sh.ready.pop_front() else {
                break;
            };
            let Some(mut cx) = self.cx(id) else { continue };
            if !cx.run.has_task(k) {
                continue;
            }
            let t = cx.run.task_mut(k);
            if !t.queued {
                continue;
            }
            t.queued = false;
            if t.row.status == StepStatus::Ready {
                cx.try_start(k);
                cx.advance();
            }
        }
    }

    /// Hand what was decided since the last flush to the writer.
    fn flush(&mut self) -> bool {
        if self.log.events.is_empty() && self.log.effects.is_empty() {
            self.evict();
            return true;
        }
        let mut set = WriteSet {
            events: std::mem::take(&mut self.log.events),
            ..Default::default()
        };
        for id in self.log.dirty_runs.drain() {
            if let Some(r) = self.runs.get(&id) {
                set.runs.push(r.row.clone());
            }
        }
        self.log.dirty_seen.clear();
        for (id, k) in self.log.dirty_tasks.drain(..) {
            if let Some(r) = self.runs.get(&id)
                && r.has_task(k)
            {
                set.tasks.push((id, r.task(k).row.clone()));
            }
        }
        let batch = Batch {
            set,
            effects: std::mem::take(&mut self.log.effects),
        };
        self.evict();
        self.writer.send(batch).is_ok()
    }

    fn evict(&mut self) {
        for id in self.sh.evict.drain(..) {
            if let Some(r) = self.runs.get(&id)
                && !r.row.status.is_live()
            {
                self.runs.remove(&id);
            }
        }
    }

    /// The scheduler's loop: run until shut down or until the writer stops.
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        const DRAIN: usize = 4096;
        loop {
            let next_timer = self.sh.timers.first().map(|(at, _, _)| *at);
            let sleep_ms = match (next_timer, self.sh.window_waiters.is_empty()) {
                (Some(at), true) => (at - now_ms()).max(0) as u64,
                (Some(at), false) => {
                    ((at - now_ms()).max(0) as u64).min(WINDOW_RECHECK.as_millis() as u64)
                }
                (None, false) => WINDOW_RECHECK.as_millis() as u64,
                (None, true) => 3_600_000,
            };
            let mut stop = false;
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(Command::Shutdown) | None => stop = true,
                    Some(cmd) => self.handle(cmd),
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    if !self.sh.window_waiters.is_empty() {
                        self.recheck_windows();
                    }
                }
            }
            // Take whatever else is queued, so that one batch carries it all.
            let mut n = 0;
            while !stop && n < DRAIN {
                match inbox.try_recv() {
                    Ok(Command::Shutdown) => stop = true,
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
                n += 1;
            }
            self.fire_due_timers();
            self.fill_slots();
            if !self.flush() || stop {
                break;
            }
        }
    }
}

/// Commit batches in order, merging whatever is queued into one transaction, then run
/// their effects.
pub(crate) async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    bus: broadcast::Sender<Arc<Event>>,
    fatal: Arc<OnceLock<String>>,
    inbox: mpsc::UnboundedSender<Command>,
    max_events: usize,
) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        let mut events = batches[0].set.events.len();
        while events < max_events {
            match rx.try_recv() {
                Ok(b) => {
                    events += b.set.events.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let (set, effects) = merge(batches);
        let started = Instant::now();
        if !set.is_empty()
            && let Err(e) = store.commit(&set).await
        {
            let msg = format!("commit failed, executor stopped: {e}");
            tracing::error!("{msg}");
            let _ = fatal.set(msg);
            // Dropping the effects drops their reply channels: callers see the stop.
            let _ = inbox.send(Command::Shutdown);
            return;
        }
        metrics::histogram!("lariat_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("lariat_commit_batch_events").record(set.events.len() as f64);
        metrics::counter!("lariat_events_total").increment(set.events.len() as u64);
        for ev in set.events {
            let _ = bus.send(Arc::new(ev));
        }
        for eff in effects {
            match eff {
                Effect::Reply(f) => f(),
                Effect::Dispatch(d) => {
                    tokio::spawn(execute(*d, inbox.clone()));
                }
            }
        }
    }
}

fn merge(batches: Vec<Batch>) -> (WriteSet, Vec<Effect>) {
    if batches.len() == 1 {
        let b = batches.into_iter().next().expect("one batch");
        return (b.set, b.effects);
    }
    let mut set = WriteSet::default();
    let mut effects = Vec::new();
    let mut task_at: HashMap<(Uuid, Arc<str>, Option<u32>), usize> = HashMap::new();
    let mut run_at: HashMap<Uuid, usize> = HashMap::new();
    for b in batches {
        set.events.extend(b.set.events);
        for r in b.set.runs {
            match run_at.get(&r.id) {
                Some(&i) => set.runs[i] = r,
                None => {
                    run_at.insert(r.id, set.runs.len());
                    set.runs.push(r);
                }
            }
        }
        for (id, t) in b.set.tasks {
            let key = (id, t.step.clone(), t.item);
            match task_at.get(&key) {
                Some(&i) => set.tasks[i] = (id, t),
                None => {
                    task_at.insert(key, set.tasks.len());
                    set.tasks.push((id, t));
                }
            }
        }
        effects.extend(b.effects);
    }
    (set, effects)
}

/// Run one attempt: bounded by the step's timeout, stopped by cancellation, and with a
/// panicking action turned into a failed attempt.
async fn execute(d: Dispatch, inbox: mpsc::UnboundedSender<Command>) {
    let token = d.ctx.cancel.clone();
    let began = Instant::now();
    let result = match d.action {
        None => Err(StepError::fatal(
            "unknown_action",
            format!(
                "action '{}' is not registered in this executor",
                d.action_name
            ),
        )),
        Some(action) => {
            let fut = async {
                if d.own_compensate {
                    action.compensate(d.ctx).await.map(Output::Done)
                } else {
                    action.run(d.ctx).await
                }
            };
            let guarded = AssertUnwindSafe(fut).catch_unwind();
            tokio::select! {
                r = tokio::time::timeout(d.timeout, guarded) => match r {
                    Ok(Ok(r)) => r,
                    Ok(Err(panic)) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        Err(StepError::fatal("panic", format!("action '{}' panicked: {msg}", d.action_name)))
                    }
                    Err(_) => {
                        token.cancel();
                        Err(StepError::timeout(format!(
                            "attempt exceeded the step timeout of {}",
                            humantime::format_duration(d.timeout)
                        )))
                    }
                },
                _ = token.cancelled() => Err(StepError::fatal("cancelled", "attempt cancelled")),
            }
        }
    };
    metrics::histogram!("lariat_step_seconds", "action" => d.action_name.clone())
        .record(began.elapsed().as_secs_f64());
    let _ = inbox.send(Command::Done {
        run: d.run,
        key: d.key,
        attempt: d.attempt,
        phase: d.phase,
        result,
    });
}
