//! Restart in-process: interrupted attempts, re-armed timers and waits, the timer table.
//! (The kill -9 test of the real binary lives in the workspace's tests/.)
mod common;

use std::time::Duration;

use common::{Harness, check_log, kinds};
use lariat_engine::{EventKind, RunStatus, StepStatus, Store, StoreError};
use serde_json::json;

#[tokio::test]
async fn running_attempt_is_recorded_interrupted_and_run_again() {
    let mut h = Harness::new().await;
    h.register(
        "name: i\nsteps:\n  - {name: long, action: sleep, input: {ms: 60000}, retry: {max_attempts: 1}}\n  - {name: after, action: noop, needs: [long]}\n",
    )
    .await;
    let run = h.submit("i", &[]).await;
    h.wait_step(run, "long", "running").await;
    h.restart(|_| {}).await;
    let report = h.engine.resume_report();
    assert_eq!((report.runs, report.interrupted), (1, 1));
    let v = h.wait_step(run, "long", "running").await;
    let attempts = &v.step("long").unwrap().task.attempts;
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.status.as_str()))
            .collect::<Vec<_>>(),
        [(1, "interrupted"), (2, "running")],
        "max_attempts 1 still allows the re-run: an interruption is not a failure"
    );
    h.engine
        .cancel(run, lariat_engine::Actor::system())
        .await
        .unwrap();
    check_log(&h.events(run).await);
}

#[tokio::test]
async fn retry_timers_and_signal_waits_survive_restart() {
    let mut h = Harness::new().await;
    h.register(
        r#"
name: d
steps:
  - name: flaky
    action: flaky
    input: {fail_times: 1}
    retry: {max_attempts: 2, initial_backoff: 1500ms, jitter: 0}
  - {name: await_callback, action: await, needs: [flaky]}
  - {name: verify, action: noop, needs: [await_callback]}
"#,
    )
    .await;
    let retrying = h.submit("d", &[]).await;
    let v = h.wait_step(retrying, "flaky", "retrying").await;
    let wake = v.step("flaky").unwrap().task.row.wake_at.unwrap();

    // A second run gets to its wait before the restart.
    h.register(
        "name: w\nsteps:\n  - {name: await_callback, action: await, input: {timeout_ms: 60000}}\n",
    )
    .await;
    let waiting = h.submit("w", &[]).await;
    h.wait_step(waiting, "await_callback", "waiting").await;

    let timers = h.engine.store().timers("central").await.unwrap();
    let mut kinds_: Vec<_> = timers
        .iter()
        .map(|t| (t.step.as_str(), t.kind.as_str()))
        .collect();
    kinds_.sort();
    assert_eq!(
        kinds_,
        [("await_callback", "wait_deadline"), ("flaky", "retry")]
    );
    assert_eq!(
        timers.iter().find(|t| t.step == "flaky").unwrap().fire_at,
        wake
    );

    h.restart(|_| {}).await;
    assert_eq!(h.engine.resume_report().timers, 2);
    assert_eq!(h.engine.resume_report().interrupted, 0);
    // The retry fires from the re-armed timer, then the run waits for its signal.
    h.wait_step(retrying, "await_callback", "waiting").await;
    assert!(lariat_engine::event::now_ms() >= wake);
    h.engine
        .signal(
            retrying,
            "await_callback",
            None,
            json!({"ok": true}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap();
    h.engine
        .signal(
            waiting,
            "await_callback",
            None,
            json!({"ok": true}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap();
    h.wait(retrying, &[RunStatus::Succeeded]).await;
    h.wait(waiting, &[RunStatus::Succeeded]).await;
    assert!(
        h.engine.store().timers("central").await.unwrap().is_empty(),
        "fired timers are removed"
    );
    for r in [retrying, waiting] {
        check_log(&h.events(r).await);
    }
}

#[tokio::test]
async fn paused_and_failed_runs_stay_as_they_were_across_restart() {
    let mut h = Harness::new().await;
    h.register("name: two\nsteps:\n  - {name: a, action: record, input: {ms: 100}}\n  - {name: b, action: record, needs: [a]}\n").await;
    h.register("name: bad\nsteps:\n  - {name: x, action: flaky, input: {fail_times: 9}, retry: {max_attempts: 1}}\n").await;
    let paused = h.submit("two", &[]).await;
    let failed = h.submit("bad", &[]).await;
    h.wait_step(paused, "a", "running").await;
    h.engine
        .pause(paused, lariat_engine::Actor::system())
        .await
        .unwrap();
    h.wait(failed, &[RunStatus::Failed]).await;
    h.restart(|_| {}).await;
    assert_eq!(h.engine.resume_report().runs, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = h.engine.run_view(paused).await.unwrap();
    assert_eq!(v.run.status, RunStatus::Paused);
    assert_eq!(
        v.step("a").unwrap().task.row.status,
        StepStatus::Ready,
        "interrupted, held by the pause"
    );
    assert_eq!(v.step("b").unwrap().task.row.status, StepStatus::Pending);
    h.engine
        .resume(paused, lariat_engine::Actor::system())
        .await
        .unwrap();
    h.wait(paused, &[RunStatus::Succeeded]).await;
    assert_eq!(
        h.engine.run_row(failed).await.unwrap().status,
        RunStatus::Failed
    );
    h.engine
        .retry(
            failed,
            "x",
            Some(json!({"fail_times": 0})),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap();
    h.wait(failed, &[RunStatus::Succeeded]).await;
}

#[tokio::test]
async fn repeated_interruptions_are_capped() {
    let mut h = Harness::with(|c| c.max_interruptions = 2).await;
    h.register("name: i\nsteps:\n  - {name: long, action: sleep, input: {ms: 60000}}\n")
        .await;
    let run = h.submit("i", &[]).await;
    for _ in 0..3 {
        h.wait_step(run, "long", "running").await;
        h.restart(|c| c.max_interruptions = 2).await;
    }
    let row = h.wait(run, &[RunStatus::Failed]).await;
    assert!(row.error.unwrap().contains("interrupted by 3 restarts"));
}

#[tokio::test]
async fn events_after_and_apply_remote_mirror_a_run() {
    let site = Harness::with(|c| c.executor_id = "site-a".into()).await;
    site.register(
        r#"
name: provision
steps:
  - {name: validate, action: noop}
  - {name: power_off, action: record, needs: [validate], for_each: {over: targets}}
  - {name: await_callback, action: await, needs: [power_off]}
  - {name: verify, action: flaky, input: {fail_times: 1}, needs: [await_callback], retry: {initial_backoff: 10ms}}
"#,
    )
    .await;
    let place = common::Place::new().await;
    let central = Store::open(place.store()).await.unwrap();
    let cursor = central.replica_cursor("site-a").await.unwrap();
    assert_eq!(cursor, 0);

    let run = site.submit("provision", &["n1", "n2"]).await;
    site.wait_step(run, "await_callback", "waiting").await;

    // Ship what exists so far, in small pages, then finish the run and ship the rest.
    let mut shipped = 0;
    loop {
        let cur = central.replica_cursor("site-a").await.unwrap();
        let page = site.engine.events_after(cur, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        let rep = central.apply_remote("central", &page).await.unwrap();
        shipped += rep.applied;
    }
    assert!(shipped > 5);
    let mid = central.run(run).await.unwrap().unwrap();
    assert_eq!(mid.status, RunStatus::Running);

    site.engine
        .signal(
            run,
            "await_callback",
            None,
            json!({"mac": "52:54:00:12:34:56"}),
            lariat_engine::Actor::system(),
        )
        .await
        .unwrap();
    site.wait(run, &[RunStatus::Succeeded]).await;
    let cur = central.replica_cursor("site-a").await.unwrap();
    let rest = site.engine.events_after(cur, 1000).await.unwrap();
    assert!(!rest.is_empty());
    central.apply_remote("central", &rest).await.unwrap();

    // Idempotent: the whole log again applies nothing.
    let all = site.engine.events_after(0, 10_000).await.unwrap();
    let again = central.apply_remote("central", &all).await.unwrap();
    assert_eq!((again.applied, again.skipped), (0, all.len()));

    // The mirror's rows equal the owner's.
    let src_run = site.engine.run_row(run).await.unwrap();
    let dst_run = central.run(run).await.unwrap().unwrap();
    assert_eq!(src_run, dst_run);
    let mut a = site.engine.store().tasks(run).await.unwrap();
    let mut b = central.tasks(run).await.unwrap();
    a.sort_by(|x, y| (&x.step, x.item).cmp(&(&y.step, y.item)));
    b.sort_by(|x, y| (&x.step, x.item).cmp(&(&y.step, y.item)));
    assert_eq!(a, b);
    assert_eq!(
        site.engine.events(run, 0, 1000).await.unwrap(),
        central.events(run, 0, 1000).await.unwrap()
    );
    assert!(
        kinds(&central.events(run, 0, 1000).await.unwrap())
            .contains(&"verify:retrying".to_string())
    );

    // A mirror refuses events it owns, and events out of order.
    let err = site
        .engine
        .store()
        .apply_remote("site-a", &all[..1])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Replication(_)));
    let mut gap = all[5].clone();
    gap.run_id = uuid::Uuid::now_v7();
    let err = central.apply_remote("central", &[gap]).await.unwrap_err();
    assert!(err.to_string().contains("expected seq 1 next"), "{err}");
    assert!(matches!(all[0].kind, EventKind::RunCreated { .. }));
}

#[tokio::test]
async fn restart_during_fan_out_resumes_the_items_not_the_step() {
    let mut h = Harness::new().await;
    h.register(
        r#"
name: fan
steps:
  - name: power_off
    action: sleep
    input: {ms: 300}
    for_each: {over: targets, max_parallel: 2}
  - {name: await_callback, action: await, needs: [power_off], for_each: {over: targets}}
  - {name: verify, action: noop, needs: [await_callback]}
"#,
    )
    .await;
    let run = h.submit("fan", &["a", "b", "c"]).await;
    h.wait_step(run, "power_off", "running").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.restart(|_| {}).await;
    assert_eq!(
        h.engine.resume_report().interrupted,
        2,
        "the two running items, not the step"
    );
    h.wait_step(run, "power_off", "succeeded").await;
    let v = h.wait_step(run, "await_callback", "running").await;
    let parent = v.step("await_callback").unwrap();
    assert!(
        parent.task.attempts.is_empty(),
        "a fan-out step has no attempts of its own"
    );
    // Restart again while the items wait for their signals.
    loop {
        let v = h.engine.run_view(run).await.unwrap();
        if v.step("await_callback")
            .unwrap()
            .items
            .iter()
            .all(|i| i.row.status == StepStatus::Waiting)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.restart(|_| {}).await;
    for host in ["a", "b", "c"] {
        h.engine
            .signal(
                run,
                "await_callback",
                Some(host),
                json!({"host": host}),
                lariat_engine::Actor::system(),
            )
            .await
            .unwrap();
    }
    h.wait(run, &[RunStatus::Succeeded]).await;
    let events = h.events(run).await;
    check_log(&events);
    assert!(
        !events.iter().any(|e| e.step.as_deref() == Some("power_off")
            && e.item.is_none()
            && matches!(e.kind, EventKind::Interrupted | EventKind::Started)),
        "{:#?}",
        kinds(&events)
    );
}

#[tokio::test]
async fn an_idempotency_key_names_one_run_of_its_owner_and_mirrors_keep_both() {
    // Two executors each start a run under the same key; a mirror of one takes the other's
    // run in beside its own (replication never refuses a run), and the key stays unique
    // among each owner's own runs: the store refuses a second run of site-a with it.
    let a = Harness::with(|c| c.executor_id = "site-a".into()).await;
    let b = Harness::with(|c| c.executor_id = "site-b".into()).await;
    let def = "name: one\nsteps:\n  - {name: a, action: noop}\n";
    a.register(def).await;
    b.register(def).await;
    let new = lariat_engine::NewRun {
        workflow: "one".into(),
        idempotency_key: Some("order-7".into()),
        ..Default::default()
    };
    let ra = a
        .engine
        .submit(new.clone(), lariat_engine::Actor::system())
        .await
        .unwrap();
    let rb = b
        .engine
        .submit(new, lariat_engine::Actor::system())
        .await
        .unwrap();
    a.wait(ra.run_id, &[RunStatus::Succeeded]).await;
    b.wait(rb.run_id, &[RunStatus::Succeeded]).await;
    let theirs = b.engine.events_after(0, 1000).await.unwrap();
    a.engine.apply_remote(&theirs).await.unwrap();
    assert!(a.engine.store().run(rb.run_id).await.unwrap().is_some());

    // site-a's own events again, as if a second run of site-a had been created with the key.
    let mine = a.engine.events_after(0, 1000).await.unwrap();
    let mut dup = mine.clone();
    let fresh = uuid::Uuid::now_v7();
    let last = mine.iter().map(|e| e.owner_seq).max().unwrap_or(0);
    for (i, e) in dup.iter_mut().enumerate() {
        e.run_id = fresh;
        e.owner = "site-a".into();
        e.owner_seq = last + 1 + i as i64;
    }
    let place = common::Place::new().await;
    let central = Store::open(place.store()).await.unwrap();
    central.apply_remote("central", &mine).await.unwrap();
    let err = central.apply_remote("central", &dup).await.unwrap_err();
    // SQLite says "UNIQUE constraint failed", PostgreSQL "violates unique constraint".
    assert!(err.to_string().to_lowercase().contains("unique"), "{err}");
    assert!(central.run(fresh).await.unwrap().is_none());
}
