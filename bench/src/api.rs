//! `lariat-bench api`: REST read and submit rates while the engine is busy, measured
//! through the typed client an operator's tools use.
//!
//! Starts `lariat server` (the `lariat` binary beside this one, or `--lariat`) as a child
//! process on a fresh database with an operator token,
//! keeps `--inflight` provision-noop runs in flight (each waits at `await_callback`; a
//! driver signals `--churn` of them per second over the API and submits a replacement for
//! each, so the engine keeps executing steps and committing), then measures, one phase
//! after the other with `--concurrency` clients for `--seconds` each:
//! - reads: `GET /v1/runs/{id}` of random in-flight runs (the share served from the
//!   server's run-detail cache is reported as `reads_cache_hit_ratio`);
//! - submits: `POST /v1/runs` of provision-noop (each new run executes its first five steps).
//!
//! Prints one JSON object. Figures are reported, never asserted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use lariat_client::types::{SignalStep, SubmitRun};
use lariat_client::{Client, ClientError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::work::{ServerChild, WorkDir, cli_token, lariat_binary, round};

#[derive(Args, Debug, Clone)]
pub struct ApiBench {
    /// Workflows kept in flight on the server while measuring.
    #[arg(long, default_value_t = 1000)]
    pub inflight: usize,
    /// In-flight runs completed (signalled) and replaced per second in the background.
    #[arg(long, default_value_t = 100)]
    pub churn: u32,
    /// Concurrent HTTP clients in each measured phase.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The server's commit durability: full (fsync each commit) or normal.
    #[arg(long, default_value = "full")]
    pub durability: String,
    /// Folder for the bench database (a temporary one, removed afterwards, by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `lariat` binary to start as the server; the one beside this binary by default.
    #[arg(long, env = "LARIAT_BIN")]
    pub lariat: Option<PathBuf>,
}

/// Latencies of one phase, in microseconds.
#[derive(Default)]
struct Sample {
    lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn summary(name: &str, mut s: Sample, elapsed: Duration) -> Value {
    s.lat_us.sort_unstable();
    let n = s.lat_us.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let i = ((n - 1) as f64 * p).round() as usize;
        round(s.lat_us[i] as f64 / 1000.0, 2)
    };
    if let Some(e) = &s.first_error {
        eprintln!("{name}: {} errors; first: {e}", s.errors);
    }
    json!({
        "requests": n,
        "errors": s.errors,
        "per_s": round(n as f64 / elapsed.as_secs_f64(), 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    })
}

/// The requests the benchmark makes, through the typed client.
struct Api {
    client: Client,
}

fn noop_run() -> SubmitRun {
    SubmitRun {
        workflow: "provision-noop".into(),
        ..Default::default()
    }
}

impl Api {
    /// The server's run-detail cache counters: (hits, misses).
    async fn cache_counts(&self) -> (f64, f64) {
        let Ok(text) = self.client.metrics().await else {
            return (0.0, 0.0);
        };
        let count = |result: &str| {
            let prefix = format!("lariat_api_run_cache_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (count("hit"), count("miss"))
    }

    async fn submit(&self) -> anyhow::Result<Uuid> {
        let sub = self.client.submit(&noop_run()).await?;
        if !sub.created {
            bail!(
                "submit found an earlier run {} instead of starting one",
                sub.run.id
            );
        }
        Ok(sub.run.id)
    }

    /// Signal a run's `await_callback`; false while the step is not waiting yet.
    async fn signal(&self, id: Uuid) -> anyhow::Result<bool> {
        let req = SignalStep {
            payload: json!({"bench": true}),
            item: None,
        };
        match self.client.signal(id, "await_callback", &req).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api { status: 409, .. }) => Ok(false),
            Err(e) => bail!("signal: {e}"),
        }
    }
}

/// Keep `inflight` runs going: every tick, signal the oldest waiting run and submit a
/// replacement. Returns the runs completed.
async fn churn(
    api: Arc<Api>,
    runs: Arc<Mutex<std::collections::VecDeque<Uuid>>>,
    per_s: u32,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    if per_s == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let Some(id) = runs.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
            continue;
        };
        let (api, runs, done) = (api.clone(), runs.clone(), done.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match api.signal(id).await {
                Ok(true) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Ok(new) = api.submit().await {
                        runs.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back(new);
                    }
                }
                // Not waiting yet: back of the queue.
                Ok(false) | Err(_) => runs.lock().unwrap_or_else(|e| e.into_inner()).push_back(id),
            }
        });
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Reads,
    Submits,
}

async fn measure(
    api: Arc<Api>,
    ids: Arc<Vec<Uuid>>,
    phase: Phase,
    concurrency: usize,
    length: Duration,
) -> (Sample, Duration) {
    let started = Instant::now();
    let deadline = started + length;
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let (api, ids) = (api.clone(), ids.clone());
        workers.push(tokio::spawn(async move {
            let mut s = Sample::default();
            // xorshift: a uniform pick of run ids without a dependency.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15
                ^ ((w as u64 + 1) << 17)
                ^ started.elapsed().as_nanos() as u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = match phase {
                    Phase::Reads => {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % ids.len() as u64) as usize;
                        // The body is not decoded: the figure is the server's, and
                        // decoding here would take CPU from it.
                        api.client.run_body(ids[i]).await.map(|_| ())
                    }
                    Phase::Submits => api.client.submit(&noop_run()).await.map(|_| ()),
                };
                let ok = match res {
                    Ok(()) => true,
                    Err(e) => {
                        if s.first_error.is_none() {
                            s.first_error = Some(e.to_string());
                        }
                        false
                    }
                };
                if ok {
                    s.lat_us
                        .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    s.errors += 1;
                }
            }
            s
        }));
    }
    let mut all = Sample::default();
    for w in workers {
        if let Ok(s) = w.await {
            all.lat_us.extend(s.lat_us);
            all.errors += s.errors;
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
    }
    (all, started.elapsed())
}

pub async fn run(b: ApiBench) -> anyhow::Result<()> {
    let work = WorkDir::new(b.dir.as_deref(), "lariat-bench-api")?;
    let result = bench(&b, work.path()).await;
    drop(work);
    let out = result?;
    println!("{out}");
    Ok(())
}

async fn bench(b: &ApiBench, dir: &std::path::Path) -> anyhow::Result<Value> {
    let exe = lariat_binary(b.lariat.as_deref())?;
    let db = dir.join("bench-api.db");
    let token = cli_token(
        &exe,
        &db,
        &[
            "token", "create", "--json", "--role", "operator", "--name", "bench",
        ],
    )
    .await?;
    let server = ServerChild::start(
        &exe,
        &[
            "--durability".as_ref(),
            b.durability.as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(b.concurrency.max(16) * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = Arc::new(Api {
        client: Client::with_http(&server.base, Some(token), http)?,
    });

    eprintln!("starting {} runs in flight", b.inflight);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(b.inflight);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut next = 0;
    use futures::StreamExt as _;
    while ids.len() < b.inflight {
        while next < b.inflight && pending.len() < 32 {
            let api = api.clone();
            pending.push(async move { api.submit().await });
            next += 1;
        }
        match pending.next().await {
            Some(Ok(id)) => ids.push(id),
            Some(Err(e)) => {
                bail!(
                    "cannot start the in-flight runs: {e:#}\nserver log:\n{}",
                    server
                        .log
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .join("\n")
                )
            }
            None => break,
        }
    }
    let setup_s = started.elapsed().as_secs_f64();

    let queue = Arc::new(Mutex::new(ids.iter().cloned().collect()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(churn(
        api.clone(),
        queue,
        b.churn,
        done.clone(),
        stop.clone(),
    ));
    let ids = Arc::new(ids);
    let length = Duration::from_secs(b.seconds.max(1));

    eprintln!("warming up");
    let _ = measure(
        api.clone(),
        ids.clone(),
        Phase::Reads,
        b.concurrency,
        Duration::from_secs(1),
    )
    .await;

    let churn_start = (Instant::now(), done.load(Ordering::Relaxed));
    eprintln!("reads: {} clients for {}s", b.concurrency, b.seconds);
    let cache_before = api.cache_counts().await;
    let (reads, reads_t) = measure(
        api.clone(),
        ids.clone(),
        Phase::Reads,
        b.concurrency,
        length,
    )
    .await;
    let cache_after = api.cache_counts().await;
    let (hits, misses) = (
        cache_after.0 - cache_before.0,
        cache_after.1 - cache_before.1,
    );
    eprintln!("submits: {} clients for {}s", b.concurrency, b.seconds);
    let (submits, submits_t) = measure(
        api.clone(),
        ids.clone(),
        Phase::Submits,
        b.concurrency,
        length,
    )
    .await;
    let churned = done.load(Ordering::Relaxed) - churn_start.1;
    let churn_rate = churned as f64 / churn_start.0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = driver.await;
    let rss = server.peak_rss_mb();

    Ok(json!({
        "bench": "api",
        "inflight_runs": b.inflight,
        "setup_s": round(setup_s, 2),
        "churn_per_s": {"target": b.churn, "achieved": round(churn_rate, 1)},
        "concurrency": b.concurrency,
        "seconds_per_phase": b.seconds,
        "durability": b.durability,
        "reads": summary("reads", reads, reads_t),
        "reads_cache_hit_ratio": if hits + misses > 0.0 { round(hits / (hits + misses), 4) } else { 0.0 },
        "submits": summary("submits", submits, submits_t),
        "server_peak_rss_mb": rss.map(|r| round(r, 1)),
        "targets": {"reads_per_s": 5000, "submits_per_s": 1000, "p99_ms": 50},
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_listening_url_in_a_colored_log_line() {
        let line = "\u{1b}[2m2026\u{1b}[0m INFO lariat::server: listening on http://127.0.0.1:41234\u{1b}[0m";
        assert_eq!(
            crate::work::listening_url(line).as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(crate::work::listening_url("starting"), None);
    }
}
