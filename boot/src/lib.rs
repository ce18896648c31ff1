//! Site boot services: DHCP (dhcproto), TFTP, HTTP boot (iPXE scripts, assets, node
//! callbacks, metadata).
//!
//! This crate depends on nothing of ours: the agent (or the single-site server) maps the
//! active design into the plain configuration types each service takes.

pub mod dhcp;
pub mod http;
pub mod tftp;
