//! The contract between the engine and the work a step does.
//!
//! An [`Action`] never touches the store and never sees another run. The engine calls it
//! at least once per attempt; the idempotency key lets it recognise a repeat of an
//! attempt that a crash interrupted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What one attempt of a step receives.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run_id: Uuid,
    pub workflow: Arc<str>,
    pub step: Arc<str>,
    /// The fan-out item this attempt works on (usually a host name).
    pub item: Option<Value>,
    /// Attempt number, 1-based, unique for the task across retries and restarts.
    pub attempt: u32,
    /// `run/step[item]/attempt`: the same for a repeat of the same attempt only.
    pub idempotency_key: String,
    /// The step's input, or the operator's replacement given on retry.
    pub input: Value,
    pub run_input: Arc<Value>,
    /// The run parameters the workflow declares sensitive: their values in `run_input`
    /// are references (`SecretRef`), resolved only by the action that needs them.
    pub sensitive: Arc<[String]>,
    pub targets: Arc<Vec<String>>,
    /// Outputs of the steps this one needs, by step name.
    pub needs: BTreeMap<String, Value>,
    /// On compensation: the output of the attempt being undone.
    pub undoing: Option<Value>,
    /// Fires when the run is cancelled or the attempt times out; actions should stop soon.
    pub cancel: CancellationToken,
}

/// The result of an attempt that did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The step is done; the value is its output.
    Done(Value),
    /// The step now waits for `signal(run, step, payload)`; the payload becomes its output.
    /// Without a timeout, the step's own timeout bounds the wait.
    AwaitSignal { timeout: Option<Duration> },
}

impl Output {
    /// A finished step with this output.
    pub fn done(v: impl Into<Value>) -> Self {
        Output::Done(v.into())
    }
}

/// A failed attempt. `retryable` says whether another attempt could succeed; `kind` is
/// matched against a step's `retry.retry_on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    /// An error another attempt may not see (a BMC that timed out, a busy server).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        StepError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that no retry can fix (a host missing from the design).
    pub fn fatal(kind: impl Into<String>, message: impl Into<String>) -> Self {
        StepError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The attempt ran out of time.
    pub fn timeout(message: impl Into<String>) -> Self {
        StepError::retryable("timeout", message)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StepError {}

/// Work a step does. Implementations must be safe to repeat with the same idempotency key.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// Perform one attempt.
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError>;

    /// Whether [`Action::compensate`] undoes [`Action::run`]. Used on rollback when a step
    /// names no `compensation` action of its own.
    fn compensates(&self) -> bool {
        false
    }

    /// Undo a succeeded run; `ctx.undoing` holds its output.
    async fn compensate(&self, _ctx: StepContext) -> Result<Value, StepError> {
        Err(StepError::fatal(
            "unsupported",
            "this action has no compensation",
        ))
    }
}

/// The actions a process can run, by name.
#[derive(Clone, Default)]
pub struct Actions {
    map: HashMap<String, Arc<dyn Action>>,
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.map.keys().collect();
        names.sort();
        f.debug_struct("Actions").field("names", &names).finish()
    }
}

impl Actions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `action` under `name`, replacing any earlier one.
    pub fn register(&mut self, name: impl Into<String>, action: impl Action) -> &mut Self {
        self.map.insert(name.into(), Arc::new(action));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.map.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().cloned().collect();
        v.sort();
        v
    }
}
