//! The thin std adapter: drives engines over a real transport.
//!
//! * [`Transport`] is the small trait a datagram transport implements (std [`UdpSocket`] first;
//!   tokio or an embedded stack can plug in the same way), and [`drive`] runs one [`Transfer`]
//!   over it until it ends: send what it emits, wait for a datagram or the next deadline, feed it
//!   back.
//! * [`client`]: blocking `get` and `put` to and from files, byte buffers, readers and writers.
//! * [`mio_server`]: the multi-session server on a mio event loop (one per thread), with the
//!   session table of [`crate::server`] inside.
//! * [`root`]: the server's file policy: one root directory, nothing read or written outside it,
//!   uploads all or nothing.
//! * [`std_storage`]: [`Storage`] for std streams (`Read`, `Write`) and files (read-ahead,
//!   buffered writes).
//! * [`remap`]: tftp-hpa-style file-name rewriting rules (`--map-file`).
//! * [`mtu`]: the block size that fits the link a request arrived on.
//! * [`log`]: the server's per-request log lines, as text or JSON.
//! * `tokio_client` and `tokio_server` (feature `tokio`): the async client and server on tokio's
//!   sockets and timers.
//! * `socket` (internal): every UDP system call the adapter makes, with the Linux fast paths
//!   (GSO, GRO, `sendmmsg`, packet info, `SO_REUSEPORT`) and a portable fallback; `batch`
//!   (internal): the buffer a turn's datagrams collect in; `admission` (internal): what a
//!   server does with a new request (hook, remap, root, MTU cap, transfer ports), whatever
//!   its event loop.
//!
//! # Platforms
//!
//! Linux gets every fast path. Other Unix systems (macOS, FreeBSD) reply from the address a
//! request arrived at (packet info) but send and receive one datagram per system call, and a
//! server cannot share its port between threads (`SO_REUSEPORT` load balancing is Linux's):
//! [`mio_server::ServerThreads`] with more than one thread needs Linux. Windows adds one more
//! difference: a wildcard-bound server's replies leave from the address the routing picks.

use std::prelude::rust_2021::*;
pub(crate) mod admission;
pub(crate) mod batch;
pub mod client;
pub mod log;
pub mod mio_server;
pub mod mtu;
pub mod remap;
pub mod root;
pub(crate) mod socket;
pub mod std_storage;
#[cfg(feature = "tokio")]
pub mod tokio_client;
#[cfg(feature = "tokio")]
pub mod tokio_server;

use std::io as stdio;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use self::batch::SendBatch;
pub use self::socket::size_buffers;
use self::socket::{is_transient, recv_retrying, RECV_BUFFER};
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

    /// Sends a run of datagrams to one peer, in order (a window): `datagrams` holds them back
    /// to back and `lens` gives their lengths. The default sends them one by one with
    /// [`send_to`](Self::send_to); [`UdpTransport`] sends a run in as few system calls as the
    /// kernel allows.
    fn send_run(&mut self, datagrams: &[u8], lens: &[usize], to: SocketAddr) -> stdio::Result<()> {
        let mut at = 0;
        for &len in lens {
            let end = at + len;
            self.send_to(&datagrams[at..end], to)?;
            at = end;
        }
        Ok(())
    }
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
        recv_retrying(|| UdpSocket::recv_from(self, buf))
    }
}

/// A [`UdpSocket`] transport that remembers its read timeout, so waiting for a datagram costs
/// one `recvfrom` instead of a `setsockopt` plus a `recvfrom`. The set timeout is kept while it
/// is at most a quarter longer than the wanted one (a retransmission timer may fire that much
/// late) and at least half of it (a wait ending early just returns `Ok(None)` and the engine's
/// timer is not due yet).
///
/// On Linux it also turns on UDP receive offload (`UDP_GRO`): a window a peer sent with
/// segmentation offload (as this crate's server does) arrives in one system call, and is handed
/// out one datagram per [`recv_from`](Transport::recv_from) as before. A window it sends
/// ([`send_run`](Transport::send_run)) leaves the same way: one segmented send where the kernel
/// has them, else one `sendmmsg`.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    timeout: Option<Duration>,
    /// Whether coalesced receives are on.
    gro: bool,
    /// Whether segmented sends may be tried (cleared when the kernel refuses one).
    gso: bool,
    /// The rest of a coalesced receive: `pending[pending_at..pending_end]`, datagrams of
    /// `segment` bytes (the last maybe shorter) from `pending_from`.
    pending: Vec<u8>,
    pending_at: usize,
    pending_end: usize,
    segment: usize,
    pending_from: Option<SocketAddr>,
}

impl UdpTransport {
    /// Wraps a bound socket (blocking mode).
    pub fn new(socket: UdpSocket) -> Self {
        let gro = socket::enable_gro(&socket);
        UdpTransport {
            socket,
            timeout: None,
            gro,
            gso: socket::GSO_AVAILABLE,
            pending: Vec::new(),
            pending_at: 0,
            pending_end: 0,
            segment: 0,
            pending_from: None,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The next datagram of a coalesced receive, if any is left.
    fn next_pending(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let from = self.pending_from?;
        let rest = &self.pending[self.pending_at..self.pending_end];
        let n = self.segment.min(rest.len());
        let copied = n.min(buf.len());
        buf[..copied].copy_from_slice(&rest[..copied]);
        self.pending_at += n;
        if self.pending_at >= self.pending_end {
            self.pending_from = None;
        }
        Some((copied, from))
    }

    /// One receive; a coalesced one keeps all but its first datagram for later calls.
    fn recv_one(&mut self, buf: &mut [u8]) -> stdio::Result<(usize, SocketAddr)> {
        if !self.gro {
            return self.socket.recv_from(buf);
        }
        // The local address is not asked for: only the coalesced size is read.
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        if buf.len() < RECV_BUFFER {
            // Too small for a coalesced receive: receive into our own buffer (allocated once,
            // kept at full size), hand out the first datagram.
            if self.pending.len() < RECV_BUFFER {
                self.pending.resize(RECV_BUFFER, 0);
            }
            let got = socket::recv(&self.socket, &mut self.pending, local, true)?;
            self.pending_at = 0;
            self.pending_end = got.len;
            self.segment = got.segment.unwrap_or(got.len).max(1);
            self.pending_from = Some(got.source);
            return Ok(self.next_pending(buf).unwrap_or((0, got.source)));
        }
        let got = socket::recv(&self.socket, buf, local, true)?;
        let (n, from) = (got.len, got.source);
        match got.segment {
            Some(size) if size > 0 && size < n => {
                if self.pending.len() < n - size {
                    self.pending.resize(RECV_BUFFER, 0);
                }
                self.pending[..n - size].copy_from_slice(&buf[size..n]);
                self.pending_at = 0;
                self.pending_end = n - size;
                self.segment = size;
                self.pending_from = Some(from);
                Ok((size, from))
            }
            _ => Ok((n, from)),
        }
    }
}

impl Transport for UdpTransport {
    fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> stdio::Result<()> {
        Transport::send_to(&mut self.socket, datagram, to)
    }

    fn send_run(&mut self, datagrams: &[u8], lens: &[usize], to: SocketAddr) -> stdio::Result<()> {
        socket::send_run(&self.socket, datagrams, lens, to, None, &mut self.gso)
    }

    fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> stdio::Result<Option<(usize, SocketAddr)>> {
        if let Some(next) = self.next_pending(buf) {
            return Ok(Some(next));
        }
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
        recv_retrying(|| self.recv_one(buf))
    }
}

/// Largest datagram any transfer can produce (blksize 65464 + 4).
pub const MAX_DATAGRAM: usize = 65468;

/// Runs `transfer` over `transport` until it is finished, passing every event to `on_event`.
///
/// Returns the bytes transferred, or the reason it failed. A transport error aborts the transfer.
pub fn drive<T: Transport, S: Storage>(
    transport: &mut T,
    transfer: &mut Transfer<'_, S>,
    clock: &StdClock,
    mut on_event: impl FnMut(&Event),
) -> Result<u64, DriveError> {
    // What one turn has to send, gathered into runs to one destination (windows).
    let mut batch = SendBatch::new();
    let mut rx = vec![0u8; RECV_BUFFER];
    loop {
        let now = clock.now();
        let mut run: Option<SocketAddr> = None;
        let mut sent = false;
        while let Some(tx) = transfer.poll_transmit(now, batch.slot()) {
            sent = true;
            batch.push(tx.len);
            if let Some(to) = run.filter(|&to| to != tx.destination) {
                batch
                    .send_with(true, |d, lens| transport.send_run(d, lens, to))
                    .map_err(DriveError::Io)?;
            }
            run = Some(tx.destination);
            if !batch.has_room() {
                batch
                    .send_with(false, |d, lens| transport.send_run(d, lens, tx.destination))
                    .map_err(DriveError::Io)?;
                run = None;
            }
        }
        if let Some(to) = run {
            batch
                .send_with(false, |d, lens| transport.send_run(d, lens, to))
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
        // Everything is sent: file work for the next turn now overlaps the round trip.
        if sent {
            transfer.storage_mut().idle();
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

#[cfg(test)]
mod buffer_tests {
    use super::*;

    fn proc_number(path: &str) -> Option<usize> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn buffers_reach_the_window_size() {
        let want = 16 << 20;
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        size_buffers(&socket, want);
        let s = socket2::SockRef::from(&socket);
        let (rcv, snd) = (s.recv_buffer_size().unwrap(), s.send_buffer_size().unwrap());
        if is_root() {
            // Past any sysctl cap (the kernel doubles the value it is given).
            assert!(rcv >= want && snd >= want, "{rcv} / {snd}");
        } else if let Some(cap) = proc_number("/proc/sys/net/core/rmem_max") {
            assert!(rcv >= cap.min(want), "{rcv} below the cap {cap}");
        }
    }
}
