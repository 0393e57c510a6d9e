//! The embassy-net server: [`EmbassyServer`], a fixed [`ArrayTable`] of sessions served from
//! one UDP socket (single-port mode: every transfer answers from the port requests arrive on,
//! told apart by the client's address), with the application's [`Files`] deciding what each
//! request reads or writes.
//!
//! One socket keeps a firmware's RAM small: embassy-net sockets each own their buffers, and
//! clients (tftp-hpa, U-Boot, iPXE, UEFI, the engine) take the port of the first answer as the
//! server's, whichever it is.

use core::future::Future;
use core::net::{IpAddr, SocketAddr};
use core::pin::pin;
use core::task::{Context, Waker};

use embassy_futures::select::{select, Either};
use embassy_net::udp::{SendError, UdpMetadata, UdpSocket};
use embassy_net::IpAddress;
use embassy_time::Timer;

use super::{at, datagram_capacity, endpoint, ip_address, now, socket_addr, Error};
use crate::engine::{Config, Refusal, ServerPolicy};
use crate::error_code::ErrorCode;
use crate::server::{ArrayTable, Datagram, Incoming, ServerTable, TransferReport};
use crate::storage::Storage;
use crate::time::Instant;
use crate::wire::{DATA_HEADER_LEN, MAX_REQUEST_LEN};

/// What an [`EmbassyServer`] serves: the application's answer to each request, and its record
/// of each transfer that ended.
pub trait Files {
    /// Where a transfer's data comes from or goes to (a flash region, a RAM buffer).
    type Storage: Storage;

    /// Accepts a request with the storage to serve it from (a read) or into (a write), or
    /// refuses it with an ERROR. [`Incoming::kind`] tells reads from writes.
    fn open(&mut self, request: &Incoming<'_>) -> Result<Self::Storage, Refusal>;

    /// A transfer ended ([`TransferReport::result`] says how), with its storage: commit a
    /// completed upload here, discard a failed one. The default drops the storage.
    fn finished(&mut self, report: TransferReport<Self::Storage>) {
        let _ = report;
    }
}

/// A small TFTP server on one embassy-net UDP socket: up to `N` transfers at once, no heap.
///
/// The session table is inline (each slot holds a transfer), so a server lives in a `static`
/// (`StaticCell`) or a task's state rather than on a small stack; [`new`](Self::new) is
/// `const`. At `N` sessions a new request displaces a session whose client never answered
/// (a spoofed or abandoned request) or, when every client answers, is refused with ERROR 0.
///
/// ```no_run
/// # async fn demo(stack: embassy_net::Stack<'_>) {
/// use embassy_net::udp::{PacketMetadata, UdpSocket};
/// use tftp_proto::embassy::{EmbassyServer, Files};
/// use tftp_proto::engine::{Config, Refusal, ServerPolicy};
/// use tftp_proto::server::Incoming;
/// use tftp_proto::{ErrorCode, RequestKind};
///
/// /// Serves one file from flash, read-only.
/// struct Flash(&'static [u8]);
/// impl Files for Flash {
///     type Storage = &'static [u8];
///     fn open(&mut self, request: &Incoming<'_>) -> Result<&'static [u8], Refusal> {
///         match (request.kind, request.filename()) {
///             (RequestKind::Read, b"config.txt") => Ok(self.0),
///             (RequestKind::Read, _) => Err(Refusal { code: ErrorCode::FileNotFound, message: "No such file" }),
///             _ => Err(Refusal { code: ErrorCode::AccessViolation, message: "Read-only" }),
///         }
///     }
/// }
///
/// let (mut rx_meta, mut tx_meta) = ([PacketMetadata::EMPTY; 8], [PacketMetadata::EMPTY; 8]);
/// let (mut rx, mut tx) = ([0u8; 4096], [0u8; 4096]);
/// let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
/// socket.bind(69).unwrap();
/// let mut server: EmbassyServer<&'static [u8], 4> =
///     EmbassyServer::new(ServerPolicy::default(), Config::default());
/// let mut buf = [0u8; 1472];
/// let error = server.run(&mut socket, &mut Flash(b"hello\n"), &mut buf).await;
/// # let _ = error;
/// # }
/// ```
pub struct EmbassyServer<S, const N: usize> {
    table: ArrayTable<S, N>,
}

impl<S: Storage, const N: usize> EmbassyServer<S, N> {
    /// A server granting options under `policy` (its `max_blksize` is lowered further to what
    /// the socket and the transmit buffer hold), timing transfers by `config`.
    pub const fn new(policy: ServerPolicy, config: Config) -> Self {
        EmbassyServer {
            table: ServerTable::new(policy, config),
        }
    }

    /// The session table: how many transfers run, which are unanswered.
    pub fn table(&self) -> &ArrayTable<S, N> {
        &self.table
    }

    /// Serves requests arriving on `socket` (bound to the server's port, usually 69) until the
    /// socket fails for good, which is the error returned: it is not bound, or its buffers or
    /// `buf` (the transmit buffer datagrams are written into before they are sent) cannot
    /// hold a 516-byte datagram. Dropping the future (to stop the server) ends every transfer
    /// with an ERROR to its client, sent as far as the socket has room.
    pub async fn run<F: Files<Storage = S>>(
        &mut self,
        socket: &mut UdpSocket<'_>,
        files: &mut F,
        buf: &mut [u8],
    ) -> Error {
        let port = socket.endpoint().port;
        if port == 0 {
            return Error::Send(SendError::SocketNotBound);
        }
        let capacity = datagram_capacity(socket).min(buf.len());
        let least = MAX_REQUEST_LEN + DATA_HEADER_LEN;
        if capacity < least {
            return Error::SocketBufferTooSmall {
                needed: least,
                capacity,
            };
        }
        // Grant no block the socket or `buf` cannot carry.
        let mut policy = *self.table.policy();
        let fits = u16::try_from(capacity - DATA_HEADER_LEN).unwrap_or(u16::MAX);
        policy.max_blksize = policy.max_blksize.min(fits);
        let mut serving = Serving {
            table: &mut self.table,
            socket,
            files,
        };
        serving.serve(buf, port, &policy).await
    }
}

/// A running server's table, socket and files. Dropped (the server's future was cancelled), it
/// ends every transfer, queues their ERRORs and reports them to the files.
struct Serving<'t, 's, 'd, 'f, S: Storage, F: Files<Storage = S>, const N: usize> {
    table: &'t mut ArrayTable<S, N>,
    socket: &'s mut UdpSocket<'d>,
    files: &'f mut F,
}

impl<S: Storage, F: Files<Storage = S>, const N: usize> Serving<'_, '_, '_, '_, S, F, N> {
    async fn serve(&mut self, buf: &mut [u8], port: u16, policy: &ServerPolicy) -> Error {
        let Serving { table, socket, files } = self;
        loop {
            let n = now();
            collect(table, *files, n);
            if let Err(e) = send_all(table, socket, buf, n).await {
                return e;
            }
            table.idle();
            let deadline = table.poll_timeout();
            let receive = socket.recv_from_with(|datagram, meta| {
                let local = local_addr(meta.local_address, port);
                receive(table, *files, policy, local, socket_addr(meta.endpoint), datagram);
            });
            match deadline {
                Some(deadline) => {
                    if let Either::Second(()) = select(receive, Timer::at(at(deadline))).await {
                        table.handle_timeout(now());
                    }
                }
                None => receive.await,
            }
        }
    }
}

impl<S: Storage, F: Files<Storage = S>, const N: usize> Drop for Serving<'_, '_, '_, '_, S, F, N> {
    fn drop(&mut self) {
        if !self.table.is_empty() {
            self.table
                .abort_all(ErrorCode::NotDefined, "Server shutting down");
            // The ERRORs go into the socket's buffer as far as it has room now; this cannot wait.
            let mut buf = [0u8; MAX_REQUEST_LEN + DATA_HEADER_LEN];
            let mut cx = Context::from_waker(Waker::noop());
            let _ = pin!(send_all(self.table, self.socket, &mut buf, now()))
                .as_mut()
                .poll(&mut cx);
        }
        collect(self.table, self.files, now());
    }
}

/// Hands every finished transfer to the application (which frees its slot).
fn collect<S: Storage, F: Files<Storage = S>, const N: usize>(
    table: &mut ArrayTable<S, N>,
    files: &mut F,
    now: Instant,
) {
    while let Some(report) = table.poll_finished(now) {
        files.finished(report);
    }
}

/// Feeds one datagram to the table; a new request goes to the application, to be accepted or
/// refused before the socket's buffer is reused.
fn receive<S: Storage, F: Files<Storage = S>, const N: usize>(
    table: &mut ArrayTable<S, N>,
    files: &mut F,
    policy: &ServerPolicy,
    local: SocketAddr,
    from: SocketAddr,
    datagram: &[u8],
) {
    let now = now();
    let Datagram::Request(incoming) = table.handle_datagram(now, local, from, true, datagram) else {
        return;
    };
    // Finished transfers first: their slots are free for this one.
    collect(table, files, now);
    match files.open(&incoming) {
        Ok(storage) => {
            // A full table has refused it (ERROR 0 queued) and hands the storage back.
            if let Err(full) = table.accept_with(now, &incoming, storage, incoming.local, policy) {
                drop(full);
            }
        }
        Err(refusal) => table.refuse(&incoming, refusal.code, refusal.message),
    }
}

/// Sends everything the table has to send now. Datagrams to an address family this adapter
/// was built without, or that the stack cannot route, are dropped (the transfer recovers or
/// times out); only an unbound socket is an error.
async fn send_all<S: Storage, const N: usize>(
    table: &mut ArrayTable<S, N>,
    socket: &mut UdpSocket<'_>,
    buf: &mut [u8],
    now: Instant,
) -> Result<(), Error> {
    while let Some(tx) = table.poll_transmit(now, buf) {
        let Some(to) = endpoint(tx.destination) else {
            continue;
        };
        let mut meta = UdpMetadata::from(to);
        meta.local_address = source_address(tx.local.ip());
        match socket.send_to(&buf[..tx.len], meta).await {
            Ok(()) => {}
            Err(SendError::SocketNotBound) => return Err(Error::Send(SendError::SocketNotBound)),
            Err(SendError::NoRoute) => warn!("tftp {}: datagram not sent: no route", tx.destination),
            Err(SendError::PacketTooLarge) => {
                warn!(
                    "tftp {}: datagram not sent: larger than the socket's buffer",
                    tx.destination
                )
            }
        }
    }
    Ok(())
}

/// The engine's local address of a datagram that arrived at `address` (unknown: unspecified).
fn local_addr(address: Option<IpAddress>, port: u16) -> SocketAddr {
    let ip = address.map_or(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), IpAddr::from);
    SocketAddr::new(ip, port)
}

/// The source address to send from: the one the request arrived at; `None` lets the stack
/// choose (unspecified, or a family this adapter was built without).
fn source_address(ip: IpAddr) -> Option<IpAddress> {
    (!ip.is_unspecified()).then(|| ip_address(ip)).flatten()
}
