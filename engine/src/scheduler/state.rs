//! What the scheduler holds: each live run's state and tasks, the log of what was decided
//! since the last flush, what all runs share, and the per-run context its state machine
//! works on ([`Cx`]; its jobs are in `advance`, `verbs` and `rollback`).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::action::{Action, Actions, StepContext};
use crate::event::{Actor, Event, EventKind, Rows, RunRow, RunStatus, TaskRow, apply};
use crate::model::Workflow;
use crate::store::WriteSet;
use crate::windows::WindowGate;

use crate::error::EngineError;

/// How the scheduler answers a caller, once what it decided is committed.
pub(crate) type Reply<T> = tokio::sync::oneshot::Sender<Result<T, EngineError>>;

/// A step, or one fan-out item of it, within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskKey {
    pub(crate) step: usize,
    pub(crate) item: Option<u32>,
}

/// Which side of a step an attempt runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Run,
    Compensate,
}

/// Something to do once a batch is committed.
pub(crate) enum Effect {
    Dispatch(Box<Dispatch>),
    Reply(Box<dyn FnOnce() + Send>),
}

pub(crate) struct Dispatch {
    pub(crate) run: Uuid,
    pub(crate) key: TaskKey,
    pub(crate) attempt: u32,
    pub(crate) phase: Phase,
    pub(crate) action: Option<Arc<dyn Action>>,
    pub(crate) action_name: String,
    /// Call the action's own `compensate` rather than `run`.
    pub(crate) own_compensate: bool,
    pub(crate) ctx: StepContext,
    pub(crate) timeout: Duration,
}

/// A scheduler's decisions, waiting for the writer.
pub(crate) struct Batch {
    pub(crate) set: WriteSet,
    pub(crate) effects: Vec<Effect>,
}

/// Settings the scheduler needs.
pub(crate) struct Env {
    pub actions: Actions,
    pub gate: Arc<dyn WindowGate>,
    pub groups: Arc<dyn crate::groups::HostGroups>,
    pub clock: lariat_db::Clock,
    pub max_running: usize,
    pub max_interruptions: u32,
}

pub(crate) struct Task {
    pub(crate) row: TaskRow,
    /// Set while an attempt of this task executes.
    pub(crate) token: Option<CancellationToken>,
    /// In the global ready queue.
    pub(crate) queued: bool,
}

impl Task {
    pub(crate) fn new(row: TaskRow) -> Self {
        Task {
            row,
            token: None,
            queued: false,
        }
    }
}

pub(crate) struct Slot {
    pub(crate) task: Task,
    pub(crate) items: Vec<Task>,
}

pub(crate) struct RunState {
    pub(crate) wf: Arc<Workflow>,
    pub(crate) row: RunRow,
    pub(crate) steps: Vec<Slot>,
    /// Attempts of this run whose action is executing.
    pub(crate) inflight: u32,
    /// A step failed for good: start nothing new until an operator retries.
    pub(crate) failing: bool,
}

impl RunState {
    pub(crate) fn new(wf: Arc<Workflow>, row: RunRow, tasks: Vec<TaskRow>) -> Self {
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

    pub(crate) fn task(&self, k: TaskKey) -> &Task {
        let s = &self.steps[k.step];
        match k.item {
            None => &s.task,
            Some(i) => &s.items[i as usize],
        }
    }

    pub(crate) fn task_mut(&mut self, k: TaskKey) -> &mut Task {
        let s = &mut self.steps[k.step];
        match k.item {
            None => &mut s.task,
            Some(i) => &mut s.items[i as usize],
        }
    }

    pub(crate) fn has_task(&self, k: TaskKey) -> bool {
        k.step < self.steps.len()
            && k.item
                .is_none_or(|i| (i as usize) < self.steps[k.step].items.len())
    }

    /// Every task key, step tasks and items.
    pub(crate) fn keys(&self) -> Vec<TaskKey> {
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
pub(crate) struct Log {
    pub(crate) owner: Arc<str>,
    pub(crate) owner_seq: i64,
    pub(crate) events: Vec<Event>,
    pub(crate) dirty_tasks: Vec<(Uuid, TaskKey)>,
    pub(crate) dirty_seen: HashSet<(Uuid, TaskKey)>,
    pub(crate) dirty_runs: HashSet<Uuid>,
    pub(crate) effects: Vec<Effect>,
}

impl Log {
    pub(crate) fn touch(&mut self, run: Uuid, k: TaskKey) {
        if self.dirty_seen.insert((run, k)) {
            self.dirty_tasks.push((run, k));
        }
    }
}

/// Tasks waiting for their window, each with when to ask the gate again.
#[derive(Default)]
pub(crate) struct WindowWaiters {
    by_time: BTreeSet<(i64, Uuid, TaskKey)>,
    at: HashMap<(Uuid, TaskKey), i64>,
}

impl WindowWaiters {
    /// Ask again for `(run, k)` at `at` (replacing an earlier time).
    pub(crate) fn insert(&mut self, run: Uuid, k: TaskKey, at: i64) {
        if let Some(old) = self.at.insert((run, k), at) {
            self.by_time.remove(&(old, run, k));
        }
        self.by_time.insert((at, run, k));
    }

    /// When the next task is due.
    pub(crate) fn next_at(&self) -> Option<i64> {
        self.by_time.first().map(|(at, _, _)| *at)
    }

    /// Takes the tasks due at `now`, or all of them.
    pub(crate) fn take(&mut self, now: Option<i64>) -> Vec<(Uuid, TaskKey)> {
        let mut out = Vec::new();
        while let Some(&(at, run, k)) = self.by_time.first() {
            if now.is_some_and(|n| at > n) {
                break;
            }
            self.by_time.pop_first();
            self.at.remove(&(run, k));
            out.push((run, k));
        }
        out
    }
}

/// State shared by all runs.
pub(crate) struct Shared {
    pub(crate) env: Arc<Env>,
    pub(crate) timers: BTreeSet<(i64, Uuid, TaskKey)>,
    pub(crate) ready: VecDeque<(Uuid, TaskKey)>,
    pub(crate) running: usize,
    pub(crate) window_waiters: WindowWaiters,
    pub(crate) evict: Vec<Uuid>,
}

/// Per-run context for the state machine: the run plus what all runs share.
pub(crate) struct Cx<'a> {
    pub(crate) run: &'a mut RunState,
    pub(crate) log: &'a mut Log,
    pub(crate) sh: &'a mut Shared,
}

pub(crate) fn item_key(v: &Value, index: u32) -> String {
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
    pub(crate) fn id(&self) -> Uuid {
        self.run.row.id
    }

    pub(crate) fn emit(
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
            at: self.sh.env.clock.now_ms(),
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

    pub(crate) fn task_event(&mut self, k: TaskKey, kind: EventKind) {
        let a = self.run.task(k).row.attempt;
        self.emit(Some(k), (a > 0).then_some(a), None, kind);
    }

    pub(crate) fn operator(&mut self, verb: &str, actor: &Actor, detail: Value) {
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

    pub(crate) fn reply_after_commit<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        self.log.effects.push(Effect::Reply(Box::new(move || {
            let _ = reply.send(Ok(value));
        })));
    }

    pub(crate) fn active(&self) -> bool {
        self.run.row.status == RunStatus::Running && !self.run.failing
    }

    pub(crate) fn is_fanout(&self, i: usize) -> bool {
        self.run.wf.step(i).for_each.is_some()
    }

    /// The step-level task of a fan-out step: it never runs an attempt of its own, its
    /// items do, and `pump_items` settles it.
    pub(crate) fn is_fanout_parent(&self, k: TaskKey) -> bool {
        k.item.is_none() && self.is_fanout(k.step)
    }

    pub(crate) fn deps_satisfied(&self, i: usize) -> bool {
        self.run.wf.deps[i]
            .iter()
            .all(|&d| self.run.steps[d].task.row.status.satisfies())
    }

    pub(crate) fn arm(&mut self, k: TaskKey, at: i64) {
        self.sh.timers.insert((at, self.id(), k));
    }
}
