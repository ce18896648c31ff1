//! Signing in with an API token, and out.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use lariat_api_types::Identity;
use serde::Deserialize;

use crate::Ui;
use crate::api::Caller;
use crate::error::UiError;
use crate::extract::{Fields, Mutation, PageQuery, client, same_origin};
use crate::render::page;
use crate::session::COOKIE;

#[derive(Debug, Deserialize)]
pub(crate) struct SignInQuery {
    #[serde(default)]
    why: String,
    #[serde(default)]
    next: String,
}

/// The sign-in form, saying why it is shown.
pub(crate) async fn form(PageQuery(q): PageQuery<SignInQuery>) -> Result<Response, UiError> {
    let notice = match q.why.as_str() {
        "expired" => Some("Your session expired: sign in again."),
        "out" => Some("You are signed out."),
        "revoked" => Some(
            "The API no longer accepts your session's token (revoked, or past its expiry): sign in with another.",
        ),
        _ => None,
    };
    signin_page(StatusCode::OK, notice, None, &q.next)
}

fn signin_page(
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
    next: &str,
) -> Result<Response, UiError> {
    let html = page::<UiError>(
        None,
        "signin.html",
        "signin",
        serde_json::json!({ "notice": notice, "error": error, "next": next }),
    )?;
    Ok((status, html).into_response())
}

/// Exchange a token for a session: the API says whose it is and what it may do.
pub(crate) async fn sign_in(State(ui): State<Arc<Ui>>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    same_origin(&parts)?;
    let from = client(&parts);
    let Form(pairs) =
        Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), &ui)
            .await
            .map_err(|e| UiError::BadInput(format!("the form does not read: {e}")))?;
    let fields = Fields(pairs);
    let next = fields.get("next");
    let token = fields.get("token");
    if token.is_empty() {
        return signin_page(
            StatusCode::BAD_REQUEST,
            None,
            Some("paste an API token (an admin makes one with `lariat token create`)"),
            next,
        );
    }
    let who: Identity = match ui.api.get(Caller { token, from }, "/v1/whoami").await {
        Ok(who) => who,
        Err(f) => return signin_page(f.status, None, Some(&f.message), next),
    };
    let session = ui.sessions.open(token, who.name, who.role);
    // Only a page of this UI, and only what a Location header may carry.
    let to = if next.starts_with("/ui/")
        && !next.starts_with("/ui/signin")
        && next.bytes().all(|b| b.is_ascii_graphic())
    {
        next
    } else {
        "/ui/runs"
    };
    let secure = if ui.cfg.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        session.id
    );
    let mut res = Redirect::to(to).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        cookie
            .parse()
            .map_err(|_| UiError::Render("the session cookie".into()))?,
    );
    Ok(res)
}

/// End the session and drop its cookie.
pub(crate) async fn sign_out(State(ui): State<Arc<Ui>>, m: Mutation) -> Response {
    ui.sessions.close(&m.session.id);
    let mut res = Redirect::to("/ui/signin?why=out").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "lariat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    res
}
