//! The maintenance-window gate. A step with `window: NAME` starts (and retries) only while
//! the gate says that window is open; otherwise it waits. Schedules that open and close
//! windows plug in behind [`WindowGate`]; [`ManualWindows`] is the engine's own gate, opened
//! and closed by calls.

use std::collections::HashSet;
use std::sync::RwLock;

/// Answers whether a maintenance window is open.
///
/// Called from the executor's loop, so it must answer from memory, quickly, without
/// blocking. The executor asks again when [`crate::Engine::windows_changed`] is called
/// and, while any step waits on a window, once a second.
pub trait WindowGate: Send + Sync + 'static {
    fn is_open(&self, window: &str, now_ms: i64) -> bool;
}

/// Windows that are closed until opened by [`ManualWindows::set`].
#[derive(Debug, Default)]
pub struct ManualWindows {
    open: RwLock<HashSet<String>>,
}

impl ManualWindows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Open or close `window`. Call [`crate::Engine::windows_changed`] afterwards so that
    /// waiting steps start without waiting for the next check.
    pub fn set(&self, window: &str, open: bool) {
        let mut g = self.open.write().unwrap_or_else(|e| e.into_inner());
        if open {
            g.insert(window.to_string());
        } else {
            g.remove(window);
        }
    }
}

impl WindowGate for ManualWindows {
    fn is_open(&self, window: &str, _now_ms: i64) -> bool {
        self.open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(window)
    }
}

/// A gate where every window is always open.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysOpen;

impl WindowGate for AlwaysOpen {
    fn is_open(&self, _window: &str, _now_ms: i64) -> bool {
        true
    }
}
