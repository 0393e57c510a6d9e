//! Codec tests: one per packet type, per option rule, and per codec line of the "Bad input"
//! list of PROTOCOL.md.

use tftp_proto::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MAX_WINDOWSIZE};
use tftp_proto::*;

fn rrq(d: &[u8]) -> Request<'_> {
    match Packet::parse(d).unwrap() {
        Packet::Rrq(r) => r,
        other => panic!("not an RRQ: {other:?}"),
    }
}

fn oack(d: &[u8]) -> OptionList<'_> {
    match Packet::parse(d).unwrap() {
        Packet::Oack { options } => options,
        other => panic!("not an OACK: {other:?}"),
    }
}

// ---- one test per packet type -------------------------------------------------------------

#[test]
fn rrq_with_mode_case_insensitive() {
    let r = rrq(b"\x00\x01file.bin\x00NetAscii\x00");
    assert_eq!(r.filename, b"file.bin");
    assert_eq!(r.mode, Mode::Netascii);
    assert!(r.options.is_empty());
    assert_eq!(rrq(b"\x00\x01f\x00OcTeT\x00").mode, Mode::Octet);
    assert_eq!(rrq(b"\x00\x01f\x00MAIL\x00").mode, Mode::Mail);
    assert_eq!(rrq(b"\x00\x01f\x00binary\x00").mode, Mode::Unknown(b"binary"));
}

#[test]
fn wrq_parses_with_options() {
    let p = Packet::parse(b"\x00\x02up.txt\x00octet\x00tsize\x0012345\x00").unwrap();
    let Packet::Wrq(r) = p else { panic!("{p:?}") };
    assert_eq!(r.filename, b"up.txt");
    assert_eq!(Options::parse_strict(&r.options).unwrap().tsize, Some(12345));
    assert_eq!(p.opcode(), Opcode::Wrq);
}

#[test]
fn filename_is_bytes_not_utf8() {
    let r = rrq(b"\x00\x01\xff\xfe/\\x\x00octet\x00");
    assert_eq!(r.filename, b"\xff\xfe/\\x");
}

#[test]
fn data_borrows_payload() {
    let d = b"\x00\x03\xff\xfeabc";
    assert_eq!(
        Packet::parse(d).unwrap(),
        Packet::Data {
            block: 0xfffe,
            payload: b"abc"
        }
    );
    assert_eq!(
        Packet::parse(b"\x00\x03\x00\x01").unwrap(),
        Packet::Data {
            block: 1,
            payload: b""
        }
    );
}

#[test]
fn ack_parses_and_tolerates_trailing_bytes() {
    assert_eq!(
        Packet::parse(b"\x00\x04\x00\x00").unwrap(),
        Packet::Ack { block: 0 }
    );
    // Raspberry Pi 5 style padding.
    assert_eq!(
        Packet::parse(b"\x00\x04\x01\x02\x00\x00\x00\x00").unwrap(),
        Packet::Ack { block: 0x0102 }
    );
}

#[test]
fn error_codes_0_to_8_and_unknown() {
    for code in 0u16..=8 {
        let mut d = vec![0, 5];
        d.extend_from_slice(&code.to_be_bytes());
        d.extend_from_slice(b"msg\0");
        let Packet::Error { code: c, message } = Packet::parse(&d).unwrap() else {
            panic!()
        };
        assert_eq!(c.as_u16(), code);
        assert_ne!(c, ErrorCode::Other(code));
        assert_eq!(message, b"msg");
    }
    let p = Packet::parse(b"\x00\x05\x00\x63x\x00").unwrap();
    assert_eq!(
        p,
        Packet::Error {
            code: ErrorCode::Other(99),
            message: b"x"
        }
    );
}

#[test]
fn oack_parses_options() {
    let o = oack(b"\x00\x06blksize\x001468\x00tsize\x00999\x00");
    let opts = Options::parse_strict(&o).unwrap();
    assert_eq!(opts.blksize, Some(1468));
    assert_eq!(opts.tsize, Some(999));
    assert_eq!(opts.windowsize, None);
}

#[test]
fn unknown_opcode_rejected() {
    assert_eq!(Packet::parse(b"\x00\x07abc"), Err(ParseError::UnknownOpcode(7)));
    assert_eq!(Packet::parse(b"\x00\x00"), Err(ParseError::UnknownOpcode(0)));
    assert_eq!(Packet::parse(b"\xff\xff"), Err(ParseError::UnknownOpcode(0xffff)));
}

// ---- option rules --------------------------------------------------------------------------

fn request_opts(list: &[u8]) -> ParsedOptions {
    Options::parse_request(&OptionList::parse(list).unwrap())
}

#[test]
fn blksize_range_8_to_65464() {
    assert_eq!(request_opts(b"blksize\x008\x00").options.blksize, Some(8));
    assert_eq!(request_opts(b"blksize\x0065464\x00").options.blksize, Some(65464));
    let small = request_opts(b"blksize\x007\x00");
    assert_eq!(small.options.blksize, None, "too small: ignored, default applies");
    assert_eq!(small.first_error.unwrap().kind, OptionErrorKind::OutOfRange);
    let big = request_opts(b"blksize\x0065465\x00");
    assert_eq!(
        big.options.blksize,
        Some(MAX_BLKSIZE),
        "too large: lowered to the maximum"
    );
    assert_eq!(big.first_error.unwrap().option, OptionName::Blksize);
    let huge = request_opts(b"blksize\x00999999999999999999999999\x00");
    assert_eq!(huge.options.blksize, Some(MAX_BLKSIZE));
    let strict = Options::parse_strict(&OptionList::parse(b"blksize\x0065465\x00").unwrap());
    assert_eq!(
        strict,
        Err(OptionError {
            option: OptionName::Blksize,
            kind: OptionErrorKind::OutOfRange
        })
    );
    assert_eq!(DEFAULT_BLKSIZE, 512);
}

#[test]
fn timeout_range_1_to_255() {
    assert_eq!(request_opts(b"timeout\x001\x00").options.timeout, Some(1));
    assert_eq!(request_opts(b"timeout\x00255\x00").options.timeout, Some(255));
    assert_eq!(request_opts(b"timeout\x000\x00").options.timeout, None);
    assert_eq!(request_opts(b"timeout\x00256\x00").options.timeout, None);
    assert!(Options::parse_strict(&OptionList::parse(b"timeout\x000\x00").unwrap()).is_err());
}

#[test]
fn tsize_is_u64() {
    assert_eq!(
        request_opts(b"tsize\x0018446744073709551615\x00").options.tsize,
        Some(u64::MAX)
    );
    let over = request_opts(b"tsize\x0018446744073709551616\x00");
    assert_eq!(over.options.tsize, None);
    assert_eq!(over.first_error.unwrap().kind, OptionErrorKind::OutOfRange);
    assert_eq!(request_opts(b"tsize\x000\x00").options.tsize, Some(0));
}

#[test]
fn windowsize_range_1_to_65535() {
    assert_eq!(request_opts(b"windowsize\x001\x00").options.windowsize, Some(1));
    assert_eq!(
        request_opts(b"windowsize\x0065535\x00").options.windowsize,
        Some(65535)
    );
    assert_eq!(request_opts(b"windowsize\x000\x00").options.windowsize, None);
    assert_eq!(
        request_opts(b"windowsize\x0065536\x00").options.windowsize,
        Some(MAX_WINDOWSIZE)
    );
}

#[test]
fn rollover_0_or_1() {
    assert_eq!(request_opts(b"rollover\x000\x00").options.rollover, Some(0));
    assert_eq!(request_opts(b"rollover\x001\x00").options.rollover, Some(1));
    assert_eq!(request_opts(b"rollover\x002\x00").options.rollover, None);
}

#[test]
fn names_and_values_case_insensitive() {
    let p = request_opts(b"BLKSIZE\x001024\x00TSize\x000\x00WindowSize\x004\x00");
    assert_eq!(p.options.blksize, Some(1024));
    assert_eq!(p.options.tsize, Some(0));
    assert_eq!(p.options.windowsize, Some(4));
    let list = OptionList::parse(b"Vendor\x00ABC\x00").unwrap();
    assert_eq!(list.get(b"vendor"), Some(&b"ABC"[..]));
}

#[test]
fn malformed_values_reported() {
    for bad in [
        &b"blksize\x00\x00"[..],
        b"blksize\x00-1\x00",
        b"blksize\x00 512\x00",
        b"blksize\x000x200\x00",
    ] {
        let p = request_opts(bad);
        assert_eq!(p.options.blksize, None, "{bad:?}");
        assert_eq!(
            p.first_error.unwrap().kind,
            OptionErrorKind::NotANumber,
            "{bad:?}"
        );
        assert!(Options::parse_strict(&OptionList::parse(bad).unwrap()).is_err());
    }
}

#[test]
fn duplicate_option_first_wins_in_request_and_fails_in_oack() {
    let list = b"blksize\x001024\x00BLKSIZE\x002048\x00";
    let p = request_opts(list);
    assert_eq!(p.options.blksize, Some(1024));
    assert_eq!(
        p.first_error.unwrap(),
        OptionError {
            option: OptionName::Blksize,
            kind: OptionErrorKind::Duplicate
        }
    );
    let strict = Options::parse_strict(&OptionList::parse(list).unwrap());
    assert_eq!(strict.unwrap_err().kind, OptionErrorKind::Duplicate);
}

#[test]
fn unknown_options_kept_raw() {
    let list = OptionList::parse(b"multicast\x00\x00blksize\x00512\x00x-vendor\x0042\x00").unwrap();
    let p = Options::parse_request(&list);
    assert_eq!(p.unknown, 2);
    assert!(p.first_error.is_none());
    let raw: Vec<_> = list.iter().collect();
    assert_eq!(
        raw[0],
        RawOption {
            name: b"multicast",
            value: b""
        }
    );
    assert_eq!(
        raw[2].decode().unwrap(),
        TftpOption::Unknown(RawOption {
            name: b"x-vendor",
            value: b"42"
        })
    );
    assert_eq!(raw[1].decode().unwrap(), TftpOption::Blksize(512));
}

#[test]
fn options_encode_in_canonical_order() {
    let o = Options {
        blksize: Some(1468),
        timeout: Some(3),
        tsize: Some(0),
        windowsize: Some(16),
        rollover: Some(1),
    };
    let mut buf = [0u8; 64];
    let n = o.encode(&mut buf).unwrap();
    assert_eq!(n, o.encoded_len());
    assert_eq!(
        &buf[..n],
        b"blksize\x001468\x00timeout\x003\x00tsize\x000\x00windowsize\x0016\x00rollover\x001\x00"
    );
    assert_eq!(
        Options::parse_strict(&OptionList::parse(&buf[..n]).unwrap()).unwrap(),
        o
    );
}

// ---- encoding ------------------------------------------------------------------------------

#[test]
fn encode_every_packet_type() {
    let mut buf = [0u8; 600];
    let cases: [(Packet<'_>, &[u8]); 6] = [
        (
            Packet::Rrq(Request {
                filename: b"a",
                mode: Mode::Octet,
                options: OptionList::EMPTY,
                ignored_option: b"",
            }),
            b"\x00\x01a\x00octet\x00",
        ),
        (
            Packet::Wrq(Request {
                filename: b"b",
                mode: Mode::Netascii,
                options: OptionList::parse(b"tsize\x005\x00").unwrap(),
                ignored_option: b"",
            }),
            b"\x00\x02b\x00netascii\x00tsize\x005\x00",
        ),
        (
            Packet::Data {
                block: 258,
                payload: b"xyz",
            },
            b"\x00\x03\x01\x02xyz",
        ),
        (Packet::Ack { block: 65535 }, b"\x00\x04\xff\xff"),
        (
            Packet::Error {
                code: ErrorCode::DiskFull,
                message: b"full",
            },
            b"\x00\x05\x00\x03full\x00",
        ),
        (
            Packet::Oack {
                options: OptionList::parse(b"blksize\x0064\x00").unwrap(),
            },
            b"\x00\x06blksize\x0064\x00",
        ),
    ];
    for (pkt, wire) in cases {
        let n = pkt.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], wire, "{pkt:?}");
        assert_eq!(n, pkt.encoded_len());
        assert_eq!(Packet::parse(&buf[..n]).unwrap(), pkt);
    }
}

#[test]
fn buffer_too_small_names_size_and_leaves_buffer_untouched() {
    let pkt = Packet::Error {
        code: ErrorCode::NotDefined,
        message: b"hello",
    };
    for size in 0..pkt.encoded_len() {
        let mut buf = vec![0xAAu8; size];
        assert_eq!(
            pkt.encode(&mut buf),
            Err(EncodeError::BufferTooSmall { needed: 10 })
        );
        assert!(buf.iter().all(|&b| b == 0xAA));
    }
    let mut small = [0xAAu8; 3];
    assert_eq!(
        encode_ack(&mut small, 1),
        Err(EncodeError::BufferTooSmall { needed: 4 })
    );
    assert_eq!(small, [0xAA; 3]);
    assert_eq!(
        data_payload_slot(&mut small, 1).unwrap_err(),
        EncodeError::BufferTooSmall { needed: 4 }
    );
    assert_eq!(small, [0xAA; 3]);
    let o = Options {
        blksize: Some(8),
        ..Options::NONE
    };
    let mut tiny = [0xAAu8; 11];
    assert_eq!(
        encode_oack(&mut tiny, &o, OptionList::EMPTY),
        Err(EncodeError::BufferTooSmall { needed: 12 })
    );
    assert_eq!(tiny, [0xAA; 11]);
}

#[test]
fn encode_length_is_exactly_bytes_written() {
    // A buffer larger than needed: the returned length covers only what was written.
    let mut buf = [0xEEu8; 64];
    let n = encode_ack(&mut buf, 3).unwrap();
    assert_eq!(n, 4);
    assert!(buf[4..].iter().all(|&b| b == 0xEE));
    let n = encode_error_lossy(&mut buf, ErrorCode::FileNotFound, b"x").unwrap();
    assert_eq!(n, 6);
    assert!(buf[6..].iter().all(|&b| b == 0xEE));
}

#[test]
fn request_limit_512_enforced_on_encode() {
    let name = vec![b'a'; 500];
    let mut buf = [0u8; 1024];
    let n = encode_request(
        &mut buf,
        RequestKind::Read,
        &name,
        Mode::Octet,
        &Options::NONE,
        OptionList::EMPTY,
    )
    .unwrap();
    assert_eq!(n, 2 + 501 + 6);
    let opts = Options {
        blksize: Some(1468),
        ..Options::NONE
    };
    let err = encode_request(
        &mut buf,
        RequestKind::Read,
        &name,
        Mode::Octet,
        &opts,
        OptionList::EMPTY,
    );
    assert_eq!(err, Err(EncodeError::RequestTooLong { len: 509 + 13 }));
    let long = vec![b'b'; 600];
    let pkt = Packet::Wrq(Request {
        filename: &long,
        mode: Mode::Octet,
        options: OptionList::EMPTY,
        ignored_option: b"",
    });
    assert!(matches!(
        pkt.encode(&mut buf),
        Err(EncodeError::RequestTooLong { .. })
    ));
}

#[test]
fn nul_inside_fields_refused_on_encode() {
    let mut buf = [0u8; 64];
    let pkt = Packet::Rrq(Request {
        filename: b"a\0b",
        mode: Mode::Octet,
        options: OptionList::EMPTY,
        ignored_option: b"",
    });
    assert_eq!(
        pkt.encode(&mut buf),
        Err(EncodeError::InvalidField(Field::Filename))
    );
    let pkt = Packet::Error {
        code: ErrorCode::NotDefined,
        message: b"a\0b",
    };
    assert_eq!(
        pkt.encode(&mut buf),
        Err(EncodeError::InvalidField(Field::ErrorMessage))
    );
    let n = encode_error_lossy(&mut buf, ErrorCode::NotDefined, b"a\0b").unwrap();
    assert_eq!(&buf[..n], b"\x00\x05\x00\x00a\x00");
}

#[test]
fn error_message_truncated_to_fit() {
    let mut buf = [0u8; 8];
    let n = encode_error_lossy(&mut buf, ErrorCode::AccessViolation, b"a very long message").unwrap();
    assert_eq!(&buf[..n], b"\x00\x05\x00\x02a v\x00");
    assert_eq!(
        encode_error_lossy(&mut buf[..4], ErrorCode::NotDefined, b""),
        Err(EncodeError::BufferTooSmall { needed: 5 })
    );
}

// ---- "Bad input seen in the wild" (codec lines) ---------------------------------------------

#[test]
fn bad_error_packets_of_0_to_3_bytes() {
    for d in [&b""[..], b"\x00", b"\x00\x05", b"\x00\x05\x00"] {
        assert_eq!(Packet::parse(d), Err(ParseError::TooShort), "{d:?}");
    }
    // 4 bytes: a complete ERROR with an empty, unterminated message.
    assert_eq!(
        Packet::parse(b"\x00\x05\x00\x01").unwrap(),
        Packet::Error {
            code: ErrorCode::FileNotFound,
            message: b""
        }
    );
}

#[test]
fn bad_error_text_without_nul() {
    assert_eq!(
        Packet::parse(b"\x00\x05\x00\x02denied").unwrap(),
        Packet::Error {
            code: ErrorCode::AccessViolation,
            message: b"denied"
        }
    );
}

#[test]
fn bad_error_text_longer_than_any_buffer() {
    let mut d = vec![0, 5, 0, 0];
    d.extend(std::iter::repeat_n(b'x', 70_000));
    let Packet::Error { message, .. } = Packet::parse(&d).unwrap() else {
        panic!()
    };
    assert_eq!(message.len(), 70_000);
}

#[test]
fn bad_short_data_and_ack() {
    for d in [&b"\x00\x03"[..], b"\x00\x03\x00", b"\x00\x04", b"\x00\x04\x00"] {
        assert_eq!(Packet::parse(d), Err(ParseError::TooShort), "{d:?}");
    }
}

#[test]
fn bad_requests_without_final_nul() {
    assert_eq!(
        Packet::parse(b"\x00\x01file"),
        Err(ParseError::MissingNul(Field::Filename))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01file\x00octet"),
        Err(ParseError::MissingNul(Field::Mode))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01f\x00octet\x00blksize"),
        Err(ParseError::MissingNul(Field::OptionName))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01f\x00octet\x00blksize\x00512"),
        Err(ParseError::MissingNul(Field::OptionValue))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01"),
        Err(ParseError::MissingNul(Field::Filename))
    );
}

/// A junk NUL after the file name (`f NUL NUL octet NUL`, sent by some old PXE ROMs) is
/// skipped: the empty field is followed by a real mode, which is taken; options after it are
/// read as usual. An empty mode followed by anything else is still an unknown, empty mode.
#[test]
fn junk_nul_after_the_file_name_is_skipped() {
    let Ok(Packet::Rrq(r)) = Packet::parse(b"\x00\x01pxelinux.0\x00\x00octet\x00blksize\x001468\x00") else {
        panic!("not parsed")
    };
    assert_eq!((r.filename, r.mode), (&b"pxelinux.0"[..], Mode::Octet));
    assert_eq!(r.options.as_bytes(), b"blksize\x001468\x00");
    let Ok(Packet::Wrq(r)) = Packet::parse(b"\x00\x02f\x00\x00NETASCII\x00") else {
        panic!("not parsed")
    };
    assert_eq!(r.mode, Mode::Netascii);
    let Ok(Packet::Rrq(r)) = Packet::parse(b"\x00\x01f\x00\x00blksize\x00512\x00") else {
        panic!("not parsed")
    };
    assert_eq!(
        r.mode,
        Mode::Unknown(b""),
        "no mode after the empty field: still unknown"
    );
}

/// A request whose last option name has no value (`blksize NUL`, then the end) is served with
/// that option ignored (RFC 2347: ignore what is not understood; tftpd-hpa and py3tftp do the
/// same), and the ignored name is kept for the log. In an OACK the same bytes stay an error.
#[test]
fn request_option_without_value_at_end_is_ignored() {
    let Ok(Packet::Rrq(r)) = Packet::parse(b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x00") else {
        panic!("not parsed")
    };
    assert_eq!(r.filename, b"f");
    assert_eq!(r.options.as_bytes(), b"tsize\x000\x00");
    assert_eq!(r.ignored_option, b"blksize");
    let Ok(Packet::Wrq(r)) = Packet::parse(b"\x00\x02f\x00octet\x00windowsize\x00") else {
        panic!("not parsed")
    };
    assert!(r.options.is_empty());
    assert_eq!(r.ignored_option, b"windowsize");
    // A complete request ignores nothing.
    let Ok(Packet::Rrq(r)) = Packet::parse(b"\x00\x01f\x00octet\x00blksize\x001468\x00") else {
        panic!("not parsed")
    };
    assert_eq!(r.ignored_option, b"");
    // Only a name at the very end is ignored: an OACK stays strict.
    assert_eq!(
        Packet::parse(b"\x00\x06blksize\x00"),
        Err(ParseError::OptionWithoutValue)
    );
}

#[test]
fn bad_requests_longer_than_512() {
    let mut d = b"\x00\x01".to_vec();
    d.extend(std::iter::repeat_n(b'a', 503));
    d.extend_from_slice(b"\x00octet\x00");
    assert_eq!(d.len(), 512);
    assert!(Packet::parse(&d).is_ok());
    d.push(b'x');
    d.push(0);
    assert_eq!(Packet::parse(&d), Err(ParseError::RequestTooLong { len: 514 }));
}

#[test]
fn bad_500_byte_filename_parses_within_limit() {
    let mut d = b"\x00\x02".to_vec();
    d.extend(std::iter::repeat_n(b'n', 500));
    d.extend_from_slice(b"\x00octet\x00");
    let Packet::Wrq(r) = Packet::parse(&d).unwrap() else {
        panic!()
    };
    assert_eq!(r.filename.len(), 500);
}

#[test]
fn bad_tiny_blksize_with_other_options_oack_fits() {
    // A client asking for blksize 8 plus other options: the OACK is built into a buffer sized
    // for the request, not the block, and reports the needed size precisely.
    let list =
        OptionList::parse(b"blksize\x008\x00tsize\x000\x00timeout\x001\x00windowsize\x0016\x00").unwrap();
    let p = Options::parse_request(&list);
    assert_eq!(p.options.blksize, Some(8));
    let o = Options {
        tsize: Some(123_456_789),
        ..p.options
    };
    let mut buf = [0u8; 512];
    let n = encode_oack(&mut buf, &o, OptionList::EMPTY).unwrap();
    assert!(n > 8 + 4, "an OACK is longer than a block of 8");
    assert_eq!(Options::parse_strict(&oack(&buf[..n])).unwrap(), o);
}

#[test]
fn bad_oack_omitting_blksize_leaves_it_unset() {
    let o = Options::parse_strict(&oack(b"\x00\x06tsize\x00100\x00")).unwrap();
    assert_eq!(o.blksize, None, "the engine applies the default 512");
}

#[test]
fn bad_oack_lookalike_names_are_unknown() {
    for name in [
        &b"xblksizex"[..],
        b"blksizex",
        b"xblksize",
        b"blk size",
        b"tsize2",
        b"window",
    ] {
        let mut d = b"\x00\x06".to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(b"\x001024\x00");
        let list = oack(&d);
        assert_eq!(OptionName::from_name(name), None);
        assert_eq!(Options::parse_strict(&list).unwrap(), Options::NONE);
        assert!(matches!(
            list.iter().next().unwrap().decode().unwrap(),
            TftpOption::Unknown(_)
        ));
    }
}

#[test]
fn bad_oack_missing_nuls() {
    assert_eq!(
        Packet::parse(b"\x00\x06blksize"),
        Err(ParseError::MissingNul(Field::OptionName))
    );
    assert_eq!(
        Packet::parse(b"\x00\x06blksize\x00512"),
        Err(ParseError::MissingNul(Field::OptionValue))
    );
    assert_eq!(
        Packet::parse(b"\x00\x06\x00512\x00"),
        Err(ParseError::EmptyOptionName)
    );
}

#[test]
fn bad_oack_reordered_options_accepted() {
    let o = Options::parse_strict(&oack(
        b"\x00\x06windowsize\x008\x00TSIZE\x0010\x00blksize\x00100\x00",
    ))
    .unwrap();
    assert_eq!((o.blksize, o.tsize, o.windowsize), (Some(100), Some(10), Some(8)));
}

#[test]
fn bad_data_longer_than_blksize_is_visible_to_engine() {
    // The codec does not know the negotiated size: it hands the full payload over, and the
    // engine compares its length with blksize.
    let d = [&[0u8, 3, 0, 1][..], &[7u8; 600][..]].concat();
    let Packet::Data { payload, .. } = Packet::parse(&d).unwrap() else {
        panic!()
    };
    assert_eq!(payload.len(), 600);
}

#[test]
fn trailing_nul_padding_after_request_is_tolerated() {
    let r = rrq(b"\x00\x01f\x00octet\x00blksize\x00512\x00\x00\x00\x00");
    assert_eq!(r.options.as_bytes(), b"blksize\x00512\x00");
    assert_eq!(rrq(b"\x00\x01f\x00octet\x00\x00").options, OptionList::EMPTY);
}

#[test]
fn nul_inside_names_cannot_smuggle() {
    // "a\0../../etc" parses as filename "a" and mode "../../etc": never a path with a NUL in it.
    let r = rrq(b"\x00\x01a\x00../../etc\x00");
    assert_eq!(r.filename, b"a");
    assert_eq!(r.mode, Mode::Unknown(b"../../etc"));
}

#[test]
fn block_numbers_cover_full_range() {
    for block in [0u16, 1, 255, 256, 65534, 65535] {
        let mut buf = [0u8; 4];
        encode_ack(&mut buf, block).unwrap();
        assert_eq!(Packet::parse(&buf).unwrap(), Packet::Ack { block });
    }
}
