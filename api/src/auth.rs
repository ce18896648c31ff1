//! Bearer tokens with roles, and the extractors that demand a role of a request. The
//! tokens themselves are kept by [`TokenStore`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use lariat_engine::Actor;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::error::HttpError;
use crate::tokens::{Role, TokenStore, hash_token};

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

/// Tokens seen recently stay valid this long without a store lookup; a token created by
/// another process is found on its first use, since only hits are cached.
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

/// Checks bearer tokens against the store. Cheap to clone; handlers' state hands it to
/// the role extractors through [`FromRef`].
#[derive(Clone)]
pub struct Authenticator {
    mode: Auth,
    tokens: TokenStore,
    cache: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
}

impl Authenticator {
    pub(crate) fn new(mode: Auth, tokens: TokenStore) -> Self {
        Authenticator {
            mode,
            tokens,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    async fn principal(&self, parts: &Parts) -> Result<Principal, HttpError> {
        if self.mode == Auth::InsecureNoAuth {
            return Ok(Principal {
                name: Arc::from("insecure-no-auth"),
                role: Role::Admin,
            });
        }
        let token = bearer(parts)?.ok_or_else(|| {
            HttpError::unauthorized(
                "this route needs a bearer token: send `Authorization: Bearer <token>` (create one with `lariat token create`)",
            )
        })?;
        let hash = hash_token(token);
        if let Some(p) = self.cached(&hash) {
            return Ok(p);
        }
        let row = self
            .tokens
            .by_hash(&hash)
            .await
            .map_err(|e| HttpError::internal("checking a token", &e))?;
        let Some((name, role)) = row else {
            return Err(HttpError::unauthorized("the bearer token is not valid"));
        };
        let p = Principal {
            name: Arc::from(name),
            role,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (p.clone(), Instant::now()));
        Ok(p)
    }

    fn cached(&self, hash: &str) -> Option<Principal> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, _)| p.clone())
    }
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
            Err(e) => Err(HttpError::internal("checking a site credential", &e)),
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
    let from = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
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
