//! Importer targets: `feeds::import::import` on a file of mutated real data, one target
//! per format, the file written to a temp directory under a name of that format (and
//! now and then with format detection instead of an explicit format).
//!
//! Property: no panic, no hang, bounded memory; whatever is emitted passes
//! `Event::validate` and keeps `ts_recv` non-decreasing per (venue, symbol).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::sample::Index;
use ticktape::event::{Event, UnixNanos};
use ticktape::feeds::import::{ImportFormat, ImportOptions, import};

use super::mutate::{self, bytes, decompressed, fixture, input, lines, real, window};
use super::{FuzzInput, Shown, fuzz};

/// One import: the file's name and bytes, and for LOBSTER maybe an order book file.
#[derive(Clone)]
pub struct File {
    name: String,
    bytes: Vec<u8>,
    book: Option<Vec<u8>>,
    auto: bool,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("name", &self.name)
            .field("auto", &self.auto)
            .field("bytes", &Shown(&self.bytes))
            .field("book", &self.book.as_deref().map(Shown))
            .finish()
    }
}

impl FuzzInput for File {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("name: {}\n", self.name).into_bytes();
        out.extend_from_slice(&self.bytes);
        if let Some(book) = &self.book {
            out.extend_from_slice(b"\n--- order book file ---\n");
            out.extend_from_slice(book);
        }
        out
    }
}

/// Imports `file` from `dir` and checks what came out.
fn check(dir: &Path, format: ImportFormat, file: &File) -> Result<(), String> {
    let path = dir.join(&file.name);
    std::fs::write(&path, &file.bytes).map_err(|e| e.to_string())?;
    let mut opts = ImportOptions::default();
    if let Some(book) = &file.book {
        let book_path = dir.join("book.csv");
        std::fs::write(&book_path, book).map_err(|e| e.to_string())?;
        opts.lobster_book = Some(book_path);
    }
    let format = if file.auto {
        ImportFormat::Auto
    } else {
        format
    };
    let mut events: Vec<Event> = Vec::new();
    let _ = import(
        format,
        std::slice::from_ref(&path),
        &opts,
        &mut events,
        &|_| {},
    );
    let _ = std::fs::remove_file(&path);
    let mut last: HashMap<(&str, &str), UnixNanos> = HashMap::new();
    for e in &events {
        e.validate()
            .map_err(|why| format!("emitted an invalid event ({why}): {e:?}"))?;
        let prev = last.entry((&e.venue, &e.symbol)).or_insert(e.ts_recv);
        if e.ts_recv < *prev {
            return Err(format!("ts_recv went back from {prev} in {e:?}"));
        }
        *prev = e.ts_recv;
    }
    Ok(())
}

fn file(
    name: &'static str,
    strategy: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = File> {
    (strategy, prop::bool::weighted(0.2)).prop_map(move |(bytes, auto)| File {
        name: name.to_string(),
        bytes,
        book: None,
        auto,
    })
}

/// Binance raw capture lines (`<local_ns> <json>`): the fixture and, when present, the
/// real spot, USD-M and COIN-M captures (their first lines, which hold the snapshot),
/// each also with its snapshot cut to 5 levels per side so cases stay fast.
pub fn binance_lines() -> Arc<Vec<Vec<Vec<u8>>>> {
    static LINES: OnceLock<Arc<Vec<Vec<Vec<u8>>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let mut files = vec![fixture("binance/spot_btcusdt_head.gz")];
            for rel in [
                "hftbacktest/examples/spot/btcusdt_20240808.gz",
                "hftbacktest/examples/usdm/btcusdt_20240808.gz",
                "hftbacktest/examples/cm/btcusd_perp_20240808.gz",
            ] {
                files.extend(real(rel));
            }
            let mut corpora = Vec::new();
            for f in files {
                let all = lines(&decompressed(&f, 4 << 20), 400);
                corpora.push(all.iter().map(|l| small_snapshot(l)).collect());
                corpora.push(all);
            }
            Arc::new(corpora)
        })
        .clone()
}

/// A capture line whose REST snapshot keeps only 5 levels per side.
fn small_snapshot(line: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let Some((ts, json)) = text.split_once(' ') else {
        return line.to_vec();
    };
    if !json.starts_with("{\"lastUpdateId\"") {
        return line.to_vec();
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else {
        return line.to_vec();
    };
    for side in ["bids", "asks"] {
        if let Some(levels) = v.get_mut(side).and_then(|l| l.as_array_mut()) {
            levels.truncate(5);
        }
    }
    format!("{ts} {v}").into_bytes()
}

#[test]
fn import_binance_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = file("btcusdt_20240808", input(window(binance_lines(), 60)));
    fuzz("import_binance_raw", files, |f| {
        check(dir.path(), ImportFormat::BinanceRaw, f)
    });
}

#[test]
fn import_tardis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = [
        "binance-futures_book_snapshot_25_BTCUSDT.csv",
        "binance-futures_book_snapshot_5_BTCUSDT.csv",
        "bitmex_trades_XBTUSD.csv",
        "deribit_incremental_book_L2_BTC-PERPETUAL.csv",
        "huobi-dm-swap_quotes_BTC-USD.csv",
    ];
    let seeds: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fixture(&format!("tardis/{n}")))
        .collect();
    let files = file("fuzz.csv", input(mutate::one_of(Arc::new(seeds))));
    fuzz("import_tardis", files, |f| {
        check(dir.path(), ImportFormat::Tardis, f)
    });
}

#[test]
fn import_lobster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = "AAPL_2012-06-21_34200000_57600000";
    let messages = Arc::new(lines(
        &fixture(&format!("lobster/{stem}_message_10.csv")),
        400,
    ));
    let rows = Arc::new(lines(
        &fixture(&format!("lobster/{stem}_orderbook_10.csv")),
        400,
    ));
    // File names are outside input too: the date and the depth come from them.
    let names = prop_oneof![
        6 => Just(format!("{stem}_message_10.csv")),
        1 => Just(format!("{stem}_message_1.csv")),
        1 => Just(format!("{stem}_message_0.csv")),
        2 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(y, m, d)| {
            let pick = |i: Index, of: &[&str]| of[i.index(of.len())].to_string();
            format!(
                "AAPL_{}-{}-{}_34200000_57600000_message_10.csv",
                pick(y, &["2012", "0", "-1", "99999999999", "9223372036854775807", "-9223372036854775808", "2262", "1969"]),
                pick(m, &["06", "0", "2", "13", "99", "4294967295"]),
                pick(d, &["21", "0", "31", "32", "4294967295"]),
            )
        }),
    ];
    let files = (
        names,
        (any::<Index>(), 1usize..=40),
        prop::bool::weighted(0.5),
        mutate_file(),
        prop::collection::vec(any::<(Index, u8)>(), 0..3),
        prop::bool::weighted(0.1),
        bytes(256),
    )
        .prop_map(
            move |(name, (start, n), with_book, edits, book_edits, raw, noise)| {
                let start = start.index(messages.len());
                let end = (start + n).min(messages.len());
                let join = |lines: &[Vec<u8>]| {
                    let mut out = Vec::new();
                    for l in lines {
                        out.extend_from_slice(l);
                        out.push(b'\n');
                    }
                    out
                };
                let bytes = if raw {
                    noise
                } else {
                    join(&messages[start..end])
                };
                let bytes = mutate::apply(bytes, &messages[end % messages.len()], &edits);
                // The book row before the first message is the state the messages start from.
                let mut book = join(&rows[start.saturating_sub(1)..end]);
                set_bytes(&mut book, &book_edits);
                File {
                    name,
                    bytes,
                    book: with_book.then_some(book),
                    auto: false,
                }
            },
        );
    fuzz("import_lobster", files, |f| {
        check(dir.path(), ImportFormat::Lobster, f)
    });
}

/// Sets the bytes at the given positions (a cheap edit for the LOBSTER book rows).
fn set_bytes(bytes: &mut [u8], edits: &[(Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (i, v) in edits {
        let at = i.index(bytes.len());
        bytes[at] = *v;
    }
}

fn mutate_file() -> impl Strategy<Value = Vec<mutate::Edit>> {
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(mutate::edit(), 1..6),
    ]
}

/// DBN files: the fixtures and real files, decompressed and cut to their first 24 KiB
/// (metadata and the first records), fuzzed as plain `.dbn`; now and then raw bytes
/// are written as `.dbn.zst` to reach the zstd path.
#[test]
fn import_dbn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw: Vec<Vec<u8>> = [
        "dbn/test_data.mbo.v3.dbn",
        "dbn/test_data.mbo.v3.dbn.zst",
        "dbn/test_data.mbp-1.v3.dbn.zst",
        "dbn/test_data.mbp-10.v3.dbn.zst",
        "dbn/test_data.trades.v3.dbn.zst",
        "dbn/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
        "dbn/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
        "dbn/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
    ]
    .iter()
    .map(|rel| fixture(rel))
    .collect();
    for rel in [
        "dbn/tests/data/test_data.definition.v3.dbn.zst",
        "dbn/tests/data/test_data.tbbo.v3.dbn.zst",
        "nautilus_trader/tests/test_data/databento/esh4-glbx-mdp3-20231224.mbo.dbn.zst",
    ] {
        raw.extend(real(rel));
    }
    let plain: Vec<Vec<u8>> = raw.iter().map(|f| decompressed(f, 24 << 10)).collect();
    let small: Vec<Vec<u8>> = raw.iter().filter(|f| f.len() < 4096).cloned().collect();
    let files = prop_oneof![
        9 => file("fuzz.dbn", input(mutate::one_of(Arc::new(plain)))),
        1 => file("fuzz.dbn.zst", input(mutate::one_of(Arc::new(small)))),
    ];
    fuzz("import_dbn", files, |f| {
        check(dir.path(), ImportFormat::Dbn, f)
    });
}
