//! Shared by the site's integration tests.
#![allow(dead_code)]

use async_trait::async_trait;
use lariat_site::{CurrentDesign, SiteDesign};
use tokio::sync::watch;

/// A design that changes only when a test sends a new one.
pub struct Fixed(pub watch::Sender<CurrentDesign>);

#[async_trait]
impl SiteDesign for Fixed {
    fn current(&self) -> CurrentDesign {
        self.0.borrow().clone()
    }
    fn subscribe(&self) -> watch::Receiver<CurrentDesign> {
        self.0.subscribe()
    }
    async fn for_site(&self, _site: &str) -> Result<CurrentDesign, String> {
        Ok(self.current())
    }
    async fn for_host(&self, _host: &str) -> Result<CurrentDesign, String> {
        Ok(self.current())
    }
}

#[async_trait]
impl lariat_steps::DesignView for Fixed {
    async fn current(&self) -> CurrentDesign {
        self.0.borrow().clone()
    }
}
