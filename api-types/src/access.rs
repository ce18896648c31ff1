//! Who may use the API: the bearer tokens an admin manages, and the audit trail of what
//! every credential did.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A bearer token, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Its name, unique for ever: a revoked token's name is not given to another, so the
    /// audit trail names one credential.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub created_at: i64,
    /// Who created it: a token's name, or `local:<user>` for `lariat token create`.
    pub created_by: String,
    /// When it stops being accepted; absent: never (tokens made before expiry existed, or
    /// with `--expires never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// The last request it authenticated, to the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// The client address of that request, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_from: Option<String>,
    /// `active`, `expired` or `revoked`, at the time of the answer.
    pub state: String,
}

/// Every token, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

/// A token to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// A name (1 to 64 of letters, digits, `.`, `_`, `-`, `@`); `<role>-<8 hex digits>`
    /// when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// How long it is accepted: a duration such as `30d` or `12h` (a minute to 5 years),
    /// or `never`; 90 days when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A token just created. `token` is the secret: it is not stored and is shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: Token,
}

/// One thing done through the API or the CLI that changes what Lariat does or who may
/// use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Its place in the trail, increasing.
    pub seq: i64,
    pub at: i64,
    /// The credential: a token's name, `local:<user>` for the CLI on the database, or
    /// `webhook` for a signed push.
    pub who: String,
    /// The credential's role, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The client's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// What was done, as `noun.verb`: `run.submit`, `run.cancel`, `step.retry`,
    /// `token.create`, `token.revoke`, `design.sync`, `site.pin`, `window.open`, ...
    pub action: String,
    /// What it was done to: a run id, a token's or window's name, a site.
    pub target: String,
    /// What else the action carried (never a secret): a retry's input keys, a pin's
    /// revision, an override's reason and end.
    #[serde(default)]
    pub detail: Value,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only what this credential did.
    #[serde(default)]
    pub who: Option<String>,
    /// Only this action (`run.cancel`), or a noun's every action (`token`).
    #[serde(default)]
    pub action: Option<String>,
    /// Only what was done to this target.
    #[serde(default)]
    pub target: Option<String>,
    /// Only entries at or after this time (ms).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only entries before this sequence number (paging).
    #[serde(default)]
    pub before: Option<i64>,
    /// At most this many (1 to 1,000; 100 when absent).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /v1/whoami`: the credential a request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}
