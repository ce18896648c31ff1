//! The design source against a real git repository made with the git CLI: fetch,
//! validate, record, activate only valid revisions, pins to commits and tags, restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lariat_db::{Db, DbOptions};
use lariat_source::{
    DesignSource, RepoCredentials, RevisionStatus, SourceConfig, SourceError, Trigger,
};

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
        credentials: RepoCredentials::None,
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

/// OpenSSH's sshd on 127.0.0.1 serving the git repositories of this machine to one
/// client key, with a host key of its own. Stopped on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl Sshd {
    /// None (with the reason) where sshd cannot run: not installed, or not root.
    fn start() -> Result<Sshd, String> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            return Err("/usr/sbin/sshd is not installed (package openssh-server)".into());
        }
        if !std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        {
            return Err("not root (sshd's privilege separation needs it)".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("stranger_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPidFile {d}/sshd.pid\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .map_err(|e| format!("sshd: {e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Sshd { dir, port, child })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file naming this server with `key`'s public half.
    fn known_hosts(&self, key: &str) -> PathBuf {
        let public = std::fs::read_to_string(self.file(&format!("{key}.pub"))).unwrap();
        let path = self.file(&format!("known_hosts.{key}"));
        std::fs::write(&path, format!("[127.0.0.1]:{} {public}", self.port)).unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips with a message, or fails under LARIAT_REQUIRE_PRIVILEGED=1 (CI).
fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("LARIAT_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("LARIAT_REQUIRE_PRIVILEGED=1 but {test} cannot run: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// A design source on a fresh mirror fetching `cfg`'s repository once.
async fn sync_once(
    cfg: impl FnOnce(&Path) -> SourceConfig,
) -> Result<lariat_source::Revision, SourceError> {
    let data = tempfile::tempdir().unwrap();
    let cfg = cfg(data.path());
    let src = DesignSource::open(store(data.path()).await, cfg)
        .await
        .unwrap();
    src.sync(Trigger::Manual).await
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_ssh_repository_is_fetched_with_a_key_and_a_checked_host_key() {
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(reason) => return skip_or_fail("the SSH design source test", &reason),
    };
    let repo = Repo::new();
    let commit = repo.commit_tree(&examples().join("design"), "over ssh");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let url = format!(
        "ssh://{user}@127.0.0.1:{}{}",
        sshd.port,
        repo.path().display()
    );
    let fetch = |key: &str, host_key: &str| {
        let creds = RepoCredentials::ssh_key(&sshd.file(key), &sshd.known_hosts(host_key)).unwrap();
        creds.check(&url).unwrap();
        sync_once(|data| SourceConfig {
            repo: url.clone(),
            credentials: creds,
            ..config(repo.path(), data)
        })
    };

    let rev = fetch("client_key", "host_key").await.unwrap_or_else(|e| {
        panic!(
            "{e}\nsshd: {}",
            std::fs::read_to_string(sshd.file("sshd.log")).unwrap_or_default()
        )
    });
    assert_eq!(rev.commit, commit);
    assert_eq!(rev.status, RevisionStatus::Active);

    // A server showing another key than the one filed: refused before any credential goes.
    let err = fetch("client_key", "stranger_key")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not the one in") && err.contains("[127.0.0.1]:"),
        "{err}"
    );
    // A key the server does not take: one attempt, and a clear answer.
    let err = fetch("stranger_key", "host_key")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    let tries = std::fs::read_to_string(sshd.file("sshd.log"))
        .unwrap_or_default()
        .matches("Connection closed by authenticating user")
        .count();
    assert!(
        tries <= 1,
        "one refused attempt per fetch, sshd saw {tries}"
    );
}

/// git's own smart-HTTP server (`git http-backend`, run as CGI by a few lines of Python)
/// behind HTTP basic authentication, counting the requests it refuses.
const GIT_HTTP: &str = r#"
import base64, http.server, os, subprocess, sys
root, port_file, user, password = sys.argv[1:5]
want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
refused = 0
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                data += self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def serve(self):
        global refused
        data = self.body()
        if self.headers.get("Authorization") != want:
            if self.headers.get("Authorization"):
                refused += 1
                print(f"refused {refused}", flush=True)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="design"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(data)), REMOTE_USER=user,
                   GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
        out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(": ")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
    do_GET = serve
    do_POST = serve
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(port_file, "w").write(str(s.server_address[1]))
s.serve_forever()
"#;

#[tokio::test]
async fn an_https_style_repository_takes_its_user_and_password_from_a_file() {
    if Command::new("python3").arg("--version").output().is_err() {
        return skip_or_fail("the HTTP credentials test", "python3 is missing");
    }
    let repo = Repo::new();
    let commit = repo.commit_tree(&examples().join("design"), "over http");
    let served = tempfile::tempdir().unwrap();
    let s = served.path();
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(repo.path())
        .arg(s.join("design.git"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(s.join("git_http.py"), GIT_HTTP).unwrap();
    let mut server = Command::new("python3")
        .arg(s.join("git_http.py"))
        .arg(s)
        .arg(s.join("port"))
        .args(["ci-bot", "s3cret:with-colon"])
        .stdout(std::fs::File::create(s.join("server.log")).unwrap())
        .stderr(std::fs::File::create(s.join("access.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(s.join("port"))
            && !p.is_empty()
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the git server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = format!("http://127.0.0.1:{port}/design.git");
    let fetch = |creds: &str| {
        let file = s.join(format!("creds.{}", creds.len()));
        std::fs::write(&file, creds).unwrap();
        let credentials = RepoCredentials::from_file(&file).unwrap();
        credentials.check(&url).unwrap();
        sync_once(|data| SourceConfig {
            repo: url.clone(),
            credentials,
            ..config(repo.path(), data)
        })
    };
    let rev = fetch("ci-bot:s3cret:with-colon\n")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(s.join("access.log")).unwrap_or_default()
            )
        });
    assert_eq!(rev.commit, commit);
    let err = fetch("ci-bot:wrong\n").await.unwrap_err().to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong"), "no password in the error: {err}");
    // Without credentials, the error names the setting to give.
    let err = sync_once(|data| SourceConfig {
        repo: url.clone(),
        ..config(repo.path(), data)
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--design-credentials-file"), "{err}");
    let _ = server.kill();
    let _ = server.wait();
    let refused = std::fs::read_to_string(s.join("server.log")).unwrap_or_default();
    assert_eq!(refused.lines().count(), 1, "one refused attempt: {refused}");
}
