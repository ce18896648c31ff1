//! The one error type every backend returns.

use std::time::Duration;

use crate::PowerState;

/// What went wrong talking to a BMC. Each variant names the BMC (`host:port` or URL), so a
/// message in a step's error log says which machine and what the BMC said.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The BMC refused the user name or password (RAKP failure, HTTP 401/403). Never retried:
    /// repeated failures lock accounts on real BMCs.
    #[error("authentication failed at {bmc}: {detail}")]
    Auth { bmc: String, detail: String },

    /// Nothing answered, or the network said no one is there (ICMP unreachable, connection
    /// refused). Retried up to the configured count before this is returned.
    #[error("BMC {bmc} unreachable: {detail}")]
    Unreachable { bmc: String, detail: String },

    /// The BMC stopped answering within the configured time.
    #[error("BMC {bmc} timed out after {after:?}: {detail}")]
    Timeout {
        bmc: String,
        after: Duration,
        detail: String,
    },

    /// The backend or the BMC cannot do this at all (IPMI firmware update, a Redfish service
    /// without a FirmwareInventory).
    #[error("{operation} is not supported by {backend} at {bmc}: {detail}")]
    Unsupported {
        bmc: String,
        backend: &'static str,
        operation: &'static str,
        detail: String,
    },

    /// The BMC answered an IPMI command with a non-zero completion code.
    #[error("BMC {bmc} answered {command} with completion code {code:#04x} ({meaning})")]
    Completion {
        bmc: String,
        command: &'static str,
        code: u8,
        meaning: &'static str,
    },

    /// The BMC answered something we cannot use: a malformed or unexpected reply, an HTTP
    /// error status, a library failure (including a panic inside ipmi-rs, caught).
    #[error("protocol error with {bmc}: {detail}")]
    Protocol { bmc: String, detail: String },

    /// The power state did not reach what was asked within the confirm timeout.
    #[error("BMC {bmc}: power still {last} {after:?} after asking for {wanted}")]
    NotConfirmed {
        bmc: String,
        wanted: PowerState,
        last: PowerState,
        after: Duration,
    },

    /// A firmware update task ended in a state other than Completed/OK.
    #[error("firmware update at {bmc}: task {task} ended {state}: {message}")]
    TaskFailed {
        bmc: String,
        task: String,
        state: String,
        message: String,
    },

    /// The credential reference could not be resolved (unset variable, unreadable file).
    /// The message names the reference, never the secret.
    #[error("credential {reference}: {detail}")]
    Credential { reference: String, detail: String },

    /// The configuration cannot work (bad address, bad URL, empty user name).
    #[error("invalid BMC configuration: {0}")]
    Config(String),
}

impl BmcError {
    /// Whether trying the same operation again may succeed (timeouts, unreachable, busy BMC).
    /// Authentication, unsupported operations and configuration errors are final.
    pub fn is_transient(&self) -> bool {
        match self {
            BmcError::Unreachable { .. }
            | BmcError::Timeout { .. }
            | BmcError::NotConfirmed { .. }
            | BmcError::Protocol { .. } => true,
            BmcError::Completion { code, .. } => matches!(code, 0xC0 | 0xC3 | 0xCE | 0xD2),
            _ => false,
        }
    }
}

/// The meaning of an IPMI completion code (IPMI 2.0, table 5-2). Command-specific codes
/// (0x80..=0xBE) depend on the command; errors from this crate name those of the commands
/// it sends.
pub fn completion_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "command completed normally",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation canceled or invalid reservation ID",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data, or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        0x01..=0x7E => "OEM completion code",
        0x80..=0xBE => "command-specific completion code",
        _ => "reserved completion code",
    }
}

/// Meanings of the command-specific codes of the commands this crate sends.
pub(crate) fn command_specific_meaning(netfn: u8, cmd: u8, code: u8) -> Option<&'static str> {
    match (netfn, cmd, code) {
        // Set System Boot Options
        (0x00, 0x08, 0x80) => Some("boot option parameter not supported"),
        (0x00, 0x08, 0x81) => Some("set in progress by another party"),
        (0x00, 0x08, 0x82) => Some("boot option parameter is read-only"),
        // Get System Boot Options
        (0x00, 0x09, 0x80) => Some("boot option parameter not supported"),
        // Set Session Privilege Level
        (0x06, 0x3B, 0x80) => Some("requested level not available for this user"),
        (0x06, 0x3B, 0x81) => Some("requested level exceeds channel or user limit"),
        (0x06, 0x3B, 0x82) => Some("cannot disable user level authentication"),
        // Close Session
        (0x06, 0x3C, 0x87) => Some("invalid session ID in request"),
        (0x06, 0x3C, 0x88) => Some("invalid session handle in request"),
        _ => None,
    }
}
