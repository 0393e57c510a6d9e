//! `parse`: any bytes go to `Packet::parse`, which must never panic. When it accepts them:
//!
//! * `encode` into a buffer of exactly `encoded_len()` bytes succeeds (a parsed request is at
//!   most 512 octets, so it always re-encodes), writes exactly `encoded_len()` bytes, and
//!   `parse` of the result equals the first parse (canonical round trip);
//! * `encode` into a buffer one byte too short fails with
//!   `EncodeError::BufferTooSmall { needed: encoded_len() }` and leaves the buffer untouched;
//! * DATA re-encodes to the very datagram, ACK to its first 4 bytes;
//! * for RRQ/WRQ/OACK, `Options::parse_strict` and `Options::parse_request` agree: strict is
//!   `Ok` exactly when the lenient parse noted no problem, then with the same options, and
//!   otherwise both report the same first problem; the lenient result is always in range, its
//!   `unknown` count matches the list, and `Options::encode` of it parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftp_proto::options::{MAX_BLKSIZE, MIN_BLKSIZE, MIN_TIMEOUT, MIN_WINDOWSIZE};
use tftp_proto::{EncodeError, OptionList, OptionName, Options, Packet, Request};

/// Byte the too-short buffer is filled with, to see whether a failed encode wrote anything.
const SENTINEL: u8 = 0xA5;

fuzz_target!(|data: &[u8]| {
    let Ok(pkt) = Packet::parse(data) else {
        return;
    };

    // Canonical re-encoding into a buffer of exactly the announced size.
    let len = pkt.encoded_len();
    let mut buf = vec![0u8; len];
    let n = match pkt.encode(&mut buf) {
        Ok(n) => n,
        Err(e) => panic!("encode of a parsed packet failed: {e:?}; packet {pkt:?}"),
    };
    assert_eq!(
        n, len,
        "encode wrote {n} bytes but encoded_len() said {len}; packet {pkt:?}"
    );
    let again = Packet::parse(&buf[..n]).expect("re-encoded packet does not parse");
    // An option left without a value at the end of a request is ignored, never encoded.
    let expected = match pkt {
        Packet::Rrq(r) => Packet::Rrq(Request {
            ignored_option: b"",
            ..r
        }),
        Packet::Wrq(r) => Packet::Wrq(Request {
            ignored_option: b"",
            ..r
        }),
        other => other,
    };
    assert_eq!(again, expected, "parse(encode(p)) != p");
    assert_eq!(again.encoded_len(), len);

    match pkt {
        Packet::Data { .. } => assert_eq!(&buf[..n], data, "DATA must re-encode byte for byte"),
        Packet::Ack { .. } => assert_eq!(&buf[..n], &data[..4], "ACK must re-encode to its 4 bytes"),
        _ => {}
    }

    // One byte short: a precise error and an untouched buffer.
    let mut short = vec![SENTINEL; len - 1];
    match pkt.encode(&mut short) {
        Err(EncodeError::BufferTooSmall { needed }) => {
            assert_eq!(needed, len, "BufferTooSmall.needed != encoded_len()")
        }
        other => panic!(
            "encode into {} bytes gave {other:?}, expected BufferTooSmall",
            len - 1
        ),
    }
    assert!(
        short.iter().all(|&b| b == SENTINEL),
        "a failed encode wrote into the buffer"
    );

    let options = match pkt {
        Packet::Rrq(r) | Packet::Wrq(r) => r.options,
        Packet::Oack { options } => options,
        _ => return,
    };
    check_options(&options);
});

fn check_options(list: &OptionList<'_>) {
    let lenient = Options::parse_request(list);
    let strict = Options::parse_strict(list);

    match (&strict, &lenient.first_error) {
        (Ok(o), None) => assert_eq!(*o, lenient.options, "strict and lenient disagree on a clean list"),
        (Err(e), Some(first)) => assert_eq!(e, first, "strict and lenient report different first problems"),
        (Ok(o), Some(first)) => panic!("strict accepted {o:?} but lenient noted {first:?}"),
        (Err(e), None) => panic!("strict rejected ({e:?}) what lenient found clean: {lenient:?}"),
    }

    let unknown = list
        .iter()
        .filter(|o| OptionName::from_name(o.name).is_none())
        .count();
    assert_eq!(lenient.unknown, unknown, "ParsedOptions.unknown miscounted");

    // The lenient result is always usable: every value is in its range.
    let o = lenient.options;
    assert!(o.blksize.is_none_or(|v| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(&v)));
    assert!(o.timeout.is_none_or(|v| v >= MIN_TIMEOUT));
    assert!(o.windowsize.is_none_or(|v| v >= MIN_WINDOWSIZE));
    assert!(o.rollover.is_none_or(|v| v <= 1));

    // Typed options round-trip through their own encoding.
    let mut enc = [0u8; 128];
    let n = o.encode(&mut enc).expect("Options::encode failed");
    assert_eq!(n, o.encoded_len());
    let back = OptionList::parse(&enc[..n]).expect("encoded options do not parse");
    assert_eq!(
        Options::parse_strict(&back),
        Ok(o),
        "Options::encode does not round-trip"
    );
}
