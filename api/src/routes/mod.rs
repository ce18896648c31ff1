//! The handlers, one module per resource. Each handler states the role it needs in its
//! signature (`Viewer`, `Operator`, `Admin`) and in its OpenAPI `security`, parses, calls
//! the engine, and maps the result.

pub mod access;
pub mod designs;
pub mod inventory;
pub mod ops;
pub mod runs;
pub mod sites;
pub mod stream;
pub mod windows;
pub mod workflows;
