//! Replay behaviour with real processes and sockets: identical payloads in order to a
//! plain pyzmq subscriber, no loss to a slow subscriber, recorded pace, lockstep.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ticktape::store::{EventReader, Selection};
use ticktape::wire;

use crate::util::*;

/// Records `events` synthetic events (deterministic clock at `rate` per second).
pub fn record_dataset(dir: &Path, events: u64, rate: u64) -> PathBuf {
    let ds = dir.join("ds");
    let ep = free_tcp();
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--until-eos",
        "--quiet",
    ]);
    let sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--events",
        &events.to_string(),
        "--rate",
        "0",
        "--wait-for",
        "1",
        "--seed",
        "21",
        "--quiet",
        "--synthetic-clock",
        "2024-03-04T05:06:07Z",
        "--synthetic-rate",
        &rate.to_string(),
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    assert_ok("record", &recorder.wait(Duration::from_secs(60)));
    ds
}

fn expected_payloads(ds: &Path) -> Vec<Vec<u8>> {
    EventReader::open(ds, Selection::default())
        .unwrap()
        .map(|e| wire::encode_to_vec(&e.unwrap()))
        .collect()
}

fn replay_summary(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("replay --json summary")
}

#[test]
fn plain_pyzmq_subscriber_receives_every_event_in_order_with_identical_payloads() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 6000, 5000);
    let ep = free_tcp();
    let out_file = dir.path().join("received.txt");
    let replay = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--bind",
        &ep,
        "--wait-for",
        "1",
        "--speed",
        "max",
        "--quiet",
        "--json",
    ]);
    run_python(&py, "subscribe.py", &[&ep, out_file.to_str().unwrap()]);
    let out = replay.wait(Duration::from_secs(60));
    assert_ok("replay", &out);
    let received = std::fs::read(&out_file).unwrap();
    let received: Vec<&[u8]> = received
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let expected = expected_payloads(&ds);
    assert_eq!(received.len(), 6000);
    assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        assert_eq!(*got, want.as_slice(), "event {i} differs");
    }
    assert_eq!(replay_summary(&out)["events"], 6000);
}

#[test]
fn slow_subscriber_at_max_speed_still_receives_every_event() {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 10_000, 5000);
    let ep = format!("ipc://{}", dir.path().join("bus.sock").display());
    let replay = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--bind",
        &ep,
        "--wait-for",
        "1",
        "--speed",
        "max",
        "--send-hwm",
        "500",
        "--quiet",
        "--json",
    ]);
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).unwrap();
    sock.set_rcvhwm(500).unwrap();
    sock.set_subscribe(b"").unwrap();
    sock.connect(&ep).unwrap();
    let mut data = 0u64;
    // A hang guard only (the run takes ~5 s): a loaded CI machine may be far slower.
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if sock.poll(zmq::POLLIN, 200).unwrap() == 0 {
            continue;
        }
        let frames = sock.recv_multipart(0).unwrap();
        if frames[0].starts_with(b"book.") || frames[0].starts_with(b"trade.") {
            data += 1;
            if data.is_multiple_of(20) {
                // A deliberately slow consumer: at most 2,000 events/s.
                std::thread::sleep(Duration::from_millis(10));
            }
        } else if frames[0].starts_with(b"eos.") {
            break;
        }
    }
    let out = replay.wait(Duration::from_secs(60));
    assert_ok("replay", &out);
    assert_eq!(data, 10_000, "no event dropped");
    let summary = replay_summary(&out);
    assert!(
        summary["stalls"].as_u64().unwrap() > 0,
        "the replay noticed the slow subscriber: {summary}"
    );
    // ... and names it: over ipc, the process at the other end of the socket (this one).
    let slow = summary["slow_subscribers"].as_array().unwrap();
    assert!(!slow.is_empty(), "{summary}");
    let me = format!("pid {} ", std::process::id());
    assert!(
        slow[0]["peer"].as_str().unwrap().starts_with(&me),
        "the slow subscriber is this test process ({me}): {summary}"
    );
    assert!(slow[0]["stalls"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn speed_one_takes_the_recorded_duration_and_reports_lateness() {
    let dir = tempdir();
    // 3000 events at 1500/s of synthetic time: about two seconds recorded.
    let ds = record_dataset(dir.path(), 3000, 1500);
    let ep = free_tcp();
    let tap = capture(&ep, Duration::from_secs(30));
    let started = Instant::now();
    let out = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--bind",
        &ep,
        "--wait-for",
        "1",
        "--speed",
        "1",
        "--quiet",
        "--json",
    ])
    .wait(Duration::from_secs(60));
    assert_ok("replay", &out);
    let wall = started.elapsed().as_secs_f64();
    let summary = replay_summary(&out);
    let range = summary["time_range"].as_array().unwrap();
    let recorded = (range[1].as_i64().unwrap() - range[0].as_i64().unwrap()) as f64 / 1e9;
    let replayed = summary["elapsed_secs"].as_f64().unwrap();
    assert!(recorded > 1.5, "dataset spans {recorded}s");
    assert!(
        (replayed - recorded).abs() < 0.1 * recorded + 0.2,
        "replayed {replayed:.3}s for {recorded:.3}s recorded"
    );
    assert!(wall >= recorded, "wall {wall:.3}s");
    assert!(
        summary["lateness"]["p99_us"].as_f64().is_some(),
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pacing lateness p50"));
    let captured = tap.join().unwrap();
    let data: Vec<_> = captured
        .messages
        .iter()
        .filter(|m| m.0.starts_with(b"book.") || m.0.starts_with(b"trade."))
        .collect();
    assert_eq!(data.len(), 3000);
    // Never early: the replay reads and encodes up to seconds of events ahead of the
    // clock, and each still arrives no sooner after the first than its recorded offset
    // (less 50 ms for the first one's own delay in reaching this subscriber).
    let mut names = ticktape::event::Interner::default();
    let mut at =
        |m: &(Vec<u8>, Vec<u8>, Instant)| (wire::decode(&m.1, &mut names).unwrap().ts_recv, m.2);
    let (ts0, at0) = at(data[0]);
    let early: Vec<(i64, f64)> = data
        .iter()
        .map(|m| at(m))
        .filter_map(|(ts, t)| {
            let offset = (ts - ts0) as f64 / 1e9;
            let arrived = t.duration_since(at0).as_secs_f64();
            (arrived + 0.05 < offset).then_some((ts, offset - arrived))
        })
        .collect();
    assert!(
        early.is_empty(),
        "{} events arrived before they were due (ts_recv, seconds early): {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
}

#[test]
fn lockstep_never_delivers_event_n_plus_1_before_ack_n() {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 1500, 5000);
    let bus = format!("ipc://{}", dir.path().join("bus.sock").display());
    let gw = format!("ipc://{}", dir.path().join("gw.sock").display());
    let replay = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--bind",
        &bus,
        "--gateway",
        &gw,
        "--lockstep",
        "1",
        "--quiet",
        "--json",
    ]);
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&bus).unwrap();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(&gw).unwrap();
    dealer
        .send(
            &br#"{"type":"hello","strategy":"probe","lockstep":true}"#[..],
            0,
        )
        .unwrap();
    let (mut data, mut steps, mut early) = (0u64, 0u64, 0u64);
    let mut since_ack = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if sub.poll(zmq::POLLIN, 200).unwrap() == 0 {
            continue;
        }
        let frames = sub.recv_multipart(0).unwrap();
        let topic = &frames[0];
        if topic.starts_with(b"book.") || topic.starts_with(b"trade.") {
            data += 1;
            since_ack += 1;
            if since_ack > 1 {
                early += 1;
            }
        } else if topic.as_slice() == b"step" {
            let v: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
            steps += 1;
            // Hold the ack a moment on some steps: nothing may arrive meanwhile.
            if steps % 100 == 0 && sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
                early += 1;
            }
            let ack = format!(r#"{{"type":"ack","step":{}}}"#, v["step"]);
            dealer.send(ack.as_bytes(), 0).unwrap();
            since_ack = 0;
        } else if topic.starts_with(b"eos.") {
            break;
        }
    }
    let out = replay.wait(Duration::from_secs(60));
    assert_ok("replay", &out);
    assert_eq!(data, 1500);
    assert_eq!(steps, 1500, "one step marker per event");
    assert_eq!(
        early, 0,
        "an event arrived before the previous one was acked"
    );
}

/// Replays `events` recorded events over ipc to one subscriber that subscribes and then
/// never reads, interrupts the replay after `wait`, and returns its output.
fn replay_to_a_subscriber_that_never_reads(
    events: u64,
    extra_args: &[&str],
    wait: Duration,
) -> std::process::Output {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), events, 5000);
    let ep = format!("ipc://{}", dir.path().join("bus.sock").display());
    let ds_arg = ds.to_str().unwrap();
    let mut args = vec!["replay", ds_arg, "--bind", &ep, "--wait-for", "1"];
    args.extend(extra_args);
    args.extend(["--quiet", "--json"]);
    let replay = spawn(&args);
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).unwrap();
    sock.set_rcvhwm(10).unwrap();
    sock.set_subscribe(b"").unwrap();
    sock.connect(&ep).unwrap();
    std::thread::sleep(wait);
    replay.signal("INT");
    // Without dropping the queue on interrupt, closing would wait two minutes for it.
    let out = replay.wait(Duration::from_secs(30));
    drop(sock);
    out
}

#[test]
fn ctrl_c_ends_a_replay_stuck_on_a_subscriber_that_stopped_reading() {
    // A small queue: the no-drop replay fills it and waits mid-stream.
    let out = replay_to_a_subscriber_that_never_reads(
        10_000,
        &["--send-hwm", "100"],
        Duration::from_secs(2),
    );
    let summary = replay_summary(&out);
    let events = summary["events"].as_u64().unwrap();
    assert!(events < 10_000, "the replay was stuck, not done: {summary}");
    assert!(summary["stalls"].as_u64().unwrap() > 0, "{summary}");
    // Interrupted before the end of its data: not a success (it exited 0 before).
    assert!(!out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted after"), "{err}");
}

#[test]
fn ctrl_c_ends_a_paced_replay_waiting_for_a_far_due_event() {
    // At a millionth of recorded pace the events (1/5000 s apart) are 200 s apart: the
    // interrupt lands mid-wait, and the replay ends within the helper's 30 s, long
    // before the wait would.
    let out = replay_to_a_subscriber_that_never_reads(
        100,
        &["--speed", "0.000001"],
        Duration::from_secs(2),
    );
    let summary = replay_summary(&out);
    assert!(summary["events"].as_u64().unwrap() < 100, "{summary}");
    assert!(!out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted after"), "{err}");
}

#[test]
fn a_subscriber_that_stops_reading_is_named_while_the_replay_waits_to_close() {
    // Every event fits in the publisher's queue: the replay sends them all, then waits
    // for the subscriber to take them.
    let out = replay_to_a_subscriber_that_never_reads(5_000, &[], Duration::from_secs(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let me = format!("pid {} ", std::process::id());
    assert!(
        err.contains(&format!(
            "waiting for subscribers to take the end of the stream: {me}"
        )),
        "{err}"
    );
    let summary = replay_summary(&out);
    assert_eq!(summary["events"], 5_000, "{summary}");
    let dropped = summary["dropped_at_close"].as_array().unwrap();
    assert!(
        dropped.len() == 1 && dropped[0].as_str().unwrap().starts_with(&me),
        "{summary}"
    );
}

#[test]
fn a_subscriber_started_before_a_default_replay_receives_every_event_and_the_end() {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 3000, 5000);
    let ep = format!("ipc://{}", dir.path().join("bus.sock").display());
    // The subscriber of PROTOCOL.md, started first: it connects before the replay binds.
    let subscriber = capture(&ep, Duration::from_secs(120));
    // No --wait-for: the default must not hand the whole stream to nobody.
    let replay = spawn(&["replay", ds.to_str().unwrap(), "--bind", &ep, "--quiet"]);
    let out = replay.wait(Duration::from_secs(120));
    let got = subscriber.join().unwrap();
    assert_ok("replay", &out);
    let data = got
        .messages
        .iter()
        .filter(|(topic, ..)| topic.starts_with(b"book.") || topic.starts_with(b"trade."))
        .count();
    assert_eq!(
        data, 3000,
        "every event reaches the subscriber started first"
    );
    assert!(
        got.messages
            .last()
            .is_some_and(|(topic, ..)| topic.starts_with(b"eos.")),
        "the end of the stream arrives"
    );
}

#[test]
fn a_replay_with_nobody_listening_says_so() {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 200, 5000);
    let ds = ds.to_str().unwrap();
    let ep = format!("ipc://{}", dir.path().join("bus.sock").display());
    // Default: waits for one subscriber, gives up, and the error counts what it saw.
    let out = spawn(&[
        "replay",
        ds,
        "--bind",
        &ep,
        "--wait-timeout",
        "1s",
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "gave up without a subscriber: {stderr}"
    );
    assert!(stderr.contains("saw 0 subscription(s)"), "{stderr}");
    // Told not to wait: runs, and says on stderr that nobody was waited for.
    let out = spawn(&["replay", ds, "--bind", &ep, "--wait-for", "0", "--quiet"])
        .wait(Duration::from_secs(60));
    assert_ok("replay --wait-for 0", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--wait-for 0: publishing without waiting for a subscriber"),
        "{stderr}"
    );
}

#[test]
fn a_busy_realtime_replay_is_refused_while_the_kernel_keeps_a_real_time_budget() {
    let dir = tempdir();
    let ds = record_dataset(dir.path(), 50, 5000);
    let ep = format!("ipc://{}", dir.path().join("bus.sock").display());
    let out = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--speed",
        "1",
        "--pacing",
        "busy",
        "--realtime",
        "--bind",
        &ep,
        "--wait-for",
        "0",
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match ticktape::replay::pacing::busy_realtime_refusal_here() {
        // The usual case (950 ms of every second): refused before anything is sent, with
        // the budget and what to do instead.
        Some(why) => {
            assert!(!out.status.success(), "{stderr}");
            assert!(stderr.contains(&why), "{stderr}");
            assert!(stderr.contains("kernel.sched_rt_runtime_us"), "{stderr}");
            assert!(!stderr.contains(" events ("), "nothing replayed: {stderr}");
        }
        // No budget on this machine: the combination is allowed, so the run either
        // replays under SCHED_FIFO or is refused only for want of the privilege.
        None => assert!(
            out.status.success() || stderr.contains("CAP_SYS_NICE"),
            "{stderr}"
        ),
    }
}
