//! The centre's side of the link, and the operator's view of the sites: registering an
//! agent, what travels to it, the events it ships, commands queued for it.

use std::sync::Arc;

use lariat_api_types::{
    AgentHello, Assignment, BatchAnswer, CommandActor, DesignFile, EventBatch, LinkCommand,
    LinkCursor, LinkDesign, LinkEvent, LinkWorkflow, QueuedCommand, SiteStatus, SyncAnswer,
    SyncRequest,
};
use lariat_engine::{EngineError, Event, EventKind, RunRow, StoreError};
use serde_json::Value;

use crate::sites::{Registration, SyncReport};
use crate::{CONNECTED_WITHIN_MS, Central, CentralError};

/// Most commands one sync hands over.
const COMMANDS_PER_SYNC: u32 = 100;

impl Central {
    /// An agent of `site` says who it is. The first agent of a site registers; a second
    /// executor for the site, or a log shorter than what the centre already applied, is
    /// refused and nothing is merged.
    pub async fn hello(&self, site: &str, hello: &AgentHello) -> Result<LinkCursor, CentralError> {
        if self.design.active().loaded.design.site(site).is_none() {
            return Err(CentralError::UnknownSite(site.to_string()));
        }
        if hello.executor == self.engine.owner() {
            return Err(CentralError::CentralExecutor(hello.executor.clone()));
        }
        let reg = match self.sites.registration(site).await? {
            Some(r) => r,
            None => {
                if let Some(other) = self.sites.site_of_executor(&hello.executor).await? {
                    return Err(CentralError::ExecutorTaken {
                        executor: hello.executor.clone(),
                        site: other,
                    });
                }
                if !self
                    .sites
                    .register(site, &hello.executor, &hello.version, hello.owner_seq)
                    .await?
                {
                    // Another hello registered the site in between: judge against it.
                    return Box::pin(self.hello(site, hello)).await;
                }
                tracing::info!(site, executor = %hello.executor, "site agent registered");
                self.registered(site).await?
            }
        };
        if reg.executor != hello.executor {
            return Err(CentralError::SiteClaimed {
                site: site.to_string(),
                executor: reg.executor,
                other: hello.executor.clone(),
            });
        }
        let cursor = self.engine.store().replica_cursor(&reg.executor).await?;
        if hello.owner_seq < cursor {
            return Err(CentralError::LogBehind {
                site: site.to_string(),
                executor: reg.executor,
                agent_seq: hello.owner_seq,
                centre_seq: cursor,
            });
        }
        self.sites
            .seen(site, &hello.version, hello.owner_seq, None)
            .await?;
        Ok(LinkCursor { cursor })
    }

    async fn registered(&self, site: &str) -> Result<Registration, CentralError> {
        self.sites
            .registration(site)
            .await?
            .ok_or_else(|| CentralError::NotRegistered(site.to_string()))
    }

    /// The registration of `site`, which must be `executor`'s.
    async fn agent(&self, site: &str, executor: &str) -> Result<Registration, CentralError> {
        let reg = self.registered(site).await?;
        if reg.executor != executor {
            return Err(CentralError::WrongExecutor {
                site: site.to_string(),
                registered: reg.executor,
                executor: executor.to_string(),
            });
        }
        Ok(reg)
    }

    /// What travels to `site`'s agent now: workflow versions it lacks, its design when
    /// it changed, the runs assigned to it, and commands after its cursor.
    pub async fn sync(&self, site: &str, req: &SyncRequest) -> Result<SyncAnswer, CentralError> {
        let reg = self.agent(site, &req.executor).await?;
        self.sites
            .seen(
                site,
                &reg.agent_version,
                req.owner_seq,
                Some(SyncReport {
                    commands_seen: req.commands_after,
                    dhcp_leases: req.dhcp_leases,
                    overrides_seen: req.overrides_seen,
                }),
            )
            .await?;
        let store = self.engine.store();
        let cursor = store.replica_cursor(&reg.executor).await?;
        let workflows = store
            .workflow_versions_since(req.workflows_since)
            .await?
            .into_iter()
            .map(|w| LinkWorkflow {
                name: w.name,
                version: w.version,
                definition: w.definition,
                created_at: w.created_at,
            })
            .collect();
        let design = match self.design.site_commit(site).await? {
            Some(c) if req.design.as_deref() != Some(c.as_str()) => {
                let snap = self.design.files_of(&c).await?;
                // Only the site's own hosts travel: an agent of one site of a hundred
                // would otherwise hold, parse and keep the other ninety-nine.
                let loaded = self.design.design_for_site(site).await?;
                let files = lariat_workflows::design::site_part(&snap.files, &loaded.design, site);
                Some(LinkDesign {
                    commit: Some(c),
                    files: files
                        .into_iter()
                        .map(|(path, content)| DesignFile { path, content })
                        .collect(),
                })
            }
            _ => None,
        };
        let assignments = store
            .assigned(&reg.executor)
            .await?
            .into_iter()
            .map(assignment)
            .collect();
        let commands = self
            .sites
            .commands_after(site, req.commands_after, COMMANDS_PER_SYNC)
            .await?;
        let (overrides_version, overrides) = self.overrides.for_site(site);
        let overrides = overrides.iter().map(crate::override_body).collect();
        Ok(SyncAnswer {
            cursor,
            workflows,
            design,
            assignments,
            commands,
            overrides,
            overrides_version,
        })
    }

    /// Applies a batch of `site`'s agent's events: its own only, of its own runs. A
    /// repeat is skipped; at a gap the rest of that run waits for the events in between.
    pub async fn accept(&self, site: &str, batch: EventBatch) -> Result<BatchAnswer, CentralError> {
        let reg = self.registered(site).await?;
        let mut events = Vec::with_capacity(batch.events.len());
        for e in batch.events {
            if e.owner != reg.executor {
                return Err(CentralError::ForeignEvent {
                    owner: e.owner,
                    executor: reg.executor,
                });
            }
            events.push(event_of(e)?);
        }
        let (report, gap) = match self.engine.apply_remote(&events).await {
            Ok(r) => (r, None),
            Err(EngineError::Store(StoreError::Replication(g))) => (Default::default(), Some(g)),
            Err(EngineError::Store(StoreError::NotOwner { run, owner, .. })) => {
                return Err(CentralError::NotYourRun {
                    run,
                    owner,
                    executor: reg.executor,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let cursor = self.engine.store().replica_cursor(&reg.executor).await?;
        Ok(BatchAnswer {
            applied: report.applied,
            skipped: report.skipped,
            cursor,
            gap,
        })
    }

    /// Queues `verb` on `run`, a run of `site`'s agent, for the agent to carry out.
    pub async fn queue(
        &self,
        site: &str,
        run: &RunRow,
        verb: &str,
        args: Value,
        actor: CommandActor,
    ) -> Result<QueuedCommand, CentralError> {
        let c = self.sites.queue(site, run.id, verb, &args, &actor).await?;
        tracing::info!(site, run = %run.id, verb, command = %c.command.id, by = %actor.who, "command queued for the site's agent");
        self.command_status(site, c.command).await
    }

    /// Where a queued command is, as the run's log says.
    pub async fn command(&self, id: &str) -> Result<QueuedCommand, CentralError> {
        let c = self
            .sites
            .command(id)
            .await?
            .ok_or_else(|| CentralError::UnknownCommand(id.to_string()))?;
        self.command_status(&c.site, c.command).await
    }

    async fn command_status(
        &self,
        site: &str,
        c: LinkCommand,
    ) -> Result<QueuedCommand, CentralError> {
        let ack = self.engine.store().command_ack(c.run_id, &c.id).await?;
        let (state, reason) = match ack.map(|e| e.kind) {
            Some(EventKind::CommandRefused { reason, .. }) => ("refused", Some(reason)),
            Some(_) => ("applied", None),
            None => {
                let seen = self
                    .sites
                    .registration(site)
                    .await?
                    .is_some_and(|r| r.commands_seen >= c.seq);
                (if seen { "delivered" } else { "queued" }, None)
            }
        };
        Ok(QueuedCommand {
            id: c.id,
            seq: c.seq,
            site: site.to_string(),
            run_id: c.run_id,
            verb: c.verb,
            state: state.to_string(),
            reason,
            created_at: c.created_at,
        })
    }

    /// Every site of the active design and every registered agent, with its health.
    pub async fn site_statuses(&self) -> Result<Vec<SiteStatus>, CentralError> {
        let regs = self.sites.registrations().await?;
        let active = self.engine.store().active_runs_by_owner().await?;
        let names = self.site_names_with(&regs);
        let now = lariat_db::now_ms();
        let served_here: Vec<String> = names
            .iter()
            .filter(|s| self.local.serves(s) && !regs.iter().any(|r| &r.site == *s))
            .cloned()
            .collect();
        let local_leases = match (self.local_leases.get(), served_here.as_slice()) {
            (Some(count), [_]) => count().await,
            _ => None,
        };
        let mut out = Vec::new();
        for site in names {
            let reg = regs.iter().find(|r| r.site == site);
            let status = match reg {
                Some(r) => {
                    let cursor = self.engine.store().replica_cursor(&r.executor).await?;
                    let pending = (r.owner_seq - cursor).max(0);
                    SiteStatus {
                        site,
                        served_by: "agent".into(),
                        executor: Some(r.executor.clone()),
                        connected: now - r.last_seen <= CONNECTED_WITHIN_MS,
                        last_seen: Some(r.last_seen),
                        agent_version: Some(r.agent_version.clone()),
                        applied: cursor,
                        pending_events: pending,
                        lag_seconds: (pending > 0)
                            .then(|| (now - r.last_seen).max(0) as f64 / 1000.0),
                        runs_active: active.get(&r.executor).copied().unwrap_or(0),
                        dhcp_leases: r.dhcp_leases,
                    }
                }
                None => SiteStatus {
                    dhcp_leases: served_here
                        .contains(&site)
                        .then_some(local_leases)
                        .flatten(),
                    served_by: if self.local.serves(&site) {
                        "central".into()
                    } else {
                        "none".into()
                    },
                    site,
                    executor: None,
                    connected: false,
                    last_seen: None,
                    agent_version: None,
                    applied: 0,
                    pending_events: 0,
                    lag_seconds: None,
                    runs_active: 0,
                },
            };
            out.push(status);
        }
        Ok(out)
    }
}

fn assignment(r: RunRow) -> Assignment {
    Assignment {
        run_id: r.id,
        workflow: r.workflow,
        version: r.version,
        input: Arc::unwrap_or_clone(r.input),
        targets: Arc::unwrap_or_clone(r.targets),
        idempotency_key: r.idempotency_key,
        group: r.group,
    }
}

/// An event off the wire, as the engine keeps it.
pub fn event_of(e: LinkEvent) -> Result<Event, CentralError> {
    let kind = EventKind::from_parts(&e.kind, e.data).map_err(|err| CentralError::BadEvent {
        run: e.run_id,
        seq: e.seq,
        detail: format!("kind {}: {err}", e.kind),
    })?;
    Ok(Event {
        run_id: e.run_id,
        seq: e.seq,
        owner: Arc::from(e.owner),
        owner_seq: e.owner_seq,
        at: e.at,
        step: e.step.map(Arc::from),
        item: e.item,
        attempt: e.attempt,
        error: e.error,
        kind,
    })
}
