//! The design's source of truth: a git repository.
//!
//! A webhook or a poll asks [`DesignSource::sync`] to fetch the design branch. Each new
//! commit is read from a bare mirror, validated, and recorded as a revision with its
//! findings. A revision becomes the active design only if it has no error; otherwise the
//! previous active design stays in force and the rejected revision is there to read. A
//! site can be pinned to a revision or a tag, and then keeps that design.
//!
//! Git work is blocking (git2), so it runs on blocking threads, one sync at a time.

pub mod credentials;
mod mirror;
mod revisions;
pub use revisions::{MIGRATIONS, POSTGRES_MIGRATIONS};
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lariat_db::{DbError, Tables};
use lariat_workflows::design::{self, Finding, Loaded};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use credentials::{CredentialError, KnownHosts, RepoCredentials, redact_url};
pub use mirror::Snapshot;
pub use revisions::{Pin, Revision, RevisionStatus, Trigger};
pub use webhook::{PushEvent, WebhookError, verify_signature};

use mirror::Mirror;

/// Errors of the design source. Each names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no design repository is configured (start the server with --design-repo)")]
    NotConfigured,
    #[error("git: cannot {what}: {message}")]
    Git { what: String, message: String },
    #[error("branch {branch} does not exist in {url}")]
    NoBranch { branch: String, url: String },
    #[error("no commit or tag {0:?} in the design repository")]
    UnknownRevision(String),
    #[error("design file {path} is {bytes} bytes; at most 8 MiB")]
    FileTooLarge { path: String, bytes: usize },
    #[error("design file {0} is not UTF-8 text")]
    NotUtf8(String),
    #[error(
        "revision {commit} has {errors} error(s); a site can only be pinned to a revision without errors"
    )]
    RejectedRevision { commit: String, errors: usize },
    #[error("fetching the design repository took longer than {0:?}")]
    Timeout(Duration),
    #[error("stored design revision is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

impl SourceError {
    /// Whether this is the database out of reach ([`lariat_db::is_outage`]).
    pub fn is_outage(&self) -> bool {
        match self {
            SourceError::Database(e) => e.is_outage(),
            SourceError::Sql(e) => lariat_db::is_outage(e),
            _ => false,
        }
    }

    fn git(what: impl Into<String>, e: git2::Error) -> Self {
        SourceError::Git {
            what: what.into(),
            message: e.message().to_string(),
        }
    }
}

/// Where the design comes from.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// A URL (`https://…`, `file://…`) or a local path to a git repository.
    pub repo: String,
    pub branch: String,
    /// The bare mirror Lariat fetches into (created if missing).
    pub mirror: PathBuf,
    /// Fetch this often; `None` relies on the webhook alone.
    pub poll: Option<Duration>,
    /// Shared secret that signs webhook payloads (`X-Hub-Signature-256`).
    pub webhook_secret: Option<Vec<u8>>,
    /// A fetch that takes longer fails (the git thread is left to finish on its own).
    pub fetch_timeout: Duration,
    /// How to sign in to `repo`; never part of its URL.
    pub credentials: RepoCredentials,
}

/// The design in force, with the revision it came from (`None` before any revision was
/// accepted, or when no repository is configured).
#[derive(Debug)]
pub struct ActiveDesign {
    pub revision: Option<Revision>,
    pub loaded: Arc<Loaded>,
}

/// The design one site (or one host's site) works from.
#[derive(Debug, Clone)]
pub struct PinnedDesign {
    /// The pin that chose it; `None` for the active design.
    pub pin: Option<Pin>,
    pub loaded: Arc<Loaded>,
}

/// Handle to the design source; cheap to clone.
#[derive(Clone)]
pub struct DesignSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// The revision and pin records (see `revisions`).
    db: Tables,
    cfg: Option<SourceConfig>,
    mirror: Option<Arc<Mutex<Mirror>>>,
    active: watch::Sender<Arc<ActiveDesign>>,
    /// One fetch at a time: a webhook during a poll waits, then fetches again (cheap).
    sync_lock: tokio::sync::Mutex<()>,
    /// Loaded designs by commit, for pinned sites.
    by_commit: Mutex<HashMap<String, Arc<Loaded>>>,
}

impl DesignSource {
    /// A source with no repository: the design is empty and `sync` says so.
    pub async fn unconfigured(db: impl Into<Tables>) -> Result<DesignSource, SourceError> {
        let db = db.into();
        db.migrate(&revisions::MIGRATIONS, &revisions::POSTGRES_MIGRATIONS)
            .await?;
        let active = ActiveDesign {
            revision: None,
            loaded: empty(),
        };
        Ok(DesignSource::build(db, None, None, active))
    }

    /// Makes `loaded`, of `commit`, the active design of a source with no repository: a
    /// site agent's copy of its site's part, as the centre sent it, so that the agent's
    /// own API answers host lookups. Revisions, pins and syncs stay the centre's.
    pub fn show(&self, commit: Option<&str>, loaded: Arc<Loaded>) {
        if self.inner.cfg.is_some() {
            return;
        }
        let errors = loaded.report.errors().count();
        let revision = commit.map(|c| Revision {
            id: 0,
            commit: c.to_string(),
            branch: String::new(),
            summary: "the site's part, from the central node".into(),
            trigger: "central".into(),
            fetched_at: lariat_db::now_ms(),
            status: RevisionStatus::Active,
            accepted: true,
            errors,
            warnings: loaded.report.warnings().count(),
        });
        self.inner
            .active
            .send_replace(Arc::new(ActiveDesign { revision, loaded }));
    }

    /// Opens the mirror and restores the active revision recorded in the store. It does
    /// not fetch; call [`sync`](Self::sync) for that (the server does at start).
    pub async fn open(
        db: impl Into<Tables>,
        cfg: SourceConfig,
    ) -> Result<DesignSource, SourceError> {
        let db = db.into();
        db.migrate(&revisions::MIGRATIONS, &revisions::POSTGRES_MIGRATIONS)
            .await?;
        let (path, url, creds) = (
            cfg.mirror.clone(),
            cfg.repo.clone(),
            cfg.credentials.clone(),
        );
        let mirror = blocking(cfg.fetch_timeout, move || Mirror::open(&path, &url, creds)).await?;
        let mirror = Arc::new(Mutex::new(mirror));
        let mut active = ActiveDesign {
            revision: None,
            loaded: empty(),
        };
        if let Some(rev) = revisions::active(&db).await? {
            match read_commit(&mirror, cfg.fetch_timeout, &rev.commit).await {
                Ok(snap) => {
                    active.loaded = Arc::new(design::load_files(&snap.files));
                    active.revision = Some(rev);
                }
                Err(e) => tracing::warn!(
                    commit = %rev.commit,
                    "the active design revision is not in the mirror ({e}); it returns with the next fetch"
                ),
            }
        }
        Ok(DesignSource::build(db, Some(cfg), Some(mirror), active))
    }

    fn build(
        db: Tables,
        cfg: Option<SourceConfig>,
        mirror: Option<Arc<Mutex<Mirror>>>,
        active: ActiveDesign,
    ) -> DesignSource {
        let (active, _) = watch::channel(Arc::new(active));
        DesignSource {
            inner: Arc::new(Inner {
                db,
                cfg,
                mirror,
                active,
                sync_lock: tokio::sync::Mutex::new(()),
                by_commit: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration, if a repository is configured.
    pub fn config(&self) -> Option<&SourceConfig> {
        self.inner.cfg.as_ref()
    }

    /// The design in force now.
    pub fn active(&self) -> Arc<ActiveDesign> {
        self.inner.active.borrow().clone()
    }

    /// Sees every change of the active design.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ActiveDesign>> {
        self.inner.active.subscribe()
    }

    /// Fetches the design branch, validates its head and records it as a revision. A
    /// commit seen before is not recorded again. The head becomes active only if it has no
    /// error finding; either way its record is returned.
    pub async fn sync(&self, trigger: Trigger) -> Result<Revision, SourceError> {
        let (cfg, mirror) = match (&self.inner.cfg, &self.inner.mirror) {
            (Some(c), Some(m)) => (c, m.clone()),
            _ => return Err(SourceError::NotConfigured),
        };
        let _one = self.inner.sync_lock.lock().await;
        let branch = cfg.branch.clone();
        let m = mirror.clone();
        let snap = blocking(cfg.fetch_timeout, move || {
            let m = m.lock().map_err(|_| poisoned())?;
            let head = m.fetch(&branch)?;
            m.snapshot(head)
        })
        .await?;
        let db = &self.inner.db;
        let (rev, loaded) = match revisions::by_commit(db, &snap.commit).await? {
            Some(rev) => {
                let loaded = self.loaded_for(&rev.commit, Some(&snap)).await?;
                (rev, loaded)
            }
            None => {
                let loaded = Arc::new(design::load_files(&snap.files));
                let rev =
                    revisions::record(db, &snap, &cfg.branch, trigger, &loaded.report).await?;
                self.remember(&rev.commit, loaded.clone());
                (rev, loaded)
            }
        };
        tracing::info!(
            commit = %rev.commit,
            errors = rev.errors,
            warnings = rev.warnings,
            trigger = trigger.as_str(),
            "design revision {}",
            if rev.accepted { "accepted" } else { "rejected" }
        );
        if !rev.accepted {
            return Ok(rev);
        }
        let current = self.active();
        let already = current
            .revision
            .as_ref()
            .is_some_and(|r| r.commit == rev.commit);
        if !already {
            revisions::make_active(db, rev.id).await?;
        }
        let rev = Revision {
            status: RevisionStatus::Active,
            ..rev
        };
        self.inner.active.send_replace(Arc::new(ActiveDesign {
            revision: Some(rev.clone()),
            loaded,
        }));
        Ok(rev)
    }

    /// Newest first.
    pub async fn revisions(&self, limit: u32) -> Result<Vec<Revision>, SourceError> {
        revisions::list(&self.inner.db, limit).await
    }

    /// A recorded revision by full or abbreviated commit id, with its findings.
    pub async fn revision(
        &self,
        rev: &str,
    ) -> Result<Option<(Revision, Vec<Finding>)>, SourceError> {
        revisions::with_findings(&self.inner.db, rev).await
    }

    /// Pins `site` to a revision or tag. The revision must have been recorded and accepted.
    pub async fn pin(&self, site: &str, rev: &str, actor: &str) -> Result<Pin, SourceError> {
        let commit = self.resolve(rev).await?;
        let record = revisions::by_commit(&self.inner.db, &commit)
            .await?
            .ok_or_else(|| SourceError::UnknownRevision(rev.to_string()))?;
        if !record.accepted {
            return Err(SourceError::RejectedRevision {
                commit,
                errors: record.errors,
            });
        }
        revisions::pin(&self.inner.db, site, rev, &commit, actor).await
    }

    /// Removes a site's pin; `false` when it had none.
    pub async fn unpin(&self, site: &str) -> Result<bool, SourceError> {
        revisions::unpin(&self.inner.db, site).await
    }

    /// Every pin, by site.
    pub async fn pins(&self) -> Result<Vec<Pin>, SourceError> {
        revisions::pins(&self.inner.db).await
    }

    /// The design a site works from: its pinned revision, or the active design. A pin to
    /// a tag follows the tag as fetched.
    pub async fn design_for_site(&self, site: &str) -> Result<Arc<Loaded>, SourceError> {
        Ok(self.site_design(site).await?.loaded)
    }

    /// The design `host` works from: that of its site (in the active design), with the
    /// pin that chose it, if any. A host without a site, or unknown to the active design,
    /// gets the active design.
    pub async fn design_for_host(&self, host: &str) -> Result<PinnedDesign, SourceError> {
        let active = self.active();
        match active
            .loaded
            .design
            .host(host)
            .and_then(|h| h.spec.site.as_deref())
        {
            Some(site) => self.site_design(site).await,
            None => Ok(PinnedDesign {
                pin: None,
                loaded: active.loaded.clone(),
            }),
        }
    }

    /// The design a site works from, with the pin that chose it (`None` for the active
    /// design).
    pub async fn site_design(&self, site: &str) -> Result<PinnedDesign, SourceError> {
        let Some(pin) = revisions::pin_of(&self.inner.db, site).await? else {
            return Ok(PinnedDesign {
                pin: None,
                loaded: self.active().loaded.clone(),
            });
        };
        let commit = match self.resolve(&pin.rev).await {
            Ok(c) => c,
            // A tag deleted upstream keeps the commit it last named.
            Err(SourceError::UnknownRevision(_)) => pin.commit.clone(),
            Err(e) => return Err(e),
        };
        let loaded = self.loaded_for(&commit, None).await?;
        Ok(PinnedDesign {
            pin: Some(pin),
            loaded,
        })
    }

    /// The commit `site` works from: its pin (a pin to a tag follows the tag as
    /// fetched), or the active revision. `None` before any revision was accepted, or
    /// without a repository.
    pub async fn site_commit(&self, site: &str) -> Result<Option<String>, SourceError> {
        if self.inner.cfg.is_none() {
            return Ok(None);
        }
        match revisions::pin_of(&self.inner.db, site).await? {
            Some(pin) => match self.resolve(&pin.rev).await {
                Ok(c) => Ok(Some(c)),
                Err(SourceError::UnknownRevision(_)) => Ok(Some(pin.commit)),
                Err(e) => Err(e),
            },
            None => Ok(self.active().revision.as_ref().map(|r| r.commit.clone())),
        }
    }

    /// The design files of a fetched commit, as the repository holds them: what a site
    /// agent keeps so that it can restart cut off from the centre.
    pub async fn files_of(&self, commit: &str) -> Result<Snapshot, SourceError> {
        let (cfg, mirror) = match (&self.inner.cfg, &self.inner.mirror) {
            (Some(c), Some(m)) => (c, m.clone()),
            _ => return Err(SourceError::NotConfigured),
        };
        read_commit(&mirror, cfg.fetch_timeout, commit).await
    }

    /// Fetches on every tick of the configured poll interval until `stop` fires.
    pub fn spawn_poller(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.inner.cfg.as_ref()?.poll?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = me.sync(Trigger::Poll).await {
                    tracing::warn!("design poll failed: {e}");
                }
            }
        }))
    }

    async fn resolve(&self, rev: &str) -> Result<String, SourceError> {
        let (cfg, mirror) = match (&self.inner.cfg, &self.inner.mirror) {
            (Some(c), Some(m)) => (c, m.clone()),
            _ => return Err(SourceError::NotConfigured),
        };
        let rev = rev.to_string();
        blocking(cfg.fetch_timeout, move || {
            let m = mirror.lock().map_err(|_| poisoned())?;
            m.resolve(&rev).map(|o| o.to_string())
        })
        .await
    }

    async fn loaded_for(
        &self,
        commit: &str,
        snap: Option<&Snapshot>,
    ) -> Result<Arc<Loaded>, SourceError> {
        if let Some(l) = self.cached(commit) {
            return Ok(l);
        }
        let loaded = match snap {
            Some(s) => Arc::new(design::load_files(&s.files)),
            None => {
                let (cfg, mirror) = match (&self.inner.cfg, &self.inner.mirror) {
                    (Some(c), Some(m)) => (c, m.clone()),
                    _ => return Err(SourceError::NotConfigured),
                };
                let snap = read_commit(&mirror, cfg.fetch_timeout, commit).await?;
                Arc::new(design::load_files(&snap.files))
            }
        };
        self.remember(commit, loaded.clone());
        Ok(loaded)
    }

    fn cached(&self, commit: &str) -> Option<Arc<Loaded>> {
        self.inner.by_commit.lock().ok()?.get(commit).cloned()
    }

    fn remember(&self, commit: &str, loaded: Arc<Loaded>) {
        if let Ok(mut m) = self.inner.by_commit.lock() {
            // Only the active and pinned designs are asked for again; a handful at most.
            if m.len() >= 16 {
                m.clear();
            }
            m.insert(commit.to_string(), loaded);
        }
    }
}

fn empty() -> Arc<Loaded> {
    Arc::new(design::load_files(&[]))
}

fn poisoned() -> SourceError {
    SourceError::Corrupt("a git thread panicked while holding the mirror".into())
}

async fn read_commit(
    mirror: &Arc<Mutex<Mirror>>,
    timeout: Duration,
    commit: &str,
) -> Result<Snapshot, SourceError> {
    let (m, commit) = (mirror.clone(), commit.to_string());
    blocking(timeout, move || {
        let m = m.lock().map_err(|_| poisoned())?;
        let oid = git2::Oid::from_str(&commit)
            .map_err(|_| SourceError::UnknownRevision(commit.clone()))?;
        m.snapshot(oid)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(SourceError::Corrupt(format!("git thread failed: {join}"))),
        Err(_) => Err(SourceError::Timeout(timeout)),
    }
}
