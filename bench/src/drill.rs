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
async fn drive(client: Client, shared: Arc<Shared>) {
    let pause = Duration::from_millis(10);
    let (ledger, counters) = (&shared.ledger, &shared.counters);
    while !shared.stop.load(Ordering::Relaxed) {
        let job = {
            let mut l = lock(ledger);
            if let Some(key) = l.unanswered.pop_front() {
                Job::Submit(key)
            } else if l.in_flight() < shared.inflight.load(Ordering::Relaxed) {
                l.next_key += 1;
                Job::Submit(format!("drill-{}", l.next_key))
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
                    let mut l = lock(ledger);
                    l.runs.insert(sub.run.id, key);
                    l.waiting.push_back(sub.run.id);
                }
                Err(e) => {
                    shared.unanswered(&e);
                    lock(ledger).unanswered.push_back(key);
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
                        lock(ledger).signalled.insert(id, key);
                    }
                    Err(ClientError::Api { status: 404, .. }) => lock(ledger).missing.push(id),
                    Err(ClientError::Api { status: 409, .. })
                        if signalled_before(&client, id).await =>
                    {
                        // An earlier signal went through; a kill took its answer.
                        counters.signals_found_again.fetch_add(1, Ordering::Relaxed);
                        lock(ledger).signalled.insert(id, key);
                    }
                    Err(e) => {
                        // 409: not waiting yet.
                        if !matches!(e, ClientError::Api { status: 409, .. }) {
                            shared.unanswered(&e);
                        }
                        lock(ledger).waiting.push_back(id);
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

/// What the drivers share: the ledger, the counters, how many runs to keep going.
#[derive(Default)]
struct Shared {
    ledger: Mutex<Ledger>,
    counters: Counters,
    inflight: std::sync::atomic::AtomicUsize,
    stop: AtomicBool,
    /// The first refusal other than a lost connection (a 503 on a full disk, say).
    first_refusal: Mutex<Option<(Instant, String)>>,
}

impl Shared {
    fn unanswered(&self, e: &ClientError) {
        self.counters
            .requests_unanswered
            .fetch_add(1, Ordering::Relaxed);
        if !matches!(e, ClientError::Unreachable { .. }) {
            let mut f = self.first_refusal.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(|| (Instant::now(), e.to_string()));
        }
    }
}

/// REST clients driving runs until stopped.
struct Drivers {
    shared: Arc<Shared>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Drivers {
    fn start(client: &Client, clients: usize, inflight: usize) -> Drivers {
        Self::resume(client, clients, inflight, Arc::new(Shared::default()))
    }

    /// Drivers that go on with another's ledger (after a restart of the drill's own).
    fn resume(client: &Client, clients: usize, inflight: usize, shared: Arc<Shared>) -> Drivers {
        shared.stop.store(false, Ordering::Relaxed);
        shared.inflight.store(inflight, Ordering::Relaxed);
        let handles = (0..clients.max(1))
            .map(|_| tokio::spawn(drive(client.clone(), shared.clone())))
            .collect();
        Drivers { shared, handles }
    }

    /// Stops the clients where they are.
    async fn halt(self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.await;
        }
        self.shared
    }

    /// Stops submitting new runs, answers every key sent and signals every run, then
    /// waits until no run is running.
    async fn settle(self, client: &Client, patience: Duration) -> anyhow::Result<Arc<Shared>> {
        let deadline = Instant::now() + patience;
        self.shared.inflight.store(0, Ordering::Relaxed);
        loop {
            let (keys, runs) = {
                let l = lock(&self.shared.ledger);
                (l.unanswered.len(), l.waiting.len())
            };
            if keys == 0 && runs == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{keys} submits and {runs} signals still not answered after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let shared = self.halt().await;
        let q = ListRunsQuery {
            status: Some("running".into()),
            limit: Some(1),
            ..Default::default()
        };
        while !client.runs(&q).await?.runs.is_empty() {
            if Instant::now() > deadline {
                bail!("runs still running after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(shared)
    }
}

/// The server a drill kills and starts again: always on the same database and port.
struct DrillServer {
    exe: PathBuf,
    listen: String,
    port: u16,
    args: Vec<std::ffi::OsString>,
    /// An operator token made with the CLI on the database.
    token: String,
}

impl DrillServer {
    async fn new(exe: PathBuf, db: &std::path::Path, extra: &[&str]) -> anyhow::Result<Self> {
        let token = cli_token(
            &exe,
            db,
            &[
                "token", "create", "--role", "operator", "--name", "drill", "--json",
            ],
        )
        .await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut args: Vec<std::ffi::OsString> = vec!["--db".into(), db.into()];
        args.extend(extra.iter().map(Into::into));
        Ok(DrillServer {
            exe,
            listen: format!("127.0.0.1:{port}"),
            port,
            args,
            token,
        })
    }

    async fn start(&self) -> anyhow::Result<ServerChild> {
        let args: Vec<&std::ffi::OsStr> = self.args.iter().map(|a| a.as_os_str()).collect();
        ServerChild::start_on(&self.exe, &self.listen, &args).await
    }
}

pub async fn kill(d: KillDrill) -> anyhow::Result<()> {
    if d.min_up_ms > d.max_up_ms {
        bail!("--min-up-ms must not exceed --max-up-ms");
    }
    let exe = lariat_binary(d.lariat.as_deref())?;
    let work = WorkDir::new(d.dir.as_deref(), "lariat-kill-drill")?;
    let db = work.path().join("drill.db");
    let srv = DrillServer::new(exe, &db, &["--durability", &d.durability]).await?;
    let start = || srv.start();
    let port = srv.port;
    let token = srv.token.clone();

    let mut server = start().await?;
    let client = Client::new(&server.base, Some(token.clone()))?;
    let drivers = Drivers::start(&client, d.clients, d.inflight);

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
            let l = lock(&drivers.shared.ledger);
            eprintln!(
                "kill-drill: {} kills, {} runs answered, {} signalled",
                cycle + 1,
                l.runs.len(),
                l.signalled.len()
            );
        }
    }
    let drilled = began.elapsed();
    let shared = match drivers.settle(&client, Duration::from_secs(300)).await {
        Ok(s) => s,
        Err(e) => bail!("{e}\n{}", server.log_tail()),
    };
    let counters = &shared.counters;
    let report = check(&client, &shared.ledger).await?;
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

#[derive(Args, Debug, Clone)]
pub struct DiskDrill {
    /// A folder on a small filesystem of its own, which the drill fills up
    /// (`bench/drill_disk_full.sh` loop-mounts one).
    #[arg(long)]
    pub dir: PathBuf,
    /// Runs kept in flight.
    #[arg(long, default_value_t = 200)]
    pub inflight: usize,
    /// Concurrent REST clients driving the runs.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds of work before the disk fills.
    #[arg(long, default_value_t = 3)]
    pub warmup_s: u64,
    /// Seconds the clients keep at it on the full disk.
    #[arg(long, default_value_t = 5)]
    pub full_s: u64,
    /// The `lariat` binary to start as the server; the one beside this binary by default.
    #[arg(long, env = "LARIAT_BIN")]
    pub lariat: Option<PathBuf>,
}

/// Fills the filesystem holding `path` with it: 1 MiB writes, then 4 KiB ones, until
/// the disk refuses. Returns the bytes written.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut written = 0u64;
    for size in [1usize << 20, 4096, 512] {
        let chunk = vec![0u8; size];
        loop {
            match f.write(&chunk) {
                Ok(n) if n > 0 => written += n as u64,
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

async fn integrity(db: &std::path::Path) -> anyhow::Result<String> {
    use sqlx::ConnectOptions;
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut c)
        .await?;
    Ok(rows.join("; "))
}

pub async fn disk(d: DiskDrill) -> anyhow::Result<()> {
    let exe = lariat_binary(d.lariat.as_deref())?;
    let db = d.dir.join("lariat.db");
    let ballast = d.dir.join("ballast");
    let _ = std::fs::remove_file(&ballast);
    let srv = DrillServer::new(exe, &db, &[]).await?;
    let start = || srv.start();
    let token = srv.token.clone();

    let mut server = start().await?;
    let client = Client::new(&server.base, Some(token))?;
    let drivers = Drivers::start(&client, d.clients, d.inflight);
    tokio::time::sleep(Duration::from_secs(d.warmup_s)).await;
    let before = lock(&drivers.shared.ledger).runs.len();
    let ballast_bytes = fill(&ballast)?;
    let full_at = Instant::now();
    let mut exited = None;
    while full_at.elapsed() < Duration::from_secs(d.full_s) {
        if let Some(status) = server.exited() {
            exited = Some((full_at.elapsed(), status));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = match client.ready().await {
        Ok(h) => h.status,
        Err(e) => e.to_string(),
    };
    let shared = drivers.halt().await;
    let after = lock(&shared.ledger).runs.len();
    let refusal = shared
        .first_refusal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(|(at, msg)| {
            (
                round(
                    at.saturating_duration_since(full_at).as_secs_f64() * 1000.0,
                    1,
                ),
                msg,
            )
        });
    let log_errors: Vec<String> = server
        .log_tail()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .take(3)
        .map(str::to_string)
        .collect();
    if exited.is_none() {
        server.kill().await?;
    }
    // A restart on the full disk, then one after the operator frees the space.
    let restart_full = match start().await {
        Ok(s) => {
            s.kill().await?;
            "started".to_string()
        }
        Err(e) => format!("{e:#}")
            .lines()
            .last()
            .unwrap_or_default()
            .to_string(),
    };
    std::fs::remove_file(&ballast)?;
    let integrity_after = integrity(&db).await?;
    let server = start().await?;
    let drivers = Drivers::resume(&client, d.clients, d.inflight, shared);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shared = match drivers.settle(&client, Duration::from_secs(300)).await {
        Ok(s) => s,
        Err(e) => bail!("{e}\n{}", server.log_tail()),
    };
    let report = check(&client, &shared.ledger).await?;
    server.kill().await?;
    let mut out = json!({
        "drill": "disk_full",
        "inflight": d.inflight,
        "ballast_mb": round(ballast_bytes as f64 / 1e6, 1),
        "runs_answered_before_full": before,
        "runs_answered_while_full": after - before,
        "first_refusal_after_full_ms": refusal.as_ref().map(|r| r.0),
        "first_refusal": refusal.map(|r| r.1),
        "server_exited": exited.as_ref().map(|(t, s)| json!({
            "after_ms": round(t.as_secs_f64() * 1000.0, 1),
            "code": s.code(),
        })),
        "readyz_while_full": ready,
        "server_log_errors": log_errors,
        "restart_on_the_full_disk": restart_full,
        "integrity_check_after": integrity_after,
    });
    if let (Value::Object(o), Value::Object(r)) = (&mut out, report) {
        o.extend(r);
    }
    println!("{out}");
    Ok(())
}
