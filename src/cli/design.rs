//! `lariat design …`: validate a design folder locally, and read a server's design
//! revisions, findings, resolved hosts and site pins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};
use lariat_client::Client;
use lariat_client::types::{
    FilterMode, Finding, FindingLevel, HostsQuery, NodeFilter, RevisionStatus,
};
use lariat_workflows::design;
use serde_json::json;

use super::conn::Conn;
use super::output::{print_json, time};

#[derive(Subcommand)]
pub enum DesignCmd {
    /// Validate a design folder (every .yaml/.yml below it) here, without a server.
    /// Prints every finding; exits 1 when there is an error.
    Validate { dir: PathBuf },
    /// The design source, its revisions (newest first) and site pins.
    List {
        /// Revisions to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The findings of a fetched revision.
    Findings {
        /// A commit id (7 hex digits or more).
        rev: String,
    },
    /// Fetch the design branch now.
    Sync,
    /// An object of the active design, resolved.
    #[command(subcommand)]
    Show(ShowCmd),
    /// Host names of the active design a node filter selects.
    Hosts {
        #[command(flatten)]
        select: Select,
        /// Host names, comma-separated (also a criterion).
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
    },
    /// Hold a site to a revision or tag.
    Pin { site: String, rev: String },
    /// Let a site follow the active design again.
    Unpin { site: String },
}

#[derive(Subcommand)]
pub enum ShowCmd {
    /// A host after profile inheritance.
    Host { name: String },
}

/// Node-filter criteria beside host names.
#[derive(Args, Debug, Clone, Default)]
pub struct Select {
    /// Hosts with these labels, `key=value`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Hosts in these racks, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub racks: Vec<String>,
    /// Hosts at these sites, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sites: Vec<String>,
    /// Select hosts that match any criterion instead of all of them.
    #[arg(long)]
    pub union: bool,
}

impl Select {
    /// A node filter with `names`, when any criterion beyond names is given.
    pub fn filter(&self, names: &[String]) -> anyhow::Result<Option<NodeFilter>> {
        if self.labels.is_empty() && self.racks.is_empty() && self.sites.is_empty() {
            return Ok(None);
        }
        let mut labels = BTreeMap::new();
        for pair in &self.labels {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("--labels {pair:?}: write key=value");
            };
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Some(NodeFilter {
            names: names.to_vec(),
            labels,
            racks: self.racks.clone(),
            sites: self.sites.clone(),
            mode: if self.union {
                FilterMode::Union
            } else {
                FilterMode::Intersection
            },
            all: false,
        }))
    }

    fn query(&self, names: &[String]) -> HostsQuery {
        let list = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
        HostsQuery {
            names: list(names),
            labels: list(&self.labels),
            racks: list(&self.racks),
            sites: list(&self.sites),
            mode: self.union.then(|| "union".to_string()),
        }
    }
}

pub async fn run(conn: &Conn, cmd: DesignCmd) -> anyhow::Result<i32> {
    if let DesignCmd::Validate { dir } = &cmd {
        return validate(conn, dir);
    }
    let c = conn.client()?;
    server(c, conn, cmd).await
}

async fn server(c: Client, conn: &Conn, cmd: DesignCmd) -> anyhow::Result<i32> {
    match cmd {
        DesignCmd::Validate { .. } => unreachable!("validated locally by run()"),
        DesignCmd::List { limit } => {
            let v = c.designs(limit).await?;
            if conn.json {
                print_json(&v);
                return Ok(0);
            }
            match &v.source {
                Some(s) => println!("source  {} (branch {})", s.repo, s.branch),
                None => println!("source  none (start the server with --design-repo)"),
            }
            for r in &v.revisions {
                println!(
                    "{:.12}  {:<8}  {:>3} errors {:>3} warnings  {}  {}  {}",
                    r.commit,
                    status(r.status),
                    r.errors,
                    r.warnings,
                    time(Some(r.fetched_at)),
                    r.trigger,
                    r.summary,
                );
            }
            for p in &v.pins {
                println!(
                    "pin  site {} -> {} ({:.12}) by {}",
                    p.site, p.rev, p.commit, p.pinned_by
                );
            }
            Ok(0)
        }
        DesignCmd::Findings { rev } => {
            let v = c.findings(&rev).await?;
            if conn.json {
                print_json(&v);
            } else {
                v.findings.iter().for_each(print_finding);
            }
            Ok(0)
        }
        DesignCmd::Sync => {
            let r = c.sync_design().await?;
            if conn.json {
                print_json(&r);
            } else {
                println!(
                    "{:.12}  {}  {} errors, {} warnings",
                    r.commit,
                    status(r.status),
                    r.errors,
                    r.warnings
                );
            }
            Ok(if r.accepted { 0 } else { 1 })
        }
        DesignCmd::Show(ShowCmd::Host { name }) => {
            let v = c.resolved_host(&name).await?;
            if conn.json {
                print_json(&v);
            } else {
                print!("{}", serde_norway::to_string(&v)?);
            }
            Ok(0)
        }
        DesignCmd::Hosts { select, names } => {
            let v = c.hosts(&select.query(&names)).await?;
            if conn.json {
                print_json(&v);
            } else {
                for h in &v.hosts {
                    println!("{h}");
                }
            }
            Ok(0)
        }
        DesignCmd::Pin { site, rev } => {
            let p = c.pin(&site, &rev).await?;
            if conn.json {
                print_json(&p);
            } else {
                println!("site {} pinned to {} ({:.12})", site, p.rev, p.commit);
            }
            Ok(0)
        }
        DesignCmd::Unpin { site } => {
            c.unpin(&site).await?;
            if !conn.json {
                println!("site {site} follows the active design");
            }
            Ok(0)
        }
    }
}

fn status(s: RevisionStatus) -> &'static str {
    match s {
        RevisionStatus::Active => "active",
        RevisionStatus::Accepted => "accepted",
        RevisionStatus::Rejected => "rejected",
    }
}

fn validate(conn: &Conn, dir: &Path) -> anyhow::Result<i32> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let loaded = design::load_dir(dir);
    let r = &loaded.report;
    if conn.json {
        print_json(&json!({
            "valid": !r.has_errors(),
            "errors": r.errors().count(),
            "warnings": r.warnings().count(),
            "findings": r.findings,
        }));
    } else {
        // The same shape as the server's findings: print them the same way.
        let findings: Vec<Finding> = serde_json::from_value(serde_json::to_value(&r.findings)?)?;
        findings.iter().for_each(print_finding);
        eprintln!(
            "{}: {} error(s), {} warning(s)",
            dir.display(),
            r.errors().count(),
            r.warnings().count()
        );
    }
    Ok(if r.has_errors() { 1 } else { 0 })
}

fn print_finding(f: &Finding) {
    let level = match f.level {
        FindingLevel::Error => "error",
        FindingLevel::Warning => "warning",
    };
    let at = if f.path.is_empty() {
        String::new()
    } else {
        format!(" {}", f.path)
    };
    let file = f
        .file
        .as_deref()
        .map(|p| format!("  ({p})"))
        .unwrap_or_default();
    println!(
        "{level:<7}  {:<24}  {}/{}{at}: {}{file}",
        f.rule, f.kind, f.name, f.message
    );
}
