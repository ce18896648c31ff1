//! The TFTP server's counters, recorded through the `metrics` facade (exported on the
//! agent's `/metrics` by whichever recorder the binary installs).
//!
//! | name | labels | counts |
//! |---|---|---|
//! | `lariat_tftp_requests_total` | `result` (accepted, refused), `reason` | read/write requests on the listening port |
//! | `lariat_tftp_packets_dropped_total` | `reason` | datagrams dropped without an answer (garbage, stray, truncated) |
//! | `lariat_tftp_errors_sent_total` | `code` | ERROR packets the server sent |
//! | `lariat_tftp_transfers_total` | `outcome` (completed, client_error, timed_out, replaced, io_error, lookup_error) | finished transfers |
//! | `lariat_tftp_retransmits_total` | | windows or OACKs sent again after a timeout or a duplicate ACK |
//! | `lariat_tftp_bytes_sent_total` | | file bytes of completed transfers |
//! | `lariat_tftp_transfers_active` (gauge) | | transfers in flight |

use super::packet::ErrorCode;

/// Metric names, for tests and dashboards.
pub mod names {
    /// Requests on the listening port.
    pub const REQUESTS: &str = "lariat_tftp_requests_total";
    /// Datagrams dropped without an answer.
    pub const DROPPED: &str = "lariat_tftp_packets_dropped_total";
    /// ERROR packets sent.
    pub const ERRORS_SENT: &str = "lariat_tftp_errors_sent_total";
    /// Finished transfers.
    pub const TRANSFERS: &str = "lariat_tftp_transfers_total";
    /// Retransmissions.
    pub const RETRANSMITS: &str = "lariat_tftp_retransmits_total";
    /// File bytes of completed transfers.
    pub const BYTES_SENT: &str = "lariat_tftp_bytes_sent_total";
    /// Transfers in flight.
    pub const ACTIVE: &str = "lariat_tftp_transfers_active";
}

pub(crate) fn dropped(reason: &'static str) {
    metrics::counter!(names::DROPPED, "reason" => reason).increment(1);
}

pub(crate) fn request(result: &'static str, reason: &'static str) {
    metrics::counter!(names::REQUESTS, "result" => result, "reason" => reason).increment(1);
}

pub(crate) fn error_sent(code: ErrorCode) {
    let code = match code {
        ErrorCode::NotDefined => "0",
        ErrorCode::FileNotFound => "1",
        ErrorCode::AccessViolation => "2",
        ErrorCode::DiskFull => "3",
        ErrorCode::IllegalOperation => "4",
        ErrorCode::UnknownTransferId => "5",
        ErrorCode::FileExists => "6",
        ErrorCode::NoSuchUser => "7",
        ErrorCode::BadOption => "8",
    };
    metrics::counter!(names::ERRORS_SENT, "code" => code).increment(1);
}

pub(crate) fn transfer_done(outcome: &'static str) {
    metrics::counter!(names::TRANSFERS, "outcome" => outcome).increment(1);
}

pub(crate) fn retransmit() {
    metrics::counter!(names::RETRANSMITS).increment(1);
}

pub(crate) fn bytes_sent(bytes: u64) {
    metrics::counter!(names::BYTES_SENT).increment(bytes);
}

pub(crate) fn active(n: usize) {
    metrics::gauge!(names::ACTIVE).set(n as f64);
}
