//! A deterministic network simulator for whole transfers, in the style of quinn-proto's test
//! `Pair` and str0m's network emulator.
//!
//! A client [`Transfer`] and a server [`Transfer`] are joined by a seeded network that can drop,
//! duplicate, reorder and delay datagrams (each direction is a FIFO link with latency and jitter;
//! a reordered datagram is held back so later ones overtake it, a duplicate arrives later), and a
//! test hook can drop, alter, duplicate or delay exactly the datagram it wants, or inject foreign
//! ones. The server is created the way a real server creates
//! it: the client's request reaches the server's well-known address, is parsed there, and
//! [`Transfer::server`] answers from a TID address of its own. A simulated clock jumps straight to
//! the next event (the next delivery or the earliest `poll_timeout`), and a step budget turns a
//! livelock into a test failure instead of a hang.
//!
//! Every datagram a side sends is recorded, decoded, with the input that triggered it, and an
//! audit checks the protocol's standing rules on every step: the Sorcerer's Apprentice rule
//! (DATA only after a new ACK, the OACK/ACK 0 handshake, a timer expiry, or the creation of a
//! server read without options; each DATA is attributed to its trigger), windows start right
//! after the acknowledged block and never exceed the window size, ERRORs are sent once and never
//! answered, nothing is sent to the peer after the end, and events end with one final event.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tftp_proto::engine::{Event, Transfer, TransferError};
use tftp_proto::storage::Storage;
use tftp_proto::{ErrorCode, Instant, Packet, Request, RequestKind};

/// The client's address and TID.
pub const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000));
/// The server's well-known address, where requests go.
pub const SERVER_WK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 69));
/// The server's TID for the simulated transfer.
pub const SERVER_TID: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50000));
/// Another port on the server's host: a TID belonging to nobody in this transfer.
pub const FOREIGN_SAME_HOST: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50001));
/// A host that has nothing to do with the transfer.
pub const FOREIGN_HOST: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 50000));

/// Largest datagram any transfer can emit (DATA at blksize 65464).
pub const MAX_DATAGRAM: usize = 4 + 65464;

// ---- deterministic randomness ---------------------------------------------------------------

/// SplitMix64: tiny, fast, and good enough to drive a network model. Same seed, same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (a slight modulo bias is irrelevant here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A duration uniform in `0..=max`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.range(0, max.as_micros() as u64))
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---- the network model ----------------------------------------------------------------------

/// How the simulated network treats datagrams. Probabilities are per datagram and independent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Net {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a delivered datagram arrives twice (the copy comes later, out of order).
    pub duplicate: f64,
    /// Probability a datagram is held back by up to `reorder_delay` extra, so later ones overtake it.
    pub reorder: f64,
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// Extra random delay `0..=jitter` on every datagram (order on a link is kept).
    pub jitter: Duration,
    /// Largest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
}

impl Net {
    /// No loss, no duplication, no reordering, 10 ms each way: datagrams arrive in order.
    pub const PERFECT: Net = Net {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        latency: Duration::from_millis(10),
        jitter: Duration::ZERO,
        reorder_delay: Duration::ZERO,
    };

    /// An impaired network with the given probabilities, some jitter and 60 ms reordering.
    pub fn lossy(loss: f64, duplicate: f64, reorder: f64) -> Net {
        Net {
            loss,
            duplicate,
            reorder,
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(4),
            reorder_delay: Duration::from_millis(60),
        }
    }
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Sent by the client.
    ClientToServer,
    /// Sent by the server.
    ServerToClient,
}

/// What a test hook decides about one datagram, before the network's own impairments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Deliver,
    /// Lose it.
    Drop,
    /// Send these bytes instead.
    Replace(Vec<u8>),
    /// Send it twice.
    Duplicate,
    /// Send it with this much extra delay.
    Delay(Duration),
}

/// A test hook: sees every datagram a side sends (not injected ones) and decides its fate.
pub type Hook<'a> = Box<dyn FnMut(Dir, &Packet<'_>) -> Verdict + 'a>;

/// Creates the server transfer from the request that reached the well-known address.
pub type MakeServer<'a, S> =
    Box<dyn FnOnce(Instant, SocketAddr, RequestKind, &Request<'_>) -> Transfer<'a, S> + 'a>;

// ---- decoded packets ------------------------------------------------------------------------

/// An owned, decoded datagram, as recorded (DATA payloads are not kept, only their length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt {
    /// A read request.
    Rrq(Req),
    /// A write request.
    Wrq(Req),
    /// DATA `block` carrying `len` payload bytes.
    Data {
        /// Block number on the wire.
        block: u16,
        /// Payload length.
        len: usize,
    },
    /// ACK `block`.
    Ack {
        /// Block number on the wire.
        block: u16,
    },
    /// ERROR.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message bytes.
        message: Vec<u8>,
    },
    /// OACK with its options, names lower-cased.
    Oack(Vec<(String, String)>),
    /// Not a valid packet (its length).
    Invalid(usize),
}

/// An owned request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    /// File name.
    pub filename: Vec<u8>,
    /// Mode, as sent.
    pub mode: Vec<u8>,
    /// Options, names lower-cased.
    pub options: Vec<(String, String)>,
}

fn owned_options(list: &tftp_proto::OptionList<'_>) -> Vec<(String, String)> {
    list.iter()
        .map(|o| {
            (
                String::from_utf8_lossy(o.name).to_ascii_lowercase(),
                String::from_utf8_lossy(o.value).into_owned(),
            )
        })
        .collect()
}

impl Pkt {
    /// Decodes a datagram.
    pub fn decode(bytes: &[u8]) -> Pkt {
        let req = |r: &Request<'_>| Req {
            filename: r.filename.to_vec(),
            mode: r.mode.as_bytes().to_vec(),
            options: owned_options(&r.options),
        };
        match Packet::parse(bytes) {
            Ok(Packet::Rrq(r)) => Pkt::Rrq(req(&r)),
            Ok(Packet::Wrq(r)) => Pkt::Wrq(req(&r)),
            Ok(Packet::Data { block, payload }) => Pkt::Data {
                block,
                len: payload.len(),
            },
            Ok(Packet::Ack { block }) => Pkt::Ack { block },
            Ok(Packet::Error { code, message }) => Pkt::Error {
                code,
                message: message.to_vec(),
            },
            Ok(Packet::Oack { options }) => Pkt::Oack(owned_options(&options)),
            Err(_) => Pkt::Invalid(bytes.len()),
        }
    }

    /// The DATA block number, if DATA.
    pub fn data_block(&self) -> Option<u16> {
        match self {
            Pkt::Data { block, .. } => Some(*block),
            _ => None,
        }
    }

    /// The ACK block number, if an ACK.
    pub fn ack_block(&self) -> Option<u16> {
        match self {
            Pkt::Ack { block } => Some(*block),
            _ => None,
        }
    }

    /// The ERROR code, if an ERROR.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Pkt::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The value of OACK option `name`, if this is an OACK holding it.
    pub fn oack_option(&self, name: &str) -> Option<&str> {
        match self {
            Pkt::Oack(opts) => opts.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// How the audit classified an ACK (or OACK) arriving at a data sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// ACK 0 or OACK before any DATA was sent: the handshake that starts the data.
    Handshake,
    /// Acknowledges block index `index`, above everything acknowledged before.
    New(u64),
    /// Acknowledges block index `index`, already acknowledged.
    Duplicate(u64),
    /// From a stray TID, or naming a block never sent, or a repeated handshake.
    Invalid,
}

/// What made a side send a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Creating the transfer.
    Start,
    /// A retransmission timer expiry (`handle_timeout`).
    Timeout,
    /// A datagram arriving.
    Datagram {
        /// Where it came from.
        from: SocketAddr,
        /// What it was.
        packet: Pkt,
        /// For an ACK/OACK at a data sender: the audit's classification.
        ack: Option<AckKind>,
    },
}

/// One datagram a side sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When.
    pub at: Instant,
    /// To whom.
    pub to: SocketAddr,
    /// What, decoded.
    pub packet: Pkt,
    /// Its length on the wire.
    pub len: usize,
    /// What made the side send it.
    pub trigger: Trigger,
}

// ---- block numbering, written independently of the engine ------------------------------------

/// The wire number of block index `i` (index 0 is the ACK 0 handshake).
pub fn wire_block(i: u64, rollover_to_one: bool) -> u16 {
    match (i, rollover_to_one) {
        (0, _) => 0,
        (i, true) => ((i - 1) % 65535 + 1) as u16,
        (i, false) => (i % 65536) as u16,
    }
}

/// The block index nearest `base` whose wire number is `block` (0 is the handshake index when
/// nothing nearer fits; under rollover 1, 0 is only ever the handshake).
pub fn unwrap_block(base: u64, block: u16, rollover_to_one: bool) -> u64 {
    if rollover_to_one && block == 0 {
        return 0;
    }
    let cycle: i64 = if rollover_to_one { 65535 } else { 65536 };
    let pos = |i: u64| -> i64 {
        if rollover_to_one {
            ((i - 1) % 65535) as i64
        } else {
            (i % 65536) as i64
        }
    };
    let target = if rollover_to_one {
        i64::from(block) - 1
    } else {
        i64::from(block)
    };
    let b = base.max(1);
    let mut d = (target - pos(b)).rem_euclid(cycle);
    if d > cycle / 2 {
        d -= cycle;
    }
    let i = b as i64 + d;
    if i == 0 {
        0
    } else if i < 0 {
        (i + cycle) as u64
    } else {
        i as u64
    }
}

// ---- one side --------------------------------------------------------------------------------

/// Tracks a data sender's acknowledgements independently of the engine.
#[derive(Debug, Default, Clone)]
struct SenderAudit {
    acked: u64,
    sent_max: u64,
    /// Index of the last DATA sent.
    last_sent: u64,
    /// The window (its first block) a repeated ACK restarted: once per window.
    repeat_restart: u64,
    /// A window (its first block) that a new ACK, the handshake or a timer restarted, whose
    /// first block the pacing held back: it may leave on any later wake-up.
    deferred: u64,
    /// Whether the first DATA of the current drain was allowed: the rest of its run is too.
    run_allowed: bool,
    /// A timer fired and nothing left (the pacing held back what it decided, e.g. a tail-loss
    /// probe): the probe may leave on a later wake-up.
    deferred_probe: bool,
}

/// One end of a transfer: the [`Transfer`], its address, everything it sent, its events, and the
/// audit of the protocol's standing rules.
pub struct Side<'a, S> {
    /// "client" or "server", for messages.
    pub name: &'static str,
    /// This side's own address.
    pub addr: SocketAddr,
    /// The transfer.
    pub transfer: Transfer<'a, S>,
    /// Every datagram sent, in order.
    pub sent: Vec<Sent>,
    /// Every event, with the time it was drained.
    pub events: Vec<(Instant, Event)>,
    /// Datagrams delivered to this side.
    pub delivered: u64,
    /// Timer expiries fed to this side.
    pub timeouts: u64,
    /// Protocol rule violations found by the audit.
    pub violations: Vec<String>,
    sending: bool,
    is_client: bool,
    initial_peer: SocketAddr,
    known_peer: Option<SocketAddr>,
    audit: SenderAudit,
    error_sent: bool,
    final_event: Option<Event>,
    buf: Vec<u8>,
}

/// Datagrams a side wants sent: (destination, bytes).
pub type Outgoing = Vec<(SocketAddr, Vec<u8>)>;

impl<'a, S: Storage> Side<'a, S> {
    /// Wraps a client transfer (its peer is learned from the first answer).
    pub fn client(addr: SocketAddr, transfer: Transfer<'a, S>, sending: bool) -> Self {
        Self::new("client", addr, transfer, sending, None)
    }

    /// Wraps a server transfer created for a request from `peer`.
    pub fn server(addr: SocketAddr, transfer: Transfer<'a, S>, sending: bool) -> Self {
        let peer = transfer.peer();
        Self::new("server", addr, transfer, sending, Some(peer))
    }

    fn new(
        name: &'static str,
        addr: SocketAddr,
        transfer: Transfer<'a, S>,
        sending: bool,
        known_peer: Option<SocketAddr>,
    ) -> Self {
        Side {
            name,
            addr,
            initial_peer: transfer.peer(),
            transfer,
            sent: Vec::new(),
            events: Vec::new(),
            delivered: 0,
            timeouts: 0,
            violations: Vec::new(),
            sending,
            is_client: known_peer.is_none(),
            known_peer,
            audit: SenderAudit::default(),
            error_sent: false,
            final_event: None,
            buf: vec![0; MAX_DATAGRAM + 64],
        }
    }

    /// Drains what the new transfer sends first.
    pub fn start(&mut self, now: Instant) -> Outgoing {
        self.drain(now, Trigger::Start)
    }

    /// Feeds a datagram from `from` and drains the answer.
    pub fn deliver(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Outgoing {
        self.delivered += 1;
        let packet = Pkt::decode(bytes);
        let ack = if self.sending {
            self.classify_ack(from, &packet)
        } else {
            None
        };
        self.transfer.handle_datagram(now, from, bytes);
        if self.known_peer.is_none() && self.transfer.peer() != self.initial_peer {
            self.known_peer = Some(self.transfer.peer());
        }
        self.drain(now, Trigger::Datagram { from, packet, ack })
    }

    /// Feeds a timer expiry and drains the answer.
    pub fn fire(&mut self, now: Instant) -> Outgoing {
        self.timeouts += 1;
        self.transfer.handle_timeout(now);
        self.drain(now, Trigger::Timeout)
    }

    /// Whether `from` is (or may be, before the client learnt the server's TID) the peer.
    fn is_peer(&self, from: SocketAddr) -> bool {
        match self.known_peer {
            Some(p) => from == p,
            None => from.ip() == self.initial_peer.ip(),
        }
    }

    fn rollover_to_one(&self) -> bool {
        self.transfer.params().rollover == Some(1)
    }

    fn classify_ack(&mut self, from: SocketAddr, packet: &Pkt) -> Option<AckKind> {
        let handshake = self.audit.sent_max == 0;
        let kind = match packet {
            Pkt::Ack { .. } | Pkt::Oack(_) if !self.is_peer(from) => AckKind::Invalid,
            Pkt::Oack(_) if handshake && self.is_client => AckKind::Handshake,
            Pkt::Oack(_) => AckKind::Invalid,
            Pkt::Ack { block: 0 } if handshake => AckKind::Handshake,
            Pkt::Ack { block } => match unwrap_block(self.audit.acked, *block, self.rollover_to_one()) {
                i if i > self.audit.acked && i <= self.audit.sent_max => {
                    self.audit.acked = i;
                    AckKind::New(i)
                }
                i if i <= self.audit.acked => AckKind::Duplicate(i),
                _ => AckKind::Invalid,
            },
            _ => return None,
        };
        Some(kind)
    }

    fn violation(&mut self, msg: String) {
        self.violations.push(format!("{}: {msg}", self.name));
    }

    fn drain(&mut self, now: Instant, trigger: Trigger) -> Outgoing {
        let mut out = Vec::new();
        let mut first_data = true;
        let was_terminated = matches!(self.final_event, Some(Event::Failed(_) | Event::OptionsDeclined));
        let was_finished = matches!(self.final_event, Some(Event::Finished { .. }));
        let error_from_peer = matches!(&trigger, Trigger::Datagram { from, packet: Pkt::Error { .. }, .. }
            if self.is_peer(*from));
        let mut guard = 0;
        loop {
            // What `peek_transmit` announces is what `poll_transmit` then sends.
            let next = self.transfer.peek_transmit(now);
            let Some(tx) = self.transfer.poll_transmit(now, &mut self.buf) else {
                if let Some(next) = next {
                    self.violation(format!(
                        "peek_transmit announced {next:?}, poll_transmit sent nothing"
                    ));
                }
                break;
            };
            match next {
                None => self.violation(format!(
                    "poll_transmit sent {tx:?} after peek_transmit said nothing"
                )),
                Some(n) if n.destination != tx.destination || tx.len > n.max_len => self.violation(format!(
                    "peek_transmit announced {n:?}, poll_transmit sent {tx:?}"
                )),
                Some(_) => {}
            }
            guard += 1;
            if guard > 100_000 {
                self.violation("poll_transmit never returns None".into());
                break;
            }
            let bytes = self.buf[..tx.len].to_vec();
            let packet = Pkt::decode(&bytes);
            let to_peer = tx.destination == self.transfer.peer();
            if !to_peer && packet.error_code() != Some(ErrorCode::UnknownTid) {
                self.violation(format!("{packet:?} sent to non-peer {}", tx.destination));
            }
            if to_peer {
                if self.error_sent {
                    self.violation(format!("{packet:?} sent after an ERROR"));
                }
                if was_terminated {
                    self.violation(format!("{packet:?} sent after the transfer failed"));
                }
                if was_finished && (self.sending || packet.ack_block().is_none()) {
                    self.violation(format!("{packet:?} sent after the transfer finished"));
                }
                if error_from_peer {
                    self.violation(format!("{packet:?} sent in answer to the peer's ERROR"));
                }
                if matches!(packet, Pkt::Error { .. }) {
                    self.error_sent = true;
                }
            }
            if let (Pkt::Data { block, .. }, true) = (&packet, self.sending) {
                self.audit_data(*block, &trigger, first_data);
                first_data = false;
            }
            self.sent.push(Sent {
                at: now,
                to: tx.destination,
                packet,
                len: tx.len,
                trigger: trigger.clone(),
            });
            out.push((tx.destination, bytes));
        }
        let restarts = match &trigger {
            Trigger::Start | Trigger::Timeout => true,
            Trigger::Datagram { ack, .. } => matches!(ack, Some(AckKind::New(_) | AckKind::Handshake)),
        };
        if self.sending && first_data && restarts {
            self.audit.deferred = self.audit.acked + 1;
        }
        if self.sending && first_data && trigger == Trigger::Timeout {
            self.audit.deferred_probe = true;
        }
        while let Some(ev) = self.transfer.poll_event() {
            if let Some(prev) = &self.final_event {
                self.violation(format!("event {ev:?} after the final event {prev:?}"));
            }
            if matches!(
                ev,
                Event::Finished { .. } | Event::Failed(_) | Event::OptionsDeclined
            ) {
                self.final_event = Some(ev.clone());
            }
            self.events.push((now, ev));
        }
        out
    }

    /// The Sorcerer's Apprentice rule, and windows: a window (re)starts only on a new ACK, the
    /// handshake, a timer expiry or creation, right after the acknowledged block; it never runs
    /// past the window. A paced window continues where it paused (the block after the last one
    /// sent), whatever woke the sender: that sends nothing twice. A timer may also resend the
    /// last block sent, alone, as a tail-loss probe. A repeated ACK of the acknowledged block
    /// (a receiver that timed out without the window, RFC 7440) may restart the window right
    /// after it, once per window: a repeat can never double every later block.
    fn audit_data(&mut self, block: u16, trigger: &Trigger, first: bool) {
        let acked = self.audit.acked;
        let index = unwrap_block(acked + 1, block, self.rollover_to_one());
        let continues = first && index == self.audit.last_sent + 1 && index > acked + 1;
        // A timer may resend the last block sent alone (a tail-loss probe), also on a later
        // wake-up when the pacing held it back.
        let tail_probe = first
            && (*trigger == Trigger::Timeout || self.audit.deferred_probe)
            && index == self.audit.last_sent;
        self.audit.deferred_probe = false;
        let repeat_restart = first
            && index == acked + 1
            && self.audit.repeat_restart != acked + 1
            && matches!(trigger, Trigger::Datagram { ack: Some(AckKind::Duplicate(d)), .. } if *d == acked);
        if repeat_restart {
            self.audit.repeat_restart = acked + 1;
        }
        // A window restarted earlier whose first block the pacing held back until now.
        let deferred = first && index == acked + 1 && self.audit.deferred == acked + 1;
        self.audit.deferred = 0;
        let allowed = continues
            || repeat_restart
            || deferred
            || tail_probe
            || (!first && self.audit.run_allowed)
            || match trigger {
                Trigger::Start | Trigger::Timeout => true,
                Trigger::Datagram { ack, .. } => matches!(ack, Some(AckKind::New(_) | AckKind::Handshake)),
            };
        if first {
            self.audit.run_allowed = allowed;
        }
        if !allowed {
            self.violation(format!(
                "DATA {block} (index {index}) sent in answer to {trigger:?}: Sorcerer's Apprentice"
            ));
        }
        if first && index != acked + 1 && !continues && !tail_probe {
            self.violation(format!(
                "DATA {block} (index {index}) does not restart right after the acknowledged block {acked}"
            ));
        }
        let window = u64::from(self.transfer.params().windowsize);
        if index <= acked || index > acked + window {
            self.violation(format!(
                "DATA index {index} outside the window ({acked}, {}]",
                acked + window
            ));
        }
        self.audit.sent_max = self.audit.sent_max.max(index);
        self.audit.last_sent = index;
    }

    // ---- queries -------------------------------------------------------------------------

    /// Datagrams sent to the peer (not ERROR 5 to strays).
    pub fn to_peer(&self) -> impl Iterator<Item = &Sent> {
        self.sent
            .iter()
            .filter(|s| s.packet.error_code() != Some(ErrorCode::UnknownTid))
    }

    /// DATA sent: (block, payload length), in order.
    pub fn data(&self) -> Vec<(u16, usize)> {
        self.sent
            .iter()
            .filter_map(|s| match s.packet {
                Pkt::Data { block, len } => Some((block, len)),
                _ => None,
            })
            .collect()
    }

    /// ACK block numbers sent, in order.
    pub fn acks(&self) -> Vec<u16> {
        self.sent.iter().filter_map(|s| s.packet.ack_block()).collect()
    }

    /// ERRORs sent: (destination, code).
    pub fn errors(&self) -> Vec<(SocketAddr, ErrorCode)> {
        self.sent
            .iter()
            .filter_map(|s| s.packet.error_code().map(|c| (s.to, c)))
            .collect()
    }

    /// The transfer's outcome, cloned.
    pub fn outcome(&self) -> Option<Result<u64, TransferError>> {
        self.transfer.outcome().map(|r| r.map_err(Clone::clone))
    }

    /// The final event, if any.
    pub fn final_event(&self) -> Option<&Event> {
        self.final_event.as_ref()
    }

    /// The error the transfer failed with; panics if it did not fail.
    pub fn failure(&self) -> TransferError {
        match self.outcome() {
            Some(Err(e)) => e,
            other => panic!("{} did not fail: {other:?}", self.name),
        }
    }
}

impl<S> fmt::Debug for Side<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("name", &self.name)
            .field("sent", &self.sent.len())
            .field("events", &self.events)
            .field("violations", &self.violations)
            .finish()
    }
}

// ---- the simulation --------------------------------------------------------------------------

/// Why a simulation stopped without ending normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The step budget ran out: a livelock, or a budget too small for the transfer.
    StepBudget {
        /// Steps taken.
        steps: u64,
        /// Simulated time reached.
        now: Instant,
    },
    /// Simulated time ran past the limit.
    TimeBudget {
        /// Simulated time reached.
        now: Instant,
    },
    /// The audit found a protocol rule broken.
    Violation(String),
    /// Nothing left to deliver and no timer, yet a side is not finished.
    Stalled {
        /// Simulated time reached.
        now: Instant,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::StepBudget { steps, now } => write!(
                f,
                "step budget exhausted after {steps} steps at {} us: livelock?",
                now.as_micros()
            ),
            SimError::TimeBudget { now } => write!(f, "simulated time ran to {} us", now.as_micros()),
            SimError::Violation(v) => write!(f, "protocol violation: {v}"),
            SimError::Stalled { now } => write!(
                f,
                "stalled at {} us: a side is unfinished with no timer",
                now.as_micros()
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// Network counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network by either side.
    pub sent: u64,
    /// Dropped by a hook.
    pub hook_dropped: u64,
    /// Lost by the network.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// Delivered to a side (or to the well-known address).
    pub delivered: u64,
    /// Injected by the test.
    pub injected: u64,
}

struct Flight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A client and a server transfer joined by a simulated network.
pub struct Sim<'a, C, S> {
    /// Simulated time.
    pub now: Instant,
    /// The network model.
    pub net: Net,
    /// The network's randomness.
    pub rng: Rng,
    /// The client.
    pub client: Side<'a, C>,
    /// The server session, once the request reached the well-known address.
    pub server: Option<Side<'a, S>>,
    /// Steps taken (one delivery or one timer instant each).
    pub steps: u64,
    /// Steps allowed before [`SimError::StepBudget`].
    pub max_steps: u64,
    /// Simulated time allowed before [`SimError::TimeBudget`].
    pub max_time: Duration,
    /// Requests that reached the well-known address after the session existed (dropped).
    pub repeated_requests: u64,
    /// Other datagrams that reached the well-known address (dropped).
    pub stray_to_well_known: u64,
    /// Network counters.
    pub stats: NetStats,
    make_server: Option<MakeServer<'a, S>>,
    hook: Option<Hook<'a>>,
    flights: Vec<Flight>,
    seq: u64,
    started: bool,
    /// Per direction: when the link delivers its last in-order datagram (FIFO floor).
    link_free: [Instant; 2],
}

impl<'a, C: Storage, S: Storage> Sim<'a, C, S> {
    /// Sets up a simulation; the client's first datagram goes out at time zero, on the first
    /// step (so a hook installed before can see it).
    pub fn new(
        seed: u64,
        net: Net,
        client: Transfer<'a, C>,
        client_sends_data: bool,
        make_server: MakeServer<'a, S>,
    ) -> Self {
        let sim = Sim {
            now: Instant::ZERO,
            net,
            rng: Rng::new(seed),
            client: Side::client(CLIENT, client, client_sends_data),
            server: None,
            steps: 0,
            max_steps: 1_000_000,
            max_time: Duration::from_secs(24 * 3600),
            repeated_requests: 0,
            stray_to_well_known: 0,
            stats: NetStats::default(),
            make_server: Some(make_server),
            hook: None,
            flights: Vec::new(),
            seq: 0,
            started: false,
            link_free: [Instant::ZERO; 2],
        };
        sim
    }

    /// Installs a hook that sees every datagram either side sends.
    pub fn set_hook(&mut self, hook: impl FnMut(Dir, &Packet<'_>) -> Verdict + 'a) {
        self.hook = Some(Box::new(hook));
    }

    /// The server side; panics if no request reached the server.
    pub fn server(&self) -> &Side<'a, S> {
        self.server.as_ref().expect("no server session was created")
    }

    /// Queues a datagram from anyone to anyone, arriving `after` from now (no hook, no loss).
    pub fn inject(&mut self, after: Duration, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.injected += 1;
        self.enqueue(self.now + after, from, to, bytes);
    }

    /// Whether both sides are over (a server never created counts as over).
    pub fn is_done(&self) -> bool {
        self.client.transfer.is_finished() && self.server.as_ref().is_none_or(|s| s.transfer.is_finished())
    }

    /// Runs until both sides are over or nothing can happen any more.
    pub fn run(&mut self) -> Result<(), SimError> {
        while self.step()? {}
        if self.is_done() {
            Ok(())
        } else {
            Err(SimError::Stalled { now: self.now })
        }
    }

    /// Runs until `stop` holds (checked before each step); returns whether it did.
    pub fn run_until(&mut self, mut stop: impl FnMut(&Self) -> bool) -> Result<bool, SimError> {
        loop {
            if stop(self) {
                return Ok(true);
            }
            if !self.step()? {
                return Ok(stop(self));
            }
        }
    }

    /// One step: the next delivery, or the next timer instant. `Ok(false)` when nothing is left.
    pub fn step(&mut self) -> Result<bool, SimError> {
        if !self.started {
            self.started = true;
            let out = self.client.start(self.now);
            self.send(Dir::ClientToServer, CLIENT, out);
            self.check()?;
            return Ok(true);
        }
        if self.is_done() && self.flights.iter().all(|f| f.to != CLIENT && f.to != SERVER_TID) {
            return Ok(false);
        }
        if self.steps >= self.max_steps {
            return Err(SimError::StepBudget {
                steps: self.steps,
                now: self.now,
            });
        }
        let next_flight = self
            .flights
            .iter()
            .enumerate()
            .min_by_key(|(_, f)| (f.at, f.seq))
            .map(|(i, f)| (i, f.at));
        let next_timer = [
            self.client.transfer.poll_timeout(),
            self.server.as_ref().and_then(|s| s.transfer.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let (flight, at) = match (next_flight, next_timer) {
            (None, None) => return Ok(false),
            (Some((i, f)), Some(t)) if f <= t => (Some(i), f),
            (Some((i, f)), None) => (Some(i), f),
            (_, Some(t)) => (None, t),
        };
        self.steps += 1;
        self.now = self.now.max(at);
        if self.now - Instant::ZERO > self.max_time {
            return Err(SimError::TimeBudget { now: self.now });
        }
        match flight {
            Some(i) => {
                let f = self.flights.swap_remove(i);
                self.stats.delivered += 1;
                self.route(f);
            }
            None => {
                if self.client.transfer.poll_timeout().is_some_and(|t| t <= self.now) {
                    let out = self.client.fire(self.now);
                    self.send(Dir::ClientToServer, CLIENT, out);
                }
                let fire = self
                    .server
                    .as_ref()
                    .and_then(|s| s.transfer.poll_timeout())
                    .is_some_and(|t| t <= self.now);
                if fire {
                    let server = self.server.as_mut().expect("checked");
                    let out = server.fire(self.now);
                    self.send(Dir::ServerToClient, SERVER_TID, out);
                }
            }
        }
        self.check()?;
        Ok(true)
    }

    fn check(&self) -> Result<(), SimError> {
        let server = self.server.as_ref().map(|s| &s.violations[..]).unwrap_or(&[]);
        match self.client.violations.iter().chain(server).next() {
            Some(v) => Err(SimError::Violation(v.clone())),
            None => Ok(()),
        }
    }

    fn route(&mut self, f: Flight) {
        if f.to == CLIENT {
            let out = self.client.deliver(self.now, f.from, &f.bytes);
            self.send(Dir::ClientToServer, CLIENT, out);
        } else if f.to == SERVER_TID {
            if let Some(server) = self.server.as_mut() {
                let out = server.deliver(self.now, f.from, &f.bytes);
                self.send(Dir::ServerToClient, SERVER_TID, out);
            }
        } else if f.to == SERVER_WK {
            self.accept_request(f);
        }
        // Anything else goes nowhere (it was recorded by its sender).
    }

    /// The server's listener: a request creates the session, once.
    fn accept_request(&mut self, f: Flight) {
        let (kind, req) = match Packet::parse(&f.bytes) {
            Ok(Packet::Rrq(r)) => (RequestKind::Read, r),
            Ok(Packet::Wrq(r)) => (RequestKind::Write, r),
            _ => {
                self.stray_to_well_known += 1;
                return;
            }
        };
        let Some(make) = self.make_server.take() else {
            self.repeated_requests += 1;
            return;
        };
        let transfer = make(self.now, f.from, kind, &req);
        let mut side = Side::server(SERVER_TID, transfer, kind == RequestKind::Read);
        let out = side.start(self.now);
        self.server = Some(side);
        self.send(Dir::ServerToClient, SERVER_TID, out);
    }

    fn send(&mut self, dir: Dir, from: SocketAddr, out: Outgoing) {
        for (to, bytes) in out {
            self.stats.sent += 1;
            if to != CLIENT && to != SERVER_WK && to != SERVER_TID {
                continue;
            }
            let verdict = match (&mut self.hook, Packet::parse(&bytes)) {
                (Some(hook), Ok(p)) => hook(dir, &p),
                _ => Verdict::Deliver,
            };
            match verdict {
                Verdict::Deliver => self.impair(from, to, bytes, Duration::ZERO),
                Verdict::Drop => self.stats.hook_dropped += 1,
                Verdict::Replace(b) => self.impair(from, to, b, Duration::ZERO),
                Verdict::Duplicate => {
                    self.impair(from, to, bytes.clone(), Duration::ZERO);
                    self.impair(from, to, bytes, Duration::ZERO);
                }
                Verdict::Delay(d) => self.impair(from, to, bytes, d),
            }
        }
    }

    /// The network: loss, then duplication (the copy takes its own, later path), then the
    /// delay. Datagrams keep their order on each link (one direction) unless reordering holds
    /// one back, or a hook delays it, so later ones overtake it.
    fn impair(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, extra: Duration) {
        if self.rng.chance(self.net.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.net.duplicate) {
            self.stats.duplicated += 1;
            let late = self.base_delay() + self.rng.duration(self.net.reorder_delay.max(self.net.latency));
            self.enqueue(self.now + late + extra, from, to, bytes.clone());
        }
        let at = self.now + self.base_delay() + extra;
        let link = usize::from(from != CLIENT);
        let at = if self.rng.chance(self.net.reorder) {
            self.stats.reordered += 1;
            at + self.rng.duration(self.net.reorder_delay)
        } else if extra > Duration::ZERO {
            at
        } else {
            let at = at.max(self.link_free[link]);
            self.link_free[link] = at;
            at
        };
        self.enqueue(at, from, to, bytes);
    }

    fn base_delay(&mut self) -> Duration {
        self.net.latency + self.rng.duration(self.net.jitter)
    }

    fn enqueue(&mut self, at: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.flights.push(Flight {
            at,
            seq: self.seq,
            from,
            to,
            bytes,
        });
    }
}
