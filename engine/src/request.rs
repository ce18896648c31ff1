//! What callers hand the engine and what it answers: a new run, a registered version,
//! what start found.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::EngineError;

/// A request to start a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewRun {
    pub workflow: String,
    /// The latest version when absent.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub input: Value,
    /// Hosts the run targets; a `for_each: {over: targets}` step fans out over them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Submitting again with the same key returns the first run instead of a second one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The run's id, when another executor chose it: a site agent starting a run the
    /// central node assigned to it. A submit of an id that exists starts nothing.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The runs one submit made, one per site, share it.
    #[serde(default)]
    pub group: Option<Uuid>,
}

/// The run a submit refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub run_id: Uuid,
    /// False when the idempotency key matched an existing run.
    pub created: bool,
}

/// A registered workflow version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub name: String,
    pub version: i64,
    /// False when the definition equals the latest version (no new version made).
    pub created: bool,
}

/// What happened at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeReport {
    /// Live runs taken over.
    pub runs: usize,
    /// Attempts found executing, recorded as interrupted and started again.
    pub interrupted: usize,
    /// Durable timers re-armed.
    pub timers: usize,
    /// From opening the store to every resumed run scheduled again (committed).
    pub elapsed_ms: f64,
}

impl NewRun {
    /// The checks `submit` makes of a new run before anything else: names, targets, key,
    /// version. The input is checked against the pinned version's parameters after.
    pub(crate) fn check(&self) -> Result<(), EngineError> {
        let r = self;
        if r.workflow.trim().is_empty() {
            return Err(EngineError::InvalidInput("`workflow` is required".into()));
        }
        if r.targets.len() > 100_000 {
            return Err(EngineError::InvalidInput(format!(
                "{} targets; at most 100000 per run",
                r.targets.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &r.targets {
            if t.is_empty() || t.len() > 253 || t.chars().any(|c| c.is_control() || c == ' ') {
                return Err(EngineError::InvalidInput(format!(
                    "target '{}' is not a host name (1 to 253 characters, no spaces)",
                    t.escape_default()
                )));
            }
            if !seen.insert(t) {
                return Err(EngineError::InvalidInput(format!(
                    "target '{t}' is listed twice"
                )));
            }
        }
        if let Some(k) = &r.idempotency_key
            && (k.is_empty() || k.len() > 200 || k.contains('\u{0}'))
        {
            return Err(EngineError::InvalidInput(
                "idempotency_key must be 1 to 200 characters, none of them NUL".into(),
            ));
        }
        if r.version.is_some_and(|v| v < 1) {
            return Err(EngineError::InvalidInput("version starts at 1".into()));
        }
        refuse_nul("input", &r.input)?;
        Ok(())
    }
}

/// Refuse operator input holding a NUL character, naming where (see
/// [`crate::store::nul`]): no database stores it alike.
pub(crate) fn refuse_nul(what: &str, v: &Value) -> Result<(), EngineError> {
    match crate::store::nul::nul_in(v) {
        None => Ok(()),
        Some(at) => Err(EngineError::InvalidInput(format!(
            "{what}{} holds a NUL character (U+0000), which cannot be stored; remove it",
            if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            }
        ))),
    }
}
