//! What a page handler is given: the signed-in session, and for a mutation the form's
//! fields once its CSRF token and origin were checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};

use crate::Ui;
use crate::error::UiError;
use crate::session::{COOKIE, NoSession, Session, same_secret};

/// Sent by the page script when it refreshes a page or follows a stream: not the operator
/// looking, so the session's flash message stays for the next page they open.
pub(crate) const REFRESH: &str = "x-lariat-refresh";

/// The session of a signed-in browser. Without one, a page redirects to the sign-in form
/// (and back to itself after).
pub(crate) struct Signed(pub Session);

impl FromRequestParts<Arc<Ui>> for Signed {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, UiError> {
        let refresh = parts.headers.contains_key(REFRESH);
        session_of(parts, ui, refresh).map(Signed)
    }
}

/// The session of a browser following a stream: never the operator looking (an
/// `EventSource` cannot send [`REFRESH`]), so it is taken as a refresh.
pub(crate) struct Following(pub Session);

impl FromRequestParts<Arc<Ui>> for Following {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, UiError> {
        session_of(parts, ui, true).map(Following)
    }
}

/// The browser's address, for the API calls made for it.
pub(crate) fn client(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

fn session_of(parts: &Parts, ui: &Ui, refresh: bool) -> Result<Session, UiError> {
    let next = if parts.method == Method::GET {
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default()
    } else {
        // After a sign-in, a form's POST cannot be replayed: go back to its page.
        referer_path(parts).unwrap_or_else(|| "/ui/runs".into())
    };
    let id = cookie(parts, COOKIE).ok_or(UiError::SignIn {
        why: NoSession::Missing,
        next: next.clone(),
    })?;
    let mut session = ui
        .sessions
        .get(&id, refresh)
        .map_err(|why| UiError::SignIn { why, next })?;
    session.from = client(parts);
    Ok(session)
}

/// The fields of a form, in order; the last value of a repeated name wins.
#[derive(Debug, Default)]
pub(crate) struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The field's value, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }

    pub fn as_map(&self) -> HashMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// A mutating form of a signed-in session: refused unless it carries the session's CSRF
/// token and, when the browser names its origin, comes from this host.
pub(crate) struct Mutation {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<Arc<Ui>> for Mutation {
    type Rejection = UiError;

    async fn from_request(req: Request, ui: &Arc<Ui>) -> Result<Self, UiError> {
        let (mut parts, body) = req.into_parts();
        same_origin(&parts)?;
        let Signed(session) = Signed::from_request_parts(&mut parts, ui).await?;
        let req = Request::from_parts(parts, body);
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, ui)
            .await
            .map_err(|e| UiError::BadInput(format!("the form does not read: {e}")))?;
        let fields = Fields(pairs);
        let sent = fields.get("csrf");
        if sent.is_empty() {
            return Err(UiError::Forged(
                "the form carries no CSRF token, so it was not sent by a Lariat page: nothing was done".into(),
            ));
        }
        if !same_secret(sent, &session.csrf) {
            return Err(UiError::Forged(
                "the form's CSRF token is not this session's (a page from an earlier session, or a forged form): nothing was done; reload the page and try again".into(),
            ));
        }
        Ok(Mutation { session, fields })
    }
}

/// Browsers name the page a POST comes from; one from another site is refused even before
/// its CSRF token is looked at. No header (an old browser, a script) leaves the token.
pub(crate) fn same_origin(parts: &Parts) -> Result<(), UiError> {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    // HTTP/2 (what browsers speak over TLS) names the server in `:authority`, not `Host`.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    if origin == "null" || origin_host != host {
        return Err(UiError::Forged(format!(
            "the form was sent from {origin}, not from this server ({host}): nothing was done"
        )));
    }
    Ok(())
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn referer_path(parts: &Parts) -> Option<String> {
    let r = parts.headers.get(header::REFERER)?.to_str().ok()?;
    let after_scheme = r.split_once("://").map(|(_, rest)| rest).unwrap_or(r);
    let path = &after_scheme[after_scheme.find('/')?..];
    path.starts_with("/ui/").then(|| path.to_string())
}

/// A page's query string read as `T`; one that does not read is a page saying which
/// parameter is wrong, not the framework's plain-text answer.
pub(crate) struct PageQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for PageQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, UiError> {
        let raw = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(raw).map(PageQuery).map_err(|e| {
            let shown: String = raw.chars().take(200).collect();
            UiError::BadInput(format!("the link's query `{shown}` does not read: {e}"))
        })
    }
}
