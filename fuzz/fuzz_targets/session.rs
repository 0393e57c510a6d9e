//! `session`: a client and a server `Transfer` exchanging a real file, with arbitrary network
//! faults and arbitrary datagrams interleaved with the real exchange, then an honest network.
//!
//! The input picks the transfer (read or write, octet or netascii, options, a file of up to
//! 3000 bytes) and a list of steps: deliver, drop, duplicate or corrupt a datagram in flight
//! (in any order), let time pass, inject a datagram from a stranger, or inject one from the
//! peer's own address (which TFTP cannot tell from the peer). After the steps the network turns
//! honest: everything in flight is delivered in order and timers fire when nothing is.
//!
//! Invariants:
//! * nothing panics; every datagram sent is exactly as long as its packet;
//! * the sender's DATA is always the file: block `n` carries exactly the wire bytes at
//!   `(n - 1) * blksize` (never anything past the end of the file);
//! * the receiver writes at monotonic, contiguous offsets; unless datagrams were forged or
//!   corrupted, what it wrote is always a prefix of the file, and the whole file when it
//!   reports success (a stranger on the server's host answering before the server does counts
//!   as forged: RFC 1350 makes the first answer from the server's address the server's TID);
//! * each side reports at most one final event;
//! * once the input stops, both sides end (success or failure) within a bound of steps that
//!   depends only on the file's block count and the retry cap: retries are bounded;
//! * when the steps only reorder and duplicate datagrams, both sides succeed.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tftp_proto::engine::{ClientRequest, Config, Event, ServerPolicy, Transfer, TransferMode};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{Instant, NetasciiEncoder, Options, Packet, RequestKind};

const CLIENT: &str = "10.0.0.1:40000";
const SERVER_WK: &str = "10.0.0.2:69";
const SERVER_TID: &str = "10.0.0.2:50000";
const STRANGERS: [&str; 3] = ["10.0.0.2:50001", "10.0.0.1:40001", "10.0.0.9:1234"];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Debug, Arbitrary)]
struct Input {
    write: bool,
    netascii: bool,
    blksize: Option<u16>,
    windowsize: Option<u8>,
    tsize: bool,
    rollover: Option<bool>,
    timeout: Option<u8>,
    file_len: u16,
    file_seed: u8,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// Delivers datagram `index` (modulo what is in flight) of one direction.
    Deliver {
        to_client: bool,
        index: u8,
    },
    /// Delivers everything in flight, in order.
    Flush,
    Drop {
        to_client: bool,
        index: u8,
    },
    Duplicate {
        to_client: bool,
        index: u8,
    },
    /// Flips bits of a datagram in flight (UDP would usually drop it: counts as forged).
    Corrupt {
        to_client: bool,
        index: u8,
        at: u16,
        xor: u8,
    },
    /// Lets time pass and fires the timers that are due.
    Wait {
        millis: u16,
    },
    /// A datagram from a stranger (another port or host).
    Stranger {
        to_client: bool,
        who: u8,
        datagram: Forged,
    },
    /// A datagram carrying the peer's own address.
    Spoof {
        to_client: bool,
        datagram: Forged,
    },
}

#[derive(Debug, Arbitrary)]
enum Forged {
    Raw(Vec<u8>),
    Data {
        block: u16,
        len: u16,
        fill: u8,
    },
    Ack(u16),
    Error {
        code: u16,
        text: Vec<u8>,
    },
    Oack {
        blksize: Option<u16>,
        windowsize: Option<u16>,
        tsize: Option<u64>,
        extra: bool,
    },
    Request {
        write: bool,
        padded: bool,
    },
}

impl Forged {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Forged::Raw(b) => b.clone(),
            Forged::Data { block, len, fill } => {
                let mut v = vec![0, 3];
                v.extend_from_slice(&block.to_be_bytes());
                v.resize(4 + usize::from(*len % 1100), *fill);
                v
            }
            Forged::Ack(b) => {
                let mut v = vec![0, 4];
                v.extend_from_slice(&b.to_be_bytes());
                v
            }
            Forged::Error { code, text } => {
                let mut v = vec![0, 5];
                v.extend_from_slice(&code.to_be_bytes());
                v.extend_from_slice(text);
                v.push(0);
                v
            }
            Forged::Oack {
                blksize,
                windowsize,
                tsize,
                extra,
            } => {
                let mut v = vec![0, 6];
                let mut put = |n: &str, val: String| {
                    v.extend_from_slice(n.as_bytes());
                    v.push(0);
                    v.extend_from_slice(val.as_bytes());
                    v.push(0);
                };
                if let Some(b) = blksize {
                    put("blksize", b.to_string());
                }
                if let Some(w) = windowsize {
                    put("windowsize", w.to_string());
                }
                if let Some(t) = tsize {
                    put("tsize", t.to_string());
                }
                if *extra {
                    put("xblksizex", "8".into());
                }
                v
            }
            Forged::Request { write, padded } => {
                let mut v = vec![0, if *write { 2 } else { 1 }];
                v.extend_from_slice(b"file.bin\0octet\0");
                if *padded {
                    v.extend_from_slice(b"blksize\x008\0\0\0");
                }
                v
            }
        }
    }
}

/// Receiving storage: asserts contiguous, monotonic writes and keeps the bytes.
#[derive(Default)]
struct Checked {
    data: Vec<u8>,
    finished: bool,
}

impl Storage for Checked {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        assert_eq!(
            offset,
            self.data.len() as u64,
            "write not at the end of what was written"
        );
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        assert!(!self.finished, "finish called twice");
        self.finished = true;
        Ok(())
    }
}

/// One end: its transfer, its storage kind, and what it reported.
enum Side {
    Sender(Transfer<'static, Vec<u8>>),
    Receiver(Transfer<'static, Checked>),
}

macro_rules! with {
    ($side:expr, $t:ident => $e:expr) => {
        match $side {
            Side::Sender($t) => $e,
            Side::Receiver($t) => $e,
        }
    };
}

struct End {
    side: Side,
    addr: SocketAddr,
    final_events: u32,
}

struct World {
    now: Instant,
    client: End,
    server: Option<End>,
    /// In flight: (from, to, bytes).
    to_server: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    to_client: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// The file as the sender reads it, and its wire form.
    file: Vec<u8>,
    wire: Vec<u8>,
    write: bool,
    netascii: bool,
    /// Forged or corrupted datagrams were injected: content invariants are off.
    tainted: bool,
    buf: Vec<u8>,
}

fn config() -> Config {
    Config {
        initial_rto: Duration::from_millis(200),
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_secs(2),
        max_retries: 4,
        total_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(10),
        max_write_size: None,
        max_dally: Duration::from_secs(1),
    }
}

impl World {
    /// Drains what `end` sends and its events, checking every datagram.
    fn drain(&mut self, client: bool) {
        let now = self.now;
        let Some(end) = (if client {
            Some(&mut self.client)
        } else {
            self.server.as_mut()
        }) else {
            return;
        };
        while let Some(tx) = with!(&mut end.side, t => t.poll_transmit(now, &mut self.buf)) {
            let d = self.buf[..tx.len].to_vec();
            let p = Packet::parse(&d).expect("a side sent an unparsable datagram");
            let exact = if matches!(p, Packet::Ack { .. }) {
                4
            } else {
                p.encoded_len()
            };
            assert_eq!(exact, d.len(), "sent length != packet length");
            if let (Packet::Data { block, payload }, Side::Sender(t)) = (p, &end.side) {
                if tx.destination == t.peer() {
                    let bs = usize::from(t.params().blksize);
                    assert!(payload.len() <= bs, "DATA longer than blksize");
                    let off = (usize::from(block).max(1) - 1) * bs;
                    assert!(
                        block >= 1 && off <= self.wire.len(),
                        "DATA {block} beyond the file"
                    );
                    let want = &self.wire[off..(off + bs).min(self.wire.len())];
                    assert_eq!(payload, want, "DATA {block} is not the file's bytes");
                }
            }
            let item = (end.addr, tx.destination, d);
            if client {
                self.to_server.push(item);
            } else {
                self.to_client.push(item);
            }
        }
        while let Some(ev) = with!(&mut end.side, t => t.poll_event()) {
            if matches!(
                ev,
                Event::Finished { .. } | Event::Failed(_) | Event::OptionsDeclined
            ) {
                end.final_events += 1;
                assert!(end.final_events <= 1, "two final events");
            }
        }
        if let Side::Receiver(t) = &end.side {
            let got = &t.storage().data;
            if !self.tainted {
                assert!(
                    got.len() <= self.file.len() && self.file[..got.len()] == got[..],
                    "not a prefix"
                );
                if matches!(t.outcome(), Some(Ok(_))) {
                    assert_eq!(got.len(), self.file.len(), "finished without the whole file");
                }
            }
        }
    }

    /// Delivers one datagram to whoever owns `to`.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, d: &[u8], real: bool) {
        let now = self.now;
        if to == self.client.addr {
            with!(&mut self.client.side, t => t.handle_datagram(now, from, d));
            self.drain(true);
            return;
        }
        if to == addr(SERVER_WK) {
            // The listening port: the client's first request creates the server session; any
            // other datagram there is the table's business, not the session's.
            if self.server.is_none() && real {
                let (kind, req) = match Packet::parse(d) {
                    Ok(Packet::Rrq(r)) => (RequestKind::Read, r),
                    Ok(Packet::Wrq(r)) => (RequestKind::Write, r),
                    _ => return,
                };
                let side = if kind == RequestKind::Read {
                    Side::Sender(Transfer::server(
                        now,
                        from,
                        kind,
                        &req,
                        self.file.clone(),
                        &ServerPolicy::default(),
                        config(),
                    ))
                } else {
                    Side::Receiver(Transfer::server(
                        now,
                        from,
                        kind,
                        &req,
                        Checked::default(),
                        &ServerPolicy::default(),
                        config(),
                    ))
                };
                self.server = Some(End {
                    side,
                    addr: addr(SERVER_TID),
                    final_events: 0,
                });
                self.drain(false);
            }
            return;
        }
        if let Some(s) = self.server.as_mut() {
            if to == s.addr {
                with!(&mut s.side, t => t.handle_datagram(now, from, d));
                self.drain(false);
            }
        }
    }

    fn queue(&mut self, to_client: bool) -> &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        if to_client {
            &mut self.to_client
        } else {
            &mut self.to_server
        }
    }

    fn take(&mut self, to_client: bool, index: u8) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let q = self.queue(to_client);
        if q.is_empty() {
            return None;
        }
        let i = usize::from(index) % q.len();
        Some(q.remove(i))
    }

    fn fire_due(&mut self) {
        let now = self.now;
        with!(&mut self.client.side, t => t.handle_timeout(now));
        self.drain(true);
        if let Some(s) = self.server.as_mut() {
            with!(&mut s.side, t => t.handle_timeout(now));
            self.drain(false);
        }
    }

    fn finished(&self) -> bool {
        with!(&self.client.side, t => t.is_finished())
            && self
                .server
                .as_ref()
                .is_none_or(|s| with!(&s.side, t => t.is_finished()))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let c = with!(&self.client.side, t => t.poll_timeout());
        let s = self
            .server
            .as_ref()
            .and_then(|s| with!(&s.side, t => t.poll_timeout()));
        [c, s].into_iter().flatten().min()
    }
}

fn text(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                _ => (x >> 8) as u8,
            }
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let file = text(usize::from(input.file_len % 3000), input.file_seed);
    let wire = if input.netascii {
        let mut enc = NetasciiEncoder::new();
        let mut out = vec![0u8; file.len() * 2 + 2];
        let (used, mut n) = enc.encode(&file, &mut out);
        assert_eq!(used, file.len());
        n += enc.flush(&mut out[n..]);
        out.truncate(n);
        out
    } else {
        file.clone()
    };
    let options = Options {
        blksize: input.blksize.map(|b| 8 + b % 1017),
        windowsize: input.windowsize.map(|w| 1 + u16::from(w % 8)),
        tsize: input.tsize.then_some(0),
        rollover: input.rollover.map(u8::from),
        timeout: input.timeout.map(|t| 1 + t % 3),
    };
    let kind = if input.write {
        RequestKind::Write
    } else {
        RequestKind::Read
    };
    let request = ClientRequest {
        kind,
        filename: b"file.bin",
        mode: if input.netascii {
            TransferMode::Netascii
        } else {
            TransferMode::Octet
        },
        options,
    };
    let side = if input.write {
        match Transfer::client(Instant::ZERO, addr(SERVER_WK), request, file.clone(), config()) {
            Ok(t) => Side::Sender(t),
            Err(_) => return,
        }
    } else {
        match Transfer::client(
            Instant::ZERO,
            addr(SERVER_WK),
            request,
            Checked::default(),
            config(),
        ) {
            Ok(t) => Side::Receiver(t),
            Err(_) => return,
        }
    };
    let mut w = World {
        now: Instant::ZERO,
        client: End {
            side,
            addr: addr(CLIENT),
            final_events: 0,
        },
        server: None,
        to_server: Vec::new(),
        to_client: Vec::new(),
        file,
        wire,
        write: input.write,
        netascii: input.netascii,
        tainted: false,
        buf: vec![0u8; 4 + 65464],
    };
    w.drain(true);

    // Only reordering and duplication: the transfer must then succeed on both ends.
    let mut lossless = true;
    for step in input.steps.iter().take(2000) {
        if !matches!(step, Step::Deliver { .. } | Step::Flush | Step::Duplicate { .. }) {
            lossless = false;
        }
        match step {
            Step::Deliver { to_client, index } => {
                if let Some((from, to, d)) = w.take(*to_client, *index) {
                    w.deliver(from, to, &d, true);
                }
            }
            Step::Flush => {
                for to_client in [false, true] {
                    for (from, to, d) in std::mem::take(w.queue(to_client)) {
                        w.deliver(from, to, &d, true);
                    }
                }
            }
            Step::Drop { to_client, index } => {
                let _ = w.take(*to_client, *index);
            }
            Step::Duplicate { to_client, index } => {
                let q = w.queue(*to_client);
                if !q.is_empty() {
                    let i = usize::from(*index) % q.len();
                    let copy = q[i].clone();
                    q.push(copy);
                }
            }
            Step::Corrupt {
                to_client,
                index,
                at,
                xor,
            } => {
                let q = w.queue(*to_client);
                if !q.is_empty() && *xor != 0 {
                    let i = usize::from(*index) % q.len();
                    let d = &mut q[i].2;
                    if !d.is_empty() {
                        let j = usize::from(*at) % d.len();
                        d[j] ^= xor;
                        w.tainted = true;
                    }
                }
            }
            Step::Wait { millis } => {
                w.now += Duration::from_millis(u64::from(*millis % 5000));
                w.fire_due();
            }
            Step::Stranger {
                to_client,
                who,
                datagram,
            } => {
                let from = addr(STRANGERS[usize::from(*who) % STRANGERS.len()]);
                // Before its first answer the client takes any port of the server's address for
                // the server's new TID (RFC 1350): such a "stranger" is a forgery it cannot tell.
                let unlocked = with!(&w.client.side, t => t.peer()) == addr(SERVER_WK);
                if *to_client && unlocked && from.ip() == addr(SERVER_WK).ip() {
                    w.tainted = true;
                }
                let to = if *to_client {
                    addr(CLIENT)
                } else {
                    addr(SERVER_TID)
                };
                w.deliver(from, to, &datagram.bytes(), false);
            }
            Step::Spoof { to_client, datagram } => {
                w.tainted = true;
                let (from, to) = if *to_client {
                    (addr(SERVER_TID), addr(CLIENT))
                } else {
                    (addr(CLIENT), addr(SERVER_TID))
                };
                w.deliver(from, to, &datagram.bytes(), false);
            }
        }
    }

    // The input has stopped: an honest network from here. Both ends must be done within a
    // bound set by the block count and the retry cap: at worst every block waits out a full
    // retry cycle (a forged OACK can leave the two ends with different window sizes, so that
    // each block is acknowledged only when the receiver's timer fires), never more.
    let blocks = w.wire.len() / 8 + 2;
    let cycle = 2 * (usize::from(config().max_retries) + 3);
    let bound = (blocks + 4) * cycle + 64;
    let mut steps = 0;
    while !w.finished() {
        steps += 1;
        assert!(steps <= bound, "no end after {bound} honest steps: livelock?");
        if w.to_server.is_empty() && w.to_client.is_empty() {
            let Some(t) = w.next_deadline() else { break };
            w.now = w.now.max(t);
            w.fire_due();
            continue;
        }
        for to_client in [false, true] {
            for (from, to, d) in std::mem::take(w.queue(to_client)) {
                w.deliver(from, to, &d, true);
            }
        }
    }
    let _ = (w.write, w.netascii);
    if lossless {
        let c = with!(&w.client.side, t => t.outcome().map(|r| r.map_err(Clone::clone)));
        assert!(
            matches!(c, Some(Ok(_))),
            "client failed on a lossless network: {c:?}"
        );
        let s = w
            .server
            .as_ref()
            .and_then(|s| with!(&s.side, t => t.outcome().map(|r| r.map_err(Clone::clone))));
        assert!(
            matches!(s, Some(Ok(_))),
            "server failed on a lossless network: {s:?}"
        );
    }
    if !w.tainted {
        for end in [Some(&w.client), w.server.as_ref()].into_iter().flatten() {
            if let Side::Receiver(t) = &end.side {
                if matches!(t.outcome(), Some(Ok(_))) {
                    assert!(t.storage().data == w.file, "success with different content");
                    assert!(t.storage().finished, "success without finish");
                }
            }
        }
    }
});
