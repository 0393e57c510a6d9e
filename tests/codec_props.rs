//! Property tests of the codec: encode-then-parse returns the same packet, parse never panics
//! on arbitrary bytes, and parse-encode-parse is stable.

use proptest::prelude::*;
use tftp_proto::*;

/// A string field without NUL bytes.
fn field(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..max)
}

fn option_list_bytes() -> impl Strategy<Value = Vec<u8>> {
    let known = prop_oneof![
        Just(b"blksize".to_vec()),
        Just(b"TSIZE".to_vec()),
        Just(b"timeout".to_vec()),
        Just(b"windowsize".to_vec()),
        Just(b"rollover".to_vec()),
    ];
    let name = prop_oneof![known, prop::collection::vec(1u8..=255, 1..12)];
    let value = prop_oneof![any::<u64>().prop_map(|v| v.to_string().into_bytes()), field(8)];
    prop::collection::vec((name, value), 0..6).prop_map(|pairs| {
        let mut out = Vec::new();
        for (n, v) in pairs {
            out.extend_from_slice(&n);
            out.push(0);
            out.extend_from_slice(&v);
            out.push(0);
        }
        out
    })
}

#[derive(Debug, Clone)]
enum Owned {
    Req(bool, Vec<u8>, Vec<u8>, Vec<u8>),
    Data(u16, Vec<u8>),
    Ack(u16),
    Error(u16, Vec<u8>),
    Oack(Vec<u8>),
}

impl Owned {
    fn packet(&self) -> Packet<'_> {
        match self {
            Owned::Req(read, f, m, o) => {
                let r = Request {
                    filename: f,
                    mode: Mode::from_bytes(m),
                    options: OptionList::parse(o).unwrap(),
                    ignored_option: b"",
                };
                if *read {
                    Packet::Rrq(r)
                } else {
                    Packet::Wrq(r)
                }
            }
            Owned::Data(b, p) => Packet::Data {
                block: *b,
                payload: p,
            },
            Owned::Ack(b) => Packet::Ack { block: *b },
            Owned::Error(c, m) => Packet::Error {
                code: ErrorCode::from_u16(*c),
                message: m,
            },
            Owned::Oack(o) => Packet::Oack {
                options: OptionList::parse(o).unwrap(),
            },
        }
    }
}

fn packet() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<bool>(), field(300), field(10), option_list_bytes())
            .prop_map(|(r, f, m, o)| Owned::Req(r, f, m, o)),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..1500)).prop_map(|(b, p)| Owned::Data(b, p)),
        any::<u16>().prop_map(Owned::Ack),
        (any::<u16>(), field(200)).prop_map(|(c, m)| Owned::Error(c, m)),
        option_list_bytes().prop_map(Owned::Oack),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_parse_round_trips(owned in packet()) {
        let pkt = owned.packet();
        let mut buf = vec![0u8; 70_000];
        match pkt.encode(&mut buf) {
            Ok(n) => {
                prop_assert_eq!(n, pkt.encoded_len());
                prop_assert_eq!(Packet::parse(&buf[..n]).unwrap(), pkt);
            }
            Err(EncodeError::RequestTooLong { len }) => {
                prop_assert!(matches!(pkt, Packet::Rrq(_) | Packet::Wrq(_)));
                prop_assert_eq!(len, pkt.encoded_len());
                prop_assert!(len > MAX_REQUEST_LEN);
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn parse_never_panics_and_reencodes_stably(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(p1) = Packet::parse(&bytes) {
            let mut buf = vec![0u8; bytes.len() + 16];
            let n = p1.encode(&mut buf).expect("a parsed packet always re-encodes");
            prop_assert!(n <= bytes.len() + 1, "never longer than the input (+1 for a missing ERROR NUL)");
            let p2 = Packet::parse(&buf[..n]).unwrap();
            prop_assert_eq!(p1, p2);
            let mut buf2 = vec![0u8; n];
            let n2 = p2.encode(&mut buf2).unwrap();
            prop_assert_eq!(&buf[..n], &buf2[..n2]);
        }
    }

    #[test]
    fn structured_garbage_requests_never_panic(
        op in 0u16..8,
        f in prop::collection::vec(any::<u8>(), 0..40),
        opts in prop::collection::vec(any::<u8>(), 0..60),
    ) {
        let mut d = op.to_be_bytes().to_vec();
        d.extend_from_slice(&f);
        d.extend_from_slice(&opts);
        if let Ok(Packet::Rrq(r) | Packet::Wrq(r)) = Packet::parse(&d) {
            let _ = Options::parse_request(&r.options);
            let _ = Options::parse_strict(&r.options);
        }
    }

    #[test]
    fn small_buffers_fail_cleanly(owned in packet(), size in 0usize..64) {
        let pkt = owned.packet();
        let mut buf = vec![0x5Au8; size];
        match pkt.encode(&mut buf) {
            Ok(n) => prop_assert!(n <= size),
            Err(EncodeError::BufferTooSmall { needed }) => {
                prop_assert_eq!(needed, pkt.encoded_len());
                prop_assert!(buf.iter().all(|&b| b == 0x5A));
            }
            Err(_) => {}
        }
    }

    #[test]
    fn options_encode_parse_round_trip(o in any_options()) {
        let mut buf = [0u8; 128];
        let n = o.encode(&mut buf).unwrap();
        prop_assert_eq!(n, o.encoded_len());
        prop_assert_eq!(Options::parse_strict(&OptionList::parse(&buf[..n]).unwrap()).unwrap(), o);
        prop_assert_eq!(Options::parse_request(&OptionList::parse(&buf[..n]).unwrap()).options, o);
    }
}

fn any_options() -> impl Strategy<Value = Options> {
    (
        prop::option::of(8u16..=65464),
        prop::option::of(1u8..=255),
        prop::option::of(any::<u64>()),
        prop::option::of(1u16..=65535),
        prop::option::of(0u8..=1),
    )
        .prop_map(|(blksize, timeout, tsize, windowsize, rollover)| Options {
            blksize,
            timeout,
            tsize,
            windowsize,
            rollover,
        })
}
