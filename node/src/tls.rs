//! HTTPS for the listener: the server's certificate, and, with a client CA, client
//! certificates verified in the handshake and handed to the API (a site agent's identity
//! for mutual TLS). Clients without a certificate still connect and use bearer tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use lariat_api::ClientCertificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The files of the listener's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign clients' certificates; without it no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for a change (a renewed certificate), which new
    /// connections then get without a restart.
    pub reload_every: Duration,
}

/// The modification time and size of each file: what a renewal changes, also when it
/// swaps a symlink.
fn fingerprint(files: &TlsFiles) -> Vec<Option<(std::time::SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

/// The configuration of `files` as they change: checked every `reload_every`, rebuilt
/// when any file changed. A change that cannot be used (a key that does not match, a
/// half-written file) is logged and the configuration in force stays; the check goes on
/// until every receiver is dropped.
pub fn reloading(
    files: TlsFiles,
    first: Arc<rustls::ServerConfig>,
) -> tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>> {
    let (tx, rx) = tokio::sync::watch::channel(first);
    tokio::spawn(async move {
        let mut seen = fingerprint(&files);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(files.reload_every) => {}
            }
            let now = fingerprint(&files);
            if now == seen {
                continue;
            }
            match server_config(&files) {
                Ok(cfg) => {
                    seen = now;
                    tx.send_replace(cfg);
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                // Not remembered as seen: a file still being written is read again.
                Err(e) => tracing::error!(
                    "TLS files changed but cannot be used, keeping the ones in force: {e}"
                ),
            }
        }
    });
    rx
}

/// Why the TLS settings cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificates in {}: {detail}", .path.display())]
    Certs { path: PathBuf, detail: String },
    #[error("cannot read a private key in {}: {detail}", .path.display())]
    Key { path: PathBuf, detail: String },
    #[error("{} holds no certificate", .0.display())]
    NoCert(PathBuf),
    #[error("the certificate and key do not go together, or are not usable: {0}")]
    Config(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |e: rustls::pki_types::pem::Error| TlsError::Certs {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

/// The rustls configuration of `files`, checked now so that a bad file stops the start.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        detail: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Certs {
                    path: ca.clone(),
                    detail: e.to_string(),
                })?;
            }
            // Operators keep their bearer tokens: a certificate is asked for, not required.
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; then lets open
/// requests finish. Each request carries the peer's address and, when it sent one, its
/// verified certificate.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // The configuration in force when the connection came: a reload holds for new ones.
        let acceptor = TlsAcceptor::from(config.borrow().clone());
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| ClientCertificate::new(c.as_ref()));
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(c) = &cert {
                    req.extensions_mut().insert(c.clone());
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
