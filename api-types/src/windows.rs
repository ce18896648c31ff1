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
