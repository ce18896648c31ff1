//! `lariat agent`: its arguments, turned into the node's configuration. The agent is the
//! site role with its own engine and database, a local API, and a link that dials out to
//! the central node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lariat_db::Durability;

use crate::server::{BootArgs, SiteArgs, auth, shutdown_signal, site_config, tls_files};

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The site this agent provisions, as the design names it.
    #[arg(long, env = "LARIAT_SITE")]
    pub site: String,
    /// The central node's URL; the agent connects to it, never the other way round.
    #[arg(long, env = "LARIAT_CENTRAL")]
    pub central: String,
    /// File holding the site's credential (`lariat site token create SITE`); the
    /// LARIAT_AGENT_TOKEN environment variable when absent. Not needed with --tls-cert.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The agent's client certificate (PEM, chain leaf first), for mutual TLS with an
    /// `https://` centre: the site's name is a DNS name in its subjectAltName.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) the centre's certificate must chain to; the system's
    /// roots when absent.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Serve the agent's local API over HTTPS with this certificate chain (PEM, leaf
    /// first). HTTP boot then needs --boot-listen, as it stays plain HTTP.
    #[arg(long, requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// How often the API's TLS files are checked for a change; a renewed certificate
    /// holds for new connections without a restart.
    #[arg(long, default_value = "10s")]
    pub tls_reload_every: humantime::Duration,
    /// The agent's SQLite database file (created if missing).
    #[arg(long, default_value = "./lariat-agent.db", env = "LARIAT_DB")]
    pub db: PathBuf,
    /// Address of the agent's local REST API (and of HTTP boot, when on).
    #[arg(long, default_value = "127.0.0.1:7310", env = "LARIAT_LISTEN")]
    pub listen: SocketAddr,
    /// This agent's executor id: the owner of the runs it executes (kept in its
    /// database after the first start); `agent-<site>` when absent.
    #[arg(long)]
    pub executor_id: Option<String>,
    /// full: fsync every commit (survives power loss); normal: survives a crash only.
    #[arg(long, default_value = "full")]
    pub durability: Durability,
    /// Step attempts executing at once, across all runs.
    #[arg(long, default_value_t = 512)]
    pub max_running: usize,
    /// Restarts in a row that may interrupt one step before it fails.
    #[arg(long, default_value_t = 20)]
    pub max_interruptions: u32,
    #[command(flatten)]
    pub ui: crate::server::UiArgs,
    /// Run the engine and the maintenance windows by a clock that starts at this moment
    /// (RFC 3339, such as 2027-03-28T00:59:50Z) and runs at the system's pace: window and
    /// daylight-saving drills without waiting for the night. Never in production.
    #[arg(long, hide = true, value_parser = crate::server::clock_start)]
    pub clock_start: Option<lariat_db::Clock>,
    /// Sync with the centre at least this often while connected.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sync_every: Duration,
    /// Most events in one batch to the centre: smaller on a thin link, so each request
    /// stays short.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub link_batch: u32,
    /// Longest wait for one answer from the centre before the link drops the connection
    /// and dials again (a path cut without a reset would otherwise hold it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub link_timeout: Duration,
    /// Serve the local API without authentication. For development only.
    #[arg(long)]
    pub insecure_no_auth: bool,
    #[command(flatten)]
    pub boot: BootArgs,
    #[command(flatten)]
    pub services: SiteArgs,
}

impl AgentArgs {
    fn config(&self) -> anyhow::Result<lariat_node::AgentConfig> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
        };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                let mut pem = read(c, "the client certificate")?;
                pem.push(b'\n');
                pem.extend(read(k, "the client key")?);
                Some(pem)
            }
            _ => None,
        };
        let token = match (&self.token_file, std::env::var("LARIAT_AGENT_TOKEN")) {
            (Some(p), _) => Some(
                String::from_utf8_lossy(&read(p, "the site credential")?)
                    .trim()
                    .to_string(),
            ),
            (None, Ok(t)) => Some(t.trim().to_string()),
            (None, Err(_)) => None,
        };
        match &token {
            Some(t) if t.is_empty() => anyhow::bail!("the site credential is empty"),
            None if identity.is_none() => anyhow::bail!(
                "no site credential: give --token-file, set LARIAT_AGENT_TOKEN (make one at the centre with `lariat site token create {}`), or give --tls-cert and --tls-key",
                self.site
            ),
            _ => {}
        }
        if identity.is_some() && !self.central.starts_with("https://") {
            anyhow::bail!("--tls-cert needs an https:// --central");
        }
        let tls = lariat_client::ClientTls {
            identity,
            ca: self
                .ca
                .as_ref()
                .map(|p| read(p, "the CA certificates"))
                .transpose()?,
        };
        if self.sync_every < Duration::from_millis(100) {
            anyhow::bail!("--sync-every must be at least 100ms");
        }
        if self.link_timeout < Duration::from_secs(1) {
            anyhow::bail!("--link-timeout must be at least 1s");
        }
        Ok(lariat_node::AgentConfig {
            executor: lariat_node::ExecutorConfig {
                db: self.db.clone(),
                listen: self.listen,
                executor_id: self
                    .executor_id
                    .clone()
                    .unwrap_or_else(|| format!("agent-{}", self.site)),
                durability: self.durability,
                max_running: self.max_running,
                max_interruptions: self.max_interruptions,
                ui: self.ui.config(self.api_tls_cert.is_some()),
                clock: self.clock_start.unwrap_or_default(),
                tls: tls_files(
                    &self.api_tls_cert,
                    &self.api_tls_key,
                    None,
                    *self.tls_reload_every,
                ),
            },
            auth: auth(self.insecure_no_auth),
            link: lariat_node::LinkSettings {
                central: self.central.clone(),
                token,
                tls,
                link: lariat_node::LinkConfig {
                    every: self.sync_every,
                    batch: self.link_batch,
                    timeout: self.link_timeout,
                    ..Default::default()
                },
            },
            site: site_config(&self.db, &self.boot, &self.services)?,
        })
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    tracing::info!(site = %args.site, central = %args.central, "site agent starting");
    Ok(lariat_node::serve_agent(cfg, shutdown_signal()).await?)
}
