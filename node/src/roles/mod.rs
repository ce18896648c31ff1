//! The roles a process is assembled from, after restate's node: each role owns what it
//! starts and stops.
//!
//! - [`central`]: the workflow library, the design source and its workflow templates, the
//!   API tokens and the REST API; run placement across sites comes with the site agents.
//! - [`site`]: the site's view of the design, the provisioning actions over its BMCs and
//!   asset cache, the window gate, the boot services and HTTP boot.
//!
//! `lariat server` is both roles for one site ([`crate::serve`]); the engine they share is
//! started between them, because the site's actions and window gate are the engine's
//! and the central role reads and writes through it.

pub mod central;
pub mod site;
