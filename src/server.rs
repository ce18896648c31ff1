//! `lariat server`: the engine on an embedded SQLite file and the REST API in front of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lariat_db::{Db, DbOptions};
use lariat_engine::{Actions, Durability, Engine, EngineConfig};
use lariat_source::{DesignSource, SourceConfig, Trigger};

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
    #[command(flatten)]
    pub design: DesignArgs,
    #[command(flatten)]
    pub boot: BootArgs,
    #[command(flatten)]
    pub site: crate::site::SiteArgs,
}

/// Single-site boot services run by this process.
#[derive(Args, Debug, Clone)]
pub struct BootArgs {
    /// Serve HTTP boot on the API's listener: iPXE scripts (`/boot/ipxe?mac=`), boot
    /// assets, unattended files, node metadata and the node callback (`/v1/state`).
    #[arg(long)]
    pub http_boot: bool,
    /// This server's URL as booting nodes reach it (put in iPXE scripts and callback URLs);
    /// the listener's address when absent.
    #[arg(long, env = "LARIAT_BOOT_URL")]
    pub boot_url: Option<String>,
    /// Staged boot assets, served under /boot/assets/; `<db>.assets` when absent.
    /// The `stage_assets` step downloads into it.
    #[arg(long)]
    pub boot_assets: Option<PathBuf>,
    /// Where `stage_assets` downloads a boot profile's assets from when they give no URL
    /// of their own: `<origin>/<asset path>`.
    #[arg(long, env = "LARIAT_ASSET_ORIGIN")]
    pub asset_origin: Option<String>,
    /// BMC operations (IPMI sessions, ipmitool processes, Redfish requests) in flight at
    /// once, across all hosts; one at a time per BMC whatever this says.
    #[arg(long, default_value_t = 64)]
    pub bmc_max_in_flight: usize,
}

impl BootArgs {
    /// The asset cache folder: `--boot-assets`, or `<db>.assets`.
    fn assets(&self, db: &Path) -> PathBuf {
        self.boot_assets.clone().unwrap_or_else(|| {
            let mut m = db.as_os_str().to_owned();
            m.push(".assets");
            PathBuf::from(m)
        })
    }
}

/// Where the design comes from.
#[derive(Args, Debug, Clone)]
pub struct DesignArgs {
    /// Git repository holding the design: a URL (https://, file://) or a local path.
    #[arg(long, env = "LARIAT_DESIGN_REPO")]
    pub design_repo: Option<String>,
    /// Branch of the design repository to follow.
    #[arg(long, default_value = "main", env = "LARIAT_DESIGN_BRANCH")]
    pub design_branch: String,
    /// Fetch the design branch this often (e.g. 60s); without it, only the webhook and
    /// `POST /v1/designs/sync` fetch.
    #[arg(long, value_parser = humantime::parse_duration, env = "LARIAT_DESIGN_POLL")]
    pub design_poll: Option<Duration>,
    /// File holding the shared secret of the push webhook (`POST /v1/hooks/git`).
    #[arg(long, env = "LARIAT_DESIGN_WEBHOOK_SECRET_FILE")]
    pub design_webhook_secret_file: Option<PathBuf>,
    /// Bare mirror the design is fetched into; `<db>.design.git` when absent.
    #[arg(long)]
    pub design_mirror: Option<PathBuf>,
}

impl DesignArgs {
    fn config(&self, db: &Path) -> anyhow::Result<Option<SourceConfig>> {
        let Some(repo) = &self.design_repo else {
            if self.design_poll.is_some() || self.design_webhook_secret_file.is_some() {
                anyhow::bail!("--design-poll and --design-webhook-secret-file need --design-repo");
            }
            return Ok(None);
        };
        let webhook_secret = match &self.design_webhook_secret_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the webhook secret file {}", p.display())
                })?;
                let secret = text.trim_end_matches(['\n', '\r']);
                if secret.len() < 16 {
                    anyhow::bail!(
                        "the webhook secret in {} is {} characters; use at least 16",
                        p.display(),
                        secret.len()
                    );
                }
                Some(secret.as_bytes().to_vec())
            }
        };
        if self.design_poll.is_some_and(|d| d < Duration::from_secs(1)) {
            anyhow::bail!("--design-poll must be at least 1s");
        }
        let mirror = self.design_mirror.clone().unwrap_or_else(|| {
            let mut m = db.as_os_str().to_owned();
            m.push(".design.git");
            PathBuf::from(m)
        });
        Ok(Some(SourceConfig {
            repo: repo.clone(),
            branch: self.design_branch.clone(),
            mirror,
            poll: self.design_poll,
            webhook_secret,
            fetch_timeout: Duration::from_secs(120),
        }))
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let design_cfg = args.design.config(&args.db)?;
    if args.boot.bmc_max_in_flight == 0 {
        anyhow::bail!("--bmc-max-in-flight must be at least 1");
    }
    let mut actions = Actions::new();
    lariat_steps::register_builtin(&mut actions);
    // The design source needs the engine's store, and the engine may resume runs (and
    // dispatch their steps) as it starts: the actions wait for the source instead.
    let (design_tx, design_rx) = tokio::sync::watch::channel(None);
    let mut provisioning =
        lariat_steps::Provisioning::new(std::sync::Arc::new(SourceView(design_rx)))
            .with_connector(lariat_bmc::Connector::new(args.boot.bmc_max_in_flight));
    if args.boot.http_boot {
        provisioning = provisioning.with_asset_cache(args.boot.assets(&args.db));
    }
    if let Some(origin) = &args.boot.asset_origin {
        provisioning = provisioning.with_asset_origin(origin.clone());
    }
    std::sync::Arc::new(provisioning).register(&mut actions);
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
        let (text, format) = b
            .definition()
            .with_context(|| format!("built-in workflow {}", b.name))?;
        engine
            .register_workflow(&text, format)
            .await
            .with_context(|| format!("cannot register built-in workflow {}", b.name))?;
    }
    // The other crates' tables, beside the engine's, on a handle of their own.
    let tables = Db::open(DbOptions {
        durability: args.durability,
        ..DbOptions::shared(&args.db)
    })
    .await
    .context("cannot open the database for the API and design tables")?;
    let tokens = lariat_api::TokenStore::open(tables.clone())
        .await
        .context("cannot open the API tokens")?;
    let design = match design_cfg {
        None => DesignSource::unconfigured(tables.clone())
            .await
            .context("cannot open the design records")?,
        Some(c) => {
            let d = DesignSource::open(tables.clone(), c.clone())
                .await
                .with_context(|| format!("cannot open the design mirror {}", c.mirror.display()))?;
            // An unreachable repository at start is not fatal: the last active design stays
            // in force, and the next poll or webhook tries again.
            match d.sync(Trigger::Startup).await {
                Ok(r) => tracing::info!(commit = %r.commit, status = ?r.status, "design fetched"),
                Err(e) => tracing::warn!("design fetch at start failed: {e}"),
            }
            d
        }
    };
    let _ = design_tx.send(Some(design.clone()));
    let stop_poller = lariat_api::CancellationToken::new();
    let poller = design.spawn_poller(stop_poller.clone());
    tokio::spawn(register_design_templates(
        engine.clone(),
        design.subscribe(),
    ));
    let auth = if args.insecure_no_auth {
        tracing::warn!(
            "!!! --insecure-no-auth: the API accepts every request without a token. Never use this outside a development machine. !!!"
        );
        lariat_api::Auth::InsecureNoAuth
    } else {
        lariat_api::Auth::Tokens
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let boot = if args.boot.http_boot {
        let assets = args.boot.assets(&args.db);
        std::fs::create_dir_all(&assets).with_context(|| {
            format!("cannot create the boot assets folder {}", assets.display())
        })?;
        let base_url = args
            .boot
            .boot_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        tracing::info!(%base_url, assets = %assets.display(), "HTTP boot on");
        let tokens = lariat_api::NodeTokens::open(tables.clone())
            .await
            .context("cannot open the node tokens")?;
        Some(lariat_api::BootHttp {
            base_url,
            assets,
            tokens,
        })
    } else {
        None
    };
    // iPXE chains to this server's script; without HTTP boot there is none to give.
    let script_url = boot
        .as_ref()
        .map(|b| format!("{}/boot/ipxe?mac=${{net0/mac}}", b.base_url));
    if args.site.dhcp && script_url.is_none() {
        tracing::warn!("--dhcp without --http-boot: iPXE clients get no script URL");
    }
    let site = crate::site::Site::start(&args.site, &args.db, &design, script_url).await?;
    let api_cfg = lariat_api::ApiConfig {
        auth,
        boot,
        ..Default::default()
    };
    // Open event streams never end by themselves; graceful shutdown must end them.
    let end_streams = api_cfg.shutdown.clone();
    let app = lariat_api::router(engine.clone(), design, tokens, api_cfg).await?;
    tracing::info!("listening on http://{local}");
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
    site.shutdown().await;
    stop_poller.cancel();
    if let Some(p) = poller {
        let _ = p.await;
    }
    let failure = engine.failure();
    engine.shutdown().await;
    tables.close().await;
    served.context("the HTTP server failed")?;
    match failure {
        Some(f) => anyhow::bail!("engine stopped: {f}"),
        None => Ok(()),
    }
}

/// The design the step actions see: the source's active design, once the source is open.
struct SourceView(tokio::sync::watch::Receiver<Option<DesignSource>>);

impl SourceView {
    async fn source(&self) -> Option<DesignSource> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(s) => s.clone(),
            Err(_) => None,
        }
    }
}

#[async_trait::async_trait]
impl lariat_steps::DesignView for SourceView {
    async fn for_host(&self, host: &str) -> Result<lariat_steps::CurrentDesign, String> {
        let Some(source) = self.source().await else {
            return Ok(self.current().await);
        };
        let site = source
            .design_for_host(host)
            .await
            .map_err(|e| format!("the design of its site cannot be loaded: {e}"))?;
        Ok(match site.pin {
            Some(pin) => lariat_steps::CurrentDesign {
                revision: Some(format!("{} (site {} pinned)", pin.rev, pin.site)),
                loaded: site.loaded,
            },
            None => self.current().await,
        })
    }

    async fn current(&self) -> lariat_steps::CurrentDesign {
        match self.source().await {
            Some(d) => {
                let active = d.active();
                lariat_steps::CurrentDesign {
                    revision: active.revision.as_ref().map(|r| r.commit.clone()),
                    loaded: active.loaded.clone(),
                }
            }
            // The server is shutting down before its design was open.
            None => lariat_steps::CurrentDesign {
                revision: None,
                loaded: std::sync::Arc::new(lariat_workflows::design::load_files(&[])),
            },
        }
    }
}

/// Registers the workflow templates of every design that becomes active. A template named
/// like a built-in becomes that workflow's latest version.
async fn register_design_templates(
    engine: Engine,
    mut designs: tokio::sync::watch::Receiver<std::sync::Arc<lariat_source::ActiveDesign>>,
) {
    loop {
        let active = designs.borrow_and_update().clone();
        for t in active.loaded.design.templates() {
            let doc = lariat_workflows::template::TemplateDoc {
                kind: "WorkflowTemplate".into(),
                name: t.name.clone(),
                spec: t.spec.clone(),
            };
            match engine
                .register_workflow(&doc.definition_json(), lariat_engine::Format::Json)
                .await
            {
                Ok(r) if r.created => {
                    tracing::info!(workflow = %r.name, version = r.version, "workflow template of the design registered")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("workflow template {} of the design: {e}", t.name),
            }
        }
        if designs.changed().await.is_err() {
            return;
        }
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
