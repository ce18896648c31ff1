//! HTTP boot: the iPXE script a node chains to, its boot assets, its unattended file and
//! metadata, and the node's state callback.
//!
//! What a node boots is not decided here: a [`Nodes`] implementation (the site's glue
//! between the design and the engine) answers it. This module renders and serves.
//!
//! | route | answers |
//! |---|---|
//! | `GET /boot/ipxe?mac=…` | the node's iPXE script: its boot profile when a provisioning step waits for it, local disk otherwise |
//! | `GET /boot/assets/{path}` | staged kernels, initrds and images, with Range requests |
//! | `GET /boot/unattended` | the node's kickstart, cloud-init or ignition file (node token) |
//! | `GET /v1/metadata` | the node's own resolved data (node token) |
//! | `POST /v1/state` | the node's state and facts; signals the step waiting for it (node token, one-time) |
//!
//! A node token travels as `Authorization: Bearer <token>` or as `?token=` (for clients
//! like iPXE's `imgfetch` that cannot set headers).
//!
//! When Lariat is the DHCP server, the script (and the token in it) goes only to the
//! address DHCP leased to the MAC asked about ([`LeasedAddress`]): a neighbour on the
//! provisioning network cannot ask for another node's token by its MAC.

mod script;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
mod limit;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_http::services::ServeDir;

pub use script::{local_disk_script, provision_script};

/// A MAC address, as six bytes; parsed from `52:54:00:12:34:56` or `52-54-00-12-34-56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        let bad = || format!("{s:?} is not a MAC address (write 52:54:00:12:34:56)");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What a node boots into when a provisioning step waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootPlan {
    pub host: String,
    /// The run the node works for, shown in the script's comment.
    pub run: String,
    /// Absolute URLs.
    pub kernel: String,
    pub initrds: Vec<String>,
    /// The profile's kernel command line; the callback URL and token are appended.
    pub cmdline: String,
    /// Where the node posts its state.
    pub callback: String,
    /// The node's one-time token.
    pub token: String,
}

/// What a node with a given MAC should boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    Provision(BootPlan),
    /// No step waits for this node (or it is unknown): boot the installed system.
    LocalDisk {
        reason: String,
    },
}

/// What a node reports on `POST /v1/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateReport {
    /// The node's state, e.g. `installed`, `wiped`, `booted`: 1 to 64 letters, digits,
    /// '_', '-' or '.'.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub state: String,
    /// What the node found about itself: MACs, serial, CPU, memory, disks (an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub facts: Value,
}

/// A boot route's error answer: `{"error": {"message": "..."}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeErrorBody {
    pub error: NodeErrorDetail,
}

/// What went wrong, in words safe to show the node.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeErrorDetail {
    pub message: String,
}

/// A boot route's error answer, as every boot route (and the per-client limit) gives it.
fn error_json(status: StatusCode, message: String) -> Response {
    let body = NodeErrorBody {
        error: NodeErrorDetail { message },
    };
    (status, axum::Json(body)).into_response()
}

/// Longest `state` a node may report.
const MAX_STATE_LEN: usize = 64;

impl StateReport {
    /// A state is a word (`installed`, `wiped`); facts are an object or absent.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.state;
        if s.is_empty()
            || s.len() > MAX_STATE_LEN
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "`state` must be 1 to {MAX_STATE_LEN} letters, digits, '_', '-' or '.', not {:?}",
                s.chars().take(80).collect::<String>()
            ));
        }
        if !(self.facts.is_object() || self.facts.is_null()) {
            return Err("`facts` must be an object (MACs, serial, memory, disks...)".into());
        }
        Ok(())
    }
}

/// Why a node's request was refused. The message is safe to show the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Missing, wrong, expired or already used token: 401, nothing changes.
    #[error("{0}")]
    Unauthorized(String),
    /// The step the token is for does not wait right now (try again shortly): 409.
    #[error("{0}")]
    NotWaiting(String),
    /// The node's design has no such thing (no unattended template): 404.
    #[error("{0}")]
    NotFound(String),
    /// A failure of ours: 500, logged.
    #[error("{0}")]
    Internal(String),
}

/// The site's answers about nodes. Implementations tie the design (which host has which
/// MAC and boot profile) to the engine (which host has a step waiting for it).
#[async_trait]
pub trait Nodes: Send + Sync + 'static {
    /// What the node with `mac` boots now. A `Provision` answer carries a fresh token.
    async fn boot(&self, mac: Mac) -> Result<BootDecision, NodeError>;

    /// Records the node's report and signals the step waiting for it. The token is used
    /// up only when this succeeds; a wrong or used token changes nothing.
    async fn report(&self, token: &str, report: StateReport) -> Result<(), NodeError>;

    /// The node's own resolved data (the token is not used up).
    async fn metadata(&self, token: &str) -> Result<Value, NodeError>;

    /// The node's unattended file as `(content type, text)` (the token is not used up).
    async fn unattended(&self, token: &str) -> Result<(String, String), NodeError>;
}

/// Which address the DHCP server has leased to a MAC: the iPXE script route's check of
/// who asks. Implemented by the DHCP server's [`LeaseReader`](crate::dhcp::LeaseReader).
#[async_trait]
pub trait LeasedAddress: Send + Sync + 'static {
    /// The address bound to `mac` and not expired now; None when it holds no lease.
    async fn leased(&self, mac: Mac) -> Result<Option<Ipv4Addr>, String>;
}

#[async_trait]
impl LeasedAddress for crate::dhcp::LeaseReader {
    async fn leased(&self, mac: Mac) -> Result<Option<Ipv4Addr>, String> {
        self.bound_address(&mac.to_string(), crate::dhcp::unix_now())
            .await
            .map_err(|e| e.to_string())
    }
}

/// HTTP boot settings.
#[derive(Clone)]
pub struct HttpBootConfig {
    /// Served under `/boot/assets/`.
    pub assets: PathBuf,
    /// Requests a second one client address may make of the routes that look things up
    /// (`/boot/ipxe`, `/boot/unattended`, `/v1/metadata`, `/v1/state`); assets are not
    /// counted.
    pub per_client: u32,
    /// The DHCP server's leases, when Lariat is the address server: the iPXE script is
    /// then given only to the address leased to the MAC asked about. None (a proxyDHCP
    /// or another DHCP server) gives it to any address.
    pub leases: Option<Arc<dyn LeasedAddress>>,
}

/// [`HttpBootConfig::per_client`] unless told: a node boots with a handful of requests.
pub const DEFAULT_PER_CLIENT: u32 = 20;

struct BootState {
    nodes: Arc<dyn Nodes>,
    leases: Option<Arc<dyn LeasedAddress>>,
}

/// Largest body of `POST /v1/state`, in bytes.
pub const STATE_BODY_LIMIT: usize = 256 << 10;

/// The routes of the table above, ready to merge into the server's router.
pub fn router(nodes: Arc<dyn Nodes>, cfg: &HttpBootConfig) -> Router {
    let state = Arc::new(BootState {
        nodes,
        leases: cfg.leases.clone(),
    });
    let limit = limit::PerClient::new(cfg.per_client);
    Router::new()
        .route("/boot/ipxe", get(ipxe_script))
        .route("/boot/unattended", get(unattended))
        .route("/v1/metadata", get(metadata))
        // A node's facts are a few KiB; a larger body is not a node's report.
        .route(
            "/v1/state",
            post(report_state).layer(DefaultBodyLimit::max(STATE_BODY_LIMIT)),
        )
        .route_layer(axum::middleware::from_fn_with_state(limit, limit::limit))
        .nest_service("/boot/assets", ServeDir::new(&cfg.assets))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let status = match &self {
            NodeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NodeError::NotWaiting(_) => StatusCode::CONFLICT,
            NodeError::NotFound(_) => StatusCode::NOT_FOUND,
            NodeError::Internal(m) => {
                tracing::error!("HTTP boot: {m}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error_json(status, self.to_string())
    }
}

/// Query of `GET /boot/ipxe`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MacQuery {
    /// The MAC iPXE booted from (`${net0/mac}`), e.g. `52:54:00:12:34:56`.
    mac: Option<String>,
}

/// Query of the routes that take a node token.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the `?token=` that [`NodeToken`] reads
struct TokenQuery {
    /// The node token, for clients that cannot send `Authorization: Bearer`.
    token: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ipxe_script, boot_asset, unattended, metadata, report_state),
    components(schemas(StateReport, NodeErrorBody, NodeErrorDetail)),
    tags((name = "boot", description = "HTTP boot on the provisioning network: iPXE scripts, boot assets, unattended files, node metadata and the node's state callback. Plain HTTP, as PXE firmware needs; a node token (one per waiting step, ended with it) guards what is the node's own, and each client address is limited to a number of requests a second")),
)]
struct BootDoc;

/// The OpenAPI paths of the routes [`router`] serves, for the document of the API that
/// shares their listener.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = BootDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "node_token",
        utoipa::openapi::security::SecurityScheme::Http(
            utoipa::openapi::security::HttpBuilder::new()
                .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                .description(Some(
                    "The node's token, from its iPXE script (or `?token=`)",
                ))
                .build(),
        ),
    );
    doc
}

/// Serves a staged asset; documented here, answered by the asset folder's service.
#[utoipa::path(
    get,
    path = "/boot/assets/{path}",
    tag = "boot",
    params(("path" = String, Path, description = "The asset's path under the site's boot assets, e.g. `debian-12/vmlinuz`")),
    responses(
        (status = 200, description = "The asset", content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for with `Range`", content_type = "application/octet-stream"),
        (status = 404, description = "No such asset"),
        (status = 416, description = "A range outside the asset"),
    ),
)]
#[allow(dead_code)]
async fn boot_asset() {}

/// The node's iPXE script: its boot profile when a provisioning step waits for it (with
/// a fresh node token), local disk otherwise. Where Lariat is the DHCP server, only the
/// address leased to `mac` gets it.
#[utoipa::path(
    get,
    path = "/boot/ipxe",
    tag = "boot",
    params(MacQuery),
    responses(
        (status = 200, description = "An iPXE script", body = String, content_type = "text/plain"),
        (status = 400, description = "No `mac`, or not a MAC address (as an iPXE script that says so)", body = String, content_type = "text/plain"),
        (status = 403, description = "The request does not come from the address DHCP leased to `mac`", body = String, content_type = "text/plain"),
        (status = 409, description = "The node's step cannot take it now", body = NodeErrorBody),
        (status = 429, description = "Over the per-client limit; `Retry-After` says when", body = NodeErrorBody),
        (status = 503, description = "The lease database cannot be read", body = String, content_type = "text/plain"),
    ),
)]
async fn ipxe_script(
    State(st): State<Arc<BootState>>,
    // Absent only in a router served without connect info (a test's).
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<MacQuery>,
) -> Response {
    let Some(mac) = q.mac else {
        return text(
            StatusCode::BAD_REQUEST,
            "#!ipxe\necho lariat: the script URL needs ?mac=${net0/mac}\nshell\n".into(),
        );
    };
    let mac: Mac = match mac.parse() {
        Ok(m) => m,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("#!ipxe\necho lariat: {e}\n"),
            );
        }
    };
    if let Some(leases) = &st.leases
        && let Err(refused) = leased_to(leases.as_ref(), mac, peer.map(|p| p.0.0.ip())).await
    {
        return refused;
    }
    match st.nodes.boot(mac).await {
        Ok(BootDecision::Provision(plan)) => {
            tracing::info!(%mac, host = %plan.host, run = %plan.run, "iPXE: provisioning script");
            text(StatusCode::OK, provision_script(&plan))
        }
        Ok(BootDecision::LocalDisk { reason }) => {
            tracing::info!(%mac, "iPXE: local disk ({reason})");
            text(StatusCode::OK, local_disk_script(&mac, &reason))
        }
        Err(e) => e.into_response(),
    }
}

/// Refuses (403, and nothing is looked up or minted) a script asked for `mac` from an
/// address other than the one DHCP leased to it.
async fn leased_to(
    leases: &dyn LeasedAddress,
    mac: Mac,
    peer: Option<IpAddr>,
) -> Result<(), Response> {
    // A listener on [::] sees IPv4 clients as ::ffff:a.b.c.d.
    let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
        return Ok(());
    };
    let leased = leases.leased(mac).await.map_err(|e| {
        tracing::error!(%mac, "HTTP boot: cannot read the DHCP leases: {e}");
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "#!ipxe\necho lariat: the lease database cannot be read; try again\n".into(),
        )
    })?;
    if leased.map(IpAddr::V4) == Some(peer) {
        return Ok(());
    }
    let held = leased.map_or_else(
        || "holds no lease".to_string(),
        |ip| format!("is leased {ip}"),
    );
    tracing::warn!(%mac, client = %peer, "iPXE: script refused: {mac} {held}, the request came from {peer}");
    Err(text(
        StatusCode::FORBIDDEN,
        format!(
            "#!ipxe\necho lariat: {mac} {held}; its script goes only to its leased address, not to {peer}\n"
        ),
    ))
}

/// The node token, from `Authorization: Bearer` or else from `?token=`.
struct NodeToken(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NodeToken {
    type Rejection = NodeError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, NodeError> {
        let from_header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .map(str::to_string);
        let from_query = || {
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(str::to_string)
            })
        };
        from_header
            .or_else(from_query)
            .filter(|t| !t.is_empty())
            .map(NodeToken)
            .ok_or_else(|| {
                NodeError::Unauthorized(
                    "no node token: send Authorization: Bearer <token> or ?token=".into(),
                )
            })
    }
}

/// The node's state and facts: signals the step waiting for it; the token is used up.
#[utoipa::path(
    post,
    path = "/v1/state",
    tag = "boot",
    params(TokenQuery),
    request_body = StateReport,
    security(("node_token" = [])),
    responses(
        (status = 204, description = "Recorded; the waiting step goes on"),
        (status = 400, description = "Not a state report", body = NodeErrorBody),
        (status = 401, description = "No node token, or a wrong, expired or used one", body = NodeErrorBody),
        (status = 409, description = "The step the token is for does not wait now", body = NodeErrorBody),
        (status = 413, description = "A body over 256 KiB", body = NodeErrorBody),
        (status = 429, description = "Over the per-client limit", body = NodeErrorBody),
    ),
)]
async fn report_state(
    State(st): State<Arc<BootState>>,
    NodeToken(token): NodeToken,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<StatusCode, Response> {
    let bad = |message: String| error_json(StatusCode::BAD_REQUEST, message);
    let body = body.map_err(|e| error_json(e.status(), e.body_text()))?;
    let report: StateReport = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be JSON {{\"state\": \"…\", \"facts\": {{…}}}}: {e}"
        ))
    })?;
    report.check().map_err(bad)?;
    st.nodes
        .report(&token, report)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The node's own resolved data from the design (the token is not used up).
#[utoipa::path(
    get,
    path = "/v1/metadata",
    tag = "boot",
    params(TokenQuery),
    security(("node_token" = [])),
    responses(
        (status = 200, description = "The node's resolved host", body = Object),
        (status = 401, description = "No node token, or a wrong, expired or used one", body = NodeErrorBody),
        (status = 404, description = "The design has no such host now", body = NodeErrorBody),
        (status = 429, description = "Over the per-client limit", body = NodeErrorBody),
    ),
)]
async fn metadata(
    State(st): State<Arc<BootState>>,
    NodeToken(token): NodeToken,
) -> Result<axum::Json<Value>, NodeError> {
    st.nodes.metadata(&token).await.map(axum::Json)
}

/// The node's kickstart, cloud-init or ignition file (the token is not used up).
#[utoipa::path(
    get,
    path = "/boot/unattended",
    tag = "boot",
    params(TokenQuery),
    security(("node_token" = [])),
    responses(
        (status = 200, description = "The rendered file, in its own media type", body = String, content_type = "text/plain"),
        (status = 401, description = "No node token, or a wrong, expired or used one", body = NodeErrorBody),
        (status = 404, description = "The node's boot profile has no unattended template", body = NodeErrorBody),
        (status = 429, description = "Over the per-client limit", body = NodeErrorBody),
    ),
)]
async fn unattended(
    State(st): State<Arc<BootState>>,
    NodeToken(token): NodeToken,
) -> Result<Response, NodeError> {
    let (ctype, body) = st.nodes.unattended(&token).await?;
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_both_spellings_and_print_in_one() {
        let a: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        let b: Mac = "52-54-00-ab-cd-01".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "525400abcd01",
            "52:54:00:ab:cd:001",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
