//! A database that cannot be used gives a clear error at open, never a panic.
use std::io::Write;
use std::process::Command;

use lariat_engine::{Store, StoreError, StoreOptions};

#[tokio::test]
async fn corrupt_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&[0x42u8; 8192]).unwrap();
    let err = Store::open(StoreOptions::new(&path)).await.err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("junk.db") && msg.contains("not a lariat database or is corrupt"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x42u8; 8192],
        "the file is left as it was"
    );
}

#[tokio::test]
async fn second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let first = Store::open(StoreOptions::new(&path)).await.unwrap();
    let err = Store::open(StoreOptions::new(&path)).await.err().unwrap();
    assert!(
        matches!(err, StoreError::InUse { pid: Some(_), .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use by another lariat process"));
    drop(first);
    Store::open(StoreOptions::new(&path))
        .await
        .expect("free again once closed");
}

#[tokio::test]
async fn a_lock_held_by_another_program_times_out_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    drop(Store::open(StoreOptions::new(&path)).await.unwrap());
    // Another program (Python's sqlite3) takes an exclusive lock and keeps it.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,time,sys\nc=sqlite3.connect({:?},isolation_level=None)\nc.execute('PRAGMA locking_mode=EXCLUSIVE')\nc.execute('BEGIN EXCLUSIVE')\nc.execute('CREATE TABLE IF NOT EXISTS hold(x)')\nprint('held',flush=True)\ntime.sleep(30)",
            path.to_str().unwrap()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let mut opts = StoreOptions::new(&path);
    opts.sqlite_mut().unwrap().busy_timeout = std::time::Duration::from_millis(300);
    let err = Store::open(opts).await.err().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("locked by another program"),
        "{err}"
    );
}

#[tokio::test]
async fn read_only_database_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    // Closed for real: a connection still open in this process would keep a writable
    // file descriptor that SQLite reuses.
    Store::open(StoreOptions::new(&path))
        .await
        .unwrap()
        .close()
        .await;
    // Root ignores permission bits, so make the file immutable when running as root.
    let root = unsafe_is_root();
    let made_ro = if root {
        Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        let mut p = std::fs::metadata(&path).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&path, p).is_ok()
    };
    if !made_ro {
        if std::env::var_os("LARIAT_REQUIRE_PRIVILEGED").is_some() {
            panic!(
                "cannot make a file read-only here (chattr failed) but LARIAT_REQUIRE_PRIVILEGED is set"
            );
        }
        eprintln!("SKIP read_only_database_is_named_as_such: cannot make a file read-only here");
        return;
    }
    let res = Store::open(StoreOptions::new(&path)).await;
    if root {
        let _ = Command::new("chattr").arg("-i").arg(&path).status();
    }
    let err = res
        .err()
        .expect("a read-only database does not open for writing");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[tokio::test]
async fn missing_folder_and_directory_paths_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(StoreOptions::new(dir.path().join("no/such/dir/x.db")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = Store::open(StoreOptions::new(dir.path()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
