//! `lariat token …`: API tokens, kept in the server's database (no server needed): what
//! an admin does with the database file at hand, recorded in the audit trail as
//! `local:<user>`. An admin elsewhere uses `/v1/tokens`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use lariat_api::{AuditActor, Expiry, Role, TokenStore};
use lariat_db::Tables;

use super::output::{now_ms, print_json, table, time};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it, once. Works next to a running server.
    Create {
        /// viewer (read), operator (submit and act on runs) or admin (workflows, tokens,
        /// the audit trail).
        #[arg(long)]
        role: Role,
        /// A name for the token, recorded as the actor of what it does. Never reused.
        #[arg(long)]
        name: Option<String>,
        /// How long it is accepted: 30d, 12h (a minute to 5 years), or `never`.
        #[arg(long, default_value = "90d")]
        expires: Expiry,
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON (with the token) instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// Every token's name, role, state, expiry and last use (never the secret).
    List {
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every server on this database refuses it from its next request.
    Revoke {
        name: String,
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

/// The API tokens of the database at `db`, next to a running server or not; close the
/// handle when done.
async fn open_tokens(db: &Path) -> anyhow::Result<(Tables, TokenStore)> {
    // A URL is shown without its password.
    let shown = lariat_db::pg::redact(&db.to_string_lossy());
    if !db.exists() && !lariat_db::is_postgres_url(&db.to_string_lossy()) {
        tracing::info!("creating database {}", shown);
    }
    // Next to a running server: no executor lock.
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
    let tokens = TokenStore::open(handle.clone())
        .await
        .with_context(|| format!("cannot open the API tokens of {}", shown))?;
    Ok((handle, tokens))
}

pub async fn run(cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            role,
            name,
            expires,
            db,
            json,
        } => {
            let (handle, tokens) = open_tokens(&db).await?;
            let t = tokens
                .create(role, name.as_deref(), expires, &AuditActor::local())
                .await;
            handle.close().await;
            let t = t?;
            if json {
                print_json(&t);
            } else {
                println!("{}", t.token);
                let until = match t.info.expires_at {
                    Some(at) => format!("until {}", time(Some(at))),
                    None => "until revoked (no expiry)".into(),
                };
                eprintln!(
                    "created {} token '{}', valid {until}. It is shown only this once; keep it safe.\nUse it with: export LARIAT_TOKEN=<the token above>",
                    t.info.role, t.info.name
                );
            }
        }
        TokenCmd::List { db, json } => {
            let (handle, tokens) = open_tokens(&db).await?;
            let list = tokens.list().await;
            handle.close().await;
            let now = now_ms();
            let list: Vec<_> = list?.iter().map(|t| t.dto(now)).collect();
            if json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.clone(),
                            t.state.clone(),
                            time(Some(t.created_at)),
                            t.expires_at.map_or("never".into(), |e| time(Some(e))),
                            time(t.last_used_at),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &[
                            "NAME",
                            "ROLE",
                            "STATE",
                            "CREATED (UTC)",
                            "EXPIRES",
                            "LAST USED"
                        ],
                        &rows
                    )
                );
            }
        }
        TokenCmd::Revoke { name, db, json } => {
            let (handle, tokens) = open_tokens(&db).await?;
            let t = tokens.revoke(&name, &AuditActor::local()).await;
            handle.close().await;
            let t = t?.dto(now_ms());
            if json {
                print_json(&t);
            } else {
                println!(
                    "revoked {} token '{}'; servers on {} refuse it from now on",
                    t.role,
                    t.name,
                    lariat_db::pg::redact(&db.to_string_lossy())
                );
            }
        }
    }
    Ok(0)
}
