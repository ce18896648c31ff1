//! Operator verbs: cancel, pause, resume, retry with edited input, rollback.
mod common;

use std::time::Duration;

use common::{Harness, check_log, kinds};
use lariat_engine::{Actor, EngineError, EventKind, RunStatus, StepStatus};
use serde_json::json;

fn alice() -> Actor {
    Actor {
        who: "alice".into(),
        from: Some("10.1.2.3".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn cancel_stops_running_attempts_and_marks_the_rest() {
    let h = Harness::new().await;
    h.register(
        "name: c\nsteps:\n  - {name: long, action: sleep, input: {ms: 30000}}\n  - {name: after, action: noop, needs: [long]}\n",
    )
    .await;
    let run = h.submit("c", &[]).await;
    h.wait_step(run, "long", "running").await;
    h.engine.cancel(run, alice()).await.unwrap();
    let row = h.engine.run_row(run).await.unwrap();
    assert_eq!(
        row.status,
        RunStatus::Cancelled,
        "cancel is committed when it returns"
    );
    let v = h.engine.run_view(run).await.unwrap();
    assert_eq!(
        v.step("long").unwrap().task.row.status,
        StepStatus::Cancelled
    );
    assert_eq!(
        v.step("after").unwrap().task.row.status,
        StepStatus::Cancelled
    );
    assert_eq!(v.step("long").unwrap().task.attempts[0].status, "cancelled");
    let events = h.events(run).await;
    let op = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Operator { verb, actor, .. } => Some((verb.clone(), actor.clone())),
            _ => None,
        })
        .expect("the operator action is in the history");
    assert_eq!(op, ("cancel".into(), alice()));
    // The sleeping action was told to stop: the scheduler has nothing running.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.engine.stats().await.unwrap().running_attempts, 0);
    let err = h.engine.cancel(run, alice()).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidState { .. }), "{err}");
    check_log(&events);
}

#[tokio::test]
async fn pause_holds_new_attempts_and_resume_continues() {
    let h = Harness::new().await;
    h.register(
        "name: p\nsteps:\n  - {name: a, action: record, input: {ms: 150}}\n  - {name: b, action: record, needs: [a]}\n",
    )
    .await;
    let run = h.submit("p", &[]).await;
    h.wait_step(run, "a", "running").await;
    h.engine.pause(run, alice()).await.unwrap();
    // The running attempt finishes and is recorded; the next step does not start.
    h.wait_step(run, "a", "succeeded").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = h.engine.run_view(run).await.unwrap();
    assert_eq!(v.run.status, RunStatus::Paused);
    assert_eq!(v.step("b").unwrap().task.row.status, StepStatus::Ready);
    assert!(!h.rec.entries().contains(&"run:b".to_string()));
    let err = h.engine.pause(run, alice()).await.unwrap_err();
    assert!(
        err.to_string().contains("only a running run can be paused"),
        "{err}"
    );

    h.engine.resume(run, alice()).await.unwrap();
    h.wait(run, &[RunStatus::Succeeded]).await;
    let err = h.engine.resume(run, alice()).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidState { .. }));
    let k = kinds(&h.events(run).await);
    assert!(k.contains(&"run_paused".to_string()) && k.contains(&"run_resumed".to_string()));
}

#[tokio::test]
async fn retry_a_failed_step_with_edited_input_keeps_history() {
    let h = Harness::new().await;
    h.register(
        r#"
name: r
steps:
  - {name: first, action: record}
  - name: stage
    action: flaky
    input: {fail_times: 99, image: bad.iso}
    needs: [first]
    retry: {max_attempts: 2, initial_backoff: 10ms}
  - {name: boot, action: record, needs: [stage]}
  - {name: verify, action: record, needs: [boot]}
"#,
    )
    .await;
    let run = h.submit("r", &[]).await;
    h.wait(run, &[RunStatus::Failed]).await;

    let err = h
        .engine
        .retry(run, "first", None, alice())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::StepNotFailed {
                status: StepStatus::Succeeded,
                ..
            }
        ),
        "{err}"
    );
    let err = h
        .engine
        .retry(run, "ghost", None, alice())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownStep { .. }), "{err}");
    let err = h
        .engine
        .rollback(uuid::Uuid::now_v7(), alice())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownRun(_)), "{err}");

    h.engine
        .retry(
            run,
            "stage",
            Some(json!({"fail_times": 0, "image": "good.iso"})),
            alice(),
        )
        .await
        .unwrap();
    h.wait(run, &[RunStatus::Succeeded]).await;
    let v = h.engine.run_view(run).await.unwrap();
    let stage = v.step("stage").unwrap();
    // Two failed attempts of the first series, then attempt 3 starts the new one.
    assert_eq!(
        stage
            .task
            .attempts
            .iter()
            .map(|a| (a.attempt, a.status.as_str()))
            .collect::<Vec<_>>(),
        [(1, "failed"), (2, "failed"), (3, "succeeded")]
    );
    assert_eq!(
        stage.task.row.output,
        Some(json!({"fail_times": 0, "image": "good.iso"}))
    );
    assert_eq!(stage.task.row.series_start, 3);
    let events = h.events(run).await;
    check_log(&events);
    let k = kinds(&events);
    assert!(k.contains(&"stage:reset".to_string()) && k.contains(&"run_retried".to_string()));
    assert_eq!(
        h.rec.entries().iter().filter(|e| *e == "run:first").count(),
        1,
        "upstream steps that succeeded are not run again"
    );
}

#[tokio::test]
async fn retry_of_a_running_run_is_refused() {
    let h = Harness::new().await;
    h.register("name: s\nsteps:\n  - {name: s, action: sleep, input: {ms: 2000}}\n")
        .await;
    let run = h.submit("s", &[]).await;
    h.wait_step(run, "s", "running").await;
    let err = h.engine.retry(run, "s", None, alice()).await.unwrap_err();
    assert!(
        err.to_string().contains("only a failed run can be retried"),
        "{err}"
    );
    let err = h.engine.rollback(run, alice()).await.unwrap_err();
    assert!(err.to_string().contains("cannot be rolled back"), "{err}");
    h.engine.cancel(run, alice()).await.unwrap();
}

const ROLLBACK: &str = r#"
name: rb
steps:
  - {name: validate, action: noop}
  - {name: stage, action: record, needs: [validate]}
  - {name: power_off, action: record, needs: [stage], for_each: {over: targets}}
  - {name: set_pxe, action: record, needs: [power_off]}
  - {name: note, action: record, needs: [power_off]}
  - {name: boot, action: flaky, input: {fail_times: 99}, needs: [set_pxe, note], retry: {max_attempts: 1}}
"#;

#[tokio::test]
async fn rollback_compensates_in_reverse_dependency_order() {
    let h = Harness::new().await;
    h.register(ROLLBACK).await;
    let run = h.submit("rb", &["n1", "n2"]).await;
    h.wait(run, &[RunStatus::Failed]).await;
    h.engine.rollback(run, alice()).await.unwrap();
    h.wait(run, &[RunStatus::RolledBack]).await;

    let undo: Vec<String> = h
        .rec
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("undo:"))
        .collect();
    assert_eq!(undo.len(), 5, "{undo:?}");
    let pos = |s: &str| {
        undo.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {undo:?}"))
    };
    for later in ["undo:set_pxe", "undo:note"] {
        assert!(pos(later) < pos("undo:power_off[n1]") && pos(later) < pos("undo:power_off[n2]"));
    }
    assert!(pos("undo:power_off[n1]") < pos("undo:stage"));

    let v = h.engine.run_view(run).await.unwrap();
    for s in ["stage", "set_pxe", "note", "power_off"] {
        assert_eq!(
            v.step(s).unwrap().task.row.status,
            StepStatus::Compensated,
            "{s}"
        );
    }
    assert_eq!(
        v.step("validate").unwrap().task.row.status,
        StepStatus::Succeeded,
        "noop has no compensation"
    );
    assert_eq!(v.step("boot").unwrap().task.row.status, StepStatus::Failed);
    let events = h.events(run).await;
    check_log(&events);
    let k = kinds(&events);
    let i = k.iter().position(|x| x == "stage:compensating").unwrap();
    let j = k.iter().position(|x| x == "stage:compensated").unwrap();
    assert!(i < j);
    assert_eq!(k.last().unwrap(), "run_rolled_back");
    let err = h.engine.rollback(run, alice()).await.unwrap_err();
    assert!(err.to_string().contains("already rolled back"), "{err}");
}

#[tokio::test]
async fn failed_compensation_stops_the_rollback_with_the_reason() {
    let h = Harness::new().await;
    h.register(
        r#"
name: cf
steps:
  - {name: a, action: record}
  - {name: b, action: record, needs: [a], input: {fail_compensation: true}, retry: {max_attempts: 2, initial_backoff: 10ms}}
  - {name: c, action: flaky, input: {fail_times: 9}, needs: [b], retry: {max_attempts: 1}}
"#,
    )
    .await;
    let run = h.submit("cf", &[]).await;
    h.wait(run, &[RunStatus::Failed]).await;
    h.engine.rollback(run, alice()).await.unwrap();
    let row = h.wait(run, &[RunStatus::CompensationFailed]).await;
    assert!(
        row.error
            .unwrap()
            .contains("compensation of step 'b' failed: planned: cannot undo b")
    );
    let entries = h.rec.entries();
    assert!(entries.contains(&"undo-failed:b".to_string()));
    assert!(
        !entries.contains(&"undo:a".to_string()),
        "a is not undone before b"
    );

    // An operator fixes the cause and rolls back again: b's compensation runs anew.
    let err = h.engine.rollback(run, alice()).await;
    assert!(
        err.is_ok(),
        "a compensation_failed run may be rolled back again"
    );
    let row = h.wait(run, &[RunStatus::CompensationFailed]).await;
    assert_eq!(row.status, RunStatus::CompensationFailed);
    let v = h.engine.run_view(run).await.unwrap();
    let b = v.step("b").unwrap();
    assert_eq!(
        b.task
            .attempts
            .iter()
            .filter(|a| a.phase == "compensate")
            .count(),
        2,
        "a fatal compensation error is not retried: one attempt per rollback"
    );
    check_log(&h.events(run).await);
}

#[tokio::test]
async fn rollback_of_a_finished_run_loads_it_back() {
    let h = Harness::new().await;
    h.register("name: ok\nsteps:\n  - {name: a, action: record}\n  - {name: b, action: record, needs: [a]}\n").await;
    let run = h.submit("ok", &[]).await;
    h.wait(run, &[RunStatus::Succeeded]).await;
    assert_eq!(
        h.engine.stats().await.unwrap().live_runs,
        0,
        "finished runs leave memory"
    );
    h.engine.rollback(run, alice()).await.unwrap();
    h.wait(run, &[RunStatus::RolledBack]).await;
    let undo: Vec<_> = h
        .rec
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("undo"))
        .collect();
    assert_eq!(undo, ["undo:b", "undo:a"]);
}
