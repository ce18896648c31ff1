//! Requests per client on the boot routes that look things up and issue tokens: a node
//! boots with a handful of them, so a client asking hundreds of times a second is a loop
//! or a scan, and is slowed down before it reaches the store.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Clients tracked at once; past it the oldest windows are forgotten.
const CLIENTS_MAX: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(1);

/// At most `per_second` requests from one client address in each second.
#[derive(Clone)]
pub struct PerClient {
    per_second: u32,
    windows: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
}

impl PerClient {
    pub fn new(per_second: u32) -> PerClient {
        PerClient {
            per_second,
            windows: Arc::default(),
        }
    }

    /// Whether `client` may make one more request now.
    fn admit(&self, client: IpAddr, now: Instant) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= CLIENTS_MAX && !w.contains_key(&client) {
            w.retain(|_, (began, _)| now.duration_since(*began) < WINDOW);
            if w.len() >= CLIENTS_MAX {
                w.clear();
            }
        }
        let (began, count) = w.entry(client).or_insert((now, 0));
        if now.duration_since(*began) >= WINDOW {
            *began = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_second
    }
}

/// The middleware: 429 with `Retry-After: 1` over the limit. A request without a peer
/// address (a test router) is let through.
pub async fn limit(State(limit): State<PerClient>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = client
        && !limit.admit(ip, Instant::now())
    {
        tracing::debug!(client = %ip, "HTTP boot: over {} requests a second", limit.per_second);
        let mut res = super::error_json(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {} boot requests a second from {ip}; slow down",
                limit.per_second
            ),
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_waits_for_the_next_second_and_others_do_not() {
        let l = PerClient::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..3).all(|_| l.admit(a, t)));
        assert!(!l.admit(a, t + Duration::from_millis(500)));
        assert!(l.admit(b, t + Duration::from_millis(500)));
        assert!(l.admit(a, t + Duration::from_millis(1000)));
    }
}
