//! What can go wrong talking to a server.

/// A failed call. The server's own errors keep its message, status and code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    /// No answer: refused, timed out, or the connection broke.
    #[error("cannot reach the lariat server at {base}: {detail}")]
    Unreachable { base: String, detail: String },
    /// The server's error answer, `{"error": {"code", "message", "details"}}`.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: serde_json::Value,
    },
    /// An error status without the API's error body (a proxy in between, say).
    #[error("the server answered {status}: {body}")]
    Http { status: String, body: String },
    /// A success answer that is not what the route documents.
    #[error("the server answered {status} with something that is not {what}: {detail}")]
    Decode {
        status: u16,
        what: &'static str,
        detail: String,
    },
    /// The server ended an event stream with an error message.
    #[error("the server ended the event stream: {0}")]
    StreamEnded(String),
}

impl ClientError {
    /// The HTTP status of a server's answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The innermost cause of a transport error: what an operator can act on.
pub(crate) fn innermost(e: &reqwest::Error) -> String {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut last = String::new();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}
