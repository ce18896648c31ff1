//! Bearer tokens with roles, and the extractors that demand a role of a request. The
//! tokens themselves are kept by [`TokenStore`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use lariat_engine::Actor;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::audit::AuditActor;
use crate::error::HttpError;
use crate::tokens::{Check, Role, TokenStore, hash_token};

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Bearer tokens with roles (viewer, operator, admin).
    Tokens,
    /// No authentication: every request acts as an admin named `insecure-no-auth`.
    /// Development only; the server warns loudly at start.
    InsecureNoAuth,
}

/// Who a token belongs to.
#[derive(Debug, Clone)]
struct Principal {
    name: Arc<str>,
    role: Role,
}

/// A token's last use is written at most this often: the time to the minute is what an
/// admin needs, and a write per request would queue behind the store's writer.
const TOUCH_EVERY_MS: i64 = 60_000;
const TOUCHED_MAX: usize = 10_000;

/// Query parameters that carry credentials in other APIs; refused here, since a URL ends
/// up in proxies' and servers' logs.
const QUERY_CREDENTIALS: [&str; 4] = ["token", "access_token", "api_key", "apikey"];

/// How often the tokens' version is read, so that a revoke by another process (the CLI
/// on the database file) holds within this; one through this process's API holds at once.
const VERSION_EVERY: Duration = Duration::from_millis(200);
const REMEMBERED_MAX: usize = 10_000;

/// A valid token seen before: what its row said.
#[derive(Debug, Clone)]
struct Remembered {
    principal: Principal,
    expires_at: Option<i64>,
}

/// Checks bearer tokens. Valid ones are remembered, so a request costs no store read;
/// all are forgotten as soon as the tokens' version changes (any create or revoke, by any
/// process on the database), and an expiry is checked on every request. Cheap to clone;
/// handlers' state hands it to the role extractors through [`FromRef`].
#[derive(Clone)]
pub struct Authenticator {
    mode: Auth,
    tokens: TokenStore,
    remembered: Arc<Mutex<HashMap<String, Remembered>>>,
    /// When each token's last use was last written.
    touched: Arc<Mutex<HashMap<Arc<str>, i64>>>,
}

impl Authenticator {
    /// Starts following the tokens' version; the task ends with the last clone.
    pub(crate) fn new(mode: Auth, tokens: TokenStore) -> Self {
        let auth = Authenticator {
            mode,
            tokens,
            remembered: Arc::default(),
            touched: Arc::default(),
        };
        if mode == Auth::Tokens {
            tokio::spawn(follow_versions(
                auth.tokens.clone(),
                Arc::downgrade(&auth.remembered),
            ));
        }
        auth
    }

    /// Forget every remembered token: after a revoke made here, before answering it.
    pub(crate) fn forget(&self) {
        self.remembered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn recall(&self, hash: &str, now: i64) -> Option<Result<Principal, HttpError>> {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let r = remembered.get(hash)?;
        Some(match r.expires_at {
            Some(at) if at <= now => Err(expired(&r.principal.name, at)),
            _ => Ok(r.principal.clone()),
        })
    }

    async fn principal(&self, parts: &Parts) -> Result<Principal, HttpError> {
        if self.mode == Auth::InsecureNoAuth {
            return Ok(Principal {
                name: Arc::from("insecure-no-auth"),
                role: Role::Admin,
            });
        }
        refuse_query_credentials(parts)?;
        let token = bearer(parts)?.ok_or_else(|| {
            HttpError::unauthorized(
                "this route needs a bearer token: send `Authorization: Bearer <token>` (create one with `lariat token create`)",
            )
        })?;
        let now = lariat_db::now_ms();
        let hash = hash_token(token);
        if let Some(p) = self.recall(&hash, now) {
            let p = p?;
            self.touch(&p.name, now, client_ip(parts));
            return Ok(p);
        }
        let check = self
            .tokens
            .check(&hash, now)
            .await
            .map_err(|e| HttpError::storage("checking a token", &e, e.is_outage()))?;
        let (name, role, expires_at) = match check {
            Check::Valid {
                name,
                role,
                expires_at,
            } => (name, role, expires_at),
            Check::Unknown => return Err(HttpError::unauthorized("the bearer token is not valid")),
            Check::Expired { name, at } => return Err(expired(&name, at)),
            Check::Revoked { name, by } => {
                return Err(HttpError::unauthorized(format!(
                    "the bearer token '{name}' was revoked by {by}"
                )));
            }
        };
        let principal = Principal {
            name: Arc::from(name),
            role,
        };
        {
            let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            if remembered.len() >= REMEMBERED_MAX {
                remembered.clear();
            }
            remembered.insert(
                hash,
                Remembered {
                    principal: principal.clone(),
                    expires_at,
                },
            );
        }
        self.touch(&principal.name, now, client_ip(parts));
        Ok(principal)
    }

    /// Write the token's last use in the background, at most once a minute per token.
    fn touch(&self, name: &Arc<str>, now: i64, from: Option<IpAddr>) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched
                .get(name)
                .is_some_and(|&at| now - at < TOUCH_EVERY_MS)
            {
                return;
            }
            if touched.len() >= TOUCHED_MAX {
                touched.clear();
            }
            touched.insert(name.clone(), now);
        }
        let tokens = self.tokens.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let from = from.map(|a| a.to_string());
            if let Err(e) = tokens.touch(&name, now, from.as_deref()).await {
                tracing::warn!(token = %name, "cannot record the token's last use: {e}");
            }
        });
    }
}

fn expired(name: &str, at: i64) -> HttpError {
    let when =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at.max(0) as u64));
    HttpError::unauthorized(format!(
        "the bearer token '{name}' expired at {when}; an admin can create a new one (`lariat token create`)"
    ))
}

/// Reads the tokens' version every [`VERSION_EVERY`] and forgets every remembered token
/// when it changed. A read that fails forgets them too: a store that cannot be read must
/// not leave revoked tokens remembered.
async fn follow_versions(tokens: TokenStore, remembered: Weak<Mutex<HashMap<String, Remembered>>>) {
    let mut seen = None;
    loop {
        tokio::time::sleep(VERSION_EVERY).await;
        let Some(remembered) = remembered.upgrade() else {
            return;
        };
        let now = tokens.version().await.ok();
        if now.is_none() || now != seen {
            remembered.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        seen = now;
    }
}

/// A credential in the query string is refused, whether or not a header came too: the
/// secret is already in every log the URL went through, and should be revoked.
fn refuse_query_credentials(parts: &Parts) -> Result<(), HttpError> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    let named = query.split('&').find_map(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        QUERY_CREDENTIALS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
    });
    match named {
        Some(key) => Err(HttpError::unauthorized(format!(
            "a credential in the URL (`{key}=`) is refused: URLs are kept in logs. Send `Authorization: Bearer <token>`, and revoke a token that was sent this way"
        ))),
        None => Ok(()),
    }
}

fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Checks site agents' credentials (`lariat site token create`, or a client certificate
/// naming the site); none where the process is not a central node.
#[derive(Clone)]
pub struct AgentAuth(pub Option<lariat_central::Central>);

/// The certificate a client presented in the TLS handshake (DER), already verified
/// against the server's client CA. The TLS listener puts it in each request's
/// extensions, the same one for every request of a connection; a connection without one
/// has none.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    der: Arc<[u8]>,
    /// The site it speaks for, once found: a connection's later requests skip the lookup.
    site: Arc<std::sync::OnceLock<String>>,
}

impl ClientCertificate {
    pub fn new(der: &[u8]) -> ClientCertificate {
        ClientCertificate {
            der: Arc::from(der),
            site: Default::default(),
        }
    }
}

/// A site agent, by the credential it sent: the site it may speak for.
pub struct AgentOf(pub String);

/// The site a verified client certificate speaks for: the one site whose name it is
/// valid for (a DNS name in its subjectAltName). A certificate valid for several sites
/// speaks for none.
async fn site_of_certificate(
    central: &lariat_central::Central,
    der: &[u8],
) -> Result<Option<String>, HttpError> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| {
        HttpError::unauthorized(format!("the client certificate cannot be read: {e}"))
    })?;
    let names = central
        .site_names()
        .await
        .map_err(|e| HttpError::internal("listing the sites", &e))?;
    let mut valid = names.into_iter().filter(|site| {
        ServerName::try_from(site.as_str())
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
    });
    match (valid.next(), valid.next()) {
        (Some(site), None) => Ok(Some(site)),
        _ => Ok(None),
    }
}

impl<S> FromRequestParts<S> for AgentOf
where
    AgentAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AgentAuth(central) = AgentAuth::from_ref(state);
        let Some(central) = central else {
            return Err(HttpError::not_found(
                "this process is not a central node: site agents connect to the central node",
            ));
        };
        let Some(token) = bearer(parts)? else {
            let Some(cert) = parts.extensions.get::<ClientCertificate>() else {
                return Err(HttpError::unauthorized(
                    "a site agent sends its site's credential: `Authorization: Bearer <token>` (make one with `lariat site token create SITE`), or a client certificate naming its site",
                ));
            };
            if let Some(site) = cert.site.get() {
                return Ok(AgentOf(site.clone()));
            }
            // Not remembered when it names no site: the design may add the site later.
            return match site_of_certificate(&central, &cert.der).await? {
                Some(site) => Ok(AgentOf(cert.site.get_or_init(|| site).clone())),
                None => Err(HttpError::unauthorized(
                    "the client certificate names no site of the design (the site's name goes in its subjectAltName, as a DNS name)",
                )),
            };
        };
        match central.sites().site_of_token(token).await {
            Ok(Some(site)) => Ok(AgentOf(site)),
            Ok(None) => Err(HttpError::unauthorized(
                "the bearer token is not a site agent's credential",
            )),
            Err(e) => Err(HttpError::storage(
                "checking a site credential",
                &e,
                e.is_outage(),
            )),
        }
    }
}

/// The bearer token of a request, if it has one; an Authorization header of another
/// shape is refused.
fn bearer(parts: &Parts) -> Result<Option<&str>, HttpError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| HttpError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub name: Arc<str>,
    pub role: Role,
    /// The client's address, when the server was started with connect info.
    pub from: Option<IpAddr>,
}

impl Caller {
    /// The client's address as text, empty when unknown.
    pub fn origin(&self) -> String {
        self.from.map(|a| a.to_string()).unwrap_or_default()
    }

    /// Who the audit trail says did what this caller does.
    pub fn audit_actor(&self) -> AuditActor {
        AuditActor {
            who: self.name.to_string(),
            role: Some(self.role.to_string()),
            from: self.from.map(|a| a.to_string()),
        }
    }

    /// The actor recorded in a run's history for an operator verb.
    pub fn actor(&self) -> Actor {
        Actor {
            who: self.name.to_string(),
            from: self.from.map(|a| a.to_string()),
            command: None,
        }
    }
}

async fn authorize(parts: &Parts, auth: &Authenticator, need: Role) -> Result<Caller, HttpError> {
    let p = auth.principal(parts).await?;
    if p.role < need {
        return Err(HttpError::forbidden(format!(
            "this route needs the {need} role; token '{}' has {}",
            p.name, p.role
        )));
    }
    let from = client_ip(parts);
    Ok(Caller {
        name: p.name,
        role: p.role,
        from,
    })
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident => $role:expr) => {
        $(#[$doc])*
        pub struct $name(pub Caller);

        impl<S> FromRequestParts<S> for $name
        where
            Authenticator: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = HttpError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let auth = Authenticator::from_ref(state);
                authorize(parts, &auth, $role).await.map($name)
            }
        }
    };
}

role_extractor!(
    /// A caller with at least the viewer role (401 without a valid token).
    Viewer => Role::Viewer
);
role_extractor!(
    /// A caller with at least the operator role (403 for a viewer).
    Operator => Role::Operator
);
role_extractor!(
    /// A caller with the admin role (403 otherwise).
    Admin => Role::Admin
);
