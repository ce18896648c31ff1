//! `lariat token …`: API tokens, kept in the server's database (no server needed).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use lariat_api::{Role, TokenStore};
use lariat_db::{Db, DbOptions};

use super::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it, once. Works next to a running server.
    Create {
        /// viewer (read), operator (submit and act on runs) or admin (workflows, tokens).
        #[arg(long)]
        role: Role,
        /// A name for the token, recorded as the actor of what it does.
        #[arg(long)]
        name: Option<String>,
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON (with the token) instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// Every token's name, role and creation time (never the secret).
    List {
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The API tokens of the database at `db`, next to a running server or not; close the
/// handle when done.
async fn open_tokens(db: &Path) -> anyhow::Result<(Db, TokenStore)> {
    if !db.exists() {
        tracing::info!("creating database {}", db.display());
    }
    // Next to a running server: no executor lock, one reader.
    let opts = DbOptions {
        readers: 1,
        ..DbOptions::shared(db)
    };
    let handle = Db::open(opts)
        .await
        .with_context(|| format!("cannot open database {}", db.display()))?;
    let tokens = TokenStore::open(handle.clone())
        .await
        .with_context(|| format!("cannot open the API tokens of {}", db.display()))?;
    Ok((handle, tokens))
}

pub async fn run(cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            role,
            name,
            db,
            json,
        } => {
            let (handle, tokens) = open_tokens(&db).await?;
            let t = tokens.create(role, name.as_deref()).await;
            handle.close().await;
            let t = t?;
            if json {
                print_json(&t);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "created {} token '{}'. It is shown only this once; keep it safe.\nUse it with: export LARIAT_TOKEN=<the token above>",
                    t.role, t.name
                );
            }
        }
        TokenCmd::List { db, json } => {
            let (handle, tokens) = open_tokens(&db).await?;
            let list = tokens.list().await;
            handle.close().await;
            let list = list?;
            if json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| vec![t.name.clone(), t.role.to_string(), time(Some(t.created_at))])
                    .collect();
                println!("{}", table(&["NAME", "ROLE", "CREATED (UTC)"], &rows));
            }
        }
    }
    Ok(0)
}
