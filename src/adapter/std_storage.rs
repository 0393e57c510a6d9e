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

    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
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

    /// The reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
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

/// Receives into a file through a write buffer: blocks arrive strictly in order and are
/// gathered, up to `capacity` bytes, so many small blocks cost one `pwrite`.
///
/// The buffer is written out by [`Storage::idle`] once a quarter of it is filled, that is after
/// the driver has sent the ACK, while the peer prepares the next block: the write overlaps the
/// round trip instead of lengthening it (a driver that never calls `idle` still works:
/// `write_at` writes the buffer out when a block does not fit). A quarter keeps each write short
/// enough to hide within one round trip (one block at a time at blksize 65464 with a 256 KiB
/// buffer; writing two at once made lock-step downloads 10 % slower) while small blocks still
/// share one write (128 blocks of 512 bytes). Large blocks (over a quarter of
/// `capacity`) are gathered only in lock-step, when `idle` came between them; blocks arriving
/// back to back (a window) are written straight from the datagram, sparing a copy. A deferred
/// write that fails is kept and returned by the next `write_at` or `finish`, so the transfer
/// fails with the right ERROR. [`Storage::finish`] writes the rest and syncs, before the final
/// ACK goes out.
#[derive(Debug)]
pub struct BufferedFile {
    file: std::fs::File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    capacity: usize,
    /// A deferred write failed: everything after it fails with this.
    failed: Option<StorageError>,
    /// `idle` ran since the last write (lock-step).
    idled: bool,
}

impl BufferedFile {
    /// Wraps a file opened for writing, buffering up to `capacity` bytes.
    pub fn new(file: std::fs::File, capacity: usize) -> Self {
        BufferedFile {
            file,
            buf: Vec::new(),
            base: 0,
            capacity: capacity.max(1),
            failed: None,
            idled: false,
        }
    }

    fn flush_buf(&mut self) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            self.file.write_at(self.base, &self.buf)?;
            self.base += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Storage for BufferedFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if offset != self.base + self.buf.len() as u64 {
            return Err(StorageError::Io);
        }
        let lock_step = core::mem::take(&mut self.idled);
        // Larger than the whole buffer, or large and not preceded by an idle turn (a window):
        // written straight from the datagram, after what was gathered.
        let through = data.len() > self.capacity || (data.len() * 4 > self.capacity && !lock_step);
        if through || self.buf.len() + data.len() > self.capacity {
            self.flush_buf()?;
        }
        if through {
            self.file.write_at(offset, data)?;
            self.base += data.len() as u64;
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.capacity);
            }
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.flush_buf()?;
        self.file.finish()
    }
    fn idle(&mut self) {
        self.idled = true;
        if self.failed.is_none() && self.buf.len() * 4 >= self.capacity {
            self.failed = self.flush_buf().err();
        }
    }
}

/// A fresh directory for one test's files, `name` telling them apart (each test removes its own).
#[cfg(test)]
fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tftp-proto-io-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod buffered_tests {
    use super::*;

    #[test]
    fn buffered_file_writes_everything_in_order() {
        let dir = test_dir("buffered");
        let path = dir.join("out.bin");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut s = BufferedFile::new(file, 1000);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut off = 0;
        for chunk in data.chunks(333).chain(std::iter::once(&data[..0])) {
            s.write_at(off, chunk).unwrap();
            off += chunk.len() as u64;
        }
        assert_eq!(
            s.write_at(3, b"x"),
            Err(StorageError::Io),
            "out of order is refused"
        );
        s.write_at(off, &[7u8; 2500]).unwrap(); // larger than the buffer: written through
        s.finish().unwrap();
        let mut expect = data.clone();
        expect.extend_from_slice(&[7u8; 2500]);
        assert_eq!(std::fs::read(&path).unwrap(), expect);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Serves a file for sending, reading ahead of the engine.
///
/// Blocks are copied from a buffer holding the file from some offset on: small blocks are read
/// `capacity` bytes at a time (one `pread` per many blocks). [`Storage::idle`] reads the block
/// after the last one served (a buffer's worth, for small blocks) while the peer is busy
/// acknowledging, so the next `read_at` is a copy instead of a file read on the round trip.
/// Re-reads for retransmission are served from the buffer while it still holds them; a large
/// block the buffer does not hold is read straight into the datagram.
#[derive(Debug)]
pub struct ReadAheadFile {
    file: std::fs::File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`; `buf.len()` bytes are valid.
    base: u64,
    capacity: usize,
    /// Where the next read in sequence will be, and how long (0: none expected, end of file).
    next: u64,
    next_len: usize,
}

impl ReadAheadFile {
    /// Wraps a file opened for reading, with a read-ahead of `capacity` bytes (allocated on
    /// first use; a block larger than that is read ahead one block at a time).
    pub fn new(file: std::fs::File, capacity: usize) -> Self {
        ReadAheadFile {
            file,
            buf: Vec::new(),
            base: 0,
            capacity,
            next: 0,
            next_len: 0,
        }
    }

    /// The file.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Whether the buffer holds `len` bytes at `offset`.
    fn holds(&self, offset: u64, len: usize) -> bool {
        offset >= self.base && offset.saturating_add(len as u64) <= self.base + self.buf.len() as u64
    }

    /// Refills the buffer from `offset` with `len` bytes or `capacity`, whichever is more.
    fn fill(&mut self, offset: u64, len: usize) -> Result<(), StorageError> {
        self.buf.resize(len.max(self.capacity), 0);
        match self.file.read_at(offset, &mut self.buf) {
            Ok(n) => {
                self.buf.truncate(n);
                self.base = offset;
                Ok(())
            }
            Err(e) => {
                self.buf.clear();
                Err(e)
            }
        }
    }
}

impl Storage for ReadAheadFile {
    fn size(&mut self) -> Option<u64> {
        self.file.size()
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<usize, StorageError> {
        let held = self.holds(offset, out.len());
        let n = if held || out.len() * 4 <= self.capacity {
            if !held {
                self.fill(offset, out.len())?;
            }
            let start = usize::try_from(offset - self.base)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = out.len().min(self.buf.len() - start);
            out[..n].copy_from_slice(&self.buf[start..start + n]);
            n
        } else {
            self.file.read_at(offset, out)?
        };
        // A short read is the end of the file: nothing follows to read ahead.
        self.next = offset + n as u64;
        self.next_len = if n == out.len() { n } else { 0 };
        Ok(n)
    }
    fn idle(&mut self) {
        if self.next_len > 0 && !self.holds(self.next, self.next_len) {
            // A failure leaves the buffer empty: the next `read_at` reads again and reports it.
            let _ = self.fill(self.next, self.next_len);
        }
    }
}

#[cfg(test)]
mod write_behind_tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        test_dir(name).join("out.bin")
    }

    /// `idle` writes the buffer out once a quarter of it is filled, before `finish`; below that
    /// it waits. Large blocks are gathered in lock-step (an idle turn between them), so the next
    /// idle turn writes each out, and are written straight through when they come back to back.
    #[test]
    fn idle_writes_out_a_quarter_full_buffer() {
        let path = temp("quarter");
        let file = std::fs::File::create(&path).unwrap();
        let mut s = BufferedFile::new(file, 1000);
        let data: Vec<u8> = (0..2900u32).map(|i| (i % 241) as u8).collect();
        let on_disk = || std::fs::read(&path).unwrap();
        s.write_at(0, &data[..200]).unwrap();
        s.idle();
        assert!(on_disk().is_empty(), "200 of 1000: kept");
        s.write_at(200, &data[200..400]).unwrap();
        assert!(on_disk().is_empty(), "no idle turn: kept");
        s.idle();
        assert_eq!(on_disk(), &data[..400], "400 of 1000: written out");
        // Large blocks (over 250): after an idle turn, gathered...
        s.write_at(400, &data[400..700]).unwrap();
        assert_eq!(on_disk(), &data[..400]);
        // ...back to back, written through (with what was gathered before).
        s.write_at(700, &data[700..1000]).unwrap();
        assert_eq!(on_disk(), &data[..1000]);
        s.idle();
        // In lock-step each large block is written out in the idle turn after it.
        s.write_at(1000, &data[1000..1300]).unwrap();
        assert_eq!(on_disk(), &data[..1000]);
        s.idle();
        assert_eq!(on_disk(), &data[..1300], "300 of 1000: written out");
        s.write_at(1300, &data[1300..1400]).unwrap();
        s.idle();
        assert_eq!(on_disk(), &data[..1300], "100 of 1000: kept");
        s.write_at(1400, &data[1400..2900]).unwrap(); // larger than the buffer: written through
        assert_eq!(on_disk(), &data[..2900]);
        s.write_at(2900, b"tail").unwrap();
        s.finish().unwrap();
        let mut all = data.clone();
        all.extend_from_slice(b"tail");
        assert_eq!(on_disk(), all);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A deferred write that fails (here: a file opened read-only) fails the next `write_at`
    /// and `finish` with its error, so the engine reports it and the transfer never succeeds.
    #[test]
    fn a_failed_deferred_write_fails_what_follows() {
        let path = temp("fail");
        std::fs::write(&path, b"").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let mut s = BufferedFile::new(read_only, 1000);
        for k in 0..3 {
            s.write_at(k * 200, &[1u8; 200]).unwrap();
        }
        s.idle();
        assert_eq!(s.write_at(600, &[2u8; 10]), Err(StorageError::Io));
        assert_eq!(s.finish(), Err(StorageError::Io));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}

#[cfg(test)]
mod read_ahead_tests {
    use super::*;

    /// A file of `len` pattern bytes in a fresh test directory, served with a 4 KiB read-ahead.
    fn served(name: &str, len: u32) -> (std::path::PathBuf, Vec<u8>, ReadAheadFile) {
        let dir = test_dir(name);
        let path = dir.join("in.bin");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = ReadAheadFile::new(std::fs::File::open(&path).unwrap(), 4096);
        (dir, data, file)
    }

    #[test]
    fn read_ahead_matches_the_file_for_any_pattern() {
        let (dir, data, mut s) = served("readahead", 100_000);
        let mut b = [0u8; 512];
        // Sequential, a resend of an earlier block, a jump, the tail and past the end.
        for off in [0u64, 512, 1024, 512, 50_000, 99_900, 99_999, 100_000, 200_000] {
            let n = s.read_at(off, &mut b).unwrap();
            let lo = (off as usize).min(data.len());
            let hi = (lo + 512).min(data.len());
            assert_eq!(&b[..n], &data[lo..hi], "offset {off}");
        }
        let mut big = vec![0u8; 4096];
        assert_eq!(
            s.read_at(10, &mut big).unwrap(),
            4096,
            "large reads go straight through"
        );
        assert_eq!(&big[..], &data[10..4106]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `idle` reads the block after the last one served, so the next `read_at` finds it in
    /// the buffer; past the end of the file it reads nothing.
    #[test]
    fn idle_reads_the_next_block_ahead() {
        let (dir, data, mut s) = served("ahead", 20_000);
        // Large blocks (more than a quarter of the buffer): one block ahead.
        let mut b = vec![0u8; 8192];
        assert_eq!(s.read_at(0, &mut b).unwrap(), 8192);
        assert!(!s.holds(8192, 8192), "read straight into the datagram");
        s.idle();
        assert!(s.holds(8192, 8192), "the next block is read ahead");
        assert_eq!(s.read_at(8192, &mut b).unwrap(), 8192);
        assert_eq!(&b[..], &data[8192..16384]);
        s.idle();
        assert!(s.holds(16384, 3616), "the short last block");
        assert_eq!(s.read_at(16384, &mut b).unwrap(), 20_000 - 16384);
        assert_eq!(&b[..20_000 - 16384], &data[16384..]);
        let base = s.base;
        s.idle();
        assert_eq!(s.base, base, "nothing to read past the end");
        // A resend of an earlier block the buffer no longer holds is read from the file.
        assert_eq!(s.read_at(0, &mut b).unwrap(), 8192);
        assert_eq!(&b[..], &data[..8192]);

        // Small blocks: the buffer is refilled from the next block once it runs out.
        let mut s = ReadAheadFile::new(std::fs::File::open(dir.join("in.bin")).unwrap(), 4096);
        let mut b = [0u8; 1000];
        for k in 0..4u64 {
            assert_eq!(s.read_at(k * 1000, &mut b).unwrap(), 1000);
            s.idle();
        }
        assert!(s.holds(4000, 1000), "refilled after the fourth block");
        assert_eq!(s.base, 4000);
        assert_eq!(s.read_at(4000, &mut b).unwrap(), 1000);
        assert_eq!(&b[..], &data[4000..5000]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
