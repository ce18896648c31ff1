//! The sites and their agents: the link routes an agent calls (with its site's
//! credential), the sites' health, and commands queued for agents.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use lariat_api_types::{
    AgentHello, BatchAnswer, ErrorBody, EventBatch, LinkCursor, QueuedCommand, SiteList,
    SyncAnswer, SyncRequest,
};

use crate::auth::{AgentOf, Viewer};
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

fn central(st: &AppState) -> Result<&lariat_central::Central, HttpError> {
    st.central.as_ref().ok_or_else(|| {
        HttpError::not_found("this process is a site agent; ask the central node about sites")
    })
}

/// An agent names its executor and how far its log goes; the first agent of a site
/// registers. Answers how far the centre has applied its events.
#[utoipa::path(
    post,
    path = "/v1/agent/hello",
    tag = "sites",
    request_body = AgentHello,
    responses(
        (status = 200, body = LinkCursor),
        (status = 401, description = "Not a site credential", body = ErrorBody),
        (status = 404, description = "The site is not in the active design", body = ErrorBody),
        (status = 409, description = "Another agent holds the site, or the agent's log went backwards", body = ErrorBody),
    ),
    security(("bearer" = ["agent"])),
)]
pub async fn agent_hello(
    AgentOf(site): AgentOf,
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<AgentHello>,
) -> Result<Json<LinkCursor>, HttpError> {
    Ok(Json(central(&st)?.hello(&site, &req).await?))
}

/// What travels to the agent: workflow versions, its site's design, runs assigned to it,
/// commands for its runs.
#[utoipa::path(
    post,
    path = "/v1/agent/sync",
    tag = "sites",
    request_body = SyncRequest,
    responses(
        (status = 200, body = SyncAnswer),
        (status = 401, description = "Not a site credential", body = ErrorBody),
        (status = 409, description = "The agent has not said hello, or is not the site's", body = ErrorBody),
    ),
    security(("bearer" = ["agent"])),
)]
pub async fn agent_sync(
    AgentOf(site): AgentOf,
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<SyncRequest>,
) -> Result<Json<SyncAnswer>, HttpError> {
    Ok(Json(central(&st)?.sync(&site, &req).await?))
}

/// The agent's events, in `owner_seq` order. Applied idempotently: a repeat is skipped,
/// and at a gap the rest waits; the answer's cursor says where to send from.
#[utoipa::path(
    post,
    path = "/v1/agent/events",
    tag = "sites",
    request_body = EventBatch,
    responses(
        (status = 200, body = BatchAnswer),
        (status = 400, description = "An event that cannot be read", body = ErrorBody),
        (status = 401, description = "Not a site credential", body = ErrorBody),
        (status = 403, description = "Events of another executor, or of a run it does not own", body = ErrorBody),
        (status = 409, description = "The agent has not said hello", body = ErrorBody),
        (status = 413, description = "Batch over the body limit", body = ErrorBody),
    ),
    security(("bearer" = ["agent"])),
)]
pub async fn agent_events(
    AgentOf(site): AgentOf,
    State(st): State<Arc<AppState>>,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<Json<BatchAnswer>, HttpError> {
    let answer = central(&st)?.accept(&site, batch).await?;
    Ok(Json(answer))
}

/// Every site: served by its agent or by the central node, connected or not, how far
/// behind the centre's view of it may be.
#[utoipa::path(
    get,
    path = "/v1/sites",
    tag = "sites",
    responses((status = 200, body = SiteList)),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_sites(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
) -> Result<Json<SiteList>, HttpError> {
    Ok(Json(SiteList {
        sites: central(&st)?.site_statuses().await?,
    }))
}

/// A command queued for a site agent, with where it is as the run's log says.
#[utoipa::path(
    get,
    path = "/v1/commands/{id}",
    tag = "sites",
    params(("id" = String, Path, description = "Command id")),
    responses(
        (status = 200, body = QueuedCommand),
        (status = 404, description = "No such command", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_command(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QueuedCommand>, HttpError> {
    Ok(Json(central(&st)?.command(&id).await?))
}
