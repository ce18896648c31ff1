//! `lariat server`: its arguments, turned into the node's configuration. The process is
//! assembled by `lariat-node` from the central and the site role.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lariat_db::Durability;
use lariat_site::BootServicesConfig;
use lariat_source::{CredentialError, RepoCredentials, SourceConfig};

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// SQLite database file (created if missing).
    #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
    pub db: PathBuf,
    /// Address for the REST API.
    #[arg(long, default_value = "127.0.0.1:7300", env = "LARIAT_LISTEN")]
    pub listen: SocketAddr,
    /// This executor's id in the event log (kept in the database after the first start).
    #[arg(long, default_value = "central")]
    pub executor_id: String,
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
    pub ui: UiArgs,
    /// Run the engine and the maintenance windows by a clock that starts at this moment
    /// (RFC 3339, such as 2027-03-28T00:59:50Z) and runs at the system's pace: window and
    /// daylight-saving drills without waiting for the night. Never in production.
    #[arg(long, hide = true, value_parser = crate::server::clock_start)]
    pub clock_start: Option<lariat_db::Clock>,
    /// Serve the API without authentication. For development on a laptop only.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// The sites this server provisions itself when no agent has registered for them:
    /// `all`, `none`, or site names, comma-separated. A run for any other site without
    /// an agent is refused.
    #[arg(long, default_value = "all")]
    pub local_sites: String,
    /// Submit the fixes of these drift kinds by itself, as `lariat reconcile --apply
    /// --kinds KINDS` would (comma-separated: never_provisioned, config_changed,
    /// firmware_behind). Off by default.
    #[arg(long, value_delimiter = ',')]
    pub reconcile_auto: Vec<lariat_api::types::DriftKind>,
    /// Read every host's power from its BMC this often (as `power-poll` runs, one per
    /// site, at most 32 BMCs of a site at once), for the inventory. Off by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub power_poll: Option<std::time::Duration>,
    /// How often `--reconcile-auto` looks for drift.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_every: std::time::Duration,
    /// Serve HTTPS with this certificate chain (PEM, leaf first) instead of plain HTTP.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign site agents' client certificates (mutual TLS; the
    /// site's name is a DNS name in the certificate's subjectAltName). Clients without a
    /// certificate still use bearer tokens.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for a change; a renewed certificate (or
    /// client CA) holds for new connections without a restart.
    #[arg(long, default_value = "10s")]
    pub tls_reload_every: humantime::Duration,
    #[command(flatten)]
    pub design: DesignArgs,
    #[command(flatten)]
    pub boot: BootArgs,
    #[command(flatten)]
    pub site: SiteArgs,
}

/// Single-site boot services run by this process.
#[derive(Args, Debug, Clone)]
pub struct BootArgs {
    /// Serve HTTP boot: iPXE scripts (`/boot/ipxe?mac=`), boot assets, unattended files,
    /// node metadata and the node callback (`/v1/state`). On the API's listener unless
    /// --boot-listen gives it one of its own.
    #[arg(long)]
    pub http_boot: bool,
    /// HTTP boot's own listener, in plain HTTP. Needed with --tls-cert: PXE firmware
    /// cannot check a certificate, so boot stays plain on the provisioning network.
    #[arg(long, requires = "http_boot", env = "LARIAT_BOOT_LISTEN")]
    pub boot_listen: Option<SocketAddr>,
    /// This server's URL as booting nodes reach it (put in iPXE scripts and callback URLs);
    /// the boot listener's address when absent.
    #[arg(long, env = "LARIAT_BOOT_URL")]
    pub boot_url: Option<String>,
    /// Staged boot assets, served under /boot/assets/; `<db>.assets` when absent.
    /// The `stage_assets` step downloads into it.
    #[arg(long)]
    pub boot_assets: Option<PathBuf>,
    /// Where `stage_assets` downloads a boot profile's assets from when they give no URL
    /// of their own: `<origin>/<asset path>`.
    #[arg(long, env = "LARIAT_ASSET_ORIGIN")]
    pub asset_origin: Option<String>,
    /// BMC operations (IPMI sessions, ipmitool processes, Redfish requests) in flight at
    /// once, across all hosts; one at a time per BMC whatever this says.
    #[arg(long, default_value_t = 64)]
    pub bmc_max_in_flight: usize,
    /// Requests a second one client address may make of the boot routes that look
    /// things up (iPXE script, unattended file, metadata, callback); boot assets are not
    /// counted. Over it: 429 with Retry-After.
    #[arg(long, default_value_t = lariat_boot::http::DEFAULT_PER_CLIENT)]
    pub boot_rate: u32,
}

impl BootArgs {
    /// The asset cache folder: `--boot-assets`, or `<db>.assets`.
    fn assets(&self, db: &Path) -> PathBuf {
        self.boot_assets
            .clone()
            .unwrap_or_else(|| beside(db, ".assets"))
    }
}

/// Where the design comes from.
#[derive(Args, Debug, Clone)]
pub struct DesignArgs {
    /// Git repository holding the design: a URL (https://, file://) or a local path.
    #[arg(long, env = "LARIAT_DESIGN_REPO")]
    pub design_repo: Option<String>,
    /// Branch of the design repository to follow.
    #[arg(long, default_value = "main", env = "LARIAT_DESIGN_BRANCH")]
    pub design_branch: String,
    /// Fetch the design branch this often (e.g. 60s); without it, only the webhook and
    /// `POST /v1/designs/sync` fetch.
    #[arg(long, value_parser = humantime::parse_duration, env = "LARIAT_DESIGN_POLL")]
    pub design_poll: Option<Duration>,
    /// File holding the shared secret of the push webhook (`POST /v1/hooks/git`).
    #[arg(long, env = "LARIAT_DESIGN_WEBHOOK_SECRET_FILE")]
    pub design_webhook_secret_file: Option<PathBuf>,
    /// Bare mirror the design is fetched into; `<db>.design.git` when absent.
    #[arg(long)]
    pub design_mirror: Option<PathBuf>,
    /// File holding `user:password` (or `user:token`) for an HTTPS design repository;
    /// a secret in --design-repo itself is refused.
    #[arg(
        long,
        env = "LARIAT_DESIGN_CREDENTIALS_FILE",
        conflicts_with = "design_ssh_key"
    )]
    pub design_credentials_file: Option<PathBuf>,
    /// Private key for an SSH design repository (`ssh://git@host/design.git` or
    /// `git@host:design.git`); needs --design-known-hosts.
    #[arg(long, env = "LARIAT_DESIGN_SSH_KEY")]
    pub design_ssh_key: Option<PathBuf>,
    /// The SSH server's host keys, as `ssh-keyscan` prints them (an OpenSSH known_hosts
    /// file, hashed names included): a fetch from a server showing another key fails.
    #[arg(long, env = "LARIAT_DESIGN_KNOWN_HOSTS")]
    pub design_known_hosts: Option<PathBuf>,
}

impl DesignArgs {
    fn config(&self, db: &Path) -> anyhow::Result<Option<SourceConfig>> {
        let Some(repo) = &self.design_repo else {
            if self.design_poll.is_some() || self.design_webhook_secret_file.is_some() {
                anyhow::bail!("--design-poll and --design-webhook-secret-file need --design-repo");
            }
            return Ok(None);
        };
        let webhook_secret = match &self.design_webhook_secret_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the webhook secret file {}", p.display())
                })?;
                let secret = text.trim_end_matches(['\n', '\r']);
                if secret.len() < 16 {
                    anyhow::bail!(
                        "the webhook secret in {} is {} characters; use at least 16",
                        p.display(),
                        secret.len()
                    );
                }
                Some(secret.as_bytes().to_vec())
            }
        };
        if self.design_poll.is_some_and(|d| d < Duration::from_secs(1)) {
            anyhow::bail!("--design-poll must be at least 1s");
        }
        let credentials = match (
            &self.design_credentials_file,
            &self.design_ssh_key,
            &self.design_known_hosts,
        ) {
            (Some(f), _, _) => RepoCredentials::from_file(f)?,
            (None, Some(key), Some(kh)) => RepoCredentials::ssh_key(key, kh)?,
            (None, Some(_), None) => Err(CredentialError::SshNeedsKnownHosts)?,
            (None, None, _) => RepoCredentials::None,
        };
        credentials.check(repo)?;
        let mirror = self
            .design_mirror
            .clone()
            .unwrap_or_else(|| beside(db, ".design.git"));
        Ok(Some(SourceConfig {
            repo: repo.clone(),
            branch: self.design_branch.clone(),
            mirror,
            poll: self.design_poll,
            webhook_secret,
            fetch_timeout: Duration::from_secs(120),
            credentials,
        }))
    }
}

/// The DHCP and TFTP of the site this server serves.
#[derive(Args, Debug, Clone)]
pub struct SiteArgs {
    /// Serve DHCP (addresses from the design's reservations, PXE boot files, the iPXE
    /// script URL) on --boot-interface.
    #[arg(long)]
    pub dhcp: bool,
    /// `server` hands out addresses; `proxy` (proxyDHCP) gives boot information only,
    /// beside a DHCP server the site keeps.
    #[arg(long, default_value = "server")]
    pub dhcp_mode: String,
    /// Answer unknown MACs from the networks' dhcp ranges and record them as discovered.
    #[arg(long)]
    pub dhcp_discovery: bool,
    /// Serve TFTP (iPXE binaries and --tftp-root) on --boot-address, port 69.
    #[arg(long)]
    pub tftp: bool,
    /// The site's TFTP root, looked up before the iPXE binaries.
    #[arg(long)]
    pub tftp_root: Option<PathBuf>,
    /// Where the iPXE binaries are (Debian's `ipxe` package).
    #[arg(long, default_value = lariat_boot::tftp::DEBIAN_IPXE_DIR)]
    pub ipxe_dir: PathBuf,
    /// The interface nodes PXE-boot on.
    #[arg(long)]
    pub boot_interface: Option<String>,
    /// This server's IPv4 address on --boot-interface (DHCP server id, next-server, TFTP).
    #[arg(long)]
    pub boot_address: Option<Ipv4Addr>,
}

/// `<db><suffix>`: the files a server keeps beside its database. With PostgreSQL there
/// is no file to keep them beside: they go in the working folder as `./lariat<suffix>`
/// (each replica has its own).
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let db = match db.to_str() {
        Some(url) if lariat_db::is_postgres_url(url) => Path::new("./lariat"),
        _ => db,
    };
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Reads `--clock-start`.
pub(crate) fn clock_start(text: &str) -> Result<lariat_db::Clock, String> {
    let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!("'{text}' is not an RFC 3339 time such as 2027-03-28T00:59:50Z: {e}")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("'{text}' is before 1970"))?
        .as_millis();
    Ok(lariat_db::Clock::starting_at(ms as i64))
}

impl ServerArgs {
    /// `--reconcile-auto` and `--reconcile-every`, checked; none when no kind is given.
    fn reconcile(&self) -> anyhow::Result<Option<lariat_api::AutoReconcile>> {
        if self.reconcile_auto.is_empty() {
            return Ok(None);
        }
        if self.reconcile_every < std::time::Duration::from_secs(1) {
            anyhow::bail!("--reconcile-every must be at least 1s");
        }
        if self
            .reconcile_auto
            .contains(&lariat_api::types::DriftKind::FactsMismatch)
        {
            anyhow::bail!(
                "--reconcile-auto facts_mismatch: no workflow fixes facts that disagree with the design; fix the design or the hardware"
            );
        }
        Ok(Some(lariat_api::AutoReconcile {
            kinds: self.reconcile_auto.clone(),
            every: self.reconcile_every,
        }))
    }

    fn config(&self) -> anyhow::Result<lariat_node::ServerConfig> {
        Ok(lariat_node::ServerConfig {
            executor: lariat_node::ExecutorConfig {
                db: self.db.clone(),
                listen: self.listen,
                executor_id: self.executor_id.clone(),
                durability: self.durability,
                max_running: self.max_running,
                max_interruptions: self.max_interruptions,
                ui: self.ui.config(self.tls_cert.is_some()),
                clock: self.clock_start.unwrap_or_default(),
                tls: tls_files(
                    &self.tls_cert,
                    &self.tls_key,
                    self.client_ca.clone(),
                    *self.tls_reload_every,
                ),
            },
            central: lariat_node::CentralConfig {
                design: self.design.config(&self.db)?,
                auth: auth(self.insecure_no_auth),
                local_sites: match self.local_sites.trim() {
                    "all" => lariat_node::LocalSites::All,
                    "none" | "" => lariat_node::LocalSites::Only(Default::default()),
                    list => lariat_node::LocalSites::Only(
                        list.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    ),
                },
                reconcile: self.reconcile()?,
                power_poll: match self.power_poll {
                    Some(p) if p < std::time::Duration::from_secs(1) => {
                        anyhow::bail!("--power-poll must be at least 1s")
                    }
                    p => p,
                },
            },
            site: site_config(&self.db, &self.boot, &self.site)?,
        })
    }
}

/// The listener's TLS files, when both the certificate and its key are given (clap
/// makes each require the other).
pub fn tls_files(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    client_ca: Option<PathBuf>,
    reload_every: std::time::Duration,
) -> Option<lariat_node::TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some(lariat_node::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca,
            reload_every,
        }),
        _ => None,
    }
}

pub fn auth(insecure_no_auth: bool) -> lariat_api::Auth {
    if insecure_no_auth {
        lariat_api::Auth::InsecureNoAuth
    } else {
        lariat_api::Auth::Tokens
    }
}

/// The site role's configuration from its flags; its files beside `db`.
pub fn site_config(
    db: &Path,
    boot: &BootArgs,
    s: &SiteArgs,
) -> anyhow::Result<lariat_node::SiteConfig> {
    let dhcp_mode = match s.dhcp_mode.as_str() {
        "server" => lariat_boot::dhcp::Mode::Server,
        "proxy" => lariat_boot::dhcp::Mode::Proxy,
        other => anyhow::bail!("--dhcp-mode {other:?}: use server or proxy"),
    };
    Ok(lariat_node::SiteConfig {
        http_boot: boot.http_boot,
        boot_listen: boot.boot_listen,
        boot_url: boot.boot_url.clone(),
        assets: boot.assets(db),
        asset_origin: boot.asset_origin.clone(),
        bmc_max_in_flight: boot.bmc_max_in_flight,
        boot_rate: boot.boot_rate,
        services: BootServicesConfig {
            dhcp: s.dhcp,
            dhcp_mode,
            dhcp_discovery: s.dhcp_discovery,
            tftp: s.tftp,
            tftp_root: s.tftp_root.clone(),
            ipxe_dir: s.ipxe_dir.clone(),
            boot_interface: s.boot_interface.clone(),
            boot_address: s.boot_address,
            lease_db: beside(db, ".leases"),
        },
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    Ok(lariat_node::serve(cfg, shutdown_signal()).await?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The web UI's sessions, for `lariat server` and `lariat agent` alike.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// A web UI session without a request for this long ends (sign in again).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ui_session_idle: std::time::Duration,
    /// A web UI session ends this long after its sign-in, however used.
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    pub ui_session_max_age: std::time::Duration,
}

impl UiArgs {
    /// The UI's settings; the cookie is `Secure` when the listener speaks TLS.
    pub fn config(&self, tls: bool) -> lariat_ui::UiConfig {
        lariat_ui::UiConfig {
            session_idle: self.ui_session_idle,
            session_max_age: self.ui_session_max_age,
            secure_cookie: tls,
            site_agent: false,
        }
    }
}
