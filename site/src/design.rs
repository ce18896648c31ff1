//! The site's view of the design: what its boot services answer from and what its
//! provisioning actions act on.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_steps::{CurrentDesign, DesignView};
use tokio::sync::watch;

/// The design a site works from. On the central node it is the design source's active
/// revision with the site pins; a site agent (planned) will keep the revision the centre
/// sent it, so that it can restart cut off.
#[async_trait]
pub trait SiteDesign: Send + Sync + 'static {
    /// The design in force and the revision it came from.
    fn current(&self) -> CurrentDesign;

    /// Sees every change of the design in force.
    fn subscribe(&self) -> watch::Receiver<CurrentDesign>;

    /// The design `site` works from: its pinned revision, or the design in force. An
    /// error names what is missing; the caller must not fall back to another revision.
    async fn for_site(&self, site: &str) -> Result<CurrentDesign, String>;

    /// The design `host` is provisioned from: that of its site (in the design in force),
    /// with the pin that chose it named in `revision`. A host without a site, or unknown,
    /// gets the design in force.
    async fn for_host(&self, host: &str) -> Result<CurrentDesign, String>;
}

/// A site design that is set once the process has opened its design; until then the
/// provisioning actions wait for it (runs resumed at start must not see an empty design).
/// If the [`DesignSetter`] goes away unset (the process stops first), they get an empty
/// design instead.
#[derive(Clone)]
pub struct LateDesign {
    rx: watch::Receiver<Option<Arc<dyn SiteDesign>>>,
}

/// Sets a [`LateDesign`], once.
pub struct DesignSetter(watch::Sender<Option<Arc<dyn SiteDesign>>>);

impl LateDesign {
    /// A design to come, and what sets it.
    pub fn new() -> (DesignSetter, LateDesign) {
        let (tx, rx) = watch::channel(None);
        (DesignSetter(tx), LateDesign { rx })
    }

    async fn design(&self) -> Option<Arc<dyn SiteDesign>> {
        let mut rx = self.rx.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(d) => d.clone(),
            Err(_) => None,
        }
    }
}

impl DesignSetter {
    /// The design is open: every waiting action goes on with it.
    pub fn set(self, design: Arc<dyn SiteDesign>) {
        self.0.send_replace(Some(design));
    }
}

#[async_trait]
impl DesignView for LateDesign {
    async fn current(&self) -> CurrentDesign {
        match self.design().await {
            Some(d) => d.current(),
            // The process is shutting down before its design was open.
            None => CurrentDesign {
                revision: None,
                loaded: Arc::new(lariat_workflows::design::load_files(&[])),
            },
        }
    }

    async fn for_host(&self, host: &str) -> Result<CurrentDesign, String> {
        match self.design().await {
            Some(d) => d
                .for_host(host)
                .await
                .map_err(|e| format!("the design of its site cannot be loaded: {e}")),
            None => Ok(self.current().await),
        }
    }
}
