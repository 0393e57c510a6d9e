//! The server table: a fixed-capacity (heapless, `no_std`) set of server transfers that routes
//! each datagram to its session and hands each new request to the application as an
//! [`Incoming`] to accept with any storage or refuse with an ERROR.
//!
//! The table knows sessions by `(local address, peer address)`. With one port per transfer (RFC
//! 1350) the local address is the transfer's own socket; in single-port mode it is the listening
//! address, and the peer address alone tells transfers apart. A request repeated by the same
//! client port while its session lives is dropped, not served twice; a *different* request from
//! that port means the client has moved on (UEFI's size probe ends its first session with
//! ERROR 8, and its next request may be read before that ERROR): the old session ends quietly and
//! the new request is handed over. When the table is full, new
//! requests get an ERROR, so a flood of requests costs bounded memory. Finished transfers come
//! out of [`ServerTable::poll_finished`] with their stats and their storage (so an upload can be
//! committed or discarded).

use core::net::SocketAddr;

use heapless::{Deque, Vec};

use crate::engine::{Config, ServerPolicy, Stats, Transfer, TransferError, TransferParams};
use crate::error_code::ErrorCode;
use crate::options::Options;
use crate::storage::Storage;
use crate::time::Instant;
use crate::wire::{encode_error_lossy, Mode, Packet, ParseError, Request, RequestKind, MAX_REQUEST_LEN};

/// Longest file name kept for reports; longer names are truncated there (not for serving).
pub const REPORT_NAME_LEN: usize = 128;

/// Longest ignored option name kept for reports ([`TransferReport::ignored_option`]).
pub const REPORT_OPTION_LEN: usize = 32;

/// A new request, borrowed from the datagram that carried it.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Incoming<'d> {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The local address the request arrived on (reply from there).
    pub local: SocketAddr,
    /// Read (the client downloads) or write (the client uploads).
    pub kind: RequestKind,
    /// The request itself: filename, mode, raw options.
    pub request: Request<'d>,
    /// The known options, decoded leniently.
    pub options: Options,
}

impl Incoming<'_> {
    /// The file name (bytes, not necessarily UTF-8).
    pub fn filename(&self) -> &[u8] {
        self.request.filename
    }

    /// The transfer mode.
    pub fn mode(&self) -> Mode<'_> {
        self.request.mode
    }
}

/// What [`ServerTable::handle_datagram`] made of a datagram.
#[derive(Debug)]
pub enum Datagram<'d> {
    /// A new request: accept it with [`ServerTable::accept`] or refuse it with
    /// [`ServerTable::refuse`].
    Request(Incoming<'d>),
    /// Delivered to an existing session, answered (e.g. ERROR 5) or dropped: nothing to do.
    Handled,
}

/// A datagram to send from a given local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerTransmit {
    /// The local address (socket) to send from.
    pub local: SocketAddr,
    /// The destination.
    pub destination: SocketAddr,
    /// Bytes at the start of the buffer to send.
    pub len: usize,
}

/// [`ServerTable::accept`] could not start a session because every slot is taken; the client
/// was sent an ERROR and the storage is handed back (so, e.g., an upload's temporary file can
/// be removed).
#[derive(Debug)]
pub struct Full<S>(pub S);

/// How a finished transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransferResult {
    /// Completed; the bytes moved.
    Completed(u64),
    /// The client declined our OACK with ERROR 8 (a size probe): ended quietly.
    Declined,
    /// Failed.
    Failed(TransferError),
}

impl TransferResult {
    /// Whether the transfer completed.
    pub fn is_success(&self) -> bool {
        matches!(self, TransferResult::Completed(_))
    }
}

/// The record of a finished transfer, for logs and metrics, with its storage.
#[derive(Debug)]
pub struct TransferReport<S> {
    /// The client.
    pub peer: SocketAddr,
    /// The local address the transfer used.
    pub local: SocketAddr,
    /// Read or write.
    pub kind: RequestKind,
    /// The file name (truncated to [`REPORT_NAME_LEN`] bytes).
    pub filename: Vec<u8, REPORT_NAME_LEN>,
    /// The name of an option the request left without a value at its end, which was ignored
    /// ([`Request::ignored_option`], truncated to [`REPORT_OPTION_LEN`] bytes); empty if none.
    pub ignored_option: Vec<u8, REPORT_OPTION_LEN>,
    /// The parameters negotiated.
    pub params: TransferParams,
    /// Counters, including the start time.
    pub stats: Stats,
    /// When it ended.
    pub ended: Instant,
    /// How it ended.
    pub result: TransferResult,
    /// The storage, for the application to commit (upload complete) or discard.
    pub storage: S,
}

impl<S> TransferReport<S> {
    /// Separates the storage from the record.
    pub fn into_parts(self) -> (TransferReport<()>, S) {
        let TransferReport {
            peer,
            local,
            kind,
            filename,
            ignored_option,
            params,
            stats,
            ended,
            result,
            storage,
        } = self;
        let report = TransferReport {
            peer,
            local,
            kind,
            filename,
            ignored_option,
            params,
            stats,
            ended,
            result,
            storage: (),
        };
        (report, storage)
    }
}

struct Session<S> {
    transfer: Transfer<'static, S>,
    local: SocketAddr,
    kind: RequestKind,
    filename: Vec<u8, REPORT_NAME_LEN>,
    ignored_option: Vec<u8, REPORT_OPTION_LEN>,
    /// Fingerprint of the request that started it, to tell a repeat from a new request.
    request: u64,
    /// Ended by a new request from its peer: sends nothing more, waits for `poll_finished`.
    superseded: bool,
    queued: bool,
    reported: bool,
    /// Listed in `sent`: its storage's idle work is due.
    idle_due: bool,
}

impl<S: Storage> Session<S> {
    /// Whether datagrams and timers still concern it.
    fn is_live(&self) -> bool {
        !self.superseded && !self.transfer.is_finished()
    }
}

/// FNV-1a over a request's kind, file name, mode and options: equal for a retransmission.
fn request_fingerprint(kind: RequestKind, request: &Request<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[kind as u8]);
    eat(request.filename);
    eat(&[0]);
    eat(request.mode.as_bytes());
    eat(&[0]);
    eat(request.options.as_bytes());
    h
}

/// Longest text of an immediate reply (an ERROR not tied to a session).
const REPLY_TEXT_LEN: usize = 120;

/// An immediate ERROR not tied to a session: from `local` to `to`.
struct Reply {
    local: SocketAddr,
    to: SocketAddr,
    code: ErrorCode,
    text: heapless::String<REPLY_TEXT_LEN>,
}

/// Writes `bytes` for a person to read in an ERROR text: printable ASCII as is, anything else
/// as `?`, at most 32 characters.
fn write_shown(out: &mut impl core::fmt::Write, bytes: &[u8]) -> core::fmt::Result {
    for &b in bytes.iter().take(32) {
        out.write_char(if (0x20..0x7f).contains(&b) {
            char::from(b)
        } else {
            '?'
        })?;
    }
    if bytes.len() > 32 {
        out.write_str("...")?;
    }
    Ok(())
}

/// The ERROR text for a request in a mode no transfer can run (`mail`, or unknown), saying
/// what was asked and what is accepted; `None` for octet and netascii.
fn mode_refusal_text(mode: Mode<'_>) -> Option<heapless::String<REPLY_TEXT_LEN>> {
    use core::fmt::Write;
    let mut text = heapless::String::new();
    // A text that does not fit is cut short (the quoted mode is at most 35 characters).
    let _ = match mode {
        Mode::Octet | Mode::Netascii => return None,
        Mode::Mail => text.write_str("mail mode is not supported: use octet or netascii"),
        Mode::Unknown(m) => text
            .write_str("unknown transfer mode \"")
            .and_then(|()| write_shown(&mut text, m))
            .and_then(|()| text.write_str("\": use octet or netascii")),
    };
    Some(text)
}

/// The ERROR 4 text for a datagram on the listening port that is no valid request, saying what
/// was wrong and what is accepted.
fn parse_refusal_text(e: &ParseError) -> heapless::String<REPLY_TEXT_LEN> {
    use core::fmt::Write;
    let mut text = heapless::String::new();
    let _ = match e {
        ParseError::UnknownOpcode(op) => write!(
            text,
            "unknown opcode {op}: a transfer starts with a read (RRQ, 1) or write (WRQ, 2) request"
        ),
        ParseError::RequestTooLong { len } => write!(
            text,
            "request of {len} octets is over the {MAX_REQUEST_LEN} allowed: shorten the file name or options"
        ),
        other => text.write_str(other.message()),
    };
    text
}

/// Most datagrams one session sends in a row from [`ServerTable::poll_transmit`] before the
/// next session's turn.
pub const BURST: u16 = 64;

/// A fixed-capacity table of up to `N` server transfers.
pub struct ServerTable<S, const N: usize> {
    slots: Vec<Option<Session<S>>, N>,
    live: usize,
    limit: usize,
    /// Sessions that may have something to send.
    ready: Deque<u16, N>,
    /// Immediate replies not tied to a session (refusals, ERROR 5).
    replies: Deque<Reply, 8>,
    /// Finished sessions waiting for `poll_finished`.
    done: Deque<u16, N>,
    /// Sessions that sent since the last [`idle`](Self::idle).
    sent: Deque<u16, N>,
    /// Datagrams the session at the front of `ready` sent in a row (see [`BURST`]).
    streak: u16,
    policy: ServerPolicy,
    config: Config,
}

impl<S: Storage, const N: usize> ServerTable<S, N> {
    /// An empty table serving with `policy` and `config`.
    pub fn new(policy: ServerPolicy, config: Config) -> Self {
        assert!(N <= u16::MAX as usize, "ServerTable capacity must fit in u16");
        ServerTable {
            slots: Vec::new(),
            live: 0,
            limit: N,
            ready: Deque::new(),
            replies: Deque::new(),
            done: Deque::new(),
            sent: Deque::new(),
            streak: 0,
            policy,
            config,
        }
    }

    /// Lowers the number of concurrent sessions below the capacity `N` (a runtime cap).
    pub fn set_session_limit(&mut self, limit: usize) {
        self.limit = limit.min(N);
    }

    /// Sessions in progress.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether a new session would be refused.
    pub fn is_full(&self) -> bool {
        self.live >= self.limit
    }

    /// Whether no session is in progress.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The policy new sessions negotiate with.
    pub fn policy(&self) -> &ServerPolicy {
        &self.policy
    }

    /// The live session of `peer` on `local`. A finished session waiting for `poll_finished`
    /// no longer counts: the peer may already have started a new one (the UEFI size probe ends
    /// its first session with ERROR 8 and sends the next request at once).
    fn find(&self, local: SocketAddr, peer: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.transfer.peer() == peer && s.local == local && s.is_live())
        })
    }

    fn mark_ready(&mut self, i: usize) {
        if let Some(Some(s)) = self.slots.get_mut(i) {
            if !s.queued && self.ready.push_back(i as u16).is_ok() {
                s.queued = true;
            }
        }
    }

    fn reply(&mut self, local: SocketAddr, to: SocketAddr, code: ErrorCode, message: &str) {
        let mut text = heapless::String::new();
        // Cut at a character boundary when too long (callers' texts are shorter).
        for c in message.chars() {
            if text.push(c).is_err() {
                break;
            }
        }
        self.reply_text(local, to, code, text);
    }

    fn reply_text(
        &mut self,
        local: SocketAddr,
        to: SocketAddr,
        code: ErrorCode,
        text: heapless::String<REPLY_TEXT_LEN>,
    ) {
        // When the reply queue is full the datagram is dropped: replies are best effort.
        let _ = self.replies.push_back(Reply {
            local,
            to,
            code,
            text,
        });
    }

    /// Feeds a datagram that arrived on `local` from `from`.
    ///
    /// `listening` says whether `local` is a listening address (where requests are accepted);
    /// datagrams for sessions are routed by `(local, from)` either way. Requests sent to a
    /// broadcast or multicast address are ignored (RFC 1123). Datagrams from source port 0 are
    /// dropped: nothing can be sent back to that port, so they would only hold a session.
    pub fn handle_datagram<'d>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        listening: bool,
        datagram: &'d [u8],
    ) -> Datagram<'d> {
        if from.port() == 0 {
            return Datagram::Handled;
        }
        // RFC 1123: requests sent to a broadcast (or multicast) address are ignored, and nothing
        // else sent there is answered either (a reply would come from that address).
        if listening && is_broadcast(local) {
            return Datagram::Handled;
        }
        if let Some(i) = self.find(local, from) {
            if let Some(Some(s)) = self.slots.get_mut(i) {
                s.transfer.handle_datagram(now, from, datagram);
            }
            self.mark_ready(i);
            return Datagram::Handled;
        }
        let parsed = Packet::parse(datagram);
        if !listening {
            // A session socket hearing from a stranger: that session answers ERROR 5 itself.
            if let Some(i) = self
                .slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.local == local))
            {
                if let Some(Some(s)) = self.slots.get_mut(i) {
                    s.transfer.handle_datagram(now, from, datagram);
                }
                self.mark_ready(i);
            }
            return Datagram::Handled;
        }
        match parsed {
            Ok(Packet::Rrq(request)) | Ok(Packet::Wrq(request)) => {
                let kind = if matches!(parsed, Ok(Packet::Rrq(_))) {
                    RequestKind::Read
                } else {
                    RequestKind::Write
                };
                // The mode is checked before anything else, so an unknown mode is reported as
                // such whatever the file (and nothing is looked up for it).
                if let Some(text) = mode_refusal_text(request.mode) {
                    self.reply_text(local, from, ErrorCode::IllegalOperation, text);
                    return Datagram::Handled;
                }
                let fingerprint = request_fingerprint(kind, &request);
                let live = self.slots.iter().position(|s| {
                    s.as_ref()
                        .is_some_and(|s| s.transfer.peer() == from && s.is_live())
                });
                if let Some(s) = live.and_then(|i| self.slots[i].as_mut()) {
                    if s.request == fingerprint {
                        // A repeat of the request whose session is alive (on its own port).
                        return Datagram::Handled;
                    }
                    // The client has moved on: end its old session quietly (an ERROR from it
                    // could be taken for the answer to the new request).
                    s.superseded = true;
                    if !s.reported {
                        s.reported = true;
                        if let Some(i) = live {
                            let _ = self.done.push_back(i as u16);
                        }
                    }
                }
                Datagram::Request(Incoming {
                    peer: from,
                    local,
                    kind,
                    request,
                    options: Options::parse_request(&request.options).options,
                })
            }
            Ok(Packet::Error { .. }) => Datagram::Handled,
            Ok(Packet::Data { .. }) | Ok(Packet::Ack { .. }) => {
                self.reply(local, from, ErrorCode::UnknownTid, "Unknown transfer ID");
                Datagram::Handled
            }
            Ok(Packet::Oack { .. }) => {
                self.reply(local, from, ErrorCode::IllegalOperation, "Unexpected OACK");
                Datagram::Handled
            }
            // An ERROR is never answered, even a malformed one (`00 05`, `00 05 00`): two
            // endpoints could otherwise bounce ERRORs between them forever.
            Err(_) if datagram.get(..2) == Some(&[0, 5]) => Datagram::Handled,
            Err(e) => {
                self.reply_text(local, from, ErrorCode::IllegalOperation, parse_refusal_text(&e));
                Datagram::Handled
            }
        }
    }

    /// Starts serving `incoming` with `storage`, from the local address `tid` (a new socket for
    /// one-port-per-transfer, or `incoming.local` in single-port mode).
    pub fn accept(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        storage: S,
        tid: SocketAddr,
    ) -> Result<(), Full<S>> {
        let policy = self.policy;
        self.accept_with(now, incoming, storage, tid, &policy)
    }

    /// Like [`accept`](Self::accept) with a policy for this transfer only.
    pub fn accept_with(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        storage: S,
        tid: SocketAddr,
        policy: &ServerPolicy,
    ) -> Result<(), Full<S>> {
        if self.is_full() {
            self.refuse(incoming, ErrorCode::NotDefined, "Server busy, try again later");
            return Err(Full(storage));
        }
        let transfer = Transfer::server(
            now,
            incoming.peer,
            incoming.kind,
            &incoming.request,
            storage,
            policy,
            self.config,
        );
        let name = incoming.request.filename;
        let mut filename = Vec::new();
        let _ = filename.extend_from_slice(&name[..name.len().min(REPORT_NAME_LEN)]);
        let ignored = incoming.request.ignored_option;
        let mut ignored_option = Vec::new();
        let _ = ignored_option.extend_from_slice(&ignored[..ignored.len().min(REPORT_OPTION_LEN)]);
        let session = Session {
            transfer,
            local: tid,
            kind: incoming.kind,
            filename,
            ignored_option,
            request: request_fingerprint(incoming.kind, &incoming.request),
            superseded: false,
            queued: false,
            reported: false,
            idle_due: false,
        };
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(session);
                i
            }
            None => match self.slots.push(Some(session)) {
                Ok(()) => self.slots.len() - 1,
                Err(session) => {
                    self.refuse(incoming, ErrorCode::NotDefined, "Server busy, try again later");
                    let storage = session.map(|s| s.transfer.into_storage());
                    return Err(Full(storage.expect("the rejected slot holds the session")));
                }
            },
        };
        self.live += 1;
        self.mark_ready(i);
        Ok(())
    }

    /// Refuses `incoming` with an ERROR sent from the address it arrived on.
    pub fn refuse(&mut self, incoming: &Incoming<'_>, code: ErrorCode, message: &'static str) {
        self.reply(incoming.local, incoming.peer, code, message);
    }

    /// Feeds a timer tick to every session whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let due = match &self.slots[i] {
                Some(s) => !s.superseded && s.transfer.poll_timeout().is_some_and(|t| t <= now),
                None => false,
            };
            if due {
                if let Some(s) = self.slots[i].as_mut() {
                    s.transfer.handle_timeout(now);
                }
                self.mark_ready(i);
            }
        }
    }

    /// The earliest deadline of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.superseded)
            .filter_map(|s| s.transfer.poll_timeout())
            .min()
    }

    /// The next datagram to send, written into `buf`, with the local address to send it from.
    /// Sessions take turns of up to [`BURST`] datagrams each, so consecutive datagrams usually
    /// share a socket and destination (a transport may batch them). Call until `None` after
    /// every input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<ServerTransmit> {
        if let Some(r) = self.replies.pop_front() {
            let len = encode_error_lossy(buf, r.code, r.text.as_bytes()).ok()?;
            return Some(ServerTransmit {
                local: r.local,
                destination: r.to,
                len,
            });
        }
        while let Some(i) = self.ready.pop_front() {
            let i = usize::from(i);
            let Some(Some(s)) = self.slots.get_mut(i) else {
                continue;
            };
            s.queued = false;
            if s.superseded {
                continue;
            }
            // Drain the session's events: the table reports outcomes itself.
            while s.transfer.poll_event().is_some() {}
            if let Some(tx) = s.transfer.poll_transmit(now, buf) {
                let out = ServerTransmit {
                    local: s.local,
                    destination: tx.destination,
                    len: tx.len,
                };
                if !s.idle_due && self.sent.push_back(i as u16).is_ok() {
                    s.idle_due = true;
                }
                // Keep the turn for up to BURST datagrams (a window goes out in one run, which
                // a transport can send with one system call), then go to the back of the line.
                self.streak += 1;
                if self.streak < BURST && self.ready.push_front(i as u16).is_ok() {
                    s.queued = true;
                } else {
                    self.streak = 0;
                    self.mark_ready(i);
                }
                return Some(out);
            }
            self.streak = 0;
            while s.transfer.poll_event().is_some() {}
            if s.transfer.is_finished() && !s.reported {
                s.reported = true;
                let _ = self.done.push_back(i as u16);
            }
        }
        None
    }

    /// Lets the storage of every session that sent something since the last call do its
    /// deferred work ([`Storage::idle`]: read the next block ahead, write out gathered ones).
    /// Call it after the datagrams from [`poll_transmit`](Self::poll_transmit) are on their
    /// way and before waiting for input, so that work overlaps the round trip.
    pub fn idle(&mut self) {
        while let Some(i) = self.sent.pop_front() {
            if let Some(Some(s)) = self.slots.get_mut(usize::from(i)) {
                s.idle_due = false;
                s.transfer.storage_mut().idle();
            }
        }
    }

    /// The next finished transfer, removed from the table.
    pub fn poll_finished(&mut self, now: Instant) -> Option<TransferReport<S>> {
        let s = loop {
            let i = usize::from(self.done.pop_front()?);
            if let Some(s) = self.slots.get_mut(i).and_then(Option::take) {
                break s;
            }
        };
        self.live -= 1;
        let result = match s.transfer.outcome() {
            Some(Ok(bytes)) if bytes == 0 && is_declined(&s.transfer) => TransferResult::Declined,
            Some(Ok(bytes)) => TransferResult::Completed(bytes),
            Some(Err(e)) => TransferResult::Failed(e.clone()),
            None => TransferResult::Failed(TransferError::Aborted),
        };
        let report = TransferReport {
            peer: s.transfer.peer(),
            local: s.local,
            kind: s.kind,
            filename: s.filename,
            ignored_option: s.ignored_option,
            params: s.transfer.params(),
            stats: s.transfer.stats(),
            ended: now,
            result,
            storage: s.transfer.into_storage(),
        };
        Some(report)
    }

    /// Aborts every session (sending each peer an ERROR), e.g. at shutdown.
    pub fn abort_all(&mut self, code: ErrorCode, message: &'static str) {
        for i in 0..self.slots.len() {
            if let Some(s) = self.slots[i].as_mut() {
                s.transfer.abort(code, message);
                self.mark_ready(i);
            }
        }
    }

    /// Local addresses of live sessions (so a transport can close sockets no longer used).
    pub fn session_locals(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.slots.iter().flatten().map(|s| s.local)
    }
}

fn is_declined<S: Storage>(t: &Transfer<'static, S>) -> bool {
    t.declined()
}

fn is_broadcast(local: SocketAddr) -> bool {
    match local {
        SocketAddr::V4(a) => a.ip().is_broadcast() || a.ip().is_multicast(),
        SocketAddr::V6(a) => a.ip().is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut table: ServerTable<Idling<'_>, 4> =
            ServerTable::new(ServerPolicy::default(), Config::default());
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
            let Datagram::Request(incoming) = table.handle_datagram(now, listen, peers[k], true, plain)
            else {
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
            let mut table: ServerTable<&'static [u8], 4> =
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
        let mut table: ServerTable<&'static [u8], 4> =
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
        let mut table: ServerTable<&'static [u8], 4> =
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
}
