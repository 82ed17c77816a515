//! Baseline for benchmarks: a bare libzmq PUB→SUB pair over tcp loopback moving
//! `N` messages of `BYTES` bytes (two frames, like ticktape's `[topic, payload]`),
//! lossless (unbounded high-water marks). Prints messages per second.
//!
//! `cargo run --release --example zmq_baseline -- 2000000 200`

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let bytes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let ctx = zmq::Context::new();
    let publisher = ctx.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(0).unwrap();
    publisher.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
    let subscriber = ctx.socket(zmq::SUB).unwrap();
    subscriber.set_rcvhwm(0).unwrap();
    subscriber.set_subscribe(b"").unwrap();
    subscriber.connect(&endpoint).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let receiver = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut started = None;
        while got < n {
            let frames = subscriber.recv_multipart(0).unwrap();
            started.get_or_insert_with(Instant::now);
            if frames.len() == 2 {
                got += 1;
            }
        }
        (got, started.unwrap().elapsed())
    });
    let topic = b"book.sim.BTC-USD";
    let payload = vec![b'x'; bytes];
    for _ in 0..n {
        publisher.send(&topic[..], zmq::SNDMORE).unwrap();
        publisher.send(&payload[..], 0).unwrap();
    }
    let (got, took) = receiver.join().unwrap();
    println!(
        "{{\"messages\":{got},\"bytes\":{bytes},\"seconds\":{:.3},\"msgs_per_sec\":{:.0}}}",
        took.as_secs_f64(),
        got as f64 / took.as_secs_f64()
    );
}
