//! The one error type of the engine's interface.

use uuid::Uuid;

use crate::event::{RunStatus, StepStatus};
use crate::model::DefinitionError;
use crate::store::StoreError;

/// Everything that can go wrong when calling the engine. Each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("unknown workflow '{name}'{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownWorkflow { name: String, version: Option<i64> },
    #[error("unknown run {0}")]
    UnknownRun(Uuid),
    #[error("run {run} has no step '{step}'")]
    UnknownStep { run: Uuid, step: String },
    #[error("step '{step}' of run {run} has no item '{item}'")]
    UnknownItem {
        run: Uuid,
        step: String,
        item: String,
    },
    #[error("step '{step}' of run {run} is {status}{}, not waiting for a signal", waiting_for.as_ref().map(|w| format!(" (waiting for {w})")).unwrap_or_default())]
    NotWaiting {
        run: Uuid,
        step: String,
        status: StepStatus,
        waiting_for: Option<String>,
    },
    #[error("cannot {verb} run {run} ({status}): {reason}")]
    InvalidState {
        run: Uuid,
        verb: &'static str,
        status: RunStatus,
        reason: String,
    },
    #[error(
        "cannot retry step '{step}' of run {run}: it is {status}; only a failed step can be retried"
    )]
    StepNotFailed {
        run: Uuid,
        step: String,
        status: StepStatus,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A run's input does not fit the parameters of the workflow version it would run.
    #[error("workflow {workflow}: {}", .problems.join("; "))]
    InvalidParameters {
        workflow: String,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("engine stopped: {0}")]
    Stopped(String),
    /// The executor runs but cannot take this now: its database is out of reach.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Internal: the run is not in the scheduler's memory.
    #[error("run {0} is not live")]
    NotLive(Uuid),
}
