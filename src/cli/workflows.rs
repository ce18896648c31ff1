//! `lariat workflow …`: register definitions and read their versions.

use std::path::PathBuf;

use clap::Subcommand;
use lariat_client::{Client, DefinitionFormat};

use super::conn::Conn;
use super::output::{print_json, read_source, table};

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Register a definition (YAML, or JSON for a .json file); each change is a new version.
    Apply {
        /// The definition, or - for standard input (read as YAML).
        file: PathBuf,
    },
    /// The latest version of every workflow.
    List,
    /// A workflow's definition.
    Show {
        name: String,
        /// A given version instead of the latest.
        #[arg(long)]
        version: Option<i64>,
    },
}

pub async fn run(c: Client, conn: &Conn, cmd: WorkflowCmd) -> anyhow::Result<i32> {
    match cmd {
        WorkflowCmd::Apply { file } => {
            let text = read_source(&file)?;
            let is_json = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            let format = if is_json {
                DefinitionFormat::Json
            } else {
                DefinitionFormat::Yaml
            };
            let r = c.register_workflow(text, format).await?;
            if conn.json {
                print_json(&r);
            } else if r.created {
                println!("registered {} version {}", r.name, r.version);
            } else {
                println!("{} version {} unchanged", r.name, r.version);
            }
        }
        WorkflowCmd::List => {
            let list = c.workflows().await?;
            if conn.json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .workflows
                .iter()
                .map(|w| {
                    vec![
                        w.name.clone(),
                        w.version.to_string(),
                        w.steps.to_string(),
                        w.description.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["NAME", "VERSION", "STEPS", "DESCRIPTION"], &rows)
            );
        }
        WorkflowCmd::Show { name, version } => {
            let v = match version {
                Some(n) => c.workflow_version(&name, n).await?,
                None => {
                    let d = c.workflow(&name).await?;
                    if conn.json {
                        print_json(&d);
                        return Ok(0);
                    }
                    d.latest
                }
            };
            if conn.json {
                print_json(&v);
            } else {
                println!("# {} version {}", v.name, v.version);
                let yaml = serde_norway::to_string(&v.definition)
                    .unwrap_or_else(|_| v.definition.to_string());
                print!("{yaml}");
            }
        }
    }
    Ok(0)
}
