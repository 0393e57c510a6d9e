//! The server table: the set of server transfers of a server, over storage the caller picks (a
//! fixed array in `no_std`, a growable `Vec` with the `alloc` feature; see [`SlotStorage`]). It
//! routes each datagram to its session and hands each new request to the application as an
//! [`Incoming`] to accept with any storage or refuse with an ERROR.
//!
//! Sessions are named by [`SessionHandle`]s: [`ServerTable::accept`] returns one, and a datagram
//! that arrived on a session's own socket (one port per transfer, RFC 1350) is routed by it in
//! O(1) with [`ServerTable::handle_session_datagram`]. Datagrams on a listening socket (new
//! requests, and every datagram in single-port mode, where the peer address alone tells
//! transfers apart) are routed by a hash index of peer addresses, and the next deadline comes
//! from a heap of deadlines: no operation visits every session.
//!
//! A request repeated by the same client port while its session lives is dropped, not served
//! twice; a *different* request from that port means the client has moved on (UEFI's size
//! probe ends its first session with ERROR 8, and its next request may be read before that
//! ERROR): the old session ends quietly and the new request is handed over.
//!
//! **Admission.** At the session limit, a new request displaces the oldest session whose peer
//! has never answered (no ACK or DATA from it: a spoofed request, a client gone); a session
//! whose peer has answered is never displaced. A flood of spoofed requests therefore costs
//! bounded memory and cannot keep a real client out; only when every session has an answering
//! peer is a request refused with ERROR 0. Finished transfers come out of
//! [`ServerTable::poll_finished`] with their stats and their storage (so an upload can be
//! committed or discarded).
//!
//! A driver's loop: feed each datagram; on a request, collect finished transfers
//! ([`poll_finished`](ServerTable::poll_finished), which frees slots) and then accept or
//! refuse; send everything [`poll_transmit`](ServerTable::poll_transmit) gives; give the
//! storages their [`idle`](ServerTable::idle) turn; wait for the next datagram or
//! [`poll_timeout`](ServerTable::poll_timeout), then [`handle_timeout`](ServerTable::handle_timeout).
//!
//! ```
//! use tftp_proto::engine::{Config, ServerPolicy};
//! use tftp_proto::server::{ArrayTable, Datagram, ServerTable};
//! use tftp_proto::Instant;
//!
//! // 16 sessions inline, no allocation (`ServerTable::growable` gives a Vec that grows instead).
//! let mut table: ArrayTable<&'static [u8], 16> =
//!     ServerTable::new(ServerPolicy::default(), Config::default());
//! let listen = "10.0.0.1:69".parse().unwrap();
//! let client = "10.0.0.2:40000".parse().unwrap();
//! let request = b"\x00\x01boot.efi\x00octet\x00";
//! let now = Instant::ZERO;
//! if let Datagram::Request(incoming) = table.handle_datagram(now, listen, client, true, request) {
//!     while table.poll_finished(now).is_some() {} // frees slots first
//!     // Single-port mode: the session answers from the listening address.
//!     let session = table.accept(now, &incoming, &b"file contents"[..], listen).unwrap();
//!     // Datagrams on a session's own socket: `table.handle_session_datagram(now, session, ..)`.
//!     let _ = session;
//! }
//! let mut buf = [0u8; 1024];
//! let tx = table.poll_transmit(now, &mut buf).unwrap(); // DATA 1
//! assert_eq!((&buf[..4], tx.destination), (&[0, 3, 0, 1][..], client));
//! ```

use core::net::SocketAddr;

use heapless::{Deque, Vec};

mod slots;

use slots::{bucket_of, done_link, peer_hash, ready_link, sent_link, AgeList, DeadlineHeap, Fifo, NIL};
pub use slots::{SessionHandle, Slot, SlotStorage};

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

impl Incoming<'_> {
    /// An owned copy of the request ([`OwnedIncoming`]): the bytes it borrows are copied into a
    /// fixed 512-byte buffer, no heap. `None` only when they exceed the 512 octets a request may
    /// have, which an `Incoming` from [`ServerTable::handle_datagram`] never does.
    pub fn detach(&self) -> Option<OwnedIncoming> {
        let r = &self.request;
        let mut bytes = Vec::new();
        let mut ends = [0u16; 3];
        let parts = [
            r.filename,
            r.mode.as_bytes(),
            r.options.as_bytes(),
            r.ignored_option,
        ];
        for (i, part) in parts.iter().enumerate() {
            bytes.extend_from_slice(part).ok()?;
            if let Some(end) = ends.get_mut(i) {
                // At most 512: fits.
                *end = bytes.len() as u16;
            }
        }
        Some(OwnedIncoming {
            peer: self.peer,
            local: self.local,
            kind: self.kind,
            options: self.options,
            bytes,
            ends,
        })
    }
}

/// A new request, owned: an [`Incoming`] whose bytes were copied ([`Incoming::detach`]) into a
/// fixed 512-byte buffer (no heap), so the decision to accept or refuse it can wait (an
/// `.await`, another thread, a queue) while the receive buffer takes the next datagram.
/// [`incoming`](Self::incoming) lends it back as an [`Incoming`] for [`ServerTable::accept`]
/// or [`ServerTable::refuse`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OwnedIncoming {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The local address the request arrived on (reply from there).
    pub local: SocketAddr,
    /// Read (the client downloads) or write (the client uploads).
    pub kind: RequestKind,
    /// The known options, decoded leniently.
    pub options: Options,
    /// File name, mode, raw options and ignored option name, back to back.
    bytes: Vec<u8, MAX_REQUEST_LEN>,
    /// Where the file name, the mode and the options end in `bytes`.
    ends: [u16; 3],
}

impl OwnedIncoming {
    /// The request, borrowed from this copy.
    pub fn incoming(&self) -> Incoming<'_> {
        let [name, mode, options] = self.ends.map(usize::from);
        let b = &self.bytes[..];
        Incoming {
            peer: self.peer,
            local: self.local,
            kind: self.kind,
            request: Request {
                filename: &b[..name],
                mode: Mode::from_bytes(&b[name..mode]),
                // Copied from a list already validated: it parses again.
                options: crate::options::OptionList::parse(&b[mode..options])
                    .unwrap_or(crate::options::OptionList::EMPTY),
                ignored_option: &b[options..],
            },
            options: self.options,
        }
    }

    /// The file name (bytes, not necessarily UTF-8).
    pub fn filename(&self) -> &[u8] {
        &self.bytes[..usize::from(self.ends[0])]
    }
}

/// What [`ServerTable::handle_datagram`] made of a datagram.
#[derive(Debug)]
pub enum Datagram<'d> {
    /// A new request: accept it with [`ServerTable::accept`] or refuse it with
    /// [`ServerTable::refuse`].
    Request(Incoming<'d>),
    /// A request the table refused itself (a mode no transfer runs: `mail`, or unknown); its
    /// ERROR is queued. For the application's log.
    Refused(Refused<'d>),
    /// Delivered to an existing session, answered (e.g. ERROR 5) or dropped: nothing to do.
    Handled,
}

/// A request the table refused by itself, and why (see [`Datagram::Refused`]).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refused<'d> {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The local address the request arrived on.
    pub local: SocketAddr,
    /// Read or write.
    pub kind: RequestKind,
    /// The request.
    pub request: Request<'d>,
    /// The ERROR code sent.
    pub code: ErrorCode,
    /// The ERROR text sent.
    pub message: heapless::String<REPLY_TEXT_LEN>,
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
    /// The session it belongs to (`None` for a refusal or a stray ERROR sent from a listening
    /// address). A driver with a socket per session sends from that session's socket.
    pub session: Option<SessionHandle>,
}

/// [`ServerTable::accept`] could not start a session: the table is at its session limit and
/// every session's peer has answered (none may be displaced), or no slot is free; the client
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
    /// Ended to make room for a new request while the table was full: the peer had never
    /// answered (it got ERROR 0).
    Displaced,
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
    /// The session's handle (now stale: its slot is free). A driver with per-session data
    /// (a socket) releases it here.
    pub session: SessionHandle,
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
    /// The known options the request asked for (decoded leniently, as [`Incoming::options`]).
    pub requested: Options,
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
            session,
            peer,
            local,
            kind,
            filename,
            ignored_option,
            requested,
            params,
            stats,
            ended,
            result,
            storage,
        } = self;
        let report = TransferReport {
            session,
            peer,
            local,
            kind,
            filename,
            ignored_option,
            requested,
            params,
            stats,
            ended,
            result,
            storage: (),
        };
        (report, storage)
    }
}

/// One transfer in the table, with what the table needs to route, report and schedule it.
pub(crate) struct Session<S> {
    transfer: Transfer<'static, S>,
    local: SocketAddr,
    kind: RequestKind,
    filename: Vec<u8, REPORT_NAME_LEN>,
    ignored_option: Vec<u8, REPORT_OPTION_LEN>,
    /// Fingerprint of the request that started it, to tell a repeat from a new request.
    request: u64,
    /// The options it asked for.
    requested: Options,
    /// The peer's hash in the peer index.
    hash: u64,
    /// In the peer index and counted in the table's `live`: not ended yet.
    indexed: bool,
    /// In the list of sessions whose peer has not answered.
    young: bool,
    /// Ended by the table (a new request from its peer, or displaced): sends nothing more,
    /// waits for `poll_finished`.
    superseded: bool,
    /// Ended to make room (reported as [`TransferResult::Displaced`]).
    displaced: bool,
    /// In the finished queue (or the evicted holder): reported once.
    reported: bool,
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
pub const REPLY_TEXT_LEN: usize = 120;

/// An immediate ERROR not tied to a session: from `local` to `to`.
struct Reply {
    local: SocketAddr,
    to: SocketAddr,
    code: ErrorCode,
    text: heapless::String<REPLY_TEXT_LEN>,
    /// The session it comes from, if any (a displaced session's ERROR).
    session: Option<SessionHandle>,
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

/// A table over a fixed array of `N` slots, built inline (`no_std`, no allocation).
pub type ArrayTable<S, const N: usize> = ServerTable<S, [Slot<S>; N]>;

/// A table over a `Vec` that grows as sessions arrive, up to the session limit.
#[cfg(feature = "alloc")]
pub type VecTable<S> = ServerTable<S, alloc::vec::Vec<Slot<S>>>;

/// The ERROR text a displaced session's peer gets.
const DISPLACED_TEXT: &str = "Server busy: session ended for a newer request (no answer from you)";

/// The server transfers of a server, in slots `T` (see [`SlotStorage`]).
pub struct ServerTable<S, T: SlotStorage<S>> {
    slots: T,
    /// Slots handed out at least once; those from here on were never used.
    used: u32,
    /// Freed slots (through their `done_next` link).
    free: Fifo,
    /// Sessions not ended (in the peer index).
    live: usize,
    limit: usize,
    /// Sessions that may have something to send.
    ready: Fifo,
    /// Finished sessions waiting for `poll_finished`.
    done: Fifo,
    /// Sessions that sent since the last [`idle`](Self::idle).
    sent: Fifo,
    /// Sessions whose peer has not answered, oldest first.
    young: AgeList,
    /// Deadlines.
    heap: DeadlineHeap,
    /// A displaced session moved out of its slot (when no other slot was free for the request
    /// that displaced it), waiting for `poll_finished`.
    evicted: Option<(SessionHandle, Session<S>)>,
    /// Immediate replies not tied to a session (refusals, ERROR 5).
    replies: Deque<Reply, 8>,
    /// Datagrams the session at the front of `ready` sent in a row (see [`BURST`]).
    streak: u16,
    /// Key of the peer-index hash.
    seed: u64,
    policy: ServerPolicy,
    config: Config,
}

impl<S: Storage, const N: usize> ServerTable<S, [Slot<S>; N]> {
    /// An empty table of `N` slots serving with `policy` and `config`.
    pub const fn new(policy: ServerPolicy, config: Config) -> Self {
        Self::with_slots([Slot::EMPTY; N], policy, config)
    }
}

#[cfg(feature = "alloc")]
impl<S: Storage> ServerTable<S, alloc::vec::Vec<Slot<S>>> {
    /// An empty table whose slots are allocated as sessions arrive (up to the session limit;
    /// set one with [`set_session_limit`](Self::set_session_limit)).
    pub const fn growable(policy: ServerPolicy, config: Config) -> Self {
        Self::with_slots(alloc::vec::Vec::new(), policy, config)
    }
}

impl<S: Storage, T: SlotStorage<S>> ServerTable<S, T> {
    /// An empty table in `slots` (every slot must be empty, e.g. [`Slot::EMPTY`]), serving
    /// with `policy` and `config`. The session limit starts at the storage's
    /// [`max_len`](SlotStorage::max_len).
    pub const fn with_slots(slots: T, policy: ServerPolicy, config: Config) -> Self {
        ServerTable {
            slots,
            used: 0,
            free: Fifo::EMPTY,
            live: 0,
            limit: usize::MAX,
            ready: Fifo::EMPTY,
            done: Fifo::EMPTY,
            sent: Fifo::EMPTY,
            young: AgeList::EMPTY,
            heap: DeadlineHeap::EMPTY,
            evicted: None,
            replies: Deque::new(),
            streak: 0,
            seed: 0,
            policy,
            config,
        }
    }

    /// Caps the number of concurrent sessions (at most the storage's slots, for fixed
    /// storage). At the cap, a request displaces the oldest session whose peer never answered.
    pub fn set_session_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The session limit in force.
    pub fn session_limit(&self) -> usize {
        self.limit.min(self.slots.max_len())
    }

    /// Keys the peer index's hash (a random seed keeps an attacker from choosing source
    /// addresses that share one chain). Set it before the first session.
    pub fn set_hash_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.rehash();
    }

    /// Slots in the storage now (a growable storage has more later).
    pub fn capacity(&self) -> usize {
        self.slots.slots().len()
    }

    /// Sessions in progress (not ended; ended ones waiting for `poll_finished` do not count).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the table is at its session limit: a new request is then served only by
    /// displacing a session whose peer never answered.
    pub fn is_full(&self) -> bool {
        self.live >= self.session_limit()
    }

    /// Whether no session is in progress.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Sessions in progress whose peer has not answered yet: the ones a request at the limit
    /// may displace.
    pub fn unanswered(&self) -> usize {
        self.young.len()
    }

    /// Whether finished transfers wait for [`poll_finished`](Self::poll_finished).
    pub fn has_finished(&self) -> bool {
        !self.done.is_empty() || self.evicted.is_some()
    }

    /// The policy new sessions negotiate with.
    pub fn policy(&self) -> &ServerPolicy {
        &self.policy
    }

    fn handle_of(&self, i: u32) -> SessionHandle {
        SessionHandle {
            index: i,
            generation: self.slots.slots()[i as usize].links.generation,
        }
    }

    /// The slot of `handle`'s session, if it is still in the table.
    fn resolve(&self, handle: SessionHandle) -> Option<u32> {
        let slot = self.slots.slots().get(handle.index as usize)?;
        (slot.links.generation == handle.generation && slot.session.is_some()).then_some(handle.index)
    }

    /// The live session of `peer` on `local` (`None` for `local` means any local address).
    /// Ended sessions waiting for `poll_finished` are not in the index: the peer may already
    /// have started a new one (the UEFI size probe ends its first session with ERROR 8 and
    /// sends the next request at once).
    fn find(&self, local: Option<SocketAddr>, peer: SocketAddr) -> Option<u32> {
        let slots = self.slots.slots();
        if slots.is_empty() {
            return None;
        }
        let mut i = slots[bucket_of(peer_hash(self.seed, &peer), slots.len())]
            .links
            .bucket;
        while i != NIL {
            let slot = &slots[i as usize];
            if let Some(s) = &slot.session {
                if s.transfer.peer() == peer && local.is_none_or(|l| l == s.local) {
                    return Some(i);
                }
            }
            i = slot.links.peer_next;
        }
        None
    }

    fn index_insert(&mut self, i: u32) {
        let slots = self.slots.slots_mut();
        let len = slots.len();
        let Some(s) = &slots[i as usize].session else {
            return;
        };
        let b = bucket_of(s.hash, len);
        slots[i as usize].links.peer_next = slots[b].links.bucket;
        slots[b].links.bucket = i;
    }

    fn index_remove(&mut self, i: u32) {
        let slots = self.slots.slots_mut();
        let len = slots.len();
        let Some(s) = &slots[i as usize].session else {
            return;
        };
        let b = bucket_of(s.hash, len);
        let next = slots[i as usize].links.peer_next;
        slots[i as usize].links.peer_next = NIL;
        if slots[b].links.bucket == i {
            slots[b].links.bucket = next;
            return;
        }
        let mut at = slots[b].links.bucket;
        while at != NIL {
            let after = slots[at as usize].links.peer_next;
            if after == i {
                slots[at as usize].links.peer_next = next;
                return;
            }
            at = after;
        }
    }

    /// Rebuilds the peer index (after the slot count or the seed changed).
    fn rehash(&mut self) {
        let seed = self.seed;
        for slot in self.slots.slots_mut().iter_mut() {
            slot.links.bucket = NIL;
            slot.links.peer_next = NIL;
            if let Some(s) = slot.session.as_mut() {
                s.hash = peer_hash(seed, &s.transfer.peer());
            }
        }
        for i in 0..self.used {
            if self.slots.slots()[i as usize]
                .session
                .as_ref()
                .is_some_and(|s| s.indexed)
            {
                self.index_insert(i);
            }
        }
    }

    fn mark_ready(&mut self, i: u32) {
        let slots = self.slots.slots_mut();
        if slots[i as usize].session.is_some() && !slots[i as usize].links.queued {
            slots[i as usize].links.queued = true;
            self.ready.push_back(slots, ready_link, i);
        }
    }

    /// Brings session `i`'s place in the table's structures up to date after its transfer
    /// was fed or polled: leaves the index (and the live count) when it ended, the young list
    /// when its peer answered, moves its deadline, and queues it as finished once it has
    /// nothing more to send.
    fn refresh(&mut self, i: u32) {
        let slots = self.slots.slots_mut();
        let Some(s) = slots[i as usize].session.as_mut() else {
            return;
        };
        let live = s.is_live();
        let leave_young = s.young && (!live || s.transfer.peer_answered());
        let leave_index = s.indexed && !live;
        let due = if s.superseded {
            None
        } else {
            s.transfer.poll_timeout()
        };
        let finished = !s.reported && (s.superseded || s.transfer.is_finished());
        if leave_young {
            s.young = false;
        }
        if leave_index {
            s.indexed = false;
        }
        if finished {
            s.reported = true;
        }
        if leave_young {
            self.young.remove(slots, i);
        }
        self.heap.set(slots, i, due);
        if finished {
            self.done.push_back(slots, done_link, i);
        }
        if leave_index {
            self.index_remove(i);
            self.live -= 1;
        }
    }

    fn reply(&mut self, local: SocketAddr, to: SocketAddr, code: ErrorCode, message: &str) {
        self.reply_from(local, to, code, message, None);
    }

    fn reply_from(
        &mut self,
        local: SocketAddr,
        to: SocketAddr,
        code: ErrorCode,
        message: &str,
        session: Option<SessionHandle>,
    ) {
        let mut text = heapless::String::new();
        // Cut at a character boundary when too long (callers' texts are shorter).
        for c in message.chars() {
            if text.push(c).is_err() {
                break;
            }
        }
        self.reply_text(local, to, code, text, session);
    }

    fn reply_text(
        &mut self,
        local: SocketAddr,
        to: SocketAddr,
        code: ErrorCode,
        text: heapless::String<REPLY_TEXT_LEN>,
        session: Option<SessionHandle>,
    ) {
        // When the reply queue is full the datagram is dropped: replies are best effort.
        let _ = self.replies.push_back(Reply {
            local,
            to,
            code,
            text,
            session,
        });
    }

    /// Feeds a datagram that arrived on `local` from `from`.
    ///
    /// `listening` says whether `local` is a listening address (where requests are accepted).
    /// Datagrams for sessions are routed by `(local, from)` through the peer index either way;
    /// a driver with one socket per session should route what arrives there with
    /// [`handle_session_datagram`](Self::handle_session_datagram) instead (this method finds
    /// the session of a non-listening `local` that hears from a stranger by a scan). Requests
    /// sent to a broadcast or multicast address are ignored (RFC 1123). Datagrams from source
    /// port 0 are dropped: nothing can be sent back to that port, so they would only hold a
    /// session.
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
        if let Some(i) = self.find(Some(local), from) {
            self.deliver(now, i, from, datagram);
            return Datagram::Handled;
        }
        if !listening {
            // A session socket hearing from a stranger: that session answers ERROR 5 itself.
            let stranger_of = self.slots.slots()[..self.used as usize]
                .iter()
                .position(|s| s.session.as_ref().is_some_and(|s| s.local == local));
            if let Some(i) = stranger_of {
                self.deliver(now, i as u32, from, datagram);
            }
            return Datagram::Handled;
        }
        let parsed = Packet::parse(datagram);
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
                    warn!("tftp {}: request refused: mode {:?}", from, request.mode);
                    self.reply_text(local, from, ErrorCode::IllegalOperation, text.clone(), None);
                    return Datagram::Refused(Refused {
                        peer: from,
                        local,
                        kind,
                        request,
                        code: ErrorCode::IllegalOperation,
                        message: text,
                    });
                }
                let fingerprint = request_fingerprint(kind, &request);
                if let Some(i) = self.find(None, from) {
                    let slots = self.slots.slots_mut();
                    if let Some(s) = slots[i as usize].session.as_mut() {
                        if s.request == fingerprint {
                            // A repeat of the request whose session is alive (on its own port).
                            trace!("tftp {}: request repeated: its session goes on", from);
                            return Datagram::Handled;
                        }
                        // The client has moved on: end its old session quietly (an ERROR from
                        // it could be taken for the answer to the new request).
                        s.superseded = true;
                    }
                    self.refresh(i);
                }
                let options = Options::parse_request(&request.options).options;
                debug!(
                    "tftp {}: {:?} request on {}, options {:?}",
                    from, kind, local, options
                );
                Datagram::Request(Incoming {
                    peer: from,
                    local,
                    kind,
                    request,
                    options,
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
                self.reply_text(
                    local,
                    from,
                    ErrorCode::IllegalOperation,
                    parse_refusal_text(&e),
                    None,
                );
                Datagram::Handled
            }
        }
    }

    /// Feeds a datagram that arrived from `from` on the socket of `session` (one port per
    /// transfer): routed in O(1). A stranger (another address or port) is answered ERROR 5 by
    /// the session; a stale handle (the session was collected) drops the datagram.
    pub fn handle_session_datagram(
        &mut self,
        now: Instant,
        session: SessionHandle,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        if from.port() == 0 {
            return;
        }
        if let Some(i) = self.resolve(session) {
            self.deliver(now, i, from, datagram);
        }
    }

    fn deliver(&mut self, now: Instant, i: u32, from: SocketAddr, datagram: &[u8]) {
        let slot = &mut self.slots.slots_mut()[i as usize];
        match slot.session.as_mut() {
            Some(s) if !s.superseded => s.transfer.handle_datagram(now, from, datagram),
            _ => return,
        }
        self.refresh(i);
        self.mark_ready(i);
    }

    /// Starts serving `incoming` with `storage`, from the local address `tid` (a new socket for
    /// one-port-per-transfer, or `incoming.local` in single-port mode). At the session limit,
    /// the oldest session whose peer never answered is displaced to make room (collect
    /// finished transfers first, so its slot is free); if there is none, the client gets
    /// ERROR 0 and the storage comes back in [`Full`].
    pub fn accept(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        storage: S,
        tid: SocketAddr,
    ) -> Result<SessionHandle, Full<S>> {
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
    ) -> Result<SessionHandle, Full<S>> {
        let victim = if self.is_full() {
            match self.displace() {
                Some(v) => Some(v),
                None => {
                    self.refuse(incoming, ErrorCode::NotDefined, "Server busy, try again later");
                    return Err(Full(storage));
                }
            }
        } else {
            None
        };
        let i = match (self.take_free(), victim) {
            (Some(i), victim) => {
                if let Some(v) = victim {
                    self.finish_displaced(v);
                }
                i
            }
            (None, Some(v)) if self.evicted.is_none() => {
                // No other slot: the displaced session waits outside the slots for
                // `poll_finished`, and its slot serves the new request.
                let handle = self.handle_of(v);
                let slots = self.slots.slots_mut();
                let session = slots[v as usize].session.take();
                if let Some(s) = &session {
                    let (local, to) = (s.local, s.transfer.peer());
                    self.reply_from(local, to, ErrorCode::NotDefined, DISPLACED_TEXT, None);
                }
                self.evicted = session.map(|s| (handle, s));
                let links = &mut self.slots.slots_mut()[v as usize].links;
                links.generation = links.generation.wrapping_add(1);
                v
            }
            (None, victim) => {
                if let Some(v) = victim {
                    self.finish_displaced(v);
                }
                self.refuse(incoming, ErrorCode::NotDefined, "Server busy, try again later");
                return Err(Full(storage));
            }
        };
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
            requested: incoming.options,
            hash: peer_hash(self.seed, &incoming.peer),
            indexed: true,
            young: true,
            superseded: false,
            displaced: false,
            reported: false,
        };
        self.slots.slots_mut()[i as usize].session = Some(session);
        self.live += 1;
        self.index_insert(i);
        self.young.push_back(self.slots.slots_mut(), i);
        self.refresh(i);
        self.mark_ready(i);
        Ok(self.handle_of(i))
    }

    /// A free slot: a freed one, a never-used one, or one the storage grows by.
    fn take_free(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop_front(self.slots.slots_mut(), done_link) {
            return Some(i);
        }
        if self.used as usize >= self.slots.slots().len() {
            // Room for the sessions allowed and as many ended ones waiting to be collected.
            let max = self.session_limit().saturating_mul(2).saturating_add(16);
            if !self.slots.grow(max) {
                return None;
            }
            self.rehash();
        }
        self.used += 1;
        Some(self.used - 1)
    }

    /// Ends the oldest session whose peer never answered, if any, to make room: it sends
    /// nothing more and leaves the index; the caller queues it as finished (or evicts it).
    fn displace(&mut self) -> Option<u32> {
        let v = self.young.front()?;
        if let Some(s) = self.slots.slots_mut()[v as usize].session.as_ref() {
            warn!(
                "tftp {}: displaced: its client never answered and the table is full",
                s.transfer.peer()
            );
        }
        if let Some(s) = self.slots.slots_mut()[v as usize].session.as_mut() {
            s.superseded = true;
            s.displaced = true;
            // Queued as finished by the caller.
            s.reported = true;
        }
        self.refresh(v);
        Some(v)
    }

    /// Sends a displaced session's peer its ERROR and queues the session as finished.
    fn finish_displaced(&mut self, v: u32) {
        let handle = self.handle_of(v);
        let slots = self.slots.slots_mut();
        let Some(s) = slots[v as usize].session.as_ref() else {
            return;
        };
        let (local, to) = (s.local, s.transfer.peer());
        self.done.push_back(slots, done_link, v);
        self.reply_from(local, to, ErrorCode::NotDefined, DISPLACED_TEXT, Some(handle));
    }

    /// Makes room for one more session under a limit kept outside the table (a budget shared
    /// by several tables): ends the oldest session whose peer never answered, as a full table
    /// does on its own. Its peer gets ERROR 0 and its report comes out of
    /// [`poll_finished`](Self::poll_finished). Whether there was one.
    pub fn displace_unanswered(&mut self) -> bool {
        match self.displace() {
            Some(v) => {
                self.finish_displaced(v);
                true
            }
            None => false,
        }
    }

    /// Refuses `incoming` with an ERROR sent from the address it arrived on.
    pub fn refuse(&mut self, incoming: &Incoming<'_>, code: ErrorCode, message: &str) {
        warn!(
            "tftp {}: request refused: ERROR {:?}: {}",
            incoming.peer, code, message
        );
        self.reply(incoming.local, incoming.peer, code, message);
    }

    /// Feeds a timer tick to every session whose deadline has come (taken from the deadline
    /// heap: sessions not due are not visited).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Take the due sessions out first, so each is handled once even if it is due again.
        let mut due = Fifo::EMPTY;
        loop {
            let slots = self.slots.slots_mut();
            match self.heap.peek(slots) {
                Some((i, at)) if at <= now => {
                    self.heap.set(slots, i, None);
                    due.push_back(slots, slots::due_link, i);
                }
                _ => break,
            }
        }
        while let Some(i) = due.pop_front(self.slots.slots_mut(), slots::due_link) {
            if let Some(s) = self.slots.slots_mut()[i as usize].session.as_mut() {
                s.transfer.handle_timeout(now);
            }
            self.refresh(i);
            self.mark_ready(i);
        }
    }

    /// The earliest deadline of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek(self.slots.slots()).map(|(_, at)| at)
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
                session: r.session,
            });
        }
        while let Some(i) = self.ready.pop_front(self.slots.slots_mut(), ready_link) {
            let handle = self.handle_of(i);
            let slot = &mut self.slots.slots_mut()[i as usize];
            slot.links.queued = false;
            let Some(s) = slot.session.as_mut() else {
                continue;
            };
            if s.superseded {
                continue;
            }
            // Drain the session's events: the table reports outcomes itself.
            while s.transfer.poll_event().is_some() {}
            let sent = s.transfer.poll_transmit(now, buf);
            while s.transfer.poll_event().is_some() {}
            let local = s.local;
            let Some(tx) = sent else {
                self.streak = 0;
                self.refresh(i);
                continue;
            };
            let slots = self.slots.slots_mut();
            if !slots[i as usize].links.idle_due {
                slots[i as usize].links.idle_due = true;
                self.sent.push_back(slots, sent_link, i);
            }
            self.refresh(i);
            // Keep the turn for up to BURST datagrams (a window goes out in one run, which a
            // transport can send with one system call), then go to the back of the line.
            self.streak += 1;
            if self.streak < BURST {
                let slots = self.slots.slots_mut();
                slots[i as usize].links.queued = true;
                self.ready.push_front(slots, ready_link, i);
            } else {
                self.streak = 0;
                self.mark_ready(i);
            }
            return Some(ServerTransmit {
                local,
                destination: tx.destination,
                len: tx.len,
                session: Some(handle),
            });
        }
        None
    }

    /// Lets the storage of every session that sent something since the last call do its
    /// deferred work ([`Storage::idle`]: read the next block ahead, write out gathered ones).
    /// Call it after the datagrams from [`poll_transmit`](Self::poll_transmit) are on their
    /// way and before waiting for input, so that work overlaps the round trip.
    pub fn idle(&mut self) {
        while let Some(i) = self.sent.pop_front(self.slots.slots_mut(), sent_link) {
            let slot = &mut self.slots.slots_mut()[i as usize];
            slot.links.idle_due = false;
            if let Some(s) = slot.session.as_mut() {
                s.transfer.storage_mut().idle();
            }
        }
    }

    /// The next finished transfer, removed from the table (its slot is free again).
    pub fn poll_finished(&mut self, now: Instant) -> Option<TransferReport<S>> {
        let (handle, s) = match self.evicted.take() {
            Some(e) => e,
            None => loop {
                let i = self.done.pop_front(self.slots.slots_mut(), done_link)?;
                let handle = self.handle_of(i);
                let slots = self.slots.slots_mut();
                if let Some(s) = slots[i as usize].session.take() {
                    let links = &mut slots[i as usize].links;
                    links.generation = links.generation.wrapping_add(1);
                    self.free.push_front(slots, done_link, i);
                    break (handle, s);
                }
            },
        };
        let result = if s.displaced {
            TransferResult::Displaced
        } else {
            match s.transfer.outcome() {
                Some(Ok(bytes)) if bytes == 0 && s.transfer.declined() => TransferResult::Declined,
                Some(Ok(bytes)) => TransferResult::Completed(bytes),
                Some(Err(e)) => TransferResult::Failed(e.clone()),
                None => TransferResult::Failed(TransferError::Aborted),
            }
        };
        Some(TransferReport {
            session: handle,
            peer: s.transfer.peer(),
            local: s.local,
            kind: s.kind,
            filename: s.filename,
            ignored_option: s.ignored_option,
            requested: s.requested,
            params: s.transfer.params(),
            stats: s.transfer.stats(),
            ended: now,
            result,
            storage: s.transfer.into_storage(),
        })
    }

    /// Aborts `session` (its peer gets an ERROR with `code` and `message`); false for a stale
    /// handle or a session already ended.
    pub fn abort(&mut self, session: SessionHandle, code: ErrorCode, message: &'static str) -> bool {
        let Some(i) = self.resolve(session) else {
            return false;
        };
        match self.slots.slots_mut()[i as usize].session.as_mut() {
            Some(s) if s.is_live() => s.transfer.abort(code, message),
            _ => return false,
        }
        self.refresh(i);
        self.mark_ready(i);
        true
    }

    /// Aborts every session (sending each peer an ERROR), e.g. at shutdown.
    pub fn abort_all(&mut self, code: ErrorCode, message: &'static str) {
        for i in 0..self.used {
            let Some(s) = self.slots.slots_mut()[i as usize].session.as_mut() else {
                continue;
            };
            if s.superseded {
                continue;
            }
            s.transfer.abort(code, message);
            self.refresh(i);
            self.mark_ready(i);
        }
    }

    /// Checks the table's internal structures against its sessions, panicking on the first
    /// inconsistency: every session not ended is in the peer index under its own peer and
    /// counted; the unanswered list holds exactly the flagged sessions; the deadline heap holds
    /// every session with a deadline, at exactly that deadline, in heap order. For tests and
    /// fuzzing (it visits every slot).
    #[doc(hidden)]
    pub fn debug_check(&self) {
        let slots = self.slots.slots();
        let (mut indexed, mut young, mut in_heap) = (0usize, 0usize, 0u32);
        for (i, slot) in slots.iter().enumerate() {
            let Some(s) = &slot.session else {
                assert_eq!(slot.links.heap_pos, NIL, "an empty slot in the heap");
                continue;
            };
            if s.indexed {
                indexed += 1;
                assert!(s.is_live(), "an ended session indexed");
                let found = self.find(Some(s.local), s.transfer.peer());
                assert_eq!(found, Some(i as u32), "an indexed session not found by its peer");
            } else {
                assert!(!s.is_live(), "a live session not indexed");
            }
            if s.young {
                young += 1;
                assert!(
                    s.indexed && !s.transfer.peer_answered(),
                    "a young session answered or ended"
                );
            }
            let due = if s.superseded {
                None
            } else {
                s.transfer.poll_timeout()
            };
            match due {
                Some(at) => {
                    in_heap += 1;
                    assert_ne!(slot.links.heap_pos, NIL, "a deadline missing from the heap");
                    assert_eq!(slot.links.due, at, "a stale deadline in the heap");
                    assert_eq!(slots[slot.links.heap_pos as usize].links.heap, i as u32);
                }
                None => assert_eq!(slot.links.heap_pos, NIL, "a session without deadline in the heap"),
            }
        }
        assert_eq!(indexed, self.live, "live count");
        assert_eq!(young, self.young.len(), "unanswered count");
        let heap_len = (0..slots.len() as u32)
            .take_while(|&p| p < in_heap)
            .inspect(|&p| {
                if p > 0 {
                    let parent = (p - 1) / 2;
                    let due = |q: u32| slots[slots[q as usize].links.heap as usize].links.due;
                    assert!(due(parent) <= due(p), "heap order");
                }
            })
            .count();
        assert_eq!(heap_len as u32, in_heap);
        assert_eq!(
            self.poll_timeout(),
            slots
                .iter()
                .filter_map(|s| s.session.as_ref().filter(|s| !s.superseded))
                .filter_map(|s| s.transfer.poll_timeout())
                .min(),
            "the next deadline"
        );
    }

    /// Local addresses of the sessions in the table (so a transport can close sockets no
    /// longer used).
    pub fn session_locals(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.slots
            .slots()
            .iter()
            .filter_map(|s| s.session.as_ref().map(|s| s.local))
    }
}

impl<S, T: SlotStorage<S>> core::fmt::Debug for ServerTable<S, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerTable")
            .field("sessions", &self.live)
            .field("limit", &self.limit)
            .field("slots", &self.slots.slots().len())
            .finish()
    }
}

fn is_broadcast(local: SocketAddr) -> bool {
    match local {
        SocketAddr::V4(a) => a.ip().is_broadcast() || a.ip().is_multicast(),
        SocketAddr::V6(a) => a.ip().is_multicast(),
    }
}

#[cfg(test)]
mod tests;
