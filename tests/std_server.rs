//! The std adapter over real sockets: the mio [`Server`] and the blocking [`Client`] on loopback
//! (127.0.0.1, other 127/8 addresses, ::1), with the file policy of [`Root`] on a real directory.
//!
//! Every test starts its own server on port 0 in a background thread ([`TestServer`]), which is
//! stopped and joined when the test ends. Nothing here waits on wall-clock speed: waits are for a
//! datagram, a report or a thread, with a generous bound ([`WAIT`]) that only stops a broken test
//! from hanging. Tests that expect a transfer to fail give the engine small retry limits so the
//! library's own timeouts end it within a second or two.
//!
//! [`Root`]: tftp_proto::adapter::root::Root
#![cfg(feature = "std")]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tftp_proto::adapter::client::{Client, ClientError};
use tftp_proto::adapter::mio_server::{Server, ServerConfig};
use tftp_proto::adapter::{drive, StdClock, Transport, UdpTransport};
use tftp_proto::engine::{ClientRequest, Config, TransferError, TransferMode};
use tftp_proto::engine::{ServerPolicy, Transfer};
use tftp_proto::server::TransferResult;
use tftp_proto::storage::Storage;
use tftp_proto::{ErrorCode, Mode, Options, RequestKind};

// ---- fixtures: the shared loopback helpers (tests/common/loopback.rs) and a few of our own --

#[cfg(target_os = "linux")]
#[path = "common/affinity.rs"]
mod affinity;
#[path = "common/loopback.rs"]
mod loopback;
#[cfg(target_os = "linux")]
use affinity::allowed_cpus;
use loopback::{
    ack, data, digest, drain_queued, file_digest, list, names, pattern, peer_code, recv, request, rrq,
    server_config, snapshot, socket, Harness as TestServer, Pkt, Report, TempDir,
};

/// Engine timing that gives up on a silent peer after 0.1 + 0.2 + 0.4 s.
fn fast_fail() -> Config {
    Config {
        initial_rto: Duration::from_millis(100),
        min_rto: Duration::from_millis(100),
        max_rto: Duration::from_millis(400),
        max_retries: 2,
        total_timeout: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

fn opts(blksize: u16, windowsize: u16) -> Options {
    Options {
        blksize: Some(blksize),
        windowsize: Some(windowsize),
        tsize: Some(0),
        ..Options::NONE
    }
}

/// A plain RFC 1350 download (blksize 512, windowsize 1) driven packet by packet, recording
/// where every datagram came from. The request is sent by the caller.
struct RawReader<'s> {
    sock: &'s UdpSocket,
    expected: u16,
    data: Vec<u8>,
    sources: BTreeSet<SocketAddr>,
    tid: Option<SocketAddr>,
    done: bool,
}

impl<'s> RawReader<'s> {
    fn new(sock: &'s UdpSocket) -> Self {
        RawReader {
            sock,
            expected: 1,
            data: Vec::new(),
            sources: BTreeSet::new(),
            tid: None,
            done: false,
        }
    }

    /// Receives the next in-order block and acknowledges it (repeats are re-acknowledged).
    fn step(&mut self) {
        loop {
            let (pkt, from) = recv(self.sock);
            self.sources.insert(from);
            let tid = *self.tid.get_or_insert(from);
            match pkt {
                Pkt::Data(b, payload) if b == self.expected => {
                    self.data.extend_from_slice(&payload);
                    self.sock.send_to(&ack(b), tid).expect("send ack");
                    self.expected = self.expected.wrapping_add(1);
                    self.done = payload.len() < 512;
                    return;
                }
                Pkt::Data(b, _) => {
                    self.sock.send_to(&ack(b), tid).expect("send ack");
                }
                other => panic!("unexpected {other:?} from {from}"),
            }
        }
    }

    fn run(mut self) -> (Vec<u8>, BTreeSet<SocketAddr>) {
        while !self.done {
            self.step();
        }
        (self.data, self.sources)
    }
}

/// Drives a client [`Transfer`] over `sock` by hand (like `adapter::drive`), recording the source
/// of every datagram. With `stop_after_data`, returns `false` instead of sending one more DATA
/// packet than that; otherwise runs to the end and returns `true`.
fn drive_by_hand<S: Storage>(
    sock: &UdpSocket,
    clock: &StdClock,
    t: &mut Transfer<'_, S>,
    stop_after_data: Option<usize>,
    sources: &mut BTreeSet<SocketAddr>,
) -> bool {
    let mut buf = vec![0u8; 65536];
    let mut rx = vec![0u8; 65536];
    let mut data_sent = 0;
    loop {
        let now = clock.now();
        while let Some(tx) = t.poll_transmit(now, &mut buf) {
            if buf[..2] == [0, 3] {
                data_sent += 1;
                if stop_after_data.is_some_and(|max| data_sent > max) {
                    return false;
                }
            }
            sock.send_to(&buf[..tx.len], tx.destination).expect("send");
        }
        while t.poll_event().is_some() {}
        if t.is_finished() {
            return true;
        }
        let deadline = t.poll_timeout().expect("a live transfer has a deadline");
        let now = clock.now();
        if deadline <= now {
            t.handle_timeout(now);
            continue;
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_micros(1))))
            .expect("set timeout");
        match sock.recv_from(&mut rx) {
            Ok((n, from)) => {
                sources.insert(from);
                t.handle_datagram(clock.now(), from, &rx[..n]);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                t.handle_timeout(clock.now())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends whatever the transfer has queued (e.g. the ERROR after `abort`).
fn flush_by_hand<S: Storage>(sock: &UdpSocket, clock: &StdClock, t: &mut Transfer<'_, S>) {
    let mut buf = vec![0u8; 65536];
    while let Some(tx) = t.poll_transmit(clock.now(), &mut buf) {
        sock.send_to(&buf[..tx.len], tx.destination).expect("send");
    }
}

fn upload_request(name: &[u8]) -> ClientRequest<'_> {
    ClientRequest {
        kind: RequestKind::Write,
        filename: name,
        mode: TransferMode::Octet,
        options: Options::NONE,
    }
}

// ---- transfers: sizes, block sizes, windows, IPv4 and IPv6 ---------------------------------

const SIZES: [usize; 6] = [0, 1, 511, 512, 513, (1 << 20) + 1];
const BLKSIZES: [u16; 3] = [512, 1468, 65464];
const WINDOWS: [u16; 4] = [1, 4, 16, 64];

/// Every size with plain RFC 1350 (no options), then every size under every blksize x windowsize.
fn matrix() -> Vec<(usize, Option<(u16, u16)>)> {
    let mut m = Vec::new();
    for &size in &SIZES {
        m.push((size, None));
        for &bs in &BLKSIZES {
            for &ws in &WINDOWS {
                m.push((size, Some((bs, ws))));
            }
        }
    }
    m
}

fn download_matrix(bind: &str) {
    let root = TempDir::new("root");
    let local = TempDir::new("local");
    for &size in &SIZES {
        fs::write(root.join(format!("src-{size}")), pattern(size, size as u64)).unwrap();
    }
    let server = TestServer::start(&server_config(root.path(), &[bind]));
    for (size, o) in matrix() {
        let name = format!("src-{size}");
        let options = o.map_or(Options::NONE, |(bs, ws)| opts(bs, ws));
        let target = local.join(format!("{name}-{o:?}"));
        let summary = Client::new(server.addr())
            .options(options)
            .get_file(name.as_bytes(), &target, |_| {})
            .unwrap_or_else(|e| panic!("get {name} {o:?}: {e}"));
        assert_eq!(summary.bytes, size as u64, "{name} {o:?}");
        assert_eq!(
            file_digest(&target),
            digest(&pattern(size, size as u64)),
            "{name} {o:?}"
        );
        let (bs, ws) = o.unwrap_or((512, 1));
        assert_eq!(
            (summary.params.blksize, summary.params.windowsize),
            (bs, ws),
            "{name} {o:?}"
        );
        if o.is_some() {
            assert_eq!(
                summary.params.tsize,
                Some(size as u64),
                "tsize answered for {name}"
            );
        }
        let r = server.report_for(RequestKind::Read, name.as_bytes());
        assert_eq!(r.result, TransferResult::Completed(size as u64), "{name} {o:?}");
    }
    // Downloads went to temporary files renamed into place: nothing else is left.
    let expected: BTreeSet<OsString> = matrix()
        .into_iter()
        .map(|(size, o)| OsString::from(format!("src-{size}-{o:?}")))
        .collect();
    assert_eq!(list(local.path()), expected);
}

fn upload_matrix(bind: &str) {
    let root = TempDir::new("root");
    let local = TempDir::new("local");
    for &size in &SIZES {
        fs::write(local.join(format!("src-{size}")), pattern(size, size as u64 + 7)).unwrap();
    }
    let mut config = server_config(root.path(), &[bind]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let mut expected = BTreeSet::new();
    for (i, (size, o)) in matrix().into_iter().enumerate() {
        let remote = format!("up-{i}-{size}");
        let options = o.map_or(Options::NONE, |(bs, ws)| opts(bs, ws));
        let summary = Client::new(server.addr())
            .options(options)
            .put_file(&local.join(format!("src-{size}")), remote.as_bytes(), |_| {})
            .unwrap_or_else(|e| panic!("put {remote} {o:?}: {e}"));
        assert_eq!(summary.bytes, size as u64, "{remote} {o:?}");
        // The upload is committed when the server's session ends: wait for its report.
        let r = server.report_for(RequestKind::Write, remote.as_bytes());
        assert_eq!(r.result, TransferResult::Completed(size as u64), "{remote} {o:?}");
        let (bs, ws) = o.unwrap_or((512, 1));
        assert_eq!(
            (r.params.blksize, r.params.windowsize),
            (bs, ws),
            "{remote} {o:?}"
        );
        if o.is_some() {
            assert_eq!(r.params.tsize, Some(size as u64), "tsize announced for {remote}");
        }
        assert_eq!(
            file_digest(&root.join(&remote)),
            digest(&pattern(size, size as u64 + 7)),
            "{remote} {o:?}"
        );
        expected.insert(OsString::from(remote));
    }
    // No temporary upload file is left beside the committed ones.
    assert_eq!(list(root.path()), expected);
}

#[test]
fn download_matrix_ipv4() {
    download_matrix("127.0.0.1:0");
}

#[test]
fn download_matrix_ipv6() {
    download_matrix("[::1]:0");
}

#[test]
fn upload_matrix_ipv4() {
    upload_matrix("127.0.0.1:0");
}

#[test]
fn upload_matrix_ipv6() {
    upload_matrix("[::1]:0");
}

// ---- more than 65535 blocks ----------------------------------------------------------------

/// 65538 blocks of 512 bytes (about 33.6 MB): the block number wraps from 65535 to 0.
const ROLLOVER_SIZE: usize = 512 * 65537 + 100;

#[test]
fn rollover_download_past_65535_blocks() {
    let root = TempDir::new("root");
    let local = TempDir::new("local");
    let content = pattern(ROLLOVER_SIZE, 65);
    fs::write(root.join("big.bin"), &content).unwrap();
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let target = local.join("big.bin");
    // Plain RFC 1350: no options, one block per ACK, 65538 round trips.
    let summary = Client::new(server.addr())
        .get_file(b"big.bin", &target, |_| {})
        .expect("download");
    assert_eq!((summary.params.blksize, summary.params.windowsize), (512, 1));
    assert_eq!(summary.bytes, ROLLOVER_SIZE as u64);
    assert_eq!(file_digest(&target), digest(&content));
    assert_eq!(
        server.report_for(RequestKind::Read, b"big.bin").result,
        TransferResult::Completed(ROLLOVER_SIZE as u64)
    );
}

#[test]
fn rollover_upload_past_65535_blocks() {
    let root = TempDir::new("root");
    let content = pattern(ROLLOVER_SIZE, 66);
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let summary = Client::new(server.addr())
        .options(Options {
            windowsize: Some(16),
            tsize: Some(0),
            ..Options::NONE
        })
        .put(b"big.bin", &content[..], |_| {})
        .expect("upload")
        .1;
    assert_eq!(summary.params.blksize, 512);
    assert_eq!(summary.bytes, ROLLOVER_SIZE as u64);
    assert_eq!(
        server.report_for(RequestKind::Write, b"big.bin").result,
        TransferResult::Completed(ROLLOVER_SIZE as u64)
    );
    assert_eq!(file_digest(&root.join("big.bin")), digest(&content));
}

// ---- netascii -------------------------------------------------------------------------------

/// Local text (LF line ends) to netascii wire bytes, written independently of the library.
fn to_netascii(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in text {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

/// Texts whose CR, LF and CR LF fall on and around the 512-byte block boundaries of the wire.
fn netascii_texts() -> Vec<Vec<u8>> {
    let a = |n: usize| vec![b'a'; n];
    let cat = |parts: &[&[u8]]| parts.concat();
    let mut dense = pattern(3000, 3);
    for b in &mut dense {
        *b = [b'x', b'\r', b'\n', b'y'][usize::from(*b % 4)];
    }
    vec![
        cat(&[&a(511), b"\n", b"tail\n"]), // wire CR ends block 1, LF starts block 2
        cat(&[&a(511), b"\r", b"b"]),      // wire CR | NUL across the boundary
        cat(&[&a(510), b"\r\n", b"c"]),    // local CR LF = wire CR NUL CR LF, split after NUL
        cat(&[&a(509), b"\r\n", b"d\n"]),  // wire CR NUL CR | LF
        cat(&[&a(512), b"\n"]),            // LF first in block 2
        cat(&[&a(510), b"\n"]),            // wire exactly 512 bytes: an empty final DATA
        cat(&[b"\n".repeat(256).as_slice()]), // 512 wire bytes of CR LF pairs
        cat(&[b"\r".repeat(700).as_slice()]), // CR NUL pairs over two blocks
        dense,
    ]
}

#[test]
fn netascii_get_and_put_across_block_boundaries() {
    let root = TempDir::new("root");
    let texts = netascii_texts();
    for (i, t) in texts.iter().enumerate() {
        fs::write(root.join(format!("na-{i}.txt")), t).unwrap();
    }
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    for (i, text) in texts.iter().enumerate() {
        let name = format!("na-{i}.txt");
        let wire = to_netascii(text);

        // The server's wire bytes, block by block.
        let sock = socket("127.0.0.1:0");
        sock.send_to(
            &request(RequestKind::Read, name.as_bytes(), Mode::Netascii, &Options::NONE),
            server.addr(),
        )
        .unwrap();
        let (got, _) = RawReader::new(&sock).run();
        assert_eq!(got, wire, "wire bytes of {name}");

        // The client decodes them back to the local text.
        let (back, _) = Client::new(server.addr())
            .mode(TransferMode::Netascii)
            .get(name.as_bytes(), Vec::new(), |_| {})
            .unwrap_or_else(|e| panic!("netascii get {name}: {e}"));
        assert_eq!(back, *text, "netascii get of {name}");

        // An upload through the client encoder is stored as the local text.
        let up = format!("up-{i}.txt");
        Client::new(server.addr())
            .mode(TransferMode::Netascii)
            .options(Options {
                blksize: Some(512),
                ..Options::NONE
            })
            .put(up.as_bytes(), &text[..], |_| {})
            .unwrap_or_else(|e| panic!("netascii put {up}: {e}"));
        assert!(server
            .report_for(RequestKind::Write, up.as_bytes())
            .result
            .is_success());
        assert_eq!(fs::read(root.join(&up)).unwrap(), *text, "netascii put of {name}");

        // Raw wire blocks sent by hand are decoded by the server alone.
        let raw = format!("raw-{i}.txt");
        let sock = socket("127.0.0.1:0");
        sock.send_to(
            &request(RequestKind::Write, raw.as_bytes(), Mode::Netascii, &Options::NONE),
            server.addr(),
        )
        .unwrap();
        let (pkt, tid) = recv(&sock);
        assert_eq!(pkt, Pkt::Ack(0));
        let mut chunks: Vec<&[u8]> = wire.chunks(512).collect();
        if wire.len().is_multiple_of(512) {
            chunks.push(&[]);
        }
        for (n, chunk) in chunks.iter().enumerate() {
            let block = (n + 1) as u16;
            sock.send_to(&data(block, chunk), tid).unwrap();
            loop {
                match recv(&sock) {
                    (Pkt::Ack(b), _) if b == block => break,
                    (Pkt::Ack(_), _) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(server
            .report_for(RequestKind::Write, raw.as_bytes())
            .result
            .is_success());
        assert_eq!(
            fs::read(root.join(&raw)).unwrap(),
            *text,
            "raw netascii put of {name}"
        );
    }
}

// ---- write policy ---------------------------------------------------------------------------

#[test]
fn uploads_refused_by_default_with_error_2() {
    let root = TempDir::new("root");
    fs::write(root.join("existing.bin"), b"original").unwrap();
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let client = Client::new(server.addr());
    for name in ["new.bin", "existing.bin"] {
        let e = client.put(name.as_bytes(), &b"payload"[..], |_| {}).unwrap_err();
        assert_eq!(peer_code(&e), 2, "{name}");
    }
    // Refused before any file was opened: nothing created, nothing changed.
    assert_eq!(list(root.path()), names(&["existing.bin"]));
    assert_eq!(fs::read(root.join("existing.bin")).unwrap(), b"original");
}

#[test]
fn allow_write_creates_new_files() {
    let root = TempDir::new("root");
    fs::create_dir(root.join("sub")).unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let content = pattern(5000, 1);
    for name in ["new.bin", "sub/nested.bin", "/leading.bin", "sub\\windows.bin"] {
        Client::new(server.addr())
            .put(name.as_bytes(), &content[..], |_| {})
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
        assert!(server
            .report_for(RequestKind::Write, name.as_bytes())
            .result
            .is_success());
    }
    for path in ["new.bin", "sub/nested.bin", "leading.bin", "sub/windows.bin"] {
        assert_eq!(fs::read(root.join(path)).unwrap(), content, "{path}");
    }
    assert_eq!(list(root.path()), names(&["leading.bin", "new.bin", "sub"]));
    assert_eq!(list(&root.join("sub")), names(&["nested.bin", "windows.bin"]));
}

#[test]
fn existing_file_without_allow_overwrite_is_error_6() {
    let root = TempDir::new("root");
    fs::write(root.join("existing.bin"), b"original").unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let e = Client::new(server.addr())
        .put(b"existing.bin", &pattern(3000, 2)[..], |_| {})
        .unwrap_err();
    assert_eq!(peer_code(&e), 6);
    assert_eq!(fs::read(root.join("existing.bin")).unwrap(), b"original");
    assert_eq!(list(root.path()), names(&["existing.bin"]));
}

#[test]
fn existing_file_with_allow_overwrite_is_replaced() {
    let root = TempDir::new("root");
    fs::write(
        root.join("existing.bin"),
        b"original content, longer than the new one",
    )
    .unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    config.allow_overwrite = true;
    let server = TestServer::start(&config);
    Client::new(server.addr())
        .put(b"existing.bin", &b"new"[..], |_| {})
        .expect("overwrite");
    assert!(server
        .report_for(RequestKind::Write, b"existing.bin")
        .result
        .is_success());
    assert_eq!(fs::read(root.join("existing.bin")).unwrap(), b"new");
    assert_eq!(list(root.path()), names(&["existing.bin"]));
}

// ---- path safety ----------------------------------------------------------------------------

/// `base/tftp` is the root; `base/tftp2` is a sibling sharing its prefix; links lead in and out.
struct Jail {
    base: TempDir,
    root: PathBuf,
}

const SECRET: &[u8] = b"secret content outside the root";

impl Jail {
    fn new() -> Jail {
        use std::os::unix::fs::symlink;
        let base = TempDir::new("jail");
        let root = base.join("tftp");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(base.join("tftp2")).unwrap();
        fs::write(base.join("tftp2/secret"), SECRET).unwrap();
        fs::write(base.join("outside.txt"), SECRET).unwrap();
        fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
        symlink("sub/inner.txt", root.join("inlink")).unwrap();
        symlink("../tftp2/secret", root.join("outlink")).unwrap();
        symlink(base.join("outside.txt"), root.join("absout")).unwrap();
        symlink("../tftp2", root.join("outdir")).unwrap();
        symlink("../tftp2/newfile", root.join("dangling")).unwrap();
        Jail { base, root }
    }

    fn outside(&self) -> BTreeMap<PathBuf, String> {
        snapshot(self.base.path(), &self.root)
    }
}

/// Names that try to leave the root, and the ERROR codes each may get.
const ESCAPES: &[(&[u8], &[u16])] = &[
    (b"..", &[2]),
    (b"../outside.txt", &[2]),
    (b"a/../../outside.txt", &[2]),
    (b"sub/../../outside.txt", &[2]),
    (b"./../outside.txt", &[2]),
    (b"sub/..", &[2]),
    (b"..\\..\\outside.txt", &[2]),
    (b"..\\outside.txt", &[2]),
    (b"../tftp2/secret", &[2]),
    (b"/../tftp2/secret", &[2]),
    (b"outlink", &[1, 2]),
    (b"absout", &[1, 2]),
    (b"outdir/secret", &[1, 2]),
    (b"/etc/passwd", &[1]),
];

#[test]
fn downloads_never_leave_the_root() {
    let jail = Jail::new();
    let server = TestServer::start(&server_config(&jail.root, &["127.0.0.1:0"]));
    let client = Client::new(server.addr());
    for &(name, codes) in ESCAPES {
        let shown = String::from_utf8_lossy(name);
        match client.get(name, Vec::new(), |_| {}) {
            Ok((content, _)) => panic!("{shown} was served: {:?}", String::from_utf8_lossy(&content)),
            Err(e) => assert!(codes.contains(&peer_code(&e)), "{shown}: {e}"),
        }
    }
}

#[test]
fn absolute_path_resolves_beneath_the_root() {
    let jail = Jail::new();
    fs::create_dir(jail.root.join("etc")).unwrap();
    let server = TestServer::start(&server_config(&jail.root, &["127.0.0.1:0"]));
    let client = Client::new(server.addr());
    let e = client.get(b"/etc/passwd", Vec::new(), |_| {}).unwrap_err();
    assert_eq!(peer_code(&e), 1, "root/etc/passwd does not exist");
    fs::write(jail.root.join("etc/passwd"), b"the root's own").unwrap();
    let (got, _) = client.get(b"/etc/passwd", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"the root's own");
    let (got, _) = client.get(b"//sub/inner.txt", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"inner");
}

#[test]
fn uploads_never_touch_anything_outside_the_root() {
    let jail = Jail::new();
    let passwd = fs::read("/etc/passwd").ok();
    let before = jail.outside();
    let root_before = snapshot(&jail.root, Path::new(""));
    let mut uploads: Vec<&[u8]> = ESCAPES.iter().map(|&(n, _)| n).collect();
    uploads.extend([
        &b"dangling"[..],
        b"outdir/newfile",
        b"../tftp2/newfile",
        b"../newfile",
        b"sub",
    ]);
    for overwrite in [false, true] {
        let mut config = server_config(&jail.root, &["127.0.0.1:0"]);
        config.allow_write = true;
        config.allow_overwrite = overwrite;
        let mut server = TestServer::start(&config);
        let client = Client::new(server.addr());
        for &name in &uploads {
            let shown = String::from_utf8_lossy(name);
            match client.put(name, &b"evil"[..], |_| {}) {
                Ok(_) => panic!("upload of {shown} accepted (overwrite {overwrite})"),
                Err(e) => assert!(
                    [1, 2, 6].contains(&peer_code(&e)),
                    "{shown} (overwrite {overwrite}): {e}"
                ),
            }
        }
        // Every refusal came before a session: the server reports nothing.
        assert!(server.shutdown().is_empty());
    }
    assert_eq!(jail.outside(), before, "a file outside the root changed");
    assert_eq!(
        snapshot(&jail.root, Path::new("")),
        root_before,
        "the root changed"
    );
    assert_eq!(fs::read("/etc/passwd").ok(), passwd);
}

#[test]
fn symlink_inside_the_root_to_inside_is_served() {
    let jail = Jail::new();
    let server = TestServer::start(&server_config(&jail.root, &["127.0.0.1:0"]));
    let (got, _) = Client::new(server.addr())
        .get(b"inlink", Vec::new(), |_| {})
        .unwrap();
    assert_eq!(got, b"inner");
}

#[test]
fn directory_names_are_refused() {
    let jail = Jail::new();
    let server = TestServer::start(&server_config(&jail.root, &["127.0.0.1:0"]));
    let client = Client::new(server.addr());
    for name in [&b"sub"[..], b"sub/", b"/", b".", b""] {
        let e = client.get(name, Vec::new(), |_| {}).unwrap_err();
        let code = peer_code(&e);
        assert!([1, 2].contains(&code), "{:?}: {e}", String::from_utf8_lossy(name));
    }
}

#[test]
fn non_utf8_filename_is_served() {
    use std::os::unix::ffi::OsStrExt;
    let root = TempDir::new("root");
    let name: &[u8] = b"caf\xe9-\xff.bin";
    fs::write(root.join(std::ffi::OsStr::from_bytes(name)), b"bytes, not text").unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let client = Client::new(server.addr());
    let (got, _) = client.get(name, Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"bytes, not text");
    let up: &[u8] = b"\xfe\xfd.up";
    client.put(up, &b"uploaded"[..], |_| {}).unwrap();
    assert!(server.report_for(RequestKind::Write, up).result.is_success());
    assert_eq!(
        fs::read(root.join(std::ffi::OsStr::from_bytes(up))).unwrap(),
        b"uploaded"
    );
}

// ---- failed uploads leave nothing -----------------------------------------------------------

/// Starts an upload of `name` by hand, stops after three DATA packets and lets the server give
/// up; returns the server's report of it.
fn abandon_upload(server: &TestServer, name: &[u8]) -> Report {
    let sock = socket("127.0.0.1:0");
    let clock = StdClock::new();
    let content = pattern(20 * 512, 9);
    let mut t = Transfer::client(
        clock.now(),
        server.addr(),
        upload_request(name),
        &content[..],
        Config::default(),
    )
    .expect("request");
    if drive_by_hand(&sock, &clock, &mut t, Some(3), &mut BTreeSet::new()) {
        // Only if this thread stalled long enough for the server to give up first.
        assert!(matches!(t.outcome(), Some(Err(_))), "the upload cannot complete");
    }
    server.report_for(RequestKind::Write, name)
}

fn abandoning_server(root: &Path, overwrite: bool) -> TestServer {
    let mut config = server_config(root, &["127.0.0.1:0"]);
    config.allow_write = true;
    config.allow_overwrite = overwrite;
    config.engine = fast_fail();
    TestServer::start(&config)
}

#[test]
fn abandoned_upload_leaves_no_file() {
    let root = TempDir::new("root");
    fs::write(root.join("other.txt"), b"other").unwrap();
    let server = abandoning_server(root.path(), false);
    let r = abandon_upload(&server, b"new.bin");
    assert_eq!(r.result, TransferResult::Failed(TransferError::TimedOut));
    assert_eq!(
        list(root.path()),
        names(&["other.txt"]),
        "no target and no temporary file"
    );
}

#[test]
fn abandoned_upload_keeps_the_existing_file() {
    let root = TempDir::new("root");
    fs::write(root.join("target.bin"), b"original").unwrap();
    let server = abandoning_server(root.path(), true);
    let r = abandon_upload(&server, b"target.bin");
    assert_eq!(r.result, TransferResult::Failed(TransferError::TimedOut));
    assert_eq!(list(root.path()), names(&["target.bin"]));
    assert_eq!(fs::read(root.join("target.bin")).unwrap(), b"original");
}

#[test]
fn upload_aborted_by_the_client_is_discarded() {
    let root = TempDir::new("root");
    fs::write(root.join("target.bin"), b"original").unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    config.allow_overwrite = true;
    let server = TestServer::start(&config);
    let sock = socket("127.0.0.1:0");
    let clock = StdClock::new();
    let content = pattern(20 * 512, 10);
    let mut t = Transfer::client(
        clock.now(),
        server.addr(),
        upload_request(b"target.bin"),
        &content[..],
        Config::default(),
    )
    .expect("request");
    assert!(!drive_by_hand(
        &sock,
        &clock,
        &mut t,
        Some(3),
        &mut BTreeSet::new()
    ));
    // Mid-upload (the server waits for DATA 4 with its default, long timeouts) the data sits
    // in a temporary file beside the untouched target.
    let during = list(root.path());
    assert_eq!(during.len(), 2, "target and temporary file: {during:?}");
    assert_eq!(fs::read(root.join("target.bin")).unwrap(), b"original");
    t.abort(ErrorCode::NotDefined, "client gives up");
    flush_by_hand(&sock, &clock, &mut t);
    let r = server.report_for(RequestKind::Write, b"target.bin");
    assert!(
        matches!(r.result, TransferResult::Failed(TransferError::Peer(_))),
        "{:?}",
        r.result
    );
    assert_eq!(list(root.path()), names(&["target.bin"]));
    assert_eq!(fs::read(root.join("target.bin")).unwrap(), b"original");
}

// ---- upload size limit ----------------------------------------------------------------------

fn limited_server(root: &Path, limit: u64) -> TestServer {
    let mut config = server_config(root, &["127.0.0.1:0"]);
    config.allow_write = true;
    config.policy = ServerPolicy {
        max_write_size: Some(limit),
        ..ServerPolicy::default()
    };
    TestServer::start(&config)
}

#[test]
fn max_upload_size_refused_up_front_by_tsize() {
    let root = TempDir::new("root");
    let server = limited_server(root.path(), 1000);
    let e = Client::new(server.addr())
        .options(Options {
            tsize: Some(0),
            ..Options::NONE
        })
        .put(b"big.bin", &pattern(5000, 4)[..], |_| {})
        .unwrap_err();
    assert_eq!(peer_code(&e), 3);
    assert!(!server
        .report_for(RequestKind::Write, b"big.bin")
        .result
        .is_success());
    assert!(list(root.path()).is_empty());
}

#[test]
fn max_upload_size_enforced_on_data_without_tsize() {
    let root = TempDir::new("root");
    let server = limited_server(root.path(), 1000);
    for options in [Options::NONE, opts(512, 4)] {
        let options = Options {
            tsize: None,
            ..options
        };
        let e = Client::new(server.addr())
            .options(options)
            .put(b"big.bin", &pattern(5000, 5)[..], |_| {})
            .unwrap_err();
        assert_eq!(peer_code(&e), 3, "{options:?}");
        let r = server.report_for(RequestKind::Write, b"big.bin");
        assert_eq!(r.result, TransferResult::Failed(TransferError::TooLarge));
        assert!(list(root.path()).is_empty(), "{options:?}");
    }
    // Exactly at the limit is accepted.
    Client::new(server.addr())
        .options(Options {
            tsize: Some(0),
            ..Options::NONE
        })
        .put(b"fits.bin", &pattern(1000, 6)[..], |_| {})
        .expect("an upload of exactly the limit");
    assert!(server
        .report_for(RequestKind::Write, b"fits.bin")
        .result
        .is_success());
    assert_eq!(list(root.path()), names(&["fits.bin"]));
}

// ---- sessions -------------------------------------------------------------------------------

#[test]
fn repeated_request_from_the_same_port_starts_one_session() {
    let root = TempDir::new("root");
    let content = pattern(3 * 512 + 20, 11);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let sock = socket("127.0.0.1:0");
    let req = rrq(b"f.bin");
    sock.send_to(&req, server.addr()).unwrap();
    sock.send_to(&req, server.addr()).unwrap();
    let (got, sources) = RawReader::new(&sock).run();
    assert_eq!(got, content);
    assert_eq!(sources.len(), 1, "one session answered: {sources:?}");
    assert!(server.report_for(RequestKind::Read, b"f.bin").result.is_success());
    // Shutting down aborts and reports any session still alive: a second one would show here,
    // and its DATA or ERROR would be queued on the client socket.
    let rest = server.shutdown();
    assert!(rest.is_empty(), "a second session ran: {rest:?}");
    for (pkt, from) in drain_queued(&sock) {
        assert!(sources.contains(&from), "{pkt:?} from a second session at {from}");
    }
}

/// At the cap, with every session's client answering (each acknowledged block 1, then
/// stalled), a new request is refused with "busy" and nobody is displaced; the slots come back
/// when the stalled sessions time out.
#[test]
fn session_cap_refuses_then_recovers() {
    let root = TempDir::new("root");
    let content = pattern(10 * 512, 12);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.max_sessions = 2;
    // Stalled sessions live about two seconds: far longer than the next few datagrams take.
    config.engine = Config {
        initial_rto: Duration::from_millis(300),
        max_rto: Duration::from_millis(600),
        max_retries: 3,
        total_timeout: Duration::ZERO,
        ..Config::default()
    };
    let server = TestServer::start(&config);
    let stalled: Vec<UdpSocket> = (0..2).map(|_| socket("127.0.0.1:0")).collect();
    for s in &stalled {
        s.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
        let (pkt, tid) = recv(s);
        assert!(matches!(pkt, Pkt::Data(1, _)), "the session started");
        s.send_to(&ack(1), tid).unwrap();
        assert!(matches!(recv(s).0, Pkt::Data(2, _)), "the client answered");
    }
    let third = socket("127.0.0.1:0");
    third.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    let (pkt, from) = recv(&third);
    assert!(
        matches!(pkt, Pkt::Error(0, ref m) if m.contains("busy")),
        "{pkt:?}"
    );
    assert_eq!(from, server.addr(), "refused from the listening port");
    for s in &stalled {
        let peer = s.local_addr().unwrap();
        let r = server.report(&format!("stalled {peer}"), |r| r.peer == peer);
        assert_eq!(r.result, TransferResult::Failed(TransferError::TimedOut));
    }
    // The slots are free again.
    let (got, _) = Client::new(server.addr())
        .get(b"f.bin", Vec::new(), |_| {})
        .unwrap();
    assert_eq!(got, content);
}

#[test]
fn unknown_tid_gets_error_5_and_the_transfer_completes() {
    let root = TempDir::new("root");
    let content = pattern(3 * 512 + 10, 13);
    fs::write(root.join("f.bin"), &content).unwrap();
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let sock = socket("127.0.0.1:0");
    sock.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    let mut reader = RawReader::new(&sock);
    reader.step();
    let tid = reader.tid.expect("the session's port");
    assert_ne!(tid, server.addr(), "a port of its own");
    let stranger = socket("127.0.0.1:0");
    for pkt in [ack(1), data(1, b"x"), rrq(b"f.bin")] {
        stranger.send_to(&pkt, tid).unwrap();
        let (reply, from) = recv(&stranger);
        assert_eq!(from, tid);
        assert!(matches!(reply, Pkt::Error(5, _)), "{reply:?}");
    }
    let (got, sources) = reader.run();
    assert_eq!(got, content);
    assert_eq!(sources, BTreeSet::from([tid]));
    let r = server.report_for(RequestKind::Read, b"f.bin");
    assert_eq!(r.result, TransferResult::Completed(content.len() as u64));
    assert_eq!(r.peer, sock.local_addr().unwrap());
}

#[test]
fn unknown_peer_on_the_listening_port_gets_error_5() {
    let root = TempDir::new("root");
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let sock = socket("127.0.0.1:0");
    sock.send_to(&ack(1), server.addr()).unwrap();
    let (pkt, from) = recv(&sock);
    assert!(matches!(pkt, Pkt::Error(5, _)), "{pkt:?}");
    assert_eq!(from, server.addr());
}

// ---- single-port mode -----------------------------------------------------------------------

#[test]
fn single_port_mode_serves_concurrent_clients_from_the_listening_port() {
    let root = TempDir::new("root");
    let content = pattern(5 * 512 + 7, 14);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.single_port = true;
    let server = TestServer::start(&config);
    // Two downloads in lockstep: both sessions live on the listening port at once.
    let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
    a.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    b.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    let (mut ra, mut rb) = (RawReader::new(&a), RawReader::new(&b));
    while !ra.done || !rb.done {
        if !ra.done {
            ra.step();
        }
        if !rb.done {
            rb.step();
        }
    }
    for r in [ra, rb] {
        assert_eq!(r.data, content);
        assert_eq!(
            r.sources,
            BTreeSet::from([server.addr()]),
            "every reply from the listening port"
        );
    }
    for s in [&a, &b] {
        let peer = s.local_addr().unwrap();
        let r = server.report(&format!("{peer}"), |r| r.peer == peer);
        assert!(r.result.is_success());
        assert_eq!(r.local, server.addr());
    }
}

#[test]
fn single_port_mode_parallel_clients_with_options() {
    let root = TempDir::new("root");
    let content = Arc::new(pattern((1 << 20) + 1, 15));
    fs::write(root.join("f.bin"), &*content).unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.single_port = true;
    config.allow_write = true;
    let server = TestServer::start(&config);
    let addr = server.addr();
    let threads: Vec<_> = (0..4u16)
        .map(|i| {
            let content = Arc::clone(&content);
            std::thread::spawn(move || {
                let client = Client::new(addr).options(opts(1468, 1 << (i * 2)));
                let (got, _) = client.get(b"f.bin", Vec::new(), |_| {}).expect("get");
                assert_eq!(digest(&got), digest(&content));
                let name = format!("up-{i}");
                client.put(name.as_bytes(), &content[..], |_| {}).expect("put");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    for i in 0..4 {
        let name = format!("up-{i}");
        assert!(server
            .report_for(RequestKind::Write, name.as_bytes())
            .result
            .is_success());
        assert_eq!(file_digest(&root.join(&name)), digest(&content));
    }
}

// ---- replies leave from the address the request arrived on ----------------------------------

/// Requests `f.bin` (and a missing file) via `target` from a socket bound to `client_bind`;
/// checks every reply comes from `target`'s address (and from `target` itself in single-port
/// mode).
fn check_reply_source(
    server: &TestServer,
    client_bind: &str,
    target: SocketAddr,
    single_port: bool,
    content: &[u8],
) {
    let sock = socket(client_bind);
    sock.send_to(&rrq(b"f.bin"), target).unwrap();
    let (got, sources) = RawReader::new(&sock).run();
    assert_eq!(got, content, "via {target}");
    for s in &sources {
        assert_eq!(s.ip(), target.ip(), "reply source for a request to {target}");
        if single_port {
            assert_eq!(*s, target, "single-port reply source for a request to {target}");
        } else {
            assert_ne!(s.port(), target.port(), "a transfer port of its own");
        }
    }
    let peer = sock.local_addr().unwrap();
    let r = server.report(&format!("{peer}"), |r| r.peer == peer);
    assert!(r.result.is_success(), "{:?}", r.result);
    assert_eq!(r.local.ip(), target.ip(), "the session's local address");
    sock.send_to(&rrq(b"missing.bin"), target).unwrap();
    let (pkt, from) = recv(&sock);
    assert!(matches!(pkt, Pkt::Error(1, _)), "{pkt:?}");
    assert_eq!(from, target, "refusal source for a request to {target}");
    // The client checks the answer's address itself.
    let (got, _) = Client::new(target).get(b"f.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, content);
}

fn wildcard_reply_source(single_port: bool) {
    let root = TempDir::new("root");
    let content = pattern(3 * 512 + 1, 16);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut config = server_config(root.path(), &["0.0.0.0:0"]);
    config.single_port = single_port;
    let server = TestServer::start(&config);
    let port = server.addr().port();
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let target = SocketAddr::new(ip.parse().unwrap(), port);
        check_reply_source(&server, "127.0.0.1:0", target, single_port, &content);
    }
}

#[test]
fn wildcard_bind_replies_from_the_request_address() {
    wildcard_reply_source(false);
}

#[test]
fn wildcard_bind_single_port_replies_from_the_request_address() {
    wildcard_reply_source(true);
}

#[test]
fn wildcard_ipv6_bind_replies_from_the_request_address() {
    let root = TempDir::new("root");
    let content = pattern(2 * 512, 17);
    fs::write(root.join("f.bin"), &content).unwrap();
    for single_port in [false, true] {
        let mut config = server_config(root.path(), &["[::]:0"]);
        config.single_port = single_port;
        let server = TestServer::start(&config);
        let target = SocketAddr::new("::1".parse().unwrap(), server.addr().port());
        check_reply_source(&server, "[::1]:0", target, single_port, &content);
    }
}

/// Binds a server on `ips`, all on one port the OS picked free for each of them.
fn start_on_one_port(ips: &[&str], config: impl Fn(Vec<SocketAddr>) -> ServerConfig) -> TestServer {
    for _ in 0..50 {
        let probe = UdpSocket::bind(SocketAddr::new(ips[0].parse().unwrap(), 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let binds: Vec<SocketAddr> = ips
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect();
        if let Ok(server) = Server::bind(&config(binds)) {
            return TestServer::run(server, || {});
        }
    }
    panic!("no port free on all of {ips:?}");
}

#[test]
fn listeners_sharing_a_port_reply_from_their_own_address() {
    let root = TempDir::new("root");
    let content = pattern(2 * 512 + 3, 18);
    fs::write(root.join("f.bin"), &content).unwrap();
    for single_port in [false, true] {
        let server = start_on_one_port(&["127.0.0.1", "127.0.0.2"], |binds| ServerConfig {
            binds,
            single_port,
            ..server_config(root.path(), &[])
        });
        for &addr in server.addrs() {
            check_reply_source(&server, "127.0.0.1:0", addr, single_port, &content);
        }
    }
}

#[test]
fn dual_stack_wildcards_on_one_port_serve_both_families() {
    let root = TempDir::new("root");
    let content = pattern(2 * 512 + 5, 19);
    fs::write(root.join("f.bin"), &content).unwrap();
    for single_port in [false, true] {
        let server = start_on_one_port(&["0.0.0.0", "::"], |binds| ServerConfig {
            binds,
            single_port,
            ..server_config(root.path(), &[])
        });
        let port = server.addr().port();
        for (bind, ip) in [("[::1]:0", "::1"), ("127.0.0.1:0", "127.0.0.1")] {
            let target = SocketAddr::new(ip.parse().unwrap(), port);
            check_reply_source(&server, bind, target, single_port, &content);
        }
        assert!(server.is_running());
    }
}

// ---- the client ---------------------------------------------------------------------------

#[test]
fn client_get_of_a_missing_file_is_peer_error_1() {
    let root = TempDir::new("root");
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    match Client::new(server.addr()).get(b"missing.bin", Vec::new(), |_| {}) {
        Err(ClientError::Transfer(TransferError::Peer(e))) => {
            assert_eq!(e.code, ErrorCode::FileNotFound);
            assert_eq!(e.message(), b"File not found");
        }
        other => panic!("expected ERROR 1, got {other:?}"),
    }
}

#[test]
fn client_get_file_failure_leaves_local_files_alone() {
    let root = TempDir::new("root");
    let local = TempDir::new("local");
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let client = Client::new(server.addr());
    let existing = local.join("existing.bin");
    fs::write(&existing, b"precious").unwrap();
    let e = client.get_file(b"missing.bin", &existing, |_| {}).unwrap_err();
    assert_eq!(peer_code(&e), 1);
    let e = client
        .get_file(b"missing.bin", &local.join("new.bin"), |_| {})
        .unwrap_err();
    assert_eq!(peer_code(&e), 1);
    assert_eq!(fs::read(&existing).unwrap(), b"precious");
    // Neither the target nor a `.tftp-*.part` temporary file is left.
    assert_eq!(list(local.path()), names(&["existing.bin"]));
}

#[test]
fn client_get_file_failure_mid_transfer_leaves_local_files_alone() {
    let local = TempDir::new("local");
    let existing = local.join("f.bin");
    fs::write(&existing, b"precious").unwrap();
    // A fake server: answers the request with DATA 1 and 2, then falls silent.
    let fake = socket("127.0.0.1:0");
    let fake_addr = fake.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        Client::new(fake_addr)
            .config(fast_fail())
            .get_file(b"f.bin", &existing, |_| {})
    });
    let (pkt, peer) = recv(&fake);
    assert!(matches!(pkt, Pkt::Other(_)), "a request: {pkt:?}");
    let tid = socket("127.0.0.1:0");
    for block in 1..=2u16 {
        tid.send_to(&data(block, &[block as u8; 512]), peer).unwrap();
        match recv(&tid).0 {
            Pkt::Ack(b) if b == block => {}
            // The client gave up already (this thread stalled): it failed all the same.
            Pkt::Error(..) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let result = client.join().unwrap();
    assert!(
        matches!(result, Err(ClientError::Transfer(TransferError::TimedOut))),
        "{result:?}"
    );
    assert_eq!(fs::read(local.join("f.bin")).unwrap(), b"precious");
    assert_eq!(list(local.path()), names(&["f.bin"]));
}

#[test]
fn client_times_out_against_a_silent_port() {
    let silent = socket("127.0.0.1:0");
    let config = fast_fail();
    let e = Client::new(silent.local_addr().unwrap())
        .config(config)
        .get(b"f.bin", Vec::new(), |_| {})
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Transfer(TransferError::TimedOut)),
        "{e:?}"
    );
    // The request went out once and was retried exactly `max_retries` times (the client then
    // says it gives up with an ERROR).
    let mut requests = drain_queued(&silent);
    assert!(
        matches!(requests.last(), Some((Pkt::Error(0, _), _))),
        "{requests:?}"
    );
    requests.retain(|(p, _)| matches!(p, Pkt::Other(d) if d.starts_with(&[0, 1])));
    assert_eq!(
        requests.len(),
        1 + usize::from(config.max_retries),
        "{requests:?}"
    );
    let ports: BTreeSet<u16> = requests.iter().map(|(_, from)| from.port()).collect();
    assert_eq!(ports.len(), 1, "all from one client port");
}

#[test]
fn client_times_out_against_a_closed_port() {
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = Client::new(closed)
        .config(fast_fail())
        .put(b"f.bin", &b"data"[..], |_| {})
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Transfer(TransferError::TimedOut)),
        "{e:?}"
    );
}

#[test]
fn client_streams_to_writers_and_from_readers() {
    let root = TempDir::new("root");
    let content = pattern(200_000, 21);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut config = server_config(root.path(), &["[::1]:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let client = Client::new(server.addr()).options(opts(1024, 8));
    let (out, summary) = client.get_to_writer(b"f.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(digest(&out), digest(&content));
    assert_eq!(summary.bytes, content.len() as u64);
    let summary = client
        .put_from_reader(io::Cursor::new(content.clone()), b"streamed.bin", |_| {})
        .unwrap();
    assert_eq!(summary.bytes, content.len() as u64);
    assert!(server
        .report_for(RequestKind::Write, b"streamed.bin")
        .result
        .is_success());
    assert_eq!(file_digest(&root.join("streamed.bin")), digest(&content));
}

#[test]
fn client_put_file_of_a_directory_is_a_local_error() {
    let local = TempDir::new("local");
    let e = Client::new("127.0.0.1:9".parse().unwrap())
        .put_file(local.path(), b"x", |_| {})
        .unwrap_err();
    assert!(matches!(e, ClientError::Local { .. }), "{e:?}");
    let e = Client::new("127.0.0.1:9".parse().unwrap())
        .put_file(&local.join("missing"), b"x", |_| {})
        .unwrap_err();
    assert!(matches!(e, ClientError::Local { .. }), "{e:?}");
}

// ---- hostile sources --------------------------------------------------------------------------

/// Sends `payload` as a UDP datagram from `127.0.0.1:0` (source port 0 cannot be bound: this
/// needs a raw socket, so root or CAP_NET_RAW). `None` when raw sockets are not allowed.
fn send_from_port_zero(to: SocketAddr, payload: &[u8]) -> Option<()> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let raw = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return None,
        Err(e) => panic!("raw socket: {e}"),
    };
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&0u16.to_be_bytes()); // source port 0
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&0u16.to_be_bytes()); // no checksum (allowed over IPv4)
    udp.extend_from_slice(payload);
    let dest = SockAddr::from(SocketAddr::new(to.ip(), 0));
    raw.send_to(&udp, &dest).expect("raw send");
    Some(())
}

#[test]
fn datagrams_from_source_port_zero_do_not_stop_the_server() {
    let root = TempDir::new("root");
    fs::write(root.join("f.bin"), b"still serving").unwrap();
    for single_port in [false, true] {
        let mut config = server_config(root.path(), &["127.0.0.1:0"]);
        config.single_port = single_port;
        let server = TestServer::start(&config);
        // A request (answered by a new session or an ERROR), a stray ACK (ERROR 5) and a request
        // for a missing file (a refusal): every answer goes to port 0, which cannot be sent to.
        for payload in [rrq(b"f.bin"), ack(1), rrq(b"missing")] {
            if send_from_port_zero(server.addr(), &payload).is_none() {
                eprintln!("raw sockets not permitted: skipped");
                return;
            }
        }
        let (got, _) = Client::new(server.addr())
            .get(b"f.bin", Vec::new(), |_| {})
            .unwrap();
        assert_eq!(got, b"still serving");
        assert!(server.is_running(), "single port {single_port}");
        // Nothing can be sent to port 0: no session was started for it.
        let mut server = server;
        let reports = server.shutdown();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_ne!(reports[0].peer.port(), 0);
    }
}

// ---- more failure paths -----------------------------------------------------------------------

#[test]
fn shutdown_mid_upload_leaves_nothing() {
    let root = TempDir::new("root");
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let mut server = TestServer::start(&config);
    let sock = socket("127.0.0.1:0");
    let clock = StdClock::new();
    let content = pattern(20 * 512, 22);
    let mut t = Transfer::client(
        clock.now(),
        server.addr(),
        upload_request(b"up.bin"),
        &content[..],
        Config::default(),
    )
    .expect("request");
    assert!(!drive_by_hand(
        &sock,
        &clock,
        &mut t,
        Some(3),
        &mut BTreeSet::new()
    ));
    let reports = server.shutdown();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].result, TransferResult::Failed(TransferError::Aborted));
    assert!(list(root.path()).is_empty(), "{:?}", list(root.path()));
    // The client was told.
    let told = drain_queued(&sock);
    assert!(
        told.iter()
            .any(|(p, _)| matches!(p, Pkt::Error(0, m) if m.contains("shutting down"))),
        "{told:?}"
    );
}

#[test]
fn upload_refused_by_the_engine_leaves_nothing() {
    let root = TempDir::new("root");
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let sock = socket("127.0.0.1:0");
    sock.send_to(
        &request(RequestKind::Write, b"m.txt", Mode::Mail, &Options::NONE),
        server.addr(),
    )
    .unwrap();
    let (pkt, _) = recv(&sock);
    // Refused on its mode before the file is looked up: no session, no temporary file.
    match pkt {
        Pkt::Error(4, m) => assert_eq!(m, "mail mode is not supported: use octet or netascii"),
        other => panic!("{other:?}"),
    }
    assert!(list(root.path()).is_empty());
    let mut server = server;
    let reports = server.shutdown();
    assert!(reports.is_empty(), "a transfer was started: {reports:?}");
}

#[test]
fn long_file_names_are_served_and_uploaded() {
    let root = TempDir::new("root");
    let local = TempDir::new("local");
    // 250 bytes: a valid name (255 at most), too long for a temporary name that adds to it.
    let long = "n".repeat(250);
    fs::write(root.join(&long), b"long name").unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    let client = Client::new(server.addr());
    client
        .get_file(long.as_bytes(), &local.join(&long), |_| {})
        .expect("download to a long local name");
    assert_eq!(fs::read(local.join(&long)).unwrap(), b"long name");
    assert_eq!(list(local.path()), names(&[&long]));
    let up = "u".repeat(250);
    client
        .put(up.as_bytes(), &b"uploaded"[..], |_| {})
        .expect("upload to a long name");
    // Reports keep the first REPORT_NAME_LEN bytes of a name.
    let shown = &up.as_bytes()[..tftp_proto::server::REPORT_NAME_LEN];
    assert!(server.report_for(RequestKind::Write, shown).result.is_success());
    assert_eq!(fs::read(root.join(&up)).unwrap(), b"uploaded");
    assert_eq!(list(root.path()), names(&[&long, &up]));
}

#[test]
fn concurrent_uploads_of_one_new_name_without_overwrite_tell_the_loser() {
    let root = TempDir::new("root");
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    // Both requests are accepted while the name is still free.
    let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
    let wrq = request(RequestKind::Write, b"same.bin", Mode::Octet, &Options::NONE);
    a.send_to(&wrq, server.addr()).unwrap();
    let (pkt, tid_a) = recv(&a);
    assert_eq!(pkt, Pkt::Ack(0));
    b.send_to(&wrq, server.addr()).unwrap();
    let (pkt, tid_b) = recv(&b);
    assert_eq!(pkt, Pkt::Ack(0));
    // A finishes first and wins; B's file can no longer be committed, and B must hear so
    // instead of an ACK of its final block.
    a.send_to(&data(1, b"from a"), tid_a).unwrap();
    assert_eq!(recv(&a).0, Pkt::Ack(1));
    b.send_to(&data(1, b"from b"), tid_b).unwrap();
    let (pkt, _) = recv(&b);
    assert!(matches!(pkt, Pkt::Error(6, _)), "the loser is told: {pkt:?}");
    let ra = server.report("a", |r| r.peer == a.local_addr().unwrap());
    let rb = server.report("b", |r| r.peer == b.local_addr().unwrap());
    assert!(ra.result.is_success());
    assert!(!rb.result.is_success());
    assert_eq!(fs::read(root.join("same.bin")).unwrap(), b"from a");
    assert_eq!(list(root.path()), names(&["same.bin"]));
}

#[test]
fn a_fifo_in_the_root_does_not_block_the_server() {
    let root = TempDir::new("root");
    fs::write(root.join("f.bin"), b"regular").unwrap();
    let made = Command::new("mkfifo").arg(root.join("fifo")).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo unavailable: skipped");
        return;
    }
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    config.allow_overwrite = true;
    let server = TestServer::start(&config);
    // Should the server block opening the FIFO, a writer opening it releases it at the end (so
    // the server can be stopped and joined).
    struct Release(PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&self.0);
        }
    }
    let _release = Release(root.join("fifo"));
    let client = Client::new(server.addr());
    let e = client.get(b"fifo", Vec::new(), |_| {}).unwrap_err();
    assert!([1, 2].contains(&peer_code(&e)), "{e}");
    let e = client.put(b"fifo", &b"x"[..], |_| {}).unwrap_err();
    assert!([2, 6].contains(&peer_code(&e)), "{e}");
    let (got, _) = client.get(b"f.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"regular");
}

#[test]
fn uefi_size_probe_then_plain_request_from_the_same_port() {
    let root = TempDir::new("root");
    let content = pattern(2 * 512 + 9, 23);
    fs::write(root.join("boot.efi"), &content).unwrap();
    for single_port in [false, true] {
        let mut config = server_config(root.path(), &["127.0.0.1:0"]);
        config.single_port = single_port;
        let server = TestServer::start(&config);
        let sock = socket("127.0.0.1:0");
        let probe = request(
            RequestKind::Read,
            b"boot.efi",
            Mode::Octet,
            &Options {
                tsize: Some(0),
                ..Options::NONE
            },
        );
        sock.send_to(&probe, server.addr()).unwrap();
        let (pkt, tid) = recv(&sock);
        match pkt {
            Pkt::Oack(options) => assert_eq!(options[0].0, "tsize", "an OACK with the size"),
            other => panic!("expected an OACK, got {other:?}"),
        }
        let mut err = vec![0, 5, 0, 8];
        err.extend_from_slice(b"tsize only\0");
        sock.send_to(&err, tid).unwrap();
        sock.send_to(&rrq(b"boot.efi"), server.addr()).unwrap();
        let (got, _) = RawReader::new(&sock).run();
        assert_eq!(got, content, "single port {single_port}");
        let peer = sock.local_addr().unwrap();
        // Declined, or ended quietly when the new request was read before the ERROR 8.
        let first = server.report("the probe", |r| r.peer == peer);
        assert!(
            matches!(
                first.result,
                TransferResult::Declined | TransferResult::Failed(TransferError::Aborted)
            ),
            "{:?}",
            first.result
        );
        let second = server.report("the download", |r| r.peer == peer);
        assert_eq!(second.result, TransferResult::Completed(content.len() as u64));
    }
}

/// Runs `f` on a thread of its own in a new network namespace whose loopback interface is up and
/// also holds the link-local address fe80::1234 (root only: `None` when not permitted).
fn in_network_namespace<T: Send + 'static>(f: impl FnOnce(u32) -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only moves this thread (and the threads and
        // processes it starts) into a new network namespace; it touches no memory.
        if unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let ip = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        if !ip(&["link", "set", "lo", "up"])
            || !ip(&["-6", "addr", "add", "fe80::1234/64", "dev", "lo", "nodad"])
        {
            return None;
        }
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo's index");
        Some(f(lo))
    })
    .join()
    .expect("namespace thread")
}

#[test]
fn ipv6_link_local_clients_are_served_on_a_wildcard_bind() {
    let served = in_network_namespace(|lo| {
        let root = TempDir::new("root");
        let content = pattern(2 * 512 + 11, 24);
        fs::write(root.join("f.bin"), &content).unwrap();
        for single_port in [false, true] {
            let mut config = server_config(root.path(), &["[::]:0"]);
            config.single_port = single_port;
            let server = TestServer::start(&config);
            let target = SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::1234".parse().unwrap(),
                server.addr().port(),
                0,
                lo,
            ));
            check_reply_source(
                &server,
                &format!("[fe80::1234%{lo}]:0"),
                target,
                single_port,
                &content,
            );
        }
    });
    if served.is_none() {
        eprintln!("no network namespace (needs root and `ip`): skipped");
    }
}

// ---- batched windows ------------------------------------------------------------------------

/// What the transport and the storage of a test transfer did, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// One datagram through `send_to`.
    Single,
    /// A run of this many datagrams through `send_run`.
    Run(usize),
    Recv,
    Timeout,
    Write,
    Idle,
}

impl Ev {
    fn is_send(self) -> bool {
        matches!(self, Ev::Single | Ev::Run(_))
    }
}

type Log = std::rc::Rc<RefCell<Vec<Ev>>>;

/// A transport on 127.0.0.1 that records how `drive` uses it in a [`Log`].
struct Recorder {
    inner: UdpTransport,
    log: Log,
}

impl Recorder {
    fn new(log: &Log) -> Recorder {
        Recorder {
            inner: UdpTransport::new(UdpSocket::bind("127.0.0.1:0").unwrap()),
            log: log.clone(),
        }
    }
}

impl Transport for Recorder {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.log.borrow_mut().push(Ev::Single);
        self.inner.send_to(datagram, to)
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let got = self.inner.recv_from(buf, timeout)?;
        self.log
            .borrow_mut()
            .push(if got.is_some() { Ev::Recv } else { Ev::Timeout });
        Ok(got)
    }

    fn send_run(&mut self, datagrams: &[u8], lens: &[usize], to: SocketAddr) -> io::Result<()> {
        self.log.borrow_mut().push(Ev::Run(lens.len()));
        self.inner.send_run(datagrams, lens, to)
    }
}

/// A windowed upload leaves window by window (one run each, which `UdpTransport` sends with
/// segmentation offload or `sendmmsg`), and the server, receiving such runs coalesced, stores
/// the file whole.
#[test]
fn windowed_upload_leaves_window_by_window_and_arrives_whole() {
    const WINDOWS: usize = 40;
    let root = TempDir::new("root");
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = true;
    let server = TestServer::start(&config);
    // 40 full windows of 8 blocks of 1,024 bytes, then one short block.
    let content = pattern(WINDOWS * 8 * 1024 + 100, 67);
    let clock = StdClock::new();
    let request = ClientRequest {
        options: Options {
            blksize: Some(1024),
            windowsize: Some(8),
            ..Options::NONE
        },
        ..upload_request(b"runs.bin")
    };
    let mut transfer = Transfer::client(
        clock.now(),
        server.addr(),
        request,
        &content[..],
        Config::default(),
    )
    .unwrap();
    let log: Log = Default::default();
    let mut transport = Recorder::new(&log);
    let sent = drive(&mut transport, &mut transfer, &clock, |_| {}).expect("upload");
    assert_eq!(sent, content.len() as u64);
    assert_eq!(
        server.report_for(RequestKind::Write, b"runs.bin").result,
        TransferResult::Completed(content.len() as u64)
    );
    assert_eq!(file_digest(&root.join("runs.bin")), digest(&content));
    // Everything went through runs; every full window was one run of 8 (a late ACK may add
    // a lone probe or a resent window, never split one).
    let log = log.borrow();
    assert_eq!(log.iter().filter(|&&e| e == Ev::Single).count(), 0);
    let runs: Vec<usize> = log
        .iter()
        .filter_map(|&e| match e {
            Ev::Run(n) => Some(n),
            _ => None,
        })
        .collect();
    let full = runs.iter().filter(|&&n| n == 8).count();
    assert!(full >= WINDOWS, "runs: {runs:?}");
    assert!(runs.iter().all(|&n| n == 1 || n == 8), "runs: {runs:?}");
}

/// A download's storage that records its writes and idle turns in a [`Log`].
struct LoggingStorage {
    data: Vec<u8>,
    log: Log,
}

impl Storage for LoggingStorage {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), tftp_proto::storage::StorageError> {
        self.log.borrow_mut().push(Ev::Write);
        self.data.write_at(offset, data)
    }
    fn idle(&mut self) {
        self.log.borrow_mut().push(Ev::Idle);
    }
}

/// `drive` gives the storage its idle turn after sending and before waiting: every ACK of a
/// lock-step download is followed by the storage's idle work, and only then by the wait for
/// the next DATA, so deferred file work overlaps the round trip.
#[test]
fn drive_lets_the_storage_idle_after_sending_and_before_waiting() {
    let root = TempDir::new("root");
    let content = pattern(40 * 512 + 7, 71);
    fs::write(root.join("idle.bin"), &content).unwrap();
    let server = TestServer::start(&server_config(root.path(), &["127.0.0.1:0"]));
    let clock = StdClock::new();
    let log: Log = Default::default();
    let storage = LoggingStorage {
        data: Vec::new(),
        log: log.clone(),
    };
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"idle.bin",
        mode: TransferMode::Octet,
        options: Options::NONE,
    };
    let mut transfer =
        Transfer::client(clock.now(), server.addr(), request, storage, Config::default()).unwrap();
    let mut transport = Recorder::new(&log);
    let got = drive(&mut transport, &mut transfer, &clock, |_| {}).expect("download");
    assert_eq!(got, content.len() as u64);
    assert!(transfer.storage().data == content, "the file arrived whole");
    let log = log.borrow();
    // 41 DATA: each written, then acknowledged; the request and every ACK are followed by
    // idle, then a wait (after the final ACK, the dally: a wait that times out).
    assert_eq!(log.iter().filter(|&&e| e == Ev::Write).count(), 41);
    for (i, pair) in log.windows(2).enumerate() {
        match *pair {
            [prev, next] if prev.is_send() => assert_eq!(next, Ev::Idle, "after send {i}: {log:?}"),
            [prev, Ev::Idle] => assert!(prev.is_send(), "before idle {i}: {log:?}"),
            [Ev::Write, next] => assert!(next.is_send(), "the ACK follows the write {i}: {log:?}"),
            _ => {}
        }
    }
    // (A retransmission on a slow machine adds a send, and its idle.)
    let sends = log.iter().filter(|e| e.is_send()).count();
    assert!(sends >= 42, "the request and 41 ACKs: {log:?}");
    assert_eq!(log.iter().filter(|&&e| e == Ev::Idle).count(), sends, "{log:?}");
}

// ---- several event-loop threads -------------------------------------------------------------

/// `ServerThreads` with two threads: the requests of many clients (each from its own port) are
/// spread over both, every download arrives whole, and stopping stops both.
#[test]
fn two_threads_share_the_port_and_the_downloads() {
    const CLIENTS: usize = 32;
    let root = TempDir::new("root");
    let content = pattern(100_000, 68);
    fs::write(root.join("f.bin"), &content).unwrap();
    let config = server_config(root.path(), &["127.0.0.1:0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (report_tx, reports) = mpsc::channel();
    let report_tx = std::sync::Mutex::new(report_tx);
    let servers = tftp_proto::adapter::mio_server::ServerThreads::bind(&config, 2).expect("bind");
    let addr = servers.local_addrs()[0];
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        servers.run(&flag, |r| {
            let _ = report_tx
                .lock()
                .unwrap()
                .send((std::thread::current().id(), r.result.clone()));
        })
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                Client::new(addr)
                    .options(Options {
                        blksize: Some(1024),
                        ..Options::NONE
                    })
                    .get_to_writer(b"f.bin", &mut got, |_| {})
                    .expect("download");
                got
            })
        })
        .collect();
    for c in clients {
        assert_eq!(digest(&c.join().unwrap()), digest(&content));
    }
    let mut threads = BTreeSet::new();
    for _ in 0..CLIENTS {
        let (thread, result) = reports.recv_timeout(Duration::from_secs(10)).expect("a report");
        assert_eq!(result, TransferResult::Completed(content.len() as u64));
        threads.insert(format!("{thread:?}"));
    }
    // 32 client ports hashed over two sockets: all on one has a chance of 2^-31.
    assert_eq!(threads.len(), 2, "reports came from {threads:?}");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().expect("both servers stop cleanly");
}

/// A finished transfer as [`run_reporting_affinity`] reports it.
#[cfg(target_os = "linux")]
type AffinityReport = (String, Vec<usize>, TransferResult);

/// Runs `servers` on a thread of their own until the returned flag is set; each finished
/// transfer is reported as (the serving thread, its CPU affinity then, the result).
#[cfg(target_os = "linux")]
fn run_reporting_affinity(
    servers: tftp_proto::adapter::mio_server::ServerThreads,
) -> (
    Arc<AtomicBool>,
    mpsc::Receiver<AffinityReport>,
    std::thread::JoinHandle<io::Result<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (report_tx, reports) = mpsc::channel();
    let report_tx = std::sync::Mutex::new(report_tx);
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        servers.run(&flag, |r| {
            let mine = allowed_cpus(&fs::read_to_string("/proc/thread-self/status").unwrap());
            let thread = format!("{:?}", std::thread::current().id());
            let _ = report_tx.lock().unwrap().send((thread, mine, r.result.clone()));
        })
    });
    (stop, reports, server)
}

/// `pin_threads`: each event loop runs on one CPU of its own, the first and second of those the
/// process may use (each thread reports its own affinity with each transfer it served); with
/// fewer CPUs than threads nothing is pinned. Downloads are served as without it.
#[cfg(target_os = "linux")]
#[test]
fn pinned_threads_each_run_on_a_cpu_of_their_own() {
    const CLIENTS: usize = 32;
    let root = TempDir::new("root");
    let content = pattern(20_000, 70);
    fs::write(root.join("f.bin"), &content).unwrap();
    let config = server_config(root.path(), &["127.0.0.1:0"]);
    let process = allowed_cpus(&fs::read_to_string("/proc/self/status").unwrap());
    let servers = tftp_proto::adapter::mio_server::ServerThreads::bind(&config, 2)
        .expect("bind")
        .pin_threads(true);
    let addr = servers.local_addrs()[0];
    let (stop, reports, server) = run_reporting_affinity(servers);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                Client::new(addr)
                    .get_to_writer(b"f.bin", &mut got, |_| {})
                    .expect("download");
                got
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), content);
    }
    let mut by_thread = BTreeMap::new();
    for _ in 0..CLIENTS {
        let (thread, cpus, result) = reports.recv_timeout(Duration::from_secs(10)).expect("a report");
        assert_eq!(result, TransferResult::Completed(content.len() as u64));
        let seen = by_thread.entry(thread).or_insert_with(|| cpus.clone());
        assert_eq!(*seen, cpus, "a thread's affinity changed between transfers");
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().expect("the servers stop cleanly");
    // 32 client ports hashed over two sockets: all on one has a chance of 2^-31.
    assert_eq!(by_thread.len(), 2, "reports came from {by_thread:?}");
    let mut pinned: Vec<Vec<usize>> = by_thread.into_values().collect();
    pinned.sort();
    if process.len() >= 2 {
        assert_eq!(pinned, vec![vec![process[0]], vec![process[1]]]);
    } else {
        assert_eq!(pinned, vec![process.clone(), process]);
    }
}

/// `steer_by_cpu`: each request goes to the loop pinned to the CPU that received it, which on
/// loopback is the CPU the client sent it from. Clients pinned to each of two CPUs in turn, 16
/// in all, are each served by the loop on their own CPU (without steering, the kernel's hash of
/// each client's fresh port decides: all 16 on the right loop by chance is one in 65,536). On
/// a single CPU there is nothing to steer to: the server says so and serves as before.
#[cfg(target_os = "linux")]
#[test]
fn steered_requests_are_served_by_the_loop_on_their_cpu() {
    let root = TempDir::new("root");
    let content = pattern(20_000, 71);
    fs::write(root.join("f.bin"), &content).unwrap();
    let config = server_config(root.path(), &["127.0.0.1:0"]);
    let process = allowed_cpus(&fs::read_to_string("/proc/self/status").unwrap());
    let servers = tftp_proto::adapter::mio_server::ServerThreads::bind(&config, 2)
        .expect("bind")
        .steer_by_cpu();
    assert_eq!(servers.steers_by_cpu(), process.len() >= 2, "CPUs {process:?}");
    let addr = servers.local_addrs()[0];
    let (stop, reports, server) = run_reporting_affinity(servers);
    let targets: Vec<usize> = process.iter().copied().take(2).collect();
    for round in 0..8 {
        for &cpu in &targets {
            let got = std::thread::spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin the client");
                let mut got = Vec::new();
                Client::new(addr)
                    .get_to_writer(b"f.bin", &mut got, |_| {})
                    .expect("download");
                got
            })
            .join()
            .unwrap();
            assert_eq!(got, content);
            let (_, served_on, result) = reports.recv_timeout(Duration::from_secs(10)).expect("a report");
            assert_eq!(result, TransferResult::Completed(content.len() as u64));
            if targets.len() >= 2 {
                assert_eq!(
                    served_on,
                    vec![cpu],
                    "round {round}: a request sent on CPU {cpu} was served by the loop on {served_on:?}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().expect("the servers stop cleanly");
}

/// The session cap is one budget for all the threads: with four threads and `max_sessions` 3,
/// three stalled sessions (whose clients answered) start wherever the kernel hands their
/// requests (with the cap shared out, 1 per thread, two requests on one thread would be
/// refused), the fourth request gets "Server busy", and a session that ends gives its place
/// back.
#[test]
fn session_cap_is_one_budget_across_threads() {
    let root = TempDir::new("root");
    let content = pattern(10 * 512, 69);
    fs::write(root.join("f.bin"), &content).unwrap();
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.max_sessions = 3;
    let servers = tftp_proto::adapter::mio_server::ServerThreads::bind(&config, 4).expect("bind");
    let addr = servers.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || servers.run(&flag, |_| {}));
    for round in 0..3 {
        // Fresh client ports each round: the kernel spreads them over the threads anew.
        let stalled: Vec<(UdpSocket, SocketAddr)> = (0..3)
            .map(|_| {
                let s = socket("127.0.0.1:0");
                s.send_to(&rrq(b"f.bin"), addr).unwrap();
                let (pkt, tid) = recv(&s);
                assert!(matches!(pkt, Pkt::Data(1, _)), "round {round}: refused: {pkt:?}");
                // The client answers (so it cannot be displaced), then stalls.
                s.send_to(&ack(1), tid).unwrap();
                assert!(matches!(recv(&s).0, Pkt::Data(2, _)));
                (s, tid)
            })
            .collect();
        let fourth = socket("127.0.0.1:0");
        fourth.send_to(&rrq(b"f.bin"), addr).unwrap();
        let (pkt, _) = recv(&fourth);
        assert!(
            matches!(pkt, Pkt::Error(0, ref m) if m.contains("busy")),
            "round {round}: {pkt:?}"
        );
        // The clients give up: their sessions end at once and give their places back.
        for (s, tid) in &stalled {
            s.send_to(b"\x00\x05\x00\x00client gone\x00", *tid).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = Client::new(addr)
                .config(fast_fail())
                .get(b"f.bin", Vec::new(), |_| {})
                .map(|(got, _)| got);
            if got.as_ref().is_ok_and(|g| *g == content) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no place came back: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().expect("the servers stop cleanly");
}

/// At the cap, a request displaces the oldest session whose client never answered, whichever
/// thread holds it: with one thread and with four (where the request may reach a thread with no
/// session of its own, which then asks the one that has it). The displaced client gets ERROR 0
/// from its session's port and its report says `Displaced`; the newcomer is served at its
/// first request and completes; a session whose client answered is never displaced.
#[test]
fn session_cap_displaces_the_oldest_silent_session_on_any_thread() {
    let root = TempDir::new("root");
    let content = pattern(10 * 512, 70);
    fs::write(root.join("f.bin"), &content).unwrap();
    for threads in [1, 4] {
        let mut config = server_config(root.path(), &["127.0.0.1:0"]);
        config.max_sessions = 3;
        let servers = tftp_proto::adapter::mio_server::ServerThreads::bind(&config, threads).expect("bind");
        let addr = servers.local_addrs()[0];
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&reports);
        let server = std::thread::spawn(move || {
            servers.run(&flag, |r| sink.lock().unwrap().push((r.peer, r.result.clone())))
        });
        // One client that answers, then two that never do (spoofed, or gone), oldest first.
        let answering = socket("127.0.0.1:0");
        answering.send_to(&rrq(b"f.bin"), addr).unwrap();
        let (pkt, tid) = recv(&answering);
        assert!(matches!(pkt, Pkt::Data(1, _)));
        answering.send_to(&ack(1), tid).unwrap();
        assert!(matches!(recv(&answering).0, Pkt::Data(2, _)));
        let silent: Vec<(UdpSocket, SocketAddr)> = (0..2)
            .map(|_| {
                let s = socket("127.0.0.1:0");
                s.send_to(&rrq(b"f.bin"), addr).unwrap();
                let (pkt, tid) = recv(&s);
                assert!(matches!(pkt, Pkt::Data(1, _)));
                (s, tid)
            })
            .collect();
        // The newcomer is served at its first request.
        let (got, _) = Client::new(addr)
            .config(fast_fail())
            .get(b"f.bin", Vec::new(), |_| {})
            .unwrap_or_else(|e| panic!("{threads} threads: newcomer not served: {e}"));
        assert_eq!(got, content);
        // A silent session was displaced (with one thread, the oldest): its report says so,
        // and its client got ERROR 0 from the session's own port.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let victim = loop {
            let found = reports
                .lock()
                .unwrap()
                .iter()
                .find(|(_, r)| *r == TransferResult::Displaced)
                .map(|(p, _)| *p);
            if let Some(p) = found {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "no session was displaced");
            std::thread::sleep(Duration::from_millis(20));
        };
        let k = silent
            .iter()
            .position(|(s, _)| s.local_addr().unwrap() == victim)
            .unwrap_or_else(|| panic!("{threads} threads: displaced {victim}, not a silent client"));
        if threads == 1 {
            assert_eq!(k, 0, "the oldest silent session goes first");
        }
        let (socket_k, tid_k) = &silent[k];
        let got = drain_queued(socket_k);
        assert!(
            got.iter()
                .any(|(p, from)| matches!(p, Pkt::Error(0, m) if m.contains("busy")) && from == tid_k),
            "{threads} threads: {got:?}"
        );
        let displaced_count = reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| *r == TransferResult::Displaced)
            .count();
        assert_eq!(displaced_count, 1, "one session made room for one newcomer");
        // The answering client was not displaced: it carries on to the end.
        let mut block = 2u16;
        loop {
            answering.send_to(&ack(block), tid).unwrap();
            match recv(&answering).0 {
                Pkt::Data(b, d) if b == block + 1 => {
                    block = b;
                    if d.len() < 512 {
                        answering.send_to(&ack(block), tid).unwrap();
                        break;
                    }
                }
                Pkt::Data(b, _) if b == block => continue,
                other => panic!("{threads} threads: the answering client got {other:?}"),
            }
        }
        assert!(block >= 10);
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().expect("server stops cleanly");
    }
}

/// The request hook sees every request (peer, local address, name, mode, options) before the
/// server's own policy and decides: it serves generated content (with `tsize` from the
/// storage's size), receives an upload into its own storage (which gets `finish` with the whole
/// file), refuses with its own ERROR code and text, or falls through to the root (where the
/// remap rules and the root apply as usual).
#[test]
fn request_hook_serves_receives_refuses_or_falls_through() {
    use tftp_proto::adapter::mio_server::{HookDecision, ServerThreads};
    use tftp_proto::storage::{Storage, StorageError};
    let root = TempDir::new("root");
    let on_disk = pattern(3000, 91);
    fs::write(root.join("disk.bin"), &on_disk).unwrap();
    fs::write(root.join("mapped.bin"), b"mapped").unwrap();
    #[derive(Default)]
    struct Seen(Vec<(SocketAddr, Vec<u8>, String, Option<u16>)>);
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Inbox(Vec<u8>, Arc<std::sync::Mutex<Vec<Vec<u8>>>>);
    impl Storage for Inbox {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
            let end = offset as usize + data.len();
            if self.0.len() < end {
                self.0.resize(end, 0);
            }
            self.0[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), StorageError> {
            self.1.lock().unwrap().push(std::mem::take(&mut self.0));
            Ok(())
        }
    }
    let generated = pattern(10_000, 92);
    let mut config = server_config(root.path(), &["127.0.0.1:0"]);
    config.allow_write = false;
    config.remap = Some(tftp_proto::adapter::remap::Remap::parse("r ^alias$ mapped.bin").unwrap());
    let (seen_in, inbox, gen) = (Arc::clone(&seen), Arc::clone(&received), generated.clone());
    let config = config.with_request_hook(move |req| {
        seen_in.lock().unwrap().0.push((
            req.peer,
            req.filename.to_vec(),
            String::from_utf8_lossy(req.mode.as_bytes()).into_owned(),
            req.options.blksize,
        ));
        match req.filename {
            b"generated.bin" => HookDecision::Serve(Box::new(gen.clone())),
            b"inbox.bin" => HookDecision::Serve(Box::new(Inbox(Vec::new(), Arc::clone(&inbox)))),
            b"forbidden.bin" => HookDecision::Refuse {
                code: ErrorCode::from_u16(7),
                message: "ask the admin".into(),
            },
            _ => HookDecision::FallThrough,
        }
    });
    let servers = ServerThreads::bind(&config, 1).expect("bind");
    let addr = servers.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || servers.run(&flag, |_| {}));
    let client = Client::new(addr).options(Options {
        blksize: Some(1024),
        tsize: Some(0),
        ..Options::NONE
    });
    let (got, summary) = client.get(b"generated.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, generated);
    assert_eq!(
        summary.params.tsize,
        Some(generated.len() as u64),
        "tsize from the storage"
    );
    let upload = pattern(5000, 93);
    client.put(b"inbox.bin", &upload[..], |_| {}).unwrap();
    assert_eq!(
        *received.lock().unwrap(),
        [upload],
        "finished with the whole file"
    );
    match client.get(b"forbidden.bin", Vec::new(), |_| {}) {
        Err(ClientError::Transfer(TransferError::Peer(p))) => {
            assert_eq!(p.code.as_u16(), 7);
            assert_eq!(p.message(), b"ask the admin");
        }
        other => panic!("{other:?}"),
    }
    let (got, _) = client.get(b"disk.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, on_disk, "fell through to the root");
    let (got, _) = client.get(b"alias", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"mapped", "the remap rules apply after the hook");
    // A write the hook lets through meets the root's read-only policy.
    assert!(client.put(b"other.bin", &b"x"[..], |_| {}).is_err());
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().unwrap();
    let seen = seen.lock().unwrap();
    let names: Vec<&[u8]> = seen.0.iter().map(|(_, n, _, _)| n.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"generated.bin"[..],
            b"inbox.bin",
            b"forbidden.bin",
            b"disk.bin",
            b"alias",
            b"other.bin"
        ]
    );
    assert!(seen
        .0
        .iter()
        .all(|(p, _, m, b)| p.ip() == addr.ip() && m == "octet" && *b == Some(1024)));
}
