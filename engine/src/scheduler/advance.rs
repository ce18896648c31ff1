//! Moving a run forward: steps become ready when their needs are met, fan-out steps
//! start their items, attempts start (inside their window and the attempt budget) and
//! their outcomes are recorded, retried on a timer or failed for good.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::action::{Output, StepContext, StepError};
use crate::event::{EventKind, RunStatus, StepStatus, WaitFor};
use crate::model::ItemSource;
use crate::windows::{WindowAnswer, WindowAsk};

use super::state::{Cx, Dispatch, Effect, Phase, RunState, TaskKey, item_key};

/// A waiting task is asked about at least this often, whatever its window said: the
/// wall clock may have been set.
const WINDOW_FALLBACK_MS: i64 = 60_000;

impl Cx<'_> {
    /// Move every step that can move.
    pub(crate) fn advance(&mut self) {
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
    pub(crate) fn kick(&mut self) {
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

    pub(crate) fn begin_step(&mut self, i: usize) {
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
    pub(crate) fn pump_items(&mut self, i: usize) {
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
            let groups = self.sh.env.groups.clone();
            let mut rolling =
                RollingLimits::new(fe, &self.run.steps[i].items, &in_progress, &*groups);
            let n = self.run.steps[i].items.len();
            for j in 0..n {
                if busy >= max_parallel {
                    break;
                }
                let k = TaskKey {
                    step: i,
                    item: Some(j as u32),
                };
                let t = self.run.task(k);
                if t.row.status != StepStatus::Pending {
                    continue;
                }
                let of_item = rolling.groups_of(t.row.item_value.as_ref());
                if !rolling.admits(&of_item) {
                    continue;
                }
                rolling.take(of_item);
                self.try_start(k);
                busy += 1;
            }
        }
        // Over its failure budget, the step settles without the items still waiting for
        // their window: they never started, and must not start at its next opening.
        let busy = if over {
            self.run.steps[i]
                .items
                .iter()
                .filter(|t| in_progress(t.row.status) && t.row.waiting_window().is_none())
                .count()
        } else {
            count(self.run, &in_progress)
        };
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

    pub(crate) fn try_start(&mut self, k: TaskKey) {
        let now = self.sh.env.clock.now_ms();
        if !self.active() {
            if self.run.task(k).row.status != StepStatus::Ready {
                self.task_event(k, EventKind::Ready);
            }
            return;
        }
        if !self.window_lets_start(k, now) {
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

    /// Whether `k`'s window (if its step names one) lets it start now. If not, the task
    /// waits, showing the window and when it may next open, and the scheduler asks again
    /// then (or within a minute, should the wall clock have been set).
    fn window_lets_start(&mut self, k: TaskKey, now: i64) -> bool {
        let wf = self.run.wf.clone();
        let def = wf.step(k.step);
        let Some(w) = &def.window else {
            return true;
        };
        let item_host;
        let hosts: &[String] = match (&def.for_each, &self.run.task(k).row.item_value) {
            (Some(fe), Some(Value::String(h))) if fe.over == ItemSource::Targets => {
                item_host = [h.clone()];
                &item_host
            }
            _ => &self.run.row.targets,
        };
        let ask = WindowAsk {
            window: &w.name,
            hosts,
            now_ms: now,
            need_ms: def.window_need().as_millis().min(i64::MAX as u128) as i64,
        };
        let (until, why) = match self.sh.env.gate.ask(&ask) {
            WindowAnswer::Open => return true,
            WindowAnswer::Closed { until, why } => (until, why),
        };
        let t = &self.run.task(k).row;
        let already = t.wake_at == until && t.waiting_window() == Some(w.name.as_str());
        if !already {
            tracing::debug!(run = %self.id(), step = %def.name, item = ?k.item, "{why}");
            self.task_event(
                k,
                EventKind::Waiting {
                    wait: WaitFor::Window {
                        window: w.name.clone(),
                    },
                    until,
                },
            );
        }
        // A gate that answers with a moment already past must not make the loop spin.
        let ask_again = until
            .map_or(now + WINDOW_FALLBACK_MS, |u| {
                u.min(now + WINDOW_FALLBACK_MS)
            })
            .max(now + 250);
        let id = self.id();
        self.sh.window_waiters.insert(id, k, ask_again);
        false
    }

    pub(crate) fn step_input(&self, k: TaskKey) -> Value {
        let def = self.run.wf.step(k.step);
        self.run.steps[k.step]
            .task
            .row
            .input
            .clone()
            .unwrap_or_else(|| def.input.clone())
    }

    pub(crate) fn start_attempt(&mut self, k: TaskKey, phase: Phase) {
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
            sensitive: self.run.wf.sensitive.clone(),
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

    pub(crate) fn on_done(
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
                let until = self.sh.env.clock.now_ms() + wait.as_millis() as i64;
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
    pub(crate) fn on_error(&mut self, k: TaskKey, e: StepError, phase: Phase) {
        let policy = &self.run.wf.step(k.step).retry;
        let row = &self.run.task(k).row;
        let attempt = row.attempt;
        let used = row.attempts_used();
        let kind_retries = policy.retry_on.is_empty() || policy.retry_on.contains(&e.kind);
        let text = e.to_string();
        if e.retryable && kind_retries && used < policy.max_attempts {
            let delay = policy.backoff(used, rand::random::<f64>());
            let next_at = self.sh.env.clock.now_ms() + delay.as_millis() as i64;
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
    pub(crate) fn check_settled(&mut self) {
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

    pub(crate) fn fire(&mut self, k: TaskKey, at: i64) {
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
}

/// The `max_per` limits of one fan-out: how many items are in progress per group of each
/// grouping key, counted afresh each time items are pumped (so a restart, a retry or a
/// design that moved a host changes nothing to the rule).
struct RollingLimits<'a> {
    limits: &'a std::collections::BTreeMap<String, u32>,
    groups: &'a dyn crate::groups::HostGroups,
    /// Per limit, in its order: items in progress per group (None: hosts without one).
    busy: Vec<std::collections::HashMap<Option<String>, u32>>,
}

impl<'a> RollingLimits<'a> {
    fn new(
        fe: &'a crate::model::ForEach,
        items: &[super::state::Task],
        in_progress: &dyn Fn(StepStatus) -> bool,
        groups: &'a dyn crate::groups::HostGroups,
    ) -> Self {
        let mut me = RollingLimits {
            limits: &fe.max_per,
            groups,
            busy: vec![Default::default(); fe.max_per.len()],
        };
        if me.limits.is_empty() {
            return me;
        }
        for t in items.iter().filter(|t| in_progress(t.row.status)) {
            let g = me.groups_of(t.row.item_value.as_ref());
            me.take(g);
        }
        me
    }

    /// The item's group under each limit. An item that is not a host name has none.
    fn groups_of(&self, item: Option<&Value>) -> Vec<Option<String>> {
        let host = item.and_then(Value::as_str);
        self.limits
            .keys()
            .map(|key| host.and_then(|h| self.groups.group(h, key)))
            .collect()
    }

    fn admits(&self, groups: &[Option<String>]) -> bool {
        self.limits
            .values()
            .zip(groups)
            .zip(&self.busy)
            .all(|((max, g), busy)| busy.get(g).copied().unwrap_or(0) < *max)
    }

    fn take(&mut self, groups: Vec<Option<String>>) {
        for (g, busy) in groups.into_iter().zip(&mut self.busy) {
            *busy.entry(g).or_default() += 1;
        }
    }
}
