//! The std multi-session server: UDP sockets and a `mio` event loop around the core
//! [`ServerTable`](crate::server::ServerTable), serving one [`Root`](super::root::Root) directory.
//!
//! Each transfer gets a new port (TID) bound on the local address its request arrived on, as RFC
//! 1350 requires, so replies leave from that address on multi-homed hosts; single-port mode
//! serves every transfer from the listening socket instead (NAT, containers). On a wildcard
//! listener the request's destination address is read with `IP_PKTINFO` / `IPV6_RECVPKTINFO`.
//! IPv4 and IPv6 both work.
//!
//! Sessions live in a growable [`VecTable`]; a datagram on a session's socket reaches its
//! session through the socket's poll token, which is the session's handle index (no lookup).
//! The session cap bounds memory under a flood of requests: at the cap, a request displaces
//! the oldest session whose client never answered (a spoofed request), and only when every
//! session has an answering client are requests refused with an ERROR.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::prelude::rust_2021::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::admission::{listener_for, random_seed, Admission, Refused, BUSY};
use super::batch::SendBatch;
pub use super::log::{format_refusal, format_refusal_json, format_report, format_report_json};
use super::root::ServedFile;
use super::socket::{self, bind_udp, is_transient, size_buffers, PollTimer, RECV_BUFFER};
use super::StdClock;
use crate::engine::{Config, ServerPolicy};
use crate::error_code::ErrorCode;
use crate::options::Options;
use crate::server::{Datagram, Full, Incoming, SessionHandle, TransferReport, TransferResult, VecTable};
use crate::wire::RequestKind;

/// Largest number of concurrent sessions a std server can be configured for. Memory is the
/// real bound: about 4 KiB per lock-step session at blksize 512 (and a socket each, unless in
/// single-port mode: raise the open-file limit to match).
pub const MAX_SESSIONS: usize = 1 << 22;

/// How the std server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The served directory.
    pub root: PathBuf,
    /// Listening addresses (default `0.0.0.0:69`).
    pub binds: Vec<SocketAddr>,
    /// Uploads may create new files.
    pub allow_write: bool,
    /// Uploads may also replace existing files (implies nothing without `allow_write`).
    pub allow_overwrite: bool,
    /// Option caps and the upload size limit.
    pub policy: ServerPolicy,
    /// Timing and retry limits.
    pub engine: Config,
    /// Concurrent sessions allowed (at most [`MAX_SESSIONS`]).
    pub max_sessions: usize,
    /// Serve every transfer from the listening port.
    pub single_port: bool,
    /// Cap the block size granted at what fits the MTU of the interface each request arrived
    /// on (see [`mtu`](super::mtu)), below `policy.max_blksize`. On by default; an operator who
    /// sets a block-size cap of their own turns it off.
    pub max_blksize_from_mtu: bool,
    /// A download whose name is not found is looked up again ignoring ASCII case (see
    /// [`Root::with_ignore_case`](super::root::Root::with_ignore_case)).
    pub ignore_case: bool,
    /// Downloads are looked for beneath `root/<client IP>/` first (see
    /// [`Root::with_per_client_root`](super::root::Root::with_per_client_root)).
    pub per_client_root: bool,
    /// Called for every request before the server's own policy (see [`RequestHook`]).
    pub hook: Option<RequestHook>,
    /// Rules that rewrite each requested name before it is looked up (tftp-hpa's `-m`; see
    /// [`Remap`](super::remap::Remap)). The root policy applies to the result.
    pub remap: Option<super::remap::Remap>,
    /// Stop serving (return from `run`) once no transfer has been in progress and no datagram
    /// has arrived for this long: inetd's "wait" mode, where inetd takes the socket back.
    pub idle_exit: Option<Duration>,
    /// The ports transfers' sockets (TIDs) are bound to, `(low, high)` inclusive; `None`: any
    /// the system picks. When every port of the range is taken, a request gets ERROR 0 (and
    /// the transfers in progress carry on). Unused in single-port mode.
    pub port_range: Option<(u16, u16)>,
    /// Bind the listening sockets with `SO_REUSEPORT`, so that several servers (the threads
    /// of [`ServerThreads`], or processes of the same user) share the ports and the kernel
    /// spreads requests over them by source address and port. Set by [`ServerThreads`].
    pub reuse_port: bool,
}

impl ServerConfig {
    /// This config with `hook` called for every request: it may serve any storage, refuse
    /// with its own ERROR, or let the root policy decide.
    ///
    /// ```no_run
    /// use tftp_proto::adapter::mio_server::{HookDecision, ServerConfig, ServerThreads};
    /// let config = ServerConfig::default().with_request_hook(|req| {
    ///     if req.filename == b"hello.txt" {
    ///         HookDecision::Serve(Box::new(b"hello\n".to_vec()))
    ///     } else {
    ///         HookDecision::FallThrough
    ///     }
    /// });
    /// let server = ServerThreads::bind(&config, 1)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_request_hook(
        mut self,
        hook: impl Fn(&RequestInfo<'_>) -> HookDecision + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(RequestHook::new(hook));
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            root: PathBuf::from("."),
            binds: vec![SocketAddr::from(([0, 0, 0, 0], 69))],
            allow_write: false,
            allow_overwrite: false,
            policy: ServerPolicy::default(),
            engine: Config::default(),
            max_sessions: 1024,
            single_port: false,
            max_blksize_from_mtu: true,
            ignore_case: false,
            per_client_root: false,
            port_range: None,
            remap: None,
            idle_exit: None,
            hook: None,
            reuse_port: false,
        }
    }
}

/// A request as a [`RequestHook`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// The local address the request arrived on.
    pub local: SocketAddr,
    /// Read (the client downloads) or write (it uploads).
    pub kind: RequestKind,
    /// The name asked for, as sent (before any `--map-file` rule).
    pub filename: &'a [u8],
    /// The transfer mode (octet or netascii; the server refuses others before the hook).
    pub mode: crate::wire::Mode<'a>,
    /// The known options asked for.
    pub options: Options,
}

/// What a [`RequestHook`] decides for a request.
pub enum HookDecision {
    /// Serve this storage (a read) or receive into it (a write): memory, a generated stream,
    /// anything that implements [`Storage`](crate::storage::Storage). An upload's storage gets
    /// [`Storage::finish`](crate::storage::Storage::finish) when the last block is in.
    Serve(Box<dyn crate::storage::Storage + Send>),
    /// Refuse with this ERROR code and text.
    Refuse {
        /// The ERROR code.
        code: ErrorCode,
        /// The ERROR text (up to 120 bytes are sent).
        message: String,
    },
    /// Apply the server's usual policy: the remap rules, then the root.
    FallThrough,
}

impl std::fmt::Debug for HookDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookDecision::Serve(_) => f.write_str("Serve(..)"),
            HookDecision::Refuse { code, message } => f
                .debug_struct("Refuse")
                .field("code", code)
                .field("message", message)
                .finish(),
            HookDecision::FallThrough => f.write_str("FallThrough"),
        }
    }
}

/// A handler the server calls for every request before its own policy
/// ([`ServerConfig::with_request_hook`]). It runs on the event loop's thread: keep it quick
/// (generate content lazily in the storage it returns, not up front).
#[derive(Clone)]
pub struct RequestHook(pub(crate) Arc<dyn Fn(&RequestInfo<'_>) -> HookDecision + Send + Sync>);

impl RequestHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&RequestInfo<'_>) -> HookDecision + Send + Sync + 'static) -> Self {
        RequestHook(Arc::new(f))
    }
}

impl std::fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestHook(..)")
    }
}

/// A request the server refused, for the log: who asked for what, and the ERROR it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The client.
    pub peer: SocketAddr,
    /// The local address the request arrived on.
    pub local: SocketAddr,
    /// Read or write.
    pub kind: RequestKind,
    /// The name asked for, as sent (at most 512 bytes).
    pub filename: Vec<u8>,
    /// The known options asked for.
    pub requested: Options,
    /// The ERROR code sent.
    pub code: ErrorCode,
    /// The ERROR text sent.
    pub message: String,
}

impl Refusal {
    /// A request refused by the server with `code` and `message`.
    pub(crate) fn of(incoming: &Incoming<'_>, code: ErrorCode, message: &str) -> Refusal {
        Refusal {
            peer: incoming.peer,
            local: incoming.local,
            kind: incoming.kind,
            filename: incoming.filename().to_vec(),
            requested: incoming.options,
            code,
            message: message.to_string(),
        }
    }

    /// A request the session table refused by itself (a mode no transfer runs).
    pub(crate) fn by_table(r: &crate::server::Refused<'_>) -> Refusal {
        let mut filename = r.request.filename.to_vec();
        filename.truncate(512);
        Refusal {
            peer: r.peer,
            local: r.local,
            kind: r.kind,
            filename,
            requested: Options::parse_request(&r.request.options).options,
            code: r.code,
            message: r.message.to_string(),
        }
    }
}

struct Listener {
    socket: UdpSocket,
    addr: SocketAddr,
    wildcard: bool,
    /// Whether receives report their destination address (packet info, on a wildcard socket).
    pktinfo: bool,
}

/// A transfer's own socket (its TID).
struct SessionSocket {
    /// The session it serves (its index is the slot in `Server::sockets` and the poll token).
    session: SessionHandle,
    socket: UdpSocket,
    /// Its address.
    tid: SocketAddr,
    /// Whether segmented sends (UDP GSO) may be tried on it.
    gso: bool,
    /// Whether coalesced receives (UDP GRO) are on.
    gro: bool,
}

/// A running std server.
pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    /// Session sockets, by their session's handle index.
    sockets: Vec<Option<SessionSocket>>,
    table: VecTable<ServedFile>,
    /// What decides each request: the hook, the remap rules, the root, the ports.
    admission: Admission,
    clock: StdClock,
    /// Datagrams on their way out: a run to one peer from one session socket.
    batch: SendBatch,
    rx: Vec<u8>,
    /// Wakes the loop at deadlines closer than the poll's millisecond resolution allows.
    timer: Option<PollTimer>,
    /// The session limit, shared by all the threads of a [`ServerThreads`].
    budget: Arc<SessionBudget>,
    /// Finished transfers collected outside a turn (to free a displaced session's slot),
    /// reported at the turn's end.
    finished: Vec<TransferReport<()>>,
    /// The sibling threads of a [`ServerThreads`] (this one at `me`), to make room on another
    /// thread when this one has no session to displace.
    siblings: Option<(Arc<[Sibling]>, usize)>,
    /// Listeners left with datagrams unread after their turn's share ([`listener_turn`]).
    backlog: Vec<bool>,
    /// Which listeners a turn has read (kept to reuse its allocation).
    read_this_turn: Vec<bool>,
    /// Datagrams read from a listener per turn.
    listener_turn: usize,
    /// Requests refused since the last turn's end, for the log.
    refusals: Vec<Refusal>,
    /// See [`ServerConfig::idle_exit`].
    idle_exit: Option<Duration>,
    /// When a datagram last arrived or a transfer was last in progress.
    last_active: std::time::Instant,
}

/// Most refusals kept for the log per turn.
const MAX_REFUSALS: usize = 4096;

/// Most datagrams read from one listening socket per turn: a quarter of the session limit,
/// from 16 to 1,024. Sessions' sockets are read every turn in between: under a flood of
/// requests, a real client's first ACK is read within a turn or two, before enough requests to
/// displace its session (the whole limit's worth) can come in; and a burst of requests (a
/// boot storm) is read in few turns, before its clients' retransmitted requests pile up.
fn listener_turn(max_sessions: usize) -> usize {
    (max_sessions / 4).clamp(16, 1024)
}

/// What the threads of a [`ServerThreads`] know of each other, for admission at the cap: a
/// thread at the shared limit with no session of its own to displace asks one that has.
#[derive(Debug)]
struct Sibling {
    /// Sessions of that thread whose client never answered (published each turn; a request
    /// to displace one takes one off).
    unanswered: AtomicUsize,
    /// Sessions other threads asked it to displace.
    displace: AtomicUsize,
    /// Wakes its event loop.
    waker: mio::Waker,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listening", &self.local_addrs())
            .field("sessions", &self.table.len())
            .finish()
    }
}

/// Several [`Server`]s, one per thread, sharing the listening ports
/// ([`ServerConfig::reuse_port`]): a server that scales across cores.
///
/// Each thread has its own sessions, sockets and event loop: the kernel hands each request to
/// one of them by its source address and port, and that thread serves the whole transfer. The
/// session limit is one budget for all the threads: a request is refused only when the whole
/// server is at the limit, never while another thread has room. At the limit, the thread that
/// got the request displaces its oldest session whose client never answered, or, having none,
/// asks a thread that has one to displace it (woken at once; the budget is over the limit by
/// at most one session per such request meanwhile). Ports given as 0 are picked
/// once, by the first server, and shared by the others.
#[derive(Debug)]
pub struct ServerThreads {
    servers: Vec<Server>,
    pin: bool,
    /// The CPUs the loops are pinned to, when requests are steered to them
    /// ([`ServerThreads::steer_by_cpu`]).
    steered: Option<Vec<usize>>,
}

impl ServerThreads {
    /// Binds `threads` servers (at least one; more than one needs Linux's `SO_REUSEPORT`).
    pub fn bind(config: &ServerConfig, threads: usize) -> io::Result<ServerThreads> {
        let threads = threads.max(1);
        let mut config = config.clone();
        config.reuse_port |= threads > 1;
        let budget = Arc::new(SessionBudget::new(config.max_sessions));
        let first = Server::bind_with(&config, Arc::clone(&budget))?;
        config.binds = first.local_addrs();
        let mut servers = vec![first];
        for _ in 1..threads {
            servers.push(Server::bind_with(&config, Arc::clone(&budget))?);
        }
        if threads > 1 {
            let siblings = servers
                .iter()
                .map(|s| {
                    Ok(Sibling {
                        unanswered: AtomicUsize::new(0),
                        displace: AtomicUsize::new(0),
                        waker: mio::Waker::new(s.poll.registry(), WAKER_TOKEN)?,
                    })
                })
                .collect::<io::Result<Vec<_>>>()?;
            let siblings: Arc<[Sibling]> = siblings.into();
            for (me, s) in servers.iter_mut().enumerate() {
                s.siblings = Some((Arc::clone(&siblings), me));
            }
        }
        Ok(ServerThreads {
            servers,
            pin: false,
            steered: None,
        })
    }

    /// One server on sockets already bound (see [`Server::from_sockets`]): one event loop, as
    /// inherited sockets cannot be shared out between loops by the kernel.
    pub fn from_sockets(config: &ServerConfig, sockets: Vec<StdUdpSocket>) -> io::Result<ServerThreads> {
        Ok(ServerThreads {
            servers: vec![Server::from_sockets(config, sockets)?],
            pin: false,
            steered: None,
        })
    }

    /// Pins each event loop to a CPU of its own when the threads run (`serve --pin-threads`):
    /// the first to the first CPU this process may use, the next to the next. On Linux, and only
    /// when there are at least as many such CPUs as threads; otherwise (and where the CPU set
    /// cannot be read or changed) the threads run where the scheduler puts them.
    ///
    /// A loop that stays on one CPU keeps its sessions' state in that CPU's caches: on a
    /// 2-vCPU machine shared with 128 lock-step clients it moved 10 % more in seven pairs of
    /// runs out of seven, though a boot storm of 256 clients showed no clear gain
    /// (`benches/results-2026-12-05-session10.md`). Off by default: it can only help a machine
    /// given over to serving, and hurts one where other pinned work shares the CPUs.
    pub fn pin_threads(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Pins the event loops as [`pin_threads`](Self::pin_threads) does and hands each request to
    /// the loop pinned to the CPU that received it (`serve --steer-by-cpu`), instead of spreading
    /// requests by a hash of the client's address and port. See
    /// [`steers_by_cpu`](Self::steers_by_cpu) for whether it took.
    ///
    /// A transfer is then served on the CPU where its request arrived: on loopback, or from
    /// virtual machines and containers on the same host, the client's own CPU, so each block's
    /// round trip stays on one CPU (a single 16 MiB download at blksize 1468 on a 2-vCPU
    /// machine: 74–97 MB/s steered, 21–25 MB/s whenever the client and its loop were on
    /// different CPUs); with a multi-queue network card, the CPU of the queue the request came
    /// in on. **Not for a network card with a single receive queue** (common in virtual
    /// machines) and no RPS: every request would arrive on one CPU and go to one loop.
    ///
    /// Linux 4.5+ (a classic BPF program on the listening sockets, `SO_ATTACH_REUSEPORT_CBPF`),
    /// with more than one thread and at least as many CPUs as threads, and not in single-port
    /// mode (there every ACK comes to the listening port too, and a client that moved to
    /// another CPU would reach a loop that does not have its transfer); otherwise requests are
    /// spread as before (and the loops are still pinned where they can be). A request that
    /// arrives on a CPU without a loop is spread as before too. A client that repeats its
    /// request (no answer within its timeout) from another CPU may be answered by two loops; it
    /// keeps the first transfer's port (RFC 1350's TIDs), and the other transfer ends on its
    /// ERROR 5 or its timeout.
    pub fn steer_by_cpu(mut self) -> Self {
        self.pin = true;
        let n = self.servers.len();
        let single_port = self.servers[0].admission.single_port();
        let cpus = if n > 1 && !single_port {
            affinity::cpus_for(n)
        } else {
            Vec::new()
        };
        // One program per listening address: attached to one socket, it serves the address's
        // whole group, whose sockets are in loop order (each server bound its own in turn).
        let attached = cpus.len() == n
            && self.servers[0]
                .listeners
                .iter()
                .all(|l| affinity::steer_by_cpu(&l.socket, &cpus));
        self.steered = attached.then_some(cpus);
        self
    }

    /// Whether requests are steered to the loop on the CPU that received them
    /// ([`steer_by_cpu`](Self::steer_by_cpu) was called and the kernel took the program).
    pub fn steers_by_cpu(&self) -> bool {
        self.steered.is_some()
    }

    /// The bound listening addresses, the same for every thread.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.servers[0].local_addrs()
    }

    /// Serves, one thread per server, until `stop` becomes true; every finished transfer is
    /// reported to `on_report`, from the thread that served it. A server that fails stops the
    /// others; the first failure is returned once every thread has stopped.
    pub fn run(self, stop: &AtomicBool, on_report: impl Fn(&TransferReport<()>) + Sync) -> io::Result<()> {
        self.run_logged(stop, on_report, |_| {})
    }

    /// [`run`](Self::run), also reporting every refused request to `on_refusal` (a missing
    /// file, a denied upload, an unknown mode, a busy server...): with `on_report`, one call
    /// per request.
    pub fn run_logged(
        self,
        stop: &AtomicBool,
        on_report: impl Fn(&TransferReport<()>) + Sync,
        on_refusal: impl Fn(&Refusal) + Sync,
    ) -> io::Result<()> {
        let failed = AtomicBool::new(false);
        let (failed, on_report, on_refusal) = (&failed, &on_report, &on_refusal);
        let cpus = match (&self.steered, self.pin) {
            (Some(cpus), _) => cpus.clone(),
            (None, true) => affinity::cpus_for(self.servers.len()),
            (None, false) => Vec::new(),
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .servers
                .into_iter()
                .enumerate()
                .map(|(i, mut server)| {
                    let cpu = cpus.get(i).copied();
                    scope.spawn(move || {
                        if let Some(cpu) = cpu {
                            affinity::pin_current_thread(cpu);
                        }
                        let r = server.run_until(
                            || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed),
                            on_report,
                            on_refusal,
                        );
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            // Join every thread, then report the first failure.
            let results: Vec<io::Result<()>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
                })
                .collect();
            results.into_iter().collect()
        })
    }
}

/// The number of sessions a server (all its threads) may have at once, and how many it has.
#[derive(Debug)]
struct SessionBudget {
    live: AtomicUsize,
    max: usize,
}

impl SessionBudget {
    fn new(max: usize) -> Self {
        SessionBudget {
            live: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// Takes one session from the budget; false when it is spent.
    fn try_take(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes one session beyond the limit: another thread was asked to displace one of its
    /// own, which gives it back.
    fn take_over(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives one session back.
    fn release(&self) {
        let _ = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl Server {
    /// Opens the root and binds every listening address.
    pub fn bind(config: &ServerConfig) -> io::Result<Server> {
        Server::bind_with(config, Arc::new(SessionBudget::new(config.max_sessions)))
    }

    /// Serves on sockets already bound (`config.binds` is not used): inherited from systemd's
    /// socket activation or inetd, say. Each must be a bound UDP socket.
    pub fn from_sockets(config: &ServerConfig, sockets: Vec<StdUdpSocket>) -> io::Result<Server> {
        Server::from_sockets_with(config, sockets, Arc::new(SessionBudget::new(config.max_sessions)))
    }

    /// [`bind`](Self::bind), counting sessions against a budget shared with other servers.
    fn bind_with(config: &ServerConfig, budget: Arc<SessionBudget>) -> io::Result<Server> {
        let sockets = config
            .binds
            .iter()
            .map(|&addr| bind_udp(addr, config.reuse_port))
            .collect::<io::Result<Vec<_>>>()?;
        Server::from_sockets_with(config, sockets, budget)
    }

    fn from_sockets_with(
        config: &ServerConfig,
        sockets: Vec<StdUdpSocket>,
        budget: Arc<SessionBudget>,
    ) -> io::Result<Server> {
        let admission = Admission::new(config, random_seed())?;
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, std_sock) in sockets.into_iter().enumerate() {
            std_sock.set_nonblocking(true)?;
            let addr = std_sock.local_addr()?;
            let wildcard = addr.ip().is_unspecified();
            let pktinfo = wildcard && socket::enable_pktinfo(&std_sock, addr.is_ipv4())?;
            size_buffers(&std_sock, 4 << 20);
            let mut socket = UdpSocket::from_std(std_sock);
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            listeners.push(Listener {
                socket,
                addr,
                wildcard,
                pktinfo,
            });
        }
        let mut policy = config.policy;
        if policy.max_write_size.is_none() {
            policy.max_write_size = config.engine.max_write_size;
        }
        let mut table = VecTable::growable(policy, config.engine);
        // The budget enforces the cap (across threads); the table's own limit only bounds it.
        table.set_session_limit(config.max_sessions.clamp(1, MAX_SESSIONS));
        table.set_hash_seed(random_seed());
        let timer = PollTimer::new(&poll, TIMER_TOKEN);
        let n_listeners = listeners.len();
        Ok(Server {
            poll,
            listeners,
            sockets: Vec::new(),
            table,
            admission,
            clock: StdClock::new(),
            batch: SendBatch::new(),
            rx: vec![0u8; RECV_BUFFER],
            timer,
            budget,
            finished: Vec::new(),
            siblings: None,
            backlog: vec![false; n_listeners],
            read_this_turn: Vec::new(),
            listener_turn: listener_turn(config.max_sessions),
            refusals: Vec::new(),
            idle_exit: config.idle_exit,
            last_active: std::time::Instant::now(),
        })
    }

    /// The bound listening addresses (with the ports the OS picked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Sessions in progress.
    pub fn sessions(&self) -> usize {
        self.table.len()
    }

    /// Serves until `stop` becomes true, reporting every finished transfer to `on_report`.
    pub fn run(&mut self, stop: &AtomicBool, on_report: impl FnMut(&TransferReport<()>)) -> io::Result<()> {
        self.run_until(|| stop.load(Ordering::Relaxed), on_report, |_| {})
    }

    /// The requests refused since the last call (the server keeps at most one turn's worth:
    /// call it after each [`turn`](Self::turn)).
    pub fn take_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refusals)
    }

    /// Serves until `stopped()` says so.
    fn run_until(
        &mut self,
        stopped: impl Fn() -> bool,
        mut on_report: impl FnMut(&TransferReport<()>),
        on_refusal: impl Fn(&Refusal),
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !stopped() {
            self.turn(&mut events, Duration::from_millis(200), &mut on_report)?;
            for r in self.refusals.drain(..) {
                on_refusal(&r);
            }
            if !self.table.is_empty() {
                self.last_active = std::time::Instant::now();
            }
            if self
                .idle_exit
                .is_some_and(|idle| self.last_active.elapsed() >= idle)
            {
                break;
            }
        }
        self.table
            .abort_all(ErrorCode::NotDefined, "Server shutting down");
        self.flush();
        self.reap(&mut on_report);
        Ok(())
    }

    /// One turn of the event loop: waits at most `max_wait` for traffic or a deadline.
    pub fn turn(
        &mut self,
        events: &mut Events,
        max_wait: Duration,
        on_report: &mut impl FnMut(&TransferReport<()>),
    ) -> io::Result<()> {
        let now = self.clock.now();
        let mut wait = match self.table.poll_timeout() {
            Some(t) if t <= now => Duration::ZERO,
            Some(t) => (t - now).min(max_wait),
            None => max_wait,
        };
        if self.backlog.contains(&true) {
            wait = Duration::ZERO;
        }
        // Listeners read this turn (a backlog is read at most once per turn).
        let mut read = std::mem::take(&mut self.read_this_turn);
        read.clear();
        read.resize(self.listeners.len(), false);
        if let Some(timer) = &self.timer {
            wait = timer.arm(wait);
        }
        match self.poll.poll(events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        // Every socket with something to read is read before any timer fires: a peer's ACK
        // that waits in its socket while the loop was busy must not be answered by a
        // retransmission. A full batch of events may leave readable sockets for the next poll,
        // so poll again at once (boundedly) until a batch comes back short.
        if !events.is_empty() {
            self.last_active = std::time::Instant::now();
        }
        for round in 0.. {
            let full = events.iter().count() >= events.capacity();
            for event in events.iter() {
                let token = event.token();
                if token == TIMER_TOKEN {
                    if let Some(timer) = &self.timer {
                        timer.clear();
                    }
                } else if token == WAKER_TOKEN {
                    // Another thread asked for room (handled below).
                } else if token.0 < self.listeners.len() {
                    if !read[token.0] {
                        read[token.0] = true;
                        self.drain_listener(token.0)?;
                    }
                } else {
                    self.drain_session(token.0 - self.listeners.len())?;
                }
            }
            if !full || round >= 64 {
                break;
            }
            match self.poll.poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e),
            }
        }
        // Listeners with datagrams left from an earlier turn (edge-triggered: no new event).
        for (i, &was_read) in read.iter().enumerate() {
            if self.backlog[i] && !was_read {
                self.drain_listener(i)?;
            }
        }
        self.read_this_turn = read;
        self.make_room_for_siblings();
        self.table.handle_timeout(self.clock.now());
        self.flush();
        self.reap(on_report);
        self.publish();
        Ok(())
    }

    /// Keeps a refused request for the log (a bounded number per turn: beyond, a flood of
    /// refusals is not logged one by one).
    fn note_refusal(&mut self, incoming: &Incoming<'_>, code: ErrorCode, message: &str) {
        if self.refusals.len() < MAX_REFUSALS {
            self.refusals.push(Refusal::of(incoming, code, message));
        }
    }

    /// Tells the sibling threads how many of this thread's sessions could be displaced.
    fn publish(&self) {
        if let Some((siblings, me)) = &self.siblings {
            siblings[*me]
                .unanswered
                .store(self.table.unanswered(), Ordering::Release);
        }
    }

    /// Displaces the sessions other threads asked this one to (they admitted a request each
    /// in their place).
    fn make_room_for_siblings(&mut self) {
        let asked = match &self.siblings {
            Some((siblings, me)) => siblings[*me].displace.swap(0, Ordering::AcqRel),
            None => 0,
        };
        let mut displaced = false;
        for _ in 0..asked {
            displaced |= self.table.displace_unanswered();
        }
        if displaced {
            self.flush();
            self.collect();
        }
    }

    /// At the shared limit with no session of its own to displace: asks a sibling thread that
    /// has a session whose client never answered to displace it, and takes its place in the
    /// budget meanwhile. Whether one was found.
    fn borrow_room(&self) -> bool {
        let Some((siblings, me)) = &self.siblings else {
            return false;
        };
        let n = siblings.len();
        for k in 1..n {
            let other = &siblings[(me + k) % n];
            let reserved = other
                .unanswered
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1))
                .is_ok();
            if reserved {
                other.displace.fetch_add(1, Ordering::AcqRel);
                let _ = other.waker.wake();
                self.budget.take_over();
                return true;
            }
        }
        false
    }

    fn drain_listener(&mut self, i: usize) -> io::Result<()> {
        // The request borrows the receive buffer while the server acts on it.
        let mut rx = std::mem::take(&mut self.rx);
        let r = self.drain_listener_into(i, &mut rx);
        self.rx = rx;
        r
    }

    fn drain_listener_into(&mut self, i: usize, rx: &mut [u8]) -> io::Result<()> {
        for _ in 0..self.listener_turn {
            let l = &self.listeners[i];
            let (n, from, local) = match socket::recv(&l.socket, rx, l.addr, l.pktinfo) {
                Ok(got) => (got.len, got.source, got.destination),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog[i] = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            let now = self.clock.now();
            let datagram = &rx[..n];
            let incoming = match self.table.handle_datagram(now, local, from, true, datagram) {
                Datagram::Request(incoming) => Some(incoming),
                Datagram::Refused(r) => {
                    if self.refusals.len() < MAX_REFUSALS {
                        self.refusals.push(Refusal::by_table(&r));
                    }
                    None
                }
                Datagram::Handled => None,
            };
            if let Some(incoming) = incoming {
                // A request that supersedes its client's old session ended that one: free it.
                self.collect();
                let mut admitted = self.budget.try_take();
                if !admitted && self.table.displace_unanswered() {
                    // At the cap: the oldest session whose client never answered makes room.
                    // Its ERROR leaves from its socket before the socket is closed.
                    self.flush();
                    self.collect();
                    admitted = self.budget.try_take();
                }
                if !admitted {
                    admitted = self.borrow_room();
                }
                if !admitted {
                    self.table.refuse(&incoming, ErrorCode::NotDefined, BUSY);
                    self.note_refusal(&incoming, ErrorCode::NotDefined, BUSY);
                } else {
                    let before = self.table.len();
                    let refused = accept_request(
                        &mut self.table,
                        &mut self.admission,
                        &self.poll,
                        &mut self.sockets,
                        self.listeners.len(),
                        now,
                        &incoming,
                    );
                    if self.table.len() == before {
                        // Refused after all (no such file, out of sockets): the budget is not used.
                        self.budget.release();
                    }
                    if let Some((code, message)) = refused {
                        self.note_refusal(&incoming, code, &message);
                    }
                }
                self.publish();
            }
            self.flush();
        }
        // Its share is read: the rest waits for the next turn.
        self.backlog[i] = true;
        Ok(())
    }

    fn drain_session(&mut self, index: usize) -> io::Result<()> {
        loop {
            let Some(Some(session)) = self.sockets.get(index) else {
                return Ok(());
            };
            let handle = session.session;
            // Session sockets receive coalesced runs (see `accept_request`): one receive may
            // hold several datagrams of `segment` bytes from one peer (the last maybe shorter).
            let received = socket::recv(&session.socket, &mut self.rx, session.tid, session.gro);
            let (n, from, segment) = match received {
                Ok(got) => (got.len, got.source, got.segment),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_transient(&e) => continue,
                Err(e) => return Err(e),
            };
            let size = segment.filter(|&s| s > 0).unwrap_or(n);
            let mut at = 0;
            loop {
                let end = n.min(at + size);
                let now = self.clock.now();
                self.table
                    .handle_session_datagram(now, handle, from, &self.rx[at..end]);
                self.flush();
                at = end;
                if at >= n {
                    break;
                }
            }
        }
    }

    /// Sends everything the table has to send (see [`send_all`]).
    fn flush(&mut self) {
        send_all(
            &mut self.table,
            &mut self.batch,
            &self.listeners,
            &mut self.sockets,
            &self.clock,
        );
    }

    /// Collects finished transfers now (their slots, sockets and budget are free at once); they
    /// are reported at the end of the turn.
    fn collect(&mut self) {
        let now = self.clock.now();
        while let Some(report) = self.table.poll_finished(now) {
            let report = self.close(report);
            self.finished.push(report);
        }
    }

    /// Releases a finished transfer's budget and socket and commits or discards its upload.
    fn close(&mut self, report: TransferReport<ServedFile>) -> TransferReport<()> {
        self.budget.release();
        let (mut report, storage) = report.into_parts();
        let index = report.session.index();
        if let Some(slot) = self.sockets.get_mut(index) {
            if slot.as_ref().is_some_and(|s| s.session == report.session) {
                if let Some(mut s) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut s.socket);
                }
            }
        }
        let success = report.result.is_success() && report.kind == RequestKind::Write;
        if let Err(e) = self.admission.finish(storage, success) {
            report.result = TransferResult::Failed(crate::engine::TransferError::Storage(e));
        }
        report
    }

    /// Collects finished transfers: commits or discards uploads, closes their sockets.
    fn reap(&mut self, on_report: &mut impl FnMut(&TransferReport<()>)) {
        self.collect();
        for report in self.finished.drain(..) {
            on_report(&report);
        }
    }
}

/// Sends everything `table` has to send.
///
/// Consecutive datagrams from one session socket to one peer (a window) are collected and sent
/// together (see [`SendBatch`]). A datagram that cannot be sent is dropped, whatever the error:
/// the protocol recovers by retransmission or timeout, and one peer's unusable address (source
/// port 0, say) must not stop the server for everyone.
fn send_all(
    table: &mut VecTable<ServedFile>,
    batch: &mut SendBatch,
    listeners: &[Listener],
    sockets: &mut [Option<SessionSocket>],
    clock: &StdClock,
) {
    let now = clock.now();
    // The (session, peer) of the datagrams in the batch.
    let mut run: Option<(SessionHandle, SocketAddr)> = None;
    while let Some(tx) = table.poll_transmit(now, batch.slot()) {
        let own = tx.session.filter(|h| {
            sockets
                .get(h.index())
                .is_some_and(|s| s.as_ref().is_some_and(|s| s.session == *h))
        });
        let Some(session) = own else {
            // From a listening socket (a refusal, single-port mode): at once, alone. It goes to
            // another socket than the run's, so order between them does not matter.
            let data = &batch.slot()[..tx.len];
            if let Some(l) = listener_for(listeners, tx.local, |l| (l.addr, l.wildcard)) {
                let source = l.wildcard.then_some(tx.local);
                let _ = socket::send_run(&l.socket, data, &[tx.len], tx.destination, source, &mut false);
            }
            continue;
        };
        let key = (session, tx.destination);
        batch.push(tx.len);
        match run {
            Some(r) if r != key => send_run(batch, sockets, r, true),
            _ => {}
        }
        run = Some(key);
        if !batch.has_room() {
            send_run(batch, sockets, key, false);
        }
    }
    if let Some(r) = run {
        send_run(batch, sockets, r, false);
    }
    // Everything is sent: file work for the next turn now overlaps the round trip.
    table.idle();
}

/// Sends the batch (all but its last datagram when `keep_last`) from `session`'s socket to
/// `peer`.
fn send_run(
    batch: &mut SendBatch,
    sockets: &mut [Option<SessionSocket>],
    (session, peer): (SessionHandle, SocketAddr),
    keep_last: bool,
) {
    let Some(Some(s)) = sockets.get_mut(session.index()) else {
        batch.clear();
        return;
    };
    let _ = batch.send_with(keep_last, |data, lens| {
        socket::send_run(&s.socket, data, lens, peer, None, &mut s.gso)
    });
}

/// The poll token of the [`PollTimer`].
const TIMER_TOKEN: Token = Token(usize::MAX);

/// The poll token of the waker other threads use to ask for room ([`Sibling`]).
const WAKER_TOKEN: Token = Token(usize::MAX - 1);

/// Answers a new request: resolves the file under the policy, opens the session's socket, and
/// hands both to the table (or refuses with the matching ERROR).
fn accept_request(
    table: &mut VecTable<ServedFile>,
    admission: &mut Admission,
    poll: &Poll,
    sockets: &mut Vec<Option<SessionSocket>>,
    first_token: usize,
    now: crate::time::Instant,
    incoming: &Incoming<'_>,
) -> Option<Refused> {
    let refuse = |table: &mut VecTable<ServedFile>, (code, message): Refused| {
        table.refuse(incoming, code, &message);
        Some((code, message))
    };
    let (policy, file) = match admission.resolve(table.policy(), incoming) {
        Ok(r) => r,
        Err(refused) => return refuse(table, refused),
    };
    if admission.single_port() {
        if let Err(Full(file)) = table.accept_with(now, incoming, file, incoming.local, &policy) {
            let _ = admission.finish(file, false);
            return Some((ErrorCode::NotDefined, BUSY.into()));
        }
        return None;
    }
    let session_socket = match admission.bind_session(incoming, &policy) {
        Ok(s) => s,
        Err(refused) => {
            let _ = admission.finish(file, false);
            return refuse(table, refused);
        }
    };
    let (tid, gro) = (session_socket.tid, session_socket.gro);
    let mut socket = UdpSocket::from_std(session_socket.socket);
    let session = match table.accept_with(now, incoming, file, tid, &policy) {
        Ok(session) => session,
        Err(Full(file)) => {
            let _ = admission.finish(file, false);
            return Some((ErrorCode::NotDefined, BUSY.into()));
        }
    };
    // The socket's poll token is its session's slot: datagrams reach the session directly.
    let registered = poll.registry().register(
        &mut socket,
        Token(first_token + session.index()),
        Interest::READABLE,
    );
    if registered.is_err() {
        // Out of resources for this one session (e.g. the epoll watch limit): end it with an
        // ERROR (sent from its socket, kept until the session is collected) and keep serving.
        table.abort(session, ErrorCode::NotDefined, "Server out of sockets");
    }
    if sockets.len() <= session.index() {
        sockets.resize_with(session.index() + 1, || None);
    }
    sockets[session.index()] = Some(SessionSocket {
        session,
        socket,
        tid,
        gso: socket::GSO_AVAILABLE,
        gro,
    });
    None
}

/// CPU affinity for [`ServerThreads::pin_threads`] (Linux; nothing elsewhere).
mod affinity {
    use std::prelude::rust_2021::*;

    /// The CPUs `threads` event loops are pinned to, in order: the first `threads` CPUs this
    /// process may run on, or none when there are fewer of them (or the set cannot be read).
    #[cfg(target_os = "linux")]
    pub(super) fn cpus_for(threads: usize) -> Vec<usize> {
        use nix::sched::{sched_getaffinity, CpuSet};
        use nix::unistd::Pid;
        let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
            return Vec::new();
        };
        let first: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .take(threads)
            .collect();
        if first.len() < threads {
            return Vec::new();
        }
        first
    }

    /// Pins the calling thread to `cpu`; a failure leaves it where it was.
    #[cfg(target_os = "linux")]
    pub(super) fn pin_current_thread(cpu: usize) {
        use nix::sched::{sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let mut set = CpuSet::new();
        if set.set(cpu).is_ok() {
            // Pid 0: the calling thread.
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
        }
    }

    /// Hands each request arriving at the reuse-port group of `socket` to the loop pinned to
    /// the CPU the kernel received it on: `cpus[i]` is loop `i`'s CPU, and the group's sockets
    /// are in loop order (each loop bound its own, in turn). A request received on a CPU with no
    /// loop goes by the kernel's hash of its addresses, as without this program. A classic BPF
    /// program (`SO_ATTACH_REUSEPORT_CBPF`, Linux 4.5+); whether the kernel took it.
    #[cfg(target_os = "linux")]
    pub(super) fn steer_by_cpu(socket: &impl std::os::fd::AsFd, cpus: &[usize]) -> bool {
        use nix::libc::{self, sock_filter, sock_fprog};
        use nix::sys::socket::{setsockopt, sockopt::AttachReusePortCbpf};
        let op = |code: u32| u16::try_from(code).unwrap_or(0);
        let insn = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
        // A = the CPU the datagram is being received on.
        let cpu_offset = (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32;
        let mut program = vec![insn(
            op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
            0,
            0,
            cpu_offset,
        )];
        for (i, &cpu) in cpus.iter().enumerate() {
            let (Ok(cpu), Ok(i)) = (u32::try_from(cpu), u32::try_from(i)) else {
                return false;
            };
            // if A == cpu { return i } (else skip the return).
            program.push(insn(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), 0, 1, cpu));
            program.push(insn(op(libc::BPF_RET | libc::BPF_K), 0, 0, i));
        }
        // Past the group's last socket: the kernel picks by hash.
        program.push(insn(op(libc::BPF_RET | libc::BPF_K), 0, 0, u32::MAX));
        let Ok(len) = u16::try_from(program.len()) else {
            return false;
        };
        let fprog = sock_fprog {
            len,
            filter: program.as_mut_ptr(),
        };
        setsockopt(socket, AttachReusePortCbpf, &fprog).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn steer_by_cpu<T>(_socket: &T, _cpus: &[usize]) -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn cpus_for(_threads: usize) -> Vec<usize> {
        Vec::new()
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn pin_current_thread(_cpu: usize) {}
}
