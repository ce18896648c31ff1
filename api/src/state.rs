//! What every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use lariat_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::auth::{AgentAuth, Authenticator, Caller};
use crate::cache::RunCache;
use crate::tokens::TokenStore;

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) auth: Authenticator,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) openapi: String,
    pub(crate) streams_stop: CancellationToken,
    pub(crate) runs: Arc<RunCache>,
    pub(crate) design: lariat_source::DesignSource,
    /// Placement and the site agents' link, on a central node; none on an agent.
    pub(crate) central: Option<lariat_central::Central>,
    /// The window overrides this process goes by: the centre's, or those an agent was sent.
    pub(crate) overrides: Option<OverrideFeed>,
    pub(crate) tokens: TokenStore,
    pub(crate) audit: AuditLog,
}

/// The operators' window overrides as they change.
pub type OverrideFeed = tokio::sync::watch::Receiver<Arc<Vec<lariat_workflows::windows::Override>>>;

impl AppState {
    /// Add what `caller` did to the audit trail. The action is done by then, so a trail
    /// that cannot be written is logged as an error rather than failing the request.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: impl std::fmt::Display,
        detail: serde_json::Value,
    ) {
        let target = target.to_string();
        if let Err(e) = self
            .audit
            .record(&caller.audit_actor(), action, &target, detail)
            .await
        {
            tracing::error!(action, target, "cannot write the audit trail: {e}");
        }
    }

    /// The overrides now (none when nothing feeds them). An agent holds only those for
    /// every site and its own, so at an agent each counts for every host it serves.
    pub(crate) fn overrides(&self) -> Arc<Vec<lariat_workflows::windows::Override>> {
        let set = self
            .overrides
            .as_ref()
            .map(|f| f.borrow().clone())
            .unwrap_or_default();
        if self.central.is_some() {
            return set;
        }
        let mut own = (*set).clone();
        for o in &mut own {
            o.site = None;
        }
        Arc::new(own)
    }
}

impl FromRef<Arc<AppState>> for AgentAuth {
    fn from_ref(state: &Arc<AppState>) -> Self {
        AgentAuth(state.central.clone())
    }
}

impl FromRef<Arc<AppState>> for Authenticator {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.auth.clone()
    }
}
