//! The thin std adapter: drives engines over a real transport.
//!
//! * [`Transport`] is the small trait a datagram transport implements (std [`UdpSocket`] first;
//!   tokio or an embedded stack can plug in the same way), and [`drive`] runs one [`Transfer`]
//!   over it until it ends: send what it emits, wait for a datagram or the next deadline, feed it
//!   back.
//! * [`client`]: blocking `get` and `put` to and from files, byte buffers, readers and writers.
//! * [`server`]: the multi-session std server with its root-confined file policy ([`fs`]).
//! * [`io`]: [`Storage`] adapters for `Read` and `Write` streams.

use std::prelude::rust_2021::*;
pub(crate) mod batch;
pub mod client;
pub mod fs;
pub mod io;
pub mod server;

use std::io as stdio;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::engine::{Event, Transfer, TransferError};
use crate::storage::Storage;
use crate::time::Instant;

/// Maps `std::time::Instant` to the engine's [`Instant`] (microseconds since the clock's creation).
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    origin: std::time::Instant,
}

impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        self.at(std::time::Instant::now())
    }

    /// The engine instant of a std instant.
    pub fn at(&self, t: std::time::Instant) -> Instant {
        Instant::from_micros(
            u64::try_from(t.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX),
        )
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A datagram transport.
pub trait Transport {
    /// Sends one datagram.
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> stdio::Result<()>;
    /// Waits up to `timeout` (forever when `None`) for one datagram; `Ok(None)` on timeout.
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> stdio::Result<Option<(usize, SocketAddr)>>;
}

impl Transport for UdpSocket {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> stdio::Result<()> {
        loop {
            match UdpSocket::send_to(self, datagram, to) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                // A full send buffer or an ICMP error from an earlier datagram: the datagram is
                // lost, which the protocol recovers from; a refused peer shows up as a timeout.
                Err(e) if is_transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> stdio::Result<Option<(usize, SocketAddr)>> {
        // A zero timeout means "block forever" to set_read_timeout: use the smallest real one.
        let timeout = timeout.map(|t| t.max(Duration::from_micros(1)));
        self.set_read_timeout(timeout)?;
        loop {
            match UdpSocket::recv_from(self, buf) {
                Ok((n, from)) => return Ok(Some((n, from))),
                Err(e)
                    if matches!(
                        e.kind(),
                        stdio::ErrorKind::WouldBlock | stdio::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A [`UdpSocket`] transport that remembers its read timeout, so waiting for a datagram costs
/// one `recvfrom` instead of a `setsockopt` plus a `recvfrom`. The set timeout is kept while it
/// is at most a quarter longer than the wanted one (a retransmission timer may fire that much
/// late) and at least half of it (a wait ending early just returns `Ok(None)` and the engine's
/// timer is not due yet).
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    timeout: Option<Duration>,
}

impl UdpTransport {
    /// Wraps a bound socket (blocking mode).
    pub fn new(socket: UdpSocket) -> Self {
        UdpTransport {
            socket,
            timeout: None,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl Transport for UdpTransport {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> stdio::Result<()> {
        Transport::send_to(&mut self.socket, datagram, to)
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> stdio::Result<Option<(usize, SocketAddr)>> {
        // A zero timeout means "block forever" to set_read_timeout: use the smallest real one.
        let want = timeout.map(|t| t.max(Duration::from_micros(1)));
        let keep = match (self.timeout, want) {
            (Some(set), Some(want)) => set <= want.saturating_add(want / 4) && want <= set.saturating_mul(2),
            (None, None) => true,
            _ => false,
        };
        if !keep {
            self.socket.set_read_timeout(want)?;
            self.timeout = want;
        }
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => return Ok(Some((n, from))),
                Err(e)
                    if matches!(
                        e.kind(),
                        stdio::ErrorKind::WouldBlock | stdio::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Errors a UDP socket reports for earlier datagrams (ICMP) or momentary pressure.
pub(crate) fn is_transient(e: &stdio::Error) -> bool {
    matches!(
        e.kind(),
        stdio::ErrorKind::ConnectionRefused
            | stdio::ErrorKind::ConnectionReset
            | stdio::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(105) // ENOBUFS
}

/// Largest datagram any transfer can produce (blksize 65464 + 4).
pub const MAX_DATAGRAM: usize = 65468;

/// Size of receive buffers: any UDP payload fits whole, so a datagram longer than any valid
/// packet (a DATA past blksize 65464) is judged by its real length, never cut to a valid one.
pub(crate) const RECV_BUFFER: usize = 65536;

/// Runs `transfer` over `transport` until it is finished, passing every event to `on_event`.
///
/// Returns the bytes transferred, or the reason it failed. A transport error aborts the transfer.
pub fn drive<T: Transport, S: Storage>(
    transport: &mut T,
    transfer: &mut Transfer<'_, S>,
    clock: &StdClock,
    mut on_event: impl FnMut(&Event),
) -> Result<u64, DriveError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rx = vec![0u8; RECV_BUFFER];
    loop {
        let now = clock.now();
        while let Some(tx) = transfer.poll_transmit(now, &mut buf) {
            transport
                .send_to(&buf[..tx.len], tx.destination)
                .map_err(DriveError::Io)?;
        }
        while let Some(ev) = transfer.poll_event() {
            on_event(&ev);
        }
        if transfer.is_finished() {
            break;
        }
        let Some(deadline) = transfer.poll_timeout() else {
            break;
        };
        let now = clock.now();
        if deadline <= now {
            transfer.handle_timeout(now);
            continue;
        }
        match transport
            .recv_from(&mut rx, Some(deadline - now))
            .map_err(DriveError::Io)?
        {
            Some((n, from)) => transfer.handle_datagram(clock.now(), from, &rx[..n]),
            None => transfer.handle_timeout(clock.now()),
        }
    }
    match transfer.outcome() {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(e)) => Err(DriveError::Transfer(e.clone())),
        None => Err(DriveError::Transfer(TransferError::Aborted)),
    }
}

/// Why [`drive`] stopped without success.
#[derive(Debug)]
pub enum DriveError {
    /// The transport failed.
    Io(stdio::Error),
    /// The transfer failed.
    Transfer(TransferError),
}

impl std::fmt::Display for DriveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriveError::Io(e) => write!(f, "network error: {e}"),
            DriveError::Transfer(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DriveError {}

/// Sets a socket's receive and send buffers to at least `bytes` (best effort; the kernel may cap).
pub fn size_buffers(socket: &UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    let bytes = bytes.min(64 << 20);
    if s.recv_buffer_size().is_ok_and(|cur| cur < bytes) {
        let _ = s.set_recv_buffer_size(bytes);
    }
    if s.send_buffer_size().is_ok_and(|cur| cur < bytes) {
        let _ = s.set_send_buffer_size(bytes);
    }
}
