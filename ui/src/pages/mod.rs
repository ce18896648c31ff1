//! One module per page (or group of pages).

pub(crate) mod design;
pub(crate) mod hosts;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod signin;
pub(crate) mod sites;
pub(crate) mod submit;
pub(crate) mod windows;
