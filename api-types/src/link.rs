//! The link between a site agent and the central node, and the sites as operators see
//! them. The agent dials out; every message is a request it makes:
//!
//! - `POST /v1/agent/hello` ([`AgentHello`] → [`LinkCursor`]): the agent names its site,
//!   its executor id and how far its log goes; the centre registers it (first time),
//!   refuses a second executor for the site or a log that went backwards, and answers how
//!   far it has applied the agent's events.
//! - `POST /v1/agent/sync` ([`SyncRequest`] → [`SyncAnswer`]): what travels to the agent:
//!   workflow versions, its site's design, runs assigned to it, operator commands.
//! - `POST /v1/agent/events` ([`EventBatch`] → [`BatchAnswer`]): the agent's events in
//!   `owner_seq` order; the centre applies them idempotently and answers its cursor.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// An event of a run's log as it travels from its owner to the centre: a
/// [`crate::RunEvent`] with its place in the owner's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkEvent {
    pub run_id: Uuid,
    pub seq: i64,
    pub owner: String,
    /// Position in the owner's log across all its runs: the replication cursor.
    pub owner_seq: i64,
    pub at: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `POST /v1/agent/hello`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentHello {
    /// The agent's executor id: the owner of the runs it executes.
    pub executor: String,
    /// The agent's version.
    pub version: String,
    /// The highest `owner_seq` in the agent's log (0 when empty).
    pub owner_seq: i64,
}

/// How far the centre has applied an agent's events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LinkCursor {
    /// The agent's events up to this `owner_seq` are applied; send the rest.
    pub cursor: i64,
}

/// `POST /v1/agent/sync`: what the agent already has.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub executor: String,
    /// The highest `owner_seq` in the agent's log.
    pub owner_seq: i64,
    /// Workflow versions created at or after this time (ms) are sent.
    pub workflows_since: i64,
    /// The commit of the design the agent holds, if any.
    #[serde(default)]
    pub design: Option<String>,
    /// Commands with a greater `seq` are sent.
    pub commands_after: i64,
    /// Active DHCP leases at the site; absent when the agent serves no DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_leases: Option<i64>,
    /// The version of the window overrides the agent holds (`overrides_version` of the
    /// answer it last took).
    #[serde(default)]
    pub overrides_seen: i64,
}

/// What travels to the agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SyncAnswer {
    /// How far the centre has applied the agent's events.
    pub cursor: i64,
    pub workflows: Vec<LinkWorkflow>,
    /// The design of the agent's site, when it differs from the one it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design: Option<LinkDesign>,
    /// Runs for the agent to start, oldest first.
    pub assignments: Vec<Assignment>,
    /// Operator commands for the agent's runs, in `seq` order.
    pub commands: Vec<LinkCommand>,
    /// The operators' window overrides in force for the agent's site (those for every
    /// site and its own): the whole set, which replaces the one the agent holds.
    #[serde(default)]
    pub overrides: Vec<crate::WindowOverride>,
    /// The version of that set.
    #[serde(default)]
    pub overrides_version: i64,
}

/// A workflow version as the centre numbered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkWorkflow {
    pub name: String,
    pub version: i64,
    /// The definition, as canonical JSON text.
    pub definition: String,
    pub created_at: i64,
}

/// The design revision a site works from, as content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkDesign {
    /// `None`: the centre has no design for the site (no revision accepted yet).
    pub commit: Option<String>,
    pub files: Vec<DesignFile>,
}

/// One file of a design revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DesignFile {
    pub path: String,
    pub content: String,
}

/// A run for the agent to start, with the id the centre gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub run_id: Uuid,
    pub workflow: String,
    pub version: i64,
    pub input: Value,
    pub targets: Vec<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub group: Option<Uuid>,
}

/// Who asked for a queued command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandActor {
    pub who: String,
    #[serde(default)]
    pub from: Option<String>,
}

/// An operator command for a run of the agent's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkCommand {
    /// Position in the centre's command sequence; the agent's cursor.
    pub seq: i64,
    pub id: String,
    pub run_id: Uuid,
    /// `cancel`, `pause`, `resume`, `rollback`, `retry` or `signal`.
    pub verb: String,
    /// The verb's body (`RetryStep`, `SignalStep` with `step`), or null.
    pub args: Value,
    pub actor: CommandActor,
    pub created_at: i64,
}

/// The largest `POST /v1/agent/events` body the centre reads, in bytes: above the API's
/// general limit, because one event carries a whole run input or step output, and an
/// event the centre cannot take would stall the site's log behind it.
pub const EVENT_BATCH_LIMIT: usize = 16 << 20;

/// `POST /v1/agent/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<LinkEvent>,
}

/// What the centre did with a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    pub applied: usize,
    /// Already applied: a repeat.
    pub skipped: usize,
    /// How far the centre has applied the agent's events: send from here.
    pub cursor: i64,
    /// A run's events had a gap; nothing after it was applied. Send again from `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
}

/// A site as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteStatus {
    pub site: String,
    /// `agent` (a site agent owns its runs) or `central` (the central node serves it).
    pub served_by: String,
    /// The agent's executor id, once one registered.
    pub executor: Option<String>,
    /// Whether the agent was seen recently (within three sync intervals).
    pub connected: bool,
    pub last_seen: Option<i64>,
    pub agent_version: Option<String>,
    /// The agent's events are applied up to this `owner_seq`.
    pub applied: i64,
    /// Events the agent holds that the centre has not applied, at its last report.
    pub pending_events: i64,
    /// How old the centre's view of the site's runs may be, in seconds: since the agent
    /// was last seen, when it has events pending.
    pub lag_seconds: Option<f64>,
    /// Runs of the site that are not finished, as the centre knows them.
    pub runs_active: i64,
    /// Active DHCP leases at the site (bound, not expired), as last reported; absent
    /// when nobody reports DHCP for it.
    pub dhcp_leases: Option<i64>,
}

/// `GET /v1/sites`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteList {
    pub sites: Vec<SiteStatus>,
}

/// A verb on a run of a site agent, queued for the agent: the answer (202) of a verb
/// on such a run, and `GET /v1/commands/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueuedCommand {
    pub id: String,
    pub seq: i64,
    pub site: String,
    pub run_id: Uuid,
    pub verb: String,
    /// `queued` (not yet taken by the agent), `delivered` (taken, not yet acknowledged),
    /// `applied` or `refused` (as the run's log says).
    pub state: String,
    /// Why the agent refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: i64,
}
