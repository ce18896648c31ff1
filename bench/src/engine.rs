//! `lariat-bench engine`: the provision-7 workload on the real engine and a real SQLite
//! file, and with `--postgres` on a real PostgreSQL database too, in the same session,
//! printing figures (never asserting them) and PostgreSQL's ratio to SQLite.
//!
//! Each phase runs in a fresh child process of this binary, so that peak RSS is the
//! phase's own and the resume phase starts after a real SIGKILL:
//! - throughput: N runs, C in flight, each signalled as soon as `await_callback` waits;
//! - latency: one run at a time on an idle engine;
//! - inflight: submit I runs without signalling them, then get killed with -9;
//! - resume: open that database and time until every unfinished run is scheduled again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use lariat_engine::{
    Actions, Actor, Durability, Engine, EngineConfig, EventKind, Format, NewRun, RunStatus,
    StoreOptions,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::work::{WorkDir, cpu_secs, peak_rss_mb, round};

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
    /// Also run every phase on PostgreSQL: a server the bench may create its databases on
    /// (`postgres://user:password@host:port/postgres`; each is dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
    #[arg(long, hide = true)]
    pub phase: Option<Phase>,
    /// The phase's store: a SQLite path or a PostgreSQL URL.
    #[arg(long, hide = true)]
    pub db: Option<String>,
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
    let dir = work.path().to_path_buf();
    let sqlite = phases(&b, &|name: &str| {
        let db = dir.join(format!("{name}.db"));
        async move { Ok((db.display().to_string(), None)) }
    })
    .await?;
    let out = match &b.postgres {
        None => sqlite,
        Some(server) => {
            let pg = phases(&b, &|_: &str| async move {
                let t = lariat_db::testing::TestDatabase::on(server).await?;
                Ok((t.url.clone(), Some(t)))
            })
            .await?;
            let ratio = |k: &str| match (pg[k].as_f64(), sqlite[k].as_f64()) {
                (Some(p), Some(s)) if s > 0.0 => json!(round(p / s, 2)),
                _ => Value::Null,
            };
            json!({
                "workload": "provision-7",
                "postgres_vs_sqlite": {
                    "workflows_per_s": ratio("workflows_per_s"),
                    "cpu_ms_per_workflow": ratio("cpu_ms_per_workflow"),
                    "p50_run_ms": ratio("p50_run_ms"),
                    "resume_ms": ratio("resume_ms"),
                },
                "sqlite": sqlite,
                "postgres": pg,
            })
        }
    };
    if b.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Every phase on one kind of store: `store(name)` gives each phase's database (and what
/// keeps a scratch PostgreSQL database alive until the phases are done with it).
async fn phases<F, Fut>(b: &EngineBench, store: &F) -> anyhow::Result<Value>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<
            Output = anyhow::Result<(String, Option<lariat_db::testing::TestDatabase>)>,
        >,
{
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let child = |p: Phase, db: &str| {
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
    let (db, _keep) = store("throughput").await?;
    let backend = if db.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    say(&format!("store: {backend}"));
    let tp = run_child(child(Phase::Throughput, &db)).await?;
    say(&format!("latency: {} sequential runs", b.latency_runs));
    let (db, _keep_latency) = store("latency").await?;
    let lat = run_child(child(Phase::Latency, &db)).await?;

    say(&format!("in flight: {} runs, then kill -9", b.inflight));
    let (inflight_db, _keep_inflight) = store("inflight").await?;
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
    Ok(json!({
        "engine": "lariat",
        "version": env!("CARGO_PKG_VERSION"),
        "store": backend,
        "workload": "provision-7",
        "durability": format!("{:?}", b.durability).to_lowercase(),
        "runs": b.runs,
        "concurrency": b.concurrency,
        "workflows_per_s": tp["workflows_per_s"],
        "cpu_ms_per_workflow": tp["cpu_ms_per_workflow"],
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
    }))
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
    async fn start(db: &str, b: &EngineBench, signal: bool) -> anyhow::Result<Arc<Driver>> {
        let mut actions = Actions::new();
        lariat_steps::register_builtin(&mut actions);
        let mut cfg = EngineConfig::at(StoreOptions::from_arg(db));
        if let Some(o) = cfg.store.sqlite_mut() {
            o.durability = b.durability;
        }
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

async fn phase(p: Phase, db: &str, b: &EngineBench) -> anyhow::Result<Value> {
    match p {
        Phase::Throughput => throughput(db, b).await,
        Phase::Latency => latency(db, b).await,
        Phase::Inflight => inflight(db, b).await,
        Phase::Resume => resume(db).await,
    }
}

async fn throughput(db: &str, b: &EngineBench) -> anyhow::Result<Value> {
    let d = Driver::start(db, b, true).await?;
    let events_before = d.engine.store().max_owner_seq(d.engine.owner()).await?;
    let started = Instant::now();
    let cpu_before = cpu_secs();
    // Driven as a stream, not as spawned tasks: a finished task keeps its memory until its
    // handle is joined, which would count ten thousand futures against the engine's RSS.
    futures::stream::iter(0..b.runs)
        .map(|_| d.one())
        .buffer_unordered(b.concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
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
        let store = lariat_engine::Store::open(StoreOptions::from_arg(db)).await?;
        let n = store.disk_bytes().await?;
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
        // This process's CPU only: on PostgreSQL the server's share is not in it.
        "cpu_ms_per_workflow": round(1000.0 * cpu / b.runs as f64, 3),
        "events": events,
        "transitions_per_s": round(events as f64 / secs, 1),
        "db_bytes": bytes,
        "db_bytes_per_step": round(bytes as f64 / (7.0 * b.runs as f64), 1),
        "peak_rss_mb": round(rss, 1),
    }))
}

async fn latency(db: &str, b: &EngineBench) -> anyhow::Result<Value> {
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
async fn inflight(db: &str, b: &EngineBench) -> anyhow::Result<Value> {
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

async fn resume(db: &str) -> anyhow::Result<Value> {
    let mut actions = Actions::new();
    lariat_steps::register_builtin(&mut actions);
    let started = Instant::now();
    let engine = Engine::start(EngineConfig::at(StoreOptions::from_arg(db)), actions).await?;
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
