//! Which server a client command talks to, and how it prints.

use clap::Args;
use lariat_client::Client;

/// Where the server is, and how to print.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "LARIAT_SERVER",
        default_value = "http://127.0.0.1:7300"
    )]
    pub server: String,
    /// CA certificates (PEM) that an `https://` server's certificate must chain to, for
    /// a private CA; the system's roots when absent.
    #[arg(long, global = true, env = "LARIAT_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Conn {
    /// A client of `--server`, with the token from `LARIAT_TOKEN`.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = std::env::var("LARIAT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        let made = match &self.ca {
            Some(path) => {
                let ca = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read --ca {}: {e}", path.display()))?;
                let tls = lariat_client::ClientTls {
                    identity: None,
                    ca: Some(ca),
                };
                Client::with_tls(&self.server, token, &tls)
            }
            None => Client::new(&self.server, token),
        };
        made.map_err(|e| match e {
            lariat_client::ClientError::BadUrl(_) => {
                anyhow::anyhow!("--server {} is not an http:// or https:// URL", self.server)
            }
            other => other.into(),
        })
    }
}

/// What to add to a client error so that an operator knows where to look.
pub fn hint(e: &lariat_client::ClientError) -> Option<&'static str> {
    use lariat_client::ClientError as E;
    match e {
        E::Unreachable { .. } => {
            Some(" (is `lariat server` running? set --server or LARIAT_SERVER)")
        }
        E::Api { status: 401, .. }
            if std::env::var("LARIAT_TOKEN").map_or(true, |t| t.trim().is_empty()) =>
        {
            Some("; LARIAT_TOKEN is not set")
        }
        _ => None,
    }
}
