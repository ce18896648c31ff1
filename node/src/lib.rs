//! A Lariat process assembled from roles ([`roles`]): what `lariat server` runs, and
//! where `lariat agent` (planned: the site role and a link to the centre) will be put
//! together. The binary parses arguments into these configurations and dispatches.

mod error;
pub mod roles;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use lariat_db::{Db, DbOptions, Durability};
use lariat_engine::{Engine, EngineConfig};

pub use error::ProcessError;
pub use lariat_central::LocalSites;
pub use roles::central::{CentralConfig, CentralRole};
pub use roles::site::{RunningSite, SiteConfig, SiteRole};

/// `lariat server`: the central role and the site role for one site, in one process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The SQLite database file (created if missing).
    pub db: PathBuf,
    /// Address of the REST API (and of HTTP boot, when on).
    pub listen: SocketAddr,
    /// This executor's id in the event log (kept in the database after the first start).
    pub executor_id: String,
    pub durability: Durability,
    /// Step attempts executing at once, across all runs.
    pub max_running: usize,
    /// Restarts in a row that may interrupt one step before it fails.
    pub max_interruptions: u32,
    pub central: CentralConfig,
    pub site: SiteConfig,
}

/// Runs a server until `shutdown` resolves or its engine stops; then stops every role in
/// turn. Attempts still running are recorded as interrupted at the next start.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let site = SiteRole::new(cfg.site.clone())?;
    let mut ec = EngineConfig::new(&cfg.db);
    ec.executor_id = cfg.executor_id.clone();
    ec.store.durability = cfg.durability;
    ec.max_running = cfg.max_running;
    ec.max_interruptions = cfg.max_interruptions;
    let engine = Engine::start_with_windows(ec, site.actions(), site.window_gate())
        .await
        .map_err(ProcessError::Engine)?;
    let r = engine.resume_report();
    tracing::info!(
        db = %cfg.db.display(),
        executor = engine.owner(),
        resumed_runs = r.runs,
        interrupted = r.interrupted,
        timers = r.timers,
        resume_ms = format!("{:.1}", r.elapsed_ms),
        "engine started"
    );
    // The other crates' tables, beside the engine's, on a handle of their own.
    let tables = Db::open(DbOptions {
        durability: cfg.durability,
        ..DbOptions::shared(&cfg.db)
    })
    .await
    .map_err(ProcessError::Tables)?;
    if cfg.central.auth == lariat_api::Auth::InsecureNoAuth {
        tracing::warn!(
            "!!! --insecure-no-auth: the API accepts every request without a token. Never use this outside a development machine. !!!"
        );
    }
    let central = CentralRole::start(&cfg.central, engine.clone(), tables.clone()).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ProcessError::Listen(cfg.listen, e))?;
    let local = listener.local_addr().map_err(ProcessError::Serve)?;
    let mut site = site
        .start(engine.clone(), central.site_design(), &tables, local)
        .await?;
    let app = central.router(site.take_routes()).await?;
    tracing::info!("listening on http://{local}");

    // Open event streams never end by themselves; graceful shutdown must end them.
    let end_streams = central.stream_stop();
    let stop_engine = engine.clone();
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down"),
            reason = stop_engine.stopped_reason() => {
                tracing::error!("engine stopped: {}", reason.as_deref().unwrap_or("unknown reason"));
            }
        }
        end_streams.cancel();
    })
    .await;
    site.shutdown().await;
    central.shutdown().await;
    let failure = engine.failure();
    engine.shutdown().await;
    tables.close().await;
    served.map_err(ProcessError::Serve)?;
    match failure {
        Some(f) => Err(ProcessError::Stopped(f)),
        None => Ok(()),
    }
}
