//! The tokio server (feature `tokio`): the std server's policy on tokio's UDP sockets and
//! timers, in one task. The same [`ServerConfig`] as the mio server: one root (nothing read or
//! written outside it, uploads all or nothing), the request hook, remap rules, the session cap
//! with displacement of silent sessions, single-port mode, a port range, the MTU-sized block
//! cap, IPv4 and IPv6 with replies from the address a request arrived at.
//!
//! The protocol lives in the session table ([`crate::server`]); this module moves datagrams.
//! Each socket (listening or a transfer's) has a small reader task that hands what it receives
//! to the server's task, which owns the table, sends (a window in one system call where the
//! socket module can) and keeps the deadlines. Works on the current-thread and the
//! multi-thread runtime.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tftp_proto::adapter::mio_server::ServerConfig;
//! use tftp_proto::adapter::tokio_server::AsyncServer;
//!
//! let config = ServerConfig {
//!     root: "/srv/tftp".into(),
//!     binds: vec!["0.0.0.0:6969".parse().unwrap()],
//!     ..ServerConfig::default()
//! };
//! let server = AsyncServer::bind(&config)?;
//! // Serves for an hour, printing a line per transfer.
//! let an_hour = tokio::time::sleep(std::time::Duration::from_secs(3600));
//! server.run(an_hour, |report| println!("{report:?}")).await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::prelude::rust_2021::*;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::tokio::io::Interest;
use ::tokio::net::UdpSocket;
use ::tokio::sync::mpsc;
use ::tokio::task::JoinHandle;

use super::admission::{listener_for, random_seed, Admission, Refused, BUSY};
use super::batch::SendBatch;
use super::mio_server::{Refusal, ServerConfig, MAX_SESSIONS};
use super::root::ServedFile;
use super::socket::{self, bind_udp, is_transient, size_buffers, RECV_BUFFER};
use super::StdClock;
use crate::error_code::ErrorCode;
use crate::server::{Datagram, Full, Incoming, SessionHandle, TransferReport, TransferResult, VecTable};
use crate::wire::RequestKind;

/// A tokio TFTP server, bound and ready to [`run`](Self::run).
#[derive(Debug)]
pub struct AsyncServer {
    listeners: Vec<Listener>,
    config: ServerConfig,
}

#[derive(Debug)]
struct Listener {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    wildcard: bool,
    /// Whether receives report their destination address (packet info).
    pktinfo: bool,
}

/// A transfer's own socket and the task reading it.
struct Session {
    handle: SessionHandle,
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    /// Whether segmented sends may be tried on it.
    gso: bool,
}

/// Where a datagram came in.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A listening socket: a new request, or (single-port mode) a session's datagram.
    Listener,
    /// A transfer's own socket.
    Session(SessionHandle),
}

/// A datagram a reader task received.
struct Inbound {
    source: Source,
    from: SocketAddr,
    /// The local address it was sent to.
    local: SocketAddr,
    bytes: Vec<u8>,
    /// The size of each coalesced datagram, when several came in one receive.
    segment: Option<usize>,
}

/// What woke the server's task.
enum Wake {
    Stop,
    Inbound(Inbound),
    Timer,
}

impl AsyncServer {
    /// Binds the listening sockets of `config` (`binds`; `reuse_port` is honoured) and opens its
    /// root. Call it within a tokio runtime.
    pub fn bind(config: &ServerConfig) -> io::Result<AsyncServer> {
        let sockets = config
            .binds
            .iter()
            .map(|&addr| bind_udp(addr, config.reuse_port))
            .collect::<io::Result<Vec<_>>>()?;
        Self::from_sockets(config, sockets)
    }

    /// Serves sockets bound elsewhere (inetd, systemd socket activation) under `config`
    /// (its `binds` are ignored). Call it within a tokio runtime.
    pub fn from_sockets(config: &ServerConfig, sockets: Vec<std::net::UdpSocket>) -> io::Result<AsyncServer> {
        let mut listeners = Vec::new();
        for std_socket in sockets {
            std_socket.set_nonblocking(true)?;
            let addr = std_socket.local_addr()?;
            let wildcard = addr.ip().is_unspecified();
            let pktinfo = wildcard && socket::enable_pktinfo(&std_socket, addr.is_ipv4())?;
            size_buffers(&std_socket, 4 << 20);
            listeners.push(Listener {
                socket: Arc::new(UdpSocket::from_std(std_socket)?),
                addr,
                wildcard,
                pktinfo,
            });
        }
        // The root is checked now, so a bad one fails here rather than at `run`.
        Admission::new(config, 0)?;
        Ok(AsyncServer {
            listeners,
            config: config.clone(),
        })
    }

    /// The bound listening addresses (with the ports the OS picked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Serves until `shutdown` completes (or, with [`ServerConfig::idle_exit`], until idle that
    /// long), then aborts the transfers in progress (their peers get ERROR 0 "Server shutting
    /// down", their uploads are discarded) and returns.
    /// `on_report` hears of every transfer that ended.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        on_report: impl FnMut(&TransferReport<()>),
    ) -> io::Result<()> {
        self.run_logged(shutdown, on_report, |_| {}).await
    }

    /// [`run`](Self::run), telling `on_refusal` of every request refused (the request log).
    ///
    /// On a multi-thread runtime, spawn this future (`tokio::spawn`) rather than `block_on` it:
    /// `block_on` polls it on the calling thread, apart from the workers its sockets' reader
    /// tasks run on, and every datagram then costs a wake-up across threads (measured: 15 %
    /// slower windowed downloads).
    pub async fn run_logged(
        self,
        shutdown: impl Future<Output = ()>,
        mut on_report: impl FnMut(&TransferReport<()>),
        mut on_refusal: impl FnMut(&Refusal),
    ) -> io::Result<()> {
        let mut state = State::new(&self.config, self.listeners)?;
        let (tx, mut rx) = mpsc::channel::<Inbound>(4096);
        for l in &state.listeners {
            spawn_reader(&tx, Arc::clone(&l.socket), Source::Listener, l.addr, l.pktinfo);
        }
        let mut shutdown = std::pin::pin!(shutdown);
        let sleep = ::tokio::time::sleep(Duration::from_secs(3600));
        let mut sleep = std::pin::pin!(sleep);
        let idle_exit = self.config.idle_exit;
        let mut last_active = std::time::Instant::now();
        loop {
            state.flush();
            state.collect();
            for r in state.finished.drain(..) {
                on_report(&r);
            }
            for r in state.refusals.drain(..) {
                on_refusal(&r);
            }
            if !state.table.is_empty() {
                last_active = std::time::Instant::now();
            }
            // inetd's "wait" mode: nothing in progress and nothing heard for `idle_exit`.
            if idle_exit.is_some_and(|idle| last_active.elapsed() >= idle) {
                break;
            }
            let mut wait = state
                .table
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |at| {
                    let now = state.clock.now();
                    if at > now {
                        at - now
                    } else {
                        Duration::ZERO
                    }
                });
            if let Some(idle) = idle_exit {
                wait = wait.min(idle.saturating_sub(last_active.elapsed()));
            }
            sleep.as_mut().reset(::tokio::time::Instant::now() + wait);
            let wake = std::future::poll_fn(|cx| {
                if shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Stop);
                }
                if let Poll::Ready(Some(inbound)) = rx.poll_recv(cx) {
                    return Poll::Ready(Wake::Inbound(inbound));
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Stop => break,
                Wake::Timer => state.table.handle_timeout(state.clock.now()),
                Wake::Inbound(inbound) => {
                    last_active = std::time::Instant::now();
                    state.handle(&tx, inbound);
                    // Whatever else is queued, before sending: a window's ACKs in one turn.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(inbound) => state.handle(&tx, inbound),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        state
            .table
            .abort_all(ErrorCode::NotDefined, "Server shutting down");
        state.flush();
        state.collect();
        for r in state.finished.drain(..) {
            on_report(&r);
        }
        // The listeners' readers end with the channel; the sessions' are aborted with `state`.
        Ok(())
    }
}

/// The server task's state.
struct State {
    listeners: Vec<Listener>,
    /// Session sockets, by their session's handle index.
    sessions: Vec<Option<Session>>,
    table: VecTable<ServedFile>,
    admission: Admission,
    clock: StdClock,
    batch: SendBatch,
    /// Requests refused since the last turn, for the log.
    refusals: Vec<Refusal>,
    /// Transfers collected since the last turn, to report.
    finished: Vec<TransferReport<()>>,
}

impl State {
    fn new(config: &ServerConfig, listeners: Vec<Listener>) -> io::Result<State> {
        let mut policy = config.policy;
        if policy.max_write_size.is_none() {
            policy.max_write_size = config.engine.max_write_size;
        }
        let mut table = VecTable::growable(policy, config.engine);
        table.set_session_limit(config.max_sessions.clamp(1, MAX_SESSIONS));
        let seed = random_seed();
        table.set_hash_seed(seed);
        Ok(State {
            listeners,
            sessions: Vec::new(),
            table,
            admission: Admission::new(config, seed)?,
            clock: StdClock::new(),
            batch: SendBatch::new(),
            refusals: Vec::new(),
            finished: Vec::new(),
        })
    }

    /// Feeds one received datagram to the table.
    fn handle(&mut self, tx: &mpsc::Sender<Inbound>, inbound: Inbound) {
        let size = inbound
            .segment
            .filter(|&s| s > 0)
            .unwrap_or(inbound.bytes.len())
            .max(1);
        for datagram in inbound.bytes.chunks(size) {
            let now = self.clock.now();
            match inbound.source {
                Source::Session(handle) => {
                    self.table
                        .handle_session_datagram(now, handle, inbound.from, datagram)
                }
                Source::Listener => {
                    match self
                        .table
                        .handle_datagram(now, inbound.local, inbound.from, true, datagram)
                    {
                        Datagram::Request(incoming) => {
                            // A request that supersedes its client's old session ended that one:
                            // free its slot first.
                            self.collect();
                            self.accept(tx, now, &incoming);
                        }
                        Datagram::Refused(r) => self.refusals.push(Refusal::by_table(&r)),
                        Datagram::Handled => {}
                    }
                }
            }
        }
    }

    /// Answers a new request: the file under the policy, the session's socket and its
    /// reader, or the ERROR refusing it.
    fn accept(&mut self, tx: &mpsc::Sender<Inbound>, now: crate::time::Instant, incoming: &Incoming<'_>) {
        let refuse = |state: &mut State, (code, message): Refused| {
            state.table.refuse(incoming, code, &message);
            state.refusals.push(Refusal::of(incoming, code, &message));
        };
        let (policy, file) = match self.admission.resolve(self.table.policy(), incoming) {
            Ok(r) => r,
            Err(refused) => return refuse(self, refused),
        };
        if self.admission.single_port() {
            if let Err(Full(file)) = self
                .table
                .accept_with(now, incoming, file, incoming.local, &policy)
            {
                let _ = self.admission.finish(file, false);
                self.refusals
                    .push(Refusal::of(incoming, ErrorCode::NotDefined, BUSY));
            }
            return;
        }
        let bound = match self.admission.bind_session(incoming, &policy) {
            Ok(b) => b,
            Err(refused) => {
                let _ = self.admission.finish(file, false);
                return refuse(self, refused);
            }
        };
        let socket = match UdpSocket::from_std(bound.socket) {
            Ok(s) => Arc::new(s),
            Err(_) => {
                let _ = self.admission.finish(file, false);
                return refuse(self, (ErrorCode::NotDefined, "Server out of sockets".into()));
            }
        };
        let handle = match self.table.accept_with(now, incoming, file, bound.tid, &policy) {
            Ok(h) => h,
            Err(Full(file)) => {
                // The table refused it (ERROR 0, busy) from the listening address.
                let _ = self.admission.finish(file, false);
                self.refusals
                    .push(Refusal::of(incoming, ErrorCode::NotDefined, BUSY));
                return;
            }
        };
        let reader = spawn_reader(
            tx,
            Arc::clone(&socket),
            Source::Session(handle),
            bound.tid,
            bound.gro,
        );
        let index = handle.index();
        if self.sessions.len() <= index {
            self.sessions.resize_with(index + 1, || None);
        }
        self.sessions[index] = Some(Session {
            handle,
            socket,
            reader,
            gso: socket::GSO_AVAILABLE,
        });
    }

    /// Sends everything the table has to send: a run of datagrams from one session socket to
    /// one peer (a window) together; a datagram from a listening socket at once.
    fn flush(&mut self) {
        let now = self.clock.now();
        let mut run: Option<(SessionHandle, SocketAddr)> = None;
        while let Some(tx) = self.table.poll_transmit(now, self.batch.slot()) {
            let own = tx.session.filter(|h| {
                self.sessions
                    .get(h.index())
                    .is_some_and(|s| s.as_ref().is_some_and(|s| s.handle == *h))
            });
            let Some(handle) = own else {
                let data = &self.batch.slot()[..tx.len];
                if let Some(l) = listener_for(&self.listeners, tx.local, |l| (l.addr, l.wildcard)) {
                    let source = l.wildcard.then_some(tx.local);
                    let _ = socket::send_run(&*l.socket, data, &[tx.len], tx.destination, source, &mut false);
                }
                continue;
            };
            let key = (handle, tx.destination);
            self.batch.push(tx.len);
            if let Some(r) = run.filter(|&r| r != key) {
                self.send_run(r, true);
            }
            run = Some(key);
            if !self.batch.has_room() {
                self.send_run(key, false);
            }
        }
        if let Some(r) = run {
            self.send_run(r, false);
        }
        // Everything is sent: file work for the next turn now overlaps the round trip.
        self.table.idle();
    }

    /// Sends the batch (all but its last datagram when `keep_last`) from `handle`'s socket.
    fn send_run(&mut self, (handle, peer): (SessionHandle, SocketAddr), keep_last: bool) {
        let Some(Some(s)) = self.sessions.get_mut(handle.index()) else {
            self.batch.clear();
            return;
        };
        // A datagram that cannot be sent is lost, which the protocol recovers from.
        let _ = self.batch.send_with(keep_last, |data, lens| {
            socket::send_run(&*s.socket, data, lens, peer, None, &mut s.gso)
        });
    }

    /// Collects finished transfers: closes their sockets and readers, commits or discards
    /// uploads, and keeps their reports for the end of the turn.
    fn collect(&mut self) {
        let now = self.clock.now();
        while let Some(report) = self.table.poll_finished(now) {
            let (mut report, storage) = report.into_parts();
            if let Some(slot) = self.sessions.get_mut(report.session.index()) {
                if slot.as_ref().is_some_and(|s| s.handle == report.session) {
                    if let Some(s) = slot.take() {
                        s.reader.abort();
                    }
                }
            }
            let success = report.result.is_success() && report.kind == RequestKind::Write;
            if let Err(e) = self.admission.finish(storage, success) {
                report.result = TransferResult::Failed(crate::engine::TransferError::Storage(e));
            }
            self.finished.push(report);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        for s in self.sessions.iter().flatten() {
            s.reader.abort();
        }
    }
}

/// Starts the task that reads `socket` (bound to `local`) and hands every datagram to the
/// server's task; it ends when the server's task is gone.
fn spawn_reader(
    tx: &mpsc::Sender<Inbound>,
    socket: Arc<UdpSocket>,
    source: Source,
    local: SocketAddr,
    ancillary: bool,
) -> JoinHandle<()> {
    let tx = tx.clone();
    ::tokio::spawn(async move {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let got = socket
                .async_io(Interest::READABLE, || {
                    socket::recv(&*socket, &mut buf, local, ancillary)
                })
                .await;
            let got = match got {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_transient(&e) => continue,
                Err(_) => return,
            };
            let inbound = Inbound {
                source,
                from: got.source,
                local: got.destination,
                bytes: buf[..got.len].to_vec(),
                segment: got.segment,
            };
            if tx.send(inbound).await.is_err() {
                return;
            }
        }
    })
}
