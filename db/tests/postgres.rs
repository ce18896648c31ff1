//! lariat-db on a real PostgreSQL server (`.ci/postgres start` makes one; its URL is in
//! `LARIAT_TEST_POSTGRES`). Each test works in a database of its own, dropped after.

use std::time::Duration;

use lariat_db::{DbError, PgDb, PgOptions};

static FIXTURE: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations/postgres");

/// A database of this test's own on the test server, dropped when it goes. Its name is
/// made here (hex), never taken from outside, so it is safe to splice into SQL.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// None (after saying why) where no server is configured, unless CI requires one.
    async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("LARIAT_TEST_POSTGRES") else {
            if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!(
                    "LARIAT_TEST_POSTGRES is not set: run `eval \"$(.ci/postgres start)\"` first"
                );
            }
            eprintln!(
                "skipped: LARIAT_TEST_POSTGRES is not set (`eval \"$(.ci/postgres start)\"`)"
            );
            return None;
        };
        let name = format!("lariat_db_test_{}", rand_suffix());
        let admin = PgDb::connect(PgOptions::new(&admin_url)).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await
            .unwrap();
        admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await; a runtime of its own on a thread of its own does the work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = PgDb::connect(PgOptions::new(&url)).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(admin.pool())
                    .await;
                    admin.close().await;
                }
            })
        })
        .join();
    }
}

fn rand_suffix() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let cut = url.rfind('/').expect("a URL with a database");
    format!("{}/{name}", &url[..cut])
}

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
