//! How Lariat signs in to the design repository: a user and password (or token) from a
//! file for HTTPS, or a private key for SSH with the server's host key checked against a
//! known_hosts file. Neither is ever part of the repository's URL, which answers and
//! logs show, and which `ps` shows every local user when it is a command-line argument.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};

/// What is wrong with a credential setting; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the credentials file holds one line `user:password` (or `user:token`)")]
    BadCredentialsFile { path: PathBuf },
    #[error("{path} line {line}: {problem}")]
    BadKnownHosts {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{path} has no host key: fill it with `ssh-keyscan -p PORT HOST > {path}`")]
    NoKnownHosts { path: PathBuf },
    #[error(
        "the design repository URL holds credentials ({shown}); put `user:password` (or `user:token`) in a file and give it with --design-credentials-file"
    )]
    SecretInUrl { shown: String },
    #[error(
        "{0} is an SSH URL: give the private key with --design-ssh-key and the server's host keys with --design-known-hosts"
    )]
    SshNeedsKey(String),
    #[error(
        "--design-ssh-key needs --design-known-hosts (the server's host keys, as `ssh-keyscan` prints them)"
    )]
    SshNeedsKnownHosts,
    #[error("{setting} is for {kind} repository URLs, and {url} is not one")]
    WrongKind {
        setting: &'static str,
        kind: &'static str,
        url: String,
    },
}

/// A secret that no `Debug` or log prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate to the design repository.
#[derive(Debug, Clone, Default)]
pub enum RepoCredentials {
    /// A public repository, a local path or `file://`.
    #[default]
    None,
    /// HTTPS basic authentication.
    UserPassword { user: String, password: Secret },
    /// SSH public-key authentication; the server must show one of `known_hosts`' keys.
    SshKey {
        key: PathBuf,
        known_hosts: KnownHosts,
    },
}

impl RepoCredentials {
    /// Reads a file holding `user:password` on its first line (a trailing newline is fine).
    pub fn from_file(path: &Path) -> Result<RepoCredentials, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            what: "the credentials file",
            path: path.to_path_buf(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        let bad = || CredentialError::BadCredentialsFile {
            path: path.to_path_buf(),
        };
        let (user, password) = line.split_once(':').ok_or_else(bad)?;
        if user.is_empty() || password.is_empty() {
            return Err(bad());
        }
        Ok(RepoCredentials::UserPassword {
            user: user.to_string(),
            password: Secret(password.to_string()),
        })
    }

    /// An SSH key, checked to be readable now rather than at the first fetch.
    pub fn ssh_key(key: &Path, known_hosts: &Path) -> Result<RepoCredentials, CredentialError> {
        std::fs::metadata(key).map_err(|source| CredentialError::Read {
            what: "the SSH key",
            path: key.to_path_buf(),
            source,
        })?;
        Ok(RepoCredentials::SshKey {
            key: key.to_path_buf(),
            known_hosts: KnownHosts::read(known_hosts)?,
        })
    }

    /// Whether these credentials can serve `url`, and `url` carries no secret itself.
    pub fn check(&self, url: &str) -> Result<(), CredentialError> {
        if has_secret(url) {
            return Err(CredentialError::SecretInUrl {
                shown: redact_url(url),
            });
        }
        match (self, is_ssh(url)) {
            (RepoCredentials::None, true) => Err(CredentialError::SshNeedsKey(url.to_string())),
            (RepoCredentials::SshKey { .. }, false) => Err(CredentialError::WrongKind {
                setting: "--design-ssh-key",
                kind: "SSH (ssh://… or user@host:path)",
                url: url.to_string(),
            }),
            (RepoCredentials::UserPassword { .. }, _)
                if !url.starts_with("https://") && !url.starts_with("http://") =>
            {
                Err(CredentialError::WrongKind {
                    setting: "--design-credentials-file",
                    kind: "HTTP(S)",
                    url: url.to_string(),
                })
            }
            _ => Ok(()),
        }
    }
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

/// Whether the URL carries a secret: a password (`user:secret@`), or any user
/// information at all in an HTTP(S) URL, where a token often stands as the user name
/// (`https://ghp_…@github.com/…`). An SSH URL's user name (`git@`) is no secret.
fn has_secret(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return false;
    };
    userinfo.contains(':') || matches!(scheme, "http" | "https")
}

/// The URL schemes git speaks SSH under.
const SSH_SCHEMES: [&str; 3] = ["ssh://", "git+ssh://", "ssh+git://"];

/// `ssh://…`, `git+ssh://…`, or scp-like `user@host:path`.
pub fn is_ssh(url: &str) -> bool {
    if SSH_SCHEMES.iter().any(|s| url.starts_with(s)) {
        return true;
    }
    // scp-like syntax: no scheme, a ':' before any '/', and a host before it.
    !url.contains("://")
        && url
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

/// The name a host key is filed under in known_hosts: `host`, or `[host]:port` when the
/// port is not 22.
pub fn known_hosts_name(url: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = SSH_SCHEMES.iter().find_map(|p| url.strip_prefix(p)) {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)
            }
            _ => (hostport.to_string(), 22u16),
        }
    } else {
        let (userhost, _) = url.split_once(':')?;
        let host = userhost.rsplit_once('@').map_or(userhost, |(_, h)| h);
        (host.to_string(), 22)
    };
    Some(if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    })
}

/// Host keys from an OpenSSH known_hosts file: plain and hashed (`|1|salt|hash`) host
/// patterns, `*` and `?` wildcards, `!` negations.
#[derive(Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<KnownHost>,
}

#[derive(Clone)]
struct KnownHost {
    patterns: Vec<Pattern>,
    key_type: String,
    key: Vec<u8>,
}

#[derive(Clone)]
enum Pattern {
    Plain { glob: String, negated: bool },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KnownHosts({}, {} keys)",
            self.path.display(),
            self.entries.len()
        )
    }
}

/// What the host key check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// The server showed a key filed for its name.
    Known,
    /// Keys are filed for the name, but none is the one shown: a changed key or a
    /// man in the middle.
    Mismatch { key_type: String },
    /// No key is filed for the name.
    Unknown,
}

impl KnownHosts {
    /// Reads and parses the file; any line it cannot read is an error naming the line.
    pub fn read(path: &Path) -> Result<KnownHosts, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            what: "the known_hosts file",
            path: path.to_path_buf(),
            source,
        })?;
        let kh = KnownHosts::parse(path, &text)?;
        if kh.entries.is_empty() {
            return Err(CredentialError::NoKnownHosts {
                path: path.to_path_buf(),
            });
        }
        Ok(kh)
    }

    fn parse(path: &Path, text: &str) -> Result<KnownHosts, CredentialError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |problem: String| CredentialError::BadKnownHosts {
                path: path.to_path_buf(),
                line: i + 1,
                problem,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('@') {
                return Err(bad(
                    "markers (@cert-authority, @revoked) are not supported; list the host keys themselves".into(),
                ));
            }
            let mut fields = line.split_whitespace();
            let (Some(hosts), Some(key_type), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected `hosts key-type base64-key`".into()));
            };
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|e| bad(format!("the key is not base64: {e}")))?;
            let patterns = hosts
                .split(',')
                .map(|p| parse_pattern(p).map_err(&bad))
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(KnownHost {
                patterns,
                key_type: key_type.to_string(),
                key,
            });
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Checks the raw host key `key` (the SSH wire blob) shown by the server `name`
    /// (as [`known_hosts_name`] spells it).
    pub fn check(&self, name: &str, key: &[u8]) -> HostKeyCheck {
        let mut filed = None;
        for e in self.entries.iter().filter(|e| matches(&e.patterns, name)) {
            if e.key == key {
                return HostKeyCheck::Known;
            }
            filed.get_or_insert_with(|| e.key_type.clone());
        }
        match filed {
            Some(key_type) => HostKeyCheck::Mismatch { key_type },
            None => HostKeyCheck::Unknown,
        }
    }

    /// The file the keys came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    if let Some(rest) = p.strip_prefix("|1|") {
        let (salt, hash) = rest
            .split_once('|')
            .ok_or_else(|| format!("hashed host {p:?} is not |1|salt|hash"))?;
        let d = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("hashed host {p:?}: {e}"))
        };
        return Ok(Pattern::Hashed {
            salt: d(salt)?,
            hash: d(hash)?,
        });
    }
    if p.is_empty() {
        return Err("an empty host pattern".into());
    }
    let (glob, negated) = match p.strip_prefix('!') {
        Some(g) => (g, true),
        None => (p, false),
    };
    Ok(Pattern::Plain {
        glob: glob.to_ascii_lowercase(),
        negated,
    })
}

/// A line matches when a pattern matches and no negated one does (OpenSSH's rule).
fn matches(patterns: &[Pattern], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut hit = false;
    for p in patterns {
        match p {
            Pattern::Plain { glob, negated } => {
                if glob_match(glob.as_bytes(), name.as_bytes()) {
                    if *negated {
                        return false;
                    }
                    hit = true;
                }
            }
            Pattern::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    continue;
                };
                mac.update(name.as_bytes());
                if mac.verify_slice(hash).is_ok() {
                    hit = true;
                }
            }
        }
    }
    hit
}

/// `*` matches any run, `?` any one character.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHz1bS2r6wAyc3t4mTr2n0f6hEo6jW5iX5h7o7F0o2bL";

    fn blob() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap()
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        let b = base64::engine::general_purpose::STANDARD;
        format!(
            "|1|{}|{}",
            b.encode(salt),
            b.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn known_hosts_match_plain_hashed_ported_and_wildcard_names() {
        let other = "AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let text = format!(
            "# a comment\n\ngit.example.net,10.0.0.5 ssh-ed25519 {KEY}\n\
             [git.example.net]:2222 ssh-ed25519 {other}\n\
             {} ssh-ed25519 {KEY}\n\
             *.lab.example.net,!bad.lab.example.net ssh-ed25519 {KEY} comment here\n",
            hashed("hidden.example.net", b"0123456789abcdef0123")
        );
        let kh = KnownHosts::parse(Path::new("kh"), &text).unwrap();
        let key = blob();
        assert_eq!(kh.check("git.example.net", &key), HostKeyCheck::Known);
        assert_eq!(kh.check("GIT.example.NET", &key), HostKeyCheck::Known);
        assert_eq!(kh.check("10.0.0.5", &key), HostKeyCheck::Known);
        assert_eq!(
            kh.check("[git.example.net]:2222", &key),
            HostKeyCheck::Mismatch {
                key_type: "ssh-ed25519".into()
            }
        );
        assert_eq!(kh.check("hidden.example.net", &key), HostKeyCheck::Known);
        assert_eq!(kh.check("a.lab.example.net", &key), HostKeyCheck::Known);
        assert_eq!(kh.check("bad.lab.example.net", &key), HostKeyCheck::Unknown);
        assert_eq!(
            kh.check("elsewhere.example.net", &key),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn a_known_hosts_line_that_does_not_read_is_named() {
        for (text, says) in [
            ("host ssh-ed25519\n", "expected `hosts key-type base64-key`"),
            ("host ssh-ed25519 not*base64\n", "not base64"),
            ("@cert-authority *.x ssh-ed25519 AAAA\n", "markers"),
            ("|1|nosalt ssh-ed25519 AAAA\n", "is not |1|salt|hash"),
        ] {
            let err = KnownHosts::parse(Path::new("kh"), &format!("# ok\n{text}"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("kh line 2") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn names_in_known_hosts_come_from_the_url() {
        for (url, name) in [
            ("ssh://git@git.example.net/design.git", "git.example.net"),
            ("ssh://git@git.example.net:22/design.git", "git.example.net"),
            (
                "ssh://git@127.0.0.1:2222/srv/design.git",
                "[127.0.0.1]:2222",
            ),
            ("git@github.com:acme/design.git", "github.com"),
        ] {
            assert!(is_ssh(url), "{url}");
            assert_eq!(known_hosts_name(url).as_deref(), Some(name), "{url}");
        }
        for url in [
            "https://git.example.net/d.git",
            "/srv/design",
            "file:///srv/d",
        ] {
            assert!(!is_ssh(url), "{url}");
        }
    }

    #[test]
    fn a_secret_in_the_url_is_refused_and_credentials_must_fit_the_url() {
        let none = RepoCredentials::None;
        let err = none
            .check("https://ci:glpat-123@git.example.net/d.git")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--design-credentials-file") && !err.contains("glpat"),
            "{err}"
        );
        assert!(none.check("https://git.example.net/d.git").is_ok());
        let err = none
            .check("https://ghp_token@github.com/acme/d.git")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("https://***@github.com") && !err.contains("ghp_"),
            "{err}"
        );
        assert!(none.check("/srv/design").is_ok());
        let err = none
            .check("git@github.com:acme/d.git")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--design-ssh-key"), "{err}");
        let pw = RepoCredentials::UserPassword {
            user: "ci".into(),
            password: Secret("s".into()),
        };
        assert!(pw.check("https://git.example.net/d.git").is_ok());
        assert!(pw.check("/srv/design").is_err());
        assert_eq!(format!("{pw:?}").matches("***").count(), 1, "{pw:?}");
    }

    #[test]
    fn a_credentials_file_holds_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "ci-bot:tok:en\n").unwrap();
        let RepoCredentials::UserPassword { user, password } =
            RepoCredentials::from_file(&f).unwrap()
        else {
            panic!("not user and password");
        };
        assert_eq!((user.as_str(), password.expose()), ("ci-bot", "tok:en"));
        for bad in ["just-a-token\n", ":pw\n", "user:\n", ""] {
            std::fs::write(&f, bad).unwrap();
            let err = RepoCredentials::from_file(&f).unwrap_err().to_string();
            assert!(err.contains("user:password"), "{bad:?}: {err}");
        }
    }
}
