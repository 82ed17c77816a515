//! The Parquet side of the recorder: a thread that turns batches of accepted events into
//! Parquet, so encoding and compression never delay receiving.
//!
//! Batches travel in recycled vectors: a batch is several hundred KiB, which a fresh
//! vector per hand-over would allocate on one thread and free on the other every few
//! thousand events. (Its gain was measured only together with the session's other
//! recorder changes; see docs/BENCHMARKS.md.)

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::event::Event;
use crate::store::{DatasetWriter, WriterOptions, WriterStats, layout};

/// Events per hand-over to the writer thread.
pub const BATCH: usize = 4096;

/// Batches in flight before the ingest side waits for the writer.
const IN_FLIGHT: usize = 64;

/// Written batches kept for reuse; the writer frees any beyond these. In steady state
/// one or two are in circulation; keeping every batch that was ever in flight at once
/// (up to [`IN_FLIGHT`], each about 700 KiB) made the recorder's memory climb for its
/// first minutes to the high-water mark of a momentary writer lag.
const RECYCLED: usize = 4;

enum ToWriter {
    Events(Vec<Event>),
    /// Close the current generation, delete its journal, start `next`.
    Rotate {
        next: u64,
    },
    /// Test only: stop at once, leaving files `.inprogress` and the journal in place.
    #[cfg(test)]
    Abandon,
}

/// The ingest side's handle on the writer thread.
pub struct ParquetWriter {
    to_writer: Sender<ToWriter>,
    recycled: Receiver<Vec<Event>>,
    stats: Arc<Mutex<WriterStats>>,
    /// Taken when the thread is joined (at close, or to learn why it stopped).
    thread: Option<JoinHandle<Result<()>>>,
}

impl ParquetWriter {
    /// Starts the writer thread on generation `generation` of the dataset at `root`.
    pub fn start(root: PathBuf, generation: u64, options: WriterOptions) -> Result<ParquetWriter> {
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let (to_writer, inbox) = bounded(IN_FLIGHT);
        let (give_back, recycled) = bounded(RECYCLED);
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("parquet-writer".into())
                .spawn(move || run(root, generation, options, inbox, give_back, stats))?
        };
        Ok(ParquetWriter {
            to_writer,
            recycled,
            stats,
            thread: Some(thread),
        })
    }

    /// An empty batch with room for [`BATCH`] events, recycled when one is back.
    pub fn empty_batch(&self) -> Vec<Event> {
        match self.recycled.try_recv() {
            Ok(written) => written,
            Err(_) => Vec::with_capacity(BATCH),
        }
    }

    /// Hands `batch` over unless the writer is behind, in which case the batch comes back
    /// (to be sent with [`Self::hand_over`] once what it covers is durable).
    pub fn try_hand_over(&mut self, batch: Vec<Event>) -> Result<Option<Vec<Event>>> {
        match self.to_writer.try_send(ToWriter::Events(batch)) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(ToWriter::Events(batch))) => Ok(Some(batch)),
            Err(_) => Err(self.why_stopped()),
        }
    }

    /// Hands `batch` over, waiting for the writer if it is behind.
    pub fn hand_over(&mut self, batch: Vec<Event>) -> Result<()> {
        match self.to_writer.send(ToWriter::Events(batch)) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.why_stopped()),
        }
    }

    /// Closes the current generation's files (deleting its journal) and starts `next`.
    pub fn rotate(&mut self, next: u64) -> Result<()> {
        match self.to_writer.send(ToWriter::Rotate { next }) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.why_stopped()),
        }
    }

    /// The thread is gone (its inbox is closed): join it and return its own error, so
    /// the recorder says what failed instead of only that the writer stopped.
    fn why_stopped(&mut self) -> anyhow::Error {
        let Some(thread) = self.thread.take() else {
            return anyhow::anyhow!("Parquet writer stopped earlier (its error was reported)");
        };
        match thread.join() {
            Ok(Err(e)) => e.context("Parquet writer stopped"),
            Ok(Ok(())) => anyhow::anyhow!("Parquet writer stopped without an error"),
            Err(_) => anyhow::anyhow!("Parquet writer thread panicked"),
        }
    }

    /// Test only: stops the thread like a crash would (no footers, journal kept).
    #[cfg(test)]
    pub fn abandon(mut self) {
        let _ = self.to_writer.send(ToWriter::Abandon);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> WriterStats {
        snapshot(&self.stats)
    }

    /// Writes what is queued, closes every file and returns the final counters.
    pub fn close(self) -> Result<WriterStats> {
        let ParquetWriter {
            to_writer,
            stats,
            thread,
            ..
        } = self;
        drop(to_writer);
        thread
            .context("Parquet writer stopped earlier (its error was reported)")?
            .join()
            .map_err(|_| anyhow::anyhow!("Parquet writer thread panicked"))??;
        Ok(snapshot(&stats))
    }
}

fn snapshot(stats: &Mutex<WriterStats>) -> WriterStats {
    stats.lock().map(|s| s.clone()).unwrap_or_default()
}

fn run(
    root: PathBuf,
    mut generation: u64,
    options: WriterOptions,
    inbox: Receiver<ToWriter>,
    give_back: Sender<Vec<Event>>,
    stats: Arc<Mutex<WriterStats>>,
) -> Result<()> {
    let mut writer = DatasetWriter::new(&root, generation, options.clone())?;
    let mut done = WriterStats::default();
    // `done` counts closed generations; the live total adds the open writer's.
    let publish = |w: &DatasetWriter, done: &WriterStats| {
        if let Ok(mut s) = stats.lock() {
            *s = done.clone();
            s.add(w.stats());
        }
    };
    let finish = |writer: DatasetWriter, generation: u64, done: &mut WriterStats| -> Result<()> {
        done.add(&writer.close()?);
        std::fs::remove_file(layout::journal_path(&root, generation)).ok();
        layout::sync_dir(&root.join(layout::JOURNAL_DIR));
        Ok(())
    };
    for msg in inbox.iter() {
        match msg {
            ToWriter::Events(mut events) => {
                for e in &events {
                    writer.write(e)?;
                }
                events.clear();
                // The ingest side allocates anew when none is back: nothing to wait for;
                // a batch the pool has no room for is freed here.
                let _ = give_back.try_send(events);
            }
            #[cfg(test)]
            ToWriter::Abandon => return Ok(()),
            ToWriter::Rotate { next } => {
                let old = std::mem::replace(
                    &mut writer,
                    DatasetWriter::new(&root, next, options.clone())?,
                );
                finish(old, generation, &mut done)?;
                generation = next;
            }
        }
        publish(&writer, &done);
    }
    // The channel closed: clean shutdown.
    finish(writer, generation, &mut done)?;
    if let Ok(mut s) = stats.lock() {
        *s = done;
    }
    Ok(())
}
