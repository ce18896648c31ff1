//! The agent's copy of its site's design (`agent_design`): the revision the centre sent,
//! kept so that a restart cut off from the centre still resolves hosts and boots nodes.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_client::types::{DesignFile, LinkDesign};
use lariat_db::{Db, DbError};
use lariat_site::{CurrentDesign, SiteDesign};
use lariat_workflows::design::load_files;
use tokio::sync::watch;

/// The design the centre sent for this agent's site. Cheap to clone.
#[derive(Clone)]
pub struct StoredDesign {
    db: Db,
    tx: Arc<watch::Sender<CurrentDesign>>,
}

fn loaded(commit: Option<String>, files: &[DesignFile]) -> CurrentDesign {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.path.clone(), f.content.clone()))
        .collect();
    CurrentDesign {
        revision: commit,
        loaded: Arc::new(load_files(&files)),
    }
}

impl StoredDesign {
    /// The design kept in `db` (an empty one before the centre first sent it).
    pub async fn open(db: Db) -> Result<StoredDesign, DbError> {
        db.migrate(&crate::MIGRATIONS).await?;
        let row: Option<(Option<String>, String)> =
            sqlx::query_as("SELECT commit_id, files FROM agent_design WHERE id = 1")
                .fetch_optional(db.readers())
                .await?;
        let current = match row {
            Some((commit, files)) => {
                let files: Vec<DesignFile> = serde_json::from_str(&files).map_err(|e| {
                    DbError::Sql(sqlx::Error::Decode(
                        format!("the kept design does not read: {e}").into(),
                    ))
                })?;
                loaded(commit, &files)
            }
            None => loaded(None, &[]),
        };
        if let Some(c) = &current.revision {
            tracing::info!(commit = %c, "design kept from the centre");
        }
        let (tx, _) = watch::channel(current);
        Ok(StoredDesign {
            db,
            tx: Arc::new(tx),
        })
    }

    /// The commit held, if any.
    pub fn commit(&self) -> Option<String> {
        self.tx.borrow().revision.clone()
    }

    /// Keeps `d` and makes it the design in force.
    pub async fn replace(&self, d: &LinkDesign) -> Result<(), DbError> {
        let files = serde_json::to_string(&d.files).unwrap_or_else(|_| "[]".into());
        {
            let mut w = self.db.writer().await?;
            sqlx::query(
                "INSERT INTO agent_design (id, commit_id, files, received_at) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET commit_id = ?1, files = ?2, received_at = ?3",
            )
            .bind(&d.commit)
            .bind(files)
            .bind(lariat_db::now_ms())
            .execute(&mut *w)
            .await?;
        }
        let next = loaded(d.commit.clone(), &d.files);
        tracing::info!(
            commit = next.revision.as_deref().unwrap_or("-"),
            hosts = next.loaded.design.hosts().count(),
            "design from the centre"
        );
        self.tx.send_replace(next);
        Ok(())
    }
}

#[async_trait]
impl SiteDesign for StoredDesign {
    fn current(&self) -> CurrentDesign {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<CurrentDesign> {
        self.tx.subscribe()
    }

    // The centre sends the revision this site works from, pins already applied.
    async fn for_site(&self, _site: &str) -> Result<CurrentDesign, String> {
        Ok(self.current())
    }

    async fn for_host(&self, _host: &str) -> Result<CurrentDesign, String> {
        Ok(self.current())
    }
}
