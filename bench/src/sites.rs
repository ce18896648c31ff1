//! `lariat-bench sites`: many site agents replicating to one central node.
//!
//! The central node is the real `lariat server` in a child process, its design a site per
//! agent with `--hosts-per-site` hosts. The agents run in this process, each its own
//! engine on its own SQLite file and the real link (`lariat-link`) to the centre over
//! HTTP; their actions are no-ops and each `await_callback` is signalled as soon as it
//! waits (the simulated node callback). Each agent provisions every host of its site
//! with provision-noop (one run per host, `--concurrency` at a time). Phases:
//! - steady: every site at once; the centre's apply rate, and the replication lag of
//!   each event (its commit at the agent to the centre having applied it, seen by
//!   polling `GET /v1/sites` every 50 ms);
//! - catch-up: one site's link is cut (a proxy in front of the centre) while it runs
//!   `--backlog-events` worth of runs, then restored; the time until the centre has them.
//!
//! Prints one JSON object. Figures are reported, never asserted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use lariat_client::Client;
use lariat_db::{Db, DbOptions, Durability};
use lariat_engine::{Actions, Actor, Engine, EngineConfig, EventKind, NewRun};
use lariat_link::{Link, LinkConfig, StoredDesign, StoredOverrides};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::work::{ServerChild, WorkDir, cli_token, lariat_binary, round};

#[derive(Args, Debug, Clone)]
pub struct SitesBench {
    /// Site agents, each with its own engine, database and link.
    #[arg(long, default_value_t = 100)]
    pub sites: usize,
    /// Hosts of each site; each is provisioned by one run.
    #[arg(long, default_value_t = 1000)]
    pub hosts_per_site: usize,
    /// Runs in flight at once at each agent.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Events one site makes while cut off, for the catch-up phase.
    #[arg(long, default_value_t = 50_000)]
    pub backlog_events: u64,
    /// The agents' commit durability (the centre's is normal).
    #[arg(long, default_value = "normal")]
    pub durability: Durability,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Folder for the databases and the design (a temporary one by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `lariat` binary to run as the centre; the one beside this binary by default.
    #[arg(long, env = "LARIAT_BIN")]
    pub lariat: Option<PathBuf>,
}

fn site_name(i: usize) -> String {
    format!("s{i:03}")
}

/// A design of `sites` sites with `hosts` hosts each, committed to a git repository.
fn design_repo(dir: &Path, sites: usize, hosts: usize) -> anyhow::Result<PathBuf> {
    let repo = dir.join("design");
    std::fs::create_dir_all(&repo)?;
    for s in 0..sites {
        let name = site_name(s);
        let mut doc = format!(
            "kind: Site\nname: {name}\nspec:\n  id: {name}\n  agent_endpoint: http://agent.{name}\n  dhcp_mode: server\n  boot_assets: http://10.0.0.1/assets\n  timezone: UTC\n"
        );
        for h in 0..hosts {
            doc.push_str(&format!(
                "---\nkind: Host\nname: {name}-h{h:05}\nspec:\n  site: {name}\n  never_provision: true\n"
            ));
        }
        std::fs::write(repo.join(format!("{name}.yaml")), doc)?;
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .context("git runs")?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&[
        "-c",
        "user.email=bench@lariat",
        "-c",
        "user.name=bench",
        "commit",
        "-qm",
        "sites",
    ])?;
    Ok(repo)
}

/// A TCP proxy in front of the centre that can be cut and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn to(upstream: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let to = upstream.clone();
                let conn = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    let _ = tokio::join!(
                        tokio::io::copy(&mut ri, &mut wo),
                        tokio::io::copy(&mut ro, &mut wi)
                    );
                });
                o.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn.abort_handle());
            }
        });
        Ok(Proxy { addr, cut, open })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// One agent: its engine, the commit time of each of its events (by owner_seq), and the
/// runs waiting to finish.
struct Agent {
    site: String,
    engine: Engine,
    /// Commit time (ms) of each event, by owner_seq - 1.
    committed: Mutex<Vec<i64>>,
    waiters: Mutex<HashMap<Uuid, oneshot::Sender<()>>>,
    done: Mutex<std::collections::HashSet<Uuid>>,
}

impl Agent {
    async fn start(
        dir: &Path,
        site: String,
        centre: String,
        token: String,
        durability: Durability,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Agent>> {
        let db = dir.join(format!("agent-{site}.db"));
        let mut cfg = EngineConfig::new(&db);
        cfg.executor_id = format!("agent-{site}");
        if let Some(o) = cfg.store.sqlite_mut() {
            o.durability = durability;
            o.readers = 1;
        }
        cfg.max_running = 64;
        cfg.event_buffer = 1 << 16;
        let mut actions = Actions::new();
        lariat_steps::register_builtin(&mut actions);
        let engine = Engine::start(cfg, actions).await?;
        let tables = Db::open(DbOptions {
            durability,
            readers: 1,
            ..DbOptions::shared(&db)
        })
        .await?;
        let design = StoredDesign::open(tables.clone()).await?;
        let overrides = StoredOverrides::open(tables.clone()).await?;
        let client = Client::new(&centre, Some(token))?;
        let link = Link::open(
            LinkConfig::default(),
            engine.clone(),
            design,
            overrides,
            tables,
            client,
        )
        .await?;
        tokio::spawn(link.run(stop));
        let a = Arc::new(Agent {
            site,
            engine,
            committed: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
            done: Mutex::new(Default::default()),
        });
        let me = a.clone();
        let mut rx = a.engine.subscribe();
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!(
                            "bench: an agent's subscriber lagged by {n} events; results are invalid"
                        );
                        std::process::exit(3);
                    }
                    Err(_) => return,
                };
                {
                    let mut c = me.committed.lock().unwrap_or_else(|e| e.into_inner());
                    let at = lariat_db::now_ms();
                    while (c.len() as i64) < ev.owner_seq {
                        c.push(at);
                    }
                }
                match &ev.kind {
                    EventKind::Waiting { .. } if ev.step.as_deref() == Some("await_callback") => {
                        let e = me.engine.clone();
                        let run = ev.run_id;
                        tokio::spawn(async move {
                            let _ = e
                                .signal(
                                    run,
                                    "await_callback",
                                    None,
                                    json!({"ok": true}),
                                    Actor::system(),
                                )
                                .await;
                        });
                    }
                    EventKind::RunSucceeded | EventKind::RunFailed => {
                        let tx = me
                            .waiters
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&ev.run_id);
                        match tx {
                            Some(tx) => {
                                let _ = tx.send(());
                            }
                            None => {
                                me.done
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(ev.run_id);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(a)
    }

    /// One run of provision-noop for `host`, to its end.
    async fn provision(&self, host: String) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        let id = Uuid::now_v7();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let new = NewRun {
            workflow: "provision-noop".into(),
            targets: vec![host],
            id: Some(id),
            ..Default::default()
        };
        self.engine.submit(new, Actor::system()).await?;
        if self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        {
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Ok(());
        }
        rx.await.context("the run never ended")
    }

    async fn owner_seq(&self) -> anyhow::Result<i64> {
        Ok(self
            .engine
            .store()
            .max_owner_seq(self.engine.owner())
            .await?)
    }
}

/// The centre's applied cursor of every site, by site.
async fn applied(c: &Client) -> anyhow::Result<HashMap<String, i64>> {
    Ok(c.sites()
        .await?
        .sites
        .into_iter()
        .map(|s| (s.site, s.applied))
        .collect())
}

/// Lag samples (ms) of the events the centre newly has, polling until `stop`.
async fn sample_lag(
    centre: Client,
    agents: Vec<Arc<Agent>>,
    stop: Arc<AtomicBool>,
    lags: Arc<Mutex<Vec<u32>>>,
    applied_total: Arc<AtomicU64>,
) {
    let mut seen: HashMap<String, i64> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(now) = applied(&centre).await {
            let t = lariat_db::now_ms();
            let mut out = lags.lock().unwrap_or_else(|e| e.into_inner());
            let mut total = 0;
            for a in &agents {
                let cur = now.get(&a.site).copied().unwrap_or(0);
                total += cur;
                let from = seen.get(&a.site).copied().unwrap_or(0);
                if cur > from {
                    let committed = a.committed.lock().unwrap_or_else(|e| e.into_inner());
                    for seq in from..cur.min(committed.len() as i64) {
                        let at = committed[seq as usize];
                        out.push((t - at).max(0) as u32);
                    }
                    seen.insert(a.site.clone(), cur);
                }
            }
            applied_total.store(total as u64, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub async fn run(b: SitesBench) -> anyhow::Result<()> {
    let work = WorkDir::new(b.dir.as_deref(), "lariat-bench-sites")?;
    let result = bench(&b, work.path()).await;
    drop(work);
    let out = result?;
    if b.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

async fn bench(b: &SitesBench, dir: &Path) -> anyhow::Result<Value> {
    if b.sites == 0 || b.hosts_per_site == 0 {
        bail!("--sites and --hosts-per-site must be at least 1");
    }
    let exe = lariat_binary(b.lariat.as_deref())?;
    let say = |s: &str| {
        if !b.json {
            eprintln!("{s}");
        }
    };
    say(&format!(
        "design: {} sites of {} hosts",
        b.sites, b.hosts_per_site
    ));
    let repo = design_repo(dir, b.sites, b.hosts_per_site)?;
    let db = dir.join("central.db");
    let mut tokens = Vec::with_capacity(b.sites);
    for s in 0..b.sites {
        tokens.push(
            cli_token(
                &exe,
                &db,
                &["site", "token", "create", &site_name(s), "--json"],
            )
            .await?,
        );
    }
    let central = ServerChild::start(
        &exe,
        &[
            "--insecure-no-auth".as_ref(),
            "--durability".as_ref(),
            "normal".as_ref(),
            "--design-repo".as_ref(),
            repo.as_os_str(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
    )
    .await?;
    let centre = Client::new(&central.base, None)?;
    let upstream = central.base.trim_start_matches("http://").to_string();
    let proxy = Proxy::to(upstream).await?;

    say("agents: starting");
    let stop = CancellationToken::new();
    let mut agents = Vec::with_capacity(b.sites);
    for (s, token) in tokens.into_iter().enumerate() {
        // The first site's link goes through the proxy, to be cut in the catch-up phase.
        let url = if s == 0 {
            format!("http://{}", proxy.addr)
        } else {
            central.base.clone()
        };
        agents.push(Agent::start(dir, site_name(s), url, token, b.durability, stop.clone()).await?);
    }
    let ready = Instant::now();
    for a in &agents {
        while a.engine.workflow("provision-noop", None).await.is_err() {
            if ready.elapsed() > Duration::from_secs(300) {
                bail!("site {} never got its workflows from the centre", a.site);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    say(&format!(
        "agents: {} connected in {:.1}s",
        agents.len(),
        ready.elapsed().as_secs_f64()
    ));

    // Steady phase.
    let lags = Arc::new(Mutex::new(Vec::new()));
    let applied_total = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_lag(
        centre.clone(),
        agents.clone(),
        sampling.clone(),
        lags.clone(),
        applied_total.clone(),
    ));
    say(&format!(
        "steady: {} runs at each of {} sites, {} at a time",
        b.hosts_per_site, b.sites, b.concurrency
    ));
    let started = Instant::now();
    let mut work = Vec::new();
    for a in &agents {
        let a = a.clone();
        let hosts = b.hosts_per_site;
        let concurrency = b.concurrency.max(1);
        work.push(tokio::spawn(async move {
            futures::stream::iter(0..hosts)
                .map(|h| a.provision(format!("{}-h{h:05}", a.site)))
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<()>>()
        }));
    }
    for w in work {
        w.await??;
    }
    let executed = started.elapsed();
    let mut total_events = 0i64;
    for a in &agents {
        total_events += a.owner_seq().await?;
    }
    // Until the centre has every event.
    loop {
        if applied_total.load(Ordering::SeqCst) as i64 >= total_events {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the centre never caught up with the sites");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replicated = started.elapsed();
    sampling.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let mut lag = std::mem::take(&mut *lags.lock().unwrap_or_else(|e| e.into_inner()));
    lag.sort_unstable();

    // Catch-up phase: the first site, cut off, makes a backlog.
    let first = agents[0].clone();
    say(&format!(
        "catch-up: {} cut off for {} events",
        first.site, b.backlog_events
    ));
    proxy.cut();
    let before = first.owner_seq().await?;
    let mut n = 0usize;
    while (first.owner_seq().await? - before) < b.backlog_events as i64 {
        let batch: Vec<_> = (0..64)
            .map(|i| first.provision(format!("{}-h{:05}", first.site, (n + i) % b.hosts_per_site)))
            .collect();
        futures::future::try_join_all(batch).await?;
        n += 64;
    }
    let target = first.owner_seq().await?;
    let backlog = target - before;
    let t = Instant::now();
    proxy.restore();
    // Reconnecting (the agent's retry pause) is timed apart from shipping the backlog.
    let mut moving: Option<(Instant, i64)> = None;
    loop {
        let cur = applied(&centre)
            .await?
            .get(&first.site)
            .copied()
            .unwrap_or(0);
        if moving.is_none() && cur > before {
            moving = Some((Instant::now(), cur));
        }
        if cur >= target {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("site {} never caught up", first.site);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let catch_up = t.elapsed();
    let (shipping_from, shipped_from) = moving.unwrap_or((t, before));
    let shipping = shipping_from.elapsed().max(Duration::from_millis(1));
    let reconnect = catch_up.saturating_sub(shipping);
    let rss = central.peak_rss_mb();
    stop.cancel();

    let runs = b.sites * b.hosts_per_site;
    Ok(json!({
        "bench": "sites",
        "sites": b.sites,
        "hosts_per_site": b.hosts_per_site,
        "runs": runs,
        "events": total_events,
        "agents_durability": format!("{:?}", b.durability).to_lowercase(),
        "executed_s": round(executed.as_secs_f64(), 2),
        "workflows_per_s": round(runs as f64 / executed.as_secs_f64(), 1),
        "replicated_s": round(replicated.as_secs_f64(), 2),
        "events_applied_per_s": round(total_events as f64 / replicated.as_secs_f64(), 1),
        "lag_p50_s": round(percentile(&lag, 0.50), 3),
        "lag_p99_s": round(percentile(&lag, 0.99), 3),
        "lag_max_s": round(percentile(&lag, 1.0), 3),
        "lag_samples": lag.len(),
        "central_peak_rss_mb": rss.map(|r| round(r, 1)),
        "catch_up": {
            "site": first.site,
            "events": backlog,
            "seconds": round(catch_up.as_secs_f64(), 3),
            "reconnect_s": round(reconnect.as_secs_f64(), 3),
            "shipping_s": round(shipping.as_secs_f64(), 3),
            "events_per_s": round((target - shipped_from) as f64 / shipping.as_secs_f64(), 1),
        },
        "events_lost": (total_events - applied_total.load(Ordering::SeqCst) as i64).max(0),
        "targets": {"lag_p99_s": 5, "catch_up_events_per_s": 50000, "events_lost": 0},
    }))
}
