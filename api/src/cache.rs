//! Serialized run details (`GET /v1/runs/{id}`), kept until the run changes.
//!
//! Building a detail costs three store queries; most runs an operator looks at are waiting
//! and do not change between two looks. A task follows the engine's committed events and
//! drops a run's entry on each of its events, so an entry is stale at most for the time
//! between a commit and that task seeing it. Verb handlers also drop the entry themselves
//! once the engine has committed, so a client sees its own change on its next read.
//!
//! Fences keep a slow reader from putting back what an invalidation removed: each build
//! takes a ticket before reading the store, each invalidation takes one after the commit,
//! and a build may only be cached if its ticket is newer than the run's last fence.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use lariat_engine::Event;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

/// Most entries kept; past it, an arbitrary entry makes room.
const MAX_ENTRIES: usize = 4096;
/// Most runs with a remembered fence; past it, one fence for every run replaces them.
const MAX_FENCES: usize = 65_536;
/// Details larger than this (big fan-outs) are not kept.
const MAX_BODY: usize = 256 * 1024;

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Bytes>,
    fences: HashMap<Uuid, u64>,
    /// A fence for every run not in `fences`.
    global: u64,
}

/// The cache. Cheap to share behind an `Arc`.
#[derive(Default)]
pub(crate) struct RunCache {
    tickets: AtomicU64,
    inner: Mutex<Inner>,
}

/// Taken before reading the store for a build.
pub(crate) struct Ticket(u64);

impl RunCache {
    fn next(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: Uuid) -> Option<Bytes> {
        let hit = self.lock().entries.get(&id).cloned();
        metrics::counter!("lariat_api_run_cache_total", "result" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        hit
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.next())
    }

    /// Keep a detail built under `ticket`, unless the run changed since the ticket.
    pub(crate) fn put(&self, id: Uuid, ticket: Ticket, body: Bytes) {
        if body.len() > MAX_BODY {
            return;
        }
        let mut g = self.lock();
        let fence = g.fences.get(&id).copied().unwrap_or(g.global).max(g.global);
        if ticket.0 <= fence {
            return;
        }
        if g.entries.len() >= MAX_ENTRIES
            && !g.entries.contains_key(&id)
            && let Some(victim) = g.entries.keys().next().copied()
        {
            g.entries.remove(&victim);
        }
        g.entries.insert(id, body);
    }

    /// The run changed (committed): drop its entry and fence off builds already under way.
    pub(crate) fn invalidate(&self, id: Uuid) {
        let fence = self.next();
        let mut g = self.lock();
        g.entries.remove(&id);
        if g.fences.len() >= MAX_FENCES {
            g.fences.clear();
            g.global = fence;
        } else {
            g.fences.insert(id, fence);
        }
    }

    /// Forget everything: the feed of changes was interrupted.
    pub(crate) fn clear(&self) {
        let fence = self.next();
        let mut g = self.lock();
        g.entries.clear();
        g.fences.clear();
        g.global = fence;
    }

    /// Follow the engine's committed events until the engine stops.
    pub(crate) async fn follow(self: Arc<Self>, mut bus: broadcast::Receiver<Arc<Event>>) {
        loop {
            match bus.recv().await {
                Ok(e) => self.invalidate(e.run_id),
                Err(RecvError::Lagged(_)) => self.clear(),
                Err(RecvError::Closed) => {
                    self.clear();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_that_started_before_a_change_is_not_kept() {
        let c = RunCache::default();
        let id = Uuid::now_v7();
        let slow = c.ticket();
        c.invalidate(id);
        c.put(id, slow, Bytes::from_static(b"old"));
        assert!(c.get(id).is_none());
        let fresh = c.ticket();
        c.put(id, fresh, Bytes::from_static(b"new"));
        assert_eq!(c.get(id).as_deref(), Some(&b"new"[..]));
        c.invalidate(id);
        assert!(c.get(id).is_none());
    }

    #[test]
    fn clearing_fences_every_run() {
        let c = RunCache::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let t = c.ticket();
        c.clear();
        c.put(a, t, Bytes::from_static(b"x"));
        assert!(c.get(a).is_none());
        c.put(b, c.ticket(), Bytes::from_static(b"y"));
        assert!(c.get(b).is_some());
    }
}
