//! What only the PostgreSQL store does, on a real server (`.ci/postgres start`): one
//! executor per database, and no write from an executor whose claim on it ended. The rest
//! of the engine's suite runs on PostgreSQL with `LARIAT_TEST_STORE=postgres`.

use lariat_db::testing::TestDatabase;
use lariat_engine::{Store, StoreError, StoreOptions};
use sqlx::Connection;

#[tokio::test]
async fn a_second_executor_is_refused_while_the_first_holds_the_database() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let first = Store::open(StoreOptions::postgres(&t.url)).await.unwrap();
    let err = Store::open(StoreOptions::postgres(&t.url))
        .await
        .err()
        .expect("a second executor on one database");
    assert!(matches!(err, StoreError::HeldElsewhere { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("in use by another lariat executor")
            && msg.contains(&format!("lariat pid {}", std::process::id())),
        "{msg}"
    );
    assert!(
        !msg.contains(":lariat@"),
        "the password is not shown: {msg}"
    );
    first.close().await;
    let second = Store::open(StoreOptions::postgres(&t.url)).await.unwrap();
    second.close().await;
}

#[tokio::test]
async fn an_executor_whose_claim_ended_writes_nothing() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let store = Store::open(StoreOptions::postgres(&t.url)).await.unwrap();
    store.put_workflow("provision", "{}").await.unwrap();
    // The server ends the session that holds the claim, as a restart of the server or a
    // cut connection would; another executor could take the database now.
    let mut admin = sqlx::PgConnection::connect(&t.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, vec![true], "one session held the claim");
    let err = store
        .put_workflow("provision", r#"{"steps":[]}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ClaimLost { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("stops writing until it has it again"),
        "{err}"
    );
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_versions")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(versions, 1, "the refused write left nothing");
    // Reads still answer: the operator can see what was committed.
    assert_eq!(store.latest_version("provision").await.unwrap(), Some(1));
    store.close().await;
    admin.close().await.unwrap();
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_named_without_its_password() {
    let err = Store::open(StoreOptions::postgres(
        "postgres://lariat:s3cret@127.0.0.1:9/lariat",
    ))
    .await
    .err()
    .expect("nothing listens on port 9");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:9") && !msg.contains("s3cret"),
        "{msg}"
    );
}

#[test]
fn a_db_argument_names_its_kind() {
    assert!(matches!(
        StoreOptions::from_arg("postgres://db1/lariat"),
        StoreOptions::Postgres(_)
    ));
    assert!(matches!(
        StoreOptions::from_arg("PostgreSQL://db1/lariat"),
        StoreOptions::Postgres(_)
    ));
    assert!(matches!(
        StoreOptions::from_arg("/var/lib/lariat/lariat.db"),
        StoreOptions::Sqlite(_)
    ));
}
