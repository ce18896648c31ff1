//! The web UI in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! chromedriver. An operator signs in, submits a run from the generated form, watches it
//! change live (SSE), retries a failed step with edited input, signals a fan-out's items,
//! rolls a run back and signs out; a viewer sees no mutating button and a forged POST
//! from the page is refused. Each page's screenshot is written to
//! `target/tmp/ui-screenshots/`.
//!
//! Without chromium and chromedriver the test skips, saying so;
//! `LARIAT_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

mod api_support;
mod ui_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{Repo, TestServer, copy_dir, examples};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use ui_support::DEMO;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and the browser session it drives; both end when dropped.
struct Chrome {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Drop for Chrome {
    /// The browser goes too (chromedriver's end does not end it), found by its profile
    /// folder, so a test that fails midway leaves no Chromium behind.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self._profile.path())
            .status();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Chrome {
    /// None when this machine has no browser and nothing requires one.
    async fn start() -> Option<Chrome> {
        if !(std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists())
        {
            assert!(
                std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "LARIAT_REQUIRE_PRIVILEGED=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIP: no {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut chrome = Chrome {
            driver,
            client: None,
            _profile: profile,
        };
        // Without the background-networking flags Chromium reaches for Google's hosts,
        // which this closed network refuses, many at a time.
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                    format!("--user-data-dir={}", chrome._profile.path().display()),
                ],
            }
        });
        let caps: fantoccini::wd::Capabilities = caps.as_object().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not give a session: {e}"),
            }
        };
        chrome.client = Some(client);
        Some(chrome)
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Wait (without reloading) until the element's text holds `want`.
async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let deadline = Instant::now() + api_support::PATIENCE;
    loop {
        let t = text(c, css).await;
        if t.contains(want) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never said '{want}'; it says '{t}' on {}",
            c.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

async fn wait_path(c: &Client, prefix: &str) -> String {
    let deadline = Instant::now() + api_support::PATIENCE;
    loop {
        let p = path_of(c).await;
        if p.starts_with(prefix) {
            return p;
        }
        assert!(Instant::now() < deadline, "never reached {prefix}; at {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("no {css}"));
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("no {css}"))
        .click()
        .await
        .unwrap();
}

async fn sign_in(c: &Client, s: &TestServer, token: &str) {
    c.goto(&s.url("/ui/runs")).await.unwrap();
    wait_path(c, "/ui/signin").await;
    fill(c, "#token", token).await;
    click(c, "#signin").await;
    wait_path(c, "/ui/runs").await;
}

/// A form posted by a script in the page, as a forger would: answers status and text.
async fn post_from_page(c: &Client, path: &str, fields: Value) -> (u64, String) {
    let script = r#"
        const [path, fields, done] = arguments;
        fetch(path, { method: "POST", body: new URLSearchParams(fields), credentials: "same-origin" })
          .then(r => r.text().then(t => done([r.status, t])))
          .catch(e => done([0, String(e)]));
    "#;
    let v = c
        .execute_async(script, vec![json!(path), fields])
        .await
        .expect("the script runs");
    (v[0].as_u64().unwrap(), v[1].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_workflow_from_the_browser_and_a_viewer_only_looks() {
    let Some(chrome) = Chrome::start().await else {
        return;
    };
    let c = chrome.c();
    let src = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("design"), src.path());
    let repo = Repo::with(src.path());
    let s = TestServer::start_with(&["--design-repo", repo.path()]);
    s.register(DEMO).await;

    // Sign in.
    c.goto(&s.url("/")).await.unwrap();
    wait_path(c, "/ui/signin").await;
    shot(c, "signin").await;
    fill(c, "#token", &s.operator).await;
    click(c, "#signin").await;
    wait_path(c, "/ui/runs").await;
    assert!(text(c, "#whoami").await.contains("alice operator"));

    // Submit from the generated form: a secret typed as a value is refused and not kept.
    c.goto(&s.url("/ui/submit?workflow=demo")).await.unwrap();
    fill(c, "#p-image", "http://img.lab/debian-12.raw").await;
    click(c, "#by-filter").await;
    fill(c, "#labels", "canary=true").await;
    click(c, "#preview").await;
    let preview = wait_text(c, "#preview-result", "host").await;
    assert!(preview.contains("1 host: ams1-a01"), "{preview}");
    fill(c, "#racks", "b").await;
    click(c, "#preview").await;
    let none = wait_text(c, "#preview-result", "no host of the active design").await;
    assert!(none.contains("a run would have no target"), "{none}");
    fill(c, "#racks", "").await;
    fill(c, "#p-root_password", "hunter2").await;
    shot(c, "submit").await;
    click(c, "#submit").await;
    let err = wait_text(c, "#form-error", "sensitive").await;
    assert!(
        err.contains("parameter 'root_password' is sensitive"),
        "{err}"
    );
    let kept = c
        .find(Locator::Css("#p-root_password"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(""),
        "the secret is not put back in the form"
    );
    fill(c, "#p-root_password", "env:ROOT_PW").await;
    click(c, "[name=by][value=names]").await;
    fill(c, "#names", "ams1-a01 ams1-a02 ams1-a03").await;
    click(c, "#submit").await;
    let at = wait_path(c, "/ui/runs/0").await;
    let run = at.trim_start_matches("/ui/runs/").to_string();
    assert!(text(c, "#flash").await.contains("started"));

    // Live: the failure, then signals sent from elsewhere, show without a reload.
    wait_text(c, "#run-status", "failed").await;
    c.execute("document.body.dataset.marker = 'same page'", vec![])
        .await
        .unwrap();
    let (st, _) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/callback/signal"),
            Some(json!({"item": "ams1-a01", "payload": {"ok": true}})),
        )
        .await;
    assert_eq!(st, 200);
    wait_text(c, "#step-callback .groups", "1 succeeded").await;
    let marker = c
        .execute("return document.body.dataset.marker", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("same page"), "the page was updated in place");
    let updates = c
        .execute(
            "return document.getElementById('main').dataset.updates",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        updates
            .as_str()
            .is_some_and(|n| n.parse::<u32>().unwrap() >= 1),
        "{updates}"
    );
    shot(c, "run").await;

    // Retry the failed step with edited input, through the confirmation.
    fill(c, "#retry-input-flash", r#"{"times": 0, "kind": "bmc"}"#).await;
    click(c, "#retry-flash").await;
    let what = wait_text(c, "#what", "Retry step flash").await;
    assert!(what.contains("with the input below"), "{what}");
    shot(c, "confirm").await;
    click(c, "#confirm-yes").await;
    wait_text(c, "#flash", "retry: done").await;
    wait_text(c, "#step-flash h3", "succeeded").await;

    // Signal the other two items from the page.
    for _ in 0..2 {
        click(c, "#signal-callback").await;
        wait_text(c, "#what", "Signal item").await;
        click(c, "#confirm-yes").await;
        wait_text(c, "#flash", "signal: done").await;
    }
    wait_text(c, "#run-status", "succeeded").await;

    // Roll back another run.
    let other = s
        .submit(json!({"workflow": "demo", "input": {"image": "x"}, "targets": ["ams1-b01"]}))
        .await;
    s.wait_step(&other, "flash", "failed").await;
    c.goto(&s.url(&format!("/ui/runs/{other}"))).await.unwrap();
    click(c, "#verb-rollback").await;
    let what = wait_text(c, "#what", "Roll back run").await;
    assert!(what.contains("cannot be undone"), "{what}");
    click(c, "#confirm-yes").await;
    wait_text(c, "#run-status", "rolled_back").await;

    // Every page draws.
    for (page, shot_name) in [
        ("/ui/runs", "runs"),
        ("/ui/hosts", "hosts"),
        ("/ui/hosts/ams1-a01", "host"),
        ("/ui/sites", "sites"),
        ("/ui/design", "design"),
        ("/ui/windows", "windows"),
    ] {
        c.goto(&s.url(page)).await.unwrap();
        let h1 = text(c, "h1").await;
        assert!(
            !h1.is_empty() && text(c, "#error").await.is_empty(),
            "{page}: {h1}"
        );
        shot(c, shot_name).await;
        match shot_name {
            "runs" => assert!(text(c, "#runs").await.contains("rolled_back")),
            "hosts" => assert!(text(c, "#hosts").await.contains("ams1-a01")),
            "host" => assert!(text(c, "#history").await.contains("demo")),
            _ => {}
        }
    }

    // Sign out: the pages are closed again.
    click(c, "#signout").await;
    wait_path(c, "/ui/signin?why=out").await;
    assert!(text(c, "#notice").await.contains("You are signed out."));
    c.goto(&s.url("/ui/hosts")).await.unwrap();
    wait_path(c, "/ui/signin?why=signin").await;

    // A viewer: no mutating button, and a forged POST from the page is refused.
    sign_in(c, &s, &s.viewer).await;
    let third = s
        .submit(json!({"workflow": "demo", "input": {"image": "x"}, "targets": ["ams1-b02"]}))
        .await;
    s.wait_step(&third, "flash", "failed").await;
    c.goto(&s.url(&format!("/ui/runs/{third}"))).await.unwrap();
    wait_text(c, "#run-status", "failed").await;
    for css in ["#verbs", "[id^=retry-]", "[id^=signal-]", "#verb-cancel"] {
        assert!(
            c.find_all(Locator::Css(css)).await.unwrap().is_empty(),
            "a viewer sees no {css}"
        );
    }
    shot(c, "run-viewer").await;
    let verb = format!("/ui/runs/{third}/verb");
    let (st, body) = post_from_page(c, &verb, json!({"verb": "cancel", "confirmed": "yes"})).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("carries no CSRF token"), "{body}");
    let (st, body) = post_from_page(
        c,
        &verb,
        json!({"verb": "cancel", "confirmed": "yes", "csrf": "00ff"}),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("not this session"), "{body}");
    assert_eq!(
        s.run(&third).await["status"],
        "failed",
        "nothing was cancelled"
    );
    c.clone().close().await.unwrap();
}
