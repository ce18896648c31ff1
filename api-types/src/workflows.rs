//! Workflow definitions and their versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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
