//! The Prometheus recorder behind the `metrics` facade the engine records into, the
//! gauges refreshed at each scrape, and per-request HTTP metrics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use lariat_engine::{Engine, EngineError, RunStatus};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: from a fast commit to a slow step.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// Events per committed batch.
const BATCH: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 4096.0,
];

const ALL_RUN_STATUSES: [RunStatus; 8] = [
    RunStatus::Running,
    RunStatus::Paused,
    RunStatus::Failed,
    RunStatus::Succeeded,
    RunStatus::Cancelled,
    RunStatus::RollingBack,
    RunStatus::RolledBack,
    RunStatus::CompensationFailed,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder, once; later calls return the same handle. None if
/// some other recorder was installed first (then nothing is recorded for us to show).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("lariat_commit_batch_events".into()),
                        BATCH,
                    )
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe();
                    let upkeep = handle.clone();
                    // Histograms are drained by upkeep; a plain thread keeps it independent
                    // of whichever runtime first built a router.
                    let _ = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!("metrics are not recorded: {e}");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    describe_gauge!("lariat_runs", "Runs by status");
    describe_gauge!(
        "lariat_ready_queue",
        "Steps ready to start, waiting for an execution slot"
    );
    describe_gauge!("lariat_live_runs", "Runs the executor keeps in memory");
    describe_gauge!(
        "lariat_site_connected",
        "1 when the site's agent was seen recently, by site"
    );
    describe_gauge!(
        "lariat_site_pending_events",
        "Events a site's agent holds that the centre has not applied, by site"
    );
    describe_gauge!(
        "lariat_site_lag_seconds",
        "How old the centre's view of a site's runs may be, by site"
    );
    describe_gauge!(
        "lariat_site_active_runs",
        "Unfinished runs of a site, by site"
    );
    describe_gauge!(
        "lariat_site_dhcp_leases",
        "Active DHCP leases at a site, as last reported, by site"
    );
    describe_gauge!("lariat_running_attempts", "Step attempts executing now");
    describe_gauge!(
        "lariat_timers",
        "Durable timers armed (retries, wait deadlines)"
    );
    describe_histogram!(
        "lariat_step_seconds",
        Unit::Seconds,
        "Duration of step attempts, by action"
    );
    describe_histogram!(
        "lariat_commit_seconds",
        Unit::Seconds,
        "Duration of one group commit"
    );
    describe_histogram!("lariat_commit_batch_events", "Events per group commit");
    describe_counter!("lariat_events_total", "Events committed");
    describe_counter!(
        "lariat_retries_total",
        "Step attempts retried after a failure"
    );
    describe_counter!(
        "lariat_http_requests_total",
        "HTTP requests, by method, route and status"
    );
    describe_histogram!(
        "lariat_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by route"
    );
}

/// Refresh the gauges read from the engine and the store.
pub(crate) async fn update_gauges(engine: &Engine) -> Result<(), EngineError> {
    let counts = engine.store().run_counts().await?;
    for s in ALL_RUN_STATUSES {
        let n = counts.get(s.as_str()).copied().unwrap_or(0);
        gauge!("lariat_runs", "status" => s.as_str()).set(n as f64);
    }
    let stats = engine.stats().await?;
    gauge!("lariat_ready_queue").set(stats.ready_queue as f64);
    gauge!("lariat_live_runs").set(stats.live_runs as f64);
    gauge!("lariat_running_attempts").set(stats.running_attempts as f64);
    gauge!("lariat_timers").set(stats.timers as f64);
    Ok(())
}

/// The sites' health as gauges, on a central node.
pub(crate) async fn update_site_gauges(
    central: &lariat_central::Central,
) -> Result<(), lariat_central::CentralError> {
    for s in central.site_statuses().await? {
        let site = s.site.clone();
        gauge!("lariat_site_connected", "site" => site.clone())
            .set(f64::from(u8::from(s.connected)));
        gauge!("lariat_site_pending_events", "site" => site.clone()).set(s.pending_events as f64);
        gauge!("lariat_site_lag_seconds", "site" => site.clone()).set(s.lag_seconds.unwrap_or(0.0));
        gauge!("lariat_site_active_runs", "site" => site.clone()).set(s.runs_active as f64);
        if let Some(n) = s.dhcp_leases {
            gauge!("lariat_site_dhcp_leases", "site" => site).set(n as f64);
        }
    }
    Ok(())
}

/// Count and time each request by its route template (not its path, which would make a
/// series per run id).
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    counter!(
        "lariat_http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => res.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("lariat_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}
