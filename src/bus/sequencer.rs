//! The publisher's `pub_seq`, numbered per topic.

use crate::event::Event;
use crate::wire;

/// Numbers events per topic: the publisher's `pub_seq`, starting at 1 on each topic.
#[derive(Default)]
pub struct Sequencer {
    next: rustc_hash::FxHashMap<String, u64>,
    topic: String,
}

impl Sequencer {
    /// Stamps `event.pub_seq` with the next number of its topic, and returns the topic
    /// (for [`Publisher::send_on`](super::Publisher::send_on), so it is built once per event).
    pub fn stamp(&mut self, event: &mut Event) -> &str {
        self.topic.clear();
        wire::write_topic(event, &mut self.topic);
        let seq = match self.next.get_mut(self.topic.as_str()) {
            Some(seq) => seq,
            None => self.next.entry(self.topic.clone()).or_insert(0),
        };
        *seq += 1;
        event.pub_seq = *seq;
        &self.topic
    }
}
