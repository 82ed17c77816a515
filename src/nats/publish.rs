//! Publishing into JetStream from a synchronous source (`simulate`, `feed`, `replay`).
//!
//! [`NatsPublisher::send_on`] encodes the event (the same payload as on the ZeroMQ bus),
//! names it by the venue's identity ([`super::message_id`]) and hands it to a task on
//! the publisher's own runtime. The task publishes asynchronously with at most
//! `max_in_flight` unacknowledged messages; a message whose ack fails (a timeout, no
//! responders while a cluster elects a leader) is published again under the same id, so
//! the broker stores it once, until `retry_for` has passed; then the publisher fails and
//! says so. [`NatsPublisher::close`] waits for every ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::{NatsConfig, PUBLISHER_HEADER, message_id, subject};
use crate::event::Event;
use crate::record::dedup::MessagePosition;
use crate::wire;

/// Counters of a [`NatsPublisher`], readable while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatsPublisherStats {
    /// Messages handed to the publishing task.
    pub sent: u64,
    /// Payload bytes handed over.
    pub bytes: u64,
    /// Messages the stream acknowledged as stored.
    pub acked: u64,
    /// Acknowledged as duplicates: the broker already had that message id (another
    /// publisher of the same feed was first, or a retry of one that was stored).
    pub duplicates: u64,
    /// Publishes repeated after a failed or missing ack.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
}

/// One message on its way to the publishing task.
#[derive(Clone)]
struct Outgoing {
    subject: String,
    id: String,
    payload: Bytes,
}

/// Publishing settings beside the connection.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// The publisher's id (`--id`), sent in the `Ticktape-Publisher` header.
    pub publisher_id: String,
    /// Payload encoding.
    pub encoding: wire::Encoding,
    /// Unacknowledged publishes at most.
    pub max_in_flight: usize,
    /// How long a message is retried before the publisher gives up.
    pub retry_for: Duration,
}

impl Default for PublishOptions {
    fn default() -> PublishOptions {
        PublishOptions {
            publisher_id: "ticktape".into(),
            encoding: wire::Encoding::Json,
            max_in_flight: 4096,
            retry_for: Duration::from_secs(60),
        }
    }
}

/// A JetStream publisher driven from synchronous code.
pub struct NatsPublisher {
    runtime: Option<tokio::runtime::Runtime>,
    tx: Option<tokio::sync::mpsc::Sender<Outgoing>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    counters: Arc<Counters>,
    prefix: String,
    encoding: wire::Encoding,
    position: MessagePosition,
    topic_buf: String,
    id_buf: String,
    sent: u64,
    bytes: u64,
    servers: String,
}

impl NatsPublisher {
    /// Connects (refusing insecure links, see [`super::check_servers`]), makes sure the
    /// stream exists and takes ticktape's subjects, and starts the publishing task.
    pub fn connect(config: &NatsConfig, options: &PublishOptions) -> Result<NatsPublisher> {
        super::check_servers(config)?;
        let runtime = super::runtime("pub")?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = tokio::sync::mpsc::channel(options.max_in_flight.max(1));
        let js = runtime.block_on(async {
            let client = super::connect(config).await?;
            // A short ack timeout: a publish lost in a failover is sent again sooner,
            // so it arrives less late after those that followed it.
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(2))
                .max_ack_inflight(options.max_in_flight.max(1) + 1)
                .backpressure_on_inflight(true)
                .build(client);
            super::ensure_stream(&js, config).await?;
            Ok::<_, anyhow::Error>(js)
        })?;
        let header = options.publisher_id.clone();
        let task = runtime.spawn(pump(
            js,
            rx,
            header,
            options.max_in_flight.max(1),
            options.retry_for,
            counters.clone(),
        ));
        Ok(NatsPublisher {
            runtime: Some(runtime),
            tx: Some(tx),
            task: Some(task),
            counters,
            prefix: config.subject_prefix.clone(),
            encoding: options.encoding,
            position: MessagePosition::default(),
            topic_buf: String::with_capacity(64),
            id_buf: String::with_capacity(96),
            sent: 0,
            bytes: 0,
            servers: config.servers.join(","),
        })
    }

    /// Where it publishes, for status lines.
    pub fn describe(&self) -> &str {
        &self.servers
    }

    /// Counters so far.
    pub fn stats(&self) -> NatsPublisherStats {
        NatsPublisherStats {
            sent: self.sent,
            bytes: self.bytes,
            acked: self.counters.acked.load(Ordering::Relaxed),
            duplicates: self.counters.duplicates.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
        }
    }

    /// Encodes and publishes one event.
    pub fn send(&mut self, event: &Event) -> Result<()> {
        let mut topic = std::mem::take(&mut self.topic_buf);
        topic.clear();
        wire::write_topic(event, &mut topic);
        let result = self.send_on(&topic, event);
        self.topic_buf = topic;
        result
    }

    /// Publishes `event` on the subject of `topic` with its venue identity as message id.
    pub fn send_on(&mut self, topic: &str, event: &Event) -> Result<()> {
        let mut payload = Vec::with_capacity(160);
        wire::encode_as(self.encoding, event, &mut payload);
        message_id(event, &mut self.position, &mut self.id_buf);
        let id = self.id_buf.clone();
        self.hand_over(topic, id, payload)
    }

    /// Publishes raw bytes (fault injection: malformed messages) with a message id of
    /// their own, so the broker never takes them for an event.
    pub fn send_raw(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        let topic = String::from_utf8_lossy(topic).into_owned();
        let id = format!("raw|{}|{}", std::process::id(), self.sent);
        self.hand_over(&topic, id, payload.to_vec())
    }

    fn hand_over(&mut self, topic: &str, id: String, payload: Vec<u8>) -> Result<()> {
        let out = Outgoing {
            subject: subject(&self.prefix, topic),
            id,
            payload: Bytes::from(payload),
        };
        self.bytes += out.payload.len() as u64;
        let sent = match &self.tx {
            Some(tx) => tx.blocking_send(out).is_ok(),
            None => false,
        };
        if !sent {
            // The task ended: it failed, and says why.
            return Err(self.finish().err().unwrap_or_else(|| {
                anyhow!("the NATS publishing task stopped; nothing more can be published")
            }));
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits until every message sent so far is acknowledged by the stream (or the
    /// retries ran out), and disconnects. Returns the final counters.
    pub fn close(mut self) -> Result<NatsPublisherStats> {
        self.finish()?;
        Ok(self.stats())
    }

    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) else {
            return Ok(());
        };
        let result = runtime.block_on(task);
        runtime.shutdown_timeout(Duration::from_secs(1));
        match result {
            Ok(r) => r,
            Err(e) => bail!("the NATS publishing task failed: {e}"),
        }
    }
}

impl Drop for NatsPublisher {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The publishing task: publish in order, keep at most `max` acks outstanding and wait
/// for them all at once (each ack's timeout runs from when it is sent, so a connection
/// lost with thousands in flight costs one timeout, not one each), retry what was not
/// stored.
async fn pump(
    js: jetstream::Context,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
    publisher: String,
    max: usize,
    retry_for: Duration,
    counters: Arc<Counters>,
) -> Result<()> {
    let mut in_flight = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            Some(settled) = in_flight.next(), if !in_flight.is_empty() => settled?,
            next = rx.recv(), if in_flight.len() < max => match next {
                Some(msg) => {
                    let ack = publish_retrying(&js, &msg, &publisher, retry_for, &counters).await?;
                    in_flight.push_back(settle(&js, ack, msg, &publisher, retry_for, &counters));
                }
                None => break,
            },
        }
    }
    while let Some(settled) = in_flight.next().await {
        settled?;
    }
    js.client()
        .flush()
        .await
        .context("cannot flush the NATS connection")?;
    Ok(())
}

fn message(msg: &Outgoing, publisher: &str) -> jetstream::message::PublishMessage {
    jetstream::message::PublishMessage::build()
        .payload(msg.payload.clone())
        .message_id(&msg.id)
        .header(PUBLISHER_HEADER, publisher)
}

/// Hands one message to the client, retrying while the connection is down.
async fn publish_retrying(
    js: &jetstream::Context,
    msg: &Outgoing,
    publisher: &str,
    retry_for: Duration,
    counters: &Counters,
) -> Result<jetstream::context::PublishAckFuture> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match js
            .send_publish(msg.subject.clone(), message(msg, publisher))
            .await
        {
            Ok(ack) => return Ok(ack),
            Err(e) if started.elapsed() < retry_for => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                let _ = e;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "cannot publish {} to NATS for {}s",
                        msg.subject,
                        retry_for.as_secs()
                    )
                });
            }
        }
    }
}

/// Waits for one ack; on failure publishes the message again (same id) and waits for
/// that ack, until `retry_for` has passed.
async fn settle(
    js: &jetstream::Context,
    mut ack: jetstream::context::PublishAckFuture,
    msg: Outgoing,
    publisher: &str,
    retry_for: Duration,
    counters: &Counters,
) -> Result<()> {
    let started = Instant::now();
    loop {
        match ack.await {
            Ok(stored) => {
                counters.acked.fetch_add(1, Ordering::Relaxed);
                if stored.duplicate {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            Err(e) if started.elapsed() < retry_for => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
                ack = publish_retrying(js, &msg, publisher, retry_for, counters).await?;
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "JetStream did not acknowledge {} (id {}) within {}s: is a quorum of the stream's servers up?",
                        msg.subject,
                        msg.id,
                        retry_for.as_secs()
                    )
                });
            }
        }
    }
}
