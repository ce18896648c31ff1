//! The writer task: commits the scheduler's batches in order, merging whatever is queued
//! into one transaction, and only then lets their effects out.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::event::Event;
use crate::store::{Store, WriteSet};

use super::command::Command;
use super::execute::execute;
use super::state::{Batch, Effect};

/// Commit batches in order, merging whatever is queued into one transaction, then run
/// their effects.
pub(crate) async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    bus: broadcast::Sender<Arc<Event>>,
    fatal: Arc<OnceLock<String>>,
    inbox: mpsc::UnboundedSender<Command>,
    max_events: usize,
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
            let msg = format!("commit failed, executor stopped: {e}");
            tracing::error!("{msg}");
            let _ = fatal.set(msg);
            // Dropping the effects drops their reply channels: callers see the stop.
            let _ = inbox.send(Command::Shutdown);
            return;
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
