//! `server_table`: a server table, over a fixed array of 8 slots or a growable `Vec` (the
//! input's first choice), fed arbitrary datagrams from arbitrary addresses, on listening
//! addresses and on sessions' own sockets (by handle, stale handles included), with arbitrary
//! accept and refuse decisions, clock steps, session limits, displacements and aborts.
//!
//! Addresses come from small pools (a listening address, session TIDs, a broadcast and a
//! multicast address, IPv6, peers including source port 0) so that datagrams meet sessions.
//! Datagrams are arbitrary bytes or built from templates (requests with options, DATA, ACK,
//! ERROR, OACK) so that sessions make progress.
//!
//! Invariants: nothing panics; the table's own structures match its sessions after every
//! operation (`debug_check`: peer index, counts, deadline heap); `len()` never exceeds the
//! session limit at an accept (8 slots for the array); a request refused below the limit
//! found every slot held by a finished session not yet collected, and one refused at the limit
//! found no session to displace (or no slot for it); every datagram emitted is exactly as long as its packet and comes
//! from the local address of a session or of a datagram received; every accepted session is
//! reported by `poll_finished` exactly once (at the end everything is aborted and drained, and
//! the table must be empty); nothing is ever sent to port 0.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tftp_proto::engine::{Config, ServerPolicy};
use tftp_proto::server::{ArrayTable, Datagram, ServerTable, SessionHandle, SlotStorage, VecTable};
use tftp_proto::{ErrorCode, Instant, Packet};

const LOCALS: [&str; 6] = [
    "10.0.0.1:69",
    "10.0.0.1:50000",
    "10.0.0.1:50001",
    "255.255.255.255:69",
    "224.0.0.5:69",
    "[fd00::1]:69",
];
const PEERS: [&str; 6] = [
    "10.0.0.2:40000",
    "10.0.0.2:40001",
    "10.0.0.3:40000",
    "10.0.0.2:0",
    "[fd00::2]:40000",
    "10.0.0.1:50000",
];
const TIDS: [&str; 4] = [
    "10.0.0.1:50000",
    "10.0.0.1:50001",
    "10.0.0.1:50002",
    "[fd00::1]:50000",
];

static FILES: [&[u8]; 4] = [b"", b"short file", &[7u8; 512], &[9u8; 3000]];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Debug, Arbitrary)]
struct Input {
    growable: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A datagram on a session's own socket, routed by one of the handles handed out so far.
    SessionDatagram {
        handle: u8,
        from: u8,
        bytes: Bytes,
    },
    /// Displace the oldest unanswered session (a driver with a budget outside the table).
    Displace,
    /// Abort one session by handle.
    Abort {
        handle: u8,
    },
    Datagram {
        local: u8,
        from: u8,
        listening: bool,
        bytes: Bytes,
        decision: Decision,
    },
    Wait {
        millis: u16,
    },
    Transmit,
    /// The idle turn a driver gives the sessions' storage after sending.
    Idle,
    Finished,
    Limit(u8),
    AbortAll,
}

#[derive(Debug, Arbitrary)]
enum Decision {
    Accept {
        file: u8,
        tid: u8,
        single_port: bool,
    },
    AcceptWith {
        file: u8,
        tid: u8,
        max_blksize: u16,
        max_windowsize: u16,
        max_write: Option<u32>,
    },
    Refuse {
        code: u16,
    },
    Ignore,
}

#[derive(Debug, Arbitrary)]
enum Bytes {
    Raw(Vec<u8>),
    Request {
        write: bool,
        name: u8,
        mode: u8,
        blksize: Option<u16>,
        windowsize: Option<u16>,
        tsize: bool,
    },
    Data {
        block: u16,
        len: u16,
    },
    Ack(u16),
    Error(u16),
    Oack,
}

impl Bytes {
    fn build(&self) -> Vec<u8> {
        match self {
            Bytes::Raw(b) => b.clone(),
            Bytes::Request {
                write,
                name,
                mode,
                blksize,
                windowsize,
                tsize,
            } => {
                let mut v = vec![0, if *write { 2 } else { 1 }];
                v.extend_from_slice(format!("f{}", name % 4).as_bytes());
                v.push(0);
                v.extend_from_slice([&b"octet"[..], b"NETASCII", b"mail", b"x"][usize::from(mode % 4)]);
                v.push(0);
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
                if *tsize {
                    put("tsize", "0".into());
                }
                v
            }
            Bytes::Data { block, len } => {
                let mut v = vec![0, 3];
                v.extend_from_slice(&block.to_be_bytes());
                v.resize(4 + usize::from(len % 1100), 0x55);
                v
            }
            Bytes::Ack(b) => {
                let mut v = vec![0, 4];
                v.extend_from_slice(&b.to_be_bytes());
                v
            }
            Bytes::Error(c) => {
                let mut v = vec![0, 5];
                v.extend_from_slice(&c.to_be_bytes());
                v.extend_from_slice(b"err\0");
                v
            }
            Bytes::Oack => b"\x00\x06blksize\x00512\x00".to_vec(),
        }
    }
}

fn config() -> Config {
    Config {
        initial_rto: Duration::from_millis(100),
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_secs(1),
        max_retries: 3,
        total_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(5),
        max_write_size: None,
        max_dally: Duration::from_millis(500),
    }
}

struct Harness<T: SlotStorage<&'static [u8]>> {
    table: ServerTable<&'static [u8], T>,
    /// Most slots the storage can have (8 for the array).
    slots: usize,
    /// Every handle handed out, stale ones included.
    handles: Vec<SessionHandle>,
    now: Instant,
    buf: Vec<u8>,
    limit: usize,
    accepted: u64,
    reported: u64,
    /// Live sessions by TID, to check reports against.
    tids: BTreeMap<SocketAddr, u64>,
    /// Local addresses datagrams arrived on or sessions were given: the only ones to send from.
    locals: BTreeSet<SocketAddr>,
}

impl<T: SlotStorage<&'static [u8]>> Harness<T> {
    fn transmit(&mut self) {
        for _ in 0..10_000 {
            let Some(tx) = self.table.poll_transmit(self.now, &mut self.buf) else {
                return;
            };
            assert!(tx.len <= self.buf.len());
            let d = &self.buf[..tx.len];
            let p = Packet::parse(d).expect("the table sent an unparsable datagram");
            let exact = if matches!(p, Packet::Ack { .. }) {
                4
            } else {
                p.encoded_len()
            };
            assert_eq!(exact, tx.len, "sent length != packet length");
            assert_ne!(tx.destination.port(), 0, "sent to port 0");
            assert!(
                self.locals.contains(&tx.local),
                "sent from {} (never used)",
                tx.local
            );
        }
        panic!("poll_transmit never returned None");
    }

    fn finished(&mut self) {
        while let Some(r) = self.table.poll_finished(self.now) {
            self.reported += 1;
            assert!(self.reported <= self.accepted, "more reports than sessions");
            let n = self.tids.get_mut(&r.local).expect("a report for an unknown TID");
            assert!(*n > 0, "a session reported twice");
            *n -= 1;
        }
    }
}

fuzz_target!(|input: Input| {
    if input.growable {
        let mut table: VecTable<&'static [u8]> = ServerTable::growable(ServerPolicy::default(), config());
        table.set_session_limit(8);
        run(table, usize::MAX, &input.ops);
    } else {
        let table: ArrayTable<&'static [u8], 8> = ServerTable::new(ServerPolicy::default(), config());
        run(table, 8, &input.ops);
    }
});

fn run<T: SlotStorage<&'static [u8]>>(table: ServerTable<&'static [u8], T>, slots: usize, ops: &[Op]) {
    let mut h = Harness {
        table,
        slots,
        handles: Vec::new(),
        now: Instant::ZERO,
        buf: vec![0u8; 4 + 65464],
        limit: 8,
        accepted: 0,
        reported: 0,
        tids: BTreeMap::new(),
        locals: BTreeSet::new(),
    };
    for op in ops.iter().take(500) {
        match op {
            Op::Datagram {
                local,
                from,
                listening,
                bytes,
                decision,
            } => {
                let local = addr(LOCALS[usize::from(*local) % LOCALS.len()]);
                let from = addr(PEERS[usize::from(*from) % PEERS.len()]);
                let d = bytes.build();
                let now = h.now;
                h.locals.insert(local);
                if let Datagram::Request(incoming) = h.table.handle_datagram(now, local, from, *listening, &d)
                {
                    assert!(*listening, "a request from a session socket");
                    assert_eq!(incoming.peer, from);
                    assert_ne!(from.port(), 0);
                    let before = h.table.len();
                    let unanswered = h.table.unanswered();
                    let outcome = match decision {
                        Decision::Accept {
                            file,
                            tid,
                            single_port,
                        } => {
                            let tid = if *single_port {
                                incoming.local
                            } else {
                                addr(TIDS[usize::from(*tid) % TIDS.len()])
                            };
                            let file = FILES[usize::from(*file) % FILES.len()];
                            Some((tid, h.table.accept(now, &incoming, file, tid).ok()))
                        }
                        Decision::AcceptWith {
                            file,
                            tid,
                            max_blksize,
                            max_windowsize,
                            max_write,
                        } => {
                            let tid = addr(TIDS[usize::from(*tid) % TIDS.len()]);
                            let policy = ServerPolicy {
                                max_blksize: *max_blksize,
                                max_windowsize: *max_windowsize,
                                max_write_size: max_write.map(u64::from),
                                ..ServerPolicy::default()
                            };
                            let file = FILES[usize::from(*file) % FILES.len()];
                            Some((tid, h.table.accept_with(now, &incoming, file, tid, &policy).ok()))
                        }
                        Decision::Refuse { code } => {
                            h.table.refuse(&incoming, ErrorCode::from_u16(*code), "refused");
                            None
                        }
                        Decision::Ignore => None,
                    };
                    let limit = h.limit.min(h.slots);
                    match outcome {
                        Some((tid, Some(handle))) => {
                            h.locals.insert(tid);
                            h.accepted += 1;
                            *h.tids.entry(tid).or_default() += 1;
                            h.handles.push(handle);
                            assert!(h.table.len() <= limit.max(before), "accepted beyond the limit");
                            if before >= limit {
                                assert!(unanswered > 0, "accepted at the limit with nobody to displace");
                            }
                        }
                        Some((_, None)) if before < limit => {
                            assert!(h.table.has_finished(), "refused below the limit with free slots");
                        }
                        Some((_, None)) => {
                            assert!(
                                unanswered == 0 || h.table.has_finished(),
                                "refused at the limit though a session could be displaced"
                            );
                        }
                        None => {}
                    }
                }
                h.transmit();
            }
            Op::SessionDatagram { handle, from, bytes } => {
                if let Some(&session) = h.handles.get(usize::from(*handle) % h.handles.len().max(1)) {
                    let from = addr(PEERS[usize::from(*from) % PEERS.len()]);
                    h.table
                        .handle_session_datagram(h.now, session, from, &bytes.build());
                    h.transmit();
                }
            }
            Op::Displace => {
                let unanswered = h.table.unanswered();
                assert_eq!(h.table.displace_unanswered(), unanswered > 0);
                h.transmit();
            }
            Op::Abort { handle } => {
                if let Some(&session) = h.handles.get(usize::from(*handle) % h.handles.len().max(1)) {
                    let _ = h.table.abort(session, ErrorCode::NotDefined, "abort");
                    h.transmit();
                }
            }
            Op::Wait { millis } => {
                h.now += Duration::from_millis(u64::from(*millis % 3000));
                h.table.handle_timeout(h.now);
                h.transmit();
            }
            Op::Transmit => h.transmit(),
            Op::Idle => h.table.idle(),
            Op::Finished => h.finished(),
            Op::Limit(n) => {
                h.limit = usize::from(*n % 10);
                h.table.set_session_limit(h.limit);
            }
            Op::AbortAll => {
                h.table.abort_all(ErrorCode::NotDefined, "abort");
                h.transmit();
            }
        }
        assert!(h.table.len() <= h.slots);
        h.table.debug_check();
    }
    // The end: abort everything, send, collect; every session reported exactly once.
    h.table.abort_all(ErrorCode::NotDefined, "shutdown");
    for _ in 0..100 {
        h.transmit();
        h.finished();
        if h.table.is_empty() {
            break;
        }
        if let Some(t) = h.table.poll_timeout() {
            h.now = h.now.max(t);
            h.table.handle_timeout(h.now);
        }
    }
    assert!(h.table.is_empty(), "{} sessions never reported", h.table.len());
    assert_eq!(
        h.reported, h.accepted,
        "accepted {} sessions, reported {}",
        h.accepted, h.reported
    );
    h.table.debug_check();
}
