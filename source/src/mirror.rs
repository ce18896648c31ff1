//! A bare local mirror of the design repository.
//!
//! Lariat never checks the design out: it fetches into a bare repository under its data
//! folder and reads the YAML blobs of a commit's tree straight from the object store, so
//! an operator's working copy is never touched and a half-written checkout can't be read.

use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, Repository, TreeWalkMode, TreeWalkResult};

use crate::SourceError;

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
}

/// A repository URL with any user information (`user:token@`) replaced by `***`, for
/// every message and answer that names it: a viewer must not read a credential there.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl Mirror {
    /// Opens the mirror at `path`, creating an empty bare repository there if none exists.
    pub fn open(path: &Path, url: &str) -> Result<Mirror, SourceError> {
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
        let mut opts = FetchOptions::new();
        opts.download_tags(git2::AutotagOption::None);
        remote
            .fetch(&specs, Some(&mut opts), None)
            .map_err(|e| self.fetch_error(&format!("fetch {branch} from"), e))?;
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
