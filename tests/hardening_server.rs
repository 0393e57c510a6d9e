//! Hardening, level (b): every line of PROTOCOL.md's "Bad input seen in the wild" against a
//! running std server over loopback, with raw `UdpSocket`s crafting the hostile datagrams (and,
//! for the lines about what a *server* may send, a hostile server played by hand against the
//! std client). Each case gets the right ERROR or is dropped, the server keeps serving (after
//! each hostile input a normal client download must still succeed), and nothing outside the
//! root is touched. Level (a), the engine and the `ServerTable` directly, is
//! `tests/hardening_core.rs`; the table mapping each line to its tests at both levels is in
//! `SECURITY.md`.
//!
//! "Dropped" is checked without waiting on the clock: the listening socket handles datagrams in
//! order, so the hostile datagram is followed by a marker (a stray ACK, which gets ERROR 5), and
//! an answer to the hostile datagram could only arrive before the marker's.
//! On a session port the marker is the peer's next ACK, which the session answers with its next
//! DATA.
#![cfg(feature = "std")]

#[path = "common/loopback.rs"]
mod loopback;

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopback::*;
use tftp_proto::adapter::client::{Client, ClientError};
use tftp_proto::adapter::mio_server::ServerConfig;
use tftp_proto::engine::{Config, OackError, ProtocolError, TransferError};
use tftp_proto::server::TransferResult;
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{Mode, Options, Packet, RequestKind};

// ---- helpers ----------------------------------------------------------------------------------

/// Engine timing for hand-driven sessions: a stalled test thread (a loaded CI machine) must not
/// make the server give up: at least 0.2 + 0.4 + 0.8 + 1.6 + 2 + 2 s of silence.
fn patient() -> Config {
    Config {
        initial_rto: Duration::from_secs(1),
        min_rto: Duration::from_millis(200),
        max_rto: Duration::from_secs(2),
        max_retries: 6,
        ..Config::default()
    }
}

/// A server on 127.0.0.1 serving a fresh root holding the probe file, with patient timing.
fn start(tag: &str, edit: impl FnOnce(&mut ServerConfig)) -> (TempDir, Harness) {
    let root = TempDir::new(tag);
    put_probe(root.path());
    let mut c = config(root.path(), "127.0.0.1:0");
    c.engine = patient();
    edit(&mut c);
    let server = Harness::start(&c);
    (root, server)
}

/// The marker: an ACK from a stranger to the listening port, answered with ERROR 5.
fn marker() -> Vec<u8> {
    ack(0xBEEF)
}

/// Sends `hostile` (never a DATA or ACK, whose answer would look like the marker's) from `sock`
/// to the listening port `to`, then the marker; returns every answer that came before the
/// marker's ERROR 5, i.e. the server's whole answer to `hostile`.
fn answers_on_listener(sock: &UdpSocket, to: SocketAddr, hostile: &[u8]) -> Vec<(Pkt, SocketAddr)> {
    assert!(!matches!(hostile.get(..2), Some([0, 3 | 4])));
    sock.send_to(hostile, to).expect("send hostile");
    sock.send_to(&marker(), to).expect("send marker");
    let mut before = Vec::new();
    loop {
        let (pkt, from) = recv(sock);
        if from == to && matches!(&pkt, Pkt::Error(5, m) if m == "Unknown transfer ID") {
            return before;
        }
        before.push((pkt, from));
    }
}

/// Reports of anything but the probe downloads of [`assert_still_serves`].
fn reports_but_probes(server: &Harness) -> Vec<Report> {
    server
        .drain_reports()
        .into_iter()
        .filter(|r| r.filename != PROBE_NAME.as_bytes())
        .collect()
}

/// Like [`answers_on_listener`] for a datagram that must be answered with exactly one ERROR
/// `code` from the listening port; returns its message.
fn refused_on_listener(sock: &UdpSocket, to: SocketAddr, hostile: &[u8], code: u16, what: &str) -> String {
    let answers = answers_on_listener(sock, to, hostile);
    match &answers[..] {
        [(Pkt::Error(c, m), from)] if *c == code && *from == to => m.clone(),
        other => panic!("{what}: expected exactly one ERROR {code} from {to}, got {other:?}"),
    }
}

/// A plain RFC 1350 download (blksize 512, windowsize 1) driven packet by packet.
struct Reader {
    sock: UdpSocket,
    tid: SocketAddr,
    /// The next block expected.
    expected: u16,
    data: Vec<u8>,
    done: bool,
}

impl Reader {
    /// Sends the RRQ and receives DATA 1.
    fn start(server: SocketAddr, name: &[u8]) -> Reader {
        let sock = socket("127.0.0.1:0");
        sock.send_to(&rrq(name), server).unwrap();
        let (pkt, tid) = recv(&sock);
        let Pkt::Data(1, payload) = pkt else {
            panic!("expected DATA 1, got {pkt:?}")
        };
        assert_ne!(tid, server, "a port of its own");
        let done = payload.len() < 512;
        Reader {
            sock,
            tid,
            expected: 2,
            data: payload,
            done,
        }
    }

    /// Acknowledges the last block and receives the next one; the first datagram that is not a
    /// repeat must be it (so anything sent in between got no answer).
    fn step(&mut self) {
        assert!(!self.done);
        self.sock.send_to(&ack(self.expected - 1), self.tid).unwrap();
        loop {
            let (pkt, from) = recv(&self.sock);
            assert_eq!(from, self.tid, "{pkt:?} from another port");
            match pkt {
                Pkt::Data(b, payload) if b == self.expected => {
                    self.done = payload.len() < 512;
                    self.data.extend_from_slice(&payload);
                    self.expected += 1;
                    return;
                }
                // A retransmission of the block before (the server's timer): not an answer.
                Pkt::Data(b, _) if b + 1 == self.expected => {}
                other => panic!("expected DATA {}, got {other:?}", self.expected),
            }
        }
    }

    /// Sends `hostile` to the session from the peer's own port.
    fn peer_sends(&self, hostile: &[u8]) {
        self.sock.send_to(hostile, self.tid).unwrap();
    }

    /// Sends `hostile` to the session from `stranger`, lets the peer take one step (the session
    /// socket handles datagrams in order), and returns what `stranger` was sent.
    fn stranger_sends(&mut self, stranger: &UdpSocket, hostile: &[u8]) -> Vec<Pkt> {
        stranger.send_to(hostile, self.tid).unwrap();
        self.step();
        drain(stranger)
    }

    fn finish(mut self) -> Vec<u8> {
        while !self.done {
            self.step();
        }
        self.sock.send_to(&ack(self.expected - 1), self.tid).unwrap();
        self.data
    }
}

/// Every datagram already queued on `s` (loopback delivers on send).
fn drain(s: &UdpSocket) -> Vec<Pkt> {
    s.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => out.push(parse(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => break,
        }
    }
    s.set_nonblocking(false).unwrap();
    out
}

/// The file served by the session tests: 20 blocks and a bit.
fn session_file(root: &Path) -> Vec<u8> {
    let content = pattern(20 * 512 + 100, 0x5e55);
    fs::write(root.join("s.bin"), &content).unwrap();
    content
}

/// A hostile server played by hand: it receives the client's request on its listening socket
/// and hands `script` the request, the client's address and a second socket (its TID).
fn fake_server<T: Send + 'static>(
    script: impl FnOnce(&UdpSocket, &UdpSocket, SocketAddr, Vec<u8>) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listen = socket("127.0.0.1:0");
    let addr = listen.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let tid = socket("127.0.0.1:0");
        let mut buf = vec![0u8; 65536];
        let (n, client) = listen.recv_from(&mut buf).expect("the client's request");
        script(&listen, &tid, client, buf[..n].to_vec())
    });
    (addr, t)
}

/// A client that gives up quickly on a silent or broken server.
fn quick_client(server: SocketAddr, options: Options) -> Client {
    Client::new(server).options(options).config(Config {
        initial_rto: Duration::from_millis(200),
        min_rto: Duration::from_millis(200),
        max_rto: Duration::from_millis(400),
        max_retries: 3,
        total_timeout: Duration::ZERO,
        ..Config::default()
    })
}

/// The fake server sends `content` in DATA blocks of `blksize` from `tid`, lockstep.
fn fake_send_blocks(tid: &UdpSocket, client: SocketAddr, content: &[u8], blksize: usize) {
    let mut block = 1u16;
    let mut off = 0;
    loop {
        let end = (off + blksize).min(content.len());
        tid.send_to(&data(block, &content[off..end]), client).unwrap();
        loop {
            let (pkt, _) = recv(tid);
            match pkt {
                Pkt::Ack(b) if b == block => break,
                Pkt::Ack(_) => {}
                other => panic!("fake server: expected ACK {block}, got {other:?}"),
            }
        }
        if end - off < blksize {
            return;
        }
        off = end;
        block += 1;
    }
}

fn options_of(request: &[u8]) -> Options {
    match Packet::parse(request).expect("a request") {
        Packet::Rrq(r) | Packet::Wrq(r) => Options::parse_request(&r.options).options,
        other => panic!("not a request: {other:?}"),
    }
}

// ---- ERROR packets of 0-3 bytes, text without NUL, text longer than the buffer -------------------

const SHORT_ERRORS: [&[u8]; 4] = [b"", b"\x00", b"\x00\x05", b"\x00\x05\x00"];

#[test]
fn short_error_packets_to_the_listening_port() {
    let (_root, server) = start("short-err-listen", |_| {});
    let sock = socket("127.0.0.1:0");
    for d in SHORT_ERRORS {
        let answers = answers_on_listener(&sock, server.addr(), d);
        if d.starts_with(b"\x00\x05") {
            // Recognisably an ERROR: never answered, however malformed.
            assert!(answers.is_empty(), "{d:?} was answered: {answers:?}");
        } else {
            // Not even an opcode: one ERROR 4, from the listening port.
            match &answers[..] {
                [(Pkt::Error(4, _), from)] if *from == server.addr() => {}
                other => panic!("{d:?}: {other:?}"),
            }
        }
        assert_still_serves(server.addr(), &format!("{d:?} to the listening port"));
    }
}

#[test]
fn short_error_packets_to_a_session_port() {
    let (root, server) = start("short-err-session", |_| {});
    let content = session_file(root.path());
    let mut reader = Reader::start(server.addr(), b"s.bin");
    let stranger = socket("127.0.0.1:0");
    for d in SHORT_ERRORS {
        // From the peer: malformed, dropped; the transfer goes on.
        reader.peer_sends(d);
        reader.step();
        // From a stranger: ERROR 5 unless it is an ERROR (never answered).
        let got = reader.stranger_sends(&stranger, d);
        if d.starts_with(b"\x00\x05") {
            assert!(got.is_empty(), "{d:?} from a stranger was answered: {got:?}");
        } else {
            assert!(matches!(&got[..], [Pkt::Error(5, _)]), "{d:?}: {got:?}");
        }
    }
    assert_eq!(reader.finish(), content);
    let r = server.report_for(RequestKind::Read, b"s.bin");
    assert_eq!(r.result, TransferResult::Completed(content.len() as u64));
    assert_still_serves(server.addr(), "short ERRORs to a session port");
}

#[test]
fn error_text_without_nul() {
    let (root, server) = start("err-no-nul", |_| {});
    session_file(root.path());
    let sock = socket("127.0.0.1:0");
    let unterminated = b"\x00\x05\x00\x02denied".to_vec();
    assert!(answers_on_listener(&sock, server.addr(), &unterminated).is_empty());
    // From the peer it ends the session, with the text as sent.
    let reader = Reader::start(server.addr(), b"s.bin");
    reader.peer_sends(&unterminated);
    let r = server.report_for(RequestKind::Read, b"s.bin");
    match r.result {
        TransferResult::Failed(TransferError::Peer(p)) => {
            assert_eq!((p.code.as_u16(), p.message()), (2, &b"denied"[..]))
        }
        other => panic!("{other:?}"),
    }
    // Nothing is sent back to an ERROR (the next datagram would have come first).
    assert!(drain(&reader.sock).iter().all(|p| matches!(p, Pkt::Data(1, _))));
    assert_still_serves(server.addr(), "an ERROR without NUL");
}

#[test]
fn error_text_longer_than_any_buffer() {
    let (root, server) = start("err-long", |_| {});
    session_file(root.path());
    let sock = socket("127.0.0.1:0");
    // 65507 bytes: the largest UDP payload over IPv4, longer than the server's datagram buffer.
    let mut long = b"\x00\x05\x00\x03".to_vec();
    long.resize(65507, b'x');
    assert!(answers_on_listener(&sock, server.addr(), &long).is_empty());
    let mut reader = Reader::start(server.addr(), b"s.bin");
    let stranger = socket("127.0.0.1:0");
    assert!(reader.stranger_sends(&stranger, &long).is_empty());
    reader.peer_sends(&long);
    let r = server.report_for(RequestKind::Read, b"s.bin");
    match r.result {
        TransferResult::Failed(TransferError::Peer(p)) => {
            assert_eq!(p.code.as_u16(), 3);
            assert!(p.message().len() <= 100 && p.message().iter().all(|&b| b == b'x'));
        }
        other => panic!("{other:?}"),
    }
    assert_still_serves(server.addr(), "a 65507-byte ERROR");

    // The std client meets the same from a hostile server.
    let (addr, fake) = fake_server(move |_, tid, client, _| {
        tid.send_to(&long, client).unwrap();
    });
    let e = quick_client(addr, Options::NONE)
        .get(b"f", Vec::new(), |_| {})
        .unwrap_err();
    fake.join().unwrap();
    match e {
        ClientError::Transfer(TransferError::Peer(p)) => {
            assert_eq!(p.code.as_u16(), 3);
            assert!(p.message().len() <= 100);
        }
        other => panic!("{other:?}"),
    }
}

// ---- requests without their final NUL, longer than 512 octets, a 500-byte filename -------------

#[test]
fn requests_without_their_final_nul_get_error_4() {
    let (root, server) = start("req-no-nul", |c| c.allow_write = true);
    let sock = socket("127.0.0.1:0");
    for op in [1u8, 2] {
        for tail in [
            &b""[..],
            b"probe.bin",
            b"probe.bin\x00octet",
            b"probe.bin\x00octet\x00blksize",
            b"probe.bin\x00octet\x00blksize\x00512",
            b"probe.bin\x00octet\x00blksize\x00512\x00tsize\x000",
        ] {
            let d = [&[0, op][..], tail].concat();
            let m = refused_on_listener(&sock, server.addr(), &d, 4, &format!("{d:?}"));
            assert!(m.contains("not terminated"), "{m}");
            assert_still_serves(server.addr(), &format!("{d:?}"));
        }
    }
    assert_eq!(list(root.path()), names(&[PROBE_NAME]), "nothing was created");
    assert!(reports_but_probes(&server).is_empty(), "no session was started");
}

/// An option name without a value at the end of a request (`blksize NUL`, then nothing) is
/// ignored and the file served, as tftpd-hpa and py3tftp do (RFC 2347: ignore what is not
/// understood); the transfer's log line names the ignored option.
#[test]
fn request_option_without_value_at_end_is_ignored_and_served() {
    let (_root, server) = start("req-opt-no-value", |_| {});
    let want = probe_content();
    for tail in [&b"blksize\x00"[..], b"tsize\x000\x00windowsize\x00"] {
        let d = [&rrq(PROBE_NAME.as_bytes())[..], tail].concat();
        let sock = socket("127.0.0.1:0");
        sock.send_to(&d, server.addr()).unwrap();
        let mut got = Vec::new();
        let mut expected = 1u16;
        loop {
            let (pkt, tid) = recv(&sock);
            match pkt {
                // The tsize of the second request is answered; the ignored option is not.
                Pkt::Oack(o) => {
                    assert_eq!(o, vec![("tsize".to_string(), want.len().to_string())], "{tail:?}");
                    sock.send_to(&ack(0), tid).unwrap();
                }
                Pkt::Data(b, payload) if b == expected => {
                    got.extend_from_slice(&payload);
                    sock.send_to(&ack(b), tid).unwrap();
                    expected += 1;
                    if payload.len() < 512 {
                        break;
                    }
                }
                other => panic!("{tail:?}: {other:?}"),
            }
        }
        assert!(got == want, "{tail:?}: the file came back different");
        let report = server.report("the download", |r| r.filename == PROBE_NAME.as_bytes());
        assert!(report.result.is_success(), "{report:?}");
        let name = String::from_utf8_lossy(tail.split(|&b| b == 0).rev().nth(1).unwrap()).into_owned();
        let note = format!("(ignored option \"{name}\" without a value)");
        assert!(report.line.ends_with(&note), "{}", report.line);
    }
}

#[test]
fn requests_longer_than_512_octets_get_error_4() {
    let (root, server) = start("req-long", |c| c.allow_write = true);
    let sock = socket("127.0.0.1:0");
    for op in [1u8, 2] {
        for len in [513usize, 600, 1500, 65507] {
            // A well-formed request but for its length: the name fills it.
            let mut d = vec![0, op];
            d.resize(len - b"\x00octet\x00".len(), b'n');
            d.extend_from_slice(b"\x00octet\x00");
            assert_eq!(d.len(), len);
            let m = refused_on_listener(&sock, server.addr(), &d, 4, &format!("{len} bytes"));
            assert!(m.contains("512"), "{m}");
        }
        // Options padding a short name past 512.
        let mut d = raw_request(op, b"probe.bin", b"octet", &[(b"tsize", b"0")]);
        while d.len() <= 512 {
            d.extend_from_slice(b"pad\x00padding\x00");
        }
        refused_on_listener(&sock, server.addr(), &d, 4, "options past 512");
        assert_still_serves(server.addr(), "requests over 512 octets");
    }
    assert_eq!(list(root.path()), names(&[PROBE_NAME]));
    assert!(reports_but_probes(&server).is_empty(), "no session was started");
}

#[test]
fn a_500_byte_filename() {
    let (root, server) = start("name-500", |c| c.allow_write = true);
    // An existing 500-byte path (components of at most 255 bytes) is served.
    let dirs: PathBuf = ["a".repeat(120), "b".repeat(120), "c".repeat(120)]
        .iter()
        .collect();
    fs::create_dir_all(root.join(&dirs)).unwrap();
    let path = dirs.join("f".repeat(500 - 3 * 121));
    let name = path.to_str().unwrap().as_bytes().to_vec();
    assert_eq!(name.len(), 500);
    let content = pattern(700, 500);
    fs::write(root.join(&path), &content).unwrap();
    let sock = socket("127.0.0.1:0");
    let req = rrq(&name);
    assert_eq!(req.len(), 2 + 500 + 1 + 5 + 1);
    let (got, _) = Client::new(server.addr())
        .get(&name, Vec::new(), |_| {})
        .expect("a 500-byte name that exists is served");
    assert_eq!(got, content);
    // The same name as a single component cannot exist (NAME_MAX is 255): a clean refusal.
    let one = vec![b'z'; 500];
    let m = refused_on_listener(&sock, server.addr(), &rrq(&one), 1, "RRQ, one 500-byte component");
    assert_eq!(m, "File not found");
    let answers = answers_on_listener(&sock, server.addr(), &wrq(&one));
    assert!(
        matches!(&answers[..], [(Pkt::Error(1 | 2, _), _)]),
        "WRQ, one 500-byte component: {answers:?}"
    );
    // An upload to a new 500-byte path works and leaves nothing else behind.
    let up = dirs.join("u".repeat(500 - 3 * 121));
    let up_name = up.to_str().unwrap().as_bytes().to_vec();
    Client::new(server.addr())
        .put(&up_name, &content[..], |_| {})
        .expect("upload to a 500-byte path");
    assert!(server
        .report_for(RequestKind::Write, &up_name[..128])
        .result
        .is_success());
    assert_eq!(fs::read(root.join(&up)).unwrap(), content);
    assert!(temp_files(root.path()).is_empty());
    assert_still_serves(server.addr(), "500-byte filenames");
}

// ---- tiny blksize (8) with every other option: the OACK must fit --------------------------------

#[test]
fn blksize_8_with_every_option_the_oack_fits() {
    let (root, server) = start("blksize-8", |c| c.allow_write = true);
    let content = pattern(1000, 8);
    fs::write(root.join("t.bin"), &content).unwrap();
    let sock = socket("127.0.0.1:0");
    // Every known option at its widest, unknown ones padding the request to exactly 512 octets.
    let mut d = raw_request(
        1,
        b"t.bin",
        b"octet",
        &[
            (b"blksize", b"8"),
            (b"timeout", b"255"),
            (b"tsize", b"0"),
            (b"windowsize", b"65535"),
            (b"rollover", b"1"),
        ],
    );
    while d.len() < 512 - 20 {
        d.extend_from_slice(b"x\x00yyyyyyyy\x00");
    }
    d.extend_from_slice(b"z\x00");
    d.resize(511, b'z');
    d.push(0);
    assert_eq!(d.len(), 512);
    assert!(Packet::parse(&d).is_ok());
    sock.send_to(&d, server.addr()).unwrap();
    let (pkt, tid) = recv(&sock);
    let expect: Vec<(String, String)> = [
        ("blksize", "8"),
        ("timeout", "255"),
        ("tsize", "1000"),
        ("windowsize", "64"),
        ("rollover", "1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pkt, Pkt::Oack(expect), "every known option, nothing unknown");
    // End this one (as the UEFI probe does) and run real transfers with those options.
    sock.send_to(&error(8, b"just looking"), tid).unwrap();
    let options = Options {
        blksize: Some(8),
        timeout: Some(1),
        tsize: Some(0),
        windowsize: Some(4),
        rollover: Some(0),
    };
    let client = Client::new(server.addr()).options(options);
    let (got, summary) = client.get(b"t.bin", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, content);
    assert_eq!((summary.params.blksize, summary.params.tsize), (8, Some(1000)));
    client.put(b"t-up.bin", &content[..], |_| {}).unwrap();
    assert!(server
        .report_for(RequestKind::Write, b"t-up.bin")
        .result
        .is_success());
    assert_eq!(fs::read(root.join("t-up.bin")).unwrap(), content);
    assert_still_serves(server.addr(), "blksize 8 with every option");
}

// ---- an OACK that omits blksize after the client asked for a small one ----------------------------

#[test]
fn client_uses_512_when_the_oack_omits_blksize() {
    let content = pattern(512 + 100, 4);
    let served = content.clone();
    let (addr, fake) = fake_server(move |_, tid, client, req| {
        assert_eq!(options_of(&req).blksize, Some(8), "the client asked for 8");
        tid.send_to(&oack(&[(b"tsize", b"612")]), client).unwrap();
        assert_eq!(recv(tid).0, Pkt::Ack(0));
        fake_send_blocks(tid, client, &served, 512);
    });
    let options = Options {
        blksize: Some(8),
        tsize: Some(0),
        ..Options::NONE
    };
    let (got, summary) = quick_client(addr, options)
        .get(b"f", Vec::new(), |_| {})
        .expect("the default 512 applies");
    fake.join().unwrap();
    assert_eq!(got, content);
    assert_eq!((summary.params.blksize, summary.params.tsize), (512, Some(612)));
}

// ---- DATA longer than the negotiated blksize ------------------------------------------------------

#[test]
fn upload_data_longer_than_blksize_gets_error_4() {
    let (root, server) = start("data-long", |c| {
        c.allow_write = true;
        c.allow_overwrite = true;
    });
    fs::write(root.join("keep.bin"), b"original").unwrap();
    let sock = socket("127.0.0.1:0");
    // (blksize asked, payload sent); 65503 + 4 is the largest UDP payload, past the buffer.
    for (i, (blksize, len)) in [
        (None, 513usize),
        (None, 600),
        (Some(1024u16), 1025),
        (Some(65464), 65503),
    ]
    .into_iter()
    .enumerate()
    {
        for name in [format!("new-{i}.bin"), "keep.bin".to_string()] {
            let options = Options {
                blksize,
                ..Options::NONE
            };
            let req = request(RequestKind::Write, name.as_bytes(), Mode::Octet, &options);
            sock.send_to(&req, server.addr()).unwrap();
            let (pkt, tid) = recv(&sock);
            match (&pkt, blksize) {
                (Pkt::Ack(0), None) => {}
                (Pkt::Oack(o), Some(b)) => assert_eq!(o[..], [("blksize".into(), b.to_string())]),
                other => panic!("{other:?}"),
            }
            sock.send_to(&data(1, &vec![0xAB; len]), tid).unwrap();
            let (pkt, from) = recv(&sock);
            assert_eq!(from, tid);
            assert!(matches!(pkt, Pkt::Error(4, _)), "{blksize:?}/{len}: {pkt:?}");
            let r = server.report_for(RequestKind::Write, name.as_bytes());
            assert_eq!(
                r.result,
                TransferResult::Failed(TransferError::Protocol(ProtocolError::DataTooLong))
            );
            assert_eq!(
                list(root.path()),
                names(&[PROBE_NAME, "keep.bin"]),
                "nothing committed"
            );
            assert_eq!(fs::read(root.join("keep.bin")).unwrap(), b"original");
        }
        assert_still_serves(server.addr(), &format!("DATA of {len} bytes"));
    }
}

#[test]
fn client_download_with_data_longer_than_blksize_fails_with_error_4() {
    for (blksize, len) in [(None, 513usize), (Some(65464u16), 65503)] {
        let (addr, fake) = fake_server(move |_, tid, client, _| {
            if blksize.is_some() {
                tid.send_to(&oack(&[(b"blksize", b"65464")]), client).unwrap();
                assert_eq!(recv(tid).0, Pkt::Ack(0));
            }
            tid.send_to(&data(1, &vec![7; len]), client).unwrap();
            recv(tid).0
        });
        let options = Options {
            blksize,
            ..Options::NONE
        };
        let e = quick_client(addr, options)
            .get(b"f", Vec::new(), |_| {})
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Transfer(TransferError::Protocol(ProtocolError::DataTooLong))
            ),
            "{e:?}"
        );
        let told = fake.join().unwrap();
        assert!(matches!(told, Pkt::Error(4, _)), "{told:?}");
    }
}

// ---- OACK option names that contain a known one, missing NULs, reordered options ---------------------

const LOOKALIKES: [&[u8]; 7] = [
    b"xblksizex",
    b"blksizex",
    b"xblksize",
    b"blk size",
    b"tsize2",
    b"window",
    b"windowsize\x01",
];

#[test]
fn lookalike_option_names_in_a_request_are_not_acknowledged() {
    let (_root, server) = start("lookalike-req", |_| {});
    let sock = socket("127.0.0.1:0");
    let opts: Vec<(&[u8], &[u8])> = LOOKALIKES.iter().map(|n| (*n, &b"8"[..])).collect();
    // Only look-alikes: no OACK, DATA 1 of 512 bytes (no option applies).
    sock.send_to(
        &raw_request(1, PROBE_NAME.as_bytes(), b"octet", &opts),
        server.addr(),
    )
    .unwrap();
    let (pkt, tid) = recv(&sock);
    assert!(matches!(&pkt, Pkt::Data(1, p) if p.len() == 512), "{pkt:?}");
    sock.send_to(&error(0, b"enough"), tid).unwrap();
    // With a real option among them: the OACK holds only the real one.
    let mut with_real = opts.clone();
    with_real.insert(3, (b"windowsize", b"2"));
    let sock = socket("127.0.0.1:0");
    sock.send_to(
        &raw_request(1, PROBE_NAME.as_bytes(), b"octet", &with_real),
        server.addr(),
    )
    .unwrap();
    let (pkt, tid) = recv(&sock);
    assert_eq!(pkt, Pkt::Oack(vec![("windowsize".into(), "2".into())]));
    sock.send_to(&error(8, b"done"), tid).unwrap();
    assert_still_serves(server.addr(), "look-alike option names");
}

#[test]
fn oack_sent_to_the_server() {
    let (root, server) = start("oack-to-server", |_| {});
    let content = session_file(root.path());
    let sock = socket("127.0.0.1:0");
    for o in [
        oack(&[(b"blksize", b"512")]),
        oack(&[]),
        b"\x00\x06blksize".to_vec(),
        b"\x00\x06blksize\x00512".to_vec(),
    ] {
        // To the listening port: one ERROR 4 (a well-formed one is "unexpected", a broken one
        // is malformed).
        refused_on_listener(&sock, server.addr(), &o, 4, &format!("OACK {o:?}"));
    }
    let mut reader = Reader::start(server.addr(), b"s.bin");
    let stranger = socket("127.0.0.1:0");
    let o = oack(&[(b"xblksizex", b"8"), (b"blksize", b"8")]);
    // From the peer in mid-transfer: ignored; from a stranger: ERROR 5.
    reader.peer_sends(&o);
    reader.step();
    assert!(matches!(
        &reader.stranger_sends(&stranger, &o)[..],
        [Pkt::Error(5, _)]
    ));
    assert_eq!(reader.finish(), content);
    assert!(server.report_for(RequestKind::Read, b"s.bin").result.is_success());
    assert_still_serves(server.addr(), "OACKs sent to the server");
}

#[test]
fn client_rejects_an_oack_with_a_lookalike_name() {
    for name in LOOKALIKES {
        let (addr, fake) = fake_server(move |_, tid, client, _| {
            tid.send_to(&oack(&[(name, b"8")]), client).unwrap();
            recv(tid).0
        });
        let options = Options {
            blksize: Some(8),
            tsize: Some(0),
            windowsize: Some(2),
            ..Options::NONE
        };
        let e = quick_client(addr, options)
            .get(b"f", Vec::new(), |_| {})
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Transfer(TransferError::Oack(OackError::Unrequested(None)))
            ),
            "{name:?}: {e:?}"
        );
        let told = fake.join().unwrap();
        assert!(matches!(told, Pkt::Error(8, _)), "{name:?}: {told:?}");
    }
}

#[test]
fn client_ignores_an_oack_with_missing_nuls_then_takes_a_valid_one() {
    let content = pattern(3 * 256 + 9, 6);
    let served = content.clone();
    let (addr, fake) = fake_server(move |listen, tid, client, _| {
        for broken in [
            &b"\x00\x06blksize"[..],
            b"\x00\x06blksize\x00256",
            b"\x00\x06\x00256\x00",
        ] {
            tid.send_to(broken, client).unwrap();
        }
        // The client heard nothing valid: it sends its request again.
        let (pkt, from) = recv(listen);
        assert_eq!(from, client);
        assert!(matches!(pkt, Pkt::Other(ref d) if d[..2] == [0, 1]), "{pkt:?}");
        tid.send_to(&oack(&[(b"blksize", b"256")]), client).unwrap();
        assert_eq!(recv(tid).0, Pkt::Ack(0));
        fake_send_blocks(tid, client, &served, 256);
    });
    let options = Options {
        blksize: Some(256),
        ..Options::NONE
    };
    let (got, summary) = quick_client(addr, options).get(b"f", Vec::new(), |_| {}).unwrap();
    fake.join().unwrap();
    assert_eq!(got, content);
    assert_eq!(summary.params.blksize, 256);
}

#[test]
fn client_accepts_reordered_oack_options() {
    let content = pattern(5 * 300 + 1, 7);
    let served = content.clone();
    let (addr, fake) = fake_server(move |_, tid, client, _| {
        let o = oack(&[
            (b"WINDOWSIZE", b"1"),
            (b"tsize", b"1501"),
            (b"TimeOut", b"2"),
            (b"blksize", b"300"),
        ]);
        tid.send_to(&o, client).unwrap();
        assert_eq!(recv(tid).0, Pkt::Ack(0));
        fake_send_blocks(tid, client, &served, 300);
    });
    let options = Options {
        blksize: Some(300),
        timeout: Some(2),
        tsize: Some(0),
        windowsize: Some(4),
        ..Options::NONE
    };
    let (got, summary) = quick_client(addr, options).get(b"f", Vec::new(), |_| {}).unwrap();
    fake.join().unwrap();
    assert_eq!(got, content);
    let p = summary.params;
    assert_eq!(
        (p.blksize, p.windowsize, p.timeout, p.tsize),
        (300, 1, Some(2), Some(1501))
    );
}

// ---- paths ---------------------------------------------------------------------------------------

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
        put_probe(&root);
        symlink("../tftp2/secret", root.join("outlink")).unwrap();
        symlink(base.join("outside.txt"), root.join("absout")).unwrap();
        symlink("../tftp2", root.join("outdir")).unwrap();
        symlink("../tftp2/newfile", root.join("dangling")).unwrap();
        symlink("../outside.txt", root.join("sub/up")).unwrap();
        Jail { base, root }
    }
}

#[test]
fn path_attacks_over_raw_sockets() {
    let jail = Jail::new();
    let mut c = config(&jail.root, "127.0.0.1:0");
    c.engine = patient();
    c.allow_write = true;
    c.allow_overwrite = true;
    let server = Harness::start(&c);
    let outside_before = snapshot(jail.base.path(), &jail.root);
    let root_before = snapshot(&jail.root, Path::new(""));
    let passwd = fs::read("/etc/passwd").ok();
    let sock = socket("127.0.0.1:0");
    let base = jail.base.path().to_str().unwrap().to_string();
    let names: Vec<Vec<u8>> = [
        "..",
        "../outside.txt",
        "a/..",
        "a/../../outside.txt",
        "sub/..",
        "sub/../..",
        "sub/../../outside.txt",
        "./../outside.txt",
        "sub/inner.txt/..",
        "sub/inner.txt/../../../outside.txt",
        "..\\outside.txt",
        "sub\\..\\..\\outside.txt",
        "../tftp2/secret",
        "/../tftp2/secret",
        "../tftp2",
        "/etc/passwd",
        "//etc/passwd",
        "outlink",
        "absout",
        "outdir/secret",
        "outdir/newfile",
        "dangling",
        "sub/up",
        &format!("{base}/outside.txt"),
        &format!("{base}/tftp2/secret"),
        &format!("../../../../../../../../..{base}/outside.txt"),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for name in &names {
        let shown = String::from_utf8_lossy(name).into_owned();
        for op in [1u8, 2] {
            let req = raw_request(op, name, b"octet", &[]);
            match &answers_on_listener(&sock, server.addr(), &req)[..] {
                [(Pkt::Error(code, _), from)] if *from == server.addr() => {
                    let allowed: &[u16] = if op == 1 { &[1, 2] } else { &[1, 2, 6] };
                    assert!(allowed.contains(code), "{shown} (op {op}): ERROR {code}");
                }
                other => panic!("{shown} (op {op}) was not refused: {other:?}"),
            }
        }
        assert_still_serves(server.addr(), &shown);
    }
    // NUL inside a name ends it: what follows is the mode (unknown: ERROR 4, from the session
    // when the name before the NUL exists, or ERROR 2 when it is a link out), never a path.
    for d in [
        &b"\x00\x01sub/inner.txt\x00../outside.txt\x00octet\x00"[..],
        b"\x00\x01sub/inner.txt\x00../outside.txt\x00",
        b"\x00\x02probe.bin\x00../../outside.txt\x00",
        b"\x00\x01outlink\x00\x00",
    ] {
        let answers = answers_on_listener(&sock, server.addr(), d);
        assert!(
            matches!(&answers[..], [(Pkt::Error(2 | 4, _), from)] if from.ip() == server.addr().ip()),
            "{d:?}: {answers:?}"
        );
        assert_still_serves(server.addr(), &format!("{d:?}"));
    }
    // Nothing but the probe downloads and those refusals ran; nothing changed anywhere.
    for r in reports_but_probes(&server) {
        let refused = matches!(r.result, TransferResult::Failed(TransferError::Refused { .. }));
        assert!(refused, "{r:?}");
    }
    assert_eq!(
        snapshot(jail.base.path(), &jail.root),
        outside_before,
        "outside the root changed"
    );
    assert_eq!(
        snapshot(&jail.root, Path::new("")),
        root_before,
        "the root changed"
    );
    assert_eq!(fs::read("/etc/passwd").ok(), passwd);
}

// ---- more than 65535 and 131072 blocks; over 4 GiB -------------------------------------------------

#[test]
fn more_than_131072_blocks_over_loopback() {
    let (root, server) = start("131072", |c| c.allow_write = true);
    let blocks = 131_075usize;
    let content = pattern((blocks - 1) * 8 + 5, 131);
    fs::write(root.join("many.bin"), &content).unwrap();
    // A download wrapping to 0 twice, an upload wrapping to 1 (rollover) twice.
    let options = |rollover| Options {
        blksize: Some(8),
        windowsize: Some(64),
        tsize: Some(0),
        rollover,
        timeout: None,
    };
    let client = Client::new(server.addr()).options(options(None));
    let (got, summary) = client.get(b"many.bin", Vec::new(), |_| {}).unwrap();
    assert!(got == content, "download");
    assert_eq!((summary.params.blksize, summary.params.windowsize), (8, 64));
    let r = server.report_for(RequestKind::Read, b"many.bin");
    assert_eq!(r.result, TransferResult::Completed(content.len() as u64));
    let client = Client::new(server.addr()).options(options(Some(1)));
    let (_, summary) = client.put(b"many-up.bin", &content[..], |_| {}).unwrap();
    assert_eq!(summary.params.rollover, Some(1));
    let r = server.report_for(RequestKind::Write, b"many-up.bin");
    assert_eq!(r.result, TransferResult::Completed(content.len() as u64));
    assert!(fs::read(root.join("many-up.bin")).unwrap() == content, "upload");
}

/// A sparse file just over 4 GiB with marks at a few offsets; the download is checked against
/// the marks as it arrives (nothing is kept).
#[test]
#[ignore = "moves 4 GiB over loopback: run in release (cargo test --release -- --ignored)"]
fn file_over_4gib_over_loopback() {
    use std::os::unix::fs::FileExt;
    let (root, server) = start("4gib", |_| {});
    let len = (1u64 << 32) + 123_457;
    let marks: Vec<u64> = vec![0, 65463, 65464, (1 << 32) - 1, 1 << 32, len - 1];
    let f = fs::File::create(root.join("huge.bin")).unwrap();
    f.set_len(len).unwrap();
    for &m in &marks {
        f.write_all_at(&[(m % 251) as u8 + 1], m).unwrap();
    }
    drop(f);
    struct Check {
        written: u64,
        marks: Vec<u64>,
        bad: Option<u64>,
    }
    impl Storage for Check {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
            if offset != self.written && self.bad.is_none() {
                self.bad = Some(offset);
            }
            let end = offset + data.len() as u64;
            for (i, &b) in data.iter().enumerate() {
                let at = offset + i as u64;
                let want = if self.marks.contains(&at) {
                    (at % 251) as u8 + 1
                } else {
                    0
                };
                if b != want && self.bad.is_none() {
                    self.bad = Some(at);
                }
            }
            self.written = end;
            Ok(())
        }
    }
    let options = Options {
        blksize: Some(65464),
        windowsize: Some(64),
        tsize: Some(0),
        ..Options::NONE
    };
    let check = Check {
        written: 0,
        marks,
        bad: None,
    };
    let (check, summary) = Client::new(server.addr())
        .options(options)
        .get(b"huge.bin", check, |_| {})
        .expect("download over 4 GiB");
    assert_eq!((check.written, check.bad), (len, None));
    assert_eq!(summary.params.tsize, Some(len));
    assert_eq!(
        server.report_for(RequestKind::Read, b"huge.bin").result,
        TransferResult::Completed(len)
    );
}

// ---- floods of spoofed requests ---------------------------------------------------------------------

/// 3000+ requests from 300 sockets on 100 loopback addresses that never acknowledge anything.
/// The session count never exceeds the cap (checked after every server turn), the sessions
/// expire, and a real client is served during the flood and after it. At the cap each request
/// displaces the oldest silent session, so the real client is served at its first request
/// unless 32 flood requests overtake its first ACK (a starved test machine): then it is told
/// the server is busy and asks again, as boot ROMs do.
#[test]
fn spoofed_request_flood_is_bounded_by_the_session_cap() {
    const CAP: usize = 32;
    let root = TempDir::new("flood");
    put_probe(root.path());
    let mut c = config(root.path(), "127.0.0.1:0");
    c.max_sessions = CAP;
    c.allow_write = true;
    let server = Harness::start(&c);
    let addr = server.addr();
    let flooders: Vec<UdpSocket> = (0..300)
        .map(|i| {
            let s = socket(&format!("127.0.{}.{}:0", 1 + i / 100, 2 + i % 100));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let during = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&during);
    // A real client, trying while the flood goes on.
    let real = std::thread::spawn(move || {
        let mut refusals = 0;
        for _ in 0..2000 {
            match quick_client(addr, Options::NONE).get(PROBE_NAME.as_bytes(), Vec::new(), |_| {}) {
                Ok((got, _)) => {
                    assert_eq!(got, probe_content());
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    return refusals;
                }
                // "Server busy" (or, on a starved machine, no answer in time): try again.
                Err(ClientError::Transfer(TransferError::Peer(p))) if p.code.as_u16() == 0 => {
                    refusals += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(ClientError::Transfer(TransferError::TimedOut | TransferError::Idle)) => {
                    refusals += 1;
                }
                Err(e) => panic!("the real client failed otherwise: {e}"),
            }
        }
        panic!("never served during the flood ({refusals} refusals)");
    });
    let started = Instant::now();
    let mut sent = 0usize;
    let mut rx = vec![0u8; 2048];
    // At least 3000 requests; on until the real client was served (bounded).
    while sent < 3000 || (!during.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < WAIT) {
        let s = &flooders[sent % flooders.len()];
        // Different requests from one port: each one supersedes the last (a new session).
        let req = match sent % 3 {
            0 => rrq(PROBE_NAME.as_bytes()),
            1 => request(
                RequestKind::Read,
                PROBE_NAME.as_bytes(),
                Mode::Octet,
                &Options {
                    blksize: Some(1024),
                    windowsize: Some(64),
                    ..Options::NONE
                },
            ),
            _ => wrq(format!("flood-{sent}.bin").as_bytes()),
        };
        let _ = s.send_to(&req, addr);
        sent += 1;
        // Throw away whatever the server sends (never acknowledged).
        while s.recv_from(&mut rx).is_ok() {}
        assert!(server.max_sessions() <= CAP, "{} sessions", server.max_sessions());
        if sent.is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let refusals = real.join().expect("the real client");
    assert!(server.max_sessions() <= CAP);
    // The flood's sessions expire (silent peers: the retry cap ends them).
    assert!(server.wait_idle(WAIT), "{} sessions left", server.sessions());
    assert_eq!(server.max_sessions(), CAP, "the flood filled the table");
    assert_still_serves(addr, "the flood");
    assert!(
        temp_files(root.path()).is_empty(),
        "{:?}",
        temp_files(root.path())
    );
    assert_eq!(
        list(root.path()),
        names(&[PROBE_NAME]),
        "no flood upload committed"
    );
    let reports = server.drain_reports();
    eprintln!(
        "flood: {sent} requests, {} sessions reported, real client refused {refusals} times before it was served",
        reports.len()
    );
    assert!(server.is_running());
}

/// RFC 1123: requests sent to a broadcast address are ignored. On loopback the broadcast address
/// is 127.255.255.255 (`broadcast 127.255.255.255 dev lo` in the local routing table), delivered
/// to a wildcard-bound listener; the listener tells it apart by the packet info.
#[test]
fn requests_to_a_broadcast_address_are_ignored() {
    let root = TempDir::new("bcast");
    put_probe(root.path());
    let mut c = config(root.path(), "0.0.0.0:0");
    c.engine = patient();
    let server = Harness::start(&c);
    let port = server.addr().port();
    let sock = socket("127.0.0.1:0");
    sock.set_broadcast(true).unwrap();
    let bcast: SocketAddr = SocketAddr::new("127.255.255.255".parse().unwrap(), port);
    if let Err(e) = sock.send_to(&rrq(PROBE_NAME.as_bytes()), bcast) {
        eprintln!("NOTE: cannot send to {bcast} here ({e}): broadcast over a real socket not tested");
        return;
    }
    // Nothing is answered, neither a request nor a stray ACK; then the unicast marker is.
    sock.send_to(&ack(1), bcast).unwrap();
    sock.send_to(&marker(), SocketAddr::new("127.0.0.1".parse().unwrap(), port))
        .unwrap();
    let (pkt, from) = recv(&sock);
    assert!(
        matches!(pkt, Pkt::Error(5, _)) && from.ip().to_string() == "127.0.0.1",
        "a broadcast was answered: {pkt:?} from {from}"
    );
    assert!(server.drain_reports().is_empty(), "a session was started");
    assert_still_serves(SocketAddr::new("127.0.0.1".parse().unwrap(), port), "broadcasts");
}

// ---- the length sent is exactly the bytes written ---------------------------------------------------

/// Every packet type the server sends (OACK, DATA, ACK, ERROR of each origin) is received whole
/// and exactly as long as its encoding ([`parse`] checks every datagram of these tests).
#[test]
fn every_datagram_is_exactly_its_encoding() {
    let (root, server) = start("exact", |c| c.allow_write = true);
    let content = session_file(root.path());
    let sock = socket("127.0.0.1:0");
    let mut kinds = std::collections::BTreeSet::new();
    // OACK, then DATA (windowed), for a read with options.
    let opts = Options {
        blksize: Some(700),
        windowsize: Some(3),
        tsize: Some(0),
        timeout: Some(3),
        ..Options::NONE
    };
    sock.send_to(
        &request(RequestKind::Read, b"s.bin", Mode::Octet, &opts),
        server.addr(),
    )
    .unwrap();
    let (pkt, tid) = recv(&sock);
    kinds.insert("oack");
    assert_eq!(
        pkt,
        Pkt::Oack(vec![
            ("blksize".into(), "700".into()),
            ("timeout".into(), "3".into()),
            ("tsize".into(), content.len().to_string()),
            ("windowsize".into(), "3".into()),
        ])
    );
    let mut got = Vec::new();
    let mut last = 0u16;
    sock.send_to(&ack(0), tid).unwrap();
    loop {
        let (pkt, _) = recv(&sock);
        let Pkt::Data(b, p) = pkt else { panic!("{pkt:?}") };
        kinds.insert("data");
        if b != last + 1 {
            continue;
        }
        last = b;
        got.extend_from_slice(&p);
        if p.len() < 700 {
            sock.send_to(&ack(b), tid).unwrap();
            break;
        }
        if b.is_multiple_of(3) {
            sock.send_to(&ack(b), tid).unwrap();
        }
    }
    assert_eq!(got, content);
    // ACKs of an upload.
    sock.send_to(&wrq(b"w.bin"), server.addr()).unwrap();
    let (pkt, tid) = recv(&sock);
    assert_eq!(pkt, Pkt::Ack(0));
    sock.send_to(&data(1, b"tiny"), tid).unwrap();
    assert_eq!(recv(&sock).0, Pkt::Ack(1));
    kinds.insert("ack");
    // ERRORs: a refusal, a malformed request, a stranger, a protocol violation.
    for d in [rrq(b"missing"), b"\x00\x01x".to_vec(), ack(9)] {
        assert!(matches!(recv_after(&sock, server.addr(), &d), Pkt::Error(..)));
    }
    kinds.insert("error");
    assert_eq!(kinds.len(), 4);
    assert!(server
        .report_for(RequestKind::Write, b"w.bin")
        .result
        .is_success());
}

fn recv_after(sock: &UdpSocket, to: SocketAddr, d: &[u8]) -> Pkt {
    sock.send_to(d, to).unwrap();
    recv(sock).0
}

// ---- descriptor exhaustion -------------------------------------------------------------------------

/// The `tftp-proto serve` binary with 32 file descriptors (each session needs a socket and a
/// file): a burst of 100 requests from 100 ports exhausts them. Every request gets exactly one
/// answer (a session's first packet, or ERROR 0), the server keeps running, serves a client once
/// the sessions expire, and exits cleanly leaving no temporary file.
#[test]
#[cfg(feature = "cli")]
fn descriptor_exhaustion_refuses_then_recovers() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let root = TempDir::new("emfile");
    put_probe(root.path());
    let script = "ulimit -n 32 && exec \"$0\" serve --root \"$1\" --bind 127.0.0.1:0 --allow-write \
                  --timeout 0.1 --retries 1";
    let mut child = Command::new("bash")
        .args(["-c", script, env!("CARGO_BIN_EXE_tftp-proto")])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let serving = lines.recv_timeout(WAIT).expect("the serving line");
    let addr: SocketAddr = serving
        .rsplit_once(" on ")
        .and_then(|(_, r)| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {serving:?}"));
    let socks: Vec<UdpSocket> = (0..100).map(|_| socket("127.0.0.1:0")).collect();
    for (i, s) in socks.iter().enumerate() {
        let req = if i % 2 == 0 {
            rrq(PROBE_NAME.as_bytes())
        } else {
            wrq(format!("up-{i}.bin").as_bytes())
        };
        s.send_to(&req, addr).unwrap();
    }
    let (mut started, mut refused) = (0, 0);
    for s in &socks {
        match recv(s).0 {
            Pkt::Data(1, _) | Pkt::Ack(0) => started += 1,
            Pkt::Error(0, _) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        refused > 0,
        "the descriptors were not exhausted ({started} sessions)"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    // The sessions (never acknowledged) expire; then a client is served.
    let end = Instant::now() + WAIT;
    loop {
        match Client::new(addr).get(PROBE_NAME.as_bytes(), Vec::new(), |_| {}) {
            Ok((got, _)) => {
                assert_eq!(got, probe_content());
                break;
            }
            Err(e) if Instant::now() < end => {
                assert_eq!(peer_code(&e), 0, "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never served again: {e}"),
        }
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "serve exited with {status}");
    eprintln!("descriptor exhaustion: {started} sessions started, {refused} requests refused");
    assert!(temp_files(root.path()).is_empty());
    assert_eq!(
        list(root.path()),
        names(&[PROBE_NAME]),
        "no flood upload committed"
    );
}
