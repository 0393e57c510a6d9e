//! The send batch: datagrams a turn emits, collected back to back in one buffer so a run to one
//! destination (a window) leaves together through [`socket::send_run`](super::socket::send_run),
//! in as few system calls as the platform allows.

use std::io;
use std::prelude::rust_2021::*;

use super::MAX_DATAGRAM;

/// Most datagrams in one batch (the kernel's segment limit for one GSO send is 64).
pub const MAX_BATCH: usize = 64;

/// Bytes of datagrams one batch holds, beyond which it is sent.
const BATCH_BYTES: usize = 256 * 1024;

/// Datagrams waiting to be sent, stored back to back.
#[derive(Debug)]
pub struct SendBatch {
    buf: Vec<u8>,
    /// The length of each datagram, in order.
    lens: Vec<usize>,
    used: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        SendBatch {
            buf: vec![0u8; BATCH_BYTES + MAX_DATAGRAM],
            lens: Vec::with_capacity(MAX_BATCH),
            used: 0,
        }
    }

    /// Whether another datagram of any size fits.
    pub fn has_room(&self) -> bool {
        self.lens.len() < MAX_BATCH && self.used <= BATCH_BYTES
    }

    /// Where the next datagram is written: room for any datagram (call [`has_room`] first).
    ///
    /// [`has_room`]: Self::has_room
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..self.used + MAX_DATAGRAM]
    }

    /// Commits the `len` bytes just written into [`slot`](Self::slot).
    pub fn push(&mut self, len: usize) {
        self.lens.push(len);
        self.used += len;
    }

    /// Empties the batch without sending.
    pub fn clear(&mut self) {
        self.lens.clear();
        self.used = 0;
    }

    /// Hands the datagrams (all but the last when `keep_last`) to `send`, back to back with
    /// their lengths, then keeps only that last one (or none). Nothing is handed over when
    /// there is nothing to send.
    pub fn send_with(
        &mut self,
        keep_last: bool,
        send: impl FnOnce(&[u8], &[usize]) -> io::Result<()>,
    ) -> io::Result<()> {
        let count = self.lens.len() - usize::from(keep_last && !self.lens.is_empty());
        let bytes: usize = self.lens[..count].iter().sum();
        let r = if count == 0 {
            Ok(())
        } else {
            send(&self.buf[..bytes], &self.lens[..count])
        };
        self.buf.copy_within(bytes..self.used, 0);
        self.lens.drain(..count);
        self.used -= bytes;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_a_bounded_run() {
        let mut batch = SendBatch::new();
        let mut n = 0;
        while batch.has_room() {
            batch.slot();
            batch.push(65468);
            n += 1;
        }
        assert!((4..=MAX_BATCH).contains(&n), "{n} large datagrams");
        batch.clear();
        n = 0;
        while batch.has_room() {
            batch.push(516);
            n += 1;
        }
        assert_eq!(n, MAX_BATCH);
    }
}
