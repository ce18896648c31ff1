//! A site agent's side of the link to the central node.
//!
//! The agent dials out; the centre never connects to it. In a loop, while the link is
//! up, the agent:
//! 1. says hello (its executor id and how far its log goes) and learns how far the
//!    centre has applied its events;
//! 2. syncs: mirrors the workflow versions the centre has (same numbers, so a run pinned
//!    to one means the same on both sides), keeps its site's design when it changed,
//!    starts the runs assigned to it with the ids the centre gave them, carries out
//!    the operator commands queued for its runs, in order, each acknowledged in the
//!    run's log (the verb's own `operator` event, or `command_refused` with the reason),
//!    and keeps the operators' window overrides in force for its site;
//! 3. ships its events after the centre's cursor, oldest first, in batches;
//! 4. waits for new events of its own or the next tick.
//!
//! Any failure drops back to 1 after a pause: while cut off, the agent keeps executing,
//! serving boot traffic and answering its own API, and its events wait in its log (it
//! never prunes them), so catching up is step 3 from the centre's cursor.

mod design;
mod overrides;

use std::time::Duration;

use lariat_client::types::{
    AgentHello, BatchAnswer, EventBatch, LinkCommand, LinkEvent, LinkWorkflow, SyncAnswer,
    SyncRequest,
};
use lariat_client::{Client, ClientError};
use lariat_db::{Db, DbError};
use lariat_engine::store::StoredWorkflow;
use lariat_engine::{Actor, Engine, EngineError, Event, NewRun};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use design::StoredDesign;
pub use overrides::StoredOverrides;

/// The migrations of the agent's link tables (`link/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Sync at least this often while connected.
    pub every: Duration,
    /// Most events in one batch to the centre.
    pub batch: u32,
    /// Most bytes of events in one batch, well under the centre's limit
    /// (`EVENT_BATCH_LIMIT`), which only one outsized event can reach.
    pub batch_bytes: usize,
    /// The agent's version, reported to the centre.
    pub version: String,
    /// Longest wait for one answer from the centre. A connection that died without a
    /// reset (a cut path, a peer gone mid-request) would otherwise hold the link until
    /// the client's own timeout; past this the link drops it and dials again.
    pub timeout: Duration,
}

/// Counts the site's active DHCP leases for the centre's site health: `None` when the
/// agent serves no DHCP.
pub type LeaseCount = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Option<i64>> + Send>> + Send + Sync,
>;

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            every: Duration::from_secs(1),
            // Per batch the centre pays a transaction and a request whatever its size:
            // at 10 sites x 200 hosts, 2,000 events caught up at 51k/s, 5,000 at 74k/s
            // and 10,000 at 83k/s. 5,000 keeps a request near a megabyte.
            batch: 5000,
            batch_bytes: 2 << 20,
            version: env!("CARGO_PKG_VERSION").to_string(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a round of the link failed; the loop waits and starts again.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Centre(#[from] ClientError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] lariat_engine::StoreError),
    #[error("the link's tables: {0}")]
    Db(#[from] DbError),
    #[error("the centre did not answer within {0:?}; dropping the connection")]
    Stalled(Duration),
    #[error("the engine stopped")]
    EngineStopped,
}

/// The agent's cursors over what the centre sends (`agent_link`).
#[derive(Clone)]
struct Cursors {
    db: Db,
}

impl Cursors {
    async fn get(&self, key: &str) -> Result<i64, DbError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM agent_link WHERE key = ?1")
            .bind(key)
            .fetch_optional(self.db.readers())
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn set(&self, key: &str, value: i64) -> Result<(), DbError> {
        let mut w = self.db.writer().await?;
        sqlx::query(
            "INSERT INTO agent_link (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *w)
        .await?;
        Ok(())
    }
}

/// The link of one agent: its engine, its copy of the design, its cursors, and a client
/// of the centre carrying the site's credential.
pub struct Link {
    cfg: LinkConfig,
    engine: Engine,
    design: StoredDesign,
    overrides: StoredOverrides,
    cursors: Cursors,
    centre: Client,
    leases: Option<LeaseCount>,
}

impl Link {
    /// The link over `tables` (the agent's database, beside its engine's).
    pub async fn open(
        cfg: LinkConfig,
        engine: Engine,
        design: StoredDesign,
        overrides: StoredOverrides,
        tables: Db,
        centre: Client,
    ) -> Result<Link, DbError> {
        tables.migrate(&MIGRATIONS).await?;
        Ok(Link {
            cfg,
            engine,
            design,
            overrides,
            cursors: Cursors { db: tables },
            centre,
            leases: None,
        })
    }

    /// Reports the site's DHCP leases at each sync.
    pub fn with_leases(mut self, leases: LeaseCount) -> Link {
        self.leases = Some(leases);
        self
    }

    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        let mut connected = false;
        loop {
            let res = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.session(&stop, &mut connected) => r,
            };
            if let Err(e) = res {
                if let LinkError::EngineStopped = e {
                    tracing::info!("the engine stopped; the link stops");
                    return;
                }
                if connected {
                    tracing::warn!(
                        "link to the centre lost: {e}; the site keeps working and catches up on reconnect"
                    );
                } else {
                    tracing::debug!("link to the centre: {e}");
                }
                connected = false;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: hello, then sync and ship until something fails.
    async fn session(
        &self,
        stop: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), LinkError> {
        let owner = self.engine.owner().to_string();
        let owner_seq = self.engine.store().max_owner_seq(&owner).await?;
        let hello = self
            .answer(self.centre.agent_hello(&AgentHello {
                executor: owner.clone(),
                version: self.cfg.version.clone(),
                owner_seq,
            }))
            .await
            .inspect_err(|e| {
                if let LinkError::Centre(ClientError::Api {
                    status: 409 | 404, ..
                }) = e
                {
                    tracing::error!("the centre refuses this agent: {e}");
                }
            })?;
        if !*connected {
            tracing::info!(cursor = hello.cursor, "link to the centre up");
            *connected = true;
        }
        let mut cursor = hello.cursor;
        let mut events = self.engine.subscribe();
        let mut tick = tokio::time::interval(self.cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = true;
        loop {
            if due {
                let answer = self.sync().await?;
                cursor = cursor.max(answer.cursor);
                self.take(answer).await?;
            }
            cursor = self.ship(cursor).await?;
            // New events of our own are shipped at once; the centre is asked for what it
            // has on the tick.
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => due = true,
                r = events.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = r {
                        return Err(LinkError::EngineStopped);
                    }
                    // One wake for all that is committed by now: the ship reads it all.
                    // Taken one by one, each event would cost a read of the store, and
                    // an agent that fell behind would spin through its backlog of wakes
                    // long after it had shipped everything.
                    drain(&mut events);
                    due = false;
                }
            }
        }
    }

    async fn sync(&self) -> Result<SyncAnswer, LinkError> {
        let owner = self.engine.owner();
        let req = SyncRequest {
            executor: owner.to_string(),
            owner_seq: self.engine.store().max_owner_seq(owner).await?,
            workflows_since: self.cursors.get("workflows_since").await?,
            design: self.design.commit(),
            commands_after: self.cursors.get("commands_after").await?,
            dhcp_leases: match &self.leases {
                Some(count) => count().await,
                None => None,
            },
            overrides_seen: self.overrides.version(),
        };
        self.answer(self.centre.agent_sync(&req)).await
    }

    /// The centre's answer to one request, given up on after the link's timeout.
    async fn answer<T>(
        &self,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, LinkError> {
        match tokio::time::timeout(self.cfg.timeout, request).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LinkError::Stalled(self.cfg.timeout)),
        }
    }

    /// Takes in what the centre sent: workflow versions first (assignments and commands
    /// need them), then the design, the assignments, the commands.
    async fn take(&self, a: SyncAnswer) -> Result<(), LinkError> {
        let had = self.cursors.get("workflows_since").await?;
        let mut since = had;
        for w in &a.workflows {
            self.mirror(w).await?;
            since = since.max(w.created_at);
        }
        if since != had {
            self.cursors.set("workflows_since", since).await?;
        }
        if let Some(d) = &a.design {
            self.design.replace(d).await?;
        }
        self.overrides
            .replace(a.overrides_version, &a.overrides)
            .await?;
        for r in a.assignments {
            let run = NewRun {
                workflow: r.workflow,
                version: Some(r.version),
                input: r.input,
                targets: r.targets,
                idempotency_key: r.idempotency_key,
                id: Some(r.run_id),
                group: r.group,
            };
            match self.engine.submit(run, Actor::system()).await {
                Ok(s) if s.created => tracing::info!(run = %s.run_id, "assigned run started"),
                Ok(_) => {}
                Err(e @ (EngineError::Stopped(_) | EngineError::Store(_))) => return Err(e.into()),
                // A run the centre accepted and this agent cannot start: its row at the
                // centre stays assigned, and the log here says why.
                Err(e) => tracing::error!(run = %r.run_id, "cannot start an assigned run: {e}"),
            }
        }
        for c in &a.commands {
            self.carry_out(c).await?;
            self.cursors.set("commands_after", c.seq).await?;
        }
        Ok(())
    }

    async fn mirror(&self, w: &LinkWorkflow) -> Result<(), LinkError> {
        let stored = StoredWorkflow {
            name: w.name.clone(),
            version: w.version,
            definition: w.definition.clone(),
            created_at: w.created_at,
        };
        match self.engine.store().put_workflow_version(&stored).await {
            Ok(_) => Ok(()),
            // A version of this agent's own under a number the centre also used: the
            // centre's numbering wins nowhere here, so say so and keep the agent's.
            Err(lariat_engine::StoreError::Replication(msg)) => {
                tracing::error!("workflow versions differ from the centre's: {msg}");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Carries out one queued command, once: a command already acknowledged in its
    /// run's log (before a restart) is not carried out again.
    async fn carry_out(&self, c: &LinkCommand) -> Result<(), LinkError> {
        let e = &self.engine;
        if e.store().command_ack(c.run_id, &c.id).await?.is_some() {
            return Ok(());
        }
        let actor = Actor {
            who: c.actor.who.clone(),
            from: c.actor.from.clone(),
            command: Some(c.id.clone()),
        };
        let step = c.args.get("step").and_then(Value::as_str).unwrap_or("");
        let res = match c.verb.as_str() {
            "cancel" => e.cancel(c.run_id, actor.clone()).await,
            "pause" => e.pause(c.run_id, actor.clone()).await,
            "resume" => e.resume(c.run_id, actor.clone()).await,
            "rollback" => e.rollback(c.run_id, actor.clone()).await,
            "retry" => {
                let input = c.args.get("input").filter(|v| !v.is_null()).cloned();
                e.retry(c.run_id, step, input, actor.clone()).await
            }
            "signal" => {
                let item = c.args.get("item").and_then(Value::as_str);
                let payload = c.args.get("payload").cloned().unwrap_or(Value::Null);
                e.signal(c.run_id, step, item, payload, actor.clone()).await
            }
            other => Err(EngineError::InvalidInput(format!("unknown verb {other}"))),
        };
        match res {
            Ok(()) => {
                tracing::info!(run = %c.run_id, verb = %c.verb, command = %c.id, "command carried out");
                Ok(())
            }
            Err(err @ (EngineError::Stopped(_) | EngineError::Store(_))) => Err(err.into()),
            Err(EngineError::UnknownRun(run)) => {
                // No log to acknowledge it in: the centre's view of the run is ahead of
                // this agent's (a run started elsewhere). Said here, skipped.
                tracing::error!(%run, command = %c.id, "a command for a run this agent does not have");
                Ok(())
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                tracing::info!(run = %c.run_id, verb = %c.verb, command = %c.id, %reason, "command refused");
                e.refuse(c.run_id, &c.verb, &reason, actor).await?;
                Ok(())
            }
        }
    }

    /// Ships the agent's events after `cursor`, oldest first; answers the new cursor.
    /// The next batch is read from the database while the centre applies this one.
    async fn ship(&self, mut cursor: i64) -> Result<i64, LinkError> {
        let mut events = self.engine.events_after(cursor, self.cfg.batch).await?;
        loop {
            if events.is_empty() {
                return Ok(cursor);
            }
            let batch = self.batch_of(&events);
            let full = batch.events.len() < events.len() || events.len() as u32 == self.cfg.batch;
            let last = batch.events.last().map_or(cursor, |e| e.owner_seq);
            let (answer, next) = tokio::join!(self.send(&batch), async {
                if full {
                    self.engine.events_after(last, self.cfg.batch).await
                } else {
                    Ok(Vec::new())
                }
            });
            let answer = answer?;
            if let Some(gap) = &answer.gap {
                tracing::warn!(
                    "the centre found a gap ({gap}); sending again from {}",
                    answer.cursor
                );
            }
            if answer.cursor <= cursor && answer.gap.is_none() {
                // Nothing moved: the centre has all of these already.
                return Ok(answer.cursor.max(cursor));
            }
            cursor = answer.cursor;
            if !full {
                return Ok(cursor);
            }
            events = if cursor == last {
                next?
            } else {
                // The centre stopped short of the batch's end (a gap): what was read
                // ahead starts at the wrong place.
                self.engine.events_after(cursor, self.cfg.batch).await?
            };
        }
    }

    /// The first of `events` that fit in one batch; always at least one, since an
    /// outsized event still has to go, alone.
    fn batch_of(&self, events: &[Event]) -> EventBatch {
        let mut batch = EventBatch { events: Vec::new() };
        let mut bytes = 0;
        for e in events {
            let le = link_event(e);
            // What the event's JSON costs, roughly: its data, and the rest.
            bytes += 160 + le.data.as_ref().map_or(0, |d| d.to_string().len());
            if bytes > self.cfg.batch_bytes && !batch.events.is_empty() {
                break;
            }
            batch.events.push(le);
        }
        batch
    }

    async fn send(&self, batch: &EventBatch) -> Result<BatchAnswer, LinkError> {
        let answer = self.answer(self.centre.agent_events(batch)).await.inspect_err(|e| {
            if let LinkError::Centre(ClientError::Api { status: 413, .. }) = e {
                let first = &batch.events[0];
                tracing::error!(
                    run = %first.run_id,
                    seq = first.seq,
                    events = batch.events.len(),
                    "the centre refuses a batch as too large; this site's replication waits behind it"
                );
            }
        })?;
        Ok(answer)
    }
}

/// An event of this agent's log, for the wire.
fn link_event(e: &Event) -> LinkEvent {
    LinkEvent {
        run_id: e.run_id,
        seq: e.seq,
        owner: e.owner.to_string(),
        owner_seq: e.owner_seq,
        at: e.at,
        kind: e.kind.name().to_string(),
        step: e.step.as_deref().map(str::to_string),
        item: e.item,
        attempt: e.attempt,
        error: e.error.clone(),
        data: e.kind.data(),
    }
}

/// Takes every wake already queued on `events`, lost ones (`Lagged`) included.
fn drain(events: &mut broadcast::Receiver<std::sync::Arc<Event>>) {
    use broadcast::error::TryRecvError;
    loop {
        match events.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}
