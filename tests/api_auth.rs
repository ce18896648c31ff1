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
    ("GET", "/v1/inventory/hosts", Some("viewer")),
    ("GET", "/v1/inventory/hosts/{name}", Some("viewer")),
    ("GET", "/v1/drift", Some("viewer")),
    ("POST", "/v1/reconcile", Some("operator")),
    ("GET", "/v1/tokens", Some("admin")),
    ("POST", "/v1/tokens", Some("admin")),
    ("DELETE", "/v1/tokens/{name}", Some("admin")),
    ("GET", "/v1/audit", Some("admin")),
    ("GET", "/v1/whoami", Some("viewer")),
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

/// What a reader of the database sees of the tokens and the audit trail: the SQLite
/// file's bytes (with its log), or, on PostgreSQL, every row of both tables as text.
async fn stored_bytes(db: &std::path::Path) -> Vec<u8> {
    if on_postgres() {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(db.to_str().unwrap())
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT t::text FROM api_tokens t UNION ALL SELECT a::text FROM audit_log a",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        let _ = c.close().await;
        return rows.join("\n").into_bytes();
    }
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

    let bytes = stored_bytes(&s.db).await;
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
    assert!(dup.stderr.contains("names are never reused"), "{dup:#?}");
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

    // The audit trail says the same, newest first.
    let (status, v) = s.get(&s.admin, &format!("/v1/audit?target={run}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let trail: Vec<(String, String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["who"].as_str().unwrap().to_string(),
                e["from"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let at = |a: &str, who: &str| (a.to_string(), who.to_string(), "127.0.0.1".to_string());
    assert_eq!(
        trail,
        vec![
            at("run.cancel", "root"),
            at("run.resume", "alice"),
            at("run.pause", "alice"),
            at("run.submit", "alice"),
        ],
        "{v:#}"
    );
    let submit = &v["entries"][3];
    assert_eq!(submit["role"], "operator");
    assert_eq!(submit["detail"]["workflow"], "gate");
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

/// The server reads the tokens' version every 200 ms: a change made by another process
/// holds within that. Returns the refusal.
async fn until_refused(s: &TestServer, token: &str) -> Value {
    let since = std::time::Instant::now();
    loop {
        let (status, v) = s.get(token, "/v1/runs").await;
        if status == StatusCode::UNAUTHORIZED {
            return v;
        }
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(
            since.elapsed() < std::time::Duration::from_secs(2),
            "the change to the token never held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Moves a token's end into the past, as time would.
async fn expire(db: &std::path::Path, name: &str) {
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1_000;
    // `name` is this test's own; it needs no quoting.
    let done = run_sql(
        db,
        &format!("UPDATE api_tokens SET expires_at = {past} WHERE name = '{name}'"),
    )
    .await;
    assert_eq!(done, 1);
    // A server remembers the end it read; the row changed under it, so it is told to
    // read it again, as a create or revoke would.
    run_sql(db, "UPDATE api_tokens_version SET version = version + 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_are_revoked_at_once_and_each_change_is_audited() {
    let s = TestServer::start();
    let db = s.db.to_str().unwrap().to_string();

    // Made by an admin over the API; an operator may not.
    let (status, made) = s
        .post(
            &s.admin,
            "/v1/tokens",
            Some(json!({"role": "operator", "name": "temp", "expires": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let temp = made["token"].as_str().unwrap().to_string();
    let lasts = made["expires_at"].as_i64().unwrap() - made["created_at"].as_i64().unwrap();
    assert_eq!(lasts, 3_600_000, "{made}");
    assert_eq!(made["created_by"], "root");
    assert_eq!(made["state"], "active");
    let (status, _) = s.get(&temp, "/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(&s.operator, "/v1/tokens", Some(json!({"role": "admin"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad input names what is wrong, and makes nothing.
    for (body, code, needle) in [
        (
            json!({"role": "operator", "expires": "10s"}),
            400,
            "out of bounds",
        ),
        (
            json!({"role": "operator", "expires": "soon"}),
            400,
            "`expires`",
        ),
        (json!({"role": "root"}), 400, "unknown role"),
        (json!({"role": "viewer", "name": "a b"}), 400, "not valid"),
        (json!({"role": "viewer", "ttl": "1h"}), 400, "ttl"),
        (
            json!({"role": "viewer", "name": "temp"}),
            409,
            "never reused",
        ),
    ] {
        let (status, v) = s.post(&s.admin, "/v1/tokens", Some(body.clone())).await;
        assert_eq!(status.as_u16(), code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }

    // An expired token is told so.
    expire(&s.db, "temp").await;
    let v = until_refused(&s, &temp).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'temp' expired at"),
        "{v}"
    );

    // Revoked over the API: refused from the very next request.
    let (_, made) = s
        .post(
            &s.admin,
            "/v1/tokens",
            Some(json!({"role": "viewer", "name": "temp2"})),
        )
        .await;
    let temp2 = made["token"].as_str().unwrap().to_string();
    let ninety_days = 90 * 86_400_000;
    assert_eq!(
        made["expires_at"].as_i64().unwrap() - made["created_at"].as_i64().unwrap(),
        ninety_days,
        "the default expiry: {made}"
    );
    let (status, _) = s.get(&temp2, "/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = s
        .call(Method::DELETE, "/v1/tokens/temp2", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "revoked");
    assert_eq!(v["revoked_by"], "root");
    let (status, v) = s.get(&temp2, "/v1/runs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked by root"),
        "{v}"
    );
    let (status, _) = s
        .call(Method::DELETE, "/v1/tokens/temp2", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = s
        .call(Method::DELETE, "/v1/tokens/nobody", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revoked by the CLI on the database, next to the running server: within a poll.
    let (status, _) = s.get(&s.viewer, "/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    let out = s
        .cli(None, &["token", "revoke", "victor", "--db", &db], None)
        .await;
    out.ok();
    assert!(
        out.stdout.contains("revoked viewer token 'victor'"),
        "{out:#?}"
    );
    let revoked_at = std::time::Instant::now();
    let v = until_refused(&s, &s.viewer).await;
    assert!(v.to_string().contains("revoked by local:"), "{v}");
    println!(
        "revoked by the CLI -> refused by the server: {} ms",
        revoked_at.elapsed().as_millis()
    );

    // A token in the URL is refused, even a valid one, and even with a header.
    for q in ["access_token", "token", "api_key"] {
        let res = s
            .http
            .get(s.url(&format!("/v1/runs?{q}={}", s.admin)))
            .bearer_auth(&s.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{q}");
        let v: Value = res.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("in the URL"),
            "{v}"
        );
    }

    // The list shows each token's state and last use, never a secret.
    let (status, v) = s.get(&s.admin, "/v1/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let text = v.to_string();
    for secret in [&temp, &temp2, &s.admin] {
        assert!(!text.contains(secret.trim_start_matches("lariat_")));
    }
    let state = |name: &str| {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {v}"))
            .clone()
    };
    assert_eq!(state("temp")["state"], "expired");
    assert_eq!(state("temp2")["state"], "revoked");
    let victor = state("victor");
    assert!(
        victor["revoked_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("local:")),
        "{victor}"
    );
    assert_eq!(state("root")["state"], "active");
    let root = state("root");
    assert!(root["last_used_at"].as_i64().unwrap() > 0, "{root}");
    assert_eq!(root["last_used_from"], "127.0.0.1");

    // The audit trail has each change with who and from where; only admins read it.
    let (status, v) = s.get(&s.admin, "/v1/audit?action=token").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let trail: Vec<(String, String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["who"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let e = |a: &str, t: &str, w: &str| (a.to_string(), t.to_string(), w.to_string());
    assert_eq!(
        &trail[..4],
        &[
            e("token.revoke", "victor", &format!("local:{user}")),
            e("token.revoke", "temp2", "root"),
            e("token.create", "temp2", "root"),
            e("token.create", "temp", "root"),
        ],
        "{v:#}"
    );
    // The three tokens the test server started with, made by the CLI.
    assert_eq!(trail.len(), 7, "{v:#}");
    assert_eq!(v["entries"][1]["from"], "127.0.0.1");
    let (status, _) = s.get(&s.operator, "/v1/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = s.get(&s.admin, "/v1/audit?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = s.get(&s.admin, "/v1/audit?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let before = v["next_before"].as_i64().unwrap();
    let (_, older) = s
        .get(&s.admin, &format!("/v1/audit?limit=2&before={before}"))
        .await;
    assert!(
        older["entries"][0]["seq"].as_i64().unwrap() < before,
        "{older}"
    );

    // The CLI prints the same.
    let out = s
        .cli(Some(&s.admin), &["audit", "--action", "token.revoke"], None)
        .await;
    out.ok();
    assert!(
        out.stdout.contains("temp2") && out.stdout.contains("victor"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("token.create"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_answers_show_no_internals_to_anonymous_callers() {
    // A design repository over SSH: its URL's user is shown as `***`, and the key's
    // path and contents never.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_deploy");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nk3y-s3cr3t\n").unwrap();
    let known = keys.path().join("known_hosts");
    std::fs::write(
        &known,
        "[127.0.0.1]:9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHz1bS2r6wAyc3t4mTr2n0f6hEo6jW5iX5h7o7F0o2bL\n",
    )
    .unwrap();
    let s = TestServer::start_with(&[
        "--design-repo",
        "ssh://deploy-bot@127.0.0.1:9/ops/design.git",
        "--design-ssh-key",
        key.to_str().unwrap(),
        "--design-known-hosts",
        known.to_str().unwrap(),
    ]);
    let (status, v) = s.get(&s.viewer, "/v1/designs").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("deploy-bot") && !text.contains("id_deploy"),
        "{v}"
    );
    assert!(text.contains("ssh://***@127.0.0.1:9/ops/design.git"), "{v}");
    let (_, v) = s.post(&s.admin, "/v1/designs/sync", None).await;
    assert!(!v.to_string().contains("k3y-s3cr3t"), "{v}");
    assert!(!s.log().contains("k3y-s3cr3t"), "the log shows the key");

    // Readiness tells anyone whether, not why.
    let res = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
