//! Shared by the steps crate's integration tests: an attempt's context, and running an
//! action that must finish (not wait).
#![allow(dead_code)]

use std::sync::Arc;

use lariat_engine::{Action, Output, StepContext, StepError};
use serde_json::{Value, json};

/// Attempt `attempt` of a `provision` step on `item` (when fanned out) of a run targeting
/// `targets`, with `input`; no parameters, no needs, not a compensation.
pub fn attempt(item: Option<&str>, targets: &[&str], input: Value, attempt: u32) -> StepContext {
    StepContext {
        run_id: uuid::Uuid::nil(),
        workflow: Arc::from("provision"),
        step: Arc::from("step"),
        item: item.map(|i| json!(i)),
        attempt,
        idempotency_key: format!("r/step[{}]/{attempt}", item.unwrap_or("")),
        input,
        run_input: Arc::new(json!({})),
        sensitive: Arc::from([]),
        targets: Arc::new(targets.iter().map(|t| t.to_string()).collect()),
        needs: Default::default(),
        undoing: None,
        cancel: tokio_util::sync::CancellationToken::new(),
    }
}

/// Runs `action`; its output, or its error. Panics if it waits for a signal.
pub async fn finished(action: &dyn Action, ctx: StepContext) -> Result<Value, StepError> {
    match action.run(ctx).await? {
        Output::Done(v) => Ok(v),
        other => panic!("the action waits instead of finishing: {other:?}"),
    }
}
