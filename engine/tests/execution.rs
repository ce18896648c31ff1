//! Execution: ordering, retries on durable timers, attempt caps, timeouts, signals,
//! fan-out, windows, the concurrency bound.
mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Harness, check_log, kinds};
use lariat_engine::{EngineError, EventKind, ManualWindows, RunStatus, StepStatus};
use serde_json::json;

const CHAIN: &str = r#"
name: chain
steps:
  - {name: validate, action: record}
  - {name: stage, action: record, needs: [validate]}
  - {name: power_off, action: record, needs: [stage]}
  - {name: left, action: record, needs: [power_off]}
  - {name: right, action: record, needs: [power_off]}
  - {name: verify, action: record, needs: [left, right]}
"#;

#[tokio::test]
async fn chain_runs_in_dependency_order_and_logs_every_transition() {
    let h = Harness::new().await;
    h.register(CHAIN).await;
    let run = h.submit("chain", &[]).await;
    let row = h.wait(run, &[RunStatus::Succeeded]).await;
    assert!(row.ended_at.is_some());
    let log = h.rec.entries();
    let pos = |s: &str| log.iter().position(|x| x == &format!("run:{s}")).unwrap();
    assert!(pos("validate") < pos("stage") && pos("stage") < pos("power_off"));
    assert!(pos("left") < pos("verify") && pos("right") < pos("verify"));

    let events = h.events(run).await;
    check_log(&events);
    let k = kinds(&events);
    assert_eq!(k.first().unwrap(), "run_created");
    assert_eq!(k.last().unwrap(), "run_succeeded");
    for s in ["validate", "stage", "power_off", "left", "right", "verify"] {
        assert!(k.contains(&format!("{s}:started")) && k.contains(&format!("{s}:succeeded")));
    }
    for e in &events {
        assert!(e.at > 0 && &*e.owner == "central");
        if matches!(e.kind, EventKind::Started | EventKind::Succeeded { .. }) {
            assert_eq!(e.attempt, Some(1));
        }
    }
    let view = h.engine.run_view(run).await.unwrap();
    assert!(
        view.steps
            .iter()
            .all(|s| s.task.row.status == StepStatus::Succeeded)
    );
    assert_eq!(
        view.steps[0].name, "validate",
        "steps are listed in definition order"
    );
    assert_eq!(view.steps[2].task.attempts.len(), 1);
    // Downstream steps see the outputs of what they need.
    assert_eq!(view.step("verify").unwrap().needs, vec!["left", "right"]);
}

#[tokio::test]
async fn retries_show_as_retrying_then_succeed() {
    let h = Harness::new().await;
    h.register(
        r#"
name: r
steps:
  - name: flaky
    action: flaky
    input: {fail_times: 2}
    retry: {max_attempts: 3, initial_backoff: 300ms, multiplier: 1, jitter: 0}
"#,
    )
    .await;
    let run = h.submit("r", &[]).await;
    let view = h.wait_step(run, "flaky", "retrying").await;
    let step = view.step("flaky").unwrap();
    assert!(
        step.task.row.wake_at.is_some(),
        "retrying shows the next attempt time"
    );
    assert!(
        step.task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("planned failure on attempt 1"),
        "retrying shows the last error: {:?}",
        step.task.row.error
    );
    assert_eq!(view.run.status, RunStatus::Running);
    // The durable timer is in the store while the step waits.
    h.wait(run, &[RunStatus::Succeeded]).await;
    let view = h.engine.run_view(run).await.unwrap();
    let attempts = &view.step("flaky").unwrap().task.attempts;
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.status.as_str())
            .collect::<Vec<_>>(),
        ["failed", "failed", "succeeded"]
    );
    assert!(attempts[0].error.as_deref().unwrap().contains("transient"));
    let events = h.events(run).await;
    check_log(&events);
    let retrying: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Retrying { .. }))
        .collect();
    assert_eq!(retrying.len(), 2);
    assert!(
        retrying
            .iter()
            .all(|e| e.error.is_some() && e.attempt.is_some())
    );
}

#[tokio::test]
async fn attempts_are_capped_and_the_run_stops_failed() {
    let h = Harness::new().await;
    h.register(
        r#"
name: capped
steps:
  - name: never
    action: flaky
    input: {fail_times: 100}
    retry: {max_attempts: 3, initial_backoff: 10ms, jitter: 0}
  - {name: after, action: record, needs: [never]}
"#,
    )
    .await;
    let run = h.submit("capped", &[]).await;
    let row = h.wait(run, &[RunStatus::Failed]).await;
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .contains("step 'never' failed"),
        "{row:?}"
    );
    // Nothing keeps retrying: no new attempt appears later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = h.engine.run_view(run).await.unwrap();
    let never = view.step("never").unwrap();
    assert_eq!(never.task.attempts.len(), 3);
    assert_eq!(never.task.row.status, StepStatus::Failed);
    assert!(
        never
            .task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("attempt 3 of 3, none left")
    );
    assert_eq!(
        view.step("after").unwrap().task.row.status,
        StepStatus::Pending
    );
    assert!(!h.rec.entries().contains(&"run:after".to_string()));
}

#[tokio::test]
async fn fatal_errors_and_unlisted_kinds_do_not_retry() {
    let h = Harness::new().await;
    h.register(
        r#"
name: f
steps:
  - {name: fatal, action: flaky, input: {fail_times: 5, retryable: false}, retry: {max_attempts: 5, initial_backoff: 10ms}}
"#,
    )
    .await;
    h.register(
        r#"
name: k
steps:
  - {name: kind, action: flaky, input: {fail_times: 5, kind: bmc_auth}, retry: {max_attempts: 5, initial_backoff: 10ms, retry_on: [timeout]}}
"#,
    )
    .await;
    let a = h.submit("f", &[]).await;
    let b = h.submit("k", &[]).await;
    h.wait(a, &[RunStatus::Failed]).await;
    h.wait(b, &[RunStatus::Failed]).await;
    let va = h.engine.run_view(a).await.unwrap();
    assert_eq!(va.steps[0].task.attempts.len(), 1);
    assert!(
        va.steps[0]
            .task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("not retryable")
    );
    let vb = h.engine.run_view(b).await.unwrap();
    assert_eq!(vb.steps[0].task.attempts.len(), 1);
    assert!(
        vb.steps[0]
            .task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("not in retry_on")
    );
}

#[tokio::test]
async fn timeouts_fail_the_attempt_and_panics_are_contained() {
    let h = Harness::new().await;
    h.register(
        r#"
name: slow
steps:
  - {name: slow, action: sleep, input: {ms: 5000}, timeout: 100ms, retry: {max_attempts: 2, initial_backoff: 10ms}}
"#,
    )
    .await;
    h.register("name: p\nsteps:\n  - {name: boom, action: panics, retry: {max_attempts: 3}}\n")
        .await;
    let a = h.submit("slow", &[]).await;
    let b = h.submit("p", &[]).await;
    h.wait(a, &[RunStatus::Failed]).await;
    h.wait(b, &[RunStatus::Failed]).await;
    let va = h.engine.run_view(a).await.unwrap();
    assert_eq!(va.steps[0].task.attempts.len(), 2, "a timeout is retryable");
    assert!(
        va.steps[0]
            .task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("timeout")
    );
    let vb = h.engine.run_view(b).await.unwrap();
    assert_eq!(vb.steps[0].task.attempts.len(), 1, "a panic is fatal");
    assert!(
        vb.steps[0]
            .task
            .row
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: boom")
    );
}

const SIGNAL: &str = r#"
name: s
steps:
  - {name: boot, action: record}
  - {name: await_callback, action: await, needs: [boot]}
  - {name: verify, action: noop, needs: [await_callback]}
"#;

#[tokio::test]
async fn signal_completes_a_waiting_step_with_its_payload() {
    let h = Harness::new().await;
    h.register(SIGNAL).await;
    let run = h.submit("s", &[]).await;

    // Too early: the step is not waiting yet (or has not even started).
    let view = h.wait_step(run, "boot", "succeeded").await;
    let _ = view;
    let err = h
        .engine
        .signal(
            run,
            "verify",
            None,
            json!({}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotWaiting { .. }), "{err}");
    assert!(err.to_string().contains("not waiting for a signal"));

    let view = h.wait_step(run, "await_callback", "waiting").await;
    let w = view.step("await_callback").unwrap();
    assert_eq!(w.task.row.waiting_for, Some(lariat_engine::WaitFor::Signal));
    assert!(w.task.row.wake_at.is_some(), "a wait has a deadline");

    let err = h
        .engine
        .signal(
            uuid::Uuid::now_v7(),
            "await_callback",
            None,
            json!({}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownRun(_)), "{err}");
    let err = h
        .engine
        .signal(run, "nope", None, json!({}), lariat_engine::Actor::system())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownStep { .. }), "{err}");

    h.engine
        .signal(
            run,
            "await_callback",
            None,
            json!({"ip": "10.0.0.5", "disks": 2}),
            lariat_engine::Actor {
                who: "bmc-callback".into(),
                from: Some("10.0.0.5".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.wait(run, &[RunStatus::Succeeded]).await;
    let view = h.engine.run_view(run).await.unwrap();
    assert_eq!(
        view.step("await_callback").unwrap().task.row.output,
        Some(json!({"ip": "10.0.0.5", "disks": 2}))
    );
    let audited = h.events(run).await.into_iter().find_map(|e| match e.kind {
        EventKind::Operator {
            verb,
            actor,
            detail,
        } if verb == "signal" => Some((actor, detail)),
        _ => None,
    });
    let (actor, detail) = audited.expect("who signalled is in the run's history");
    assert_eq!(
        (actor.who.as_str(), detail["step"].as_str()),
        ("bmc-callback", Some("await_callback"))
    );
    // A second signal for the finished run changes nothing and says why.
    let err = h
        .engine
        .signal(
            run,
            "await_callback",
            None,
            json!({}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotWaiting {
                status: StepStatus::Succeeded,
                ..
            }
        ),
        "{err}"
    );
    check_log(&h.events(run).await);
}

#[tokio::test]
async fn a_wait_without_signal_times_out_and_retries() {
    let h = Harness::new().await;
    h.register(
        r#"
name: t
steps:
  - {name: cb, action: await, input: {timeout_ms: 50}, retry: {max_attempts: 2, initial_backoff: 10ms}}
"#,
    )
    .await;
    let run = h.submit("t", &[]).await;
    let row = h.wait(run, &[RunStatus::Failed]).await;
    assert!(row.error.unwrap().contains("no signal arrived"));
    let v = h.engine.run_view(run).await.unwrap();
    assert_eq!(v.steps[0].task.attempts.len(), 2);
}

#[tokio::test]
async fn fan_out_respects_max_parallel_and_max_failures() {
    let h = Harness::new().await;
    h.register(
        r#"
name: fan
steps:
  - name: power
    action: record
    input: {ms: 30, fail_items: [h3]}
    for_each: {over: targets, max_parallel: 2, max_failures: 1}
  - {name: after, action: record, needs: [power]}
"#,
    )
    .await;
    let hosts = ["h1", "h2", "h3", "h4", "h5"];
    let run = h.submit("fan", &hosts).await;
    h.wait(run, &[RunStatus::Succeeded]).await;
    assert_eq!(
        h.rec.max_running.load(Ordering::SeqCst),
        2,
        "max_parallel bounds the items"
    );
    let view = h.engine.run_view(run).await.unwrap();
    let power = view.step("power").unwrap();
    assert_eq!(power.items.len(), 5);
    let failed: Vec<_> = power
        .items
        .iter()
        .filter(|i| i.row.status == StepStatus::Failed)
        .map(|i| i.row.item_value.clone().unwrap())
        .collect();
    assert_eq!(failed, vec![json!("h3")]);
    assert_eq!(power.task.row.status, StepStatus::Succeeded);
    check_log(&h.events(run).await);

    // Two failures with max_failures 1 fail the step and the run; remaining items wait.
    h.register(
        r#"
name: fan2
steps:
  - name: power
    action: record
    input: {fail_items: [a, b]}
    for_each: {over: [a, b, c, d, e, f], max_parallel: 2, max_failures: 1}
"#,
    )
    .await;
    let run = h.submit("fan2", &[]).await;
    let row = h.wait(run, &[RunStatus::Failed]).await;
    assert!(
        row.error
            .unwrap()
            .contains("2 of 6 items failed (max_failures 1)")
    );
    let view = h.engine.run_view(run).await.unwrap();
    let pending = view.steps[0]
        .items
        .iter()
        .filter(|i| i.row.status == StepStatus::Pending)
        .count();
    // a and b start; a's failure is within budget, so c starts; b's failure exceeds it,
    // so d, e and f never start.
    assert_eq!(
        pending, 3,
        "no more items start once max_failures is exceeded"
    );
    assert_eq!(view.steps[0].items[2].row.status, StepStatus::Succeeded);
}

/// Racks and rows from a table, as a site's design would place its hosts.
struct Floor(HashMap<&'static str, (&'static str, &'static str)>);

impl Floor {
    /// The host's value for `key`, or "unplaced", as the limits count it.
    fn value(&self, host: &str, key: &str) -> String {
        lariat_engine::HostGroups::group(self, host, key).unwrap_or_else(|| "unplaced".into())
    }
}

impl lariat_engine::HostGroups for Floor {
    fn group(&self, host: &str, key: &str) -> Option<String> {
        let (rack, row) = self.0.get(host)?;
        match key {
            "rack" => Some(rack.to_string()),
            "row" => Some(row.to_string()),
            _ => None,
        }
    }
}

/// Walking the log in order: the most items of `step` in progress at once per group (as
/// `group` names an item's host's group), and in all.
fn most_at_once(
    events: &[lariat_engine::Event],
    step: &str,
    group: impl Fn(&str) -> String,
) -> (HashMap<String, usize>, usize) {
    let mut hosts = Vec::new();
    let mut now: HashMap<String, usize> = HashMap::new();
    let mut most: HashMap<String, usize> = HashMap::new();
    let (mut all_now, mut all_most) = (0, 0);
    for e in events.iter().filter(|e| e.step.as_deref() == Some(step)) {
        if let EventKind::Expanded { items } = &e.kind {
            hosts = items
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
        }
        let Some(i) = e.item else { continue };
        let g = group(&hosts[i as usize]);
        match &e.kind {
            EventKind::Started => {
                let n = now.entry(g.clone()).or_default();
                *n += 1;
                let m = most.entry(g).or_default();
                *m = (*m).max(*n);
                all_now += 1;
                all_most = all_most.max(all_now);
            }
            EventKind::Succeeded { .. } | EventKind::Failed => {
                *now.entry(g).or_default() -= 1;
                all_now -= 1;
            }
            _ => {}
        }
    }
    (most, all_most)
}

#[tokio::test]
async fn rolling_limits_start_one_host_per_rack() {
    let floor = std::sync::Arc::new(Floor(HashMap::from([
        ("a1", ("r1", "east")),
        ("a2", ("r1", "east")),
        ("a3", ("r1", "east")),
        ("b1", ("r2", "east")),
        ("b2", ("r2", "east")),
        ("c1", ("r3", "west")),
        ("c2", ("r3", "west")),
    ])));
    let h = Harness::with_scheduling(lariat_engine::Scheduling {
        windows: std::sync::Arc::new(ManualWindows::new()),
        groups: floor.clone(),
    })
    .await;
    h.register(
        r#"
name: campaign
steps:
  - name: flash
    action: record
    input: {ms: 20}
    for_each: {over: targets, max_parallel: 10, max_per: {rack: 1}}
  - name: cycle
    action: record
    needs: [flash]
    input: {ms: 20}
    for_each: {over: targets, max_per: {rack: 2, row: 1}}
"#,
    )
    .await;
    // u1 and u2 are in no rack the floor knows: they count as one group.
    let hosts = ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "u1", "u2"];
    let run = h.submit("campaign", &hosts).await;
    h.wait(run, &[RunStatus::Succeeded]).await;
    let events = h.events(run).await;
    check_log(&events);

    let (per_rack, at_once) = most_at_once(&events, "flash", |h| floor.value(h, "rack"));
    assert_eq!(per_rack.len(), 4, "{per_rack:?}");
    for (rack, n) in &per_rack {
        assert_eq!(*n, 1, "rack {rack} had {n} hosts flashing at once");
    }
    assert_eq!(
        at_once, 4,
        "one host of each rack, and one unplaced host, at once"
    );

    // Two limits: both hold. Two per rack, but one per row, so the row binds.
    let (per_row, at_once) = most_at_once(&events, "cycle", |h| floor.value(h, "row"));
    for (row, n) in &per_row {
        assert_eq!(*n, 1, "row {row} had {n} hosts cycling at once");
    }
    assert_eq!(at_once, 3, "east, west and unplaced: {per_row:?}");
    let view = h.engine.run_view(run).await.unwrap();
    assert!(
        view.step("cycle")
            .unwrap()
            .items
            .iter()
            .all(|i| i.row.status == StepStatus::Succeeded)
    );
}

#[tokio::test]
async fn empty_fan_out_is_skipped_and_dependents_run() {
    let h = Harness::new().await;
    h.register(
        "name: e\nsteps:\n  - {name: each, action: record, for_each: {over: targets}}\n  - {name: next, action: record, needs: [each]}\n",
    )
    .await;
    let run = h.submit("e", &[]).await;
    h.wait(run, &[RunStatus::Succeeded]).await;
    let v = h.engine.run_view(run).await.unwrap();
    assert_eq!(v.step("each").unwrap().task.row.status, StepStatus::Skipped);
    assert_eq!(
        v.step("next").unwrap().task.row.status,
        StepStatus::Succeeded
    );
}

#[tokio::test]
async fn window_gates_a_step_until_it_opens() {
    let windows = std::sync::Arc::new(ManualWindows::new());
    let h = Harness::with_scheduling(lariat_engine::Scheduling::manual(windows.clone())).await;
    let (engine, rec) = (&h.engine, &h.rec);
    h.register("name: fw\nsteps:\n  - {name: prep, action: record}\n  - {name: flash, action: record, needs: [prep], window: fw-sat}\n").await;
    let run = h.submit("fw", &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = engine.run_view(run).await.unwrap();
        let f = v.step("flash").unwrap();
        if f.task.row.status == StepStatus::Waiting {
            assert_eq!(
                f.task.row.waiting_for,
                Some(lariat_engine::WaitFor::Window {
                    window: "fw-sat".into()
                })
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !rec.entries().contains(&"run:flash".to_string()),
        "closed window holds the step"
    );
    windows.set("fw-sat", true);
    engine.windows_changed();
    lariat_engine::wait_for_status(
        engine,
        run,
        &[RunStatus::Succeeded],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(rec.entries().contains(&"run:flash".to_string()));
}

#[tokio::test]
async fn max_running_bounds_attempts_across_runs() {
    let h = Harness::with(|c| c.max_running = 3).await;
    h.register("name: one\nsteps:\n  - {name: work, action: record, input: {ms: 20}}\n")
        .await;
    let mut runs = Vec::new();
    for _ in 0..12 {
        runs.push(h.submit("one", &[]).await);
    }
    for r in runs {
        h.wait(r, &[RunStatus::Succeeded]).await;
    }
    let max = h.rec.max_running.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "max concurrent attempts {max}");
    let stats = h.engine.stats().await.unwrap();
    assert_eq!(
        (stats.running_attempts, stats.ready_queue, stats.live_runs),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_same_run() {
    let h = Harness::new().await;
    h.register("name: one\nsteps:\n  - {name: a, action: noop}\n")
        .await;
    let new = lariat_engine::NewRun {
        workflow: "one".into(),
        idempotency_key: Some("req-42".into()),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        h.engine.submit(new.clone(), lariat_engine::Actor::system()),
        h.engine.submit(new.clone(), lariat_engine::Actor::system())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.run_id, b.run_id);
    assert!(
        a.created ^ b.created,
        "exactly one of two racing submits creates"
    );
    let c = h
        .engine
        .submit(new, lariat_engine::Actor::system())
        .await
        .unwrap();
    assert_eq!((c.run_id, c.created), (a.run_id, false));
    let all = h
        .engine
        .list_runs(&lariat_engine::RunQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_given_up_by_its_caller_still_holds_its_key() {
    // Callers that give up (a client timing out) at any moment, each retried at once with
    // the same key: every key still names one run, and the executor keeps going.
    let h = Harness::new().await;
    h.register("name: one\nsteps:\n  - {name: a, action: noop}\n")
        .await;
    for i in 0..200u32 {
        let new = lariat_engine::NewRun {
            workflow: "one".into(),
            idempotency_key: Some(format!("retried-{i}")),
            ..Default::default()
        };
        let first = h.engine.submit(new.clone(), lariat_engine::Actor::system());
        // Give up after a varying number of polls: before, during and after the commit.
        let patience = std::time::Duration::from_micros(u64::from(i % 40) * 50);
        let _ = tokio::time::timeout(patience, first).await;
        h.engine
            .submit(new, lariat_engine::Actor::system())
            .await
            .unwrap_or_else(|e| panic!("retry {i}: {e}"));
    }
    let all = h
        .engine
        .list_runs(&lariat_engine::RunQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 200, "one run per key");
    assert!(h.engine.failure().is_none(), "{:?}", h.engine.failure());
}

#[tokio::test]
async fn bad_submissions_are_rejected_without_a_run() {
    let h = Harness::new().await;
    h.register("name: one\nsteps:\n  - {name: a, action: noop}\n")
        .await;
    let bad = |f: &dyn Fn(&mut lariat_engine::NewRun)| {
        let mut n = lariat_engine::NewRun {
            workflow: "one".into(),
            ..Default::default()
        };
        f(&mut n);
        n
    };
    let cases = [
        bad(&|n| n.workflow = "missing".into()),
        bad(&|n| n.version = Some(7)),
        bad(&|n| n.targets = vec!["a".into(), "a".into()]),
        bad(&|n| n.targets = vec!["has space".into()]),
        bad(&|n| n.workflow = "".into()),
    ];
    for c in cases {
        let err = h
            .engine
            .submit(c.clone(), lariat_engine::Actor::system())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::UnknownWorkflow { .. } | EngineError::InvalidInput(_)
            ),
            "{c:?} -> {err}"
        );
    }
    let all = h
        .engine
        .list_runs(&lariat_engine::RunQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.is_empty());
}

/// A window open for some hosts only, as a scoped window is.
struct OpenFor(std::sync::RwLock<Vec<String>>);

impl lariat_engine::WindowGate for OpenFor {
    fn ask(&self, q: &lariat_engine::WindowAsk<'_>) -> lariat_engine::WindowAnswer {
        let open = self.0.read().unwrap();
        if q.hosts.iter().all(|h| open.contains(h)) {
            lariat_engine::WindowAnswer::Open
        } else {
            lariat_engine::WindowAnswer::Closed {
                until: None,
                why: "not open for these hosts".into(),
            }
        }
    }
}

/// A fan-out over its failure budget stops: the items still waiting for their window do
/// not start when it opens, the run fails for the operator, and a retry starts them.
#[tokio::test]
async fn items_waiting_for_their_window_do_not_start_once_the_step_has_failed() {
    let gate = std::sync::Arc::new(OpenFor(std::sync::RwLock::new(vec!["a".into()])));
    let h = Harness::with_scheduling(lariat_engine::Scheduling {
        windows: gate.clone(),
        groups: std::sync::Arc::new(lariat_engine::Unplaced),
    })
    .await;
    let (engine, rec) = (&h.engine, &h.rec);
    h.register("name: fw\nsteps:\n  - {name: each, action: record, input: {fail_items: [a]}, for_each: {over: targets}, window: fw, retry: {max_attempts: 1}}\n").await;
    let run = h.submit("fw", &["a", "b", "c"]).await;
    let row =
        lariat_engine::wait_for_status(engine, run, &[RunStatus::Failed], Duration::from_secs(10))
            .await
            .expect("the run fails though b and c wait for their window");
    assert!(row.error.unwrap().contains("1 of 3 items failed"));
    *gate.0.write().unwrap() = vec!["a".into(), "b".into(), "c".into()];
    engine.windows_changed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rec.entries(),
        vec!["run:each[a]"],
        "nothing started after the failure"
    );
    let v = engine.run_view(run).await.unwrap();
    for i in &v.step("each").unwrap().items[1..] {
        assert_eq!(i.row.status, StepStatus::Waiting, "{:?}", i.row);
    }

    engine
        .retry(run, "each", None, lariat_engine::Actor::system())
        .await
        .unwrap();
    lariat_engine::wait_for_status(engine, run, &[RunStatus::Failed], Duration::from_secs(10))
        .await
        .unwrap();
    let mut ran = rec.entries();
    ran.sort();
    assert_eq!(
        ran,
        vec!["run:each[a]", "run:each[a]", "run:each[b]", "run:each[c]"]
    );
}

/// NUL (U+0000) is the one character PostgreSQL cannot store: what an operator sends
/// with one is refused, naming where, and what an action reports with one is stored
/// with U+FFFD in its place on PostgreSQL; neither stops the engine.
#[tokio::test]
async fn nul_characters_are_refused_from_operators_and_never_stop_the_engine() {
    let h = Harness::new().await;
    h.register(
        r#"
name: nul
steps:
  - {name: read_fru, action: nul}
  - {name: wait, action: await, needs: [read_fru]}
  - {name: fail, action: nul, input: {fail: true}, needs: [wait]}
"#,
    )
    .await;
    let refused = h
        .engine
        .submit(
            lariat_engine::NewRun {
                workflow: "nul".into(),
                input: json!({"hosts": [{"name": "a\u{0}b"}]}),
                ..Default::default()
            },
            lariat_engine::Actor::system(),
        )
        .await;
    match refused {
        Err(EngineError::InvalidInput(m)) => {
            assert!(m.contains("input at /hosts/0/name holds a NUL"), "{m}")
        }
        other => panic!("a NUL in the input was not refused: {other:?}"),
    }
    let bad_definition = h
        .engine
        .register_workflow(
            "name: nul2\nsteps:\n  - {name: a, action: noop, input: {x: \"\\0\"}}\n",
            lariat_engine::Format::Yaml,
        )
        .await;
    assert!(
        matches!(&bad_definition, Err(EngineError::InvalidInput(m)) if m.contains("NUL")),
        "{bad_definition:?}"
    );

    let run = h.submit("nul", &[]).await;
    let view = h.wait_step(run, "wait", "waiting").await;
    let out = &view.step("read_fru").unwrap().task.row.output;
    let text = serde_json::to_string(out).unwrap();
    assert!(
        text.contains("\\\\u0000 is text"),
        "text that looks like an escape stays: {text}"
    );
    let signal = h
        .engine
        .signal(
            run,
            "wait",
            None,
            json!({"note": "\u{0}"}),
            lariat_engine::Actor::system(),
        )
        .await;
    assert!(
        matches!(&signal, Err(EngineError::InvalidInput(m)) if m.contains("payload at /note")),
        "{signal:?}"
    );
    h.engine
        .signal(run, "wait", None, json!({}), lariat_engine::Actor::system())
        .await
        .unwrap();
    h.wait(run, &[RunStatus::Failed]).await;
    assert!(h.engine.failure().is_none(), "the engine kept going");
    // Written and read back: the run's whole log, from the database.
    let events = h.events(run).await;
    check_log(&events);
    let failed = events
        .iter()
        .find_map(|e| e.error.clone().filter(|e| e.contains("the BMC said")))
        .expect("the step's error is in the log");
    assert!(
        failed.contains('\u{0}') || failed.contains('\u{FFFD}'),
        "the error is kept, its NULs as they were (SQLite) or replaced (PostgreSQL): {failed:?}"
    );
    let ended = h.engine.run_view(run).await.unwrap();
    let out = ended
        .step("read_fru")
        .unwrap()
        .task
        .row
        .output
        .clone()
        .unwrap();
    assert_eq!(
        out["k\u{0}"].as_str().or(out["k\u{FFFD}"].as_str()),
        Some("\\u0000 is text")
    );
    if std::env::var("LARIAT_TEST_STORE").as_deref() == Ok("postgres") {
        assert!(!failed.contains('\u{0}'), "{failed:?}");
        assert_eq!(out["fru"], "ab\u{FFFD}c");
    } else {
        assert_eq!(out["fru"], "ab\u{0}c");
    }
}
