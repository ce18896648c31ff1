//! A typed client of Lariat's REST API: the CLI, the benchmarks and the end-to-end tests
//! talk to a server through it, in the request and response types the server itself
//! answers with ([`lariat_api_types`]).
//!
//! Every call returns the route's documented body, or a [`ClientError`] that carries the
//! server's message, status and code as it sent them.

mod error;
mod sse;

use std::time::Duration;

use lariat_api_types::{
    AgentHello, BatchAnswer, DesignFiles, DesignOverview, ErrorBody, EventBatch, EventPage,
    EventsQuery, Health, HostList, HostsQuery, LinkCursor, ListRunsQuery, PinSite, QueuedCommand,
    Registered, ResolvedHost, RetryStep, Revision, RevisionFindings, Run, RunDetail, RunEvent,
    RunPage, SignalStep, SiteList, SitePin, SubmitRun, SyncAnswer, SyncRequest, ValidationReport,
    WorkflowDetail, WorkflowList, WorkflowVersion,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use error::ClientError;
pub use lariat_api_types as types;
pub use sse::EventStream;

/// The text format of a workflow definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionFormat {
    Yaml,
    Json,
}

/// What a verb did: done on a run of the server's own (the run as it is now), or queued
/// for the site agent that owns the run (the command, to follow).
#[derive(Debug, Clone)]
pub enum Verbed {
    Done(Run),
    Queued(QueuedCommand),
}

/// What a submit did: started `run`, or found the run its idempotency key started before.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run: Run,
    pub created: bool,
}

/// A client of one server. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For event streams, which must not time out.
    streaming: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// TLS material of a client, as PEM.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// A certificate chain and its private key, in one PEM buffer.
    pub identity: Option<Vec<u8>>,
    /// CA certificates the server's certificate must chain to.
    pub ca: Option<Vec<u8>>,
}

/// An error answer: the API's error body, or whatever else came.
fn error_answer(status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
            details: b.error.details,
        },
        Err(_) => ClientError::Http {
            status: status.to_string(),
            body: text.trim().to_string(),
        },
    }
}

/// Percent-encode one path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the server at `base` (`http://host:port`), sending `token` as a bearer
    /// token when given. Requests time out after 60 s, event streams never.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Self::with_http(base, token, http)
    }

    /// As [`new`](Self::new), for an `https://` server whose certificate `tls.ca`
    /// signs (the system's roots when absent), presenting `tls.identity` as a client
    /// certificate when given.
    pub fn with_tls(
        base: &str,
        token: Option<String>,
        tls: &ClientTls,
    ) -> Result<Client, ClientError> {
        let build = |b: reqwest::ClientBuilder| -> Result<reqwest::Client, ClientError> {
            let mut b = b.connect_timeout(Duration::from_secs(5));
            if let Some(ca) = &tls.ca {
                let roots = reqwest::Certificate::from_pem_bundle(ca)
                    .map_err(|e| ClientError::Build(format!("the CA certificates: {e}")))?;
                b = b.tls_certs_only(roots);
            }
            if let Some(pem) = &tls.identity {
                let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                    ClientError::Build(format!("the client certificate and key: {e}"))
                })?;
                b = b.identity(id);
            }
            b.build().map_err(|e| ClientError::Build(e.to_string()))
        };
        let http = build(reqwest::Client::builder().timeout(Duration::from_secs(60)))?;
        let mut c = Self::with_http(base, token, http)?;
        c.streaming = build(reqwest::Client::builder())?;
        Ok(c)
    }

    /// As [`new`](Self::new), over a `reqwest` client of the caller's (a benchmark's pool
    /// and timeouts).
    pub fn with_http(
        base: &str,
        token: Option<String>,
        http: reqwest::Client,
    ) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::BadUrl(base));
        }
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Client {
            http,
            streaming,
            base,
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_on(&self.http, method, path)
    }

    fn request_on(&self, http: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        let rb = http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            base: self.base.clone(),
            detail: error::innermost(&e),
        }
    }

    /// Send; an error answer becomes [`ClientError::Api`] (or `Http` without the API's
    /// error body). Returns the status and the body's text.
    async fn exchange(&self, rb: RequestBuilder) -> Result<(StatusCode, String), ClientError> {
        let res = rb.send().await.map_err(|e| self.unreachable(e))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return Ok((status, text));
        }
        Err(error_answer(status, &text))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
    ) -> Result<(StatusCode, T), ClientError> {
        let (status, text) = self.exchange(rb).await?;
        let v = serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            status: status.as_u16(),
            what: std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("the documented body"),
            detail: e.to_string(),
        })?;
        Ok((status, v))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.call(self.request(Method::GET, path)).await?.1)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, T), ClientError> {
        let rb = self.request(Method::POST, path);
        let rb = match body {
            Some(b) => rb.json(b),
            None => rb,
        };
        self.call(rb).await
    }

    // ---- workflows ----------------------------------------------------------------

    /// Register a definition; a change makes a new version (`created`).
    pub async fn register_workflow(
        &self,
        text: String,
        format: DefinitionFormat,
    ) -> Result<Registered, ClientError> {
        let ct = match format {
            DefinitionFormat::Yaml => "application/yaml",
            DefinitionFormat::Json => "application/json",
        };
        let rb = self
            .request(Method::POST, "/v1/workflows")
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(text);
        Ok(self.call(rb).await?.1)
    }

    /// The latest version of every workflow.
    pub async fn workflows(&self) -> Result<WorkflowList, ClientError> {
        self.get("/v1/workflows").await
    }

    /// A workflow's latest version and the numbers of all its versions.
    pub async fn workflow(&self, name: &str) -> Result<WorkflowDetail, ClientError> {
        self.get(&format!("/v1/workflows/{}", encode(name))).await
    }

    /// One version of a workflow.
    pub async fn workflow_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<WorkflowVersion, ClientError> {
        self.get(&format!(
            "/v1/workflows/{}/versions/{version}",
            encode(name)
        ))
        .await
    }

    // ---- runs ---------------------------------------------------------------------

    /// Start a run.
    pub async fn submit(&self, req: &SubmitRun) -> Result<Submitted, ClientError> {
        let (status, run) = self.post("/v1/runs", Some(req)).await?;
        Ok(Submitted {
            run,
            created: status == StatusCode::CREATED,
        })
    }

    /// A page of runs, newest first.
    pub async fn runs(&self, q: &ListRunsQuery) -> Result<RunPage, ClientError> {
        let rb = self.request(Method::GET, "/v1/runs").query(q);
        Ok(self.call(rb).await?.1)
    }

    /// A run with every step and attempt.
    pub async fn run(&self, id: Uuid) -> Result<RunDetail, ClientError> {
        self.get(&format!("/v1/runs/{id}")).await
    }

    /// A run's detail as the server sent it, not decoded: for a caller that only passes
    /// it on, or measures the server (decoding costs the caller, not the server; on a
    /// shared machine it halves the read rate a benchmark sees).
    pub async fn run_body(&self, id: Uuid) -> Result<bytes::Bytes, ClientError> {
        let res = self
            .request(Method::GET, &format!("/v1/runs/{id}"))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = res.status();
        if !status.is_success() {
            let text = res.text().await.map_err(|e| self.unreachable(e))?;
            return Err(error_answer(status, &text));
        }
        res.bytes().await.map_err(|e| self.unreachable(e))
    }

    /// A page of a run's history after `q.after`.
    pub async fn events(&self, id: Uuid, q: &EventsQuery) -> Result<EventPage, ClientError> {
        let rb = self
            .request(Method::GET, &format!("/v1/runs/{id}/events"))
            .query(q);
        Ok(self.call(rb).await?.1)
    }

    /// A run's whole history, page by page.
    pub async fn all_events(&self, id: Uuid) -> Result<Vec<RunEvent>, ClientError> {
        let mut all = Vec::new();
        let mut q = EventsQuery {
            after: Some(0),
            limit: Some(1000),
        };
        loop {
            let page = self.events(id, &q).await?;
            all.extend(page.events);
            match page.next_after {
                Some(n) => q.after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Follow a run's events live, after the event with seq `after` (0: from the start).
    pub async fn follow(&self, id: Uuid, after: i64) -> Result<EventStream, ClientError> {
        let rb = self
            .request_on(
                &self.streaming,
                Method::GET,
                &format!("/v1/runs/{id}/events/stream"),
            )
            .header("Last-Event-ID", after.to_string())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let res = rb.send().await.map_err(|e| self.unreachable(e))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(error_answer(status, &text));
        }
        Ok(EventStream::new(res, &self.base))
    }

    async fn verb(&self, id: Uuid, verb: &str) -> Result<Verbed, ClientError> {
        self.verb_with::<()>(&format!("/v1/runs/{id}/{verb}"), None)
            .await
    }

    async fn verb_with<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Verbed, ClientError> {
        let rb = self.request(Method::POST, path);
        let rb = match body {
            Some(b) => rb.json(b),
            None => rb,
        };
        let (status, text) = self.exchange(rb).await?;
        let decode = |what: &'static str, e: serde_json::Error| ClientError::Decode {
            status: status.as_u16(),
            what,
            detail: e.to_string(),
        };
        if status == StatusCode::ACCEPTED {
            serde_json::from_str(&text)
                .map(Verbed::Queued)
                .map_err(|e| decode("QueuedCommand", e))
        } else {
            serde_json::from_str(&text)
                .map(Verbed::Done)
                .map_err(|e| decode("Run", e))
        }
    }

    /// Stop a run: running attempts are told to stop, nothing more starts.
    pub async fn cancel(&self, id: Uuid) -> Result<Verbed, ClientError> {
        self.verb(id, "cancel").await
    }

    /// Start no new attempts until resumed.
    pub async fn pause(&self, id: Uuid) -> Result<Verbed, ClientError> {
        self.verb(id, "pause").await
    }

    pub async fn resume(&self, id: Uuid) -> Result<Verbed, ClientError> {
        self.verb(id, "resume").await
    }

    /// Run the compensations of the succeeded steps, in reverse order.
    pub async fn rollback(&self, id: Uuid) -> Result<Verbed, ClientError> {
        self.verb(id, "rollback").await
    }

    /// Retry a failed step and everything after it, with new input when given.
    pub async fn retry(
        &self,
        id: Uuid,
        step: &str,
        req: Option<&RetryStep>,
    ) -> Result<Verbed, ClientError> {
        let path = format!("/v1/runs/{id}/steps/{}/retry", encode(step));
        self.verb_with(&path, req).await
    }

    /// Deliver a signal to a step waiting for one.
    pub async fn signal(
        &self,
        id: Uuid,
        step: &str,
        req: &SignalStep,
    ) -> Result<Verbed, ClientError> {
        let path = format!("/v1/runs/{id}/steps/{}/signal", encode(step));
        self.verb_with(&path, Some(req)).await
    }

    // ---- design -------------------------------------------------------------------

    /// The design source, its newest `limit` revisions and the site pins.
    pub async fn designs(&self, limit: u32) -> Result<DesignOverview, ClientError> {
        self.get(&format!("/v1/designs?limit={limit}")).await
    }

    /// A recorded revision (7 hex digits or more) and its findings.
    pub async fn findings(&self, rev: &str) -> Result<RevisionFindings, ClientError> {
        self.get(&format!("/v1/designs/{}/findings", encode(rev)))
            .await
    }

    /// Validate a design without recording it.
    pub async fn validate_design(
        &self,
        files: &DesignFiles,
    ) -> Result<ValidationReport, ClientError> {
        Ok(self.post("/v1/designs/validate", Some(files)).await?.1)
    }

    /// Fetch the design branch now; answers the head's revision.
    pub async fn sync_design(&self) -> Result<Revision, ClientError> {
        Ok(self.post::<(), _>("/v1/designs/sync", None).await?.1)
    }

    /// Hold `site` to a revision or tag.
    pub async fn pin(&self, site: &str, rev: &str) -> Result<SitePin, ClientError> {
        let rb = self
            .request(Method::PUT, &format!("/v1/sites/{}/pin", encode(site)))
            .json(&PinSite {
                rev: rev.to_string(),
            });
        Ok(self.call(rb).await?.1)
    }

    /// Let `site` follow the active design again.
    pub async fn unpin(&self, site: &str) -> Result<(), ClientError> {
        let rb = self.request(Method::DELETE, &format!("/v1/sites/{}/pin", encode(site)));
        self.exchange(rb).await.map(|_| ())
    }

    /// The hosts of the active design a node filter selects.
    pub async fn hosts(&self, q: &HostsQuery) -> Result<HostList, ClientError> {
        let rb = self.request(Method::GET, "/v1/hosts").query(q);
        Ok(self.call(rb).await?.1)
    }

    /// A host of the active design after profile inheritance.
    pub async fn resolved_host(&self, name: &str) -> Result<ResolvedHost, ClientError> {
        self.get(&format!("/v1/hosts/{}/resolved", encode(name)))
            .await
    }

    // ---- inventory, drift and reconciliation ---------------------------------------

    /// A page of the inventory.
    pub async fn inventory(
        &self,
        q: &lariat_api_types::InventoryQuery,
    ) -> Result<lariat_api_types::HostPage, ClientError> {
        let rb = self.request(Method::GET, "/v1/inventory/hosts").query(q);
        Ok(self.call(rb).await?.1)
    }

    /// One host of the inventory: its facts, firmware, history and drift.
    pub async fn inventory_host(
        &self,
        name: &str,
    ) -> Result<lariat_api_types::HostDetail, ClientError> {
        self.get(&format!("/v1/inventory/hosts/{}", encode(name)))
            .await
    }

    /// How the selected hosts differ from their design.
    pub async fn drift(
        &self,
        q: &lariat_api_types::DriftQuery,
    ) -> Result<lariat_api_types::DriftReport, ClientError> {
        let rb = self.request(Method::GET, "/v1/drift").query(q);
        Ok(self.call(rb).await?.1)
    }

    /// Submit (or, with `dry_run`, plan) the workflows that fix the drift.
    pub async fn reconcile(
        &self,
        req: &lariat_api_types::ReconcileRequest,
    ) -> Result<lariat_api_types::ReconcileOutcome, ClientError> {
        Ok(self.post("/v1/reconcile", Some(req)).await?.1)
    }

    // ---- tokens and the audit trail ------------------------------------------------

    /// Every API token, without secrets (admin).
    pub async fn tokens(&self) -> Result<lariat_api_types::TokenList, ClientError> {
        self.get("/v1/tokens").await
    }

    /// Create a token; its secret is in this answer only (admin).
    pub async fn create_token(
        &self,
        req: &lariat_api_types::CreateToken,
    ) -> Result<lariat_api_types::CreatedToken, ClientError> {
        Ok(self.post("/v1/tokens", Some(req)).await?.1)
    }

    /// Revoke a token, at once (admin).
    pub async fn revoke_token(&self, name: &str) -> Result<lariat_api_types::Token, ClientError> {
        let rb = self.request(Method::DELETE, &format!("/v1/tokens/{}", encode(name)));
        Ok(self.call(rb).await?.1)
    }

    /// A page of the audit trail, newest first (admin).
    pub async fn audit(
        &self,
        q: &lariat_api_types::AuditQuery,
    ) -> Result<lariat_api_types::AuditPage, ClientError> {
        let rb = self.request(Method::GET, "/v1/audit").query(q);
        Ok(self.call(rb).await?.1)
    }

    // ---- maintenance windows ----------------------------------------------------------

    /// Every window of the design in force, open or not, with its next openings.
    pub async fn windows(&self) -> Result<lariat_api_types::WindowList, ClientError> {
        self.get("/v1/windows").await
    }

    /// One window, with the steps waiting on it.
    pub async fn window(&self, name: &str) -> Result<lariat_api_types::WindowDetail, ClientError> {
        self.get(&format!("/v1/windows/{}", encode(name))).await
    }

    /// Opens a window (`open`) or closes it (`close`) by an override that expires by
    /// itself.
    pub async fn override_window(
        &self,
        name: &str,
        action: &str,
        req: &lariat_api_types::OverrideRequest,
    ) -> Result<lariat_api_types::WindowOverride, ClientError> {
        let path = format!("/v1/windows/{}/{}", encode(name), encode(action));
        Ok(self.post(&path, Some(req)).await?.1)
    }

    /// Ends a window's overrides in force.
    pub async fn clear_window(
        &self,
        name: &str,
        req: &lariat_api_types::ClearOverrides,
    ) -> Result<lariat_api_types::ClearedOverrides, ClientError> {
        let path = format!("/v1/windows/{}/clear", encode(name));
        Ok(self.post(&path, Some(req)).await?.1)
    }

    // ---- sites and the agents' link -------------------------------------------------

    /// Every site, with its agent's health.
    pub async fn sites(&self) -> Result<SiteList, ClientError> {
        self.get("/v1/sites").await
    }

    /// A command queued for a site agent.
    pub async fn command(&self, id: &str) -> Result<QueuedCommand, ClientError> {
        self.get(&format!("/v1/commands/{}", encode(id))).await
    }

    /// A site agent says who it is (with its site's credential as the token).
    pub async fn agent_hello(&self, hello: &AgentHello) -> Result<LinkCursor, ClientError> {
        Ok(self.post("/v1/agent/hello", Some(hello)).await?.1)
    }

    /// What travels to a site agent.
    pub async fn agent_sync(&self, req: &SyncRequest) -> Result<SyncAnswer, ClientError> {
        Ok(self.post("/v1/agent/sync", Some(req)).await?.1)
    }

    /// A site agent's events, for the centre to apply.
    pub async fn agent_events(&self, batch: &EventBatch) -> Result<BatchAnswer, ClientError> {
        Ok(self.post("/v1/agent/events", Some(batch)).await?.1)
    }

    // ---- operations ---------------------------------------------------------------

    /// Readiness: the executor answers and the store can be read.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.get("/readyz").await
    }

    /// The Prometheus metrics text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        Ok(self
            .exchange(self.request(Method::GET, "/metrics"))
            .await?
            .1)
    }
}
