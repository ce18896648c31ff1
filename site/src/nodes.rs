//! The site's answers to booting nodes: which host a MAC is (the design), whether a
//! provisioning step waits for it (the engine), what it boots (its boot profile), and its
//! one-time callback token (the store).

use std::sync::Arc;

use async_trait::async_trait;
use lariat_boot::http::{BootDecision, BootPlan, Mac, NodeError, Nodes, StateReport};
use lariat_engine::{Actor, Engine, EngineError};
use lariat_workflows::design::{Design, Loaded, UnattendedFormat, render_unattended};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::design::SiteDesign;
use crate::node_tokens::{NodeToken, NodeTokens};

/// The action whose steps wait for a node's callback.
const CALLBACK_ACTION: &str = "await_callback";

/// [`Nodes`] for a site served by this process.
pub struct SiteNodes {
    engine: Engine,
    design: Arc<dyn SiteDesign>,
    tokens: NodeTokens,
    /// This server's address as nodes reach it, e.g. `http://10.77.0.1:7300`.
    base_url: String,
}

impl SiteNodes {
    pub fn new(
        engine: Engine,
        design: Arc<dyn SiteDesign>,
        tokens: NodeTokens,
        base_url: &str,
    ) -> Arc<SiteNodes> {
        Arc::new(SiteNodes {
            engine,
            design,
            tokens,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The host whose interfaces carry `mac`, in the design the host's site works from.
    async fn host_of(&self, mac: Mac) -> Result<Option<(String, Arc<Loaded>)>, NodeError> {
        let active = self.design.current().loaded;
        let Some((host, site)) = find_mac(&active.design, mac) else {
            return Ok(None);
        };
        let loaded = match site {
            Some(site) => {
                self.design
                    .for_site(&site)
                    .await
                    .map_err(|e| NodeError::Internal(format!("design of site {site}: {e}")))?
                    .loaded
            }
            None => active,
        };
        Ok(Some((host, loaded)))
    }

    /// The design `host` works from: its site's pinned revision, or the active design.
    async fn design_of(&self, host: &str) -> Result<Arc<Loaded>, NodeError> {
        self.design
            .for_host(host)
            .await
            .map(|d| d.loaded)
            .map_err(|e| NodeError::Internal(format!("design of host {host}'s site: {e}")))
    }

    /// The live run and step waiting for `host`'s callback, if any: an unfinished
    /// `await_callback` item for the host (pending, running or waiting: a node may boot a
    /// moment before its step starts waiting). One indexed query, however many runs live.
    async fn waiting_step(&self, host: &str) -> Result<Option<(Uuid, String)>, NodeError> {
        let open = self
            .engine
            .store()
            .open_items(&Value::String(host.to_string()))
            .await
            .map_err(|e| internal(e.into()))?;
        for (run_id, step) in open {
            let Some(run) = self
                .engine
                .store()
                .run(run_id)
                .await
                .map_err(|e| internal(e.into()))?
            else {
                continue;
            };
            let wf = self
                .engine
                .workflow(&run.workflow, Some(run.version))
                .await
                .map_err(internal)?;
            if wf
                .def
                .steps
                .iter()
                .any(|s| s.name == step && s.action == CALLBACK_ACTION)
            {
                return Ok(Some((run_id, step)));
            }
        }
        Ok(None)
    }

    async fn issue_token(&self, host: &str, run: Uuid, step: &str) -> Result<String, NodeError> {
        self.tokens.issue(host, run, step).await.map_err(db)
    }

    /// The token's row, if it exists, is not used up, and its step still waits for the
    /// host: a token expires with its step (succeeded, failed, timed out, cancelled), so
    /// one read off a node's console later opens nothing.
    async fn token(&self, token: &str) -> Result<NodeToken, NodeError> {
        let row = self
            .tokens
            .find(token)
            .await
            .map_err(db)?
            .ok_or_else(refused)?;
        let open = self
            .engine
            .store()
            .open_items(&Value::String(row.host.clone()))
            .await
            .map_err(|e| internal(e.into()))?;
        if !open
            .iter()
            .any(|(run, step)| *run == row.run && *step == row.step)
        {
            self.tokens.used(token).await.map_err(db)?;
            tracing::info!(host = %row.host, run = %row.run, step = %row.step, "node token refused: its step no longer waits");
            return Err(refused());
        }
        Ok(row)
    }

    fn plan(
        &self,
        design: &Design,
        host: &str,
        run: Uuid,
        token: String,
    ) -> Result<BootPlan, NodeError> {
        let resolved = design
            .resolved_host(host)
            .map_err(|e| NodeError::Internal(format!("host {host}: {e}")))?;
        let profile_name = resolved.boot_profile.clone().ok_or_else(|| {
            NodeError::NotFound(format!("host {host} has no boot profile in the design"))
        })?;
        let profile = design.boot_profile(&profile_name).ok_or_else(|| {
            NodeError::NotFound(format!(
                "boot profile {profile_name} of host {host} is not in the design"
            ))
        })?;
        let base = resolved
            .site
            .as_deref()
            .and_then(|s| design.site(s))
            .map(|s| s.spec.boot_assets.clone())
            .unwrap_or_else(|| "/boot/assets".into());
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base
        } else {
            format!("{}/{}", self.base_url, base.trim_start_matches('/'))
        };
        let url = |p: &str| {
            if p.starts_with("http://") || p.starts_with("https://") {
                p.to_string()
            } else {
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    p.trim_start_matches('/')
                )
            }
        };
        let mut cmdline = profile.spec.cmdline.clone();
        for k in &resolved.kernel_params {
            cmdline.push(' ');
            cmdline.push_str(k);
        }
        Ok(BootPlan {
            host: host.to_string(),
            run: run.to_string(),
            kernel: url(&profile.spec.kernel),
            initrds: profile.spec.initrd.iter().map(|p| url(p)).collect(),
            cmdline,
            callback: format!("{}/v1/state", self.base_url),
            token,
        })
    }
}

fn refused() -> NodeError {
    NodeError::Unauthorized("unknown, expired or already used node token".into())
}

fn internal(e: EngineError) -> NodeError {
    NodeError::Internal(e.to_string())
}

fn db(e: lariat_db::DbError) -> NodeError {
    NodeError::Internal(format!("node tokens: {e}"))
}

/// The host whose own interfaces carry `mac`, and its site.
fn find_mac(design: &Design, mac: Mac) -> Option<(String, Option<String>)> {
    design.hosts().find_map(|h| {
        h.spec
            .interfaces
            .iter()
            .any(|i| i.mac.as_ref().is_some_and(|m| m.0 == mac.0))
            .then(|| (h.name.clone(), h.spec.site.clone()))
    })
}

#[async_trait]
impl Nodes for SiteNodes {
    async fn boot(&self, mac: Mac) -> Result<BootDecision, NodeError> {
        let Some((host, loaded)) = self.host_of(mac).await? else {
            return Ok(BootDecision::LocalDisk {
                reason: "no host of the design has this MAC".into(),
            });
        };
        if loaded
            .design
            .resolved_host(&host)
            .is_ok_and(|h| h.never_provision)
        {
            return Ok(BootDecision::LocalDisk {
                reason: format!("host {host} is marked never_provision"),
            });
        }
        let Some((run, step)) = self.waiting_step(&host).await? else {
            return Ok(BootDecision::LocalDisk {
                reason: format!("no provisioning step waits for host {host}"),
            });
        };
        let token = self.issue_token(&host, run, &step).await?;
        self.plan(&loaded.design, &host, run, token)
            .map(BootDecision::Provision)
    }

    async fn report(&self, token: &str, report: StateReport) -> Result<(), NodeError> {
        let row = self.token(token).await?;
        if !self.tokens.claim(token).await.map_err(db)? {
            return Err(refused());
        }
        let payload = json!({ "host": row.host, "state": report.state, "facts": report.facts });
        let actor = Actor {
            who: format!("node {}", row.host),
            from: None,
            command: None,
        };
        let res = self
            .engine
            .signal(row.run, &row.step, Some(&row.host), payload, actor)
            .await;
        let err = match res {
            Ok(()) => {
                self.tokens.used(token).await.map_err(db)?;
                tracing::info!(host = %row.host, run = %row.run, state = %report.state, "node reported");
                return Ok(());
            }
            Err(e) => e,
        };
        // Not delivered: the token stays usable for the node's next try.
        self.tokens.release(token).await.map_err(db)?;
        Err(match err {
            EngineError::NotWaiting { .. } => NodeError::NotWaiting(format!(
                "step {} of run {} does not wait for host {} right now; try again shortly",
                row.step, row.run, row.host
            )),
            EngineError::UnknownRun(_)
            | EngineError::UnknownStep { .. }
            | EngineError::UnknownItem { .. }
            | EngineError::InvalidState { .. }
            | EngineError::NotLive(_) => refused(),
            other => internal(other),
        })
    }

    async fn metadata(&self, token: &str) -> Result<Value, NodeError> {
        let row = self.token(token).await?;
        let design = self.design_of(&row.host).await?;
        let host = design
            .design
            .resolved_host(&row.host)
            .map_err(|e| NodeError::NotFound(format!("host {}: {e}", row.host)))?;
        Ok(json!({ "run": row.run, "step": row.step, "host": host }))
    }

    async fn unattended(&self, token: &str) -> Result<(String, String), NodeError> {
        let row = self.token(token).await?;
        let loaded = self.design_of(&row.host).await?;
        let d = &loaded.design;
        let format = d
            .resolved_host(&row.host)
            .ok()
            .and_then(|h| h.boot_profile)
            .and_then(|p| d.boot_profile(&p))
            .and_then(|p| p.spec.unattended.as_ref())
            .map(|u| u.format)
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "host {}'s boot profile has no unattended template",
                    row.host
                ))
            })?;
        let text = render_unattended(d, &row.host)
            .map_err(|e| NodeError::NotFound(format!("host {}: {e}", row.host)))?;
        let ctype = match format {
            UnattendedFormat::Ignition => "application/json",
            UnattendedFormat::CloudInit => "text/cloud-config; charset=utf-8",
            UnattendedFormat::Kickstart => "text/plain; charset=utf-8",
        };
        Ok((ctype.to_string(), text))
    }
}
