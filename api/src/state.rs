//! What every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use lariat_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{AgentAuth, Authenticator};
use crate::cache::RunCache;

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
