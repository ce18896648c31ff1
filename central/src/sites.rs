//! The central node's tables about site agents (`sites`, `site_tokens`,
//! `site_commands`): every statement on them is in this file.

use lariat_api_types::{CommandActor, LinkCommand};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lariat_db::{DbError, Tables, secret};
use uuid::Uuid;

/// The migrations of these tables (`central/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The same tables on PostgreSQL (`central/migrations/postgres`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub site: String,
    pub executor: String,
    pub agent_version: String,
    pub registered_at: i64,
    pub last_seen: i64,
    pub owner_seq: i64,
    pub commands_seen: i64,
    /// Active DHCP leases at the site, at the agent's last sync.
    pub dhcp_leases: Option<i64>,
    /// The version of the window overrides the agent holds.
    pub overrides_seen: i64,
}

/// What an agent reports at each sync, beyond its log's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Its command cursor.
    pub commands_seen: i64,
    /// Active DHCP leases, or `None` when it serves no DHCP.
    pub dhcp_leases: Option<i64>,
    /// The version of the window overrides it holds.
    pub overrides_seen: i64,
}

/// A site credential just made: `token` is shown once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewSiteToken {
    pub site: String,
    pub name: String,
    pub token: String,
    pub created_at: i64,
}

/// A command as queued.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    pub site: String,
    pub command: LinkCommand,
}

/// The site agents' tables. Cheap to clone.
#[derive(Clone)]
pub struct Sites {
    db: Tables,
    /// What each agent last reported, and when it was last written: an agent that
    /// reports nothing new is seen in memory, and written down only every
    /// [`SEEN_WRITE_EVERY_MS`], so that idle agents' syncs do not take the database's
    /// write lock from the events being applied.
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// How often the last-seen time of an agent with nothing new is written down.
const SEEN_WRITE_EVERY_MS: i64 = 5_000;

#[derive(Debug)]
struct Seen {
    version: String,
    owner_seq: i64,
    report: Option<SyncReport>,
    written_at: i64,
    last_seen: i64,
}

type RegRow = (String, String, String, i64, i64, i64, i64, Option<i64>, i64);

fn registration(
    (
        site,
        executor,
        agent_version,
        registered_at,
        last_seen,
        owner_seq,
        commands_seen,
        dhcp_leases,
        overrides_seen,
    ): RegRow,
) -> Registration {
    Registration {
        site,
        executor,
        agent_version,
        registered_at,
        last_seen,
        owner_seq,
        commands_seen,
        dhcp_leases,
        overrides_seen,
    }
}

/// The columns [`registration`] decodes, in its order (a macro so queries stay `&'static str`).
macro_rules! reg_columns {
    () => {
        "site, executor, agent_version, registered_at, last_seen, owner_seq, commands_seen, dhcp_leases, overrides_seen"
    };
}

type CmdRow = (i64, String, String, String, String, String, String, i64);

fn command(
    (seq, id, site, run, verb, args, actor, created_at): CmdRow,
) -> Result<StoredCommand, DbError> {
    let bad = |what: &str, e: String| {
        DbError::Sql(sqlx::Error::Decode(
            format!("site command {id}: {what}: {e}").into(),
        ))
    };
    Ok(StoredCommand {
        site,
        command: LinkCommand {
            seq,
            run_id: Uuid::parse_str(&run).map_err(|e| bad("run id", e.to_string()))?,
            verb,
            args: serde_json::from_str(&args).map_err(|e| bad("args", e.to_string()))?,
            actor: serde_json::from_str(&actor).map_err(|e| bad("actor", e.to_string()))?,
            created_at,
            id,
        },
    })
}

/// The columns [`command`] decodes, in its order.
macro_rules! cmd_columns {
    () => {
        "seq, id, site, run_id, verb, args, actor, created_at"
    };
}

impl Sites {
    /// The tables of `db`, brought up to date.
    pub async fn open(db: impl Into<Tables>) -> Result<Sites, DbError> {
        let db = db.into();
        db.migrate(&MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        Ok(Sites {
            db,
            seen: Default::default(),
        })
    }

    /// `r` with the last-seen time kept in memory, when it is newer.
    fn freshest(&self, mut r: Registration) -> Registration {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get(&r.site) {
            r.last_seen = r.last_seen.max(s.last_seen);
        }
        r
    }

    /// Every registered agent, by site.
    pub async fn registrations(&self) -> Result<Vec<Registration>, DbError> {
        let rows: Vec<RegRow> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            reg_columns!(),
            " FROM sites ORDER BY site"
        ))
        .fetch_all(ex)
        .await?);
        Ok(rows
            .into_iter()
            .map(|r| self.freshest(registration(r)))
            .collect())
    }

    /// The agent registered for `site`, if any.
    pub async fn registration(&self, site: &str) -> Result<Option<Registration>, DbError> {
        let row: Option<RegRow> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            reg_columns!(),
            " FROM sites WHERE site = $1"
        ))
        .bind(site)
        .fetch_optional(ex)
        .await?);
        Ok(row.map(|r| self.freshest(registration(r))))
    }

    /// The site whose agent is `executor`, if any.
    pub async fn site_of_executor(&self, executor: &str) -> Result<Option<String>, DbError> {
        Ok(lariat_db::on_reader!(&self.db, |ex| sqlx::query_scalar(
            "SELECT site FROM sites WHERE executor = $1"
        )
        .bind(executor)
        .fetch_optional(ex)
        .await?))
    }

    /// Registers `executor` as `site`'s agent. `false` when the site or the executor is
    /// taken already (the caller says which).
    pub async fn register(
        &self,
        site: &str,
        executor: &str,
        version: &str,
        owner_seq: i64,
    ) -> Result<bool, DbError> {
        let now = lariat_db::now_ms();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(site);
        let done = lariat_db::on_writer!(&self.db, |c| {
            sqlx::query(
            "INSERT INTO sites (site, executor, agent_version, registered_at, last_seen, owner_seq, commands_seen)
             VALUES ($1, $2, $3, $4, $4, $5, 0) ON CONFLICT DO NOTHING",
        )
        .bind(site)
        .bind(executor)
        .bind(version)
        .bind(now)
        .bind(owner_seq)
        .execute(&mut *c).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Records what the agent of `site` reported now.
    pub async fn seen(
        &self,
        site: &str,
        version: &str,
        owner_seq: i64,
        report: Option<SyncReport>,
    ) -> Result<(), DbError> {
        let now = lariat_db::now_ms();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = seen.get_mut(site) {
                let same = s.version == version
                    && s.owner_seq == owner_seq
                    && report.is_none_or(|r| s.report == Some(r));
                if same && now - s.written_at < SEEN_WRITE_EVERY_MS {
                    s.last_seen = now;
                    return Ok(());
                }
            }
        }
        lariat_db::on_writer!(&self.db, |c| {
            sqlx::query(
                "UPDATE sites SET last_seen = $2, agent_version = $3, owner_seq = $4,
               commands_seen = COALESCE($5, commands_seen),
               dhcp_leases = CASE WHEN $5 IS NULL THEN dhcp_leases ELSE $6 END,
               overrides_seen = COALESCE($7, overrides_seen)
             WHERE site = $1",
            )
            .bind(site)
            .bind(now)
            .bind(version)
            .bind(owner_seq)
            .bind(report.map(|r| r.commands_seen))
            .bind(report.and_then(|r| r.dhcp_leases))
            .bind(report.map(|r| r.overrides_seen))
            .execute(&mut *c)
            .await?;
        });
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let kept = report.or_else(|| seen.get(site).and_then(|s| s.report));
        seen.insert(
            site.to_string(),
            Seen {
                version: version.to_string(),
                owner_seq,
                report: kept,
                written_at: now,
                last_seen: now,
            },
        );
        Ok(())
    }

    /// Forgets `site`'s agent, so that another may register (its database was lost).
    /// `false` when none was registered.
    pub async fn reset(&self, site: &str) -> Result<bool, DbError> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(site);
        let done = lariat_db::on_writer!(&self.db, |c| sqlx::query(
            "DELETE FROM sites WHERE site = $1"
        )
        .bind(site)
        .execute(&mut *c)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// A credential for `site`'s agent, named `name`; `None` when the name is taken.
    pub async fn create_token(
        &self,
        site: &str,
        name: &str,
    ) -> Result<Option<NewSiteToken>, DbError> {
        let token = secret::generate("lariat_site_");
        let created_at = lariat_db::now_ms();
        let done = lariat_db::on_writer!(&self.db, |c| sqlx::query(
            "INSERT INTO site_tokens (hash, site, name, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(secret::hash(&token))
        .bind(site)
        .bind(name)
        .bind(created_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
        Ok((done == 1).then(|| NewSiteToken {
            site: site.to_string(),
            name: name.to_string(),
            token,
            created_at,
        }))
    }

    /// The site a credential is for, if it is one.
    pub async fn site_of_token(&self, token: &str) -> Result<Option<String>, DbError> {
        Ok(lariat_db::on_reader!(&self.db, |ex| sqlx::query_scalar(
            "SELECT site FROM site_tokens WHERE hash = $1"
        )
        .bind(secret::hash(token))
        .fetch_optional(ex)
        .await?))
    }

    /// Queues `verb` on `run` for `site`'s agent.
    pub async fn queue(
        &self,
        site: &str,
        run: Uuid,
        verb: &str,
        args: &serde_json::Value,
        actor: &CommandActor,
    ) -> Result<StoredCommand, DbError> {
        let id = Uuid::now_v7().to_string();
        let created_at = lariat_db::now_ms();
        let actor_json = serde_json::to_string(actor).unwrap_or_else(|_| "{}".into());
        let seq: i64 = lariat_db::on_writer!(&self.db, |c| sqlx::query_scalar(
            "INSERT INTO site_commands (id, site, run_id, verb, args, actor, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(&id)
        .bind(site)
        .bind(run.to_string())
        .bind(verb)
        .bind(args.to_string())
        .bind(actor_json)
        .bind(created_at)
        .fetch_one(&mut *c)
        .await?);
        Ok(StoredCommand {
            site: site.to_string(),
            command: LinkCommand {
                seq,
                id,
                run_id: run,
                verb: verb.to_string(),
                args: args.clone(),
                actor: actor.clone(),
                created_at,
            },
        })
    }

    /// `site`'s commands after `seq`, oldest first, at most `limit`.
    pub async fn commands_after(
        &self,
        site: &str,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<LinkCommand>, DbError> {
        let rows: Vec<CmdRow> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            cmd_columns!(),
            " FROM site_commands WHERE site = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(site)
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?);
        rows.into_iter()
            .map(|r| command(r).map(|c| c.command))
            .collect()
    }

    /// A command by id.
    pub async fn command(&self, id: &str) -> Result<Option<StoredCommand>, DbError> {
        let row: Option<CmdRow> = lariat_db::on_reader!(&self.db, |ex| sqlx::query_as(concat!(
            "SELECT ",
            cmd_columns!(),
            " FROM site_commands WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(ex)
        .await?);
        row.map(command).transpose()
    }
}
