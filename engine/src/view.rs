//! A run as operators read it: each step with its fan-out items and their attempts,
//! folded from the run's events.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, EventKind, RunRow, TaskRow};
use crate::model::Workflow;

/// One attempt of a task, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: u32,
    /// "run" or "compensate".
    pub phase: String,
    /// running, waiting, succeeded, failed, interrupted, cancelled.
    pub status: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
    pub output: Option<Value>,
}

/// A step or item with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub row: TaskRow,
    pub attempts: Vec<AttemptView>,
}

/// A step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub name: String,
    pub action: Option<String>,
    pub needs: Vec<String>,
    #[serde(flatten)]
    pub task: TaskView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<TaskView>,
}

/// A run and every step, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRow,
    pub steps: Vec<StepView>,
}

impl RunView {
    pub fn step(&self, name: &str) -> Option<&StepView> {
        self.steps.iter().find(|s| s.name == name)
    }
}

fn is_open(list: &[AttemptView], n: u32) -> bool {
    list.iter()
        .rev()
        .find(|a| a.attempt == n)
        .is_some_and(|a| a.ended_at.is_none())
}

/// Fold a run's events into per-task attempts and assemble the view.
pub fn build_view(
    run: RunRow,
    tasks: Vec<TaskRow>,
    events: &[Event],
    wf: Option<&Workflow>,
) -> RunView {
    let mut attempts: HashMap<(String, Option<u32>), Vec<AttemptView>> = HashMap::new();
    for e in events {
        let (Some(step), Some(n)) = (&e.step, e.attempt) else {
            continue;
        };
        let list = attempts.entry((step.to_string(), e.item)).or_default();
        let open = |list: &mut Vec<AttemptView>, phase: &str| {
            list.push(AttemptView {
                attempt: n,
                phase: phase.into(),
                status: "running".into(),
                started_at: e.at,
                ended_at: None,
                error: None,
                output: None,
            });
        };
        let close = |list: &mut Vec<AttemptView>, status: &str, output: Option<Value>| {
            if let Some(a) = list.iter_mut().rev().find(|a| a.attempt == n) {
                a.status = status.into();
                a.ended_at = Some(e.at);
                a.error = e.error.clone();
                if output.is_some() {
                    a.output = output;
                }
            }
        };
        match &e.kind {
            EventKind::Started => open(list, "run"),
            EventKind::Compensating => open(list, "compensate"),
            EventKind::Waiting { .. } => {
                if let Some(a) = list.iter_mut().rev().find(|a| a.attempt == n) {
                    a.status = "waiting".into();
                }
            }
            EventKind::Succeeded { output } | EventKind::Signalled { payload: output } => {
                close(list, "succeeded", Some(output.clone()))
            }
            EventKind::Compensated { output } => close(list, "succeeded", Some(output.clone())),
            EventKind::Retrying { .. }
            | EventKind::Failed
            | EventKind::CompensationRetrying { .. }
            | EventKind::CompensationFailed
                if is_open(list, n) =>
            {
                close(list, "failed", None)
            }
            EventKind::Interrupted => close(list, "interrupted", None),
            EventKind::Cancelled if is_open(list, n) => close(list, "cancelled", None),
            _ => {}
        }
    }
    let mut steps_rows: Vec<TaskRow> = Vec::new();
    let mut items: HashMap<String, Vec<TaskRow>> = HashMap::new();
    for t in tasks {
        match t.item {
            None => steps_rows.push(t),
            Some(_) => items.entry(t.step.to_string()).or_default().push(t),
        }
    }
    let order = |name: &str| wf.and_then(|w| w.step_index(name)).unwrap_or(usize::MAX);
    steps_rows.sort_by(|a, b| {
        order(&a.step)
            .cmp(&order(&b.step))
            .then(a.step.cmp(&b.step))
    });
    let mut take = |row: TaskRow| {
        let a = attempts
            .remove(&(row.step.to_string(), row.item))
            .unwrap_or_default();
        TaskView { row, attempts: a }
    };
    let steps = steps_rows
        .into_iter()
        .map(|row| {
            let name = row.step.to_string();
            let def = wf.and_then(|w| w.step_index(&name).map(|i| w.step(i)));
            let mut its = items.remove(&name).unwrap_or_default();
            its.sort_by_key(|t| t.item);
            StepView {
                action: def.map(|d| d.action.clone()),
                needs: def.map(|d| d.needs.clone()).unwrap_or_default(),
                task: take(row),
                items: its.into_iter().map(&mut take).collect(),
                name,
            }
        })
        .collect();
    RunView { run, steps }
}
