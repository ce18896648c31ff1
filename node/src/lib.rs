//! A Lariat process assembled from roles ([`roles`]): what `lariat server` and
//! `lariat agent` run. The binary parses arguments into these configurations and
//! dispatches.

mod error;
pub mod roles;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use lariat_api::{ApiConfig, AuditLog, Auth, CancellationToken, TokenStore};
use lariat_db::{Db, DbOptions, Durability, Tables};
use lariat_engine::store::StoreOptions;
use lariat_engine::{Actions, Engine, EngineConfig, Scheduling};
use lariat_source::DesignSource;

pub use error::ProcessError;
pub use lariat_central::LocalSites;
pub use lariat_link::LinkConfig;
pub use roles::central::{CentralConfig, CentralRole};
pub use roles::link::{LinkRole, LinkSettings};
pub use roles::site::{RunningSite, SiteConfig, SiteRole};
pub use tls::TlsFiles;

/// What every executor process runs: its engine on its database.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The SQLite database file (created if missing); for a server, a PostgreSQL URL
    /// (`postgres://...`) instead.
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
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The clock the engine and the windows run by: the system's, but for drills.
    pub clock: lariat_db::Clock,
    /// The web UI's sessions.
    pub ui: lariat_ui::UiConfig,
}

/// `lariat server`: the central role and the site role for one site, in one process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub executor: ExecutorConfig,
    pub central: CentralConfig,
    pub site: SiteConfig,
}

/// `lariat agent`: the site role, the link to the centre, and a local API.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub executor: ExecutorConfig,
    /// The local API's authentication (its own tokens, in the agent's database).
    pub auth: Auth,
    pub link: LinkSettings,
    pub site: SiteConfig,
}

/// Runs a server until `shutdown` resolves or its engine stops; then stops every role in
/// turn. Attempts still running are recorded as interrupted at the next start.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let tls = tls_config(&cfg.executor, &cfg.site)?;
    let site = SiteRole::new(cfg.site.clone())?;
    check_schema(&cfg.executor).await?;
    let engine = start_engine(&cfg.executor, site.actions(), site.scheduling()).await?;
    let tables = open_central_tables(&cfg.executor).await?;
    if cfg.central.auth == Auth::InsecureNoAuth {
        warn_no_auth();
    }
    let central = CentralRole::start(&cfg.central, engine.clone(), tables.clone()).await?;
    let listener = bind(cfg.executor.listen).await?;
    let local = listener.local_addr().map_err(ProcessError::Serve)?;
    let mut site = site
        .start(
            engine.clone(),
            central.site_design(),
            central.overrides(),
            &tables,
            local,
        )
        .await?;
    if let Some(count) = site.lease_count() {
        central.serve_leases(count);
    }
    let audit = AuditLog::group_committed(tables.clone());
    let api = central.router(site.take_routes(), audit.clone()).await?;
    let app = lariat_ui::mount(api, cfg.executor.ui.clone());
    let served = serve_http(listener, app, tls, &engine, central.stream_stop(), shutdown).await;
    site.shutdown().await;
    central.shutdown().await;
    stop(engine, tables, audit, served).await
}

/// Runs a site agent until `shutdown` resolves or its engine stops. It works on its own
/// with the link down, and catches up when the link returns.
pub async fn serve_agent(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let tls = tls_config(&cfg.executor, &cfg.site)?;
    let site = SiteRole::new(cfg.site.clone())?;
    if lariat_db::is_postgres_url(&db_arg(&cfg.executor)) {
        return Err(ProcessError::AgentOnPostgres);
    }
    check_schema(&cfg.executor).await?;
    let engine = start_engine(&cfg.executor, site.actions(), site.scheduling()).await?;
    let tables = open_tables(&cfg.executor).await?;
    if cfg.auth == Auth::InsecureNoAuth {
        warn_no_auth();
    }
    let design = LinkRole::design(&tables).await?;
    let overrides = LinkRole::overrides(&tables).await?;
    let tokens = TokenStore::open(tables.clone())
        .await
        .map_err(ProcessError::Tokens)?;
    // The agent's API answers for its runs and its site's hosts; the design's revisions
    // and pins live at the centre.
    let records = DesignSource::unconfigured(tables.clone())
        .await
        .map_err(ProcessError::DesignRecords)?;
    tokio::spawn(show_kept_design(design.clone(), records.clone()));
    let listener = bind(cfg.executor.listen).await?;
    let local = listener.local_addr().map_err(ProcessError::Serve)?;
    let mut site = site
        .start(
            engine.clone(),
            Arc::new(design.clone()),
            overrides.feed(),
            &Tables::from(tables.clone()),
            local,
        )
        .await?;
    let feed = overrides.feed();
    let link = LinkRole::start(
        &cfg.link,
        engine.clone(),
        design,
        overrides,
        tables.clone(),
        site.lease_count(),
    )
    .await?;
    let end_streams = CancellationToken::new();
    let audit = AuditLog::group_committed(tables.clone());
    let api = ApiConfig {
        auth: cfg.auth,
        shutdown: end_streams.clone(),
        extra: site.take_routes(),
        overrides: Some(feed),
        audit: Some(audit.clone()),
        ..Default::default()
    };
    let api = lariat_api::router(engine.clone(), records, tokens, None, api).await?;
    let ui = lariat_ui::UiConfig {
        site_agent: true,
        ..cfg.executor.ui.clone()
    };
    let app = lariat_ui::mount(api, ui);
    let served = serve_http(listener, app, tls, &engine, end_streams, shutdown).await;
    link.shutdown().await;
    site.shutdown().await;
    stop(engine, tables, audit, served).await
}

/// Shows the agent's kept design in its API, as it changes.
async fn show_kept_design(kept: lariat_link::StoredDesign, records: DesignSource) {
    use lariat_site::SiteDesign;
    let mut changes = kept.subscribe();
    loop {
        let d = changes.borrow_and_update().clone();
        records.show(d.revision.as_deref(), d.loaded.clone());
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The listener's TLS, read before anything else starts, so that a TLS file that cannot
/// be used stops the start at once.
fn tls_config(
    cfg: &ExecutorConfig,
    site: &SiteConfig,
) -> Result<Option<(TlsFiles, Arc<rustls::ServerConfig>)>, ProcessError> {
    if cfg.tls.is_some() && site.http_boot && site.boot_listen.is_none() {
        return Err(ProcessError::BootOverTls);
    }
    let Some(files) = &cfg.tls else {
        return Ok(None);
    };
    Ok(Some((files.clone(), tls::server_config(files)?)))
}

async fn start_engine(
    cfg: &ExecutorConfig,
    actions: Actions,
    scheduling: Scheduling,
) -> Result<Engine, ProcessError> {
    let mut ec = EngineConfig::at(StoreOptions::from_arg(&db_arg(cfg)));
    ec.executor_id = cfg.executor_id.clone();
    if let Some(o) = ec.store.sqlite_mut() {
        o.durability = cfg.durability;
    }
    ec.max_running = cfg.max_running;
    ec.max_interruptions = cfg.max_interruptions;
    ec.clock = cfg.clock;
    if cfg.clock.is_shifted() {
        tracing::warn!(
            now = cfg.clock.now_ms(),
            "the engine runs by a shifted clock (--clock-start): for drills only"
        );
    }
    let engine = Engine::start_with(ec, actions, scheduling)
        .await
        .map_err(ProcessError::Engine)?;
    let r = engine.resume_report();
    tracing::info!(
        db = %lariat_db::pg::redact(&db_arg(cfg)),
        executor = engine.owner(),
        resumed_runs = r.runs,
        interrupted = r.interrupted,
        timers = r.timers,
        resume_ms = format!("{:.1}", r.elapsed_ms),
        "engine started"
    );
    Ok(engine)
}

/// The newest migration of any crate in this binary. Versions are numbered across
/// crates, so a database past it was migrated by a newer Lariat.
pub fn newest_known_migration() -> i64 {
    newest(&[
        &lariat_engine::store::MIGRATIONS,
        &lariat_api::tokens::MIGRATIONS,
        &lariat_central::MIGRATIONS,
        &lariat_link::MIGRATIONS,
        &lariat_site::MIGRATIONS,
        &lariat_source::MIGRATIONS,
    ])
}

/// The newest PostgreSQL migration of any crate in this binary (agents, and so the
/// link's tables, have none).
pub fn newest_known_postgres_migration() -> i64 {
    newest(&[
        &lariat_engine::store::POSTGRES_MIGRATIONS,
        &lariat_api::tokens::POSTGRES_MIGRATIONS,
        &lariat_central::POSTGRES_MIGRATIONS,
        &lariat_site::POSTGRES_MIGRATIONS,
        &lariat_source::POSTGRES_MIGRATIONS,
    ])
}

fn newest(crates: &[&lariat_db::Migrator]) -> i64 {
    crates
        .iter()
        .flat_map(|m| m.iter())
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// `--db` as given: a path, or a PostgreSQL URL.
fn db_arg(cfg: &ExecutorConfig) -> String {
    cfg.db.to_string_lossy().into_owned()
}

/// Refuse, before anything migrates it, a database a newer Lariat has written.
async fn check_schema(cfg: &ExecutorConfig) -> Result<(), ProcessError> {
    let db = db_arg(cfg);
    if lariat_db::is_postgres_url(&db) {
        let tables = Tables::open(&db, cfg.durability)
            .await
            .map_err(ProcessError::Schema)?;
        let checked = tables
            .check_not_newer(newest_known_migration(), newest_known_postgres_migration())
            .await;
        tables.close().await;
        return checked.map_err(ProcessError::Schema);
    }
    // A file that does not open is the engine's to report, as it always has.
    let Ok(db) = Db::open(DbOptions::shared(Path::new(&cfg.db))).await else {
        return Ok(());
    };
    let checked = db.check_not_newer(newest_known_migration()).await;
    db.close().await;
    checked.map_err(ProcessError::Schema)
}

/// The central node's tables, beside the engine's: in the SQLite file, or in the
/// PostgreSQL database the engine uses.
async fn open_central_tables(cfg: &ExecutorConfig) -> Result<Tables, ProcessError> {
    Tables::open(&db_arg(cfg), cfg.durability)
        .await
        .map_err(ProcessError::Tables)
}

/// The other crates' tables, beside the engine's, on a handle of their own.
async fn open_tables(cfg: &ExecutorConfig) -> Result<Db, ProcessError> {
    Db::open(DbOptions {
        durability: cfg.durability,
        ..DbOptions::shared(Path::new(&cfg.db))
    })
    .await
    .map_err(ProcessError::Tables)
}

fn warn_no_auth() {
    tracing::warn!(
        "!!! --insecure-no-auth: the API accepts every request without a token. Never use this outside a development machine. !!!"
    );
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ProcessError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ProcessError::Listen(addr, e))
}

/// Serves `app`, over TLS with `tls`, until `shutdown` or the engine stops, then ends open
/// event streams.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<(TlsFiles, Arc<rustls::ServerConfig>)>,
    engine: &Engine,
    end_streams: CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let stop_engine = engine.clone();
    let stopping = async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down"),
            reason = stop_engine.stopped_reason() => {
                tracing::error!("engine stopped: {}", reason.as_deref().unwrap_or("unknown reason"));
            }
        }
        // Open event streams never end by themselves; graceful shutdown must end them.
        end_streams.cancel();
    };
    match tls {
        Some((files, first)) => {
            tracing::info!("listening on https://{local}");
            tls::serve(listener, app, tls::reloading(files, first), stopping).await
        }
        None => {
            tracing::info!("listening on http://{local}");
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopping)
            .await
        }
    }
}

async fn stop(
    engine: Engine,
    tables: impl Into<Tables>,
    audit: AuditLog,
    served: std::io::Result<()>,
) -> Result<(), ProcessError> {
    let failure = engine.failure();
    engine.shutdown().await;
    // Requests have ended: what they recorded goes in before the database closes.
    audit.flush().await;
    tables.into().close().await;
    served.map_err(ProcessError::Serve)?;
    match failure {
        Some(f) => Err(ProcessError::Stopped(f)),
        None => Ok(()),
    }
}
