//! axum's extractors, with their rejections turned into [`HttpError`] so that a bad
//! request gets the API's error shape instead of axum's plain-text body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::HttpError;

/// A JSON body (requires `Content-Type: application/json` or `application/*+json`).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is read before the content type is judged: answering without reading it
        // makes the server close the connection, which a client reusing it sees as a
        // failure of its next request.
        let is_json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        decode(
            is_json,
            &bytes,
            "this route takes a JSON body: send Content-Type: application/json",
        )
        .map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body gives `T::default()`. A body that is
/// present must be JSON and say so.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        decode(
            is_json,
            &bytes,
            "this route takes an optional JSON body: send Content-Type: application/json, or no body",
        )
        .map(OptionalJson)
    }
}

/// Decode a body already read, once its content type has been judged.
fn decode<T: DeserializeOwned>(is_json: bool, bytes: &Bytes, hint: &str) -> Result<T, HttpError> {
    if !is_json {
        return Err(HttpError::unsupported_media_type(hint.to_string()));
    }
    let Json(v) = Json::<T>::from_bytes(bytes)?;
    Ok(v)
}

/// The media type of a request without its parameters, lowercased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(v) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}
