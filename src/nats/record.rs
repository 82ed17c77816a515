//! The recorder on a JetStream stream: a durable pull consumer whose messages are
//! acknowledged only once the journal holding them is flushed.
//!
//! At-least-once delivery from the broker plus the recorder's deduplication gives
//! exactly once in Parquet:
//! - a message is acked after [`Ingest`] flushed the journal it went into, so a kill
//!   loses nothing the broker will not deliver again;
//! - what a killed recorder journaled but had not acked is delivered again after the
//!   consumer's ack wait; the next session starts its deduplicator with the journal
//!   (`RecordConfig::durable_source`), so those copies are dropped.
//!
//! Several recorders may share one durable consumer (the broker spreads the messages,
//! each writes its own dataset) or use consumers with their own `--topic` filters; see
//! `docs/SCALE-OUT.md`. The broker's async client runs on this module's runtime; the
//! recording loop stays on the calling thread.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;

use super::{NatsConfig, PUBLISHER_HEADER, filter_of_topic_prefix, topic_of_subject};
use crate::record::{Ingest, RecordConfig, RecordStats};
use crate::shutdown::Stop;

/// How long a venue-sequence hole waits for its event over JetStream (`--gap-grace`
/// default with `--from`): a publisher whose ack was lost in a broker failover publishes
/// the message again, after the ones that followed it, up to its ack timeout plus a
/// leader election later.
pub const GAP_GRACE: Duration = Duration::from_secs(10);

/// The consumer side of a JetStream recording.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Durable consumer name: a restart with the same name resumes after the last ack.
    pub durable: String,
    /// How long the broker waits for an ack before delivering a message again (also
    /// how long a restarted recorder waits for what its killed predecessor had not
    /// acked). Must be well above the flush interval.
    pub ack_wait: Duration,
    /// Unacknowledged messages at most; the recorder flushes and acks at half of it.
    pub max_ack_pending: usize,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            durable: "ticktape-record".into(),
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 20_000,
        }
    }
}

/// Counters of the consumer beside [`RecordStats`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConsumerStats {
    /// Messages acknowledged.
    pub acked: u64,
    /// Deliveries that were redeliveries (the broker's count above one).
    pub redelivered: u64,
    /// Errors of the pull stream the client recovered from (missed heartbeats while a
    /// server restarts, leader changes).
    pub stream_errors: u64,
}

/// What the fetch task hands the recording loop. Errors are rare and messages many:
/// boxing the common variant would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
enum Delivery {
    Message(async_nats::Message, jetstream::message::Acker, bool),
    Error(String),
}

/// Records a JetStream stream into `config.dataset` until stopped (or until every
/// publisher ended, with `until_eos`). `on_status` sees the counters about five times a
/// second.
pub fn run(
    config: &RecordConfig,
    nats: &NatsConfig,
    consumer: &ConsumerConfig,
    stop: &Stop,
    mut on_status: impl FnMut(&RecordStats, &ConsumerStats),
) -> Result<(RecordStats, ConsumerStats)> {
    super::check_servers(nats)?;
    if consumer.ack_wait <= config.flush_interval * 2 {
        bail!(
            "--ack-wait {:?} must be more than twice the flush interval {:?}: the broker would deliver again what is about to be acknowledged",
            consumer.ack_wait,
            config.flush_interval
        );
    }
    let filters = if config.topics.is_empty() {
        Vec::new()
    } else {
        crate::bus::with_control_topics(&config.topics)
            .iter()
            .map(|t| filter_of_topic_prefix(&nats.subject_prefix, t))
            .collect::<Result<Vec<_>>>()?
    };
    let config = RecordConfig {
        durable_source: true,
        connect: Vec::new(),
        ..config.clone()
    };
    let mut ingest = Ingest::open(&config)?;
    let runtime = super::runtime("record")?;
    let (deliveries, incoming) = crossbeam_channel::unbounded::<Delivery>();
    let (acks, ack_queue) =
        tokio::sync::mpsc::unbounded_channel::<Vec<jetstream::message::Acker>>();
    let (client, ack_task, pull_consumer) = runtime.block_on(async {
        let client = super::connect(nats).await?;
        let js = jetstream::new(client.clone());
        super::ensure_stream(&js, nats).await?;
        let stream = js
            .get_stream(&nats.stream)
            .await
            .with_context(|| format!("cannot open stream {}", nats.stream))?;
        let pull_consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &consumer.durable,
                pull::Config {
                    durable_name: Some(consumer.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: consumer.ack_wait,
                    max_ack_pending: consumer.max_ack_pending as i64,
                    filter_subjects: filters.clone(),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| {
                format!(
                    "cannot create or open durable consumer {} on stream {}",
                    consumer.durable, nats.stream
                )
            })?;
        let existing = &pull_consumer.cached_info().config;
        let mut has: Vec<String> = existing.filter_subjects.clone();
        if !existing.filter_subject.is_empty() {
            has.push(existing.filter_subject.clone());
        }
        let (mut want, mut had) = (filters.clone(), has.clone());
        want.sort();
        had.sort();
        if want != had {
            bail!(
                "durable consumer {} exists with subject filters {:?}, but this recording asks for {:?}: use another --consumer name, or the same --topic as before",
                consumer.durable,
                had,
                want
            );
        }
        let messages = pull_consumer
            .stream()
            .max_messages_per_batch(1000)
            .heartbeat(Duration::from_secs(2))
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .with_context(|| format!("cannot pull from consumer {}", consumer.durable))?;
        tokio::spawn(fetch(messages, deliveries));
        let acker = tokio::spawn(acknowledge(ack_queue));
        Ok::<_, anyhow::Error>((client, acker, pull_consumer))
    })?;

    let mut stats = ConsumerStats::default();
    let mut pending: Vec<jetstream::message::Acker> = Vec::with_capacity(consumer.max_ack_pending);
    let ack_at = (consumer.max_ack_pending / 2).max(1);
    let mut last_status = Instant::now();
    let mut last_warning: Option<Instant> = None;
    let mut frames: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut last_drain_check = Instant::now();
    let result = (|| -> Result<()> {
        while !stop.is_set() {
            // End of stream over a durable consumer: every publisher ended, and the
            // broker has nothing left for this consumer, neither new nor to redeliver.
            if config.until_eos
                && ingest.all_ended()
                && pending.is_empty()
                && incoming.is_empty()
                && last_drain_check.elapsed() >= Duration::from_millis(200)
            {
                last_drain_check = Instant::now();
                let info = runtime.block_on(pull_consumer.get_info());
                if info.is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0) {
                    break;
                }
            }
            let wait = ingest
                .until_flush(Instant::now())
                .min(Duration::from_millis(50));
            let mut next = incoming.recv_timeout(wait).ok();
            let mut burst = 0u32;
            while let Some(delivery) = next {
                match delivery {
                    Delivery::Message(message, acker, redelivered) => {
                        stats.redelivered += redelivered as u64;
                        let publisher = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(PUBLISHER_HEADER))
                            .map_or("nats", |v| v.as_str());
                        let source = ingest.source(publisher);
                        frames[0].clear();
                        match topic_of_subject(&nats.subject_prefix, message.subject.as_str()) {
                            Some(topic) => frames[0].extend_from_slice(topic.as_bytes()),
                            None => frames[0].extend_from_slice(message.subject.as_bytes()),
                        }
                        frames[1].clear();
                        frames[1].extend_from_slice(&message.payload);
                        let before = ingest.flushes();
                        ingest.on_message(source, &frames, Instant::now())?;
                        if ingest.flushes() != before {
                            // Flushed while taking this message: those before it are durable.
                            stats.acked += pending.len() as u64;
                            let _ = acks.send(std::mem::take(&mut pending));
                        }
                        pending.push(acker);
                        if pending.len() >= ack_at {
                            ingest.flush_now()?;
                            stats.acked += pending.len() as u64;
                            let _ = acks.send(std::mem::take(&mut pending));
                        }
                    }
                    Delivery::Error(e) => {
                        stats.stream_errors += 1;
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_warning = Some(Instant::now());
                            eprintln!(
                                "warning: NATS consumer {}: {e} (retrying)",
                                consumer.durable
                            );
                        }
                    }
                }
                burst += 1;
                if burst >= 10_000 || ingest.until_flush(Instant::now()).is_zero() {
                    break;
                }
                next = incoming.try_recv().ok();
            }
            let before = ingest.flushes();
            ingest.on_tick(Instant::now())?;
            if ingest.flushes() != before && !pending.is_empty() {
                stats.acked += pending.len() as u64;
                let _ = acks.send(std::mem::take(&mut pending));
            }
            if last_status.elapsed() >= Duration::from_millis(200) {
                last_status = Instant::now();
                on_status(ingest.stats(), &stats);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Nothing is acked that was not flushed: the broker delivers the rest again.
        drop(acks);
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Err(e);
    }
    // Close flushes the journal and writes Parquet; only then are the last messages acked.
    let record_stats = ingest.close()?;
    stats.acked += pending.len() as u64;
    let _ = acks.send(std::mem::take(&mut pending));
    drop(acks);
    runtime.block_on(async {
        // The ack task ends when its channel closes; then the acks leave the client's
        // buffer.
        let _ = tokio::time::timeout(Duration::from_secs(5), ack_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    on_status(&record_stats, &stats);
    Ok((record_stats, stats))
}

/// Pulls messages and hands them to the recording loop. The consumer's
/// `max_ack_pending` bounds how many can be outstanding, so the channel stays bounded.
async fn fetch(mut messages: pull::Stream, deliveries: crossbeam_channel::Sender<Delivery>) {
    while let Some(next) = messages.next().await {
        let delivery = match next {
            Ok(message) => {
                let redelivered = message.info().is_ok_and(|i| i.delivered > 1);
                let (message, acker) = message.split();
                Delivery::Message(message, acker, redelivered)
            }
            Err(e) => Delivery::Error(e.to_string()),
        };
        if deliveries.send(delivery).is_err() {
            return;
        }
    }
}

/// Sends the acks of flushed messages, in the order they were taken.
async fn acknowledge(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Vec<jetstream::message::Acker>>,
) {
    while let Some(batch) = queue.recv().await {
        for acker in batch {
            // A lost ack only means one more delivery, which the deduplicator drops.
            let _ = acker.ack().await;
        }
    }
}
