//! The design: where it comes from, its revisions and their findings, site pins, and the
//! hosts it defines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// The design source and every recorded revision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DesignOverview {
    /// Where the design comes from; `null` when no repository is configured.
    pub source: Option<DesignSource>,
    /// The revision in force; `null` before one was accepted.
    pub active: Option<Revision>,
    /// Newest first.
    pub revisions: Vec<Revision>,
    /// Sites held to a revision or tag.
    pub pins: Vec<SitePin>,
}

/// The design repository a server follows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DesignSource {
    pub repo: String,
    pub branch: String,
    /// How often the branch is fetched; `null` when only the webhook and sync fetch.
    pub poll_seconds: Option<u64>,
    /// Whether a push webhook secret is configured.
    pub webhook: bool,
}

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    /// The design in force.
    Active,
    /// Valid, but a later revision replaced it (a site may still be pinned to it).
    Accepted,
    /// Has errors; never became active.
    Rejected,
}

/// One fetched and validated commit of the design repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Revision {
    pub id: i64,
    pub commit: String,
    pub branch: String,
    /// The commit's first message line.
    pub summary: String,
    /// What fetched it: `startup`, `poll`, `webhook` or `manual`.
    pub trigger: String,
    pub fetched_at: i64,
    pub status: RevisionStatus,
    /// No error finding.
    pub accepted: bool,
    pub errors: usize,
    pub warnings: usize,
}

/// A site held to one revision or tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SitePin {
    pub site: String,
    /// As the operator wrote it: a commit id or a tag.
    pub rev: String,
    /// The commit it named when pinned.
    pub commit: String,
    pub pinned_at: i64,
    pub pinned_by: String,
}

/// How bad a finding is. A design with any error is never made active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FindingLevel {
    Error,
    Warning,
}

/// One thing a validation rule found in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    pub level: FindingLevel,
    /// Stable id of the rule, e.g. `ip-outside-cidr`.
    pub rule: String,
    pub message: String,
    /// Document kind (`Host`, `Network`...), or empty when the file itself is at fault.
    pub kind: String,
    /// Document name, or empty when the document has none.
    pub name: String,
    /// Field path inside the document, e.g. `spec.interfaces[eth0].address`.
    pub path: String,
    /// File the document came from, relative to the design root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line in `file`, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// A revision and its findings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionFindings {
    pub revision: Revision,
    pub findings: Vec<Finding>,
}

/// A validation report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationReport {
    /// No error finding (warnings allowed).
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    pub findings: Vec<Finding>,
}

/// `POST /v1/designs/validate` as JSON: the design's files by path.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DesignFiles {
    /// YAML text by file path (`sites/dc1.yaml`: "kind: Site ...").
    pub files: BTreeMap<String, String>,
}

/// `GET /v1/designs` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevisionsQuery {
    /// Revisions to list, newest first; 50 when absent, at most 500.
    pub limit: Option<u32>,
}

/// `PUT /v1/sites/{site}/pin`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSite {
    /// A commit id or a tag of the design repository, fetched and accepted.
    pub rev: String,
}

/// `GET /v1/hosts` query: a node filter. Comma-separated lists; `labels` as `k=v,k2=v2`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HostsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub racks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<String>,
    /// `union` (any criterion) or `intersection` (every criterion); `intersection` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// The hosts of the active design a node filter selects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    /// The active revision's commit; `null` before one was accepted.
    pub revision: Option<String>,
    /// Sorted by name.
    pub hosts: Vec<String>,
}

/// What a push webhook did: fetched a revision, or ignored the push and says why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WebhookOutcome {
    Fetched { revision: Revision },
    Ignored { ignored: String },
}

/// A host as the design defines it after profile inheritance. Its shape is the design
/// schema's (`lariat design show host` prints it).
pub type ResolvedHost = Value;
