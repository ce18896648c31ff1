//! `lariat server --power-poll PERIOD`: every host's power read from its BMC in the
//! background, as runs of the built-in `power-poll` workflow, so that the readings are
//! events like any other (the inventory folds them, they replicate from agents, they
//! survive restarts) and the bound on BMC traffic is the workflow's `max_parallel`.
//!
//! Each period makes one run per site, placed where the site's hosts are (its agent, or
//! this node), with an idempotency key of the site and the period: a restart within a
//! period starts nothing twice, and a site whose last poll is still running is skipped,
//! so a slow site is never asked twice at once.

use std::collections::BTreeMap;
use std::time::Duration;

use lariat_engine::{Actor, NewRun, RunQuery, RunStatus};
use tokio_util::sync::CancellationToken;

use crate::{Central, CentralError};

impl Central {
    /// Poll every host's power each `every` until `stop`.
    pub fn spawn_power_poll(&self, every: Duration, stop: CancellationToken) {
        let central = self.clone();
        tokio::spawn(async move {
            tracing::info!(every = ?every, "polling every BMC's power");
            loop {
                match central.poll_power_once(every).await {
                    Ok(runs) => tracing::debug!(runs, "power poll runs started"),
                    Err(e) => tracing::warn!("power poll: {e}"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// One period's runs: one per site whose last poll has finished. Returns how many
    /// runs it started.
    pub async fn poll_power_once(&self, every: Duration) -> Result<usize, CentralError> {
        let name = lariat_workflows::POWER_POLL.name;
        let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
        {
            let active = self.design.active();
            for h in active.loaded.design.hosts() {
                let site = h.spec.site.clone().unwrap_or_default();
                by_site.entry(site).or_default().push(h.name.clone());
            }
        }
        let live = self
            .engine
            .list_runs(&RunQuery {
                status: Some(RunStatus::Running),
                workflow: Some(name.to_string()),
                limit: 1000,
                ..Default::default()
            })
            .await?;
        let busy: std::collections::BTreeSet<&str> = live
            .iter()
            .flat_map(|r| r.targets.iter().map(String::as_str))
            .collect();
        let period = self.engine.clock().now_ms() / (every.as_millis().max(1) as i64);
        let mut started = 0;
        for (site, hosts) in by_site {
            if hosts.iter().any(|h| busy.contains(h.as_str())) {
                tracing::debug!(site, "the last power poll of this site is still running");
                continue;
            }
            let run = NewRun {
                workflow: name.to_string(),
                targets: hosts,
                idempotency_key: Some(format!("power-poll:{site}:{period}")),
                ..Default::default()
            };
            match self.submit(run, Actor::system()).await {
                Ok(p) => started += usize::from(p.created),
                Err(CentralError::NotServed(site)) => {
                    tracing::debug!(site, "no agent serves this site: its power is not polled");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(started)
    }
}
