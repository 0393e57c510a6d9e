//! `Transfer::read_client` (the download-only `ReadClient` role) and, for octet downloads,
//! `Transfer::octet_read_client` (`OctetReadClient`) against `Transfer::client`: fed the same
//! datagrams and timer ticks, they must emit the same datagrams and events and end with the same
//! file, over a lossy, duplicating link and with every option in play.
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

mod common;

use std::net::SocketAddr;

use common::Rng;
use tftp_proto::engine::{
    ClientRequest, Config, Event, OctetReadClient, ReadClient, ServerPolicy, Transfer, TransferMode, Transmit,
};
use tftp_proto::{Instant, Options, Packet, RequestKind};

/// Holds every datagram of these transfers (blksize at most 1000; requests at most 512).
const BUF: usize = 1024;

type Sent = Vec<(SocketAddr, Vec<u8>)>;

fn drain<S: tftp_proto::storage::Storage, R: tftp_proto::engine::Role>(
    t: &mut Transfer<'static, S, R>,
    now: Instant,
    events: &mut Vec<Event>,
) -> Sent {
    let mut buf = vec![0u8; BUF];
    let mut out = Vec::new();
    while let Some(Transmit { destination, len }) = t.poll_transmit(now, &mut buf) {
        out.push((destination, buf[..len].to_vec()));
    }
    while let Some(e) = t.poll_event() {
        events.push(e);
    }
    out
}

/// Runs one download with both clients in lockstep; returns the file the clients ended with.
fn lockstep(seed: u64, file: &'static [u8], mode: TransferMode, options: Options, loss: f64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let server_addr: SocketAddr = "192.0.2.1:69".parse().unwrap();
    let tid: SocketAddr = "192.0.2.1:50001".parse().unwrap();
    let me: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    let config = Config::default();
    let mut now = Instant::ZERO;
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"image.bin",
        mode,
        options,
    };
    let mut any = Transfer::client(now, server_addr, request, Vec::new(), config).unwrap();
    let mut only: Transfer<'static, Vec<u8>, ReadClient> =
        Transfer::read_client(now, server_addr, b"image.bin", mode, options, Vec::new(), config).unwrap();
    let mut octet: Option<Transfer<'static, Vec<u8>, OctetReadClient>> =
        (mode == TransferMode::Octet).then(|| {
            Transfer::octet_read_client(now, server_addr, b"image.bin", options, Vec::new(), config).unwrap()
        });
    let (mut any_events, mut only_events, mut octet_events) = (Vec::new(), Vec::new(), Vec::new());
    let mut server: Option<Transfer<'static, &'static [u8]>> = None;
    let mut to_server: Sent = Vec::new();
    let mut to_client: Sent = Vec::new();

    for _ in 0..2_000_000 {
        let a = drain(&mut any, now, &mut any_events);
        let b = drain(&mut only, now, &mut only_events);
        assert_eq!(a, b, "seed {seed}: datagrams differ at {now:?}");
        assert_eq!(any_events, only_events, "seed {seed}: events differ");
        if let Some(o) = octet.as_mut() {
            assert_eq!(
                drain(o, now, &mut octet_events),
                a,
                "seed {seed}: octet datagrams differ"
            );
            assert_eq!(octet_events, any_events, "seed {seed}: octet events differ");
            assert_eq!(o.poll_timeout(), any.poll_timeout());
        }
        to_server.extend(a);
        if let Some(s) = server.as_mut() {
            let mut ignored = Vec::new();
            to_client.extend(drain(s, now, &mut ignored).into_iter().map(|(_, d)| (tid, d)));
        }
        if any.is_finished() && server.as_ref().is_none_or(|s| s.is_finished()) {
            assert!(only.is_finished());
            break;
        }
        if to_server.is_empty() && to_client.is_empty() {
            let next = [any.poll_timeout(), server.as_ref().and_then(|s| s.poll_timeout())]
                .into_iter()
                .flatten()
                .min()
                .expect("an unfinished transfer has a deadline");
            assert_eq!(only.poll_timeout(), any.poll_timeout());
            now = next;
            any.handle_timeout(now);
            only.handle_timeout(now);
            if let Some(o) = octet.as_mut() {
                o.handle_timeout(now);
            }
            if let Some(s) = server.as_mut() {
                s.handle_timeout(now);
            }
            continue;
        }
        now += std::time::Duration::from_micros(rng.range(0, 2_000));
        for (_, d) in std::mem::take(&mut to_server) {
            if rng.chance(loss) {
                continue;
            }
            match server.as_mut() {
                Some(s) => s.handle_datagram(now, me, &d),
                None => {
                    let Ok(Packet::Rrq(req)) = Packet::parse(&d) else {
                        panic!("seed {seed}: first datagram is not an RRQ")
                    };
                    server = Some(Transfer::server(
                        now,
                        me,
                        RequestKind::Read,
                        &req,
                        file,
                        &ServerPolicy::default(),
                        config,
                    ));
                }
            }
        }
        for (from, d) in std::mem::take(&mut to_client) {
            if rng.chance(loss) {
                continue;
            }
            let copies = if rng.chance(loss) { 2 } else { 1 };
            for _ in 0..copies {
                any.handle_datagram(now, from, &d);
                only.handle_datagram(now, from, &d);
                if let Some(o) = octet.as_mut() {
                    o.handle_datagram(now, from, &d);
                }
            }
        }
    }
    assert!(only.is_finished(), "seed {seed}: the transfer did not end");
    assert_eq!(any.outcome(), only.outcome(), "seed {seed}");
    assert_eq!(any.stats(), only.stats(), "seed {seed}");
    if let Some(o) = octet {
        assert_eq!(o.outcome(), any.outcome(), "seed {seed}");
        assert_eq!(o.stats(), any.stats(), "seed {seed}");
        assert!(o.into_storage() == *any.storage(), "seed {seed}");
    }
    let got = only.into_storage();
    assert_eq!(got, any.into_storage(), "seed {seed}");
    got
}

#[test]
fn read_client_matches_the_general_client() {
    let file: &'static [u8] = Rng::new(7).bytes(70_000).leak();
    // Past 65,535 blocks of 8 bytes: the block number rolls over.
    let long: &'static [u8] = Rng::new(8).bytes(8 * 66_000 + 3).leak();
    let text: &'static [u8] = b"line one\nline two\r\n\rend\n".repeat(300).leak();
    let every = Options {
        blksize: Some(1000),
        windowsize: Some(4),
        timeout: Some(1),
        tsize: Some(0),
        rollover: Some(0),
    };
    let cases = [
        (TransferMode::Octet, Options::NONE, 0.0),
        (TransferMode::Octet, every, 0.0),
        (TransferMode::Octet, every, 0.1),
        (
            TransferMode::Octet,
            Options {
                blksize: Some(8),
                windowsize: Some(16),
                rollover: Some(1),
                ..Options::NONE
            },
            0.01,
        ),
        (
            TransferMode::Octet,
            Options {
                blksize: Some(8),
                windowsize: Some(16),
                ..Options::NONE
            },
            0.0,
        ),
        (TransferMode::Netascii, every, 0.1),
    ];
    for (seed, (mode, options, loss)) in cases.into_iter().enumerate() {
        let src = match (mode, options.blksize) {
            (TransferMode::Netascii, _) => text,
            (_, Some(8)) => long,
            _ => file,
        };
        let got = lockstep(seed as u64, src, mode, options, loss);
        assert!(got == src, "case {seed}: the download differs from the file");
    }
}
