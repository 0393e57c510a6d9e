//! Windowed sends against a slow receiver with a small socket buffer (RFC 7440 §4: a sender
//! must adapt): the sender paces its bursts after a loss instead of losing most of every
//! window, and a windowed transfer is not slower than the same one in lock-step.
//!
//! The model, in simulated microseconds: the sender puts one DATA on the wire every `send_us`;
//! it reaches the receiver `latency_us` later and enters its socket queue, or is dropped when
//! the queue is full; the receiver takes one datagram off the queue every `per_block_us`; its
//! ACKs reach the sender `latency_us` later. Deterministic, no real time.
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

use std::collections::VecDeque;
use std::net::SocketAddr;

use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferMode};
use tftp_proto::{Instant, Options, Packet, RequestKind};

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const SERVER_WK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 69);
const SERVER_TID: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

#[derive(Debug, Clone, Copy)]
struct Receiver {
    /// Time the sender takes to put one datagram on the wire.
    send_us: u64,
    /// Datagrams the receiver's socket buffer holds.
    queue: usize,
    /// Time the receiver spends on each datagram.
    per_block_us: u64,
    /// One-way delay.
    latency_us: u64,
    /// After taking this many datagrams off its queue, the receiver stops for this long (a
    /// process descheduled, a boot loader busy elsewhere); `(0, 0)`: never.
    pause: (u64, u64),
}

struct Run {
    received: Vec<u8>,
    data_sent: u64,
    dropped: u64,
    /// When the receiver had the whole file.
    micros: u64,
    server_timeouts: u64,
    server_stats: tftp_proto::engine::Stats,
    /// ACKs the client sent again on its own timer.
    client_retransmissions: u64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, {} DATA sent, {} dropped, {} µs, {} server timeouts",
            self.received.len(),
            self.data_sent,
            self.dropped,
            self.micros,
            self.server_timeouts
        )
    }
}

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(7919) >> 5) as u8).collect()
}

fn download(file: &[u8], options: Options, rx: Receiver) -> Run {
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"f",
        mode: TransferMode::Octet,
        options,
    };
    let config = Config::default();
    let mut client = Transfer::client(Instant::ZERO, SERVER_WK, request, Vec::new(), config).unwrap();
    let mut server: Option<Transfer<'_, &[u8]>> = None;
    let mut buf = vec![0u8; 70_000];
    let mut to_server: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut to_client: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut wire_free = 0u64;
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut busy_until = 0u64;
    let mut taken = 0u64;
    let mut complete_at = None;
    let (mut data_sent, mut dropped) = (0u64, 0u64);
    let mut now = 0u64;
    let mut same_time = 0;
    for _ in 0..50_000_000u64 {
        let t = Instant::from_micros(now);
        // ACKs (and the request) arriving at the server.
        while to_server.front().is_some_and(|(at, _)| *at <= now) {
            let (_, d) = to_server.pop_front().unwrap();
            match &mut server {
                Some(s) => s.handle_datagram(t, CLIENT, &d),
                None => {
                    let Ok(Packet::Rrq(req)) = Packet::parse(&d) else {
                        panic!("first datagram is not an RRQ")
                    };
                    server = Some(Transfer::server(
                        t,
                        CLIENT,
                        RequestKind::Read,
                        &req,
                        file,
                        &ServerPolicy::default(),
                        config,
                    ));
                }
            }
        }
        if let Some(s) = &mut server {
            if s.poll_timeout().is_some_and(|d| d <= t) {
                s.handle_timeout(t);
            }
            while let Some(tx) = s.poll_transmit(t, &mut buf) {
                if buf[1] == 3 {
                    data_sent += 1;
                }
                wire_free = wire_free.max(now) + rx.send_us;
                to_client.push_back((wire_free + rx.latency_us, buf[..tx.len].to_vec()));
            }
            while s.poll_event().is_some() {}
        }
        while to_client.front().is_some_and(|(at, _)| *at <= now) {
            let (_, d) = to_client.pop_front().unwrap();
            if queue.len() < rx.queue {
                queue.push_back(d);
            } else {
                dropped += 1;
            }
        }
        if busy_until <= now {
            if let Some(d) = queue.pop_front() {
                client.handle_datagram(t, SERVER_TID, &d);
                busy_until = now + rx.per_block_us;
                taken += 1;
                if taken == rx.pause.0 {
                    busy_until += rx.pause.1;
                }
            }
        }
        if client.poll_timeout().is_some_and(|d| d <= t) {
            client.handle_timeout(t);
        }
        while let Some(tx) = client.poll_transmit(t, &mut buf) {
            to_server.push_back((now + rx.latency_us, buf[..tx.len].to_vec()));
        }
        while client.poll_event().is_some() {}
        if complete_at.is_none() && client.outcome().is_some() {
            complete_at = Some(now);
        }
        let server_done = server.as_ref().is_some_and(|s| s.is_finished());
        if client.is_finished() && server_done {
            break;
        }
        // The next moment something happens.
        let mut next = u64::MAX;
        for (at, _) in to_server.front().into_iter().chain(to_client.front()) {
            next = next.min(*at);
        }
        if !queue.is_empty() {
            next = next.min(busy_until.max(now));
        }
        for d in [
            client.poll_timeout(),
            server.as_ref().and_then(|s| s.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(d.as_micros());
        }
        assert!(next != u64::MAX, "nothing left to happen, yet not finished");
        if next <= now {
            same_time += 1;
            assert!(
                same_time < 1000,
                "no progress at {now} µs: a timer that never clears"
            );
        } else {
            same_time = 0;
        }
        now = next.max(now);
    }
    let server = server.expect("the server started");
    assert!(
        client.is_finished() && server.is_finished(),
        "the transfer never ended"
    );
    assert_eq!(client.outcome(), Some(Ok(file.len() as u64)));
    assert_eq!(server.outcome(), Some(Ok(file.len() as u64)));
    let client_retransmissions = client.stats().retransmissions;
    Run {
        received: client.into_storage(),
        data_sent,
        dropped,
        micros: complete_at.expect("completed"),
        server_timeouts: server.stats().timeouts,
        server_stats: server.stats(),
        client_retransmissions,
    }
}

fn opts(blksize: u16, windowsize: u16) -> Options {
    Options {
        blksize: Some(blksize),
        windowsize: Some(windowsize),
        ..Options::NONE
    }
}

/// A LAN-like path (one-way 30 µs, 2 µs per datagram on the wire) to a receiver that needs
/// 20 µs per block and buffers 4 datagrams.
const SLOW_SMALL: Receiver = Receiver {
    send_us: 2,
    queue: 4,
    per_block_us: 20,
    latency_us: 30,
    pause: (0, 0),
};

#[test]
fn bursts_shrink_to_what_a_small_buffer_holds() {
    let f = file(2 << 20);
    let blocks = (f.len() / 1024 + 1) as u64;
    let run = download(&f, opts(1024, 32), SLOW_SMALL);
    assert!(run.received == f, "byte-identical");
    let resent = run.data_sent - blocks;
    // Unpaced, most of every window would be lost, every window: several sends per block.
    // Paced, a loss now and then costs the few blocks in flight behind it.
    assert!(
        resent * 5 <= blocks,
        "at most 20 % of the blocks sent again: {resent} of {blocks} ({run:?})"
    );
    // The receiver cannot take more than a block per 20 µs: within 75 % of that.
    let floor = blocks * SLOW_SMALL.per_block_us;
    assert!(
        run.micros * 3 <= floor * 4,
        "{run:?}: at least 75 % of the receiver's pace"
    );
    assert_eq!(run.server_timeouts, 0, "losses are recovered without a timeout");
}

#[test]
fn windowed_is_not_slower_than_lockstep_against_a_small_buffer() {
    let f = file(1 << 20);
    let lockstep = download(&f, opts(1024, 1), SLOW_SMALL);
    let windowed = download(&f, opts(1024, 32), SLOW_SMALL);
    assert!(windowed.received == f && lockstep.received == f);
    assert_eq!(lockstep.dropped, 0);
    assert!(
        windowed.micros <= lockstep.micros,
        "windowsize 32 took {} µs, windowsize 1 {} µs",
        windowed.micros,
        lockstep.micros
    );
}

#[test]
fn a_buffer_that_holds_the_window_is_never_paced() {
    let f = file(1 << 20);
    let blocks = (f.len() / 1024 + 1) as u64;
    let rx = Receiver {
        queue: 64,
        ..SLOW_SMALL
    };
    let run = download(&f, opts(1024, 32), rx);
    assert!(run.received == f);
    assert_eq!(run.data_sent, blocks, "no block sent twice");
    assert_eq!(run.dropped, 0);
}

// ---- retransmission that fits the receiver ---------------------------------------------------

/// A receiver that holds one datagram while it works on another and drops the rest of every
/// burst (U-Boot's e1000 driver gives the card one receive buffer at a time), 100 µs each way,
/// 40 µs per block. It re-acknowledges on its own timer, as RFC 7440 asks. A windowsize-8
/// download completes, at no less than lock-step speed: the sender goes back to the receiver's
/// last block when it re-acknowledges it after its timeout, and its bursts shrink to what the
/// receiver takes, then grow back as whole windows arrive.
#[test]
fn one_datagram_receiver_completes_windowsize_8_at_lock_step_speed_or_better() {
    let rx = Receiver {
        send_us: 2,
        queue: 1,
        per_block_us: 40,
        latency_us: 100,
        pause: (0, 0),
    };
    let f = file(4 << 20);
    let lockstep = download(&f, opts(1024, 1), rx);
    let windowed = download(&f, opts(1024, 8), rx);
    assert!(windowed.received == f && lockstep.received == f);
    assert_eq!(lockstep.dropped, 0, "{lockstep:?}");
    assert!(
        windowed.micros <= lockstep.micros,
        "windowsize 8 took {} µs, windowsize 1 {} µs ({windowed:?})",
        windowed.micros,
        lockstep.micros
    );
    println!("one-datagram receiver, 4 MiB: windowsize 8 {windowed:?}; lock-step {lockstep:?}");
}

/// A receiver that stops for 200 ms in the middle of a window (its socket buffer holds what
/// keeps coming) is live, not lossy: it gets no block twice, in lock-step or windowed, and
/// neither side retransmits anything (the retransmission timeout's floor is above such pauses,
/// and so is the tail-loss probe's).
#[test]
fn receiver_pausing_200_ms_mid_window_gets_no_duplicates() {
    let f = file(1 << 20);
    let blocks = (f.len() / 1024 + 1) as u64;
    for windowsize in [1u16, 4, 16] {
        for pause_after in [5u64, 100, 517] {
            let rx = Receiver {
                send_us: 2,
                queue: 64,
                per_block_us: 20,
                latency_us: 30,
                pause: (pause_after, 200_000),
            };
            let run = download(&f, opts(1024, windowsize), rx);
            let what = format!("windowsize {windowsize}, pause after {pause_after}: {run:?}");
            assert!(run.received == f, "{what}");
            assert_eq!(run.data_sent, blocks, "no block sent twice: {what}");
            assert_eq!(run.server_stats.retransmissions, 0, "{what}");
            assert_eq!(run.client_retransmissions, 0, "{what}");
        }
    }
}
