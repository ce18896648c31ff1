//! `lariat design …`: validate a design folder locally, and read a server's design
//! revisions, findings, resolved hosts and site pins.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lariat_workflows::design::{self, Finding, Level};
use serde_json::{Value, json};

use crate::cli::{Client, Conn, encode, print_json, str_of, time};

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
    pub fn filter(&self, names: &[String]) -> anyhow::Result<Option<Value>> {
        if self.labels.is_empty() && self.racks.is_empty() && self.sites.is_empty() {
            return Ok(None);
        }
        let mut labels = serde_json::Map::new();
        for pair in &self.labels {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("--labels {pair:?}: write key=value");
            };
            labels.insert(k.trim().into(), json!(v.trim()));
        }
        Ok(Some(json!({
            "names": names,
            "labels": labels,
            "racks": self.racks,
            "sites": self.sites,
            "mode": if self.union { "union" } else { "intersection" },
        })))
    }

    fn query(&self, names: &[String]) -> String {
        let mut q = Vec::new();
        let mut add = |k: &str, v: &[String]| {
            if !v.is_empty() {
                q.push(format!("{k}={}", encode(&v.join(","))));
            }
        };
        add("names", names);
        add("labels", &self.labels);
        add("racks", &self.racks);
        add("sites", &self.sites);
        if self.union {
            q.push("mode=union".into());
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

pub async fn run(conn: &Conn, cmd: DesignCmd) -> anyhow::Result<i32> {
    if let DesignCmd::Validate { dir } = &cmd {
        return validate(conn, dir);
    }
    let c = Client::new(conn)?;
    match cmd {
        DesignCmd::Validate { .. } => unreachable!("handled above"),
        DesignCmd::List { limit } => {
            let v = c.get(&format!("/v1/designs?limit={limit}")).await?;
            if conn.json {
                print_json(&v);
                return Ok(0);
            }
            match v["source"].as_object() {
                Some(s) => println!(
                    "source  {} (branch {})",
                    str_of(&s["repo"]),
                    str_of(&s["branch"])
                ),
                None => println!("source  none (start the server with --design-repo)"),
            }
            for r in v["revisions"].as_array().into_iter().flatten() {
                println!(
                    "{:.12}  {:<8}  {:>3} errors {:>3} warnings  {}  {}  {}",
                    str_of(&r["commit"]),
                    str_of(&r["status"]),
                    r["errors"],
                    r["warnings"],
                    time(r["fetched_at"].as_i64()),
                    str_of(&r["trigger"]),
                    str_of(&r["summary"]),
                );
            }
            for p in v["pins"].as_array().into_iter().flatten() {
                println!(
                    "pin  site {} -> {} ({:.12}) by {}",
                    str_of(&p["site"]),
                    str_of(&p["rev"]),
                    str_of(&p["commit"]),
                    str_of(&p["pinned_by"])
                );
            }
            Ok(0)
        }
        DesignCmd::Findings { rev } => {
            let v = c
                .get(&format!("/v1/designs/{}/findings", encode(&rev)))
                .await?;
            if conn.json {
                print_json(&v);
            } else {
                let findings: Vec<Finding> = serde_json::from_value(v["findings"].clone())
                    .context("the server's findings are not in the expected shape")?;
                print_findings(&findings);
            }
            Ok(0)
        }
        DesignCmd::Sync => {
            let (_, v) = c.post("/v1/designs/sync", None).await?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "{:.12}  {}  {} errors, {} warnings",
                    str_of(&v["commit"]),
                    str_of(&v["status"]),
                    v["errors"],
                    v["warnings"]
                );
            }
            Ok(if v["accepted"] == json!(true) { 0 } else { 1 })
        }
        DesignCmd::Show(ShowCmd::Host { name }) => {
            let v = c
                .get(&format!("/v1/hosts/{}/resolved", encode(&name)))
                .await?;
            if conn.json {
                print_json(&v);
            } else {
                print!("{}", serde_norway::to_string(&v)?);
            }
            Ok(0)
        }
        DesignCmd::Hosts { select, names } => {
            let v = c.get(&format!("/v1/hosts{}", select.query(&names))).await?;
            if conn.json {
                print_json(&v);
            } else {
                for h in v["hosts"].as_array().into_iter().flatten() {
                    println!("{}", str_of(h));
                }
            }
            Ok(0)
        }
        DesignCmd::Pin { site, rev } => {
            let rb_body = json!({ "rev": rev });
            let v = c
                .put(&format!("/v1/sites/{}/pin", encode(&site)), &rb_body)
                .await?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "site {} pinned to {} ({:.12})",
                    site,
                    str_of(&v["rev"]),
                    str_of(&v["commit"])
                );
            }
            Ok(0)
        }
        DesignCmd::Unpin { site } => {
            c.delete(&format!("/v1/sites/{}/pin", encode(&site)))
                .await?;
            if !conn.json {
                println!("site {site} follows the active design");
            }
            Ok(0)
        }
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
        print_findings(&r.findings);
        eprintln!(
            "{}: {} error(s), {} warning(s)",
            dir.display(),
            r.errors().count(),
            r.warnings().count()
        );
    }
    Ok(if r.has_errors() { 1 } else { 0 })
}

fn print_findings(findings: &[Finding]) {
    for f in findings {
        let level = match f.level {
            Level::Error => "error",
            Level::Warning => "warning",
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
}
