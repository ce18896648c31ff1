//! `lariat run …`: submit, list, show, follow and steer runs.

use std::path::PathBuf;

use clap::Subcommand;
use lariat_client::types::{ItemRef, ListRunsQuery, RetryStep, SignalStep, SubmitRun, Targets};
use lariat_client::{Client, Verbed};
use serde_json::Value;
use uuid::Uuid;

use super::conn::Conn;
use super::design::Select;
use super::output::{now_ms, print_json, read_doc, table, time};
use super::show::{event_line, show_run};

#[derive(Subcommand)]
pub enum RunCmd {
    /// Start a run of a workflow.
    Submit {
        workflow: String,
        /// The run's input: a JSON or YAML file, or - for standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Hosts the run targets, comma-separated.
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        #[command(flatten)]
        select: Select,
        /// Submitting again with the same key returns the first run instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Pin this workflow version instead of the latest.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Runs, newest first.
    List {
        /// Only runs in this status (running, paused, failed, succeeded, cancelled,
        /// rolling_back, rolled_back, compensation_failed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Page size (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this run (the cursor printed under the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A run and a table of its steps.
    Show {
        /// The run's id.
        id: Uuid,
    },
    /// Follow a run live, one line per step; exits 0 when it succeeds, 1 when it fails,
    /// is cancelled or rolled back. Given a group id, follows the group's runs as one.
    Watch {
        /// The run's id, or a group's.
        id: Uuid,
    },
    /// A run's full history, operator actions included.
    Events {
        /// The run's id.
        id: Uuid,
    },
    /// Retry a failed step and everything after it.
    Retry {
        id: Uuid,
        step: String,
        /// New input for the step: a JSON or YAML file, or - for standard input.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Deliver a signal to a step waiting for one.
    Signal {
        id: Uuid,
        step: String,
        /// The payload (the step's output): a JSON or YAML file, or - for standard input.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// For a fan-out step: the item, by host name or index.
        #[arg(long)]
        item: Option<String>,
    },
    /// Run the compensations of the succeeded steps, in reverse order.
    Rollback {
        /// The run's id.
        id: Uuid,
    },
    /// Stop the run: running attempts are told to stop, nothing more starts.
    Cancel {
        /// The run's id.
        id: Uuid,
    },
    /// Start no new attempts until resumed.
    Pause {
        /// The run's id.
        id: Uuid,
    },
    /// Resume a paused run.
    Resume {
        /// The run's id.
        id: Uuid,
    },
}

pub async fn run(c: Client, conn: &Conn, cmd: RunCmd) -> anyhow::Result<i32> {
    match cmd {
        RunCmd::Submit {
            workflow,
            input,
            targets,
            select,
            idempotency_key,
            version,
        } => {
            let input = match input {
                Some(p) => read_doc(&p)?,
                None => Value::Null,
            };
            // With any design criterion, the names join a node filter the server resolves.
            let targets = match select.filter(&targets)? {
                Some(f) => Targets::Filter(f),
                None => Targets::Names(targets),
            };
            let req = SubmitRun {
                workflow,
                version,
                input,
                targets,
                idempotency_key,
            };
            let sub = c.submit(&req).await?;
            let r = &sub.run;
            if conn.json {
                print_json(r);
            } else if sub.created
                && let Some(g) = r.group
            {
                println!("{}", r.id);
                eprintln!(
                    "started a run per site of {} version {} (group {g}); follow them with: lariat run watch {g}",
                    r.workflow, r.version
                );
            } else if sub.created {
                println!("{}", r.id);
                eprintln!(
                    "started run of {} version {}; follow it with: lariat run watch {}",
                    r.workflow, r.version, r.id
                );
            } else {
                println!("{}", r.id);
                eprintln!(
                    "this idempotency key started run {} before ({}); no new run",
                    r.id, r.status
                );
            }
            Ok(0)
        }
        RunCmd::List {
            status,
            workflow,
            limit,
            cursor,
        } => {
            let cursor = match cursor {
                Some(c) => Some(c.parse::<Uuid>().map_err(|_| {
                    anyhow::anyhow!(
                        "--cursor {c:?} is not a run id (give the cursor printed under the previous page)"
                    )
                })?),
                None => None,
            };
            let page = c
                .runs(&ListRunsQuery {
                    status,
                    workflow,
                    limit: Some(limit),
                    cursor,
                    ..Default::default()
                })
                .await?;
            if conn.json {
                print_json(&page);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = page
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.workflow.clone(),
                        r.version.to_string(),
                        r.status.to_string(),
                        time(Some(r.created_at)),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "WORKFLOW", "VERSION", "STATUS", "CREATED (UTC)"],
                    &rows
                )
            );
            if let Some(next) = &page.next_cursor {
                eprintln!("more: lariat run list --cursor {next}");
            }
            Ok(0)
        }
        RunCmd::Show { id } => {
            let d = c.run(id).await?;
            if conn.json {
                print_json(&d);
            } else {
                print!("{}", show_run(&d, now_ms()));
            }
            Ok(0)
        }
        RunCmd::Events { id } => {
            let all = c.all_events(id).await?;
            if conn.json {
                print_json(&all);
            } else {
                for e in &all {
                    println!("{}", event_line(e));
                }
            }
            Ok(0)
        }
        RunCmd::Watch { id } => super::watch::watch(&c, id, conn.json).await,
        RunCmd::Retry { id, step, input } => {
            let req = match input {
                Some(p) => Some(RetryStep {
                    input: Some(read_doc(&p)?),
                }),
                None => None,
            };
            let r = c.retry(id, &step, req.as_ref()).await?;
            verb_done(conn, &r, &format!("retrying step {step} of run {id}"));
            Ok(0)
        }
        RunCmd::Signal {
            id,
            step,
            payload,
            item,
        } => {
            let req = SignalStep {
                payload: match payload {
                    Some(p) => read_doc(&p)?,
                    None => Value::Null,
                },
                item: item.map(ItemRef::Name),
            };
            let r = c.signal(id, &step, &req).await?;
            verb_done(conn, &r, &format!("signalled step {step} of run {id}"));
            Ok(0)
        }
        RunCmd::Rollback { id } => {
            let r = c.rollback(id).await?;
            verb_done(conn, &r, &format!("run {id}: rolling back"));
            Ok(0)
        }
        RunCmd::Cancel { id } => {
            let r = c.cancel(id).await?;
            verb_done(conn, &r, &format!("run {id}: cancelled"));
            Ok(0)
        }
        RunCmd::Pause { id } => {
            let r = c.pause(id).await?;
            verb_done(conn, &r, &format!("run {id}: paused"));
            Ok(0)
        }
        RunCmd::Resume { id } => {
            let r = c.resume(id).await?;
            verb_done(conn, &r, &format!("run {id}: resumed"));
            Ok(0)
        }
    }
}

fn verb_done(conn: &Conn, done: &Verbed, what: &str) {
    match done {
        Verbed::Done(run) if conn.json => print_json(run),
        Verbed::Done(run) => println!("{what} (run is {})", run.status),
        Verbed::Queued(c) if conn.json => print_json(c),
        Verbed::Queued(c) => println!(
            "queued for the agent of site {} as command {} ({}); follow it with: lariat site command {}",
            c.site, c.id, c.state, c.id
        ),
    }
}
