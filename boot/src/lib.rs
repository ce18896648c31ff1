//! Site boot services: DHCP (dhcproto), TFTP (async-tftp), HTTP boot (iPXE scripts,
//! assets, node callbacks, metadata).
//!
//! Not built yet: this crate arrives with the boot-path issue. It depends on nothing of
//! ours; `steps` and the agent will call it.
