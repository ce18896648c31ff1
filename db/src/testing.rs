//! For tests and benchmarks of any crate that need a real PostgreSQL (feature
//! `test-support`): a database of their own on the server `.ci/postgres start` runs,
//! whose URL is in `LARIAT_TEST_POSTGRES`, dropped when they end.

use crate::pg::{PgDb, PgOptions};

/// A database of one test's own, dropped when it goes. Its name is made here (hex),
/// never taken from outside, so it is safe to splice into SQL.
pub struct TestDatabase {
    admin_url: String,
    /// Its name on the server.
    pub name: String,
    /// Its URL, with the test server's user and password.
    pub url: String,
}

impl TestDatabase {
    /// A new database; none (after saying why) where no server is configured, unless
    /// `LARIAT_REQUIRE_PRIVILEGED=1` (as in CI), where that is a failure.
    pub async fn create() -> Option<TestDatabase> {
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
        Some(
            TestDatabase::on(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("the test server: {e}")),
        )
    }

    /// A new database on the server at `admin_url` (a role that may create databases).
    pub async fn on(admin_url: &str) -> Result<TestDatabase, crate::DbError> {
        let admin_url = admin_url.to_string();
        let name = format!("lariat_test_{:016x}", rand::random::<u64>());
        let admin = PgDb::connect(PgOptions::new(&admin_url)).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await?;
        admin.close().await;
        let url = with_database(&admin_url, &name);
        Ok(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// A handle on it.
    pub async fn connect(&self) -> PgDb {
        PgDb::connect(PgOptions::new(&self.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await; a runtime of its own on a thread of its own does the work.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
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

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..cut])
}
