//! The server's file policy: one root directory, read-only unless told otherwise, and nothing
//! outside the root ever read or written, whatever the requested name.
//!
//! Names are resolved beneath the root by [`cap_std`], a capability-style filesystem library: it
//! refuses absolute paths, `..` that climbs out and symlinks that lead out, at every component, so
//! the safety does not rest on string checks. Names are first normalised the way TFTP clients
//! expect: a leading `/` means the root and `\` is a separator (Windows clients). `..` components
//! are refused outright.
//!
//! Uploads go to a temporary file beside the target and are moved into place when the last block
//! has been written, before it is acknowledged ([`Storage::finish`]): a client whose file cannot
//! be committed hears an ERROR instead of the final ACK. A failed upload leaves nothing behind and
//! never damages an existing file ([`Root::finish`] removes its temporary file). Without
//! `allow_overwrite` the move cannot replace a file, even one created meanwhile (it links the new
//! name, which fails if it exists), so of two concurrent uploads of one new name the second to
//! finish gets ERROR 6.
//!
//! With `allow_overwrite`, an existing file is replaced only if its own permissions let the
//! serving user write it: the write bit of the class the user falls in (owner, group, other),
//! and for root any write bit, although the kernel would let root write anything. A file made
//! read-only (mode 0444, 0440, ...) stays as it is and the client gets ERROR 2, as from
//! tftpd-hpa, whatever the directory allows (the rename would otherwise replace it). The check is
//! made when the request arrives and again just before the move. The replacement keeps the old
//! file's permission bits (never wider) and, when the server runs as root, its owner and group.

use std::path::{Component, Path, PathBuf};
use std::prelude::rust_2021::*;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};

use super::std_storage::{BufferedFile, ReadAheadFile};
use crate::storage::{Storage, StorageError};

/// The served directory and what clients may do in it.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
    allow_write: bool,
    allow_overwrite: bool,
    ignore_case: bool,
    per_client: bool,
}

/// A file being served: a download's source or an upload's temporary file.
pub enum ServedFile {
    /// A file read by a client.
    Read(ReadAheadFile),
    /// An upload in progress.
    Upload(Upload),
    /// What a request hook chose to serve or receive into (memory, a generated stream...).
    Custom(Box<dyn Storage + Send>),
}

impl std::fmt::Debug for ServedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedFile::Read(r) => f.debug_tuple("Read").field(r).finish(),
            ServedFile::Upload(u) => f.debug_tuple("Upload").field(u).finish(),
            ServedFile::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// An upload in progress: data goes to `temp`, which becomes `target` on success.
#[derive(Debug)]
pub struct Upload {
    /// The temporary file's handle, closed when committed.
    file: Option<BufferedFile>,
    temp: PathBuf,
    target: PathBuf,
    /// The root, to commit in.
    dir: Dir,
    overwrite: bool,
    committed: bool,
}

/// Whether the serving user may replace the existing file `meta` describes (see the module
/// documentation): its write permission bit for the user's class, any write bit for root.
#[cfg(unix)]
fn may_replace(meta: &cap_std::fs::Metadata) -> bool {
    use cap_std::fs::MetadataExt;
    use nix::unistd::{getegid, geteuid, Gid};
    let mode = meta.mode();
    let uid = geteuid();
    if uid.is_root() {
        return mode & 0o222 != 0;
    }
    if uid.as_raw() == meta.uid() {
        return mode & 0o200 != 0;
    }
    let gid = Gid::from_raw(meta.gid());
    // macOS: nix has no `getgroups` there, so only the effective group counts (a file writable
    // through a supplementary group alone is not replaced: the safe side).
    #[cfg(not(target_vendor = "apple"))]
    let member = getegid() == gid || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid));
    #[cfg(target_vendor = "apple")]
    let member = getegid() == gid;
    if member {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

/// Whether the serving user may replace the existing file `meta` describes: not read-only.
#[cfg(not(unix))]
fn may_replace(meta: &cap_std::fs::Metadata) -> bool {
    !meta.permissions().readonly()
}

/// Gives the replacement `file` the permission bits of the file it replaces (`old`), and its
/// owner and group when the server runs as root (elsewhere the owner cannot be given away).
#[cfg(unix)]
fn inherit_attributes(file: &std::fs::File, old: &cap_std::fs::Metadata) -> std::io::Result<()> {
    use cap_std::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()))?;
    }
    // After the owner: a change of owner clears set-id bits, and these are never carried over.
    file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
}

#[cfg(not(unix))]
fn inherit_attributes(_file: &std::fs::File, _old: &cap_std::fs::Metadata) -> std::io::Result<()> {
    Ok(())
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

    /// Moves the temporary file into place (once).
    fn commit(&mut self) -> Result<(), StorageError> {
        if self.committed {
            return Ok(());
        }
        // Closed first: some platforms cannot rename an open file.
        self.file = None;
        // The target may have been made read-only since the request arrived.
        if self.overwrite {
            if let Ok(meta) = self.dir.symlink_metadata(&self.target) {
                if meta.is_file() && !may_replace(&meta) {
                    return Err(StorageError::AccessDenied);
                }
            }
        }
        let result = if self.overwrite {
            self.dir
                .rename(&self.temp, &self.dir, &self.target)
                .map_err(map_open)
        } else {
            // Link, which never replaces an existing file, then drop the temporary name.
            let linked = self
                .dir
                .hard_link(&self.temp, &self.dir, &self.target)
                .map_err(map_open);
            if linked.is_ok() {
                let _ = self.dir.remove_file(&self.temp);
            }
            linked
        };
        self.committed = result.is_ok();
        result
    }
}

impl Storage for ServedFile {
    fn size(&mut self) -> Option<u64> {
        match self {
            ServedFile::Read(f) => f.size(),
            ServedFile::Upload(_) => None,
            ServedFile::Custom(s) => s.size(),
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        match self {
            ServedFile::Read(f) => f.read_at(offset, buf),
            ServedFile::Upload(_) => Err(StorageError::AccessDenied),
            ServedFile::Custom(s) => s.read_at(offset, buf),
        }
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        match self {
            ServedFile::Upload(u) => match &mut u.file {
                Some(f) => f.write_at(offset, data),
                None => Err(StorageError::Io),
            },
            ServedFile::Read(_) => Err(StorageError::AccessDenied),
            ServedFile::Custom(s) => s.write_at(offset, data),
        }
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        match self {
            ServedFile::Upload(u) => {
                if let Some(f) = &mut u.file {
                    f.finish()?;
                }
                u.commit()
            }
            ServedFile::Read(_) => Ok(()),
            ServedFile::Custom(s) => s.finish(),
        }
    }
    fn idle(&mut self) {
        match self {
            ServedFile::Read(f) => f.idle(),
            ServedFile::Upload(u) => {
                if let Some(f) = &mut u.file {
                    f.idle();
                }
            }
            ServedFile::Custom(s) => s.idle(),
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Normalises a requested name into a relative path beneath the root.
///
/// ```
/// use tftp_proto::adapter::root::normalize;
/// assert_eq!(normalize(b"/pxelinux.0").unwrap(), std::path::PathBuf::from("pxelinux.0"));
/// assert_eq!(normalize(b"boot\\grub\\x.cfg").unwrap(), std::path::PathBuf::from("boot/grub/x.cfg"));
/// assert!(normalize(b"../etc/passwd").is_err());
/// assert!(normalize(b"a/../../x").is_err());
/// assert!(normalize(b"").is_err());
/// // A junk 0xFF byte at the end (old PXE ROMs) is dropped.
/// assert_eq!(normalize(b"pxelinux.0\xff").unwrap(), std::path::PathBuf::from("pxelinux.0"));
/// ```
pub fn normalize(name: &[u8]) -> Result<PathBuf, StorageError> {
    if name.contains(&0) {
        return Err(StorageError::AccessDenied);
    }
    // Some old PXE ROMs end the name with a junk 0xFF byte: never part of a real name.
    let name = name.strip_suffix(&[0xff]).unwrap_or(name);
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
            ignore_case: false,
            per_client: false,
        })
    }

    /// With `on`, a download from client address `A` is looked for first beneath `ROOT/A/`
    /// (the address as text: `10.0.0.7`, `fd00::7`; an IPv4-mapped IPv6 address as IPv4), then
    /// beneath the root: per-machine files next to shared ones, like dnsmasq's
    /// `--tftp-unique-root=ip`. Uploads go beneath the root.
    pub fn with_per_client_root(mut self, on: bool) -> Root {
        self.per_client = on;
        self
    }

    /// With `on`, a download whose name is not found is looked up again ignoring ASCII case,
    /// one path component at a time: where a component has no exact match in its directory,
    /// the entry equal to it but for case is taken, the first in byte order when several are
    /// (`BOOT.EFI` before `Boot.efi` before `boot.EFI`). Firmware that changes a name's case
    /// (WinPE's `\Boot\BCD`, ROMs that upper-case) then finds files stored otherwise. Each such
    /// miss reads the directories on the way; uploads keep the name as sent.
    pub fn with_ignore_case(mut self, on: bool) -> Root {
        self.ignore_case = on;
        self
    }

    /// `path` with each component that has no exact match replaced by its case-insensitive
    /// match (see [`with_ignore_case`](Self::with_ignore_case)); `None` when one has none.
    fn find_ignoring_case(&self, path: &Path) -> Option<PathBuf> {
        let mut found = PathBuf::new();
        for part in path.components() {
            let want = part.as_os_str();
            let exact = found.join(want);
            if self.dir.symlink_metadata(&exact).is_ok() {
                found = exact;
                continue;
            }
            let entries = if found.as_os_str().is_empty() {
                self.dir.entries()
            } else {
                self.dir.read_dir(&found)
            }
            .ok()?;
            let best = entries
                .flatten()
                .map(|e| e.file_name())
                .filter(|name| {
                    name.as_encoded_bytes()
                        .eq_ignore_ascii_case(want.as_encoded_bytes())
                })
                .min_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()))?;
            found.push(best);
        }
        Some(found)
    }

    /// Opens `name` for a client to read, with a 32 KiB read-ahead. Only regular files are
    /// served.
    pub fn open_read(&self, name: &[u8]) -> Result<ServedFile, StorageError> {
        self.open_read_with(name, 32 * 1024)
    }

    /// Opens `name` for a client to read, reading ahead `read_ahead` bytes at a time (see
    /// [`ReadAheadFile`]). Only regular files are served.
    pub fn open_read_with(&self, name: &[u8], read_ahead: usize) -> Result<ServedFile, StorageError> {
        self.open_read_for(None, name, read_ahead)
    }

    /// [`open_read_with`](Self::open_read_with) for a download by `client` (used by
    /// [`with_per_client_root`](Self::with_per_client_root)).
    pub fn open_read_for(
        &self,
        client: Option<std::net::IpAddr>,
        name: &[u8],
        read_ahead: usize,
    ) -> Result<ServedFile, StorageError> {
        let path = normalize(name)?;
        if let Some(ip) = client.filter(|_| self.per_client) {
            let own = PathBuf::from(ip.to_canonical().to_string()).join(&path);
            match self.open_read_path(&own, read_ahead) {
                Err(StorageError::NotFound) => {}
                r => return r,
            }
        }
        self.open_read_path(&path, read_ahead)
    }

    fn open_read_path(&self, path: &Path, read_ahead: usize) -> Result<ServedFile, StorageError> {
        let mut opts = OpenOptions::new();
        opts.read(true);
        // A FIFO would block `open` (and the whole server) until a writer appears; with
        // O_NONBLOCK it opens at once and is refused below. Regular files ignore the flag.
        #[cfg(unix)]
        {
            use cap_std::fs::OpenOptionsExt;
            opts.custom_flags(nix::libc::O_NONBLOCK);
        }
        let file = match self.dir.open_with(path, &opts).map_err(map_open) {
            Err(StorageError::NotFound) if self.ignore_case => {
                let other = self.find_ignoring_case(path).ok_or(StorageError::NotFound)?;
                self.dir.open_with(&other, &opts).map_err(map_open)?
            }
            r => r?,
        }
        .into_std();
        let meta = file.metadata().map_err(StorageError::from)?;
        if !meta.is_file() {
            return Err(if meta.is_dir() {
                StorageError::NotFound
            } else {
                StorageError::AccessDenied
            });
        }
        Ok(ServedFile::Read(ReadAheadFile::new(file, read_ahead)))
    }

    /// Starts an upload of `name`: checks the policy and creates the temporary file.
    pub fn create_upload(&self, name: &[u8]) -> Result<ServedFile, StorageError> {
        if !self.allow_write {
            return Err(StorageError::AccessDenied);
        }
        let target = normalize(name)?;
        let existing = match self.dir.symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(StorageError::AccessDenied),
            Ok(_) if !self.allow_overwrite => return Err(StorageError::AlreadyExists),
            Ok(m) if !m.is_file() || !may_replace(&m) => return Err(StorageError::AccessDenied),
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(map_open(e)),
        };
        // A shortened base keeps the temporary name within NAME_MAX whatever the target's length.
        let base: String = target
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(64).collect())
            .unwrap_or_default();
        let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = self.dir.try_clone().map_err(StorageError::from)?;
        for _ in 0..100 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = parent.join(format!(".{base}.tftp-upload-{}-{n}", std::process::id()));
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            match self.dir.open_with(&temp, &opts) {
                Ok(f) => {
                    let f = f.into_std();
                    if let Some(old) = &existing {
                        if let Err(e) = inherit_attributes(&f, old) {
                            let _ = self.dir.remove_file(&temp);
                            return Err(StorageError::from(e));
                        }
                    }
                    return Ok(ServedFile::Upload(Upload {
                        file: Some(BufferedFile::new(f, 64 * 1024)),
                        temp,
                        target,
                        dir,
                        overwrite: self.allow_overwrite,
                        committed: false,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(map_open(e)),
            }
        }
        Err(StorageError::Io)
    }

    /// Ends a served file. An upload not committed yet is moved into place on `success` (the
    /// engine commits through [`Storage::finish`] already) and removed otherwise.
    /// Returns an error when a completed upload could not be committed (its temp file is removed).
    pub fn finish(&self, file: ServedFile, success: bool) -> Result<(), StorageError> {
        let ServedFile::Upload(mut upload) = file else {
            return Ok(());
        };
        if upload.committed {
            return Ok(());
        }
        upload.file = None;
        let result = if success { upload.commit() } else { Ok(()) };
        if !upload.committed {
            let _ = self.dir.remove_file(&upload.temp);
        }
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
        // ENAMETOOLONG, ENOTDIR (`file/x`): no file by that name can exist.
        _ if matches!(e.raw_os_error(), Some(36 | 20)) => StorageError::NotFound,
        // ENXIO, ENODEV: a socket or a device, not a file to serve.
        _ if matches!(e.raw_os_error(), Some(6 | 19)) => StorageError::AccessDenied,
        _ => StorageError::from(e),
    }
}
