//! Crash resume, end to end: the real `lariat server` binary, killed with SIGKILL at
//! random moments while many runs are in flight (fanned out, retrying, waiting for
//! signals), restarted on the same database, again and again. Afterwards every run must
//! have finished, and every run's log must be complete: no gap, no step completed twice,
//! every started attempt closed, every acknowledged signal's payload recorded.
//!
//! Reproduce a failure with the seed it prints: `LARIAT_CRASH_SEED=<seed> cargo test
//! --test crash_resume`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CYCLES: usize = 24;
const MAX_RUNS: usize = 160;
const TARGETS: [&str; 3] = ["node-a", "node-b", "node-c"];

const DRILL: &str = r#"
name: crash-drill
steps:
  - {name: validate, action: sleep, input: {duration: 15ms}}
  - name: stage
    action: fail
    input: {times: 2, kind: transient}
    needs: [validate]
    retry: {max_attempts: 10, initial_backoff: 40ms, multiplier: 1.5, jitter: 0.2}
  - name: power_off
    action: sleep
    input: {duration: 40ms}
    needs: [stage]
    for_each: {over: targets, max_parallel: 2}
  - {name: set_pxe, action: noop, needs: [power_off]}
  - name: await_callback
    action: await_signal
    needs: [set_pxe]
    for_each: {over: targets}
    timeout: 10m
  - {name: verify, action: sleep, input: {duration: 10ms}, needs: [await_callback]}
"#;

/// A `lariat server` child process; killed (SIGKILL) when dropped.
struct Server {
    child: Option<Child>,
    log: PathBuf,
    port: u16,
}

impl Server {
    /// A server on `db`, a file's path or a PostgreSQL URL, keeping its files in `dir`.
    fn start(dir: &Path, db: &Path, port: u16) -> Server {
        let log = dir.join("server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lariat"))
            .args([
                "server",
                "--insecure-no-auth",
                "--max-interruptions",
                "1000",
            ])
            .current_dir(dir)
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("LARIAT_LOG", "warn")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("the lariat binary starts");
        Server {
            child: Some(child),
            log,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("server exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // std's kill is SIGKILL on Unix: no shutdown path runs.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the driver last saw, counted at each kill.
#[derive(Default)]
struct Seen {
    running_items: usize,
    retrying: usize,
    waiting: usize,
}

#[derive(Default)]
struct Shared {
    runs: Vec<String>,
    keys: HashMap<String, String>,
    done: HashSet<String>,
    /// (run, item index) -> nonce of a signal the server acknowledged.
    acked: HashMap<(String, u64), String>,
    seen: Seen,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_repeated_sigkill() {
    let seed: u64 = std::env::var("LARIAT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash_resume seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // LARIAT_TEST_STORE=postgres: the same drill with the tables on PostgreSQL.
    let pg = match std::env::var("LARIAT_TEST_STORE").as_deref() {
        Ok("postgres") => Some(
            lariat_db::testing::TestDatabase::create()
                .await
                .expect("LARIAT_TEST_STORE=postgres needs LARIAT_TEST_POSTGRES"),
        ),
        _ => None,
    };
    let db = match &pg {
        Some(t) => PathBuf::from(&t.url),
        None => dir.path().join("lariat.db"),
    };
    let port = free_port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut server = Server::start(dir.path(), &db, port);
    server.wait_ready(&http).await;
    let base = server.url("");
    let r = http
        .post(format!("{base}/v1/workflows"))
        .header("content-type", "application/yaml")
        .body(DRILL)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "register: {}",
        r.text().await.unwrap()
    );

    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop_submit = Arc::new(AtomicBool::new(false));
    let stop_drive = Arc::new(AtomicBool::new(false));
    let submitter = tokio::spawn(submit_loop(
        http.clone(),
        base.clone(),
        shared.clone(),
        stop_submit.clone(),
    ));
    let driver = tokio::spawn(drive_loop(
        http.clone(),
        base.clone(),
        shared.clone(),
        stop_drive.clone(),
    ));

    let mut at_kill = Seen::default();
    for cycle in 0..CYCLES {
        let wait = rng.random_range(80..700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        {
            let s = shared.lock().unwrap();
            at_kill.running_items += s.seen.running_items;
            at_kill.retrying += s.seen.retrying;
            at_kill.waiting += s.seen.waiting;
        }
        server.kill9();
        eprintln!("cycle {cycle}: killed after {wait} ms");
        server = Server::start(dir.path(), &db, port);
        server.wait_ready(&http).await;
    }
    stop_submit.store(true, Ordering::SeqCst);
    submitter.await.unwrap();

    // Let every run finish on the last server.
    let total = shared.lock().unwrap().runs.len();
    let deadline = Instant::now() + Duration::from_secs(180);
    while shared.lock().unwrap().done.len() < total {
        if Instant::now() > deadline {
            let stuck: Vec<String> = {
                let s = shared.lock().unwrap();
                s.runs
                    .iter()
                    .filter(|r| !s.done.contains(*r))
                    .take(3)
                    .cloned()
                    .collect()
            };
            let mut report = String::new();
            for run in stuck {
                let d = get_json(&http, &format!("{base}/v1/runs/{run}")).await;
                report.push_str(&format!("{run} {}\n", d["status"]));
                for st in d["steps"].as_array().into_iter().flatten() {
                    report.push_str(&format!(
                        "  {} {} {}\n",
                        st["name"], st["status"], st["waiting_for"]
                    ));
                    for it in st["items"].as_array().into_iter().flatten() {
                        report.push_str(&format!(
                            "    [{}] {} {}\n",
                            it["item"], it["status"], it["waiting_for"]
                        ));
                    }
                }
                let ev = all_events(&base, &run).await;
                for e in ev.iter().rev().take(12).rev() {
                    report.push_str(&format!(
                        "  #{} {} {} {} {}\n",
                        e["seq"], e["kind"], e["step"], e["item"], e["attempt"]
                    ));
                }
            }
            panic!(
                "{} of {total} runs finished after the kills:\n{report}\n{}",
                shared.lock().unwrap().done.len(),
                server.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_drive.store(true, Ordering::SeqCst);
    driver.await.unwrap();

    eprintln!(
        "{total} runs; at the kills the driver had last seen {} fan-out items running, {} steps retrying, {} signal waits",
        at_kill.running_items, at_kill.retrying, at_kill.waiting
    );
    assert!(total >= 40, "enough runs were in flight: {total}");
    assert!(
        at_kill.running_items > 0,
        "some kills landed during fan-out"
    );
    assert!(at_kill.retrying > 0, "some kills landed during retries");
    assert!(at_kill.waiting > 0, "some kills landed during waits");

    // Every run's log is complete and consistent.
    let (runs, keys, acked) = {
        let s = shared.lock().unwrap();
        (s.runs.clone(), s.keys.clone(), s.acked.clone())
    };
    let mut interrupted = 0;
    let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, run) in &keys {
        assert!(by_key.insert(run, key).is_none(), "two keys gave run {run}");
    }
    for run in &runs {
        let events = all_events(&base, run).await;
        interrupted += check_run_log(run, &events, &acked);
        let detail = get_json(&http, &format!("{base}/v1/runs/{run}")).await;
        assert_eq!(detail["status"], "succeeded", "{detail:#}");
        for step in detail["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "succeeded", "{run} {}", step["name"]);
            for item in step["items"].as_array().into_iter().flatten() {
                assert_eq!(item["status"], "succeeded", "{run} {} {item}", step["name"]);
            }
        }
    }
    // Idempotent submits across kills never made a second run for one key.
    let listed = list_all_runs(&base).await;
    assert_eq!(listed, total, "runs in the store vs runs submitted");
    eprintln!("{interrupted} attempts were recorded as interrupted");
    assert!(interrupted > 0, "kills interrupted running attempts");
}

/// Submit runs at a steady pace, each with its own idempotency key, retrying a submit
/// whose reply was lost to a kill (the key makes the retry safe).
async fn submit_loop(
    http: reqwest::Client,
    base: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && n < MAX_RUNS {
        for _ in 0..3 {
            let key = format!("drill-{n}");
            loop {
                let res = http
                    .post(format!("{base}/v1/runs"))
                    .json(&json!({
                        "workflow": "crash-drill",
                        "targets": TARGETS,
                        "input": {"drill": n},
                        "idempotency_key": key,
                    }))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap();
                        let id = v["id"].as_str().expect("run id").to_string();
                        let mut s = shared.lock().unwrap();
                        match s.keys.get(&key) {
                            Some(prev) => assert_eq!(prev, &id, "key {key} gave two runs"),
                            None => {
                                s.keys.insert(key.clone(), id.clone());
                                s.runs.push(id);
                            }
                        }
                        break;
                    }
                    Ok(r) if r.status().is_client_error() => {
                        panic!("submit rejected: {}", r.text().await.unwrap_or_default())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Poll every unfinished run; signal each callback item that waits; note what is in
/// progress so the kills can be attributed.
async fn drive_loop(
    http: reqwest::Client,
    base: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let todo: Vec<String> = {
            let s = shared.lock().unwrap();
            s.runs
                .iter()
                .filter(|r| !s.done.contains(*r))
                .cloned()
                .collect()
        };
        let mut seen = Seen::default();
        for run in todo {
            let Ok(r) = http.get(format!("{base}/v1/runs/{run}")).send().await else {
                continue;
            };
            let Ok(detail) = r.json::<Value>().await else {
                continue;
            };
            match detail["status"].as_str() {
                Some("succeeded") => {
                    shared.lock().unwrap().done.insert(run.clone());
                    continue;
                }
                Some("running") => {}
                other => panic!("run {run} is {other:?}: {detail:#}"),
            }
            for step in detail["steps"].as_array().into_iter().flatten() {
                if step["status"] == "retrying" {
                    seen.retrying += 1;
                }
                for item in step["items"].as_array().into_iter().flatten() {
                    if step["name"] == "power_off" && item["status"] == "running" {
                        seen.running_items += 1;
                    }
                    if step["name"] != "await_callback" || item["status"] != "waiting" {
                        continue;
                    }
                    seen.waiting += 1;
                    let idx = item["item"].as_u64().unwrap();
                    let nonce = format!("{run}/{idx}/{}", rand::random::<u32>());
                    let res = http
                        .post(format!("{base}/v1/runs/{run}/steps/await_callback/signal"))
                        .json(&json!({"item": idx, "payload": {"nonce": nonce}}))
                        .send()
                        .await;
                    if let Ok(r) = res
                        && r.status().is_success()
                    {
                        let prev = shared
                            .lock()
                            .unwrap()
                            .acked
                            .insert((run.clone(), idx), nonce);
                        assert!(prev.is_none(), "{run} item {idx} accepted two signals");
                    }
                }
            }
        }
        shared.lock().unwrap().seen = seen;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// A run's whole history, through the typed client, as JSON for the checks below.
async fn all_events(base: &str, run: &str) -> Vec<Value> {
    let c = lariat_client::Client::new(base, None).unwrap();
    let id = run.parse().expect("a run id");
    c.all_events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

/// How many runs the server lists, page by page.
async fn list_all_runs(base: &str) -> usize {
    let c = lariat_client::Client::new(base, None).unwrap();
    let mut q = lariat_client::types::ListRunsQuery {
        limit: Some(500),
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = c.runs(&q).await.unwrap();
        n += page.runs.len();
        match page.next_cursor {
            Some(cur) => q.cursor = Some(cur.parse().expect("a run id")),
            None => return n,
        }
    }
}

/// Check one run's log; returns how many attempts it recorded as interrupted.
fn check_run_log(run: &str, events: &[Value], acked: &HashMap<(String, u64), String>) -> usize {
    let ctx = || serde_json::to_string_pretty(events).unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64(),
            Some(i as i64 + 1),
            "{run}: gap at {i}\n{}",
            ctx()
        );
    }
    assert_eq!(events.first().unwrap()["kind"], "run_created");
    assert_eq!(
        events.last().unwrap()["kind"],
        "run_succeeded",
        "{run}\n{}",
        ctx()
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "run_succeeded")
            .count(),
        1
    );
    let mut completions: HashMap<(String, Option<u64>), usize> = HashMap::new();
    let mut open: HashMap<(String, Option<u64>), u64> = HashMap::new();
    let mut last_started: HashMap<(String, Option<u64>), u64> = HashMap::new();
    let mut interrupted = 0;
    for e in events {
        let Some(step) = e["step"].as_str() else {
            assert!(
                !matches!(e["kind"].as_str(), Some("run_failed" | "run_cancelled")),
                "{run}\n{}",
                ctx()
            );
            continue;
        };
        let key = (step.to_string(), e["item"].as_u64());
        let attempt = e["attempt"].as_u64();
        match e["kind"].as_str().unwrap() {
            "started" => {
                let a = attempt.unwrap();
                assert!(
                    !open.contains_key(&key),
                    "{run}: {key:?} attempt {a} started while attempt {:?} was open\n{}",
                    open.get(&key),
                    ctx()
                );
                if let Some(prev) = last_started.insert(key.clone(), a) {
                    assert!(a > prev, "{run}: {key:?} attempt {a} after {prev}");
                }
                open.insert(key, a);
            }
            "succeeded" | "signalled" => {
                *completions.entry(key.clone()).or_default() += 1;
                open.remove(&key);
                if e["kind"] == "signalled" {
                    let nonce = e["data"]["payload"]["nonce"].as_str().unwrap().to_string();
                    let idx = key.1.unwrap();
                    if let Some(expected) = acked.get(&(run.to_string(), idx)) {
                        assert_eq!(
                            &nonce, expected,
                            "{run} item {idx}: acknowledged signal lost"
                        );
                    }
                }
            }
            // A wait is the attempt's outcome; the step's completion is then the signal.
            "retrying" | "waiting" | "interrupted" => {
                if e["kind"] == "interrupted" {
                    interrupted += 1;
                }
                open.remove(&key);
            }
            "failed" | "cancelled" | "reset" => panic!("{run}: unexpected {e}\n{}", ctx()),
            _ => {}
        }
    }
    assert!(
        open.is_empty(),
        "{run}: attempts never closed: {open:?}\n{}",
        ctx()
    );
    let expected_tasks = 6 + 2 * TARGETS.len();
    assert_eq!(completions.len(), expected_tasks, "{run}: {completions:?}");
    for (k, n) in completions {
        assert_eq!(n, 1, "{run}: {k:?} completed {n} times\n{}", ctx());
    }
    // Every acknowledged signal of this run shows up as the item's completion.
    for ((r, idx), _) in acked.iter().filter(|((r, _), _)| r == run) {
        assert!(
            events.iter().any(|e| e["kind"] == "signalled"
                && e["item"].as_u64() == Some(*idx)
                && e["run_id"].as_str() == Some(r)),
            "{run}: acknowledged signal for item {idx} missing"
        );
    }
    interrupted
}
