//! Micro-benchmarks of the per-event hot path: JSON and binary encode/decode of the wire format,
//! the recorder's dedup key, exact decimal parsing, and Arrow column building.
//! Run with `cargo bench --bench wire`; `scripts/bench.sh` runs the end-to-end figures.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};

use ticktape::event::{Body, BookDelta, Event, Fixed, Flags, Interner, Side};
use ticktape::record::dedup;
use ticktape::store::schema::EventColumns;
use ticktape::wire;

fn sample() -> Event {
    let mut e = wire::event(
        "binance",
        "BTCUSDT",
        1_723_161_253_940_000_000,
        17,
        Body::Book(BookDelta {
            side: Side::Ask,
            price: "61671.55000000".parse().unwrap(),
            size: "0.00100000".parse().unwrap(),
            flags: Flags::LAST,
        }),
    );
    e.venue_seq = Some(49_826_911_123);
    e.prev_venue_seq = Some(49_826_911_080);
    e
}

fn bench(c: &mut Criterion) {
    let ev = sample();
    let payload = wire::encode_to_vec(&ev);
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("wire_encode", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            wire::encode(black_box(&ev), &mut out);
        })
    });
    g.bench_function("wire_decode", |b| {
        let mut names = Interner::default();
        b.iter(|| wire::decode(black_box(&payload), &mut names).unwrap())
    });
    let binary = {
        let mut out = Vec::new();
        wire::encode_as(wire::Encoding::Binary, &ev, &mut out);
        out
    };
    g.bench_function("wire_encode_binary", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            wire::encode_as(wire::Encoding::Binary, black_box(&ev), &mut out);
        })
    });
    g.bench_function("wire_decode_binary", |b| {
        let mut names = Interner::default();
        b.iter(|| wire::decode(black_box(&binary), &mut names).unwrap())
    });
    g.bench_function("dedup_key", |b| b.iter(|| dedup::key(black_box(&ev))));
    g.bench_function("fixed_parse", |b| {
        b.iter(|| black_box("61671.55000000").parse::<Fixed>().unwrap())
    });
    g.bench_function("arrow_columns_push_and_batch_4096", |b| {
        b.iter(|| {
            let mut cols = EventColumns::default();
            for _ in 0..4096 {
                cols.push(&ev);
            }
            cols.take_sorted_batch().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
