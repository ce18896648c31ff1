//! The event log and the rows it projects to.
//!
//! Every change to a run is an [`Event`]. [`apply`] folds an event into the run row and
//! task rows; the executor uses it on its own state before committing, and a mirror uses
//! it on events it receives from the owner, so both end with the same rows.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Paused,
    /// A step failed for good; the run waits for an operator.
    Failed,
    Succeeded,
    Cancelled,
    RollingBack,
    RolledBack,
    /// A compensation failed for good; the run waits for an operator.
    CompensationFailed,
    /// Handed to the executor of its site, which has not started it yet: on the central
    /// node, the row of a run a site agent will own, until its first event arrives.
    Assigned,
}

/// Where a step (or one fan-out item of it) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Ready,
    Running,
    /// For a signal, or for a maintenance window to open.
    Waiting,
    /// An attempt failed; the next one starts at `wake_at`.
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    Compensating,
    Compensated,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The name used in the store and the API.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    _ => Err(format!(
                        concat!("unknown ", stringify!($t), " '{}' (one of: ", $($s, " ",)* ")"),
                        s
                    )),
                }
            }
        }
    };
}

text_enum!(RunStatus {
    Running = "running",
    Paused = "paused",
    Failed = "failed",
    Succeeded = "succeeded",
    Cancelled = "cancelled",
    RollingBack = "rolling_back",
    RolledBack = "rolled_back",
    CompensationFailed = "compensation_failed",
    Assigned = "assigned",
});

text_enum!(StepStatus {
    Pending = "pending",
    Ready = "ready",
    Running = "running",
    Waiting = "waiting",
    Retrying = "retrying",
    Succeeded = "succeeded",
    Failed = "failed",
    Skipped = "skipped",
    Cancelled = "cancelled",
    Compensating = "compensating",
    Compensated = "compensated",
});

impl RunStatus {
    /// Runs in these states are kept by the executor (in memory and on resume).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RunStatus::Running | RunStatus::Paused | RunStatus::Failed | RunStatus::RollingBack
        )
    }
}

impl StepStatus {
    /// Settled: nothing more happens to the task until an operator acts.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
                | StepStatus::Compensated
        )
    }

    /// Dependents of a task in this state may start.
    pub fn satisfies(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

/// What a waiting step waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum WaitFor {
    Signal,
    Window { window: String },
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitFor::Signal => f.write_str("signal"),
            WaitFor::Window { window } => write!(f, "window:{window}"),
        }
    }
}

impl FromStr for WaitFor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "signal" => Ok(WaitFor::Signal),
            Some(("window", w)) => Ok(WaitFor::Window { window: w.into() }),
            _ => Err(format!("unknown wait '{s}'")),
        }
    }
}

const SYSTEM: &str = "system";

/// Who asked for an operator action, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The queued command the action came through, when an operator acted on a run of
    /// another executor (a site agent's): the run's log acknowledges the command by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Actor {
    /// An action taken by code in this process (tests, the bench, the engine itself).
    pub fn system() -> Self {
        Actor {
            who: SYSTEM.into(),
            from: None,
            command: None,
        }
    }

    /// Whether this is [`Actor::system`]: such actions are not audited in run history.
    pub fn is_system(&self) -> bool {
        self.who == SYSTEM && self.from.is_none() && self.command.is_none()
    }
}

/// What happened. Run-level kinds have no step; the others concern one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    RunCreated {
        workflow: String,
        version: i64,
        #[serde(default)]
        input: Arc<Value>,
        #[serde(default)]
        targets: Arc<Vec<String>>,
        /// Step names, so a mirror can show steps that have not started.
        steps: Vec<Arc<str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// The runs one submit made, one per site, share it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<Uuid>,
    },
    RunPaused,
    RunResumed,
    RunFailed,
    RunSucceeded,
    RunCancelled,
    /// An operator retried a step; the run works again.
    RunRetried,
    RollbackStarted,
    RunRolledBack,
    RunCompensationFailed,
    /// A queued command the run's owner did not carry out, and why (the run had already
    /// succeeded, say). Its acknowledgement in the run's log, as an `operator` event is
    /// for a command carried out.
    CommandRefused {
        verb: String,
        actor: Actor,
        reason: String,
    },
    /// An operator verb, recorded for audit before its effects.
    Operator {
        verb: String,
        actor: Actor,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        detail: Value,
    },

    Ready,
    Started,
    Waiting {
        #[serde(flatten)]
        wait: WaitFor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
    Signalled {
        payload: Value,
    },
    Succeeded {
        output: Value,
    },
    Retrying {
        next_at: i64,
    },
    Failed,
    Interrupted,
    Cancelled,
    Skipped {
        reason: String,
    },
    /// A fan-out step created its items.
    Expanded {
        items: Vec<Value>,
    },
    /// An operator retry: a new attempt series, old history kept.
    Reset {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
    },
    Compensating,
    CompensationRetrying {
        next_at: i64,
    },
    Compensated {
        #[serde(default)]
        output: Value,
    },
    CompensationFailed,
}

impl EventKind {
    /// The kind's name as stored.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunCreated { .. } => "run_created",
            EventKind::RunPaused => "run_paused",
            EventKind::RunResumed => "run_resumed",
            EventKind::RunFailed => "run_failed",
            EventKind::RunSucceeded => "run_succeeded",
            EventKind::RunCancelled => "run_cancelled",
            EventKind::RunRetried => "run_retried",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::RunRolledBack => "run_rolled_back",
            EventKind::RunCompensationFailed => "run_compensation_failed",
            EventKind::Operator { .. } => "operator",
            EventKind::CommandRefused { .. } => "command_refused",
            EventKind::Ready => "ready",
            EventKind::Started => "started",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Signalled { .. } => "signalled",
            EventKind::Succeeded { .. } => "succeeded",
            EventKind::Retrying { .. } => "retrying",
            EventKind::Failed => "failed",
            EventKind::Interrupted => "interrupted",
            EventKind::Cancelled => "cancelled",
            EventKind::Skipped { .. } => "skipped",
            EventKind::Expanded { .. } => "expanded",
            EventKind::Reset { .. } => "reset",
            EventKind::Compensating => "compensating",
            EventKind::CompensationRetrying { .. } => "compensation_retrying",
            EventKind::Compensated { .. } => "compensated",
            EventKind::CompensationFailed => "compensation_failed",
        }
    }

    /// The kind's fields without its name, as stored in the `data` column (None if empty).
    pub fn data(&self) -> Option<Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => {
                m.remove("kind");
                (!m.is_empty()).then_some(Value::Object(m))
            }
            _ => None,
        }
    }

    /// Rebuild a kind from its stored name and data.
    pub fn from_parts(name: &str, data: Option<Value>) -> Result<Self, serde_json::Error> {
        let mut m = match data {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        m.insert("kind".into(), Value::String(name.into()));
        serde_json::from_value(Value::Object(m))
    }

    /// A completed step: at most one of these per task and attempt series.
    pub fn is_completion(&self) -> bool {
        matches!(
            self,
            EventKind::Succeeded { .. } | EventKind::Signalled { .. }
        )
    }
}

/// One entry of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub run_id: Uuid,
    /// Position in the run's log, from 1, without gaps.
    pub seq: i64,
    /// The executor that owns the run and wrote the event.
    pub owner: Arc<str>,
    /// Position in the owner's log across all its runs, from 1; the replication cursor.
    pub owner_seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The stored state of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub id: Uuid,
    pub workflow: String,
    pub version: i64,
    pub owner: Arc<str>,
    pub status: RunStatus,
    pub input: Arc<Value>,
    pub targets: Arc<Vec<String>>,
    pub idempotency_key: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    /// The runs one submit made, one per site, share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Uuid>,
    /// Seq of the last event applied.
    pub last_seq: i64,
}

impl RunRow {
    /// An empty row for `id`, filled in by its `run_created` event.
    pub fn blank(id: Uuid, owner: Arc<str>) -> Self {
        RunRow {
            id,
            workflow: String::new(),
            version: 0,
            owner,
            status: RunStatus::Running,
            input: Arc::new(Value::Null),
            targets: Arc::new(Vec::new()),
            idempotency_key: None,
            error: None,
            created_at: 0,
            updated_at: 0,
            ended_at: None,
            group: None,
            last_seq: 0,
        }
    }
}

/// The stored state of a step, or of one fan-out item of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub step: Arc<str>,
    pub item: Option<u32>,
    pub status: StepStatus,
    /// Latest attempt number; 0 before the first.
    pub attempt: u32,
    /// First attempt number of the current series (operator retry starts a new one).
    pub series_start: u32,
    /// Attempts of the current series cut short by a restart; they do not use up retries.
    pub interruptions: u32,
    /// The fan-out item this task works on.
    pub item_value: Option<Value>,
    /// Input given by an operator on retry, replacing the definition's.
    pub input: Option<Value>,
    pub output: Option<Value>,
    /// Last error, kept while retrying so operators see why.
    pub error: Option<String>,
    pub waiting_for: Option<WaitFor>,
    /// Next retry, or the end of a wait.
    pub wake_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// The task is in (or failed in) the compensation phase.
    pub compensating: bool,
    pub updated_at: i64,
}

impl TaskRow {
    /// The window the task waits for, while it waits for one.
    pub fn waiting_window(&self) -> Option<&str> {
        match (&self.status, &self.waiting_for) {
            (StepStatus::Waiting, Some(WaitFor::Window { window })) => Some(window),
            _ => None,
        }
    }
}

impl TaskRow {
    pub fn new(step: Arc<str>, item: Option<u32>) -> Self {
        TaskRow {
            step,
            item,
            status: StepStatus::Pending,
            attempt: 0,
            series_start: 1,
            interruptions: 0,
            item_value: None,
            input: None,
            output: None,
            error: None,
            waiting_for: None,
            wake_at: None,
            started_at: None,
            ended_at: None,
            compensating: false,
            updated_at: 0,
        }
    }

    /// Attempts of the current series that count against the retry budget.
    pub fn attempts_used(&self) -> u32 {
        (self.attempt + 1)
            .saturating_sub(self.series_start)
            .saturating_sub(self.interruptions)
    }
}

/// Access to the rows an event changes. Implemented by the executor's in-memory runs and
/// by the mirror's rows loaded from the store.
pub trait Rows {
    fn run_row(&mut self) -> &mut RunRow;
    /// The task row, created pending if absent.
    fn task_row(&mut self, step: &str, item: Option<u32>) -> &mut TaskRow;
}

/// Fold one event into the rows. Pure: the same events give the same rows everywhere.
pub fn apply(rows: &mut impl Rows, ev: &Event) {
    {
        let run = rows.run_row();
        run.last_seq = ev.seq;
        run.updated_at = ev.at;
    }
    let Some(step) = ev.step.as_deref() else {
        apply_run(rows, ev);
        return;
    };
    if let EventKind::Expanded { items } = &ev.kind {
        for (i, v) in items.iter().enumerate() {
            let t = rows.task_row(step, Some(i as u32));
            t.item_value = Some(v.clone());
            t.updated_at = ev.at;
        }
    }
    let t = rows.task_row(step, ev.item);
    t.updated_at = ev.at;
    if let Some(a) = ev.attempt {
        t.attempt = t.attempt.max(a);
    }
    let settle = |t: &mut TaskRow, s: StepStatus| {
        t.status = s;
        t.waiting_for = None;
        t.wake_at = None;
        t.ended_at = Some(ev.at);
    };
    match &ev.kind {
        EventKind::Ready => {
            t.status = StepStatus::Ready;
            t.waiting_for = None;
            t.wake_at = None;
        }
        EventKind::Started => {
            t.status = StepStatus::Running;
            t.started_at = Some(ev.at);
            t.ended_at = None;
            t.waiting_for = None;
            t.wake_at = None;
        }
        EventKind::Waiting { wait, until } => {
            t.status = StepStatus::Waiting;
            t.waiting_for = Some(wait.clone());
            t.wake_at = *until;
        }
        EventKind::Signalled { payload } => {
            t.output = Some(payload.clone());
            t.error = None;
            settle(t, StepStatus::Succeeded);
        }
        EventKind::Succeeded { output } => {
            t.output = Some(output.clone());
            t.error = None;
            settle(t, StepStatus::Succeeded);
        }
        EventKind::Retrying { next_at } => {
            t.status = StepStatus::Retrying;
            t.error = ev.error.clone();
            t.waiting_for = None;
            t.wake_at = Some(*next_at);
        }
        EventKind::Failed => {
            t.error = ev.error.clone();
            settle(t, StepStatus::Failed);
        }
        EventKind::Interrupted => {
            t.interruptions += 1;
            // An interrupted compensation is still compensating; anything else is ready
            // for a new attempt.
            if t.status != StepStatus::Compensating {
                t.status = StepStatus::Ready;
            }
            t.waiting_for = None;
            t.wake_at = None;
        }
        EventKind::Cancelled => settle(t, StepStatus::Cancelled),
        EventKind::Skipped { .. } => settle(t, StepStatus::Skipped),
        EventKind::Expanded { .. } => {
            t.status = StepStatus::Running;
            t.started_at = Some(ev.at);
        }
        EventKind::Reset { input } => {
            t.status = StepStatus::Pending;
            t.series_start = t.attempt + 1;
            t.interruptions = 0;
            if input.is_some() {
                t.input = input.clone();
            }
            t.output = None;
            t.error = None;
            t.waiting_for = None;
            t.wake_at = None;
            t.started_at = None;
            t.ended_at = None;
            t.compensating = false;
        }
        EventKind::Compensating => {
            if t.status != StepStatus::Compensating {
                // A fresh compensation series, whether after success or after a failed
                // compensation that an operator rolls back again.
                t.series_start = ev.attempt.unwrap_or(t.attempt + 1);
                t.interruptions = 0;
            }
            t.status = StepStatus::Compensating;
            t.compensating = true;
            t.started_at = Some(ev.at);
            t.ended_at = None;
            t.wake_at = None;
        }
        EventKind::CompensationRetrying { next_at } => {
            t.status = StepStatus::Compensating;
            t.error = ev.error.clone();
            t.wake_at = Some(*next_at);
        }
        EventKind::Compensated { .. } => {
            t.error = None;
            settle(t, StepStatus::Compensated);
        }
        EventKind::CompensationFailed => {
            t.error = ev.error.clone();
            settle(t, StepStatus::Failed);
        }
        // Run-level kinds never carry a step.
        _ => {}
    }
}

fn apply_run(rows: &mut impl Rows, ev: &Event) {
    if let EventKind::RunCreated { steps, .. } = &ev.kind {
        for s in steps {
            rows.task_row(s, None);
        }
    }
    let run = rows.run_row();
    let end = |run: &mut RunRow, s: RunStatus| {
        run.status = s;
        run.ended_at = Some(ev.at);
    };
    match &ev.kind {
        EventKind::RunCreated {
            workflow,
            version,
            input,
            targets,
            idempotency_key,
            group,
            ..
        } => {
            run.group = *group;
            run.workflow = workflow.clone();
            run.version = *version;
            run.input = input.clone();
            run.targets = targets.clone();
            run.idempotency_key = idempotency_key.clone();
            run.owner = ev.owner.clone();
            run.status = RunStatus::Running;
            run.created_at = ev.at;
        }
        EventKind::RunPaused => run.status = RunStatus::Paused,
        EventKind::RunResumed => run.status = RunStatus::Running,
        EventKind::RunRetried => {
            run.status = RunStatus::Running;
            run.error = None;
            run.ended_at = None;
        }
        EventKind::RunFailed => {
            run.error = ev.error.clone();
            end(run, RunStatus::Failed);
        }
        EventKind::RunSucceeded => {
            run.error = None;
            end(run, RunStatus::Succeeded);
        }
        EventKind::RunCancelled => end(run, RunStatus::Cancelled),
        EventKind::RollbackStarted => {
            run.status = RunStatus::RollingBack;
            run.ended_at = None;
        }
        EventKind::RunRolledBack => end(run, RunStatus::RolledBack),
        EventKind::RunCompensationFailed => {
            run.error = ev.error.clone();
            end(run, RunStatus::CompensationFailed);
        }
        _ => {}
    }
}

pub use lariat_db::now_ms;
