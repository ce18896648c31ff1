//! Submits that share an idempotency key take turns, so that the second one finds the
//! first one's run committed instead of starting another. The unique index on
//! `runs.idempotency_key` is the guarantee underneath: two runs never share a key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Turn = Arc<tokio::sync::Mutex<()>>;

/// One turn per idempotency key in use; a key nobody holds or waits for has no entry.
#[derive(Default)]
pub(crate) struct KeyTurns {
    keys: Mutex<HashMap<String, Turn>>,
}

/// Holds `key`'s turn until dropped.
pub(crate) struct KeyTurn<'a> {
    turns: &'a KeyTurns,
    key: String,
    turn: Turn,
    held: Option<OwnedMutexGuard<()>>,
}

impl KeyTurns {
    /// Wait for `key`'s turn.
    pub(crate) async fn take(&self, key: &str) -> KeyTurn<'_> {
        let turn = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let held = turn.clone().lock_owned().await;
        KeyTurn {
            turns: self,
            key: key.to_string(),
            turn,
            held: Some(held),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for KeyTurn<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut keys = self.turns.keys.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this turn's handles are all that is left: nobody waits.
        if Arc::strong_count(&self.turn) == 2 {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_turn_per_key_and_no_entry_left_behind() {
        let turns = Arc::new(KeyTurns::default());
        let first = turns.take("k").await;
        let t = turns.clone();
        let second = tokio::spawn(async move {
            let _turn = t.take("k").await;
        });
        // Another key does not wait for "k".
        drop(turns.take("other").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second submit of k waits");
        drop(first);
        second.await.unwrap();
        assert_eq!(turns.len(), 0, "every key was given back");
    }
}
