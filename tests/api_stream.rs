//! The SSE progress stream against the real server: replay then live without gaps or
//! repeats, resume from `Last-Event-ID` (and `?after=`), and streams that end when the
//! server shuts down.

mod api_support;

use std::time::Duration;

use api_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn open(s: &TestServer, run: &str, last_event_id: Option<&str>, query: &str) -> SseStream {
    let mut rb = s
        .http
        .get(s.url(&format!("/v1/runs/{run}/events/stream{query}")))
        .bearer_auth(&s.viewer)
        .timeout(Duration::from_secs(300));
    if let Some(id) = last_event_id {
        rb = rb.header("Last-Event-ID", id);
    }
    let res = rb.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    SseStream::new(res)
}

/// Read events until one of `kind` (on `step`, if given); returns them all.
async fn until(sse: &mut SseStream, kind: &str, step: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = sse.event().await;
        let hit = e["kind"] == kind && step.is_none_or(|s| e["step"] == s);
        out.push(e);
        if hit {
            return out;
        }
    }
}

fn assert_consecutive(events: &[Value], from: i64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64(),
            Some(from + i as i64),
            "gap or repeat at {i}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_replays_then_follows_live_and_resumes_from_last_event_id() {
    let s = TestServer::start();
    s.register(GATE).await;
    let run = s.submit(json!({"workflow": "gate"})).await;
    s.wait_step(&run, "gate", "waiting").await;

    // From the start: the stored history, then whatever comes live.
    let mut sse = open(&s, &run, None, "").await;
    let before = until(&mut sse, "waiting", Some("gate")).await;
    assert_consecutive(&before, 1);
    assert_eq!(before[0]["kind"], "run_created");
    let (status, _) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/gate/signal"),
            Some(json!({"payload": {"n": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let live = until(&mut sse, "run_succeeded", None).await;
    assert_consecutive(&live, before.len() as i64 + 1);
    assert!(
        live.iter()
            .any(|e| e["kind"] == "signalled" && e["data"]["payload"]["n"] == 1)
    );
    let total = before.len() + live.len();
    let all = s.events(&run).await;
    assert_eq!(all.len(), total, "the stream carried the whole history");

    // Resume after event 5: the next is 6, then the rest in order.
    let mut resumed = open(&s, &run, Some("5"), "").await;
    let rest = until(&mut resumed, "run_succeeded", None).await;
    assert_consecutive(&rest, 6);
    assert_eq!(rest.len(), total - 5);
    // ?after= does the same for clients that cannot set the header; the header wins.
    let mut q = open(&s, &run, None, "?after=7").await;
    assert_eq!(q.event().await["seq"], 8);
    let mut both = open(&s, &run, Some("9"), "?after=2").await;
    assert_eq!(both.event().await["seq"], 10);
    // Resuming at the end: nothing until something happens.
    let mut tail = open(&s, &run, Some(&total.to_string()), "").await;
    assert!(tail.next(Duration::from_millis(500)).await.is_none());
    let (status, _) = s
        .post(&s.operator, &format!("/v1/runs/{run}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let after_rollback = until(&mut tail, "run_rolled_back", None).await;
    assert_consecutive(&after_rollback, total as i64 + 1);
    assert_eq!(after_rollback[0]["kind"], "operator");
    assert_eq!(after_rollback[0]["data"]["verb"], "rollback");
}

const CHAIN: &str = r#"
name: chain
steps:
  - {name: s1, action: noop}
  - {name: s2, action: noop, needs: [s1]}
  - {name: s3, action: noop, needs: [s2]}
  - {name: s4, action: noop, needs: [s3]}
  - {name: s5, action: noop, needs: [s4]}
  - {name: s6, action: noop, needs: [s5]}
  - {name: s7, action: noop, needs: [s6]}
  - {name: s8, action: noop, needs: [s7]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_while_runs_execute_see_every_event_once() {
    let s = TestServer::start();
    s.register(CHAIN).await;
    // Many runs racing their own streams: the subscription must not lose what commits
    // between the replay and the live feed.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let run = s.submit(json!({"workflow": "chain"})).await;
        let sse = open(&s, &run, None, "").await;
        tasks.push((run, sse));
    }
    for (run, mut sse) in tasks {
        let got = until(&mut sse, "run_succeeded", None).await;
        assert_consecutive(&got, 1);
        assert_eq!(got.len(), s.events(&run).await.len(), "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_streams() {
    let mut s = TestServer::start();
    s.register(GATE).await;
    let run = s.submit(json!({"workflow": "gate"})).await;
    let mut sse = open(&s, &run, None, "").await;
    until(&mut sse, "waiting", Some("gate")).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::block_in_place(|| s.wait_exit(Duration::from_secs(20)));
    assert!(
        exit.is_some_and(|e| e.success()),
        "the server did not stop with a stream open: {exit:?}"
    );
    assert!(
        sse.next(Duration::from_secs(5)).await.is_none(),
        "the stream ended"
    );
}
