//! Netascii stream conversion (RFC 764 / RFC 1350 as used by TFTP's `netascii` mode).
//!
//! This module owns the byte-level translation between local text (LF line endings) and
//! netascii wire bytes (CR LF line endings, bare CR sent as CR NUL):
//!
//! * [`NetasciiEncoder`]: local -> wire. LF becomes CR LF, CR becomes CR NUL, every other
//!   byte is copied unchanged.
//! * [`NetasciiDecoder`]: wire -> local. CR LF becomes LF, CR NUL becomes CR, and for
//!   robustness a CR followed by any other byte X is kept as CR X. Every other byte is copied
//!   unchanged.
//!
//! Both are stream transforms with O(1) state: data may arrive and leave in blocks of any
//! size, and a pair split across two blocks (input or output side) is carried over in the
//! converter's state. Nothing allocates, nothing is `unsafe`, and no input or buffer size can
//! make a method panic.

/// Carriage return.
const CR: u8 = b'\r';
/// Line feed.
const LF: u8 = b'\n';
/// NUL, the partner of a bare CR on the wire.
const NUL: u8 = 0;

/// Local text -> netascii wire bytes.
///
/// Feed local bytes to [`encode`](Self::encode) in chunks of any size; it fills the output
/// buffer completely whenever enough input exists, which is what a TFTP sender needs to
/// produce exactly-full DATA blocks. When a two-byte pair (CR LF or CR NUL) does not fit at
/// the end of the output, its second byte stays pending and is written first by the next
/// `encode` or by [`flush`](Self::flush). At the end of the file call `flush` until
/// [`has_pending`](Self::has_pending) is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NetasciiEncoder {
    /// Second byte of a CR LF / CR NUL pair whose first byte was already written.
    pending: Option<u8>,
}

impl NetasciiEncoder {
    /// Creates an encoder with nothing pending.
    pub const fn new() -> Self {
        Self { pending: None }
    }

    /// Converts as much of `input` as fits into `output`.
    ///
    /// Returns `(consumed input bytes, written output bytes)`. A pending byte from the
    /// previous call is written first. The output is filled completely whenever enough input
    /// exists: if only the first byte of a pair fits, it is written, the input byte counts as
    /// consumed, and the pair's second byte becomes pending. So after every call either
    /// `written == output.len()`, or all of `input` was consumed and nothing is pending.
    pub fn encode(&mut self, input: &[u8], output: &mut [u8]) -> (usize, usize) {
        let mut written = 0usize;
        if let Some(byte) = self.pending {
            match output.first_mut() {
                Some(slot) => {
                    *slot = byte;
                    written = 1;
                    self.pending = None;
                }
                None => return (0, 0),
            }
        }
        let mut consumed = 0usize;
        for &byte in input {
            let (first, second) = match byte {
                LF => (CR, Some(LF)),
                CR => (CR, Some(NUL)),
                other => (other, None),
            };
            let Some(slot) = output.get_mut(written) else {
                break;
            };
            *slot = first;
            written += 1;
            consumed += 1;
            if let Some(second) = second {
                match output.get_mut(written) {
                    Some(slot) => {
                        *slot = second;
                        written += 1;
                    }
                    None => {
                        self.pending = Some(second);
                        break;
                    }
                }
            }
        }
        (consumed, written)
    }

    /// Whether a byte is pending (the second half of a pair, written by the next
    /// [`encode`](Self::encode) or [`flush`](Self::flush)).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Writes a pending byte, if any, into `output`; returns the bytes written (0 or 1).
    ///
    /// Returns 0 and keeps the byte pending when `output` is empty.
    pub fn flush(&mut self, output: &mut [u8]) -> usize {
        match (self.pending, output.first_mut()) {
            (Some(byte), Some(slot)) => {
                *slot = byte;
                self.pending = None;
                1
            }
            _ => 0,
        }
    }

    /// Exact wire length of `input` when encoded (for the `tsize` of a netascii file):
    /// every LF and CR counts as 2 bytes, every other byte as 1.
    pub fn encoded_len(input: &[u8]) -> u64 {
        input
            .iter()
            .map(|&byte| if byte == LF || byte == CR { 2u64 } else { 1u64 })
            .sum()
    }
}

/// What a [`NetasciiDecoder`] carries from one call to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum DecodeState {
    /// Nothing pending.
    #[default]
    Idle,
    /// A CR was consumed and waits for its partner byte.
    Cr,
    /// A decoded byte that did not fit (only produced by
    /// [`NetasciiDecoder::decode_in_place`]); it is the next output byte.
    Byte(u8),
}

/// Result of feeding one wire byte to the decoder state machine.
enum Step {
    /// No output; new state.
    Emit0(DecodeState),
    /// One output byte; new state.
    Emit1(u8, DecodeState),
    /// Two output bytes; the new state is always [`DecodeState::Idle`]. The first byte
    /// comes from the old state (a pending CR or carried byte), the second from the input
    /// byte decoded from `Idle`.
    Emit2(u8, u8),
}

/// Decodes one wire byte given the current state.
fn step(state: DecodeState, byte: u8) -> Step {
    match state {
        DecodeState::Idle => match byte {
            CR => Step::Emit0(DecodeState::Cr),
            other => Step::Emit1(other, DecodeState::Idle),
        },
        DecodeState::Cr => match byte {
            LF => Step::Emit1(LF, DecodeState::Idle),
            NUL => Step::Emit1(CR, DecodeState::Idle),
            // CR CR: keep the first, the second waits for its own partner.
            CR => Step::Emit1(CR, DecodeState::Cr),
            other => Step::Emit2(CR, other),
        },
        // The carried byte goes first, then `byte` is decoded from `Idle`.
        DecodeState::Byte(held) => match byte {
            CR => Step::Emit1(held, DecodeState::Cr),
            other => Step::Emit2(held, other),
        },
    }
}

/// Netascii wire bytes -> local text.
///
/// Feed received DATA payloads to [`decode`](Self::decode) (or
/// [`decode_in_place`](Self::decode_in_place)) in blocks of any size; a CR at the end of one
/// block is paired with the first byte of the next. When the transfer is complete call
/// [`finish`](Self::finish) to write a CR still pending from a stream that ended in a bare
/// CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NetasciiDecoder {
    /// Carry-over between calls.
    state: DecodeState,
}

impl NetasciiDecoder {
    /// Creates a decoder with nothing pending.
    pub const fn new() -> Self {
        Self {
            state: DecodeState::Idle,
        }
    }

    /// Converts as much of `input` as fits into `output`.
    ///
    /// Returns `(consumed input bytes, written output bytes)`. A CR at the end of `input` is
    /// consumed without output and kept pending until its partner arrives. The output never
    /// needs more than `input.len() + 1` bytes (the +1 is a CR pending from the previous
    /// call that turns out to be a bare CR followed by another byte), so
    /// `output.len() >= input.len() + 1` always consumes all of `input`. With a non-empty
    /// `output` every call with non-empty input makes progress.
    pub fn decode(&mut self, input: &[u8], output: &mut [u8]) -> (usize, usize) {
        let mut consumed = 0usize;
        let mut written = 0usize;
        for &byte in input {
            match step(self.state, byte) {
                Step::Emit0(next) => {
                    self.state = next;
                }
                Step::Emit1(out, next) => {
                    let Some(slot) = output.get_mut(written) else {
                        break;
                    };
                    *slot = out;
                    written += 1;
                    self.state = next;
                }
                Step::Emit2(first, second) => {
                    let Some(slot) = output.get_mut(written) else {
                        break;
                    };
                    *slot = first;
                    written += 1;
                    // The carried-over byte is out; `byte` is now decoded from `Idle`.
                    self.state = DecodeState::Idle;
                    let Some(slot) = output.get_mut(written) else {
                        // `byte` stays unconsumed and is decoded by the next call.
                        break;
                    };
                    *slot = second;
                    written += 1;
                }
            }
            consumed += 1;
        }
        (consumed, written)
    }

    /// Decodes `buf` in place; returns the number of decoded bytes now at the start of
    /// `buf`.
    ///
    /// Every byte of `buf` is always consumed. Without anything pending from before, the
    /// decoded text is never longer than `buf`, and the result equals what
    /// [`decode`](Self::decode) would produce. When a CR is pending from the previous block
    /// and this block does not start with LF or NUL, that CR must be emitted in front of
    /// the block and the decoded text can be one byte longer than `buf`: the last decoded
    /// byte is then kept in the decoder (so [`has_pending`](Self::has_pending) is true) and
    /// written first by the next `decode`/`decode_in_place` call or by
    /// [`finish`](Self::finish). The concatenated output of all calls plus `finish` is
    /// therefore always exactly the decoded stream; only the block boundaries of the output
    /// may lag by one byte.
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> usize {
        // Invariant at the top of each iteration: `written <= read`, so after reading
        // `buf[read]` the slots `written..=read` are free to be overwritten.
        let mut written = 0usize;
        let mut read = 0usize;
        while let Some(&byte) = buf.get(read) {
            match step(self.state, byte) {
                Step::Emit0(next) => {
                    self.state = next;
                }
                Step::Emit1(out, next) => {
                    // `written <= read < buf.len()`: the slot always exists.
                    if let Some(slot) = buf.get_mut(written) {
                        *slot = out;
                        written += 1;
                    }
                    self.state = next;
                }
                Step::Emit2(first, second) => {
                    if let Some(slot) = buf.get_mut(written) {
                        *slot = first;
                        written += 1;
                    }
                    if written <= read {
                        if let Some(slot) = buf.get_mut(written) {
                            *slot = second;
                            written += 1;
                        }
                        self.state = DecodeState::Idle;
                    } else {
                        // No free slot left for this step: carry the byte over.
                        self.state = DecodeState::Byte(second);
                    }
                }
            }
            read += 1;
        }
        written
    }

    /// End of stream: writes a byte still pending into `output` and returns the bytes
    /// written (0 or 1).
    ///
    /// A pending CR (the stream ended in a bare CR) is written as CR; a byte carried over
    /// by [`decode_in_place`](Self::decode_in_place) is written as is. Returns 0 and keeps
    /// the byte pending when `output` is empty.
    pub fn finish(&mut self, output: &mut [u8]) -> usize {
        let byte = match self.state {
            DecodeState::Idle => return 0,
            DecodeState::Cr => CR,
            DecodeState::Byte(byte) => byte,
        };
        match output.first_mut() {
            Some(slot) => {
                *slot = byte;
                self.state = DecodeState::Idle;
                1
            }
            None => 0,
        }
    }

    /// Whether a byte from previous input is waiting: a CR waiting for its partner, or a
    /// decoded byte carried over by [`decode_in_place`](Self::decode_in_place). Either way
    /// [`finish`](Self::finish) would write one byte.
    pub fn has_pending(&self) -> bool {
        self.state != DecodeState::Idle
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Whole-buffer encoder used as the reference.
    fn encode_all(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in input {
            match b {
                LF => out.extend_from_slice(b"\r\n"),
                CR => out.extend_from_slice(b"\r\0"),
                other => out.push(other),
            }
        }
        out
    }

    /// Whole-buffer decoder used as the reference.
    fn decode_all(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut iter = input.iter().copied().peekable();
        while let Some(b) = iter.next() {
            if b != CR {
                out.push(b);
                continue;
            }
            match iter.peek().copied() {
                Some(LF) => {
                    iter.next();
                    out.push(LF);
                }
                Some(NUL) => {
                    iter.next();
                    out.push(CR);
                }
                _ => out.push(CR),
            }
        }
        out
    }

    /// Streams `input` through one encoder in the given input chunks with an output buffer
    /// of `out_size` per call, then flushes.
    fn encode_stream(input: &[u8], in_chunks: &[usize], out_size: usize) -> Vec<u8> {
        let mut enc = NetasciiEncoder::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; out_size];
        let mut rest = input;
        let mut chunk_sizes = in_chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*chunk_sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let (mut chunk, tail) = rest.split_at(n);
            rest = tail;
            while !chunk.is_empty() || enc.has_pending() {
                let (c, w) = enc.encode(chunk, &mut buf);
                assert!(c > 0 || w > 0, "no progress");
                out.extend_from_slice(&buf[..w]);
                chunk = &chunk[c..];
            }
        }
        let w = enc.flush(&mut buf);
        assert_eq!(w, 0);
        out
    }

    /// Streams wire bytes through one decoder with `decode`, cut into the given input
    /// chunks, each decoded into output buffers of `out_size`, then finishes.
    fn decode_stream(input: &[u8], in_chunks: &[usize], out_size: usize) -> Vec<u8> {
        let mut dec = NetasciiDecoder::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; out_size.max(1)];
        let mut rest = input;
        let mut chunk_sizes = in_chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*chunk_sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let (mut chunk, tail) = rest.split_at(n);
            rest = tail;
            while !chunk.is_empty() {
                let (c, w) = dec.decode(chunk, &mut buf);
                assert!(c > 0 || w > 0, "no progress");
                out.extend_from_slice(&buf[..w]);
                chunk = &chunk[c..];
            }
        }
        let w = dec.finish(&mut buf);
        out.extend_from_slice(&buf[..w]);
        assert!(!dec.has_pending());
        out
    }

    #[test]
    fn encode_lf_cr_crlf() {
        assert_eq!(encode_stream(b"a\nb", &[100], 100), b"a\r\nb");
        assert_eq!(encode_stream(b"a\rb", &[100], 100), b"a\r\0b");
        assert_eq!(encode_stream(b"a\r\nb", &[100], 100), b"a\r\0\r\nb");
        assert_eq!(encode_stream(b"\n\n", &[100], 100), b"\r\n\r\n");
    }

    #[test]
    fn encode_cr_then_lf_in_next_chunk() {
        let mut enc = NetasciiEncoder::new();
        let mut out = [0u8; 16];
        let (c1, w1) = enc.encode(b"x\r", &mut out);
        assert_eq!((c1, w1), (2, 3));
        assert_eq!(&out[..3], b"x\r\0");
        let (c2, w2) = enc.encode(b"\ny", &mut out);
        assert_eq!((c2, w2), (2, 3));
        assert_eq!(&out[..3], b"\r\ny");
        assert!(!enc.has_pending());
    }

    #[test]
    fn encode_output_size_one_splits_pair() {
        let mut enc = NetasciiEncoder::new();
        let mut out = [0u8; 1];
        assert_eq!(enc.encode(b"\n", &mut out), (1, 1));
        assert_eq!(out, [CR]);
        assert!(enc.has_pending());
        // Pending byte goes first, even with more input waiting.
        assert_eq!(enc.encode(b"z", &mut out), (0, 1));
        assert_eq!(out, [LF]);
        assert!(!enc.has_pending());
        assert_eq!(enc.encode(b"z", &mut out), (1, 1));
        assert_eq!(out, [b'z']);
        // Split CR NUL finished by flush.
        assert_eq!(enc.encode(b"\r", &mut out), (1, 1));
        assert_eq!(out, [CR]);
        assert_eq!(enc.flush(&mut []), 0);
        assert!(enc.has_pending());
        assert_eq!(enc.flush(&mut out), 1);
        assert_eq!(out, [NUL]);
        assert_eq!(enc.flush(&mut out), 0);
        assert_eq!(encode_stream(b"a\nb\rc", &[1], 1), b"a\r\nb\r\0c");
    }

    #[test]
    fn encode_fills_block_exactly() {
        let mut enc = NetasciiEncoder::new();
        let mut block = [0u8; 4];
        // "abc\n" -> 5 wire bytes; the block takes 4, LF pending.
        assert_eq!(enc.encode(b"abc\nd", &mut block), (4, 4));
        assert_eq!(&block, b"abc\r");
        assert_eq!(enc.encode(b"d", &mut block), (1, 2));
        assert_eq!(&block[..2], b"\nd");
    }

    #[test]
    fn encode_empty_output_with_pending() {
        let mut enc = NetasciiEncoder::new();
        let mut one = [0u8; 1];
        enc.encode(b"\n", &mut one);
        assert_eq!(enc.encode(b"abc", &mut []), (0, 0));
        assert!(enc.has_pending());
    }

    #[test]
    fn decode_crlf_split_across_blocks() {
        let mut dec = NetasciiDecoder::new();
        let mut out = [0u8; 8];
        assert_eq!(dec.decode(b"ab\r", &mut out), (3, 2));
        assert_eq!(&out[..2], b"ab");
        assert!(dec.has_pending());
        assert_eq!(dec.decode(b"\ncd", &mut out), (3, 3));
        assert_eq!(&out[..3], b"\ncd");
        assert!(!dec.has_pending());
        assert_eq!(dec.finish(&mut out), 0);
    }

    #[test]
    fn decode_crnul_split_across_blocks() {
        let mut dec = NetasciiDecoder::new();
        let mut out = [0u8; 8];
        assert_eq!(dec.decode(b"\r", &mut out), (1, 0));
        assert_eq!(dec.decode(b"\0x", &mut out), (2, 2));
        assert_eq!(&out[..2], b"\rx");
    }

    #[test]
    fn decode_cr_followed_by_other_byte() {
        assert_eq!(decode_stream(b"a\rb", &[100], 100), b"a\rb");
        assert_eq!(decode_stream(b"a\r\r\n", &[100], 100), b"a\r\n");
        assert_eq!(decode_stream(b"\r\r\r\0", &[1], 1), b"\r\r\r");
        // Split: CR at the end of one block, other byte at the start of the next, output
        // room for only one byte: the CR comes out first, 'b' stays unconsumed.
        let mut dec = NetasciiDecoder::new();
        let mut out = [0u8; 1];
        assert_eq!(dec.decode(b"\r", &mut out), (1, 0));
        assert_eq!(dec.decode(b"b", &mut out), (0, 1));
        assert_eq!(out, [CR]);
        assert!(!dec.has_pending());
        assert_eq!(dec.decode(b"b", &mut out), (1, 1));
        assert_eq!(out, [b'b']);
    }

    #[test]
    fn decode_stream_ending_in_bare_cr() {
        let mut dec = NetasciiDecoder::new();
        let mut out = [0u8; 8];
        assert_eq!(dec.decode(b"end\r", &mut out), (4, 3));
        assert!(dec.has_pending());
        assert_eq!(dec.finish(&mut []), 0);
        assert!(dec.has_pending());
        assert_eq!(dec.finish(&mut out), 1);
        assert_eq!(out[0], CR);
        assert!(!dec.has_pending());
        assert_eq!(dec.finish(&mut out), 0);
    }

    #[test]
    fn empty_input() {
        let mut enc = NetasciiEncoder::new();
        let mut dec = NetasciiDecoder::new();
        let mut out = [0u8; 4];
        assert_eq!(enc.encode(b"", &mut out), (0, 0));
        assert_eq!(enc.encode(b"", &mut []), (0, 0));
        assert_eq!(enc.flush(&mut out), 0);
        assert_eq!(dec.decode(b"", &mut out), (0, 0));
        assert_eq!(dec.decode(b"", &mut []), (0, 0));
        assert_eq!(dec.decode_in_place(&mut []), 0);
        assert_eq!(dec.finish(&mut out), 0);
        assert_eq!(NetasciiEncoder::encoded_len(b""), 0);
        assert_eq!(enc, NetasciiEncoder::default());
        assert_eq!(dec, NetasciiDecoder::default());
    }

    #[test]
    fn decode_empty_output() {
        let mut dec = NetasciiDecoder::new();
        assert_eq!(dec.decode(b"ab", &mut []), (0, 0));
        // A CR is consumed without output even with no room.
        assert_eq!(dec.decode(b"\r\n", &mut []), (1, 0));
        assert!(dec.has_pending());
    }

    #[test]
    fn encoded_len_matches() {
        let text = b"line one\nline\rtwo\r\n\n\0end";
        let wire = encode_stream(text, &[3], 5);
        assert_eq!(NetasciiEncoder::encoded_len(text), wire.len() as u64);
        assert_eq!(NetasciiEncoder::encoded_len(b"\n\r"), 4);
        assert_eq!(NetasciiEncoder::encoded_len(b"abc"), 3);
    }

    #[test]
    fn decode_in_place_basic() {
        let mut dec = NetasciiDecoder::new();
        let mut buf = *b"a\r\nb\r\0c\rd";
        let n = dec.decode_in_place(&mut buf);
        assert_eq!(&buf[..n], b"a\nb\rc\rd");
        assert!(!dec.has_pending());
    }

    #[test]
    fn decode_in_place_pending_cr_carries_last_byte() {
        let mut dec = NetasciiDecoder::new();
        let mut first = *b"xy\r";
        assert_eq!(dec.decode_in_place(&mut first), 2);
        assert_eq!(&first[..2], b"xy");
        assert!(dec.has_pending());
        // The pending CR is a bare CR: "CR a b" is 3 bytes for a 2-byte block.
        let mut second = *b"ab";
        assert_eq!(dec.decode_in_place(&mut second), 2);
        assert_eq!(&second, b"\ra");
        assert!(dec.has_pending());
        // The carried 'b' comes out first next time.
        let mut third = *b"\r\n";
        assert_eq!(dec.decode_in_place(&mut third), 2);
        assert_eq!(&third, b"b\n");
        assert!(!dec.has_pending());

        // Carry at the very end is written by finish.
        let mut dec = NetasciiDecoder::new();
        let mut a = *b"\r";
        assert_eq!(dec.decode_in_place(&mut a), 0);
        let mut b = *b"z";
        assert_eq!(dec.decode_in_place(&mut b), 1);
        assert_eq!(b, [CR]);
        let mut out = [0u8; 1];
        assert_eq!(dec.finish(&mut out), 1);
        assert_eq!(out, [b'z']);

        // A pending CR followed by LF/NUL fits in place.
        let mut dec = NetasciiDecoder::new();
        let mut a = *b"\r";
        dec.decode_in_place(&mut a);
        let mut b = *b"\0q";
        assert_eq!(dec.decode_in_place(&mut b), 2);
        assert_eq!(&b, b"\rq");
        assert!(!dec.has_pending());
    }

    #[test]
    fn decode_carried_byte_then_decode() {
        // A byte carried by decode_in_place is emitted first by decode.
        let mut dec = NetasciiDecoder::new();
        let mut a = *b"\r";
        dec.decode_in_place(&mut a);
        let mut b = *b"z";
        dec.decode_in_place(&mut b);
        let mut out = [0u8; 1];
        assert_eq!(dec.decode(b"\r", &mut out), (1, 1));
        assert_eq!(out, [b'z']);
        assert!(dec.has_pending());
        assert_eq!(dec.decode(b"\n", &mut out), (1, 1));
        assert_eq!(out, [LF]);
    }

    /// Simulates a TFTP transfer: the sender encodes `text` (arriving in `in_chunks`) into
    /// DATA blocks of exactly `block` bytes (last one shorter, possibly empty); the receiver
    /// decodes each block into output buffers of `out_size`.
    fn tftp_roundtrip(text: &[u8], in_chunks: &[usize], block: usize, out_size: usize) -> Vec<u8> {
        // Sender.
        let mut enc = NetasciiEncoder::new();
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut cur = vec![0u8; block];
        let mut fill = 0usize;
        let mut rest = text;
        let mut sizes = in_chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let (mut chunk, tail) = rest.split_at(n);
            rest = tail;
            while !chunk.is_empty() || enc.has_pending() {
                let out = &mut cur[fill..];
                let room = out.len();
                let (c, w) = enc.encode(chunk, out);
                assert!(c > 0 || w > 0, "encoder made no progress");
                // Fills the output whenever enough input exists.
                assert!(w == room || (c == chunk.len() && !enc.has_pending()));
                chunk = &chunk[c..];
                fill += w;
                if fill == block {
                    blocks.push(cur.clone());
                    fill = 0;
                }
            }
        }
        assert!(!enc.has_pending());
        assert_eq!(enc.flush(&mut cur[fill..]), 0);
        blocks.push(cur[..fill].to_vec());
        let wire_len: usize = blocks.iter().map(Vec::len).sum();
        assert_eq!(wire_len as u64, NetasciiEncoder::encoded_len(text));
        for full in &blocks[..blocks.len() - 1] {
            assert_eq!(full.len(), block);
        }
        let wire: Vec<u8> = blocks.concat();
        assert_eq!(wire, encode_all(text));

        // Receiver.
        let mut dec = NetasciiDecoder::new();
        let mut local = Vec::new();
        let mut obuf = vec![0u8; out_size];
        for blk in &blocks {
            let mut data = &blk[..];
            while !data.is_empty() {
                let (c, w) = dec.decode(data, &mut obuf);
                assert!(c > 0 || w > 0, "decoder made no progress");
                local.extend_from_slice(&obuf[..w]);
                data = &data[c..];
            }
        }
        let w = dec.finish(&mut obuf);
        local.extend_from_slice(&obuf[..w]);
        local
    }

    #[test]
    fn tftp_roundtrip_fixed() {
        let text = b"hello\r\nworld\n\r\rx\n";
        for block in 1..=20 {
            for out_size in 1..=5 {
                assert_eq!(tftp_roundtrip(text, &[1, 3, 7], block, out_size), text);
            }
        }
    }

    /// Bytes biased towards CR, LF and NUL so that pairs and splits are common.
    fn netascii_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
        // Each element picks (high byte) CR, LF, NUL or (otherwise) its arbitrary low byte.
        proptest::collection::vec(any::<u16>(), 0..max_len).prop_map(|raw| {
            raw.into_iter()
                .map(|r| {
                    let [value, pick] = r.to_le_bytes();
                    match pick % 8 {
                        0 | 1 => CR,
                        2 | 3 => LF,
                        4 => NUL,
                        _ => value,
                    }
                })
                .collect()
        })
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1usize..=64, 1..16)
    }

    proptest! {
        #[test]
        fn prop_encode_decode_identity(
            text in netascii_bytes(2000),
            in_chunks in chunk_sizes(),
            block in 1usize..=600,
            out_size in 1usize..=80,
        ) {
            prop_assert_eq!(tftp_roundtrip(&text, &in_chunks, block, out_size), text);
        }

        #[test]
        fn prop_encoded_len(
            text in netascii_bytes(2000),
            in_chunks in chunk_sizes(),
            out_size in 1usize..=80,
        ) {
            let wire = encode_stream(&text, &in_chunks, out_size);
            prop_assert_eq!(wire.len() as u64, NetasciiEncoder::encoded_len(&text));
            prop_assert_eq!(wire, encode_all(&text));
        }

        #[test]
        fn prop_decode_arbitrary_never_panics(
            wire in netascii_bytes(2000),
            in_chunks in chunk_sizes(),
            out_size in 0usize..=80,
        ) {
            // Ample output: consumes everything, never more than input + 1.
            let mut dec = NetasciiDecoder::new();
            let mut total = Vec::new();
            let mut rest = &wire[..];
            let mut sizes = in_chunks.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let mut out = vec![0u8; chunk.len() + 1];
                let (c, w) = dec.decode(chunk, &mut out);
                prop_assert_eq!(c, chunk.len());
                prop_assert!(w <= chunk.len() + 1);
                total.extend_from_slice(&out[..w]);
            }
            let mut last = [0u8; 1];
            let w = dec.finish(&mut last);
            total.extend_from_slice(&last[..w]);
            prop_assert_eq!(&total, &decode_all(&wire));

            // Small (even empty) output buffers: no panic, no stall, same result.
            let mut dec = NetasciiDecoder::new();
            let mut buf = vec![0u8; out_size];
            let mut rest = &wire[..];
            let mut small = Vec::new();
            let mut stalls = 0usize;
            while !rest.is_empty() && stalls < 4 {
                let (c, w) = dec.decode(rest, &mut buf);
                prop_assert!(c <= rest.len() && w <= buf.len());
                small.extend_from_slice(&buf[..w]);
                rest = &rest[c..];
                if c == 0 && w == 0 {
                    stalls += 1;
                }
            }
            if out_size > 0 {
                prop_assert_eq!(stalls, 0);
                let w = dec.finish(&mut buf);
                small.extend_from_slice(&buf[..w]);
                prop_assert_eq!(&small, &total);
            }

            prop_assert_eq!(decode_stream(&wire, &in_chunks, out_size), total);
        }

        #[test]
        fn prop_decode_in_place_agrees(
            wire in netascii_bytes(2000),
            in_chunks in chunk_sizes(),
        ) {
            let expected = decode_all(&wire);

            // Single block from a fresh decoder: identical to `decode`, never longer.
            let mut dec_a = NetasciiDecoder::new();
            let mut dec_b = NetasciiDecoder::new();
            let mut out = vec![0u8; wire.len() + 1];
            let (c, w) = dec_a.decode(&wire, &mut out);
            prop_assert_eq!(c, wire.len());
            let mut buf = wire.clone();
            let n = dec_b.decode_in_place(&mut buf);
            prop_assert_eq!(&buf[..n], &out[..w]);
            prop_assert_eq!(dec_a, dec_b);

            // Chunked stream: concatenation equals `decode`'s result.
            let mut dec = NetasciiDecoder::new();
            let mut total = Vec::new();
            let mut rest = &wire[..];
            let mut sizes = in_chunks.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let mut block = chunk.to_vec();
                let pending_before = dec.has_pending();
                let mut reference = dec;
                let mut ref_out = vec![0u8; chunk.len() + 1];
                let (_, ref_w) = reference.decode(chunk, &mut ref_out);
                let got = dec.decode_in_place(&mut block);
                prop_assert!(got <= block.len());
                if !pending_before {
                    prop_assert_eq!(&block[..got], &ref_out[..ref_w]);
                    prop_assert_eq!(dec, reference);
                }
                total.extend_from_slice(&block[..got]);
            }
            let mut last = [0u8; 1];
            let w = dec.finish(&mut last);
            total.extend_from_slice(&last[..w]);
            prop_assert!(!dec.has_pending());
            prop_assert_eq!(total, expected);
        }
    }
}
