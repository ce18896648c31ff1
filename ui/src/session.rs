//! Browser sessions: an API token exchanged at sign-in for an opaque session id in an
//! HttpOnly, SameSite=Strict cookie, and the CSRF token every form of that session carries.
//!
//! Sessions live in this process's memory only: a restart signs every browser out, which
//! costs an operator one paste of a token and keeps tokens out of another table. The token
//! stays server-side, and every page is fetched from the API with it, so a token revoked
//! or expired ends its sessions at their next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;

/// The cookie's name.
pub const COOKIE: &str = "lariat_session";

/// At most this many sessions are kept; the least recently used goes first. Only a valid
/// token opens one, so the bound is against a script signing in in a loop.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// The API token the pages are fetched with.
    pub token: Arc<str>,
    /// The token's name, shown in the header.
    pub name: String,
    /// `viewer`, `operator` or `admin`: which buttons the pages offer.
    pub role: String,
    /// Every form of this session carries it; a mutation without it is refused.
    pub csrf: String,
    /// A message for the next page (what the last mutation did).
    pub flash: Option<String>,
    /// The address of the browser's request being served, for the API calls it makes.
    pub from: Option<std::net::SocketAddr>,
    started: Instant,
    seen: Instant,
}

impl Session {
    /// Who the API calls of this request are made for.
    pub fn caller(&self) -> crate::api::Caller<'_> {
        crate::api::Caller {
            token: &self.token,
            from: self.from,
        }
    }

    /// May this session start and steer runs?
    pub fn can_operate(&self) -> bool {
        matches!(self.role.as_str(), "operator" | "admin")
    }

    /// May this session manage the design and tokens?
    pub fn can_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// Why a request has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie, or one this process never issued (a restart forgets them).
    Missing,
    /// The API no longer accepts the session's token (revoked, or past its expiry).
    Revoked,
    /// Idle past the idle limit, or older than the absolute limit.
    Expired,
}

/// The sessions of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    idle: Duration,
    max_age: Duration,
}

impl Sessions {
    /// Sessions that end after `idle` without a request, or `max_age` after sign-in.
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Sessions {
            inner: Arc::default(),
            idle,
            max_age,
        }
    }

    /// Open a session for a token the API accepted.
    pub fn open(&self, token: &str, name: String, role: String) -> Session {
        let now = Instant::now();
        let session = Session {
            id: random_hex(32),
            token: Arc::from(token),
            name,
            role,
            csrf: random_hex(32),
            flash: None,
            from: None,
            started: now,
            seen: now,
        };
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.values().min_by_key(|s| s.seen).map(|s| s.id.clone())
        {
            all.remove(&oldest);
        }
        all.insert(session.id.clone(), session.clone());
        session
    }

    /// The session of this cookie value, touched; its flash message is taken with it.
    /// A background refresh (`refresh`) neither takes the message its operator has not
    /// seen yet nor counts as activity.
    pub fn get(&self, id: &str, refresh: bool) -> Result<Session, NoSession> {
        let now = Instant::now();
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = all.get_mut(id) else {
            return Err(NoSession::Missing);
        };
        if now.duration_since(s.seen) > self.idle || now.duration_since(s.started) > self.max_age {
            all.remove(id);
            return Err(NoSession::Expired);
        }
        // A page refreshing itself is not someone at the browser: an unattended tab must
        // not keep its session alive past the idle limit.
        if !refresh {
            s.seen = now;
        }
        let out = s.clone();
        if !refresh {
            s.flash = None;
        }
        Ok(out)
    }

    /// Leave a message for the session's next page.
    pub fn flash(&self, id: &str, message: impl Into<String>) {
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(id) {
            s.flash = Some(message.into());
        }
    }

    /// End a session (sign-out, or a token the API no longer accepts).
    pub fn close(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Compare without leaking where two secrets first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_and_its_flash_is_shown_once() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let s = sessions.open("tok", "ops".into(), "operator".into());
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        sessions.flash(&s.id, "done");
        assert_eq!(
            sessions.get(&s.id, true).unwrap().flash.as_deref(),
            Some("done")
        );
        assert_eq!(
            sessions.get(&s.id, false).unwrap().flash.as_deref(),
            Some("done")
        );
        assert_eq!(sessions.get(&s.id, false).unwrap().flash, None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.get(&s.id, false).unwrap_err(), NoSession::Expired);
        assert_eq!(sessions.get(&s.id, false).unwrap_err(), NoSession::Missing);
    }

    #[test]
    fn a_page_refreshing_itself_does_not_keep_its_session_alive() {
        let sessions = Sessions::new(Duration::from_millis(60), Duration::from_secs(60));
        let s = sessions.open("tok", "ops".into(), "operator".into());
        std::thread::sleep(Duration::from_millis(35));
        assert!(sessions.get(&s.id, true).is_ok());
        // 70 ms since the sign-in, 35 since the refresh: idle all the same.
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(sessions.get(&s.id, false).unwrap_err(), NoSession::Expired);
    }

    #[test]
    fn a_session_ends_at_its_maximum_age_even_when_used() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_millis(50));
        let s = sessions.open("tok", "v".into(), "viewer".into());
        assert!(!s.can_operate());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.get(&s.id, false).unwrap_err(), NoSession::Expired);
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
