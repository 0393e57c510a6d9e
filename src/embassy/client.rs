//! The embassy-net client: one transfer at a time on the caller's [`UdpSocket`], downloads into
//! a buffer or any [`Storage`], uploads from any `Storage`, every option of the engine.
//!
//! It is cancel-safe: dropping a transfer's future (an `embassy_futures::select` that lost, a
//! `with_timeout`) aborts the transfer and queues an ERROR ("Transfer cancelled") for the
//! server when the socket has room, so the server stops at once instead of after its timeouts.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::pin;
use core::task::{Context, Waker};

use embassy_futures::select::{select, Either};
use embassy_net::udp::UdpSocket;
use embassy_net::IpEndpoint;
use embassy_time::Timer;

use super::{at, datagram_capacity, endpoint, now, socket_addr, Error};
use crate::boot::{BootClient, BootConfig, BootError, Status};
use crate::engine::{ClientRequest, Config, Summary, Transfer, TransferError, TransferMode};
use crate::error_code::ErrorCode;
use crate::options::Options;
use crate::options::DEFAULT_BLKSIZE;
use crate::storage::{SliceWriter, Storage};
use crate::wire::{encode_error_lossy, RequestKind, DATA_HEADER_LEN, MAX_REQUEST_LEN};

/// The ERROR text a cancelled transfer sends its peer.
const CANCELLED: &str = "Transfer cancelled";

/// Longest a new transfer waits for an earlier one's queued datagrams to leave the socket.
const FLUSH_WAIT: embassy_time::Duration = embassy_time::Duration::from_millis(100);

/// A TFTP client on an embassy-net UDP socket: no heap, no std.
///
/// Each transfer binds the socket afresh, to a new local port unless
/// [`local_port`](Self::local_port) names one (a new port per transfer is a fresh transfer ID,
/// as RFC 1350 asks, so a late datagram of an earlier transfer cannot join the next one).
///
/// ```no_run
/// # async fn demo(stack: embassy_net::Stack<'_>) -> Result<(), tftp_proto::embassy::Error> {
/// use embassy_net::udp::{PacketMetadata, UdpSocket};
/// use embassy_net::Ipv4Address;
/// use tftp_proto::embassy::EmbassyClient;
/// use tftp_proto::Options;
///
/// // Room for a window of 4 blocks of 1468 bytes each way.
/// let (mut rx_meta, mut tx_meta) = ([PacketMetadata::EMPTY; 4], [PacketMetadata::EMPTY; 4]);
/// let (mut rx, mut tx) = ([0u8; 4 * 1472], [0u8; 4 * 1472]);
/// let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
///
/// let mut image = [0u8; 64 * 1024];
/// let mut client = EmbassyClient::new(&mut socket, (Ipv4Address::new(192, 0, 2, 1), 69))
///     .options(Options { blksize: Some(1468), windowsize: Some(4), tsize: Some(0), ..Options::NONE });
/// let len = client.get_into(b"firmware.bin", &mut image).await?;
/// # let _ = len;
/// # Ok(())
/// # }
/// ```
pub struct EmbassyClient<'s, 'd> {
    socket: &'s mut UdpSocket<'d>,
    server: SocketAddr,
    options: Options,
    mode: TransferMode,
    config: Config,
    local_port: u16,
}

impl<'s, 'd> EmbassyClient<'s, 'd> {
    /// A client of `server` (address and port, usually 69) on `socket`: octet mode, no
    /// options, the engine's default timing.
    pub fn new(socket: &'s mut UdpSocket<'d>, server: impl Into<IpEndpoint>) -> Self {
        EmbassyClient {
            socket,
            server: socket_addr(server.into()),
            options: Options::NONE,
            mode: TransferMode::Octet,
            config: Config::default(),
            local_port: 0,
        }
    }

    /// Options to ask for (`blksize`, `windowsize`, `timeout`, `tsize`: any `tsize` value asks
    /// for it; `rollover`). The socket's buffers must hold `4 + blksize` bytes.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// The transfer mode (octet by default; netascii converts line ends).
    pub fn mode(mut self, mode: TransferMode) -> Self {
        self.mode = mode;
        self
    }

    /// Timing and limits: retransmission timeouts, retries, the dally after a download.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The local port transfers use; 0 (the default) picks a new one for each transfer.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = port;
        self
    }

    /// Downloads `remote` into `dest`, returning the file's length. A file longer than `dest`
    /// fails with a storage error (the server hears ERROR 3); asking for `tsize` refuses it
    /// before any data flows.
    pub async fn get_into(&mut self, remote: &[u8], dest: &mut [u8]) -> Result<usize, Error> {
        let (written, _) = self.get(remote, SliceWriter::new(dest)).await?;
        Ok(written.len())
    }

    /// Downloads `remote` into `dest` with the [`BootClient`], returning the file's length: the
    /// smallest download, for a boot loader that counts its flash. Octet mode only; the
    /// options asked are this client's `blksize`, `windowsize`, `timeout` and `tsize`; the
    /// retransmission interval is fixed (the granted `timeout`, else the config's
    /// `initial_rto`) with [`BootConfig::DEFAULT`]'s retry cap; the download is over with its
    /// final ACK (no dally). A firmware that calls only this links the boot client and not the
    /// engine (see the README's footprint table). Cancel-safe like the others.
    pub async fn boot_into(&mut self, remote: &[u8], dest: &mut [u8]) -> Result<usize, Error> {
        let config = BootConfig {
            blksize: self.options.blksize,
            windowsize: self.options.windowsize,
            timeout: self.options.timeout,
            tsize: self.options.tsize.is_some(),
            retransmit: self.config.initial_rto,
            ..BootConfig::DEFAULT
        };
        let block = usize::from(config.blksize.unwrap_or(DEFAULT_BLKSIZE)).max(usize::from(DEFAULT_BLKSIZE));
        let needed = DATA_HEADER_LEN + block;
        let capacity = datagram_capacity(self.socket);
        if capacity < needed {
            return Err(Error::SocketBufferTooSmall { needed, capacity });
        }
        let server = endpoint(self.server).ok_or(Error::Unaddressable)?;
        self.rebind().await?;
        let mut out = [0u8; MAX_REQUEST_LEN + DATA_HEADER_LEN];
        let mut client = BootClient::new(self.server, remote, dest, config);
        let len = client.start(now(), &mut out).map_err(Error::Boot)?;
        let mut guard = BootGuard {
            socket: &mut *self.socket,
            peer: Some(server),
        };
        let socket = &mut *guard.socket;
        socket.send_to(&out[..len], server).await.map_err(Error::Send)?;
        let outcome = loop {
            if let Some(outcome) = client.outcome() {
                break outcome;
            }
            let Some(deadline) = client.poll_timeout() else {
                break Err(BootError::TimedOut);
            };
            let receive = socket.recv_from_with(|datagram, meta| {
                let status = client.handle_datagram(now(), socket_addr(meta.endpoint), datagram, &mut out);
                (status, meta.endpoint)
            });
            let (status, from) = match select(receive, Timer::at(at(deadline))).await {
                Either::First(answer) => answer,
                Either::Second(()) => (client.handle_timeout(now(), &mut out), server),
            };
            let to = match status {
                Status::Idle => continue,
                Status::Send(len) => endpoint(client.peer()).map(|to| (to, len)),
                Status::Reply(len) => Some((from, len)),
            };
            if let Some((to, len)) = to {
                socket.send_to(&out[..len], to).await.map_err(Error::Send)?;
            }
            if let Some(peer) = endpoint(client.peer()) {
                guard.peer = Some(peer);
            }
        };
        // Over: nothing to cancel. The final ACK (or the ERROR) leaves before this returns.
        guard.peer = None;
        guard.socket.flush().await;
        outcome.map_err(Error::Boot)
    }

    /// Downloads `remote` into `storage`, handing it back with a [`Summary`]. Pass `&mut
    /// storage` to keep it when the transfer fails (to discard what was written).
    pub async fn get<S: Storage>(&mut self, remote: &[u8], storage: S) -> Result<(S, Summary), Error> {
        self.run(RequestKind::Read, remote, storage).await
    }

    /// Uploads `storage` (a `&[u8]` for memory) as `remote`. A requested `tsize` is sent as the
    /// storage's size.
    pub async fn put<S: Storage>(&mut self, remote: &[u8], storage: S) -> Result<(S, Summary), Error> {
        self.run(RequestKind::Write, remote, storage).await
    }

    /// Binds the socket afresh for a transfer (a new local port unless one was set). What an
    /// earlier transfer left queued (a cancelled one's ERROR) leaves first, waiting at most
    /// [`FLUSH_WAIT`] for a stack that cannot send it.
    async fn rebind(&mut self) -> Result<(), Error> {
        let _ = select(self.socket.flush(), Timer::after(FLUSH_WAIT)).await;
        self.socket.close();
        self.socket.bind(self.local_port).map_err(Error::Bind)
    }

    /// One transfer, start to end.
    async fn run<S: Storage>(
        &mut self,
        kind: RequestKind,
        remote: &[u8],
        storage: S,
    ) -> Result<(S, Summary), Error> {
        let request = ClientRequest {
            kind,
            filename: remote,
            mode: self.mode,
            options: self.options,
        };
        let start = now();
        let transfer =
            Transfer::client(start, self.server, request, storage, self.config).map_err(Error::Request)?;
        let needed = transfer.max_datagram_len();
        let capacity = datagram_capacity(self.socket);
        if capacity < needed {
            return Err(Error::SocketBufferTooSmall { needed, capacity });
        }
        endpoint(self.server).ok_or(Error::Unaddressable)?;
        self.rebind().await?;
        let mut session = Session {
            socket: &mut *self.socket,
            transfer: Some(transfer),
        };
        let driven = session.drive().await;
        let transfer = session.transfer.take().expect("kept until here");
        driven?;
        let summary = Summary {
            bytes: transfer.stats().bytes,
            params: transfer.params(),
            stats: transfer.stats(),
            elapsed: now().saturating_duration_since(start),
        };
        match transfer.outcome() {
            Some(Ok(_)) => Ok((transfer.into_storage(), summary)),
            Some(Err(e)) => Err(Error::Transfer(e.clone())),
            None => Err(Error::Transfer(TransferError::Aborted)),
        }
    }
}

/// A transfer and its socket while it runs. Dropped before the transfer ended (the future was
/// cancelled, or the socket failed), it aborts the transfer and queues its ERROR.
struct Session<'s, 'd, 'r, S: Storage> {
    socket: &'s mut UdpSocket<'d>,
    /// `Some` until the owner takes it after driving.
    transfer: Option<Transfer<'r, S>>,
}

impl<S: Storage> Session<'_, '_, '_, S> {
    /// Sends, waits, feeds, until the transfer is over.
    async fn drive(&mut self) -> Result<(), Error> {
        let Session { socket, transfer } = self;
        let t = transfer.as_mut().expect("driving");
        loop {
            let sent = send_all(socket, t).await?;
            // Outcomes are read at the end, and the engine logs the rest itself.
            while t.poll_event().is_some() {}
            if t.is_finished() {
                return Ok(());
            }
            let Some(deadline) = t.poll_timeout() else {
                return Ok(());
            };
            if sent {
                // File work overlaps the round trip.
                t.storage_mut().idle();
            }
            let receive = socket.recv_from_with(|datagram, meta| {
                t.handle_datagram(now(), socket_addr(meta.endpoint), datagram);
            });
            if let Either::Second(()) = select(receive, Timer::at(at(deadline))).await {
                t.handle_timeout(now());
            }
        }
    }
}

impl<S: Storage> Drop for Session<'_, '_, '_, S> {
    fn drop(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.outcome().is_none() {
            t.abort(ErrorCode::NotDefined, CANCELLED);
        }
        // The ERROR goes into the socket's buffer if it has room now; it cannot wait.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = pin!(send_all(self.socket, t)).as_mut().poll(&mut cx);
    }
}

/// A boot download's socket while it runs. Dropped before the download ended (the future was
/// cancelled), it queues an ERROR for the server.
struct BootGuard<'s, 'd> {
    socket: &'s mut UdpSocket<'d>,
    /// Where the ERROR goes; `None` once the download is over.
    peer: Option<IpEndpoint>,
}

impl Drop for BootGuard<'_, '_> {
    fn drop(&mut self) {
        let Some(peer) = self.peer else {
            return;
        };
        let mut out = [0u8; 4 + CANCELLED.len() + 1];
        if let Ok(len) = encode_error_lossy(&mut out, ErrorCode::NotDefined, CANCELLED.as_bytes()) {
            let mut cx = Context::from_waker(Waker::noop());
            let _ = pin!(self.socket.send_to(&out[..len], peer))
                .as_mut()
                .poll(&mut cx);
        }
    }
}

/// Sends everything the transfer has to send now, each datagram written by the engine straight
/// into the socket's buffer; whether anything was sent. Waits while the socket's transmit
/// buffer is full (the driver drains it).
pub(super) async fn send_all<S: Storage>(
    socket: &mut UdpSocket<'_>,
    t: &mut Transfer<'_, S>,
) -> Result<bool, Error> {
    let mut sent = false;
    loop {
        let now = now();
        let Some(next) = t.peek_transmit(now) else {
            return Ok(sent);
        };
        let Some(to) = endpoint(next.destination) else {
            // Only an answer to a stranger (ERROR 5) can go to an address family this adapter
            // was built without (the stack has it, the feature does not): it is dropped.
            let _ = t.poll_transmit(now, &mut []);
            continue;
        };
        let write = |buf: &mut [u8]| match t.poll_transmit(now, buf) {
            Some(tx) => (tx.len, ()),
            // Cannot happen: `peek_transmit` said there is a datagram and how long it can be.
            None => (0, ()),
        };
        socket
            .send_to_with(next.max_len, to, write)
            .await
            .map_err(Error::Send)?;
        sent = true;
    }
}
