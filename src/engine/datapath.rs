//! Moving payload between datagrams and [`Storage`]: straight through for `octet`, and through
//! the netascii stream converters for `netascii`, where wire offsets and file offsets differ.
//!
//! Octet blocks are read at `wire offset == file offset` directly into the outgoing datagram.
//! Netascii sending keeps the converter state at two points, the current read position and the
//! start of the oldest block that may still be resent, so a retransmission re-encodes at most one
//! window from that mark; no data is buffered.

use crate::netascii::{NetasciiDecoder, NetasciiEncoder};
use crate::storage::{Storage, StorageError};

/// Chunk size for netascii conversion through the stack.
const CHUNK: usize = 128;

/// A point in the netascii output stream.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct TextPos {
    wire: u64,
    file: u64,
    enc: NetasciiEncoder,
}

/// Where a netascii sender stands: the current read position, and the mark a resend restarts
/// from. Kept with the rest of the sending side, so that roles that never send hold none.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct TextCursor {
    cursor: TextPos,
    mark: TextPos,
}

/// How payload is converted.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) enum DataPath {
    /// Bytes as they are.
    Octet,
    /// Netascii, sending; the positions are the sender's [`TextCursor`].
    TextOut,
    /// Netascii, receiving.
    TextIn(NetasciiDecoder),
}

/// Reads until `buf` is full or the end of the file.
fn read_full<S: Storage>(s: &mut S, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
    let mut done = 0;
    while done < buf.len() {
        let n = s.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n.min(buf.len() - done);
    }
    Ok(done)
}

impl DataPath {
    pub(crate) fn new(netascii: bool, sending: bool) -> Self {
        match (netascii, sending) {
            (false, _) => DataPath::Octet,
            (true, true) => DataPath::TextOut,
            (true, false) => DataPath::TextIn(NetasciiDecoder::new()),
        }
    }

    /// Fills `out` with the wire bytes at `wire_off`; fewer than `out.len()` means end of file.
    /// `floor` is the wire offset of the oldest block that may be read again; `text` is where a
    /// netascii sender stands.
    pub(crate) fn read_block<S: Storage>(
        &self,
        text: &mut TextCursor,
        s: &mut S,
        wire_off: u64,
        floor: u64,
        out: &mut [u8],
    ) -> Result<usize, StorageError> {
        let (DataPath::TextOut, TextCursor { cursor, mark }) = (self, text) else {
            return read_full(s, wire_off, out);
        };
        if cursor.wire != wire_off {
            // A resend: go back to the mark (or the start) and re-encode forward, discarding.
            *cursor = if mark.wire <= wire_off {
                *mark
            } else {
                TextPos::default()
            };
            let mut scratch = [0u8; CHUNK];
            while cursor.wire < wire_off {
                let want = usize::try_from(wire_off - cursor.wire)
                    .unwrap_or(CHUNK)
                    .min(CHUNK);
                if text_fill(s, cursor, &mut scratch[..want])? == 0 {
                    break;
                }
            }
        }
        if cursor.wire == floor {
            *mark = *cursor;
        }
        let n = text_fill(s, cursor, out)?;
        Ok(n)
    }

    /// The file offset reached by the read that ended at wire offset `wire_end`.
    pub(crate) fn file_offset(&self, text: &TextCursor, wire_end: u64) -> u64 {
        match self {
            DataPath::TextOut => text.cursor.file,
            _ => wire_end,
        }
    }

    /// Writes a received payload; `written` is the file offset so far and is advanced.
    pub(crate) fn write_block<S: Storage>(
        &mut self,
        s: &mut S,
        written: &mut u64,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        match self {
            DataPath::TextIn(dec) => {
                let mut rest = payload;
                let mut out = [0u8; CHUNK];
                while !rest.is_empty() {
                    let (used, n) = dec.decode(rest, &mut out);
                    rest = &rest[used..];
                    if n > 0 {
                        s.write_at(*written, &out[..n])?;
                        *written += n as u64;
                    }
                }
                Ok(())
            }
            _ => {
                if !payload.is_empty() {
                    s.write_at(*written, payload)?;
                    *written += payload.len() as u64;
                }
                Ok(())
            }
        }
    }

    /// End of a received stream: flushes a pending netascii CR.
    pub(crate) fn finish_write<S: Storage>(
        &mut self,
        s: &mut S,
        written: &mut u64,
    ) -> Result<(), StorageError> {
        if let DataPath::TextIn(dec) = self {
            let mut out = [0u8; 2];
            let n = dec.finish(&mut out);
            if n > 0 {
                s.write_at(*written, &out[..n])?;
                *written += n as u64;
            }
        }
        Ok(())
    }
}

/// Encodes file bytes from `pos` into `out` until it is full or the file ends.
fn text_fill<S: Storage>(s: &mut S, pos: &mut TextPos, out: &mut [u8]) -> Result<usize, StorageError> {
    let mut filled = 0;
    let mut input = [0u8; CHUNK];
    while filled < out.len() {
        let k = read_full(s, pos.file, &mut input)?;
        if k == 0 {
            let n = pos.enc.flush(&mut out[filled..]);
            filled += n;
            pos.wire += n as u64;
            break;
        }
        let (used, n) = pos.enc.encode(&input[..k], &mut out[filled..]);
        pos.file += used as u64;
        pos.wire += n as u64;
        filled += n;
        if used == 0 && n == 0 {
            break;
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netascii_resend_reencodes_same_bytes() {
        let text: &[u8] = b"line one\nline\rtwo\n\n\r\rend";
        let mut s = text;
        let path = DataPath::new(true, true);
        let mut at = TextCursor::default();
        let bs = 5;
        let mut blocks = std::vec::Vec::new();
        let mut off = 0;
        loop {
            let mut b = [0u8; 5];
            let n = path.read_block(&mut at, &mut s, off, 0, &mut b).unwrap();
            blocks.push(b[..n].to_vec());
            off += n as u64;
            if n < bs {
                break;
            }
        }
        let wire: std::vec::Vec<u8> = blocks.concat();
        assert_eq!(wire.len() as u64, NetasciiEncoder::encoded_len(text));
        // Resend block 3, then block 1 (before the mark: from the start), then continue.
        for (i, expect) in [(2usize, &blocks[2]), (0, &blocks[0]), (4, &blocks[4])] {
            let mut b = [0u8; 5];
            let n = path
                .read_block(&mut at, &mut s, (i * bs) as u64, 0, &mut b)
                .unwrap();
            assert_eq!(&b[..n], &expect[..], "block {i}");
        }
        // Decode back.
        let mut recv = DataPath::new(true, false);
        // A fixed-capacity vector, so the test runs without `std` too.
        let mut out: heapless::Vec<u8, 64> = heapless::Vec::new();
        let mut written = 0;
        for b in &blocks {
            recv.write_block(&mut out, &mut written, b).unwrap();
        }
        recv.finish_write(&mut out, &mut written).unwrap();
        assert_eq!(&out[..], text);
    }
}
