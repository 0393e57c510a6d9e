//! Where file data comes from and goes to: the [`Storage`] trait the engine reads blocks from
//! (sending) and writes blocks to (receiving), with implementations for byte slices, heapless
//! vectors, a fixed slice writer and, under `std`, files and `Vec<u8>`.
//!
//! The engine never copies file data into a buffer of its own: a sender reads each payload
//! straight into the outgoing datagram with [`Storage::read_at`] (reading again by offset when it
//! retransmits), and a receiver hands each payload straight to [`Storage::write_at`]. A storage
//! failure becomes the matching ERROR packet for the peer ([`StorageError::error_code`]).

use crate::error_code::ErrorCode;

/// Why storage could not serve a read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StorageError {
    /// The file does not exist (ERROR 1).
    NotFound,
    /// Permission denied (ERROR 2).
    AccessDenied,
    /// No space left, or a size limit reached (ERROR 3).
    DiskFull,
    /// The file already exists and may not be replaced (ERROR 6).
    AlreadyExists,
    /// The file changed size while it was being sent (ERROR 0).
    Changed,
    /// Any other I/O failure (ERROR 0).
    Io,
}

impl StorageError {
    /// The ERROR code to send to the peer.
    pub const fn error_code(self) -> ErrorCode {
        match self {
            StorageError::NotFound => ErrorCode::FileNotFound,
            StorageError::AccessDenied => ErrorCode::AccessViolation,
            StorageError::DiskFull => ErrorCode::DiskFull,
            StorageError::AlreadyExists => ErrorCode::FileExists,
            StorageError::Changed | StorageError::Io => ErrorCode::NotDefined,
        }
    }

    /// The ERROR message to send to the peer.
    pub const fn message(self) -> &'static str {
        match self {
            StorageError::NotFound => "File not found",
            StorageError::AccessDenied => "Access violation",
            StorageError::DiskFull => "Disk full or allocation exceeded",
            StorageError::AlreadyExists => "File already exists",
            StorageError::Changed => "File changed during transfer",
            StorageError::Io => "I/O error",
        }
    }
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for StorageError {}

/// A file the engine reads from (when sending) or writes to (when receiving).
///
/// Offsets are bytes from the start of the file, 64-bit so transfers past 4 GiB work. A sender
/// may read the same offset more than once (retransmission); a receiver writes strictly in order.
/// Methods a storage does not support keep their default, which refuses with
/// [`StorageError::AccessDenied`].
pub trait Storage {
    /// The total size, if known: answers `tsize` on a read. `None` leaves `tsize` unanswered.
    ///
    /// A sender asks once, when the transfer begins, and then holds the file to it: a file that
    /// ends elsewhere (it shrank or grew meanwhile) fails the transfer with
    /// [`StorageError::Changed`] instead of reaching the peer truncated or spliced.
    fn size(&mut self) -> Option<u64> {
        None
    }

    /// Reads up to `buf.len()` bytes at `offset` into `buf`, returning how many were read.
    /// Fewer than `buf.len()` (including 0) means end of file; the engine calls again only
    /// to retransmit.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let _ = (offset, buf);
        Err(StorageError::AccessDenied)
    }

    /// Writes `data` at `offset` (always the end of what was written so far).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let _ = (offset, data);
        Err(StorageError::AccessDenied)
    }

    /// Called once after the last block was written and before it is acknowledged: flush or
    /// commit here, so a failure still reaches the peer as an ERROR.
    fn finish(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Work that can wait until this turn's datagrams are out: a driver calls it after sending
    /// what the engine had to send and before it waits for the peer, so the work overlaps the
    /// round trip instead of lengthening it (the engine itself never calls it). A sender's
    /// storage may read its next block ahead here, a receiver's may write out blocks it
    /// gathered. It cannot fail: a storage that fails here keeps the error and returns it from
    /// its next [`read_at`](Self::read_at), [`write_at`](Self::write_at) or
    /// [`finish`](Self::finish), which the engine reports to the peer as usual (so a transfer
    /// never succeeds past a failed deferred write). The default does nothing.
    fn idle(&mut self) {}
}

/// Implements [`Storage`] for a pointer type by forwarding every call to the pointee.
macro_rules! forward_storage {
    ($($ty:ty),*) => {$(
        impl<S: Storage + ?Sized> Storage for $ty {
            fn size(&mut self) -> Option<u64> {
                (**self).size()
            }
            fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
                (**self).read_at(offset, buf)
            }
            fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
                (**self).write_at(offset, data)
            }
            fn finish(&mut self) -> Result<(), StorageError> {
                (**self).finish()
            }
            fn idle(&mut self) {
                (**self).idle()
            }
        }
    )*};
}

forward_storage!(&mut S);
#[cfg(feature = "alloc")]
forward_storage!(alloc::boxed::Box<S>);

/// Copies from `src` at `offset` into `buf`.
fn read_slice(src: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(src.len());
    let n = buf.len().min(src.len() - start);
    buf[..n].copy_from_slice(&src[start..start + n]);
    n
}

/// A read-only file held in memory.
impl Storage for &[u8] {
    fn size(&mut self) -> Option<u64> {
        Some(self.len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        Ok(read_slice(self, offset, buf))
    }
}

/// A fixed-capacity in-memory file: readable, and writable up to `N` bytes (then
/// [`StorageError::DiskFull`]).
impl<const N: usize> Storage for heapless::Vec<u8, N> {
    fn size(&mut self) -> Option<u64> {
        Some(self.len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        Ok(read_slice(self, offset, buf))
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.len() as u64 {
            return Err(StorageError::Io);
        }
        self.extend_from_slice(data).map_err(|_| StorageError::DiskFull)
    }
}

/// Receives a file into a caller-provided byte slice (no heap): the firmware case.
///
/// ```
/// use tftp_proto::storage::{SliceWriter, Storage};
/// let mut mem = [0u8; 8];
/// let mut w = SliceWriter::new(&mut mem);
/// w.write_at(0, b"abc").unwrap();
/// assert_eq!(w.written(), b"abc");
/// assert!(w.write_at(3, b"too long!").is_err());
/// ```
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceWriter<'a> {
    /// A writer filling `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter { buf, len: 0 }
    }

    /// The bytes received so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// How many bytes were received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Storage for SliceWriter<'_> {
    fn size(&mut self) -> Option<u64> {
        Some(self.len as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        Ok(read_slice(&self.buf[..self.len], offset, buf))
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.len as u64 {
            return Err(StorageError::Io);
        }
        let end = self.len.checked_add(data.len()).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(StorageError::DiskFull)?;
        self.buf[self.len..end].copy_from_slice(data);
        self.len = end;
        Ok(())
    }
}

#[cfg(feature = "std")]
mod std_impls {
    use super::{read_slice, Storage, StorageError};
    use std::io;
    use std::vec::Vec;

    impl From<io::Error> for StorageError {
        fn from(e: io::Error) -> Self {
            match e.kind() {
                io::ErrorKind::NotFound => StorageError::NotFound,
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                    StorageError::AccessDenied
                }
                io::ErrorKind::AlreadyExists => StorageError::AlreadyExists,
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
                    StorageError::DiskFull
                }
                _ => StorageError::Io,
            }
        }
    }

    /// A growable in-memory file.
    impl Storage for Vec<u8> {
        fn size(&mut self) -> Option<u64> {
            Some(self.len() as u64)
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
            Ok(read_slice(self, offset, buf))
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
            if offset != self.len() as u64 {
                return Err(StorageError::Io);
            }
            self.try_reserve(data.len()).map_err(|_| StorageError::DiskFull)?;
            self.extend_from_slice(data);
            Ok(())
        }
    }

    /// A file on disk, read and written with positional I/O (no seeking on Unix).
    impl Storage for std::fs::File {
        fn size(&mut self) -> Option<u64> {
            self.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
            let mut done = 0;
            while done < buf.len() {
                match pread(self, &mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(done)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
            pwrite_all(self, data, offset).map_err(StorageError::from)
        }
        fn finish(&mut self) -> Result<(), StorageError> {
            self.sync_data().map_err(StorageError::from)
        }
    }

    #[cfg(unix)]
    fn pread(f: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(f, buf, offset)
    }

    #[cfg(unix)]
    fn pwrite_all(f: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(f, data, offset)
    }

    #[cfg(not(unix))]
    fn pread(mut f: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        f.seek(SeekFrom::Start(offset))?;
        f.read(buf)
    }

    #[cfg(not(unix))]
    fn pwrite_all(mut f: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_reads_by_offset_past_the_end() {
        let mut s: &[u8] = b"hello";
        let mut buf = [0u8; 4];
        assert_eq!(s.read_at(0, &mut buf), Ok(4));
        assert_eq!(s.read_at(4, &mut buf), Ok(1));
        assert_eq!(s.read_at(5, &mut buf), Ok(0));
        assert_eq!(s.read_at(u64::MAX, &mut buf), Ok(0));
        assert_eq!(s.write_at(0, b"x"), Err(StorageError::AccessDenied));
        assert_eq!(s.size(), Some(5));
    }

    #[test]
    fn heapless_vec_fills_then_reports_disk_full() {
        let mut v: heapless::Vec<u8, 4> = heapless::Vec::new();
        assert_eq!(v.write_at(0, b"abc"), Ok(()));
        assert_eq!(v.write_at(3, b"de"), Err(StorageError::DiskFull));
        assert_eq!(v.write_at(1, b"x"), Err(StorageError::Io));
        assert_eq!(StorageError::DiskFull.error_code(), ErrorCode::DiskFull);
    }

    #[test]
    fn slice_writer_is_bounded() {
        let mut mem = [0u8; 4];
        let mut w = SliceWriter::new(&mut mem);
        assert!(w.is_empty());
        w.write_at(0, b"ab").unwrap();
        assert_eq!(w.write_at(2, b"cde"), Err(StorageError::DiskFull));
        w.write_at(2, b"cd").unwrap();
        assert_eq!(w.written(), b"abcd");
        assert_eq!(w.len(), 4);
    }
}
