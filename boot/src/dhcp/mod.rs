//! DHCP server for site boot: our own loop on dhcproto (codec only).
//!
//! - Reservations (MAC -> address) from the design; a dynamic pool from each network's
//!   ranges in discovery mode, where unknown MACs are recorded as discovered hosts.
//!   Without discovery, unknown MACs are ignored.
//! - PXE: option 93 or the `PXEClient:Arch:` vendor class picks the boot file; user class
//!   `iPXE` gets the HTTP script URL; siaddr, the BOOTP file field, options 66/67 when
//!   asked for, and option 60 `PXEClient` back to PXE clients.
//! - proxyDHCP mode: boot information only, on ports 67 and 4011.
//! - Relays: giaddr chooses the network and gets the reply.
//! - Leases live in SQLite; an ACK leaves only after its lease is committed (group
//!   commit). A restart answers as before.
//!
//! Start with [`DhcpServer::start`] (or bind in a chosen network namespace with
//! [`DhcpServer::bind`] and pass the sockets to [`DhcpServer::start_with_sockets`]);
//! swap the design part with [`DhcpHandle::replace_config`].

mod config;
mod handler;
mod server;
mod socket;
mod stats;
mod store;
mod wire;

pub(crate) use server::unix_now;

pub use config::{
    BootConfig, CompiledConfig, ConfigError, DhcpConfig, Durability, Listen, MacAddr, Mode,
    Network, OptionValue, Range, Reservation, ServerOptions, Subnet,
};
pub use handler::{
    DiscoveredHost, Handler, HandlerOptions, Lease, LeaseState, LeaseWrite, OFFER_HOLD, Outcome,
    PXE_PORT, RecvInfo, Reply,
};
pub use server::{DhcpError, DhcpHandle, DhcpServer};
pub use socket::BoundSocket;
pub use stats::Stats;
pub use store::{LeaseReader, StoreError};
pub use wire::DropReason;

#[cfg(test)]
mod tests;
