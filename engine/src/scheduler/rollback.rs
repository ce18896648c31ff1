//! Rollback: the compensations of succeeded steps, in reverse dependency order.

use serde_json::Value;

use crate::event::{EventKind, StepStatus};

use super::state::{Cx, Phase, TaskKey};

impl Cx<'_> {
    pub(crate) fn has_compensation(&self, i: usize) -> bool {
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
    pub(crate) fn advance_rollback(&mut self) {
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
