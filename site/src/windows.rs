//! The site's window gate: the `MaintenanceWindow` documents of the design the site works
//! from, evaluated here, by this process's clock, so that a site cut off from the centre
//! keeps opening and closing its windows on time. The same design places the hosts in
//! racks, sites and labels for the rolling limits of fan-outs (`max_per`). Operators'
//! overrides (`lariat window open|close`) come from the centre, as the set in force, and
//! win over the schedule until they expire.

use std::sync::{Arc, RwLock};

use lariat_engine::{Engine, HostGroups, WindowAnswer, WindowAsk, WindowGate};
use lariat_workflows::windows::{Decision, Override, Windows};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::SiteDesign;

/// The windows of the site's design in force, as a [`WindowGate`], and where its hosts
/// are, as [`HostGroups`].
#[derive(Default)]
pub struct DesignWindows {
    current: RwLock<Option<Arc<Windows>>>,
    overrides: RwLock<Arc<Vec<Override>>>,
}

/// The operators' overrides as they change: every override made and not ended, expired
/// ones included (each is checked against the clock when asked).
pub type OverrideFeed = watch::Receiver<Arc<Vec<Override>>>;

impl DesignWindows {
    /// A gate that holds every gated step until [`DesignWindows::follow`] gives it a design.
    pub fn new() -> Arc<DesignWindows> {
        Arc::new(DesignWindows::default())
    }

    /// The windows in force; None before the design is open.
    pub fn windows(&self) -> Option<Arc<Windows>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The overrides last given.
    pub fn overrides(&self) -> Arc<Vec<Override>> {
        self.overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the overrides of `feed` now and whenever they change, and has `engine` ask
    /// again for its waiting steps each time. Runs until the feed's sender goes away.
    pub fn follow_overrides(
        self: &Arc<Self>,
        mut feed: OverrideFeed,
        engine: Engine,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let set = feed.borrow_and_update().clone();
                tracing::info!(overrides = set.len(), "window overrides");
                *me.overrides.write().unwrap_or_else(|e| e.into_inner()) = set;
                engine.windows_changed();
                if feed.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    fn set(&self, windows: Windows) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(windows));
    }

    /// Takes the windows of `design` now and whenever it changes, and has `engine` ask
    /// again for its waiting steps each time. Runs until the design's sender goes away.
    pub fn follow(self: &Arc<Self>, design: Arc<dyn SiteDesign>, engine: Engine) -> JoinHandle<()> {
        let me = self.clone();
        let mut changes = design.subscribe();
        tokio::spawn(async move {
            loop {
                let current = changes.borrow_and_update().clone();
                let revision = current.revision.clone();
                // Resolving the hosts of a large design is work: off the runtime's threads.
                let loaded = current.loaded.clone();
                let windows =
                    match tokio::task::spawn_blocking(move || Windows::of(&loaded.design)).await {
                        Ok(w) => w,
                        Err(e) => {
                            tracing::error!("maintenance windows of the design: {e}");
                            return;
                        }
                    };
                let count = windows.iter().count();
                me.set(windows);
                tracing::info!(
                    revision = revision.as_deref().unwrap_or("none"),
                    windows = count,
                    "maintenance windows from the design"
                );
                engine.windows_changed();
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

impl WindowGate for DesignWindows {
    fn ask(&self, q: &WindowAsk<'_>) -> WindowAnswer {
        let Some(windows) = self.windows() else {
            return WindowAnswer::Closed {
                until: None,
                why: "the site's design is not open yet".into(),
            };
        };
        let overrides = self.overrides();
        match windows.decide_with(q.window, q.hosts, q.now_ms, q.need_ms, &overrides) {
            Decision::Start { .. } => WindowAnswer::Open,
            Decision::Wait { why, recheck_at } => WindowAnswer::Closed {
                until: recheck_at,
                why,
            },
        }
    }
}

impl HostGroups for DesignWindows {
    fn group(&self, host: &str, key: &str) -> Option<String> {
        self.windows()?.place(host)?.value(key).map(str::to_string)
    }
}
