//! `lariat window …`: the maintenance windows of the design in force, open now or not,
//! their next openings in the window's zone and in UTC, and the steps waiting on them.

use clap::Subcommand;
use lariat_client::Client;
use lariat_client::types::{WindowOpening, WindowStatus};

use super::conn::Conn;
use super::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum WindowCmd {
    /// Every window: open or not, the next opening, the steps waiting, by executor.
    List,
    /// One window: its schedule, its next openings, and each step waiting on it.
    Show { name: String },
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
    }
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
        match &w.current {
            Some(o) => format!("open until {}", time(Some(o.closes_at))),
            None => "closed".into(),
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
