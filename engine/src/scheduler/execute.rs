//! One attempt of an action, in a task of its own.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::action::{Output, StepError};

use super::command::Command;
use super::state::Dispatch;

/// Run one attempt: bounded by the step's timeout, stopped by cancellation, and with a
/// panicking action turned into a failed attempt.
pub(crate) async fn execute(d: Dispatch, inbox: mpsc::UnboundedSender<Command>) {
    let token = d.ctx.cancel.clone();
    let began = Instant::now();
    let result = match d.action {
        None => Err(StepError::fatal(
            "unknown_action",
            format!(
                "action '{}' is not registered in this executor",
                d.action_name
            ),
        )),
        Some(action) => {
            // Whatever the action logs carries the attempt's run, step, number and host.
            let span = tracing::info_span!(
                "attempt",
                run = %d.ctx.run_id,
                step = %d.ctx.step,
                attempt = d.ctx.attempt,
                host = d.ctx.item.as_ref().and_then(|i| i.as_str()),
            );
            let fut = async {
                if d.own_compensate {
                    action.compensate(d.ctx).await.map(Output::Done)
                } else {
                    action.run(d.ctx).await
                }
            };
            let guarded = AssertUnwindSafe(fut.instrument(span)).catch_unwind();
            tokio::select! {
                r = tokio::time::timeout(d.timeout, guarded) => match r {
                    Ok(Ok(r)) => r,
                    Ok(Err(panic)) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        Err(StepError::fatal("panic", format!("action '{}' panicked: {msg}", d.action_name)))
                    }
                    Err(_) => {
                        token.cancel();
                        Err(StepError::timeout(format!(
                            "attempt exceeded the step timeout of {}",
                            humantime::format_duration(d.timeout)
                        )))
                    }
                },
                _ = token.cancelled() => Err(StepError::fatal("cancelled", "attempt cancelled")),
            }
        }
    };
    metrics::histogram!("lariat_step_seconds", "action" => d.action_name.clone())
        .record(began.elapsed().as_secs_f64());
    let _ = inbox.send(Command::Done {
        run: d.run,
        key: d.key,
        attempt: d.attempt,
        phase: d.phase,
        result,
    });
}
