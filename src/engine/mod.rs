//! The transfer engine: pure `no_std` state machines for read and write transfers in both the
//! client and the server role, driven by datagrams and timer ticks with `now` passed in.
//!
//! One [`Transfer`] type covers the four cases (client read/write, server read/write): a data
//! sender and a data receiver underneath, with the role deciding only the handshake. It owns no
//! socket, no clock and no buffer: file data goes straight between the caller's datagram buffer
//! and the caller's [`Storage`](crate::storage::Storage).
//!
//! For a firmware that only downloads and counts every byte of flash, [`crate::boot::BootClient`]
//! is a separate, deliberately minimal download client (a fraction of this engine's code); the
//! engine is the one state machine for everything else.
//!
//! # Windows and losses
//!
//! A windowed sender (RFC 7440) recovers from a loss at the first gap the receiver reports,
//! not after a timeout. After a window that lost blocks it paces its sends at the rate the
//! receiver showed it can absorb, so a receiver with a small socket buffer is not flooded again
//! (the `pace` module), and speeds up again window by window while the receiver's ACKs show it
//! keeps up. When a window's ACK is late it resends that window's last block alone, a
//! tail-loss probe: a receiver that lost the end of the window sees the gap and says where it
//! stands. Pauses between paced blocks are deadlines like any other:
//! [`Transfer::poll_timeout`] includes them.
//!
//! A duplicate ACK does not make the sender resend (the Sorcerer's Apprentice rule of RFC 1123),
//! with one exception that RFC 7440 asks for: a receiver that waited out its own timeout
//! without the window acknowledges again the last block it holds, and the sender then goes
//! back there at once, once per window, with its bursts shrunk to single blocks (a receiver
//! that keeps one datagram at a time, such as U-Boot's e1000 driver, loses everything after
//! the first block of a burst). A repeat that comes sooner than a quarter of the timeout after
//! the window (never within two round trips) may be a copy of the ACK that started the window
//! and is ignored. Lock-step transfers keep the plain rule.
//!
//! A peer that is only slow never gets a block twice: the retransmission timeout has a 250 ms
//! floor and the tail-loss probe waits at least as long (the `rto` module says why), and a
//! server reads every socket with something to read before any timer fires.
//! [`Stats::spurious_retransmissions`] counts the retransmissions that turn out unneeded where
//! the engine can tell.
//!
//! # Driving a transfer
//!
//! Inputs are `handle_*` methods, outputs are `poll_*` methods:
//!
//! 1. After creating the transfer and after every input ([`Transfer::handle_datagram`],
//!    [`Transfer::handle_timeout`]), call [`Transfer::poll_transmit`] until it returns `None`,
//!    sending each datagram to its [`Transmit::destination`].
//! 2. Then drain [`Transfer::poll_event`].
//! 3. Then ask [`Transfer::poll_timeout`] for the next deadline, wait for a datagram or that
//!    deadline, and feed whichever came first. A driver that sent something may first give the
//!    storage its idle turn (`transfer.storage_mut().idle()`, see [`Storage::idle`]), so file
//!    work such as reading the next block overlaps the round trip.
//!
//! [`Storage::idle`]: crate::storage::Storage::idle
//! 4. Stop when [`Transfer::is_finished`] is true.
//!
//! A complete driver, here joining a client and a server in memory:
//!
//! ```
//! use core::net::SocketAddr;
//! use tftp_proto::engine::{ClientRequest, Config, Event, ServerPolicy, Transfer, TransferMode};
//! use tftp_proto::{Instant, Options, Packet, RequestKind};
//!
//! let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
//! let server_addr: SocketAddr = "127.0.0.1:69".parse().unwrap();
//! let tid: SocketAddr = "127.0.0.1:50000".parse().unwrap(); // the server's port for this transfer
//! let file: &[u8] = &[7u8; 3000];
//!
//! let mut now = Instant::ZERO;
//! let request = ClientRequest {
//!     kind: RequestKind::Read,
//!     filename: b"boot.img",
//!     mode: TransferMode::Octet,
//!     options: Options { blksize: Some(1024), windowsize: Some(4), tsize: Some(0), ..Options::NONE },
//! };
//! // The downloaded file goes into a fixed-capacity vector (any `Storage`; `Vec<u8>` under `std`).
//! let file_buf = heapless::Vec::<u8, 4096>::new();
//! let mut client = Transfer::client(now, server_addr, request, file_buf, Config::default()).unwrap();
//! let mut buf = [0u8; 4 + 1024];
//!
//! // The request reaches the server's well-known port; the server answers from its own TID.
//! let tx = client.poll_transmit(now, &mut buf).unwrap();
//! let Ok(Packet::Rrq(req)) = Packet::parse(&buf[..tx.len]) else { panic!() };
//! let mut server = Transfer::server(now, client_addr, RequestKind::Read, &req, file,
//!                                   &ServerPolicy::default(), Config::default());
//!
//! let mut in_flight: Vec<(bool, Vec<u8>)> = Vec::new(); // (to_client, bytes)
//! for _ in 0..1000 {
//!     while let Some(tx) = server.poll_transmit(now, &mut buf) {
//!         in_flight.push((true, buf[..tx.len].to_vec()));
//!     }
//!     while let Some(tx) = client.poll_transmit(now, &mut buf) {
//!         in_flight.push((false, buf[..tx.len].to_vec()));
//!     }
//!     while let Some(ev) = client.poll_event() {
//!         if let Event::Failed(e) = ev { panic!("{e}") }
//!     }
//!     if in_flight.is_empty() {
//!         if client.is_finished() && server.is_finished() { break; }
//!         // Nothing in flight: jump the clock to the earliest deadline.
//!         now = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min().unwrap();
//!         client.handle_timeout(now);
//!         server.handle_timeout(now);
//!         continue;
//!     }
//!     for (to_client, d) in in_flight.drain(..) {
//!         if to_client { client.handle_datagram(now, tid, &d) } else { server.handle_datagram(now, client_addr, &d) }
//!     }
//! }
//! assert!(client.is_finished());
//! assert_eq!(client.outcome(), Some(Ok(3000)));
//! assert_eq!(&client.into_storage()[..], file);
//! ```

mod blocks;
mod dally;
mod datapath;
mod event;
mod negotiate;
mod pace;
mod rto;
mod transfer;

use core::time::Duration;

pub use dally::Dally;
pub use event::{Event, PeerError, ProtocolError, Stats, Summary, TransferError};
pub use negotiate::{
    client_accept_oack, server_negotiate, OackError, Refusal, ServerNegotiation, ServerPolicy, TransferParams,
};
pub use transfer::{ClientRequest, NextTransmit, Transfer, TransferMode, Transmit, TransmitBatch};

/// Timing and limits of a transfer. Every transfer ends: by success, by the retry cap, or by the
/// idle deadline.
///
/// # When a transfer gives up
///
/// After a timeout the transfer retransmits, with the interval doubling each time (up to
/// [`max_rto`](Self::max_rto)), at most [`max_retries`](Self::max_retries) times in a row. It
/// gives up when the retries are spent **and** [`total_timeout`](Self::total_timeout) has
/// passed since it last made progress (or started), whichever comes later. The retries alone
/// are not a measure of patience: on a fast link the adaptive interval shrinks toward
/// [`min_rto`](Self::min_rto), and 6 retries from 50 ms add up to 6.35 s, too short for a peer
/// that pauses 10 s. After its last retry the transfer goes on listening until the total
/// timeout; anything from the peer that makes progress starts the count afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Retransmission timeout before any round trip was measured. Default 1 s.
    pub initial_rto: Duration,
    /// Floor of the adaptive timeout. Default 250 ms: a peer (or this process) descheduled for
    /// tens of milliseconds must not get a block twice (see the `rto` module).
    pub min_rto: Duration,
    /// Ceiling of the adaptive timeout and its exponential backoff. Default 5 s.
    pub max_rto: Duration,
    /// Retransmissions in a row without progress; the transfer gives up after the last one once
    /// [`total_timeout`](Self::total_timeout) has also passed. Default 6.
    pub max_retries: u8,
    /// The least time without progress before a transfer gives up, however quickly its
    /// retries run out (see [When a transfer gives up](Self#when-a-transfer-gives-up)). Default
    /// 25 s, as tftp-hpa's client waits. `Duration::ZERO` gives up right after the last retry.
    pub total_timeout: Duration,
    /// Give up when nothing valid was heard from the peer for this long. Default 60 s.
    pub idle_timeout: Duration,
    /// Largest file a receiver accepts (ERROR 3 beyond it). Default: no limit.
    pub max_write_size: Option<u64>,
    /// Longest a receiver dallies after its final ACK (it waits two retransmission intervals,
    /// at most this), to re-acknowledge a repeated final DATA. Default 1 s.
    pub max_dally: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(5),
            max_retries: 6,
            total_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_write_size: None,
            max_dally: Duration::from_secs(1),
        }
    }
}
