//! Dataset target: `store::EventReader` on a dataset whose Parquet file is mutated.
//!
//! A dataset is files on disk that may be copied, shared or damaged, and the reader
//! decodes their footer (Thrift), pages and columns. Seeds are the part files
//! `DatasetWriter` makes of generated valid events (several row groups, two
//! partitions); each case writes one of them, mutated, as the only file of a dataset
//! (without `_ticktape/checksums.jsonl`, so the mutation reaches the decoder) and reads
//! it whole and through a time window. Property: no panic; every event delivered passes
//! `Event::validate`.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use ticktape::event::Event;
use ticktape::store::layout;
use ticktape::store::{DatasetWriter, EventReader, Selection, WriterOptions};

use super::mutate::{bytes, mutated, one_of};
use super::wire::event;
use super::{FuzzInput, Shown, fuzz};

/// A part file's path inside the dataset and its bytes.
#[derive(Clone)]
pub struct PartFile {
    rel: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PartFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartFile")
            .field("rel", &self.rel)
            .field("bytes", &Shown(&self.bytes))
            .finish()
    }
}

impl FuzzInput for PartFile {
    fn bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// The part files of a dataset of 80 generated valid book and trade events in two
/// partitions, 20 rows per row group.
fn seed_files(dir: &Path) -> Vec<PartFile> {
    let mut runner = TestRunner::deterministic();
    let strategy = event().prop_filter("valid book or trade events", |e| {
        e.0.validate().is_ok() && e.0.kind().is_stored()
    });
    let options = WriterOptions {
        row_group_rows: 20,
        ..WriterOptions::default()
    };
    let mut writer = DatasetWriter::new(dir, 0, options).expect("dataset writer");
    let mut events: Vec<Event> = (0..80)
        .map(|i| {
            let mut e = strategy.new_tree(&mut runner).expect("event").current().0;
            e.venue = Arc::from("fuzz");
            e.symbol = Arc::from(if i % 3 == 0 { "ETH/USD" } else { "BTCUSDT" });
            e.ts_recv = 1_723_161_253_940_000_000 + i * 1_000_000;
            e
        })
        .collect();
    events.sort_by_key(|e| e.ts_recv);
    for e in &events {
        writer.write(e).expect("write");
    }
    writer.close().expect("close");
    let files = layout::partition_files(dir).expect("part files");
    assert!(!files.is_empty(), "the writer made no part file");
    files
        .into_iter()
        .map(|path| PartFile {
            rel: path
                .strip_prefix(dir)
                .expect("inside the dataset")
                .to_string_lossy()
                .into_owned(),
            bytes: std::fs::read(&path).expect("read part file"),
        })
        .collect()
}

#[test]
fn parquet_reader() {
    let seed_dir = tempfile::tempdir().expect("tempdir");
    let seeds = seed_files(seed_dir.path());
    let names: Vec<String> = seeds.iter().map(|s| s.rel.clone()).collect();
    let contents = Arc::new(seeds.into_iter().map(|s| s.bytes).collect::<Vec<_>>());
    let input = (
        prop_oneof![19 => mutated(one_of(contents)), 1 => bytes(512)],
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(bytes, which)| PartFile {
            rel: names[which.index(names.len())].clone(),
            bytes,
        });
    let dir = tempfile::tempdir().expect("tempdir");
    fuzz("parquet_reader", input, |part| {
        let root = dir.path().join("ds");
        let _ = std::fs::remove_dir_all(&root);
        let path = root.join(&part.rel);
        std::fs::create_dir_all(path.parent().expect("a partition directory"))
            .map_err(|e| e.to_string())?;
        std::fs::write(&path, &part.bytes).map_err(|e| e.to_string())?;
        let window = Selection {
            start: Some(1_723_161_254_000_000_000),
            end: Some(1_723_161_254_100_000_000),
            ..Selection::default()
        };
        for selection in [Selection::default(), window] {
            let Ok(reader) = EventReader::open(&root, selection) else {
                continue;
            };
            for item in reader {
                match item {
                    Ok(e) => e.validate().map_err(|why| {
                        format!("the reader delivered an invalid event ({why}): {e:?}")
                    })?,
                    Err(_) => break,
                }
            }
        }
        Ok(())
    });
}
