//! Placing a new run on the executors that own its hosts.

use std::collections::BTreeMap;

use lariat_engine::{Actor, NewRun, RunRow};
use uuid::Uuid;

use crate::{Central, CentralError};

/// What a submit made: one run per owner of its hosts (the runs of a group), or the
/// runs its idempotency key made before.
#[derive(Debug, Clone)]
pub struct Placed {
    pub runs: Vec<RunRow>,
    /// False when the idempotency key matched runs made before.
    pub created: bool,
}

impl Central {
    /// Starts `run` where its hosts are. The hosts of sites with an agent make one run
    /// each, assigned to that agent; all the others (no site, or a site this node serves
    /// itself) make one run here. Several runs share a group id. With no agent involved
    /// this is the engine's submit, exactly.
    pub async fn submit(&self, run: NewRun, actor: Actor) -> Result<Placed, CentralError> {
        let mut parts: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        {
            let active = self.design.active();
            let design = &active.loaded.design;
            for t in &run.targets {
                let site = design.host(t).and_then(|h| h.spec.site.clone());
                parts.entry(site).or_default().push(t.clone());
            }
        }
        // Owner of each part: a registered agent, or this node.
        let mut here: Vec<String> = Vec::new();
        let mut agents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (site, hosts) in parts {
            let Some(site) = site else {
                here.extend(hosts);
                continue;
            };
            match self.sites.registration(&site).await? {
                Some(r) => agents.entry(r.executor).or_default().extend(hosts),
                None if self.local.serves(&site) => here.extend(hosts),
                None => return Err(CentralError::NotServed(site)),
            }
        }
        if agents.is_empty() {
            let sub = self.engine.submit(run, actor).await?;
            let row = self.engine.run_row(sub.run_id).await?;
            return Ok(Placed {
                runs: vec![row],
                created: sub.created,
            });
        }
        let _turn = match &run.idempotency_key {
            Some(_) => Some(self.placing.lock().await),
            None => None,
        };
        if let Some(key) = &run.idempotency_key
            && let Some(first) = self.engine.store().run_by_key(key).await?
        {
            let runs = match first.group {
                Some(g) => self.engine.store().group(g).await?,
                None => vec![first],
            };
            return Ok(Placed {
                runs,
                created: false,
            });
        }
        let group = (agents.len() + usize::from(!here.is_empty()) > 1).then(Uuid::now_v7);
        let part = |targets: Vec<String>| NewRun {
            targets,
            group,
            id: None,
            ..run.clone()
        };
        let mut runs = Vec::new();
        if !here.is_empty() {
            let sub = self.engine.submit(part(here), actor.clone()).await?;
            runs.push(self.engine.run_row(sub.run_id).await?);
        }
        for (executor, hosts) in agents {
            runs.push(self.engine.assign(&executor, part(hosts), &actor).await?);
        }
        Ok(Placed {
            runs,
            created: true,
        })
    }
}
