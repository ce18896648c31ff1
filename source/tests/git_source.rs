//! The design source against a real git repository made with the git CLI: fetch,
//! validate, record, activate only valid revisions, pins to commits and tags, restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lariat_db::{Db, DbOptions};
use lariat_source::{DesignSource, RevisionStatus, SourceConfig, SourceError, Trigger};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A broken design with one error (two interfaces share a MAC).
fn a_broken_design() -> PathBuf {
    examples().join("broken/duplicate-mac")
}

/// A git repository in a temporary folder, driven by the git CLI.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.email", "ops@example.com"]);
        r.git(&["config", "user.name", "Ops"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Replaces the work tree with a copy of `src` and commits it; returns the commit id.
    fn commit_tree(&self, src: &Path, msg: &str) -> String {
        for e in std::fs::read_dir(self.path()).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        copy_dir(src, self.path());
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn config(repo: &Path, data: &Path) -> SourceConfig {
    SourceConfig {
        repo: repo.display().to_string(),
        branch: "main".into(),
        mirror: data.join("design.git"),
        poll: None,
        webhook_secret: None,
        fetch_timeout: Duration::from_secs(30),
    }
}

async fn store(data: &Path) -> Db {
    Db::open(DbOptions::new(data.join("lariat.db")))
        .await
        .unwrap()
}

#[tokio::test]
async fn only_a_revision_without_errors_becomes_active() {
    let repo = Repo::new();
    let good = repo.commit_tree(&examples().join("design"), "first design");
    let data = tempfile::tempdir().unwrap();
    let src = DesignSource::open(store(data.path()).await, config(repo.path(), data.path()))
        .await
        .unwrap();
    assert!(src.active().revision.is_none());

    let first = src.sync(Trigger::Startup).await.unwrap();
    assert_eq!(first.commit, good);
    assert_eq!(first.status, RevisionStatus::Active);
    assert_eq!(first.errors, 0);
    assert_eq!(first.summary, "first design");
    assert!(src.active().loaded.design.hosts().next().is_some());

    // The same head again is not a new revision.
    let again = src.sync(Trigger::Poll).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(src.revisions(10).await.unwrap().len(), 1);

    let bad = repo.commit_tree(&a_broken_design(), "break it");
    let rejected = src.sync(Trigger::Webhook).await.unwrap();
    assert_eq!(rejected.commit, bad);
    assert_eq!(rejected.status, RevisionStatus::Rejected);
    assert!(rejected.errors >= 1);
    assert_eq!(
        src.active().revision.as_ref().map(|r| r.commit.clone()),
        Some(good.clone()),
        "a rejected revision must not replace the active design"
    );
    let (_, findings) = src.revision(&bad[..10]).await.unwrap().expect("recorded");
    assert_eq!(findings.len(), rejected.errors + rejected.warnings);
    assert!(!findings.is_empty());

    let listed = src.revisions(10).await.unwrap();
    let statuses: Vec<RevisionStatus> = listed.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [RevisionStatus::Rejected, RevisionStatus::Active]);

    // Fixing it makes the fix active and the first revision merely accepted.
    let fixed = repo.commit_tree(&examples().join("design"), "fix it");
    let r = src.sync(Trigger::Manual).await.unwrap();
    assert_eq!(
        (r.commit.as_str(), r.status),
        (fixed.as_str(), RevisionStatus::Active)
    );
    let listed = src.revisions(10).await.unwrap();
    assert_eq!(listed[2].status, RevisionStatus::Accepted);
}

#[tokio::test]
async fn a_site_pinned_to_a_tag_keeps_its_design() {
    let repo = Repo::new();
    let v1 = repo.commit_tree(&examples().join("design"), "v1");
    repo.git(&["tag", "v1"]);
    let data = tempfile::tempdir().unwrap();
    let src = DesignSource::open(store(data.path()).await, config(repo.path(), data.path()))
        .await
        .unwrap();
    src.sync(Trigger::Startup).await.unwrap();

    let pin = src.pin("dc1", "v1", "root").await.unwrap();
    assert_eq!(pin.commit, v1);

    // A later design without rack b becomes active; the pinned site keeps rack b.
    let smaller = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("design"), smaller.path());
    std::fs::remove_file(smaller.path().join("hosts/rack-b.yaml")).unwrap();
    let before = src.active().loaded.design.hosts().count();
    let v2 = repo.commit_tree(smaller.path(), "v2: rack b retired");
    let r = src.sync(Trigger::Poll).await.unwrap();
    assert_eq!(
        (r.commit.as_str(), r.status),
        (v2.as_str(), RevisionStatus::Active)
    );
    let after = src.active().loaded.design.hosts().count();
    assert!(after < before, "{after} < {before}");
    let pinned = src.design_for_site("dc1").await.unwrap();
    let unpinned = src.design_for_site("elsewhere").await.unwrap();
    assert_eq!(pinned.design.hosts().count(), before);
    assert_eq!(unpinned.design.hosts().count(), after);

    // Pins need an accepted, known revision.
    repo.commit_tree(&a_broken_design(), "broken");
    let bad = src.sync(Trigger::Poll).await.unwrap();
    assert!(matches!(
        src.pin("dc1", &bad.commit, "root").await,
        Err(SourceError::RejectedRevision { .. })
    ));
    assert!(matches!(
        src.pin("dc1", "no-such-tag", "root").await,
        Err(SourceError::UnknownRevision(_))
    ));
    assert_eq!(src.pins().await.unwrap().len(), 1);
    assert!(src.unpin("dc1").await.unwrap());
    assert!(!src.unpin("dc1").await.unwrap());
}

#[tokio::test]
async fn a_restart_restores_the_active_design_without_fetching() {
    let repo = Repo::new();
    let good = repo.commit_tree(&examples().join("design"), "first");
    let data = tempfile::tempdir().unwrap();
    let st = store(data.path()).await;
    let src = DesignSource::open(st.clone(), config(repo.path(), data.path()))
        .await
        .unwrap();
    src.sync(Trigger::Startup).await.unwrap();
    let hosts = src.active().loaded.design.hosts().count();
    drop(src);
    st.close().await;
    drop(st);

    // The repository is gone; the mirror still has the commit.
    drop(repo);
    let src = DesignSource::open(
        store(data.path()).await,
        config(Path::new("/nonexistent"), data.path()),
    )
    .await
    .unwrap();
    let active = src.active();
    assert_eq!(
        active.revision.as_ref().map(|r| r.commit.as_str()),
        Some(good.as_str())
    );
    assert_eq!(active.loaded.design.hosts().count(), hosts);
    let err = src.sync(Trigger::Poll).await.unwrap_err();
    assert!(matches!(err, SourceError::Git { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent"), "{err}");
    assert_eq!(src.revisions(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_missing_branch_is_named() {
    let repo = Repo::new();
    repo.commit_tree(&examples().join("design"), "first");
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(repo.path(), data.path());
    cfg.branch = "prod".into();
    let src = DesignSource::open(store(data.path()).await, cfg)
        .await
        .unwrap();
    let err = src.sync(Trigger::Startup).await.unwrap_err();
    assert!(err.to_string().contains("prod"), "{err}");
}

#[tokio::test]
async fn without_a_repository_the_design_is_empty_and_sync_says_why() {
    let data = tempfile::tempdir().unwrap();
    let src = DesignSource::unconfigured(store(data.path()).await)
        .await
        .unwrap();
    assert!(src.active().loaded.design.hosts().next().is_none());
    let err = src.sync(Trigger::Manual).await.unwrap_err();
    assert!(matches!(err, SourceError::NotConfigured));
}
