//! A run's event stream: Server-Sent Events read off a response body.

use lariat_api_types::{ErrorBody, RunEvent};

use crate::error::{ClientError, innermost};

/// One message of an SSE stream.
struct Message {
    event: Option<String>,
    data: String,
}

/// A run's events as the server sends them, live. Each event's `seq` is also its SSE id,
/// so a client that lost the stream opens it again after the last seq it saw.
pub struct EventStream {
    res: reqwest::Response,
    base: String,
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl EventStream {
    pub(crate) fn new(res: reqwest::Response, base: &str) -> Self {
        EventStream {
            res,
            base: base.to_string(),
            buf: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// The next event; `None` when the server closed the stream. An `error` message from
    /// the server is [`ClientError::StreamEnded`].
    pub async fn next(&mut self) -> Result<Option<RunEvent>, ClientError> {
        let Some(m) = self.message().await? else {
            return Ok(None);
        };
        if m.event.as_deref() == Some("error") {
            let msg = serde_json::from_str::<ErrorBody>(&m.data)
                .map(|b| b.error.message)
                .unwrap_or(m.data);
            return Err(ClientError::StreamEnded(msg));
        }
        serde_json::from_str(&m.data)
            .map(Some)
            .map_err(|e| ClientError::Decode {
                status: 200,
                what: "a run event",
                detail: format!("{e}: {}", m.data),
            })
    }

    async fn message(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Some(m) = self.field(&line) {
                    return Ok(Some(m));
                }
            }
            match self.res.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        base: self.base.clone(),
                        detail: innermost(&e),
                    });
                }
            }
        }
    }

    /// Fold one line in; a blank line ends a message that has data.
    fn field(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                return Some(Message {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            return None;
        }
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }
}
