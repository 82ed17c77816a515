//! The loaded subscriber of the pacing benchmark (`scripts/bench.sh pacing`): takes a
//! paced replay off the bus, spins `WORK_US` microseconds of work per event (a strategy
//! that does something with each message), and prints as one JSON line the lateness of
//! arrival it saw, until the replay's end of stream.
//!
//! `pace_probe ENDPOINT SPEED WORK_US`
//!
//! Arrival lateness of event i: `(arrival_i − due_i) − min_j (arrival_j − due_j)`, where
//! `due_i = (ts_recv_i − ts_recv_0) / SPEED` after the first arrival: how much later than
//! the fastest delivery of the run each event reached this subscriber (transport, the
//! replay's own lateness, and this subscriber's queue behind its own work).

use std::time::{Duration, Instant};

use ticktape::event::Interner;
use ticktape::wire;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, speed, work_us] = &args[..] else {
        eprintln!("usage: pace_probe ENDPOINT SPEED WORK_US");
        std::process::exit(2);
    };
    let speed: f64 = speed.parse().expect("SPEED: a number");
    let work = Duration::from_micros(work_us.parse().expect("WORK_US: a whole number"));
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(endpoint).unwrap();
    let mut names = Interner::default();
    let mut first: Option<(Instant, i64)> = None;
    let mut offsets: Vec<i64> = Vec::new();
    loop {
        let frames = sub.recv_multipart(0).unwrap();
        let arrived = Instant::now();
        if frames[0].starts_with(b"eos.") {
            break;
        }
        if !(frames[0].starts_with(b"book.") || frames[0].starts_with(b"trade.")) {
            continue;
        }
        let event = wire::decode_message(&frames, &mut names).expect("a ticktape event");
        let (t0, ts0) = *first.get_or_insert((arrived, event.ts_recv));
        let due = ((event.ts_recv - ts0).max(0) as f64 / speed) as i64;
        offsets.push(arrived.duration_since(t0).as_nanos() as i64 - due);
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let best = offsets.iter().copied().min().unwrap_or(0);
    let mut late: Vec<i64> = offsets.iter().map(|o| o - best).collect();
    late.sort_unstable();
    let pct = |p: f64| {
        late.get(((late.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |&ns| ns as f64 / 1e3)
    };
    println!(
        "{{\"events\":{},\"work_us\":{},\"arrival_p50_us\":{:.1},\"arrival_p99_us\":{:.1},\"arrival_max_us\":{:.1}}}",
        late.len(),
        work.as_micros(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
