//! The REST API under `/v1`, its OpenAPI document, the SSE progress stream, and
//! bearer-token auth. Handlers stay thin: they parse, call the engine, and map its
//! typed errors to one JSON error shape.
//!
//! (Being built for the API issue: only `/healthz` exists so far.)

use axum::Router;
use axum::routing::get;
use lariat_engine::Engine;

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Bearer tokens with roles (viewer, operator, admin).
    Tokens,
    /// No authentication: development only; the server warns loudly at start.
    InsecureNoAuth,
}

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: Auth,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth: Auth::Tokens,
            body_limit: 1 << 20,
        }
    }
}

/// Errors building the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] lariat_engine::EngineError),
}

/// The application: every route, with its state.
pub async fn router(engine: Engine, _cfg: ApiConfig) -> Result<Router, ApiError> {
    let _ = engine;
    Ok(Router::new().route("/healthz", get(|| async { "ok" })))
}
