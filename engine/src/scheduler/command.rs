//! What the scheduler is asked to do: its inbox.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::action::{Output, StepError};
use crate::event::Actor;
use crate::model::Workflow;
use crate::request::{NewRun, Submitted};
use crate::store::LoadedRun;

use super::state::{Phase, Reply, TaskKey};

/// An operator verb on a run.
#[derive(Debug, Clone)]
pub(crate) enum Verb {
    Cancel,
    Pause,
    Resume,
    Retry {
        step: String,
        input: Option<Value>,
    },
    Rollback,
    /// Record that a queued command for the run was not carried out, and why.
    Refuse {
        verb: String,
        reason: String,
    },
}

impl Verb {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Verb::Cancel => "cancel",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Retry { .. } => "retry",
            Verb::Rollback => "rollback",
            Verb::Refuse { .. } => "refuse",
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
