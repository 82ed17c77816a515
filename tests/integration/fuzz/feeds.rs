//! Venue message targets: what a venue's websocket or a capture file sends us.
//!
//! - `live_kraken`, `live_coinbase`, `live_binance`: a window of a real capture
//!   (snapshots cut to a few levels so cases stay fast), mutated, one message per line,
//!   fed to a fresh venue protocol as if read from its socket, then a disconnect. No
//!   panic; the only error may be the venue rejecting the subscription. Binance's REST
//!   snapshot requests go to a closed local port (the snapshot path is fuzzed by
//!   `import_binance_raw`, which drives the same `BookSync`).
//! - `binance_message`: `feeds::binance::parse_message` and the event builders on each
//!   line (`DepthDiff::from_update`, `trade_event`, `Message::market`).
//! - `capture_file`: `feeds::live::capture::parse_capture` on mutated capture files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ticktape::event::{Event, UnixNanos};
use ticktape::feeds::binance::{DepthDiff, Market, Message, parse_message, trade_event};
use ticktape::feeds::live::capture::{CaptureLine, parse_capture};
use ticktape::feeds::live::{self, FeedCounters, FeedError, Protocol, Publisher};

use super::fuzz;
use super::import::binance_lines;
use super::mutate::{input, lines, real, window};

/// Events the live targets emitted that `Event::validate` refuses (the recorder
/// quarantines them): reported, not a failure, since feeds publish and the bus
/// boundary validates.
static INVALID_EMITTED: AtomicU64 = AtomicU64::new(0);

/// The text of every received message of a cryptofeed capture, snapshots cut to
/// `levels` per side (`None`: whole).
fn received(rel: &str, max: usize, levels: Option<usize>) -> Option<Vec<Vec<u8>>> {
    let text = real(rel)?;
    let text = String::from_utf8_lossy(&text[..text.len().min(8 << 20)]).into_owned();
    let parsed = parse_capture(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Some(
        parsed
            .into_iter()
            .filter_map(|l| match l {
                CaptureLine::Received { text, .. } => Some(text),
                _ => None,
            })
            .take(max)
            .map(|t| match levels {
                Some(n) => cut_levels(&t, n).into_bytes(),
                None => t.into_bytes(),
            })
            .collect(),
    )
}

/// A message with every array under `as`, `bs`, `bids`, `asks` cut to `n` entries.
fn cut_levels(text: &str, n: usize) -> String {
    fn walk(v: &mut serde_json::Value, n: usize) -> bool {
        let mut cut = false;
        match v {
            serde_json::Value::Array(items) => {
                for item in items {
                    cut |= walk(item, n);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if let (true, Some(levels)) = (
                        matches!(key.as_str(), "as" | "bs" | "bids" | "asks"),
                        value.as_array_mut(),
                    ) {
                        if levels.len() > n {
                            levels.truncate(n);
                            cut = true;
                        }
                    } else {
                        cut |= walk(value, n);
                    }
                }
            }
            _ => {}
        }
        cut
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            if walk(&mut v, n) {
                v.to_string()
            } else {
                text.to_string()
            }
        }
        Err(_) => text.to_string(),
    }
}

/// Feeds each line of `input` to `protocol`, then disconnects it.
fn replay(mut protocol: Box<dyn Protocol>, input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let mut sink: Vec<Event> = Vec::new();
    let venue = protocol.venue();
    let mut ts: UnixNanos = 1_618_678_132_000_000_000;
    {
        let mut out = Publisher::new(venue, "fuzz", &mut sink, FeedCounters::shared());
        for line in text.split('\n') {
            ts += 1_000_000;
            match protocol.on_message(line, ts, &mut out) {
                Ok(_) | Err(FeedError::Rejected { .. }) => {}
                Err(e) => return Err(format!("feed stopped: {e}")),
            }
        }
        protocol
            .on_disconnect(ts, &mut out)
            .map_err(|e| format!("disconnect failed: {e}"))?;
    }
    let invalid = sink.iter().filter(|e| e.validate().is_err()).count() as u64;
    INVALID_EMITTED.fetch_add(invalid, Ordering::Relaxed);
    Ok(())
}

fn report_invalid(target: &str) {
    let n = INVALID_EMITTED.swap(0, Ordering::Relaxed);
    if n > 0 {
        println!(
            "fuzz {target}: note: the feed emitted {n} events that Event::validate refuses \
             (the recorder quarantines them)"
        );
    }
}

fn corpora(sets: Vec<Option<Vec<Vec<u8>>>>) -> Option<Arc<Vec<Vec<Vec<u8>>>>> {
    let sets: Vec<Vec<Vec<u8>>> = sets.into_iter().flatten().collect();
    (!sets.is_empty()).then(|| Arc::new(sets))
}

const KRAKEN_PAIRS: [&str; 10] = [
    "WAVES/EUR",
    "XMR/USD",
    "KSM/XBT",
    "GRT/ETH",
    "SC/EUR",
    "ETH/CHF",
    "OCEAN/XBT",
    "OMG/USD",
    "XBT/CHF",
    "ADA/XBT",
];

#[test]
fn live_kraken() {
    let rel = "cryptofeed/sample_data/KRAKEN.ws.50.0";
    let Some(seeds) = corpora(vec![received(rel, 3_000, Some(12))]) else {
        return;
    };
    let pairs: Vec<String> = KRAKEN_PAIRS.iter().map(|s| s.to_string()).collect();
    fuzz("live_kraken", input(window(seeds, 40)), |bytes| {
        let feed = live::kraken::Kraken::new(&pairs, 1000, true).map_err(|e| e.to_string())?;
        replay(Box::new(feed), bytes)
    });
    report_invalid("live_kraken");
}

#[test]
fn live_coinbase() {
    let rel = "cryptofeed/sample_data/COINBASE.ws.28.0";
    let Some(seeds) = corpora(vec![received(rel, 4_000, Some(12))]) else {
        return;
    };
    let products: Vec<String> = [
        "SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP",
        "CRV-EUR", "SKL-GBP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    fuzz("live_coinbase", input(window(seeds, 40)), |bytes| {
        let feed = live::coinbase::Coinbase::new(&products, true).map_err(|e| e.to_string())?;
        replay(Box::new(feed), bytes)
    });
    report_invalid("live_coinbase");
}

/// The JSON of Binance capture lines (`<local_ns> <json>` loses its timestamp) plus the
/// cryptofeed Binance capture.
fn binance_messages() -> Arc<Vec<Vec<Vec<u8>>>> {
    static SETS: OnceLock<Arc<Vec<Vec<Vec<u8>>>>> = OnceLock::new();
    SETS.get_or_init(|| {
        let mut sets: Vec<Vec<Vec<u8>>> = binance_lines()
            .iter()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| match l.iter().position(|&b| b == b' ') {
                        Some(at) => l[at + 1..].to_vec(),
                        None => l.clone(),
                    })
                    .collect()
            })
            .collect();
        sets.extend(received(
            "cryptofeed/sample_data/BINANCE.ws.1.0",
            2_000,
            Some(12),
        ));
        Arc::new(sets)
    })
    .clone()
}

#[test]
fn live_binance() {
    let symbols: Vec<String> = [
        "BTCUSDT",
        "ETHUSDT",
        "BTCUSD_PERP",
        "NKNUSDT",
        "BLZETH",
        "LRCBTC",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let inputs = (input(window(binance_messages(), 40)), 0u8..3);
    fuzz("live_binance", inputs, |(bytes, m)| {
        let market = [Market::Spot, Market::UsdM, Market::CoinM][*m as usize];
        // A closed port: snapshot requests fail at once and are retried a second later.
        let feed = live::binance::Binance::new(
            market,
            &symbols,
            true,
            Some("http://127.0.0.1:9".into()),
            Duration::from_millis(200),
        )
        .map_err(|e| e.to_string())?;
        replay(Box::new(feed), bytes)
    });
    report_invalid("live_binance");
}

#[test]
fn binance_message() {
    fuzz(
        "binance_message",
        input(window(binance_messages(), 8)),
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let venue: Arc<str> = Arc::from("binance");
            for line in text.split('\n') {
                let Ok(message) = parse_message(line) else {
                    continue;
                };
                let _ = (message.market(), message.symbol());
                match &message {
                    Message::Depth(update) => {
                        if let Ok(diff) = DepthDiff::from_update(update, 1) {
                            let _ = diff.prev_venue_seq();
                        }
                    }
                    Message::Trade(trade) => {
                        let symbol: Arc<str> = Arc::from(trade.symbol);
                        let _ = trade_event(&venue, &symbol, trade, 1);
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    );
}

#[test]
fn capture_file() {
    let mut sets = Vec::new();
    for rel in [
        "cryptofeed/sample_data/KRAKEN.ws.50.0",
        "cryptofeed/sample_data/COINBASE.ws.28.0",
        "cryptofeed/sample_data/BINANCE.ws.1.0",
    ] {
        if let Some(text) = real(rel) {
            sets.push(lines(&text[..text.len().min(1 << 20)], 2_000));
        }
    }
    let Some(sets) = corpora(sets.into_iter().map(Some).collect()) else {
        return;
    };
    fuzz("capture_file", input(window(sets, 20)), |bytes| {
        let _ = parse_capture(&String::from_utf8_lossy(bytes));
        Ok(())
    });
}
