//! BMC drivers behind one trait: IPMI over LAN (RMCP+, on ipmi-rs plus the chassis and
//! boot-option commands it lacks) and Redfish.
//!
//! Not built yet: this crate arrives with the BMC issue. It depends on nothing of ours;
//! `steps` will call it.
