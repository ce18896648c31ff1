//! `lariat-bench engine`: the provision-7 workload on the real engine and a real SQLite
//! file, printing figures (never asserting them).
//!
//! Each phase runs in a fresh child process of this binary, so that peak RSS is the
//! phase's own and the resume phase starts after a real SIGKILL:
//! - throughput: N runs, C in flight, each signalled as soon as `await_callback` waits;
//! - latency: one run at a time on an idle engine;
//! - inflight: submit I runs without signalling them, then get killed with -9;
//! - resume: open that database and time until every unfinished run is scheduled again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use lariat_engine::{
    Actions, Actor, Durability, Engine, EngineConfig, EventKind, Format, NewRun, RunStatus,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::work::{WorkDir, peak_rss_mb, round};

#[derive(Args, Debug, Clone)]
pub struct EngineBench {
    /// Workflows in the throughput phase.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// Workflows in flight at once in the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Sequential runs for the latency percentiles (after 3 warm-up runs).
    #[arg(long, default_value_t = 200)]
    pub latency_runs: usize,
    /// Unfinished runs at the moment of the kill, for the memory and resume phases.
    #[arg(long, default_value_t = 10_000)]
    pub inflight: usize,
    #[arg(long, default_value = "full")]
    pub durability: Durability,
    /// Print one JSON object (the figures) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Folder for the bench databases (a temporary one by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub phase: Option<Phase>,
    #[arg(long, hide = true)]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Throughput,
    Latency,
    Inflight,
    Resume,
}

pub async fn run(b: EngineBench) -> anyhow::Result<()> {
    match (b.phase, b.db.clone()) {
        (Some(p), Some(db)) => {
            let out = phase(p, &db, &b).await?;
            println!("{out}");
            Ok(())
        }
        (Some(_), None) => bail!("--phase needs --db"),
        (None, _) => orchestrate(b).await,
    }
}

async fn orchestrate(b: EngineBench) -> anyhow::Result<()> {
    let work = WorkDir::new(b.dir.as_deref(), "lariat-bench")?;
    let dir = work.path();
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let child = |p: Phase, db: &Path| {
        let mut c = tokio::process::Command::new(&exe);
        c.args(["engine", "--phase"])
            .arg(format!("{p:?}").to_lowercase())
            .arg("--db")
            .arg(db)
            .args(["--runs", &b.runs.to_string()])
            .args(["--concurrency", &b.concurrency.to_string()])
            .args(["--latency-runs", &b.latency_runs.to_string()])
            .args(["--inflight", &b.inflight.to_string()])
            .args([
                "--durability",
                match b.durability {
                    Durability::Full => "full",
                    Durability::Normal => "normal",
                },
            ])
            .env("LARIAT_LOG", "warn")
            .kill_on_drop(true);
        c
    };
    let say = |s: &str| {
        if !b.json {
            eprintln!("{s}");
        }
    };

    say(&format!(
        "throughput: {} runs, {} in flight",
        b.runs, b.concurrency
    ));
    let tp = run_child(child(Phase::Throughput, &dir.join("throughput.db"))).await?;
    say(&format!("latency: {} sequential runs", b.latency_runs));
    let lat = run_child(child(Phase::Latency, &dir.join("latency.db"))).await?;

    say(&format!("in flight: {} runs, then kill -9", b.inflight));
    let inflight_db = dir.join("inflight.db");
    let mut c = child(Phase::Inflight, &inflight_db);
    c.stdout(std::process::Stdio::piped());
    let mut proc = c.spawn().context("cannot start the in-flight phase")?;
    let stdout = proc.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("the in-flight phase took over 10 minutes")??
        .context("the in-flight phase exited before reporting")?;
    proc.start_kill()
        .context("cannot kill the in-flight phase")?;
    let _ = proc.wait().await;
    let infl: Value = serde_json::from_str(&line).context("in-flight phase output")?;

    say("resume after kill -9");
    let res = run_child(child(Phase::Resume, &inflight_db)).await?;

    let peak = [&tp, &lat, &infl, &res]
        .iter()
        .filter_map(|v| v["peak_rss_mb"].as_f64())
        .fold(0.0f64, f64::max);
    let out = json!({
        "engine": "lariat",
        "version": env!("CARGO_PKG_VERSION"),
        "workload": "provision-7",
        "durability": format!("{:?}", b.durability).to_lowercase(),
        "runs": b.runs,
        "concurrency": b.concurrency,
        "workflows_per_s": tp["workflows_per_s"],
        "transitions_per_s": tp["transitions_per_s"],
        "p50_run_ms": lat["p50_run_ms"],
        "p99_run_ms": lat["p99_run_ms"],
        "latency_runs": lat["runs"],
        "peak_rss_mb": round(peak, 1),
        "db_bytes_per_step": tp["db_bytes_per_step"],
        "resume_ms": res["resume_ms"],
        "resumed_runs": res["resumed_runs"],
        "interrupted_attempts": res["interrupted"],
        "inflight_at_kill": infl["inflight"],
        "phases": {"throughput": tp, "latency": lat, "inflight": infl, "resume": res},
    });
    if b.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

async fn run_child(mut c: tokio::process::Command) -> anyhow::Result<Value> {
    let out = c.output().await.context("cannot run a bench phase")?;
    if !out.status.success() {
        bail!(
            "bench phase failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("bench phase printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("bench phase printed {line}"))
}

/// Runs of the bench engine, completed as the events say: signalled when
/// `await_callback` waits, done when the run succeeds.
struct Driver {
    engine: Engine,
    slots: Mutex<HashMap<Uuid, Slot>>,
}

enum Slot {
    Done,
    Waiter(oneshot::Sender<()>),
}

impl Driver {
    async fn start(db: &Path, b: &EngineBench, signal: bool) -> anyhow::Result<Arc<Driver>> {
        let mut actions = Actions::new();
        lariat_steps::register_builtin(&mut actions);
        let mut cfg = EngineConfig::new(db);
        cfg.store.durability = b.durability;
        // The throughput phase's dispatcher must never lag; the others keep the default.
        if signal {
            cfg.event_buffer = 1 << 18;
        }
        let engine = Engine::start(cfg, actions).await?;
        engine
            .register_workflow(lariat_workflows::PROVISION_NOOP.yaml, Format::Yaml)
            .await?;
        let d = Arc::new(Driver {
            engine,
            slots: Mutex::new(HashMap::new()),
        });
        let mut rx = d.engine.subscribe();
        let me = d.clone();
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!(
                            "bench: event subscriber lagged by {n} events; results are invalid"
                        );
                        std::process::exit(3);
                    }
                    Err(_) => return,
                };
                match &ev.kind {
                    EventKind::Waiting { .. }
                        if signal && ev.step.as_deref() == Some("await_callback") =>
                    {
                        let e = me.engine.clone();
                        let run = ev.run_id;
                        tokio::spawn(async move {
                            if let Err(err) = e
                                .signal(
                                    run,
                                    "await_callback",
                                    None,
                                    json!({"ok": true}),
                                    Actor::system(),
                                )
                                .await
                            {
                                eprintln!("bench: signal failed: {err}");
                            }
                        });
                    }
                    EventKind::RunSucceeded | EventKind::RunFailed => {
                        let mut s = me.slots.lock().unwrap_or_else(|e| e.into_inner());
                        match s.remove(&ev.run_id) {
                            Some(Slot::Waiter(tx)) => {
                                let _ = tx.send(());
                            }
                            _ => {
                                s.insert(ev.run_id, Slot::Done);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(d)
    }

    async fn submit(&self) -> anyhow::Result<Uuid> {
        Ok(self
            .engine
            .submit(
                NewRun {
                    workflow: "provision-noop".into(),
                    input: json!({"host": "bench"}),
                    ..Default::default()
                },
                Actor::system(),
            )
            .await?
            .run_id)
    }

    /// Submit one run and wait for it to finish.
    async fn one(&self) -> anyhow::Result<()> {
        let id = self.submit().await?;
        let rx = {
            let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match s.remove(&id) {
                Some(Slot::Done) => return Ok(()),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    s.insert(id, Slot::Waiter(tx));
                    rx
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .context("a run did not finish within 120 s")?
            .context("event feed stopped")?;
        Ok(())
    }
}

async fn phase(p: Phase, db: &Path, b: &EngineBench) -> anyhow::Result<Value> {
    match p {
        Phase::Throughput => throughput(db, b).await,
        Phase::Latency => latency(db, b).await,
        Phase::Inflight => inflight(db, b).await,
        Phase::Resume => resume(db).await,
    }
}

async fn throughput(db: &Path, b: &EngineBench) -> anyhow::Result<Value> {
    let d = Driver::start(db, b, true).await?;
    let events_before = d.engine.store().max_owner_seq(d.engine.owner()).await?;
    let started = Instant::now();
    // Driven as a stream, not as spawned tasks: a finished task keeps its memory until its
    // handle is joined, which would count ten thousand futures against the engine's RSS.
    futures::stream::iter(0..b.runs)
        .map(|_| d.one())
        .buffer_unordered(b.concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let events = d.engine.store().max_owner_seq(d.engine.owner()).await? - events_before;
    let failed = d
        .engine
        .store()
        .run_counts()
        .await?
        .get(RunStatus::Failed.as_str())
        .copied()
        .unwrap_or(0);
    let rss = peak_rss_mb();
    d.engine.shutdown().await;
    let bytes = {
        // Measure the file with its WAL folded in.
        let store = lariat_engine::Store::open(lariat_engine::StoreOptions::new(db)).await?;
        store.checkpoint().await?;
        let n = store.disk_bytes();
        store.close().await;
        n
    };
    Ok(json!({
        "runs": b.runs,
        "concurrency": b.concurrency,
        "failed_runs": failed,
        "secs": round(secs, 3),
        "workflows_per_s": round(b.runs as f64 / secs, 1),
        "steps_per_s": round(7.0 * b.runs as f64 / secs, 1),
        "events": events,
        "transitions_per_s": round(events as f64 / secs, 1),
        "db_bytes": bytes,
        "db_bytes_per_step": round(bytes as f64 / (7.0 * b.runs as f64), 1),
        "peak_rss_mb": round(rss, 1),
    }))
}

async fn latency(db: &Path, b: &EngineBench) -> anyhow::Result<Value> {
    let d = Driver::start(db, b, true).await?;
    let mut ms = Vec::with_capacity(b.latency_runs);
    for i in 0..b.latency_runs + 3 {
        let t = Instant::now();
        d.one().await?;
        if i >= 3 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((p * ms.len() as f64) as usize).min(ms.len() - 1)];
    let out = json!({
        "runs": ms.len(),
        "p50_run_ms": round(q(0.5), 2),
        "p90_run_ms": round(q(0.9), 2),
        "p99_run_ms": round(q(0.99), 2),
        "min_run_ms": round(ms[0], 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    });
    d.engine.shutdown().await;
    Ok(out)
}

/// Submit `inflight` runs that are never signalled, report, and wait to be killed.
async fn inflight(db: &Path, b: &EngineBench) -> anyhow::Result<Value> {
    let d = Driver::start(db, b, false).await?;
    let started = Instant::now();
    futures::stream::iter(0..b.inflight)
        .map(|_| d.submit())
        .buffer_unordered(256)
        .try_collect::<Vec<_>>()
        .await?;
    let stats = d.engine.stats().await?;
    let out = json!({
        "inflight": stats.live_runs,
        "running_attempts_at_kill": stats.running_attempts,
        "submit_secs": round(started.elapsed().as_secs_f64(), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    });
    println!("{out}");
    // Keep working until the parent's SIGKILL lands.
    tokio::time::sleep(Duration::from_secs(600)).await;
    bail!("the in-flight phase was not killed")
}

async fn resume(db: &Path) -> anyhow::Result<Value> {
    let mut actions = Actions::new();
    lariat_steps::register_builtin(&mut actions);
    let started = Instant::now();
    let engine = Engine::start(EngineConfig::new(db), actions).await?;
    let scheduled_ms = started.elapsed().as_secs_f64() * 1000.0;
    let r = engine.resume_report();
    let stats = engine.stats().await?;
    let out = json!({
        "resume_ms": round(r.elapsed_ms, 1),
        "process_resume_ms": round(scheduled_ms, 1),
        "resumed_runs": r.runs,
        "interrupted": r.interrupted,
        "timers": r.timers,
        "live_runs": stats.live_runs,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    });
    engine.shutdown().await;
    Ok(out)
}
