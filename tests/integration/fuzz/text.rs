//! Text targets: files and messages users write by hand.
//!
//! - `scenario`: `Scenario::parse` on mutated scenario files (the repository's and one
//!   with every documented key); what parses must also give its durations and build
//!   its exchange models (and sample them) without a panic, since `run` does that next.
//! - `gateway_request`: `Request::from_json` on mutated requests of every type; a
//!   request that parses serializes and parses back to itself.

use std::path::Path;
use std::sync::Arc;

use ticktape::event::Fixed;
use ticktape::exchange::models::Models;
use ticktape::exchange::protocol::{Liquidity, Request};
use ticktape::scenario::Scenario;

use super::fuzz;
use super::mutate::{input, one_of};

/// Every key docs/SCENARIOS.md documents, with the log-normal latency model.
const FULL_SCENARIO: &str = r#"name = "full"

[data]
dataset = "data/binance-spot"
venues = ["binance"]
symbols = ["BTCUSDT"]
kinds = ["book", "trade", "gap"]
start = "2024-08-08T23:54:00Z"
end = "2024-08-09T00:00:00.5Z"

[replay]
speed = "10"
lockstep = true
lookahead = "500us"
ack_timeout_secs = 30.0
mark_interval_secs = 0.25
encoding = "binary"

[engine]
mode = "bus"

[[strategy]]
name = "mm"
builtin = "mm"
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"

[[strategy]]
name = "py"
command = ["python3", "examples/python/momentum.py", "--bus", "{bus}", "--gateway", "{gateway}"]
venue = "binance"
symbol = "BTCUSDT"
account = { starting_balance = 5.0 }

[exchange]
order_latency = { model = "log_normal", mean_ns = 2000000, sigma = 0.5, min_ns = 1000000 }
md_latency = { model = "constant", ns = 0 }
queue = "proportional"
fees = { maker_bps = -1.0, taker_bps = 5.0, fixed_per_fill = 0.0 }
seed = 7

[account]
starting_balance = 10000.0

[output]
dir = "runs/full"
"#;

#[test]
fn scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = vec![FULL_SCENARIO.as_bytes().to_vec()];
    for name in ["demo.toml", "demo-inproc.toml"] {
        let path = root.join("scenarios").join(name);
        seeds.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    let path = Path::new("fuzz.toml");
    fuzz("scenario", input(one_of(Arc::new(seeds))), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let Ok(s) = Scenario::parse(&text, path) else {
            return Ok(());
        };
        let _ = (
            s.replay.ack_timeout(),
            s.replay.mark_interval(),
            s.replay.lookahead(),
        );
        let _ = ticktape::scenario::run_dir(&s, None);
        if let Ok(mut models) = Models::from_settings(&s.exchange) {
            for t in [0, 1_723_161_253_940_000_000] {
                let _ = models.order_latency.order_latency(t);
                let _ = models.md_latency.md_latency(t);
            }
            let (price, size) = (Fixed::new(6_167_155, 2), Fixed::new(1, 3));
            let _ = models.fees.fee(Liquidity::Maker, price, size);
        }
        Ok(())
    });
}

#[test]
fn gateway_request() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"type":"hello","strategy":"mm1","lockstep":true}"#,
        r#"{"type":"hello","strategy":"mm1","token":"3f9a0c"}"#,
        r#"{"type":"new","client_order_id":"c1","venue":"binance","symbol":"BTCUSDT","side":"buy","order_type":"limit","tif":"gtc","price":"61000.50","size":"0.010","decided_at":1700000000123456789}"#,
        r#"{"type":"new","client_order_id":"c2","venue":"binance","symbol":"BTCUSDT","side":"sell","order_type":"market","size":"0.5"}"#,
        r#"{"type":"new","client_order_id":"c3","venue":"binance","symbol":"BTCUSDT","side":"buy","order_type":"limit","tif":"post_only","price":"1","size":"2"}"#,
        r#"{"type":"cancel","client_order_id":"c1","decided_at":5}"#,
        r#"{"type":"query"}"#,
        r#"{"type":"ack","step":42}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("gateway_request", input(one_of(Arc::new(seeds))), |bytes| {
        let Ok(request) = Request::from_json(bytes) else {
            return Ok(());
        };
        let _ = request.as_new_order();
        let json = serde_json::to_vec(&request).map_err(|e| format!("cannot serialize: {e}"))?;
        match Request::from_json(&json) {
            Ok(back) if back == request => Ok(()),
            other => Err(format!(
                "{request:?} serialized as {} parsed back as {other:?}",
                String::from_utf8_lossy(&json)
            )),
        }
    });
}
