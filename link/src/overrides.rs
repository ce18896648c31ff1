//! The operators' window overrides the centre sent for this agent's site
//! (`agent_overrides`): the whole set in force with its version, kept so that an agent
//! restarted while cut off goes on honouring them until they expire by its own clock.

use std::sync::Arc;

use lariat_client::types::WindowOverride;
use lariat_db::{Db, DbError};
use lariat_site::OverrideFeed;
use lariat_workflows::windows::{Override, OverrideAction};
use tokio::sync::watch;

/// The kept overrides. Cheap to clone.
#[derive(Clone)]
pub struct StoredOverrides {
    db: Db,
    tx: Arc<watch::Sender<Arc<Vec<Override>>>>,
    version: Arc<std::sync::atomic::AtomicI64>,
}

fn engine_side(list: &[WindowOverride]) -> Vec<Override> {
    list.iter()
        .filter_map(|o| {
            let action = match o.action.as_str() {
                "open" => OverrideAction::Open,
                "close" => OverrideAction::Close,
                other => {
                    // A newer centre's kind: ignored, and said so, rather than guessed.
                    tracing::warn!(override_id = %o.id, "window override of unknown action '{other}' ignored");
                    return None;
                }
            };
            Some(Override {
                id: o.id.clone(),
                seq: o.seq,
                window: o.window.clone(),
                action,
                site: o.site.clone(),
                from: o.starts_at,
                until: o.ends_at,
                reason: o.reason.clone(),
                who: o.who.clone(),
            })
        })
        .collect()
}

impl StoredOverrides {
    /// The overrides kept in `db` (none before the centre first sent any).
    pub async fn open(db: Db) -> Result<StoredOverrides, DbError> {
        db.migrate(&crate::MIGRATIONS).await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT version, overrides FROM agent_overrides WHERE id = 1")
                .fetch_optional(db.readers())
                .await?;
        let (version, list) = match row {
            Some((v, text)) => {
                let list: Vec<WindowOverride> = serde_json::from_str(&text).map_err(|e| {
                    DbError::Sql(sqlx::Error::Decode(
                        format!("the kept window overrides do not read: {e}").into(),
                    ))
                })?;
                (v, list)
            }
            None => (0, Vec::new()),
        };
        if !list.is_empty() {
            tracing::info!(
                overrides = list.len(),
                version,
                "window overrides kept from the centre"
            );
        }
        let (tx, _) = watch::channel(Arc::new(engine_side(&list)));
        Ok(StoredOverrides {
            db,
            tx: Arc::new(tx),
            version: Arc::new(version.into()),
        })
    }

    /// The overrides as they change, for the site's window gate and the local API.
    pub fn feed(&self) -> OverrideFeed {
        self.tx.subscribe()
    }

    /// The version of the set held.
    pub fn version(&self) -> i64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps the set the centre sent, when it is another version than the one held.
    pub async fn replace(&self, version: i64, list: &[WindowOverride]) -> Result<(), DbError> {
        if version == self.version() {
            return Ok(());
        }
        let text = serde_json::to_string(list).unwrap_or_else(|_| "[]".into());
        {
            let mut w = self.db.writer().await?;
            sqlx::query(
                "INSERT INTO agent_overrides (id, version, overrides, received_at) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET version = ?1, overrides = ?2, received_at = ?3",
            )
            .bind(version)
            .bind(text)
            .bind(lariat_db::now_ms())
            .execute(&mut *w)
            .await?;
        }
        tracing::info!(
            overrides = list.len(),
            version,
            "window overrides from the centre"
        );
        self.tx.send_replace(Arc::new(engine_side(list)));
        self.version
            .store(version, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}
