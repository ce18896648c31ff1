//! `GET /v1/runs/{id}/events/stream`: a run's history as Server-Sent Events, live.
//!
//! The stream subscribes to the engine's committed events *before* reading the store, so
//! nothing committed in between is missed: it replays the store after the client's
//! `Last-Event-ID`, then follows the live feed, skipping any seq it has already sent. When
//! the live feed lags (a slow client) or skips a seq, it reads the store again from the
//! last seq sent instead of dropping events. Every event's SSE id is its seq.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, KeepAliveStream, Sse};
use lariat_engine::{Engine, EngineError, Event};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::convert::Dto;
use crate::error::HttpError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use lariat_api_types::ErrorBody;
use lariat_api_types::{RunEvent, StreamQuery};

const REPLAY_PAGE: u32 = 1000;

type Frames = ReceiverStream<Result<SseEvent, Infallible>>;

/// Follow a run's history live. Starts after `Last-Event-ID` (or `?after=`), from the
/// first event when neither is given. Each SSE message has `id` = the event's seq and
/// `data` = the event as JSON; a store failure ends the stream with an `error` message.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events/stream",
    tag = "runs",
    params(
        ("id" = Uuid, Path, description = "Run id"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "An endless stream of events", content_type = "text/event-stream", body = RunEvent),
        (status = 400, description = "Bad id, Last-Event-ID or query", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn stream_events(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<KeepAliveStream<Frames>>, HttpError> {
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                HttpError::bad_request(
                    "invalid_header",
                    "Last-Event-ID must be the seq of an event (a whole number, 0 or more)",
                )
            })?,
        None => match q.after {
            Some(n) if n < 0 => {
                return Err(HttpError::bad_request(
                    "invalid_query",
                    format!("after {n} is negative; seqs start at 1"),
                ));
            }
            Some(n) => n,
            None => 0,
        },
    };
    // Subscribe first: whatever commits from here on arrives live, the rest is in the store.
    let bus = st.engine.subscribe();
    st.engine.run_row(id).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(pump(
        st.engine.clone(),
        id,
        after,
        bus,
        tx,
        st.streams_stop.clone(),
    ));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

type Tx = mpsc::Sender<Result<SseEvent, Infallible>>;

async fn pump(
    engine: Engine,
    id: Uuid,
    after: i64,
    mut bus: broadcast::Receiver<Arc<Event>>,
    tx: Tx,
    stop: CancellationToken,
) {
    let mut last = after;
    if let Err(e) = follow(&engine, id, &mut last, &mut bus, &tx, &stop).await {
        tracing::warn!(run = %id, "event stream ended: {e}");
        let body = serde_json::json!({"error": {"code": "unavailable", "message": e.to_string(), "details": null}});
        let _ = tx
            .send(Ok(SseEvent::default()
                .event("error")
                .data(body.to_string())))
            .await;
    }
}

/// Send events until the client leaves, the server stops, or the store fails.
async fn follow(
    engine: &Engine,
    id: Uuid,
    last: &mut i64,
    bus: &mut broadcast::Receiver<Arc<Event>>,
    tx: &Tx,
    stop: &CancellationToken,
) -> Result<(), EngineError> {
    if !catch_up(engine, id, last, tx).await? {
        return Ok(());
    }
    loop {
        let got = tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = stop.cancelled() => return Ok(()),
            got = bus.recv() => got,
        };
        match got {
            Ok(ev) => {
                if ev.run_id != id || ev.seq <= *last {
                    continue;
                }
                if ev.seq > *last + 1 {
                    if !catch_up(engine, id, last, tx).await? {
                        return Ok(());
                    }
                    if ev.seq <= *last {
                        continue;
                    }
                }
                if !send(tx, &ev).await {
                    return Ok(());
                }
                *last = ev.seq;
            }
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(run = %id, skipped = n, "event stream lagged; reading the store");
                if !catch_up(engine, id, last, tx).await? {
                    return Ok(());
                }
            }
            Err(RecvError::Closed) => {
                return Err(EngineError::Stopped("the engine stopped".into()));
            }
        }
    }
}

/// Send every stored event after `last`. False when the client has gone.
async fn catch_up(engine: &Engine, id: Uuid, last: &mut i64, tx: &Tx) -> Result<bool, EngineError> {
    loop {
        let page = engine.events(id, *last, REPLAY_PAGE).await?;
        for e in &page {
            if !send(tx, e).await {
                return Ok(false);
            }
            *last = e.seq;
        }
        if page.len() < REPLAY_PAGE as usize {
            return Ok(true);
        }
    }
}

async fn send(tx: &Tx, e: &Event) -> bool {
    let data = match serde_json::to_string(&e.dto()) {
        Ok(d) => d,
        Err(err) => {
            tracing::error!("cannot encode event {}/{}: {err}", e.run_id, e.seq);
            return true;
        }
    };
    tx.send(Ok(SseEvent::default().id(e.seq.to_string()).data(data)))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lariat_engine::{
        Actions, Actor, EngineConfig, Format, NewRun, RunStatus, StepStatus, wait_for_status,
    };

    const GATE: &str = r#"
name: gate
steps:
  - {name: a, action: noop}
  - {name: gate, action: await_signal, needs: [a]}
  - {name: b, action: noop, needs: [gate]}
  - {name: c, action: noop, needs: [b]}
"#;

    async fn engine(dir: &std::path::Path) -> (Engine, Uuid) {
        let mut actions = Actions::new();
        lariat_steps::register_builtin(&mut actions);
        let engine = Engine::start(EngineConfig::new(dir.join("t.db")), actions)
            .await
            .unwrap();
        engine.register_workflow(GATE, Format::Yaml).await.unwrap();
        let run = engine
            .submit(
                NewRun {
                    workflow: "gate".into(),
                    ..Default::default()
                },
                Actor::system(),
            )
            .await
            .unwrap()
            .run_id;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = engine.run_view(run).await.unwrap();
            if v.step("gate").unwrap().task.row.status == StepStatus::Waiting {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "gate never waited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (engine, run)
    }

    async fn seqs(rx: &mut mpsc::Receiver<Result<SseEvent, Infallible>>, n: usize) -> usize {
        for _ in 0..n {
            let _frame = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("an event in time")
                .expect("the stream is open");
        }
        n
    }

    /// Runs `feed` once the pump has replayed the stored history and follows a feed of
    /// capacity 2; returns how many events the client got and how many the store has.
    async fn scenario(
        feed: impl AsyncFnOnce(&Engine, Uuid, &broadcast::Sender<Arc<Event>>),
    ) -> (usize, i64) {
        let dir = tempfile::tempdir().unwrap();
        let (engine, run) = engine(dir.path()).await;
        let stored = engine.events(run, 0, 1000).await.unwrap().len();
        let (bus_tx, bus_rx) = broadcast::channel(2);
        let (tx, mut rx) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        tokio::spawn(pump(engine.clone(), run, 0, bus_rx, tx, stop.clone()));
        let mut got = seqs(&mut rx, stored).await;
        feed(&engine, run, &bus_tx).await;
        let total = engine.events(run, 0, 1000).await.unwrap();
        got += seqs(&mut rx, total.len() - stored).await;
        // Nothing more: no event was sent twice.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err()
        );
        stop.cancel();
        engine.shutdown().await;
        (got, total.last().unwrap().seq)
    }

    async fn finish(engine: &Engine, run: Uuid) -> Vec<Arc<Event>> {
        let before = engine.events(run, 0, 1000).await.unwrap().len() as i64;
        engine
            .signal(
                run,
                "gate",
                None,
                serde_json::json!({}),
                lariat_engine::Actor::system(),
            )
            .await
            .unwrap();
        wait_for_status(
            engine,
            run,
            &[RunStatus::Succeeded],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let after = engine.events(run, before, 1000).await.unwrap();
        after.into_iter().map(Arc::new).collect()
    }

    #[tokio::test]
    async fn a_lagged_feed_is_refilled_from_the_store() {
        let (got, last) = scenario(
            async |engine: &Engine, run, bus: &broadcast::Sender<Arc<Event>>| {
                // Every new event at once into a feed that holds 2: the follower lags.
                for e in finish(engine, run).await {
                    let _ = bus.send(e);
                }
            },
        )
        .await;
        assert_eq!(got as i64, last);
    }

    #[tokio::test]
    async fn a_gap_in_the_feed_is_filled_from_the_store() {
        let (got, last) = scenario(
            async |engine: &Engine, run, bus: &broadcast::Sender<Arc<Event>>| {
                // Only the last event arrives live; the ones before it are in the store.
                let new = finish(engine, run).await;
                let _ = bus.send(new.last().unwrap().clone());
            },
        )
        .await;
        assert_eq!(got as i64, last);
    }
}
