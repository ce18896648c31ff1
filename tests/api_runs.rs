//! Workflows and runs over HTTP against the real server: versions, idempotent submit,
//! listing with filters and cursors, run detail with attempts, the operator verbs,
//! signals to fan-out items, paged history, metrics and the OpenAPI document.

mod api_support;

use std::collections::HashSet;

use api_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_versioned_by_content_in_yaml_or_json() {
    let s = TestServer::start();
    let post = |ct: &'static str, body: String| {
        s.http
            .post(s.url("/v1/workflows"))
            .bearer_auth(&s.admin)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = post("application/x-yaml", GATE.to_string()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v, json!({"name": "gate", "version": 1, "created": true}));

    let res = post("application/yaml; charset=utf-8", GATE.to_string())
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the same definition again changes nothing"
    );
    assert_eq!(res.json::<Value>().await.unwrap()["created"], false);

    let json_def = json!({
        "name": "gate",
        "description": "now in JSON",
        "steps": [{"name": "only", "action": "noop"}],
    });
    let res = post("application/json", json_def.to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);

    let (status, list) = s.get(&s.viewer, "/v1/workflows").await;
    assert_eq!(status, StatusCode::OK);
    let gate = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "gate")
        .unwrap();
    assert_eq!(gate["version"], 2);
    assert_eq!(gate["steps"], 1);
    assert_eq!(gate["description"], "now in JSON");

    let (_, detail) = s.get(&s.viewer, "/v1/workflows/gate").await;
    assert_eq!(detail["versions"], json!([1, 2]));
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["definition"]["steps"][0]["name"], "only");
    let (status, v1) = s.get(&s.viewer, "/v1/workflows/gate/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1["definition"]["steps"].as_array().unwrap().len(), 3);

    // A run pins the version it started with.
    let run = s.submit(json!({"workflow": "gate", "version": 1})).await;
    let r = s.run(&run).await;
    assert_eq!(r["version"], 1);
    assert_eq!(r["steps"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_idempotent_by_key() {
    let s = TestServer::start();
    s.register(GATE).await;
    let body = json!({"workflow": "gate", "input": {"rack": 4}, "targets": ["a", "b"], "idempotency_key": "order-17"});
    let first = s
        .http
        .post(s.url("/v1/runs"))
        .bearer_auth(&s.operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/runs/{}", first["id"].as_str().unwrap())
    );
    assert_eq!(first["input"], json!({"rack": 4}));
    assert_eq!(first["targets"], json!(["a", "b"]));
    assert_eq!(first["idempotency_key"], "order-17");

    for _ in 0..3 {
        let (status, again) = s.post(&s.operator, "/v1/runs", Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    // Concurrent repeats still make one run.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (http, url, tok) = (s.http.clone(), s.url("/v1/runs"), s.operator.clone());
        let b = json!({"workflow": "gate", "idempotency_key": "burst"});
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(tok)
                .json(&b)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap()["id"].clone())
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for h in handles {
        let (status, id) = h.await.unwrap();
        assert!(status == StatusCode::CREATED || status == StatusCode::OK);
        created += (status == StatusCode::CREATED) as usize;
        ids.insert(id.to_string());
    }
    assert_eq!((ids.len(), created), (1, 1), "one run for one key");
    let (_, page) = s.get(&s.viewer, "/v1/runs?workflow=gate&limit=500").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_by_status_and_workflow_a_page_at_a_time() {
    let s = TestServer::start();
    s.register(GATE).await;
    let mut gate_runs = Vec::new();
    for _ in 0..5 {
        gate_runs.push(s.submit(json!({"workflow": "gate"})).await);
    }
    let other = s.submit(json!({"workflow": "provision-noop"})).await;
    let (status, v) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{}/cancel", gate_runs[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Newest first, two at a time, through the cursor.
    let mut seen = Vec::new();
    let mut url = "/v1/runs?workflow=gate&limit=2".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = s.get(&s.viewer, &url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for r in page["runs"].as_array().unwrap() {
            assert_eq!(r["workflow"], "gate");
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/v1/runs?workflow=gate&limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut newest_first = gate_runs.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    let (_, cancelled) = s.get(&s.viewer, "/v1/runs?status=cancelled").await;
    let ids: Vec<&str> = cancelled["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![gate_runs[0].as_str()]);
    assert!(cancelled["next_cursor"].is_null());

    let (_, all) = s.get(&s.viewer, "/v1/runs").await;
    assert_eq!(all["runs"].as_array().unwrap().len(), 6);
    assert_eq!(all["runs"][0]["id"], other.as_str());
}

const FLAKY: &str = r#"
name: flaky
steps:
  - {name: prepare, action: noop}
  - name: flash
    action: fail
    input: {times: 5, kind: bmc}
    needs: [prepare]
    retry: {max_attempts: 2, initial_backoff: 300ms, multiplier: 1, jitter: 0}
  - {name: after, action: noop, needs: [flash]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_shows_its_attempts_and_is_retried_with_new_input() {
    let s = TestServer::start();
    s.register(FLAKY).await;
    let run = s.submit(json!({"workflow": "flaky"})).await;

    // Between attempts the step says it is retrying, and when.
    let v = s.wait_step(&run, "flash", "retrying").await;
    let flash = step_of(&v, "flash");
    assert!(
        flash["next_retry_at"].as_i64().unwrap()
            > flash["attempts"][0]["started_at"].as_i64().unwrap(),
        "{flash:#}"
    );
    assert!(
        flash["error"].as_str().unwrap().contains("planned failure"),
        "{flash:#}"
    );

    let v = s.wait_status(&run, "failed").await;
    let flash = step_of(&v, "flash");
    assert_eq!(flash["status"], "failed");
    assert_eq!(flash["action"], "fail");
    assert_eq!(flash["needs"], json!(["prepare"]));
    let attempts = flash["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{flash:#}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i as u64 + 1);
        assert_eq!(a["status"], "failed");
        assert!(a["ended_at"].as_i64().unwrap() >= a["started_at"].as_i64().unwrap());
        assert!(
            a["error"].as_str().unwrap().contains("planned failure"),
            "{a}"
        );
    }
    assert_eq!(step_of(&v, "after")["status"], "pending");
    let prepare = step_of(&v, "prepare");
    assert_eq!(prepare["attempts"][0]["status"], "succeeded");
    assert!(
        prepare["attempts"][0]["output"].is_null() || prepare["attempts"][0]["output"].is_object()
    );

    // Retry with edited input: the step now succeeds on its first new attempt.
    let (status, r) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/flash/retry"),
            Some(json!({"input": {"times": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let v = s.wait_status(&run, "succeeded").await;
    let flash = step_of(&v, "flash");
    assert_eq!(flash["input"], json!({"times": 0}));
    assert_eq!(flash["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(flash["attempts"][2]["status"], "succeeded");
    assert_eq!(step_of(&v, "after")["status"], "succeeded");

    let events = s.events(&run).await;
    let retry = events
        .iter()
        .find(|e| e["kind"] == "operator" && e["data"]["verb"] == "retry")
        .expect("the retry is in the history");
    assert_eq!(retry["data"]["actor"]["who"], "alice");
    assert_eq!(retry["data"]["detail"]["step"], "flash");

    // Retry, without a body, of a run that no longer failed: refused.
    let (status, body) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/flash/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(status, &body), "invalid_state");
}

const SLOW: &str = r#"
name: slow
steps:
  - {name: one, action: sleep, input: {duration: 300ms}}
  - {name: two, action: sleep, input: {duration: 300ms}, needs: [one]}
  - {name: three, action: noop, needs: [two]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_and_rollback() {
    let s = TestServer::start();
    s.register(SLOW).await;
    let run = s.submit(json!({"workflow": "slow"})).await;
    // Read it (the server may keep this detail), act, and read again at once: the
    // reader sees its own change.
    assert_eq!(s.run(&run).await["status"], "running");
    let (status, v) = s
        .post(&s.operator, &format!("/v1/runs/{run}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "paused");
    assert_eq!(s.run(&run).await["status"], "paused");
    // Paused: the running step finishes, nothing new starts.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let v = s.run(&run).await;
    assert_eq!(v["status"], "paused");
    assert_eq!(step_of(&v, "three")["status"], "pending");
    let (status, body) = s
        .post(&s.operator, &format!("/v1/runs/{run}/pause"), None)
        .await;
    assert_eq!(
        (status, error_code(status, &body).as_str()),
        (StatusCode::CONFLICT, "invalid_state")
    );
    let (status, _) = s
        .post(&s.operator, &format!("/v1/runs/{run}/resume"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.run(&run).await["status"], "running");
    s.wait_status(&run, "succeeded").await;

    // Rollback of a finished run.
    let (status, v) = s
        .post(&s.operator, &format!("/v1/runs/{run}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.wait_status(&run, "rolled_back").await;
    let (status, body) = s
        .post(&s.operator, &format!("/v1/runs/{run}/rollback"), None)
        .await;
    assert_eq!(
        (status, error_code(status, &body).as_str()),
        (StatusCode::CONFLICT, "invalid_state")
    );

    // Cancel while a step sleeps.
    let run = s.submit(json!({"workflow": "slow"})).await;
    s.wait_step(&run, "one", "running").await;
    let (status, v) = s
        .post(&s.operator, &format!("/v1/runs/{run}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let v = s.wait_status(&run, "cancelled").await;
    assert_eq!(step_of(&v, "three")["status"], "cancelled");
    let verbs: Vec<String> = s
        .events(&run)
        .await
        .iter()
        .filter(|e| e["kind"] == "operator")
        .map(|e| e["data"]["verb"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(verbs, vec!["submit", "cancel"]);
}

const FANOUT: &str = r#"
name: fanout
steps:
  - name: callback
    action: await_signal
    for_each: {over: targets}
  - {name: done, action: noop, needs: [callback]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_waiting_steps_and_fan_out_items() {
    let s = TestServer::start();
    s.register(FANOUT).await;
    let run = s
        .submit(json!({"workflow": "fanout", "targets": ["node-a", "node-b", "node-c"]}))
        .await;
    let v = s
        .wait_run(&run, "three waiting items", |v| {
            step_of(v, "callback")["items"]
                .as_array()
                .is_some_and(|i| i.len() == 3 && i.iter().all(|t| t["status"] == "waiting"))
        })
        .await;
    let items = step_of(&v, "callback")["items"].as_array().unwrap().clone();
    assert_eq!(items[1]["item_value"], "node-b");
    assert_eq!(items[1]["waiting_for"]["for"], "signal");

    let signal = format!("/v1/runs/{run}/steps/callback/signal");
    let (status, r) = s
        .post(
            &s.operator,
            &signal,
            Some(json!({"item": "node-b", "payload": {"ip": "10.0.0.2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (status, _) = s
        .post(
            &s.operator,
            &signal,
            Some(json!({"item": 0, "payload": {"ip": "10.0.0.1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .post(&s.operator, &signal, Some(json!({"item": "node-z"})))
        .await;
    assert_eq!(
        (status, error_code(status, &body).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = s
        .post(&s.operator, &signal, Some(json!({"item": "node-b"})))
        .await;
    assert_eq!(
        (status, error_code(status, &body).as_str()),
        (StatusCode::CONFLICT, "not_waiting")
    );
    let (status, _) = s.post(&s.operator, &signal, Some(json!({"item": 2}))).await;
    assert_eq!(status, StatusCode::OK);

    let v = s.wait_status(&run, "succeeded").await;
    let items = step_of(&v, "callback")["items"].as_array().unwrap().clone();
    assert_eq!(items[1]["output"], json!({"ip": "10.0.0.2"}));
    assert_eq!(items[0]["output"], json!({"ip": "10.0.0.1"}));
    assert!(items[2]["output"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_cover_every_event_once() {
    let s = TestServer::start();
    let run = s.submit(json!({"workflow": "provision-noop"})).await;
    s.wait_step(&run, "await_callback", "waiting").await;
    let (status, _) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/await_callback/signal"),
            Some(json!({"payload": {"booted": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.wait_status(&run, "succeeded").await;

    let all = s.events(&run).await;
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = s
            .get(
                &s.viewer,
                &format!("/v1/runs/{run}/events?after={after}&limit=4"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 4);
        paged.extend(events.iter().cloned());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(paged, all);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], i as i64 + 1, "no gaps");
        assert_eq!(e["run_id"], run.as_str());
    }
    assert_eq!(all[0]["kind"], "run_created");
    assert_eq!(all.last().unwrap()["kind"], "run_succeeded");
    let signalled = all.iter().find(|e| e["kind"] == "signalled").unwrap();
    assert_eq!(signalled["step"], "await_callback");
    assert_eq!(signalled["data"]["payload"], json!({"booted": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_report_the_engine() {
    let s = TestServer::start();
    s.register(FLAKY).await;
    let run = s.submit(json!({"workflow": "flaky"})).await;
    s.wait_status(&run, "failed").await;
    let res = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let res = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(&s.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for needle in [
        "lariat_runs{status=\"failed\"} 1",
        "lariat_runs{status=\"succeeded\"} 0",
        "lariat_ready_queue ",
        "lariat_live_runs ",
        "lariat_step_seconds_bucket{action=\"fail\"",
        "lariat_step_seconds_bucket{action=\"noop\"",
        "lariat_retries_total 1",
        "lariat_commit_seconds_bucket",
        "lariat_commit_batch_events_bucket",
        "lariat_events_total ",
        "lariat_http_requests_total{method=\"POST\",route=\"/v1/runs\",status=\"201\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_schema() {
    let s = TestServer::start();
    let (status, doc) = s.get(&s.viewer, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Run",
        "RunDetail",
        "Step",
        "Task",
        "Attempt",
        "RunEvent",
        "SubmitRun",
        "ErrorBody",
        "RunPage",
        "EventPage",
        "RunStatus",
        "StepStatus",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let submit = &doc["paths"]["/v1/runs"]["post"];
    for code in ["200", "201", "400", "401", "403", "404", "413", "415"] {
        assert!(
            submit["responses"].get(code).is_some(),
            "POST /v1/runs lacks {code}"
        );
    }
    let stream = &doc["paths"]["/v1/runs/{id}/events/stream"]["get"];
    assert!(
        stream["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some()
    );
    let wf = &doc["paths"]["/v1/workflows"]["post"]["requestBody"]["content"];
    for ct in [
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "application/json",
    ] {
        assert!(
            wf.get(ct).is_some(),
            "POST /v1/workflows does not take {ct}"
        );
    }
}
