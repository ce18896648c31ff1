//! Auth and audit, end to end against the real server: every route without a token and
//! with a too-weak role, the stored form of tokens, and who did what in a run's history.

mod api_support;

use std::collections::BTreeSet;

use api_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Every route the API serves and the least role it needs. The test compares this with
/// the OpenAPI document, then checks that the server enforces each role.
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", Some("viewer")),
    ("GET", "/openapi.json", Some("viewer")),
    ("GET", "/v1/workflows", Some("viewer")),
    ("POST", "/v1/workflows", Some("admin")),
    ("GET", "/v1/workflows/{name}", Some("viewer")),
    (
        "GET",
        "/v1/workflows/{name}/versions/{version}",
        Some("viewer"),
    ),
    ("GET", "/v1/designs", Some("viewer")),
    ("GET", "/v1/designs/{rev}/findings", Some("viewer")),
    ("POST", "/v1/designs/validate", Some("viewer")),
    ("POST", "/v1/designs/sync", Some("admin")),
    ("PUT", "/v1/sites/{site}/pin", Some("admin")),
    ("DELETE", "/v1/sites/{site}/pin", Some("admin")),
    ("GET", "/v1/hosts", Some("viewer")),
    ("GET", "/v1/hosts/{name}/resolved", Some("viewer")),
    // Signed with the webhook secret instead of a bearer token.
    ("POST", "/v1/hooks/git", None),
    ("GET", "/v1/runs", Some("viewer")),
    ("POST", "/v1/runs", Some("operator")),
    ("GET", "/v1/runs/{id}", Some("viewer")),
    ("GET", "/v1/runs/{id}/events", Some("viewer")),
    ("GET", "/v1/runs/{id}/events/stream", Some("viewer")),
    ("POST", "/v1/runs/{id}/cancel", Some("operator")),
    ("POST", "/v1/runs/{id}/pause", Some("operator")),
    ("POST", "/v1/runs/{id}/resume", Some("operator")),
    ("POST", "/v1/runs/{id}/rollback", Some("operator")),
    ("POST", "/v1/runs/{id}/steps/{step}/retry", Some("operator")),
    (
        "POST",
        "/v1/runs/{id}/steps/{step}/signal",
        Some("operator"),
    ),
    ("GET", "/v1/sites", Some("viewer")),
    ("GET", "/v1/commands/{id}", Some("viewer")),
    ("GET", "/v1/windows", Some("viewer")),
    ("GET", "/v1/windows/{name}", Some("viewer")),
    ("POST", "/v1/windows/{name}/open", Some("operator")),
    ("POST", "/v1/windows/{name}/close", Some("operator")),
    ("POST", "/v1/windows/{name}/clear", Some("operator")),
    // A site agent's credential, which no operator token is.
    ("POST", "/v1/agent/hello", Some("agent")),
    ("POST", "/v1/agent/sync", Some("agent")),
    ("POST", "/v1/agent/events", Some("agent")),
];

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("unknown role {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_missing_token_and_a_weak_role() {
    let s = TestServer::start();
    let (status, doc) = s.get(&s.viewer, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);

    // The document lists exactly the routes above, with the same roles.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let role = op["security"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s["bearer"][0].as_str())
                .map(str::to_string);
            documented.insert((method.to_uppercase(), path.clone(), role));
        }
    }
    let expected: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p, r)| (m.to_string(), p.to_string(), r.map(str::to_string)))
        .collect();
    assert_eq!(
        documented, expected,
        "the OpenAPI document and the route table differ"
    );

    let run = s.submit(json!({"workflow": "provision-noop"})).await;
    let tokens = [
        ("viewer", s.viewer.clone()),
        ("operator", s.operator.clone()),
        ("admin", s.admin.clone()),
    ];
    for (method, path, role) in ROUTES {
        let url = path
            .replace("{id}", &run)
            .replace("{name}", "provision-noop")
            .replace("{version}", "1")
            .replace("{step}", "await_callback")
            .replace("{rev}", "0123456789abc")
            .replace("{site}", "ams1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let send = |token: Option<&str>| {
            let mut rb = s.http.request(method.clone(), s.url(&url));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            rb.send()
        };
        let Some(role) = role else {
            let res = send(None).await.unwrap();
            assert!(
                res.headers().get("www-authenticate").is_none(),
                "{method} {url} needs no bearer token"
            );
            if path.starts_with("/v1/hooks/") {
                // No webhook secret on this server: refused, but not for want of a token.
                assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {url}");
            } else {
                assert_eq!(res.status(), StatusCode::OK, "{method} {url} is open");
            }
            continue;
        };
        let res = send(None).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {url} without a token"
        );
        assert!(
            res.headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{method} {url}: 401 names the scheme"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(StatusCode::UNAUTHORIZED, &body), "unauthorized");

        let res = send(Some("lariat_not-a-real-token")).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {url} with a bad token"
        );

        for (name, token) in &tokens {
            let res = send(Some(token)).await.unwrap();
            let status = res.status();
            if *role == "agent" {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {url} as {name}");
                continue;
            }
            if rank(name) < rank(role) {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {url} as {name}");
                let body: Value = res.json().await.unwrap();
                assert_eq!(error_code(status, &body), "forbidden");
            } else {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {url} as {name}: {status}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_refused() {
    let s = TestServer::start();
    for value in [
        "Basic dXNlcjpwYXNz".to_string(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Token {}", s.admin),
        s.admin.clone(),
    ] {
        let res = s
            .http
            .get(s.url("/v1/runs"))
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{value}");
    }
    // The scheme is case-insensitive.
    let res = s
        .http
        .get(s.url("/v1/runs"))
        .header("authorization", format!("bearer {}", s.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

fn file_bytes(db: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_as_hashes_and_work_next_to_a_running_server() {
    let s = TestServer::start();
    // Created while the server runs: the CLI opens the database without the executor lock.
    let out = s
        .cli(
            None,
            &[
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "late",
                "--db",
                s.db.to_str().unwrap(),
            ],
            None,
        )
        .await;
    out.ok();
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("lariat_") && token.len() > 60, "{out:#?}");
    assert!(out.stderr.contains("shown only this once"), "{out:#?}");

    let (status, _) = s.get(&token, "/v1/runs").await;
    assert_eq!(status, StatusCode::OK, "a new token works at once");

    let bytes = file_bytes(&s.db);
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(contains(&bytes, &hash), "the hash is stored");
    for t in [&token, &s.admin, &s.operator, &s.viewer] {
        let secret = t.trim_start_matches("lariat_");
        assert!(!contains(&bytes, secret), "a token is stored in clear");
    }

    // Names are unique; listing never shows secrets.
    let dup = s
        .cli(
            None,
            &[
                "token",
                "create",
                "--role",
                "viewer",
                "--name",
                "late",
                "--db",
                s.db.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert_eq!(dup.code, 1, "{dup:#?}");
    assert!(dup.stderr.contains("already exists"), "{dup:#?}");
    let bad_role = s
        .cli(
            None,
            &[
                "token",
                "create",
                "--role",
                "root",
                "--db",
                s.db.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert_ne!(bad_role.code, 0);
    assert!(bad_role.stderr.contains("unknown role"), "{bad_role:#?}");
    let list = s
        .cli(
            None,
            &["token", "list", "--json", "--db", s.db.to_str().unwrap()],
            None,
        )
        .await;
    let names: Vec<String> = list
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"late".to_string()));
    assert!(
        !list.stdout.contains(&token[10..]),
        "token list shows no secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_name_who_and_from_where_in_the_run_history() {
    let s = TestServer::start();
    s.register(GATE).await;
    let run = s.submit(json!({"workflow": "gate"})).await;
    s.wait_step(&run, "gate", "waiting").await;
    for verb in ["pause", "resume"] {
        let (status, v) = s
            .post(&s.operator, &format!("/v1/runs/{run}/{verb}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{verb}: {v}");
    }
    let (status, v) = s
        .post(&s.admin, &format!("/v1/runs/{run}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");

    let events = s.events(&run).await;
    let ops: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "operator")
        .map(|e| {
            let d = &e["data"];
            assert!(e["at"].as_i64().unwrap() > 0, "when: {e}");
            (
                d["verb"].as_str().unwrap().to_string(),
                d["actor"]["who"].as_str().unwrap().to_string(),
                d["actor"]["from"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect =
        |verb: &str, who: &str| (verb.to_string(), who.to_string(), "127.0.0.1".to_string());
    assert_eq!(
        ops,
        vec![
            expect("submit", "alice"),
            expect("pause", "alice"),
            expect("resume", "alice"),
            expect("cancel", "root"),
        ],
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_serves_without_tokens_and_says_so() {
    let s = TestServer::start_with(&["--insecure-no-auth"]);
    let (status, v) = s
        .call(
            Method::POST,
            "/v1/runs",
            None,
            Some(&json!({"workflow": "provision-noop"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let run = v["id"].as_str().unwrap();
    let (status, _) = s
        .call(Method::GET, &format!("/v1/runs/{run}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.log().contains("--insecure-no-auth"), "{}", s.log());
    let events = s.events(run).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "operator" && e["data"]["actor"]["who"] == "insecure-no-auth"),
        "{events:#?}"
    );
}
