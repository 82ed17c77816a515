//! The bare async-nats figure `scripts/bench.sh nats` compares ticktape's JetStream
//! path with: one process publishes `N` messages of `BYTES` bytes into a fresh stream
//! (async publish, at most 4,096 acks in flight, as ticktape's publisher) while a
//! durable pull consumer in the same process takes and acks each. Prints one JSON line.
//!
//! `cargo run --release --example nats_baseline -- nats://127.0.0.1:4222 1000000 80 [replicas]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: nats_baseline URL MESSAGES BYTES [REPLICAS]".into());
    }
    let url = args[1].clone();
    let n: u64 = args[2].parse()?;
    let bytes: usize = args[3].parse()?;
    let replicas: usize = args.get(4).map_or(Ok(1), |r| r.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = async_nats::connect(&url).await?;
        let js = jetstream::new(client);
        let name = format!("BASELINE{}", std::process::id());
        let subject = format!("baseline{}", std::process::id());
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{subject}.>")],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("baseline".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await?;
        let started = Instant::now();
        let consume = tokio::spawn(async move {
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(1000)
                .messages()
                .await?;
            let mut taken = 0u64;
            while taken < n {
                match messages.next().await {
                    Some(Ok(m)) => {
                        m.ack().await?;
                        taken += 1;
                    }
                    Some(Err(_)) => continue,
                    None => break,
                }
            }
            Ok::<u64, Error>(taken)
        });
        let payload = bytes::Bytes::from(vec![b'x'; bytes]);
        let topic = format!("{subject}.book.sim.BTC-USD");
        let mut in_flight = VecDeque::with_capacity(4096);
        for i in 0..n {
            if in_flight.len() >= 4096
                && let Some(ack) = in_flight.pop_front()
            {
                let ack: jetstream::context::PublishAckFuture = ack;
                ack.await?;
            }
            let msg = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(i.to_string());
            in_flight.push_back(js.send_publish(topic.clone(), msg).await?);
        }
        while let Some(ack) = in_flight.pop_front() {
            ack.await?;
        }
        let published = started.elapsed();
        let taken = consume.await??;
        let secs = started.elapsed().as_secs_f64();
        js.delete_stream(&name).await?;
        println!(
            "{{\"msgs\":{taken},\"bytes\":{bytes},\"replicas\":{replicas},\"secs\":{secs:.3},\"publish_secs\":{:.3},\"msgs_per_sec\":{:.0}}}",
            published.as_secs_f64(),
            taken as f64 / secs
        );
        Ok::<(), Error>(())
    })
}
