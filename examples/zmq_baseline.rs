//! Baseline for benchmarks: a bare libzmq PUB→SUB pair over tcp loopback moving
//! `N` messages of `BYTES` bytes (two frames, like ticktape's `[topic, payload]`),
//! lossless (unbounded high-water marks). Prints messages per second.
//!
//! `cargo run --release --example zmq_baseline -- 2000000 200`
//!
//! With `procs N BYTES` the subscriber runs in a child process with its own context
//! (so each side has its own I/O thread, like `simulate` → `record`) and receives into
//! reused frames; the child prints the rate.
//!
//! With `sub ENDPOINT` it is instead a plain subscriber that counts data messages until a
//! replay's end-of-stream and prints its receive rate (the replay benchmark's consumer).
//!
//! With `lockstep N` it measures the floor of a lockstep step over `ipc://`: this process
//! publishes one message plus a step marker on a PUB socket and waits for the ack that a
//! child process (a SUB plus a DEALER, nothing else) sends back to a ROUTER, `N` times.
//! Prints steps per second: no lockstep replay can beat one round trip per step.

use std::time::Instant;

/// A SUB socket on `endpoint` for everything, with an unbounded queue (never drops).
fn lossless_subscriber(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(endpoint).unwrap();
    sub
}

/// Prints `got` messages over the time since the first one, as one JSON line.
fn print_rate(got: u64, started: Option<Instant>) {
    let took = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "{{\"messages\":{got},\"seconds\":{took:.3},\"msgs_per_sec\":{:.0}}}",
        got as f64 / took.max(1e-9)
    );
}

fn subscribe(endpoint: &str) {
    let ctx = zmq::Context::new();
    let sub = lossless_subscriber(&ctx, endpoint);
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
    print_rate(got, started);
}

/// The parent side of `lockstep N`: publish, mark, wait for the child's ack.
fn lockstep(n: u64) {
    let dir = std::env::temp_dir().join(format!("zmq-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = format!("ipc://{}/bus", dir.display());
    let gateway = format!("ipc://{}/gw", dir.display());
    let ctx = zmq::Context::new();
    let publisher = ctx.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(0).unwrap();
    publisher.bind(&bus).unwrap();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    router.bind(&gateway).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["lockstep-child", &bus, &gateway])
        .spawn()
        .unwrap();
    // The child says hello once its subscription is in place; re-mark until then.
    let hello = loop {
        publisher.send(&b"step"[..], zmq::SNDMORE).unwrap();
        publisher.send(&b"0"[..], 0).unwrap();
        if router.poll(zmq::POLLIN, 10).unwrap() > 0 {
            break router.recv_multipart(0).unwrap();
        }
    };
    let identity = hello[0].clone();
    let payload = [b'x'; 100];
    let started = Instant::now();
    for step in 1..=n {
        publisher
            .send(&b"book.sim.BTC-USD"[..], zmq::SNDMORE)
            .unwrap();
        publisher.send(&payload[..], 0).unwrap();
        publisher.send(&b"step"[..], zmq::SNDMORE).unwrap();
        publisher.send(step.to_string().as_bytes(), 0).unwrap();
        loop {
            let ack = router.recv_multipart(0).unwrap();
            if ack[0] == identity && ack[1] == step.to_string().as_bytes() {
                break;
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    publisher.send(&b"eos."[..], zmq::SNDMORE).unwrap();
    publisher.send(&b""[..], 0).unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{{\"steps\":{n},\"seconds\":{took:.3},\"steps_per_sec\":{:.0}}}",
        n as f64 / took
    );
}

/// The child side of `lockstep N`: ack every step marker, stop at `eos.`.
fn lockstep_child(bus: &str, gateway: &str) {
    let ctx = zmq::Context::new();
    let sub = lossless_subscriber(&ctx, bus);
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(gateway).unwrap();
    let mut said_hello = false;
    loop {
        let frames = sub.recv_multipart(0).unwrap();
        if frames[0] == b"step" {
            if !said_hello {
                dealer.send(&b"hello"[..], 0).unwrap();
                said_hello = true;
            } else if frames[1] != b"0" {
                dealer.send(&frames[1][..], 0).unwrap();
            }
        } else if frames[0] == b"eos." {
            return;
        }
    }
}

/// Publisher in this process, subscriber in a child with its own libzmq context (the
/// shape of `simulate` → `record`): both sides have an I/O thread of their own.
fn two_processes(n: u64, bytes: usize) {
    let ctx = zmq::Context::new();
    let publisher = ctx.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(0).unwrap();
    publisher.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["procs-child", &endpoint])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let topic = b"book.sim.BTC-USD";
    let payload = vec![b'x'; bytes];
    for _ in 0..n {
        publisher.send(&topic[..], zmq::SNDMORE).unwrap();
        publisher.send(&payload[..], 0).unwrap();
    }
    publisher.send(&b"eos."[..], zmq::SNDMORE).unwrap();
    publisher.send(&b""[..], 0).unwrap();
    let out = child.wait_with_output().unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Counts two-frame messages into reused frames until `eos.`; prints the rate.
fn counting_child(endpoint: &str) {
    let ctx = zmq::Context::new();
    let sub = lossless_subscriber(&ctx, endpoint);
    let (mut topic, mut payload) = (zmq::Message::new(), zmq::Message::new());
    let (mut got, mut started) = (0u64, None);
    loop {
        sub.recv(&mut topic, 0).unwrap();
        sub.recv(&mut payload, 0).unwrap();
        if topic.starts_with(b"eos.") {
            break;
        }
        started.get_or_insert_with(Instant::now);
        got += 1;
    }
    print_rate(got, started);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sub") => {
            return subscribe(args.get(2).map_or("tcp://127.0.0.1:5556", String::as_str));
        }
        Some("lockstep") => {
            return lockstep(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000));
        }
        Some("lockstep-child") => return lockstep_child(&args[2], &args[3]),
        Some("procs") => {
            let n = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(2_000_000);
            let bytes = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
            return two_processes(n, bytes);
        }
        Some("procs-child") => return counting_child(&args[2]),
        _ => {}
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
    let subscriber = lossless_subscriber(&ctx, &endpoint);
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
