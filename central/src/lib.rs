//! What only the central node does: placing runs on the sites whose hosts they target,
//! knowing the site agents (registration, credentials, health), queueing operator
//! commands for runs an agent owns, and the centre's side of the link: what travels to
//! an agent, and applying the events an agent ships.
//!
//! A run is owned by the executor of the site its hosts are in: that site's agent when
//! one is registered, the central node when it serves the site itself. Only the owner
//! appends to a run's log, so the centre records a run it hands to an agent as
//! `assigned` until the agent's own events arrive, and a verb on such a run is a
//! command the agent carries out (or refuses) in the run's log.

mod link;
mod overrides;
mod placement;
mod power_poll;
mod sites;

use std::collections::BTreeSet;

use lariat_engine::{Engine, EngineError};
use lariat_source::{DesignSource, SourceError};

pub use link::event_of;
pub use overrides::{NewOverride, Overrides, StoredOverride, override_body};
pub use placement::Placed;
pub use sites::{
    MIGRATIONS, NewSiteToken, POSTGRES_MIGRATIONS, Registration, Sites, StoredCommand,
};

/// An agent not seen for this long shows as disconnected.
pub const CONNECTED_WITHIN_MS: i64 = 10_000;

/// The sites the central node serves itself, with no agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSites {
    /// Every site no agent has registered for (`lariat server` alone: one process for
    /// the whole design).
    All,
    /// These only; runs for any other site without an agent are refused.
    Only(BTreeSet<String>),
}

impl LocalSites {
    fn serves(&self, site: &str) -> bool {
        match self {
            LocalSites::All => true,
            LocalSites::Only(s) => s.contains(site),
        }
    }
}

/// Why the centre refused something. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("site {0} is not in the active design")]
    UnknownSite(String),
    #[error(
        "site {site} is served by agent {executor}; agent {other} cannot claim it too (stop one of them, or `lariat site reset {site}` if {executor} is gone for good)"
    )]
    SiteClaimed {
        site: String,
        executor: String,
        other: String,
    },
    #[error(
        "executor {executor} is already the agent of site {site}; give each agent its own --executor-id"
    )]
    ExecutorTaken { executor: String, site: String },
    #[error("executor id {0} is the central node's own; give the agent another --executor-id")]
    CentralExecutor(String),
    #[error(
        "agent {executor} of site {site} says its log ends at {agent_seq}, but the centre has applied its events up to {centre_seq}: its database was lost or replaced. Nothing was merged; after checking, `lariat site reset {site}` lets it register again under a new --executor-id"
    )]
    LogBehind {
        site: String,
        executor: String,
        agent_seq: i64,
        centre_seq: i64,
    },
    #[error("no agent is registered for site {0}: send hello first")]
    NotRegistered(String),
    #[error("site {site}'s agent is {registered}, not {executor}")]
    WrongExecutor {
        site: String,
        registered: String,
        executor: String,
    },
    #[error("the batch holds an event of {owner}; agent {executor} sends only its own events")]
    ForeignEvent { owner: String, executor: String },
    #[error("run {run} is owned by {owner}, not by agent {executor}")]
    NotYourRun {
        run: uuid::Uuid,
        owner: String,
        executor: String,
    },
    #[error("event {run}#{seq} cannot be read: {detail}")]
    BadEvent {
        run: uuid::Uuid,
        seq: i64,
        detail: String,
    },
    #[error(
        "site {0} has no agent and this central node does not serve it (see --local-sites): start the site's agent, or serve it here"
    )]
    NotServed(String),
    #[error("no command {0}")]
    UnknownCommand(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] lariat_engine::StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("storage error: {0}")]
    Db(#[from] lariat_db::DbError),
}

/// Counts the active DHCP leases of the DHCP server this process runs, when it runs one.
pub type LeaseCount = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Option<i64>> + Send>> + Send + Sync,
>;

/// The central node's placement, site registry and link. Cheap to clone.
#[derive(Clone)]
pub struct Central {
    engine: Engine,
    design: DesignSource,
    sites: Sites,
    overrides: Overrides,
    local: LocalSites,
    /// Keyed submits that span sites take turns, so that a repeat finds the first
    /// group whole.
    placing: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The DHCP server of this process's site role, set once it starts.
    local_leases: std::sync::Arc<std::sync::OnceLock<LeaseCount>>,
}

impl Central {
    pub fn new(
        engine: Engine,
        design: DesignSource,
        sites: Sites,
        overrides: Overrides,
        local: LocalSites,
    ) -> Self {
        Central {
            engine,
            design,
            sites,
            overrides,
            local,
            placing: Default::default(),
            local_leases: Default::default(),
        }
    }

    /// The leases of the DHCP server this process runs for the sites it serves; they are
    /// shown for a site when it is the only one served here (the design does not say
    /// which site a network belongs to). Later calls are ignored.
    pub fn serve_leases(&self, count: LeaseCount) {
        let _ = self.local_leases.set(count);
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// The operators' window overrides.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Every site an agent may speak for: the active design's, and those with a
    /// registered agent.
    pub async fn site_names(&self) -> Result<Vec<String>, CentralError> {
        let regs = self.sites.registrations().await?;
        Ok(self.site_names_with(&regs).into_iter().collect())
    }

    /// The active design's sites and those of `regs`, in name order.
    fn site_names_with(&self, regs: &[sites::Registration]) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self
            .design
            .active()
            .loaded
            .design
            .sites()
            .map(|s| s.name.clone())
            .collect();
        names.extend(regs.iter().map(|r| r.site.clone()));
        names
    }

    /// The site whose agent owns runs of `owner`, when `owner` is a registered agent.
    pub async fn agent_site(&self, owner: &str) -> Result<Option<String>, CentralError> {
        if owner == self.engine.owner() {
            return Ok(None);
        }
        Ok(self.sites.site_of_executor(owner).await?)
    }
}
