//! Where the replay's bus messages go: the ZeroMQ publisher (default, the live
//! interface), or the strategies' shared-memory rings (`transport = "shm"`,
//! `docs/SHM.md`). Both carry the same topics and payloads; under shared memory the
//! ZeroMQ publisher stays bound and carries only heartbeats, for observers.
//!
//! Owns the choice of transport for outgoing messages and their encoding into a reused
//! buffer. Never decides what is sent or when.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::bus::{Prepared, Publisher};
use crate::event::{Body, Event, Kind};
use crate::shm::Hub;
use crate::wire::{self, Encoding};

/// The replay's outgoing bus.
pub(crate) struct BusOut {
    /// The ZeroMQ publisher (heartbeats always; everything without shared memory).
    pub(crate) zmq: Publisher,
    /// The strategies' rings, shared with the gateway (which writes replies into them).
    shm: Option<Rc<RefCell<Hub>>>,
    encoder: Encoder,
    /// Bursts held so far ([`BusOut::hold_next`]) and released ([`BusOut::release_held`]).
    holds: (u64, u64),
}

/// Encodes events into reused buffers.
struct Encoder {
    encoding: Encoding,
    topic: String,
    /// The kind and names `topic` was written for (held, so comparing their pointers is
    /// sound): a run of one instrument writes each kind's topic once, not per event.
    topic_of: Option<(Kind, Arc<str>, Arc<str>)>,
    payload: Vec<u8>,
}

impl Encoder {
    /// The topic and payload `event` goes out as (valid until the next call).
    fn encode(&mut self, event: &Event) -> (&[u8], &[u8]) {
        let named = matches!(event.body, Body::Book(_) | Body::Trade(_) | Body::Gap(_));
        let same = named
            && self.topic_of.as_ref().is_some_and(|(k, v, s)| {
                *k == event.kind() && Arc::ptr_eq(v, &event.venue) && Arc::ptr_eq(s, &event.symbol)
            });
        if !same {
            self.topic.clear();
            wire::write_topic(event, &mut self.topic);
            self.topic_of =
                named.then(|| (event.kind(), event.venue.clone(), event.symbol.clone()));
        }
        self.payload.clear();
        wire::encode_as(self.encoding, event, &mut self.payload);
        (self.topic.as_bytes(), &self.payload)
    }
}

impl BusOut {
    /// Messages go to `zmq`, or to `shm` when given.
    pub(crate) fn new(zmq: Publisher, shm: Option<Rc<RefCell<Hub>>>, encoding: Encoding) -> BusOut {
        BusOut {
            zmq,
            shm,
            encoder: Encoder {
                encoding,
                topic: String::with_capacity(64),
                topic_of: None,
                payload: Vec::with_capacity(256),
            },
            holds: (0, 0),
        }
    }

    /// The shared-memory rings, when they carry the bus.
    pub(crate) fn shm(&self) -> Option<&Rc<RefCell<Hub>>> {
        self.shm.as_ref()
    }

    /// Encodes and sends one event.
    pub(crate) fn send(&mut self, event: &Event) -> Result<()> {
        let Some(hub) = &self.shm else {
            return self.zmq.send(event);
        };
        let (topic, payload) = self.encoder.encode(event);
        hub.borrow_mut().publish(topic, payload)
    }

    /// The topic and payload `event` goes out as over shared memory (valid until the
    /// next call), for a replay that writes its messages ahead of their turn.
    pub(crate) fn encode(&mut self, event: &Event) -> (&[u8], &[u8]) {
        self.encoder.encode(event)
    }

    /// Sends an encoded message.
    pub(crate) fn send_raw(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        match &self.shm {
            None => self.zmq.send_raw(topic, payload),
            Some(hub) => hub.borrow_mut().publish(topic, payload),
        }
    }

    /// Sends an encoded message over ZeroMQ, its payload prepared ahead
    /// ([`Publisher::send_prepared`]).
    pub(crate) fn send_prepared(
        &mut self,
        topic: &[u8],
        payload: &[u8],
        prepared: Prepared,
    ) -> Result<()> {
        debug_assert!(self.shm.is_none(), "a prepared message goes over ZeroMQ");
        self.zmq.send_prepared(topic, payload, prepared)
    }

    /// The end of the stream went out: strategies may exit from now on.
    pub(crate) fn ending(&mut self) {
        if let Some(hub) = &self.shm {
            hub.borrow_mut().ending();
        }
    }

    /// Stages bus messages from now on, or publishes them one by one again (see
    /// [`Hub::batch`]). Over ZeroMQ every send is visible at once: nothing to do.
    pub(crate) fn batch(&mut self, on: bool) {
        if let Some(hub) = &self.shm {
            hub.borrow_mut().batch(on);
        }
        if !on {
            // Nothing is held any more.
            self.holds.1 = self.holds.0;
        }
    }

    /// Makes staged messages visible (no wake-up: [`BusOut::wake_sleepers`]); true when
    /// any were staged.
    pub(crate) fn commit(&mut self) -> bool {
        self.shm
            .as_ref()
            .is_some_and(|hub| hub.borrow_mut().commit())
    }

    /// Starts the backup publisher over shared memory ([`Hub::start_backup`]); nothing
    /// to back up over ZeroMQ.
    pub(crate) fn start_backup(&mut self) -> Result<()> {
        match &self.shm {
            Some(hub) => hub.borrow_mut().start_backup(),
            None => Ok(()),
        }
    }

    /// Ends the backup publisher, if one runs.
    pub(crate) fn stop_backup(&mut self) {
        if let Some(hub) = &self.shm {
            hub.borrow_mut().stop_backup();
        }
    }

    /// The shared-memory rings while a backup publisher runs on them.
    fn backed_up(&self) -> Option<std::cell::RefMut<'_, Hub>> {
        self.shm
            .as_ref()
            .map(|hub| hub.borrow_mut())
            .filter(|hub| hub.has_backup())
    }

    /// Whether a backup publisher runs (bursts may then be written ahead and held).
    pub(crate) fn has_backup(&self) -> bool {
        self.backed_up().is_some()
    }

    /// Posts what is staged to the backup publisher, due at `due` (see
    /// [`Hub::post_staged`]).
    pub(crate) fn post_staged(
        &mut self,
        due: Instant,
        tag: u64,
        ticket: Option<u64>,
    ) -> Option<u64> {
        self.backed_up()?.post_staged(due, tag, ticket)
    }

    /// Starts a burst written ahead and held ([`Hub::hold_next`]); only with a backup.
    pub(crate) fn hold_next(&mut self) {
        let held = self.backed_up().map(|mut hub| hub.hold_next()).is_some();
        self.holds.0 += u64::from(held);
    }

    /// Posts the burst held last, as written so far, marking where it ends
    /// ([`Hub::post_held`]).
    pub(crate) fn post_held(&mut self, due: Instant, tag: u64, ticket: Option<u64>) -> Option<u64> {
        self.backed_up()?.post_held(due, tag, ticket)
    }

    /// Publishes the oldest burst held ([`Hub::release_held`]).
    pub(crate) fn release_held(&mut self) -> bool {
        if self.holds.1 < self.holds.0 {
            self.holds.1 += 1;
        }
        self.backed_up().is_some_and(|mut hub| hub.release_held())
    }

    /// While bursts are held, the number of the last one ([`BusOut::hold_next`] counts
    /// from 1): what is written now is visible once it is released. None when nothing
    /// is held (what is written is visible at the next commit).
    pub(crate) fn behind_held(&self) -> Option<u64> {
        (self.holds.1 < self.holds.0).then_some(self.holds.0)
    }

    /// How many bursts held were released so far.
    pub(crate) fn held_released(&self) -> u64 {
        self.holds.1
    }

    /// Takes back the tickets up to `last`: when the backup published some of it first,
    /// when, and the tag it published.
    pub(crate) fn take_back(&mut self, last: u64) -> Option<(Instant, u64)> {
        self.backed_up()?.take_back(last)
    }

    /// Wakes shared-memory readers that sleep with messages waiting.
    pub(crate) fn wake_sleepers(&mut self) {
        if let Some(hub) = &self.shm {
            hub.borrow_mut().wake_sleepers();
        }
    }

    /// Whether `bytes` more can be staged (see [`Hub::can_stage`]); false over ZeroMQ.
    pub(crate) fn can_stage(&mut self, bytes: u64) -> bool {
        self.shm
            .as_ref()
            .is_some_and(|hub| hub.borrow_mut().can_stage(bytes))
    }

    /// Wakes shared-memory readers for what was written (after a step marker); ZeroMQ
    /// needs nothing.
    pub(crate) fn wake(&mut self) {
        if let Some(hub) = &self.shm {
            hub.borrow_mut().wake_all();
        }
    }
}
