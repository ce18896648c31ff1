//! Counters, kept twice: as atomics the server's owner can read directly (tests, status
//! pages), and through the `metrics` facade for `/metrics` when a recorder is installed.
//!
//! Metric names:
//! - `lariat_dhcp_received_total{type}`: requests read, by DHCP message type
//! - `lariat_dhcp_replies_total{type}`: replies sent
//! - `lariat_dhcp_dropped_total{reason}`: packets dropped, by [`DropReason`]
//! - `lariat_dhcp_lease_writes_total`: lease rows committed
//! - `lariat_dhcp_commit_seconds`: histogram of group-commit latency
//! - `lariat_dhcp_commit_batch`: histogram of lease writes per commit

use std::sync::atomic::{AtomicU64, Ordering};

use dhcproto::v4::MessageType;

use super::wire::DropReason;

/// Message types a counter is kept for; anything else counts as `other`.
const TYPES: [&str; 9] = [
    "discover", "offer", "request", "decline", "ack", "nak", "release", "inform", "other",
];

fn type_index(t: MessageType) -> usize {
    match t {
        MessageType::Discover => 0,
        MessageType::Offer => 1,
        MessageType::Request => 2,
        MessageType::Decline => 3,
        MessageType::Ack => 4,
        MessageType::Nak => 5,
        MessageType::Release => 6,
        MessageType::Inform => 7,
        _ => 8,
    }
}

fn reason_index(r: DropReason) -> usize {
    DropReason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// Live counters of one server.
#[derive(Debug, Default)]
pub struct Stats {
    received: [AtomicU64; 9],
    replies: [AtomicU64; 9],
    dropped: [AtomicU64; DropReason::ALL.len()],
    lease_writes: AtomicU64,
    commits: AtomicU64,
}

impl Stats {
    pub(crate) fn received(&self, t: MessageType) {
        let i = type_index(t);
        self.received[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lariat_dhcp_received_total", "type" => TYPES[i]).increment(1);
    }
    pub(crate) fn replied(&self, t: MessageType) {
        let i = type_index(t);
        self.replies[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lariat_dhcp_replies_total", "type" => TYPES[i]).increment(1);
    }
    pub(crate) fn dropped(&self, r: DropReason) {
        self.dropped[reason_index(r)].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lariat_dhcp_dropped_total", "reason" => r.as_str()).increment(1);
    }
    pub(crate) fn committed(&self, leases: usize, seconds: f64) {
        self.lease_writes
            .fetch_add(leases as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lariat_dhcp_lease_writes_total").increment(leases as u64);
        metrics::histogram!("lariat_dhcp_commit_seconds").record(seconds);
        metrics::histogram!("lariat_dhcp_commit_batch").record(leases as f64);
    }

    /// Requests read of this message type.
    pub fn received_of(&self, t: MessageType) -> u64 {
        self.received[type_index(t)].load(Ordering::Relaxed)
    }
    /// Replies sent of this message type.
    pub fn replies_of(&self, t: MessageType) -> u64 {
        self.replies[type_index(t)].load(Ordering::Relaxed)
    }
    /// Packets dropped for this reason.
    pub fn dropped_for(&self, r: DropReason) -> u64 {
        self.dropped[reason_index(r)].load(Ordering::Relaxed)
    }
    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }
    /// Lease rows committed.
    pub fn lease_writes(&self) -> u64 {
        self.lease_writes.load(Ordering::Relaxed)
    }
    /// Group commits done.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}
