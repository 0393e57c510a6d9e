//! Codec micro-benchmarks: parse a DATA packet, parse an RRQ with four options, encode an ACK,
//! build a DATA header in place. Run with `cargo bench --bench codec`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tftp_proto::{data_payload_slot, encode_ack, OptionList, Options, Packet};

fn codec(c: &mut Criterion) {
    let mut data = vec![0u8; 4 + 1468];
    data[..4].copy_from_slice(&[0, 3, 0x12, 0x34]);
    let rrq = b"\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00tsize\x000\x00timeout\x005\x00windowsize\x0016\x00";

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_data_1468", |b| {
        b.iter(|| Packet::parse(black_box(&data)).unwrap())
    });
    g.bench_function("parse_rrq_4_options", |b| {
        b.iter(|| {
            let Packet::Rrq(req) = Packet::parse(black_box(rrq)).unwrap() else {
                unreachable!()
            };
            Options::parse_request(&req.options)
        })
    });
    g.bench_function("parse_rrq_raw_only", |b| {
        b.iter(|| Packet::parse(black_box(rrq)).unwrap())
    });
    let mut buf = [0u8; 4];
    g.bench_function("encode_ack", |b| {
        b.iter(|| encode_ack(black_box(&mut buf), black_box(7)).unwrap())
    });
    let mut out = vec![0u8; 4 + 1468];
    g.bench_function("data_header_in_place", |b| {
        b.iter(|| {
            data_payload_slot(black_box(&mut out), black_box(9))
                .unwrap()
                .len()
        })
    });
    let _ = OptionList::EMPTY;
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
