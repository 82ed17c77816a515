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
