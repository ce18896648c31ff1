//! A TCP proxy the tests put between a site agent and the centre: cut, stall, restore,
//! slow down, or point at a restarted centre.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy in front of the centre, for one agent's link: cut drops every open
/// connection and refuses new ones until restored; the centre behind it may move.
pub struct Link {
    addr: SocketAddr,
    upstream: Arc<Mutex<String>>,
    cut: Arc<AtomicBool>,
    /// Milliseconds each chunk from the agent waits before it goes on: a thin link.
    slow: Arc<AtomicU64>,
    /// New connections go silent at once.
    stalled: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<Conn>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One proxied connection.
struct Conn {
    task: tokio::task::AbortHandle,
    /// Silent for good: nothing more goes through, and nothing closes it.
    silent: Arc<AtomicBool>,
}

/// Copies `from` to `to` chunk by chunk, each held back `slow` milliseconds; once
/// `silent`, holds everything and never closes, as a path that died without a reset.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    slow: Arc<AtomicU64>,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let wait = slow.load(Ordering::SeqCst);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        if silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Link {
    /// A proxy on loopback.
    pub async fn to(upstream: &str) -> Link {
        Link::on("127.0.0.1:0", upstream).await
    }

    /// A proxy listening on `bind`.
    pub async fn on(bind: &str, upstream: &str) -> Link {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(
            upstream.trim_start_matches("http://").to_string(),
        ));
        let cut = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let (u, c, o, sl, st) = (
            upstream.clone(),
            cut.clone(),
            open.clone(),
            slow.clone(),
            stalled.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let to = u.lock().unwrap().clone();
                let slow = sl.clone();
                let silent = Arc::new(AtomicBool::new(st.load(Ordering::SeqCst)));
                let quiet = silent.clone();
                let conn = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    // Either side closing closes both, as a dead centre's kernel would.
                    let fast = Arc::new(AtomicU64::new(0));
                    tokio::select! {
                        _ = forward(ri, wo, slow, quiet.clone()) => {}
                        _ = forward(ro, wi, fast, quiet) => {}
                    }
                });
                o.lock().unwrap().push(Conn {
                    task: conn.abort_handle(),
                    silent,
                });
            }
        });
        Link {
            addr,
            upstream,
            cut,
            slow,
            stalled,
            open,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            c.task.abort();
        }
    }

    /// Every open connection, and each new one until `restore`, goes silent without
    /// closing: requests in flight get no answer and no reset. Those stay silent after
    /// `restore`; only new connections work again.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        for c in self.open.lock().unwrap().iter() {
            c.silent.store(true, Ordering::SeqCst);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }

    pub fn slow_down(&self, ms: u64) {
        self.slow.store(ms, Ordering::SeqCst);
    }

    pub fn point_to(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.trim_start_matches("http://").to_string();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// A site credential made with `lariat site token create SITE` on the centre's database.
pub fn site_token(db: &Path, site: &str) -> String {
    super::api_support::lariat_on(db, &["site", "token", "create", site])
}
