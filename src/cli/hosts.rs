//! `lariat host …` (the inventory) and `lariat reconcile` (drift, and the runs that fix
//! it).

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use lariat_client::Client;
use lariat_client::types::{DriftKind, DriftQuery, HostStep, InventoryQuery, ReconcileRequest};
use serde_json::Value;

use super::conn::Conn;
use super::design::Select;
use super::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum HostCmd {
    /// Every host of the design with its state, the step acting on it, its power and the
    /// revision it was provisioned from.
    List {
        #[command(flatten)]
        select: Select,
        /// Host names, comma-separated (also a criterion).
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        /// Only hosts in this state: new, provisioning, provisioned, failed,
        /// deprovisioning, deprovisioned.
        #[arg(long)]
        state: Option<String>,
        /// Hosts per page; every page is fetched.
        #[arg(long, default_value_t = 500)]
        page: u32,
    },
    /// One host: state, stage, power, facts of its last callback, firmware, history and
    /// drift from the design.
    Show { name: String },
}

/// `lariat reconcile`: what differs from the design, and the runs that fix it.
#[derive(Args)]
pub struct ReconcileArgs {
    /// Show the drift and the workflow that would fix each (the default; viewer role).
    #[arg(long, conflicts_with = "apply")]
    plan: bool,
    /// Submit the fixing workflows (operator role). Applying twice starts nothing new.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    select: Select,
    /// Host names, comma-separated (also a criterion).
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
    /// Drift kinds to consider, comma-separated: never_provisioned, config_changed,
    /// firmware_behind, facts_mismatch. All for --plan, those a workflow fixes for --apply.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// A firmware image for a component, `COMPONENT=URL` (for firmware_behind).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Input for a fixing workflow, `WORKFLOW=JSON` (e.g.
    /// `provision={"root_password":{"env":"ROOT_PW"}}`).
    #[arg(long = "input")]
    inputs: Vec<String>,
}

pub async fn run(c: Client, conn: &Conn, cmd: HostCmd) -> anyhow::Result<i32> {
    match cmd {
        HostCmd::List {
            select,
            names,
            state,
            page,
        } => {
            let list = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
            let mut q = InventoryQuery {
                names: list(&names),
                labels: list(&select.labels),
                racks: list(&select.racks),
                sites: list(&select.sites),
                state,
                after: None,
                limit: Some(page),
            };
            let mut hosts = Vec::new();
            loop {
                let p = c.inventory(&q).await?;
                hosts.extend(p.hosts);
                match p.next {
                    Some(n) => q.after = Some(n),
                    None => break,
                }
            }
            if conn.json {
                print_json(&hosts);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = hosts
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.site.clone().unwrap_or_else(|| "-".into()),
                        h.rack.clone().unwrap_or_else(|| "-".into()),
                        h.state.as_str().to_string(),
                        h.stage.as_ref().map(step).unwrap_or_else(|| "-".into()),
                        h.power
                            .as_ref()
                            .map(|p| p.state.clone())
                            .unwrap_or_else(|| "?".into()),
                        h.provisioned
                            .as_ref()
                            .and_then(|p| p.revision.as_deref())
                            .map(|r| r.get(..10).unwrap_or(r).to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "HOST", "SITE", "RACK", "STATE", "STAGE", "POWER", "REVISION"
                    ],
                    &rows
                )
            );
            eprintln!("{} host(s)", hosts.len());
            Ok(0)
        }
        HostCmd::Show { name } => {
            let h = c.inventory_host(&name).await?;
            if conn.json {
                print_json(&h);
                return Ok(0);
            }
            let s = &h.summary;
            println!(
                "host {}{}{}",
                s.name,
                s.site
                    .as_ref()
                    .map(|x| format!("  site {x}"))
                    .unwrap_or_default(),
                s.rack
                    .as_ref()
                    .map(|x| format!("  rack {x}"))
                    .unwrap_or_default()
            );
            if !s.in_design {
                println!("  not in the active design (history kept)");
            }
            println!(
                "  state     {}{}",
                s.state.as_str(),
                s.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            if let Some(st) = &s.stage {
                println!("  stage     {} at {}", step(st), time(Some(st.at)));
            }
            if let Some(a) = &s.activity {
                println!(
                    "  activity  {} of run {} at {}",
                    step(a),
                    a.run,
                    time(Some(a.at))
                );
            }
            if let Some(p) = &s.power {
                println!(
                    "  power     {} (read back by {} of run {} at {})",
                    p.state,
                    p.step,
                    p.run,
                    time(Some(p.at))
                );
            }
            if let Some(p) = &s.provisioned {
                println!(
                    "  built     by run {} at {}, revision {}",
                    p.run,
                    time(Some(p.at)),
                    p.revision.as_deref().unwrap_or("-")
                );
            }
            if let Some(f) = &h.facts {
                println!("  facts     {} (run {})", compact(&f.facts), f.run);
            }
            for f in &h.firmware {
                println!(
                    "  firmware  {} {} (at {})",
                    f.component,
                    f.version,
                    time(Some(f.at))
                );
            }
            if h.drift.is_empty() {
                println!("  drift     none");
            }
            for d in &h.drift {
                println!(
                    "  drift     {}: {}{}",
                    d.kind.as_str(),
                    d.reason,
                    d.workflow
                        .as_ref()
                        .map(|w| format!(" -> {w}"))
                        .unwrap_or_default()
                );
            }
            if !h.history.is_empty() {
                let rows: Vec<Vec<String>> = h
                    .history
                    .iter()
                    .map(|r| {
                        vec![
                            r.run.to_string(),
                            r.workflow.clone(),
                            r.status.to_string(),
                            time(Some(r.created_at)),
                            step(&r.last_step),
                        ]
                    })
                    .collect();
                println!();
                println!(
                    "{}",
                    table(
                        &["RUN", "WORKFLOW", "STATUS", "CREATED", "LAST STEP"],
                        &rows
                    )
                );
            }
            Ok(0)
        }
    }
}

pub async fn reconcile(c: Client, conn: &Conn, a: ReconcileArgs) -> anyhow::Result<i32> {
    let kinds: Vec<DriftKind> = a
        .kinds
        .iter()
        .map(|k| k.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    if !a.apply {
        let list = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
        let q = DriftQuery {
            names: list(&a.names),
            labels: list(&a.select.labels),
            racks: list(&a.select.racks),
            sites: list(&a.select.sites),
            kinds: list(&a.kinds),
        };
        let r = c.drift(&q).await?;
        if conn.json {
            print_json(&r);
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = r
            .drift
            .iter()
            .map(|d| {
                vec![
                    d.host.clone(),
                    d.kind.as_str().to_string(),
                    match (&d.workflow, d.busy) {
                        (Some(_), Some(run)) => format!("(wait: run {run})"),
                        (Some(w), None) => w.clone(),
                        (None, _) => "-".into(),
                    },
                    d.reason.clone(),
                ]
            })
            .collect();
        println!("{}", table(&["HOST", "DRIFT", "FIX", "REASON"], &rows));
        eprintln!(
            "{} difference(s) over {} host(s); `lariat reconcile --apply` submits the fixes",
            r.drift.len(),
            r.hosts
        );
        return Ok(0);
    }
    let mut images = BTreeMap::new();
    for i in &a.images {
        let Some((c, url)) = i.split_once('=') else {
            bail!("--image {i:?}: write COMPONENT=URL");
        };
        images.insert(c.trim().to_string(), url.trim().to_string());
    }
    let mut inputs = BTreeMap::new();
    for i in &a.inputs {
        let Some((w, json)) = i.split_once('=') else {
            bail!("--input {i:?}: write WORKFLOW=JSON");
        };
        let v: Value = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("--input {w}: not JSON: {e}"))?;
        if !v.is_object() {
            bail!("--input {w}: give a JSON object of the workflow's parameters");
        }
        inputs.insert(w.trim().to_string(), v);
    }
    let filter = match a.select.filter(&a.names)? {
        Some(f) => Some(f),
        None if !a.names.is_empty() => Some(lariat_client::types::NodeFilter {
            names: a.names.clone(),
            ..Default::default()
        }),
        None => None,
    };
    let out = c
        .reconcile(&ReconcileRequest {
            filter,
            kinds,
            inputs,
            images,
            dry_run: false,
        })
        .await?;
    if conn.json {
        print_json(&out);
        return Ok(0);
    }
    for r in &out.runs {
        println!(
            "{} {} for {} host(s): {}  (key {})",
            if r.created {
                "started"
            } else {
                "already started"
            },
            r.workflow,
            r.hosts.len(),
            r.run.map(|u| u.to_string()).unwrap_or_default(),
            r.idempotency_key
        );
    }
    for s in &out.skipped {
        println!("left alone  {} {}: {}", s.host, s.kind.as_str(), s.reason);
    }
    if out.runs.is_empty() && out.skipped.is_empty() {
        println!("nothing to reconcile: the selected hosts match their design");
    }
    Ok(0)
}

fn step(s: &HostStep) -> String {
    format!("{} {}", s.step, s.status)
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}
