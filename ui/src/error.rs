//! The UI's one error type: each renders itself as a page that says what went wrong.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::{ApiFailure, q};
use crate::render::{RenderError, error_page};
use crate::session::NoSession;

/// Why a page could not be shown or a form not be done.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No session: a page goes to the sign-in form and comes back after.
    #[error("sign in first")]
    SignIn { why: NoSession, next: String },
    /// A form without this session's CSRF token, or from another origin.
    #[error("{0}")]
    Forged(String),
    /// The API refused or failed; its sentence is shown.
    #[error("{0}")]
    Api(#[from] ApiFailure),
    /// A form or a link with a value that does not read.
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    /// A template that does not render: a bug, reported without its internals.
    #[error("rendering the page: {0}")]
    Render(String),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn { why, next } => to_sign_in(why, &next),
            // The session's token is no longer accepted; the session was closed with it.
            UiError::Api(f) if f.status == StatusCode::UNAUTHORIZED => {
                to_sign_in(NoSession::Revoked, "")
            }
            UiError::Forged(m) => error_page(StatusCode::FORBIDDEN, "Refused", &m),
            UiError::Api(f) => {
                let title = match f.status {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::UNAUTHORIZED => "Signed out",
                    s if s.is_client_error() => "Refused",
                    _ => "The server could not answer",
                };
                let status = if f.status.is_server_error() {
                    StatusCode::BAD_GATEWAY
                } else {
                    f.status
                };
                error_page(status, title, &f.message)
            }
            UiError::BadInput(m) => error_page(StatusCode::BAD_REQUEST, "Bad input", &m),
            UiError::NotFound(m) => error_page(StatusCode::NOT_FOUND, "Not found", &m),
            UiError::Render(m) => {
                tracing::error!("the UI could not render a page: {m}");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page could not be drawn",
                    "this is a bug in Lariat's UI; the server's log has the details",
                )
            }
        }
    }
}

fn to_sign_in(why: NoSession, next: &str) -> Response {
    let why = match why {
        NoSession::Missing => "signin",
        NoSession::Expired => "expired",
        NoSession::Revoked => "revoked",
    };
    let mut res = Redirect::to(&format!("/ui/signin?why={why}&next={}", q(next))).into_response();
    // The cookie names a session that is gone: drop it.
    res.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "lariat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    res
}

impl From<RenderError> for UiError {
    fn from(e: RenderError) -> Self {
        UiError::Render(e.0)
    }
}

/// A path under `/ui` that no page has.
pub(crate) async fn no_page(uri: Uri) -> UiError {
    UiError::NotFound(format!("the UI has no page {}", uri.path()))
}
