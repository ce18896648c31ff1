//! The web UI that `lariat server` (and an agent, for its own site) serves at `/`:
//! server-rendered pages, compiled into the binary with their stylesheet and one small
//! script, so building needs no Node and no network beyond crates.
//!
//! Every page is made from answers of the REST API, called in process with the session's
//! token ([`api::Api`]), so roles, validation and the audit trail are the API's own. A
//! sign-in exchanges an API token for a session cookie (HttpOnly, SameSite=Strict); every
//! mutating form carries the session's CSRF token and is refused without it, and a request
//! whose `Origin` is another site's is refused too. A mutation is confirmed on a page of
//! its own that names what it will do, so the pages work without the script; the script
//! only follows a run live (SSE) and refreshes lists.
//!
//! Routes: `/` (to the runs), `/ui/signin`, `/ui/signout`, `/ui/runs`, `/ui/runs/{id}`
//! (and its verbs, and `/stream`), `/ui/submit`, `/ui/hosts`, `/ui/hosts/{name}`,
//! `/ui/sites`, `/ui/design`, `/ui/windows`, `/ui/static/*`. Anything else goes to the API.

mod api;
mod dag;
mod error;
mod extract;
mod pages;
mod render;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use api::Api;
pub use api::ApiFailure;
pub use error::UiError;
use lariat_api_types::{SiteList, SiteStatus};
use session::Sessions;

/// How the UI's sessions behave.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// A session without a request for this long ends.
    pub session_idle: Duration,
    /// A session ends this long after its sign-in, used or not.
    pub session_max_age: Duration,
    /// Mark the cookie `Secure` (the listener speaks TLS).
    pub secure_cookie: bool,
    /// Served by a site agent: its API knows its own runs and hosts, not the other sites.
    pub site_agent: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            session_idle: Duration::from_secs(3600),
            session_max_age: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            site_agent: false,
        }
    }
}

/// What every page handler shares.
pub(crate) struct Ui {
    pub(crate) api: Api,
    pub(crate) sessions: Sessions,
    pub(crate) cfg: UiConfig,
}

impl Ui {
    /// `GET path` of the API for the session. An answer of 401 means the API no longer
    /// takes the session's token: the session ends with it.
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        s: &session::Session,
        path: &str,
    ) -> Result<T, ApiFailure> {
        let answer = self.api.get(s.caller(), path).await;
        self.ended_by(s, answer)
    }

    /// `POST path` of the API for the session, ending it on a 401 as [`Ui::get`] does.
    pub(crate) async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        s: &session::Session,
        path: &str,
        body: &B,
    ) -> Result<T, ApiFailure> {
        let answer = self.api.post(s.caller(), path, body).await;
        self.ended_by(s, answer)
    }

    /// The sites as the central node sees them; none at a site agent, which knows only
    /// its own.
    pub(crate) async fn sites(&self, s: &session::Session) -> Result<Vec<SiteStatus>, ApiFailure> {
        if self.cfg.site_agent {
            return Ok(Vec::new());
        }
        let list: SiteList = self.get(s, "/v1/sites").await?;
        Ok(list.sites)
    }

    /// The raw answer of `GET path` for the session, for a stream the page passes
    /// through; a 401 ends the session as [`Ui::get`] does.
    pub(crate) async fn stream(
        &self,
        s: &session::Session,
        path: &str,
        extra: &[(axum::http::HeaderName, String)],
    ) -> Result<axum::response::Response, ApiFailure> {
        let answer = self
            .api
            .send(s.caller(), axum::http::Method::GET, path, None, extra)
            .await;
        if let Ok(res) = &answer
            && res.status() == axum::http::StatusCode::UNAUTHORIZED
        {
            self.sessions.close(&s.id);
        }
        self.ended_by(s, answer)
    }

    fn ended_by<T>(
        &self,
        s: &session::Session,
        answer: Result<T, ApiFailure>,
    ) -> Result<T, ApiFailure> {
        if let Err(f) = &answer
            && f.status == axum::http::StatusCode::UNAUTHORIZED
        {
            self.sessions.close(&s.id);
        }
        answer
    }
}

/// The UI's routes in front of `api`, which answers every other path and every call the
/// pages make.
pub fn mount(api: Router, cfg: UiConfig) -> Router {
    let ui = Arc::new(Ui {
        api: Api::new(api.clone()),
        sessions: Sessions::new(cfg.session_idle, cfg.session_max_age),
        cfg,
    });
    use pages::{design, hosts, run, runs, signin, sites, submit, windows};
    Router::new()
        .route("/", get(runs::home))
        .route("/ui", get(runs::home))
        .route("/ui/static/{file}", get(render::asset))
        .route("/ui/signin", get(signin::form).post(signin::sign_in))
        .route("/ui/signout", post(signin::sign_out))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(run::detail))
        .route("/ui/runs/{id}/stream", get(run::stream))
        .route("/ui/runs/{id}/verb", post(run::verb))
        .route("/ui/submit", get(submit::form).post(submit::submit))
        .route("/ui/hosts", get(hosts::list))
        .route("/ui/hosts/{name}", get(hosts::detail))
        .route("/ui/sites", get(sites::list))
        .route("/ui/design", get(design::overview))
        .route("/ui/windows", get(windows::list))
        .route("/ui/{*rest}", get(error::no_page).post(error::no_page))
        .with_state(ui)
        .fallback_service(api)
}
