//! The server's file policy: one root directory, read-only unless told otherwise, and nothing
//! outside the root ever read or written, whatever the requested name.
//!
//! Names are resolved beneath the root by [`cap_std`], a capability-style filesystem library: it
//! refuses absolute paths, `..` that climbs out and symlinks that lead out, at every component, so
//! the safety does not rest on string checks. Names are first normalised the way TFTP clients
//! expect: a leading `/` means the root and `\` is a separator (Windows clients). `..` components
//! are refused outright.
//!
//! Uploads go to a temporary file beside the target and are moved into place only when the
//! transfer completes ([`Root::finish`]); a failed upload leaves nothing behind and never damages
//! an existing file. Without `allow_overwrite` the move cannot replace a file, even one created
//! meanwhile (it links the new name, which fails if it exists).

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::prelude::rust_2021::*;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};

use crate::storage::{Storage, StorageError};

/// The served directory and what clients may do in it.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
    allow_write: bool,
    allow_overwrite: bool,
}

/// A file being served: a download's source or an upload's temporary file.
#[derive(Debug)]
pub enum ServedFile {
    /// A file read by a client.
    Read(File),
    /// An upload in progress.
    Upload(Upload),
}

/// An upload in progress: data goes to `temp`, which becomes `target` on success.
#[derive(Debug)]
pub struct Upload {
    file: File,
    temp: PathBuf,
    target: PathBuf,
}

impl Upload {
    /// The final path, relative to the root.
    pub fn target(&self) -> &Path {
        &self.target
    }
    /// The temporary path, relative to the root.
    pub fn temp(&self) -> &Path {
        &self.temp
    }
}

impl Storage for ServedFile {
    fn size(&mut self) -> Option<u64> {
        match self {
            ServedFile::Read(f) => f.size(),
            ServedFile::Upload(_) => None,
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        match self {
            ServedFile::Read(f) => f.read_at(offset, buf),
            ServedFile::Upload(_) => Err(StorageError::AccessDenied),
        }
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        match self {
            ServedFile::Upload(u) => u.file.write_at(offset, data),
            ServedFile::Read(_) => Err(StorageError::AccessDenied),
        }
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        match self {
            ServedFile::Upload(u) => u.file.finish(),
            ServedFile::Read(_) => Ok(()),
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Normalises a requested name into a relative path beneath the root.
///
/// ```
/// use tftp_proto::adapter::fs::normalize;
/// assert_eq!(normalize(b"/pxelinux.0").unwrap(), std::path::PathBuf::from("pxelinux.0"));
/// assert_eq!(normalize(b"boot\\grub\\x.cfg").unwrap(), std::path::PathBuf::from("boot/grub/x.cfg"));
/// assert!(normalize(b"../etc/passwd").is_err());
/// assert!(normalize(b"a/../../x").is_err());
/// assert!(normalize(b"").is_err());
/// ```
pub fn normalize(name: &[u8]) -> Result<PathBuf, StorageError> {
    if name.contains(&0) {
        return Err(StorageError::AccessDenied);
    }
    let unified: Vec<u8> = name.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
    let trimmed = unified.strip_prefix(b"/").unwrap_or(&unified);
    let trimmed = {
        let mut t = trimmed;
        while let Some(rest) = t.strip_prefix(b"/") {
            t = rest;
        }
        t
    };
    #[cfg(unix)]
    let path = {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(trimmed))
    };
    #[cfg(not(unix))]
    let path = PathBuf::from(String::from_utf8(trimmed.to_vec()).map_err(|_| StorageError::NotFound)?);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(StorageError::AccessDenied)
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(StorageError::NotFound);
    }
    Ok(out)
}

impl Root {
    /// Opens `path` as the served root.
    pub fn open(path: &Path, allow_write: bool, allow_overwrite: bool) -> std::io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Root {
            dir,
            allow_write,
            allow_overwrite: allow_write && allow_overwrite,
        })
    }

    /// Opens `name` for a client to read. Only regular files are served.
    pub fn open_read(&self, name: &[u8]) -> Result<ServedFile, StorageError> {
        let path = normalize(name)?;
        let file = self.dir.open(&path).map_err(map_open)?.into_std();
        let meta = file.metadata().map_err(StorageError::from)?;
        if !meta.is_file() {
            return Err(if meta.is_dir() {
                StorageError::NotFound
            } else {
                StorageError::AccessDenied
            });
        }
        Ok(ServedFile::Read(file))
    }

    /// Starts an upload of `name`: checks the policy and creates the temporary file.
    pub fn create_upload(&self, name: &[u8]) -> Result<ServedFile, StorageError> {
        if !self.allow_write {
            return Err(StorageError::AccessDenied);
        }
        let target = normalize(name)?;
        match self.dir.symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(StorageError::AccessDenied),
            Ok(_) if !self.allow_overwrite => return Err(StorageError::AlreadyExists),
            Ok(m) if !m.is_file() => return Err(StorageError::AccessDenied),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(map_open(e)),
        }
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        for _ in 0..100 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = parent.join(format!(".{base}.tftp-upload-{}-{n}", std::process::id()));
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            match self.dir.open_with(&temp, &opts) {
                Ok(f) => {
                    return Ok(ServedFile::Upload(Upload {
                        file: f.into_std(),
                        temp,
                        target,
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(map_open(e)),
            }
        }
        Err(StorageError::Io)
    }

    /// Ends a served file: a completed upload is moved into place, anything else is discarded.
    /// Returns an error when a completed upload could not be committed (its temp file is removed).
    pub fn finish(&self, file: ServedFile, success: bool) -> Result<(), StorageError> {
        let ServedFile::Upload(upload) = file else {
            return Ok(());
        };
        drop(upload.file);
        if !success {
            let _ = self.dir.remove_file(&upload.temp);
            return Ok(());
        }
        let result = if self.allow_overwrite {
            self.dir
                .rename(&upload.temp, &self.dir, &upload.target)
                .map_err(map_open)
        } else {
            // Link, which never replaces an existing file, then drop the temporary name.
            self.dir
                .hard_link(&upload.temp, &self.dir, &upload.target)
                .map_err(map_open)
        };
        let _ = self.dir.remove_file(&upload.temp);
        result
    }
}

fn map_open(e: std::io::Error) -> StorageError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound,
        std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists,
        // cap-std reports escapes (symlinks out, `..`) as permission errors.
        std::io::ErrorKind::PermissionDenied => StorageError::AccessDenied,
        _ if e.raw_os_error() == Some(40) => StorageError::AccessDenied, // ELOOP
        _ => StorageError::from(e),
    }
}
