//! Operator verbs and signals on a live run: cancel, pause, resume, retry a failed step
//! (and everything downstream) with edited input, rollback, and signal delivery.

use serde_json::{Value, json};

use crate::error::EngineError;
use crate::event::{Actor, EventKind, RunStatus, StepStatus, WaitFor};

use super::command::Verb;
use super::state::{Cx, Phase, TaskKey, item_key};

impl Cx<'_> {
    pub(crate) fn find_task(&self, step: &str, item: Option<&str>) -> Result<TaskKey, EngineError> {
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

    pub(crate) fn signal(
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

    pub(crate) fn invalid(&self, verb: &Verb, reason: impl Into<String>) -> EngineError {
        EngineError::InvalidState {
            run: self.id(),
            verb: verb.name(),
            status: self.run.row.status,
            reason: reason.into(),
        }
    }

    pub(crate) fn verb(&mut self, verb: Verb, actor: &Actor) -> Result<(), EngineError> {
        let status = self.run.row.status;
        match &verb {
            Verb::Refuse { verb, reason } => {
                self.emit(
                    None,
                    None,
                    None,
                    EventKind::CommandRefused {
                        verb: verb.clone(),
                        actor: actor.clone(),
                        reason: reason.clone(),
                    },
                );
                // A finished run was brought back only to record this.
                self.sh.evict.push(self.id());
            }
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

    pub(crate) fn reset_items(&mut self, i: usize) {
        for j in 0..self.run.steps[i].items.len() {
            let k = TaskKey {
                step: i,
                item: Some(j as u32),
            };
            let t = &self.run.task(k).row;
            if matches!(
                t.status,
                StepStatus::Failed | StepStatus::Cancelled | StepStatus::Ready
            ) || t.waiting_window().is_some()
            {
                self.task_event(k, EventKind::Reset { input: None });
            }
        }
    }
}
