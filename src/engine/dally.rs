//! The receiver's dally without its storage: what is left of a finished download once
//! [`Transfer::dally`](super::Transfer::dally) split it off and the storage was taken back.
//!
//! RFC 1350 has the receiver of the final DATA stay a while, to acknowledge it again if the
//! sender did not get the final ACK and repeats it. That needs none of the file: only the peer,
//! the final block's number and the retransmission timer. So a driver can take the storage
//! (commit the file, boot the image) the moment the download is complete and keep this small
//! value alive in the background until it ends by itself.

use core::net::SocketAddr;

use super::rto::Rto;
use super::transfer::Transmit;
use crate::error_code::ErrorCode;
use crate::time::Instant;
use crate::wire::{encode_ack, encode_error_lossy};

/// A finished download's dally: re-acknowledges a repeated final DATA until its deadline, and
/// answers strangers with ERROR 5, like the transfer it came from.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dally {
    peer: SocketAddr,
    /// The final block's number on the wire.
    block: u16,
    rto: Rto,
    dally_limit_us: u64,
    /// When the dally ends; `None` once it has.
    deadline: Option<Instant>,
    /// The final ACK is owed again.
    ack_owed: bool,
    /// A stranger owed an ERROR 5.
    stray: Option<SocketAddr>,
}

impl Dally {
    pub(crate) fn new(
        peer: SocketAddr,
        block: u16,
        rto: Rto,
        dally_limit_us: u64,
        deadline: Option<Instant>,
    ) -> Dally {
        Dally {
            peer,
            block,
            rto,
            dally_limit_us,
            deadline,
            ack_owed: false,
            stray: None,
        }
    }

    /// The peer (the server's TID).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Handles a received datagram: the final DATA again is acknowledged again (and the dally
    /// lengthened by the sender's backoff); anything else from the peer is ignored; a datagram
    /// from anyone else gets ERROR 5.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if from != self.peer {
            // Errors are never answered (two endpoints could bounce ERROR 5 forever).
            if datagram.get(..2) != Some(&[0, 5]) && self.stray.is_none() {
                self.stray = Some(from);
            }
            return;
        }
        let Some(deadline) = self.deadline else {
            return;
        };
        let is_final_data = datagram.len() >= 4
            && datagram[..2] == [0, 3]
            && u16::from_be_bytes([datagram[2], datagram[3]]) == self.block;
        if is_final_data && now < deadline {
            self.ack_owed = true;
            self.rto.back_off();
            let rto = self.rto.current_micros();
            self.deadline = Some(now.add_micros(rto.saturating_add(rto).min(self.dally_limit_us)));
        }
    }

    /// Ends the dally once its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called, while the dally lasts.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Writes the next datagram to send (an ERROR 5 to a stranger, the final ACK again) into
    /// `buf` (4 bytes hold the ACK, 24 the ERROR) and says where it goes.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(to) = self.stray.take() {
            let len = encode_error_lossy(buf, ErrorCode::UnknownTid, b"Unknown transfer ID").ok()?;
            return Some(Transmit { destination: to, len });
        }
        if core::mem::take(&mut self.ack_owed) {
            let len = encode_ack(buf, self.block).ok()?;
            return Some(Transmit {
                destination: self.peer,
                len,
            });
        }
        None
    }

    /// Whether the dally is over and nothing is left to send: drop it.
    pub fn is_finished(&self) -> bool {
        self.deadline.is_none() && !self.ack_owed && self.stray.is_none()
    }
}
