//! `lariat-bench kill-drill`: SIGKILL `lariat server` again and again while operators'
//! tools keep runs in flight through REST, then count what the crashes cost.
//!
//! Drivers keep `--inflight` provision-noop runs going: each submit carries an
//! idempotency key and is sent again (same key) until it is answered; each run's
//! `await_callback` is signalled, again until answered, with its key as the payload.
//! Between kills the server works for a uniform random time in `[--min-up-ms,
//! --max-up-ms]`; then SIGKILL, and it starts again on the same database and port.
//!
//! After the last cycle every run still waiting is signalled and all must finish. Then
//! every run's history is read over the API and checked:
//! - `runs_lost`: a submit or a signal that was answered and is not in the store;
//! - `duplicated_runs`: two runs for one idempotency key;
//! - `duplicated_completions`: a step completed more than once in one attempt series;
//! - `gaps`: a history whose `seq` is not 1, 2, 3, ... without a hole;
//! - `unfinished`: a run that did not succeed.
//!
//! Prints one JSON object; figures are reported, never asserted.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lariat_client::types::{ListRunsQuery, SignalStep, StepStatus, SubmitRun};
use lariat_client::{Client, ClientError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::work::{ServerChild, WorkDir, cli_token, lariat_binary, round};

#[derive(Args, Debug, Clone)]
pub struct KillDrill {
    /// SIGKILL and restart this many times.
    #[arg(long, default_value_t = 1000)]
    pub cycles: u32,
    /// Runs kept in flight.
    #[arg(long, default_value_t = 200)]
    pub inflight: usize,
    /// Shortest time the server works between two kills, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub min_up_ms: u64,
    /// Longest time the server works between two kills, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub max_up_ms: u64,
    /// Concurrent REST clients driving the runs.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// The server's commit durability: full (fsync each commit) or normal.
    #[arg(long, default_value = "full")]
    pub durability: String,
    /// Folder for the drill's database (a temporary one, removed afterwards, by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `lariat` binary to start as the server; the one beside this binary by default.
    #[arg(long, env = "LARIAT_BIN")]
    pub lariat: Option<PathBuf>,
}

/// What the drivers were told, and so what the store must hold.
#[derive(Default)]
struct Ledger {
    next_key: u64,
    /// Keys sent and not answered yet: sent again, with the same key.
    unanswered: VecDeque<String>,
    /// Answered submits: run id to key.
    runs: HashMap<Uuid, String>,
    /// Runs whose signal was not answered yet.
    waiting: VecDeque<Uuid>,
    /// Runs whose signal was answered.
    signalled: HashMap<Uuid, String>,
    /// Answered runs that a later request found missing (404).
    missing: Vec<Uuid>,
}

impl Ledger {
    fn in_flight(&self) -> usize {
        self.waiting.len() + self.unanswered.len()
    }
}

#[derive(Default)]
struct Counters {
    submits_answered: AtomicU64,
    submits_found_again: AtomicU64,
    signals_answered: AtomicU64,
    signals_found_again: AtomicU64,
    requests_unanswered: AtomicU64,
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn noop(key: &str) -> SubmitRun {
    SubmitRun {
        workflow: "provision-noop".into(),
        idempotency_key: Some(key.to_string()),
        ..Default::default()
    }
}

enum Job {
    /// Submit with this key (new, or sent before without an answer).
    Submit(String),
    /// Signal this run, with its key as the payload.
    Signal(Uuid, String),
    Idle,
}

/// One client: submit while fewer than `inflight` runs are going, else signal the
/// oldest waiting one.
async fn drive(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    counters: Arc<Counters>,
    inflight: usize,
    stop: Arc<AtomicBool>,
) {
    let pause = Duration::from_millis(10);
    while !stop.load(Ordering::Relaxed) {
        let job = {
            let mut l = lock(&ledger);
            if l.in_flight() < inflight {
                let key = l.unanswered.pop_front().unwrap_or_else(|| {
                    l.next_key += 1;
                    format!("drill-{}", l.next_key)
                });
                Job::Submit(key)
            } else if let Some(id) = l.waiting.pop_front() {
                let key = l.runs.get(&id).cloned().unwrap_or_default();
                Job::Signal(id, key)
            } else {
                Job::Idle
            }
        };
        match job {
            Job::Idle => tokio::time::sleep(pause).await,
            Job::Submit(key) => match client.submit(&noop(&key)).await {
                Ok(sub) => {
                    counters.submits_answered.fetch_add(1, Ordering::Relaxed);
                    if !sub.created {
                        // An earlier try committed, and its answer was lost to a kill.
                        counters.submits_found_again.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut l = lock(&ledger);
                    l.runs.insert(sub.run.id, key);
                    l.waiting.push_back(sub.run.id);
                }
                Err(e) => {
                    note_unanswered(&counters, &e);
                    lock(&ledger).unanswered.push_back(key);
                    tokio::time::sleep(pause).await;
                }
            },
            Job::Signal(id, key) => {
                let req = SignalStep {
                    payload: json!({ "drill": key }),
                    item: None,
                };
                match client.signal(id, "await_callback", &req).await {
                    Ok(_) => {
                        counters.signals_answered.fetch_add(1, Ordering::Relaxed);
                        lock(&ledger).signalled.insert(id, key);
                    }
                    Err(ClientError::Api { status: 404, .. }) => lock(&ledger).missing.push(id),
                    Err(ClientError::Api { status: 409, .. })
                        if signalled_before(&client, id).await =>
                    {
                        // An earlier signal went through; a kill took its answer.
                        counters.signals_found_again.fetch_add(1, Ordering::Relaxed);
                        lock(&ledger).signalled.insert(id, key);
                    }
                    Err(e) => {
                        // 409: not waiting yet.
                        if !matches!(e, ClientError::Api { status: 409, .. }) {
                            note_unanswered(&counters, &e);
                        }
                        lock(&ledger).waiting.push_back(id);
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }
}

/// Whether the run's `await_callback` has completed already.
async fn signalled_before(client: &Client, id: Uuid) -> bool {
    client.run(id).await.is_ok_and(|r| {
        r.steps
            .iter()
            .any(|s| s.name == "await_callback" && s.task.status == StepStatus::Succeeded)
    })
}

fn note_unanswered(counters: &Counters, _e: &ClientError) {
    counters.requests_unanswered.fetch_add(1, Ordering::Relaxed);
}

pub async fn run(d: KillDrill) -> anyhow::Result<()> {
    if d.min_up_ms > d.max_up_ms {
        bail!("--min-up-ms must not exceed --max-up-ms");
    }
    let exe = lariat_binary(d.lariat.as_deref())?;
    let work = WorkDir::new(d.dir.as_deref(), "lariat-kill-drill")?;
    let db = work.path().join("drill.db");
    let token = cli_token(
        &exe,
        &db,
        &["token", "create", "--role", "operator", "--name", "drill", "--json"],
    )
    .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<std::ffi::OsString> = vec![
        "--db".into(),
        db.clone().into(),
        "--durability".into(),
        d.durability.clone().into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let start = || ServerChild::start_on(&exe, &listen, &args);

    let mut server = start().await?;
    let client = Client::new(&server.base, Some(token.clone()))?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = (0..d.clients.max(1))
        .map(|_| {
            tokio::spawn(drive(
                client.clone(),
                ledger.clone(),
                counters.clone(),
                d.inflight,
                stop.clone(),
            ))
        })
        .collect();

    let began = Instant::now();
    let mut restart_ms = Vec::with_capacity(d.cycles as usize);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(port);
    for cycle in 0..d.cycles {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let up = d.min_up_ms + x % (d.max_up_ms - d.min_up_ms + 1);
        tokio::time::sleep(Duration::from_millis(up)).await;
        server.kill().await?;
        let t = Instant::now();
        server = start()
            .await
            .with_context(|| format!("restart after kill {}", cycle + 1))?;
        restart_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if (cycle + 1) % 100 == 0 {
            let l = lock(&ledger);
            eprintln!(
                "kill-drill: {} kills, {} runs answered, {} signalled",
                cycle + 1,
                l.runs.len(),
                l.signalled.len()
            );
        }
    }
    let drilled = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in drivers {
        let _ = h.await;
    }

    // Settle: answer every key and signal every run, the server left running.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (keys, ids): (Vec<String>, Vec<Uuid>) = {
            let mut l = lock(&ledger);
            (l.unanswered.drain(..).collect(), l.waiting.drain(..).collect())
        };
        if keys.is_empty() && ids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("runs still not answered after 300 s:\n{}", server.log_tail());
        }
        for key in keys {
            match client.submit(&noop(&key)).await {
                Ok(sub) => {
                    let mut l = lock(&ledger);
                    l.runs.insert(sub.run.id, key);
                    l.waiting.push_back(sub.run.id);
                }
                Err(_) => lock(&ledger).unanswered.push_back(key),
            }
        }
        for id in ids {
            let key = lock(&ledger).runs.get(&id).cloned().unwrap_or_default();
            let req = SignalStep {
                payload: json!({ "drill": key }),
                item: None,
            };
            match client.signal(id, "await_callback", &req).await {
                Ok(_) => {
                    lock(&ledger).signalled.insert(id, key);
                }
                Err(ClientError::Api { status: 404, .. }) => lock(&ledger).missing.push(id),
                Err(ClientError::Api { status: 409, .. })
                    if signalled_before(&client, id).await =>
                {
                    counters.signals_found_again.fetch_add(1, Ordering::Relaxed);
                    lock(&ledger).signalled.insert(id, key);
                }
                Err(_) => lock(&ledger).waiting.push_back(id),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = || async {
        let q = ListRunsQuery {
            status: Some("running".into()),
            limit: Some(1),
            ..Default::default()
        };
        client.runs(&q).await.map(|p| !p.runs.is_empty())
    };
    while running().await? {
        if Instant::now() > deadline {
            bail!("runs still running 300 s after the last kill");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report = check(&client, &ledger).await?;
    let peak = server.peak_rss_mb();
    server.kill().await?;
    restart_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((restart_ms.len().saturating_sub(1)) as f64 * p).round() as usize;
        round(restart_ms.get(i).copied().unwrap_or(0.0), 1)
    };
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = json!({
        "drill": "kill",
        "cycles": d.cycles,
        "inflight": d.inflight,
        "durability": d.durability,
        "drill_s": round(drilled.as_secs_f64(), 1),
        "submits_answered": c(&counters.submits_answered),
        "submits_found_again_after_a_lost_answer": c(&counters.submits_found_again),
        "signals_answered": c(&counters.signals_answered),
        "signals_found_applied_after_a_lost_answer": c(&counters.signals_found_again),
        "requests_unanswered_during_kills": c(&counters.requests_unanswered),
        "restart_to_listening_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "server_peak_rss_mb_after": peak.map(|m| round(m, 1)),
    });
    if let (Value::Object(o), Value::Object(r)) = (&mut out, report) {
        o.extend(r);
    }
    println!("{out}");
    Ok(())
}

/// Reads every run back and counts what the kills cost.
async fn check(client: &Client, ledger: &Mutex<Ledger>) -> anyhow::Result<Value> {
    let (answered, signalled, missing) = {
        let l = lock(ledger);
        (l.runs.clone(), l.signalled.clone(), l.missing.len())
    };
    // Every run in the store, by key.
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut cursor = None;
    let mut stored = 0usize;
    loop {
        let q = ListRunsQuery {
            limit: Some(500),
            cursor,
            ..Default::default()
        };
        let page = client.runs(&q).await?;
        for r in &page.runs {
            stored += 1;
            if let Some(k) = &r.idempotency_key {
                by_key.entry(k.clone()).or_default().push(r.id);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c.parse().context("a cursor that is not a run id")?),
            None => break,
        }
    }
    let duplicated_runs: usize = by_key.values().map(|v| v.len() - 1).sum();
    let mut lost = missing;
    let (mut gaps, mut dup, mut unfinished, mut interrupted, mut events) = (0, 0, 0, 0, 0usize);
    let mut signal_lost = 0;
    for (id, key) in &answered {
        if by_key.get(key).is_none_or(|ids| !ids.contains(id)) {
            lost += 1;
            continue;
        }
        let history = client.all_events(*id).await?;
        events += history.len();
        if history
            .iter()
            .enumerate()
            .any(|(i, e)| e.seq != i as i64 + 1)
        {
            gaps += 1;
        }
        // Completions per step within one attempt series (a `reset` starts another).
        let mut done: HashMap<&str, u32> = HashMap::new();
        for e in &history {
            let Some(step) = e.step.as_deref() else {
                continue;
            };
            match e.kind.as_str() {
                "succeeded" | "signalled" => {
                    let n = done.entry(step).or_default();
                    *n += 1;
                    if *n > 1 {
                        dup += 1;
                    }
                }
                "reset" => {
                    done.remove(step);
                }
                "interrupted" => interrupted += 1,
                _ => {}
            }
        }
        if !history.iter().any(|e| e.kind == "run_succeeded") {
            unfinished += 1;
        }
        if signalled.contains_key(id)
            && !history.iter().any(|e| {
                e.kind == "signalled"
                    && e.data.as_ref().and_then(|d| d["payload"]["drill"].as_str())
                        == Some(key.as_str())
            })
        {
            signal_lost += 1;
        }
    }
    Ok(json!({
        "runs": answered.len(),
        "runs_in_store": stored,
        "events_checked": events,
        "attempts_interrupted": interrupted,
        "runs_lost": lost,
        "signals_lost": signal_lost,
        "duplicated_runs": duplicated_runs,
        "duplicated_completions": dup,
        "gaps": gaps,
        "unfinished": unfinished,
    }))
}
