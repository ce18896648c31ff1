//! The one error shape every route answers with.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The body of every error response: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// What went wrong, for people (`message`) and for programs (`code`, `details`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable, machine-readable: `malformed_json`, `invalid_body`, `invalid_path`,
    /// `invalid_query`, `invalid_definition`, `invalid_input`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `invalid_state`, `not_waiting`, `step_not_failed`,
    /// `payload_too_large`, `unsupported_media_type`, `unavailable`, `internal`.
    pub code: String,
    /// One sentence that says what to fix.
    pub message: String,
    /// Extra structure when there is some (the problems of a definition, a run's status);
    /// `null` otherwise.
    #[serde(default)]
    pub details: Value,
}
