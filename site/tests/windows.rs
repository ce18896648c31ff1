//! The site's window gate driving the real engine on a real SQLite file: steps wait for
//! their window from the design, start when it opens (on the far side of a
//! daylight-saving change too), do not start without their cutoff left, and the rest
//! waits for the next opening. The engine runs by a clock shifted to a few seconds before
//! the moment a test is about, so nothing waits for a night.

mod support;

use std::sync::Arc;

use std::time::Duration;
use support::Fixed;

use async_trait::async_trait;
use lariat_db::Clock;
use lariat_engine::{
    Action, Actions, Actor, Engine, EngineConfig, Format, NewRun, Output, RunStatus, Scheduling,
    StepContext, StepError, StepStatus, WaitFor,
};
use lariat_site::{CurrentDesign, DesignWindows, SiteDesign};
use lariat_workflows::design::load_files;
use lariat_workflows::windows::utc_ms;
use serde_json::json;
use tokio::sync::watch;

/// Sleeps `input.ms`.
struct Pause;
#[async_trait]
impl Action for Pause {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let ms = ctx.input["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Output::Done(json!({})))
    }
}

struct Site {
    engine: Engine,
    _dir: tempfile::TempDir,
    _follow: tokio::task::JoinHandle<()>,
}

async fn site(design_yaml: &str, clock_at: i64, workflow: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_files(&[("d.yaml".into(), design_yaml.into())]);
    // The hosts here are only what scopes need; only the windows must be sound.
    let bad: Vec<_> = loaded
        .report
        .errors()
        .filter(|f| f.kind == "MaintenanceWindow")
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let (tx, _) = watch::channel(CurrentDesign {
        revision: Some("r1".into()),
        loaded: Arc::new(loaded),
    });
    let design: Arc<dyn SiteDesign> = Arc::new(Fixed(tx));
    let gate = DesignWindows::new();
    let mut actions = Actions::new();
    actions.register("pause", Pause);
    let mut cfg = EngineConfig::new(dir.path().join("site.db"));
    cfg.clock = Clock::starting_at(clock_at);
    let engine = Engine::start_with(cfg, actions, Scheduling::of(gate.clone()))
        .await
        .unwrap();
    let follow = gate.follow(design, engine.clone());
    engine
        .register_workflow(workflow, Format::Yaml)
        .await
        .unwrap();
    Site {
        engine,
        _dir: dir,
        _follow: follow,
    }
}

async fn submit(engine: &Engine, workflow: &str, targets: &[&str]) -> uuid::Uuid {
    engine
        .submit(
            NewRun {
                workflow: workflow.into(),
                targets: targets.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            },
            Actor::system(),
        )
        .await
        .unwrap()
        .run_id
}

/// Waits until `check` holds of the run's view.
async fn until_view(
    engine: &Engine,
    run: uuid::Uuid,
    within: Duration,
    what: &str,
    check: impl Fn(&lariat_engine::RunView) -> bool,
) -> lariat_engine::RunView {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = engine.run_view(run).await.unwrap();
        if check(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {v:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WINDOW_AT_0230: &str = "\
kind: MaintenanceWindow
name: fw
spec: {cron: \"30 2 * * *\", duration: 1h, timezone: Europe/Amsterdam}
";

/// The night Amsterdam springs forward, 02:30 does not exist: the window opens at 03:00
/// CEST, 01:00 UTC, and the step waits until then, showing that time.
#[tokio::test]
async fn a_window_in_the_spring_forward_gap_opens_when_the_gap_ends() {
    let opens = utc_ms(2027, 3, 28, 1, 0, 0);
    let s = site(
        WINDOW_AT_0230,
        // Slack for a slow start on a loaded machine: the step must be seen waiting.
        opens - 4_000,
        "name: flash\nsteps:\n  - {name: flash, action: pause, window: {name: fw, cutoff: 10m}}\n",
    )
    .await;
    let run = submit(&s.engine, "flash", &[]).await;
    let v = until_view(&s.engine, run, Duration::from_secs(5), "waiting", |v| {
        v.step("flash").unwrap().task.row.status == StepStatus::Waiting
    })
    .await;
    let row = &v.step("flash").unwrap().task.row;
    assert_eq!(
        row.waiting_for,
        Some(WaitFor::Window {
            window: "fw".into()
        })
    );
    assert_eq!(row.wake_at, Some(opens), "shows when the window opens");
    lariat_engine::wait_for_status(
        &s.engine,
        run,
        &[RunStatus::Succeeded],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let v = s.engine.run_view(run).await.unwrap();
    let started = v.step("flash").unwrap().task.row.started_at.unwrap();
    assert!(
        started >= opens,
        "started {} ms before the window opened",
        opens - started
    );
    // The time from the opening to the start: printed, not asserted.
    println!("window opened -> step started: {} ms", started - opens);
}

/// A window of six seconds, items of three seconds each, one at a time, a cutoff of two
/// seconds: two items fit, the second one running to the close; the third does not
/// start and waits for the next night's opening.
#[tokio::test]
async fn items_that_would_not_finish_in_time_wait_for_the_next_opening() {
    let design = "\
kind: MaintenanceWindow
name: short
spec: {cron: \"0 2 * * *\", duration: 6s, timezone: Europe/Amsterdam}
";
    // 02:00 CEST on 2027-06-01 is 00:00 UTC.
    let opens = utc_ms(2027, 6, 1, 0, 0, 0);
    let s = site(
        design,
        // Slack for a slow start on a loaded machine: both items must fit the window.
        opens - 4_000,
        "name: roll\nsteps:\n  - name: fw\n    action: pause\n    input: {ms: 3000}\n    for_each: {over: targets, max_parallel: 1}\n    window: {name: short, cutoff: 2s}\n",
    )
    .await;
    let run = submit(&s.engine, "roll", &["h1", "h2", "h3"]).await;
    let v = until_view(&s.engine, run, Duration::from_secs(15), "two done", |v| {
        let items = &v.step("fw").unwrap().items;
        items
            .iter()
            .filter(|i| i.row.status == StepStatus::Succeeded)
            .count()
            == 2
            && items[2].row.status == StepStatus::Waiting
    })
    .await;
    let items = &v.step("fw").unwrap().items;
    let second_ended = items[1].row.ended_at.unwrap();
    assert!(
        second_ended >= opens + 5_500,
        "the second item ran to the window's close ({} ms after opening)",
        second_ended - opens
    );
    let third = &items[2].row;
    assert_eq!(third.started_at, None, "{third:?}");
    assert_eq!(
        third.wake_at,
        Some(utc_ms(2027, 6, 2, 0, 0, 0)),
        "waits for the next night"
    );
    // It stays waiting past the close: nothing starts after it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let v = s.engine.run_view(run).await.unwrap();
    assert_eq!(v.run.status, RunStatus::Running);
    assert_eq!(
        v.step("fw").unwrap().items[2].row.status,
        StepStatus::Waiting
    );
}

/// A freeze over the allow window holds a covered host; a host outside its scope goes on.
#[tokio::test]
async fn a_deny_window_holds_the_hosts_it_covers() {
    let design = "\
kind: Host
name: gold1
spec: {labels: {tier: gold}, never_provision: true}
---
kind: Host
name: plain1
spec: {never_provision: true}
---
kind: MaintenanceWindow
name: nightly
spec: {cron: \"0 1 * * *\", duration: 4h}
---
kind: MaintenanceWindow
name: freeze
spec: {cron: \"0 0 24 12 *\", duration: 72h, mode: deny, scope: {labels: {tier: gold}}}
";
    let s = site(
        design,
        utc_ms(2027, 12, 25, 2, 0, 0),
        "name: fw\nsteps:\n  - {name: fw, action: pause, for_each: {over: targets}, window: {name: nightly, cutoff: 1m}}\n",
    )
    .await;
    let run = submit(&s.engine, "fw", &["gold1", "plain1"]).await;
    let v = until_view(&s.engine, run, Duration::from_secs(5), "plain1 done", |v| {
        let items = &v.step("fw").unwrap().items;
        items[1].row.status == StepStatus::Succeeded && items[0].row.status == StepStatus::Waiting
    })
    .await;
    assert_eq!(
        v.step("fw").unwrap().items[0].row.wake_at,
        Some(utc_ms(2027, 12, 27, 1, 0, 0)),
        "gold1 may start at the first opening after the freeze"
    );
}
