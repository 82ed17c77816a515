//! Reading ahead of a paced replay: the dataset is decoded on its own thread into a
//! bounded queue, so decoding a record batch (milliseconds for a few thousand book rows)
//! never holds up an event that is due.
//!
//! Owns the reader thread and the queue. Order is kept (one producer, one FIFO queue);
//! the first error ends the stream after everything read before it; dropping the
//! [`ReadAhead`] ends the thread (its next send fails) and joins it.

use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, bounded};

/// Items of `source`, read on a thread of their own up to `chunk * depth` ahead.
pub(crate) struct ReadAhead<T> {
    queue: Option<Receiver<Vec<Result<T>>>>,
    chunk: std::vec::IntoIter<Result<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> ReadAhead<T> {
    /// Starts reading `source` ahead: chunks of `chunk` items (fewer at the end or before
    /// an error), at most `depth` chunks waiting.
    pub(crate) fn spawn<I>(source: I, chunk: usize, depth: usize) -> Result<ReadAhead<T>>
    where
        I: Iterator<Item = Result<T>> + Send + 'static,
    {
        let chunk = chunk.max(1);
        let (tx, rx) = bounded::<Vec<Result<T>>>(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("replay-read-ahead".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(chunk);
                for item in source {
                    let failed = item.is_err();
                    buf.push(item);
                    if buf.len() == chunk || failed {
                        let full = std::mem::replace(&mut buf, Vec::with_capacity(chunk));
                        // The replay is gone (ended early or interrupted): stop reading.
                        if tx.send(full).is_err() || failed {
                            return;
                        }
                    }
                }
                if !buf.is_empty() {
                    let _ = tx.send(buf);
                }
            })
            .context("cannot start the replay's read-ahead thread")?;
        Ok(ReadAhead {
            queue: Some(rx),
            chunk: Vec::new().into_iter(),
            thread: Some(thread),
        })
    }
}

impl<T> Iterator for ReadAhead<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Some(item);
            }
            // Disconnected and empty: the reader thread is done.
            let next = self.queue.as_ref()?.recv().ok();
            match next {
                Some(chunk) => self.chunk = chunk.into_iter(),
                None => {
                    self.queue = None;
                    return None;
                }
            }
        }
    }
}

impl<T> Drop for ReadAhead<T> {
    fn drop(&mut self) {
        // Closing the queue first makes a reader blocked on a full queue return.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use anyhow::anyhow;

    use super::*;

    #[test]
    fn keeps_order_across_chunks_and_ends() {
        let ahead = ReadAhead::spawn((0..1000u32).map(Ok), 7, 3).unwrap();
        let got: Vec<u32> = ahead.map(|r| r.unwrap()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_ends_the_stream_after_what_came_before_it() {
        let source = (0..100u32).map(|i| {
            if i == 42 {
                Err(anyhow!("bad row {i}"))
            } else {
                Ok(i)
            }
        });
        let items: Vec<Result<u32>> = ReadAhead::spawn(source, 10, 2).unwrap().collect();
        assert_eq!(items.len(), 43, "42 events, then the error, then nothing");
        assert!(
            items[..42]
                .iter()
                .enumerate()
                .all(|(i, r)| r.as_ref().ok() == Some(&(i as u32)))
        );
        assert_eq!(items[42].as_ref().unwrap_err().to_string(), "bad row 42");
    }

    #[test]
    fn dropping_it_early_stops_the_reader_without_reading_everything() {
        let read = Arc::new(AtomicUsize::new(0));
        let counted = read.clone();
        // An endless source: only the bounded queue stops the reader.
        let source = (0u64..).map(move |i| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(i)
        });
        let mut ahead = ReadAhead::spawn(source, 16, 4).unwrap();
        assert_eq!(ahead.next().unwrap().unwrap(), 0);
        assert_eq!(ahead.next().unwrap().unwrap(), 1);
        drop(ahead); // joins the reader thread: returns only if it ended
        let n = read.load(Ordering::Relaxed);
        // At most the queue, the chunk being filled, the chunk handed out and the one
        // blocked in send.
        assert!(n <= 16 * (4 + 3), "read {n} items ahead");
    }

    #[test]
    fn an_empty_source_ends_at_once() {
        let mut ahead = ReadAhead::spawn(std::iter::empty::<Result<u8>>(), 8, 2).unwrap();
        assert!(ahead.next().is_none());
        assert!(ahead.next().is_none(), "stays ended");
    }
}
