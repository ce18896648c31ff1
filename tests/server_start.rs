//! `lariat server` refuses a database it cannot use with one clear line and exit code 1,
//! never a panic, and a second server on the same file is refused while the first runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server(db: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lariat"));
    c.args(["server", "--insecure-no-auth"])
        .arg("--db")
        .arg(db)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("LARIAT_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn refused(mut c: Command, expect: &[&str]) {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
}

#[test]
fn corrupt_and_missing_databases_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    refused(
        server(&junk, free_port()),
        &[
            "error: cannot start the engine",
            "junk.db",
            "not a lariat database or is corrupt",
        ],
    );
    refused(
        server(&dir.path().join("nowhere/x.db"), free_port()),
        &["folder", "does not exist"],
    );
    // A PostgreSQL server that does not answer is named (without its password); a typo
    // of a URL is named, and no file of that name is made.
    let url = std::path::Path::new("postgres://ops:pw@127.0.0.1:9/lariat");
    refused(
        server(url, free_port()),
        &[
            "cannot use this database",
            "postgres://ops:***@127.0.0.1:9/lariat",
            "does not answer",
        ],
    );
    let mut typo = server(std::path::Path::new("postgres:lariat"), free_port());
    typo.current_dir(dir.path());
    refused(typo, &["--db postgres:lariat", "not a PostgreSQL URL"]);
    assert!(
        !dir.path().join("postgres:lariat").exists(),
        "no SQLite file was made of the URL"
    );
}

/// `lariat token create` on the database at `db`, as a local admin command.
fn token_create(db: &std::path::Path, name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lariat"))
        .args(["token", "create", "--role", "admin", "--name", name, "--db"])
        .arg(db)
        .output()
        .unwrap()
}

/// A connection of the test's own to the SQLite file at `db`.
async fn sqlite(db: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_database_a_newer_lariat_wrote_is_refused_before_it_is_touched() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lariat.db");
    // A database this binary made, then migrated by "a newer one".
    let made = token_create(&db, "root");
    assert!(made.status.success(), "{made:?}");
    let future = lariat_node::newest_known_migration() + 1;
    let mut c = sqlite(&db).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (?1, 'from a newer lariat', 1, x'00', 0)",
    )
    .bind(future)
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    refused(
        server(&db, free_port()),
        &[
            "cannot use this database",
            &format!(
                "schema version {future}; this binary knows up to {}",
                future - 1
            ),
        ],
    );
    // Nor do the local admin commands write to it.
    let token = token_create(&db, "late");
    let said = String::from_utf8_lossy(&token.stderr);
    assert!(!token.status.success(), "{said}");
    assert!(said.contains("written by a newer Lariat"), "{said}");
    // Nothing of the engine's was made in it.
    let mut c = sqlite(&db).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'runs'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(runs, 0, "the engine's tables were not created");
}

#[test]
fn a_second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lariat.db");
    let mut first = server(&db, free_port())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first server holds the lock once its database file exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("lariat.db.lock").exists() || !db.exists() {
        assert!(
            Instant::now() < deadline,
            "first server never opened its database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    refused(
        server(&db, free_port()),
        &[
            "in use by another lariat process",
            &format!("pid {}", first.id()),
        ],
    );
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn design_repository_credentials_are_refused_in_the_url_and_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lariat.db");
    let mut c = server(&db, free_port());
    c.args([
        "--design-repo",
        "https://ci:glpat-secret@git.example.net/design.git",
    ]);
    refused(
        c,
        &[
            "holds credentials",
            "--design-credentials-file",
            "***@git.example.net",
        ],
    );
    let out = server(&db, free_port())
        .args([
            "--design-repo",
            "https://glpat-secret@git.example.net/design.git",
        ])
        .output()
        .unwrap();
    // A token as the user name, as GitHub and GitLab take it: refused too, unshown.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds credentials") && !stderr.contains("glpat"),
        "{stderr}"
    );

    let mut c = server(&db, free_port());
    c.args(["--design-repo", "git@git.example.net:acme/design.git"]);
    refused(
        c,
        &["is an SSH URL", "--design-ssh-key", "--design-known-hosts"],
    );

    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "not read until a fetch").unwrap();
    let mut c = server(&db, free_port());
    c.args([
        "--design-repo",
        "git@git.example.net:acme/design.git",
        "--design-ssh-key",
    ])
    .arg(&key);
    refused(c, &["--design-ssh-key needs --design-known-hosts"]);

    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "git.example.net ssh-ed25519 !!!\n").unwrap();
    let mut c = server(&db, free_port());
    c.args([
        "--design-repo",
        "git@git.example.net:acme/design.git",
        "--design-ssh-key",
    ])
    .arg(&key)
    .arg("--design-known-hosts")
    .arg(&kh);
    refused(c, &["known_hosts line 1", "not base64"]);

    let creds = dir.path().join("creds");
    std::fs::write(&creds, "only-a-token\n").unwrap();
    let mut c = server(&db, free_port());
    c.args([
        "--design-repo",
        "https://git.example.net/design.git",
        "--design-credentials-file",
    ])
    .arg(&creds);
    refused(c, &["holds one line `user:password`"]);
}

/// A database of this test's own on the test PostgreSQL; none (the test skips, or fails
/// under `LARIAT_REQUIRE_PRIVILEGED=1`) without one.
async fn postgres() -> Option<lariat_db::testing::TestDatabase> {
    lariat_db::testing::TestDatabase::create().await
}

#[tokio::test]
async fn a_postgresql_database_a_newer_lariat_wrote_is_refused_before_it_is_touched() {
    let Some(pg) = postgres().await else { return };
    let url = std::path::PathBuf::from(&pg.url);
    // Tables this binary made, then migrated by "a newer one".
    let made = token_create(&url, "root");
    assert!(made.status.success(), "{made:?}");
    let future = lariat_node::newest_known_postgres_migration() + 1;
    let db = pg.connect().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from a newer lariat', true, '\\x00', 0)",
    )
    .bind(future)
    .execute(db.pool())
    .await
    .unwrap();
    refused(
        server(&url, free_port()),
        &[
            "cannot use this database",
            "postgres://lariat:***@",
            &format!(
                "schema version {future}; this binary knows up to {}",
                future - 1
            ),
        ],
    );
    let token = token_create(&url, "late");
    let said = String::from_utf8_lossy(&token.stderr);
    assert!(!token.status.success(), "{said}");
    assert!(said.contains("written by a newer Lariat"), "{said}");
    let runs: Option<String> = sqlx::query_scalar("SELECT to_regclass('runs')::text")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(runs, None, "the engine's tables were not created");
    db.close().await;
}

#[tokio::test]
async fn a_second_server_on_one_postgresql_database_is_refused_naming_the_first() {
    let Some(pg) = postgres().await else { return };
    let url = std::path::PathBuf::from(&pg.url);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = server(&url, port);
    let mut first = first
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the first server never listened");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first server exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = server(&url, free_port());
    second.current_dir(dir.path());
    refused(
        second,
        &[
            "is in use by another lariat executor",
            &format!("lariat pid {}", first.id()),
        ],
    );
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn a_site_agent_is_refused_a_postgresql_database() {
    let mut agent = Command::new(env!("CARGO_BIN_EXE_lariat"));
    agent
        .args([
            "agent",
            "--site",
            "ams1",
            "--central",
            "http://127.0.0.1:9",
            "--insecure-no-auth",
        ])
        .args(["--db", "postgres://ops:pw@127.0.0.1:9/lariat"])
        .env("LARIAT_LOG", "warn")
        .env("LARIAT_AGENT_TOKEN", "lariat_site_x")
        .stdin(Stdio::null());
    refused(
        agent,
        &[
            "a site agent keeps its tables in a SQLite file",
            "--db ./lariat-agent.db",
        ],
    );
}

#[tokio::test]
async fn a_server_whose_postgresql_goes_away_answers_503_and_recovers_by_itself() {
    let Some(pg) = postgres().await else { return };
    let url = std::path::PathBuf::from(&pg.url);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Killed(
        server(&url, port)
            .current_dir(dir.path())
            .env("LARIAT_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let status = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while status("/readyz").await != 200 {
        assert!(Instant::now() < deadline, "the server never became ready");
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The database refuses connections and the server's sessions are ended.
    let admin_url = std::env::var("LARIAT_TEST_POSTGRES").unwrap();
    let admin = lariat_db::PgDb::connect(lariat_db::PgOptions::new(&admin_url))
        .await
        .unwrap();
    let allow = |yes: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {yes}",
            pg.name
        ))
    };
    sqlx::query(allow(false))
        .execute(admin.pool())
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1")
        .bind(&pg.name)
        .execute(admin.pool())
        .await
        .unwrap();
    assert_eq!(
        status("/readyz").await,
        503,
        "not ready without its database"
    );
    let runs = http.get(format!("{base}/v1/runs")).send().await.unwrap();
    assert_eq!(
        runs.status().as_u16(),
        503,
        "out of reach is 503, not 500:\n{}",
        log()
    );
    let body: serde_json::Value = runs.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server waits, it does not exit"
    );
    // The database is back: the server is ready again by itself.
    sqlx::query(allow(true))
        .execute(admin.pool())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("/readyz").await != 200 {
        assert!(Instant::now() < deadline, "the server never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status("/v1/runs").await, 200);
    admin.close().await;
}

/// A child process killed when dropped, a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
