//! Tokens and the audit trail, for admins.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lariat_api_types::{
    AuditPage, AuditQuery, CreateToken, CreatedToken, ErrorBody, Identity, TokenList,
};

use crate::audit::AuditError;
use crate::auth::{Admin, Viewer};
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::tokens::{Expiry, Role, TokenError};

impl From<TokenError> for HttpError {
    fn from(e: TokenError) -> Self {
        let message = e.to_string();
        match e {
            TokenError::NameTaken(_) => HttpError::new(StatusCode::CONFLICT, "name_taken", message),
            TokenError::InvalidName(_) => HttpError::bad_request("invalid_input", message),
            TokenError::Unknown(_) => HttpError::not_found(message),
            TokenError::AlreadyRevoked { .. } => {
                HttpError::new(StatusCode::CONFLICT, "already_revoked", message)
            }
            e @ (TokenError::Db(_) | TokenError::Sql(_) | TokenError::Corrupt { .. }) => {
                HttpError::storage("managing tokens", &e, e.is_outage())
            }
        }
    }
}

impl From<AuditError> for HttpError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Limit(_) => HttpError::bad_request("invalid_query", e.to_string()),
            e @ (AuditError::Db(_) | AuditError::Sql(_) | AuditError::Stopped) => {
                HttpError::storage("reading the audit trail", &e, e.is_outage())
            }
        }
    }
}

/// Every API token, oldest first, with its state and last use; never a secret.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "access",
    responses((status = 200, body = TokenList)),
    security(("bearer" = ["admin"])),
)]
pub async fn list_tokens(
    Admin(_caller): Admin,
    State(st): State<Arc<AppState>>,
) -> Result<Json<TokenList>, HttpError> {
    let now = lariat_db::now_ms();
    let tokens = st.tokens.list().await?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(|t| t.dto(now)).collect(),
    }))
}

/// Create a token. Its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "access",
    request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, description = "An unknown role, a bad name or expiry", body = ErrorBody),
        (status = 409, description = "The name is or was another token's", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn create_token(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), HttpError> {
    let role: Role = req
        .role
        .parse()
        .map_err(|e: String| HttpError::bad_request("invalid_input", format!("`role`: {e}")))?;
    let expiry: Expiry = match &req.expires {
        Some(text) => text.parse().map_err(|e: String| {
            HttpError::bad_request("invalid_input", format!("`expires`: {e}"))
        })?,
        None => Expiry::default(),
    };
    let t = st
        .tokens
        .create(role, req.name.as_deref(), expiry, &caller.audit_actor())
        .await?;
    let now = t.info.created_at;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: t.token,
            info: t.info.dto(now),
        }),
    ))
}

/// Revoke a token: refused from the next request on, by every process on this database.
/// Its row stays, so it is listed and its name is not given again.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "access",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Revoked; the token as it is now", body = lariat_api_types::Token),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke_token(
    Admin(caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<lariat_api_types::Token>, HttpError> {
    let t = st.tokens.revoke(&name, &caller.audit_actor()).await?;
    st.auth.forget();
    Ok(Json(t.dto(lariat_db::now_ms())))
}

/// The audit trail, newest first: operator verbs, tokens created and revoked, design
/// syncs asked for and pins, window overrides, workflows registered.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "access",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list_audit(
    Admin(_caller): Admin,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, HttpError> {
    // What this server answered before is in the page: its queued entries go in first.
    st.audit.flush().await;
    Ok(Json(st.audit.page(&q).await?))
}

/// The token this request carries: its name and role. Any valid token may ask, so a
/// client (the web UI's sign-in) learns what it may offer before offering it.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "access",
    responses((status = 200, body = Identity)),
    security(("bearer" = ["viewer"])),
)]
pub async fn whoami(Viewer(caller): Viewer) -> Json<Identity> {
    Json(Identity {
        name: caller.name.to_string(),
        role: caller.role.to_string(),
    })
}
