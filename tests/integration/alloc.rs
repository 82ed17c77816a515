//! Allocations on the in-process engine's hot path, counted per thread by the test
//! binary's global allocator (`fuzz/alloc.rs`): the engine runs on the test's own thread.

use std::path::Path;

use crate::fuzz::alloc::allocations;

#[test]
fn inproc_engine_allocations_per_event_on_the_demo() {
    use ticktape::backtest::Backtest;
    use ticktape::exchange::{ExchangeSettings, LatencySpec};
    use ticktape::strategy::{Params, builtin};
    let dir = crate::util::tempdir();
    let size = "0.01".parse().unwrap();
    let p = Params::default();
    let backtest = Backtest::builder()
        .dataset(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance-spot"))
        .exchange(ExchangeSettings {
            order_latency: LatencySpec::Constant { ns: 1_000_000 },
            ..ExchangeSettings::default()
        })
        .boxed_strategy("mm", builtin("mm", "binance", "BTCUSDT", size, &p).unwrap())
        .boxed_strategy(
            "taker",
            builtin("taker", "binance", "BTCUSDT", size, &p).unwrap(),
        )
        .run_dir(dir.path().join("run"))
        .build()
        .unwrap();
    let before = allocations();
    let summary = backtest.run(&ticktape::shutdown::Stop::new()).unwrap();
    let per_event = (allocations() - before) as f64 / summary.replay.events as f64;
    eprintln!(
        "in-process demo: {} events, {} fills, {per_event:.3} allocations per event (reading, matching, strategies, run files)",
        summary.replay.events, summary.fills
    );
    assert!(summary.fills > 0);
    // Deterministic (same data, same code): a regression in the hot path shows here.
    // Measured 0.66 before the hot path lost its per-event copies, 0.43 after, 0.068
    // once order ids stayed inline, outputs moved by value and fixed reasons stopped
    // being allocated, 0.004 once Parquet pages, footers and run files were read and
    // written into kept buffers (what is left: setting up, and maps and buffers growing
    // to their size on a 135,830-event run; nothing per event).
    assert!(per_event < 0.01, "{per_event:.3} allocations per event");
}

#[test]
fn reader_allocations_per_event_on_the_demo() {
    use ticktape::store::{EventReader, Selection};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance-spot");
    let before = allocations();
    let reader = EventReader::open(&root, Selection::default()).unwrap();
    let mut n = 0u64;
    let mut trades = 0u64;
    for e in reader {
        let e = e.unwrap();
        n += 1;
        if matches!(e.body, ticktape::event::Body::Trade(_)) {
            trades += 1;
        }
    }
    let per_event = (allocations() - before) as f64 / n as f64;
    eprintln!("reader: {n} events ({trades} trades), {per_event:.3} allocations per event");
    // Measured 0.003 (opening the dataset, buffers growing; nothing per page or event,
    // trade ids included: they are kept inline).
    assert!(per_event < 0.01, "{per_event:.3} allocations per event");
}

/// A dataset of `copies` copies of the demo capture, each shifted in time past the last
/// and written as a generation (a file) of its own: what a recorder rotating its files,
/// or several imported captures, leave behind. Returns the shift.
fn demo_copies(root: &Path, copies: i64) -> i64 {
    use ticktape::event::Event;
    use ticktape::store::{EventReader, Selection, WriterOptions, write_generation};
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance-spot");
    let events: Vec<Event> = EventReader::open(&demo, Selection::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lo = events
        .iter()
        .map(|e| e.ts_recv.min(e.ts_event))
        .min()
        .unwrap();
    let hi = events
        .iter()
        .map(|e| e.ts_recv.max(e.ts_event))
        .max()
        .unwrap();
    let shift = hi - lo + 1_000_000_000;
    for i in 0..copies {
        write_generation(root, &WriterOptions::default(), |w| {
            for e in &events {
                let mut e = e.clone();
                e.ts_recv += i * shift;
                e.ts_event += i * shift;
                w.write(&e)?;
            }
            Ok(())
        })
        .unwrap();
    }
    shift
}

#[test]
fn reading_a_dataset_of_many_files_allocates_nothing_per_file_once_warm() {
    use ticktape::event::Event;
    use ticktape::store::{EventReader, Selection};
    let dir = crate::util::tempdir();
    let root = dir.path().join("copies");
    let copies = 6;
    let shift = demo_copies(&root, copies);
    let mut reader = EventReader::open(&root, Selection::default()).unwrap();
    assert_eq!(reader.files().len(), copies as usize, "a file per copy");
    let mut event: Event = reader.next().unwrap().unwrap();
    let start = event.ts_recv;
    // Counted from the third copy on: the first two let the buffers grow to the data's
    // pages and row groups (a later copy's compressed sizes differ by a few bytes).
    let (mut warm, mut n) = (None, 0u64);
    while reader.read_into(&mut event).unwrap() {
        n += 1;
        if warm.is_none() && event.ts_recv >= start + 2 * shift {
            warm = Some((allocations(), n));
        }
    }
    let (at, from) = warm.expect("the third copy was read");
    let spent = allocations() - at;
    eprintln!(
        "{} events of copies 3-{copies} ({} files opened): {spent} allocations",
        n - from,
        copies - 2
    );
    // The parquet crate's footer decoder made about 50 allocations a row group of every
    // file opened; nothing is made per file, row group, page or event now. A buffer may
    // still grow once to a copy whose compressed pages came out a few bytes longer.
    assert!(
        spent <= 4,
        "{spent} allocations reading {} files",
        copies - 2
    );
}

#[test]
fn the_run_files_writer_allocates_nothing_once_its_buffers_have_grown() {
    use std::sync::Arc;
    use ticktape::exchange::outputs::fills_schema;
    use ticktape::store::table::{PageBuffers, TableWriter};
    let dir = crate::util::tempdir();
    let path = dir.path().join("fills.parquet");
    let mut table = TableWriter::create(&path, fills_schema(), vec![]).unwrap();
    let mut buffers = PageBuffers::new().unwrap();
    let rows = 4096usize;
    let names: Vec<String> = (0..rows).map(|i| format!("mm-{i}")).collect();
    let strategy: Arc<str> = "mm".into();
    let mut write = |table: &mut TableWriter, k: i64| {
        let mut g = table.group(&mut buffers, rows);
        g.ints((0..rows as i64).map(|i| k * 10_000 + i)).unwrap();
        for _ in 0..3 {
            g.texts((0..rows).map(|_| &*strategy)).unwrap();
        }
        g.uints((0..rows as u64).map(|i| i * 3)).unwrap();
        g.texts(names.iter().map(String::as_str)).unwrap();
        g.uints((0..rows as u64).map(|i| i + 7)).unwrap();
        g.texts((0..rows).map(|i| if i % 2 == 0 { "buy" } else { "sell" }))
            .unwrap();
        g.floats((0..rows).map(|i| Some(61_000.0 + i as f64 * 0.1)))
            .unwrap();
        g.floats((0..rows).map(|_| Some(0.001))).unwrap();
        g.displayed((0..rows).map(|i| Some(61_000.0 + i as f64 * 0.1)))
            .unwrap();
        g.displayed((0..rows).map(|_| Some("0.001"))).unwrap();
        g.floats((0..rows).map(|i| Some(-(i as f64) * 1e-4)))
            .unwrap();
        g.texts((0..rows).map(|_| "maker")).unwrap();
        g.end().unwrap();
    };
    for k in 0..2 {
        write(&mut table, k);
    }
    let before = allocations();
    for k in 2..20 {
        write(&mut table, k);
    }
    let spent = allocations() - before;
    // The footer's lists are reserved for 256 row groups; pages, compression and the
    // file's writes reuse the buffers the first groups grew.
    assert_eq!(spent, 0, "{spent} allocations writing 18 row groups");
    assert_eq!(table.finish().unwrap(), 20 * rows as u64);
}
