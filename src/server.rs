//! The server table: a fixed-capacity (heapless, `no_std`) set of server transfers that routes
//! each datagram to its session and hands each new request to the application as an
//! [`Incoming`] to accept with any storage or refuse with an ERROR.
//!
//! The table knows sessions by `(local address, peer address)`. With one port per transfer (RFC
//! 1350) the local address is the transfer's own socket; in single-port mode it is the listening
//! address, and the peer address alone tells transfers apart. A request repeated by the same
//! client port while its session lives is dropped, not served twice. When the table is full, new
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
use crate::wire::{encode_error_lossy, Mode, Packet, Request, RequestKind};

/// Longest file name kept for reports; longer names are truncated there (not for serving).
pub const REPORT_NAME_LEN: usize = 128;

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
    queued: bool,
    reported: bool,
}

/// A fixed-capacity table of up to `N` server transfers.
pub struct ServerTable<S, const N: usize> {
    slots: Vec<Option<Session<S>>, N>,
    live: usize,
    limit: usize,
    /// Sessions that may have something to send.
    ready: Deque<u16, N>,
    /// Immediate replies not tied to a session (refusals, ERROR 5): (from, to, code, message).
    replies: Deque<(SocketAddr, SocketAddr, ErrorCode, &'static str), 8>,
    /// Finished sessions waiting for `poll_finished`.
    done: Deque<u16, N>,
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

    fn find(&self, local: SocketAddr, peer: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.transfer.peer() == peer && s.local == local)
        })
    }

    fn mark_ready(&mut self, i: usize) {
        if let Some(Some(s)) = self.slots.get_mut(i) {
            if !s.queued && self.ready.push_back(i as u16).is_ok() {
                s.queued = true;
            }
        }
    }

    fn reply(&mut self, local: SocketAddr, to: SocketAddr, code: ErrorCode, message: &'static str) {
        // When the reply queue is full the datagram is dropped: replies are best effort.
        let _ = self.replies.push_back((local, to, code, message));
    }

    /// Feeds a datagram that arrived on `local` from `from`.
    ///
    /// `listening` says whether `local` is a listening address (where requests are accepted);
    /// datagrams for sessions are routed by `(local, from)` either way. Requests sent to a
    /// broadcast or multicast address are ignored (RFC 1123).
    pub fn handle_datagram<'d>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        listening: bool,
        datagram: &'d [u8],
    ) -> Datagram<'d> {
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
                if is_broadcast(local) {
                    return Datagram::Handled;
                }
                // A repeat of a request whose session is alive (on its own port): drop it.
                if self.slots.iter().flatten().any(|s| s.transfer.peer() == from) {
                    return Datagram::Handled;
                }
                let kind = if matches!(parsed, Ok(Packet::Rrq(_))) {
                    RequestKind::Read
                } else {
                    RequestKind::Write
                };
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
            Err(e) => {
                self.reply(local, from, ErrorCode::IllegalOperation, e.message());
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
        let session = Session {
            transfer,
            local: tid,
            kind: incoming.kind,
            filename,
            queued: false,
            reported: false,
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
                Some(s) => s.transfer.poll_timeout().is_some_and(|t| t <= now),
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
            .filter_map(|s| s.transfer.poll_timeout())
            .min()
    }

    /// The next datagram to send, written into `buf`, with the local address to send it from.
    /// Sessions take turns, one datagram each. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<ServerTransmit> {
        if let Some((local, to, code, message)) = self.replies.pop_front() {
            let len = encode_error_lossy(buf, code, message.as_bytes()).ok()?;
            return Some(ServerTransmit {
                local,
                destination: to,
                len,
            });
        }
        while let Some(i) = self.ready.pop_front() {
            let i = usize::from(i);
            let Some(Some(s)) = self.slots.get_mut(i) else {
                continue;
            };
            s.queued = false;
            // Drain the session's events: the table reports outcomes itself.
            while s.transfer.poll_event().is_some() {}
            if let Some(tx) = s.transfer.poll_transmit(now, buf) {
                let out = ServerTransmit {
                    local: s.local,
                    destination: tx.destination,
                    len: tx.len,
                };
                self.mark_ready(i);
                return Some(out);
            }
            while s.transfer.poll_event().is_some() {}
            if s.transfer.is_finished() && !s.reported {
                s.reported = true;
                let _ = self.done.push_back(i as u16);
            }
        }
        None
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
