//! Limits shared by every handle of one connector: one operation at a time per BMC, and a
//! bounded number of operations in flight overall (blocking IPMI sessions hold a thread each;
//! ipmitool runs hold a process each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// The shared limits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BmcPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Arc<Semaphore>,
    capacity: usize,
    // Weak so a BMC nobody holds a handle to drops out of the map on the next lookup.
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

/// Held while one operation runs against one BMC.
pub(crate) struct Turn {
    _bmc: OwnedMutexGuard<()>,
    _slot: OwnedSemaphorePermit,
}

impl BmcPool {
    /// A pool allowing `max_in_flight` operations at once (at least 1).
    pub fn new(max_in_flight: usize) -> Self {
        let capacity = max_in_flight.max(1);
        BmcPool {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(capacity)),
                capacity,
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How many operations may run at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The lock of one BMC, shared by every handle to the same key.
    pub(crate) fn bmc_lock(&self, key: &str) -> Arc<AsyncMutex<()>> {
        // A poisoned map only means another thread panicked while inserting: the map itself
        // is still consistent, so keep using it.
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = locks.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        locks.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(AsyncMutex::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Waits for this BMC to be free, then for a slot. The BMC comes first so a caller
    /// queued behind its own BMC does not hold a slot others could use.
    pub(crate) async fn turn(&self, bmc: &Arc<AsyncMutex<()>>) -> Turn {
        let bmc_guard = Arc::clone(bmc).lock_owned().await;
        let slot = Arc::clone(&self.inner.slots)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        Turn {
            _bmc: bmc_guard,
            _slot: slot,
        }
    }
}

impl Default for BmcPool {
    fn default() -> Self {
        BmcPool::new(64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_turn_per_bmc_and_bounded_overall() {
        let pool = BmcPool::new(2);
        let a = pool.bmc_lock("a");
        let a_again = pool.bmc_lock("a");
        assert!(Arc::ptr_eq(&a, &a_again), "same BMC, same lock");
        let (b, c) = (pool.bmc_lock("b"), pool.bmc_lock("c"));

        let first = pool.turn(&a).await;
        // the same BMC waits, whatever the free slots
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.turn(&a_again)).await;
        assert!(waiting.is_err(), "second turn on one BMC must wait");
        let second = pool.turn(&b).await;
        // both slots taken: a third BMC waits too
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.turn(&c)).await;
        assert!(waiting.is_err(), "pool of 2 must not give a third turn");
        drop(first);
        let _third = tokio::time::timeout(Duration::from_millis(500), pool.turn(&c))
            .await
            .expect("a slot was freed");
        drop(second);
    }

    #[test]
    fn forgotten_bmcs_leave_the_map() {
        let pool = BmcPool::new(1);
        drop(pool.bmc_lock("gone"));
        let _kept = pool.bmc_lock("kept");
        let locks = pool.inner.locks.lock().expect("map");
        assert!(!locks.contains_key("gone"));
    }
}
