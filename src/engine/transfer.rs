//! The [`Transfer`]: one TFTP transfer in either role and direction, as a sans-IO state machine.
//!
//! A transfer is a data *sender* (client write, server read) or a data *receiver* (client read,
//! server write); the roles differ only in the handshake, so the data path is written once. All
//! decisions live here: TID checks, the handshake, window and ACK logic, timers, and events.

use core::net::SocketAddr;

use super::blocks::Numbering;
use super::dally::Dally;
use super::datapath::{DataPath, TextCursor};
use super::event::{Event, PeerError, ProtocolError, Stats, TransferError};
use super::negotiate::{client_accept_oack, server_negotiate, Refusal, ServerPolicy, TransferParams};
use super::pace::Pacer;
use super::rto::Rto;
use super::Config;
use crate::error_code::ErrorCode;
use crate::options::{OptionList, Options};
use crate::storage::{Storage, StorageError};
use crate::time::{duration_micros, Instant};
use crate::wire::{
    data_payload_slot, encode_ack, encode_error_lossy, encode_oack, encode_request_raw, EncodeError, Mode,
    Packet, Request, RequestKind, DATA_HEADER_LEN,
};

/// A datagram to send, written by [`Transfer::poll_transmit`] at the start of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length: send exactly `buf[..len]`.
    pub len: usize,
}

/// The next datagram a transfer will send, before it is written ([`Transfer::peek_transmit`]):
/// where it goes and the most bytes it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NextTransmit {
    /// Where it goes.
    pub destination: SocketAddr,
    /// Its length at most: a buffer of this many bytes holds it.
    pub max_len: usize,
}

/// Datagrams written back to back by [`Transfer::poll_transmit_batch`], all to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransmitBatch {
    /// Where they all go.
    pub destination: SocketAddr,
    /// How many: their lengths are the first `count` entries of the caller's `lens`.
    pub count: usize,
    /// Their bytes in all: send `buf[..len]`, datagram by datagram.
    pub len: usize,
}

/// The transfer mode a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransferMode {
    /// Raw bytes.
    #[default]
    Octet,
    /// Text, converted to and from netascii.
    Netascii,
}

impl TransferMode {
    /// The mode as written in a request.
    fn wire(self) -> Mode<'static> {
        match self {
            TransferMode::Octet => Mode::Octet,
            TransferMode::Netascii => Mode::Netascii,
        }
    }
}

/// What a client asks the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientRequest<'a> {
    /// Read (download) or write (upload).
    pub kind: RequestKind,
    /// The remote file name.
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: TransferMode,
    /// Options to request. For a write, a requested `tsize` is replaced by the storage's size;
    /// for a read it is sent as 0.
    pub options: Options,
}

/// A client's request, kept to resend it (its options are the transfer's `options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct PendingRequest<'a> {
    kind: RequestKind,
    filename: &'a [u8],
    mode: TransferMode,
}

/// Which packet to (re)send besides data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Control {
    Request,
    Oack,
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Phase {
    /// Client: request sent, waiting for the first answer.
    Requesting,
    /// Server sending: OACK sent, waiting for ACK 0.
    OackSent,
    /// Blocks flowing.
    Data,
    /// Receiver: final block acknowledged; re-acknowledge repeats until the deadline.
    Dally,
    /// Over; nothing more to do once queued packets are sent.
    Done,
}

/// Sending side of the data path.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct SendState {
    /// Highest block index acknowledged.
    acked: u64,
    /// Next block index to send.
    next: u64,
    /// Last block index of the current window.
    window_end: u64,
    /// Highest block index ever sent.
    sent_max: u64,
    /// Final block index and its length, once read.
    last: Option<(u64, usize)>,
    /// The file's size when the transfer began, when the storage knows it: the file must end
    /// exactly there.
    size: Option<u64>,
    /// RTT probe: a block sent once, and when.
    probe: Option<(u64, Instant)>,
    /// Spreads windows out after losses.
    pace: Pacer,
    /// The current window's tail-loss probe: armed when its last block left, spent once sent.
    tail_probe: TailProbe,
    /// When the current window's last block first left.
    window_out: Option<Instant>,
    /// Smoothed delay from a window's last block to its ACK, in microseconds (0: unknown).
    tail_delay_us: u32,
    /// When the current window's tail-loss probe left.
    probe_sent: Option<Instant>,
    /// The window (by its first block) that a repeated ACK already restarted: once per window.
    stall_restart: u64,
    /// Where a netascii sender stands in the file.
    text: TextCursor,
}

/// The tail-loss probe of a window (see `Transfer::handle_timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum TailProbe {
    /// The window is not fully sent, or windows are single blocks.
    #[default]
    Idle,
    /// The window's last block left; the deadline is the probe's.
    Armed,
    /// Sent: the deadline is the retransmission timeout again.
    Spent,
}

/// Receiving side of the data path.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct RecvState {
    /// Highest block index received in order.
    received: u64,
    /// Payload bytes received (wire bytes).
    bytes: u64,
    /// File bytes written (differs from `bytes` for netascii).
    written: u64,
    /// In-order blocks since the last ACK.
    since_ack: u16,
    /// The current gap was already reported with an ACK.
    gap_acked: bool,
    /// Index of the last repeated block of the current run of repeats (0: none since the
    /// last new block).
    repeat_run: u64,
    /// When our last first-time ACK (or request/OACK) left: the next in-order block samples
    /// the round trip from it. Cleared on retransmission (Karn's rule).
    probe: Option<Instant>,
}

/// Which final event is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Outcome {
    Finished,
    Declined,
    Failed(TransferError),
}

/// One TFTP transfer (client or server, read or write) as a sans-IO state machine.
///
/// See the [module documentation](super) for the driving loop.
#[derive(Debug)]
pub struct Transfer<'a, S> {
    storage: S,
    peer: SocketAddr,
    /// Client before the first answer: the server's TID (port) is not known yet.
    peer_locked: bool,
    /// Whether anything from the peer was accepted (an ACK, DATA, OACK or ERROR of its TID).
    answered: bool,
    sending: bool,
    phase: Phase,
    params: TransferParams,
    numbering: Numbering,
    rto: Rto,
    /// [`Config::idle_timeout`] in microseconds.
    idle_us: u64,
    /// The longest dally: [`Config::max_dally`], at most [`Config::max_rto`], in microseconds.
    dally_limit_us: u64,
    max_retries: u8,
    /// [`Config::total_timeout`] in microseconds.
    patience_us: u64,
    max_write_size: Option<u64>,
    retries: u8,
    /// When the transfer last made progress (or started): the total timeout counts from here.
    progress_at: Instant,
    /// The last retransmission our own timer caused, not yet answered: when, and (sending) the
    /// first block it resent. An answer sooner than half the path's round trip after it was on
    /// its way before it: the retransmission was spurious.
    timer_rexmit: Option<(Instant, u64)>,
    deadline: Option<Instant>,
    last_heard: Instant,
    data: DataPath,
    /// The sending side, in roles that send: only ever used when [`Self::sends`].
    send: SendState,
    recv: RecvState,
    /// Client: the request to (re)send.
    request: Option<PendingRequest<'a>>,
    /// Server: the OACK to (re)send; client: the options requested.
    options: Options,
    control: Option<Control>,
    error_out: Option<(ErrorCode, &'static str)>,
    /// A stranger owed an ERROR 5 (one at a time; more are dropped).
    stray: Option<SocketAddr>,
    negotiated_pending: bool,
    progress_reported: u64,
    outcome: Option<Outcome>,
    outcome_reported: bool,
    stats: Stats,
}

impl<'a, S: Storage> Transfer<'a, S> {
    /// Starts a client transfer: the request goes to `server` (its well-known port) on the first
    /// [`poll_transmit`](Self::poll_transmit); the answer's source port becomes the server's TID.
    ///
    /// Fails, before anything is sent, when the request cannot be encoded: a filename holding a
    /// NUL, or a request longer than the 512 octets RFC 2347 allows.
    pub fn client(
        now: Instant,
        server: SocketAddr,
        request: ClientRequest<'a>,
        storage: S,
        config: Config,
    ) -> Result<Self, EncodeError> {
        Self::start_client(now, server, request, storage, config)
    }

    /// Starts a server transfer answering `request` from `peer`, with the file in `storage`.
    ///
    /// Options are decoded leniently and negotiated under `policy`; the first packet is the OACK
    /// (when an option was accepted), DATA 1 for a read, or ACK 0 for a write. A request the
    /// transfer cannot serve (mode `mail` or unknown, a `tsize` over the limit) yields a transfer
    /// whose only packet is the ERROR and whose only event is [`Event::Failed`].
    pub fn server(
        now: Instant,
        peer: SocketAddr,
        kind: RequestKind,
        request: &Request<'_>,
        mut storage: S,
        policy: &ServerPolicy,
        mut config: Config,
    ) -> Self {
        let sending = kind == RequestKind::Read;
        let netascii = request.mode == Mode::Netascii;
        let requested = Options::parse_request(&request.options).options;
        // Netascii wire size differs from the file size: leave tsize unanswered then.
        let size = if sending && !netascii && requested.tsize.is_some() {
            storage.size()
        } else {
            None
        };
        let negotiated = match request.mode {
            Mode::Octet | Mode::Netascii => server_negotiate(kind, &requested, size, policy),
            Mode::Mail => Err(Refusal {
                code: ErrorCode::IllegalOperation,
                message: "mail mode is not supported: use octet or netascii",
            }),
            Mode::Unknown(_) => Err(Refusal {
                code: ErrorCode::IllegalOperation,
                message: "unknown transfer mode: use octet or netascii",
            }),
        };
        if policy.max_write_size.is_some() {
            config.max_write_size = policy.max_write_size;
        }
        let mut t = Self::new(now, peer, sending, netascii, storage, config, None, Options::NONE);
        match &negotiated {
            Ok(n) => debug!("tftp {}: asked {:?}, granted {:?}", peer, requested, n.params),
            Err(r) => warn!("tftp {}: request refused: {}", peer, r.message),
        }
        match negotiated {
            Err(r) => {
                let e = TransferError::Refused {
                    code: r.code,
                    message: r.message,
                };
                t.fail(e, Some((r.code, r.message)));
            }
            Ok(n) => {
                t.apply(n.params);
                t.negotiated_pending = true;
                t.options = n.oack;
                if !n.oack.is_empty() {
                    t.control = Some(Control::Oack);
                    if sending {
                        t.phase = Phase::OackSent;
                    }
                    t.arm(now);
                } else if sending {
                    t.start_window(now);
                } else {
                    t.control = Some(Control::Ack);
                    t.arm(now);
                }
            }
        }
        t
    }
}

impl<'a, S: Storage> Transfer<'a, S> {
    /// A transfer in its first state: a client's (`request` given, with the `options` it asks
    /// for) about to send its request, or a server's in the data phase, which the caller then
    /// sets up. Built as one value, straight where the caller wants it: a transfer is large,
    /// and building it in steps would copy it.
    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        peer: SocketAddr,
        sending: bool,
        netascii: bool,
        mut storage: S,
        config: Config,
        request: Option<PendingRequest<'a>>,
        options: Options,
    ) -> Self {
        let size = if sending { storage.size() } else { None };
        let rto = Rto::new(&config);
        Transfer {
            storage,
            peer,
            peer_locked: request.is_none(),
            answered: false,
            sending,
            phase: if request.is_some() {
                Phase::Requesting
            } else {
                Phase::Data
            },
            params: TransferParams::default(),
            numbering: Numbering::new(None),
            rto,
            idle_us: duration_micros(config.idle_timeout),
            dally_limit_us: duration_micros(config.max_dally).min(duration_micros(config.max_rto)),
            max_retries: config.max_retries,
            patience_us: duration_micros(config.total_timeout),
            max_write_size: config.max_write_size,
            retries: 0,
            progress_at: now,
            timer_rexmit: None,
            deadline: request.map(|_| now.add_micros(rto.current_micros())),
            last_heard: now,
            data: DataPath::new(netascii, sending),
            send: SendState {
                size,
                ..SendState::default()
            },
            recv: RecvState::default(),
            request,
            options,
            control: request.map(|_| Control::Request),
            error_out: None,
            stray: None,
            negotiated_pending: false,
            progress_reported: 0,
            outcome: None,
            outcome_reported: false,
            stats: Stats {
                started: now,
                bytes: 0,
                retransmissions: 0,
                timeouts: 0,
                duplicate_acks: 0,
                dropped: 0,
                spurious_retransmissions: 0,
            },
        }
    }

    fn start_client(
        now: Instant,
        server: SocketAddr,
        request: ClientRequest<'a>,
        mut storage: S,
        config: Config,
    ) -> Result<Self, EncodeError> {
        let sending = request.kind == RequestKind::Write;
        let mut options = request.options;
        if options.tsize.is_some() {
            options.tsize = if sending && request.mode == TransferMode::Octet {
                storage.size()
            } else if sending {
                None
            } else {
                Some(0)
            };
        }
        // Encoding into an empty buffer checks the request without writing it: a valid one only
        // lacks room.
        match encode_request_raw(
            &mut [],
            request.kind,
            request.filename,
            request.mode.wire().as_bytes(),
            &options,
            OptionList::EMPTY,
        ) {
            Err(EncodeError::BufferTooSmall { .. }) | Ok(_) => {}
            Err(e) => return Err(e),
        }
        let pending = PendingRequest {
            kind: request.kind,
            filename: request.filename,
            mode: request.mode,
        };
        Ok(Self::new(
            now,
            server,
            sending,
            request.mode == TransferMode::Netascii,
            storage,
            config,
            Some(pending),
            options,
        ))
    }

    // ---- inputs ---------------------------------------------------------------------------

    /// Feeds a datagram received from `from` at `now`.
    ///
    /// Datagrams from another TID are answered with ERROR 5 and otherwise ignored; malformed or
    /// unexpected ones are dropped. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        if !self.peer_locked {
            // The first answer fixes the server's TID; it must come from the server's address.
            if from.ip() != self.peer.ip() {
                debug!(
                    "tftp {}: dropped a datagram from {}: not the server's address",
                    self.peer, from
                );
                self.stats.dropped += 1;
                return;
            }
        } else if from != self.peer {
            // A stranger gets ERROR 5, unless it sent an ERROR itself: errors are never answered,
            // and answering them could bounce ERROR 5 between two endpoints forever.
            let is_error = datagram.get(..2) == Some(&[0, 5]);
            if is_error || self.stray.is_some() {
                debug!("tftp {}: dropped a datagram from stranger {}", self.peer, from);
                self.stats.dropped += 1;
            } else {
                debug!("tftp {}: datagram from stranger {}: ERROR 5", self.peer, from);
                self.stray = Some(from);
            }
            return;
        }
        // Requests are dropped like malformed datagrams: a running transfer never accepts one.
        let Some(packet) = Packet::parse_in_transfer(datagram) else {
            debug!(
                "tftp {}: dropped a malformed datagram ({} bytes)",
                from,
                datagram.len()
            );
            self.stats.dropped += 1;
            return;
        };
        let opcode = packet.opcode();
        let accepted = match packet {
            Packet::Error { code, message } => {
                self.on_peer_error(code, message);
                true
            }
            Packet::Oack { options } => self.on_oack(now, options),
            Packet::Ack { block } => self.on_ack(now, block),
            Packet::Data { block, payload } => self.on_data(now, block, payload),
            // Never: `parse_in_transfer` drops requests.
            Packet::Rrq(_) | Packet::Wrq(_) => false,
        };
        if accepted {
            if !self.peer_locked {
                self.peer = from;
                self.peer_locked = true;
            }
            self.answered = true;
            self.last_heard = now;
        } else {
            // A stale or repeated block, an ACK for a block never sent, an OACK out of turn.
            trace!("tftp {}: dropped an unexpected {:?}", from, opcode);
            self.stats.dropped += 1;
        }
    }

    /// Feeds a timer tick: call when `now` has reached [`poll_timeout`](Self::poll_timeout).
    /// Calling it early or often is harmless.
    #[inline(never)]
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        if now >= self.idle_deadline() {
            self.fail(TransferError::Idle, Some((ErrorCode::NotDefined, "Idle timeout")));
            return;
        }
        let Some(deadline) = self.deadline else { return };
        if now < deadline {
            return;
        }
        if self.phase == Phase::Dally {
            self.phase = Phase::Done;
            self.deadline = None;
            return;
        }
        if self.sends() && self.phase == Phase::Data && self.snd().tail_probe == TailProbe::Armed {
            // Tail-loss probe: the whole window left a while ago and no ACK came. If its last
            // blocks were lost, the receiver saw no gap and waits for them; resending the last
            // block shows it the gap (it acknowledges what it holds), well before a full
            // retransmission timeout would restart the window. Not a retry: no backoff.
            let s = self.snd_mut();
            s.tail_probe = TailProbe::Spent;
            s.next = s.next.saturating_sub(1).max(s.acked + 1);
            s.probe = None;
            s.probe_sent = Some(now);
            s.pace.on_probe();
            let resent = s.next;
            debug!(
                "tftp {}: no ACK for the window: tail-loss probe, block {} again",
                self.peer, resent
            );
            if self.retries == 0 {
                self.stats.retransmissions += 1;
            }
            self.timer_rexmit = Some((now, resent));
            self.arm(now);
            return;
        }
        self.stats.timeouts += 1;
        if self.retries >= self.max_retries {
            // The retries are spent; give up only once the total timeout has passed too.
            let give_up_at = self.progress_at.add_micros(self.patience_us);
            if now < give_up_at {
                self.deadline = Some(give_up_at);
                return;
            }
            self.fail(
                TransferError::TimedOut,
                Some((ErrorCode::NotDefined, "Timed out")),
            );
            return;
        }
        self.retries += 1;
        self.rto.back_off();
        debug!(
            "tftp {}: timeout {} of {}: resending (next wait {} us)",
            self.peer,
            self.retries,
            self.max_retries,
            self.rto.current_micros()
        );
        if self.sends() {
            self.snd_mut().probe = None;
        }
        if self.sends() && self.phase == Phase::Data {
            // Go back to the first unacknowledged block; the window restarts there. Both sides'
            // timers may have fired: its ACK says nothing about the receiver's speed.
            self.restart_window();
            let s = self.snd_mut();
            s.pace.on_timeout();
            self.timer_rexmit = Some((now, s.acked + 1));
        } else {
            self.timer_rexmit = Some((now, 0));
            // A server resends its OACK until the client's first answer (ACK 0 or DATA 1).
            let oack_unanswered =
                self.phase == Phase::OackSent || (self.recv.received == 0 && !self.options.is_empty());
            self.control = Some(match self.phase {
                Phase::Requesting => Control::Request,
                _ if self.serves() && oack_unanswered => Control::Oack,
                _ => Control::Ack,
            });
            self.stats.retransmissions += 1;
        }
        self.arm(now);
    }

    /// Aborts the transfer, sending ERROR `code` with `message` to the peer.
    pub fn abort(&mut self, code: ErrorCode, message: &'static str) {
        if self.phase != Phase::Done {
            self.fail(TransferError::Aborted, Some((code, message)));
        }
    }

    // ---- outputs --------------------------------------------------------------------------

    /// Writes the next datagram to send into `buf` and says where it goes, or `None` when there
    /// is nothing to send now. Call until `None` after every input.
    ///
    /// `buf` must hold the largest packet of the transfer: `4 + blksize` bytes (512 + 4 covers
    /// any request, OACK or ERROR); [`Transfer::max_datagram_len`] tells, right after the
    /// transfer is created. A buffer too small for a DATA packet fails the transfer with
    /// [`TransferError::BufferTooSmall`]. [`peek_transmit`](Self::peek_transmit) says where the
    /// next datagram goes and how long it can be before it is written;
    /// [`poll_transmit_batch`](Self::poll_transmit_batch) writes a whole window at once.
    ///
    /// Stopping early is allowed: a driver whose socket is full may leave the rest for later;
    /// what was not polled is produced by a later call (a window's blocks, a pending ACK).
    ///
    /// Receive buffers: a datagram of a transfer is at most `4 + blksize` bytes, so a receive
    /// buffer of [`max_datagram_len`](Self::max_datagram_len) holds any valid one. A longer
    /// datagram cut to the buffer could look valid, so the std adapter receives into 65,536
    /// bytes (any UDP payload) and lets the engine judge the real length.
    #[inline(never)] // Smaller out of line (measured on the firmware example).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(to) = self.stray.take() {
            let len = encode_error_lossy(buf, ErrorCode::UnknownTid, b"Unknown transfer ID").ok()?;
            return Some(Transmit { destination: to, len });
        }
        if let Some((code, message)) = self.error_out.take() {
            let len = encode_error_lossy(buf, code, message.as_bytes()).ok()?;
            return Some(self.to_peer(len));
        }
        if let Some(control) = self.control.take() {
            match self.encode_control(control, buf) {
                Ok(len) => {
                    self.recv.probe = (self.retries == 0).then_some(now);
                    return Some(self.to_peer(len));
                }
                Err(needed) => {
                    self.fail(TransferError::BufferTooSmall { needed }, None);
                    return None;
                }
            }
        }
        if self.sends() && self.phase == Phase::Data {
            return self.transmit_data(now, buf);
        }
        None
    }

    /// What the next [`poll_transmit`](Self::poll_transmit) at `now` will send, without
    /// writing or changing anything: its destination and the most bytes it can take (516 for a
    /// request, OACK, ACK or ERROR; `4 + blksize` for DATA). `None` exactly when `poll_transmit`
    /// would return `None` (given a buffer of at least `max_len` bytes).
    ///
    /// For zero-copy sends: reserve `max_len` bytes in the socket's buffer for `destination`
    /// (smoltcp's `send_with`, embassy-net's `send_to_with`), then let `poll_transmit` write
    /// into them; it writes at most that much, to that destination. A driver that cannot send
    /// now (a full socket) may simply stop calling `poll_transmit` and come back later:
    /// nothing is lost, the datagram is produced then.
    pub fn peek_transmit(&self, now: Instant) -> Option<NextTransmit> {
        const CONTROL: usize = crate::wire::MAX_REQUEST_LEN + DATA_HEADER_LEN;
        let to_peer = |max_len| NextTransmit {
            destination: self.peer,
            max_len,
        };
        if let Some(to) = self.stray {
            return Some(NextTransmit {
                destination: to,
                max_len: CONTROL,
            });
        }
        if self.error_out.is_some() || self.control.is_some() {
            return Some(to_peer(CONTROL));
        }
        let data = self.sends()
            && self.phase == Phase::Data
            && self.window_open()
            && self.snd().pace.would_send(now);
        data.then(|| to_peer(DATA_HEADER_LEN + usize::from(self.params.blksize)))
    }

    /// Writes every datagram due now to one destination (a window, or a single packet) into
    /// `buf`, back to back, with their lengths in `lens`: one call where
    /// [`poll_transmit`](Self::poll_transmit) would be called once per datagram, ready for a
    /// batched send (`sendmmsg`, segmentation offload). Stops before a datagram to another
    /// destination, when `lens` is full, or when `buf` has no room left for the next one;
    /// call again until `None`.
    ///
    /// `buf` must hold at least [`max_datagram_len`](Self::max_datagram_len) bytes; a window of
    /// `n` blocks fits whole in `n * max_datagram_len()` bytes.
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        lens: &mut [usize],
    ) -> Option<TransmitBatch> {
        let destination = self.peek_transmit(now)?.destination;
        let (mut count, mut len) = (0, 0);
        while count < lens.len() {
            let Some(next) = self.peek_transmit(now) else {
                break;
            };
            if next.destination != destination {
                break;
            }
            let room = &mut buf[len..];
            if room.len() < next.max_len && count > 0 {
                break;
            }
            // (The first one with too little room fails the transfer, as `poll_transmit` says.)
            let Some(tx) = self.poll_transmit(now, room) else {
                break;
            };
            lens[count] = tx.len;
            len += tx.len;
            count += 1;
        }
        (count > 0).then_some(TransmitBatch {
            destination,
            count,
            len,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever (a
    /// retransmission, the end of a pause between paced bursts, the dally's end, the idle
    /// limit).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let idle = self.idle_deadline();
        let mut at = self.deadline.map_or(idle, |d| d.min(idle));
        if let Some(resume) = self.window_open().then(|| self.snd().pace.resume_at()).flatten() {
            at = at.min(resume);
        }
        Some(at)
    }

    /// Whether a sender has a block of its current window still to send.
    fn window_open(&self) -> bool {
        self.sends() && self.phase == Phase::Data && {
            let s = self.snd();
            s.next <= s.window_end && s.last.is_none_or(|(l, _)| s.next <= l)
        }
    }

    /// The next event, if any. Events come in order: [`Event::Negotiated`], then
    /// [`Event::Progress`] (coalesced), then one final event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.negotiated_pending && self.phase != Phase::Requesting && self.phase != Phase::OackSent {
            self.negotiated_pending = false;
            if !matches!(self.outcome, Some(Outcome::Failed(_)) | Some(Outcome::Declined)) {
                return Some(Event::Negotiated(self.params));
            }
        }
        let bytes = self.bytes();
        if bytes != self.progress_reported && self.outcome.is_none() {
            self.progress_reported = bytes;
            return Some(Event::Progress { bytes });
        }
        if self.outcome_reported {
            return None;
        }
        let outcome = self.outcome.clone()?;
        self.outcome_reported = true;
        Some(match outcome {
            Outcome::Finished => Event::Finished { bytes },
            Outcome::Declined => Event::OptionsDeclined,
            Outcome::Failed(e) => Event::Failed(e),
        })
    }

    /// Whether the transfer is over and has nothing left to send: drop it (after draining events).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
            && self.error_out.is_none()
            && self.stray.is_none()
            && self.control.is_none()
    }

    /// The result once known: `Some(Ok(bytes))` on success, `Some(Err(_))` on failure
    /// (`OptionsDeclined` counts as success with 0 bytes).
    pub fn outcome(&self) -> Option<Result<u64, &TransferError>> {
        match self.outcome.as_ref()? {
            Outcome::Finished => Some(Ok(self.bytes())),
            Outcome::Declined => Some(Ok(0)),
            Outcome::Failed(e) => Some(Err(e)),
        }
    }

    /// Whether the peer declined our OACK with ERROR 8 (see [`Event::OptionsDeclined`]).
    pub fn declined(&self) -> bool {
        self.outcome == Some(Outcome::Declined)
    }

    /// Whether the peer has answered: a datagram from it was accepted (for a server, the
    /// client's first ACK or DATA; a spoofed request never gets this far). A server table
    /// never displaces such a session to make room.
    pub fn peer_answered(&self) -> bool {
        self.answered
    }

    /// The peer's address and port (its TID once known).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The parameters in force (defaults until negotiation ends).
    pub fn params(&self) -> TransferParams {
        self.params
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            bytes: self.bytes(),
            ..self.stats
        }
    }

    /// The largest datagram this transfer can emit, from its creation to its end: size
    /// `poll_transmit`'s buffer to this once, right after creating the transfer.
    ///
    /// That is `4 + blksize` for the largest block size the transfer may use (for a client, the
    /// one it asks for: the server's OACK can only lower it), and at least 516, which holds any
    /// request, OACK, ACK or ERROR.
    pub fn max_datagram_len(&self) -> usize {
        // A client's `options` are those it asks for; a server's, those it grants.
        let asked = self.options.blksize.unwrap_or(0);
        let blksize = self.params.blksize.max(asked);
        (DATA_HEADER_LEN + usize::from(blksize)).max(crate::wire::MAX_REQUEST_LEN + 4)
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, mutably.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Consumes the transfer, returning the storage.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// A finished download's dally, to keep instead of the transfer: then take the storage
    /// back at once with [`into_storage`](Self::into_storage). The [`Dally`] acknowledges a
    /// repeated final DATA (RFC 1350's dally) until it ends by itself, so the file can be
    /// committed, or the image booted, without waiting the dally out.
    ///
    /// `Some` once the transfer received its last block ([`Event::Finished`]) and its final
    /// ACK was polled out ([`poll_transmit`](Self::poll_transmit) returned `None`); `None` while
    /// it runs, after a failure, and for a sender (which has no dally).
    pub fn dally(&self) -> Option<Dally> {
        let ready = !self.sending
            && matches!(self.outcome, Some(Outcome::Finished))
            && matches!(self.phase, Phase::Dally | Phase::Done)
            && self.control.is_none()
            && self.error_out.is_none()
            && self.stray.is_none();
        let deadline = if self.phase == Phase::Dally {
            self.deadline
        } else {
            None
        };
        ready.then(|| {
            Dally::new(
                self.peer,
                self.numbering.wire(self.recv.received),
                self.rto,
                self.dally_limit_us,
                deadline,
            )
        })
    }

    // ---- internals ------------------------------------------------------------------------

    /// Whether this transfer sends data.
    fn sends(&self) -> bool {
        self.sending
    }

    /// Whether this is a server's transfer.
    fn serves(&self) -> bool {
        self.request.is_none()
    }

    /// The sending side (meaningful for a transfer that [`sends`](Self::sends)).
    fn snd(&self) -> &SendState {
        &self.send
    }

    /// The sending side, mutably.
    fn snd_mut(&mut self) -> &mut SendState {
        &mut self.send
    }

    fn to_peer(&self, len: usize) -> Transmit {
        Transmit {
            destination: self.peer,
            len,
        }
    }

    fn bytes(&self) -> u64 {
        if self.sends() {
            let bs = u64::from(self.params.blksize);
            let s = self.snd();
            match s.last {
                Some((l, len)) if s.acked >= l => (l - 1) * bs + len as u64,
                _ => s.acked * bs,
            }
        } else {
            self.recv.bytes
        }
    }

    fn apply(&mut self, params: TransferParams) {
        self.params = params;
        self.numbering = Numbering::new(params.rollover);
        if let Some(t) = params.timeout {
            self.rto.set_fixed(t);
        }
    }

    /// When the transfer gives up if nothing more is heard from the peer.
    fn idle_deadline(&self) -> Instant {
        self.last_heard.add_micros(self.idle_us)
    }

    /// (Re)arms the retransmission timer from `now`.
    fn arm(&mut self, now: Instant) {
        self.deadline = Some(now.add_micros(self.rto.current_micros()));
    }

    fn progress(&mut self, now: Instant) {
        self.progress_at = now;
        self.timer_rexmit = None;
        self.retries = 0;
        self.rto.reset_backoff();
    }

    fn fail(&mut self, error: TransferError, send: Option<(ErrorCode, &'static str)>) {
        if self.outcome.is_none() {
            warn!("tftp {}: failed: {:?}", self.peer, error);
            self.outcome = Some(Outcome::Failed(error));
        }
        self.stop(send);
    }

    /// Ends the transfer (its outcome already set), queueing `send` for the peer.
    fn stop(&mut self, send: Option<(ErrorCode, &'static str)>) {
        self.error_out = send;
        self.control = None;
        self.phase = Phase::Done;
        self.deadline = None;
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.outcome.is_none() {
            debug!("tftp {}: ended: {:?}, {} bytes", self.peer, outcome, self.bytes());
        }
        self.outcome.get_or_insert(outcome);
    }

    fn on_peer_error(&mut self, code: ErrorCode, message: &[u8]) {
        // A client answering our OACK with ERROR 8 (UEFI's size probe) ends the session quietly.
        let declined = code == ErrorCode::OptionNegotiation
            && self.serves()
            && !self.options.is_empty()
            && (self.phase == Phase::OackSent || (!self.sends() && self.recv.received == 0));
        if declined {
            self.finish(Outcome::Declined);
            self.phase = Phase::Done;
            self.control = None;
            self.deadline = None;
        } else {
            if self.outcome.is_none() {
                warn!("tftp {}: the peer sent ERROR {:?}", self.peer, code);
                // Built in place: the message is copied once, straight into the outcome.
                let e = self
                    .outcome
                    .insert(Outcome::Failed(TransferError::Peer(PeerError::new(code))));
                if let Outcome::Failed(TransferError::Peer(e)) = e {
                    e.set_message(message);
                }
            }
            self.stop(None);
        }
    }

    #[inline(never)]
    fn on_oack(&mut self, now: Instant, list: OptionList<'_>) -> bool {
        let Some(request) = self.request.filter(|_| self.phase == Phase::Requesting) else {
            return false;
        };
        if let Some(sent) = self.recv.probe.take() {
            self.rto.sample(now.micros_since(sent));
        }
        match client_accept_oack(request.kind, &self.options, &list) {
            Ok(params) => {
                debug!(
                    "tftp {}: asked {:?}, granted {:?}",
                    self.peer, self.options, params
                );
                self.apply(params);
                self.negotiated_pending = true;
                self.progress(now);
                self.phase = Phase::Data;
                if self.sends() {
                    self.start_window(now);
                } else {
                    self.control = Some(Control::Ack);
                    self.arm(now);
                }
            }
            Err(e) => self.fail(
                TransferError::Oack(e),
                Some((ErrorCode::OptionNegotiation, e.message())),
            ),
        }
        true
    }

    fn on_ack(&mut self, now: Instant, block: u16) -> bool {
        if !self.sends() {
            return false;
        }
        match self.phase {
            Phase::Requesting if block == 0 => {
                if let Some(sent) = self.recv.probe.take() {
                    self.rto.sample(now.micros_since(sent));
                }
                // The server ignored our options (or we sent none): defaults apply.
                self.apply(TransferParams {
                    tsize: self.options.tsize,
                    ..TransferParams::default()
                });
                self.negotiated_pending = true;
                self.progress(now);
                self.phase = Phase::Data;
                self.start_window(now);
                true
            }
            Phase::OackSent if block == 0 => {
                if let Some(sent) = self.recv.probe.take() {
                    self.rto.sample(now.micros_since(sent));
                }
                self.progress(now);
                self.phase = Phase::Data;
                self.start_window(now);
                true
            }
            Phase::Data => {
                let before = self.snd().acked;
                let Some(j) = self.numbering.resolve(before, block) else {
                    return false;
                };
                if j <= before {
                    self.stats.duplicate_acks += 1;
                    if j == before && self.receiver_lacks_window(now) {
                        self.restart_stalled_window(now);
                    }
                    return true;
                }
                if j > self.snd().sent_max {
                    return false;
                }
                if let Some((p, at)) = self.snd().probe {
                    if p <= j {
                        self.rto.sample(now.micros_since(at));
                        self.snd_mut().probe = None;
                    }
                }
                self.snd_mut().acked = j;
                if let Some((at, first)) = self.timer_rexmit {
                    let resent_to = (self.snd().next - 1).min(j);
                    if resent_to >= first && self.answered_too_soon(now, at) {
                        self.stats.spurious_retransmissions += resent_to - first + 1;
                    }
                }
                self.progress(now);
                if self.snd().last.is_some_and(|(l, _)| j >= l) {
                    self.finish(Outcome::Finished);
                    self.phase = Phase::Done;
                    self.deadline = None;
                    return true;
                }
                let sent = self.snd().next - 1;
                if j < sent {
                    debug!(
                        "tftp {}: ACK {} of {} sent: resending from block {}",
                        self.peer,
                        j,
                        sent,
                        j + 1
                    );
                    // A gap: the receiver has everything up to j; the window restarts after it.
                    self.stats.retransmissions += sent - j;
                }
                let s = self.snd_mut();
                if let (Some(out), TailProbe::Idle | TailProbe::Armed) = (s.window_out, s.tail_probe) {
                    if j + 1 == s.next {
                        // A whole window acknowledged without a probe: how long its ACK took
                        // after its last block (smoothed like a round trip).
                        let d = u32::try_from(now.micros_since(out)).unwrap_or(u32::MAX).max(1);
                        let t = s.tail_delay_us;
                        s.tail_delay_us = if t == 0 { d } else { (t - t / 8 + d / 8).max(1) };
                    }
                }
                let max_wait = self.rto.current_micros();
                let windowsize = self.params.windowsize;
                let base_rtt = self.rto.min_rtt_micros();
                self.snd_mut()
                    .pace
                    .on_ack(now, j - before, sent - before, windowsize, base_rtt, max_wait);
                self.start_window(now);
                true
            }
            _ => false,
        }
    }

    /// Opens a window right after the last acknowledged block.
    fn start_window(&mut self, now: Instant) {
        self.phase = Phase::Data;
        self.restart_window();
        self.arm(now);
    }

    /// Puts the window right after the last acknowledged block.
    fn restart_window(&mut self) {
        let windowsize = u64::from(self.params.windowsize);
        let s = self.snd_mut();
        s.next = s.acked + 1;
        s.window_end = s.acked + windowsize;
        s.tail_probe = TailProbe::Idle;
        s.window_out = None;
        s.probe_sent = None;
    }

    /// Whether a repeated ACK of the last acknowledged block, arriving at `now`, says that the
    /// receiver waited out its own timeout without the window: RFC 7440 asks a receiver that
    /// times out to acknowledge the last block it holds, and the sender to go back there. It
    /// does when a window of more than one block is out and the ACK comes a quarter of the
    /// receiver's timeout (the negotiated `timeout`, else our own) after the window's last
    /// block, never within two round trips of it; or when it answers our tail-loss probe.
    /// Sooner, it may be a copy of the ACK that started the window (a network that duplicates
    /// or delays datagrams), which must not cost anything; a receiver's immediate report of a
    /// gap at the window's first block is left to the probe and the timers. Once per window,
    /// so a repeated ACK can never make every later block go out twice (the Sorcerer's
    /// Apprentice).
    fn receiver_lacks_window(&self, now: Instant) -> bool {
        let s = self.snd();
        let Some(out) = s.window_out.filter(|_| s.next > s.acked + 1) else {
            return false;
        };
        if s.stall_restart == s.acked + 1 {
            return false;
        }
        let min_rtt = self.rto.min_rtt_micros();
        if let Some(probed) = s.probe_sent {
            // The probe's answer: the receiver still lacks the window's first block.
            return now.micros_since(probed) >= min_rtt / 2;
        }
        let timeout = match self.params.timeout {
            Some(secs) => u64::from(secs) * 1_000_000,
            None => self.rto.current_micros(),
        };
        now.micros_since(out) >= (timeout / 4).max(min_rtt.saturating_mul(2))
    }

    /// The receiver waited out its timeout without the window: the window starts again after
    /// the last block acknowledged, and the bursts shrink (see `Pacer::on_stall`).
    fn restart_stalled_window(&mut self, now: Instant) {
        let base_rtt = self.rto.min_rtt_micros();
        let max_wait = self.rto.current_micros();
        let windowsize = self.params.windowsize;
        debug!(
            "tftp {}: the receiver repeated ACK {}: window again",
            self.peer,
            self.snd().acked
        );
        let s = self.snd_mut();
        let resent = s.next - 1 - s.acked;
        s.stall_restart = s.acked + 1;
        s.pace.on_stall(now, windowsize, base_rtt, max_wait);
        self.stats.retransmissions += resent;
        self.restart_window();
        self.arm(now);
    }

    /// Whether an answer at `now` to a retransmission made at `at` came too soon to be its
    /// answer (under half the smallest round trip measured): it answered the original, and
    /// the retransmission was spurious. Unknown (false) before any round trip was measured.
    fn answered_too_soon(&self, now: Instant, at: Instant) -> bool {
        let min_rtt = self.rto.min_rtt_micros();
        min_rtt > 0 && now.micros_since(at) < min_rtt / 2
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if !self.window_open() || !self.snd_mut().pace.may_send(now) {
            return None;
        }
        let i = self.snd().next;
        let bs = usize::from(self.params.blksize);
        let needed = DATA_HEADER_LEN + bs;
        if buf.len() < needed {
            self.fail(TransferError::BufferTooSmall { needed }, None);
            return None;
        }
        let wire = self.numbering.wire(i);
        let slot = data_payload_slot(&mut buf[..needed], wire).ok()?;
        let bs64 = bs as u64;
        let acked = self.snd().acked;
        // Field by field: the sending side, the storage and the data path are borrowed at once.
        let text = &mut self.send.text;
        let read = self
            .data
            .read_block(text, &mut self.storage, (i - 1) * bs64, acked * bs64, slot);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                self.fail(TransferError::Storage(e), Some((e.error_code(), e.message())));
                return self.poll_transmit(now, buf);
            }
        };
        // A file that shrank or grew since the transfer began would reach the peer silently
        // truncated or spliced: it must end exactly at its size, and nothing may lie past it.
        let end = self.data.file_offset(&self.snd().text, (i - 1) * bs64 + n as u64);
        if self
            .snd()
            .size
            .is_some_and(|size| end > size || (n < bs && end != size))
        {
            let e = StorageError::Changed;
            self.fail(TransferError::Storage(e), Some((e.error_code(), e.message())));
            return self.poll_transmit(now, buf);
        }
        let (last, sent_max) = (self.snd().last, self.snd().sent_max);
        match last {
            // A block that was read full before now reads short (the file shrank), or the final
            // block changed length: what the peer already has no longer matches the file.
            Some((l, len)) if (i < l && n != bs) || (i == l && n != len) => {
                let e = StorageError::Changed;
                self.fail(TransferError::Storage(e), Some((e.error_code(), e.message())));
                return self.poll_transmit(now, buf);
            }
            None if n < bs && i <= sent_max => {
                let e = StorageError::Changed;
                self.fail(TransferError::Storage(e), Some((e.error_code(), e.message())));
                return self.poll_transmit(now, buf);
            }
            None if n < bs => self.snd_mut().last = Some((i, n)),
            _ => {}
        }
        if i > sent_max {
            let s = self.snd_mut();
            s.sent_max = i;
            if s.probe.is_none() {
                s.probe = Some((i, now));
            }
        } else {
            self.snd_mut().probe = None;
            if self.retries > 0 {
                self.stats.retransmissions += 1;
            }
        }
        let s = self.snd_mut();
        s.next = i + 1;
        let first = i == s.acked + 1;
        s.pace.on_send(now, first);
        self.arm(now);
        if self.params.windowsize > 1 && self.snd().tail_probe == TailProbe::Idle && !self.window_open() {
            let rto = self.rto.current_micros();
            let min_rto = self.rto.min_micros();
            let s = self.snd_mut();
            if s.window_out.is_none() {
                s.window_out = Some(now);
            }
            if s.tail_delay_us != 0 {
                // The window is out: probe its tail if its ACK is later than twice the usual
                // delay after a window's last block (at least a millisecond, at most the
                // retransmission timeout). Unless the receiver has lost blocks before (the
                // sender paces), never sooner than the retransmission timeout's floor: a
                // receiver merely descheduled for a while must not get a block twice (see the
                // `rto` module).
                let floor = if s.pace.is_pacing() { 1_000 } else { min_rto };
                let wait = u64::from(s.tail_delay_us).saturating_mul(2).max(floor).min(rto);
                s.tail_probe = TailProbe::Armed;
                self.deadline = Some(now.add_micros(wait));
            }
        }
        Some(self.to_peer(DATA_HEADER_LEN + n))
    }

    // Kept out of line, as `on_oack` and `handle_timeout` are: inlined, each is duplicated
    // into several paths of the caller (measured on the firmware example: 218 B smaller).
    #[inline(never)]
    fn on_data(&mut self, now: Instant, block: u16, payload: &[u8]) -> bool {
        if self.sends() {
            return false;
        }
        match self.phase {
            Phase::Requesting => {
                if block != 1 {
                    return false;
                }
                // The server ignored our options: defaults apply.
                self.apply(TransferParams::default());
                self.negotiated_pending = true;
                self.phase = Phase::Data;
            }
            Phase::Data | Phase::Dally => {}
            _ => return false,
        }
        let expected = self.recv.received + 1;
        let Some(i) = self.numbering.resolve(expected, block) else {
            return false;
        };
        if i == expected && self.phase == Phase::Data {
            self.accept_block(now, payload);
        } else if i < expected {
            self.on_repeat(now, i);
        } else if i > expected && !self.recv.gap_acked {
            // A gap: acknowledge the last in-order block once; the sender restarts after it.
            debug!(
                "tftp {}: gap: block {} came, {} expected: ACK {}",
                self.peer,
                i,
                expected,
                expected - 1
            );
            self.recv.gap_acked = true;
            self.recv.since_ack = 0;
            self.control = Some(Control::Ack);
            self.arm(now);
        }
        true
    }

    /// A block we already hold: the sender went back (its timer fired, or one of our ACKs
    /// restarted its window while later blocks were in flight), or the network duplicated it.
    ///
    /// The first repeat of a run marks where the sender's window now starts; the blocks of that
    /// window we already hold count towards it, and the ACK goes out at its end, as for new
    /// blocks. The rest of the run is ignored. ACKing every repeat instead would restart the
    /// sender's window mid-way each time, so that every later window overlaps the one before
    /// it: one duplicated datagram would make the rest of the transfer send blocks twice.
    fn on_repeat(&mut self, now: Instant, i: u64) {
        let received = self.recv.received;
        let run_start = self.recv.repeat_run == 0 || i <= self.recv.repeat_run;
        self.recv.repeat_run = i;
        if self.phase == Phase::Dally && i == received {
            // The final block again: our final ACK was lost. Acknowledge it again, and wait
            // longer for a further repeat, as the sender backs off between its retransmissions.
            debug!("tftp {}: the final block again: final ACK again", self.peer);
            self.control = Some(Control::Ack);
            self.rto.back_off();
            self.deadline = Some(self.dally_end(now));
        } else if run_start && i == received && self.recv.since_ack == 0 {
            // The block we last acknowledged, alone: the sender lost that ACK (or probes
            // for it). Acknowledge it again; the window was not restarted.
            self.control = Some(Control::Ack);
        } else if run_start {
            let held = u16::try_from(received - i + 1).unwrap_or(u16::MAX);
            self.recv.since_ack = self.recv.since_ack.max(held);
            if self.recv.since_ack >= self.params.windowsize {
                self.control = Some(Control::Ack);
            }
        }
    }

    /// When a receiver that sent its final ACK at `now` may leave: two retransmission
    /// intervals, so a sender that lost our final ACK can repeat its final DATA and be answered
    /// (each repeat answered re-arms it with the backed-off interval, following the sender's
    /// backoff); at most `max_dally`, as every client that waits for the end of a download
    /// waits this long.
    fn dally_end(&self, now: Instant) -> Instant {
        // Doubled by an addition: a 64-bit multiplication is longer code on 32-bit targets.
        let rto = self.rto.current_micros();
        now.add_micros(rto.saturating_add(rto).min(self.dally_limit_us))
    }

    fn accept_block(&mut self, now: Instant, payload: &[u8]) {
        let bs = usize::from(self.params.blksize);
        if payload.len() > bs {
            let e = ProtocolError::DataTooLong;
            self.fail(
                TransferError::Protocol(e),
                Some((ErrorCode::IllegalOperation, e.message())),
            );
            return;
        }
        let total = self.recv.bytes + payload.len() as u64;
        if self.max_write_size.is_some_and(|max| total > max) {
            self.fail(
                TransferError::TooLarge,
                Some((ErrorCode::DiskFull, "File too large")),
            );
            return;
        }
        let written = self
            .data
            .write_block(&mut self.storage, &mut self.recv.written, payload);
        let last = payload.len() < bs;
        let done = match written {
            Ok(()) if last => self
                .data
                .finish_write(&mut self.storage, &mut self.recv.written)
                .and_then(|()| self.storage.finish()),
            other => other,
        };
        if let Err(e) = done {
            self.fail(TransferError::Storage(e), Some((e.error_code(), e.message())));
            return;
        }
        if let Some(sent) = self.recv.probe.take() {
            self.rto.sample(now.micros_since(sent));
        }
        if let Some((at, _)) = self.timer_rexmit {
            if self.answered_too_soon(now, at) {
                self.stats.spurious_retransmissions += 1;
            }
        }
        self.recv.received += 1;
        self.recv.bytes = total;
        self.recv.gap_acked = false;
        self.recv.repeat_run = 0;
        self.recv.since_ack += 1;
        self.progress(now);
        if last {
            self.control = Some(Control::Ack);
            self.finish(Outcome::Finished);
            self.phase = Phase::Dally;
            self.deadline = Some(self.dally_end(now));
        } else if self.recv.since_ack >= self.params.windowsize {
            self.recv.since_ack = 0;
            self.control = Some(Control::Ack);
            self.arm(now);
        } else {
            self.arm(now);
        }
    }

    fn encode_control(&mut self, control: Control, buf: &mut [u8]) -> Result<usize, usize> {
        let needed = |e| match e {
            crate::wire::EncodeError::BufferTooSmall { needed } => needed,
            _ => 0,
        };
        match control {
            Control::Request => {
                let r = self.request.ok_or(0usize)?;
                encode_request_raw(
                    buf,
                    r.kind,
                    r.filename,
                    r.mode.wire().as_bytes(),
                    &self.options,
                    OptionList::EMPTY,
                )
                .map_err(needed)
            }
            Control::Oack if self.serves() => {
                encode_oack(buf, &self.options, OptionList::EMPTY).map_err(needed)
            }
            // Only a server queues an OACK.
            Control::Oack => Err(0),
            Control::Ack => {
                self.recv.since_ack = 0;
                encode_ack(buf, self.numbering.wire(self.recv.received)).map_err(needed)
            }
        }
    }
}
