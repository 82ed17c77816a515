//! The exchange as a [`VenueHost`]: glue between the replay (or paper) loop and a
//! [`SimExchange`] plus its [`RunWriter`].
//!
//! Owns the translation of exchange outputs into bus messages `(topic, JSON payload)`
//! and into run files. Never owns sockets: the replay loop publishes the outbox and
//! answers the gateway with the bytes returned here.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::event::{Event, UnixNanos};
use crate::replay::{Outbox, VenueHost};

use super::matching::SimExchange;
use super::models::ExchangeSettings;
use super::outputs::{RunCounts, RunWriter};
use super::protocol::{Reply, Request};

/// How to build an [`ExchangeHost`].
#[derive(Clone, Debug, Default)]
pub struct ExchangeHostConfig {
    /// Models (the scenario's `[exchange]` block).
    pub settings: ExchangeSettings,
    /// Run directory for `orders`/`fills`/`marks.parquet`; `None` writes no files.
    pub run_dir: Option<PathBuf>,
}

/// A [`SimExchange`] driven through the replay loop's [`VenueHost`] calls.
pub struct ExchangeHost {
    exchange: SimExchange,
    writer: Option<RunWriter>,
    counts: Option<RunCounts>,
}

impl ExchangeHost {
    /// Builds the models and creates the run files (the directory is created if needed).
    pub fn new(config: &ExchangeHostConfig) -> Result<ExchangeHost> {
        let exchange = SimExchange::from_settings(&config.settings)
            .context("cannot build the simulated exchange from the [exchange] settings")?;
        let writer = match &config.run_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create run directory {}", dir.display()))?;
                Some(RunWriter::create(dir)?)
            }
            None => None,
        };
        Ok(ExchangeHost {
            exchange,
            writer,
            counts: None,
        })
    }

    /// The exchange inside, for queries and tests.
    pub fn exchange(&self) -> &SimExchange {
        &self.exchange
    }

    /// Rows written per file, once [`VenueHost::finish`] has run.
    pub fn counts(&self) -> Option<RunCounts> {
        self.counts
    }

    /// Moves drained outputs to the outbox and the run files.
    fn flush(&mut self, out: &mut Outbox) -> Result<()> {
        for output in self.exchange.drain() {
            out.push((output.topic(), output.to_json().into_bytes()));
            if let Some(w) = self.writer.as_mut() {
                w.write_owned(output)?;
            }
        }
        Ok(())
    }
}

impl VenueHost for ExchangeHost {
    fn advance_before(&mut self, ts: UnixNanos, out: &mut Outbox) -> Result<()> {
        self.exchange.advance_before(ts);
        self.flush(out)
    }

    fn on_market(&mut self, event: &Event, out: &mut Outbox) -> Result<()> {
        self.exchange.on_market(event);
        self.flush(out)
    }

    fn on_request(
        &mut self,
        strategy: &str,
        request: &[u8],
        now: UnixNanos,
        not_before: UnixNanos,
        out: &mut Outbox,
    ) -> Result<Vec<u8>> {
        let reply = match Request::from_json(request) {
            Ok(req) => self
                .exchange
                .handle(strategy, &not_backdated(req, not_before), now)
                .unwrap_or(Reply::Error {
                    reason: "hello and ack go to the gateway, not the exchange".into(),
                }),
            Err(reason) => Reply::Error { reason },
        };
        self.flush(out)?;
        Ok(reply.to_json().into_bytes())
    }

    fn on_mark(&mut self, ts: UnixNanos) -> Result<()> {
        let marks = self.exchange.marks(ts);
        if let Some(w) = self.writer.as_mut() {
            w.write_marks(&marks)?;
        }
        Ok(())
    }

    fn finish(&mut self, ts: UnixNanos, out: &mut Outbox) -> Result<Option<String>> {
        self.exchange.close(ts);
        self.flush(out)?;
        if let Some(w) = self.writer.take() {
            self.counts = Some(w.finish()?);
        }
        Ok(Some(self.exchange.fills_digest()))
    }
}

/// `request` with its decision time moved up to `not_before` if it was dated earlier.
fn not_backdated(mut request: Request, not_before: UnixNanos) -> Request {
    if let Request::New { decided_at, .. } | Request::Cancel { decided_at, .. } = &mut request
        && let Some(t) = decided_at
    {
        *t = (*t).max(not_before);
    }
    request
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Body, BookDelta, Flags, Side};

    /// One level of a `sim`/`X` book at `ts` (also used by the gateway's tests).
    pub(crate) fn level(ts: UnixNanos, side: Side, price: &str, size: &str) -> Event {
        Event {
            venue: Arc::from("sim"),
            symbol: Arc::from("X"),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body: Body::Book(BookDelta {
                side,
                price: price.parse().unwrap(),
                size: size.parse().unwrap(),
                flags: Flags::LAST,
            }),
        }
    }

    #[test]
    fn host_answers_requests_publishes_outputs_and_writes_run_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = ExchangeHost::new(&ExchangeHostConfig {
            settings: ExchangeSettings::default(),
            run_dir: Some(dir.path().join("run")),
        })
        .unwrap();
        let mut out = Outbox::new();
        host.on_market(&level(10, Side::Ask, "101", "2"), &mut out)
            .unwrap();
        host.on_market(&level(10, Side::Bid, "99", "2"), &mut out)
            .unwrap();
        let reply = host
            .on_request(
                "s",
                br#"{"type":"new","client_order_id":"a","venue":"sim","symbol":"X",
                    "side":"buy","order_type":"market","size":"1","decided_at":10}"#,
                10,
                i64::MIN,
                &mut out,
            )
            .unwrap();
        assert!(String::from_utf8(reply).unwrap().contains("\"accepted\""));
        let bad = host
            .on_request("s", b"{nope", 10, i64::MIN, &mut out)
            .unwrap();
        assert!(String::from_utf8(bad).unwrap().contains("\"error\""));
        // An order decided after the last event never reaches the exchange: canceled.
        host.on_request(
            "s",
            br#"{"type":"new","client_order_id":"late","venue":"sim","symbol":"X",
                "side":"buy","order_type":"market","size":"1","decided_at":50}"#,
            10,
            i64::MIN,
            &mut out,
        )
        .unwrap();
        host.advance_before(20, &mut out).unwrap();
        host.on_mark(20).unwrap();
        let digest = host.finish(20, &mut out).unwrap().unwrap();
        let topics: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, vec!["fill.sim.X", "order.sim.X", "order.sim.X"]);
        assert!(String::from_utf8_lossy(&out[2].1).contains("end of stream"));
        assert_eq!(digest, host.exchange().fills_digest());
        let counts = host.counts().unwrap();
        assert_eq!((counts.fills, counts.orders, counts.marks), (1, 2, 1));
        assert!(dir.path().join("run/fills.parquet").exists());
    }
}
