//! Probes, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Viewer;
use crate::error::HttpError;
use crate::state::AppState;
use lariat_api_types::ErrorBody;
use lariat_api_types::Health;

/// Liveness: the process answers HTTP. No token needed.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the executor answers and the store can be read. No token needed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The engine has stopped, or the store cannot be read or written", body = ErrorBody),
    ),
)]
pub async fn readyz(State(st): State<Arc<AppState>>) -> Result<Json<Health>, HttpError> {
    // Anyone may ask, so the cause (paths, SQL errors) goes to the log, not the answer.
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!("not ready: {what}: {e}");
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("not ready: {what}; the server log has the cause"),
        )
    };
    st.engine
        .stats()
        .await
        .map_err(|e| unavailable("the engine does not answer", &e))?;
    st.engine
        .store()
        .ping()
        .await
        .map_err(|e| unavailable("the store cannot be read", &e))?;
    if st.engine.store_down() {
        return Err(unavailable(
            "the store cannot be written",
            &"the engine waits for the database to answer again",
        ));
    }
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// Prometheus metrics: runs by status, ready-queue depth, step duration by action,
/// retries, commit batch size and latency, HTTP requests.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "Metrics are not recorded in this process", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn metrics(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
) -> Result<Response, HttpError> {
    let Some(handle) = &st.metrics else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "another metrics recorder was installed in this process first; no metrics to show",
        ));
    };
    crate::metrics::update_gauges(&st.engine).await?;
    if let Some(c) = &st.central {
        crate::metrics::update_site_gauges(c).await?;
    }
    let mut res = handle.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(res)
}

/// This document, generated from the handlers.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
    security(("bearer" = ["viewer"])),
)]
pub async fn openapi(Viewer(_caller): Viewer, State(st): State<Arc<AppState>>) -> Response {
    let mut res = st.openapi.clone().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
