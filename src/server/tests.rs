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
