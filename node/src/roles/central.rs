//! The central role: the workflow library and the design's templates registered on the
//! engine, the design source (fetched at start, by poll and by webhook), the API tokens,
//! and the REST API.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use lariat_api::{ApiConfig, Auth, CancellationToken, TokenStore};
use lariat_central::{Central, LocalSites, Overrides, Sites};
use lariat_db::Tables;
use lariat_engine::Engine;
use lariat_site::{CurrentDesign, SiteDesign};
use lariat_source::{ActiveDesign, DesignSource, PinnedDesign, SourceConfig, Trigger};
use tokio::sync::watch;

use crate::error::ProcessError;

/// What the central role serves.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// Where the design comes from; none: an empty design that `sync` says is unconfigured.
    pub design: Option<SourceConfig>,
    pub auth: Auth,
    /// The sites this node serves itself when no agent has registered for them.
    pub local_sites: LocalSites,
    /// Fix these drift kinds on a timer (`--reconcile-auto`); none: only when asked.
    pub reconcile: Option<lariat_api::AutoReconcile>,
    /// Read every host's power this often (`--power-poll`); none: only BMC steps do.
    pub power_poll: Option<std::time::Duration>,
}

/// The running central role.
pub struct CentralRole {
    engine: Engine,
    design: DesignSource,
    tokens: TokenStore,
    central: Central,
    auth: Auth,
    reconcile: Option<lariat_api::AutoReconcile>,
    stop_poller: CancellationToken,
    poller: Option<tokio::task::JoinHandle<()>>,
    /// Ends every open event stream, so that a graceful shutdown does not wait for them.
    end_streams: CancellationToken,
}

impl CentralRole {
    /// Registers the workflow library on `engine`, opens the design source on `tables`
    /// (restoring the active revision, then fetching: an unreachable repository at start
    /// leaves the last active design in force) and follows its templates.
    pub async fn start(
        cfg: &CentralConfig,
        engine: Engine,
        tables: Tables,
    ) -> Result<Self, ProcessError> {
        for b in lariat_workflows::LIBRARY {
            let (text, format) = b
                .definition()
                .map_err(|e| ProcessError::Library(b.name.to_string(), Box::new(e)))?;
            engine
                .register_workflow(&text, format)
                .await
                .map_err(|e| ProcessError::Library(b.name.to_string(), Box::new(e)))?;
        }
        let tokens = TokenStore::open(tables.clone())
            .await
            .map_err(ProcessError::Tokens)?;
        let design = match &cfg.design {
            None => DesignSource::unconfigured(tables.clone())
                .await
                .map_err(ProcessError::DesignRecords)?,
            Some(c) => {
                let d = DesignSource::open(tables.clone(), c.clone())
                    .await
                    .map_err(|e| ProcessError::DesignMirror(c.mirror.clone(), e))?;
                match d.sync(Trigger::Startup).await {
                    Ok(r) => {
                        tracing::info!(commit = %r.commit, status = ?r.status, "design fetched")
                    }
                    Err(e) => tracing::warn!("design fetch at start failed: {e}"),
                }
                d
            }
        };
        let sites = Sites::open(tables.clone())
            .await
            .map_err(ProcessError::Sites)?;
        let overrides = Overrides::open(tables, engine.clock())
            .await
            .map_err(ProcessError::Overrides)?;
        let central = Central::new(
            engine.clone(),
            design.clone(),
            sites,
            overrides,
            cfg.local_sites.clone(),
        );
        let stop_poller = CancellationToken::new();
        let poller = design.spawn_poller(stop_poller.clone());
        if let Some(every) = cfg.power_poll {
            central.spawn_power_poll(every, stop_poller.clone());
        }
        tokio::spawn(register_design_templates(
            engine.clone(),
            design.subscribe(),
        ));
        Ok(CentralRole {
            engine,
            design,
            tokens,
            central,
            auth: cfg.auth,
            reconcile: cfg.reconcile.clone(),
            stop_poller,
            poller,
            end_streams: CancellationToken::new(),
        })
    }

    /// The design as the site role of this process sees it: the active revision, with
    /// the site pins.
    pub fn site_design(&self) -> Arc<dyn SiteDesign> {
        SourceDesign::new(self.design.clone())
    }

    /// The operators' window overrides, for the site role's gate.
    pub fn overrides(&self) -> lariat_site::OverrideFeed {
        self.central.overrides().feed()
    }

    /// The REST API, with `extra` routes (the site's HTTP boot) under the same layers.
    pub async fn router(
        &self,
        extra: Option<lariat_api::ExtraRoutes>,
        audit: lariat_api::AuditLog,
    ) -> Result<Router, ProcessError> {
        let cfg = ApiConfig {
            auth: self.auth,
            shutdown: self.end_streams.clone(),
            extra,
            audit: Some(audit),
            reconcile: self.reconcile.clone(),
            ..Default::default()
        };
        Ok(lariat_api::router(
            self.engine.clone(),
            self.design.clone(),
            self.tokens.clone(),
            Some(self.central.clone()),
            cfg,
        )
        .await?)
    }

    /// The site role's DHCP leases, shown in the health of the site served here.
    pub fn serve_leases(&self, count: lariat_central::LeaseCount) {
        self.central.serve_leases(count);
    }

    /// Cancelled, it ends every open event stream: the first step of a graceful
    /// shutdown.
    pub fn stream_stop(&self) -> CancellationToken {
        self.end_streams.clone()
    }

    /// Stops polling the design repository.
    pub async fn shutdown(self) {
        self.stop_poller.cancel();
        if let Some(p) = self.poller {
            let _ = p.await;
        }
    }
}

/// Registers the workflow templates of every design that becomes active. A template named
/// like a built-in becomes that workflow's latest version.
async fn register_design_templates(
    engine: Engine,
    mut designs: watch::Receiver<Arc<ActiveDesign>>,
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

/// The design source as a site sees it.
struct SourceDesign {
    source: DesignSource,
    current: watch::Receiver<CurrentDesign>,
}

fn current_of(a: &ActiveDesign) -> CurrentDesign {
    CurrentDesign {
        revision: a.revision.as_ref().map(|r| r.commit.clone()),
        loaded: a.loaded.clone(),
    }
}

impl SourceDesign {
    /// A pinned site's design, named after its pin; the design in force otherwise.
    fn pinned(
        &self,
        d: Result<PinnedDesign, lariat_source::SourceError>,
    ) -> Result<CurrentDesign, String> {
        let d = d.map_err(|e| e.to_string())?;
        Ok(match d.pin {
            Some(pin) => CurrentDesign {
                revision: Some(format!("{} (site {} pinned)", pin.rev, pin.site)),
                loaded: d.loaded,
            },
            None => self.current(),
        })
    }

    fn new(source: DesignSource) -> Arc<SourceDesign> {
        let mut active = source.subscribe();
        let (tx, current) = watch::channel(current_of(&active.borrow_and_update()));
        tokio::spawn(async move {
            while active.changed().await.is_ok() {
                tx.send_replace(current_of(&active.borrow_and_update()));
            }
        });
        Arc::new(SourceDesign { source, current })
    }
}

#[async_trait]
impl SiteDesign for SourceDesign {
    fn current(&self) -> CurrentDesign {
        current_of(&self.source.active())
    }

    fn subscribe(&self) -> watch::Receiver<CurrentDesign> {
        self.current.clone()
    }

    async fn for_site(&self, site: &str) -> Result<CurrentDesign, String> {
        let d = self.source.site_design(site).await;
        self.pinned(d)
    }

    async fn for_host(&self, host: &str) -> Result<CurrentDesign, String> {
        let d = self.source.design_for_host(host).await;
        self.pinned(d)
    }
}
