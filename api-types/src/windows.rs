//! Maintenance windows of the design in force: open or not, their next openings, and the
//! steps waiting on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every window of the design in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowList {
    /// The design revision the windows come from; `null` for a design without one.
    pub revision: Option<String>,
    /// The moment the answer was computed, by the server's clock.
    pub now: i64,
    pub windows: Vec<WindowStatus>,
}

/// One window and where it stands now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowStatus {
    pub name: String,
    /// `allow` (gated steps naming it start while it is open) or `deny` (a freeze: no
    /// gated step for a covered host starts while it is open).
    pub mode: String,
    pub cron: String,
    /// IANA zone the cron is read in.
    pub timezone: String,
    /// Length of each opening, as written (`4h`).
    pub duration: String,
    /// The hosts it covers; every host when absent.
    pub scope: Option<WindowScope>,
    /// Open now.
    pub open: bool,
    /// The current opening, while open.
    pub current: Option<WindowOpening>,
    /// The next openings (three), after the current one.
    pub next: Vec<WindowOpening>,
    /// Steps (and fan-out items) waiting for it, by the executor that owns their run (a
    /// site's agent, or the central node).
    pub waiting: BTreeMap<String, u64>,
    /// Operators' overrides in force now. One for every site decides `open` and
    /// `current`; one for a site decides for that site's hosts only.
    #[serde(default)]
    pub overrides: Vec<WindowOverride>,
}

/// An operator's manual override of a window: open (or, for a deny window, the freeze in
/// force) or closed (the freeze lifted) from `starts_at` until `ends_at`, when it expires
/// by itself. The latest override in force wins over earlier ones and over the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WindowOverride {
    pub id: String,
    pub window: String,
    /// `open` or `close`.
    pub action: String,
    /// Only hosts of this site; every host the window covers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reason: String,
    /// The token that made it.
    pub who: String,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Ended by an operator before it expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// The order overrides were made in: the later wins.
    pub seq: i64,
    /// Sites whose agents have not taken it yet (cut off, say); they still go by what
    /// they held. Filled in by the centre for overrides in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<String>,
}

/// `POST /v1/windows/{name}/open` and `/close`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// How long, such as `2h` or `45m` (at least a minute, at most 7 days). Required to
    /// open; to close, the default is the end of the current opening.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why: kept with the override and shown wherever it is.
    pub reason: String,
    /// Only this site's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// `POST /v1/windows/{name}/clear`: ends the window's overrides in force early.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearOverrides {
    pub reason: String,
    /// Only the overrides of this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// The overrides a clear ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClearedOverrides {
    pub ended: Vec<WindowOverride>,
}

/// The hosts a window covers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowScope {
    pub sites: Vec<String>,
    pub racks: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// One opening of a window, overlapping starts merged.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowOpening {
    pub opens_at: i64,
    pub closes_at: i64,
    /// `opens_at` in the window's zone (RFC 3339 with offset).
    pub opens_local: String,
    /// `closes_at` in the window's zone.
    pub closes_local: String,
}

/// One window, with the steps waiting on it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowDetail {
    pub revision: Option<String>,
    pub now: i64,
    pub window: WindowStatus,
    /// At most 1,000, by run.
    pub waiters: Vec<WindowWaiter>,
    /// Its latest overrides, ended and expired ones too, newest first (at most 50): who
    /// opened or closed it, when and why.
    #[serde(default)]
    pub history: Vec<WindowOverride>,
}

/// A step (or fan-out item) waiting for a window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowWaiter {
    pub run_id: Uuid,
    pub step: String,
    pub item: Option<u32>,
    /// The host the item acts on, for an item over the run's targets.
    pub host: Option<String>,
    /// When the window may next let it start, as its executor last saw it.
    pub until: Option<i64>,
    /// The executor that owns the run.
    pub owner: String,
}
