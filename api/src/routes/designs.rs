//! The design: its revisions and findings, validation of a proposed design, the resolved
//! hosts of the active design, site pins, and the git push webhook.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lariat_source::{PushEvent, SourceError, Trigger, WebhookError};
use lariat_workflows::design::{self, NodeFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Admin, Viewer};
use crate::error::{ErrorBody, HttpError};
use crate::extract::{ApiJson, ApiPath, ApiQuery, media_type};

impl From<SourceError> for HttpError {
    fn from(e: SourceError) -> Self {
        let message = e.to_string();
        match e {
            SourceError::NotConfigured => {
                HttpError::new(StatusCode::CONFLICT, "not_configured", message)
            }
            SourceError::UnknownRevision(_) => HttpError::not_found(message),
            SourceError::RejectedRevision { .. } => {
                HttpError::new(StatusCode::CONFLICT, "rejected_revision", message)
            }
            SourceError::Git { .. }
            | SourceError::NoBranch { .. }
            | SourceError::Timeout(_)
            | SourceError::FileTooLarge { .. }
            | SourceError::NotUtf8(_) => {
                HttpError::new(StatusCode::BAD_GATEWAY, "design_fetch_failed", message)
            }
            SourceError::Store(_) | SourceError::Db(_) | SourceError::Corrupt(_) => {
                HttpError::internal("reading or writing design revisions", &message)
            }
        }
    }
}

/// The design source and every recorded revision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DesignOverview {
    /// Where the design comes from; `null` when no repository is configured.
    #[schema(value_type = Object)]
    pub source: Value,
    /// The revision in force; `null` before one was accepted.
    #[schema(value_type = Object)]
    pub active: Value,
    /// Newest first: status `active`, `accepted` or `rejected`, error and warning counts.
    #[schema(value_type = Vec<Object>)]
    pub revisions: Vec<Value>,
    /// Sites held to a revision or tag.
    #[schema(value_type = Vec<Object>)]
    pub pins: Vec<Value>,
}

/// `GET /v1/designs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevisionsQuery {
    /// Revisions to list, newest first; 50 when absent, at most 500.
    pub limit: Option<u32>,
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The design source, the active revision, recorded revisions and site pins.
#[utoipa::path(
    get,
    path = "/v1/designs",
    tag = "designs",
    params(RevisionsQuery),
    responses((status = 200, body = DesignOverview)),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_designs(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<RevisionsQuery>,
) -> Result<Json<DesignOverview>, HttpError> {
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=500) => n,
        Some(n) => {
            return Err(HttpError::bad_request(
                "invalid_query",
                format!("limit {n} is out of range: 1 to 500"),
            ));
        }
    };
    let source = st.design.config().map(|c| {
        json!({
            "repo": c.repo,
            "branch": c.branch,
            "poll_seconds": c.poll.map(|d| d.as_secs()),
            "webhook": c.webhook_secret.is_some(),
        })
    });
    let active = st.design.active();
    let revisions = match st.design.config() {
        Some(_) => st.design.revisions(limit).await?,
        None => Vec::new(),
    };
    Ok(Json(DesignOverview {
        source: source.unwrap_or(Value::Null),
        active: active
            .revision
            .as_ref()
            .map(to_value)
            .unwrap_or(Value::Null),
        revisions: revisions.iter().map(to_value).collect(),
        pins: st.design.pins().await?.iter().map(to_value).collect(),
    }))
}

/// A revision and its findings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionFindings {
    #[schema(value_type = Object)]
    pub revision: Value,
    /// Every finding: level, rule, message, kind, name, path, file.
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Value>,
}

/// The findings of a recorded revision, by commit id (7 hex digits or more).
#[utoipa::path(
    get,
    path = "/v1/designs/{rev}/findings",
    tag = "designs",
    params(("rev" = String, Path, description = "A commit id, full or abbreviated")),
    responses(
        (status = 200, body = RevisionFindings),
        (status = 404, description = "No such revision", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn revision_findings(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(rev): ApiPath<String>,
) -> Result<Json<RevisionFindings>, HttpError> {
    let Some((revision, findings)) = st.design.revision(&rev).await? else {
        return Err(HttpError::not_found(format!(
            "no recorded design revision {rev:?} (give 7 or more hex digits of a fetched commit)"
        )));
    };
    Ok(Json(RevisionFindings {
        revision: to_value(&revision),
        findings: findings.iter().map(to_value).collect(),
    }))
}

/// A validation report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationReport {
    /// No error finding (warnings allowed).
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Value>,
}

impl ValidationReport {
    fn of(report: &design::Report) -> Self {
        ValidationReport {
            valid: !report.has_errors(),
            errors: report.errors().count(),
            warnings: report.warnings().count(),
            findings: report.findings.iter().map(to_value).collect(),
        }
    }
}

/// `POST /v1/designs/validate` as JSON: the design's files by path.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DesignFiles {
    /// YAML text by file path (`sites/dc1.yaml`: "kind: Site ...").
    pub files: BTreeMap<String, String>,
}

/// Validates a design without recording it: either JSON `{"files": {path: yaml}}`, or
/// one YAML stream (`Content-Type: application/yaml`) holding every document. Answers 200
/// with the report whether or not the design is valid.
#[utoipa::path(
    post,
    path = "/v1/designs/validate",
    tag = "designs",
    request_body(content = DesignFiles, description = "JSON files by path, or application/yaml"),
    responses(
        (status = 200, body = ValidationReport),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 415, description = "Neither JSON nor YAML", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn validate_design(
    Viewer(_caller): Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ValidationReport>, HttpError> {
    let files: Vec<(String, String)> = match media_type(&headers).as_deref() {
        Some("application/json") => {
            let Json(f) = Json::<DesignFiles>::from_bytes(&body)?;
            f.files.into_iter().collect()
        }
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            let text = String::from_utf8(body.to_vec()).map_err(|_| {
                HttpError::bad_request("invalid_body", "the YAML body is not UTF-8 text")
            })?;
            vec![("request.yaml".to_string(), text)]
        }
        _ => {
            return Err(HttpError::unsupported_media_type(
                "send the design as Content-Type: application/json ({\"files\": {path: yaml}}) or application/yaml",
            ));
        }
    };
    // Validation of a large design is CPU work; keep it off the async workers.
    let loaded = tokio::task::spawn_blocking(move || design::load_files(&files))
        .await
        .map_err(|e| HttpError::internal("validating a design", &e))?;
    Ok(Json(ValidationReport::of(&loaded.report)))
}

/// Fetches the design branch now, as a push webhook would.
#[utoipa::path(
    post,
    path = "/v1/designs/sync",
    tag = "designs",
    responses(
        (status = 200, description = "The head's revision: active, or rejected with its findings", body = Object),
        (status = 409, description = "No design repository configured", body = ErrorBody),
        (status = 502, description = "The repository could not be fetched", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn sync_design(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
) -> Result<Json<Value>, HttpError> {
    tracing::info!(by = %caller.name, "design sync requested");
    let rev = st.design.sync(Trigger::Manual).await?;
    Ok(Json(to_value(&rev)))
}

/// `PUT /v1/sites/{site}/pin`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSite {
    /// A commit id or a tag of the design repository, fetched and accepted.
    pub rev: String,
}

/// Holds a site to a revision or tag: its boot services and runs use that design until
/// the pin is removed.
#[utoipa::path(
    put,
    path = "/v1/sites/{site}/pin",
    tag = "designs",
    params(("site" = String, Path, description = "Site name")),
    request_body = PinSite,
    responses(
        (status = 200, description = "The pin", body = Object),
        (status = 404, description = "No such revision or tag", body = ErrorBody),
        (status = 409, description = "The revision has errors, or no repository is configured", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn pin_site(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiPath(site): ApiPath<String>,
    ApiJson(req): ApiJson<PinSite>,
) -> Result<Json<Value>, HttpError> {
    let pin = st.design.pin(&site, &req.rev, &caller.name).await?;
    Ok(Json(to_value(&pin)))
}

/// Removes a site's pin: it follows the active design again.
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}/pin",
    tag = "designs",
    params(("site" = String, Path, description = "Site name")),
    responses(
        (status = 204, description = "Unpinned"),
        (status = 404, description = "The site had no pin", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn unpin_site(
    Admin(_caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiPath(site): ApiPath<String>,
) -> Result<StatusCode, HttpError> {
    if st.design.unpin(&site).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::not_found(format!("site {site} has no pin")))
    }
}

/// `GET /v1/hosts` query: a node filter. Comma-separated lists; `labels` as `k=v,k2=v2`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HostsQuery {
    pub names: Option<String>,
    pub labels: Option<String>,
    pub racks: Option<String>,
    pub sites: Option<String>,
    /// `union` (any criterion) or `intersection` (every criterion); `intersection` when absent.
    pub mode: Option<String>,
}

impl HostsQuery {
    fn filter(&self) -> Result<NodeFilter, HttpError> {
        let list = |s: &Option<String>| -> Vec<String> {
            s.as_deref()
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut labels = BTreeMap::new();
        for pair in list(&self.labels) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(HttpError::bad_request(
                    "invalid_query",
                    format!("label {pair:?} must be key=value"),
                ));
            };
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        let doc = json!({
            "names": list(&self.names),
            "labels": labels,
            "racks": list(&self.racks),
            "sites": list(&self.sites),
            "mode": self.mode.as_deref().unwrap_or("intersection"),
        });
        serde_json::from_value(doc)
            .map_err(|e| HttpError::bad_request("invalid_query", format!("node filter: {e}")))
    }
}

/// The active design's hosts a node filter selects, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "designs",
    params(HostsQuery),
    responses(
        (status = 200, description = "`{\"revision\": commit or null, \"hosts\": [names]}`", body = Object),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_hosts(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<HostsQuery>,
) -> Result<Json<Value>, HttpError> {
    let active = st.design.active();
    let hosts = active.loaded.design.select(&q.filter()?);
    Ok(Json(json!({
        "revision": active.revision.as_ref().map(|r| r.commit.clone()),
        "hosts": hosts,
    })))
}

/// A host as the active design defines it after profile inheritance.
#[utoipa::path(
    get,
    path = "/v1/hosts/{name}/resolved",
    tag = "designs",
    params(("name" = String, Path, description = "Host name")),
    responses(
        (status = 200, description = "The effective host", body = Object),
        (status = 404, description = "No such host in the active design", body = ErrorBody),
        (status = 409, description = "The host's profiles cannot be resolved", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn resolved_host(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, HttpError> {
    let active = st.design.active();
    if active.loaded.design.host(&name).is_none() {
        return Err(HttpError::not_found(format!(
            "no host {name} in the active design"
        )));
    }
    let host = active
        .loaded
        .design
        .resolved_host(&name)
        .map_err(|e| HttpError::new(StatusCode::CONFLICT, "unresolvable", e.to_string()))?;
    Ok(Json(to_value(&host)))
}

impl From<WebhookError> for HttpError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NoSecret => HttpError::forbidden(e.to_string()),
            WebhookError::BadPayload(_) => HttpError::bad_request("invalid_body", e.to_string()),
            _ => HttpError::unauthorized(e.to_string()),
        }
    }
}

/// A GitHub or Gitea push webhook. Needs no bearer token: the payload must be signed
/// (`X-Hub-Signature-256`) with the server's webhook secret, and nothing is fetched
/// unless it is. A push to the design branch (or of a tag) fetches and validates the new
/// head before answering.
#[utoipa::path(
    post,
    path = "/v1/hooks/git",
    tag = "designs",
    request_body(content = Object, description = "A GitHub or Gitea push payload (`ref`, `after`)"),
    responses(
        (status = 200, description = "`{\"revision\": …}` after a fetch, or `{\"ignored\": reason}`", body = Object),
        (status = 401, description = "Missing or wrong signature", body = ErrorBody),
        (status = 403, description = "No webhook secret configured", body = ErrorBody),
        (status = 502, description = "The repository could not be fetched", body = ErrorBody),
    ),
)]
pub async fn git_webhook(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let cfg = st.design.config();
    let secret = cfg.and_then(|c| c.webhook_secret.as_deref());
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    lariat_source::verify_signature(secret, &body, signature)?;
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitea-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event == "ping" {
        return Ok(Json(json!({ "ignored": "ping" })));
    }
    let push = PushEvent::parse(&body)?;
    let branch = cfg.map(|c| c.branch.as_str()).unwrap_or("");
    if !push.concerns(branch) {
        return Ok(Json(json!({
            "ignored": format!("{} is not the design branch {branch} or a tag", push.git_ref)
        })));
    }
    let rev = st.design.sync(Trigger::Webhook).await?;
    Ok(Json(json!({ "revision": rev })))
}
