//! The replay's side of the shared-memory transport: one segment per strategy, the bus
//! messages fanned out into every down ring, gateway replies into one, requests read
//! from the up rings (`docs/SHM.md`, "Writing, reading, waking" and "Dead or stuck
//! peers").
//!
//! Owns the segments, the wake-ups, the bounded waits and what a dead or stuck strategy
//! looks like from the replay. Never reads what a message means: the gateway and the
//! lockstep state machine see the same bytes as over ZeroMQ.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::backup::Backup;
use super::ring::{KIND_BUS, KIND_CLOSED, KIND_GATEWAY, futex_wait, futex_waitv};
use super::segment::{self, ReplayEnd, Side};
use super::spin::Spinner;
use crate::shutdown::Stop;

/// Longest single sleep of a waiting replay before it checks stop flag and peers.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Longest sleep while a down ring is full.
const SPACE_SLICE: Duration = Duration::from_millis(1);
/// Bus messages written to a ring between two wake-ups when nothing else wakes it.
const WAKE_EVERY: u32 = 64;
/// The part of a down ring that may hold staged messages ([`Hub::batch`]): the rest
/// keeps room for what must go out at once.
const STAGE_SHARE: u64 = 4;

struct Peer {
    name: String,
    end: ReplayEnd,
    /// Records written since the last wake-up.
    unwoken: u32,
    /// Bursts written ahead of their due time and held ([`Hub::hold_next`]), oldest
    /// first: where each starts and ends in the down ring.
    held: VecDeque<(u64, u64)>,
}

impl Peer {
    /// The pid of a strategy that attached and died (or whose pid was reused) without
    /// closing its side in order.
    fn died(&self) -> Option<u32> {
        let (pid, alive) = self.end.map.peer(Side::Strategy);
        (pid != 0 && !alive && !self.end.map.closed(Side::Strategy)).then_some(pid)
    }

    /// The error for a strategy that [`Peer::died`].
    fn died_error(&self, pid: u32) -> anyhow::Error {
        anyhow::anyhow!(
            "strategy {:?} (pid {pid}) is gone: its shared-memory peer died (crashed or was killed)",
            self.name
        )
    }
}

/// The replay's shared-memory segments, one per strategy, in the scenario's order.
pub struct Hub {
    peers: Vec<Peer>,
    stop: Option<Stop>,
    /// How long a full down ring may stay full before the run fails.
    stall_timeout: Duration,
    /// Round-robin start for reading requests.
    next_peer: usize,
    /// After the end of the stream a strategy may exit: no longer an error.
    ending: bool,
    /// How long a wait for requests spins before it sleeps.
    spinner: Spinner,
    /// Bus messages are staged, not published one by one ([`Hub::batch`]).
    batching: bool,
    /// The backup publisher, while a paced replay runs one ([`Hub::start_backup`]).
    backup: Option<Backup>,
}

impl Hub {
    /// One new segment per strategy name; `stall_timeout` bounds how long a strategy may
    /// leave its down ring full (a strategy that stopped reading).
    pub fn create(names: &[String], stall_timeout: Duration) -> Result<Hub> {
        let peers = names
            .iter()
            .map(|n| {
                Ok(Peer {
                    name: n.clone(),
                    end: segment::create(&format!("{}-{n}", std::process::id()))?,
                    unwoken: 0,
                    held: VecDeque::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Hub {
            peers,
            stop: None,
            stall_timeout,
            next_peer: 0,
            ending: false,
            spinner: Spinner::from_env(),
            batching: false,
            backup: None,
        })
    }

    /// Once `stop` is raised, waits end and writes to a full ring are dropped.
    pub fn give_up_waiting_on(&mut self, stop: Stop) {
        self.stop = Some(stop);
    }

    /// Strategy names and the descriptor of each one's segment (close-on-exec: hand it
    /// to the child with [`segment::inherit_as`]).
    pub fn fds(&self) -> Vec<(String, RawFd)> {
        self.peers
            .iter()
            .map(|p| (p.name.clone(), p.end.map.fd()))
            .collect()
    }

    /// The endpoint a strategy started by hand opens peer `i`'s segment by:
    /// `shm:/proc/PID/fd/N` (valid while this process runs; same user only).
    pub fn endpoint(&self, i: usize) -> Option<String> {
        let p = self.peers.get(i)?;
        Some(format!(
            "shm:/proc/{}/fd/{}",
            std::process::id(),
            p.end.map.fd()
        ))
    }

    /// Strategies served.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True with no strategies.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The identity the gateway knows peer `i` by (its index, little-endian).
    pub fn identity(i: usize) -> Vec<u8> {
        (i as u32).to_le_bytes().to_vec()
    }

    fn peer_of(identity: &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(identity.try_into().ok()?) as usize)
    }

    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(Stop::is_set)
    }

    /// The end of the stream went out: strategies may now exit.
    pub fn ending(&mut self) {
        self.ending = true;
    }

    /// Fails when a strategy that attached has died (or its pid was reused) before the
    /// end of the stream without closing in order.
    pub fn check_peers(&self) -> Result<()> {
        if self.ending {
            return Ok(());
        }
        match self.peers.iter().find_map(|p| Some((p, p.died()?))) {
            Some((p, pid)) => Err(p.died_error(pid)),
            None => Ok(()),
        }
    }

    /// Writes one record to peer `i`, waiting while its ring is full (bounded by the
    /// stall timeout, the stop flag and the peer's life).
    fn write(&mut self, i: usize, kind: u16, topic: &[u8], payload: &[u8]) -> Result<()> {
        let p = &mut self.peers[i];
        if let Ok(true) = p.end.down.try_write(kind, topic, payload) {
            p.unwoken += 1;
            return Ok(());
        }
        self.write_waiting(i, kind, topic, payload)
    }

    /// [`Hub::write`] once the ring was full (or the record refused): waits for space.
    fn write_waiting(&mut self, i: usize, kind: u16, topic: &[u8], payload: &[u8]) -> Result<()> {
        let stop = self.stop.clone();
        let stall_timeout = self.stall_timeout;
        let p = &mut self.peers[i];
        // The reader frees space only for what it can see.
        p.end.down.publish();
        let mut full_since: Option<Instant> = None;
        loop {
            match p.end.down.try_write(kind, topic, payload) {
                Ok(true) => {
                    p.unwoken += 1;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => bail!("cannot send to strategy {:?}: {e}", p.name),
            }
            let since = *full_since.get_or_insert_with(Instant::now);
            p.end.down.wake();
            p.unwoken = 0;
            p.end.down.wait_for_space(SPACE_SLICE);
            if stop.as_ref().is_some_and(Stop::is_set) {
                return Ok(());
            }
            if let Some(pid) = p.died() {
                return Err(p.died_error(pid));
            }
            if since.elapsed() > stall_timeout {
                let pid = p.end.map.peer(Side::Strategy).0;
                bail!(
                    "strategy {:?} (pid {pid}) stopped reading: its {} MiB ring has been full for {stall_timeout:?} (hung? raise replay.ack_timeout_secs if it is only slow)",
                    p.name,
                    p.end.down.capacity() >> 20
                );
            }
        }
    }

    /// From now on bus messages are staged ([`Hub::publish`] writes them, a strategy
    /// sees them at the next [`Hub::commit`], all at once), or, with `false`, published
    /// one by one again (what is staged is published now). Whatever else goes into a
    /// ring (a gateway reply, the close) publishes the staged messages before it, so the
    /// order is kept.
    pub fn batch(&mut self, on: bool) {
        if !on {
            self.release_all_held();
            self.commit();
            self.wake_sleepers();
        }
        self.batching = on;
    }

    /// Publishes what is staged on every ring (one release store each): from now on
    /// the readers can see it. Wakes nobody ([`Hub::wake_sleepers`]); true when anything
    /// was staged.
    pub fn commit(&mut self) -> bool {
        let mut any = false;
        for p in &mut self.peers {
            any |= p.end.down.publish();
        }
        any
    }

    /// Peer `i`'s down ring (tests that reach below the hub).
    #[cfg(test)]
    pub(crate) fn down_ring(&mut self, i: usize) -> &mut super::ring::Writer {
        &mut self.peers[i].end.down
    }

    /// Starts the backup publisher ([`super::backup`]) for every ring, on the CPUs the
    /// calling thread may use. Ended by [`Hub::stop_backup`] (or when the hub is dropped).
    pub fn start_backup(&mut self) -> Result<()> {
        let covers = self.peers.iter_mut().map(|p| p.end.down.cover()).collect();
        self.backup = Some(Backup::start(covers)?);
        Ok(())
    }

    /// Ends the backup publisher (joins its thread).
    pub fn stop_backup(&mut self) {
        self.backup = None;
    }

    /// Whether a backup publisher runs.
    pub fn has_backup(&self) -> bool {
        self.backup.is_some()
    }

    /// Posts what is staged on every ring, short of what is held, to the backup
    /// publisher (if one runs) for publication at `due` if this thread has not published
    /// it by then: a new ticket, or an update of `ticket` (the last one posted, more
    /// written since). Returns the ticket's number (see [`Backup::post`] for `tag`).
    /// Post only what may be published at `due`, and take it back ([`Hub::take_back`])
    /// after the [`Hub::commit`] that publishes it.
    pub fn post_staged(&mut self, due: Instant, tag: u64, ticket: Option<u64>) -> Option<u64> {
        let b = self.backup.as_mut()?;
        b.post(
            due,
            tag,
            ticket,
            self.peers.iter().map(|p| p.end.down.staged_end()),
        )
    }

    /// Takes back the tickets up to number `last` once this thread has published what
    /// they hold: when the backup published some of it first, when, and the tag it
    /// published ([`Backup::take_back`]).
    pub fn take_back(&mut self, last: u64) -> Option<(Instant, u64)> {
        self.backup.as_mut()?.take_back(last)
    }

    /// Starts a burst written ahead of its due time: what is written from now on, up to
    /// the next [`Hub::hold_next`], is held (no publication of this thread shows it, nor
    /// anything written after it) until [`Hub::release_held`] publishes it. Messages
    /// written while it is held (an exchange's replies) come after it.
    pub fn hold_next(&mut self) {
        for p in &mut self.peers {
            let at = p.end.down.written();
            if p.held.is_empty() {
                p.end.down.hold_from(Some(at));
            }
            p.held.push_back((at, at));
        }
    }

    /// The last burst held ends at what is written now (call once it is written).
    pub fn held_written(&mut self) {
        for p in &mut self.peers {
            let written = p.end.down.written();
            if let Some(last) = p.held.back_mut() {
                last.1 = written;
            }
        }
    }

    /// Bursts held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.peers.first().map_or(0, |p| p.held.len())
    }

    /// Posts the last burst held, as written so far (its end marked, as
    /// [`Hub::held_written`] does), to the backup publisher (as [`Hub::post_staged`] does
    /// what is staged).
    pub fn post_held(&mut self, due: Instant, tag: u64, ticket: Option<u64>) -> Option<u64> {
        self.held_written();
        let b = self.backup.as_mut()?;
        let ends = self.peers.iter().map(|p| p.held.back().map_or(0, |h| h.1));
        b.post(due, tag, ticket, ends)
    }

    /// Publishes the oldest burst held (and what was written before it), no longer
    /// holding it; true when anything was published.
    pub fn release_held(&mut self) -> bool {
        let mut any = false;
        for p in &mut self.peers {
            let Some((_, end)) = p.held.pop_front() else {
                continue;
            };
            let down = &mut p.end.down;
            down.hold_from(p.held.front().map(|h| h.0));
            any |= down.publish_to(end);
            any |= down.publish();
        }
        any
    }

    /// No longer holds anything (a replay that stops with bursts written ahead): what
    /// is written is published at the next commit.
    fn release_all_held(&mut self) {
        for p in &mut self.peers {
            p.held.clear();
            p.end.down.hold_from(None);
        }
    }

    /// Wakes the readers that sleep with records waiting (and those not woken for
    /// `WAKE_EVERY` messages); through the backup publisher while one runs.
    pub fn wake_sleepers(&mut self) {
        let mut by_backup = 0u64;
        for (i, p) in self.peers.iter_mut().enumerate() {
            if p.unwoken > 0 && (p.unwoken >= WAKE_EVERY || p.end.down.reader_sleeps()) {
                p.unwoken = 0;
                match &self.backup {
                    // The backup publisher, on the strategies' cores, makes the call.
                    Some(_) if i < super::backup::WAKES => by_backup |= 1 << i,
                    _ => p.end.down.wake(),
                }
            }
        }
        if let Some(b) = &self.backup {
            b.wake(by_backup);
        }
    }

    /// Whether `bytes` more can be staged in every ring without publishing anything
    /// early: within the staging share and the free space (a reader that is behind
    /// leaves less). A replay that writes ahead of a due time checks this first.
    pub fn can_stage(&mut self, bytes: u64) -> bool {
        self.peers.iter_mut().all(|p| {
            let down = &mut p.end.down;
            down.staged() + bytes <= down.capacity() / STAGE_SHARE && down.has_room(bytes)
        })
    }

    /// Writes a bus message `[topic, payload]` to every strategy (staged while
    /// [`Hub::batch`] is on). Readers are woken by [`Hub::wake_all`] (markers, replies,
    /// waits) and every `WAKE_EVERY` messages.
    pub fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        if self.batching {
            return self.stage(topic, payload);
        }
        for i in 0..self.peers.len() {
            self.write(i, KIND_BUS, topic, payload)?;
            // A reader asleep is woken at its first record, so it works through a run
            // of events while the replay still writes them, not after the marker.
            if self.peers[i].unwoken >= WAKE_EVERY || self.peers[i].end.down.reader_sleeps() {
                self.peers[i].unwoken = 0;
                self.peers[i].end.down.wake();
            }
        }
        Ok(())
    }

    /// [`Hub::publish`] while batching: stages the message in every ring; a ring whose
    /// staged bytes pass its staging share, or that is full, is committed first (a
    /// replay that checks [`Hub::can_stage`] never gets there).
    fn stage(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        for i in 0..self.peers.len() {
            let down = &mut self.peers[i].end.down;
            if down.staged() >= down.capacity() / STAGE_SHARE {
                down.publish();
            }
            let p = &mut self.peers[i];
            match p.end.down.try_stage(KIND_BUS, topic, payload) {
                Ok(true) => p.unwoken += 1,
                // Full (the reader frees space only for what it sees) or refused: commit,
                // then the ordinary write, which waits or says why.
                Ok(false) | Err(_) => {
                    p.end.down.publish();
                    self.write(i, KIND_BUS, topic, payload)?;
                }
            }
        }
        Ok(())
    }

    /// Writes one gateway reply to the strategy known by `identity`, and wakes it.
    pub fn reply(&mut self, identity: &[u8], body: &[u8]) -> Result<()> {
        let Some(i) = Hub::peer_of(identity).filter(|&i| i < self.peers.len()) else {
            bail!("gateway reply for an unknown shared-memory peer {identity:?}");
        };
        self.write(i, KIND_GATEWAY, b"", body)?;
        self.peers[i].unwoken = 0;
        self.peers[i].end.down.wake();
        Ok(())
    }

    /// Wakes every strategy that has records it was not woken for (before the replay
    /// waits, after a step marker, at the end).
    pub fn wake_all(&mut self) {
        self.commit();
        for p in &mut self.peers {
            if p.unwoken > 0 {
                p.unwoken = 0;
                p.end.down.wake();
            }
            p.end.map.beat(Side::Replay);
        }
    }

    /// The next request of any strategy, copied into `buf`, with the identity the gateway
    /// knows its sender by; None when no up ring holds one.
    pub fn next_request(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
        let n = self.peers.len();
        for k in 0..n {
            let i = (self.next_peer + k) % n;
            let p = &mut self.peers[i];
            let rec = match p.end.up.read() {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => bail!("strategy {:?}: {e}", p.name),
            };
            let kind = rec.kind;
            buf.clear();
            buf.extend_from_slice(rec.payload);
            p.end.up.release();
            match kind {
                KIND_GATEWAY => {
                    self.next_peer = (i + 1) % n;
                    return Ok(Some(Hub::identity(i)));
                }
                // An orderly close, or a later kind this build does not know: skipped.
                _ => continue,
            }
        }
        Ok(None)
    }

    /// Wakes the strategies, then sleeps until any of them writes a request or `timeout`
    /// passes (capped at 100 ms); then fails if one died.
    pub fn wait_requests(&mut self, timeout: Duration) -> Result<()> {
        self.wake_all();
        let timeout = timeout.min(WAIT_SLICE);
        let mut words = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            words.push(p.end.up.data_seq());
        }
        if self.peers.iter().any(|p| p.end.up.peek()) || self.stopped() {
            return Ok(());
        }
        let peers = &self.peers;
        if self.spinner.spin(|| peers.iter().any(|p| p.end.up.peek())) {
            return Ok(());
        }
        match words.as_slice() {
            [] => std::thread::sleep(timeout),
            [(w, v)] => futex_wait(w, *v, timeout),
            many => {
                if !futex_waitv(many, timeout) {
                    // No futex_waitv (Linux < 5.16): poll.
                    std::thread::sleep(timeout.min(Duration::from_micros(100)));
                }
            }
        }
        drop(words);
        // Woken by a request: nothing to check. Quiet for the whole wait: is anyone dead?
        if self.peers.iter().any(|p| p.end.up.peek()) {
            return Ok(());
        }
        self.check_peers()
    }

    /// True when every strategy has closed its side in order, or is gone: nobody will
    /// send another request.
    pub fn all_closed(&self) -> bool {
        self.peers
            .iter()
            .all(|p| p.end.map.closed(Side::Strategy) || p.died().is_some())
    }

    /// Tells every strategy the replay closed in order (after the end of the stream).
    pub fn close(&mut self) {
        self.release_all_held();
        self.batch(false);
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            // A full ring at the end: the strategy is gone or stuck; nothing to wait for.
            let _ = p.end.down.try_write(KIND_CLOSED, b"", b"");
            p.end.map.close(Side::Replay);
            p.end.down.wake();
        }
    }

    /// Strategies still running that have not read everything written to them, as
    /// `strategy NAME (N bytes unread)`.
    pub fn behind(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.end.map.peer(Side::Strategy).1)
            .map(|p| (p, p.end.down.unread()))
            .filter(|(_, b)| *b > 0)
            .map(|(p, b)| format!("strategy {} ({b} bytes unread)", p.name))
            .collect()
    }

    /// After [`Hub::close`]: waits until every running strategy has read what it was sent
    /// (as the ZeroMQ publisher's drain does), calling `waiting` with who is behind after
    /// a short grace. Gives up after `limit` or once `stop` is raised; returns who was
    /// still behind then.
    pub fn drain(
        &mut self,
        limit: Duration,
        stop: &Stop,
        mut waiting: impl FnMut(&[String]),
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let behind = self.behind();
            if behind.is_empty() || started.elapsed() >= limit || stop.is_set() {
                return behind;
            }
            if started.elapsed() >= Duration::from_millis(500) {
                waiting(&behind);
            }
            for p in &self.peers {
                p.end.down.wake();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
