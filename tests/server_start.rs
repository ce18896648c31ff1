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
