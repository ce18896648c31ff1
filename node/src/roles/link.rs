//! The link role of a site agent: its copy of the design, and the link that dials out to
//! the central node.

use lariat_client::Client;
use lariat_db::Db;
use lariat_engine::Engine;
use lariat_link::{LeaseCount, Link, LinkConfig, StoredDesign, StoredOverrides};
use tokio_util::sync::CancellationToken;

use crate::error::ProcessError;

/// Where the centre is, and as which site the agent speaks.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The central node's URL.
    pub central: String,
    /// The site's credential (`lariat site token create SITE`); none when the client
    /// certificate speaks for the site.
    pub token: Option<String>,
    /// The client certificate and the CA of the centre's, for `https://`.
    pub tls: lariat_client::ClientTls,
    pub link: LinkConfig,
}

/// The running link.
pub struct LinkRole {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LinkRole {
    /// The agent's kept design, before anything else needs it.
    pub async fn design(tables: &Db) -> Result<StoredDesign, ProcessError> {
        StoredDesign::open(tables.clone())
            .await
            .map_err(ProcessError::Link)
    }

    /// The window overrides the agent keeps from the centre.
    pub async fn overrides(tables: &Db) -> Result<StoredOverrides, ProcessError> {
        StoredOverrides::open(tables.clone())
            .await
            .map_err(ProcessError::Link)
    }

    /// Starts dialling out.
    pub async fn start(
        s: &LinkSettings,
        engine: Engine,
        design: StoredDesign,
        overrides: StoredOverrides,
        tables: Db,
        leases: Option<LeaseCount>,
    ) -> Result<LinkRole, ProcessError> {
        let centre = Client::with_tls(&s.central, s.token.clone(), &s.tls)
            .map_err(|e| ProcessError::Central(s.central.clone(), e))?;
        let mut link = Link::open(s.link.clone(), engine, design, overrides, tables, centre)
            .await
            .map_err(ProcessError::Link)?;
        if let Some(l) = leases {
            link = link.with_leases(l);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(link.run(stop.clone()));
        Ok(LinkRole { stop, task })
    }

    /// Stops the link; what was not shipped waits in the log for the next start.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
