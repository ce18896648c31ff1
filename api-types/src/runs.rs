//! Runs: their state, steps, attempts and history, and what operators send to start and
//! steer them.

use std::collections::BTreeMap;

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
    /// Handed to its site's agent, which has not started it yet (the agent may be cut
    /// off): it starts, and shows its steps, once the agent takes it.
    Assigned,
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
    /// The runs one submit made, one per site, share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Uuid>,
    /// In `GET /v1/runs`: the run's tasks that are between attempts, and when the first
    /// of them tries again; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrying: Option<Retrying>,
}

/// Tasks of a run waiting for their next attempt after a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Retrying {
    pub tasks: u32,
    pub next_attempt_at: i64,
}

/// A run with every step, its attempts, and what waiting steps wait for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// In definition order.
    pub steps: Vec<Step>,
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
    Filter(NodeFilter),
}

/// A selection of hosts of the active design. A criterion left empty is not given; a
/// filter with no criterion selects no host (say `all: true` to mean every host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Hosts carrying every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub racks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default)]
    pub mode: FilterMode,
    /// Every host of the design, whatever the other criteria say.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// How the criteria of a node filter combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Hosts matched by any given criterion.
    Union,
    /// Hosts matched by every given criterion.
    #[default]
    Intersection,
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

impl std::fmt::Display for ItemRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemRef::Index(i) => write!(f, "{i}"),
            ItemRef::Name(n) => f.write_str(n),
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs in this status (`running`, `paused`, `failed`, `succeeded`, `cancelled`,
    /// `rolling_back`, `rolled_back`, `compensation_failed`).
    pub status: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only the runs of this group (the runs one submit made, one per site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Uuid>,
    /// Only runs owned by this executor (a site agent's id, or the central node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only runs that target this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

/// Query of `GET /v1/runs/{id}/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a greater seq (default 0: from the start).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Query of `GET /v1/runs/{id}/events/stream`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this seq, for clients that cannot set `Last-Event-ID` (the header wins).
    pub after: Option<i64>,
}

impl RunStatus {
    /// The status as the API spells it (`rolling_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Failed => "failed",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Cancelled => "cancelled",
            RunStatus::RollingBack => "rolling_back",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::CompensationFailed => "compensation_failed",
            RunStatus::Assigned => "assigned",
        }
    }

    /// A status nothing changes by itself: succeeded, or stopped for good or for an
    /// operator (failed, cancelled, rolled back, compensation failed).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunStatus::Running | RunStatus::Paused | RunStatus::RollingBack | RunStatus::Assigned
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Ready => "ready",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Compensating => "compensating",
            StepStatus::Compensated => "compensated",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
