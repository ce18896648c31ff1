//! PostgreSQL out of reach mid-run, on a real server (`.ci/postgres start`): every session
//! of the executor is ended under it, as a server restart or a cut network would. The
//! executor waits, commits nothing meanwhile and refuses new runs, then takes its claim
//! back and goes on; unless another executor took the database meanwhile, and then it
//! stops without writing.
mod common;

use std::time::Duration;

use common::{Recorder, actions, check_log};
use lariat_db::testing::TestDatabase;
use lariat_engine::{
    Actor, Engine, EngineConfig, EngineError, Format, NewRun, RunStatus, Store, StoreOptions,
};
use serde_json::json;
use sqlx::Connection;

const SLOW: &str = r#"
name: slow
steps:
  - {name: a, action: sleep, input: {ms: 150}}
  - {name: b, action: sleep, input: {ms: 150}, needs: [a]}
  - {name: c, action: sleep, input: {ms: 150}, needs: [b]}
  - {name: d, action: sleep, input: {ms: 150}, needs: [c]}
"#;

/// Ends every session on `t`'s database (from the test server's own database, so that
/// it works while `t` refuses connections); how many it ended.
async fn cut_off(t: &TestDatabase) -> usize {
    let admin_url = std::env::var("LARIAT_TEST_POSTGRES").unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&t.name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    ended.into_iter().filter(|e| *e).count()
}

async fn engine_on(url: &str) -> Engine {
    let rec = Recorder::default();
    let engine = Engine::start(EngineConfig::at(StoreOptions::postgres(url)), actions(&rec))
        .await
        .unwrap();
    engine.register_workflow(SLOW, Format::Yaml).await.unwrap();
    engine
}

async fn submit_slow(engine: &Engine, n: usize) -> Vec<uuid::Uuid> {
    let mut runs = Vec::new();
    for _ in 0..n {
        let s = engine.submit(run_of("slow"), Actor::system()).await;
        runs.push(s.unwrap().run_id);
    }
    runs
}

/// Waits for every run to succeed, and checks each one's log: no gap, no step completed
/// twice (a batch cut off mid-commit was committed once).
async fn finish_all(engine: &Engine, runs: &[uuid::Uuid]) {
    for run in runs {
        let limit = Duration::from_secs(30);
        lariat_engine::wait_for_status(engine, *run, &[RunStatus::Succeeded], limit)
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        check_log(&engine.store().events(*run, 0, 10_000).await.unwrap());
    }
}

fn run_of(workflow: &str) -> NewRun {
    NewRun {
        workflow: workflow.into(),
        input: json!({}),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_under_way_finish_after_the_database_comes_back() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let engine = engine_on(&t.url).await;
    let runs = submit_slow(&engine, 20).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cut_off(&t).await >= 1, "the executor's sessions were ended");
    finish_all(&engine, &runs).await;
    assert!(!engine.store_down());
    assert_eq!(engine.failure(), None, "the executor kept going");
    assert!(
        engine.store_outages() >= 1,
        "the executor saw its sessions end and waited for the database"
    );
    // It goes on taking work.
    let more = engine
        .submit(run_of("slow"), Actor::system())
        .await
        .unwrap();
    lariat_engine::wait_for_status(
        &engine,
        more.run_id,
        &[RunStatus::Succeeded],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_whose_database_was_taken_meanwhile_stops_without_writing() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let engine = engine_on(&t.url).await;
    assert!(cut_off(&t).await >= 1);
    // Another executor takes the database while the first is cut off, then leaves.
    let other = Store::open(StoreOptions::postgres(&t.url)).await.unwrap();
    other.close().await;
    let refused = engine.submit(run_of("slow"), Actor::system()).await;
    assert_eq!(engine.store_outages(), 1);
    assert!(
        matches!(&refused, Err(EngineError::Stopped(m)) if m.contains("another executor took database")),
        "{refused:?}"
    );
    assert!(engine.failure().unwrap().contains("start it again"));
    let mut admin = sqlx::PgConnection::connect(&t.url).await.unwrap();
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(runs, 0, "the stale executor wrote nothing");
    admin.close().await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_refuses_connections_new_runs_are_refused_and_nothing_is_lost() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let admin_url = std::env::var("LARIAT_TEST_POSTGRES").unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let engine = engine_on(&t.url).await;
    let runs = submit_slow(&engine, 5).await;
    // The database stops taking connections, and the executor's are ended: it stays
    // out of reach until allowed again.
    let allow = |yes: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {yes}",
            t.name
        ))
    };
    sqlx::query(allow(false)).execute(&mut admin).await.unwrap();
    assert!(cut_off(&t).await >= 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !engine.store_down() {
        assert!(
            std::time::Instant::now() < deadline,
            "the executor never saw the outage (stopped: {:?})",
            engine.failure()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = engine.submit(run_of("slow"), Actor::system()).await;
    assert!(
        matches!(&refused, Err(EngineError::Unavailable(m)) if m.contains("out of reach")),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(engine.store_down(), "still waiting");
    assert_eq!(engine.failure(), None, "waiting, not stopped");
    sqlx::query(allow(true)).execute(&mut admin).await.unwrap();
    finish_all(&engine, &runs).await;
    assert_eq!(engine.store_outages(), 1);
    engine.shutdown().await;
    admin.close().await.unwrap();
}
