//! Maps a requested file name onto a file under one of the served directories.
//!
//! Contract of [`Dirs::open`]: the returned file is a regular file found under one of the
//! directories. A name that is absolute or has a `..` component is refused with
//! [`LookupError::Refused`]. In a [`Confined`](Symlinks::Confined) directory (the site's
//! TFTP root) the file's real path, all symlinks resolved, must also lie inside it; in a
//! [`Trusted`](Symlinks::Trusted) one (the iPXE directory, which a package manages:
//! Debian's `ipxe.efi` is a symlink to `/boot/ipxe.efi`) the directory's own symlinks are
//! followed wherever they lead. Directories are tried in order; the first that has the
//! name wins, and a refusal stops the lookup.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::packet::{ErrorCode, Lossy};

/// Why a name could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No served directory has a regular file of that name.
    #[error("file not found: {0}")]
    NotFound(String),
    /// The name tries to leave the served directories, or is not a regular file.
    #[error("access violation: {name}: {why}")]
    Refused {
        /// The name as requested.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file exists but the server may not read it.
    #[error("access violation: {0}: permission denied")]
    PermissionDenied(String),
    /// Any other I/O failure.
    #[error("cannot read {name}: {source}")]
    Io {
        /// The name as requested.
        name: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl LookupError {
    /// The TFTP error code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::FileNotFound,
            Self::Refused { .. } | Self::PermissionDenied(_) => ErrorCode::AccessViolation,
            Self::Io { .. } => ErrorCode::NotDefined,
        }
    }

    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Refused { .. } => "refused_path",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Io { .. } => "io_error",
        }
    }
}

/// Whether symlinks in a served directory may lead out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Only symlinks that stay inside the directory are followed.
    Confined,
    /// Symlinks are followed wherever they lead (for directories a package manages;
    /// names still cannot use `..` or be absolute).
    Trusted,
}

/// The served directories, in lookup order, each already canonical.
#[derive(Debug, Clone)]
pub struct Dirs {
    dirs: Vec<(PathBuf, Symlinks)>,
}

/// An opened file ready to be sent.
#[derive(Debug)]
pub struct Opened {
    /// The open file.
    pub file: std::fs::File,
    /// Its size in bytes.
    pub size: u64,
    /// Its real path, for logs.
    pub path: PathBuf,
}

impl Dirs {
    /// Canonicalizes each directory; fails naming the first one that is not a directory.
    pub fn new(
        dirs: impl IntoIterator<Item = (PathBuf, Symlinks)>,
    ) -> Result<Self, (PathBuf, io::Error)> {
        let mut out = Vec::new();
        for (dir, symlinks) in dirs {
            let real = std::fs::canonicalize(&dir).map_err(|e| (dir.clone(), e))?;
            if !real.is_dir() {
                return Err((dir, io::Error::other("not a directory")));
            }
            out.push((real, symlinks));
        }
        Ok(Self { dirs: out })
    }

    /// The canonical directories in lookup order.
    pub fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dirs.iter().map(|(d, _)| d)
    }

    /// Opens `name` from the first directory that has it. Blocking: call it off the
    /// async runtime (the transfer's own thread does).
    pub fn open(&self, name: &[u8]) -> Result<Opened, LookupError> {
        let shown = Lossy(name).to_string();
        let relative = relative_path(name).map_err(|why| LookupError::Refused {
            name: shown.clone(),
            why,
        })?;
        for (dir, symlinks) in &self.dirs {
            let candidate = dir.join(&relative);
            let real = match std::fs::canonicalize(&candidate) {
                Ok(real) => real,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A path through a non-directory (ENOTDIR) is as absent as a missing one.
                Err(e) if e.raw_os_error() == Some(20) => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(LookupError::PermissionDenied(shown));
                }
                Err(source) => {
                    return Err(LookupError::Io {
                        name: shown,
                        source,
                    });
                }
            };
            if *symlinks == Symlinks::Confined && !real.starts_with(dir) {
                return Err(LookupError::Refused {
                    name: shown,
                    why: "resolves outside the served directory",
                });
            }
            let file = match std::fs::File::open(&real) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(LookupError::PermissionDenied(shown));
                }
                Err(source) => {
                    return Err(LookupError::Io {
                        name: shown,
                        source,
                    });
                }
            };
            // Checked on the open file, so a swap after canonicalize cannot slip a
            // directory or device in.
            let meta = file.metadata().map_err(|source| LookupError::Io {
                name: shown.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(LookupError::Refused {
                    name: shown,
                    why: "not a regular file",
                });
            }
            return Ok(Opened {
                file,
                size: meta.len(),
                path: real,
            });
        }
        Err(LookupError::NotFound(shown))
    }
}

/// Turns a requested name into a relative path with only normal components. Both `/` and
/// `\` separate components (some firmware sends DOS-style names), so `..\x` is caught too.
fn relative_path(name: &[u8]) -> Result<PathBuf, &'static str> {
    if name.first().is_some_and(|&b| b == b'/' || b == b'\\') {
        return Err("absolute paths are refused");
    }
    let mut out = PathBuf::new();
    for part in name.split(|&b| b == b'/' || b == b'\\') {
        let part = Path::new(std::ffi::OsStr::from_bytes(part));
        match part.components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::Normal(c)) => out.push(c),
            Some(Component::ParentDir) => return Err("'..' components are refused"),
            Some(Component::RootDir | Component::Prefix(_)) => {
                return Err("absolute paths are refused");
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_refuses_escapes() {
        assert_eq!(relative_path(b"a/./b"), Ok(PathBuf::from("a/b")));
        assert_eq!(
            relative_path(b"pxe\\ipxe.efi"),
            Ok(PathBuf::from("pxe/ipxe.efi"))
        );
        for bad in [
            &b"/etc/passwd"[..],
            b"\\x",
            b"../x",
            b"a/../../x",
            b"a\\..\\x",
            b".",
            b"./",
        ] {
            assert!(relative_path(bad).is_err(), "{}", Lossy(bad));
        }
    }

    #[test]
    fn lookup_order_and_symlinks() {
        let site = tempfile::tempdir().expect("tempdir");
        let ipxe = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(site.path().join("both"), b"site").expect("write");
        std::fs::write(ipxe.path().join("both"), b"ipxe").expect("write");
        std::fs::write(ipxe.path().join("undionly.kpxe"), b"rom").expect("write");
        std::fs::write(outside.path().join("secret"), b"no").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), site.path().join("escape"))
            .expect("symlink");
        std::os::unix::fs::symlink("both", site.path().join("inside")).expect("symlink");
        std::fs::create_dir(site.path().join("sub")).expect("mkdir");

        std::os::unix::fs::symlink(outside.path().join("secret"), ipxe.path().join("packaged"))
            .expect("symlink");
        let dirs = Dirs::new([
            (site.path().to_path_buf(), Symlinks::Confined),
            (ipxe.path().to_path_buf(), Symlinks::Trusted),
        ])
        .expect("dirs exist");
        let read = |o: Opened| std::fs::read(o.path).expect("read");
        assert_eq!(read(dirs.open(b"both").expect("found")), b"site");
        assert_eq!(read(dirs.open(b"undionly.kpxe").expect("found")), b"rom");
        assert_eq!(read(dirs.open(b"inside").expect("found")), b"site");
        assert!(matches!(
            dirs.open(b"escape"),
            Err(LookupError::Refused { .. })
        ));
        assert_eq!(
            read(dirs.open(b"packaged").expect("trusted symlink")),
            b"no"
        );
        assert!(matches!(
            dirs.open(b"../x"),
            Err(LookupError::Refused { .. })
        ));
        assert!(matches!(
            dirs.open(b"sub"),
            Err(LookupError::Refused { .. })
        ));
        assert!(matches!(
            dirs.open(b"nothing"),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(
            dirs.open(b"both/x"),
            Err(LookupError::NotFound(_))
        ));
        assert!(Dirs::new([(site.path().join("both"), Symlinks::Confined)]).is_err());
    }
}
