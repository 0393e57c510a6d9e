//! [`Storage`] adapters for std streams: a `Write` receives a download in order, and a `Read`
//! feeds an upload through a buffer holding only the bytes that may still be resent.

use std::io::{Read, Write};
use std::prelude::rust_2021::*;
use std::vec::Vec;

use crate::storage::{Storage, StorageError};

/// Receives into any `Write` (stdout, a pipe, a socket). Writes arrive strictly in order.
#[derive(Debug)]
pub struct WriteStorage<W> {
    inner: W,
    written: u64,
}

impl<W: Write> WriteStorage<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> Self {
        WriteStorage { inner, written: 0 }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Storage for WriteStorage<W> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.written {
            return Err(StorageError::Io);
        }
        self.inner.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        self.inner.flush().map_err(StorageError::from)
    }
}

/// Sends from any `Read` (stdin, a pipe). Keeps the bytes of the last `keep` offsets so a
/// retransmission can be served; set `keep` to at least `blksize * (windowsize + 1)`.
#[derive(Debug)]
pub struct ReadStorage<R> {
    inner: R,
    /// Bytes from offset `base` on.
    buf: Vec<u8>,
    base: u64,
    eof: bool,
    keep: usize,
}

impl<R: Read> ReadStorage<R> {
    /// Wraps a reader, retaining `keep` bytes behind the furthest read for resends.
    pub fn new(inner: R, keep: usize) -> Self {
        ReadStorage {
            inner,
            buf: Vec::new(),
            base: 0,
            eof: false,
            keep,
        }
    }
}

impl<R: Read> Storage for ReadStorage<R> {
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<usize, StorageError> {
        if offset < self.base {
            // Older than anything retained: the caller's window exceeded `keep`.
            return Err(StorageError::Io);
        }
        let want_end = offset + out.len() as u64;
        while !self.eof && self.base + (self.buf.len() as u64) < want_end {
            let old = self.buf.len();
            self.buf.resize(old + 64 * 1024, 0);
            let n = loop {
                match self.inner.read(&mut self.buf[old..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(old);
                        return Err(e.into());
                    }
                }
            };
            self.buf.truncate(old + n);
            self.eof = n == 0;
        }
        let start = usize::try_from(offset - self.base)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        let n = out.len().min(self.buf.len() - start);
        out[..n].copy_from_slice(&self.buf[start..start + n]);
        // Forget what lies more than `keep` bytes behind this read.
        let drop = start.saturating_sub(self.keep);
        if drop > 64 * 1024 {
            self.buf.drain(..drop);
            self.base += drop as u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_storage_serves_resends_within_keep() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = ReadStorage::new(&data[..], 4096);
        let mut b = [0u8; 1000];
        let mut off = 0u64;
        while off < 250_000 {
            assert_eq!(s.read_at(off, &mut b).unwrap(), 1000);
            assert_eq!(&b[..], &data[off as usize..off as usize + 1000]);
            if off >= 3000 {
                // A resend three blocks back.
                assert_eq!(s.read_at(off - 3000, &mut b).unwrap(), 1000);
                assert_eq!(&b[..], &data[off as usize - 3000..off as usize - 2000]);
            }
            off += 1000;
        }
        assert_eq!(s.read_at(299_500, &mut b).unwrap(), 500);
        assert_eq!(s.read_at(300_000, &mut b).unwrap(), 0);
        assert!(s.read_at(0, &mut b).is_err(), "too old to resend");
    }

    #[test]
    fn write_storage_appends_in_order() {
        let mut s = WriteStorage::new(Vec::new());
        s.write_at(0, b"ab").unwrap();
        s.write_at(2, b"cd").unwrap();
        assert_eq!(s.write_at(9, b"x"), Err(StorageError::Io));
        s.finish().unwrap();
        assert_eq!(s.into_inner(), b"abcd");
    }
}
