//! The inventory (what each host is and what last happened to it), its drift from the
//! design, and reconciliation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{NodeFilter, RunStatus, StepStatus};

/// Where a host is in its life, from the provisioning workflows run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// No provisioning workflow has worked on it.
    New,
    Provisioning,
    Provisioned,
    /// Its last provisioning or deprovisioning did not finish for it (a step failed for
    /// this host, or the run was cancelled or rolled back); `reason` says which.
    Failed,
    Deprovisioning,
    Deprovisioned,
}

impl HostState {
    /// The name used in queries and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::New => "new",
            HostState::Provisioning => "provisioning",
            HostState::Provisioned => "provisioned",
            HostState::Failed => "failed",
            HostState::Deprovisioning => "deprovisioning",
            HostState::Deprovisioned => "deprovisioned",
        }
    }

    /// Every state, in the order of a host's life.
    pub const ALL: [HostState; 6] = [
        HostState::New,
        HostState::Provisioning,
        HostState::Provisioned,
        HostState::Failed,
        HostState::Deprovisioning,
        HostState::Deprovisioned,
    ];
}

impl std::str::FromStr for HostState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HostState::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = HostState::ALL.iter().map(|h| h.as_str()).collect();
                format!("unknown host state '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// One step (or fan-out item) of a run, as it worked on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostStep {
    pub run: Uuid,
    pub workflow: String,
    pub step: String,
    pub status: StepStatus,
    pub attempt: u32,
    /// When the step last changed for this host.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The power state a BMC operation last read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PowerObservation {
    /// `on` or `off`.
    pub state: String,
    pub at: i64,
    /// The run and step whose BMC operation observed it.
    pub run: Uuid,
    pub step: String,
}

/// A firmware component's version, as the BMC last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FirmwareVersion {
    pub component: String,
    pub version: String,
    pub at: i64,
    pub run: Uuid,
}

/// The facts of a host's last callback (MACs, disks, memory, serial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostFacts {
    pub at: i64,
    pub run: Uuid,
    #[schema(value_type = Object)]
    pub facts: Value,
}

/// What a host was last provisioned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provisioned {
    pub run: Uuid,
    pub at: i64,
    /// The design revision (commit) its run validated it against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Digest of its resolved configuration then; drift compares it with today's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A host at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// False for a host the active design no longer has (its history is kept).
    pub in_design: bool,
    pub state: HostState,
    /// Why the host is in this state, when it is not plain (which step failed, that its
    /// run is paused or stopped for an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last step its provisioning (or deprovisioning) reached, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<HostStep>,
    /// The step acting on it now, or the last one that did, of any workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<HostStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerObservation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<Provisioned>,
}

/// A run that worked on a host, with the last step it reached for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostRun {
    pub run: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    pub last_step: HostStep,
}

/// `GET /v1/inventory/hosts/{name}`: a host, what it reported and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostDetail {
    #[serde(flatten)]
    pub summary: HostSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<HostFacts>,
    /// Sorted by component.
    #[serde(default)]
    pub firmware: Vec<FirmwareVersion>,
    /// Runs that worked on it, newest first (at most 50).
    pub history: Vec<HostRun>,
    /// How it differs from the design it is provisioned from.
    pub drift: Vec<Drift>,
}

/// `GET /v1/inventory/hosts`: a node filter, a state, and a page. Comma-separated lists;
/// `labels` as `k=v,k2=v2`. Without a criterion, every host of the active design.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InventoryQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub racks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    /// Only hosts in this state (`new`, `provisioning`, `provisioned`, `failed`,
    /// `deprovisioning`, `deprovisioned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Hosts after this name (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, 1 to 1000; 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A page of the inventory, sorted by host name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostPage {
    /// The active revision's commit; `null` before one was accepted.
    pub revision: Option<String>,
    pub hosts: Vec<HostSummary>,
    /// Ask with `after=` this for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How a host differs from its design.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// In the design, never provisioned (and not `never_provision`).
    NeverProvisioned,
    /// Provisioned from a resolved configuration that differs from today's.
    ConfigChanged,
    /// A firmware component below the version its hardware profile expects.
    FirmwareBehind,
    /// Its last callback's facts disagree with the design (MACs, serial, disks, memory).
    FactsMismatch,
}

impl DriftKind {
    /// The name used in queries and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::NeverProvisioned => "never_provisioned",
            DriftKind::ConfigChanged => "config_changed",
            DriftKind::FirmwareBehind => "firmware_behind",
            DriftKind::FactsMismatch => "facts_mismatch",
        }
    }

    /// Every kind.
    pub const ALL: [DriftKind; 4] = [
        DriftKind::NeverProvisioned,
        DriftKind::ConfigChanged,
        DriftKind::FirmwareBehind,
        DriftKind::FactsMismatch,
    ];
}

impl std::str::FromStr for DriftKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DriftKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DriftKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown drift kind '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// One difference between a host and its design, and what would fix it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Drift {
    pub host: String,
    pub kind: DriftKind,
    pub reason: String,
    /// The workflow that fixes it; absent when only the design or the hardware can (facts
    /// that disagree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// That workflow's input for this host, as far as the design tells it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub input: Value,
    /// A live run already working on the host: reconciling leaves it alone until that run
    /// ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<Uuid>,
}

/// `GET /v1/drift`: a node filter (as for the inventory) and the kinds to report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub racks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    /// Comma-separated drift kinds; every kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<String>,
}

/// The drift of the hosts a filter selects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DriftReport {
    pub revision: Option<String>,
    /// How many hosts were compared.
    pub hosts: usize,
    /// Sorted by host, then kind.
    pub drift: Vec<Drift>,
}

/// `POST /v1/reconcile`: submit the workflows that fix the drift of the selected hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// The hosts to reconcile; every host of the active design when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<NodeFilter>,
    /// The drift kinds to act on; every kind a workflow can fix when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DriftKind>,
    /// Input for each workflow, by workflow name, merged over what the drift gives (the
    /// provision's `root_password` reference, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, Value>,
    /// The firmware image URL of each component, for `firmware_behind` (the design gives
    /// versions, not images).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Plan only: answer what would be submitted, submit nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A run reconciliation submitted (or would submit), for hosts that share a fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReconcileRun {
    pub workflow: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub hosts: Vec<String>,
    /// Derived from the hosts and what the design says of each now, so that applying the
    /// same plan twice starts nothing new.
    pub idempotency_key: String,
    /// The run; absent in a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Uuid>,
    /// False when the key had already started this run.
    pub created: bool,
}

/// Drift left alone, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReconcileSkip {
    pub host: String,
    pub kind: DriftKind,
    pub reason: String,
}

/// What `POST /v1/reconcile` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReconcileOutcome {
    pub revision: Option<String>,
    pub runs: Vec<ReconcileRun>,
    pub skipped: Vec<ReconcileSkip>,
}
