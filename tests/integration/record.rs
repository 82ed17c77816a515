//! Recorder behaviour with real processes and sockets: exact round trip, redundant
//! publishers, injected faults, kill -9 recovery, third-party readers.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ticktape::event::Interner;
use ticktape::store::{EventReader, Selection};
use ticktape::wire;

use crate::util::*;

const CLOCK: &str = "2024-01-02T03:04:05Z";

/// Every row of a dataset as `(topic, pub_seq) -> payload` re-encoded from Parquet.
fn dataset_payloads(dataset: &Path) -> HashMap<(String, u64), Vec<u8>> {
    let mut out = HashMap::new();
    for ev in EventReader::open(dataset, Selection::default()).unwrap() {
        let ev = ev.unwrap();
        if ev.kind() == ticktape::event::Kind::Gap {
            continue;
        }
        let prev = out.insert((wire::topic(&ev), ev.pub_seq), wire::encode_to_vec(&ev));
        assert!(
            prev.is_none(),
            "row stored twice: {} {}",
            wire::topic(&ev),
            ev.pub_seq
        );
    }
    out
}

#[test]
fn simulate_to_record_over_tcp_round_trips_every_event() {
    round_trip("json");
}

#[test]
fn binary_encoded_stream_round_trips_every_event_exactly() {
    round_trip("binary");
}

/// simulate → record over tcp with payloads in `encoding`: every event stored once, and
/// stored content equal to what went over the wire (compared as decoded events, written
/// out as JSON, so exact decimals are checked in both encodings).
fn round_trip(encoding: &str) {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--until-eos",
        "--quiet",
        "--flush-interval",
        "200ms",
        "--row-group-rows",
        "5000",
    ]);
    let tap = capture(&ep, Duration::from_secs(60));
    let sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--events",
        "30000",
        "--rate",
        "0",
        "--wait-for",
        "2",
        "--seed",
        "3",
        "--synthetic-clock",
        CLOCK,
        "--encoding",
        encoding,
        "--quiet",
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    assert_ok("record", &recorder.wait(Duration::from_secs(60)));
    let captured = tap.join().unwrap();
    let binary = captured
        .messages
        .iter()
        .filter(|(_, p, _)| p.first() == Some(&wire::BINARY_MAGIC))
        .count();
    let expect_binary = if encoding == "binary" {
        captured.messages.len()
    } else {
        0
    };
    assert_eq!(binary, expect_binary, "payloads on the wire are {encoding}");

    let live: HashMap<(String, u64), Vec<u8>> = captured
        .messages
        .iter()
        .filter(|(t, _, _)| t.starts_with(b"book.") || t.starts_with(b"trade."))
        .map(|(t, p, _)| {
            let ev = wire::decode(p, &mut Interner::default()).unwrap();
            (
                (String::from_utf8(t.clone()).unwrap(), ev.pub_seq),
                wire::encode_to_vec(&ev),
            )
        })
        .collect();
    assert_eq!(
        live.len(),
        30_000,
        "the test's own subscriber saw every event"
    );
    let stored = dataset_payloads(&ds);
    assert_eq!(stored.len(), 30_000, "exactly N rows");
    for (key, payload) in &live {
        let back = stored.get(key).unwrap_or_else(|| panic!("missing {key:?}"));
        assert_eq!(back, payload, "payload of {key:?} differs after Parquet");
    }
    let summary = inspect(&ds);
    assert_eq!(kind_rows(&summary, "gap"), 0);
    assert_eq!(summary["duplicates"], 0);
}

#[test]
fn redundant_publishers_store_each_event_once_and_count_the_overlap() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let (a, b) = (free_tcp(), free_tcp());
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &a,
        "--connect",
        &b,
        "--until-eos",
        "--quiet",
        "--flush-interval",
        "200ms",
    ]);
    let common = [
        "--events",
        "20000",
        "--rate",
        "0",
        "--wait-for",
        "1",
        "--seed",
        "9",
        "--synthetic-clock",
        CLOCK,
        "--quiet",
    ];
    let mut args_a = vec!["simulate", "--bind", &a, "--id", "A"];
    args_a.extend(common);
    let mut args_b = vec!["simulate", "--bind", &b, "--id", "B", "--skip", "6000"];
    args_b.extend(common);
    let sim_a = spawn(&args_a);
    let sim_b = spawn(&args_b);
    assert_ok("simulate A", &sim_a.wait(Duration::from_secs(60)));
    assert_ok("simulate B", &sim_b.wait(Duration::from_secs(60)));
    assert_ok("record", &recorder.wait(Duration::from_secs(60)));
    let summary = inspect(&ds);
    let rows = kind_rows(&summary, "book") + kind_rows(&summary, "trade");
    assert_eq!(rows, 20_000, "each event once");
    assert_eq!(
        summary["duplicates"], 14_000,
        "duplicates = overlap of the two streams"
    );
    assert_eq!(
        kind_rows(&summary, "gap"),
        0,
        "the late publisher's start is no gap"
    );
}

#[test]
fn injected_faults_become_gap_rows_quarantine_and_silence() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--until-eos",
        "--quiet",
        "--flush-interval",
        "100ms",
        "--gap-grace",
        "200ms",
    ]);
    let sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--events",
        "5000",
        "--rate",
        "20000",
        "--wait-for",
        "1",
        "--seed",
        "5",
        "--heartbeat",
        "200ms",
        "--drop-after",
        "1000",
        "--drop-count",
        "5",
        "--malformed-every",
        "500",
        "--duplicate-every",
        "700",
        "--stall-after",
        "3000",
        "--stall",
        "2s",
        "--quiet",
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    let out = recorder.wait(Duration::from_secs(60));
    assert_ok("record", &out);
    let summary = inspect(&ds);
    assert_eq!(
        kind_rows(&summary, "book") + kind_rows(&summary, "trade"),
        4995,
        "everything but the 5 dropped events is recorded"
    );
    let gaps = summary["gaps"].as_array().unwrap();
    let seq_missing: u64 = gaps
        .iter()
        .filter(|g| g["reason"] == "publisher_seq")
        .map(|g| g["missing"].as_u64().unwrap())
        .sum();
    assert_eq!(
        seq_missing, 5,
        "gap rows account for exactly the dropped events: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| g["reason"] != "venue_seq"),
        "one cause, one gap row: {gaps:?}"
    );
    let silences = gaps.iter().filter(|g| g["reason"] == "silence").count();
    assert_eq!(
        silences, 3,
        "one silence row per instrument of the stalled publisher"
    );
    assert_eq!(summary["duplicates"], 7);
    assert_eq!(summary["malformed"], 10);
    let quarantine: Vec<_> = std::fs::read_dir(ds.join("_quarantine")).unwrap().collect();
    assert_eq!(quarantine.len(), 1);
    let text = std::fs::read_to_string(quarantine[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(
        text.lines().count(),
        10,
        "every malformed message kept with its bytes"
    );
    assert!(
        text.contains("\"hex\":\"fffe0001\""),
        "non-UTF-8 payload kept as hex"
    );
}

#[test]
fn kill_9_mid_stream_loses_nothing_older_than_flush_interval() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    let flush = Duration::from_millis(300);
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--quiet",
        "--flush-interval",
        "300ms",
        "--rotate-every",
        "1s",
        "--row-group-rows",
        "2000",
    ]);
    let tap = capture(&ep, Duration::from_secs(8));
    let _sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--rate",
        "6000",
        "--wait-for",
        "2",
        "--seed",
        "11",
        "--quiet",
        "--duration",
        "30s",
    ]);
    // Let it record across a few rotations, then kill it without warning.
    std::thread::sleep(Duration::from_millis(3500));
    recorder.signal("KILL");
    let killed_at = Instant::now();
    drop(recorder);
    let captured = tap.join().unwrap();
    run_ok(&["recover", ds.to_str().unwrap()]);

    let stored = dataset_payloads(&ds);
    // The promise is about the recorder's receive time; the test knows its own. Both
    // subscribe to one publisher, but on a loaded 2-core CI machine either process can
    // be descheduled for a few hundred ms, so allow that much on top of the interval.
    let margin = flush + Duration::from_millis(400);
    let mut must_have = 0;
    let mut lost: Vec<((String, u64), Duration)> = Vec::new();
    for (topic, payload, at) in &captured.messages {
        if !(topic.starts_with(b"book.") || topic.starts_with(b"trade.")) {
            continue;
        }
        if killed_at.duration_since(*at) <= margin {
            continue;
        }
        must_have += 1;
        let ev = wire::decode(payload, &mut Interner::default()).unwrap();
        let key = (String::from_utf8(topic.clone()).unwrap(), ev.pub_seq);
        if stored.get(&key) != Some(payload) {
            lost.push((key, killed_at.duration_since(*at)));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {must_have} events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        must_have > 10_000,
        "the test covered a real stream ({must_have} events)"
    );
    if let Some(py) = python() {
        run_python(
            &py,
            "check_dataset.py",
            &[ds.to_str().unwrap(), &stored.len().to_string()],
        );
    }
}

#[test]
fn restart_appends_and_python_readers_see_one_dataset() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    for seed in ["1", "2"] {
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
            "4000",
            "--rate",
            "0",
            "--wait-for",
            "1",
            "--seed",
            seed,
            "--venue",
            &format!("v{seed}"),
            "--quiet",
        ]);
        assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
        assert_ok("record", &recorder.wait(Duration::from_secs(60)));
    }
    let summary = inspect(&ds);
    assert_eq!(
        kind_rows(&summary, "book") + kind_rows(&summary, "trade"),
        8000,
        "second session appended"
    );
    assert_eq!(summary["sessions"], 2);
    if let Some(py) = python() {
        run_python(&py, "check_dataset.py", &[ds.to_str().unwrap(), "8000"]);
    }
}

#[test]
fn sigterm_flushes_closes_prints_a_summary_and_exits_zero() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    let recorder = spawn(&["record", ds.to_str().unwrap(), "--connect", &ep, "--quiet"]);
    let sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--events",
        "3000",
        "--rate",
        "0",
        "--wait-for",
        "1",
        "--quiet",
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(500));
    recorder.signal("TERM");
    let out = recorder.wait(Duration::from_secs(30));
    assert_ok("record after SIGTERM", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" received, 3000 written"), "{err}");
    assert!(
        !ds.join("_journal").read_dir().unwrap().any(|_| true),
        "journal retired"
    );
    assert_eq!(dataset_payloads(&ds).len(), 3000);
}

#[test]
fn simulate_publishes_fresh_snapshots_on_request() {
    let dir = tempdir();
    let ep = free_tcp();
    let snap = format!("ipc://{}", dir.path().join("snap.sock").display());
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"book.").unwrap();
    sub.connect(&ep).unwrap();
    let _sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--rate",
        "2000",
        "--duration",
        "20s",
        "--wait-for",
        "1",
        "--snapshot-endpoint",
        &snap,
        "--symbols",
        "A,B",
        "--depth",
        "5",
        "--quiet",
    ]);
    let count_snapshot_levels = |for_how_long: Duration| {
        let until = Instant::now() + for_how_long;
        let mut n = 0;
        while Instant::now() < until {
            if sub.poll(zmq::POLLIN, 50).unwrap() > 0 {
                let frames = sub.recv_multipart(0).unwrap();
                let ev = wire::decode(&frames[1], &mut Interner::default()).unwrap();
                if let ticktape::event::Body::Book(d) = ev.body
                    && d.flags.contains(ticktape::event::Flags::SNAPSHOT)
                {
                    n += 1;
                }
            }
        }
        n
    };
    assert_eq!(
        count_snapshot_levels(Duration::from_millis(800)),
        20,
        "start-up snapshots: 2 symbols x 2 sides x 5 levels"
    );
    assert_eq!(
        count_snapshot_levels(Duration::from_millis(300)),
        0,
        "no snapshots unasked"
    );
    let req = ctx.socket(zmq::REQ).unwrap();
    req.connect(&snap).unwrap();
    req.send(&b"snapshot"[..], 0).unwrap();
    let reply = req.recv_bytes(0).unwrap();
    assert_eq!(reply, br#"{"snapshots":2}"#);
    assert_eq!(
        count_snapshot_levels(Duration::from_millis(800)),
        20,
        "snapshots on request"
    );
}

/// Item 5 of issue 13: a publisher written from docs/PROTOCOL.md alone (exact documented
/// fields, `hb`/`eos` without venue or symbol) plus one field the document does not
/// define. Before the fix its heartbeat and end-of-stream were quarantined ("missing field
/// venue"), so `--until-eos` never ended, and the extra field quarantined everything.
#[test]
fn publisher_written_from_the_protocol_document_is_recorded_whole_and_its_extra_field_counted() {
    let Some(py) = python() else {
        return;
    };
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--until-eos",
        "--quiet",
        "--flush-interval",
        "200ms",
    ]);
    let out = run_python(&py, "publish_from_doc.py", &[&ep, "300", "120"]);
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).expect("publisher summary");
    let out = recorder.wait(Duration::from_secs(30));
    assert_ok("record --until-eos", &out);

    let summary = inspect(&ds);
    assert_eq!(kind_rows(&summary, "book"), sent["book"].as_u64().unwrap());
    assert_eq!(
        kind_rows(&summary, "trade"),
        sent["trade"].as_u64().unwrap()
    );
    assert_eq!(kind_rows(&summary, "gap"), sent["gap"].as_u64().unwrap());
    assert_eq!(summary["malformed"], 0, "nothing quarantined");
    assert!(!ds.join("_quarantine").exists(), "no quarantine file");
    assert_eq!(
        summary["unknown_fields"], sent["unknown_fields"],
        "one unknown field per message, hb and eos included: {sent}"
    );
    let session = std::fs::read_to_string(ds.join("_ticktape/sessions.jsonl")).unwrap();
    let session: serde_json::Value = serde_json::from_str(session.lines().last().unwrap()).unwrap();
    assert_eq!(session["stats"]["first_unknown_field"], "x_next_minor");
    assert_eq!(session["stats"]["heartbeats"], 1);
    assert!(
        session["stats"]["publishers"][0]["ended"]
            .as_bool()
            .unwrap()
    );
}

/// Item 6 of issue 13: the recorder's decoder validates. Each bad message is quarantined
/// with the rule it broke while the good ones around it are stored; before the fix every
/// one of them was accepted (a venue `_journal` even became a directory beside the
/// journal).
#[test]
fn recorder_quarantines_invalid_events_with_the_reason_and_stores_the_good_ones() {
    use std::time::Instant;
    use ticktape::record::{Ingest, RecordConfig};

    let dir = tempdir();
    let ds = dir.path().join("ds");
    let config = RecordConfig {
        dataset: ds.clone(),
        connect: vec!["tcp://test".into()],
        fsync: false,
        ..RecordConfig::default()
    };
    let mut ingest = Ingest::open(&config).unwrap();
    let book = |venue: &str, pub_seq: u64, price: &str, ts_recv: i64| {
        let payload = format!(
            r#"{{"kind":"book","venue":"{venue}","symbol":"S","ts_event":1704164645000000000,"ts_recv":{ts_recv},"pub_seq":{pub_seq},"side":"B","price":"{price}","size":"1","flags":2}}"#
        );
        [format!("book.{venue}.S").into_bytes(), payload.into_bytes()]
    };
    let trade = |trade_id: &str, size: &str| {
        let payload = format!(
            r#"{{"kind":"trade","venue":"v","symbol":"S","ts_event":1704164645000000000,"ts_recv":1704164645000000000,"pub_seq":1,"side":"N","price":"1.5","size":"{size}","trade_id":"{trade_id}"}}"#
        );
        [b"trade.v.S".to_vec(), payload.into_bytes()]
    };
    let t = 1_704_164_645_000_000_000i64;
    let now = Instant::now();
    let good = [
        book("v", 1, "100.5", t),
        book("v", 2, "100.25", t + 1),
        trade("t-1", "0.1"),
    ];
    let bad = [
        (book("v", 3, "0", t + 2), "book price 0 must be above zero"),
        (
            book("v", 3, "-2.5", t + 2),
            "book price -2.5 must be above zero",
        ),
        (
            book("_journal", 1, "1", t),
            "venue \\\"_journal\\\" must start with a-z or 0-9",
        ),
        (book("v", 3, "1", -5), "ts_recv -5 is outside"),
        (
            book("v", 3, "1", i64::MAX),
            "ts_recv 9223372036854775807 is outside",
        ),
        (
            trade(&"x".repeat(200_000), "1"),
            "trade_id is 200000 bytes long, at most 128",
        ),
        (trade("t-2", "0"), "trade size 0 must be above zero"),
    ];
    for m in &good[..2] {
        ingest.on_message(0, m, now).unwrap();
    }
    for (m, _) in &bad {
        ingest.on_message(0, m, now).unwrap();
    }
    ingest.on_message(0, &good[2], now).unwrap();
    let stats = ingest.close().unwrap();
    assert_eq!(stats.malformed, bad.len() as u64);
    assert_eq!(
        stats.accepted,
        good.len() as u64,
        "good events stored, no gap rows"
    );
    assert_eq!(dataset_payloads(&ds).len(), good.len());
    assert!(
        !ds.join("_journal")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().path().is_dir()),
        "no venue directory inside _journal"
    );
    let quarantine = std::fs::read_dir(ds.join("_quarantine"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    let lines: Vec<&str> = quarantine.lines().collect();
    assert_eq!(lines.len(), bad.len());
    for ((_, reason), line) in bad.iter().zip(&lines) {
        let error = &line[..line.find("\"frames\"").unwrap_or(line.len())];
        assert!(error.contains(reason), "expected {reason:?} in {error}");
    }
}

#[test]
fn record_with_a_topic_filter_still_hears_heartbeats_and_end_of_stream() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let ep = free_tcp();
    // Only trades: without hb./eos. subscribed, --until-eos waited forever.
    let recorder = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--connect",
        &ep,
        "--topic",
        "trade.",
        "--until-eos",
        "--quiet",
    ]);
    let sim = spawn(&[
        "simulate",
        "--bind",
        &ep,
        "--events",
        "3000",
        "--rate",
        "0",
        "--wait-for",
        "1",
        "--seed",
        "4",
        "--synthetic-clock",
        CLOCK,
        "--quiet",
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    let out = recorder.wait(Duration::from_secs(30));
    assert_ok("record --topic trade. --until-eos", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(", ended"),
        "the end of stream arrived: {stderr}"
    );
    let summary = inspect(&ds);
    assert!(kind_rows(&summary, "trade") > 0, "{summary}");
    assert_eq!(kind_rows(&summary, "book"), 0, "{summary}");
}
