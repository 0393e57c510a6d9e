//! A deliberately minimal download client for boot loaders: [`BootClient`].
//!
//! The [`engine`](crate::engine) runs every kind of transfer with an adaptive retransmission
//! timer, pacing, events and any [`Storage`](crate::storage::Storage). A boot loader only fetches
//! one image into RAM, and its flash is scarce; [`BootClient`] does just that, in a fraction of
//! the code:
//!
//! * octet mode only, downloads only, into a `&mut [u8]`;
//! * every option a download can use: `blksize` (RFC 2348), `timeout` and `tsize` (RFC 2349),
//!   `windowsize` (RFC 7440), with the OACK checked strictly (RFC 2347); block numbers roll over
//!   past 65535 to 0 (the `rollover` option itself is not asked for);
//! * no event queue: every call says at once what to send, as a [`Status`];
//! * a fixed retransmission interval (the negotiated `timeout`, else
//!   [`BootConfig::retransmit`]) and a retry cap, instead of an adaptive estimator;
//! * 16-bit block arithmetic and byte counts bounded by the destination.
//!
//! # Differences from the engine's octet download
//!
//! On a clean network both send the same datagrams (the same request, the same ACKs for the same
//! blocks). Otherwise:
//!
//! * the retransmission interval is fixed, with no backoff, and giving up sends no ERROR;
//! * a `tsize` larger than the destination is refused at once (ERROR 3) instead of when the data
//!   overflows; a malformed OACK is refused with ERROR 8 instead of being dropped;
//! * there is no dally timer: the transfer is over with its final ACK. A caller that keeps
//!   feeding datagrams still gets a repeated final DATA re-acknowledged.
//! * a DATA 0 before the first rollover is dropped (the engine takes it for a repeat of the
//!   handshake).

use core::net::SocketAddr;
use core::time::Duration;

use crate::error_code::ErrorCode;
use crate::options::{parse_decimal, split_nul};
use crate::time::Instant;

// The protocol's numbers, from `wire` and `options` (constants: they cost no flash).
use crate::options::{OptionName, DEFAULT_BLKSIZE};
use crate::wire::{Opcode, MAX_REQUEST_LEN};

// Option names, as requested (in this order) and matched case-insensitively in an OACK.
const BLKSIZE: &[u8] = OptionName::Blksize.as_str().as_bytes();
const TIMEOUT: &[u8] = OptionName::Timeout.as_str().as_bytes();
const TSIZE: &[u8] = OptionName::Tsize.as_str().as_bytes();
const WINDOWSIZE: &[u8] = OptionName::Windowsize.as_str().as_bytes();

// Opcodes, as the low byte of the big-endian field (all are below 256).
const RRQ: u8 = Opcode::Rrq as u8;
const DATA: u8 = Opcode::Data as u8;
const ACK: u8 = Opcode::Ack as u8;
const ERROR: u8 = Opcode::Error as u8;
const OACK: u8 = Opcode::Oack as u8;

/// What a [`BootClient`] asks the server for, and how patient it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BootConfig {
    /// `blksize` to ask for (8..=65464); `None`: 512-byte blocks. The receive buffer must hold
    /// `4 + blksize` bytes.
    pub blksize: Option<u16>,
    /// `windowsize` to ask for (at least 1); `None`: one block per ACK.
    pub windowsize: Option<u16>,
    /// `timeout` to ask for, in seconds (at least 1); once granted it is the retransmission
    /// interval.
    pub timeout: Option<u8>,
    /// Whether to ask for `tsize`: a server that announces a file larger than the destination
    /// is refused before any data flows.
    pub tsize: bool,
    /// Retransmission interval unless `timeout` is negotiated. Default 1 s.
    pub retransmit: Duration,
    /// Consecutive timeouts without progress before giving up. Default 10.
    ///
    /// The interval does not back off, but a server's does (to 5 s and more), and a server
    /// resends a lost block only when its own timer fires: `max_retries` times the interval
    /// should outlast a few of the server's backed-off retransmissions on a lossy network.
    pub max_retries: u8,
}

impl BootConfig {
    /// No option asked for; 1 s retransmission interval; 10 retries.
    pub const DEFAULT: BootConfig = BootConfig {
        blksize: None,
        windowsize: None,
        timeout: None,
        tsize: false,
        retransmit: Duration::from_secs(1),
        max_retries: 10,
    };
}

impl Default for BootConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What to do after a call to a [`BootClient`]: the datagram it wrote, if any, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status {
    /// Nothing to send.
    Idle,
    /// Send the first `len` bytes of the output buffer to the server ([`BootClient::peer`]).
    Send(usize),
    /// Send the first `len` bytes of the output buffer back to the datagram's sender: an
    /// ERROR 5 for a stranger. The transfer is not affected.
    Reply(usize),
}

/// Why a [`BootClient`] download failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BootError {
    /// The request could not be written: the file name holds a NUL, an option value is out of
    /// range, or the request is longer than 512 octets or than the output buffer.
    Request,
    /// The server's OACK was malformed, or held an option not asked for or a value out of what
    /// was asked. ERROR 8 was sent.
    Options,
    /// The file is larger than the destination (by its `tsize` or its data). ERROR 3 was sent.
    TooLarge,
    /// A DATA packet was longer than the block size. ERROR 4 was sent.
    Protocol,
    /// The server sent an ERROR with this code.
    Peer(ErrorCode),
    /// No progress after [`BootConfig::max_retries`] retransmissions.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    /// Request sent, waiting for the first answer.
    Requesting,
    /// Blocks flowing.
    Data,
    /// The final block was received and acknowledged.
    Done,
    /// Over, unsuccessfully.
    Failed(BootError),
}

/// A sans-IO TFTP download client for boot loaders: octet mode, every option, no heap, no
/// event queue, a fraction of the engine's code (see the [module documentation](self)).
///
/// Drive it with [`start`](Self::start) (the request), then feed each received datagram to
/// [`handle_datagram`](Self::handle_datagram) and, when [`poll_timeout`](Self::poll_timeout)
/// has passed, call [`handle_timeout`](Self::handle_timeout). Each call writes at most one
/// datagram into the caller's output buffer (516 bytes hold any of them) and says where it
/// goes; [`outcome`](Self::outcome) tells when the download is over.
///
/// ```
/// use core::net::SocketAddr;
/// use tftp_proto::boot::{BootClient, BootConfig, Status};
/// use tftp_proto::Instant;
///
/// let server: SocketAddr = "192.0.2.1:69".parse().unwrap();
/// let tid: SocketAddr = "192.0.2.1:50000".parse().unwrap(); // the server's port for this transfer
/// let mut image = [0u8; 64];
/// let config = BootConfig { blksize: Some(8), tsize: true, ..BootConfig::DEFAULT };
/// let mut client = BootClient::new(server, b"boot.img", &mut image, config);
/// let mut out = [0u8; 516];
/// let now = Instant::ZERO;
///
/// let len = client.start(now, &mut out).unwrap();
/// assert_eq!(&out[..len], b"\0\x01boot.img\0octet\0blksize\08\0tsize\00\0");
///
/// // The server grants the options: the client acknowledges with ACK 0.
/// let status = client.handle_datagram(now, tid, b"\0\x06blksize\08\0tsize\012\0", &mut out);
/// assert_eq!(status, Status::Send(4));
/// assert_eq!(&out[..4], b"\0\x04\0\0");
/// assert_eq!(client.peer(), tid);
///
/// assert_eq!(client.handle_datagram(now, tid, b"\0\x03\0\x01firmware", &mut out), Status::Send(4));
/// assert_eq!(&out[..4], b"\0\x04\0\x01");
/// // A short block ends the transfer.
/// assert_eq!(client.handle_datagram(now, tid, b"\0\x03\0\x02.bin", &mut out), Status::Send(4));
/// assert_eq!(&out[..4], b"\0\x04\0\x02");
/// assert_eq!(client.outcome(), Some(Ok(12)));
/// assert_eq!(&image[..12], b"firmware.bin");
/// ```
#[derive(Debug)]
pub struct BootClient<'a> {
    dest: &'a mut [u8],
    filename: &'a [u8],
    /// The server: its well-known port until the first answer, then its TID.
    peer: SocketAddr,
    /// When to retransmit (while requesting or receiving).
    deadline: Instant,
    /// Bytes received in order (all written to `dest`).
    bytes: usize,
    /// Blocks received in order, saturating.
    blocks: u32,
    /// The retransmission interval, in microseconds.
    rto_us: u32,
    /// Options asked for (0 / false: not asked).
    ask_blksize: u16,
    ask_windowsize: u16,
    ask_timeout: u8,
    ask_tsize: bool,
    max_retries: u8,
    /// Consecutive timeouts without progress.
    retries: u8,
    /// The parameters in force.
    blksize: u16,
    windowsize: u16,
    /// Wire number of the last block received in order (0: none yet).
    last: u16,
    /// In-order blocks since the last ACK.
    since_ack: u16,
    /// How far back from `last` the current run of repeated blocks stands (1: `last` itself),
    /// 0 when no block was repeated since the last new one.
    run: u16,
    /// The current gap was already reported with an ACK.
    gap_acked: bool,
    /// The server's TID is known.
    locked: bool,
    state: State,
}

impl<'a> BootClient<'a> {
    /// A client that will download `filename` from `server` (its well-known port, usually 69)
    /// into `dest`. Nothing is sent before [`start`](Self::start).
    pub fn new(server: SocketAddr, filename: &'a [u8], dest: &'a mut [u8], config: BootConfig) -> Self {
        // The interval in microseconds fits 32 bits up to 71 minutes.
        let rto_us = u32::try_from(config.retransmit.as_micros()).unwrap_or(u32::MAX);
        BootClient {
            dest,
            filename,
            peer: server,
            deadline: Instant::ZERO,
            bytes: 0,
            blocks: 0,
            rto_us,
            ask_blksize: config.blksize.unwrap_or(0),
            ask_windowsize: config.windowsize.unwrap_or(0),
            ask_timeout: config.timeout.unwrap_or(0),
            ask_tsize: config.tsize,
            max_retries: config.max_retries,
            retries: 0,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            last: 0,
            since_ack: 0,
            run: 0,
            gap_acked: false,
            locked: false,
            state: State::Requesting,
        }
    }

    /// Writes the read request into `out` and returns its length: send `out[..len]` to the
    /// server. The retransmission timer starts at `now`.
    ///
    /// Fails, and so does the transfer, when the request cannot be written (see
    /// [`BootError::Request`]).
    pub fn start(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, BootError> {
        match self.request(out) {
            Some(len) => {
                self.arm(now);
                Ok(len)
            }
            None => {
                self.state = State::Failed(BootError::Request);
                Err(BootError::Request)
            }
        }
    }

    /// Feeds a datagram received from `from` at `now`; a reply, if any, is written into `out`.
    ///
    /// The first answer from the server's address fixes its port (its TID); later datagrams from
    /// anywhere else get an ERROR 5 ([`Status::Reply`]) and change nothing. Malformed or
    /// unexpected datagrams are dropped. Never panics, never writes past the destination.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Status {
        if let State::Failed(_) = self.state {
            return Status::Idle;
        }
        if self.locked {
            if from != self.peer {
                // Errors are never answered: that could bounce ERROR 5 between two endpoints.
                if datagram.get(..2) == Some(&[0, ERROR]) {
                    return Status::Idle;
                }
                return match error_packet(out, ErrorCode::UnknownTid) {
                    0 => Status::Idle,
                    len => Status::Reply(len),
                };
            }
        } else if from.ip() != self.peer.ip() {
            // The first answer must come from the server's address.
            return Status::Idle;
        }
        let Some(([0, op], body)) = datagram.split_first_chunk::<2>() else {
            return Status::Idle;
        };
        if (*op, self.state) == (OACK, State::Requesting) {
            self.lock(from);
            return match self.negotiate(body) {
                Ok(()) => {
                    self.state = State::Data;
                    self.arm(now);
                    self.ack(out)
                }
                Err(e) => self.fail(e, out),
            };
        }
        let Some((number, rest)) = body.split_first_chunk::<2>() else {
            return Status::Idle;
        };
        let number = u16::from_be_bytes(*number);
        match (*op, self.state) {
            (DATA, _) => self.on_data(now, from, number, rest, out),
            (ERROR, State::Requesting | State::Data) => {
                self.state = State::Failed(BootError::Peer(ErrorCode::from_u16(number)));
                Status::Idle
            }
            _ => Status::Idle,
        }
    }

    /// Feeds a timer tick: call when `now` has reached [`poll_timeout`](Self::poll_timeout)
    /// (early or extra calls are harmless). Retransmits the request or the last ACK into `out`,
    /// or gives up after [`BootConfig::max_retries`] timeouts in a row without progress.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut [u8]) -> Status {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {}
            _ => return Status::Idle,
        }
        if self.retries >= self.max_retries {
            self.state = State::Failed(BootError::TimedOut);
            return Status::Idle;
        }
        self.retries += 1;
        self.arm(now);
        if self.state == State::Requesting {
            match self.request(out) {
                Some(len) => Status::Send(len),
                None => Status::Idle,
            }
        } else {
            self.ack(out)
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called; `None` once the
    /// transfer is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Requesting | State::Data => Some(self.deadline),
            State::Done | State::Failed(_) => None,
        }
    }

    /// The result once the transfer is over: the file's length (its bytes are
    /// `dest[..len]`), or why it failed.
    pub fn outcome(&self) -> Option<Result<usize, BootError>> {
        match self.state {
            State::Requesting | State::Data => None,
            State::Done => Some(Ok(self.bytes)),
            State::Failed(e) => Some(Err(e)),
        }
    }

    /// Bytes received so far (all at the start of the destination).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The server's address: its well-known port until it answers, then its TID.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The block size in force (512 until an OACK says otherwise).
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// The window size in force (1 until an OACK says otherwise).
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    // ---- internals ------------------------------------------------------------------------

    fn arm(&mut self, now: Instant) {
        self.deadline = now.add_micros(u64::from(self.rto_us));
    }

    fn lock(&mut self, from: SocketAddr) {
        self.peer = from;
        self.locked = true;
    }

    /// Ends the transfer with `error`, writing the ERROR for the server into `out`.
    fn fail(&mut self, error: BootError, out: &mut [u8]) -> Status {
        self.state = State::Failed(error);
        let code = match error {
            BootError::Options => ErrorCode::OptionNegotiation,
            BootError::TooLarge => ErrorCode::DiskFull,
            _ => ErrorCode::IllegalOperation,
        };
        match error_packet(out, code) {
            0 => Status::Idle,
            len => Status::Send(len),
        }
    }

    /// Writes the ACK of the last in-order block.
    fn ack(&mut self, out: &mut [u8]) -> Status {
        self.since_ack = 0;
        let [hi, lo] = self.last.to_be_bytes();
        match copy_into(out, 0, &[0, ACK, hi, lo]) {
            Some(()) => Status::Send(4),
            None => Status::Idle,
        }
    }

    /// Writes the request; `None` when it cannot be written.
    // A plain loop rather than `contains`, whose word-at-a-time search is larger code.
    #[allow(clippy::manual_contains)]
    fn request(&self, out: &mut [u8]) -> Option<usize> {
        if self.filename.iter().any(|&b| b == 0)
            || self.ask_blksize != 0 && !(8..=65464).contains(&self.ask_blksize)
        {
            return None;
        }
        let mut w = Writer { out, pos: 0 };
        w.put(&[0, RRQ])?;
        w.put(self.filename)?;
        w.put(b"\0octet\0")?;
        // In the engine's order.
        if self.ask_blksize != 0 {
            w.option(BLKSIZE, u32::from(self.ask_blksize))?;
        }
        if self.ask_timeout != 0 {
            w.option(TIMEOUT, u32::from(self.ask_timeout))?;
        }
        if self.ask_tsize {
            w.option(TSIZE, 0)?;
        }
        if self.ask_windowsize != 0 {
            w.option(WINDOWSIZE, u32::from(self.ask_windowsize))?;
        }
        (w.pos <= MAX_REQUEST_LEN).then_some(w.pos)
    }

    /// Checks an OACK's options (`body`) against what was asked and applies them.
    fn negotiate(&mut self, body: &[u8]) -> Result<(), BootError> {
        let (mut blksize, mut windowsize, mut rto_us) = (DEFAULT_BLKSIZE, 1, self.rto_us);
        let mut seen = 0u8;
        let mut rest = body;
        // Trailing NULs after the last option are padding.
        while rest.iter().any(|&b| b != 0) {
            let (name, value, after) = split_option(rest).ok_or(BootError::Options)?;
            rest = after;
            let v = parse_decimal(value).flatten().ok_or(BootError::Options)?;
            // An unasked `blksize 512` or `windowsize 1` only restates the default: accepted.
            let (bit, ok) = if name.eq_ignore_ascii_case(BLKSIZE) {
                blksize = v as u16;
                let (lo, hi) = match self.ask_blksize {
                    0 => (DEFAULT_BLKSIZE, DEFAULT_BLKSIZE),
                    asked => (8, asked),
                };
                (1, v >= u64::from(lo) && v <= u64::from(hi))
            } else if name.eq_ignore_ascii_case(TIMEOUT) && self.ask_timeout != 0 {
                rto_us = u32::from(self.ask_timeout) * 1_000_000;
                (2, v == u64::from(self.ask_timeout))
            } else if name.eq_ignore_ascii_case(TSIZE) && self.ask_tsize {
                if v > self.dest.len() as u64 {
                    return Err(BootError::TooLarge);
                }
                (4, true)
            } else if name.eq_ignore_ascii_case(WINDOWSIZE) {
                windowsize = v as u16;
                (8, v >= 1 && v <= u64::from(self.ask_windowsize.max(1)))
            } else {
                // Unknown, or not asked for.
                return Err(BootError::Options);
            };
            if !ok || seen & bit != 0 {
                return Err(BootError::Options);
            }
            seen |= bit;
        }
        self.blksize = blksize;
        self.windowsize = windowsize;
        self.rto_us = rto_us;
        self.retries = 0;
        Ok(())
    }

    fn on_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        block: u16,
        payload: &[u8],
        out: &mut [u8],
    ) -> Status {
        match self.state {
            State::Requesting if block == 1 => {
                // The server ignored our options: the defaults apply.
                self.lock(from);
                self.state = State::Data;
            }
            State::Data | State::Done => {}
            _ => return Status::Idle,
        }
        // Distance from the block expected next, within half the numbering cycle either way.
        let ahead = block.wrapping_sub(self.last.wrapping_add(1)) as i16;
        if ahead == 0 {
            if self.state == State::Data {
                return self.accept(now, payload, out);
            }
        } else if ahead < 0 {
            // A block we hold, `back` blocks before the next one (1: the last one).
            let back = ahead.unsigned_abs();
            if u32::from(back) <= self.blocks {
                return self.on_repeat(back, out);
            }
        } else if self.state == State::Data && !self.gap_acked {
            // A gap: acknowledge the last in-order block once; the server restarts after it.
            self.gap_acked = true;
            self.arm(now);
            return self.ack(out);
        }
        Status::Idle
    }

    fn accept(&mut self, now: Instant, payload: &[u8], out: &mut [u8]) -> Status {
        let len = payload.len();
        if len > usize::from(self.blksize) {
            return self.fail(BootError::Protocol, out);
        }
        if copy_into(self.dest, self.bytes, payload).is_none() {
            return self.fail(BootError::TooLarge, out);
        }
        self.bytes += len;
        self.last = self.last.wrapping_add(1);
        self.blocks = self.blocks.saturating_add(1);
        self.gap_acked = false;
        self.run = 0;
        self.retries = 0;
        self.since_ack += 1;
        self.arm(now);
        if len < usize::from(self.blksize) {
            self.state = State::Done;
            self.ack(out)
        } else if self.since_ack >= self.windowsize {
            self.ack(out)
        } else {
            Status::Idle
        }
    }

    /// A block we already hold, `back` blocks before the next one: the server went back (its
    /// timer fired, or one of our ACKs restarted its window while later blocks were in flight),
    /// or the network duplicated it.
    ///
    /// As in the engine: the first repeat of a run marks where the server's window now starts;
    /// the blocks of it we already hold count towards it, and the ACK goes out at its end. The
    /// rest of the run is ignored: ACKing every repeat would restart the server's window each
    /// time (the Sorcerer's Apprentice). Unlike the engine, a run starts only further back than
    /// the last repeat: the same block again is ignored, so a block repeated many times (by the
    /// network or the server) is re-acknowledged once, and our timer does the rest.
    fn on_repeat(&mut self, back: u16, out: &mut [u8]) -> Status {
        let run_start = self.run == 0 || back > self.run;
        self.run = back;
        if self.state == State::Done {
            // The final block again: our final ACK was lost.
            if back == 1 {
                return self.ack(out);
            }
        } else if run_start && back == 1 && self.since_ack == 0 {
            // The block we last acknowledged, alone: the server lost that ACK.
            return self.ack(out);
        } else if run_start {
            self.since_ack = self.since_ack.max(back);
            if self.since_ack >= self.windowsize {
                return self.ack(out);
            }
        }
        Status::Idle
    }
}

/// Writes into a buffer, failing (with `None`) rather than overrunning it.
struct Writer<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        copy_into(self.out, self.pos, bytes)?;
        self.pos += bytes.len();
        Some(())
    }

    /// Writes `name NUL value NUL`.
    #[inline(never)]
    fn option(&mut self, name: &[u8], value: u32) -> Option<()> {
        self.put(name)?;
        self.put(&[0])?;
        self.decimal(value)?;
        self.put(&[0])
    }

    // Its own 32-bit digit loop: `options::write_decimal` (64-bit, shared with the engine)
    // makes the firmware build about 100 bytes larger.
    fn decimal(&mut self, v: u32) -> Option<()> {
        // Digits from the last; `v` has at most 10.
        let mut digits = [0u8; 10];
        let mut n = 0;
        let mut rest = v;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
            n += 1;
            if rest == 0 {
                break;
            }
        }
        self.put(digits.get(digits.len() - n..)?)
    }
}

/// Copies `src` into `dst` at `at`; `None`, with nothing written, when it does not fit.
fn copy_into(dst: &mut [u8], at: usize, src: &[u8]) -> Option<()> {
    // Zipped rather than `copy_from_slice`, whose length check links the panic machinery.
    for (d, s) in dst.get_mut(at..)?.get_mut(..src.len())?.iter_mut().zip(src) {
        *d = *s;
    }
    Some(())
}

/// Splits `name NUL value NUL rest`; `None` when malformed (a missing NUL, an empty name).
fn split_option(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name, rest) = split_nul(bytes)?;
    let (value, rest) = split_nul(rest)?;
    (!name.is_empty()).then_some((name, value, rest))
}

/// Writes ERROR `code` with a short message cut to fit `out`; its length, or 0 when `out` is
/// shorter than an ERROR with an empty message. (`wire::encode_error_lossy` does the same for
/// any message, but links a panic path and makes the firmware build ~80 bytes larger.)
fn error_packet(out: &mut [u8], code: ErrorCode) -> usize {
    let message: &[u8] = match code {
        ErrorCode::UnknownTid => b"Unknown transfer ID",
        ErrorCode::OptionNegotiation => b"Bad option",
        ErrorCode::DiskFull => b"File too large",
        _ => b"Bad block",
    };
    let room = out.len().saturating_sub(5);
    let message = message.get(..room).unwrap_or(message);
    let mut w = Writer { out, pos: 0 };
    let [hi, lo] = code.as_u16().to_be_bytes();
    match w
        .put(&[0, ERROR, hi, lo])
        .and_then(|()| w.put(message))
        .and_then(|()| w.put(&[0]))
    {
        Some(()) => w.pos,
        None => 0,
    }
}

#[cfg(test)]
mod tests;
