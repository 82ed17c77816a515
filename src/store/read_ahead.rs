//! Decoding a dataset on a thread of its own, ahead of the loop that uses the events.
//!
//! Reading Parquet (page decompression, column decoding, the time merge, building each
//! [`Event`]) is about half of an in-process backtest's work per event. [`ReadAhead`] runs
//! an [`EventReader`] on a second thread that fills batches of events while the engine
//! works through the previous ones, so on two cores the two halves overlap.
//!
//! Owns the reader thread and two bounded queues: full batches towards the consumer, and
//! the same batches back once used. Every event of every batch is overwritten in place by
//! [`EventReader::read_into`], so in steady state neither side allocates. Order is the
//! reader's (one producer, FIFO). The first error ends the stream after everything read
//! before it. Dropping a [`ReadAhead`] before the end stops the thread (its next queue
//! operation fails) and joins it. Never interprets the events.

use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::EventReader;
use super::rows::SpareIds;
use crate::event::Event;

/// Events per batch: large enough that the queues cost little per event, small enough
/// that a batch (about 150 KiB) stays in the caches between the two cores.
const BATCH: usize = 1024;

/// Batches in circulation: the consumer's, the reader's, and fourteen waiting (about
/// 2.4 MiB of events). The two threads take about as long per event as each other on the
/// Binance USD-M capture, each with its own hiccups (a page of zstd, a burst of orders):
/// with two batches waiting, either often stalled the other; with fourteen the reader
/// runs up to 14,000 events ahead and both stall far less. Measured on the backtest bench
/// in quiet windows (interleaved, 5 rounds each): 40–51 ms a round against 50–65 ms with
/// four batches, at 2.5 MiB more peak RSS.
const BATCHES: usize = 16;

/// A batch of events; `filled` leading ones hold data, the rest are allocations kept for
/// the next fill.
struct Batch {
    events: Vec<Event>,
    filled: usize,
}

/// The events of an [`EventReader`], decoded on their own thread.
pub struct ReadAhead {
    full: Option<Receiver<Result<Batch>>>,
    empty: Option<Sender<Batch>>,
    current: Batch,
    next: usize,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `reader` on a new thread.
    pub fn spawn(mut reader: EventReader) -> Result<ReadAhead> {
        let (full_tx, full) = bounded::<Result<Batch>>(BATCHES);
        let (empty, empty_rx) = bounded::<Batch>(BATCHES);
        let thread = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                // The batches are made here, as they are first needed: the consumer does
                // not wait for 2.5 MiB of them to be allocated and touched (1.6–2 ms at
                // the start of every run on this VM, 3–4 % of a backtest of the Binance
                // USD-M capture), and the first is filled at once.
                let mut made = 0;
                // The heap strings of long trade ids (over 24 bytes) of every batch's
                // events that hold no trade, one pool for them all: strings are
                // allocated until the batches in circulation once held that many
                // long-id trades at the same time, then never.
                let mut spares = SpareIds::default();
                // A closed queue means the consumer is gone: stop quietly.
                while let Some(mut batch) = next_empty(&empty_rx, &mut made) {
                    batch.filled = 0;
                    let mut end = false;
                    while batch.filled < BATCH {
                        let i = batch.filled;
                        match reader.read_many_into(&mut batch.events[i..], &mut spares) {
                            Ok(0) => {
                                end = true;
                                break;
                            }
                            Ok(k) => batch.filled += k,
                            Err(e) => {
                                if batch.filled > 0 {
                                    let _ = full_tx.send(Ok(batch));
                                }
                                let _ = full_tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    if batch.filled > 0 && full_tx.send(Ok(batch)).is_err() {
                        return;
                    }
                    if end {
                        return;
                    }
                }
            })
            .context("cannot start the dataset's read-ahead thread")?;
        Ok(ReadAhead {
            full: Some(full),
            empty: Some(empty),
            current: Batch::unallocated(),
            next: 0,
            thread: Some(thread),
        })
    }

    /// The next event, or None at the end of the data.
    pub fn next_event(&mut self) -> Result<Option<&Event>> {
        if self.next == self.current.filled && !self.take_batch()? {
            return Ok(None);
        }
        let event = &self.current.events[self.next];
        self.next += 1;
        Ok(Some(event))
    }

    /// The events of the current batch not yet taken (a new batch when those ran out),
    /// all taken at once; None at the end of the data. The same events in the same
    /// order as [`ReadAhead::next_event`], for a loop that walks a slice.
    pub fn next_events(&mut self) -> Result<Option<&[Event]>> {
        if self.next == self.current.filled && !self.take_batch()? {
            return Ok(None);
        }
        let events = &self.current.events[self.next..self.current.filled];
        self.next = self.current.filled;
        Ok(Some(events))
    }

    /// Makes the reader's next full batch the current one and hands the used one back;
    /// false at the end of the data.
    fn take_batch(&mut self) -> Result<bool> {
        let Some(full) = &self.full else {
            return Ok(false);
        };
        match full.recv() {
            Ok(Ok(batch)) => {
                let used = std::mem::replace(&mut self.current, batch);
                if let Some(empty) = &self.empty
                    && used.events.len() == BATCH
                {
                    // The reader may have ended: then nobody needs the batch back.
                    let _ = empty.try_send(used);
                }
                self.next = 0;
                Ok(true)
            }
            Ok(Err(e)) => {
                self.finish();
                Err(e)
            }
            Err(_) => {
                // The reader ended after its last batch.
                self.finish();
                Ok(false)
            }
        }
    }

    /// Closes both queues and waits for the reader thread.
    fn finish(&mut self) {
        self.full = None;
        self.empty = None;
        self.current.filled = 0;
        self.next = 0;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The events of a reader for a loop that takes one at a time, read ahead on a second
/// thread or on the loop's own: the same events either way.
pub enum EventSource {
    /// Decoded on a second thread.
    Ahead(ReadAhead),
    /// Decoded on the caller's thread, each read overwriting the one event.
    Inline(Box<(EventReader, Event)>),
    /// Decoded on the caller's thread a batch at a time ([`EventSource::batched`]).
    InlineBatch(Box<InlineBatch>),
}

/// A reader and the batch it last filled on the caller's thread, with the next event to
/// hand out.
pub struct InlineBatch {
    reader: EventReader,
    batch: Batch,
    /// The trade id strings of the batch's events that hold no trade.
    spares: SpareIds,
    next: usize,
}

impl InlineBatch {
    /// Refills the batch once every event of it was handed out; false at the end.
    fn refill(&mut self) -> Result<bool> {
        if self.next < self.batch.filled {
            return Ok(true);
        }
        self.batch.filled = 0;
        self.next = 0;
        self.batch.filled =
            (self.reader).read_many_into(&mut self.batch.events, &mut self.spares)?;
        Ok(self.batch.filled > 0)
    }
}

impl EventSource {
    /// `reader`'s events, decoded on a second thread when `read_ahead`.
    pub fn new(reader: EventReader, read_ahead: bool) -> Result<EventSource> {
        Ok(if read_ahead {
            EventSource::Ahead(ReadAhead::spawn(reader)?)
        } else {
            EventSource::Inline(Box::new((reader, Event::blank())))
        })
    }

    /// [`EventSource::new`], but without read-ahead the caller's thread decodes 1,024
    /// events at a time (a read-ahead batch) through [`EventReader::read_many_into`], the read-ahead
    /// thread's path (rows checked and decoded in one loop per batch), instead of one
    /// [`EventReader::read_into`] per event: the same events in the same order, an
    /// error after the events before it. The backtest bench's one-thread form takes
    /// 526.5 M instructions a round this way, 668.3 M one event at a time (callgrind).
    /// For loops that take events as fast as they can (a backtest), not for a paced
    /// replay, where decoding a batch at once would delay the event that starts it.
    pub fn batched(reader: EventReader, read_ahead: bool) -> Result<EventSource> {
        Ok(if read_ahead {
            EventSource::Ahead(ReadAhead::spawn(reader)?)
        } else {
            EventSource::InlineBatch(Box::new(InlineBatch {
                reader,
                batch: Batch::new(),
                spares: SpareIds::default(),
                next: 0,
            }))
        })
    }

    /// The next events, at least one, or None at the end of the data: a batch read
    /// ahead or on the caller's thread, or one event read on the caller's thread.
    pub fn next_events(&mut self) -> Result<Option<&[Event]>> {
        match self {
            EventSource::Ahead(ahead) => ahead.next_events(),
            EventSource::InlineBatch(inline) => {
                if !inline.refill()? {
                    return Ok(None);
                }
                let (next, filled) = (inline.next, inline.batch.filled);
                inline.next = filled;
                Ok(Some(&inline.batch.events[next..filled]))
            }
            EventSource::Inline(inline) => {
                let (reader, event) = &mut **inline;
                Ok(reader
                    .read_into(event)?
                    .then_some(std::slice::from_ref(&*event)))
            }
        }
    }

    /// The next event, or None at the end of the data.
    pub fn next_event(&mut self) -> Result<Option<&Event>> {
        match self {
            EventSource::Ahead(ahead) => ahead.next_event(),
            EventSource::InlineBatch(inline) => {
                if !inline.refill()? {
                    return Ok(None);
                }
                inline.next += 1;
                Ok(Some(&inline.batch.events[inline.next - 1]))
            }
            EventSource::Inline(inline) => {
                let (reader, event) = &mut **inline;
                Ok(reader.read_into(event)?.then_some(&*event))
            }
        }
    }
}

/// The next batch for the reader to fill: one handed back by the consumer, else a new
/// one while fewer than [`BATCHES`] exist, else one handed back as soon as there is;
/// None once the consumer is gone.
fn next_empty(empty: &Receiver<Batch>, made: &mut usize) -> Option<Batch> {
    match empty.try_recv() {
        Ok(batch) => Some(batch),
        Err(crossbeam_channel::TryRecvError::Empty) if *made < BATCHES => {
            *made += 1;
            Some(Batch::new())
        }
        Err(crossbeam_channel::TryRecvError::Empty) => empty.recv().ok(),
        Err(crossbeam_channel::TryRecvError::Disconnected) => None,
    }
}

impl Batch {
    /// A batch with no slots: the consumer's before its first batch arrives (never
    /// handed to the reader).
    fn unallocated() -> Batch {
        Batch {
            events: Vec::new(),
            filled: 0,
        }
    }

    fn new() -> Batch {
        // Clones of one blank event share its two empty names: a batch costs two
        // allocations, not two per event.
        let blank = Event::blank();
        Batch {
            events: vec![blank; BATCH],
            filled: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DatasetWriter, Selection, WriterOptions};

    fn dataset(n: i64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::new(dir.path(), 0, WriterOptions::default()).unwrap();
        for i in 0..n {
            let body = crate::event::Body::Trade(crate::event::Trade {
                aggressor: crate::event::Side::Bid,
                price: "100.5".parse().unwrap(),
                size: "1".parse().unwrap(),
                trade_id: format!("t{i}").into(),
            });
            // Two symbols, so the reader merges two files.
            let symbol = if i % 3 == 0 { "AAA" } else { "BBB" };
            let e = crate::wire::event("v", symbol, 1_000 + i, i as u64 + 1, body);
            w.write(&e).unwrap();
        }
        w.close().unwrap();
        dir
    }

    fn direct(dir: &std::path::Path) -> Vec<Event> {
        EventReader::open(dir, Selection::default())
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
    }

    #[test]
    fn yields_what_the_reader_yields_in_order_across_batch_boundaries() {
        for n in [0, 1, BATCH as i64 - 1, BATCH as i64, 3 * BATCH as i64 + 7] {
            let dir = dataset(n);
            let expected = direct(dir.path());
            assert_eq!(expected.len(), n as usize);
            let open = |read_ahead: bool, batched: bool| {
                let reader = EventReader::open(dir.path(), Selection::default()).unwrap();
                if batched {
                    EventSource::batched(reader, read_ahead).unwrap()
                } else {
                    EventSource::new(reader, read_ahead).unwrap()
                }
            };
            for (read_ahead, batched) in [(true, false), (false, false), (false, true)] {
                let mut source = open(read_ahead, batched);
                let mut got = Vec::new();
                while let Some(e) = source.next_event().unwrap() {
                    got.push(e.clone());
                }
                assert_eq!(got, expected, "n = {n}, read ahead {read_ahead}, {batched}");
                // The end stays the end.
                assert!(source.next_event().unwrap().is_none());
                // The same events a slice at a time.
                let mut source = open(read_ahead, batched);
                let mut got = Vec::new();
                while let Some(events) = source.next_events().unwrap() {
                    assert!(!events.is_empty());
                    got.extend(events.iter().cloned());
                }
                assert_eq!(got, expected, "n = {n}, slices, {read_ahead}, {batched}");
                assert!(source.next_events().unwrap().is_none());
            }
        }
    }

    #[test]
    fn dropping_it_early_stops_the_reader_thread() {
        let dir = dataset(20 * BATCH as i64);
        let reader = EventReader::open(dir.path(), Selection::default()).unwrap();
        let mut ahead = ReadAhead::spawn(reader).unwrap();
        assert!(ahead.next_event().unwrap().is_some());
        // Joins the thread: a reader blocked on a full queue must notice and return.
        drop(ahead);
    }
}
