//! Actions and helpers shared by the engine's integration tests. Every test runs the real
//! engine on a real store: a SQLite file in a temporary folder, or, with
//! `LARIAT_TEST_STORE=postgres`, a PostgreSQL database of its own on the server in
//! `LARIAT_TEST_POSTGRES` (`.ci/run` runs the suite both ways).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lariat_engine::{
    Action, Actions, Actor, Engine, EngineConfig, Event, EventKind, Format, Output, RunStatus,
    StepContext, StepError, StoreOptions,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

/// Returns `{"step": name, "item": item}`.
pub struct Noop;
#[async_trait]
impl Action for Noop {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        Ok(Output::Done(json!({"step": &*ctx.step, "item": ctx.item})))
    }
}

/// Reports what a machine might (a BMC's FRU text): NUL characters, in its output, or,
/// with `{"fail": true}`, in its error.
pub struct Nul;
#[async_trait]
impl Action for Nul {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        if ctx.input["fail"] == true {
            return Err(StepError::fatal("nul", "the BMC said \u{0}\u{0}"));
        }
        Ok(Output::Done(
            json!({"fru": "ab\u{0}c", "k\u{0}": "\\u0000 is text"}),
        ))
    }
}

/// Fails the first `fail_times` attempts (by attempt number), with `kind` and
/// `retryable` from the input; then succeeds with its input.
pub struct Flaky;
#[async_trait]
impl Action for Flaky {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let n = ctx.input["fail_times"].as_u64().unwrap_or(0) as u32;
        let kind = ctx.input["kind"]
            .as_str()
            .unwrap_or("transient")
            .to_string();
        let retryable = ctx.input["retryable"].as_bool().unwrap_or(true);
        if ctx.attempt <= n {
            let msg = format!("planned failure on attempt {}", ctx.attempt);
            return Err(if retryable {
                StepError::retryable(kind, msg)
            } else {
                StepError::fatal(kind, msg)
            });
        }
        Ok(Output::Done(ctx.input))
    }
}

/// Sleeps `ms` milliseconds, or until cancelled.
pub struct Sleep;
#[async_trait]
impl Action for Sleep {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let ms = ctx.input["ms"].as_u64().unwrap_or(50);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Output::Done(json!({"slept_ms": ms}))),
            _ = ctx.cancel.cancelled() => Err(StepError::fatal("cancelled", "sleep cancelled")),
        }
    }
}

/// Waits for a signal, with `timeout_ms` from the input if given.
pub struct Await;
#[async_trait]
impl Action for Await {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        Ok(Output::AwaitSignal {
            timeout: ctx.input["timeout_ms"].as_u64().map(Duration::from_millis),
        })
    }
}

pub struct Panics;
#[async_trait]
impl Action for Panics {
    async fn run(&self, _ctx: StepContext) -> Result<Output, StepError> {
        panic!("boom in an action")
    }
}

/// Records every run and compensation, in order; compensates itself. A compensation
/// fails while the input says `fail_compensation: true`.
#[derive(Clone, Default)]
pub struct Recorder {
    pub log: Arc<Mutex<Vec<String>>>,
    pub running: Arc<AtomicUsize>,
    pub max_running: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn entries(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl Action for Recorder {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let label = match &ctx.item {
            Some(v) => format!("{}[{}]", ctx.step, v.as_str().unwrap_or("?")),
            None => ctx.step.to_string(),
        };
        self.log.lock().unwrap().push(format!("run:{label}"));
        let ms = ctx.input["ms"].as_u64().unwrap_or(0);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        if ctx.input["fail_items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| Some(v) == ctx.item.as_ref()))
        {
            return Err(StepError::fatal(
                "planned",
                format!("{label} fails on purpose"),
            ));
        }
        Ok(Output::Done(json!({"did": label})))
    }

    fn compensates(&self) -> bool {
        true
    }

    async fn compensate(&self, ctx: StepContext) -> Result<Value, StepError> {
        let label = match &ctx.item {
            Some(v) => format!("{}[{}]", ctx.step, v.as_str().unwrap_or("?")),
            None => ctx.step.to_string(),
        };
        if ctx.input["fail_compensation"].as_bool() == Some(true) {
            self.log
                .lock()
                .unwrap()
                .push(format!("undo-failed:{label}"));
            return Err(StepError::fatal("planned", format!("cannot undo {label}")));
        }
        assert!(
            ctx.undoing.is_some(),
            "compensation gets the output it undoes"
        );
        self.log.lock().unwrap().push(format!("undo:{label}"));
        Ok(json!({"undid": label}))
    }
}

pub fn actions(rec: &Recorder) -> Actions {
    let mut a = Actions::new();
    a.register("noop", Noop)
        .register("flaky", Flaky)
        .register("sleep", Sleep)
        .register("await", Await)
        .register("panics", Panics)
        .register("record", rec.clone())
        .register("nul", Nul);
    a
}

/// Where one test's store lives, removed when it goes.
pub struct Place {
    pub dir: TempDir,
    pg: Option<lariat_db::testing::TestDatabase>,
}

impl Place {
    /// A new store of the kind `LARIAT_TEST_STORE` names (`sqlite`, the default, or
    /// `postgres`).
    pub async fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let pg = match std::env::var("LARIAT_TEST_STORE").as_deref() {
            Ok("postgres") => Some(
                lariat_db::testing::TestDatabase::create()
                    .await
                    .expect("LARIAT_TEST_STORE=postgres needs LARIAT_TEST_POSTGRES"),
            ),
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("LARIAT_TEST_STORE={other}: say sqlite or postgres"),
        };
        Place { dir, pg }
    }

    pub fn store(&self) -> StoreOptions {
        match &self.pg {
            Some(t) => StoreOptions::postgres(t.url.clone()),
            None => StoreOptions::new(self.dir.path().join("lariat.db")),
        }
    }
}

pub struct Harness {
    pub place: Place,
    pub engine: Engine,
    pub rec: Recorder,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut EngineConfig)) -> Harness {
        let place = Place::new().await;
        let rec = Recorder::default();
        let mut cfg = EngineConfig::at(place.store());
        tune(&mut cfg);
        let engine = Engine::start(cfg, actions(&rec)).await.unwrap();
        Harness { place, engine, rec }
    }

    /// An engine that asks `scheduling` for its windows and host groups.
    pub async fn with_scheduling(scheduling: lariat_engine::Scheduling) -> Harness {
        let place = Place::new().await;
        let rec = Recorder::default();
        let cfg = EngineConfig::at(place.store());
        let engine = Engine::start_with(cfg, actions(&rec), scheduling)
            .await
            .unwrap();
        Harness { place, engine, rec }
    }

    /// Shut the engine down and start a new one on the same store.
    pub async fn restart(&mut self, tune: impl FnOnce(&mut EngineConfig)) {
        self.engine.shutdown().await;
        let mut cfg = EngineConfig::at(self.place.store());
        tune(&mut cfg);
        self.engine = Engine::start(cfg, actions(&self.rec)).await.unwrap();
    }

    pub async fn register(&self, yaml: &str) -> i64 {
        self.engine
            .register_workflow(yaml, Format::Yaml)
            .await
            .unwrap()
            .version
    }

    pub async fn submit(&self, workflow: &str, targets: &[&str]) -> Uuid {
        self.engine
            .submit(
                lariat_engine::NewRun {
                    workflow: workflow.into(),
                    targets: targets.iter().map(|s| s.to_string()).collect(),
                    input: json!({"site": "test"}),
                    ..Default::default()
                },
                Actor::system(),
            )
            .await
            .unwrap()
            .run_id
    }

    pub async fn wait(&self, run: Uuid, statuses: &[RunStatus]) -> lariat_engine::RunRow {
        lariat_engine::wait_for_status(&self.engine, run, statuses, Duration::from_secs(20))
            .await
            .unwrap()
    }

    /// Wait until `step` (and `item`) of `run` reaches `status`.
    pub async fn wait_step(&self, run: Uuid, step: &str, status: &str) -> lariat_engine::RunView {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.engine.run_view(run).await.unwrap();
            if v.step(step).map(|s| s.task.row.status.as_str()) == Some(status) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "step {step} of {run} never became {status}: {:#?}",
                v.step(step)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn events(&self, run: Uuid) -> Vec<Event> {
        self.engine.events(run, 0, 10_000).await.unwrap()
    }
}

/// Kinds of a run's events, as names.
pub fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.step {
            Some(s) => format!("{}:{}", s, e.kind.name()),
            None => e.kind.name().to_string(),
        })
        .collect()
}

/// Check the invariants every run's log must hold: seq 1..n without gaps, one
/// `run_created` first, at most one completion per task and attempt series, and every
/// `started` attempt number strictly increasing per task.
pub fn check_log(events: &[Event]) {
    use std::collections::HashMap;
    assert!(
        !events.is_empty(),
        "a run has at least its run_created event"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as i64 + 1,
            "seq has a gap or repeat at {i}: {events:#?}"
        );
    }
    assert!(matches!(events[0].kind, EventKind::RunCreated { .. }));
    let mut completed: HashMap<(String, Option<u32>), bool> = HashMap::new();
    let mut last_attempt: HashMap<(String, Option<u32>), u32> = HashMap::new();
    for e in events {
        let Some(step) = &e.step else { continue };
        let key = (step.to_string(), e.item);
        match &e.kind {
            EventKind::Reset { .. } => {
                completed.insert(key.clone(), false);
            }
            k if k.is_completion() => {
                let prev = completed.insert(key.clone(), true);
                assert_ne!(prev, Some(true), "{key:?} completed twice: {events:#?}");
            }
            EventKind::Started | EventKind::Compensating => {
                let a = e.attempt.expect("attempt events carry the attempt");
                let prev = last_attempt.insert(key.clone(), a);
                assert!(
                    prev.is_none_or(|p| a > p),
                    "{key:?} attempt {a} started after attempt {prev:?}"
                );
            }
            _ => {}
        }
    }
}
