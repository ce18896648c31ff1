//! The REST API under `/v1`, its OpenAPI document, the SSE progress stream, and
//! bearer-token auth. Handlers stay thin: they parse, call the engine, and map its
//! typed errors to one JSON error shape (`{"error": {"code", "message", "details"}}`).
//!
//! Routes and the roles they need (a higher role may do what a lower one may):
//!
//! | route | role |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | none |
//! | `GET /metrics`, `GET /openapi.json`, every other `GET` under `/v1` | viewer |
//! | `POST /v1/runs`, the run verbs, step retry and signal, `POST /v1/reconcile` | operator |
//! | `POST /v1/workflows`, `POST /v1/designs/sync`, site pins, `/v1/tokens`, `GET /v1/audit` | admin |
//! | `POST /v1/hooks/git` | none: the payload's HMAC signature instead |
//!
//! The OpenAPI document is assembled from the handlers' `#[utoipa::path]` attributes by the
//! same router that serves them, so a route cannot exist without being documented. The
//! exception is HTTP boot (`/boot/*`, `/v1/state`, `/v1/metadata`, with `--http-boot`),
//! which the site role merges in with its own document ([`ExtraRoutes`]): those routes
//! are for booting nodes, not operators, and `lariat_boot::http` documents them.
//!
//! Run details are served from a cache that the engine's committed events invalidate
//! (see `cache`), so polling a waiting run costs no store queries.

pub mod audit;
pub mod auth;
mod cache;
mod convert;
pub mod error;
pub mod extract;
mod inventory;
pub mod metrics;
mod reconcile_auto;
mod routes;
mod state;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lariat_engine::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use audit::{AuditActor, AuditError, AuditLog};
pub use auth::{Auth, ClientCertificate};
pub use error::HttpError;
pub use lariat_api_types as types;
pub use reconcile_auto::AutoReconcile;
pub use state::OverrideFeed;
pub use tokens::{Expiry, NewToken, Role, TokenError, TokenInfo, TokenStore};
pub use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::routes::{
    access, designs, inventory as inv, ops, runs, sites, stream, windows, workflows,
};
use crate::state::AppState;
use lariat_api_types::ErrorBody;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: Auth,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit: usize,
    /// Cancel this to end every open event stream, so a graceful shutdown does not wait
    /// for clients that would otherwise follow a run forever.
    pub shutdown: CancellationToken,
    /// Routes of another role served on the same listener, under the same layers (a
    /// site's HTTP boot), with their part of the OpenAPI document.
    pub extra: Option<ExtraRoutes>,
    /// The window overrides an agent was sent, shown in its windows; a central node
    /// shows its own.
    pub overrides: Option<state::OverrideFeed>,
    /// The audit trail the handlers write; one group-committed on the tokens' database
    /// when absent. Give one to flush it before the database closes.
    pub audit: Option<AuditLog>,
    /// Submit the fixes of these drift kinds on a timer (a central node only).
    pub reconcile: Option<AutoReconcile>,
}

/// Another role's routes on the API's listener, and their OpenAPI paths.
#[derive(Clone)]
pub struct ExtraRoutes {
    pub router: Router,
    pub doc: utoipa::openapi::OpenApi,
}

impl std::fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&String> = self.doc.paths.paths.keys().collect();
        f.debug_struct("ExtraRoutes")
            .field("paths", &paths)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth: Auth::Tokens,
            body_limit: 1 << 20,
            shutdown: CancellationToken::new(),
            extra: None,
            overrides: None,
            audit: None,
            reconcile: None,
        }
    }
}

/// Errors building the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] lariat_engine::EngineError),
    #[error("cannot encode the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lariat",
        description = "Bare-metal provisioning: workflows, runs, live progress. Every route but /healthz and /readyz needs `Authorization: Bearer <token>`; each operation's `security` names the least role it needs (viewer < operator < admin). Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`. Timestamps are milliseconds since the Unix epoch."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "workflows", description = "Workflow definitions and their versions"),
        (name = "runs", description = "Runs, their steps and history, and the operator verbs"),
        (name = "designs", description = "The site design: revisions from git, findings, validation, resolved hosts, site pins"),
        (name = "sites", description = "Sites and their agents: the agents' link, site health, commands queued for agents"),
        (name = "inventory", description = "Every host's state and history, its drift from the design, and reconciliation"),
        (name = "windows", description = "Maintenance windows of the design in force, and the steps waiting on them"),
        (name = "access", description = "API tokens and the audit trail, for admins"),
        (name = "ops", description = "Probes, metrics, this document"),
    )
)]
struct ApiDoc;

/// Every documented route, with the document built from them.
fn documented() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            workflows::list_workflows,
            workflows::register_workflow
        ))
        .routes(routes!(workflows::get_workflow))
        .routes(routes!(workflows::get_workflow_version))
        .routes(routes!(runs::list_runs, runs::submit_run))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::list_events))
        .routes(routes!(stream::stream_events))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::pause_run))
        .routes(routes!(runs::resume_run))
        .routes(routes!(runs::rollback_run))
        .routes(routes!(runs::retry_step))
        .routes(routes!(runs::signal_step))
        .routes(routes!(designs::list_designs))
        .routes(routes!(designs::revision_findings))
        .routes(routes!(designs::validate_design))
        .routes(routes!(designs::sync_design))
        .routes(routes!(designs::pin_site, designs::unpin_site))
        .routes(routes!(designs::list_hosts))
        .routes(routes!(designs::resolved_host))
        .routes(routes!(designs::git_webhook))
        .routes(routes!(inv::list_inventory))
        .routes(routes!(inv::get_inventory_host))
        .routes(routes!(inv::list_drift))
        .routes(routes!(inv::reconcile))
        .routes(routes!(sites::agent_hello))
        .routes(routes!(sites::agent_sync))
        .routes({
            let (schemas, paths, method) = routes!(sites::agent_events);
            let limit = DefaultBodyLimit::max(lariat_api_types::EVENT_BATCH_LIMIT);
            (schemas, paths, method.layer(limit))
        })
        .routes(routes!(sites::list_sites))
        .routes(routes!(windows::list_windows))
        .routes(routes!(windows::get_window))
        .routes(routes!(windows::open_window))
        .routes(routes!(windows::close_window))
        .routes(routes!(windows::clear_window))
        .routes(routes!(sites::get_command))
        .routes(routes!(access::list_tokens, access::create_token))
        .routes(routes!(access::revoke_token))
        .routes(routes!(access::list_audit))
        .routes(routes!(access::whoami))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts()
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = documented();
    finish_doc(&mut doc);
    doc
}

/// Declare the bearer scheme, and the 401/403 answers of every operation that needs a role.
fn finish_doc(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from `lariat token create --role viewer|operator|admin`",
                ))
                .build(),
        ),
    );
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            // A body is read by the API's extractors, which answer these for any route.
            if op.request_body.is_some() {
                let r = &mut op.responses.responses;
                r.entry("400".into())
                    .or_insert_with(|| error("A body that does not read, or bad values"));
                r.entry("413".into())
                    .or_insert_with(|| error("A body over the limit"));
                r.entry("415".into())
                    .or_insert_with(|| error("A body of another media type"));
            }
            let Some(security) = op.security.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            // Any valid token is at least a viewer, so only stronger roles can be refused.
            let above_viewer = serde_json::to_value(security)
                .map(|v| v.to_string())
                .is_ok_and(|s| s.contains("\"operator\"") || s.contains("\"admin\""));
            let r = &mut op.responses.responses;
            r.entry("401".into())
                .or_insert_with(|| error("No valid bearer token"));
            if above_viewer {
                r.entry("403".into())
                    .or_insert_with(|| error("The token's role is too weak for this route"));
            }
        }
    }
}

/// The application: every route, with its state. Installs the process-wide metrics
/// recorder on first use.
pub async fn router(
    engine: Engine,
    design: lariat_source::DesignSource,
    tokens: TokenStore,
    central: Option<lariat_central::Central>,
    cfg: ApiConfig,
) -> Result<Router, ApiError> {
    let (routes, mut doc) = documented();
    let extra = cfg.extra.map(|e| {
        doc.merge(e.doc);
        e.router
    });
    finish_doc(&mut doc);
    let runs = Arc::new(cache::RunCache::default());
    tokio::spawn(runs.clone().follow(engine.subscribe()));
    let overrides = cfg
        .overrides
        .or_else(|| central.as_ref().map(|c| c.overrides().feed()));
    let state = Arc::new(AppState {
        overrides,
        audit: cfg
            .audit
            .unwrap_or_else(|| AuditLog::group_committed(tokens.db().clone())),
        auth: Authenticator::new(cfg.auth, tokens.clone()),
        tokens,
        metrics: metrics::install(),
        openapi: serde_json::to_string(&doc)?,
        engine,
        streams_stop: cfg.shutdown,
        runs,
        design,
        central,
    });
    if let Some(auto) = cfg.reconcile
        && state.central.is_some()
    {
        reconcile_auto::spawn(state.clone(), auto, state.streams_stop.clone());
    }
    let mut app: Router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    Ok(app
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(CatchPanicLayer::custom(panicked)))
}

/// A request refused before its body was read (no token, a bad path, a body over the
/// limit) leaves the rest of that body on the connection, so the server closes it after
/// answering. Saying so in the answer keeps clients from sending their next request on a
/// connection about to close.
async fn close_after_refused_body(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let mut res = next.run(req).await;
    if has_body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

async fn not_found(method: Method, uri: Uri) -> HttpError {
    HttpError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    HttpError::internal("handling a request", &what).into_response()
}
