use super::*;
use crate::engine::ServerPolicy;
use crate::options::OptionList;
use crate::wire::{encode_ack, encode_request};

const FILE: &[u8] = &[7u8; 1000];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rrq<'b>(buf: &'b mut [u8], options: &Options) -> &'b [u8] {
    let n = encode_request(
        buf,
        RequestKind::Read,
        b"boot.efi",
        Mode::Octet,
        options,
        OptionList::EMPTY,
    )
    .unwrap();
    &buf[..n]
}

/// A file that counts the idle calls it gets (in a cell the test keeps).
#[derive(Debug)]
struct Idling<'c> {
    idles: &'c core::cell::Cell<u32>,
}

impl Storage for Idling<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, crate::storage::StorageError> {
        let mut file: &[u8] = FILE;
        file.read_at(offset, buf)
    }
    fn idle(&mut self) {
        self.idles.set(self.idles.get() + 1);
    }
}

/// `idle` reaches the storage of each session that sent since the last call, once, and no
/// other: a session that only waits costs nothing.
#[test]
fn idle_reaches_the_sessions_that_sent_once_each() {
    let counts = [core::cell::Cell::new(0), core::cell::Cell::new(0)];
    let mut table: ArrayTable<Idling<'_>, 4> = ServerTable::new(ServerPolicy::default(), Config::default());
    let now = Instant::ZERO;
    let listen = addr("10.0.0.1:69");
    let peers = [addr("10.0.0.2:40000"), addr("10.0.0.3:40000")];
    let tids = [addr("10.0.0.1:50000"), addr("10.0.0.1:50001")];
    let mut buf = [0u8; 600];
    // The first peer asks for windows of four 64-byte blocks.
    let windowed = Options {
        blksize: Some(64),
        windowsize: Some(4),
        ..Options::NONE
    };
    for k in 0..2 {
        let mut req = [0u8; 512];
        let plain = rrq(&mut req, if k == 0 { &windowed } else { &Options::NONE });
        let Datagram::Request(incoming) = table.handle_datagram(now, listen, peers[k], true, plain) else {
            panic!("a request");
        };
        table
            .accept(now, &incoming, Idling { idles: &counts[k] }, tids[k])
            .unwrap();
    }
    assert_eq!(counts.each_ref().map(|c| c.get()), [0, 0], "nothing sent yet");
    let mut sent = 0;
    while table.poll_transmit(now, &mut buf).is_some() {
        sent += 1;
    }
    assert_eq!(sent, 2, "an OACK and a DATA 1");
    table.idle();
    assert_eq!(counts.each_ref().map(|c| c.get()), [1, 1]);
    table.idle();
    assert_eq!(counts.each_ref().map(|c| c.get()), [1, 1], "nothing sent since");

    let mut ack = [0u8; 4];
    encode_ack(&mut ack, 0).unwrap();
    let _ = table.handle_datagram(now, tids[0], peers[0], false, &ack);
    for block in 1..=4 {
        let tx = table.poll_transmit(now, &mut buf).unwrap();
        assert!(matches!(Packet::parse(&buf[..tx.len]), Ok(Packet::Data { block: b, .. }) if b == block));
    }
    assert!(table.poll_transmit(now, &mut buf).is_none());
    table.idle();
    assert_eq!(
        counts.each_ref().map(|c| c.get()),
        [2, 1],
        "once for a window of four, and only for the session that sent"
    );
}

/// UEFI's size probe: RRQ with tsize, OACK, ERROR 8, then at once a plain RRQ from the same
/// port, before the application collected the finished probe. The new request is served and
/// its datagrams reach it, not the finished session; a repeat of it is dropped.
#[test]
fn request_right_after_a_declined_probe_is_served() {
    for single_port in [false, true] {
        let mut table: ArrayTable<&'static [u8], 4> =
            ServerTable::new(ServerPolicy::default(), Config::default());
        let now = Instant::ZERO;
        let listen = addr("10.0.0.1:69");
        let client = addr("10.0.0.2:40000");
        let tids = if single_port {
            [listen, listen]
        } else {
            [addr("10.0.0.1:50000"), addr("10.0.0.1:50001")]
        };
        let mut buf = [0u8; 600];
        let mut req = [0u8; 512];
        let probe = rrq(
            &mut req,
            &Options {
                tsize: Some(0),
                ..Options::NONE
            },
        );
        let Datagram::Request(incoming) = table.handle_datagram(now, listen, client, true, probe) else {
            panic!("the probe is a request");
        };
        table.accept(now, &incoming, FILE, tids[0]).unwrap();
        let tx = table.poll_transmit(now, &mut buf).unwrap();
        assert!(matches!(Packet::parse(&buf[..tx.len]), Ok(Packet::Oack { .. })));
        assert!(table.poll_transmit(now, &mut buf).is_none());

        let mut err = [0u8; 32];
        let n = encode_error_lossy(&mut err, ErrorCode::OptionNegotiation, b"tsize only").unwrap();
        let _ = table.handle_datagram(now, tids[0], client, single_port, &err[..n]);
        assert!(table.poll_transmit(now, &mut buf).is_none());

        let mut req = [0u8; 512];
        let plain = rrq(&mut req, &Options::NONE);
        let Datagram::Request(incoming) = table.handle_datagram(now, listen, client, true, plain) else {
            panic!("the new request was dropped (single port {single_port})");
        };
        table.accept(now, &incoming, FILE, tids[1]).unwrap();
        let tx = table.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(tx.local, tids[1]);
        assert!(matches!(
            Packet::parse(&buf[..tx.len]),
            Ok(Packet::Data { block: 1, .. })
        ));
        assert!(table.poll_transmit(now, &mut buf).is_none());

        assert!(matches!(
            table.handle_datagram(now, listen, client, true, plain),
            Datagram::Handled
        ));
        let mut ack = [0u8; 4];
        encode_ack(&mut ack, 1).unwrap();
        let _ = table.handle_datagram(now, tids[1], client, single_port, &ack);
        let tx = table.poll_transmit(now, &mut buf).unwrap();
        assert!(matches!(
            Packet::parse(&buf[..tx.len]),
            Ok(Packet::Data { block: 2, .. })
        ));

        let report = table.poll_finished(now).expect("the probe's report");
        assert_eq!(report.result, TransferResult::Declined);
        assert_eq!(table.len(), 1);
    }
}

/// The new request overtakes the ERROR 8 that ends the probe (read first from the listening
/// socket): the probe's session ends quietly and the new request is served.
#[test]
fn different_request_from_a_live_sessions_port_supersedes_it() {
    let mut table: ArrayTable<&'static [u8], 4> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let mut now = Instant::ZERO;
    let listen = addr("10.0.0.1:69");
    let client = addr("10.0.0.2:40000");
    let (old, new) = (addr("10.0.0.1:50000"), addr("10.0.0.1:50001"));
    let mut buf = [0u8; 600];
    let mut req = [0u8; 512];
    let probe = rrq(
        &mut req,
        &Options {
            tsize: Some(0),
            ..Options::NONE
        },
    );
    let Datagram::Request(incoming) = table.handle_datagram(now, listen, client, true, probe) else {
        panic!("the probe is a request");
    };
    table.accept(now, &incoming, FILE, old).unwrap();
    while table.poll_transmit(now, &mut buf).is_some() {}
    // The same request again is a retransmission: dropped.
    assert!(matches!(
        table.handle_datagram(now, listen, client, true, probe),
        Datagram::Handled
    ));
    let mut req = [0u8; 512];
    let plain = rrq(&mut req, &Options::NONE);
    let Datagram::Request(incoming) = table.handle_datagram(now, listen, client, true, plain) else {
        panic!("the new request was dropped");
    };
    table.accept(now, &incoming, FILE, new).unwrap();
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(tx.local, new);
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Data { block: 1, .. })
    ));
    assert!(
        table.poll_transmit(now, &mut buf).is_none(),
        "nothing from the old session"
    );
    let report = table.poll_finished(now).expect("the old session's report");
    assert_eq!(report.local, old);
    assert!(!report.result.is_success());
    assert_eq!(table.len(), 1);
    // The late ERROR 8 to the old port changes nothing for the new session.
    let mut err = [0u8; 32];
    let n = encode_error_lossy(&mut err, ErrorCode::OptionNegotiation, b"tsize only").unwrap();
    let _ = table.handle_datagram(now, old, client, false, &err[..n]);
    now = table.poll_timeout().unwrap();
    table.handle_timeout(now);
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(tx.local, new, "the new session retransmits");
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Data { block: 1, .. })
    ));
}

#[test]
fn datagrams_from_port_zero_are_dropped() {
    let mut table: ArrayTable<&'static [u8], 4> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let mut req = [0u8; 512];
    let r = rrq(&mut req, &Options::NONE);
    let d = table.handle_datagram(Instant::ZERO, addr("10.0.0.1:69"), addr("10.0.0.2:0"), true, r);
    assert!(matches!(d, Datagram::Handled));
    let mut ack = [0u8; 4];
    encode_ack(&mut ack, 1).unwrap();
    let _ = table.handle_datagram(Instant::ZERO, addr("10.0.0.1:69"), addr("10.0.0.2:0"), true, &ack);
    assert!(
        table.poll_transmit(Instant::ZERO, &mut [0u8; 600]).is_none(),
        "no ERROR 5 to port 0"
    );
}

/// A request from `peer` for `FILE` (plain), fed through the listening address.
fn request_from<S: Storage, T: SlotStorage<S>>(
    table: &mut ServerTable<S, T>,
    now: Instant,
    peer: SocketAddr,
    storage: S,
    tid: SocketAddr,
) -> Result<SessionHandle, Full<S>> {
    request_with(table, now, peer, &Options::NONE, storage, tid).expect("a request")
}

/// A request from `peer` with `options`; `None` when the table dropped it as a repeat.
fn request_with<S: Storage, T: SlotStorage<S>>(
    table: &mut ServerTable<S, T>,
    now: Instant,
    peer: SocketAddr,
    options: &Options,
    storage: S,
    tid: SocketAddr,
) -> Option<Result<SessionHandle, Full<S>>> {
    let mut req = [0u8; 512];
    let r = rrq(&mut req, options);
    match table.handle_datagram(now, addr("10.0.0.1:69"), peer, true, r) {
        Datagram::Request(incoming) => Some(table.accept(now, &incoming, storage, tid)),
        Datagram::Handled | Datagram::Refused(_) => None,
    }
}

fn peer_n(n: u32) -> SocketAddr {
    SocketAddr::new(
        core::net::Ipv4Addr::from(0x0a01_0000 + n).into(),
        1024 + (n % 50_000) as u16,
    )
}

fn tid_n(n: u32) -> SocketAddr {
    SocketAddr::new(
        core::net::Ipv4Addr::from(0x0a00_0001).into(),
        10_000 + (n % 50_000) as u16,
    )
}

/// A datagram on a session's socket reaches that session by its handle alone (whatever its
/// local address); once the session is collected its handle is stale and drops datagrams,
/// and the session that reuses the slot has another handle.
#[test]
fn handles_route_session_datagrams_and_go_stale() {
    let mut table: ArrayTable<&'static [u8], 2> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let now = Instant::ZERO;
    let mut buf = [0u8; 600];
    let (a, b) = (addr("10.0.0.2:40000"), addr("10.0.0.3:40000"));
    let ha = request_from(&mut table, now, a, FILE, addr("10.0.0.1:50000")).unwrap();
    let hb = request_from(&mut table, now, b, FILE, addr("10.0.0.1:50001")).unwrap();
    assert_ne!(ha, hb);
    while table.poll_transmit(now, &mut buf).is_some() {}
    table.debug_check();
    let mut ack = [0u8; 4];
    encode_ack(&mut ack, 1).unwrap();
    table.handle_session_datagram(now, hb, b, &ack);
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!((tx.session, tx.destination), (Some(hb), b));
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Data { block: 2, .. })
    ));
    assert!(table.poll_transmit(now, &mut buf).is_none());
    // A stranger on b's socket gets ERROR 5 from b's session, which carries on.
    table.handle_session_datagram(now, hb, a, &ack);
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!((tx.session, tx.destination), (Some(hb), a));
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Error {
            code: ErrorCode::UnknownTid,
            ..
        })
    ));
    // b ends; its handle goes stale.
    let mut err = [0u8; 16];
    let n = encode_error_lossy(&mut err, ErrorCode::NotDefined, b"bye").unwrap();
    table.handle_session_datagram(now, hb, b, &err[..n]);
    while table.poll_transmit(now, &mut buf).is_some() {}
    let report = table.poll_finished(now).unwrap();
    assert_eq!(report.session, hb);
    table.handle_session_datagram(now, hb, b, &ack);
    assert!(
        table.poll_transmit(now, &mut buf).is_none(),
        "a stale handle reaches nobody"
    );
    assert!(!table.abort(hb, ErrorCode::NotDefined, "x"));
    let hc = request_from(&mut table, now, b, FILE, addr("10.0.0.1:50002")).unwrap();
    assert_eq!(hc.index(), hb.index(), "the slot is reused");
    assert_ne!(hc, hb, "under another handle");
    table.debug_check();
}

/// Thousands of sessions with different timers come and go (answered, finished, failed by
/// their peer, timed out, superseded, displaced) in a growable table: after every step the
/// table's structures match its sessions (`debug_check`: the index, the counts, the deadline
/// heap against every session's own deadline), and every session is reported exactly once.
#[cfg(feature = "alloc")]
#[test]
fn timers_stay_exact_as_thousands_of_sessions_come_and_go() {
    let mut table: VecTable<&'static [u8]> =
        ServerTable::growable(ServerPolicy::default(), Config::default());
    table.set_session_limit(300);
    table.set_hash_seed(42);
    let mut now = Instant::ZERO;
    let mut buf = [0u8; 600];
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: std::vec::Vec<(SessionHandle, SocketAddr, u16)> = std::vec::Vec::new();
    let (mut accepted, mut reported) = (0u64, 0u64);
    let mut displaced = 0u64;
    for step in 0..6000u32 {
        now += core::time::Duration::from_micros(next() % 40_000);
        match next() % 8 {
            // A new client (some repeat an earlier peer's address: a new request supersedes).
            0..=2 => {
                let peer = peer_n((next() % 4000) as u32);
                let options = Options {
                    blksize: (next() % 2 == 0).then_some(700),
                    ..Options::NONE
                };
                if let Some(Ok(h)) = request_with(&mut table, now, peer, &options, FILE, tid_n(step)) {
                    accepted += 1;
                    live.push((h, peer, 0));
                }
            }
            // A client acknowledges the next block (or repeats one).
            3..=5 if !live.is_empty() => {
                let k = (next() % live.len() as u64) as usize;
                let (h, peer, acked) = &mut live[k];
                let block = if next() % 4 == 0 { *acked } else { *acked + 1 };
                *acked = block.max(*acked);
                let mut ack = [0u8; 4];
                encode_ack(&mut ack, block).unwrap();
                table.handle_session_datagram(now, *h, *peer, &ack);
            }
            // A client gives up.
            6 if !live.is_empty() => {
                let k = (next() % live.len() as u64) as usize;
                let (h, peer, _) = live.swap_remove(k);
                let mut err = [0u8; 16];
                let n = encode_error_lossy(&mut err, ErrorCode::NotDefined, b"bye").unwrap();
                table.handle_session_datagram(now, h, peer, &err[..n]);
            }
            // Time passes to the next deadline.
            _ => {
                if let Some(t) = table.poll_timeout() {
                    now = now.max(t);
                }
                table.handle_timeout(now);
            }
        }
        while table.poll_transmit(now, &mut buf).is_some() {}
        table.idle();
        if step % 3 == 0 {
            while let Some(r) = table.poll_finished(now) {
                reported += 1;
                displaced += u64::from(r.result == TransferResult::Displaced);
                live.retain(|(h, _, _)| *h != r.session);
            }
        }
        table.debug_check();
        assert!(table.len() <= 300);
    }
    // Everything ends by itself.
    for _ in 0..100_000 {
        while table.poll_transmit(now, &mut buf).is_some() {}
        while let Some(r) = table.poll_finished(now) {
            reported += 1;
            displaced += u64::from(r.result == TransferResult::Displaced);
        }
        match table.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                table.handle_timeout(now);
            }
            None => break,
        }
    }
    while let Some(_r) = table.poll_finished(now) {
        reported += 1;
    }
    table.debug_check();
    assert!(table.is_empty());
    assert_eq!(reported, accepted, "every session reported once");
    assert!(accepted > 1000, "{accepted} sessions");
    assert!(
        displaced > 0,
        "the limit was reached and unanswered sessions made room"
    );
}

/// A growable table holds 100,000 sessions (no fixed ceiling), finds each by handle and by
/// peer, and its next deadline is the earliest of all.
#[cfg(feature = "alloc")]
#[test]
fn a_growable_table_holds_a_hundred_thousand_sessions() {
    let mut table: VecTable<&'static [u8]> =
        ServerTable::growable(ServerPolicy::default(), Config::default());
    table.set_session_limit(100_000);
    let mut now = Instant::ZERO;
    let mut handles = std::vec::Vec::new();
    for n in 0..100_000u32 {
        now += core::time::Duration::from_micros(10);
        handles.push(request_from(&mut table, now, peer_n(n), FILE, tid_n(n)).unwrap());
    }
    assert_eq!(table.len(), 100_000);
    assert!(table.capacity() >= 100_000);
    let mut buf = [0u8; 600];
    let mut sent = 0;
    while table.poll_transmit(now, &mut buf).is_some() {
        sent += 1;
    }
    assert_eq!(sent, 100_000, "a DATA 1 each");
    // The first session's retransmission is the earliest deadline.
    let first = table.poll_timeout().unwrap();
    assert!(first > Instant::ZERO && first < now + core::time::Duration::from_secs(2));
    // Session 77,777 answers: routed by its handle, it sends DATA 2.
    let mut ack = [0u8; 4];
    encode_ack(&mut ack, 1).unwrap();
    table.handle_session_datagram(now, handles[77_777], peer_n(77_777), &ack);
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(tx.destination, peer_n(77_777));
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Data { block: 2, .. })
    ));
    // A repeat of session 12,345's request (through the peer index) is dropped.
    let mut req = [0u8; 512];
    let r = rrq(&mut req, &Options::NONE);
    assert!(matches!(
        table.handle_datagram(now, addr("10.0.0.1:69"), peer_n(12_345), true, r),
        Datagram::Handled
    ));
    table.debug_check();
}

/// A fixed table with every slot taken by a session whose peer never answered: a request is
/// accepted without any collection first, the displaced session waiting outside the slots
/// until `poll_finished`; its peer gets ERROR 0 from the session's address.
#[test]
fn a_full_fixed_table_displaces_into_the_evicted_holder() {
    let mut table: ArrayTable<&'static [u8], 2> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let now = Instant::ZERO;
    let mut buf = [0u8; 600];
    let h0 = request_from(&mut table, now, peer_n(0), FILE, tid_n(0)).unwrap();
    let _h1 = request_from(&mut table, now, peer_n(1), FILE, tid_n(1)).unwrap();
    while table.poll_transmit(now, &mut buf).is_some() {}
    assert!(table.is_full());
    assert_eq!(table.unanswered(), 2);
    let h2 = request_from(&mut table, now, peer_n(2), FILE, tid_n(2)).unwrap();
    assert_eq!(h2.index(), h0.index(), "the oldest session's slot");
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!((tx.local, tx.destination), (tid_n(0), peer_n(0)));
    assert!(matches!(
        Packet::parse(&buf[..tx.len]),
        Ok(Packet::Error {
            code: ErrorCode::NotDefined,
            ..
        })
    ));
    let tx = table.poll_transmit(now, &mut buf).unwrap();
    assert_eq!((tx.session, tx.destination), (Some(h2), peer_n(2)));
    table.debug_check();
    let report = table.poll_finished(now).unwrap();
    assert_eq!(
        (report.session, report.peer, report.result),
        (h0, peer_n(0), TransferResult::Displaced)
    );
    assert!(table.poll_finished(now).is_none());
    assert_eq!(table.len(), 2);
}

/// A request detached from its datagram (`Incoming::detach`) survives the buffer's reuse and is
/// accepted or refused through the copy exactly as through the original.
#[test]
fn a_detached_request_is_accepted_after_its_buffer_is_reused() {
    let mut table: ArrayTable<&'static [u8], 4> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let now = Instant::ZERO;
    let listen = addr("10.0.0.1:69");
    let (a, b) = (addr("10.0.0.2:40000"), addr("10.0.0.3:40000"));
    let mut rx = [0u8; 600];
    let raw = b"\x00\x01Boot/EFI.bin\x00OcTeT\x00blksize\x00100\x00windowsize\x002\x00tsize\x00";
    rx[..raw.len()].copy_from_slice(raw);
    let owned_a = match table.handle_datagram(now, listen, a, true, &rx[..raw.len()]) {
        Datagram::Request(incoming) => {
            let owned = incoming.detach().expect("a request fits");
            // The copy says what the original says.
            let back = owned.incoming();
            assert_eq!(back.filename(), incoming.filename());
            assert_eq!(back.mode(), incoming.mode());
            assert_eq!(
                back.request.options.as_bytes(),
                incoming.request.options.as_bytes()
            );
            assert_eq!(back.request.ignored_option, b"tsize");
            assert_eq!((back.peer, back.local, back.kind), (a, listen, RequestKind::Read));
            assert_eq!(back.options, incoming.options);
            owned
        }
        other => panic!("{other:?}"),
    };
    // The buffer takes the next datagram: another client's request, refused later.
    let mut req = [0u8; 512];
    let plain = rrq(&mut req, &Options::NONE);
    rx[..plain.len()].copy_from_slice(plain);
    rx[plain.len()..].fill(0xEE);
    let owned_b = match table.handle_datagram(now, listen, b, true, &rx[..plain.len()]) {
        Datagram::Request(incoming) => incoming.detach().expect("fits"),
        other => panic!("{other:?}"),
    };
    assert_eq!(owned_a.filename(), b"Boot/EFI.bin");
    // Accept the first through its copy: the OACK grants what it asked.
    let session = table
        .accept(now, &owned_a.incoming(), FILE, addr("10.0.0.1:50000"))
        .expect("room");
    let mut out = [0u8; 600];
    let tx = table.poll_transmit(now, &mut out).expect("the OACK");
    assert_eq!(tx.destination, a);
    assert_eq!(&out[..tx.len], b"\x00\x06blksize\x00100\x00windowsize\x002\x00");
    assert_eq!(tx.session, Some(session));
    // Refuse the second through its copy: ERROR 2 to it.
    table.refuse(
        &owned_b.incoming(),
        ErrorCode::AccessViolation,
        "Access violation",
    );
    let tx = table.poll_transmit(now, &mut out).expect("the ERROR");
    assert_eq!((tx.destination, &out[..4]), (b, &[0u8, 5, 0, 2][..]));
}
