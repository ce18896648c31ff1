//! Why a node cannot start or stopped. Each names what failed; causes follow as sources.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A node's failure.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("--bmc-max-in-flight must be at least 1")]
    NoBmcSlots,
    #[error("cannot start the engine")]
    Engine(#[source] lariat_engine::EngineError),
    #[error("cannot register built-in workflow {0}")]
    Library(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "a site agent keeps its tables in a SQLite file of its own, so that it works while cut off from the centre; PostgreSQL is for `lariat server`: give the agent a file's path, e.g. --db ./lariat-agent.db"
    )]
    AgentOnPostgres,
    #[error("cannot use this database")]
    Schema(#[source] lariat_db::DbError),
    #[error("cannot open the database for the API, design and site tables")]
    Tables(#[source] lariat_db::DbError),
    #[error("cannot open the API tokens")]
    Tokens(#[source] lariat_api::TokenError),
    #[error("cannot open the site agents' tables")]
    Sites(#[source] lariat_db::DbError),
    #[error("cannot open the window overrides' table")]
    Overrides(#[source] lariat_db::DbError),
    #[error("cannot open the link's tables")]
    Link(#[source] lariat_db::DbError),
    #[error("the central node's URL {0} cannot be used")]
    Central(String, #[source] lariat_client::ClientError),
    #[error("cannot open the node tokens")]
    NodeTokens(#[source] lariat_db::DbError),
    #[error("cannot open the design records")]
    DesignRecords(#[source] lariat_source::SourceError),
    #[error("cannot open the design mirror {}", .0.display())]
    DesignMirror(PathBuf, #[source] lariat_source::SourceError),
    #[error(
        "HTTP boot is plain HTTP (PXE firmware cannot check a certificate), and this API listener speaks TLS: give HTTP boot a listener of its own with --boot-listen"
    )]
    BootOverTls,
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot create the boot assets folder {}", .0.display())]
    BootAssets(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Services(#[from] lariat_site::ServicesError),
    #[error(transparent)]
    Api(#[from] lariat_api::ApiError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("engine stopped: {0}")]
    Stopped(String),
}
