//! Host groups for rolling limits. A fan-out step with `max_per: {rack: 1}` starts an
//! item only while fewer than one item of the same rack is in progress; which rack (or
//! site, or label value) a host is in comes from behind [`HostGroups`], since the engine
//! knows runs, not the floor.

use std::sync::Arc;

use crate::windows::{ManualWindows, WindowGate};

/// Tells which group a host is in for a grouping key.
///
/// Called from the executor's loop for every item a fan-out considers, so it must answer
/// from memory, quickly, without blocking. A host with no value for the key (or one the
/// answerer does not know) gets None: all such hosts count as one group, so that a limit
/// errs on the side of fewer hosts at once rather than none.
pub trait HostGroups: Send + Sync + 'static {
    fn group(&self, host: &str, key: &str) -> Option<String>;
}

/// No host is placed: under a rolling limit, every host is in the same group.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unplaced;

impl HostGroups for Unplaced {
    fn group(&self, _host: &str, _key: &str) -> Option<String> {
        None
    }
}

/// What the executor asks the world outside a run before starting one of its tasks:
/// the windows that gate steps, and the groups rolling limits count by.
#[derive(Clone)]
pub struct Scheduling {
    pub windows: Arc<dyn WindowGate>,
    pub groups: Arc<dyn HostGroups>,
}

impl Scheduling {
    /// Both from one source (a site's design knows its windows and where its hosts are).
    pub fn of<T: WindowGate + HostGroups>(source: Arc<T>) -> Scheduling {
        Scheduling {
            windows: source.clone(),
            groups: source,
        }
    }

    /// Windows opened by hand, hosts unplaced.
    pub fn manual(windows: Arc<ManualWindows>) -> Scheduling {
        Scheduling {
            windows,
            groups: Arc::new(Unplaced),
        }
    }
}
