//! Hardening: filesystem faults under a running std server on loopback.
//!
//! * Disk full during an upload (a 1 MiB tmpfs mounted as the root; needs root, as CI runs):
//!   the client gets ERROR 3, the temporary file is removed and an existing file is left intact,
//!   with and without `allow_overwrite`. Where `mount` is not permitted the test says so loudly
//!   and checks the same at the library level (a `ServerTable` whose storage fills up).
//! * Files the server may not read. Root bypasses permission bits, so as root the server thread
//!   drops `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` from its own effective set (capabilities
//!   are per thread on Linux): a mode-000 file and a mode-000 directory then really are
//!   unreadable to it, and get ERROR 2. Entries that cannot be opened as files (a dangling
//!   symlink, a Unix socket) are refused too. The library-level case (a storage answering
//!   `AccessDenied`) is in `hardening_core.rs`.
//! * A file that changes size while a windowed download is paused (the hand-driven client holds
//!   back its ACK): truncated below or beyond the position, or extended. The client gets an
//!   ERROR, never a complete-looking short or spliced file. The same for an upload whose local
//!   file shrinks: the server never commits it.
#![cfg(feature = "std")]

#[path = "common/loopback.rs"]
mod loopback;

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loopback::*;
use tftp_proto::adapter::client::Client;
use tftp_proto::adapter::mio_server::{Server, ServerConfig};
use tftp_proto::adapter::StdClock;
use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferError, TransferMode};
use tftp_proto::server::{ArrayTable, Datagram, ServerTable, TransferResult};
use tftp_proto::storage::StorageError;
use tftp_proto::{Instant, Mode, Options, Packet, RequestKind};

fn patient() -> Config {
    Config {
        initial_rto: Duration::from_secs(1),
        min_rto: Duration::from_millis(200),
        max_rto: Duration::from_secs(2),
        max_retries: 6,
        ..Config::default()
    }
}

fn server_config(root: &Path, edit: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = config(root, "127.0.0.1:0");
    c.engine = patient();
    edit(&mut c);
    c
}

fn loud(note: &str) {
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! NOTE: {note}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

// ---- disk full ---------------------------------------------------------------------------------

/// A small tmpfs mounted on a temporary directory; unmounted (then removed) when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// `None` when mounting is not permitted here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

#[test]
fn disk_full_during_an_upload_is_error_3_and_leaves_nothing() {
    let Some(fs1m) = Tmpfs::mount("1m") else {
        loud(
            "mount -t tmpfs is not permitted here (needs root): disk full is checked at the \
             library level only (a ServerTable whose storage fills up), not on a real filesystem",
        );
        disk_full_at_the_library_level();
        return;
    };
    let root = fs1m.path();
    put_probe(root);
    let original = pattern(100_000, 1);
    fs::write(root.join("target.bin"), &original).unwrap();
    let big = pattern(2 << 20, 2);
    for overwrite in [false, true] {
        let server = Harness::start(&server_config(root, |c| {
            c.allow_write = true;
            c.allow_overwrite = overwrite;
        }));
        // A new name fills the disk in its temporary file; so does the replacement of an
        // existing one (refused up front with ERROR 6 without allow_overwrite).
        for (name, options) in [
            ("new.bin", Options::NONE),
            (
                "new.bin",
                Options {
                    blksize: Some(1428),
                    windowsize: Some(8),
                    ..Options::NONE
                },
            ),
            ("target.bin", Options::NONE),
        ] {
            let e = Client::new(server.addr())
                .options(options)
                .put(name.as_bytes(), &big[..], |_| {})
                .unwrap_err();
            let code = peer_code(&e);
            if name == "target.bin" && !overwrite {
                assert_eq!(code, 6, "existing file without allow_overwrite");
                continue;
            }
            assert_eq!(code, 3, "{name} (overwrite {overwrite}, {options:?}): {e}");
            let r = server.report_for(RequestKind::Write, name.as_bytes());
            assert_eq!(
                r.result,
                TransferResult::Failed(TransferError::Storage(StorageError::DiskFull))
            );
            assert!(temp_files(root).is_empty(), "{:?}", temp_files(root));
            assert_eq!(list(root), names(&[PROBE_NAME, "target.bin"]));
            assert!(fs::read(root.join("target.bin")).unwrap() == original);
            assert_still_serves(server.addr(), "a full disk");
        }
        // The space came back: an upload that fits works.
        let fits = pattern(300_000, 3);
        Client::new(server.addr())
            .put(b"fits.bin", &fits[..], |_| {})
            .expect("an upload that fits");
        assert!(server
            .report_for(RequestKind::Write, b"fits.bin")
            .result
            .is_success());
        assert!(fs::read(root.join("fits.bin")).unwrap() == fits);
        fs::remove_file(root.join("fits.bin")).unwrap();
    }
}

/// The fallback (and a test of its own): an in-memory storage that is full after 1000 bytes,
/// under a `ServerTable`.
#[test]
fn disk_full_at_the_library_level() {
    let mut table: ArrayTable<heapless::Vec<u8, 1000>, 4> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let (listen, peer, tid): (SocketAddr, SocketAddr, SocketAddr) = (
        "10.0.0.1:69".parse().unwrap(),
        "10.0.0.2:4000".parse().unwrap(),
        "10.0.0.1:5000".parse().unwrap(),
    );
    let now = Instant::ZERO;
    let req = wrq(b"up.bin");
    let Datagram::Request(incoming) = table.handle_datagram(now, listen, peer, true, &req) else {
        panic!("a request")
    };
    table.accept(now, &incoming, heapless::Vec::new(), tid).unwrap();
    let mut buf = [0u8; 600];
    let mut sent = Vec::new();
    while let Some(tx) = table.poll_transmit(now, &mut buf) {
        sent.push(buf[..tx.len].to_vec());
    }
    for block in 1..=3u16 {
        let _ = table.handle_datagram(now, tid, peer, false, &data(block, &[1; 512]));
        while let Some(tx) = table.poll_transmit(now, &mut buf) {
            sent.push(buf[..tx.len].to_vec());
        }
    }
    let last = sent.last().unwrap();
    assert!(matches!(Packet::parse(last), Ok(Packet::Error { code, .. }) if code.as_u16() == 3));
    let report = table.poll_finished(now).unwrap();
    assert_eq!(
        report.result,
        TransferResult::Failed(TransferError::Storage(StorageError::DiskFull))
    );
}

// ---- files the server may not read -----------------------------------------------------------------

/// Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling thread's effective set, so
/// permission bits apply to it even as root. Capabilities are per thread on Linux.
fn drop_dac_capabilities() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a version-3 header and two data structs, as capget(2) says;
    // both point to live, properly sized and aligned values.
    unsafe {
        if nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return false;
        }
        data[0].effective &= !((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH));
        nix::libc::syscall(nix::libc::SYS_capset, &mut header, data.as_ptr()) == 0
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unreadable_files_are_error_2() {
    let root = TempDir::new("unreadable");
    put_probe(root.path());
    fs::write(root.join("secret.bin"), b"no one may read this").unwrap();
    fs::create_dir(root.join("closed")).unwrap();
    fs::write(root.join("closed/inside.bin"), b"behind a closed door").unwrap();
    fs::create_dir(root.join("readonly")).unwrap();
    set_mode(&root.join("secret.bin"), 0o000);
    set_mode(&root.join("closed"), 0o000);
    set_mode(&root.join("readonly"), 0o555);
    let c = server_config(root.path(), |c| c.allow_write = true);
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let is_root = unsafe { nix::libc::geteuid() } == 0;
    // The server thread checks that the permissions really bind it (they do unless it is root
    // and cannot drop its capabilities).
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = root.join("secret.bin");
    let server = Harness::run(Server::bind(&c).expect("bind"), move || {
        if is_root {
            drop_dac_capabilities();
        }
        let _ = tx.send(fs::read(&probe).is_err());
    });
    let binding = rx.recv().unwrap();
    let cleanup = || {
        set_mode(&root.join("closed"), 0o755);
        set_mode(&root.join("readonly"), 0o755);
    };
    if !binding {
        cleanup();
        loud("permission bits do not bind the server thread (root without capset?): unreadable files not tested on a real filesystem");
        return;
    }
    let client = Client::new(server.addr());
    for name in [&b"secret.bin"[..], b"closed/inside.bin"] {
        let e = client.get(name, Vec::new(), |_| {}).unwrap_err();
        assert_eq!(peer_code(&e), 2, "{}: {e}", String::from_utf8_lossy(name));
        assert_still_serves(server.addr(), "an unreadable file");
    }
    // A directory the server may not write to: the upload is refused, nothing is left there.
    let e = client.put(b"readonly/new.bin", &b"x"[..], |_| {}).unwrap_err();
    assert_eq!(peer_code(&e), 2, "{e}");
    cleanup();
    assert!(list(&root.join("readonly")).is_empty());
    assert_still_serves(server.addr(), "an unwritable directory");
}

#[test]
fn entries_that_are_not_files_are_refused() {
    use std::os::unix::fs::symlink;
    let root = TempDir::new("special");
    put_probe(root.path());
    symlink("missing-target", root.join("dangling")).unwrap();
    symlink(".", root.join("loop")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    let server = Harness::start(&server_config(root.path(), |_| {}));
    let client = Client::new(server.addr());
    for (name, codes) in [
        (&b"dangling"[..], &[1u16][..]),
        (b"socket", &[2]),
        (b"loop", &[1, 2]),
        (b"loop/loop/loop/probe.bin/x", &[1]),
        (b"probe.bin/x", &[1]),
    ] {
        let e = client.get(name, Vec::new(), |_| {}).unwrap_err();
        let code = peer_code(&e);
        assert!(codes.contains(&code), "{}: {e}", String::from_utf8_lossy(name));
        assert_still_serves(server.addr(), &String::from_utf8_lossy(name));
    }
}

// ---- a file that changes size during a read --------------------------------------------------------

/// How the file changes while the download is paused after its first window.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Truncated below what was already sent.
    TruncateBelow,
    /// Truncated to exactly what was already sent.
    TruncateAtPosition,
    /// Truncated beyond what was sent (the next window reaches the new end).
    TruncateBeyond,
    /// Extended.
    Extend,
}

/// Downloads a 40-block file with windowsize 4 by hand, holding back the ACK of the first
/// window while `change` is applied; returns the packet that ended the download (an ERROR, or
/// the final short DATA) and the bytes received in order.
fn download_while_changing(change: Change, use_tsize: bool) -> (Pkt, Vec<u8>) {
    let root = TempDir::new("changing");
    put_probe(root.path());
    let path = root.join("moving.bin");
    let original = pattern(40 * 512 + 77, 40);
    fs::write(&path, &original).unwrap();
    let server = Harness::start(&server_config(root.path(), |_| {}));
    let sock = socket("127.0.0.1:0");
    let options = Options {
        windowsize: Some(4),
        tsize: use_tsize.then_some(0),
        ..Options::NONE
    };
    sock.send_to(
        &request(RequestKind::Read, b"moving.bin", Mode::Octet, &options),
        server.addr(),
    )
    .unwrap();
    let (pkt, tid) = recv(&sock);
    assert!(matches!(pkt, Pkt::Oack(_)), "{pkt:?}");
    sock.send_to(&ack(0), tid).unwrap();
    let mut got = Vec::new();
    let mut expected = 1u16;
    let end = loop {
        let (pkt, from) = recv(&sock);
        assert_eq!(from, tid);
        match pkt {
            Pkt::Data(b, payload) if b == expected => {
                got.extend_from_slice(&payload);
                expected += 1;
                if payload.len() < 512 {
                    sock.send_to(&ack(b), tid).unwrap();
                    break Pkt::Data(b, payload);
                }
                if b == 4 {
                    // The first window is in; its ACK is held back while the file changes.
                    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                    match change {
                        Change::TruncateBelow => f.set_len(3 * 512 + 10).unwrap(),
                        Change::TruncateAtPosition => f.set_len(4 * 512).unwrap(),
                        Change::TruncateBeyond => f.set_len(6 * 512 + 100).unwrap(),
                        Change::Extend => f.set_len(original.len() as u64 + 5000).unwrap(),
                    }
                }
                if b.is_multiple_of(4) {
                    sock.send_to(&ack(b), tid).unwrap();
                }
            }
            // Retransmissions of blocks already held.
            Pkt::Data(b, _) if b < expected => {}
            other => break other,
        }
    };
    let r = server.report_for(RequestKind::Read, b"moving.bin");
    if matches!(end, Pkt::Error(..)) {
        assert_eq!(
            r.result,
            TransferResult::Failed(TransferError::Storage(StorageError::Changed))
        );
    }
    assert_still_serves(server.addr(), &format!("{change:?}"));
    (end, got)
}

#[test]
fn file_changing_size_during_a_windowed_download_is_an_error() {
    for change in [
        Change::TruncateBelow,
        Change::TruncateAtPosition,
        Change::TruncateBeyond,
        Change::Extend,
    ] {
        for use_tsize in [false, true] {
            let (end, got) = download_while_changing(change, use_tsize);
            match end {
                Pkt::Error(0, m) => assert_eq!(m, "File changed during transfer"),
                other => panic!(
                    "{change:?} (tsize {use_tsize}): the download ended with {other:?} after {} bytes \
                     instead of an ERROR: the client would keep a truncated or spliced file",
                    got.len()
                ),
            }
        }
    }
}

/// The client side of the same: an upload whose local file shrinks mid-way fails on the client
/// with `Changed`, the server hears ERROR 0 and commits nothing.
#[test]
fn local_file_shrinking_during_an_upload_is_never_committed() {
    let root = TempDir::new("shrinking-upload");
    put_probe(root.path());
    let local = TempDir::new("shrinking-local");
    let path = local.join("local.bin");
    fs::write(&path, pattern(30 * 512 + 5, 30)).unwrap();
    let server = Harness::start(&server_config(root.path(), |c| c.allow_write = true));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let clock = StdClock::new();
    let file = fs::File::open(&path).unwrap();
    let request = ClientRequest {
        kind: RequestKind::Write,
        filename: b"up.bin",
        mode: TransferMode::Octet,
        options: Options {
            windowsize: Some(4),
            tsize: Some(0),
            ..Options::NONE
        },
    };
    let mut t = Transfer::client(clock.now(), server.addr(), request, file, Config::default()).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut rx = vec![0u8; 65536];
    let mut data_sent = 0;
    let mut shrunk = false;
    let deadline = std::time::Instant::now() + WAIT;
    while !t.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the upload never ended");
        while let Some(tx) = t.poll_transmit(clock.now(), &mut buf) {
            if buf[..2] == [0, 3] {
                data_sent += 1;
            }
            sock.send_to(&buf[..tx.len], tx.destination).unwrap();
        }
        while t.poll_event().is_some() {}
        if data_sent >= 8 && !shrunk {
            shrunk = true;
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(5 * 512 + 1)
                .unwrap();
        }
        if t.is_finished() {
            break;
        }
        let wait = t.poll_timeout().map_or(Duration::from_millis(10), |d| {
            d.saturating_duration_since(clock.now())
        });
        sock.set_read_timeout(Some(wait.max(Duration::from_micros(1))))
            .unwrap();
        match sock.recv_from(&mut rx) {
            Ok((n, from)) => t.handle_datagram(clock.now(), from, &rx[..n]),
            Err(_) => t.handle_timeout(clock.now()),
        }
    }
    assert_eq!(
        t.outcome(),
        Some(Err(&TransferError::Storage(StorageError::Changed)))
    );
    let r = server.report_for(RequestKind::Write, b"up.bin");
    match r.result {
        TransferResult::Failed(TransferError::Peer(p)) => assert_eq!(p.code.as_u16(), 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        list(root.path()),
        names(&[PROBE_NAME]),
        "nothing committed, no temp file"
    );
}
