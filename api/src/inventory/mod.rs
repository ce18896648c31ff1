//! The inventory and its drift from the design.
//!
//! A host's inventory is a projection of the engine's rows (`project`): what its
//! fan-out items did, in which runs, with what output (the power a BMC operation read
//! back, the facts of its callback, the firmware a BMC listed, what `validate_design`
//! said it was built from). Those rows are the fold of the event log, the same at a site
//! agent and at the centre once replicated, so the inventory is too, and it survives
//! restarts without a table of its own. Drift (`drift`) compares it with the design the
//! host is provisioned from (its site's pin, else the design in force).

pub(crate) mod drift;
pub(crate) mod project;

use std::collections::{BTreeMap, HashMap};

use lariat_api_types as types;
use lariat_engine::{Engine, EngineError, HostTask, TaskRow};
use lariat_source::DesignSource;
use lariat_workflows::design::ResolvedHost;
use uuid::Uuid;

pub(crate) use project::Projection;

/// Hosts are projected this many at a time: one indexed query for their items.
pub(crate) const CHUNK: usize = 200;

/// The inventory of `hosts`, by name.
pub(crate) async fn project_hosts(
    engine: &Engine,
    hosts: &[String],
) -> Result<HashMap<String, Projection>, EngineError> {
    let tasks = engine.store().host_tasks(hosts).await?;
    let wanted = project::runs_needing_steps(&tasks);
    let mut run_steps: HashMap<Uuid, Vec<TaskRow>> = HashMap::new();
    for (run, t) in engine.store().run_level_tasks(&wanted).await? {
        run_steps.entry(run).or_default().push(t);
    }
    let mut by_host: HashMap<&str, Vec<&HostTask>> = HashMap::new();
    for t in &tasks {
        if let Some(h) = t.task.item_value.as_ref().and_then(|v| v.as_str()) {
            by_host.entry(h).or_default().push(t);
        }
    }
    Ok(hosts
        .iter()
        .map(|h| {
            let ts = by_host.get(h.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            (h.clone(), project::project(h, ts, &run_steps))
        })
        .collect())
}

/// The resolved hosts of the designs hosts are provisioned from, each site's design
/// looked up once.
pub(crate) struct Designs<'a> {
    source: &'a DesignSource,
    by_site: BTreeMap<Option<String>, std::sync::Arc<lariat_workflows::design::Loaded>>,
}

impl<'a> Designs<'a> {
    pub(crate) fn new(source: &'a DesignSource) -> Self {
        Designs {
            source,
            by_site: BTreeMap::new(),
        }
    }

    /// `host` as its site's design resolves it; `None` when that design lacks it or
    /// cannot resolve it (the design's findings say why).
    pub(crate) async fn resolved(
        &mut self,
        host: &str,
    ) -> Result<Option<ResolvedHost>, lariat_source::SourceError> {
        let active = self.source.active();
        let site = active
            .loaded
            .design
            .host(host)
            .and_then(|h| h.spec.site.clone());
        let loaded = match self.by_site.get(&site) {
            Some(l) => l.clone(),
            None => {
                let l = match &site {
                    Some(s) => self.source.design_for_site(s).await?,
                    None => active.loaded.clone(),
                };
                self.by_site.insert(site, l.clone());
                l
            }
        };
        Ok(loaded.design.resolved_host(host).ok())
    }
}

/// A host's summary from its projection and the active design's view of where it is.
pub(crate) fn summary(
    name: &str,
    p: &Projection,
    active: Option<&ResolvedHost>,
    in_design: bool,
) -> types::HostSummary {
    types::HostSummary {
        name: name.to_string(),
        site: active.and_then(|h| h.site.clone()),
        rack: active.and_then(|h| h.rack.clone()),
        in_design,
        state: p.state,
        reason: p.reason.clone(),
        stage: p.stage.clone(),
        activity: p.activity.clone(),
        power: p.power.clone(),
        provisioned: p.provisioned.clone(),
    }
}
