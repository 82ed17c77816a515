//! Where each stream of a dataset ended, so a restarted recorder can tell what its
//! downtime cost: `_ticktape/streams.json` (the stream *tails*) and
//! `_ticktape/recording.json` (the *marker* of a recorder session in progress).
//!
//! Why a file and not the Parquet rows: the last rows of a stream may sit in any
//! partition file of any day, mixed with other kinds, and a killed generation's rows are
//! only in its journal until recovery. So the state is kept where it is cheap and exact:
//! - the recorder writes the tails at every rotation (before the closed generation's
//!   journal can be deleted) and at clean shutdown;
//! - recovery replays each journal left behind over the tails and writes them before it
//!   deletes that journal.
//!
//! Tails at the end of generation `k`, followed by every journal of a later generation
//! in order, therefore give the state after the last durable event, whichever moment a
//! kill chose. Both files are replaced atomically (write, fsync, rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::layout;
use crate::event::{Body, Event, Flags, Kind, UnixNanos};

/// Version of the `streams.json` layout.
pub const STREAMS_VERSION: u32 = 1;

/// The end of one stream (`kind.venue.symbol`) as the dataset holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTail {
    /// `book` or `trade`.
    pub kind: String,
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Largest `ts_recv` stored, ns since the Unix epoch: where a downtime starts.
    pub ts_recv: UnixNanos,
    /// `venue_seq` of the last event stored, when the venue numbers its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_seq: Option<u64>,
    /// Last `pub_seq` per publisher endpoint, where it is known which publisher sent it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pub_seqs: BTreeMap<String, u64>,
    /// The last book row stored lacks `LAST`: its venue message is cut short.
    #[serde(default)]
    pub open_message: bool,
    /// Nothing more is expected on it: every publisher of it sent end-of-stream, or a
    /// whole session after a downtime passed without it. No downtime is marked for it.
    #[serde(default)]
    pub ended: bool,
}

impl StreamTail {
    /// Takes `event` (book or trade) as the stream's new end; `publisher` is the endpoint
    /// it came from, when known.
    pub fn observe(&mut self, event: &Event, publisher: Option<&str>) {
        self.ts_recv = self.ts_recv.max(event.ts_recv);
        if event.venue_seq.is_some() {
            self.venue_seq = event.venue_seq;
        }
        if let Some(p) = publisher {
            self.pub_seqs.insert(p.to_string(), event.pub_seq);
        }
        if let Body::Book(d) = &event.body {
            self.open_message = !d.flags.contains(Flags::LAST);
        }
        self.ended = false;
    }
}

/// Every stream's tail, keyed by (kind, venue, symbol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamTails {
    /// The tails.
    pub topics: BTreeMap<(String, String, String), StreamTail>,
}

#[derive(Serialize, Deserialize)]
struct StreamsFile {
    version: u32,
    streams: Vec<StreamTail>,
}

impl StreamTails {
    /// Path of the tails file.
    pub fn path(root: &Path) -> PathBuf {
        root.join(layout::META_DIR).join("streams.json")
    }

    /// Reads the dataset's tails; none when the file does not exist.
    pub fn load(root: &Path) -> Result<StreamTails> {
        let path = StreamTails::path(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StreamTails::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file: StreamsFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a streams file", path.display()))?;
        if file.version != STREAMS_VERSION {
            anyhow::bail!(
                "{} has version {}, this ticktape reads {STREAMS_VERSION}",
                path.display(),
                file.version
            );
        }
        let topics = file
            .streams
            .into_iter()
            .map(|t| ((t.kind.clone(), t.venue.clone(), t.symbol.clone()), t))
            .collect();
        Ok(StreamTails { topics })
    }

    /// Replaces the dataset's tails file atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let file = StreamsFile {
            version: STREAMS_VERSION,
            streams: self.topics.values().cloned().collect(),
        };
        write_atomically(&StreamTails::path(root), &serde_json::to_vec_pretty(&file)?)
    }

    /// The tail of `event`'s stream, created empty if new.
    pub fn entry(&mut self, kind: Kind, venue: &str, symbol: &str) -> &mut StreamTail {
        self.topics
            .entry((
                kind.name().to_string(),
                venue.to_string(),
                symbol.to_string(),
            ))
            .or_insert_with(|| StreamTail {
                kind: kind.name().to_string(),
                venue: venue.to_string(),
                symbol: symbol.to_string(),
                ..StreamTail::default()
            })
    }

    /// Takes a stored event (gap rows and non-data kinds are ignored).
    pub fn observe(&mut self, event: &Event, publisher: Option<&str>) {
        let kind = event.kind();
        if matches!(kind, Kind::Book | Kind::Trade) {
            self.entry(kind, &event.venue, &event.symbol)
                .observe(event, publisher);
        }
    }
}

/// A recorder session in progress: written when it starts, removed when it ends cleanly.
/// Found at the next start, it says the previous session was killed (and which publisher
/// the journal's sequence numbers belong to).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMarker {
    /// Start time, ns since the Unix epoch.
    pub started: UnixNanos,
    /// Process id.
    pub pid: u32,
    /// Publisher endpoints it was connected to.
    pub connect: Vec<String>,
    /// First generation it wrote.
    pub generation: u64,
}

impl SessionMarker {
    /// Path of the marker.
    pub fn path(root: &Path) -> PathBuf {
        root.join(layout::META_DIR).join("recording.json")
    }

    /// The marker left in the dataset, if any (an unreadable one counts as present).
    pub fn load(root: &Path) -> Option<SessionMarker> {
        let text = std::fs::read_to_string(SessionMarker::path(root)).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Writes the marker atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        write_atomically(&SessionMarker::path(root), &serde_json::to_vec(self)?)
    }

    /// Removes the dataset's marker (a session ended, or its end was logged).
    pub fn remove(root: &Path) -> Result<()> {
        let path = SessionMarker::path(root);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// The one publisher whose sequence numbers the session's journal holds, if it had
    /// exactly one.
    pub fn sole_publisher(&self) -> Option<&str> {
        match self.connect.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over
/// `path`, so a crash leaves the old file or the new one, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path without a directory")?;
    super::files::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = super::files::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    layout::sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Side};

    #[test]
    fn tails_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut tails = StreamTails::default();
        let mut e = crate::wire::event(
            "v",
            "S",
            42,
            7,
            Body::Book(BookDelta {
                side: Side::Ask,
                price: "1".parse().unwrap(),
                size: "1".parse().unwrap(),
                flags: Flags::default(),
            }),
        );
        e.venue_seq = Some(9);
        tails.observe(&e, Some("tcp://a"));
        tails.save(dir.path()).unwrap();
        let back = StreamTails::load(dir.path()).unwrap();
        assert_eq!(back, tails);
        let t = &back.topics[&("book".into(), "v".into(), "S".into())];
        assert_eq!(
            (t.ts_recv, t.venue_seq, t.open_message),
            (42, Some(9), true)
        );
        assert_eq!(t.pub_seqs["tcp://a"], 7);
    }
}
