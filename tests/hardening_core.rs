//! Hardening, level (a): every line of PROTOCOL.md's "Bad input seen in the wild" against the
//! engine ([`Transfer`]) and the no_std [`ServerTable`] directly, in memory, on a clock the test
//! moves. Level (b), a running server over loopback, is `tests/hardening_server.rs`; the table
//! mapping each line to its tests at both levels (and to the codec tests of `tests/codec.rs` and
//! the engine scenarios that already cover parts) is in `SECURITY.md`.
//!
//! Standing checks of every table run here ([`Rig`]): each datagram the table emits is exactly
//! as long as its encoding and nothing past that length is written into the buffer; the number of
//! sessions never exceeds the capacity; a datagram that does not belong to a session is answered
//! with at most one datagram.
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{ack, data, oack, request, Failing, PatternFile};
use tftp_proto::engine::{
    ClientRequest, Config, Event, OackError, ProtocolError, ServerPolicy, Transfer, TransferError,
    TransferMode,
};
use tftp_proto::server::{ArrayTable, Datagram, TransferReport, TransferResult, REPORT_NAME_LEN};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{ErrorCode, Instant, OptionList, Options, Packet, RequestKind};

// ---- the rig --------------------------------------------------------------------------------

const LISTEN: &str = "10.0.0.1:69";
const PEER: &str = "10.0.0.2:40000";
const STRANGER: &str = "10.0.0.9:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Byte the transmit buffer is filled with before each `poll_transmit`.
const SENTINEL: u8 = 0xA5;

/// A datagram the table sent: (from, to, bytes).
type Out = (SocketAddr, SocketAddr, Vec<u8>);

/// A `ServerTable` with a clock, handing out a new TID per accepted session, checking the
/// standing rules on every call.
struct Rig<S, const N: usize> {
    table: ArrayTable<S, N>,
    now: Instant,
    next_port: u16,
    buf: Vec<u8>,
    /// Finished transfers collected before an accept (the driver's order: a full table's
    /// displaced session frees its slot when collected), handed out first by `poll_finished`.
    collected: std::collections::VecDeque<TransferReport<S>>,
}

impl<S: Storage, const N: usize> Rig<S, N> {
    fn new(policy: ServerPolicy, config: Config) -> Self {
        Rig {
            table: ArrayTable::new(policy, config),
            now: Instant::ZERO,
            next_port: 50000,
            buf: vec![0; 65536],
            collected: Default::default(),
        }
    }

    /// The next finished transfer: one collected before an accept, else the table's.
    fn poll_finished(&mut self) -> Option<TransferReport<S>> {
        self.collected
            .pop_front()
            .or_else(|| self.table.poll_finished(self.now))
    }

    /// Feeds `bytes` from `from` to `local`; a request is accepted with `storage` at a new TID.
    /// Returns whether it was a request, and what the table sent right after.
    fn deliver(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        listening: bool,
        bytes: &[u8],
        storage: impl FnOnce() -> S,
    ) -> (bool, Vec<Out>) {
        let now = self.now;
        let was_request = match self.table.handle_datagram(now, local, from, listening, bytes) {
            Datagram::Request(incoming) => {
                while let Some(r) = self.table.poll_finished(now) {
                    self.collected.push_back(r);
                }
                let tid = SocketAddr::new(local.ip(), self.next_port);
                self.next_port = self.next_port.wrapping_add(1).max(50000);
                let _ = self.table.accept(now, &incoming, storage(), tid);
                true
            }
            Datagram::Handled | Datagram::Refused(_) => false,
        };
        assert!(
            self.table.len() <= N,
            "{} sessions in a table of {N}",
            self.table.len()
        );
        (was_request, self.transmit())
    }

    /// Everything the table has to send now.
    fn transmit(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        loop {
            self.buf.fill(SENTINEL);
            let Some(tx) = self.table.poll_transmit(self.now, &mut self.buf) else {
                break;
            };
            let d = &self.buf[..tx.len];
            let p = Packet::parse(d).unwrap_or_else(|e| panic!("the table sent a bad datagram ({e}): {d:?}"));
            let exact = if matches!(p, Packet::Ack { .. }) {
                4
            } else {
                p.encoded_len()
            };
            assert_eq!(exact, tx.len, "sent length != packet length: {p:?}");
            assert!(
                self.buf[tx.len..].iter().all(|&b| b == SENTINEL),
                "written past the length sent"
            );
            out.push((tx.local, tx.destination, d.to_vec()));
        }
        out
    }

    /// Moves the clock to the next deadline (if any, and not past `limit`) and fires it.
    fn tick(&mut self, limit: Instant) -> Option<Vec<Out>> {
        let t = self.table.poll_timeout()?;
        if t > limit {
            return None;
        }
        self.now = self.now.max(t);
        self.table.handle_timeout(self.now);
        Some(self.transmit())
    }

    /// Lets every session run out its timers (bounded), returning what was sent meanwhile.
    fn expire_all(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match self.tick(Instant::from_micros(u64::MAX)) {
                Some(o) => out.extend(o),
                None => break,
            }
        }
        out
    }
}

fn decode(out: &[Out]) -> Vec<(SocketAddr, common::Pkt)> {
    out.iter()
        .map(|(_, to, d)| (*to, common::Pkt::decode(d)))
        .collect()
}

fn codes(out: &[Out]) -> Vec<u16> {
    decode(out)
        .iter()
        .filter_map(|(_, p)| p.error_code().map(ErrorCode::as_u16))
        .collect()
}

fn file(len: usize) -> Vec<u8> {
    common::Rng::new(len as u64).bytes(len)
}

fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

fn rrq(name: &str) -> Vec<u8> {
    request(RequestKind::Read, name, "octet", &[])
}

/// A plain read of `content` from the rig's table, started by `PEER`: returns the session's TID
/// after DATA 1.
fn start_read<const N: usize>(rig: &mut Rig<&'static [u8], N>, content: &'static [u8]) -> SocketAddr {
    let (req, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &rrq("f"), || content);
    assert!(req);
    match &decode(&out)[..] {
        [(to, common::Pkt::Data { block: 1, .. })] if *to == addr(PEER) => out[0].0,
        other => panic!("{other:?}"),
    }
}

// ---- ERROR packets of 0-3 bytes, text without NUL, text longer than the buffer ----------------

const SHORT_ERRORS: [&[u8]; 4] = [b"", b"\x00", b"\x00\x05", b"\x00\x05\x00"];

#[test]
fn short_error_packets_to_the_listening_address_and_to_a_session() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let content = leak(file(5 * 512 + 3));
    for d in SHORT_ERRORS {
        let (_, out) = rig.deliver(addr(LISTEN), addr(STRANGER), true, d, || unreachable!());
        if d.starts_with(b"\x00\x05") {
            assert!(out.is_empty(), "{d:?}: an ERROR is never answered: {out:?}");
        } else {
            assert_eq!(codes(&out), [4], "{d:?}");
            assert_eq!(out[0].0, addr(LISTEN));
        }
    }
    let tid = start_read(&mut rig, content);
    for (i, d) in SHORT_ERRORS.iter().enumerate() {
        // From the peer: dropped, no answer; the next ACK moves the transfer on.
        let (_, out) = rig.deliver(tid, addr(PEER), false, d, || unreachable!());
        assert!(out.is_empty(), "{d:?} from the peer: {out:?}");
        let (_, out) = rig.deliver(tid, addr(PEER), false, &ack(i as u16 + 1), || unreachable!());
        assert!(
            matches!(&decode(&out)[..], [(_, common::Pkt::Data { block, .. })] if *block == i as u16 + 2)
        );
        // From a stranger: ERROR 5, unless it is (recognisably) an ERROR.
        let (_, out) = rig.deliver(tid, addr(STRANGER), false, d, || unreachable!());
        let want: &[u16] = if d.starts_with(b"\x00\x05") { &[] } else { &[5] };
        assert_eq!(codes(&out), want, "{d:?} from a stranger");
    }
    let (_, out) = rig.deliver(tid, addr(PEER), false, &ack(5), || unreachable!());
    assert!(matches!(
        &decode(&out)[..],
        [(_, common::Pkt::Data { block: 6, len: 3 })]
    ));
    let _ = rig.deliver(tid, addr(PEER), false, &ack(6), || unreachable!());
    let r = rig.poll_finished().expect("finished");
    assert_eq!(r.result, TransferResult::Completed(content.len() as u64));
}

#[test]
fn error_text_without_nul_and_longer_than_any_buffer_end_the_session() {
    let mut long = vec![0, 5, 0, 2];
    long.resize(70_000, b'x');
    for (d, code, message) in [
        (b"\x00\x05\x00\x02denied".to_vec(), 2, b"denied".to_vec()),
        (long.clone(), 2, vec![b'x'; 100]),
    ] {
        // To the listening address: never answered.
        let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
        let (_, out) = rig.deliver(addr(LISTEN), addr(STRANGER), true, &d, || unreachable!());
        assert!(out.is_empty());
        // From the peer: the session ends, not answered, the message kept (at most 100 bytes).
        let tid = start_read(&mut rig, leak(file(2000)));
        let (_, out) = rig.deliver(tid, addr(STRANGER), false, &d, || unreachable!());
        assert!(out.is_empty(), "an ERROR from a stranger is not answered");
        let (_, out) = rig.deliver(tid, addr(PEER), false, &d, || unreachable!());
        assert!(out.is_empty());
        let r = rig.poll_finished().expect("ended");
        match r.result {
            TransferResult::Failed(TransferError::Peer(p)) => {
                assert_eq!((p.code.as_u16(), p.message()), (code, &message[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(rig.table.is_empty());
    }
    // A client hearing such an ERROR from its server fails with it, and answers nothing.
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"f",
        mode: TransferMode::Octet,
        options: Options::NONE,
    };
    let mut t = Transfer::client(
        Instant::ZERO,
        addr(LISTEN),
        request,
        Vec::new(),
        Config::default(),
    )
    .unwrap();
    let mut buf = [0u8; 600];
    while t.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
    t.handle_datagram(Instant::ZERO, addr("10.0.0.1:50000"), &long);
    assert!(t.poll_transmit(Instant::ZERO, &mut buf).is_none());
    match t.outcome() {
        Some(Err(TransferError::Peer(p))) => assert_eq!(p.message().len(), 100),
        other => panic!("{other:?}"),
    }
}

// ---- requests without their final NUL, longer than 512 octets, a 500-byte filename --------------

#[test]
fn malformed_and_oversized_requests_get_error_4_and_cost_nothing() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let mut too_long = vec![0, 1];
    too_long.resize(600, b'n');
    too_long.extend_from_slice(b"\x00octet\x00");
    for (d, message) in [
        (&b"\x00\x01"[..], "filename not terminated"),
        (b"\x00\x01file", "filename not terminated"),
        (b"\x00\x02file\x00octet", "mode not terminated"),
        (b"\x00\x01f\x00octet\x00blksize", "option name not terminated"),
        (
            b"\x00\x02f\x00octet\x00blksize\x00512",
            "option value not terminated",
        ),
        (b"\x00\x01f\x00octet\x00\x00512\x00", "empty option name"),
        (
            &too_long,
            "request of 607 octets is over the 512 allowed: shorten the file name or options",
        ),
    ] {
        let (req, out) = rig.deliver(addr(LISTEN), addr(PEER), true, d, || unreachable!());
        assert!(!req);
        match &decode(&out)[..] {
            [(to, common::Pkt::Error { code, message: m })] => {
                assert_eq!(
                    (*to, *code, &m[..]),
                    (addr(PEER), ErrorCode::IllegalOperation, message.as_bytes())
                )
            }
            other => panic!("{d:?}: {other:?}"),
        }
        assert!(rig.table.is_empty());
    }
}

#[test]
fn a_500_byte_filename_is_a_request_like_any_other() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let name = "n".repeat(500);
    let d = request(RequestKind::Write, &name, "octet", &[]);
    assert_eq!(d.len(), 509);
    let now = rig.now;
    match rig.table.handle_datagram(now, addr(LISTEN), addr(PEER), true, &d) {
        Datagram::Request(incoming) => assert_eq!(incoming.filename().len(), 500),
        Datagram::Handled | Datagram::Refused(_) => panic!("dropped"),
    }
    // Accepted with a storage that keeps nothing, reported with its name cut to 128 bytes.
    let mut rig: Rig<Failing, 4> = Rig::new(ServerPolicy::default(), Config::default());
    let (_, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &d, Failing::default);
    assert!(matches!(&decode(&out)[..], [(_, common::Pkt::Ack { block: 0 })]));
    let tid = out[0].0;
    let (_, out) = rig.deliver(tid, addr(PEER), false, &data(1, b"x"), || unreachable!());
    assert!(matches!(&decode(&out)[..], [(_, common::Pkt::Ack { block: 1 })]));
    let r = rig.expire_all();
    assert!(r.is_empty(), "{r:?}");
    let report = rig.poll_finished().unwrap();
    assert_eq!(report.filename.len(), REPORT_NAME_LEN);
    assert!(report.result.is_success());
}

// ---- tiny blksize (8) with every other option: the OACK must fit its own buffer -----------------

/// The largest OACK a server can send: every known option at its widest (a 20-digit tsize).
#[test]
fn blksize_8_with_every_option_the_oack_fits() {
    let mut opts: Vec<(&str, &str)> = vec![
        ("blksize", "8"),
        ("timeout", "255"),
        ("tsize", "0"),
        ("windowsize", "65535"),
        ("rollover", "1"),
    ];
    let pad = "p".repeat(20);
    while request(RequestKind::Read, "f", "octet", &opts).len() + 24 <= 512 {
        opts.push(("x", &pad));
    }
    let d = request(RequestKind::Read, "f", "octet", &opts);
    assert!(d.len() > 480 && d.len() <= 512, "{}", d.len());
    let Ok(Packet::Rrq(req)) = Packet::parse(&d) else {
        panic!()
    };
    let policy = ServerPolicy {
        max_windowsize: u16::MAX,
        ..ServerPolicy::default()
    };
    let mut t = Transfer::server(
        Instant::ZERO,
        addr(PEER),
        RequestKind::Read,
        &req,
        PatternFile { len: u64::MAX },
        &policy,
        Config::default(),
    );
    // The buffer the transfer asks for; the OACK fits in it with room to spare.
    let mut buf = vec![SENTINEL; t.max_datagram_len()];
    assert_eq!(buf.len(), 516);
    let tx = t.poll_transmit(Instant::ZERO, &mut buf).expect("the OACK");
    let oack = common::Pkt::decode(&buf[..tx.len]);
    assert_eq!(
        oack,
        common::Pkt::Oack(
            [
                ("blksize", "8"),
                ("timeout", "255"),
                ("tsize", "18446744073709551615"),
                ("windowsize", "65535"),
                ("rollover", "1"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
        )
    );
    assert!(tx.len < 100 && buf[tx.len..].iter().all(|&b| b == SENTINEL));
    // Through the table, with a 516-byte buffer, a whole transfer at blksize 8.
    let mut rig: Rig<&'static [u8], 2> = Rig::new(ServerPolicy::default(), Config::default());
    rig.buf = vec![0; 516];
    let content = leak(file(100));
    let (_, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &d, || content);
    let tid = out[0].0;
    assert_eq!(decode(&out)[0].1.oack_option("blksize"), Some("8"));
    // The whole 13-block file is one window (the policy lowers 65535 to 64).
    let (_, out) = rig.deliver(tid, addr(PEER), false, &ack(0), || unreachable!());
    let mut got = Vec::new();
    for (i, (_, _, d)) in out.iter().enumerate() {
        match Packet::parse(d) {
            Ok(Packet::Data { block, payload }) if usize::from(block) == i + 1 => {
                got.extend_from_slice(payload)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, content);
    let _ = rig.deliver(tid, addr(PEER), false, &ack(13), || unreachable!());
    assert!(rig.poll_finished().unwrap().result.is_success());
}

// ---- an OACK that omits blksize after the client asked for a small one -----------------------------

#[test]
fn client_uses_512_when_the_oack_omits_a_small_blksize() {
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"f",
        mode: TransferMode::Octet,
        options: Options {
            blksize: Some(8),
            tsize: Some(0),
            ..Options::NONE
        },
    };
    let server = addr("10.0.0.1:69");
    let tid = addr("10.0.0.1:50000");
    let mut t = Transfer::client(Instant::ZERO, server, request, Vec::new(), Config::default()).unwrap();
    let mut buf = vec![0u8; 600];
    let now = Instant::ZERO;
    while t.poll_transmit(now, &mut buf).is_some() {}
    t.handle_datagram(now, tid, &oack(&[("tsize", "600")]));
    let tx = t.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(&buf[..tx.len], ack(0));
    assert_eq!(t.params().blksize, 512);
    t.handle_datagram(now, tid, &data(1, &[1; 512]));
    t.handle_datagram(now, tid, &data(2, &[2; 88]));
    while t.poll_transmit(now, &mut buf).is_some() {}
    assert_eq!(t.outcome(), Some(Ok(600)));
}

// ---- DATA longer than the negotiated blksize -------------------------------------------------------

#[test]
fn upload_data_longer_than_blksize_is_error_4() {
    for (options, len) in [
        (vec![], 513usize),
        (vec![("blksize", "8")], 9),
        (vec![("blksize", "65464")], 65465),
    ] {
        let mut rig: Rig<Vec<u8>, 2> = Rig::new(ServerPolicy::default(), Config::default());
        let d = request(RequestKind::Write, "up", "octet", &options);
        let (_, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &d, Vec::new);
        let tid = out[0].0;
        let (_, out) = rig.deliver(tid, addr(PEER), false, &data(1, &vec![7; len]), || unreachable!());
        assert_eq!(codes(&out), [4], "{options:?}/{len}");
        let r = rig.poll_finished().unwrap();
        assert_eq!(
            r.result,
            TransferResult::Failed(TransferError::Protocol(ProtocolError::DataTooLong))
        );
        assert!(r.storage.is_empty(), "nothing of it was stored");
    }
}

// ---- OACK names that contain a known one, missing NULs, reordered options --------------------------

fn client_read(options: Options) -> Transfer<'static, Vec<u8>> {
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"f",
        mode: TransferMode::Octet,
        options,
    };
    let config = Config {
        initial_rto: Duration::from_millis(100),
        ..Config::default()
    };
    Transfer::client(Instant::ZERO, addr("10.0.0.1:69"), request, Vec::new(), config).unwrap()
}

fn sent(t: &mut Transfer<'static, Vec<u8>>, now: Instant) -> Vec<common::Pkt> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some(tx) = t.poll_transmit(now, &mut buf) {
        out.push(common::Pkt::decode(&buf[..tx.len]));
    }
    out
}

#[test]
fn client_oack_lookalikes_missing_nuls_and_reordering() {
    let asked = Options {
        blksize: Some(1024),
        windowsize: Some(8),
        tsize: Some(0),
        timeout: Some(3),
        ..Options::NONE
    };
    let tid = addr("10.0.0.1:50000");
    // A name that merely contains a known one is an unrequested option: ERROR 8.
    for name in [
        "xblksizex",
        "blksizex",
        "xblksize",
        "blk size",
        "tsize2",
        "window",
    ] {
        let mut t = client_read(asked);
        sent(&mut t, Instant::ZERO);
        t.handle_datagram(Instant::ZERO, tid, &oack(&[(name, "512")]));
        let out = sent(&mut t, Instant::ZERO);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].error_code(), Some(ErrorCode::OptionNegotiation), "{name}");
        assert_eq!(
            t.outcome(),
            Some(Err(&TransferError::Oack(OackError::Unrequested(None))))
        );
    }
    // Missing NULs: not an OACK at all, dropped; the request goes again on the timer, and a
    // valid answer (reordered, names in any case) is then accepted.
    let mut t = client_read(asked);
    sent(&mut t, Instant::ZERO);
    for broken in [
        &b"\x00\x06blksize"[..],
        b"\x00\x06blksize\x001024",
        b"\x00\x06\x001024\x00",
        b"\x00\x06blksize\x001024\x00tsize",
    ] {
        t.handle_datagram(Instant::ZERO, tid, broken);
        assert!(sent(&mut t, Instant::ZERO).is_empty(), "{broken:?} was answered");
    }
    let later = t.poll_timeout().unwrap();
    t.handle_timeout(later);
    assert!(matches!(&sent(&mut t, later)[..], [common::Pkt::Rrq(_)]));
    t.handle_datagram(
        later,
        tid,
        &oack(&[
            ("TIMEOUT", "3"),
            ("windowsize", "4"),
            ("Tsize", "5000"),
            ("blksize", "700"),
        ]),
    );
    assert_eq!(sent(&mut t, later), [common::Pkt::Ack { block: 0 }]);
    let p = t.params();
    assert_eq!(
        (p.blksize, p.windowsize, p.timeout, p.tsize),
        (700, 4, Some(3), Some(5000))
    );
}

#[test]
fn oack_and_lookalike_options_sent_to_the_server() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let content = leak(file(3000));
    // An OACK to the listening address: ERROR 4.
    for d in [
        oack(&[("blksize", "512")]),
        oack(&[]),
        b"\x00\x06blksize".to_vec(),
    ] {
        let (_, out) = rig.deliver(addr(LISTEN), addr(STRANGER), true, &d, || unreachable!());
        assert_eq!(codes(&out), [4], "{d:?}");
    }
    // Look-alike names in a request are unknown options: not acknowledged, no OACK.
    let look: Vec<(&str, &str)> = ["xblksizex", "blksizex", "xtsize", "windowsize2"]
        .iter()
        .map(|n| (*n, "8"))
        .collect();
    let d = request(RequestKind::Read, "f", "octet", &look);
    let now = rig.now;
    match rig.table.handle_datagram(now, addr(LISTEN), addr(PEER), true, &d) {
        Datagram::Request(incoming) => {
            assert_eq!(incoming.options, Options::NONE);
            rig.table
                .accept(now, &incoming, content, addr("10.0.0.1:50000"))
                .unwrap();
        }
        Datagram::Handled | Datagram::Refused(_) => panic!("dropped"),
    }
    let out = rig.transmit();
    assert!(matches!(
        &decode(&out)[..],
        [(_, common::Pkt::Data { block: 1, len: 512 })]
    ));
    // An OACK from the peer in mid-transfer is ignored; from a stranger it is ERROR 5.
    let tid = out[0].0;
    let (_, out) = rig.deliver(
        tid,
        addr(PEER),
        false,
        &oack(&[("blksize", "8")]),
        || unreachable!(),
    );
    assert!(out.is_empty());
    let (_, out) = rig.deliver(tid, addr(STRANGER), false, &oack(&[]), || unreachable!());
    assert_eq!(codes(&out), [5]);
}

// ---- paths -----------------------------------------------------------------------------------------

/// The file policy at the library level: names are normalised and resolved beneath the root by
/// `Root` (cap-std); every escape is refused before any file is opened or created.
#[test]
fn root_refuses_every_path_that_leaves_it() {
    use std::os::unix::fs::symlink;
    use tftp_proto::adapter::root::{normalize, Root};
    /// Removes the jail however the test ends.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let base = std::env::temp_dir().join(format!("tftp-proto-h7-core-jail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = Cleanup(base.clone());
    let root = base.join("tftp");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(base.join("tftp2")).unwrap();
    std::fs::write(base.join("tftp2/secret"), b"secret").unwrap();
    std::fs::write(base.join("outside.txt"), b"secret").unwrap();
    std::fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
    symlink("../tftp2/secret", root.join("outlink")).unwrap();
    symlink(base.join("outside.txt"), root.join("absout")).unwrap();
    symlink("../tftp2", root.join("outdir")).unwrap();
    symlink("../tftp2/newfile", root.join("dangling")).unwrap();
    let jail = Root::open(&root, true, true).unwrap();
    for name in [
        &b".."[..],
        b"a/..",
        b"sub/..",
        b"sub/../..",
        b"../outside.txt",
        b"sub/../../outside.txt",
        b"..\\outside.txt",
        b"../tftp2/secret",
        b"/../tftp2/secret",
        b"sub/inner.txt\x00../../outside.txt",
    ] {
        assert!(normalize(name).is_err(), "{name:?} normalised");
        assert!(jail.open_read(name).is_err());
        assert!(jail.create_upload(name).is_err());
    }
    for name in [&b"outlink"[..], b"absout", b"outdir/secret", b"/etc/passwd"] {
        assert!(jail.open_read(name).is_err(), "{name:?} was opened");
    }
    for name in [&b"outlink"[..], b"absout", b"outdir/newfile", b"dangling", b"sub"] {
        assert!(jail.create_upload(name).is_err(), "{name:?} upload was created");
    }
    // Absolute and `\` names resolve beneath the root.
    assert!(jail.open_read(b"/sub/inner.txt").is_ok());
    assert!(jail.open_read(b"\\sub\\inner.txt").is_ok());
    assert_eq!(std::fs::read(base.join("outside.txt")).unwrap(), b"secret");
    assert!(!base.join("tftp2/newfile").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 5, "no temporary file left: {leftovers:?}");
}

// ---- more than 65535 and 131072 blocks ---------------------------------------------------------------

/// A client transfer and the table, joined in memory on a perfect network.
fn table_transfer<const N: usize>(
    rig: &mut Rig<Vec<u8>, N>,
    mut client: Transfer<'static, Vec<u8>>,
    server_file: Vec<u8>,
) -> Transfer<'static, Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let mut to_server: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut server_file = Some(server_file);
    for _ in 0..10_000_000 {
        while let Some(tx) = client.poll_transmit(rig.now, &mut buf) {
            to_server.push((tx.destination, buf[..tx.len].to_vec()));
        }
        while client.poll_event().is_some() {}
        if to_server.is_empty() {
            if client.is_finished() && rig.table.is_empty() {
                return client;
            }
            while rig.poll_finished().is_some() {}
            let next = [client.poll_timeout(), rig.table.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return client };
            rig.now = rig.now.max(next);
            client.handle_timeout(rig.now);
            rig.table.handle_timeout(rig.now);
            for (_, to, d) in rig.transmit() {
                assert_eq!(to, addr(PEER));
                client.handle_datagram(rig.now, addr("10.0.0.1:50000"), &d);
            }
            continue;
        }
        for (to, d) in std::mem::take(&mut to_server) {
            let listening = to == addr(LISTEN);
            let (_, out) = rig.deliver(to, addr(PEER), listening, &d, || server_file.take().unwrap());
            for (from, _, d) in out {
                client.handle_datagram(rig.now, from, &d);
            }
        }
    }
    panic!("no end");
}

#[test]
fn more_than_131072_blocks_through_the_table() {
    let blocks = 131_075usize;
    let content = file((blocks - 1) * 8 + 5);
    // A download wrapping to 0 twice (datagrams of at most 516 bytes: a small checked buffer).
    let mut rig: Rig<Vec<u8>, 2> = Rig::new(ServerPolicy::default(), Config::default());
    rig.buf = vec![0; 600];
    let options = Options {
        blksize: Some(8),
        windowsize: Some(64),
        ..Options::NONE
    };
    let client = Transfer::client(
        Instant::ZERO,
        addr(LISTEN),
        ClientRequest {
            kind: RequestKind::Read,
            filename: b"f",
            mode: TransferMode::Octet,
            options,
        },
        Vec::new(),
        Config::default(),
    )
    .unwrap();
    let client = table_transfer(&mut rig, client, content.clone());
    assert_eq!(client.outcome(), Some(Ok(content.len() as u64)));
    assert!(client.into_storage() == content);
    // An upload wrapping to 1 twice (rollover 1).
    let mut rig: Rig<Vec<u8>, 2> = Rig::new(ServerPolicy::default(), Config::default());
    rig.buf = vec![0; 600];
    let leaked = leak(content.clone());
    let mut client = Transfer::client(
        Instant::ZERO,
        addr(LISTEN),
        ClientRequest {
            kind: RequestKind::Write,
            filename: b"up",
            mode: TransferMode::Octet,
            options: Options {
                rollover: Some(1),
                ..options
            },
        },
        leaked.to_vec(),
        Config::default(),
    )
    .unwrap();
    let mut buf = vec![0u8; 600];
    let mut stored = None;
    // Same loop, keeping the server's storage from its report.
    let mut pending: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for _ in 0..10_000_000 {
        while let Some(tx) = client.poll_transmit(rig.now, &mut buf) {
            pending.push((tx.destination, buf[..tx.len].to_vec()));
        }
        while let Some(r) = rig.poll_finished() {
            stored = Some((r.result.clone(), r.storage));
        }
        if pending.is_empty() {
            if client.is_finished() && stored.is_some() {
                break;
            }
            let next = [client.poll_timeout(), rig.table.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = next.expect("a deadline");
            rig.now = rig.now.max(next);
            client.handle_timeout(rig.now);
            if let Some(out) = rig.tick(next) {
                for (from, _, d) in out {
                    client.handle_datagram(rig.now, from, &d);
                }
            }
            continue;
        }
        for (to, d) in std::mem::take(&mut pending) {
            let (_, out) = rig.deliver(to, addr(PEER), to == addr(LISTEN), &d, Vec::new);
            for (from, _, d) in out {
                client.handle_datagram(rig.now, from, &d);
            }
        }
    }
    let (result, storage) = stored.expect("the upload ended");
    assert_eq!(result, TransferResult::Completed(content.len() as u64));
    assert!(storage == content);
}

// ---- floods of spoofed requests -------------------------------------------------------------------

/// A spoofed request of the flood tests: distinct sources, mixed kinds and options.
fn spoofed(i: u32) -> (SocketAddr, Vec<u8>) {
    let from = SocketAddr::new(
        std::net::Ipv4Addr::from(0x0a00_0000 + (i % 5000) + 2).into(),
        1024 + (i / 5000) as u16,
    );
    let d = match i % 4 {
        0 => rrq("f"),
        1 => request(
            RequestKind::Read,
            "f",
            "octet",
            &[("blksize", "65464"), ("windowsize", "64")],
        ),
        2 => request(RequestKind::Write, "w", "octet", &[("tsize", "99999999999")]),
        _ => request(RequestKind::Read, "f", "netascii", &[("tsize", "0")]),
    };
    (from, d)
}

/// 10 000 requests from distinct spoofed sources (never acknowledged) into a table of 8, and a
/// real client arriving in the middle of the flood: at most 8 sessions at any time; every
/// request is served at once by displacing the oldest session whose peer never answered (that
/// peer gets one ERROR 0, the new one its first datagram: two datagrams at most, nothing
/// else); the real client is served at its first request, is never displaced once it answered,
/// and completes its download while the flood goes on; every session is reported exactly once.
#[test]
fn request_flood_displaces_unanswered_sessions_and_a_real_client_is_served() {
    let mut rig: Rig<&'static [u8], 8> = Rig::new(ServerPolicy::default(), Config::default());
    rig.buf = vec![0; 600];
    let content = leak(file(20 * 512 + 7));
    let real = addr(PEER);
    let mut accepted = 0usize;
    let mut displaced = 0usize;
    let mut reported = std::collections::BTreeMap::new();
    // The real client's TID and the next block it expects.
    let mut real_tid: Option<SocketAddr> = None;
    let mut real_next = 1u16;
    let mut real_got = Vec::new();
    for i in 0..10_000u32 {
        let (from, d) = spoofed(i);
        rig.now += Duration::from_micros(100);
        let before = rig.table.len();
        let (req, mut out) = rig.deliver(addr(LISTEN), from, true, &d, || content);
        assert!(req);
        assert!(rig.table.len() <= 8, "{} sessions", rig.table.len());
        assert!(
            out.len() <= 2,
            "{} datagrams for one request: {:?}",
            out.len(),
            decode(&out)
        );
        assert!(
            out.iter().any(|(_, to, _)| *to == from),
            "request {i} was not answered: {:?}",
            decode(&out)
        );
        accepted += 1;
        if before == 8 {
            // The oldest unanswered session made room: its peer got ERROR 0.
            let victims: Vec<_> = decode(&out).into_iter().filter(|(to, _)| *to != from).collect();
            assert_eq!(victims.len(), 1, "{:?}", decode(&out));
            assert_eq!(victims[0].1.error_code(), Some(ErrorCode::NotDefined));
            assert_ne!(victims[0].0, real, "the answering client was displaced");
            displaced += 1;
        }
        if i == 5000 {
            // The real client asks in the middle of the flood and is served at once.
            rig.now += Duration::from_micros(100);
            if rig.table.is_full() {
                displaced += 1;
            }
            let (req, o) = rig.deliver(addr(LISTEN), real, true, &rrq("f"), || content);
            assert!(req);
            let first = o
                .iter()
                .find(|(_, to, _)| *to == real)
                .expect("the real client is served at its first request");
            real_tid = Some(first.0);
            out.extend(o);
        }
        // Timers fire as time goes by.
        while let Some(o) = rig.tick(rig.now) {
            assert!(o.len() <= 8);
            out.extend(o);
        }
        // The real client acknowledges each block it gets, once, in order.
        let mut pending: Vec<Out> = out;
        while let Some((tid, to, bytes)) = pending.pop() {
            if to != real || Some(tid) != real_tid {
                continue;
            }
            if let common::Pkt::Data { block, .. } = common::Pkt::decode(&bytes) {
                if block == real_next {
                    real_got.extend_from_slice(&bytes[4..]);
                    real_next += 1;
                }
                let (_, o) = rig.deliver(tid, real, false, &ack(block), || unreachable!());
                pending.extend(o);
            }
        }
        while let Some(r) = rig.poll_finished() {
            assert!(
                reported.insert((r.peer, r.stats.started), r.result).is_none(),
                "reported twice"
            );
        }
    }
    rig.expire_all();
    while let Some(r) = rig.poll_finished() {
        assert!(
            reported.insert((r.peer, r.stats.started), r.result).is_none(),
            "reported twice"
        );
    }
    assert!(rig.table.is_empty());
    assert_eq!(reported.len(), accepted + 1, "every session reported once");
    assert_eq!(real_got, content, "the real client's download");
    let real_result = reported
        .iter()
        .find(|((p, _), _)| *p == real)
        .map(|(_, r)| r.clone());
    assert_eq!(real_result, Some(TransferResult::Completed(content.len() as u64)));
    let counted = reported
        .values()
        .filter(|r| **r == TransferResult::Displaced)
        .count();
    assert_eq!(counted, displaced);
    assert!(displaced > 9_000, "{displaced} displaced");
}

/// Displacement takes only sessions whose peer never answered: with every slot held by a
/// client that acknowledged its first block, a new request is refused with ERROR 0 "busy" and
/// no session is touched; once one unanswered session is among them, that one (and only that
/// one) makes room.
#[test]
fn a_full_table_of_answering_clients_refuses_and_displaces_nobody() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let content = leak(file(100 * 512));
    let clients: Vec<SocketAddr> = (0..4)
        .map(|k| addr(&format!("10.0.0.{}:4000{k}", k + 2)))
        .collect();
    let mut tids = Vec::new();
    for &c in &clients {
        let (req, out) = rig.deliver(addr(LISTEN), c, true, &rrq("f"), || content);
        assert!(req);
        tids.push(out[0].0);
        let (_, out) = rig.deliver(out[0].0, c, false, &ack(1), || unreachable!());
        assert!(matches!(
            &decode(&out)[..],
            [(_, common::Pkt::Data { block: 2, .. })]
        ));
    }
    assert!(rig.table.is_full());
    let newcomer = addr("10.0.0.99:5000");
    let (req, out) = rig.deliver(addr(LISTEN), newcomer, true, &rrq("f"), || content);
    assert!(req);
    assert_eq!(decode(&out).len(), 1, "{:?}", decode(&out));
    assert_eq!(out[0].1, newcomer);
    assert_eq!(codes(&out), [0], "busy");
    assert!(rig.poll_finished().is_none(), "nobody was displaced");
    assert_eq!(rig.table.len(), 4);
    // Every client carries on.
    for (k, (&c, &tid)) in clients.iter().zip(&tids).enumerate() {
        let (_, out) = rig.deliver(tid, c, false, &ack(2), || unreachable!());
        assert!(
            matches!(&decode(&out)[..], [(to, common::Pkt::Data { block: 3, .. })] if *to == c),
            "client {k}"
        );
    }
    // One client finishes; a spoofed request takes its place and never answers; the newcomer
    // then displaces exactly that one.
    let (_, out) = rig.deliver(
        tids[0],
        clients[0],
        false,
        &common::error(0, "bye"),
        || unreachable!(),
    );
    assert!(out.is_empty());
    let r = rig.poll_finished().expect("the client that left");
    assert_eq!(r.peer, clients[0]);
    let spoof = addr("10.9.9.9:666");
    let (_, out) = rig.deliver(addr(LISTEN), spoof, true, &rrq("f"), || content);
    assert!(matches!(&decode(&out)[..], [(to, common::Pkt::Data { block: 1, .. })] if *to == spoof));
    let (_, out) = rig.deliver(addr(LISTEN), newcomer, true, &rrq("f"), || content);
    let d = decode(&out);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d
        .iter()
        .any(|(to, p)| *to == spoof && p.error_code() == Some(ErrorCode::NotDefined)));
    assert!(d
        .iter()
        .any(|(to, p)| *to == newcomer && matches!(p, common::Pkt::Data { block: 1, .. })));
    let r = rig.poll_finished().expect("the displaced session");
    assert_eq!((r.peer, r.result), (spoof, TransferResult::Displaced));
    assert!(rig.poll_finished().is_none());
    assert_eq!(rig.table.len(), 4);
}

/// What a spoofed request costs the victim whose address it carries: one datagram at once (the
/// first answer is never a window), then only retransmissions on the timer, at most
/// `max_retries`, with exponential backoff, then the session ends.
#[test]
fn a_spoofed_request_draws_one_datagram_then_only_backed_off_retries() {
    for (d, first_len) in [
        (rrq("f"), 4 + 512),
        (
            request(
                RequestKind::Read,
                "f",
                "octet",
                &[("blksize", "65464"), ("windowsize", "64")],
            ),
            // The OACK, not a window of 64 blocks of 65464 bytes.
            2 + "blksize\x0065464\x00windowsize\x0064\x00".len(),
        ),
        (request(RequestKind::Write, "w", "octet", &[]), 4),
    ] {
        let config = Config::default();
        let mut rig: Rig<Vec<u8>, 2> = Rig::new(ServerPolicy::default(), config);
        let (_, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &d, || file(1_000_000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].2.len(), first_len);
        let mut times = vec![rig.now];
        let mut total = out[0].2.len();
        while let Some(out) = rig.tick(Instant::from_micros(u64::MAX)) {
            assert!(out.len() <= 1);
            for (_, _, d) in &out {
                if Packet::parse(d).is_ok_and(|p| !matches!(p, Packet::Error { .. })) {
                    times.push(rig.now);
                    total += d.len();
                }
            }
        }
        let retries = times.len() - 1;
        assert!(
            retries <= usize::from(config.max_retries),
            "{retries} retransmissions"
        );
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "not backed off: {gaps:?}");
        assert!(total <= first_len * (usize::from(config.max_retries) + 1));
        assert!(rig.poll_finished().is_some());
    }
}

/// RFC 1123: nothing sent to a broadcast or multicast address is answered, requests included.
#[test]
fn broadcast_and_multicast_destinations_are_ignored() {
    for local in ["255.255.255.255:69", "224.0.0.1:69", "[ff02::1]:69"] {
        let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
        for d in [
            rrq("f"),
            request(RequestKind::Write, "w", "octet", &[]),
            ack(1),
            data(1, b"x"),
            vec![0, 9],
        ] {
            let (req, out) = rig.deliver(addr(local), addr(PEER), true, &d, || unreachable!());
            assert!(!req && out.is_empty(), "{local}: {d:?} answered: {out:?}");
        }
        assert!(rig.table.is_empty());
    }
}

// ---- storage faults at the library level -------------------------------------------------------------

#[test]
fn storage_faults_reach_the_peer_as_their_error() {
    for (read, code) in [
        (StorageError::AccessDenied, 2u16),
        (StorageError::NotFound, 1),
        (StorageError::Io, 0),
    ] {
        let mut rig: Rig<Failing, 2> = Rig::new(ServerPolicy::default(), Config::default());
        let storage = Failing {
            read: Some(read),
            ..Failing::default()
        };
        let (_, out) = rig.deliver(addr(LISTEN), addr(PEER), true, &rrq("f"), || storage);
        assert_eq!(codes(&out), [code], "{read:?}");
        let r = rig.poll_finished().unwrap();
        assert_eq!(r.result, TransferResult::Failed(TransferError::Storage(read)));
    }
    // A write that fills the disk: ERROR 3, the failing block not acknowledged.
    let mut rig: Rig<Failing, 2> = Rig::new(ServerPolicy::default(), Config::default());
    let storage = Failing {
        write: Some(StorageError::DiskFull),
        write_limit: 1024,
        ..Failing::default()
    };
    let (_, out) = rig.deliver(
        addr(LISTEN),
        addr(PEER),
        true,
        &request(RequestKind::Write, "w", "octet", &[]),
        || storage,
    );
    let tid = out[0].0;
    let mut acks = Vec::new();
    for block in 1..=3u16 {
        let (_, out) = rig.deliver(tid, addr(PEER), false, &data(block, &[0; 512]), || unreachable!());
        acks.extend(decode(&out).into_iter().map(|(_, p)| p));
    }
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[2].error_code(), Some(ErrorCode::DiskFull));
}

// ---- the length sent is exactly the bytes written ----------------------------------------------------

/// Every `Transmit` of a client and a server, for every packet type, is exactly as long as its
/// encoding, and nothing is written past it (the [`Rig`] checks the table's side).
#[test]
fn every_transmit_is_exactly_its_encoding() {
    let content = file(20 * 700 + 5);
    for (kind, options) in [
        (RequestKind::Read, Options::NONE),
        (
            RequestKind::Read,
            Options {
                blksize: Some(700),
                windowsize: Some(4),
                tsize: Some(0),
                timeout: Some(2),
                rollover: Some(0),
            },
        ),
        (
            RequestKind::Write,
            Options {
                blksize: Some(700),
                tsize: Some(0),
                ..Options::NONE
            },
        ),
    ] {
        let mut rig: Rig<Vec<u8>, 2> = Rig::new(ServerPolicy::default(), Config::default());
        let client_storage = if kind == RequestKind::Write {
            content.clone()
        } else {
            Vec::new()
        };
        let mut client = Transfer::client(
            Instant::ZERO,
            addr(LISTEN),
            ClientRequest {
                kind,
                filename: b"f",
                mode: TransferMode::Octet,
                options,
            },
            client_storage,
            Config::default(),
        )
        .unwrap();
        let mut buf = vec![SENTINEL; 65536];
        let mut server_file = Some(if kind == RequestKind::Read {
            content.clone()
        } else {
            Vec::new()
        });
        let mut steps = 0;
        while !client.is_finished() {
            steps += 1;
            assert!(steps < 100_000);
            let mut out = Vec::new();
            loop {
                buf.fill(SENTINEL);
                let Some(tx) = client.poll_transmit(rig.now, &mut buf) else {
                    break;
                };
                let p = Packet::parse(&buf[..tx.len]).unwrap();
                let exact = if matches!(p, Packet::Ack { .. }) {
                    4
                } else {
                    p.encoded_len()
                };
                assert_eq!(exact, tx.len);
                assert!(buf[tx.len..].iter().all(|&b| b == SENTINEL));
                out.push((tx.destination, buf[..tx.len].to_vec()));
            }
            while let Some(e) = client.poll_event() {
                assert!(!matches!(e, Event::Failed(_)), "{e:?}");
            }
            if out.is_empty() {
                let next = [client.poll_timeout(), rig.table.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { break };
                rig.now = rig.now.max(next);
                client.handle_timeout(rig.now);
                if let Some(o) = rig.tick(next) {
                    for (from, _, d) in o {
                        client.handle_datagram(rig.now, from, &d);
                    }
                }
                continue;
            }
            for (to, d) in out {
                let (_, replies) = rig.deliver(to, addr(PEER), to == addr(LISTEN), &d, || {
                    server_file.take().unwrap()
                });
                for (from, _, d) in replies {
                    client.handle_datagram(rig.now, from, &d);
                }
            }
        }
        assert_eq!(
            client.outcome(),
            Some(Ok(content.len() as u64)),
            "{kind:?} {options:?}"
        );
    }
    // The encoders themselves: see tests/codec.rs `encode_length_is_exactly_bytes_written`.
    let list = OptionList::parse(b"blksize\x00512\x00").unwrap();
    assert_eq!(Packet::Oack { options: list }.encoded_len(), 2 + 12);
}

// ---- error texts a person can act on; the mode checked first; an option without value ------

/// The one ERROR the table sent for `d` (a datagram on the listening port), as (code, text).
fn only_error<S: Storage, const N: usize>(rig: &mut Rig<S, N>, d: &[u8]) -> (ErrorCode, String) {
    let (req, out) = rig.deliver(addr(LISTEN), addr(PEER), true, d, || unreachable!());
    assert!(!req, "{d:?} was handed over as a request");
    match &decode(&out)[..] {
        [(to, common::Pkt::Error { code, message })] if *to == addr(PEER) => {
            (*code, String::from_utf8(message.clone()).unwrap())
        }
        other => panic!("{d:?}: {other:?}"),
    }
}

/// An unknown mode is refused as such, with what is accepted, before the application is asked
/// for any file (so a missing file cannot hide it); `mail` too.
#[test]
fn unknown_mode_is_refused_before_any_file_lookup() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    for kind in [RequestKind::Read, RequestKind::Write] {
        let d = request(kind, "no-such-file", "binary", &[]);
        assert_eq!(
            only_error(&mut rig, &d),
            (
                ErrorCode::IllegalOperation,
                "unknown transfer mode \"binary\": use octet or netascii".to_string()
            )
        );
        let d = request(kind, "no-such-file", "MAIL", &[]);
        assert_eq!(
            only_error(&mut rig, &d),
            (
                ErrorCode::IllegalOperation,
                "mail mode is not supported: use octet or netascii".to_string()
            )
        );
    }
    // A mode that is not text is shown safely, and cut short.
    let d = request(RequestKind::Read, "f", "bin\u{7f}\u{1}ary", &[]);
    assert_eq!(
        only_error(&mut rig, &d).1,
        "unknown transfer mode \"bin??ary\": use octet or netascii"
    );
    let long = "m".repeat(100);
    let d = request(RequestKind::Read, "f", &long, &[]);
    let (code, text) = only_error(&mut rig, &d);
    assert_eq!(code, ErrorCode::IllegalOperation);
    assert_eq!(
        text,
        format!(
            "unknown transfer mode \"{}...\": use octet or netascii",
            "m".repeat(32)
        )
    );
    assert!(rig.table.is_empty());
}

/// A datagram with an unknown opcode on the listening port is told which requests start a
/// transfer; a request over 512 octets is told its length and the limit.
#[test]
fn refusal_texts_say_what_was_wrong_and_what_is_accepted() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    assert_eq!(
        only_error(&mut rig, b"\x00\x09hello\x00"),
        (
            ErrorCode::IllegalOperation,
            "unknown opcode 9: a transfer starts with a read (RRQ, 1) or write (WRQ, 2) request".to_string()
        )
    );
    let mut d = request(RequestKind::Read, &"n".repeat(510), "octet", &[]);
    assert_eq!(d.len(), 519);
    assert_eq!(
        only_error(&mut rig, &d).1,
        "request of 519 octets is over the 512 allowed: shorten the file name or options"
    );
    d.truncate(2);
    assert_eq!(only_error(&mut rig, &d).1, "filename not terminated");
    assert!(rig.table.is_empty());
}

/// An option name without a value at the end of a request (`blksize NUL`, end) is ignored, as
/// tftpd-hpa and py3tftp do: the request is served with the options before it, and the ignored
/// name is reported for the log.
#[test]
fn request_option_without_value_at_end_is_ignored_and_served() {
    let mut rig: Rig<&'static [u8], 4> = Rig::new(ServerPolicy::default(), Config::default());
    let now = rig.now;
    let d = b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x00";
    match rig.table.handle_datagram(now, addr(LISTEN), addr(PEER), true, d) {
        Datagram::Request(incoming) => {
            assert_eq!(incoming.request.ignored_option, b"blksize");
            assert_eq!(incoming.options.tsize, Some(0));
            assert_eq!(incoming.options.blksize, None);
        }
        Datagram::Handled | Datagram::Refused(_) => panic!("refused"),
    }
    let file: &'static [u8] = b"0123456789";
    let (req, out) = rig.deliver(addr(LISTEN), addr(PEER), true, d, || file);
    assert!(req);
    // tsize is answered; blksize, never given a value, is not in the OACK.
    match &decode(&out)[..] {
        [(_, common::Pkt::Oack(o))] => assert_eq!(o, &vec![("tsize".to_string(), "10".to_string())]),
        other => panic!("{other:?}"),
    }
    let tid = out[0].0;
    let (_, out) = rig.deliver(tid, addr(PEER), false, &ack(0), || unreachable!());
    assert!(matches!(
        &decode(&out)[..],
        [(_, common::Pkt::Data { block: 1, len: 10 })]
    ));
    let (_, _) = rig.deliver(tid, addr(PEER), false, &ack(1), || unreachable!());
    rig.expire_all();
    let report = rig.poll_finished().expect("finished");
    assert_eq!(report.result, TransferResult::Completed(10));
    assert_eq!(&report.ignored_option[..], b"blksize");
}
