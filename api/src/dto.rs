//! The API's request and response bodies. They mirror the engine's rows but are the API's
//! own contract: the engine may change its internals without changing what clients see,
//! and the OpenAPI document is derived from these types. Timestamps are milliseconds
//! since the Unix epoch.

use lariat_engine as eng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Paused,
    /// A step failed for good; the run waits for an operator (retry, rollback, cancel).
    Failed,
    Succeeded,
    Cancelled,
    RollingBack,
    RolledBack,
    /// A compensation failed for good; the run waits for an operator.
    CompensationFailed,
}

impl From<eng::RunStatus> for RunStatus {
    fn from(s: eng::RunStatus) -> Self {
        match s {
            eng::RunStatus::Running => RunStatus::Running,
            eng::RunStatus::Paused => RunStatus::Paused,
            eng::RunStatus::Failed => RunStatus::Failed,
            eng::RunStatus::Succeeded => RunStatus::Succeeded,
            eng::RunStatus::Cancelled => RunStatus::Cancelled,
            eng::RunStatus::RollingBack => RunStatus::RollingBack,
            eng::RunStatus::RolledBack => RunStatus::RolledBack,
            eng::RunStatus::CompensationFailed => RunStatus::CompensationFailed,
        }
    }
}

/// Where a step (or one fan-out item of it) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Ready,
    Running,
    /// For a signal, or for a maintenance window to open: see `waiting_for`.
    Waiting,
    /// An attempt failed; the next one starts at `next_retry_at`.
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    Compensating,
    Compensated,
}

impl From<eng::StepStatus> for StepStatus {
    fn from(s: eng::StepStatus) -> Self {
        match s {
            eng::StepStatus::Pending => StepStatus::Pending,
            eng::StepStatus::Ready => StepStatus::Ready,
            eng::StepStatus::Running => StepStatus::Running,
            eng::StepStatus::Waiting => StepStatus::Waiting,
            eng::StepStatus::Retrying => StepStatus::Retrying,
            eng::StepStatus::Succeeded => StepStatus::Succeeded,
            eng::StepStatus::Failed => StepStatus::Failed,
            eng::StepStatus::Skipped => StepStatus::Skipped,
            eng::StepStatus::Cancelled => StepStatus::Cancelled,
            eng::StepStatus::Compensating => StepStatus::Compensating,
            eng::StepStatus::Compensated => StepStatus::Compensated,
        }
    }
}

/// A run, without its steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub workflow: String,
    /// The workflow version the run is pinned to.
    pub version: i64,
    /// The executor that owns the run.
    pub owner: String,
    pub status: RunStatus,
    pub input: Value,
    pub targets: Vec<String>,
    pub idempotency_key: Option<String>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
}

impl From<eng::RunRow> for Run {
    fn from(r: eng::RunRow) -> Self {
        Run {
            id: r.id,
            workflow: r.workflow,
            version: r.version,
            owner: r.owner.to_string(),
            status: r.status.into(),
            input: std::sync::Arc::unwrap_or_clone(r.input),
            targets: std::sync::Arc::unwrap_or_clone(r.targets),
            idempotency_key: r.idempotency_key,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            ended_at: r.ended_at,
        }
    }
}

/// A run with every step, its attempts, and what waiting steps wait for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// In definition order.
    pub steps: Vec<Step>,
}

impl From<eng::RunView> for RunDetail {
    fn from(v: eng::RunView) -> Self {
        RunDetail {
            run: v.run.into(),
            steps: v.steps.into_iter().map(Step::from).collect(),
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub name: String,
    /// The action it runs (absent if the definition could not be loaded).
    pub action: Option<String>,
    /// Steps it depends on.
    pub needs: Vec<String>,
    #[serde(flatten)]
    pub task: Task,
    /// The fan-out items of a `for_each` step; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Task>,
}

impl From<eng::StepView> for Step {
    fn from(s: eng::StepView) -> Self {
        Step {
            name: s.name,
            action: s.action,
            needs: s.needs,
            task: s.task.into(),
            items: s.items.into_iter().map(Task::from).collect(),
        }
    }
}

/// The state of a step, or of one fan-out item of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// The item's index, for a fan-out item.
    pub item: Option<u32>,
    /// The value the item works on (a host name for `for_each: {over: targets}`).
    pub item_value: Option<Value>,
    pub status: StepStatus,
    /// Latest attempt number; 0 before the first.
    pub attempt: u32,
    /// Attempts of the current series that count against the retry budget.
    pub attempts_used: u32,
    /// Input set by an operator on retry, replacing the definition's.
    pub input: Option<Value>,
    pub output: Option<Value>,
    /// The last error; kept while retrying so that operators see why.
    pub error: Option<String>,
    /// What a waiting step waits for.
    pub waiting_for: Option<Waiting>,
    /// When a retrying step makes its next attempt.
    pub next_retry_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// The task is in (or failed in) the compensation phase.
    pub compensating: bool,
    pub updated_at: i64,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

impl From<eng::TaskView> for Task {
    fn from(t: eng::TaskView) -> Self {
        let attempts_used = t.row.attempts_used();
        let r = t.row;
        let retrying = matches!(r.status, eng::StepStatus::Retrying);
        let waiting_for = match (&r.status, r.waiting_for) {
            (eng::StepStatus::Waiting, Some(w)) => Some(Waiting::new(w, r.wake_at)),
            _ => None,
        };
        Task {
            item: r.item,
            item_value: r.item_value,
            status: r.status.into(),
            attempt: r.attempt,
            attempts_used,
            input: r.input,
            output: r.output,
            error: r.error,
            waiting_for,
            next_retry_at: if retrying { r.wake_at } else { None },
            started_at: r.started_at,
            ended_at: r.ended_at,
            compensating: r.compensating,
            updated_at: r.updated_at,
            attempts: t.attempts.into_iter().map(Attempt::from).collect(),
        }
    }
}

/// What a waiting step waits for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Waiting {
    /// `signal` (`POST .../signal` completes the step) or `window` (a maintenance window).
    #[serde(rename = "for")]
    pub for_: String,
    /// The window's name, when waiting for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// When the wait times out, if it does.
    pub until: Option<i64>,
}

impl Waiting {
    fn new(w: eng::WaitFor, until: Option<i64>) -> Self {
        match w {
            eng::WaitFor::Signal => Waiting {
                for_: "signal".into(),
                window: None,
                until,
            },
            eng::WaitFor::Window { window } => Waiting {
                for_: "window".into(),
                window: Some(window),
                until,
            },
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    /// `run`, or `compensate` for the compensation action.
    pub phase: String,
    /// `running`, `waiting`, `succeeded`, `failed`, `interrupted` or `cancelled`.
    pub status: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
    pub output: Option<Value>,
}

impl From<eng::AttemptView> for Attempt {
    fn from(a: eng::AttemptView) -> Self {
        Attempt {
            attempt: a.attempt,
            phase: a.phase,
            status: a.status,
            started_at: a.started_at,
            ended_at: a.ended_at,
            error: a.error,
            output: a.output,
        }
    }
}

/// One entry of a run's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    pub run_id: Uuid,
    /// Position in the run's history, from 1, without gaps; the SSE event id.
    pub seq: i64,
    pub at: i64,
    /// What happened: run-level (`run_created`, `run_paused`, `run_resumed`, `run_failed`,
    /// `run_succeeded`, `run_cancelled`, `run_retried`, `rollback_started`,
    /// `run_rolled_back`, `run_compensation_failed`, `operator`) or about one step
    /// (`ready`, `started`, `waiting`, `signalled`, `succeeded`, `retrying`, `failed`,
    /// `interrupted`, `cancelled`, `skipped`, `expanded`, `reset`, `compensating`,
    /// `compensation_retrying`, `compensated`, `compensation_failed`).
    pub kind: String,
    pub step: Option<String>,
    pub item: Option<u32>,
    pub attempt: Option<u32>,
    pub error: Option<String>,
    /// The kind's own fields. For `operator`: `{verb, actor: {who, from}, detail}`.
    pub data: Option<Value>,
    /// The executor that wrote the event.
    pub owner: String,
}

impl From<&eng::Event> for RunEvent {
    fn from(e: &eng::Event) -> Self {
        RunEvent {
            run_id: e.run_id,
            seq: e.seq,
            at: e.at,
            kind: e.kind.name().to_string(),
            step: e.step.as_deref().map(str::to_string),
            item: e.item,
            attempt: e.attempt,
            error: e.error.clone(),
            data: e.kind.data(),
            owner: e.owner.to_string(),
        }
    }
}

/// `POST /v1/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// A registered workflow's name.
    pub workflow: String,
    /// The version to pin; the latest when absent.
    #[serde(default)]
    pub version: Option<i64>,
    /// The run's input, available to every step.
    #[serde(default)]
    pub input: Value,
    /// Hosts the run targets, as a list of names or as a node filter
    /// (`{"names", "labels", "racks", "sites", "mode": "union"|"intersection"}`) that the
    /// active design resolves at submit; a `for_each: {over: targets}` step fans out over
    /// them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub targets: Targets,
    /// Submitting again with the same key returns the first run (200) instead of a new one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A run's targets as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    Names(Vec<String>),
    Filter(lariat_workflows::design::NodeFilter),
}

impl Default for Targets {
    fn default() -> Self {
        Targets::Names(Vec::new())
    }
}

/// `POST /v1/runs/{id}/steps/{step}/retry`. The body may be left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryStep {
    /// Replaces the step's input from now on; the definition's input when absent.
    #[serde(default)]
    pub input: Option<Value>,
}

/// `POST /v1/runs/{id}/steps/{step}/signal`. The body may be left out (a null payload).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalStep {
    /// Becomes the step's output.
    #[serde(default)]
    pub payload: Value,
    /// For a fan-out step: the item, by host name or by index.
    #[serde(default)]
    pub item: Option<ItemRef>,
}

/// A fan-out item, by its index or by its value (a host name).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ItemRef {
    Index(u32),
    Name(String),
}

impl ItemRef {
    pub fn to_engine(&self) -> String {
        match self {
            ItemRef::Index(i) => i.to_string(),
            ItemRef::Name(n) => n.clone(),
        }
    }
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a run's history, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<RunEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs in this status (`running`, `paused`, `failed`, `succeeded`, `cancelled`,
    /// `rolling_back`, `rolled_back`, `compensation_failed`).
    pub status: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

/// Query of `GET /v1/runs/{id}/events`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a greater seq (default 0: from the start).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Query of `GET /v1/runs/{id}/events/stream`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this seq, for clients that cannot set `Last-Event-ID` (the header wins).
    pub after: Option<i64>,
}

/// A registered workflow version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub name: String,
    pub version: i64,
    /// False when the definition equals the latest version, so no version was made.
    pub created: bool,
}

/// The latest version of a workflow, in a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    pub name: String,
    /// The latest version.
    pub version: i64,
    pub description: Option<String>,
    pub steps: usize,
    pub created_at: i64,
}

/// Registered workflows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
}

/// One version of a workflow, with its definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersion {
    pub name: String,
    pub version: i64,
    pub created_at: i64,
    /// The definition in canonical JSON form.
    pub definition: Value,
}

/// A workflow: its latest version and the numbers of every version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub latest: WorkflowVersion,
    /// Every version, oldest first.
    pub versions: Vec<i64>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}
