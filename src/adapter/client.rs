//! The blocking std client: `get` and `put` over UDP, to and from any storage, files, readers
//! and writers.
//!
//! Downloads to a file go to a temporary file beside the target and are renamed into place only
//! on success: a failed `get` never leaves an empty or partial file and never damages an existing
//! one.
//!
//! ```no_run
//! use tftp_proto::adapter::client::Client;
//! use tftp_proto::Options;
//!
//! let client = Client::new("127.0.0.1:69".parse().unwrap())
//!     .options(Options { blksize: Some(1468), windowsize: Some(16), ..Options::NONE });
//! let summary = client.get_file(b"boot.img", "boot.img".as_ref(), |_| {}).unwrap();
//! println!("{} bytes", summary.bytes);
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::prelude::rust_2021::*;

use super::std_storage::{BufferedFile, ReadAheadFile, ReadStorage, WriteStorage};
use super::{drive, size_buffers, DriveError, StdClock, UdpTransport};
use crate::engine::{ClientRequest, Config, Event, Transfer, TransferError, TransferMode};
use crate::options::Options;
use crate::storage::Storage;
use crate::wire::{EncodeError, RequestKind};

/// A TFTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) server: SocketAddr,
    pub(crate) options: Options,
    pub(crate) mode: TransferMode,
    pub(crate) config: Config,
}

/// What a completed transfer did (the engine's [`Summary`], shared by every client adapter).
pub use crate::engine::Summary;

/// Why a client transfer failed.
#[derive(Debug)]
pub enum ClientError {
    /// The request cannot be sent (filename with NUL, request over 512 octets).
    Request(EncodeError),
    /// A local file problem.
    Local {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The network failed.
    Io(std::io::Error),
    /// The transfer failed (the server's ERROR, a timeout, ...).
    Transfer(TransferError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Request(e) => write!(f, "invalid request: {e}"),
            ClientError::Local { path, error } => write!(f, "{}: {error}", path.display()),
            ClientError::Io(e) => write!(f, "network error: {e}"),
            ClientError::Transfer(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<DriveError> for ClientError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::Io(e) => ClientError::Io(e),
            DriveError::Transfer(e) => ClientError::Transfer(e),
        }
    }
}

impl Client {
    /// A client for `server` (address and port), octet mode, no options, default timing.
    pub fn new(server: SocketAddr) -> Self {
        Client {
            server,
            options: Options::NONE,
            mode: TransferMode::Octet,
            config: Config::default(),
        }
    }

    /// Options to request (`tsize`: any value asks for it).
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// The transfer mode.
    pub fn mode(mut self, mode: TransferMode) -> Self {
        self.mode = mode;
        self
    }

    /// Timing and limits.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    fn run<S: Storage>(
        &self,
        kind: RequestKind,
        remote: &[u8],
        storage: S,
        on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid literal")
        } else {
            "[::]:0".parse().expect("valid literal")
        };
        let socket = UdpSocket::bind(bind).map_err(ClientError::Io)?;
        let window = usize::from(self.options.windowsize.unwrap_or(1));
        let block = usize::from(self.options.blksize.unwrap_or(512)) + 32;
        size_buffers(&socket, (window * block * 2).max(256 * 1024));
        let clock = StdClock::new();
        let start = std::time::Instant::now();
        let request = ClientRequest {
            kind,
            filename: remote,
            mode: self.mode,
            options: self.options,
        };
        let mut transfer = Transfer::client(clock.now(), self.server, request, storage, self.config)
            .map_err(ClientError::Request)?;
        let mut transport = UdpTransport::new(socket);
        let result = drive(&mut transport, &mut transfer, &clock, on_event);
        conclude(transfer, start, result)
    }

    /// Downloads `remote` into `storage`.
    pub fn get<S: Storage>(
        &self,
        remote: &[u8],
        storage: S,
        on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        self.run(RequestKind::Read, remote, storage, on_event)
    }

    /// Uploads `storage` as `remote`.
    pub fn put<S: Storage>(
        &self,
        remote: &[u8],
        storage: S,
        on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        self.run(RequestKind::Write, remote, storage, on_event)
    }

    /// Downloads `remote` into the file `local`, atomically: a temporary file beside it is
    /// renamed into place on success and removed on failure. An existing `local` that is not a
    /// regular file (`/dev/null`, a FIFO) is written in place instead, never replaced.
    pub fn get_file(
        &self,
        remote: &[u8],
        local: &Path,
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let local_err = local_error(local);
        // A device or a pipe (`/dev/null`, a FIFO) is written in place: replacing it with the
        // downloaded file would destroy it.
        if fs::metadata(local).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let out = fs::OpenOptions::new()
                .write(true)
                .open(local)
                .map_err(local_err)?;
            let (mut out, summary) = self.get_to_writer(remote, std::io::BufWriter::new(out), on_event)?;
            out.flush().map_err(local_err)?;
            return Ok(summary);
        }
        let (tmp_path, file) = create_temp_beside(local).map_err(local_err)?;
        let guard = TempGuard(Some(tmp_path.clone()));
        let (file, summary) = self.get(remote, BufferedFile::new(file, 256 * 1024), on_event)?;
        drop(file);
        fs::rename(&tmp_path, local).map_err(local_err)?;
        guard.disarm();
        Ok(summary)
    }

    /// Uploads the file `local` as `remote`.
    pub fn put_file(
        &self,
        local: &Path,
        remote: &[u8],
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let file = open_upload(local)?;
        // Read ahead: small blocks a buffer at a time, and the next block while the server
        // acknowledges this one.
        self.put(remote, ReadAheadFile::new(file, 256 * 1024), on_event)
            .map(|(_, s)| s)
    }

    /// Downloads `remote` into a writer (e.g. stdout).
    pub fn get_to_writer<W: Write>(
        &self,
        remote: &[u8],
        writer: W,
        on_event: impl FnMut(&Event),
    ) -> Result<(W, Summary), ClientError> {
        self.get(remote, WriteStorage::new(writer), on_event)
            .map(|(s, sum)| (s.into_inner(), sum))
    }

    /// Uploads from a reader (e.g. stdin); only the bytes that may be resent are kept in memory.
    pub fn put_from_reader<R: Read>(
        &self,
        reader: R,
        remote: &[u8],
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let window = usize::from(self.options.windowsize.unwrap_or(1)) + 1;
        let keep = window * usize::from(self.options.blksize.unwrap_or(512).max(512));
        let mut options = self.options;
        options.tsize = None; // size unknown up front
        let client = Client {
            options,
            ..self.clone()
        };
        client
            .put(remote, ReadStorage::new(reader, keep), on_event)
            .map(|(_, s)| s)
    }
}

/// What a transfer that ended did, with its storage when it succeeded.
pub(crate) fn conclude<S: Storage>(
    transfer: Transfer<'_, S>,
    start: std::time::Instant,
    result: Result<u64, DriveError>,
) -> Result<(S, Summary), ClientError> {
    let summary = Summary {
        bytes: transfer.stats().bytes,
        params: transfer.params(),
        stats: transfer.stats(),
        elapsed: start.elapsed(),
    };
    result?;
    Ok((transfer.into_storage(), summary))
}

/// Maps an error about the local file `path` to the client's error.
pub(crate) fn local_error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + Copy + '_ {
    move |error| ClientError::Local {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens the file `local` for an upload: it must be a regular file.
pub(crate) fn open_upload(local: &Path) -> Result<File, ClientError> {
    let local_err = local_error(local);
    let file = File::open(local).map_err(local_err)?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(local_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(file)
}

/// Creates a new, empty temporary file in the directory of `target`.
pub(crate) fn create_temp_beside(target: &Path) -> std::io::Result<(PathBuf, File)> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A shortened name keeps the temporary name within NAME_MAX whatever the target's length.
    let name: String = target
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(64).collect())
        .unwrap_or_default();
    let pid = std::process::id();
    for attempt in 0u32..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{name}.tftp-{pid}-{nanos:x}-{attempt}.part"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

/// Removes a temporary file when dropped, unless disarmed.
pub(crate) struct TempGuard(pub(crate) Option<PathBuf>);

impl TempGuard {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}
