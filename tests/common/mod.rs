//! Shared support for the engine tests: the network simulator ([`sim`]), ready-made client/server
//! pairs, test storages, packet builders, and the judge that decides whether a finished
//! simulation ended byte-identical or with a clean timeout.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod sim;

pub use sim::*;

use std::net::SocketAddr;

use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferError, TransferMode};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{ErrorCode, Options, Packet, RequestKind};

// ---- ready-made pairs -----------------------------------------------------------------------

/// Everything that shapes a simulated transfer besides the file.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Remote file name.
    pub filename: &'static [u8],
    /// Transfer mode.
    pub mode: TransferMode,
    /// Options the client requests.
    pub options: Options,
    /// The server's negotiation policy.
    pub policy: ServerPolicy,
    /// The client's timing and limits.
    pub client_config: Config,
    /// The server's timing and limits.
    pub server_config: Config,
    /// The network.
    pub net: Net,
    /// Seed of the network's randomness.
    pub seed: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            filename: b"file.bin",
            mode: TransferMode::Octet,
            options: Options::NONE,
            policy: ServerPolicy::default(),
            client_config: Config::default(),
            server_config: Config::default(),
            net: Net::PERFECT,
            seed: 1,
        }
    }
}

impl Setup {
    /// The same setup with these options.
    pub fn options(self, options: Options) -> Self {
        Setup { options, ..self }
    }

    /// The same setup on this network.
    pub fn net(self, net: Net) -> Self {
        Setup { net, ..self }
    }
}

/// A client and a server for request `kind`, with their storages.
pub fn pair<'a, C: Storage + 'a, S: Storage + 'a>(
    kind: RequestKind,
    client_storage: C,
    server_storage: S,
    setup: &Setup,
) -> Sim<'a, C, S> {
    let request = ClientRequest {
        kind,
        filename: setup.filename,
        mode: setup.mode,
        options: setup.options,
    };
    let client = Transfer::client(
        tftp_proto::Instant::ZERO,
        SERVER_WK,
        request,
        client_storage,
        setup.client_config,
    )
    .expect("request encodes");
    let (policy, config) = (setup.policy, setup.server_config);
    Sim::new(
        setup.seed,
        setup.net,
        client,
        kind == RequestKind::Write,
        Box::new(move |now, peer, kind, req| {
            Transfer::server(now, peer, kind, req, server_storage, &policy, config)
        }),
    )
}

/// The client reads `file` from the server into a `Vec`.
pub fn read_pair<'a>(file: &'a [u8], setup: &Setup) -> Sim<'a, Vec<u8>, &'a [u8]> {
    pair(RequestKind::Read, Vec::new(), file, setup)
}

/// The client writes `file` to the server, which stores it in a `Vec`.
pub fn write_pair<'a>(file: &'a [u8], setup: &Setup) -> Sim<'a, &'a [u8], Vec<u8>> {
    pair(RequestKind::Write, file, Vec::new(), setup)
}

// ---- storages -------------------------------------------------------------------------------

/// The synthetic file content at `offset`: cheap to generate anywhere in a file of any size.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(31) >> 3) as u8
}

/// The pattern repeats every 2048 bytes (`31 * offset` modulo 2^11 decides the byte); two
/// periods let any slice of up to one period be copied straight out.
const PERIOD: usize = 2048;

fn pattern_table() -> &'static [u8; 2 * PERIOD] {
    static TABLE: std::sync::OnceLock<[u8; 2 * PERIOD]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| pattern_byte(i as u64)))
}

/// Fills `buf` with the pattern starting at `offset`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let table = pattern_table();
    let mut at = (offset % PERIOD as u64) as usize;
    for chunk in buf.chunks_mut(PERIOD) {
        chunk.copy_from_slice(&table[at..at + chunk.len()]);
        at = (at + chunk.len()) % PERIOD;
    }
}

/// Whether `data` is the pattern starting at `offset`.
pub fn is_pattern(offset: u64, data: &[u8]) -> bool {
    let table = pattern_table();
    let mut at = (offset % PERIOD as u64) as usize;
    data.chunks(PERIOD).all(|chunk| {
        let ok = chunk == &table[at..at + chunk.len()];
        at = (at + chunk.len()) % PERIOD;
        ok
    })
}

/// A read-only file of `len` pattern bytes that exists only as a formula.
#[derive(Debug, Clone, Copy)]
pub struct PatternFile {
    /// Its size.
    pub len: u64,
}

impl Storage for PatternFile {
    fn size(&mut self) -> Option<u64> {
        Some(self.len)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        fill_pattern(offset, &mut buf[..n]);
        Ok(n)
    }
}

/// A receiving storage that checks every write against the pattern instead of keeping it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PatternCheck {
    /// Bytes written so far.
    pub written: u64,
    /// The first write that was out of order or did not match the pattern.
    pub first_bad: Option<u64>,
    /// Whether `finish` was called.
    pub finished: bool,
}

impl Storage for PatternCheck {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if self.first_bad.is_none() && (offset != self.written || !is_pattern(offset, data)) {
            self.first_bad = Some(offset);
        }
        self.written = offset + data.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        self.finished = true;
        Ok(())
    }
}

/// A storage whose reads, writes or final commit fail with a chosen error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failing {
    /// Error of every `read_at`, if any (otherwise reads see an empty file).
    pub read: Option<StorageError>,
    /// Error of `write_at` once `write_limit` bytes were written, if any.
    pub write: Option<StorageError>,
    /// Bytes accepted before writes fail.
    pub write_limit: u64,
    /// Error of `finish`, if any.
    pub finish: Option<StorageError>,
    /// Bytes written.
    pub written: u64,
}

impl Storage for Failing {
    fn read_at(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<usize, StorageError> {
        self.read.map_or(Ok(0), Err)
    }
    fn write_at(&mut self, _offset: u64, data: &[u8]) -> Result<(), StorageError> {
        match self.write {
            Some(e) if self.written + data.len() as u64 > self.write_limit => Err(e),
            _ => {
                self.written += data.len() as u64;
                Ok(())
            }
        }
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        self.finish.map_or(Ok(()), Err)
    }
}

// ---- packet builders ------------------------------------------------------------------------

/// DATA `block` with `payload`.
pub fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 3];
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// ACK `block`.
pub fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

/// ERROR `code` with `message`.
pub fn error(code: u16, message: &str) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(message.as_bytes());
    v.push(0);
    v
}

fn pairs(v: &mut Vec<u8>, options: &[(&str, &str)]) {
    for (n, val) in options {
        v.extend_from_slice(n.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
}

/// OACK with `options`.
pub fn oack(options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, 6];
    pairs(&mut v, options);
    v
}

/// RRQ or WRQ for `filename` in `mode` with `options`.
pub fn request(kind: RequestKind, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, if kind == RequestKind::Read { 1 } else { 2 }];
    v.extend_from_slice(filename.as_bytes());
    v.push(0);
    v.extend_from_slice(mode.as_bytes());
    v.push(0);
    pairs(&mut v, options);
    v
}

/// Whether `p` is DATA numbered `block`.
pub fn is_data(p: &Packet<'_>, block: u16) -> bool {
    matches!(p, Packet::Data { block: b, .. } if *b == block)
}

/// Whether `p` is ACK `block`.
pub fn is_ack(p: &Packet<'_>, block: u16) -> bool {
    matches!(p, Packet::Ack { block: b } if *b == block)
}

// ---- scripted peers -------------------------------------------------------------------------

/// A server transfer created from raw request bytes from [`CLIENT`], for tests that play the
/// client by hand. Returns the side and what it sent first.
pub fn scripted_server<'a, S: Storage>(
    request_bytes: &[u8],
    storage: S,
    policy: &ServerPolicy,
    config: Config,
) -> (Side<'a, S>, Outgoing) {
    let (kind, req) = match Packet::parse(request_bytes).expect("a valid request") {
        Packet::Rrq(r) => (RequestKind::Read, r),
        Packet::Wrq(r) => (RequestKind::Write, r),
        other => panic!("not a request: {other:?}"),
    };
    let t = Transfer::server(
        tftp_proto::Instant::ZERO,
        CLIENT,
        kind,
        &req,
        storage,
        policy,
        config,
    );
    let mut side = Side::server(SERVER_TID, t, kind == RequestKind::Read);
    let out = side.start(tftp_proto::Instant::ZERO);
    (side, out)
}

/// A client transfer for tests that play the server by hand. Returns the side and its request.
pub fn scripted_client<S: Storage>(
    kind: RequestKind,
    options: Options,
    mode: TransferMode,
    storage: S,
    config: Config,
) -> (Side<'static, S>, Outgoing) {
    let request = ClientRequest {
        kind,
        filename: b"file.bin",
        mode,
        options,
    };
    let t =
        Transfer::client(tftp_proto::Instant::ZERO, SERVER_WK, request, storage, config).expect("encodes");
    let mut side = Side::client(CLIENT, t, kind == RequestKind::Write);
    let out = side.start(tftp_proto::Instant::ZERO);
    (side, out)
}

/// Decodes the packets of an [`Outgoing`] batch, with their destinations.
pub fn decoded(out: &Outgoing) -> Vec<(SocketAddr, Pkt)> {
    out.iter().map(|(to, b)| (*to, Pkt::decode(b))).collect()
}

/// Fails the test with the side's violations, if any.
pub fn assert_clean<S>(side: &Side<'_, S>) {
    assert!(side.violations.is_empty(), "{:#?}", side.violations);
}

// ---- judging the end of a simulation --------------------------------------------------------

/// Whether a failure is a clean timeout: our own retry cap or idle deadline, or the peer's,
/// reported to us in the ERROR 0 it sends when it gives up.
pub fn is_clean_timeout(e: &TransferError) -> bool {
    match e {
        TransferError::TimedOut | TransferError::Idle => true,
        TransferError::Peer(p) => {
            p.code == ErrorCode::NotDefined && matches!(p.message(), b"Timed out" | b"Idle timeout")
        }
        _ => false,
    }
}

/// How a simulated transfer ended, when it ended acceptably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// Both sides finished; the receiver holds the file byte for byte.
    Complete,
    /// The receiver finished with the file byte for byte, but the sender never heard the final
    /// ACK and timed out (the final ACK was lost more often than the receiver dallied).
    SenderTimedOut,
    /// Nothing was delivered as complete; the transfer timed out cleanly.
    TimedOut,
}

/// Judges a finished simulation: corruption (a side finished without the receiver holding the
/// exact file) and unclean failures are errors.
///
/// `received` is what the receiver stored (decoded), `file` what the sender had.
pub fn judge(
    file: &[u8],
    received: &[u8],
    sender: Option<Result<u64, TransferError>>,
    receiver: Option<Result<u64, TransferError>>,
) -> Result<Ending, String> {
    for (who, r) in [("sender", &sender), ("receiver", &receiver)] {
        if let Some(Err(e)) = r {
            if !is_clean_timeout(e) {
                return Err(format!("{who} failed uncleanly: {e:?}"));
            }
        }
    }
    if let Some(Ok(_)) = receiver {
        if received != file {
            let at = received.iter().zip(file).position(|(a, b)| a != b);
            return Err(format!(
                "CORRUPTION: receiver finished with {} bytes, file has {} (first difference at {at:?})",
                received.len(),
                file.len()
            ));
        }
    }
    match (&sender, &receiver) {
        (Some(Ok(s)), Some(Ok(r))) if s == r => Ok(Ending::Complete),
        (Some(Ok(s)), Some(Ok(r))) => Err(format!("sender counted {s} bytes, receiver {r}")),
        (Some(Ok(_)), other) => Err(format!("sender finished but the receiver did not: {other:?}")),
        (_, Some(Ok(_))) => Ok(Ending::SenderTimedOut),
        (None, None) => Err("no outcome on either side".into()),
        _ => Ok(Ending::TimedOut),
    }
}

// ---- random whole-transfer scenarios (property tests and the sweep) --------------------------

/// One randomised transfer: direction, file, options and network.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The client writes (else it reads).
    pub write: bool,
    /// File size in bytes.
    pub size: usize,
    /// Netascii mode, with a file full of CR, LF and NUL.
    pub netascii: bool,
    /// Requested `blksize`.
    pub blksize: Option<u16>,
    /// Requested `windowsize`.
    pub windowsize: Option<u16>,
    /// Request `tsize`.
    pub tsize: bool,
    /// Requested `rollover`.
    pub rollover: Option<u8>,
    /// Requested `timeout` (seconds).
    pub timeout: Option<u8>,
    /// Loss probability per datagram.
    pub loss: f64,
    /// Duplication probability per datagram.
    pub duplicate: f64,
    /// Reordering probability per datagram.
    pub reorder: f64,
    /// Retry cap of both sides.
    pub max_retries: u8,
    /// Seed of the file content and of the network.
    pub seed: u64,
}

impl Scenario {
    /// A random scenario: sizes mostly small, sometimes exact multiples of the block size or
    /// empty, sometimes past 65535 blocks (then with a small block size and a light network).
    pub fn random(rng: &mut Rng, max_impairment: f64) -> Scenario {
        let blksize = match rng.range(0, 9) {
            0..=2 => None,
            3 => Some(rng.range(8, 64) as u16),
            4 => Some(8),
            5 => Some(rng.range(65, 2000) as u16),
            6 => Some(1428),
            7 => Some(rng.range(2000, 9000) as u16),
            _ => Some(rng.range(8, 1024) as u16),
        };
        let bs = usize::from(blksize.unwrap_or(512));
        let huge = rng.range(0, 199) == 0;
        let size = match rng.range(0, 9) {
            _ if huge => 65_536 * bs.min(16) + rng.range(0, 3 * bs as u64) as usize,
            0 => 0,
            1 => bs * rng.range(1, 8) as usize,
            2 => bs * rng.range(1, 8) as usize + rng.range(1, bs as u64 - 1) as usize,
            3 => rng.range(20_000, 200_000) as usize,
            _ => rng.range(1, 12_000) as usize,
        };
        let blksize = if huge { Some(bs.min(16) as u16) } else { blksize };
        let windowsize = match rng.range(0, 5) {
            0 => None,
            1 => Some(1),
            2 => Some(64),
            _ => Some(rng.range(1, 64) as u16),
        };
        let scale = if huge { 0.1 } else { 1.0 };
        let mut impairment = || {
            if rng.chance(0.2) {
                0.0
            } else {
                rng.unit() * max_impairment * scale
            }
        };
        let (loss, duplicate, reorder) = (impairment(), impairment(), impairment());
        Scenario {
            write: rng.chance(0.5),
            size,
            netascii: !huge && rng.chance(0.2),
            blksize,
            windowsize,
            tsize: rng.chance(0.5),
            rollover: [None, None, Some(0), Some(1)][rng.range(0, 3) as usize],
            timeout: if rng.chance(0.1) { Some(1) } else { None },
            loss,
            duplicate,
            reorder,
            max_retries: if huge { 30 } else { rng.range(5, 15) as u8 },
            seed: rng.next_u64(),
        }
    }

    /// The file: random bytes, or for netascii, text dense with CR, LF and NUL.
    pub fn file(&self) -> Vec<u8> {
        let mut rng = Rng::new(self.seed ^ 0x5eed);
        if self.netascii {
            (0..self.size)
                .map(|_| match rng.range(0, 9) {
                    0 | 1 => b'\n',
                    2 => b'\r',
                    3 => 0,
                    _ => rng.next_u64() as u8,
                })
                .collect()
        } else {
            rng.bytes(self.size)
        }
    }

    /// The step budget: generous for go-back-N under loss, finite for a livelock.
    pub fn step_budget(&self) -> u64 {
        let bs = u64::from(self.blksize.unwrap_or(512));
        let wire = if self.netascii {
            2 * self.size as u64
        } else {
            self.size as u64
        };
        let blocks = wire / bs + 1;
        let window = u64::from(self.windowsize.unwrap_or(1));
        20_000 + blocks * (40 + 4 * window)
    }

    pub fn setup(&self) -> Setup {
        let config = Config {
            max_retries: self.max_retries,
            ..Config::default()
        };
        Setup {
            mode: if self.netascii {
                TransferMode::Netascii
            } else {
                TransferMode::Octet
            },
            options: Options {
                blksize: self.blksize,
                windowsize: self.windowsize,
                tsize: self.tsize.then_some(0),
                rollover: self.rollover,
                timeout: self.timeout,
            },
            client_config: config,
            server_config: config,
            net: Net::lossy(self.loss, self.duplicate, self.reorder),
            seed: self.seed,
            ..Setup::default()
        }
    }

    /// Runs the transfer and judges it.
    pub fn run(&self) -> Result<ScenarioReport, ScenarioFailure> {
        let file = self.file();
        let setup = self.setup();
        if self.write {
            let mut sim = write_pair(&file, &setup);
            self.finish(&mut sim, &file, |sim| {
                let server = sim.server.as_ref();
                (
                    server.map_or(&[][..], |s| &s.transfer.storage()[..]),
                    sim.client.outcome(),
                    server.and_then(|s| s.outcome()),
                    sim.client.data().len(),
                )
            })
        } else {
            let mut sim = read_pair(&file, &setup);
            self.finish(&mut sim, &file, |sim| {
                let server = sim.server.as_ref();
                (
                    &sim.client.transfer.storage()[..],
                    server.and_then(|s| s.outcome()),
                    sim.client.outcome(),
                    server.map_or(0, |s| s.data().len()),
                )
            })
        }
    }

    #[allow(clippy::type_complexity)]
    fn finish<'a, C: Storage, S: Storage>(
        &self,
        sim: &mut Sim<'a, C, S>,
        file: &[u8],
        parts: impl for<'s> Fn(
            &'s Sim<'a, C, S>,
        ) -> (
            &'s [u8],
            Option<Result<u64, TransferError>>,
            Option<Result<u64, TransferError>>,
            usize,
        ),
    ) -> Result<ScenarioReport, ScenarioFailure> {
        sim.max_steps = self.step_budget();
        match sim.run() {
            Ok(()) => {}
            Err(
                e @ (SimError::StepBudget { .. } | SimError::TimeBudget { .. } | SimError::Stalled { .. }),
            ) => return Err(ScenarioFailure::Hang(e.to_string())),
            Err(SimError::Violation(v)) => return Err(ScenarioFailure::Violation(v)),
        }
        let (received, sender, receiver, data_sent) = parts(sim);
        let ending = judge(file, received, sender, receiver).map_err(|e| {
            if e.starts_with("CORRUPTION") {
                ScenarioFailure::Corruption(e)
            } else {
                ScenarioFailure::Unclean(e)
            }
        })?;
        Ok(ScenarioReport {
            ending,
            steps: sim.steps,
            data_sent: data_sent as u64,
            sim_time: sim.now - tftp_proto::Instant::ZERO,
        })
    }
}

/// How a scenario went, when it went acceptably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioReport {
    /// How it ended.
    pub ending: Ending,
    /// Simulation steps taken.
    pub steps: u64,
    /// DATA datagrams the sender sent.
    pub data_sent: u64,
    /// Simulated time taken.
    pub sim_time: std::time::Duration,
}

/// How a scenario went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioFailure {
    /// A side finished without the receiver holding the exact file.
    Corruption(String),
    /// A side failed other than by a clean timeout.
    Unclean(String),
    /// The step or time budget ran out.
    Hang(String),
    /// The audit caught a protocol rule broken (e.g. DATA answering a duplicate ACK).
    Violation(String),
}
