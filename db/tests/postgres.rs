//! lariat-db on a real PostgreSQL server (`.ci/postgres start` makes one; its URL is in
//! `LARIAT_TEST_POSTGRES`). Each test works in a database of its own, dropped after.

use std::time::Duration;

use lariat_db::testing::{TestDatabase, with_database};
use lariat_db::{DbError, PgDb, PgOptions};

static FIXTURE: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations/postgres");

#[tokio::test]
async fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let db = PgDb::connect(PgOptions::new(&t.url)).await.unwrap();
    assert_eq!(db.newest_migration().await.unwrap(), None, "a new database");
    db.migrate(&FIXTURE).await.unwrap();
    db.migrate(&FIXTURE).await.unwrap();
    sqlx::query("INSERT INTO fixture (id, note) VALUES (1, 'kept')")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(db.newest_migration().await.unwrap(), Some(1));
    db.check_not_newer(1).await.unwrap();
    let err = db.check_not_newer(0).await.unwrap_err();
    assert!(matches!(
        err,
        DbError::NewerSchema {
            found: 1,
            known: 0,
            ..
        }
    ));
    let said = err.to_string();
    eprintln!("{said}");
    assert!(said.contains("written by a newer Lariat"), "{said}");
    assert!(!said.contains(":lariat@"), "no password in: {said}");
    db.ping().await.unwrap();
    db.close().await;
}

#[tokio::test]
async fn a_refused_password_or_database_is_named_without_the_password() {
    let Some(t) = TestDatabase::create().await else {
        return;
    };
    let wrong = t.url.replacen(":lariat@", ":not-the-password@", 1);
    assert_ne!(wrong, t.url, "the test URL carries the password `lariat`");
    let err = PgDb::connect(PgOptions::new(&wrong)).await.unwrap_err();
    let said = err.to_string();
    eprintln!("{said}");
    assert!(matches!(err, DbError::Refused { .. }), "{said}");
    assert!(said.contains("password authentication failed"), "{said}");
    assert!(said.contains("check the user and password"), "{said}");
    assert!(!said.contains("not-the-password"), "{said}");

    let missing = with_database(&t.url, &format!("{}_gone", t.name));
    let err = PgDb::connect(PgOptions::new(&missing)).await.unwrap_err();
    let said = err.to_string();
    eprintln!("{said}");
    assert!(
        said.contains("does not exist") && said.contains("createdb"),
        "{said}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_answer_or_a_url_that_does_not_read_fails_at_once() {
    if TestDatabase::create().await.is_none() {
        return;
    }
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://lariat:secret@127.0.0.1:{port}/lariat");
    let opts = PgOptions {
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::new(&url)
    };
    // It must give up, not hang: the bound is far above the 2 s asked for.
    let err = tokio::time::timeout(Duration::from_secs(60), PgDb::connect(opts))
        .await
        .expect("connect gave up")
        .unwrap_err();
    let said = err.to_string();
    eprintln!("{said}");
    assert!(matches!(err, DbError::Unreachable { .. }), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(
        said.to_lowercase().contains("refused"),
        "why, not only that: {said}"
    );
    assert!(!said.contains("secret"), "{said}");

    let err = PgDb::connect(PgOptions::new("postgres://ops@db1:notaport/lariat"))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::BadUrl { .. }), "{err}");
}
