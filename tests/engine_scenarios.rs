//! Named engine scenarios: one test per engine line of PROTOCOL.md, each a whole transfer (or a
//! hand-played half of one) in the simulated network of `common::sim`, whose audit also checks
//! the standing rules (Sorcerer's Apprentice, windows, ERROR handling) on every step.
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use tftp_proto::engine::{
    ClientRequest, Config, Event, OackError, ProtocolError, ServerPolicy, Transfer, TransferError,
    TransferMode, TransferParams,
};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{EncodeError, ErrorCode, Field, Instant, OptionName, Options, Packet, RequestKind};

// ---- helpers ------------------------------------------------------------------------------

fn run<C: Storage, S: Storage>(sim: &mut Sim<'_, C, S>) {
    if let Err(e) = sim.run() {
        panic!("{e}\nclient: {:#?}\nserver: {:#?}", sim.client, sim.server);
    }
}

fn file(len: usize) -> Vec<u8> {
    Rng::new(len as u64).bytes(len)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(d: Duration) -> Instant {
    Instant::ZERO + d
}

fn opts(blksize: Option<u16>, windowsize: Option<u16>) -> Options {
    Options {
        blksize,
        windowsize,
        ..Options::NONE
    }
}

/// A hook that gives the first datagram going `dir` that `pick` matches the `verdict`, and
/// delivers everything else.
fn once(
    dir: Dir,
    pick: impl Fn(&Packet<'_>) -> bool,
    verdict: Verdict,
) -> impl FnMut(Dir, &Packet<'_>) -> Verdict {
    let mut done = false;
    move |d, p| {
        if !done && d == dir && pick(p) {
            done = true;
            verdict.clone()
        } else {
            Verdict::Deliver
        }
    }
}

fn peer_code(e: &TransferError) -> Option<ErrorCode> {
    match e {
        TransferError::Peer(p) => Some(p.code),
        _ => None,
    }
}

fn negotiated<S>(side: &Side<'_, S>) -> TransferParams {
    side.events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Negotiated(p) => Some(*p),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{} never negotiated: {:?}", side.name, side.events))
}

/// A sim where both sides completed and the client's copy matches.
fn assert_read_ok(sim: &Sim<'_, Vec<u8>, &[u8]>, file: &[u8]) {
    assert_eq!(sim.client.outcome(), Some(Ok(file.len() as u64)), "client");
    assert_eq!(sim.server().outcome(), Some(Ok(file.len() as u64)), "server");
    assert!(sim.client.transfer.storage() == file, "client copy differs");
}

fn assert_write_ok(sim: &Sim<'_, &[u8], Vec<u8>>, file: &[u8]) {
    assert_eq!(sim.client.outcome(), Some(Ok(file.len() as u64)), "client");
    assert_eq!(sim.server().outcome(), Some(Ok(file.len() as u64)), "server");
    assert!(sim.server().transfer.storage() == file, "server copy differs");
}

// ---- sanity -------------------------------------------------------------------------------

#[test]
fn read_and_write_complete_on_a_perfect_network() {
    let f = file(3000);
    let setup = Setup::default().options(opts(Some(1024), Some(4)));
    let mut sim = read_pair(&f, &setup);
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let mut sim = write_pair(&f, &setup);
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert!(sim.client.transfer.is_finished() && sim.server().transfer.is_finished());
}

// ---- RFC 1350 -----------------------------------------------------------------------------

#[test]
fn request_carries_filename_mode_and_options() {
    let setup = Setup {
        filename: b"/pxelinux.0",
        mode: TransferMode::Netascii,
        ..Setup::default().options(opts(Some(1468), None))
    };
    let mut sim = read_pair(b"text\n", &setup);
    run(&mut sim);
    let first = &sim.client.sent[0];
    assert_eq!(first.to, SERVER_WK);
    let Pkt::Rrq(req) = &first.packet else {
        panic!("{first:?}")
    };
    assert_eq!(req.filename, b"/pxelinux.0");
    assert_eq!(req.mode, b"netascii");
    assert_eq!(req.options, vec![("blksize".to_string(), "1468".to_string())]);
}

#[test]
fn wrq_is_answered_with_ack_0_and_blocks_count_from_1() {
    let f = file(1300);
    let mut sim = write_pair(&f, &Setup::default());
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert!(matches!(sim.client.sent[0].packet, Pkt::Wrq(_)));
    assert_eq!(sim.server().acks(), vec![0, 1, 2, 3]);
    assert_eq!(sim.client.data(), vec![(1, 512), (2, 512), (3, 276)]);
}

#[test]
fn server_answers_from_its_own_tid_and_client_locks_on_it() {
    let f = file(2000);
    let mut sim = read_pair(&f, &Setup::default());
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.client.transfer.peer(), SERVER_TID);
    assert!(sim.client.sent[1..].iter().all(|s| s.to == SERVER_TID));
    assert!(sim.server().sent.iter().all(|s| s.to == CLIENT));
}

#[test]
fn retransmitted_request_creates_no_second_session() {
    // The server's first DATA is late, so the client repeats its request meanwhile.
    let f = file(700);
    let mut sim = read_pair(&f, &Setup::default());
    sim.set_hook(once(
        Dir::ServerToClient,
        |p| is_data(p, 1),
        Verdict::Delay(Duration::from_millis(1500)),
    ));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert!(sim.repeated_requests >= 1, "the request was repeated");
    let rrqs = sim
        .client
        .sent
        .iter()
        .filter(|s| matches!(s.packet, Pkt::Rrq(_)))
        .count();
    assert_eq!(rrqs as u64, 1 + sim.repeated_requests);
}

#[test]
fn mail_mode_refused() {
    for kind in [RequestKind::Read, RequestKind::Write] {
        let req = request(kind, "user@host", "MAIL", &[]);
        let (side, out) = scripted_server(&req, Vec::new(), &ServerPolicy::default(), Config::default());
        assert_eq!(decoded(&out).len(), 1);
        assert_eq!(out[0].0, CLIENT);
        assert_eq!(
            Pkt::decode(&out[0].1).error_code(),
            Some(ErrorCode::IllegalOperation)
        );
        assert!(matches!(
            side.failure(),
            TransferError::Refused {
                code: ErrorCode::IllegalOperation,
                ..
            }
        ));
        assert!(side.transfer.is_finished());
        assert!(matches!(side.final_event(), Some(Event::Failed(_))));
    }
}

#[test]
fn unknown_mode_refused() {
    let req = request(RequestKind::Read, "f", "binary", &[("blksize", "1024")]);
    let (side, out) = scripted_server(&req, &b"data"[..], &ServerPolicy::default(), Config::default());
    assert_eq!(out.len(), 1, "only the ERROR, no OACK");
    assert_eq!(
        Pkt::decode(&out[0].1).error_code(),
        Some(ErrorCode::IllegalOperation)
    );
    assert!(matches!(side.failure(), TransferError::Refused { .. }));
    assert!(side.transfer.poll_timeout().is_none());
}

#[test]
fn mode_is_case_insensitive() {
    let (_, out) = scripted_server(
        &request(RequestKind::Read, "f", "OcTeT", &[]),
        &b"a\nb"[..],
        &ServerPolicy::default(),
        Config::default(),
    );
    assert_eq!(decoded(&out)[0].1, Pkt::Data { block: 1, len: 3 });
    let (_, out) = scripted_server(
        &request(RequestKind::Read, "f", "NetAscii", &[]),
        &b"a\nb"[..],
        &ServerPolicy::default(),
        Config::default(),
    );
    assert_eq!(out[0].1, data(1, b"a\r\nb"));
}

#[test]
fn zero_byte_file_is_one_empty_data() {
    let mut sim = read_pair(b"", &Setup::default());
    run(&mut sim);
    assert_read_ok(&sim, b"");
    assert_eq!(sim.server().data(), vec![(1, 0)]);
    assert_eq!(sim.client.acks(), vec![1]);

    let mut sim = write_pair(b"", &Setup::default().options(opts(Some(1024), Some(8))));
    run(&mut sim);
    assert_write_ok(&sim, b"");
    assert_eq!(sim.client.data(), vec![(1, 0)]);
}

#[test]
fn exact_multiple_ends_with_empty_data() {
    let f = file(1024);
    let mut sim = read_pair(&f, &Setup::default());
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().data(), vec![(1, 512), (2, 512), (3, 0)]);

    let f = file(4 * 100);
    let mut sim = write_pair(&f, &Setup::default().options(opts(Some(100), Some(2))));
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert_eq!(
        sim.client.data(),
        vec![(1, 100), (2, 100), (3, 100), (4, 100), (5, 0)]
    );
}

#[test]
fn foreign_tid_gets_error_5_and_transfer_completes() {
    let f = file(10 * 512 + 7);
    let mut sim = read_pair(&f, &Setup::default());
    let reached = sim
        .run_until(|s| s.server.as_ref().is_some_and(|sv| sv.data().len() >= 3))
        .unwrap();
    assert!(reached);
    // A plausible next DATA with garbage from another port of the server's host, and from
    // another host using the server's port; an ACK from a stranger to the server.
    sim.inject(ms(1), FOREIGN_SAME_HOST, CLIENT, data(4, &[0xEE; 512]));
    sim.inject(ms(2), FOREIGN_HOST, CLIENT, data(5, &[0xEE; 512]));
    sim.inject(ms(3), FOREIGN_HOST, SERVER_TID, ack(9));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(
        sim.client.errors(),
        vec![
            (FOREIGN_SAME_HOST, ErrorCode::UnknownTid),
            (FOREIGN_HOST, ErrorCode::UnknownTid)
        ]
    );
    assert_eq!(sim.server().errors(), vec![(FOREIGN_HOST, ErrorCode::UnknownTid)]);
    assert_eq!(
        sim.server().data().len(),
        11,
        "nothing resent because of the strangers"
    );
}

#[test]
fn answer_from_another_host_before_tid_is_known_is_ignored() {
    let f = file(600);
    let mut sim = read_pair(&f, &Setup::default());
    // Arrives before the server's DATA 1 (20 ms round trip).
    sim.inject(ms(1), FOREIGN_HOST, CLIENT, data(1, b"spoofed"));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.client.transfer.peer(), SERVER_TID);
    assert!(sim.client.transfer.stats().dropped >= 1);
}

#[test]
fn error_from_foreign_tid_is_not_answered() {
    // Answering an ERROR with an ERROR could ping-pong between two confused endpoints.
    let f = file(3000);
    let mut sim = read_pair(&f, &Setup::default());
    sim.run_until(|s| s.server.as_ref().is_some_and(|sv| sv.data().len() >= 2))
        .unwrap();
    sim.inject(ms(1), FOREIGN_SAME_HOST, CLIENT, error(5, "Unknown transfer ID"));
    sim.inject(ms(1), FOREIGN_HOST, SERVER_TID, error(0, "go away"));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert!(sim.client.errors().is_empty(), "{:?}", sim.client.errors());
    assert!(sim.server().errors().is_empty(), "{:?}", sim.server().errors());
}

#[test]
fn stray_flood_costs_bounded_memory() {
    let req = request(RequestKind::Read, "f", "octet", &[]);
    let (mut side, _) = scripted_server(
        &req,
        &[1u8; 2000][..],
        &ServerPolicy::default(),
        Config::default(),
    );
    for port in 0..100u16 {
        let from = std::net::SocketAddr::new(FOREIGN_HOST.ip(), 1000 + port);
        side.transfer.handle_datagram(at(ms(1)), from, &ack(1));
    }
    let out = side.deliver(at(ms(2)), CLIENT, &ack(1));
    let answers = decoded(&out);
    let strays = answers.iter().filter(|(to, _)| *to != CLIENT).count();
    assert!(
        (1..=8).contains(&strays),
        "{strays} ERROR 5s queued for 100 strays"
    );
    assert!(answers
        .iter()
        .any(|(to, p)| *to == CLIENT && *p == Pkt::Data { block: 2, len: 512 }));
    assert_clean(&side);
}

#[test]
fn peer_error_ends_transfer() {
    // The server's DATA 3 is replaced by an ERROR: the client stops at once.
    let f = file(5000);
    let mut sim = read_pair(&f, &Setup::default());
    sim.set_hook(|dir, p| {
        if dir == Dir::ServerToClient && is_data(p, 3) {
            Verdict::Replace(error(2, "revoked"))
        } else {
            Verdict::Deliver
        }
    });
    run(&mut sim);
    let e = sim.client.failure();
    assert_eq!(peer_code(&e), Some(ErrorCode::AccessViolation));
    let TransferError::Peer(p) = &e else {
        unreachable!()
    };
    assert_eq!(p.message(), b"revoked");
    assert_eq!(sim.client.acks(), vec![1, 2], "nothing after the ERROR");
    assert!(matches!(sim.client.final_event(), Some(Event::Failed(_))));

    // The other way: the client aborts, the server stops at once.
    let mut sim = read_pair(&f, &Setup::default());
    sim.run_until(|s| s.client.acks().len() >= 2).unwrap();
    sim.client.transfer.abort(ErrorCode::NotDefined, "user cancelled");
    let now = sim.now;
    let out = sim.client.fire(now);
    assert_eq!(
        decoded(&out),
        vec![(SERVER_TID, Pkt::decode(&error(0, "user cancelled")))]
    );
    sim.inject(ms(10), CLIENT, SERVER_TID, out[0].1.clone());
    run(&mut sim);
    assert_eq!(sim.client.failure(), TransferError::Aborted);
    assert_eq!(peer_code(&sim.server().failure()), Some(ErrorCode::NotDefined));
    let server_data = sim.server().data().len();
    assert!(
        server_data <= 3,
        "server kept sending after the ERROR: {server_data}"
    );
}

#[test]
fn peer_error_packets_of_any_shape() {
    let f = file(3000);
    // Too short to be an ERROR (0-3 bytes): dropped, the transfer goes on.
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        Options::NONE,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    client.deliver(at(ms(20)), SERVER_TID, &data(1, &f[..512]));
    for short in [&[0u8, 5][..], &[0, 5, 0]] {
        assert!(client.deliver(at(ms(30)), SERVER_TID, short).is_empty());
    }
    assert!(client.outcome().is_none());
    // No message and no NUL: still an ERROR, and it ends the transfer.
    assert!(client.deliver(at(ms(40)), SERVER_TID, &[0, 5, 0, 2]).is_empty());
    assert_eq!(peer_code(&client.failure()), Some(ErrorCode::AccessViolation));
    assert_clean(&client);

    // A message longer than anything kept, without its NUL: truncated, never overflowing.
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        Options::NONE,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let mut long = vec![0, 5, 0, 3];
    long.extend(std::iter::repeat_n(b'x', 4000));
    client.deliver(at(ms(20)), SERVER_TID, &long);
    let TransferError::Peer(p) = client.failure() else {
        panic!()
    };
    assert_eq!(p.code, ErrorCode::DiskFull);
    assert!(!p.message().is_empty() && p.message().len() <= 100 && p.message().iter().all(|&b| b == b'x'));
    assert!(client.transfer.is_finished());
}

#[test]
fn error_packets_are_not_acked_or_retransmitted() {
    // The client rejects a bad OACK with ERROR 8; that ERROR is lost, so the server repeats its
    // OACK until it gives up. The client never repeats its ERROR nor answers anything.
    let f = file(5000);
    let mut sim = read_pair(&f, &Setup::default().options(opts(Some(1024), None)));
    sim.set_hook(|dir, p| match (dir, p) {
        (Dir::ServerToClient, Packet::Oack { .. }) => Verdict::Replace(oack(&[("blksize", "2048")])),
        (Dir::ClientToServer, Packet::Error { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    run(&mut sim);
    assert!(matches!(
        sim.client.failure(),
        TransferError::Oack(OackError::Raised(OptionName::Blksize))
    ));
    let client_errors = sim.client.errors();
    assert_eq!(client_errors, vec![(SERVER_TID, ErrorCode::OptionNegotiation)]);
    let oacks = sim
        .server()
        .sent
        .iter()
        .filter(|s| matches!(s.packet, Pkt::Oack(_)))
        .count();
    assert!(oacks > 1, "the server retransmitted its OACK");
    assert_eq!(sim.client.sent.len(), 2, "RRQ and one ERROR, nothing else");
    assert_eq!(sim.server().failure(), TransferError::TimedOut);
    // The server's own ERROR on giving up goes out once, after its last OACK, and is not answered.
    assert_eq!(sim.server().errors(), vec![(CLIENT, ErrorCode::NotDefined)]);
    assert!(matches!(
        sim.server().sent.last().unwrap().packet,
        Pkt::Error { .. }
    ));
}

#[test]
fn receiver_dallies_and_reacks_repeated_final_data() {
    let f = file(3 * 512 + 100);
    let mut sim = read_pair(&f, &Setup::default());
    sim.set_hook(once(Dir::ClientToServer, |p| is_ack(p, 4), Verdict::Drop));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.client.acks(), vec![1, 2, 3, 4, 4]);
    assert_eq!(sim.server().data().last(), Some(&(4, 100)));
    assert_eq!(sim.server().data().len(), 5, "final DATA sent twice");
    // The re-ACK answers the repeated DATA (not a timer), after Finished was reported.
    let reack = sim.client.sent.last().unwrap();
    assert!(matches!(
        reack.trigger,
        Trigger::Datagram {
            packet: Pkt::Data { block: 4, .. },
            ..
        }
    ));
    let finished_at = sim
        .client
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::Finished { .. }))
        .unwrap()
        .0;
    assert!(finished_at < reack.at);
}

#[test]
fn receiver_dally_outlasts_the_senders_backoff() {
    // The final ACK is lost three times; the sender backs off between its repeats of the
    // final DATA, and the receiver, still dallying, answers each one.
    for kind in [RequestKind::Read, RequestKind::Write] {
        let f = file(5 * 512 + 9);
        let mut drops = 0;
        let setup = Setup::default();
        let final_ack = move |dir: Dir, p: &Packet<'_>| {
            let receiver = if kind == RequestKind::Read {
                Dir::ClientToServer
            } else {
                Dir::ServerToClient
            };
            dir == receiver && is_ack(p, 6)
        };
        let hook = move |dir: Dir, p: &Packet<'_>| {
            if final_ack(dir, p) && drops < 3 {
                drops += 1;
                Verdict::Drop
            } else {
                Verdict::Deliver
            }
        };
        let (sender_ok, final_acks) = if kind == RequestKind::Read {
            let mut sim = read_pair(&f, &setup);
            sim.set_hook(hook);
            run(&mut sim);
            assert_read_ok(&sim, &f);
            (
                sim.server().outcome(),
                sim.client.acks().iter().filter(|&&a| a == 6).count(),
            )
        } else {
            let mut sim = write_pair(&f, &setup);
            sim.set_hook(hook);
            run(&mut sim);
            assert_write_ok(&sim, &f);
            (
                sim.client.outcome(),
                sim.server().acks().iter().filter(|&&a| a == 6).count(),
            )
        };
        assert_eq!(sender_ok, Some(Ok(f.len() as u64)), "{kind:?}");
        assert_eq!(final_acks, 4, "{kind:?}");
    }
}

#[test]
fn receiver_dally_ends_by_itself() {
    let f = file(100);
    let mut sim = read_pair(&f, &Setup::default());
    sim.run_until(|s| s.client.final_event().is_some()).unwrap();
    let finished_at = sim.now;
    assert!(
        !sim.client.transfer.is_finished(),
        "the receiver dallies after its final ACK"
    );
    let dally_end = sim.client.transfer.poll_timeout().expect("dally deadline");
    assert!(dally_end > finished_at);
    run(&mut sim);
    assert!(sim.client.transfer.is_finished());
    assert_eq!(
        sim.client.acks(),
        vec![1],
        "no further ACK without a repeated DATA"
    );
}

// ---- RFC 1123 -----------------------------------------------------------------------------

#[test]
fn duplicate_ack_never_resends() {
    let f = file(20 * 512 + 5);
    for windowsize in [None, Some(4)] {
        let mut sim = read_pair(&f, &Setup::default().options(opts(None, windowsize)));
        sim.set_hook(|dir, p| {
            if dir == Dir::ClientToServer && matches!(p, Packet::Ack { .. }) {
                Verdict::Duplicate
            } else {
                Verdict::Deliver
            }
        });
        run(&mut sim);
        assert_read_ok(&sim, &f);
        let server = sim.server();
        assert_eq!(server.data().len(), 21, "every block exactly once");
        assert_eq!(server.transfer.stats().retransmissions, 0);
        assert!(server.transfer.stats().duplicate_acks >= sim.client.acks().len() as u64 - 1);
        // Every duplicate ACK was answered by nothing at all.
        let dup_answers = server
            .sent
            .iter()
            .filter(|s| {
                matches!(
                    s.trigger,
                    Trigger::Datagram {
                        ack: Some(AckKind::Duplicate(_)),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(dup_answers, 0);
    }
}

#[test]
fn late_duplicate_acks_after_the_window_moved_never_resend() {
    // Each ACK also arrives again much later, when the sender is several blocks further.
    let f = file(30 * 512);
    let mut sim = write_pair(&f, &Setup::default().options(opts(None, Some(2))));
    let mut late = Vec::new();
    sim.set_hook(move |dir, p| match p {
        Packet::Ack { block } if dir == Dir::ServerToClient && *block > 0 => {
            late.push(*block);
            Verdict::Duplicate
        }
        _ => Verdict::Deliver,
    });
    // Delayed copies: inject old ACKs from the server's TID while the transfer runs.
    sim.run_until(|s| s.client.data().len() >= 10).unwrap();
    for (i, block) in [1u16, 2, 4, 6, 8].into_iter().enumerate() {
        sim.inject(ms(5 * i as u64), SERVER_TID, CLIENT, ack(block));
    }
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert_eq!(sim.client.data().len(), 31);
    assert_eq!(sim.client.transfer.stats().retransmissions, 0);
}

#[test]
fn adaptive_timeout_backs_off_exponentially() {
    // Every DATA is lost and no round trip was ever measured: the retransmission interval
    // starts at the initial RTO and doubles each time, up to the ceiling.
    let f = file(2000);
    let config = Config {
        initial_rto: Duration::from_secs(1),
        max_rto: Duration::from_secs(60),
        max_retries: 6,
        idle_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let setup = Setup {
        server_config: config,
        ..Setup::default()
    };
    let mut sim = read_pair(&f, &setup);
    sim.set_hook(|dir, p| {
        if dir == Dir::ServerToClient && matches!(p, Packet::Data { .. }) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    run(&mut sim);
    let server = sim.server();
    let times: Vec<Instant> = server
        .sent
        .iter()
        .filter(|s| s.packet == Pkt::Data { block: 1, len: 512 })
        .map(|s| s.at)
        .collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(gaps, vec![1, 2, 4, 8, 16, 32], "send times {times:?}");
    assert_eq!(server.failure(), TransferError::TimedOut);
    let gave_up = server.sent.last().unwrap();
    assert_eq!(gave_up.packet.error_code(), Some(ErrorCode::NotDefined));
    assert_eq!(
        (gave_up.at - *times.last().unwrap()).as_secs(),
        60,
        "capped at max_rto"
    );
}

#[test]
fn adaptive_timeout_follows_the_measured_round_trip() {
    // After blocks flow with a 20 ms round trip, a lost block is resent long before the 1 s
    // initial RTO, and repeated losses still double the interval.
    let f = file(40 * 512);
    let mut losses = 0;
    let mut sim = read_pair(&f, &Setup::default());
    sim.set_hook(move |dir, p| {
        if dir == Dir::ServerToClient && is_data(p, 30) && losses < 3 {
            losses += 1;
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let times: Vec<Instant> = sim
        .server()
        .sent
        .iter()
        .filter(|s| s.packet.data_block() == Some(30))
        .map(|s| s.at)
        .collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Config::default().min_rto && gaps[0] < ms(300),
        "{gaps:?}"
    );
    assert_eq!(gaps[1], gaps[0] * 2, "{gaps:?}");
    assert_eq!(gaps[2], gaps[0] * 4, "{gaps:?}");
}

#[test]
fn retry_cap_ends_transfer_with_timeout() {
    // The server is unreachable: the request goes out 1 + max_retries times. No total
    // timeout: the retry cap alone decides (see `total_timeout_*` for the two together).
    let config = Config {
        max_retries: 4,
        total_timeout: Duration::ZERO,
        ..Config::default()
    };
    let setup = Setup {
        client_config: config,
        ..Setup::default()
    };
    let mut sim = read_pair(b"x", &setup);
    sim.set_hook(|_, _| Verdict::Drop);
    run(&mut sim);
    assert_eq!(sim.client.failure(), TransferError::TimedOut);
    let rrqs = sim
        .client
        .sent
        .iter()
        .filter(|s| matches!(s.packet, Pkt::Rrq(_)))
        .count();
    assert_eq!(rrqs, 5);
    assert!(sim.server.is_none());
    assert!(matches!(
        sim.client.final_event(),
        Some(Event::Failed(TransferError::TimedOut))
    ));

    // Mid-transfer: DATA 4 never arrives; the server sends it 1 + max_retries times, then an
    // ERROR, while the client's re-ACKs of block 3 (duplicates) do not reset the count.
    let f = file(10 * 512);
    let setup = Setup {
        server_config: config,
        ..Setup::default()
    };
    let mut sim = read_pair(&f, &setup);
    sim.set_hook(|dir, p| {
        if dir == Dir::ServerToClient && is_data(p, 4) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    run(&mut sim);
    let server = sim.server();
    assert_eq!(server.failure(), TransferError::TimedOut);
    assert_eq!(server.data().iter().filter(|d| d.0 == 4).count(), 5);
    assert_eq!(server.errors(), vec![(CLIENT, ErrorCode::NotDefined)]);
    let client = sim.client.failure();
    assert!(is_clean_timeout(&client), "{client:?}");
}

#[test]
fn idle_deadline_ends_transfer() {
    // Retries are effectively unlimited; only the idle deadline can end the transfer.
    let config = Config {
        max_retries: 255,
        max_rto: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let setup = Setup {
        client_config: config,
        server_config: config,
        ..Setup::default()
    };
    let f = file(5 * 512);
    let mut sim = read_pair(&f, &setup);
    sim.set_hook(|dir, p| {
        if dir == Dir::ServerToClient && matches!(p, Packet::Data { block, .. } if *block >= 3) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    // Strangers keep talking to the client: that must not keep it alive.
    for s in 1..30 {
        sim.inject(Duration::from_secs(s), FOREIGN_HOST, CLIENT, data(3, b"x"));
    }
    run(&mut sim);
    assert_eq!(sim.client.failure(), TransferError::Idle);
    // Last valid packet: DATA 2 delivered at 10 ms + 3 round trips.
    let last_heard = sim
        .client
        .sent
        .iter()
        .rev()
        .find(|s| {
            matches!(
                s.trigger,
                Trigger::Datagram {
                    packet: Pkt::Data { block: 2, .. },
                    ..
                }
            )
        })
        .unwrap()
        .at;
    let (failed_at, _) = sim
        .client
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::Failed(_)))
        .unwrap();
    assert_eq!(*failed_at - last_heard, Duration::from_secs(10));
    assert_eq!(
        sim.client.errors().last(),
        Some(&(SERVER_TID, ErrorCode::NotDefined))
    );
}

// ---- RFC 2347 -----------------------------------------------------------------------------

#[test]
fn unknown_request_options_are_ignored() {
    let req = request(
        RequestKind::Read,
        "f",
        "octet",
        &[("foo", "bar"), ("blksize", "1024"), ("xblksizex", "8")],
    );
    let (side, out) = scripted_server(
        &req,
        &[0u8; 3000][..],
        &ServerPolicy::default(),
        Config::default(),
    );
    assert_eq!(
        decoded(&out),
        vec![(CLIENT, Pkt::Oack(vec![("blksize".into(), "1024".into())]))]
    );
    assert_eq!(side.transfer.params().blksize, 1024);
}

#[test]
fn no_oack_when_no_option_is_accepted() {
    let policy = ServerPolicy {
        allow_timeout: false,
        ..ServerPolicy::default()
    };
    let req = request(RequestKind::Read, "f", "octet", &[("foo", "1"), ("timeout", "3")]);
    let (_, out) = scripted_server(&req, &[0u8; 100][..], &policy, Config::default());
    assert_eq!(decoded(&out), vec![(CLIENT, Pkt::Data { block: 1, len: 100 })]);
    let req = request(
        RequestKind::Write,
        "f",
        "octet",
        &[("foo", "1"), ("blksize", "7")],
    );
    let (_, out) = scripted_server(&req, Vec::new(), &policy, Config::default());
    assert_eq!(decoded(&out), vec![(CLIENT, Pkt::Ack { block: 0 })]);
}

#[test]
fn client_confirms_oack_with_ack_0_on_read_and_data_1_on_write() {
    let f = file(700);
    let setup = Setup::default().options(opts(Some(600), None));
    let mut sim = read_pair(&f, &setup);
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert!(sim.server().sent[0].packet.oack_option("blksize") == Some("600"));
    assert_eq!(sim.client.acks(), vec![0, 1, 2]);
    let mut sim = write_pair(&f, &setup);
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert_eq!(sim.client.data(), vec![(1, 600), (2, 100)]);
    assert_eq!(sim.server().acks(), vec![1, 2], "OACK instead of ACK 0");
}

#[test]
fn oack_with_unrequested_option_is_rejected_with_error_8() {
    for bad in [
        oack(&[("blksize", "1024"), ("windowsize", "4")]),
        oack(&[("xblksizex", "1024")]),
        oack(&[("blksize", "1024"), ("blksize", "1024")]),
    ] {
        let (mut client, _) = scripted_client(
            RequestKind::Read,
            opts(Some(1024), None),
            TransferMode::Octet,
            Vec::new(),
            Config::default(),
        );
        let out = client.deliver(at(ms(20)), SERVER_TID, &bad);
        let answers = decoded(&out);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].0, SERVER_TID);
        assert_eq!(answers[0].1.error_code(), Some(ErrorCode::OptionNegotiation));
        assert!(
            matches!(client.failure(), TransferError::Oack(_)),
            "{:?}",
            client.failure()
        );
        assert!(client.transfer.is_finished());
        assert_clean(&client);
    }
}

#[test]
fn oack_raising_blksize_is_rejected() {
    for (asked, bad, name) in [
        (
            opts(Some(1024), None),
            oack(&[("blksize", "1025")]),
            OptionName::Blksize,
        ),
        (
            opts(None, Some(4)),
            oack(&[("windowsize", "5")]),
            OptionName::Windowsize,
        ),
    ] {
        let (mut client, _) = scripted_client(
            RequestKind::Write,
            asked,
            TransferMode::Octet,
            &[1u8; 5000][..],
            Config::default(),
        );
        let out = client.deliver(at(ms(20)), SERVER_TID, &bad);
        assert_eq!(
            decoded(&out)[0].1.error_code(),
            Some(ErrorCode::OptionNegotiation)
        );
        assert_eq!(client.failure(), TransferError::Oack(OackError::Raised(name)));
        assert!(client.data().is_empty());
    }
}

#[test]
fn oack_changing_an_echoed_option_is_rejected() {
    let asked = Options {
        timeout: Some(3),
        ..Options::NONE
    };
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        asked,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let out = client.deliver(at(ms(20)), SERVER_TID, &oack(&[("timeout", "4")]));
    assert_eq!(
        decoded(&out)[0].1.error_code(),
        Some(ErrorCode::OptionNegotiation)
    );
    assert_eq!(
        client.failure(),
        TransferError::Oack(OackError::Changed(OptionName::Timeout))
    );
}

#[test]
fn oack_with_reordered_options_is_accepted() {
    let asked = Options {
        blksize: Some(1024),
        windowsize: Some(4),
        tsize: Some(0),
        ..Options::NONE
    };
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        asked,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let out = client.deliver(
        at(ms(20)),
        SERVER_TID,
        &oack(&[("TSIZE", "5000"), ("WindowSize", "2"), ("blksize", "1000")]),
    );
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 0 })]);
    let p = client.transfer.params();
    assert_eq!((p.blksize, p.windowsize, p.tsize), (1000, 2, Some(5000)));
}

#[test]
fn malformed_oack_is_ignored_until_a_valid_answer() {
    let asked = opts(Some(1024), None);
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        asked,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    for bad in [
        &b"\x00\x06blksize\x001024"[..],
        b"\x00\x06blksize",
        b"\x00\x06\x001024\x00",
    ] {
        assert!(client.deliver(at(ms(20)), SERVER_TID, bad).is_empty(), "{bad:?}");
    }
    assert!(client.outcome().is_none());
    let out = client.deliver(at(ms(30)), SERVER_TID, &oack(&[("blksize", "1024")]));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 0 })]);
    assert_clean(&client);
}

#[test]
fn oack_omitting_blksize_uses_512() {
    let asked = Options {
        blksize: Some(8),
        tsize: Some(0),
        ..Options::NONE
    };
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        asked,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let out = client.deliver(at(ms(20)), SERVER_TID, &oack(&[("tsize", "612")]));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 0 })]);
    assert_eq!(client.transfer.params().blksize, 512);
    let block1 = [7u8; 512];
    let out = client.deliver(at(ms(40)), SERVER_TID, &data(1, &block1));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 1 })]);
    assert!(
        client.final_event().is_none(),
        "512 bytes is a full block, not the end"
    );
    let out = client.deliver(at(ms(60)), SERVER_TID, &data(2, &[9u8; 100]));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 2 })]);
    assert_eq!(client.outcome(), Some(Ok(612)));
    assert_eq!(negotiated(&client).tsize, Some(612));
    assert_clean(&client);
}

#[test]
fn server_ignoring_options_falls_back_on_data_1() {
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        opts(Some(1024), Some(8)),
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let out = client.deliver(at(ms(20)), SERVER_TID, &data(1, &[1u8; 512]));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 1 })]);
    let p = client.transfer.params();
    assert_eq!((p.blksize, p.windowsize), (512, 1));
    let out = client.deliver(at(ms(40)), SERVER_TID, &data(2, &[2u8; 10]));
    assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block: 2 })]);
    assert_eq!(client.outcome(), Some(Ok(522)));
    assert_eq!(negotiated(&client), TransferParams::default());
    assert_clean(&client);
}

#[test]
fn server_ignoring_options_falls_back_on_ack_0() {
    let f = file(700);
    let (mut client, _) = scripted_client(
        RequestKind::Write,
        opts(Some(1024), Some(8)),
        TransferMode::Octet,
        &f[..],
        Config::default(),
    );
    let out = client.deliver(at(ms(20)), SERVER_TID, &ack(0));
    assert_eq!(
        decoded(&out),
        vec![(SERVER_TID, Pkt::Data { block: 1, len: 512 })]
    );
    let out = client.deliver(at(ms(40)), SERVER_TID, &ack(1));
    assert_eq!(
        decoded(&out),
        vec![(SERVER_TID, Pkt::Data { block: 2, len: 188 })]
    );
    client.deliver(at(ms(60)), SERVER_TID, &ack(2));
    assert_eq!(client.outcome(), Some(Ok(700)));
    assert_clean(&client);
}

#[test]
fn server_error_to_request_ends_client_without_answer() {
    let (mut client, _) = scripted_client(
        RequestKind::Read,
        Options::NONE,
        TransferMode::Octet,
        Vec::new(),
        Config::default(),
    );
    let out = client.deliver(at(ms(20)), SERVER_TID, &error(1, "File not found"));
    assert!(out.is_empty());
    assert_eq!(peer_code(&client.failure()), Some(ErrorCode::FileNotFound));
    assert!(client.transfer.is_finished());
    assert_clean(&client);
}

#[test]
fn request_too_long_refused_at_client_construction() {
    let make = |name: &'static [u8]| {
        let req = ClientRequest {
            kind: RequestKind::Read,
            filename: name,
            mode: TransferMode::Octet,
            options: Options::NONE,
        };
        Transfer::client(Instant::ZERO, SERVER_WK, req, Vec::new(), Config::default()).map(|_| ())
    };
    // 2 + name + NUL + "octet" + NUL: 503 bytes of name make exactly 512.
    let name: &'static [u8] = Box::leak(vec![b'a'; 504].into_boxed_slice());
    assert_eq!(make(&name[..503]), Ok(()));
    assert_eq!(make(name), Err(EncodeError::RequestTooLong { len: 513 }));
    assert!(matches!(
        make(&[b'b'; 600]),
        Err(EncodeError::RequestTooLong { .. })
    ));
    assert_eq!(make(b"a\0b"), Err(EncodeError::InvalidField(Field::Filename)));
    // Options count too.
    let req = ClientRequest {
        kind: RequestKind::Read,
        filename: &name[..495],
        mode: TransferMode::Octet,
        options: opts(Some(1024), None),
    };
    assert!(Transfer::client(Instant::ZERO, SERVER_WK, req, Vec::new(), Config::default()).is_err());
}

// ---- RFC 2348 / 2349 / 7440 ---------------------------------------------------------------

#[test]
fn blksize_capped_by_server_policy() {
    let f = file(5000);
    let setup = Setup {
        policy: ServerPolicy {
            max_blksize: 1468,
            ..ServerPolicy::default()
        },
        ..Setup::default().options(opts(Some(9000), None))
    };
    let mut sim = read_pair(&f, &setup);
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().sent[0].packet.oack_option("blksize"), Some("1468"));
    assert_eq!(negotiated(&sim.client).blksize, 1468);
    assert_eq!(
        sim.server().data(),
        vec![(1, 1468), (2, 1468), (3, 1468), (4, 596)]
    );
}

#[test]
fn blksize_8_with_every_option_works() {
    let f = file(200);
    let options = Options {
        blksize: Some(8),
        timeout: Some(1),
        tsize: Some(0),
        windowsize: Some(3),
        rollover: Some(0),
    };
    let mut sim = read_pair(&f, &Setup::default().options(options));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let p = negotiated(&sim.client);
    assert_eq!(
        (p.blksize, p.timeout, p.tsize, p.windowsize, p.rollover),
        (8, Some(1), Some(200), 3, Some(0))
    );
    let mut sim = write_pair(&f, &Setup::default().options(options));
    run(&mut sim);
    assert_write_ok(&sim, &f);
}

#[test]
fn timeout_option_echoed_exactly_and_used_as_interval() {
    let f = file(3000);
    let options = Options {
        timeout: Some(3),
        ..Options::NONE
    };
    let mut sim = read_pair(&f, &Setup::default().options(options));
    sim.set_hook(|dir, p| {
        if dir == Dir::ServerToClient && is_data(p, 2) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    run(&mut sim);
    assert_eq!(sim.server().sent[0].packet.oack_option("timeout"), Some("3"));
    assert_eq!(negotiated(&sim.client).timeout, Some(3));
    for (side, times) in [
        (
            "server",
            sim.server()
                .sent
                .iter()
                .filter(|s| s.packet.data_block() == Some(2))
                .map(|s| s.at)
                .collect::<Vec<_>>(),
        ),
        (
            "client",
            sim.client
                .sent
                .iter()
                .filter(|s| s.packet.ack_block() == Some(1))
                .map(|s| s.at)
                .collect(),
        ),
    ] {
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 3, "{side}: {times:?}");
        assert!(
            gaps.iter().all(|g| *g == Duration::from_secs(3)),
            "{side} retransmits every 3 s: {gaps:?}"
        );
    }
}

#[test]
fn tsize_answered_on_read() {
    let f = file(3000);
    let options = Options {
        tsize: Some(0),
        ..Options::NONE
    };
    let mut sim = read_pair(&f, &Setup::default().options(options));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let Pkt::Rrq(req) = &sim.client.sent[0].packet else {
        panic!()
    };
    assert_eq!(req.options, vec![("tsize".to_string(), "0".to_string())]);
    assert_eq!(sim.server().sent[0].packet.oack_option("tsize"), Some("3000"));
    assert_eq!(negotiated(&sim.client).tsize, Some(3000));

    // In netascii the wire size is not the file size: tsize is left unanswered.
    let setup = Setup {
        mode: TransferMode::Netascii,
        ..Setup::default().options(Options {
            tsize: Some(0),
            blksize: Some(1024),
            ..Options::NONE
        })
    };
    let mut sim = read_pair(b"a\nb\n", &setup);
    run(&mut sim);
    assert_eq!(sim.server().sent[0].packet.oack_option("tsize"), None);
    assert_eq!(sim.client.transfer.storage(), b"a\nb\n");
}

#[test]
fn tsize_echoed_on_write_and_refused_over_limit() {
    let f = file(5000);
    let options = Options {
        tsize: Some(1),
        ..Options::NONE
    };
    let mut sim = write_pair(&f, &Setup::default().options(options));
    run(&mut sim);
    assert_write_ok(&sim, &f);
    let Pkt::Wrq(req) = &sim.client.sent[0].packet else {
        panic!()
    };
    assert_eq!(
        req.options,
        vec![("tsize".to_string(), "5000".to_string())],
        "the real size"
    );
    assert_eq!(sim.server().sent[0].packet.oack_option("tsize"), Some("5000"));
    assert_eq!(negotiated(sim.server()).tsize, Some(5000));

    let setup = Setup {
        policy: ServerPolicy {
            max_write_size: Some(4000),
            ..ServerPolicy::default()
        },
        ..Setup::default().options(options)
    };
    let mut sim = write_pair(&f, &setup);
    run(&mut sim);
    assert_eq!(
        sim.server()
            .sent
            .iter()
            .map(|s| s.packet.clone())
            .collect::<Vec<_>>(),
        vec![Pkt::Error {
            code: ErrorCode::DiskFull,
            message: b"File too large".to_vec()
        }]
    );
    assert!(matches!(
        sim.server().failure(),
        TransferError::Refused {
            code: ErrorCode::DiskFull,
            ..
        }
    ));
    assert_eq!(peer_code(&sim.client.failure()), Some(ErrorCode::DiskFull));
    assert!(sim.client.data().is_empty());
}

#[test]
fn huge_tsize_on_write_is_echoed_without_allocation() {
    let req = request(
        RequestKind::Write,
        "f",
        "octet",
        &[("tsize", "18446744073709551615")],
    );
    let (mut side, out) = scripted_server(&req, Vec::new(), &ServerPolicy::default(), Config::default());
    assert_eq!(
        decoded(&out)[0].1.oack_option("tsize"),
        Some("18446744073709551615")
    );
    assert_eq!(
        side.transfer.storage().capacity(),
        0,
        "nothing pre-sized from the peer's tsize"
    );
    side.deliver(at(ms(10)), CLIENT, &data(1, b"tiny"));
    assert_eq!(side.outcome(), Some(Ok(4)));
    assert_eq!(side.transfer.storage(), b"tiny");
}

#[test]
fn windowsize_capped_by_server_policy() {
    let f = file(100 * 512);
    let setup = Setup {
        policy: ServerPolicy {
            max_windowsize: 16,
            ..ServerPolicy::default()
        },
        ..Setup::default().options(opts(None, Some(256)))
    };
    let mut sim = read_pair(&f, &setup);
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().sent[0].packet.oack_option("windowsize"), Some("16"));
    assert_eq!(negotiated(&sim.client).windowsize, 16);
    // DATA goes out in bursts of 16, each answering one ACK.
    let mut bursts: Vec<usize> = Vec::new();
    let mut last_trigger = None;
    for s in sim
        .server()
        .sent
        .iter()
        .filter(|s| s.packet.data_block().is_some())
    {
        if last_trigger.as_ref() == Some(&(s.at, &s.trigger)) {
            *bursts.last_mut().unwrap() += 1;
        } else {
            bursts.push(1);
            last_trigger = Some((s.at, &s.trigger));
        }
    }
    assert!(bursts.iter().all(|&b| b <= 16), "{bursts:?}");
    assert_eq!(bursts[0], 16);
}

#[test]
fn receiver_acks_last_block_of_each_window() {
    let f = file(10 * 512 + 100);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(4))));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.client.acks(), vec![0, 4, 8, 11]);
    let blocks: Vec<u16> = sim.server().data().iter().map(|d| d.0).collect();
    assert_eq!(blocks, (1..=11).collect::<Vec<u16>>());
}

#[test]
fn window_with_lost_middle_block_restarts_after_last_acked() {
    let f = file(12 * 512 + 10);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(4))));
    sim.set_hook(once(Dir::ServerToClient, |p| is_data(p, 2), Verdict::Drop));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    // The gap is reported once, by ACK 1; the window restarts at 2.
    assert_eq!(sim.client.acks(), vec![0, 1, 5, 9, 13]);
    let blocks: Vec<u16> = sim.server().data().iter().map(|d| d.0).collect();
    assert_eq!(blocks, vec![1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    assert_eq!(sim.client.transfer.storage().len(), f.len());
}

#[test]
fn one_duplicated_data_does_not_misalign_later_windows() {
    // A repeat must not be acknowledged mid-window: that would restart the sender's window
    // while later blocks are in flight, and every later window would overlap the one before.
    let f = file(40 * 512 + 1);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(8))));
    sim.set_hook(once(Dir::ServerToClient, |p| is_data(p, 3), Verdict::Duplicate));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().data().len(), 41, "no block sent twice");
    assert_eq!(sim.client.acks(), vec![0, 8, 16, 24, 32, 40, 41]);

    // A copy of an old block arriving late, in the middle of a later window, costs at most one
    // window, not the rest of the transfer.
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(8))));
    sim.run_until(|s| s.server.as_ref().is_some_and(|sv| sv.data().len() >= 20))
        .unwrap();
    sim.inject(ms(5), SERVER_TID, CLIENT, data(3, &f[2 * 512..3 * 512]));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let sent = sim.server().data().len();
    assert!(sent <= 41 + 8, "{sent} DATA for 41 blocks");
    assert!(sim.client.acks().len() <= 7 + 2, "{:?}", sim.client.acks());
}

#[test]
fn lost_ack_at_window_end_costs_one_probe() {
    // A window's ACK is lost. Once the sender knows how soon ACKs follow a window (after the
    // first one), its tail-loss probe resends the window's last block alone, well before a
    // retransmission timeout, and the receiver, which has the whole window, acknowledges it
    // again.
    let f = file(40 * 512 + 1);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(8))));
    sim.set_hook(once(Dir::ClientToServer, |p| is_ack(p, 16), Verdict::Drop));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let blocks: Vec<u16> = sim.server().data().iter().map(|d| d.0).take(18).collect();
    assert_eq!(
        blocks,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16, 17]
    );
    assert_eq!(sim.server().data().len(), 41 + 1, "one block sent twice");
    assert_eq!(
        sim.server().transfer.stats().timeouts,
        0,
        "no retransmission timeout"
    );
    // The lost one, the probe's answer, and maybe one from the receiver's own timer.
    let acks = sim.client.acks();
    assert!(
        (2..=3).contains(&acks.iter().filter(|&&a| a == 16).count()),
        "{acks:?}"
    );
    assert_eq!(acks.iter().filter(|&&a| a != 16).count(), 6, "{acks:?}");
}

#[test]
fn lost_ack_at_the_first_window_end_is_answered_once() {
    // The first window's ACK is lost (no probe yet: the sender has not seen a window's ACK
    // delay): the sender times out and resends the whole window; the receiver, which has it
    // all, answers the repeated window with one ACK, not one per block.
    let f = file(40 * 512 + 1);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(8))));
    sim.set_hook(once(Dir::ClientToServer, |p| is_ack(p, 8), Verdict::Drop));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    let blocks: Vec<u16> = sim.server().data().iter().map(|d| d.0).take(16).collect();
    assert_eq!(blocks, [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let answering = |range: std::ops::RangeInclusive<u16>| {
        sim.client
            .sent
            .iter()
            .filter(|s| matches!(&s.trigger, Trigger::Datagram { packet: Pkt::Data { block, .. }, .. } if range.contains(block)))
            .count()
    };
    assert_eq!(answering(1..=7), 1, "one ACK for the repeated window");
    assert_eq!(answering(8..=8), 1, "only the first DATA 8 is answered");
    // Besides, the receiver's own timer may re-ACK once: at most three ACK 8 in all.
    let acks = sim.client.acks();
    assert!(
        (2..=3).contains(&acks.iter().filter(|&&a| a == 8).count()),
        "{acks:?}"
    );
    assert_eq!(acks.iter().filter(|&&a| a != 8).count(), 6, "{acks:?}");
}

#[test]
fn windowsize_1_is_wire_identical_to_rfc1350() {
    let f = file(7 * 512 + 3);
    let mut plain = read_pair(&f, &Setup::default());
    run(&mut plain);
    let mut win1 = read_pair(&f, &Setup::default().options(opts(None, Some(1))));
    run(&mut win1);
    assert_read_ok(&win1, &f);
    assert_eq!(plain.server().data(), win1.server().data());
    assert_eq!(
        plain.client.acks(),
        win1.client.acks()[1..],
        "same ACKs after the ACK 0 handshake"
    );
}

#[test]
fn data_longer_than_blksize_is_error_4() {
    for (options, len) in [(Options::NONE, 513), (opts(Some(1024), None), 1025)] {
        let f = file(5000);
        let mut sim = read_pair(&f, &Setup::default().options(options));
        sim.set_hook(move |dir, p| {
            if dir == Dir::ServerToClient && is_data(p, 2) {
                Verdict::Replace(data(2, &vec![0xAB; len]))
            } else {
                Verdict::Deliver
            }
        });
        run(&mut sim);
        assert_eq!(
            sim.client.failure(),
            TransferError::Protocol(ProtocolError::DataTooLong)
        );
        assert_eq!(
            sim.client.errors(),
            vec![(SERVER_TID, ErrorCode::IllegalOperation)]
        );
        assert_eq!(
            peer_code(&sim.server().failure()),
            Some(ErrorCode::IllegalOperation)
        );
        assert_eq!(
            sim.client.transfer.storage().len(),
            usize::from(negotiated(&sim.client).blksize)
        );
    }
}

#[test]
fn ack_for_a_block_never_sent_is_ignored() {
    let f = file(4 * 512);
    let mut sim = read_pair(&f, &Setup::default());
    sim.run_until(|s| s.server.as_ref().is_some_and(|sv| !sv.data().is_empty()))
        .unwrap();
    sim.inject(ms(1), CLIENT, SERVER_TID, ack(3));
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().data().len(), 5);
    assert!(sim.server().transfer.stats().dropped >= 1);
}

#[test]
fn malformed_datagrams_from_the_peer_are_ignored() {
    let f = file(4 * 512);
    let mut sim = read_pair(&f, &Setup::default());
    sim.run_until(|s| s.server.as_ref().is_some_and(|sv| sv.data().len() >= 2))
        .unwrap();
    for junk in [
        vec![],
        vec![0],
        vec![0, 3],
        vec![0, 4, 0],
        vec![0, 9, 1, 2],
        vec![0, 6, b'x'],
        vec![0, 5],
        vec![0, 5, 0],
        vec![0, 1, b'f', 0],
    ] {
        sim.inject(ms(1), SERVER_TID, CLIENT, junk.clone());
        sim.inject(ms(1), CLIENT, SERVER_TID, junk);
    }
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert!(sim.client.errors().is_empty() && sim.server().errors().is_empty());
}

// ---- block numbers past 65535 -------------------------------------------------------------

fn wire_blocks(data: &[(u16, usize)]) -> Vec<u16> {
    data.iter().map(|d| d.0).collect()
}

#[test]
fn blocks_past_65535_wrap_to_0() {
    let blocks = 65_540u64;
    let f = file((blocks as usize - 1) * 8 + 3);
    let options = Options {
        rollover: Some(0),
        ..opts(Some(8), Some(64))
    };
    let mut sim = read_pair(&f, &Setup::default().options(options));
    sim.max_steps = 10 * blocks;
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().sent[0].packet.oack_option("rollover"), Some("0"));
    let expect: Vec<u16> = (1..=blocks).map(|i| (i % 65536) as u16).collect();
    assert_eq!(wire_blocks(&sim.server().data()), expect);
    assert_eq!(sim.server().data()[65535], (0, 8), "block 65536 is numbered 0");

    // Without the option the default is the same.
    let mut sim = write_pair(&f, &Setup::default().options(opts(Some(8), Some(64))));
    sim.max_steps = 10 * blocks;
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert_eq!(wire_blocks(&sim.client.data()), expect);
}

#[test]
fn rollover_1_wraps_to_1() {
    let blocks = 65_540u64;
    let f = file((blocks as usize - 1) * 8 + 3);
    let options = Options {
        rollover: Some(1),
        ..opts(Some(8), Some(64))
    };
    let mut sim = read_pair(&f, &Setup::default().options(options));
    sim.max_steps = 10 * blocks;
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().sent[0].packet.oack_option("rollover"), Some("1"));
    let expect: Vec<u16> = (1..=blocks).map(|i| ((i - 1) % 65535 + 1) as u16).collect();
    assert_eq!(wire_blocks(&sim.server().data()), expect);
    assert!(
        !sim.server().data().iter().any(|d| d.0 == 0),
        "no DATA 0 under rollover 1"
    );
    assert!(sim.client.acks()[1..].iter().all(|&a| a != 0));

    let mut sim = write_pair(&f, &Setup::default().options(options));
    sim.max_steps = 10 * blocks;
    run(&mut sim);
    assert_write_ok(&sim, &f);
    assert_eq!(wire_blocks(&sim.client.data()), expect);
}

#[test]
fn more_than_131072_blocks() {
    let blocks = 131_075u64;
    let len = (blocks - 1) * 8 + 5;
    let setup = Setup::default().options(opts(Some(8), Some(64)));
    let mut sim = pair(
        RequestKind::Read,
        PatternCheck::default(),
        PatternFile { len },
        &setup,
    );
    sim.max_steps = 10 * blocks;
    run(&mut sim);
    assert_eq!(sim.client.outcome(), Some(Ok(len)));
    assert_eq!(sim.server().outcome(), Some(Ok(len)));
    let check = sim.client.transfer.storage();
    assert_eq!(
        (check.written, check.first_bad, check.finished),
        (len, None, true)
    );
    let wire = wire_blocks(&sim.server().data());
    let expect: Vec<u16> = (1..=blocks).map(|i| (i % 65536) as u16).collect();
    assert_eq!(wire, expect);
    assert_eq!(wire.iter().filter(|&&b| b == 0).count(), 2, "wrapped twice");

    // And with a lossy network in the write direction, across both wraps.
    let setup = Setup {
        client_config: Config {
            max_retries: 20,
            ..Config::default()
        },
        server_config: Config {
            max_retries: 20,
            ..Config::default()
        },
        ..setup.net(Net::lossy(0.02, 0.02, 0.02))
    };
    let mut sim = pair(
        RequestKind::Write,
        PatternFile { len },
        PatternCheck::default(),
        &setup,
    );
    sim.max_steps = 20 * blocks;
    run(&mut sim);
    assert_eq!(sim.server().outcome(), Some(Ok(len)));
    let check = sim.server().transfer.storage();
    assert_eq!((check.written, check.first_bad), (len, None));
}

#[test]
#[ignore = "moves 4 GiB through the engine: run in release (cargo test --release -- --ignored)"]
fn transfer_over_4gib_offsets() {
    let len = (1u64 << 32) + 123_457;
    let setup = Setup::default().options(Options {
        tsize: Some(0),
        ..opts(Some(65464), Some(64))
    });
    let mut sim = pair(
        RequestKind::Read,
        PatternCheck::default(),
        PatternFile { len },
        &setup,
    );
    sim.max_steps = 200_000;
    run(&mut sim);
    assert_eq!(negotiated(&sim.client).tsize, Some(len));
    assert_eq!(sim.client.outcome(), Some(Ok(len)));
    assert_eq!(sim.server().outcome(), Some(Ok(len)));
    let check = sim.client.transfer.storage();
    assert_eq!(
        (check.written, check.first_bad, check.finished),
        (len, None, true)
    );
    let blocks = len.div_ceil(65464);
    assert_eq!(sim.server().data().len() as u64, blocks);
    assert_eq!(
        sim.server().data().last(),
        Some(&(wire_block(blocks, false), (len % 65464) as usize))
    );

    // Upload past 4 GiB, with some loss.
    let setup = Setup {
        client_config: Config {
            max_retries: 20,
            ..Config::default()
        },
        ..setup.net(Net::lossy(0.01, 0.01, 0.01))
    };
    let mut sim = pair(
        RequestKind::Write,
        PatternFile { len },
        PatternCheck::default(),
        &setup,
    );
    sim.max_steps = 400_000;
    run(&mut sim);
    assert_eq!(sim.client.outcome(), Some(Ok(len)));
    let check = sim.server().transfer.storage();
    assert_eq!((check.written, check.first_bad), (len, None));
}

// ---- field quirks -------------------------------------------------------------------------

#[test]
fn uefi_tsize_probe_ends_quietly() {
    let f = file(10_000);
    let probe = request(RequestKind::Read, "bootx64.efi", "octet", &[("tsize", "0")]);
    let (mut server, out) = scripted_server(&probe, &f[..], &ServerPolicy::default(), Config::default());
    assert_eq!(
        decoded(&out),
        vec![(CLIENT, Pkt::Oack(vec![("tsize".into(), "10000".into())]))]
    );
    let out = server.deliver(at(ms(10)), CLIENT, &error(8, "User aborted the transfer"));
    assert!(out.is_empty(), "no answer to the ERROR 8");
    assert_eq!(server.final_event(), Some(&Event::OptionsDeclined));
    assert!(!server.events.iter().any(|(_, e)| matches!(e, Event::Failed(_))));
    assert_eq!(server.outcome(), Some(Ok(0)));
    assert!(server.transfer.is_finished());
    assert_eq!(server.transfer.poll_timeout(), None);
    assert!(server.data().is_empty());
    assert_clean(&server);

    // Then the firmware asks again without tsize, and is served.
    let mut sim = read_pair(&f, &Setup::default());
    run(&mut sim);
    assert_read_ok(&sim, &f);

    // The same probe with blksize too is declined the same way.
    let probe = request(
        RequestKind::Read,
        "bootx64.efi",
        "octet",
        &[("blksize", "1468"), ("tsize", "0")],
    );
    let (mut server, _) = scripted_server(&probe, &f[..], &ServerPolicy::default(), Config::default());
    server.deliver(at(ms(10)), CLIENT, &error(8, ""));
    assert_eq!(server.final_event(), Some(&Event::OptionsDeclined));
}

#[test]
fn error_8_after_data_started_is_a_failure() {
    // Only an ERROR 8 answering the OACK is the quiet probe; later it is a real failure.
    let f = file(3000);
    let probe = request(RequestKind::Read, "f", "octet", &[("tsize", "0")]);
    let (mut server, _) = scripted_server(&probe, &f[..], &ServerPolicy::default(), Config::default());
    server.deliver(at(ms(10)), CLIENT, &ack(0));
    server.deliver(at(ms(20)), CLIENT, &error(8, "changed my mind"));
    assert!(matches!(
        server.final_event(),
        Some(Event::Failed(TransferError::Peer(_)))
    ));
    assert_clean(&server);
}

#[test]
fn ack_with_trailing_bytes_accepted() {
    let f = file(10 * 512 + 1);
    let mut sim = read_pair(&f, &Setup::default().options(opts(None, Some(2))));
    sim.set_hook(|dir, p| match p {
        Packet::Ack { block } if dir == Dir::ClientToServer => {
            let mut padded = ack(*block);
            padded.extend_from_slice(&[0, 0, 0, 0]);
            Verdict::Replace(padded)
        }
        _ => Verdict::Deliver,
    });
    run(&mut sim);
    assert_read_ok(&sim, &f);
    assert_eq!(sim.server().transfer.stats().dropped, 0);
    assert_eq!(sim.server().data().len(), 11);
}

/// Netascii as RFC 764 defines it, written independently of the crate.
fn to_netascii(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in text {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            other => out.push(other),
        }
    }
    out
}

#[test]
fn netascii_round_trip_through_engine() {
    // With blksize 8, line ends and bare CRs land on every position of a block, including
    // the last, so pairs straddle block boundaries.
    let mut text = Vec::new();
    for i in 0..60usize {
        text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 11));
        text.extend_from_slice(match i % 4 {
            0 => b"\n",
            1 => b"\r",
            2 => b"\r\n",
            _ => b"\n\n",
        });
    }
    text.extend_from_slice(b"end\r");
    let wire = to_netascii(&text);
    assert!(!wire.len().is_multiple_of(8));
    let setup = Setup {
        mode: TransferMode::Netascii,
        ..Setup::default().options(opts(Some(8), None))
    };

    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut sim = read_pair(&text, &setup);
    let log = Rc::clone(&seen);
    sim.set_hook(move |dir, p| {
        if let (Dir::ServerToClient, Packet::Data { payload, .. }) = (dir, p) {
            log.borrow_mut().extend_from_slice(payload);
        }
        Verdict::Deliver
    });
    run(&mut sim);
    assert_eq!(*seen.borrow(), wire, "the wire carries netascii");
    assert_eq!(sim.client.transfer.storage(), &text, "decoded back to the file");
    assert_eq!(
        sim.client.outcome(),
        Some(Ok(wire.len() as u64)),
        "bytes count the wire"
    );

    // Both directions, with windows, loss, duplicates and reordering: retransmissions
    // re-encode from the right point of the stream.
    for seed in 0..20 {
        let setup = Setup {
            seed,
            client_config: Config {
                max_retries: 30,
                ..Config::default()
            },
            server_config: Config {
                max_retries: 30,
                ..Config::default()
            },
            ..Setup {
                mode: TransferMode::Netascii,
                ..Setup::default().options(opts(Some(8), Some(4)))
            }
            .net(Net::lossy(0.2, 0.1, 0.1))
        };
        let mut sim = read_pair(&text, &setup);
        run(&mut sim);
        assert_eq!(sim.client.transfer.storage(), &text, "read, seed {seed}");
        let mut sim = write_pair(&text, &setup);
        run(&mut sim);
        assert_eq!(sim.server().transfer.storage(), &text, "write, seed {seed}");
    }
}

// ---- limits and storage failures ----------------------------------------------------------

#[test]
fn max_write_size_enforced_with_error_3() {
    let f = file(5000);
    let setup = Setup {
        policy: ServerPolicy {
            max_write_size: Some(3000),
            ..ServerPolicy::default()
        },
        ..Setup::default()
    };
    let mut sim = write_pair(&f, &setup);
    run(&mut sim);
    assert_eq!(sim.server().failure(), TransferError::TooLarge);
    assert_eq!(sim.server().errors(), vec![(CLIENT, ErrorCode::DiskFull)]);
    assert_eq!(
        sim.server().acks(),
        vec![0, 1, 2, 3, 4, 5],
        "block 6 passes 3000 bytes"
    );
    assert_eq!(peer_code(&sim.client.failure()), Some(ErrorCode::DiskFull));
    assert!(sim.server().transfer.storage().len() <= 3000);

    // A client reading has the same limit in its Config.
    let setup = Setup {
        client_config: Config {
            max_write_size: Some(1000),
            ..Config::default()
        },
        ..Setup::default()
    };
    let mut sim = read_pair(&f, &setup);
    run(&mut sim);
    assert_eq!(sim.client.failure(), TransferError::TooLarge);
    assert_eq!(sim.client.errors(), vec![(SERVER_TID, ErrorCode::DiskFull)]);
    assert_eq!(peer_code(&sim.server().failure()), Some(ErrorCode::DiskFull));
}

#[test]
fn storage_read_error_sends_error_packet() {
    for (e, code) in [
        (StorageError::NotFound, ErrorCode::FileNotFound),
        (StorageError::AccessDenied, ErrorCode::AccessViolation),
        (StorageError::Io, ErrorCode::NotDefined),
    ] {
        let failing = Failing {
            read: Some(e),
            ..Failing::default()
        };
        let mut sim = pair(RequestKind::Read, Vec::new(), failing, &Setup::default());
        run(&mut sim);
        assert_eq!(sim.server().failure(), TransferError::Storage(e));
        let sent: Vec<Pkt> = sim.server().sent.iter().map(|s| s.packet.clone()).collect();
        assert_eq!(
            sent,
            vec![Pkt::Error {
                code,
                message: e.message().as_bytes().to_vec()
            }]
        );
        assert_eq!(peer_code(&sim.client.failure()), Some(code));
    }

    // Writes: disk full after 1000 bytes is ERROR 3; a storage that cannot write at all is 2.
    let f = file(3000);
    for (e, limit, code) in [
        (StorageError::DiskFull, 1000, ErrorCode::DiskFull),
        (StorageError::AccessDenied, 0, ErrorCode::AccessViolation),
        (StorageError::NotFound, 0, ErrorCode::FileNotFound),
    ] {
        let failing = Failing {
            write: Some(e),
            write_limit: limit,
            ..Failing::default()
        };
        let mut sim = pair(RequestKind::Write, &f[..], failing, &Setup::default());
        run(&mut sim);
        assert_eq!(sim.server().failure(), TransferError::Storage(e));
        assert_eq!(sim.server().errors(), vec![(CLIENT, code)]);
        assert_eq!(peer_code(&sim.client.failure()), Some(code));
        let acked = sim.server().acks();
        assert_eq!(
            acked.last(),
            Some(&((limit / 512) as u16)),
            "the failing block is not acknowledged"
        );
    }
}

#[test]
fn storage_commit_failure_reaches_the_peer() {
    let f = file(1500);
    let failing = Failing {
        finish: Some(StorageError::DiskFull),
        ..Failing::default()
    };
    let mut sim = pair(RequestKind::Write, &f[..], failing, &Setup::default());
    run(&mut sim);
    assert_eq!(
        sim.server().failure(),
        TransferError::Storage(StorageError::DiskFull)
    );
    assert_eq!(
        sim.server().acks(),
        vec![0, 1, 2],
        "the final block is not acknowledged"
    );
    assert_eq!(peer_code(&sim.client.failure()), Some(ErrorCode::DiskFull));
}

/// A file whose length the test changes while it is being sent.
#[derive(Debug, Clone)]
struct Changing(Rc<RefCell<Vec<u8>>>);

impl Storage for Changing {
    fn size(&mut self) -> Option<u64> {
        Some(self.0.borrow().len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let f = self.0.borrow();
        let start = (offset as usize).min(f.len());
        let n = buf.len().min(f.len() - start);
        buf[..n].copy_from_slice(&f[start..start + n]);
        Ok(n)
    }
}

#[test]
fn file_changing_size_during_read_fails_cleanly() {
    type Change = fn(&mut Vec<u8>);
    let cases: [(&str, usize, u16, u16, Change); 3] = [
        // Shrinks after block 4 went out (and was lost): its resend would come up short.
        ("shrink", 8 * 512, 1, 4, |f| f.truncate(3 * 512 + 200)),
        // Same in a window: blocks 2..4 were sent full, block 2 is lost and resent short.
        ("shrink in window", 8 * 512, 4, 2, |f| f.truncate(512 + 100)),
        // Grows after the final block went out (and was lost): its resend would be longer.
        ("grow", 3 * 512 + 100, 1, 4, |f| f.extend_from_slice(&[1; 300])),
    ];
    for (name, len, windowsize, lost, change) in cases {
        let shared = Rc::new(RefCell::new(file(len)));
        let setup = Setup::default().options(opts(None, Some(windowsize)));
        let mut sim = pair(
            RequestKind::Read,
            Vec::new(),
            Changing(Rc::clone(&shared)),
            &setup,
        );
        let handle = Rc::clone(&shared);
        let mut done = false;
        sim.set_hook(move |dir, p| {
            if dir == Dir::ServerToClient && is_data(p, lost) && !done {
                done = true;
                change(&mut handle.borrow_mut());
                Verdict::Drop
            } else {
                Verdict::Deliver
            }
        });
        run(&mut sim);
        assert_eq!(
            sim.server().failure(),
            TransferError::Storage(StorageError::Changed),
            "{name}"
        );
        assert_eq!(
            sim.server().errors(),
            vec![(CLIENT, ErrorCode::NotDefined)],
            "{name}"
        );
        assert_eq!(
            peer_code(&sim.client.failure()),
            Some(ErrorCode::NotDefined),
            "{name}"
        );
        assert!(
            !matches!(sim.client.final_event(), Some(Event::Finished { .. })),
            "{name}: the client must not believe it has the file"
        );
    }
}

// ---- size -----------------------------------------------------------------------------------

#[test]
fn size_of_transfer_is_small() {
    use std::mem::size_of;
    let sizes = [
        ("Transfer<'static, &[u8]>", size_of::<Transfer<'static, &[u8]>>()),
        (
            "Transfer<'static, Vec<u8>>",
            size_of::<Transfer<'static, Vec<u8>>>(),
        ),
        (
            "Transfer<'static, SliceWriter>",
            size_of::<Transfer<'static, tftp_proto::storage::SliceWriter<'static>>>(),
        ),
        (
            "Transfer<'static, &mut Vec<u8>>",
            size_of::<Transfer<'static, &mut Vec<u8>>>(),
        ),
        ("Event", size_of::<Event>()),
        ("TransferError", size_of::<TransferError>()),
        ("Config", size_of::<Config>()),
        ("TransferParams", size_of::<TransferParams>()),
    ];
    for (name, size) in sizes {
        println!("size_of::<{name}>() = {size}");
    }
    // One transfer per session in a no-heap server table: keep it well under a kilobyte. (It
    // is above 512 bytes: a PeerError keeps up to 100 bytes of the peer's message inline, and
    // the RTO state with its bounds, the timer limits and the stray-TID slot take about 100.)
    for (name, size) in &sizes[..4] {
        assert!(*size < 1024, "{name} is {size} bytes");
    }
}

// ---- total timeout: patience in time, not a count of retries at the current RTO -------------

/// Plays a server by hand against a client download: blocks 1-5 come 10 ms after each ACK
/// (the adaptive timeout shrinks to its floor), then the server says nothing for `pause`,
/// while the client's timers fire; then the final block comes. Returns the client side and
/// the number of ACKs it sent during the pause.
fn client_through_a_server_pause(config: Config, pause: Duration) -> (Side<'static, Vec<u8>>, usize) {
    let (mut c, _) = scripted_client(
        RequestKind::Read,
        Options::NONE,
        TransferMode::Octet,
        Vec::new(),
        config,
    );
    let mut now = at(ms(10));
    for block in 1..=5u16 {
        let out = c.deliver(now, SERVER_TID, &data(block, &[block as u8; 512]));
        assert_eq!(decoded(&out), vec![(SERVER_TID, Pkt::Ack { block })]);
        now += ms(10);
    }
    let resume = now + pause;
    let before = c.acks().len();
    while let Some(t) = c.transfer.poll_timeout().filter(|&t| t < resume) {
        now = t;
        c.fire(now);
    }
    let during = c.acks().len() - before;
    if c.outcome().is_none() {
        c.deliver(resume, SERVER_TID, &data(6, b"end"));
    }
    (c, during)
}

/// A client whose adaptive timeout has a 50 ms floor: six retries add up to 6.35 s.
fn fast_retries() -> Config {
    Config {
        min_rto: ms(50),
        ..Config::default()
    }
}

/// tftpy's delay test: a server that pauses 10 s mid-transfer. The client's six retries at an
/// adaptive timeout near a 50 ms floor add up to 6.35 s; the total timeout (25 s by default)
/// keeps it listening, so the transfer completes, as with tftp-hpa, atftp and busybox.
#[test]
fn total_timeout_client_waits_out_a_server_pause_longer_than_its_retries() {
    let (c, resent) = client_through_a_server_pause(fast_retries(), Duration::from_secs(10));
    assert_eq!(c.outcome(), Some(Ok(5 * 512 + 3)));
    // `--retries` keeps its meaning: exactly max_retries re-ACKs during the pause.
    assert_eq!(resent, usize::from(Config::default().max_retries));
    assert_clean(&c);
    // With no total timeout, the retries alone give up within the pause (the old behaviour).
    let quick = Config {
        total_timeout: Duration::ZERO,
        ..fast_retries()
    };
    let (c, _) = client_through_a_server_pause(quick, Duration::from_secs(10));
    assert_eq!(c.failure(), TransferError::TimedOut);
}

/// A peer that never comes back: the transfer gives up at the later of its last retry's
/// timeout and the total timeout after its last progress, and not before.
#[test]
fn total_timeout_gives_up_after_the_retries_and_the_total_timeout() {
    for (total, expected_end) in [
        // Short retries: the total timeout (counted from the last block, at 50 ms) decides.
        (Duration::from_secs(25), ms(50) + Duration::from_secs(25)),
        (Duration::from_secs(8), ms(50) + Duration::from_secs(8)),
    ] {
        let config = Config {
            total_timeout: total,
            ..fast_retries()
        };
        let (c, resent) = client_through_a_server_pause(config, Duration::from_secs(3600));
        assert_eq!(c.failure(), TransferError::TimedOut);
        assert_eq!(resent, 6);
        let gave_up = c.sent.last().unwrap();
        assert_eq!(gave_up.packet.error_code(), Some(ErrorCode::NotDefined));
        assert_eq!(gave_up.at, at(expected_end), "total {total:?}");
    }
    // Long retries (a 5 s fixed interval: 35 s for six): the retries decide; the total timeout
    // adds nothing.
    let config = Config {
        initial_rto: Duration::from_secs(5),
        min_rto: Duration::from_secs(5),
        ..Config::default()
    };
    let (c, resent) = client_through_a_server_pause(config, Duration::from_secs(3600));
    assert_eq!(resent, 6);
    let last_ack = c
        .sent
        .iter()
        .rev()
        .find(|s| s.packet.ack_block().is_some())
        .unwrap()
        .at;
    assert_eq!(c.sent.last().unwrap().at - last_ack, Duration::from_secs(5));
}

/// The same rule for a server's session: a client that stops acknowledging for 10 s (a
/// descheduled boot loader) still gets its file.
#[test]
fn total_timeout_server_session_waits_out_a_client_pause() {
    let f = file(5 * 512 + 100);
    let req = request(RequestKind::Read, "file.bin", "octet", &[]);
    let (mut s, out) = scripted_server(&req, &f[..], &ServerPolicy::default(), fast_retries());
    assert!(decoded(&out)[0].1.data_block() == Some(1));
    let mut now = at(ms(10));
    for block in 1..=3u16 {
        let out = s.deliver(now, CLIENT, &ack(block));
        assert_eq!(decoded(&out)[0].1.data_block(), Some(block + 1));
        now += ms(10);
    }
    // The client pauses 10 s: DATA 4 is resent max_retries times, then the session waits.
    let resume = now + Duration::from_secs(10);
    while let Some(t) = s.transfer.poll_timeout().filter(|&t| t < resume) {
        now = t;
        s.fire(now);
    }
    assert_eq!(s.outcome(), None, "the session gave up during the pause");
    assert_eq!(s.data().iter().filter(|d| d.0 == 4).count(), 7);
    let out = s.deliver(resume, CLIENT, &ack(4));
    assert_eq!(decoded(&out)[0].1.data_block(), Some(5));
    let out = s.deliver(resume + ms(10), CLIENT, &ack(5));
    assert_eq!(decoded(&out)[0].1.data_block(), Some(6));
    s.deliver(resume + ms(20), CLIENT, &ack(6));
    assert_eq!(s.outcome(), Some(Ok(f.len() as u64)));
    assert_clean(&s);
}

/// An OACK that adds `blksize 512` or `windowsize 1` without being asked (tftpy's server always
/// adds `blksize`) only restates the default: the client accepts it. Any other unrequested value
/// stays an ERROR 8.
#[test]
fn oack_unrequested_option_at_its_default_is_accepted() {
    for extra in [("blksize", "512"), ("windowsize", "1")] {
        let (mut c, _) = scripted_client(
            RequestKind::Read,
            Options {
                tsize: Some(0),
                ..Options::NONE
            },
            TransferMode::Octet,
            Vec::new(),
            Config::default(),
        );
        let out = c.deliver(at(ms(10)), SERVER_TID, &oack(&[("tsize", "3"), extra]));
        assert_eq!(
            decoded(&out),
            vec![(SERVER_TID, Pkt::Ack { block: 0 })],
            "{extra:?}"
        );
        c.deliver(at(ms(20)), SERVER_TID, &data(1, b"abc"));
        assert_eq!(c.outcome(), Some(Ok(3)), "{extra:?}");
        assert_eq!(
            (c.transfer.params().blksize, c.transfer.params().windowsize),
            (512, 1)
        );
    }
    for extra in [
        ("blksize", "1024"),
        ("blksize", "511"),
        ("windowsize", "2"),
        ("timeout", "1"),
    ] {
        let (mut c, _) = scripted_client(
            RequestKind::Read,
            Options::NONE,
            TransferMode::Octet,
            Vec::new(),
            Config::default(),
        );
        let out = c.deliver(at(ms(10)), SERVER_TID, &oack(&[extra]));
        assert_eq!(
            decoded(&out)[0].1.error_code(),
            Some(ErrorCode::OptionNegotiation),
            "{extra:?}"
        );
        assert!(
            matches!(c.failure(), TransferError::Oack(OackError::Unrequested(_))),
            "{extra:?}"
        );
    }
}

// ---- retransmission that fits the receiver ---------------------------------------------------

/// A clean path whose delivery jitters by up to four times its round trip (10 ms each way,
/// up to 80 ms extra per datagram, order kept): nothing is ever sent twice, by either side,
/// whatever the window. The retransmission timeout's floor and its variance term, and the
/// tail-loss probe's floor, stay above such delays.
#[test]
fn jittery_delivery_never_causes_a_resend() {
    let f = file(200 * 512 + 17);
    let blocks = 201;
    for windowsize in [None, Some(4), Some(16)] {
        for seed in 0..12 {
            let setup = Setup {
                net: Net {
                    jitter: ms(80),
                    ..Net::PERFECT
                },
                seed,
                ..Setup::default().options(opts(None, windowsize))
            };
            let mut sim = read_pair(&f, &setup);
            run(&mut sim);
            assert_read_ok(&sim, &f);
            let what = format!("windowsize {windowsize:?}, seed {seed}");
            assert_eq!(sim.server().data().len(), blocks, "{what}");
            assert_eq!(sim.server().transfer.stats().retransmissions, 0, "{what}");
            assert_eq!(sim.client.transfer.stats().retransmissions, 0, "{what}");
        }
    }
}

/// Plays a receiver by hand against a windowsize-8 download: ACK 0 starts the first window
/// (blocks 1-8, 10 ms after the OACK), and the receiver's answers come as the test says.
fn server_window_of_8() -> (Side<'static, &'static [u8]>, Instant) {
    static FILE: [u8; 40 * 512] = [5; 40 * 512];
    let req = request(RequestKind::Read, "file.bin", "octet", &[("windowsize", "8")]);
    let (mut s, out) = scripted_server(&req, &FILE[..], &ServerPolicy::default(), Config::default());
    assert!(matches!(decoded(&out)[0].1, Pkt::Oack(_)));
    let now = at(ms(10));
    let out = s.deliver(now, CLIENT, &ack(0));
    assert_eq!(out.len(), 8, "the first window");
    (s, now)
}

/// U-Boot on e1000 drops most of a window, and after its own timeout acknowledges again the
/// last block it holds. That repeated ACK, coming long after the window (a quarter of the
/// timeout or more), restarts the window at once, with single blocks (the pacing); a repeat
/// within a round trip of the window, or a second one for the same window, changes nothing.
#[test]
fn repeated_ack_after_the_receivers_timeout_restarts_the_window_once() {
    let (mut s, t0) = server_window_of_8();
    // An immediate copy of ACK 0: nothing.
    assert!(s.deliver(t0 + ms(1), CLIENT, &ack(0)).is_empty());
    // The receiver waited out its timeout (say 100 ms) without the window: go back to block 1.
    let out = s.deliver(t0 + ms(100), CLIENT, &ack(0));
    assert_eq!(decoded(&out), vec![(CLIENT, Pkt::Data { block: 1, len: 512 })]);
    // The restarted window goes out paced, a block at a time.
    let mut now = t0 + ms(100);
    let mut sent = 1;
    while sent < 4 {
        now = s.transfer.poll_timeout().expect("a deadline");
        sent += s.fire(now).len();
    }
    // Once per window: a further repeat does not go back to block 1 again (at most, it lets
    // the paced window go on).
    let out = s.deliver(now + ms(1), CLIENT, &ack(0));
    assert!(
        decoded(&out)
            .iter()
            .all(|(_, p)| p.data_block() == Some(sent as u16 + 1)),
        "{out:?}"
    );
    sent += out.len();
    while sent < 8 {
        now = s.transfer.poll_timeout().expect("a deadline");
        sent += s.fire(now).len();
    }
    assert!(
        now < t0 + ms(200),
        "paced, not waiting for the retransmission timeout: {now:?}"
    );
    let firsts = s.data().iter().filter(|d| d.0 == 1).count();
    assert_eq!(firsts, 2, "block 1: sent, then once again");
    let out = s.deliver(now + ms(10), CLIENT, &ack(8));
    assert!(decoded(&out)
        .iter()
        .all(|(_, p)| p.data_block().is_some_and(|b| b > 8)));
    assert_eq!(s.transfer.stats().retransmissions, 8);
    assert_clean(&s);
}

/// A retransmission our timer made is counted as spurious when the peer's answer comes sooner
/// after it than half the path's smallest round trip: that answer was already on its way.
#[test]
fn spurious_retransmission_is_counted_when_the_answer_was_already_on_its_way() {
    for (answer_after, spurious) in [(ms(5), 1), (ms(30), 0)] {
        let req = request(RequestKind::Read, "file.bin", "octet", &[]);
        let f = [9u8; 3 * 512];
        let (mut s, _) = scripted_server(&req, &f[..], &ServerPolicy::default(), Config::default());
        // DATA 1 at 0, ACK 1 at 20 ms: the round trip is 20 ms. DATA 2 leaves at 20 ms.
        s.deliver(at(ms(20)), CLIENT, &ack(1));
        let deadline = s.transfer.poll_timeout().unwrap();
        assert_eq!(deadline, at(ms(270)), "the 250 ms floor");
        let out = s.fire(deadline);
        assert_eq!(decoded(&out), vec![(CLIENT, Pkt::Data { block: 2, len: 512 })]);
        s.deliver(deadline + answer_after, CLIENT, &ack(2));
        let stats = s.transfer.stats();
        assert_eq!(stats.retransmissions, 1);
        assert_eq!(
            stats.spurious_retransmissions, spurious,
            "answer after {answer_after:?}"
        );
    }
}

/// A driver that sizes its buffer once, from `max_datagram_len` right after creating the
/// transfer (as its documentation says), must be able to send every datagram of the transfer:
/// a client that asks for a larger `blksize` learns it is granted only from the OACK, after the
/// buffer was sized (issue: an upload asking 1468 got `BufferTooSmall { needed: 1472 }`).
#[test]
fn max_datagram_len_covers_the_blksize_a_client_asks_for() {
    let server: std::net::SocketAddr = "192.0.2.1:69".parse().unwrap();
    let tid: std::net::SocketAddr = "192.0.2.1:50001".parse().unwrap();
    for kind in [RequestKind::Write, RequestKind::Read] {
        for blksize in [8u16, 512, 1468, 65464] {
            let content = file(3 * usize::from(blksize) + 1);
            let request = ClientRequest {
                kind,
                filename: b"f.bin",
                mode: TransferMode::Octet,
                options: opts(Some(blksize), None),
            };
            let storage = if kind == RequestKind::Write {
                content.clone()
            } else {
                Vec::new()
            };
            let mut t = Transfer::client(at(ms(0)), server, request, storage, Config::default()).unwrap();
            let mut buf = vec![0u8; t.max_datagram_len()];
            let req = t.poll_transmit(at(ms(0)), &mut buf).expect("the request");
            assert!(req.len <= buf.len());
            // The server grants what was asked.
            let oack = [&[0u8, 6][..], b"blksize\0", blksize.to_string().as_bytes(), b"\0"].concat();
            t.handle_datagram(at(ms(1)), tid, &oack);
            if kind == RequestKind::Read {
                // ACK 0, then the server's first full block.
                let ack0 = t.poll_transmit(at(ms(1)), &mut buf).expect("ACK 0");
                assert_eq!(&buf[..ack0.len], &[0, 4, 0, 0]);
                let mut data = vec![0, 3, 0, 1];
                data.extend_from_slice(&content[..usize::from(blksize)]);
                t.handle_datagram(at(ms(2)), tid, &data);
                let ack1 = t.poll_transmit(at(ms(2)), &mut buf).expect("ACK 1");
                assert_eq!(&buf[..ack1.len], &[0, 4, 0, 1]);
            } else {
                let d1 = t
                    .poll_transmit(at(ms(1)), &mut buf)
                    .unwrap_or_else(|| panic!("DATA 1 at blksize {blksize}: {:?}", t.outcome()));
                assert_eq!(d1.len, 4 + usize::from(blksize), "DATA 1 at blksize {blksize}");
                assert_eq!(&buf[4..d1.len], &content[..usize::from(blksize)]);
            }
            assert!(t.outcome().is_none(), "{kind:?} at {blksize}: {:?}", t.outcome());
        }
    }
}

/// `poll_transmit_batch` writes exactly what repeated `poll_transmit` calls would, grouped by
/// destination: a whole window in one call, and a stray's ERROR 5 in a batch of its own.
#[test]
fn a_window_comes_out_in_one_batch_identical_to_single_transmits() {
    let client: std::net::SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let stray: std::net::SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let content = file(20 * 512 + 100);
    let mut raw = vec![0u8, 1];
    raw.extend_from_slice(b"f.bin\0octet\0windowsize\x008\0");
    let Ok(Packet::Rrq(req)) = Packet::parse(&raw) else {
        panic!("request")
    };
    let policy = ServerPolicy::default();
    let make = || {
        Transfer::server(
            at(ms(0)),
            client,
            RequestKind::Read,
            &req,
            content.clone(),
            &policy,
            Config::default(),
        )
    };
    let (mut single, mut batched) = (make(), make());
    // Drains one transfer datagram by datagram, the other batch by batch; both as (to, bytes).
    type Out = Vec<(std::net::SocketAddr, Vec<u8>)>;
    fn drain_single(t: &mut Transfer<'_, Vec<u8>>, now: Instant) -> Out {
        let mut buf = vec![0u8; t.max_datagram_len()];
        let mut out = Vec::new();
        while let Some(tx) = t.poll_transmit(now, &mut buf) {
            out.push((tx.destination, buf[..tx.len].to_vec()));
        }
        out
    }
    fn drain_batched(t: &mut Transfer<'_, Vec<u8>>, now: Instant, batches: &mut Vec<usize>) -> Out {
        let mut buf = vec![0u8; 64 * t.max_datagram_len()];
        let mut lens = [0usize; 64];
        let mut out = Vec::new();
        while let Some(b) = t.poll_transmit_batch(now, &mut buf, &mut lens) {
            let mut at = 0;
            for &len in &lens[..b.count] {
                out.push((b.destination, buf[at..at + len].to_vec()));
                at += len;
            }
            assert_eq!(at, b.len);
            batches.push(b.count);
        }
        out
    }
    let mut batches = Vec::new();
    // The OACK, alone.
    assert_eq!(
        drain_single(&mut single, at(ms(0))),
        drain_batched(&mut batched, at(ms(0)), &mut batches)
    );
    assert_eq!(batches, [1]);
    // ACK 0 opens the first window: eight blocks in one batch.
    let mut windows = Vec::new();
    for (i, ack) in [0u16, 8, 16].into_iter().enumerate() {
        let now = at(ms(1 + i as u64));
        for t in [&mut single, &mut batched] {
            t.handle_datagram(now, client, &[0, 4, (ack >> 8) as u8, ack as u8]);
            // A stranger butts in: its ERROR 5 goes out in a batch of its own.
            t.handle_datagram(now, stray, &[0, 4, 0, 1]);
        }
        batches.clear();
        let (a, b) = (
            drain_single(&mut single, now),
            drain_batched(&mut batched, now, &mut batches),
        );
        assert_eq!(a, b, "window after ACK {ack}");
        windows.push(batches.clone());
    }
    // The stray's ERROR 5 first (it is owed before data), then the window whole.
    assert_eq!(windows, [vec![1, 8], vec![1, 8], vec![1, 5]]);
}

/// A finished download hands its storage back at once (`dally`, then `into_storage`) and the dally goes on
/// without it: a repeated final DATA is acknowledged again, a stranger gets ERROR 5, and after
/// the dally's deadline nothing more is sent.
#[test]
fn a_finished_download_hands_its_storage_back_and_dallies_without_it() {
    let server: std::net::SocketAddr = "192.0.2.1:69".parse().unwrap();
    let tid: std::net::SocketAddr = "192.0.2.1:50001".parse().unwrap();
    let stray: std::net::SocketAddr = "192.0.2.7:50001".parse().unwrap();
    let content = file(512 + 100);
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"f.bin",
        mode: TransferMode::Octet,
        options: Options::NONE,
    };
    let mut t = Transfer::client(at(ms(0)), server, request, Vec::new(), Config::default()).unwrap();
    let mut buf = vec![0u8; t.max_datagram_len()];
    t.poll_transmit(at(ms(0)), &mut buf).expect("the request");
    let data = |block: u16, payload: &[u8]| [&[0, 3][..], &block.to_be_bytes(), payload].concat();
    t.handle_datagram(at(ms(1)), tid, &data(1, &content[..512]));
    assert_eq!(t.poll_transmit(at(ms(1)), &mut buf).map(|tx| tx.len), Some(4));
    // Still running: no dally yet.
    assert!(t.dally().is_none(), "not finished yet");
    t.handle_datagram(at(ms(2)), tid, &data(2, &content[512..]));
    // Finished, but the final ACK is not out yet.
    assert!(t.dally().is_none(), "final ACK not polled");
    let ack = t.poll_transmit(at(ms(2)), &mut buf).expect("final ACK");
    assert_eq!(&buf[..ack.len], &[0, 4, 0, 2]);
    assert!(t.poll_transmit(at(ms(2)), &mut buf).is_none());
    let deadline = t.poll_timeout().expect("the dally's deadline");
    let mut dally = t.dally().expect("finished download");
    let storage = t.into_storage();
    assert_eq!(storage, content);
    assert_eq!(dally.peer(), tid);
    assert!(!dally.is_finished());
    // The final DATA again: acknowledged again, and the dally lengthened.
    dally.handle_datagram(at(ms(3)), tid, &data(2, &content[512..]));
    let again = dally.poll_transmit(&mut buf).expect("the ACK again");
    assert_eq!((again.destination, &buf[..again.len]), (tid, &[0u8, 4, 0, 2][..]));
    assert!(dally.poll_transmit(&mut buf).is_none());
    assert!(dally.poll_timeout().unwrap() >= deadline);
    // An earlier block or another packet from the peer: nothing.
    dally.handle_datagram(at(ms(4)), tid, &data(1, &content[..512]));
    assert!(dally.poll_transmit(&mut buf).is_none());
    // A stranger: ERROR 5, to it.
    dally.handle_datagram(at(ms(4)), stray, &data(2, b"x"));
    let e = dally.poll_transmit(&mut buf).expect("ERROR 5");
    assert_eq!((e.destination, &buf[..4]), (stray, &[0u8, 5, 0, 5][..]));
    // The dally ends by itself; a repeat after that is not answered.
    let end = dally.poll_timeout().unwrap();
    dally.handle_timeout(end);
    assert!(dally.is_finished());
    assert_eq!(dally.poll_timeout(), None);
    dally.handle_datagram(end, tid, &data(2, &content[512..]));
    assert!(dally.poll_transmit(&mut buf).is_none());
    // An upload (the sender) has no dally to split off.
    let up = ClientRequest {
        kind: RequestKind::Write,
        filename: b"f.bin",
        mode: TransferMode::Octet,
        options: Options::NONE,
    };
    let t = Transfer::client(at(ms(0)), server, up, content.clone(), Config::default()).unwrap();
    assert!(t.dally().is_none());
}
