//! The REST API's request and response bodies: the server (`lariat-api`) answers with them
//! and the client (`lariat-client`) reads them, so the two cannot drift apart. They mirror
//! the engine's rows but are the API's own contract; the OpenAPI document is derived from
//! them. Timestamps are milliseconds since the Unix epoch.

mod access;
mod designs;
mod error;
mod inventory;
mod link;
mod ops;
mod runs;
mod windows;
mod workflows;

pub use access::*;
pub use designs::*;
pub use error::*;
pub use inventory::*;
pub use link::*;
pub use ops::*;
pub use runs::*;
pub use windows::*;
pub use workflows::*;
