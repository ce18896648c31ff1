//! `lariat-bench ui`: the web UI's two speed targets, printed as JSON.
//!
//! - The runs list over `--runs` runs (100,000 by default) in the database: `GET /ui/runs`
//!   unfiltered, by status, by workflow, by host, and an older page, `--requests` times
//!   each from one client; the same queries on `GET /v1/runs` (the API call each page
//!   makes) give the UI's cost as a ratio. Target: p99 under 50 ms.
//! - A run with `--items` fan-out items (1,000 by default, half of them signalled): the
//!   page's server time, its size, and in headless Chromium (driven by chromedriver) the
//!   time from navigation to the `load` event, over `--loads` loads.
//!
//! The runs are seeded through `POST /v1/runs` of a one-step noop workflow, each
//! targeting one of 1,000 host names; the measurements start once none is running.
//! Figures are reported, never asserted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::work::{ServerChild, WorkDir, cli_token, lariat_binary, round};

#[derive(Args, Debug, Clone)]
pub struct UiBench {
    /// Runs in the database for the list.
    #[arg(long, default_value_t = 100_000)]
    pub runs: usize,
    /// Requests per list query.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Fan-out items of the run whose page is loaded.
    #[arg(long, default_value_t = 1000)]
    pub items: usize,
    /// Loads of that page in the browser.
    #[arg(long, default_value_t = 20)]
    pub loads: usize,
    /// chromedriver; the browser part is left out when it is not there.
    #[arg(long, default_value = "/usr/bin/chromedriver")]
    pub chromedriver: PathBuf,
    #[arg(long, default_value = "/usr/bin/chromium")]
    pub chromium: PathBuf,
    /// Folder for the bench database (a temporary one, removed afterwards, by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `lariat` binary to start as the server; the one beside this binary by default.
    #[arg(long, env = "LARIAT_BIN")]
    pub lariat: Option<PathBuf>,
}

const NOOP: &str = "name: ui-bench-noop\nsteps:\n  - {name: only, action: noop}\n";
const FANOUT: &str = "name: ui-bench-fanout\nsteps:\n  - {name: prepare, action: noop}\n  - name: callback\n    action: await_signal\n    for_each: {over: targets}\n    needs: [prepare]\n  - {name: done, action: noop, needs: [callback]}\n";

pub async fn run(b: UiBench) -> anyhow::Result<()> {
    let work = WorkDir::new(b.dir.as_deref(), "lariat-bench-ui")?;
    let result = bench(&b, work.path()).await;
    drop(work);
    println!("{}", result?);
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    round(sorted[((sorted.len() - 1) as f64 * p).round() as usize], 2)
}

fn stats(mut ms: Vec<f64>) -> Value {
    ms.sort_by(|a, b| a.total_cmp(b));
    json!({ "n": ms.len(), "p50_ms": pct(&ms, 0.5), "p99_ms": pct(&ms, 0.99), "max_ms": pct(&ms, 1.0) })
}

struct Http {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await?;
        let st = res.status();
        let text = res.text().await?;
        if !st.is_success() {
            bail!("{path}: {st} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Time `n` sequential GETs of `path`, with the session cookie or the bearer token.
    async fn time(
        &self,
        path: &str,
        n: usize,
        cookie: Option<&str>,
    ) -> anyhow::Result<(Value, usize)> {
        let mut ms = Vec::with_capacity(n);
        let mut bytes = 0;
        for _ in 0..n {
            let mut rb = self.http.get(format!("{}{path}", self.base));
            rb = match cookie {
                Some(c) => rb.header(reqwest::header::COOKIE, c),
                None => rb.bearer_auth(&self.token),
            };
            let t = Instant::now();
            let res = rb.send().await?;
            let st = res.status();
            let body = res.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if st != reqwest::StatusCode::OK {
                bail!("{path}: {st}");
            }
            bytes = body.len();
        }
        Ok((stats(ms), bytes))
    }
}

async fn bench(b: &UiBench, dir: &std::path::Path) -> anyhow::Result<Value> {
    let exe = lariat_binary(b.lariat.as_deref())?;
    let db = dir.join("bench-ui.db");
    let token = cli_token(
        &exe,
        &db,
        &[
            "token", "create", "--json", "--role", "admin", "--name", "bench",
        ],
    )
    .await?;
    let server = ServerChild::start(
        &exe,
        &[
            "--durability".as_ref(),
            "normal".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
    )
    .await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?;
    let h = Http {
        http,
        base: server.base.clone(),
        token,
    };
    for wf in [NOOP, FANOUT] {
        let res = h
            .http
            .post(format!("{}/v1/workflows", h.base))
            .bearer_auth(&h.token)
            .header("content-type", "application/yaml")
            .body(wf)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("registering a workflow: {}", res.text().await?);
        }
    }

    // Seed.
    eprintln!("seeding {} runs", b.runs);
    let t = Instant::now();
    let h = Arc::new(h);
    let mut done = 0usize;
    let mut stream = futures::stream::iter(0..b.runs)
        .map(|i| {
            let h = h.clone();
            async move {
                h.api(
                    reqwest::Method::POST,
                    "/v1/runs",
                    Some(json!({"workflow": "ui-bench-noop", "targets": [format!("host-{:04}", i % 1000)]})),
                )
                .await
            }
        })
        .buffer_unordered(32);
    while let Some(r) = stream.next().await {
        r?;
        done += 1;
        if done.is_multiple_of(20_000) {
            eprintln!("  {done} submitted");
        }
    }
    let seed_s = t.elapsed().as_secs_f64();
    loop {
        let v = h
            .api(
                reqwest::Method::GET,
                "/v1/runs?status=running&limit=1",
                None,
            )
            .await?;
        if v["runs"].as_array().is_some_and(|r| r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_s = t.elapsed().as_secs_f64();
    drop(stream);

    // Sign in as a browser would.
    let res = h
        .http
        .post(format!("{}/ui/signin", h.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", h.token))
        .send()
        .await?;
    let cookie = res
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("no session cookie from the sign-in")?
        .to_string();

    // An older page: the cursor 100 pages down.
    let mut cursor = String::new();
    for _ in 0..100 {
        let v = h
            .api(
                reqwest::Method::GET,
                &format!(
                    "/v1/runs?limit=50{}",
                    if cursor.is_empty() {
                        String::new()
                    } else {
                        format!("&cursor={cursor}")
                    }
                ),
                None,
            )
            .await?;
        cursor = v["next_cursor"].as_str().unwrap_or_default().to_string();
    }
    let queries = [
        ("all", String::new()),
        ("status", "status=succeeded".to_string()),
        ("workflow", "workflow=ui-bench-noop".to_string()),
        ("host", "host=host-0007".to_string()),
        ("page_101", format!("cursor={cursor}")),
    ];
    let mut list = serde_json::Map::new();
    for (name, q) in &queries {
        let sep = if q.is_empty() { "" } else { "?" };
        let (ui, bytes) = h
            .time(&format!("/ui/runs{sep}{q}"), b.requests, Some(&cookie))
            .await?;
        let api_q = if q.is_empty() {
            "limit=50".to_string()
        } else {
            format!("{q}&limit=50")
        };
        let (api, _) = h
            .time(&format!("/v1/runs?{api_q}"), b.requests, None)
            .await?;
        let ratio = round(
            ui["p99_ms"].as_f64().unwrap_or(0.0) / api["p99_ms"].as_f64().unwrap_or(1.0).max(0.01),
            2,
        );
        eprintln!("list {name}: ui {ui} api {api}");
        list.insert(
            name.to_string(),
            json!({ "ui": ui, "api": api, "page_bytes": bytes, "p99_ratio_ui_to_api": ratio }),
        );
    }

    // A run with many items, half of them signalled.
    let targets: Vec<String> = (0..b.items).map(|i| format!("item-{i:05}")).collect();
    let run = h
        .api(
            reqwest::Method::POST,
            "/v1/runs",
            Some(json!({"workflow": "ui-bench-fanout", "targets": targets})),
        )
        .await?;
    let id = run["id"].as_str().context("a run id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = h
            .api(reqwest::Method::GET, &format!("/v1/runs/{id}"), None)
            .await?;
        let waiting = v["steps"][1]["items"]
            .as_array()
            .map_or(0, |i| i.iter().filter(|t| t["status"] == "waiting").count());
        if waiting == b.items {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the fan-out's items did not all wait within 120 s ({waiting} of {})",
                b.items
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in (0..b.items).step_by(2) {
        h.api(
            reqwest::Method::POST,
            &format!("/v1/runs/{id}/steps/callback/signal"),
            Some(json!({"item": format!("item-{i:05}"), "payload": {"ok": true}})),
        )
        .await?;
    }
    let (page, page_bytes) = h.time(&format!("/ui/runs/{id}"), 50, Some(&cookie)).await?;
    let (api, api_bytes) = h.time(&format!("/v1/runs/{id}"), 50, None).await?;
    eprintln!("run detail: ui {page} api {api}");
    let browser = if b.chromedriver.is_file() && b.chromium.is_file() {
        Some(browser_loads(b, &h, &format!("/ui/runs/{id}")).await?)
    } else {
        eprintln!(
            "no {} or {}: the browser part is left out",
            b.chromedriver.display(),
            b.chromium.display()
        );
        None
    };
    let out = json!({
        "runs": b.runs,
        "seed_s": round(seed_s, 1),
        "seed_per_s": round(b.runs as f64 / seed_s, 0),
        "settled_s": round(settled_s, 1),
        "runs_list": list,
        "run_detail": {
            "items": b.items,
            "server": page,
            "api": api,
            "page_bytes": page_bytes,
            "api_bytes": api_bytes,
            "browser": browser,
        },
        "server_peak_rss_mb": server.peak_rss_mb(),
    });
    drop(server);
    Ok(out)
}

/// Load `path` `--loads` times in headless Chromium; the navigation timing of each.
async fn browser_loads(b: &UiBench, h: &Http, path: &str) -> anyhow::Result<Value> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut driver = tokio::process::Command::new(&b.chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start chromedriver")?;
    let profile = tempfile_dir()?;
    let caps = json!({"goog:chromeOptions": {"binary": b.chromium, "args": [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--window-size=1400,1000", format!("--user-data-dir={}", profile.display()),
    ]}});
    let caps: fantoccini::wd::Capabilities = caps.as_object().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match fantoccini::ClientBuilder::rustls()?
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => bail!("chromedriver gave no session: {e}"),
        }
    };
    let measured = sign_in_and_load(&c, b, h, path).await;
    let _ = c.close().await;
    let _ = driver.kill().await;
    // The browser outlives chromedriver: it goes by its profile folder.
    let _ = std::process::Command::new("pkill")
        .arg("-KILL")
        .arg("-f")
        .arg(&profile)
        .status();
    let _ = std::fs::remove_dir_all(&profile);
    measured
}

/// Sign in through the form, as an operator would, then load `path` `--loads` times.
async fn sign_in_and_load(
    c: &fantoccini::Client,
    b: &UiBench,
    h: &Http,
    path: &str,
) -> anyhow::Result<Value> {
    c.goto(&format!("{}/ui/signin", h.base)).await?;
    c.find(fantoccini::Locator::Css("#token"))
        .await?
        .send_keys(&h.token)
        .await?;
    c.find(fantoccini::Locator::Css("#signin"))
        .await?
        .click()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.current_url().await?.path().starts_with("/ui/runs") {
        if Instant::now() > deadline {
            bail!("the sign-in did not reach the runs page");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ready = Vec::new();
    let mut dom = Vec::new();
    let mut response = Vec::new();
    for _ in 0..b.loads {
        c.goto(&format!("{}{path}", h.base)).await?;
        let t = c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd, document.querySelectorAll('tr.task').length];",
                vec![],
            )
            .await?;
        if t[3].as_u64().unwrap_or(0) == 0 {
            bail!("the run page shows no item rows: not signed in?");
        }
        response.push(t[0].as_f64().unwrap_or(0.0));
        dom.push(t[1].as_f64().unwrap_or(0.0));
        ready.push(t[2].as_f64().unwrap_or(0.0));
    }
    Ok(json!({
        "loads": b.loads,
        "response_end": stats(response),
        "dom_content_loaded": stats(dom),
        "load_event": stats(ready),
    }))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("lariat-bench-chrome-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
