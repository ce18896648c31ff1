//! The roles a process is assembled from, after restate's node: each role owns what it
//! starts and stops.
//!
//! - [`central`]: the workflow library, the design source and its workflow templates, the
//!   API tokens and the REST API; run placement across sites comes with the site agents.
//! - [`site`]: the site's view of the design, the provisioning actions over its BMCs and
//!   asset cache, the window gate, the boot services and HTTP boot.
//! - [`link`]: a site agent's copy of its design and its link to the central node.
//!
//! `lariat server` is the central and the site role for one site ([`crate::serve`]);
//! `lariat agent` is the site role, the link role and its own engine, with a local API
//! ([`crate::serve_agent`]). The engine is started between the roles, because the site's
//! actions and window gate are the engine's and the others read and write through it.

pub mod central;
pub mod link;
pub mod site;
