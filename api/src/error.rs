//! The one error shape every route answers with, and how engine errors and axum's
//! extractor rejections map onto it.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lariat_api_types::{ErrorBody, ErrorInfo};
use lariat_engine::EngineError;
use serde_json::{Value, json};

/// An error a handler answers with.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A failure of ours, not the caller's: logged in full, answered without internals.
    /// `err` of the database while doing `what`: 503 when it is out of reach, as that
    /// may pass (a PostgreSQL server restarting), else 500; the cause goes to the log.
    pub fn storage(what: &str, err: &dyn std::fmt::Display, outage: bool) -> Self {
        if !outage {
            return Self::internal(what, err);
        }
        tracing::warn!("{what}: the database is out of reach: {err}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the database is out of reach while {what}; try again shortly"),
        )
    }

    pub fn internal(what: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!("{what}: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error while {what}; the server log has the cause"),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lariat\""),
            );
        }
        res
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Definition(d) => {
                let problems: Vec<String> = d.problems.iter().map(|p| p.to_string()).collect();
                Self::bad_request("invalid_definition", message)
                    .with_details(json!({ "problems": problems }))
            }
            EngineError::InvalidInput(_) => Self::bad_request("invalid_input", message),
            EngineError::InvalidParameters { problems, .. } => {
                Self::bad_request("invalid_input", message)
                    .with_details(json!({ "problems": problems }))
            }
            EngineError::UnknownWorkflow { name, version } => Self::not_found(message)
                .with_details(json!({ "workflow": name, "version": version })),
            EngineError::UnknownRun(run) => {
                Self::not_found(message).with_details(json!({ "run": run }))
            }
            EngineError::UnknownStep { run, step } => {
                Self::not_found(message).with_details(json!({ "run": run, "step": step }))
            }
            EngineError::UnknownItem { run, step, item } => Self::not_found(message)
                .with_details(json!({ "run": run, "step": step, "item": item })),
            EngineError::NotWaiting {
                run,
                step,
                status,
                waiting_for,
            } => Self::new(StatusCode::CONFLICT, "not_waiting", message).with_details(json!({
                "run": run, "step": step, "status": status, "waiting_for": waiting_for,
            })),
            EngineError::InvalidState {
                run, verb, status, ..
            } => Self::new(StatusCode::CONFLICT, "invalid_state", message)
                .with_details(json!({ "run": run, "verb": verb, "status": status })),
            EngineError::StepNotFailed { run, step, status } => {
                Self::new(StatusCode::CONFLICT, "step_not_failed", message)
                    .with_details(json!({ "run": run, "step": step, "status": status }))
            }
            // Internal to the engine; if it ever leaks, the run is simply not in a state
            // that allows the verb.
            EngineError::NotLive(run) => Self::new(StatusCode::CONFLICT, "invalid_state", message)
                .with_details(json!({ "run": run })),
            EngineError::Stopped(_) | EngineError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            EngineError::Store(s) => {
                Self::storage("reading or writing the store", &s, s.is_outage())
            }
        }
    }
}

impl From<JsonRejection> for HttpError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::bad_request("invalid_body", e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request("malformed_json", e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::unsupported_media_type(
                "this route takes a JSON body: send Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) => e.into(),
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<BytesRejection> for HttpError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this server accepts",
            )
        } else {
            Self::bad_request("invalid_body", r.body_text())
        }
    }
}

impl From<PathRejection> for HttpError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                Self::bad_request("invalid_path", e.body_text())
            }
            other => Self::internal("extracting path parameters", &other.body_text()),
        }
    }
}

impl From<QueryRejection> for HttpError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

impl From<lariat_central::CentralError> for HttpError {
    fn from(e: lariat_central::CentralError) -> Self {
        use lariat_central::CentralError as C;
        let message = e.to_string();
        match e {
            C::UnknownSite(site) => Self::not_found(message).with_details(json!({ "site": site })),
            C::UnknownCommand(id) => {
                Self::not_found(message).with_details(json!({ "command": id }))
            }
            C::SiteClaimed { .. }
            | C::ExecutorTaken { .. }
            | C::CentralExecutor(_)
            | C::LogBehind { .. }
            | C::NotRegistered(_)
            | C::WrongExecutor { .. } => Self::new(StatusCode::CONFLICT, "agent_refused", message),
            C::ForeignEvent { .. } | C::NotYourRun { .. } => Self::forbidden(message),
            C::BadEvent { .. } => Self::bad_request("invalid_body", message),
            C::NotServed(site) => {
                Self::bad_request("site_not_served", message).with_details(json!({ "site": site }))
            }
            C::Engine(e) => e.into(),
            C::Store(s) => Self::internal("reading or writing the store", &s),
            C::Source(s) => Self::internal("reading the design", &s),
            C::Db(s) => Self::internal("reading or writing the site tables", &s),
        }
    }
}
