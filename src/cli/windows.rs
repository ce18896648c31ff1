//! `lariat window …`: the maintenance windows of the design in force, open now or not,
//! their next openings in the window's zone and in UTC, the steps waiting on them, and
//! the operators' overrides (`open`, `close`, `clear`).

use clap::Subcommand;
use lariat_client::Client;
use lariat_client::types::{
    ClearOverrides, OverrideRequest, WindowOpening, WindowOverride, WindowStatus,
};

use super::conn::Conn;
use super::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum WindowCmd {
    /// Every window: open or not, the next opening, the steps waiting, by executor.
    List,
    /// One window: its schedule, its next openings, each step waiting on it, and its
    /// overrides (who, when, why).
    Show { name: String },
    /// Opens a window now, whatever its schedule, until the override expires (for a deny
    /// window: puts its freeze in force). Made at the centre, it reaches every agent.
    Open {
        name: String,
        /// How long: 2h, 45m (a minute to 7 days).
        #[arg(long = "for")]
        duration: String,
        /// Why; kept with the override.
        #[arg(long)]
        reason: String,
        /// Only this site's hosts.
        #[arg(long)]
        site: Option<String>,
    },
    /// Closes a window now: nothing new starts in it, what runs finishes (for a deny
    /// window: lifts its freeze). Until the end of its current opening unless --for.
    Close {
        name: String,
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        site: Option<String>,
    },
    /// Ends a window's overrides in force, so that its schedule decides again.
    Clear {
        name: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        site: Option<String>,
    },
}

pub async fn run(c: Client, conn: &Conn, cmd: WindowCmd) -> anyhow::Result<i32> {
    match cmd {
        WindowCmd::List => {
            let v = c.windows().await?;
            if conn.json {
                print_json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v.windows.iter().map(row).collect();
            println!(
                "{}",
                table(
                    &[
                        "WINDOW",
                        "MODE",
                        "NOW",
                        "NEXT OPENS (ZONE)",
                        "NEXT OPENS (UTC)",
                        "FOR",
                        "WAITING"
                    ],
                    &rows
                )
            );
            if let Some(r) = &v.revision {
                println!("design revision {r}");
            }
            Ok(0)
        }
        WindowCmd::Show { name } => {
            let d = c.window(&name).await?;
            if conn.json {
                print_json(&d);
                return Ok(0);
            }
            let w = &d.window;
            println!(
                "window {} ({}): cron '{}' in {}, open {} each time",
                w.name, w.mode, w.cron, w.timezone, w.duration
            );
            if let Some(s) = &w.scope {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "covers: sites [{}] racks [{}] labels [{}]",
                    s.sites.join(", "),
                    s.racks.join(", "),
                    labels.join(", ")
                );
            }
            match &w.current {
                Some(o) => println!(
                    "open now, until {} ({} UTC)",
                    o.closes_local,
                    time(Some(o.closes_at))
                ),
                None => println!("closed now"),
            }
            for o in &w.next {
                println!("next: {}", opening(o));
            }
            for o in &w.overrides {
                println!("override in force: {}", override_line(o));
            }
            let past: Vec<&WindowOverride> = d
                .history
                .iter()
                .filter(|h| !w.overrides.iter().any(|o| o.id == h.id))
                .collect();
            if !past.is_empty() {
                println!("earlier overrides:");
                for o in past {
                    println!("  {}", override_line(o));
                }
            }
            if d.waiters.is_empty() {
                println!("no step waits for it");
            } else {
                let rows: Vec<Vec<String>> = d
                    .waiters
                    .iter()
                    .map(|x| {
                        vec![
                            x.run_id.to_string(),
                            match x.item {
                                Some(i) => format!("{}[{i}]", x.step),
                                None => x.step.clone(),
                            },
                            x.host.clone().unwrap_or_else(|| "-".into()),
                            time(x.until),
                            x.owner.clone(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &["RUN", "STEP", "HOST", "MAY START (UTC)", "EXECUTOR"],
                        &rows
                    )
                );
            }
            Ok(0)
        }
        WindowCmd::Open {
            name,
            duration,
            reason,
            site,
        } => {
            let req = OverrideRequest {
                duration: Some(duration),
                reason,
                site,
            };
            made(conn, c.override_window(&name, "open", &req).await?)
        }
        WindowCmd::Close {
            name,
            duration,
            reason,
            site,
        } => {
            let req = OverrideRequest {
                duration,
                reason,
                site,
            };
            made(conn, c.override_window(&name, "close", &req).await?)
        }
        WindowCmd::Clear { name, reason, site } => {
            let v = c
                .clear_window(&name, &ClearOverrides { reason, site })
                .await?;
            if conn.json {
                print_json(&v);
            } else if v.ended.is_empty() {
                println!("window {name} had no override in force");
            } else {
                for o in &v.ended {
                    println!("ended: {}", override_line(o));
                }
            }
            Ok(0)
        }
    }
}

fn made(conn: &Conn, o: WindowOverride) -> anyhow::Result<i32> {
    if conn.json {
        print_json(&o);
    } else {
        println!("{}", override_line(&o));
        if !o.awaiting.is_empty() {
            println!(
                "not yet taken by the agents of: {} (they get it at their next sync)",
                o.awaiting.join(", ")
            );
        }
    }
    Ok(0)
}

fn override_line(o: &WindowOverride) -> String {
    let what = match o.action.as_str() {
        "open" => "opened",
        "close" => "closed",
        other => other,
    };
    let site = o
        .site
        .as_deref()
        .map(|s| format!(" for site {s}"))
        .unwrap_or_default();
    let ended = match (o.ended_at, &o.ended_by) {
        (Some(at), Some(by)) => format!(", ended {} by {by}", time(Some(at))),
        _ => String::new(),
    };
    format!(
        "{} {what}{site} by {} from {} until {} UTC: {} [{}]{ended}",
        o.window,
        o.who,
        time(Some(o.starts_at)),
        time(Some(o.ends_at)),
        o.reason,
        o.id
    )
}

fn row(w: &WindowStatus) -> Vec<String> {
    let next = w.next.first();
    let waiting: Vec<String> = w
        .waiting
        .iter()
        .map(|(o, n)| format!("{n} at {o}"))
        .collect();
    vec![
        w.name.clone(),
        w.mode.clone(),
        {
            let now = match &w.current {
                Some(o) => format!("open until {}", time(Some(o.closes_at))),
                None => "closed".into(),
            };
            match w.overrides.len() {
                0 => now,
                n => format!("{now} ({n} override{})", if n == 1 { "" } else { "s" }),
            }
        },
        next.map(|o| o.opens_local.clone())
            .unwrap_or_else(|| "-".into()),
        next.map(|o| time(Some(o.opens_at)))
            .unwrap_or_else(|| "-".into()),
        w.duration.clone(),
        if waiting.is_empty() {
            "-".into()
        } else {
            waiting.join(", ")
        },
    ]
}

fn opening(o: &WindowOpening) -> String {
    format!(
        "{} to {} ({} to {})",
        o.opens_local,
        o.closes_local,
        time(Some(o.opens_at)),
        time(Some(o.closes_at))
    )
}
