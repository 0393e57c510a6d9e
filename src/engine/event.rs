//! What a transfer reports to the application: [`Event`]s, the typed [`TransferError`] of a
//! failed transfer (the peer's ERROR kept apart from our own refusals and from local misuse),
//! and [`Stats`].

use core::time::Duration;

use super::negotiate::{OackError, TransferParams};
use crate::error_code::ErrorCode;
use crate::storage::StorageError;
use crate::time::Instant;

/// Something the application should know about a transfer, from [`Transfer::poll_event`](super::Transfer::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The parameters are settled (after an OACK, or the peer ignored the options).
    Negotiated(TransferParams),
    /// Bytes moved so far (acknowledged when sending, received when receiving). Coalesced: one
    /// event carries the latest count however many blocks went by.
    Progress {
        /// Bytes so far.
        bytes: u64,
    },
    /// The transfer completed. A receiver may still dally to re-acknowledge a repeated final
    /// block: keep driving it until [`is_finished`](super::Transfer::is_finished).
    Finished {
        /// Bytes transferred.
        bytes: u64,
    },
    /// The peer answered our OACK with ERROR 8 (the UEFI size probe): the session ended
    /// quietly, as the peer intended; not a failure.
    OptionsDeclined,
    /// The transfer failed.
    Failed(TransferError),
}

/// An ERROR packet received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerError {
    /// The code the peer sent.
    pub code: ErrorCode,
    message: heapless::Vec<u8, { PeerError::MAX_MESSAGE }>,
}

impl PeerError {
    /// Longest message kept; longer ones are truncated.
    pub const MAX_MESSAGE: usize = 100;

    /// An error with `code` and no message yet: see [`Self::set_message`].
    pub(crate) const fn new(code: ErrorCode) -> Self {
        PeerError {
            code,
            message: heapless::Vec::new(),
        }
    }

    /// Keeps `message`, truncated to [`Self::MAX_MESSAGE`] bytes.
    pub(crate) fn set_message(&mut self, message: &[u8]) {
        let keep = &message[..message.len().min(Self::MAX_MESSAGE)];
        self.message.clear();
        // Cannot fail: `keep` fits the capacity.
        let _ = self.message.extend_from_slice(keep);
    }

    /// The message as received (bytes, possibly not UTF-8, at most [`Self::MAX_MESSAGE`]).
    pub fn message(&self) -> &[u8] {
        &self.message
    }
}

/// A protocol violation by the peer that ended the transfer (we sent ERROR 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProtocolError {
    /// A DATA payload longer than the negotiated block size.
    DataTooLong,
}

impl ProtocolError {
    /// The ERROR 4 message.
    pub const fn message(self) -> &'static str {
        match self {
            ProtocolError::DataTooLong => "DATA longer than blksize",
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TransferError {
    /// The peer sent an ERROR packet.
    Peer(PeerError),
    /// The retry cap was reached without progress.
    TimedOut,
    /// Nothing valid was heard from the peer for the idle timeout.
    Idle,
    /// Local storage failed (the peer got the matching ERROR).
    Storage(StorageError),
    /// The peer broke the protocol (it got ERROR 4).
    Protocol(ProtocolError),
    /// We rejected the peer's OACK (it got ERROR 8).
    Oack(OackError),
    /// The request was refused by policy (the peer got this ERROR).
    Refused {
        /// The ERROR code sent.
        code: ErrorCode,
        /// The ERROR message sent.
        message: &'static str,
    },
    /// The file exceeded the maximum write size (the peer got ERROR 3).
    TooLarge,
    /// The application aborted the transfer.
    Aborted,
    /// The transmit buffer handed to `poll_transmit` cannot hold a DATA packet (local misuse).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl core::fmt::Display for TransferError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransferError::Peer(e) => {
                write!(f, "peer error {}: ", e.code.as_u16())?;
                for chunk in e.message().utf8_chunks() {
                    f.write_str(chunk.valid())?;
                    if !chunk.invalid().is_empty() {
                        f.write_str("\u{fffd}")?;
                    }
                }
                Ok(())
            }
            TransferError::TimedOut => f.write_str("timed out: no answer after the last retry"),
            TransferError::Idle => f.write_str("timed out: peer idle"),
            TransferError::Storage(e) => write!(f, "storage error: {e}"),
            TransferError::Protocol(e) => write!(f, "protocol violation by peer: {}", e.message()),
            TransferError::Oack(e) => write!(f, "option negotiation failed: {e}"),
            TransferError::Refused { code, message } => write!(f, "refused ({}): {message}", code.as_u16()),
            TransferError::TooLarge => f.write_str("file exceeds the maximum size"),
            TransferError::Aborted => f.write_str("aborted"),
            TransferError::BufferTooSmall { needed } => {
                write!(f, "transmit buffer too small: {needed} bytes needed")
            }
        }
    }
}

impl core::error::Error for TransferError {}

/// Counters of one transfer, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// When the transfer was created.
    pub started: Instant,
    /// Payload bytes moved so far.
    pub bytes: u64,
    /// Packets sent again after a timeout (and blocks resent after a window gap).
    pub retransmissions: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Duplicate ACKs received. They trigger a resend only when they show that the receiver
    /// timed out without the window (once per window; see the engine's module docs).
    pub duplicate_acks: u64,
    /// Datagrams dropped as malformed or unexpected.
    pub dropped: u64,
    /// Retransmissions our timer caused that were not needed, where the engine can tell: the
    /// peer's answer came sooner after the resend than half the path's smallest round trip, so
    /// it answered the original (the peer was slow, nothing was lost). Counted in blocks for a
    /// sender, in ACKs for a receiver.
    pub spurious_retransmissions: u64,
}

impl Stats {
    /// Time from `started` to `now`.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now - self.started
    }
}

/// What a completed client transfer did, as the std, tokio and embassy-net clients report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Summary {
    /// Payload bytes moved.
    pub bytes: u64,
    /// The parameters negotiated (block size, window, `tsize`...).
    pub params: TransferParams,
    /// Counters: retransmissions, timeouts, duplicates, drops.
    pub stats: Stats,
    /// From the request to the end (a receiver's dally included).
    pub elapsed: Duration,
}
