//! The actions steps run. A step names one of these by its registered name.
//!
//! Utility actions every workflow can use (`noop`, `sleep`, `await_signal`, `fail`), and
//! the provisioning actions of the workflow library ([`provision`]), which act on real
//! machines through their BMCs, the site's asset cache and the node's callback.

pub mod provision;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lariat_engine::{Action, Actions, Output, StepContext, StepError};
use serde_json::{Value, json};

pub use provision::{CurrentDesign, DesignView, FixedDesign, Provisioning};

/// Register every action of this crate. The provisioning actions work over an empty
/// design (every host is unknown) until [`Provisioning::register`] replaces them with ones
/// over the real design, BMC connector and asset cache.
pub fn register_builtin(actions: &mut Actions) {
    actions
        .register("noop", Noop)
        .register("sleep", Sleep)
        .register("await_signal", AwaitSignal)
        .register("fail", Fail);
    Arc::new(Provisioning::unconfigured()).register(actions);
}

/// Wraps every action of the workflow library. Expands `"${params.NAME}"` references in a
/// step's input from the run's parameters (the run input of a templated workflow) before
/// the action sees it; then `input.enabled: false` (the deprovision workflow's
/// `wipe: false`) turns the attempt into a recorded no-op, and the compensation of such a
/// no-op does nothing either.
pub struct WithParams<A>(pub A);

#[async_trait]
impl<A: Action> Action for WithParams<A> {
    async fn run(&self, mut ctx: StepContext) -> Result<Output, StepError> {
        ctx.input = lariat_workflows::template::expand(&ctx.input, &ctx.run_input);
        if ctx.input.get("enabled") == Some(&Value::Bool(false)) {
            return Ok(Output::Done(json!({
                "host": ctx.item,
                "skipped": true,
                "reason": "input.enabled is false",
            })));
        }
        self.0.run(ctx).await
    }

    fn compensates(&self) -> bool {
        self.0.compensates()
    }

    async fn compensate(&self, mut ctx: StepContext) -> Result<Value, StepError> {
        if ctx.undoing.as_ref().and_then(|u| u.get("skipped")) == Some(&Value::Bool(true)) {
            return Ok(json!({"host": ctx.item, "skipped": true}));
        }
        ctx.input = lariat_workflows::template::expand(&ctx.input, &ctx.run_input);
        self.0.compensate(ctx).await
    }
}

/// Does nothing and returns its input: a placeholder step, or a join point in a DAG.
pub struct Noop;

#[async_trait]
impl Action for Noop {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        Ok(Output::Done(ctx.input))
    }
}

/// Read a duration from `input[key]`: "30s", "5m", or a number of seconds.
fn duration(input: &Value, key: &str) -> Result<Option<Duration>, StepError> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => humantime::parse_duration(s).map(Some).map_err(|e| {
            StepError::fatal(
                "bad_input",
                format!("input.{key} '{s}' is not a duration: {e}"),
            )
        }),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if (0.0..1e9).contains(&f) => Ok(Some(Duration::from_secs_f64(f))),
            _ => Err(StepError::fatal(
                "bad_input",
                format!("input.{key} {n} is not a number of seconds"),
            )),
        },
        Some(other) => Err(StepError::fatal(
            "bad_input",
            format!("input.{key} must be a duration like \"30s\", got {other}"),
        )),
    }
}

/// Waits `input.duration` ("10s"); stops early when the run is cancelled.
pub struct Sleep;

#[async_trait]
impl Action for Sleep {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let d = duration(&ctx.input, "duration")?.unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(Output::Done(json!({"slept": humantime::format_duration(d).to_string()}))),
            _ = ctx.cancel.cancelled() => Err(StepError::fatal("cancelled", "sleep cancelled")),
        }
    }
}

/// Waits for `signal(run, step, payload)`, up to `input.timeout` (default: the step's
/// timeout). The payload becomes the step's output. An operator approval gate, or the
/// node's callback until the boot path sends it itself.
pub struct AwaitSignal;

#[async_trait]
impl Action for AwaitSignal {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        Ok(Output::AwaitSignal {
            timeout: duration(&ctx.input, "timeout")?,
        })
    }
}

/// Fails its first `input.times` attempts (default: every attempt) with error kind
/// `input.kind` (default "drill"), retryable unless `input.retryable` is false; then
/// succeeds. For failure drills: rehearsing retry, rollback and alerting.
pub struct Fail;

#[async_trait]
impl Action for Fail {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let times = match ctx.input.get("times") {
            None | Some(Value::Null) => u64::MAX,
            Some(v) => v.as_u64().ok_or_else(|| {
                StepError::fatal("bad_input", format!("input.times must be a count, got {v}"))
            })?,
        };
        if u64::from(ctx.attempt) > times {
            return Ok(Output::Done(json!({"failed_attempts": times})));
        }
        let kind = ctx.input["kind"].as_str().unwrap_or("drill").to_string();
        let msg = format!("planned failure (attempt {})", ctx.attempt);
        Err(if ctx.input["retryable"].as_bool() == Some(false) {
            StepError::fatal(kind, msg)
        } else {
            StepError::retryable(kind, msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx(input: Value, attempt: u32) -> StepContext {
        StepContext {
            run_id: uuid::Uuid::nil(),
            workflow: Arc::from("w"),
            step: Arc::from("s"),
            item: None,
            attempt,
            idempotency_key: format!("k/{attempt}"),
            input,
            run_input: Arc::new(Value::Null),
            sensitive: Arc::from([]),
            targets: Arc::new(Vec::new()),
            needs: Default::default(),
            undoing: None,
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn fail_fails_the_first_attempts_then_succeeds() {
        let input = json!({"times": 2, "kind": "bmc"});
        let e = Fail.run(ctx(input.clone(), 1)).await.unwrap_err();
        assert_eq!((e.kind.as_str(), e.retryable), ("bmc", true));
        assert!(Fail.run(ctx(input.clone(), 2)).await.is_err());
        assert!(Fail.run(ctx(input, 3)).await.is_ok());
        let e = Fail
            .run(ctx(json!({"retryable": false}), 7))
            .await
            .unwrap_err();
        assert!(!e.retryable);
        let e = Fail.run(ctx(json!({"times": "x"}), 1)).await.unwrap_err();
        assert_eq!(e.kind, "bad_input");
    }

    #[tokio::test]
    async fn durations_are_read_the_operator_way() {
        let out = AwaitSignal
            .run(ctx(json!({"timeout": "90s"}), 1))
            .await
            .unwrap();
        assert_eq!(
            out,
            Output::AwaitSignal {
                timeout: Some(Duration::from_secs(90))
            }
        );
        let e = AwaitSignal
            .run(ctx(json!({"timeout": "soon"}), 1))
            .await
            .unwrap_err();
        assert!(e.message.contains("input.timeout 'soon' is not a duration"));
        let out = Sleep.run(ctx(json!({"duration": 0.01}), 1)).await.unwrap();
        assert!(matches!(out, Output::Done(_)));
    }

    #[tokio::test]
    async fn a_disabled_library_step_is_a_recorded_no_op_and_so_is_its_undo() {
        // Fail would fail: the wrapper must not reach it.
        let mut c = ctx(json!({"enabled": "${params.wipe}"}), 1);
        c.run_input = Arc::new(json!({"wipe": false}));
        c.item = Some(json!("h1"));
        let out = WithParams(Fail).run(c.clone()).await.unwrap();
        let Output::Done(v) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (v["host"].as_str(), v["skipped"].as_bool()),
            (Some("h1"), Some(true))
        );
        c.undoing = Some(v);
        let undone = WithParams(Fail).compensate(c.clone()).await.unwrap();
        assert_eq!(undone["skipped"], true);
        // Enabled, the action runs.
        c.run_input = Arc::new(json!({"wipe": true}));
        assert!(WithParams(Fail).run(c).await.is_err());
    }

    #[tokio::test]
    async fn sleep_stops_on_cancel() {
        let c = ctx(json!({"duration": "1h"}), 1);
        let token = c.cancel.clone();
        let h = tokio::spawn(Sleep.run(c));
        token.cancel();
        let e = h.await.unwrap().unwrap_err();
        assert_eq!(e.kind, "cancelled");
    }
}
