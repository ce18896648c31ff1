//! The REST API, called in process with a session's token: the UI is one more client of
//! it, so every check (roles, validation, idempotency, audit) is the API's own and a page
//! cannot do what the API would refuse.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

/// Largest API answer a page reads; a run with thousands of items stays well below.
const MAX_ANSWER: usize = 64 << 20;

/// An answer of the API that is not the one asked for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    pub status: StatusCode,
    /// The API's error code (`not_found`, `invalid_input`, ...).
    pub code: String,
    /// The API's sentence saying what to fix.
    pub message: String,
}

impl ApiFailure {
    fn internal(what: impl std::fmt::Display) -> Self {
        ApiFailure {
            status: StatusCode::BAD_GATEWAY,
            code: "internal".into(),
            message: what.to_string(),
        }
    }
}

/// Who a call is made for: the session's token, and the browser's address, so the API's
/// audit trail and its failed-credential limits see the browser, not the UI.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub token: &'a str,
    pub from: Option<SocketAddr>,
}

/// The API router, called in process.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

impl Api {
    pub fn new(router: Router) -> Self {
        Api { router }
    }

    /// The raw answer to a request, for streams the UI passes through.
    pub async fn send(
        &self,
        who: Caller<'_>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        extra: &[(header::HeaderName, String)],
    ) -> Result<Response, ApiFailure> {
        // A token with a byte no header may carry cannot be anyone's.
        let bearer =
            header::HeaderValue::from_str(&format!("Bearer {}", who.token)).map_err(|_| {
                ApiFailure {
                    status: StatusCode::UNAUTHORIZED,
                    code: "unauthorized".into(),
                    message: "that is not an API token: a token is printable ASCII, without spaces"
                        .into(),
                }
            })?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, bearer);
        if let Some(from) = who.from {
            req = req.extension(ConnectInfo(from));
        }
        for (name, value) in extra {
            req = req.header(name, value);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .map_err(ApiFailure::internal)?;
        self.router
            .clone()
            .oneshot(req)
            .await
            .map_err(ApiFailure::internal)
    }

    /// `GET path` read as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        who: Caller<'_>,
        path: &str,
    ) -> Result<T, ApiFailure> {
        let res = self.send(who, Method::GET, path, None, &[]).await?;
        read(res).await
    }

    /// `POST path` with a JSON body, read as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        who: Caller<'_>,
        path: &str,
        body: &B,
    ) -> Result<T, ApiFailure> {
        let body = serde_json::to_value(body).map_err(ApiFailure::internal)?;
        let res = self.send(who, Method::POST, path, Some(&body), &[]).await?;
        read(res).await
    }
}

async fn read<T: DeserializeOwned>(res: Response) -> Result<T, ApiFailure> {
    let status = res.status();
    let bytes = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(ApiFailure::internal)?
        .to_bytes();
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| ApiFailure::internal(format!("the API's answer does not read: {e}")));
    }
    match serde_json::from_slice::<lariat_api_types::ErrorBody>(&bytes) {
        Ok(b) => Err(ApiFailure {
            status,
            code: b.error.code,
            message: b.error.message,
        }),
        Err(_) => Err(ApiFailure {
            status,
            code: "internal".into(),
            message: format!("the API answered {status}"),
        }),
    }
}

/// `s` escaped for a URL's query.
pub fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A query string of the pairs whose value is not empty (`?a=1&b=2`, or nothing).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_leaves_out_empty_values_and_escapes_the_rest() {
        assert_eq!(query(&[("a", ""), ("b", "")]), "");
        assert_eq!(
            query(&[("status", "failed"), ("host", "a b&c"), ("x", "")]),
            "?status=failed&host=a%20b%26c"
        );
    }
}
