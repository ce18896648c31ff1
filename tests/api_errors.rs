//! Bad input, end to end: each error status the API promises (400, 404, 405, 409, 413,
//! 415), always in the one error shape, and never a 500 or a dropped connection.

mod api_support;

use api_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

impl Case {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Case {
            method,
            path: path.into(),
            content_type: None,
            body: None,
            headers: Vec::new(),
        }
    }

    fn json(self, body: &str) -> Self {
        self.body("application/json", body.as_bytes().to_vec())
    }

    fn body(mut self, ct: &'static str, body: Vec<u8>) -> Self {
        self.content_type = Some(ct);
        self.body = Some(body);
        self
    }

    fn raw(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

async fn send(s: &TestServer, token: &str, c: &Case) -> (StatusCode, Value) {
    let mut rb = s
        .http
        .request(c.method.clone(), s.url(&c.path))
        .bearer_auth(token);
    if let Some(ct) = c.content_type {
        rb = rb.header("content-type", ct);
    }
    for (n, v) in &c.headers {
        rb = rb.header(*n, v);
    }
    if let Some(b) = &c.body {
        rb = rb.body(b.clone());
    }
    let res = rb.send().await.unwrap_or_else(|e| {
        panic!(
            "{} {} ({:?}, {:?}): no answer: {e:?}",
            c.method,
            c.path,
            c.content_type,
            c.body
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned())
        )
    });
    let status = res.status();
    let text = res.text().await.unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{} {}: {status} body is not JSON: {text}", c.method, c.path));
    (status, v)
}

async fn expect(s: &TestServer, c: Case, status: StatusCode, code: &str) {
    let (got, body) = send(s, &s.admin, &c).await;
    assert_eq!(got, status, "{} {}: {body}", c.method, c.path);
    assert_eq!(
        error_code(got, &body),
        code,
        "{} {}: {body}",
        c.method,
        c.path
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_status_has_the_error_shape() {
    let s = TestServer::start();
    s.register(GATE).await;
    let run = s.submit(json!({"workflow": "gate"})).await;
    s.wait_step(&run, "gate", "waiting").await;
    let unknown = "0190c2d5-0000-7000-8000-000000000000";
    use Method as M;
    use StatusCode as S;

    // 400: malformed JSON, wrong types, unknown and missing fields, bad values.
    let bad_bodies = [
        ("{\"workflow\"", "malformed_json"),
        ("", "malformed_json"),
        ("{\"workflow\": 1}", "invalid_body"),
        ("{\"workflow\": \"gate\", \"bogus\": true}", "invalid_body"),
        ("{}", "invalid_body"),
        ("[]", "invalid_body"),
        ("null", "invalid_body"),
        (
            "{\"workflow\": \"gate\", \"targets\": \"a\"}",
            "invalid_body",
        ),
        ("{\"workflow\": \"gate\", \"version\": 1.5}", "invalid_body"),
        ("{\"workflow\": \"gate\", \"version\": 0}", "invalid_input"),
        (
            "{\"workflow\": \"gate\", \"idempotency_key\": \"\"}",
            "invalid_input",
        ),
        (
            "{\"workflow\": \"gate\", \"targets\": [\"a\", \"a\"]}",
            "invalid_input",
        ),
        ("{\"workflow\": \"\"}", "invalid_input"),
    ];
    for (body, code) in bad_bodies {
        expect(
            &s,
            Case::new(M::POST, "/v1/runs").json(body),
            S::BAD_REQUEST,
            code,
        )
        .await;
    }
    let deep = format!(
        "{{\"workflow\": \"gate\", \"input\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").json(&deep),
        S::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").body("application/json", vec![0xff, 0xfe, b'{']),
        S::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    let signal = format!("/v1/runs/{run}/steps/gate/signal");
    expect(
        &s,
        Case::new(M::POST, &signal).json("{\"payload\": 1, \"extra\": 2}"),
        S::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, &signal).json("{\"item\": -1}"),
        S::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, &signal).json("{\"item\": {}}"),
        S::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    let retry = format!("/v1/runs/{run}/steps/gate/retry");
    expect(
        &s,
        Case::new(M::POST, &retry).json("{\"inputs\": {}}"),
        S::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    // Paths that do not parse.
    for path in [
        "/v1/runs/not-a-uuid".to_string(),
        "/v1/runs/12345/events".to_string(),
        "/v1/runs/%00/events/stream".to_string(),
        "/v1/workflows/gate/versions/one".to_string(),
        "/v1/workflows/gate/versions/99999999999999999999999".to_string(),
    ] {
        expect(&s, Case::new(M::GET, path), S::BAD_REQUEST, "invalid_path").await;
    }
    expect(
        &s,
        Case::new(M::POST, "/v1/runs/nope/cancel"),
        S::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/runs/nope/steps/x/signal"),
        S::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    // Query parameters that do not parse or are out of range.
    for q in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "status=bogus",
        "cursor=not-a-uuid",
        "colour=blue",
    ] {
        expect(
            &s,
            Case::new(M::GET, format!("/v1/runs?{q}")),
            S::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for q in ["after=-1", "after=x", "limit=0", "limit=1001", "seq=1"] {
        expect(
            &s,
            Case::new(M::GET, format!("/v1/runs/{run}/events?{q}")),
            S::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for bad in ["x", "-3", "1.5"] {
        expect(
            &s,
            Case::new(M::GET, format!("/v1/runs/{run}/events/stream")).header("last-event-id", bad),
            S::BAD_REQUEST,
            "invalid_header",
        )
        .await;
    }
    // Definitions: malformed YAML and JSON, and invalid ones, with every problem listed.
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").body("application/yaml", b"name: [unclosed".to_vec()),
        S::BAD_REQUEST,
        "invalid_definition",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").body("application/json", b"{\"name\":".to_vec()),
        S::BAD_REQUEST,
        "invalid_definition",
    )
    .await;
    let (status, body) = send(
        &s,
        &s.admin,
        &Case::new(M::POST, "/v1/workflows").body(
            "text/yaml",
            b"name: broken\nsteps:\n  - {name: a, action: nope}\n  - {name: b, action: noop, needs: [zz]}\n"
                .to_vec(),
        ),
    )
    .await;
    assert_eq!(status, S::BAD_REQUEST, "{body}");
    assert_eq!(error_code(status, &body), "invalid_definition");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "every problem is listed: {body}");
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").body("application/yaml", vec![b'n', 0xff, 0xfe]),
        S::BAD_REQUEST,
        "invalid_body",
    )
    .await;

    // 404: unknown ids and routes.
    expect(
        &s,
        Case::new(M::GET, format!("/v1/runs/{unknown}")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::GET, format!("/v1/runs/{unknown}/events")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::GET, format!("/v1/runs/{unknown}/events/stream")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    for verb in ["cancel", "pause", "resume", "rollback"] {
        expect(
            &s,
            Case::new(M::POST, format!("/v1/runs/{unknown}/{verb}")),
            S::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{unknown}/steps/gate/signal")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{unknown}/steps/gate/retry")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{run}/steps/nope/signal")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    // Retrying a step of a failed run that has no such step.
    s.register(
        "name: fails\nsteps:\n  - {name: a, action: noop}\n  - {name: x, action: fail, input: {retryable: false}, needs: [a]}\n",
    )
    .await;
    let failed = s.submit(json!({"workflow": "fails"})).await;
    s.wait_status(&failed, "failed").await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{failed}/steps/nope/retry")),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::GET, "/v1/workflows/nope"),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::GET, "/v1/workflows/gate/versions/7"),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").json("{\"workflow\": \"nope\"}"),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").json("{\"workflow\": \"gate\", \"version\": 9}"),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &s,
        Case::new(M::GET, "/v1/nothing"),
        S::NOT_FOUND,
        "not_found",
    )
    .await;
    // `/` is the web UI; outside `/ui` and `/v1` an unknown path is the API's 404.
    expect(&s, Case::new(M::GET, "/nowhere"), S::NOT_FOUND, "not_found").await;

    // 405: a route that exists, with a method it does not take.
    expect(
        &s,
        Case::new(M::DELETE, format!("/v1/runs/{run}")),
        S::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    expect(
        &s,
        Case::new(M::PUT, "/v1/workflows"),
        S::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // 409: verbs the run's state does not allow.
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{run}/resume")),
        S::CONFLICT,
        "invalid_state",
    )
    .await;
    expect(&s, Case::new(M::POST, &retry), S::CONFLICT, "invalid_state").await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{failed}/steps/a/retry")),
        S::CONFLICT,
        "step_not_failed",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{run}/steps/last/signal")),
        S::CONFLICT,
        "not_waiting",
    )
    .await;
    let (status, _) = send(
        &s,
        &s.admin,
        &Case::new(M::POST, &signal).json("{\"payload\": {\"ok\": true}}"),
    )
    .await;
    assert_eq!(status, S::OK);
    s.wait_status(&run, "succeeded").await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{run}/cancel")),
        S::CONFLICT,
        "invalid_state",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, format!("/v1/runs/{run}/pause")),
        S::CONFLICT,
        "invalid_state",
    )
    .await;
    expect(&s, Case::new(M::POST, &signal), S::CONFLICT, "not_waiting").await;

    // 413: bodies over the limit (1 MiB), whatever the route.
    let huge = format!(
        "{{\"workflow\": \"gate\", \"input\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").json(&huge),
        S::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, &signal).json(&huge),
        S::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").body("application/yaml", huge.clone().into_bytes()),
        S::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // 415: a body that is not what the route takes.
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").body("text/plain", b"{\"workflow\": \"gate\"}".to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/runs").raw(b"{\"workflow\": \"gate\"}".to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").body("text/plain", GATE.as_bytes().to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, "/v1/workflows").raw(GATE.as_bytes().to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, &signal)
            .body("application/x-www-form-urlencoded", b"payload=1".to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect(
        &s,
        Case::new(M::POST, &retry).body("application/yaml", b"input: {}".to_vec()),
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// Odd bytes at every route that takes a body: each must get a 4xx in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bodies_never_cause_a_server_error() {
    let s = TestServer::start();
    s.register(GATE).await;
    let run = s.submit(json!({"workflow": "gate"})).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b" ".to_vec(),
        b"0".to_vec(),
        b"\"text\"".to_vec(),
        b"true".to_vec(),
        b"{\"input\": 1e999}".to_vec(),
        b"{\"payload\": 1e999}".to_vec(),
        b"{\"workflow\": \"gate\", \"input\": {\"a\": [1, 2, {\"b\": null}]}, \"targets\": [\"h\\u0000\"]}".to_vec(),
        b"{\"workflow\": \"gate\", \"targets\": [\"has space\"]}".to_vec(),
        b"{\"workflow\": \"gate\", \"version\": -9223372036854775808}".to_vec(),
        b"{\"workflow\": \"gate\", \"version\": 99999999999999999999}".to_vec(),
        b"{\"item\": 4294967296}".to_vec(),
        b"{\"item\": \"\"}".to_vec(),
        "{\"workflow\": \"\u{1F980}\"}".as_bytes().to_vec(),
        vec![0; 64],
        (0..=255u8).collect(),
        format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
    ];
    let routes = [
        "/v1/runs".to_string(),
        "/v1/workflows".to_string(),
        format!("/v1/runs/{run}/steps/gate/signal"),
        format!("/v1/runs/{run}/steps/first/retry"),
        format!("/v1/runs/{run}/pause"),
    ];
    for route in &routes {
        for ct in ["application/json", "application/yaml", "text/plain"] {
            for b in &bodies {
                let c = Case::new(Method::POST, route).body(ct, b.clone());
                let (status, body) = send(&s, &s.admin, &c).await;
                assert!(
                    status.is_success() || status.is_client_error(),
                    "POST {route} ({ct}, {:?}): {status} {body}",
                    String::from_utf8_lossy(&b[..b.len().min(80)])
                );
                if !status.is_success() {
                    error_code(status, &body);
                }
            }
        }
    }
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// A body left unread by a refusal stays on the connection, so the answer must say the
/// connection closes; otherwise a client's next request on it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_an_unread_body_closes_the_connection_and_says_so() {
    let s = TestServer::start();
    let body = format!(
        "{{\"workflow\": \"provision-noop\", \"input\": \"{}\"}}",
        "x".repeat(300_000)
    );
    let send = |token: Option<String>, path: &str, body: String| {
        let mut rb = s
            .http
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let cases = [
        (None, "/v1/runs", StatusCode::UNAUTHORIZED),
        (Some(s.viewer.clone()), "/v1/runs", StatusCode::FORBIDDEN),
        (
            Some(s.operator.clone()),
            "/v1/runs/x/cancel",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (token, path, status) in cases {
        // Each refusal, then a normal request through the same client's pool.
        let res = send(token, path, body.clone()).await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(
            res.headers().get("connection").map(|v| v.to_str().unwrap()),
            Some("close"),
            "{path}"
        );
        let (status, _) = s.get(&s.viewer, "/v1/runs").await;
        assert_eq!(status, StatusCode::OK);
    }
    // Refusals without a body keep the connection.
    let res = s.http.get(s.url("/v1/runs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get("connection").is_none());
}
