//! The web UI over HTTP, as a browser without its script sees it: sign-in and the session
//! cookie, pages that follow the role, CSRF and origin checks on every mutation, expired
//! sessions, and bad input answered by a message in the page. The browser itself is
//! `ui_browser`'s.

mod api_support;
mod ui_support;

use std::time::Duration;

use api_support::{TestServer, step_of};
use reqwest::StatusCode;
use serde_json::json;
use ui_support::{Browser, DEMO, get_anon, post_anon};

async fn demo_run(s: &TestServer) -> String {
    s.register(DEMO).await;
    let id = s
        .submit(json!({"workflow": "demo", "input": {"image": "http://img/x"}, "targets": ["h1", "h2"]}))
        .await;
    s.wait_step(&id, "flash", "failed").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signs_in_to_a_strict_cookie_and_the_pages_follow_its_role() {
    let s = TestServer::start();
    let run = demo_run(&s).await;

    // No session: to the sign-in form, and back after.
    let p = get_anon(&s, "/ui/runs").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        p.location.as_deref(),
        Some("/ui/signin?why=signin&next=%2Fui%2Fruns")
    );
    assert_eq!(
        get_anon(&s, "/").await.location.as_deref(),
        Some("/ui/runs")
    );
    let bad = post_anon(&s, "/ui/signin", &[("token", "lariat_nope")]).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(
        bad.text().contains("the bearer token is not valid"),
        "{}",
        bad.text()
    );
    // A token with bytes no header may carry is nobody's, and says so.
    let garbled = post_anon(&s, "/ui/signin", &[("token", "lariat_\u{7}é")]).await;
    assert_eq!(garbled.status, StatusCode::UNAUTHORIZED);
    assert!(
        garbled.text().contains("that is not an API token"),
        "{}",
        garbled.text()
    );
    let empty = post_anon(&s, "/ui/signin", &[("token", "")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.text().contains("paste an API token"));

    let p = post_anon(
        &s,
        "/ui/signin",
        &[("token", &s.operator), ("next", &format!("/ui/runs/{run}"))],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        p.location.as_deref(),
        Some(format!("/ui/runs/{run}").as_str())
    );
    let cookie = p.set_cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(&s.operator),
        "the token itself never goes to the browser"
    );
    // Another site's `next` is not followed.
    let p = post_anon(
        &s,
        "/ui/signin",
        &[("token", &s.operator), ("next", "https://evil.example/")],
    )
    .await;
    assert_eq!(p.location.as_deref(), Some("/ui/runs"));
    // Nor one a Location header cannot carry (it used to panic the request).
    let p = post_anon(
        &s,
        "/ui/signin",
        &[
            ("token", &s.operator),
            ("next", "/ui/runs\r\nSet-Cookie: x=y"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/ui/runs"));

    let ops = Browser::sign_in(&s, &s.operator).await;
    let page = ops.get(&format!("/ui/runs/{run}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    assert!(text.contains("alice operator"), "{text}");
    for id in [
        r#"id="verb-cancel""#,
        r#"id="verb-rollback""#,
        r#"id="retry-flash""#,
        r#"id="signal-callback""#,
    ] {
        assert!(page.html.contains(id), "an operator gets {id}");
    }
    assert!(
        text.contains("2 waiting"),
        "the fan-out's items grouped by state: {text}"
    );
    assert!(page.html.contains(r#"<svg class="dag""#));

    let viewer = Browser::sign_in(&s, &s.viewer).await;
    let page = viewer.get(&format!("/ui/runs/{run}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("victor viewer"));
    for id in ["verb-", "retry-", "signal-"] {
        assert!(
            !page.html.contains(&format!(r#"id="{id}"#)),
            "a viewer gets no {id} button"
        );
    }
    let submit = viewer.get("/ui/submit?workflow=demo").await;
    assert!(submit.text().contains("it may look, not start runs"));
    assert!(!submit.html.contains(r#"id="submit-form""#));
    // A viewer who posts the form anyway is refused by the API, and told so.
    let csrf = viewer.csrf().await;
    let p = viewer
        .post(
            &format!("/ui/runs/{run}/verb"),
            &[("csrf", &csrf), ("verb", "cancel"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let after = viewer.get(&format!("/ui/runs/{run}")).await;
    assert!(
        after.text().contains("cancel was refused"),
        "{}",
        after.text()
    );
    assert_eq!(s.run(&run).await["status"], "failed");

    // Every page draws for both.
    for path in [
        "/ui/runs",
        "/ui/submit",
        "/ui/submit?workflow=demo",
        "/ui/hosts",
        "/ui/sites",
        "/ui/design",
        "/ui/windows",
    ] {
        for b in [&ops, &viewer] {
            let p = b.get(path).await;
            assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_needs_this_sessions_csrf_token_and_this_origin() {
    let s = TestServer::start();
    let run = demo_run(&s).await;
    let a = Browser::sign_in(&s, &s.operator).await;
    let b = Browser::sign_in(&s, &s.operator).await;
    let (csrf_a, csrf_b) = (a.csrf().await, b.csrf().await);
    assert_ne!(csrf_a, csrf_b);
    let verb = format!("/ui/runs/{run}/verb");

    let none = a
        .post(&verb, &[("verb", "cancel"), ("confirmed", "yes")])
        .await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    assert!(
        none.text().contains("carries no CSRF token"),
        "{}",
        none.text()
    );
    let other = a
        .post(
            &verb,
            &[("verb", "cancel"), ("confirmed", "yes"), ("csrf", &csrf_b)],
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(
        other.text().contains("not this session's"),
        "{}",
        other.text()
    );
    let forged = a
        .post_with(
            &verb,
            &[("verb", "cancel"), ("confirmed", "yes"), ("csrf", &csrf_a)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(
        forged.text().contains("sent from https://evil.example"),
        "{}",
        forged.text()
    );

    // Replayed after sign-out: the session is gone, so nothing is done.
    let out = a.post("/ui/signout", &[("csrf", &csrf_a)]).await;
    assert_eq!(out.location.as_deref(), Some("/ui/signin?why=out"));
    let replay = a
        .post(
            &verb,
            &[("verb", "cancel"), ("confirmed", "yes"), ("csrf", &csrf_a)],
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    assert!(
        replay
            .location
            .unwrap()
            .starts_with("/ui/signin?why=signin")
    );
    assert_eq!(
        s.run(&run).await["status"],
        "failed",
        "no refused form did anything"
    );

    // Unconfirmed, a verb only says what it would do; confirmed with the right token, it does it.
    let ask = b
        .post(&verb, &[("verb", "cancel"), ("csrf", &csrf_b)])
        .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.text().contains(&format!("Cancel run {run}")),
        "{}",
        ask.text()
    );
    assert_eq!(s.run(&run).await["status"], "failed");
    let origin = s.base.clone();
    let done = b
        .post_with(
            &verb,
            &[("verb", "cancel"), ("confirmed", "yes"), ("csrf", &csrf_b)],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    assert_eq!(
        s.wait_status(&run, "cancelled").await["status"],
        "cancelled"
    );
    let page = b.get(&format!("/ui/runs/{run}")).await;
    assert!(
        page.text().contains("cancel: done; the run is cancelled"),
        "{}",
        page.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_and_a_revoked_token_ends_its_session() {
    let s = TestServer::start_with(&["--ui-session-idle", "1s"]);
    let b = Browser::sign_in(&s, &s.operator).await;
    assert_eq!(b.get("/ui/runs").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = b.get("/ui/hosts").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        p.location.as_deref(),
        Some("/ui/signin?why=expired&next=%2Fui%2Fhosts")
    );
    assert!(p.set_cookie.unwrap().contains("Max-Age=0"));
    let form = get_anon(&s, "/ui/signin?why=expired").await;
    assert!(form.text().contains("Your session expired: sign in again."));

    // A session lives by its token: revoked, the next page says so.
    let b = Browser::sign_in(&s, &s.admin).await;
    let (st, _) = s
        .call(
            reqwest::Method::DELETE,
            "/v1/tokens/root",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = b.get("/ui/runs").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text());
    assert_eq!(p.location.as_deref(), Some("/ui/signin?why=revoked&next="));
    assert!(p.set_cookie.unwrap().contains("Max-Age=0"));
    // The session ended with its token: the cookie no longer names one.
    let again = b.get("/ui/hosts").await;
    assert_eq!(
        again.location.as_deref(),
        Some("/ui/signin?why=signin&next=%2Fui%2Fhosts")
    );
    let form = get_anon(&s, "/ui/signin?why=revoked").await;
    assert!(
        form.text()
            .contains("The API no longer accepts your session's token"),
        "{}",
        form.text()
    );
    // Signing in again with the revoked token is refused by the API, in the form.
    let p = post_anon(&s, "/ui/signin", &[("token", &s.admin)]).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.text().contains("was revoked"), "{}", p.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_browser_speaking_http2_signs_in_and_sends_forms() {
    // Browsers speak HTTP/2 over TLS, which names the server in `:authority`, not `Host`:
    // the origin check must find it there.
    let pki = tempfile::tempdir().unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .unwrap();
    let (cert, key) = (pki.path().join("ui.crt"), pki.path().join("ui.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let origin = s.base.trim_end_matches('/').to_string();
    let signed = http
        .post(s.url("/ui/signin"))
        .header("origin", &origin)
        .form(&[("token", s.operator.as_str()), ("next", "/ui/hosts")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.version(), reqwest::Version::HTTP_2);
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let set = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("; Secure"),
        "a cookie over TLS is Secure: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http
        .get(s.url("/ui/runs"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = ui_support::Page {
        status: page.status(),
        location: None,
        set_cookie: None,
        html: page.text().await.unwrap(),
    };
    let csrf = page.csrf();
    let forged = http
        .post(s.url("/ui/signout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let out = http
        .post(s.url("/ui/signout"))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()["location"], "/ui/signin?why=out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_by_a_message_in_the_page() {
    let s = TestServer::start();
    let run = demo_run(&s).await;
    let b = Browser::sign_in(&s, &s.operator).await;
    let csrf = b.csrf().await;
    let form = |extra: &[(&'static str, &'static str)]| {
        let mut f = vec![
            ("csrf", csrf.as_str()),
            ("workflow", "demo"),
            ("action", "submit"),
            ("by", "names"),
            ("names", "h1"),
        ];
        f.extend_from_slice(extra);
        f
    };

    let missing = b.post("/ui/submit", &form(&[])).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(
        missing.text().contains("parameter 'image' is required"),
        "{}",
        missing.text()
    );
    assert!(
        missing.html.contains(r#"id="submit-form""#),
        "the form is shown again"
    );

    let plain = b
        .post(
            "/ui/submit",
            &form(&[("p.image", "http://img/x"), ("p.root_password", "hunter2")]),
        )
        .await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
    assert!(
        plain
            .text()
            .contains("parameter 'root_password' is sensitive"),
        "{}",
        plain.text()
    );
    assert!(
        !plain.html.contains("hunter2"),
        "a secret typed as a value is not echoed back"
    );
    assert!(
        plain
            .html
            .replace("&#x2f;", "/")
            .contains(r#"value="http://img/x""#),
        "what was typed is kept"
    );

    let not_int = b
        .post("/ui/submit", &form(&[("p.image", "x"), ("p.count", "two")]))
        .await;
    assert!(
        not_int
            .text()
            .contains("parameter 'count' is an integer, not 'two'")
    );

    let nothing = b
        .post(
            "/ui/submit",
            &[
                ("csrf", &csrf),
                ("workflow", "demo"),
                ("action", "preview"),
                ("by", "filter"),
                ("labels", "role=nothing"),
            ],
        )
        .await;
    assert_eq!(nothing.status, StatusCode::OK);
    assert!(
        nothing.text().contains("no host of the active design"),
        "{}",
        nothing.text()
    );

    let ok = b
        .post(
            "/ui/submit",
            &form(&[
                ("p.image", "http://img/x"),
                ("p.root_password", "env:ROOT_PW"),
            ]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text());
    let id = ok
        .location
        .unwrap()
        .trim_start_matches("/ui/runs/")
        .to_string();
    assert_eq!(
        s.run(&id).await["input"]["root_password"],
        json!({"env": "ROOT_PW"})
    );

    let gone = b.get("/ui/runs/0190a1d2-0000-7000-8000-000000000000").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        gone.text().contains("unknown run 0190a1d2"),
        "{}",
        gone.text()
    );
    let not_id = b.get("/ui/runs/ams1-a07").await;
    assert_eq!(not_id.status, StatusCode::NOT_FOUND);
    assert!(not_id.text().contains("'ams1-a07' is not a run id"));
    let status = b.get("/ui/runs?status=done").await;
    assert_eq!(status.status, StatusCode::BAD_REQUEST);
    assert!(status.text().contains("no run status 'done'"));
    let after = b.get(&format!("/ui/runs/{run}?after=soon")).await;
    assert_eq!(after.status, StatusCode::BAD_REQUEST);
    assert!(
        after
            .text()
            .contains("the link's query `after=soon` does not read"),
        "{}",
        after.text()
    );
    let page = b.get(&format!("/ui/runs/{run}?page=-1")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text());
    let none = b.get("/ui/runs?host=nowhere").await;
    assert!(none.text().contains("No run matches this filter."));
    assert_eq!(
        b.get("/ui/nothing/here").await.status,
        StatusCode::NOT_FOUND
    );
    let host = b.get("/ui/hosts/ams1-a07").await;
    assert_eq!(host.status, StatusCode::NOT_FOUND);
    assert!(host.text().contains("no host ams1-a07"), "{}", host.text());

    let verb = format!("/ui/runs/{run}/verb");
    let json = b
        .post(
            &verb,
            &[
                ("csrf", &csrf),
                ("verb", "retry"),
                ("step", "flash"),
                ("input", "{times: 0"),
            ],
        )
        .await;
    assert_eq!(json.status, StatusCode::BAD_REQUEST);
    assert!(
        json.text().contains("the retry's input is not JSON"),
        "{}",
        json.text()
    );
    let unknown = b.post(&verb, &[("csrf", &csrf), ("verb", "explode")]).await;
    assert!(unknown.text().contains("no verb 'explode'"));
    let wrong_step = b
        .post(
            &verb,
            &[
                ("csrf", &csrf),
                ("verb", "retry"),
                ("step", "prepare"),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(wrong_step.status, StatusCode::SEE_OTHER);
    let page = b.get(&format!("/ui/runs/{run}")).await;
    assert!(page.text().contains("retry was refused"), "{}", page.text());

    // None of it was a stack trace or a blank page, and the retry with good input works.
    let retried = b
        .post(
            &verb,
            &[
                ("csrf", &csrf),
                ("verb", "retry"),
                ("step", "flash"),
                ("input", r#"{"times": 0, "kind": "bmc"}"#),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    let v = s.wait_step(&run, "flash", "succeeded").await;
    assert_eq!(
        step_of(&v, "flash")["input"],
        json!({"times": 0, "kind": "bmc"})
    );
}

const SLOW_RETRY: &str = r#"
name: slow-retry
steps:
  - name: flash
    action: fail
    input: {times: 1000}
    retry: {max_attempts: 3, initial_backoff: 10m, max_backoff: 10m, multiplier: 1, jitter: 0}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_step_shows_as_retrying_with_its_next_attempt() {
    let s = TestServer::start();
    s.register(SLOW_RETRY).await;
    let run = s.submit(json!({"workflow": "slow-retry"})).await;
    let v = s.wait_step(&run, "flash", "retrying").await;
    let next = step_of(&v, "flash")["next_retry_at"].as_i64().unwrap();
    let b = Browser::sign_in(&s, &s.viewer).await;
    let page = b.get(&format!("/ui/runs/{run}")).await;
    let text = page.text();
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(next as u64),
    )
    .to_string()
    .replace('T', " ");
    assert!(
        text.contains(&format!("retrying next attempt {when}")),
        "{text}"
    );
    assert!(
        text.contains("planned failure (attempt 1)"),
        "the last error stays shown: {text}"
    );
}
