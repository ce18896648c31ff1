//! The engine's PostgreSQL schema on a real server (`.ci/postgres start`): it applies
//! once, holds what the engine stores, and keeps the SQLite schema's guarantees (one run
//! per owner and idempotency key, one event per owner and owner_seq).

use lariat_db::testing::TestDatabase;
use lariat_engine::store::POSTGRES_MIGRATIONS;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn the_schema_applies_once_and_keeps_the_keys_unique() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let db = t.connect().await;
    db.migrate(&POSTGRES_MIGRATIONS).await.unwrap();
    db.migrate(&POSTGRES_MIGRATIONS).await.unwrap();
    let newest = POSTGRES_MIGRATIONS.iter().map(|m| m.version).max();
    assert_eq!(db.newest_migration().await.unwrap(), newest);

    let run = |id: Uuid, owner: &str, key: &str| {
        sqlx::query(
            "INSERT INTO runs (id, workflow, version, owner, status, input, targets, idempotency_key, created_at, updated_at)
             VALUES ($1, 'provision', 1, $2, 'running', $3, $4, $5, 1, 1)",
        )
        .bind(id)
        .bind(owner.to_string())
        .bind(json!({"image": "debian-13"}))
        .bind(json!(["ams1-a07"]))
        .bind(key.to_string())
    };
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    run(a, "central", "k1").execute(db.pool()).await.unwrap();
    let again = run(b, "central", "k1")
        .execute(db.pool())
        .await
        .unwrap_err();
    let code = again
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23505"), "{again}");
    // Another owner's run (mirrored from a site) keeps its own key.
    run(c, "agent-ams1", "k1").execute(db.pool()).await.unwrap();

    sqlx::query(
        "INSERT INTO steps (run_id, step, item, status, attempt, series_start, interruptions, item_value, waiting_for, compensating, updated_at)
         VALUES ($1, 'flash', 0, 'waiting', 1, 1, 0, $2, 'window:night', false, 1),
                ($1, 'flash', 1, 'waiting', 1, 1, 0, $3, 'signal:callback', false, 1)",
    )
    .bind(a)
    .bind(json!("ams1-a07"))
    .bind(json!("ams1-a08"))
    .execute(db.pool())
    .await
    .unwrap();
    let waiting: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT item, item_value FROM steps
         WHERE status = 'waiting' AND waiting_for >= 'window:' AND waiting_for < 'window;'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(waiting, vec![(0, json!("ams1-a07"))]);

    let event = |seq: i64, owner_seq: i64| {
        sqlx::query(
            "INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, data) VALUES ($1, $2, 'central', $3, 1, 'run_created', $4)",
        )
        .bind(a)
        .bind(seq)
        .bind(owner_seq)
        .bind(json!({"input": {}}))
    };
    event(1, 1).execute(db.pool()).await.unwrap();
    assert!(
        event(2, 1).execute(db.pool()).await.is_err(),
        "one event per owner_seq"
    );
    assert!(
        event(1, 2).execute(db.pool()).await.is_err(),
        "one event per seq"
    );
    // Times past 2^31 ms (January 1970 plus 24 days) fit: BIGINT, not INTEGER.
    sqlx::query("INSERT INTO timers (run_id, step, item, kind, fire_at) VALUES ($1, 'flash', 0, 'retry', $2)")
        .bind(a)
        .bind(1_767_000_000_000i64)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
}
