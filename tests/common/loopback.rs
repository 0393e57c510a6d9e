//! Shared fixtures for the loopback tests (`std_server`, `hardening_server`, `hardening_fs`, `soak`):
//! a std [`Server`] driven turn by turn in a background thread ([`Harness`], which watches the
//! session count after every turn and hands the server back when stopped), temporary
//! directories, raw-socket packet helpers, and the checks every hostile case ends with (the
//! server still serves a normal client, nothing was left behind).
//!
//! Included with `#[path = "common/loopback.rs"] mod loopback;` so the engine tests, which use
//! `common/mod.rs`, do not compile it. Every wait is bounded by [`WAIT`], which only a broken
//! test meets; nothing depends on wall-clock speed.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tftp_proto::adapter::client::{Client, ClientError};
use tftp_proto::adapter::mio_server::{format_report, Server, ServerConfig};
use tftp_proto::engine::{Config, TransferError, TransferParams};
use tftp_proto::server::{TransferReport, TransferResult};
use tftp_proto::{encode_request, Mode, OptionList, Options, Packet, RequestKind};

/// Upper bound of any single wait (a datagram, a report, a thread): only a broken test meets it.
pub const WAIT: Duration = Duration::from_secs(60);

// ---- directories ----------------------------------------------------------------------------

#[path = "tempdir.rs"]
mod tempdir;
pub use tempdir::TempDir;

/// The names in a directory.
pub fn list(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

pub fn names(list: &[&str]) -> BTreeSet<OsString> {
    list.iter().map(OsString::from).collect()
}

/// Upload temporary files (`.NAME.tftp-upload-PID-N`) anywhere under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            if name.starts_with('.') && name.contains(".tftp-upload-") {
                out.push(p);
            }
        }
    }
    out
}

/// What a tree holds: every path with its kind and content (symlinks by target), skipping `skip`.
pub fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let p = e.expect("dir entry").path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).expect("metadata");
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).expect("readlink").display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.is_file() {
                format!(
                    "file {:?} mtime {:?}",
                    digest(&fs::read(&p).expect("read")),
                    m.modified().ok()
                )
            } else {
                format!("special {:?}", m.file_type())
            };
            out.insert(p, what);
        }
    }
    out
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Open sockets of this process.
pub fn socket_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

// ---- data -------------------------------------------------------------------------------------

/// Deterministic bytes in which every block differs (so misordered blocks are caught).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Length and hash of a file's bytes.
pub fn file_digest(path: &Path) -> (usize, u64) {
    digest(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Length and hash of some bytes.
pub fn digest(data: &[u8]) -> (usize, u64) {
    let mut h = DefaultHasher::new();
    h.write(data);
    (data.len(), h.finish())
}

// ---- the server ---------------------------------------------------------------------------------

/// An owned copy of a server report.
#[derive(Debug, Clone)]
pub struct Report {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub kind: RequestKind,
    pub filename: Vec<u8>,
    pub params: TransferParams,
    pub result: TransferResult,
    pub bytes: u64,
    /// The server's log line for it ([`format_report`]).
    pub line: String,
}

impl From<&TransferReport<()>> for Report {
    fn from(r: &TransferReport<()>) -> Self {
        Report {
            peer: r.peer,
            local: r.local,
            kind: r.kind,
            filename: r.filename.to_vec(),
            params: r.params,
            result: r.result.clone(),
            bytes: r.stats.bytes,
            line: format_report(r),
        }
    }
}

/// Engine timing that gives up on a silent peer after 0.05 + 0.1 + 0.2 s (and an idle peer
/// after 5 s): sessions left behind by hostile input expire quickly.
pub fn quick_config() -> Config {
    Config {
        initial_rto: Duration::from_millis(50),
        min_rto: Duration::from_millis(20),
        max_rto: Duration::from_millis(200),
        max_retries: 2,
        // The retries alone decide: no total timeout to wait out.
        total_timeout: Duration::ZERO,
        idle_timeout: Duration::from_secs(5),
        max_dally: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A server config on `binds` serving `root` with the default timeouts.
pub fn server_config(root: &Path, binds: &[&str]) -> ServerConfig {
    ServerConfig {
        root: root.to_path_buf(),
        binds: binds.iter().map(|b| b.parse().expect("bind address")).collect(),
        ..ServerConfig::default()
    }
}

/// A server config on `bind` serving `root` with quick timeouts.
pub fn config(root: &Path, bind: &str) -> ServerConfig {
    ServerConfig {
        root: root.to_path_buf(),
        binds: vec![bind.parse().expect("bind address")],
        engine: quick_config(),
        ..ServerConfig::default()
    }
}

struct Shared {
    sessions: AtomicUsize,
    max_sessions: AtomicUsize,
    turns: AtomicUsize,
}

/// A [`Server`] driven by [`Server::turn`] in a background thread. After every turn the thread
/// records the session count (and its maximum); [`Harness::stop`] hands the server back without
/// aborting its sessions, so a test can check what it still holds.
pub struct Harness {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    reports: mpsc::Receiver<Report>,
    unclaimed: Mutex<Vec<Report>>,
    thread: Option<JoinHandle<io::Result<Server>>>,
}

impl Harness {
    pub fn start(config: &ServerConfig) -> Harness {
        Harness::run(Server::bind(config).expect("bind the server"), || {})
    }

    /// Runs `server`, calling `prepare` first on the server's thread (e.g. to drop capabilities).
    pub fn run(mut server: Server, prepare: impl FnOnce() + Send + 'static) -> Harness {
        let addrs = server.local_addrs();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            sessions: AtomicUsize::new(0),
            max_sessions: AtomicUsize::new(0),
            turns: AtomicUsize::new(0),
        });
        let (tx, reports) = mpsc::channel();
        let (flag, sh) = (Arc::clone(&stop), Arc::clone(&shared));
        let thread = std::thread::spawn(move || {
            prepare();
            let mut events = mio::Events::with_capacity(256);
            let mut on_report = |r: &TransferReport<()>| {
                let _ = tx.send(Report::from(r));
            };
            while !flag.load(Ordering::SeqCst) {
                server.turn(&mut events, Duration::from_millis(20), &mut on_report)?;
                let n = server.sessions();
                sh.sessions.store(n, Ordering::SeqCst);
                sh.max_sessions.fetch_max(n, Ordering::SeqCst);
                sh.turns.fetch_add(1, Ordering::SeqCst);
            }
            Ok(server)
        });
        Harness {
            addrs,
            stop,
            shared,
            reports,
            unclaimed: Mutex::new(Vec::new()),
            thread: Some(thread),
        }
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listening address.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Sessions after the last turn.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// The most sessions seen after any turn.
    pub fn max_sessions(&self) -> usize {
        self.shared.max_sessions.load(Ordering::SeqCst)
    }

    /// Whether the server thread is still serving (it ends early only on an I/O error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits (bounded by `limit`) until the server holds no session; false if it still does.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            // Two turns after the last check: the count is fresh.
            let t = self.shared.turns.load(Ordering::SeqCst);
            while self.shared.turns.load(Ordering::SeqCst) < t + 2 && self.is_running() {
                if Instant::now() > end {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.sessions() == 0 {
                return true;
            }
            if Instant::now() > end || !self.is_running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first report `pred` accepts.
    pub fn report(&self, what: &str, pred: impl Fn(&Report) -> bool) -> Report {
        let mut unclaimed = self.unclaimed.lock().unwrap();
        if let Some(i) = unclaimed.iter().position(&pred) {
            return unclaimed.remove(i);
        }
        loop {
            match self.reports.recv_timeout(WAIT) {
                Ok(r) if pred(&r) => return r,
                Ok(r) => unclaimed.push(r),
                Err(e) => panic!("no report for {what} ({e}); other reports: {unclaimed:?}"),
            }
        }
    }

    /// Waits for the report of a transfer of `name`.
    pub fn report_for(&self, kind: RequestKind, name: &[u8]) -> Report {
        self.report(&String::from_utf8_lossy(name), |r| {
            r.kind == kind && r.filename == name
        })
    }

    /// Every report received so far, not claimed yet (does not wait).
    pub fn drain_reports(&self) -> Vec<Report> {
        let mut all = std::mem::take(&mut *self.unclaimed.lock().unwrap());
        all.extend(self.reports.try_iter());
        all
    }

    /// Shuts the server down as `Server::run` does when stopped (its sessions aborted, their
    /// peers told), joins it and returns every report not claimed yet, those included.
    pub fn shutdown(&mut self) -> Vec<Report> {
        let mut server = self.stop();
        let mut reports = self.drain_reports();
        // Already stopped: `run` goes straight to its shutdown.
        let stopped = AtomicBool::new(true);
        server
            .run(&stopped, |r| reports.push(Report::from(r)))
            .expect("server shutdown");
        reports
    }

    /// Stops the server thread and hands the server back (its sessions not aborted).
    pub fn stop(&mut self) -> Server {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("running");
        t.join().expect("server thread panicked").expect("server failed")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if !std::thread::panicking() {
                result.expect("server thread panicked").expect("server failed");
            }
        }
    }
}

/// The file every "still serving" check downloads.
pub const PROBE_NAME: &str = "probe.bin";

/// The content of [`PROBE_NAME`]: three and a bit blocks.
pub fn probe_content() -> Vec<u8> {
    pattern(3 * 512 + 77, 0x7e57)
}

/// Writes [`PROBE_NAME`] into `root`.
pub fn put_probe(root: &Path) {
    fs::write(root.join(PROBE_NAME), probe_content()).expect("write the probe file");
}

/// A normal client download of [`PROBE_NAME`] must still succeed (after `what`), with and
/// without options.
pub fn assert_still_serves(server: SocketAddr, what: &str) {
    let want = probe_content();
    for options in [
        Options::NONE,
        Options {
            blksize: Some(1024),
            windowsize: Some(4),
            tsize: Some(0),
            ..Options::NONE
        },
    ] {
        match Client::new(server)
            .options(options)
            .get(PROBE_NAME.as_bytes(), Vec::new(), |_| {})
        {
            Ok((got, _)) => assert!(got == want, "after {what}: the probe came back different"),
            Err(e) => panic!("after {what}: the server no longer serves ({options:?}): {e}"),
        }
    }
}

/// The ERROR code the server sent, for a client failure that must be a peer ERROR.
pub fn peer_code(e: &ClientError) -> u16 {
    match e {
        ClientError::Transfer(TransferError::Peer(p)) => p.code.as_u16(),
        other => panic!("expected an ERROR from the server, got {other:?}"),
    }
}

// ---- raw packets --------------------------------------------------------------------------------

/// A parsed packet, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt {
    Data(u16, Vec<u8>),
    Ack(u16),
    Error(u16, String),
    Oack(Vec<(String, String)>),
    Other(Vec<u8>),
}

/// Parses a datagram from our server, checking that its length is exactly its encoding.
pub fn parse(d: &[u8]) -> Pkt {
    if let Ok(p) = Packet::parse(d) {
        // "Encode: the length sent is exactly the bytes written, never more."
        let exact = match p {
            Packet::Ack { .. } => 4,
            _ => p.encoded_len(),
        };
        assert_eq!(exact, d.len(), "a datagram longer than its packet: {d:?}");
    }
    match Packet::parse(d) {
        Ok(Packet::Data { block, payload }) => Pkt::Data(block, payload.to_vec()),
        Ok(Packet::Ack { block }) => Pkt::Ack(block),
        Ok(Packet::Error { code, message }) => {
            Pkt::Error(code.as_u16(), String::from_utf8_lossy(message).into_owned())
        }
        Ok(Packet::Oack { options }) => Pkt::Oack(
            options
                .iter()
                .map(|o| {
                    (
                        String::from_utf8_lossy(o.name).into_owned(),
                        String::from_utf8_lossy(o.value).into_owned(),
                    )
                })
                .collect(),
        ),
        _ => Pkt::Other(d.to_vec()),
    }
}

pub fn request(kind: RequestKind, name: &[u8], mode: Mode<'_>, options: &Options) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = encode_request(&mut buf, kind, name, mode, options, OptionList::EMPTY).expect("encode request");
    buf[..n].to_vec()
}

/// A request built byte by byte (anything, including what `encode_request` refuses).
pub fn raw_request(opcode: u8, name: &[u8], mode: &[u8], options: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut v = vec![0, opcode];
    v.extend_from_slice(name);
    v.push(0);
    v.extend_from_slice(mode);
    v.push(0);
    for (n, val) in options {
        v.extend_from_slice(n);
        v.push(0);
        v.extend_from_slice(val);
        v.push(0);
    }
    v
}

pub fn rrq(name: &[u8]) -> Vec<u8> {
    request(RequestKind::Read, name, Mode::Octet, &Options::NONE)
}

pub fn wrq(name: &[u8]) -> Vec<u8> {
    request(RequestKind::Write, name, Mode::Octet, &Options::NONE)
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

pub fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 3];
    d.extend_from_slice(&block.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

pub fn error(code: u16, message: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(message);
    v.push(0);
    v
}

pub fn oack(options: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut v = vec![0, 6];
    for (n, val) in options {
        v.extend_from_slice(n);
        v.push(0);
        v.extend_from_slice(val);
        v.push(0);
    }
    v
}

pub fn socket(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind client socket");
    s.set_read_timeout(Some(WAIT)).expect("set timeout");
    s
}

/// Receives one datagram (bounded by [`WAIT`]).
pub fn recv(s: &UdpSocket) -> (Pkt, SocketAddr) {
    recv_within(s, WAIT).unwrap_or_else(|| panic!("no datagram on {:?}", s.local_addr()))
}

/// Receives one datagram within `limit`, or `None`.
pub fn recv_within(s: &UdpSocket, limit: Duration) -> Option<(Pkt, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).expect("set timeout");
        match s.recv_from(&mut buf) {
            Ok((n, from)) => return Some((parse(&buf[..n]), from)),
            // An ICMP error for an earlier datagram: not an answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
            Err(e) => panic!("recv on {:?}: {e}", s.local_addr()),
        }
    }
}

/// Every datagram already queued on `s` (loopback delivers synchronously, so after the sender
/// is done everything it sent is here).
pub fn drain_queued(s: &UdpSocket) -> Vec<(Pkt, SocketAddr)> {
    s.set_nonblocking(true).expect("nonblocking");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => out.push((parse(&buf[..n]), from)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(_) => break,
        }
    }
    s.set_nonblocking(false).expect("blocking");
    out
}

/// Everything that arrives on `s` within `quiet` of the previous datagram (bounded by [`WAIT`]).
pub fn collect(s: &UdpSocket, quiet: Duration) -> Vec<(Pkt, SocketAddr)> {
    let mut out = Vec::new();
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        match recv_within(s, quiet) {
            Some(p) => out.push(p),
            None => break,
        }
    }
    out
}

/// Whether the server answers `s` at all within `quiet` (the "dropped" check: quiet is a
/// lower bound for a negative answer; loopback answers in microseconds).
pub fn silent(s: &UdpSocket, quiet: Duration) -> Result<(), (Pkt, SocketAddr)> {
    match recv_within(s, quiet) {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// How long to listen before concluding a datagram was dropped.
pub const QUIET: Duration = Duration::from_millis(300);
