//! A bare local mirror of the design repository.
//!
//! Lariat never checks the design out: it fetches into a bare repository under its data
//! folder and reads the YAML blobs of a commit's tree straight from the object store, so
//! an operator's working copy is never touched and a half-written checkout can't be read.

use std::path::{Path, PathBuf};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
    TreeWalkMode, TreeWalkResult,
};

use crate::SourceError;
use crate::credentials::{HostKeyCheck, RepoCredentials, known_hosts_name, redact_url};

/// Design files larger than this are refused: a design is text written by people.
const MAX_FILE_BYTES: usize = 8 << 20;

/// One commit as read from the mirror.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: String,
    pub summary: String,
    /// `(path in the repository, contents)` of every `.yaml`/`.yml` file and every script
    /// under `scripts/`, sorted by path.
    pub files: Vec<(String, String)>,
}

/// A bare repository that mirrors one remote's branch and tags.
pub struct Mirror {
    repo: Repository,
    url: String,
    /// `url` as messages may show it: without a password or token in it.
    shown: String,
    path: PathBuf,
    credentials: RepoCredentials,
}

impl Mirror {
    /// Opens the mirror at `path`, creating an empty bare repository there if none exists.
    pub fn open(
        path: &Path,
        url: &str,
        credentials: RepoCredentials,
    ) -> Result<Mirror, SourceError> {
        let repo = match Repository::open_bare(path) {
            Ok(r) => r,
            Err(_) if !path.exists() || is_empty_dir(path) => Repository::init_bare(path)
                .map_err(|e| SourceError::git(format!("create mirror {}", path.display()), e))?,
            Err(e) => {
                return Err(SourceError::git(
                    format!(
                        "open mirror {} (not a bare git repository?)",
                        path.display()
                    ),
                    e,
                ));
            }
        };
        Ok(Mirror {
            repo,
            url: url.to_string(),
            shown: redact_url(url),
            path: path.to_path_buf(),
            credentials,
        })
    }

    /// Fetches `branch` and all tags, and returns the commit at the branch's head.
    pub fn fetch(&self, branch: &str) -> Result<Oid, SourceError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.fetch_error("use remote", e))?;
        let specs = [
            format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
            "+refs/tags/*:refs/tags/*".to_string(),
        ];
        let refused = std::cell::RefCell::new(None::<String>);
        let mut opts = FetchOptions::new();
        opts.download_tags(git2::AutotagOption::None);
        opts.remote_callbacks(self.callbacks(&refused));
        let fetched = remote.fetch(&specs, Some(&mut opts), None);
        drop(opts);
        if let Err(e) = fetched {
            // Our own reason (a host key, credentials refused) says more than libgit2's.
            return Err(match refused.into_inner() {
                Some(reason) => SourceError::Git {
                    what: format!("fetch {branch} from {}", self.shown),
                    message: reason,
                },
                None => self.fetch_error(&format!("fetch {branch} from"), e),
            });
        }
        let head = format!("refs/remotes/origin/{branch}");
        let reference = self
            .repo
            .find_reference(&head)
            .map_err(|_| SourceError::NoBranch {
                branch: branch.to_string(),
                url: self.shown.clone(),
            })?;
        let commit = reference
            .peel_to_commit()
            .map_err(|e| SourceError::git(format!("read {head}"), e))?;
        Ok(commit.id())
    }

    /// Credentials on demand, and the SSH host key checked against known_hosts. A reason
    /// to refuse is written to `refused` for the fetch's error.
    fn callbacks<'a>(
        &'a self,
        refused: &'a std::cell::RefCell<Option<String>>,
    ) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        let mut offered = false;
        cb.credentials(move |_url, user_in_url, allowed| {
            let refuse = |reason: String| {
                *refused.borrow_mut() = Some(reason.clone());
                Err(git2::Error::from_str(&reason))
            };
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user_in_url.unwrap_or("git"));
            }
            // libgit2 asks again after a refusal; once is enough, and no lockout follows.
            if offered {
                return refuse("the repository refused the credentials".into());
            }
            offered = true;
            match &self.credentials {
                RepoCredentials::SshKey { key, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                    Cred::ssh_key(user_in_url.unwrap_or("git"), None, key, None)
                }
                RepoCredentials::UserPassword { user, password }
                    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    Cred::userpass_plaintext(user, password.expose())
                }
                RepoCredentials::None => refuse(
                    "the repository asks for credentials: give --design-credentials-file (HTTPS) or --design-ssh-key (SSH)".into(),
                ),
                _ => refuse(format!(
                    "the repository asks for credentials of another kind ({allowed:?}) than those given"
                )),
            }
        });
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 has checked the chain against the system's CAs.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let RepoCredentials::SshKey { known_hosts, .. } = &self.credentials else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let name = known_hosts_name(&self.url).unwrap_or_default();
            let key = hostkey.hostkey().unwrap_or_default();
            let reason = match known_hosts.check(&name, key) {
                HostKeyCheck::Known => return Ok(CertificateCheckStatus::CertificateOk),
                HostKeyCheck::Mismatch { key_type } => format!(
                    "the SSH host key of {name} is not the one in {} ({key_type}): a changed key or someone in between; check it before replacing the line",
                    known_hosts.path().display()
                ),
                HostKeyCheck::Unknown => format!(
                    "{} has no host key for {name}: add it with `ssh-keyscan` and check its fingerprint",
                    known_hosts.path().display()
                ),
            };
            *refused.borrow_mut() = Some(reason.clone());
            Err(git2::Error::from_str(&reason))
        });
        cb
    }

    /// A fetch's error, the URL redacted in git's own message too.
    fn fetch_error(&self, what: &str, e: git2::Error) -> SourceError {
        SourceError::Git {
            what: format!("{what} {}", self.shown),
            message: e.message().replace(&self.url, &self.shown),
        }
    }

    /// The commit a revision names: a full or abbreviated commit id, or a tag.
    pub fn resolve(&self, rev: &str) -> Result<Oid, SourceError> {
        let not_found = || SourceError::UnknownRevision(rev.to_string());
        if rev.is_empty() || rev.starts_with('-') || rev.contains("..") {
            return Err(not_found());
        }
        let tag = format!("refs/tags/{rev}");
        let obj = match self.repo.revparse_single(&tag) {
            Ok(o) => o,
            Err(_) => self.repo.revparse_single(rev).map_err(|_| not_found())?,
        };
        obj.peel_to_commit()
            .map(|c| c.id())
            .map_err(|_| not_found())
    }

    /// Every design file of `commit`.
    pub fn snapshot(&self, commit: Oid) -> Result<Snapshot, SourceError> {
        let ctx = |what: &str| format!("{what} {commit} in {}", self.path.display());
        let c = self
            .repo
            .find_commit(commit)
            .map_err(|e| SourceError::git(ctx("read commit"), e))?;
        let tree = c
            .tree()
            .map_err(|e| SourceError::git(ctx("read tree of"), e))?;
        let mut found = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or("");
            let path = format!("{dir}{name}");
            let wanted = lariat_workflows::design::is_design_file(&path);
            if wanted && entry.kind() == Some(git2::ObjectType::Blob) {
                found.push((path, entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| SourceError::git(ctx("walk tree of"), e))?;
        let mut files = Vec::with_capacity(found.len());
        for (path, id) in found {
            let blob = self
                .repo
                .find_blob(id)
                .map_err(|e| SourceError::git(format!("read {path}"), e))?;
            // A script that cannot be carried (a binary helper, an outsized file in some
            // scripts/ folder) is left out with a warning rather than failing the design;
            // a step that runs it says it is missing.
            let script = lariat_workflows::design::is_script(&path);
            if blob.size() > MAX_FILE_BYTES {
                if script {
                    tracing::warn!(%path, bytes = blob.size(), "script left out of the design: over {MAX_FILE_BYTES} bytes");
                    continue;
                }
                return Err(SourceError::FileTooLarge {
                    path,
                    bytes: blob.size(),
                });
            }
            let text = match String::from_utf8(blob.content().to_vec()) {
                Ok(t) => t,
                Err(_) if script => {
                    tracing::warn!(%path, "script left out of the design: not UTF-8 text");
                    continue;
                }
                Err(_) => return Err(SourceError::NotUtf8(path.clone())),
            };
            files.push((path, text));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Snapshot {
            commit: commit.to_string(),
            summary: c.summary().unwrap_or("").to_string(),
            files,
        })
    }
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        assert_eq!(
            redact_url("https://bot:ghp_secret@git.example.com/ops/design.git"),
            "https://***@git.example.com/ops/design.git"
        );
        assert_eq!(
            redact_url("https://git.example.com/a@b/design.git"),
            "https://git.example.com/a@b/design.git"
        );
        assert_eq!(redact_url("/srv/design"), "/srv/design");
        assert_eq!(redact_url("ssh://git@host/x"), "ssh://***@host/x");
    }
}
