//! The design: its revisions and findings, validation of a proposed design, the resolved
//! hosts of the active design, site pins, and the git push webhook.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use lariat_api_types::{
    DesignFiles, DesignOverview, DesignSource, HostList, HostsQuery, PinSite, Revision,
    RevisionFindings, RevisionsQuery, SitePin, ValidationReport, WebhookOutcome,
};
use lariat_source::{PushEvent, SourceError, Trigger, WebhookError};
use lariat_workflows::design::{self, NodeFilter};
use serde_json::{Value, json};

use crate::audit::AuditActor;
use crate::auth::{Admin, Viewer};
use crate::convert::Dto;
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, media_type};
use crate::state::AppState;
use lariat_api_types::ErrorBody;

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
            e @ (SourceError::Database(_) | SourceError::Sql(_) | SourceError::Corrupt(_)) => {
                HttpError::storage(
                    "reading or writing design revisions",
                    &message,
                    e.is_outage(),
                )
            }
        }
    }
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
    let source = st.design.config().map(|c| DesignSource {
        repo: lariat_source::redact_url(&c.repo),
        branch: c.branch.clone(),
        poll_seconds: c.poll.map(|d| d.as_secs()),
        webhook: c.webhook_secret.is_some(),
    });
    let active = st.design.active();
    let revisions = match st.design.config() {
        Some(_) => st.design.revisions(limit).await?,
        None => Vec::new(),
    };
    Ok(Json(DesignOverview {
        source,
        active: active.revision.as_ref().map(Dto::dto),
        revisions: revisions.iter().map(Dto::dto).collect(),
        pins: st.design.pins().await?.iter().map(Dto::dto).collect(),
    }))
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
        revision: (&revision).dto(),
        findings: findings.iter().map(Dto::dto).collect(),
    }))
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
    let r = &loaded.report;
    Ok(Json(ValidationReport {
        valid: !r.has_errors(),
        errors: r.errors().count(),
        warnings: r.warnings().count(),
        findings: r.findings.iter().map(Dto::dto).collect(),
    }))
}

/// Fetches the design branch now, as a push webhook would.
#[utoipa::path(
    post,
    path = "/v1/designs/sync",
    tag = "designs",
    responses(
        (status = 200, description = "The head's revision: active, or rejected with its findings", body = Revision),
        (status = 409, description = "No design repository configured", body = ErrorBody),
        (status = 502, description = "The repository could not be fetched", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn sync_design(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
) -> Result<Json<Revision>, HttpError> {
    let rev = st.design.sync(Trigger::Manual).await?;
    let rev = (&rev).dto();
    let detail = json!({ "commit": rev.commit, "status": rev.status });
    st.audit(&caller, "design.sync", "design", detail).await;
    Ok(Json(rev))
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
        (status = 200, description = "The pin", body = SitePin),
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
) -> Result<Json<SitePin>, HttpError> {
    let pin = st.design.pin(&site, &req.rev, &caller.name).await?;
    let pin = (&pin).dto();
    let detail = json!({ "rev": req.rev, "commit": pin.commit });
    st.audit(&caller, "site.pin", &site, detail).await;
    Ok(Json(pin))
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
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiPath(site): ApiPath<String>,
) -> Result<StatusCode, HttpError> {
    if st.design.unpin(&site).await? {
        st.audit(&caller, "site.unpin", &site, json!({})).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::not_found(format!("site {site} has no pin")))
    }
}

/// The node filter a `GET /v1/hosts` query spells.
pub(crate) fn filter_of(q: &HostsQuery) -> Result<NodeFilter, HttpError> {
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
    for pair in list(&q.labels) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(HttpError::bad_request(
                "invalid_query",
                format!("label {pair:?} must be key=value"),
            ));
        };
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let doc = json!({
        "names": list(&q.names),
        "labels": labels,
        "racks": list(&q.racks),
        "sites": list(&q.sites),
        "mode": q.mode.as_deref().unwrap_or("intersection"),
    });
    serde_json::from_value(doc)
        .map_err(|e| HttpError::bad_request("invalid_query", format!("node filter: {e}")))
}

/// The active design's hosts a node filter selects, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "designs",
    params(HostsQuery),
    responses(
        (status = 200, body = HostList),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_hosts(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<HostsQuery>,
) -> Result<Json<HostList>, HttpError> {
    let active = st.design.active();
    let hosts = active.loaded.design.select(&filter_of(&q)?);
    Ok(Json(HostList {
        revision: active.revision.as_ref().map(|r| r.commit.clone()),
        hosts,
    }))
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
    serde_json::to_value(&host)
        .map(Json)
        .map_err(|e| HttpError::internal("encoding a resolved host", &e))
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
        (status = 200, description = "The revision fetched, or why the push was ignored", body = WebhookOutcome),
        (status = 401, description = "Missing or wrong signature", body = ErrorBody),
        (status = 403, description = "No webhook secret configured", body = ErrorBody),
        (status = 502, description = "The repository could not be fetched", body = ErrorBody),
    ),
)]
pub async fn git_webhook(
    State(st): State<Arc<AppState>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookOutcome>, HttpError> {
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
        return Ok(Json(WebhookOutcome::Ignored {
            ignored: "ping".into(),
        }));
    }
    let push = PushEvent::parse(&body)?;
    let branch = cfg.map(|c| c.branch.as_str()).unwrap_or("");
    if !push.concerns(branch) {
        return Ok(Json(WebhookOutcome::Ignored {
            ignored: format!(
                "{} is not the design branch {branch} or a tag",
                push.git_ref
            ),
        }));
    }
    let rev = st.design.sync(Trigger::Webhook).await?;
    let revision = (&rev).dto();
    let by = AuditActor {
        who: "webhook".into(),
        role: None,
        from: extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
    };
    let detail =
        json!({ "ref": push.git_ref, "commit": revision.commit, "status": revision.status });
    if let Err(e) = st.audit.record(&by, "design.sync", "design", detail).await {
        tracing::error!("cannot write the audit trail: {e}");
    }
    Ok(Json(WebhookOutcome::Fetched { revision }))
}
