//! The executor's machinery: one scheduler task that owns the state of every live run,
//! and one writer task that commits what the scheduler decided.
//!
//! The scheduler changes state only by emitting events through [`apply`], so its memory
//! always equals the fold of the log. It may run ahead of the disk, because the writer
//! commits batches in the order they were made; but nothing leaves the process (an action
//! starting, a reply to a caller, an event to a subscriber) before its batch is committed.
//!
//! The scheduler's jobs have a file each: `advance` (steps, items and attempts),
//! `verbs` (operator verbs and signals), `rollback`, `writer` (group commit) and
//! `execute` (an attempt); `state` holds what they work on and `command` what the
//! scheduler is asked.

mod advance;
mod command;
mod execute;
mod rollback;
mod state;
mod verbs;
mod writer;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::EngineError;
use crate::event::{Actor, EventKind, RunRow, RunStatus, StepStatus};
use crate::model::Workflow;
use crate::request::{NewRun, ResumeReport, Submitted};
use crate::store::{LoadedRun, TimerRow, WriteSet};

pub use command::SchedulerStats;
pub(crate) use command::{Command, Verb};
pub(crate) use state::Env;
pub(crate) use writer::{Outages, writer};

pub(crate) use state::Reply;
use state::{Batch, Cx, Effect, Log, RunState, Shared, TaskKey};

pub(crate) struct Scheduler {
    runs: HashMap<Uuid, RunState>,
    log: Log,
    sh: Shared,
    writer: mpsc::UnboundedSender<Batch>,
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
                window_waiters: Default::default(),
                evict: Vec::new(),
            },
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
            if run.task(k).row.waiting_window().is_some() {
                // Asked at once: the window may have opened while the executor was down.
                self.sh.window_waiters.insert(id, k, 0);
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
            Command::WindowsChanged => self.recheck_windows(true),
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
        let id = new.id.unwrap_or_else(Uuid::now_v7);
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
                group: new.group,
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

    /// Asks the gate again for the waiting tasks that are due, or for all of them.
    fn recheck_windows(&mut self, all: bool) {
        let now = self.sh.env.clock.now_ms();
        let due = self.sh.window_waiters.take((!all).then_some(now));
        for (id, k) in due {
            let Some(mut cx) = self.cx(id) else {
                continue;
            };
            // A run that failed keeps its waiting items as they are (a retry resets them).
            if cx.run.failing
                || !matches!(cx.run.row.status, RunStatus::Running | RunStatus::Paused)
            {
                continue;
            }
            if cx.run.task(k).row.waiting_window().is_some() {
                cx.try_start(k);
                // Still held: nothing else moved, and advancing a wide fan-out for each
                // of its held items would cost the square of its width.
                if cx.run.task(k).row.waiting_window().is_none() {
                    cx.advance();
                }
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.sh.env.clock.now_ms();
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
                // Still held: nothing else moved, and advancing a wide fan-out for each
                // of its held items would cost the square of its width.
                if cx.run.task(k).row.waiting_window().is_none() {
                    cx.advance();
                }
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
            let now = self.sh.env.clock.now_ms();
            let next_timer = self.sh.timers.first().map(|(at, _, _)| *at);
            let next = match (next_timer, self.sh.window_waiters.next_at()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep_ms = next.map_or(3_600_000, |at| (at - now).clamp(0, 3_600_000) as u64);
            let mut stop = false;
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(Command::Shutdown) | None => stop = true,
                    Some(cmd) => self.handle(cmd),
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
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
            self.recheck_windows(false);
            self.fill_slots();
            if !self.flush() || stop {
                break;
            }
        }
    }
}
