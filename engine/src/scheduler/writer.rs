//! The writer task: commits the scheduler's batches in order, merging whatever is queued
//! into one transaction, and only then lets their effects out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::event::Event;
use crate::store::{Store, StoreError, WriteSet};

use super::command::Command;
use super::execute::execute;
use super::state::{Batch, Effect};

/// Commit batches in order, merging whatever is queued into one transaction, then run
/// their effects. A database out of reach is waited for ([`ride_out`]); any other
/// failed commit stops the executor.
pub(crate) async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    bus: broadcast::Sender<Arc<Event>>,
    fatal: Arc<OnceLock<String>>,
    inbox: mpsc::UnboundedSender<Command>,
    max_events: usize,
    outages: Arc<Outages>,
) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        let mut events = batches[0].set.events.len();
        while events < max_events {
            match rx.try_recv() {
                Ok(b) => {
                    events += b.set.events.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let (set, effects) = merge(batches);
        let started = Instant::now();
        if !set.is_empty()
            && let Err(e) = store.commit(&set).await
        {
            let stopped = if store.is_outage(&e) {
                ride_out(&store, &set, &e, &mut rx, &outages).await.err()
            } else {
                Some(format!("commit failed, executor stopped: {e}"))
            };
            if let Some(msg) = stopped {
                tracing::error!("{msg}");
                let _ = fatal.set(msg);
                // Dropping the effects drops their reply channels: callers see the stop.
                let _ = inbox.send(Command::Shutdown);
                return;
            }
        }
        metrics::histogram!("lariat_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("lariat_commit_batch_events").record(set.events.len() as f64);
        metrics::counter!("lariat_events_total").increment(set.events.len() as u64);
        for ev in set.events {
            let _ = bus.send(Arc::new(ev));
        }
        for eff in effects {
            match eff {
                Effect::Reply(f) => f(),
                Effect::Dispatch(d) => {
                    tokio::spawn(execute(*d, inbox.clone()));
                }
            }
        }
    }
}

/// The database's outages as the writer saw them.
#[derive(Debug, Default)]
pub(crate) struct Outages {
    /// Raised while the database is out of reach and the writer waits for it.
    pub down: AtomicBool,
    /// How many times it was.
    pub count: AtomicU64,
}

/// The database went out of reach during the commit of `set`: nothing of it is visible
/// unless the commit landed and only its answer was lost. Until the database answers
/// again nothing else commits, so no attempt starts and no caller is answered; `down` is
/// raised meanwhile, so that new submits are refused. Then, with the claim taken back,
/// `set` is committed, unless it already was. `Err` with the reason the executor stops:
/// another executor took the database meanwhile, or the engine is shutting down.
async fn ride_out(
    store: &Store,
    set: &WriteSet,
    first: &StoreError,
    rx: &mut mpsc::UnboundedReceiver<Batch>,
    outages: &Outages,
) -> Result<(), String> {
    let began = Instant::now();
    outages.down.store(true, Ordering::Release);
    outages.count.fetch_add(1, Ordering::AcqRel);
    metrics::counter!("lariat_store_outages_total").increment(1);
    metrics::gauge!("lariat_store_down").set(1.0);
    tracing::error!(
        "the database is out of reach ({first}): nothing more commits, new submits are refused, and the writer retries"
    );
    let mut pause = Duration::from_millis(200);
    let mut tries = 0u32;
    let outcome = loop {
        if rx.is_closed() {
            break Err(format!(
                "shut down while the database was out of reach ({first}); what was not committed was never acknowledged"
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        tries += 1;
        let still_down = |e: &StoreError| {
            if tries.is_multiple_of(10) {
                tracing::warn!(
                    waited_s = began.elapsed().as_secs(),
                    "the database is still out of reach: {e}"
                );
            }
        };
        match store.reclaim().await {
            Ok(()) => {}
            // Another executor has the database: this one must not go on.
            Err(e @ (StoreError::TakenOver { .. } | StoreError::HeldElsewhere { .. })) => {
                break Err(format!("executor stopped: {e}"));
            }
            // Whatever keeps a connection from opening (the server down, starting up,
            // refusing connections for now) may pass: wait on.
            Err(e) => {
                still_down(&e);
                continue;
            }
        }
        let landed = match store.committed(set).await {
            Ok(true) => Ok(()),
            Ok(false) => store.commit(set).await,
            Err(e) => Err(e),
        };
        match landed {
            Ok(()) => break Ok(()),
            Err(e) if store.is_outage(&e) => still_down(&e),
            Err(e) => break Err(format!("commit failed, executor stopped: {e}")),
        }
    };
    if outcome.is_ok() {
        tracing::info!(
            waited_ms = began.elapsed().as_millis() as u64,
            "the database answers again; committing goes on"
        );
    }
    metrics::gauge!("lariat_store_down").set(0.0);
    outages.down.store(false, Ordering::Release);
    outcome
}

fn merge(batches: Vec<Batch>) -> (WriteSet, Vec<Effect>) {
    if batches.len() == 1 {
        let b = batches.into_iter().next().expect("one batch");
        return (b.set, b.effects);
    }
    let mut set = WriteSet::default();
    let mut effects = Vec::new();
    let mut task_at: HashMap<(Uuid, Arc<str>, Option<u32>), usize> = HashMap::new();
    let mut run_at: HashMap<Uuid, usize> = HashMap::new();
    for b in batches {
        set.events.extend(b.set.events);
        for r in b.set.runs {
            match run_at.get(&r.id) {
                Some(&i) => set.runs[i] = r,
                None => {
                    run_at.insert(r.id, set.runs.len());
                    set.runs.push(r);
                }
            }
        }
        for (id, t) in b.set.tasks {
            let key = (id, t.step.clone(), t.item);
            match task_at.get(&key) {
                Some(&i) => set.tasks[i] = (id, t),
                None => {
                    task_at.insert(key, set.tasks.len());
                    set.tasks.push((id, t));
                }
            }
        }
        effects.extend(b.effects);
    }
    (set, effects)
}
