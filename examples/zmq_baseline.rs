//! Baseline for benchmarks: a bare libzmq PUB→SUB pair over tcp loopback moving
//! `N` messages of `BYTES` bytes (two frames, like ticktape's `[topic, payload]`),
//! lossless (unbounded high-water marks). Prints messages per second.
//!
//! `cargo run --release --example zmq_baseline -- 2000000 200`
//!
//! With `sub ENDPOINT` it is instead a plain subscriber that counts data messages until a
//! replay's end-of-stream and prints its receive rate (the replay benchmark's consumer).

use std::time::Instant;

fn subscribe(endpoint: &str) {
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(endpoint).unwrap();
    let (mut got, mut started) = (0u64, None);
    loop {
        let frames = sub.recv_multipart(0).unwrap();
        if frames[0].starts_with(b"eos.") {
            break;
        }
        if frames[0].starts_with(b"book.") || frames[0].starts_with(b"trade.") {
            started.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let took = started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    println!(
        "{{\"messages\":{got},\"seconds\":{took:.3},\"msgs_per_sec\":{:.0}}}",
        got as f64 / took.max(1e-9)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sub") {
        subscribe(args.get(2).map_or("tcp://127.0.0.1:5556", String::as_str));
        return;
    }
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
