//! The paced loop without lockstep: events read and encoded well ahead, each burst
//! published on time — over shared memory written into the rings before its due time
//! and published with one store (`docs/SHM.md`, "Paced replays"), over ZeroMQ sent back
//! to back from its due time on.
//!
//! Owns what is read ahead, when a burst is written, published and followed by a
//! wake-up, and where the exchange host's messages go; how long to wait is the
//! [`Pacer`]'s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::lockstep::Link;
use super::{Marks, Progress, count};
use crate::bus::{HeartbeatTimer, Prepared};
use crate::event::{Body, Event, UnixNanos};
use crate::replay::Pacer;
use crate::shutdown::Stop;
use crate::store::EventSource;

/// What the burst loop carries from one burst to the next.
pub(super) struct Loop<'a> {
    pub(super) pacer: &'a mut Pacer,
    pub(super) heartbeat: &'a mut HeartbeatTimer,
    pub(super) marks: &'a mut Marks,
    pub(super) started: Instant,
}

/// Room kept in every ring before a message is written ahead: the message and whatever
/// the exchange host writes before its burst.
const BURST_ROOM: u64 = 64 << 10;

/// Bytes of messages held read and encoded ahead (about 2,800 JSON events, far more
/// than the data brings between two waits at `--speed 10`). Reading ahead stops there;
/// a burst is always read whole. Also what bounds the buffer's compaction, a copy done
/// while reading ahead: at most this much, about 50 µs.
const AHEAD_BYTES: usize = 512 << 10;

/// Reading ahead stops this long before the next due time: reading one event takes
/// about half a microsecond, so the publication is not delayed by it.
const READ_MARGIN: Duration = Duration::from_micros(150);

/// One event read ahead: its time, whether it is a gap, and its encoded message's
/// lengths in the buffer.
#[derive(Clone, Copy)]
struct Message {
    ts: UnixNanos,
    gap: bool,
    topic: u32,
    payload: u32,
}

/// Events read and encoded ahead of their turn, in order: the messages back to back in
/// one buffer, and (when an exchange host needs them) the events themselves.
#[derive(Default)]
struct Ahead {
    bytes: Vec<u8>,
    /// Offset in `bytes` of the first message of `messages`.
    head: usize,
    messages: VecDeque<Message>,
    /// The events of `messages` and of the bursts published that the exchange host has
    /// not taken yet ([`Lag`]), in order (kept only for an exchange host).
    events: VecDeque<Event>,
    /// Over ZeroMQ: the payloads of `messages`, each copied into a libzmq message as it
    /// is read ([`Prepared`]), so a burst's sends at its due time only queue them. Their
    /// bytes stay in `bytes` too, sent instead should a prepared message be refused.
    prepared: Option<VecDeque<Prepared>>,
    ended: bool,
}

impl Ahead {
    /// Keeps `event`, encoded as `message` (and the event itself when `keep`).
    fn push(&mut self, event: &Event, message: (&[u8], &[u8]), keep: bool) {
        // Half the buffer or more is spent: move the rest to the front (no more than
        // what is held, a copy the size of the buffer's live half at most).
        if self.head >= AHEAD_BYTES / 2 && self.head * 2 >= self.bytes.len() {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        let (topic, payload) = message;
        self.bytes.extend_from_slice(topic);
        self.bytes.extend_from_slice(payload);
        self.messages.push_back(Message {
            ts: event.ts_recv,
            gap: matches!(event.body, Body::Gap(_)),
            topic: topic.len() as u32,
            payload: payload.len() as u32,
        });
        if keep {
            self.events.push_back(event.clone());
        }
        if let Some(prepared) = &mut self.prepared {
            prepared.push_back(Prepared::new(payload));
        }
    }

    /// The first burst held, once it is whole (a later event is held, or the data
    /// ended): its time and its events. `Err(())` while it is not whole yet; None when
    /// nothing is held. Only the first and last messages are looked at until then, so
    /// reading a burst of thousands of events one at a time stays linear.
    fn first_burst(&self) -> Result<Option<(UnixNanos, usize)>, ()> {
        let Some(first) = self.messages.front() else {
            return Ok(None);
        };
        if !self.first_whole() {
            return Err(());
        }
        let n = self
            .messages
            .iter()
            .take_while(|m| m.ts == first.ts)
            .count();
        Ok(Some((first.ts, n)))
    }

    /// The first `n` messages held, in order: each with its topic and payload.
    fn messages(&self, n: usize) -> impl Iterator<Item = (Message, &[u8], &[u8])> {
        framed(&self.bytes, self.head, self.messages.iter().take(n))
    }

    /// The first `n` messages held, in order: each with its topic, its payload and the
    /// payload prepared. The prepared payloads are taken, all `n` of them even if the
    /// iterator is dropped early; [`Ahead::pop`] of the same `n` follows. Over ZeroMQ
    /// only.
    fn prepared(&mut self, n: usize) -> impl Iterator<Item = (Message, &[u8], &[u8], Prepared)> {
        let prepared = self
            .prepared
            .as_mut()
            .expect("payloads prepared over ZeroMQ");
        framed(&self.bytes, self.head, self.messages.iter().take(n))
            .zip(prepared.drain(..n))
            .map(|((m, topic, payload), prepared)| (m, topic, payload, prepared))
    }

    /// Whether the first burst held is whole: checked at the cost of a look at its
    /// first and last messages.
    fn first_whole(&self) -> bool {
        match (self.messages.front(), self.messages.back()) {
            (Some(first), Some(last)) => last.ts != first.ts || self.ended,
            _ => false,
        }
    }

    /// Bytes the first `n` messages held take in a ring, framed and padded.
    fn framed_bytes(&self, n: usize) -> u64 {
        self.messages
            .iter()
            .take(n)
            .map(|m| (8 + m.topic + m.payload).next_multiple_of(8) as u64)
            .sum()
    }

    /// Bytes of the messages held.
    fn held(&self) -> usize {
        self.bytes.len() - self.head
    }

    /// Drops the first `n` messages (their events stay until the exchange host takes
    /// them). Nothing is copied here: this runs between two due times ([`Ahead::push`]
    /// compacts).
    fn pop(&mut self, n: usize) {
        for m in self.messages.drain(..n) {
            self.head += (m.topic + m.payload) as usize;
        }
        if self.messages.is_empty() {
            self.bytes.clear();
            self.head = 0;
        }
    }
}

/// `messages` with their topics and payloads, held back to back in `bytes` from `head`.
fn framed<'a>(
    bytes: &'a [u8],
    mut at: usize,
    messages: impl Iterator<Item = &'a Message>,
) -> impl Iterator<Item = (Message, &'a [u8], &'a [u8])> {
    messages.map(move |&m| {
        let (topic, payload) =
            bytes[at..at + (m.topic + m.payload) as usize].split_at(m.topic as usize);
        at += (m.topic + m.payload) as usize;
        (m, topic, payload)
    })
}

/// What is read ahead, and where from.
struct Feed<'s> {
    ahead: Ahead,
    source: &'s mut EventSource,
    /// Whether the events themselves are kept (for an exchange host).
    keep: bool,
}

impl Feed<'_> {
    /// Reads, encodes and keeps the next event; false at the end of the data.
    fn read(&mut self, link: &mut Link<'_>) -> Result<bool> {
        let Some(event) = self.source.next_event()? else {
            self.ahead.ended = true;
            return Ok(false);
        };
        self.ahead.push(event, link.bus.encode(event), self.keep);
        Ok(true)
    }

    /// The first burst's time and events, read until it is whole; None when nothing is
    /// left.
    fn whole_burst(&mut self, link: &mut Link<'_>) -> Result<Option<(UnixNanos, usize)>> {
        loop {
            match self.ahead.first_burst() {
                Ok(Some(burst)) => return Ok(Some(burst)),
                Ok(None) if self.ahead.ended => return Ok(None),
                _ => {
                    self.read(link)?;
                }
            }
        }
    }
}

/// Events at most the exchange host takes between two looks at the clock while it
/// catches up (about 15 µs of its work).
const HOST_CHUNK: usize = 32;

/// Host work stops this long before the next burst is due, plus the burst's writing.
const HOST_MARGIN: Duration = Duration::from_micros(30);

/// Time allowed for writing one event of a burst into the rings (a copy of encoded
/// bytes): an estimate with room, not a measured figure; a profile in session 16 saw
/// up to 580 µs to write the largest bursts (up to 2,016 events).
const WRITE_PER_EVENT: Duration = Duration::from_nanos(500);

/// Time allowed for writing a burst of `n` events into the rings: [`WRITE_PER_EVENT`]
/// each, and a few microseconds for the burst.
fn write_time(n: usize) -> Duration {
    Duration::from_micros(5) + WRITE_PER_EVENT * n.min(u32::MAX as usize) as u32
}

/// Time kept before a burst of `n` events is due to write it and publish it: the host's
/// margin plus [`write_time`].
fn writing_time(n: usize) -> Duration {
    HOST_MARGIN + write_time(n)
}

/// Published bursts the exchange host has not taken yet, oldest first: their times and
/// how many of their events are left (the events themselves are [`Ahead::events`]);
/// and the host's answers to them on their way to being visible.
#[derive(Default)]
struct Lag {
    bursts: VecDeque<(UnixNanos, usize)>,
    /// Time of the last burst published.
    published: Option<UnixNanos>,
    /// The host's answers to market events written by the last [`catch_up`]: the
    /// events' time and how many messages.
    written: Vec<(UnixNanos, usize)>,
    /// Answers written behind bursts held: visible once the burst of the number beside
    /// them is released ([`super::out::BusOut::behind_held`]).
    unseen: VecDeque<(UnixNanos, usize, u64)>,
}

impl Lag {
    /// Notes the burst `(ts, events)` published: the host takes its events later when it
    /// takes any (`keep`).
    fn published_burst(&mut self, burst: (UnixNanos, usize), keep: bool) {
        if keep {
            self.bursts.push_back(burst);
        }
        self.published = Some(burst.0);
    }

    /// Places the answers just written and published: visible now when nothing is held,
    /// else once the last burst held is released.
    fn answers_written(&mut self, link: &Link<'_>, pacer: &mut Pacer) {
        match link.bus.behind_held() {
            None => {
                for (ts, n) in self.written.drain(..) {
                    pacer.answered(ts, n);
                }
            }
            Some(last) => self
                .unseen
                .extend(self.written.drain(..).map(|(ts, n)| (ts, n, last))),
        }
    }

    /// Notes the answers the bursts held released so far made visible.
    fn answers_released(&mut self, link: &Link<'_>, pacer: &mut Pacer) {
        let released = link.bus.held_released();
        while let Some((ts, n, _)) = self.unseen.pop_front_if(|a| a.2 <= released) {
            pacer.answered(ts, n);
        }
    }

    /// Hands the events of the bursts left (the front of `events`) to `take` with their
    /// burst's time, oldest first, [`HOST_CHUNK`] at most at a time, while `time_left()`
    /// says so before each chunk. True once every burst is taken.
    fn drain(
        &mut self,
        events: &mut VecDeque<Event>,
        time_left: impl Fn() -> bool,
        mut take: impl FnMut(UnixNanos, std::collections::vec_deque::Drain<'_, Event>) -> Result<()>,
    ) -> Result<bool> {
        while let Some(&(ts, left)) = self.bursts.front() {
            if !time_left() {
                return Ok(false);
            }
            let k = left.min(HOST_CHUNK);
            take(ts, events.drain(..k))?;
            if k == left {
                self.bursts.pop_front();
            } else if let Some(front) = self.bursts.front_mut() {
                front.1 -= k;
            }
        }
        Ok(true)
    }
}

/// The paced loop without lockstep. Recorded data comes in bursts that share one
/// `ts_recv` (a depth update of many levels, a snapshot): up to thousands of events due
/// at the same instant, sometimes a fraction of a millisecond after the previous burst
/// at `--speed 10`.
///
/// Events are read and encoded ahead whenever the replay has time before the next due
/// time (up to [`AHEAD_BYTES`]). Over shared memory, each burst is then written into the
/// rings unpublished (the exchange host's messages due before it first), published at
/// its due time with one store per ring, and the sleeping readers woken; a burst larger
/// than a ring's staging share is published in parts, from its due time on. Over
/// ZeroMQ, where every send is visible at once, the host's messages due before a burst
/// are sent ahead of it, and its events at its due time, back to back ([`send_burst`]):
/// each is late only by the sends before it. Nothing is visible before its due time.
///
/// The exchange host takes each burst's events only after the burst is published, in
/// the time left before the next one is due ([`catch_up`]): its messages about them
/// (fills, order updates) follow the burst, and the strategies' requests are read once
/// it has taken everything published, dated at the last burst. So the simulated
/// exchange is never ahead of what the strategies were shown, and where the data is
/// denser than the host's work (a burst of thousands of events, hundreds of
/// microseconds of matching, due just before the next) the host falls behind for a
/// while instead of making the next burst late: its messages and the answers to
/// requests come later, the market data on time.
///
/// With a backup publisher, each burst is written and held ([`hold_ahead`]) as soon as
/// it is read whole and due within its [`hold_window`]: while reading ahead, while
/// waiting for the burst before it, and in a pause of the host's work
/// ([`work_and_hold`]). The backup publishes it at its due time if this thread has not,
/// so a stall of this thread's core while it works for the host no longer makes the
/// burst late.
pub(super) fn stream(
    link: &mut Link<'_>,
    source: &mut EventSource,
    state: &mut Loop<'_>,
    stop: &Stop,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Result<UnixNanos> {
    let write_ahead = link.bus.has_backup();
    // Over shared memory a burst is written ahead and published with one store; over
    // ZeroMQ it stays read ahead, its payloads prepared as libzmq messages, until its
    // due time.
    let staged = link.bus.shm().is_some();
    let mut feed = Feed {
        ahead: Ahead {
            prepared: (!staged).then(VecDeque::new),
            ..Ahead::default()
        },
        source,
        keep: link.host.is_some(),
    };
    let mut lag = Lag::default();
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut last_ts = 0;
    let mut last_progress = Instant::now();
    while !stop.is_set() {
        let (burst, part, mut ticket) = match held.pop_front() {
            Some(h) => {
                state.heartbeat.tick(&mut link.bus.zmq)?;
                // The bursts due soon behind this one (written already) are held first;
                // then the host's work on what is out, in the time left before it, held
                // up for each burst that comes due soon meanwhile. What it sends
                // follows the bursts held.
                let next = hold_ahead(link, state, &mut feed, &mut held, h.ts)?;
                let front = (h.ts, HOST_MARGIN);
                work_and_hold(link, state, (&mut feed, &mut lag, &mut held), front, next)?;
                ((h.ts, h.part.events), h.part, h.ticket)
            }
            None => {
                let Some((ts, n)) = feed.whole_burst(link)? else {
                    break;
                };
                state.heartbeat.tick(&mut link.bus.zmq)?;
                // The host's work on what is out, while this burst leaves time for it.
                let front = (ts, if staged { writing_time(n) } else { HOST_MARGIN });
                if write_ahead {
                    // This burst is held once it is due soon, and the host's work goes
                    // on behind it; a host done before then leaves it to be written now.
                    let next = hold_ahead(link, state, &mut feed, &mut held, ts)?;
                    if held.is_empty() {
                        work_and_hold(link, state, (&mut feed, &mut lag, &mut held), front, next)?;
                    }
                    if !held.is_empty() {
                        continue;
                    }
                } else {
                    catch_up(link, state, &mut feed.ahead, &mut lag, Some(front), None)?;
                }
                let began = Instant::now();
                let mut ticket = Ticket::default();
                let host_ready = lag.bursts.is_empty();
                let part = if staged {
                    let (unpublished, written) = write_burst(
                        link,
                        state,
                        &feed.ahead,
                        (ts, n),
                        host_ready,
                        began,
                        &mut ticket,
                    )?;
                    feed.ahead.pop(n);
                    Part {
                        events: unpublished,
                        began,
                        written,
                        held: false,
                    }
                } else {
                    // What the host sends before the burst goes now, the burst itself
                    // at its due time (it stays read ahead until then).
                    if host_ready {
                        before_burst(link, state, ts)?;
                    }
                    Part {
                        events: n,
                        began,
                        written: began,
                        held: false,
                    }
                };
                ((ts, n), part, ticket)
            }
        };
        let ts = burst.0;
        let mut next_hold = if write_ahead {
            hold_ahead(link, state, &mut feed, &mut held, ts)?
        } else {
            NextHold::Never
        };
        // While the burst waits for its time: read ahead, and hold each burst read
        // that is due soon.
        while feed.ahead.held() < AHEAD_BYTES
            && !feed.ahead.ended
            && state.pacer.until_due(ts) > READ_MARGIN
            && !stop.is_set()
        {
            feed.read(link)?;
            if next_hold.now(&feed.ahead) {
                next_hold = hold_ahead(link, state, &mut feed, &mut held, ts)?;
            }
        }
        // Read far enough ahead: the rest of the wait holds each burst read as it comes
        // due soon (the bursts of a cluster a few microseconds apart are so held before
        // the first of them is published).
        while let NextHold::At(at) = next_hold {
            let front_due = state.pacer.due_at(ts);
            if stop.is_set() || front_due.is_none_or(|due| at + READ_MARGIN >= due) {
                break;
            }
            state.pacer.wait_until(at);
            next_hold = hold_ahead(link, state, &mut feed, &mut held, ts)?;
        }
        if staged {
            publish(link, state.pacer, ts, part, &mut ticket);
            lag.answers_released(link, state.pacer);
        } else {
            send_burst(link, state.pacer, &mut feed.ahead, burst)?;
        }
        lag.published_burst(burst, feed.keep);
        // The bursts held that are due by now go out at once, each its own publication,
        // with no host work between them: a cluster of bursts microseconds apart leaves
        // no time for it, and a loop per burst would make the last of them late.
        while let Some(h) = held.pop_front_if(|h| state.pacer.until_due(h.ts).is_zero()) {
            let (burst, mut ticket) = ((h.ts, h.part.events), h.ticket);
            publish(link, state.pacer, h.ts, h.part, &mut ticket);
            lag.answers_released(link, state.pacer);
            lag.published_burst(burst, feed.keep);
        }
        last_ts = lag.published.unwrap_or(ts);
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            link.stats.elapsed_secs = state.started.elapsed().as_secs_f64();
            on_progress(Progress {
                stats: &link.stats,
                ts,
                waiting_for: &[],
            });
        }
    }
    // A stop with bursts held: they go out now (a stop ends the run).
    for _ in held.drain(..) {
        link.bus.release_held();
    }
    lag.answers_released(link, state.pacer);
    // The end (or a stop): the host takes everything published.
    catch_up(link, state, &mut feed.ahead, &mut lag, None, None)?;
    Ok(last_ts)
}

/// With a backup publisher: the exchange host's work on what is out while the burst
/// `front` (its time, and the margin to keep before it is due) leaves time, paused at
/// each instant a burst read ahead comes due soon (`next`, from [`hold_ahead`]) to hold
/// it, so the host's work never keeps a burst from being held. Says when to try again.
fn work_and_hold(
    link: &mut Link<'_>,
    state: &mut Loop<'_>,
    (feed, lag, held): (&mut Feed<'_>, &mut Lag, &mut VecDeque<Held>),
    front: (UnixNanos, Duration),
    mut next: NextHold,
) -> Result<NextHold> {
    loop {
        let pause = match next {
            NextHold::At(at) => Some(at),
            _ => None,
        };
        catch_up(link, state, &mut feed.ahead, lag, Some(front), pause)?;
        let now = Instant::now();
        match next {
            NextHold::At(at) if now >= at && state.pacer.until_due(front.0) > front.1 => {
                next = hold_ahead(link, state, feed, held, front.0)?;
            }
            _ => return Ok(next),
        }
    }
}

/// The exchange host takes the events of the bursts published, oldest first, while the
/// burst `next` (its time, and the margin to keep before it is due) leaves time and
/// until `pause`; once it has taken all of them, the strategies' requests are read
/// (dated at the last burst published). Its messages are published either way.
fn catch_up(
    link: &mut Link<'_>,
    state: &mut Loop<'_>,
    ahead: &mut Ahead,
    lag: &mut Lag,
    next: Option<(UnixNanos, Duration)>,
    pause: Option<Instant>,
) -> Result<()> {
    let Some(published) = lag.published else {
        return Ok(());
    };
    let pacer = &*state.pacer;
    let time_left = || {
        next.is_none_or(|(ts, margin)| pacer.until_due(ts) > margin)
            && pause.is_none_or(|at| Instant::now() < at)
    };
    let mut caught_up = true;
    if let Some(h) = link.host.as_deref_mut() {
        let (marks, out) = (&mut *state.marks, &mut link.out);
        let mut written = std::mem::take(&mut lag.written);
        caught_up = lag.drain(&mut ahead.events, time_left, |ts, events| {
            // Both apply only what is due strictly before `ts` and not applied yet:
            // a burst taken in several chunks repeats them harmlessly.
            marks.before(h, ts, out)?;
            h.advance_before(ts, out)?;
            let before = out.len();
            for event in events {
                h.on_market(&event, out)?;
            }
            if out.len() > before {
                written.push((ts, out.len() - before));
            }
            Ok(())
        })?;
        lag.written = written;
    }
    if caught_up && time_left() {
        link.pump(published, Duration::ZERO)?;
    } else {
        link.flush()?;
    }
    link.bus.commit();
    link.bus.wake_sleepers();
    lag.answers_written(link, state.pacer);
    Ok(())
}

/// Writes the burst of `n` events at `ts` (the first `n` held) into the rings, after the
/// marks and queued orders due before it when the host has taken everything published
/// (`host_ready`; otherwise [`catch_up`] applies them later); returns how many of its
/// events are written and not yet published, posted to the backup publisher (if one
/// runs) under `ticket`, and when their writing ended. A ring without room to take more
/// ahead has what it holds published at the due time, and the rest follows.
fn write_burst(
    link: &mut Link<'_>,
    state: &mut Loop<'_>,
    ahead: &Ahead,
    (ts, n): (UnixNanos, usize),
    host_ready: bool,
    began: Instant,
    ticket: &mut Ticket,
) -> Result<(usize, Instant)> {
    if host_ready {
        before_burst(link, state, ts)?;
    }
    let due = state.pacer.due_at(ts);
    let mut unpublished = 0;
    for (m, topic, payload) in ahead.messages(n) {
        // Never published early: a ring without room waits for the due time first.
        if !link.bus.can_stage(BURST_ROOM) {
            let part = Part {
                events: unpublished,
                began,
                written: Instant::now(),
                held: false,
            };
            publish(link, state.pacer, ts, part, ticket);
            unpublished = 0;
        }
        link.bus.send_raw(topic, payload)?;
        unpublished += 1;
        count(&mut link.stats, m.ts, m.gap);
        if unpublished.is_multiple_of(POST_EVERY) {
            ticket.post(link, due, unpublished, false);
        }
    }
    ticket.post(link, due, unpublished, false);
    Ok((unpublished, Instant::now()))
}

/// What the exchange host sends before the burst at `ts`, once it has taken everything
/// published: the marks and the queued orders due before it.
fn before_burst(link: &mut Link<'_>, state: &mut Loop<'_>, ts: UnixNanos) -> Result<()> {
    if let Some(h) = link.host.as_deref_mut() {
        state.marks.before(h, ts, &mut link.out)?;
        h.advance_before(ts, &mut link.out)?;
    }
    link.flush()
}

/// Over ZeroMQ: waits for the due time of the burst `(ts, n)`, the first `n` messages
/// read ahead, and sends them back to back, each visible once its send returns.
fn send_burst(
    link: &mut Link<'_>,
    pacer: &mut Pacer,
    ahead: &mut Ahead,
    (ts, n): (UnixNanos, usize),
) -> Result<()> {
    // Waits for the first; the others are due already.
    pacer.wait_for(ts);
    let mut sent = Ok(());
    for (m, topic, payload, prepared) in ahead.prepared(n) {
        debug_assert_eq!(m.ts, ts);
        sent = link.bus.send_prepared(topic, payload, prepared);
        if sent.is_err() {
            break;
        }
        // Only the clock is read between two sends: the rest waits for the burst's end.
        pacer.sent_in_burst();
        count(&mut link.stats, m.ts, m.gap);
    }
    pacer.burst_sent();
    ahead.pop(n);
    sent
}

/// With a backup publisher, the bursts due within this much of the clock (plus the time
/// to write them, [`hold_window`]) are written into the rings as soon as they are read,
/// ahead of the exchange host's work, and held until their due time: if this thread's
/// core is taken for a while, the backup still publishes each of them on time. What the
/// host sends meanwhile (fills, order updates, replies) comes after the bursts held, so
/// up to this much (and a large burst's writing) later than without a backup.
const HOLD_WINDOW: Duration = Duration::from_millis(1);

/// How long before its due time a burst of `n` events is held: [`HOLD_WINDOW`] plus the
/// time to write it, so a large burst is as far ahead once written as a small one.
fn hold_window(n: usize) -> Duration {
    HOLD_WINDOW + writing_time(n)
}

/// Bursts held at most at once (below the backup's open tickets): at `--speed 10` a
/// cluster of trades brings hundreds of bursts, microseconds apart, within a window.
const MAX_HELD: usize = 240;
const _: () = assert!(MAX_HELD < crate::shm::backup::TICKETS as usize);

/// A burst written ahead and held ([`hold_ahead`]): its time, what is published of it
/// (all its events), and its ticket.
struct Held {
    ts: UnixNanos,
    part: Part,
    ticket: Ticket,
}

/// When [`hold_ahead`] is worth calling again while the burst `front` waits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum NextHold {
    /// Once the first burst read ahead is whole.
    Whole,
    /// From this instant on (the first burst is whole, not due soon enough yet).
    At(Instant),
    /// Not before `front` is published: no room, no time, or [`MAX_HELD`].
    Never,
}

impl NextHold {
    /// Whether to call [`hold_ahead`] now: a look at the first and last messages read
    /// ahead, or at the clock.
    fn now(self, ahead: &Ahead) -> bool {
        match self {
            NextHold::Whole => ahead.first_whole(),
            NextHold::At(at) => Instant::now() >= at,
            NextHold::Never => false,
        }
    }
}

/// Writes the bursts read whole and due within their [`hold_window`] into the rings,
/// each held and posted to the backup publisher, while the rings have room to stage it
/// and the time before the burst due next (`front`) leaves room to write it (reading the
/// first burst whole first if need be, while `front` leaves time). Says when to try
/// again.
fn hold_ahead(
    link: &mut Link<'_>,
    state: &mut Loop<'_>,
    feed: &mut Feed<'_>,
    held: &mut VecDeque<Held>,
    front: UnixNanos,
) -> Result<NextHold> {
    loop {
        // The first burst read ahead is read whole here if need be (one event past it),
        // while `front` leaves the time and the buffer the room.
        while !feed.ahead.first_whole()
            && !feed.ahead.ended
            && feed.ahead.held() < AHEAD_BYTES
            && state.pacer.until_due(front) > READ_MARGIN
        {
            feed.read(link)?;
        }
        let ahead = &mut feed.ahead;
        let Ok(Some((ts, n))) = ahead.first_burst() else {
            return Ok(NextHold::Whole);
        };
        let Some(due) = state.pacer.due_at(ts) else {
            return Ok(NextHold::Never);
        };
        let window = hold_window(n);
        if due.saturating_duration_since(Instant::now()) > window {
            return Ok(NextHold::At(due - window));
        }
        if held.len() >= MAX_HELD
            || state.pacer.until_due(front) <= write_time(n)
            || !link.bus.can_stage(ahead.framed_bytes(n) + BURST_ROOM)
        {
            return Ok(NextHold::Never);
        }
        let began = Instant::now();
        let mut ticket = Ticket::default();
        link.bus.hold_next();
        for (i, (m, topic, payload)) in ahead.messages(n).enumerate() {
            link.bus.send_raw(topic, payload)?;
            count(&mut link.stats, m.ts, m.gap);
            if (i + 1).is_multiple_of(POST_EVERY) {
                ticket.post(link, Some(due), i + 1, true);
            }
        }
        // Also marks where the burst held ends.
        ticket.post(link, Some(due), n, true);
        ahead.pop(n);
        let part = Part {
            events: n,
            began,
            written: Instant::now(),
            held: true,
        };
        held.push_back(Held { ts, part, ticket });
    }
}

/// While a burst is written, what is written so far is posted to the backup publisher
/// every this many events: if this thread's core is taken while it writes, the backup
/// still publishes what was written at the due time (and, past it, as it comes).
const POST_EVERY: usize = 64;

/// The backup publisher's ticket for a burst (or the part of one) being written: its
/// number, once posted.
#[derive(Default)]
struct Ticket(Option<u64>);

impl Ticket {
    /// Posts what is written of the burst (staged, or `held`), `events` of it, for
    /// publication at `due` (nothing without a backup publisher or a due time).
    fn post(&mut self, link: &mut Link<'_>, due: Option<Instant>, events: usize, held: bool) {
        let Some(due) = due else {
            return;
        };
        let tag = events as u64;
        let id = if held {
            link.bus.post_held(due, tag, self.0)
        } else {
            link.bus.post_staged(due, tag, self.0)
        };
        self.0 = id.or(self.0);
    }

    /// Takes the ticket back: when the backup published first, when, and how many of the
    /// events it had published then.
    fn take_back(&mut self, link: &mut Link<'_>) -> Option<(Instant, usize)> {
        let id = self.0.take()?;
        let (at, tag) = link.bus.take_back(id)?;
        Some((at, tag as usize))
    }
}

/// What [`publish`] publishes: `events` of a burst, its writing begun at `began` and
/// ended at `written`, staged or `held`.
struct Part {
    events: usize,
    began: Instant,
    written: Instant,
    held: bool,
}

/// Waits for the due time of `ts`, publishes what is written (the part of its burst,
/// and what the exchange host wrote before it), and wakes the sleeping readers. With a
/// backup publisher, a staged part is posted to it first (once more, in case more was
/// written since): it publishes at the due time if this thread has not.
fn publish(link: &mut Link<'_>, pacer: &mut Pacer, ts: UnixNanos, part: Part, ticket: &mut Ticket) {
    if part.held {
        pacer.wait_for(ts);
        link.bus.release_held();
    } else {
        ticket.post(link, pacer.due_at(ts), part.events, false);
        pacer.wait_for(ts);
        link.bus.commit();
    }
    let covered = ticket.take_back(link);
    if part.held {
        pacer.held_burst(part.events);
    }
    pacer.written_ahead(ts, part.events, part.written);
    pacer.published_burst(part.events, part.began, covered);
    link.bus.wake_sleepers();
    pacer.woken();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Fixed, Flags, Side};

    fn event(ts: UnixNanos, price: i64) -> Event {
        let body = Body::Book(BookDelta {
            side: Side::Bid,
            price: Fixed::new(price, 0),
            size: Fixed::new(1, 0),
            flags: Flags::default(),
        });
        let mut e = crate::wire::event("v", "S", ts, 1, body);
        e.ts_recv = ts;
        e
    }

    /// Every message comes back byte for byte, bursts end where `ts_recv` changes, a
    /// burst is whole only once a later event (or the end) is held, and the buffer is
    /// reused once emptied.
    #[test]
    fn messages_held_ahead_come_back_whole_in_bursts() {
        let mut ahead = Ahead::default();
        let all: Vec<(Event, Vec<u8>, Vec<u8>)> = [(10, 1), (10, 2), (10, 3), (20, 4), (30, 5)]
            .into_iter()
            .map(|(ts, p)| {
                let e = event(ts, p);
                let topic = format!("topic-{p}").into_bytes();
                let payload = vec![p as u8; p as usize * 7];
                (e, topic, payload)
            })
            .collect();
        assert_eq!(ahead.first_burst(), Ok(None));
        for (e, t, p) in &all[..3] {
            ahead.push(e, (t, p), true);
        }
        assert_eq!(ahead.first_burst(), Err(()), "not whole yet");
        ahead.push(&all[3].0, (&all[3].1, &all[3].2), true);
        assert_eq!(ahead.first_burst(), Ok(Some((10, 3))));
        let got: Vec<_> = ahead.messages(3).map(|(_, t, p)| (t, p)).collect();
        let want: Vec<_> = all[..3].iter().map(|(_, t, p)| (&t[..], &p[..])).collect();
        assert_eq!(got, want);
        assert_eq!(
            ahead.events.iter().take(3).cloned().collect::<Vec<_>>(),
            [all[0].0.clone(), all[1].0.clone(), all[2].0.clone()]
        );
        ahead.pop(3);
        assert_eq!(ahead.first_burst(), Err(()), "20 is not whole yet");
        let (_, t, p) = ahead.messages(1).next().unwrap();
        assert_eq!((t, p), (&all[3].1[..], &all[3].2[..]));
        ahead.push(&all[4].0, (&all[4].1, &all[4].2), false);
        ahead.pop(1);
        ahead.ended = true;
        assert_eq!(
            ahead.first_burst(),
            Ok(Some((30, 1))),
            "the end makes it whole"
        );
        assert_eq!(
            ahead.events,
            [
                all[0].0.clone(),
                all[1].0.clone(),
                all[2].0.clone(),
                all[3].0.clone()
            ],
            "published events stay for the host; events are kept only when asked"
        );
        ahead.pop(1);
        assert_eq!(ahead.first_burst(), Ok(None));
        assert_eq!((ahead.bytes.len(), ahead.head), (0, 0), "emptied, reused");
    }

    /// When to try holding again: once the first burst is whole (a later event read, or
    /// the end), from an instant on, or not at all; and the hold window grows with the
    /// burst's writing.
    #[test]
    fn the_next_hold_waits_for_a_whole_burst_or_its_instant() {
        let mut ahead = Ahead::default();
        ahead.push(&event(10, 1), (b"t", b"p"), false);
        assert!(!NextHold::Whole.now(&ahead), "one event: not whole yet");
        ahead.push(&event(10, 2), (b"t", b"p"), false);
        assert!(!NextHold::Whole.now(&ahead), "same time: not whole yet");
        ahead.push(&event(20, 3), (b"t", b"p"), false);
        assert!(NextHold::Whole.now(&ahead), "a later event makes it whole");
        let mut ended = Ahead::default();
        ended.push(&event(10, 1), (b"t", b"p"), false);
        ended.ended = true;
        assert!(NextHold::Whole.now(&ended), "the end makes it whole");
        assert!(!NextHold::Whole.now(&Ahead::default()), "nothing read");
        let now = Instant::now();
        assert!(NextHold::At(now).now(&ahead));
        assert!(!NextHold::At(now + Duration::from_secs(60)).now(&ahead));
        assert!(!NextHold::Never.now(&ahead));
        assert!(hold_window(2_000) > hold_window(1) && hold_window(1) > HOLD_WINDOW);
        assert_eq!(hold_window(2_000) - hold_window(1), WRITE_PER_EVENT * 1_999);
    }

    /// The host takes the bursts published in order, a chunk at a time, stops when time
    /// runs out (never in the middle of a chunk) and resumes where it stopped.
    #[test]
    fn the_host_takes_what_is_published_in_order_and_resumes_where_time_ran_out() {
        let mut lag = Lag::default();
        lag.bursts.extend([(10, 3), (20, 40), (30, 1)]);
        let mut events: VecDeque<Event> =
            (0..44).map(|i| event(i, 1)).chain([event(99, 1)]).collect();
        let looks = std::cell::Cell::new(0);
        let mut taken = Vec::new();
        let done = lag
            .drain(
                &mut events,
                || {
                    looks.set(looks.get() + 1);
                    looks.get() <= 2
                },
                |ts, chunk| {
                    taken.push((ts, chunk.map(|e| e.ts_recv).collect::<Vec<_>>()));
                    Ok(())
                },
            )
            .unwrap();
        assert!(!done, "time ran out");
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0], (10, vec![0, 1, 2]));
        assert_eq!(
            taken[1],
            (20, (3..3 + HOST_CHUNK as i64).collect::<Vec<_>>())
        );
        assert_eq!(lag.bursts, [(20, 40 - HOST_CHUNK), (30, 1)]);
        taken.clear();
        assert!(
            lag.drain(
                &mut events,
                || true,
                |ts, chunk| {
                    taken.push((ts, chunk.map(|e| e.ts_recv).collect::<Vec<_>>()));
                    Ok(())
                }
            )
            .unwrap()
        );
        assert_eq!(
            taken[0],
            (20, (3 + HOST_CHUNK as i64..43).collect::<Vec<_>>())
        );
        assert_eq!(taken[1], (30, vec![43]));
        assert!(lag.bursts.is_empty());
        assert_eq!(events.len(), 1, "what is not published stays: {events:?}");
    }

    /// Over ZeroMQ each payload is copied into a libzmq message as it is read; a burst
    /// takes its own, all of them even when its sending stops early, and the next burst
    /// gets the next ones.
    #[test]
    fn payloads_prepared_as_read_are_taken_a_burst_at_a_time() {
        let mut ahead = Ahead {
            prepared: Some(VecDeque::new()),
            ..Ahead::default()
        };
        let payload = |i: i64| format!("payload {i}").into_bytes();
        // Bursts at 10 (three events), 20 (two) and 30 (one).
        for (i, ts) in [10, 10, 10, 20, 20, 30].into_iter().enumerate() {
            let i = i as i64;
            ahead.push(&event(ts, i), (b"topic", &payload(i)), false);
        }
        assert_eq!(ahead.prepared.as_ref().unwrap().len(), 6);
        assert_eq!(ahead.first_burst(), Ok(Some((10, 3))));
        // A send that fails after the first message of the burst.
        let sent: Vec<_> = ahead
            .prepared(3)
            .take(1)
            .map(|(m, t, p, prepared)| (m.ts, t.to_vec(), p.to_vec(), prepared.as_bytes().to_vec()))
            .collect();
        assert_eq!(sent, [(10, b"topic".to_vec(), payload(0), payload(0))]);
        ahead.pop(3);
        assert_eq!(
            ahead.prepared.as_ref().unwrap().len(),
            3,
            "the burst's three are gone"
        );
        assert_eq!(ahead.first_burst(), Ok(Some((20, 2))));
        let sent: Vec<_> = ahead
            .prepared(2)
            .map(|(m, _, p, prepared)| (m.ts, p.to_vec(), prepared.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            sent,
            [(20, payload(3), payload(3)), (20, payload(4), payload(4))]
        );
        ahead.pop(2);
        let (_, _, p, prepared) = ahead.prepared(1).next().unwrap();
        assert_eq!((p, prepared.as_bytes()), (&payload(5)[..], &payload(5)[..]));
    }

    /// The buffer is compacted once half of it is spent, and what is held reads back
    /// the same after the move.
    #[test]
    fn a_half_spent_buffer_is_compacted_without_changing_what_is_held() {
        let mut ahead = Ahead::default();
        let payload = |i: usize| vec![(i % 251) as u8; 1000 + i % 7];
        for i in 0..600 {
            ahead.push(&event(i as i64, 1), (b"t", &payload(i)), false);
        }
        ahead.pop(400);
        assert!(ahead.head >= AHEAD_BYTES / 2, "{}", ahead.head);
        let held = ahead.held();
        ahead.push(&event(600, 1), (b"t", &payload(600)), false);
        assert_eq!(ahead.head, 0, "compacted");
        assert_eq!(ahead.held(), held + 1 + payload(600).len());
        for (k, (_, t, p)) in ahead.messages(usize::MAX).enumerate() {
            assert_eq!((t, p), (&b"t"[..], &payload(400 + k)[..]));
        }
        assert_eq!(ahead.messages(usize::MAX).count(), 201);
    }
}
