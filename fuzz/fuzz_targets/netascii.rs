//! `netascii`: the netascii stream converters under arbitrary chunking.
//!
//! * Round trip as TFTP does it: a local byte stream is read in arbitrary chunks and
//!   `NetasciiEncoder::encode`d into fixed DATA blocks of 1..=1500 bytes (every block full but
//!   the last, which is shorter, possibly empty), `flush`ed at the end; the blocks are then
//!   `NetasciiDecoder::decode`d one by one (in arbitrary input chunks, into arbitrary output
//!   buffers) and `finish`ed. The result must equal the original stream, the wire bytes must
//!   equal a whole-buffer reference encoding, and their total must equal
//!   `NetasciiEncoder::encoded_len(stream)`. The blocks decoded with `decode_in_place` must
//!   give the same stream.
//! * Raw wire bytes: the same arbitrary bytes are decoded as if received, with `decode` (in
//!   chunks) and with `decode_in_place` (in blocks). Neither may panic; a call never writes
//!   more than it consumed plus one carried byte; the total output is never longer than the
//!   input, and both ways give the whole-buffer reference decoding.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tftp_proto::{NetasciiDecoder, NetasciiEncoder};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Sizes of the successive reads of the local file (cycled; mapped to 1..=2048).
    read_chunks: Vec<u16>,
    /// Size of a DATA block's payload (mapped to 1..=1500).
    block_size: u16,
    /// Input chunk size for `decode` (mapped to 1..=2048).
    decode_chunk: u16,
    /// Output buffer size for `decode` (mapped to 1..=2048).
    decode_out: u16,
    /// The local byte stream; also decoded as raw wire bytes.
    stream: Vec<u8>,
}

fn map(v: u16, max: usize) -> usize {
    usize::from(v) % max + 1
}

/// Whole-buffer reference encoder: LF -> CR LF, CR -> CR NUL.
fn encode_ref(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            other => out.push(other),
        }
    }
    out
}

/// Whole-buffer reference decoder: CR LF -> LF, CR NUL -> CR, CR X -> CR X, final CR -> CR.
fn decode_ref(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        i += 1;
        if b != b'\r' {
            out.push(b);
            continue;
        }
        match input.get(i) {
            Some(b'\n') => {
                out.push(b'\n');
                i += 1;
            }
            Some(0) => {
                out.push(b'\r');
                i += 1;
            }
            _ => out.push(b'\r'),
        }
    }
    out
}

/// Sends `stream` as a TFTP sender does: reads in `read_chunks`, fills `block_size` blocks.
fn send(stream: &[u8], read_chunks: &[u16], block_size: usize) -> Vec<Vec<u8>> {
    let mut enc = NetasciiEncoder::new();
    let mut blocks = Vec::new();
    let mut block = vec![0u8; block_size];
    let mut fill = 0;
    let mut rest = stream;
    let mut sizes = read_chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |&s| map(s, 2048)).min(rest.len());
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        while !chunk.is_empty() {
            let room = block_size - fill;
            let (c, w) = enc.encode(chunk, &mut block[fill..]);
            assert!(
                c <= chunk.len() && w <= room,
                "encode returned ({c}, {w}) for {} into {room}",
                chunk.len()
            );
            assert!(
                c > 0 || w > 0,
                "encode made no progress with {room} bytes of room"
            );
            assert!(
                w == room || (c == chunk.len() && !enc.has_pending()),
                "encode stopped early: ({c}, {w}) for {} into {room}, pending {}",
                chunk.len(),
                enc.has_pending()
            );
            chunk = &chunk[c..];
            fill += w;
            if fill == block_size {
                blocks.push(block.clone());
                fill = 0;
            }
        }
    }
    // End of file: the pending half of a pair, then the short final block.
    while enc.has_pending() {
        let w = enc.flush(&mut block[fill..]);
        assert_eq!(w, 1, "flush with room and a pending byte wrote {w}");
        fill += w;
        if fill == block_size {
            blocks.push(block.clone());
            fill = 0;
        }
    }
    assert_eq!(
        enc.flush(&mut block[fill..]),
        0,
        "flush with nothing pending wrote"
    );
    blocks.push(block[..fill].to_vec());
    blocks
}

/// Receives `blocks` with `decode`, each cut into `chunk` input pieces, into `out_size` buffers.
fn receive(blocks: &[Vec<u8>], chunk: usize, out_size: usize) -> Vec<u8> {
    let mut dec = NetasciiDecoder::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; out_size];
    for block in blocks {
        for mut piece in block.chunks(chunk) {
            while !piece.is_empty() {
                let (c, w) = dec.decode(piece, &mut buf);
                assert!(c <= piece.len() && w <= buf.len(), "decode returned ({c}, {w})");
                assert!(c > 0 || w > 0, "decode made no progress");
                assert!(w <= c + 1, "decode wrote {w} bytes for {c} consumed");
                if buf.len() > piece.len() {
                    assert_eq!(
                        c,
                        piece.len(),
                        "decode with input.len()+1 of room left input over"
                    );
                }
                out.extend_from_slice(&buf[..w]);
                piece = &piece[c..];
            }
        }
    }
    finish(&mut dec, &mut out);
    out
}

/// Receives `blocks` with `decode_in_place`.
fn receive_in_place(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut dec = NetasciiDecoder::new();
    let mut out = Vec::new();
    for block in blocks {
        let mut b = block.clone();
        let had_pending = dec.has_pending();
        let n = dec.decode_in_place(&mut b);
        assert!(n <= b.len(), "decode_in_place returned {n} for {} bytes", b.len());
        if !had_pending {
            // Nothing carried in: the same as `decode` of this block alone.
            let mut fresh = NetasciiDecoder::new();
            let mut buf = vec![0u8; block.len() + 1];
            let (c, w) = fresh.decode(block, &mut buf);
            assert_eq!(
                (c, &buf[..w]),
                (block.len(), &b[..n]),
                "decode_in_place != decode"
            );
        }
        out.extend_from_slice(&b[..n]);
    }
    finish(&mut dec, &mut out);
    out
}

fn finish(dec: &mut NetasciiDecoder, out: &mut Vec<u8>) {
    let pending = dec.has_pending();
    assert_eq!(dec.finish(&mut []), 0, "finish wrote into an empty buffer");
    assert_eq!(
        dec.has_pending(),
        pending,
        "finish into an empty buffer dropped the pending byte"
    );
    let mut last = [0u8; 1];
    let w = dec.finish(&mut last);
    assert_eq!(w, usize::from(pending), "finish wrote {w} with pending {pending}");
    assert!(!dec.has_pending(), "still pending after finish");
    out.extend_from_slice(&last[..w]);
}

fuzz_target!(|input: Input| {
    let stream = &input.stream[..];
    let block_size = map(input.block_size, 1500);
    let chunk = map(input.decode_chunk, 2048);
    let out_size = map(input.decode_out, 2048);

    // Local text -> DATA blocks -> local text.
    let blocks = send(stream, &input.read_chunks, block_size);
    let (last, full) = blocks.split_last().expect("at least the final block");
    assert!(full.iter().all(|b| b.len() == block_size));
    assert!(last.len() < block_size, "the final block must be short");
    let wire: Vec<u8> = blocks.concat();
    assert_eq!(wire, encode_ref(stream), "encoder output != reference");
    assert_eq!(
        wire.len() as u64,
        NetasciiEncoder::encoded_len(stream),
        "encoded_len != bytes actually sent"
    );
    assert_eq!(
        receive(&blocks, chunk, out_size),
        stream,
        "decode(encode(x)) != x"
    );
    assert_eq!(
        receive_in_place(&blocks),
        stream,
        "decode_in_place(encode(x)) != x"
    );

    // Raw, possibly malformed, wire bytes.
    let expected = decode_ref(stream);
    let raw_blocks: Vec<Vec<u8>> = stream.chunks(block_size).map(<[u8]>::to_vec).collect();
    let streamed = receive(&raw_blocks, chunk, out_size);
    assert!(streamed.len() <= stream.len() + 1);
    assert!(
        streamed.len() <= stream.len(),
        "decoded output longer than its input"
    );
    assert_eq!(streamed, expected, "decode of raw bytes != reference");
    assert_eq!(
        receive_in_place(&raw_blocks),
        expected,
        "decode_in_place of raw bytes != reference"
    );
});
