//! `lariat server`: the engine on an embedded SQLite file and the REST API in front of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lariat_engine::{Actions, Durability, Engine, EngineConfig};

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// SQLite database file (created if missing).
    #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
    pub db: PathBuf,
    /// Address for the REST API.
    #[arg(long, default_value = "127.0.0.1:7300", env = "LARIAT_LISTEN")]
    pub listen: SocketAddr,
    /// This executor's id in the event log (kept in the database after the first start).
    #[arg(long, default_value = "central")]
    pub executor_id: String,
    /// full: fsync every commit (survives power loss); normal: survives a crash only.
    #[arg(long, default_value = "full")]
    pub durability: Durability,
    /// Step attempts executing at once, across all runs.
    #[arg(long, default_value_t = 512)]
    pub max_running: usize,
    /// Restarts in a row that may interrupt one step before it fails.
    #[arg(long, default_value_t = 20)]
    pub max_interruptions: u32,
    /// Serve the API without authentication. For development on a laptop only.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut actions = Actions::new();
    lariat_steps::register_builtin(&mut actions);
    let mut cfg = EngineConfig::new(&args.db);
    cfg.executor_id = args.executor_id.clone();
    cfg.store.durability = args.durability;
    cfg.max_running = args.max_running;
    cfg.max_interruptions = args.max_interruptions;
    let engine = Engine::start(cfg, actions)
        .await
        .context("cannot start the engine")?;
    let r = engine.resume_report();
    tracing::info!(
        db = %args.db.display(),
        executor = engine.owner(),
        resumed_runs = r.runs,
        interrupted = r.interrupted,
        timers = r.timers,
        resume_ms = format!("{:.1}", r.elapsed_ms),
        "engine started"
    );
    for b in lariat_workflows::LIBRARY {
        engine
            .register_workflow(b.yaml, lariat_engine::Format::Yaml)
            .await
            .with_context(|| format!("cannot register built-in workflow {}", b.name))?;
    }
    let auth = if args.insecure_no_auth {
        tracing::warn!(
            "!!! --insecure-no-auth: the API accepts every request without a token. Never use this outside a development machine. !!!"
        );
        lariat_api::Auth::InsecureNoAuth
    } else {
        lariat_api::Auth::Tokens
    };
    let api_cfg = lariat_api::ApiConfig {
        auth,
        ..Default::default()
    };
    // Open event streams never end by themselves; graceful shutdown must end them.
    let end_streams = api_cfg.shutdown.clone();
    let app = lariat_api::router(engine.clone(), api_cfg).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let stop_engine = engine.clone();
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            reason = stop_engine.stopped_reason() => {
                tracing::error!("engine stopped: {}", reason.as_deref().unwrap_or("unknown reason"));
            }
        }
        end_streams.cancel();
    })
    .await;
    let failure = engine.failure();
    engine.shutdown().await;
    served.context("the HTTP server failed")?;
    match failure {
        Some(f) => anyhow::bail!("engine stopped: {f}"),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
