//! Micro-benchmarks of the per-event hot path: JSON and binary encode/decode of the wire format,
//! the recorder's dedup key and window, exact decimal parsing, Arrow column building, and
//! the whole recorder minus its socket (`record_ingest`).
//! Run with `cargo bench --bench wire`; `scripts/bench.sh` runs the end-to-end figures.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};

use ticktape::event::{Body, BookDelta, Event, Fixed, Flags, Interner, Side, Trade};
use ticktape::record::{Ingest, RecordConfig, dedup};
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
    // The recorder's default window (1 Mi events), full, so every new key also evicts one:
    // the cost is memory latency, which a small window would hide.
    g.bench_function("dedup_window_1m_insert", |b| {
        let mut window = dedup::DedupWindow::new(1 << 20);
        let mut next = 0u64;
        let mut fresh = || {
            next += 1;
            xxhash_rust::xxh3::xxh3_64(&next.to_le_bytes())
        };
        for _ in 0..(1 << 20) {
            window.first_time(fresh());
        }
        b.iter(|| window.first_time(black_box(fresh())))
    });
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

/// `n` binary `[topic, payload]` messages like a venue's: three symbols, deltas around a
/// walking mid in venue messages of one to four levels, one message in twenty a trade.
/// Returned as one buffer and the message boundaries, so building them is not timed.
fn venue_messages(n: usize) -> (Vec<u8>, Vec<[std::ops::Range<usize>; 2]>) {
    let symbols = ["BTC-USD", "ETH-USD", "SOL-USD"];
    let (mut buf, mut spans) = (Vec::with_capacity(n * 100), Vec::with_capacity(n));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Book deltas carry the symbol's book sequence, trades its trade-id sequence.
    let (mut book_seq, mut trade_seq) = ([0u64; 3], [0u64; 3]);
    let (mut mid, mut ts) = (6_000_000i64, 1_700_000_000_000_000_000i64);
    let mut payload = Vec::with_capacity(128);
    let mut pub_seqs = std::collections::HashMap::<String, u64>::new();
    while spans.len() < n {
        let s = (next() % 3) as usize;
        let levels = 1 + next() % 4;
        mid += (next() % 3) as i64 - 1;
        ts += 10_000;
        let trade = next() % 20 == 0;
        if trade {
            trade_seq[s] += 1;
        }
        if !trade || levels > 1 {
            book_seq[s] += 1;
        }
        for level in 0..levels {
            let r = next();
            let seq = if trade && level == 0 {
                trade_seq[s]
            } else {
                book_seq[s]
            };
            let body = if trade && level == 0 {
                Body::Trade(Trade {
                    price: Fixed {
                        mantissa: mid,
                        scale: 2,
                    },
                    size: Fixed {
                        mantissa: (r % 5000) as i64 + 1,
                        scale: 4,
                    },
                    aggressor: if r & 1 == 0 { Side::Bid } else { Side::Ask },
                    trade_id: seq.to_string().into(),
                })
            } else {
                Body::Book(BookDelta {
                    side: if r & 1 == 0 { Side::Bid } else { Side::Ask },
                    price: Fixed {
                        mantissa: mid + (r % 40) as i64 - 20,
                        scale: 2,
                    },
                    size: Fixed {
                        mantissa: (r % 100_000) as i64,
                        scale: 4,
                    },
                    flags: if level + 1 == levels {
                        Flags::LAST
                    } else {
                        Flags::default()
                    },
                })
            };
            let mut e = wire::event("sim", symbols[s], ts, 0, body);
            e.ts_event = ts - 150_000;
            e.venue_seq = Some(seq);
            e.prev_venue_seq = Some(seq - 1);
            let topic = wire::topic(&e);
            let pub_seq = pub_seqs.entry(topic.clone()).or_default();
            *pub_seq += 1;
            e.pub_seq = *pub_seq;
            let topic_at = buf.len();
            buf.extend_from_slice(topic.as_bytes());
            let payload_at = buf.len();
            payload.clear();
            wire::encode_as(wire::Encoding::Binary, &e, &mut payload);
            buf.extend_from_slice(&payload);
            spans.push([topic_at..payload_at, payload_at..buf.len()]);
        }
    }
    spans.truncate(n);
    (buf, spans)
}

/// The recorder without its socket: messages go through decode, dedup, gap checks, the
/// journal and the Parquet writer thread, until the dataset is closed. Per event.
fn record_ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("recorder");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("record_ingest_binary", |b| {
        b.iter_custom(|iters| {
            let (buf, spans) = venue_messages(iters as usize);
            let dir = tempfile::tempdir().unwrap();
            let config = RecordConfig {
                dataset: dir.path().join("ds"),
                connect: vec!["bench".into()],
                fsync: false,
                ..RecordConfig::default()
            };
            let mut ingest = Ingest::open(&config).unwrap();
            let started = Instant::now();
            let mut now = started;
            for (i, [topic, payload]) in spans.iter().enumerate() {
                let frames = [&buf[topic.clone()], &buf[payload.clone()]];
                ingest.on_message(0, &frames, now).unwrap();
                if i % 64 == 63 {
                    now = Instant::now();
                    ingest.on_tick(now).unwrap();
                }
            }
            let stats = ingest.close().unwrap();
            assert_eq!(stats.writer.rows, iters);
            started.elapsed()
        })
    });
    // The writer thread's share: the same events, decoded, through DatasetWriter
    // (partition routing, Arrow columns, sorting, Parquet encoding, zstd) until closed.
    g.bench_function("dataset_writer", |b| {
        b.iter_custom(|iters| {
            let (buf, spans) = venue_messages(iters as usize);
            let mut names = Interner::default();
            let events: Vec<Event> = spans
                .iter()
                .map(|[_, payload]| wire::decode(&buf[payload.clone()], &mut names).unwrap())
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let mut writer =
                ticktape::store::DatasetWriter::new(dir.path(), 0, Default::default()).unwrap();
            for e in &events {
                writer.write(e).unwrap();
            }
            let stats = writer.close().unwrap();
            assert_eq!(stats.rows, iters);
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, record_ingest);
criterion_main!(benches);
