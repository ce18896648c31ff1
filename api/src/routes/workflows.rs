//! `/v1/workflows`: register definitions (YAML or JSON) and read their versions.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use lariat_engine::Format;
use lariat_engine::store::StoredWorkflow;
use serde_json::Value;

use crate::auth::{Admin, Viewer};
use crate::error::HttpError;
use crate::extract::{ApiPath, media_type};
use crate::state::AppState;
use lariat_api_types::ErrorBody;
use lariat_api_types::{
    Registered, WorkflowDetail, WorkflowList, WorkflowSummary, WorkflowVersion,
};

/// A definition body: its text and the format its Content-Type names. The body is read
/// before a wrong content type is refused, so that the connection stays usable.
pub struct DefinitionBody {
    pub format: Format,
    pub text: String,
}

impl<S: Send + Sync> FromRequest<S> for DefinitionBody {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = media_type(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        let format = match media.as_deref() {
            Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
                Format::Yaml
            }
            Some("application/json") => Format::Json,
            other => {
                return Err(HttpError::unsupported_media_type(format!(
                    "a workflow definition is YAML or JSON: send Content-Type application/yaml or application/json{}",
                    other.map(|o| format!(", not {o}")).unwrap_or_default()
                )));
            }
        };
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
            HttpError::bad_request(
                "invalid_body",
                format!("the definition is not UTF-8 text: {e}"),
            )
        })?;
        Ok(DefinitionBody { format, text })
    }
}

fn definition(w: &StoredWorkflow) -> Result<Value, HttpError> {
    serde_json::from_str(&w.definition)
        .map_err(|e| HttpError::internal("decoding a stored workflow definition", &e))
}

fn version(w: &StoredWorkflow) -> Result<WorkflowVersion, HttpError> {
    Ok(WorkflowVersion {
        name: w.name.clone(),
        version: w.version,
        created_at: w.created_at,
        definition: definition(w)?,
    })
}

/// Register a definition. Each change makes a new version (201); the latest definition
/// sent again changes nothing (200).
#[utoipa::path(
    post,
    path = "/v1/workflows",
    tag = "workflows",
    request_body(
        description = "A workflow definition",
        content(
            ("application/yaml"),
            ("application/x-yaml"),
            ("text/yaml"),
            ("application/json"),
        ),
    ),
    responses(
        (status = 201, description = "A new version", body = Registered),
        (status = 200, description = "Same as the latest version; nothing changed", body = Registered),
        (status = 400, description = "Malformed or invalid definition; `details.problems` lists every problem", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not YAML or JSON", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn register_workflow(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
    body: DefinitionBody,
) -> Result<(StatusCode, Json<Registered>), HttpError> {
    let r = st.engine.register_workflow(&body.text, body.format).await?;
    if r.created {
        let detail = serde_json::json!({ "version": r.version });
        st.audit(&caller, "workflow.register", &r.name, detail)
            .await;
    }
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Registered {
            name: r.name,
            version: r.version,
            created: r.created,
        }),
    ))
}

/// The latest version of every workflow.
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    responses((status = 200, body = WorkflowList)),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_workflows(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
) -> Result<Json<WorkflowList>, HttpError> {
    let mut workflows = Vec::new();
    for w in st.engine.workflows().await? {
        let def = definition(&w)?;
        workflows.push(WorkflowSummary {
            description: def
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            steps: def
                .get("steps")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            name: w.name,
            version: w.version,
            created_at: w.created_at,
        });
    }
    Ok(Json(WorkflowList { workflows }))
}

/// A workflow's latest version and the list of its versions.
#[utoipa::path(
    get,
    path = "/v1/workflows/{name}",
    tag = "workflows",
    params(("name" = String, Path, description = "Workflow name")),
    responses(
        (status = 200, body = WorkflowDetail),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_workflow(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<WorkflowDetail>, HttpError> {
    let all = st.engine.workflow_versions(&name).await?;
    let Some(latest) = all.last() else {
        return Err(lariat_engine::EngineError::UnknownWorkflow {
            name,
            version: None,
        }
        .into());
    };
    Ok(Json(WorkflowDetail {
        latest: version(latest)?,
        versions: all.iter().map(|w| w.version).collect(),
    }))
}

/// One version of a workflow.
#[utoipa::path(
    get,
    path = "/v1/workflows/{name}/versions/{version}",
    tag = "workflows",
    params(
        ("name" = String, Path, description = "Workflow name"),
        ("version" = i64, Path, description = "Version number, from 1"),
    ),
    responses(
        (status = 200, body = WorkflowVersion),
        (status = 400, description = "The version is not a number", body = ErrorBody),
        (status = 404, description = "No such workflow or version", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_workflow_version(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath((name, v)): ApiPath<(String, i64)>,
) -> Result<Json<WorkflowVersion>, HttpError> {
    let stored = st
        .engine
        .store()
        .workflow(&name, Some(v))
        .await
        .map_err(lariat_engine::EngineError::from)?
        .ok_or(lariat_engine::EngineError::UnknownWorkflow {
            name,
            version: Some(v),
        })?;
    Ok(Json(version(&stored)?))
}
