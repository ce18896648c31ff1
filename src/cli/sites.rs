//! `lariat site …`: the sites and their agents. Credentials and resets work on the
//! central node's database; the rest asks a server.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use lariat_central::Sites;
use lariat_client::Client;
use lariat_db::Tables;

use super::conn::Conn;
use super::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum SiteCmd {
    /// Every site: served by its agent or by the central node, connected or not, lag.
    List,
    /// A command queued for a site agent, and where it is.
    Command { id: String },
    /// Site agent credentials, kept in the central node's database.
    #[command(subcommand)]
    Token(SiteTokenCmd),
    /// Forget a site's agent, so that a new one can register (its database was lost).
    /// The runs it owned stay, as the centre last saw them.
    Reset {
        site: String,
        /// The central node's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum SiteTokenCmd {
    /// Create the credential an agent of SITE connects with, and print it, once.
    Create {
        site: String,
        /// A name for the credential; `<site>-agent` when absent.
        #[arg(long)]
        name: Option<String>,
        /// The central node's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
    },
}

/// Add what was done with the database at hand to its audit trail.
async fn audit(
    handle: &Tables,
    action: &str,
    site: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let tokens = lariat_api::TokenStore::open(handle.clone())
        .await
        .context("cannot open the audit trail")?;
    tokens
        .audit()
        .record(&lariat_api::AuditActor::local(), action, site, detail)
        .await
        .context("cannot write the audit trail")?;
    Ok(())
}

async fn open(db: &Path) -> anyhow::Result<(Tables, Sites)> {
    // A URL is shown without its password.
    let shown = lariat_db::pg::redact(&db.to_string_lossy());
    let handle = Tables::open(&db.to_string_lossy(), lariat_db::Durability::Full)
        .await
        .with_context(|| format!("cannot open database {}", shown))?;
    // A newer Lariat's tables are not this one's to write.
    handle
        .check_not_newer(
            lariat_node::newest_known_migration(),
            lariat_node::newest_known_postgres_migration(),
        )
        .await
        .with_context(|| format!("cannot use database {}", shown))?;
    let sites = Sites::open(handle.clone())
        .await
        .with_context(|| format!("cannot open the site tables of {}", shown))?;
    Ok((handle, sites))
}

pub async fn run(conn: &Conn, cmd: SiteCmd) -> anyhow::Result<i32> {
    match cmd {
        SiteCmd::Token(SiteTokenCmd::Create { site, name, db }) => {
            let (handle, sites) = open(&db).await?;
            let name = name.unwrap_or_else(|| format!("{site}-agent"));
            let t = sites.create_token(&site, &name).await;
            let t = match t {
                Ok(Some(t)) => {
                    let detail = serde_json::json!({ "name": t.name });
                    let audited = audit(&handle, "site.credential", &site, detail).await;
                    handle.close().await;
                    audited?;
                    t
                }
                Ok(None) => {
                    handle.close().await;
                    anyhow::bail!(
                        "a credential named '{name}' exists already; choose another --name"
                    );
                }
                Err(e) => {
                    handle.close().await;
                    return Err(e).with_context(|| format!("cannot create credential {name}"));
                }
            };
            if conn.json {
                print_json(&t);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "created credential '{}' for the agent of site {}. It is shown only this once.\nStart the agent with: LARIAT_AGENT_TOKEN=<the token above> lariat agent --site {} --central <this server's URL>",
                    t.name, t.site, t.site
                );
            }
            Ok(0)
        }
        SiteCmd::Reset { site, db } => {
            let (handle, sites) = open(&db).await?;
            let done = sites.reset(&site).await;
            let audited = match &done {
                Ok(true) => audit(&handle, "site.reset", &site, serde_json::json!({})).await,
                _ => Ok(()),
            };
            handle.close().await;
            audited?;
            if done? {
                println!("site {site} has no agent now; the next agent to say hello registers");
                Ok(0)
            } else {
                anyhow::bail!("site {site} has no agent registered")
            }
        }
        SiteCmd::List => list(conn.client()?, conn).await,
        SiteCmd::Command { id } => {
            let c = conn.client()?.command(&id).await?;
            if conn.json {
                print_json(&c);
            } else {
                println!(
                    "command {}  {} of run {} at site {}: {}{}",
                    c.id,
                    c.verb,
                    c.run_id,
                    c.site,
                    c.state,
                    c.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            Ok(0)
        }
    }
}

async fn list(c: Client, conn: &Conn) -> anyhow::Result<i32> {
    let v = c.sites().await?;
    if conn.json {
        print_json(&v);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v
        .sites
        .iter()
        .map(|s| {
            vec![
                s.site.clone(),
                s.served_by.clone(),
                match (s.served_by.as_str(), s.connected) {
                    ("agent", true) => "connected".into(),
                    ("agent", false) => "disconnected".into(),
                    _ => "-".into(),
                },
                time(s.last_seen),
                s.pending_events.to_string(),
                s.lag_seconds
                    .map(|l| format!("{l:.1}s"))
                    .unwrap_or_else(|| "-".into()),
                s.runs_active.to_string(),
                s.dhcp_leases
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.executor.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "SITE",
                "SERVED BY",
                "LINK",
                "LAST SEEN (UTC)",
                "PENDING",
                "LAG",
                "ACTIVE RUNS",
                "LEASES",
                "AGENT"
            ],
            &rows
        )
    );
    Ok(0)
}
