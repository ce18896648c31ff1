//! The maintenance-window gate. A step with `window: NAME` starts (and retries) only while
//! the gate lets it; otherwise it waits, showing why and until when. Schedules that open
//! and close windows plug in behind [`WindowGate`] (the site's design windows);
//! [`ManualWindows`] is the engine's own gate, opened and closed by calls.

use std::collections::HashSet;
use std::sync::RwLock;

/// What the executor asks of the gate for one task that wants to start.
#[derive(Debug, Clone, Copy)]
pub struct WindowAsk<'a> {
    /// The window the step names.
    pub window: &'a str,
    /// The hosts the attempt acts on: its fan-out item when the step fans out over the
    /// run's targets, else the run's targets.
    pub hosts: &'a [String],
    /// The engine's clock.
    pub now_ms: i64,
    /// Time the attempt needs left before the window closes (its cutoff, else its
    /// timeout).
    pub need_ms: i64,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowAnswer {
    /// Start now.
    Open,
    /// Wait. `until` is the first moment the answer can change by itself (the window's
    /// next opening, the end of a freeze), shown to operators; None when only a change
    /// of the windows (see [`crate::Engine::windows_changed`]) can open it.
    Closed { until: Option<i64>, why: String },
}

/// Decides whether a gated task may start.
///
/// Called from the executor's loop, so it must answer from memory, quickly, without
/// blocking. The executor asks again for a waiting task at its `until`, when
/// [`crate::Engine::windows_changed`] is called, and at least once a minute (the wall
/// clock may have been set).
pub trait WindowGate: Send + Sync + 'static {
    fn ask(&self, q: &WindowAsk<'_>) -> WindowAnswer;
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
    fn ask(&self, q: &WindowAsk<'_>) -> WindowAnswer {
        let open = self
            .open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(q.window);
        if open {
            WindowAnswer::Open
        } else {
            WindowAnswer::Closed {
                until: None,
                why: format!("window '{}' is closed", q.window),
            }
        }
    }
}

/// A gate where every window is always open.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysOpen;

impl WindowGate for AlwaysOpen {
    fn ask(&self, _q: &WindowAsk<'_>) -> WindowAnswer {
        WindowAnswer::Open
    }
}
