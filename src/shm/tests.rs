//! The ring and the segment between real processes: the test binary re-executes itself
//! as the peer (a test that does nothing unless its environment variable is set) and
//! hands it the segment as descriptor 3, as `ticktape run` does.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use xxhash_rust::xxh3::Xxh3;

use super::ring::{KIND_BUS, KIND_CLOSED, KIND_GATEWAY, RECORD_HEADER_BYTES, Reader, RingError};
use super::segment::{self, Side};

/// Set in the child: what it should do (`stress:N`, `sleep`).
const CHILD_ENV: &str = "TICKTAPE_SHM_TEST_CHILD";
/// Small rings, so that a few thousand records wrap hundreds of times and fill them.
const DOWN: u64 = 4096;
const UP: u64 = 1024;

/// Starts this test binary running only `test` as the segment's peer, with `fd` as its
/// descriptor 3.
fn spawn_peer(test: &str, mode: &str, fd: i32) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: inherit_as uses only dup2/fcntl, async-signal-safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || segment::inherit_as(fd, super::CHILD_FD));
    }
    cmd.spawn().expect("spawn the peer process")
}

fn child_output(child: Child) -> String {
    let out = child.wait_with_output().expect("peer output");
    format!(
        "peer {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Record `i` of a stress stream: a random topic and payload (sometimes as large as the
/// ring allows, so records wrap and fill it), the payload starting with `i` when it can.
fn record(rng: &mut SmallRng, i: u64, capacity: u64) -> (Vec<u8>, Vec<u8>) {
    let max = (capacity / 4) as usize - RECORD_HEADER_BYTES;
    let total = if rng.gen_ratio(1, 20) {
        rng.gen_range(0..=max)
    } else {
        rng.gen_range(0..=max.min(200))
    };
    let topic_len = rng.gen_range(0..=total.min(40));
    let mut topic = vec![0u8; topic_len];
    let mut payload = vec![0u8; total - topic_len];
    rng.fill(&mut topic[..]);
    rng.fill(&mut payload[..]);
    if payload.len() >= 8 {
        payload[..8].copy_from_slice(&i.to_le_bytes());
    }
    (topic, payload)
}

/// Reads what the child sent up: echo records checked against the child's stream, and
/// the final `(count, checksum)`.
fn drain_up(up: &mut Reader, rng: &mut SmallRng, echoes: &mut u64) -> Option<(u64, u64)> {
    let mut last = None;
    while let Some(rec) = up.read().expect("up ring intact") {
        match rec.kind {
            KIND_GATEWAY => {
                let (_, want) = record(rng, *echoes, UP);
                assert_eq!(rec.payload, &want[..], "echo {echoes} differs");
                *echoes += 1;
            }
            KIND_CLOSED => {
                let p = rec.payload;
                last = Some((
                    u64::from_le_bytes(p[..8].try_into().unwrap()),
                    u64::from_le_bytes(p[8..16].try_into().unwrap()),
                ));
            }
            k => panic!("unexpected kind {k} on the up ring"),
        }
    }
    up.release();
    last
}

#[test]
fn two_processes_exchange_random_records_across_wraps_and_full_rings_intact() {
    const N: u64 = 200_000;
    let mut end = segment::create_with("stress", DOWN, UP).unwrap();
    let child = spawn_peer(
        "shm::tests::peer_process",
        &format!("stress:{N}"),
        end.map.fd(),
    );
    let mut child = Some(child);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut up_rng = SmallRng::seed_from_u64(9);
    let mut sum = Xxh3::new();
    let (mut echoes, mut bytes, mut full_waits) = (0u64, 0u64, 0u64);
    let mut done = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let check_child = |child: &mut Option<Child>| {
        if let Some(status) = child.as_mut().unwrap().try_wait().unwrap() {
            let c = child.take().unwrap();
            panic!("peer exited early ({status}): {}", child_output(c));
        }
        assert!(Instant::now() < deadline, "stress test timed out");
    };
    for i in 0..N {
        let (topic, payload) = record(&mut rng, i, DOWN);
        while !end.down.try_write(KIND_BUS, &topic, &payload).unwrap() {
            full_waits += 1;
            end.down.wake();
            if let Some(d) = drain_up(&mut end.up, &mut up_rng, &mut echoes) {
                done = Some(d);
            }
            end.down.wait_for_space(Duration::from_millis(1));
            check_child(&mut child);
        }
        bytes += (topic.len() + payload.len()) as u64;
        sum.update(&topic);
        sum.update(&payload);
        if i % 16 == 0 {
            end.down.wake();
        }
    }
    while !end.down.try_write(KIND_CLOSED, b"", b"").unwrap() {
        end.down.wait_for_space(Duration::from_millis(1));
        check_child(&mut child);
    }
    end.down.wake();
    while done.is_none() {
        done = drain_up(&mut end.up, &mut up_rng, &mut echoes);
        if done.is_none() {
            end.up.wait(Duration::from_millis(100));
            check_child(&mut child);
        }
    }
    let out = child_output(child.take().unwrap());
    assert!(out.starts_with("peer exit status: 0"), "{out}");
    assert_eq!(
        done,
        Some((N, sum.digest())),
        "count and checksum seen by the peer"
    );
    assert_eq!(echoes, N / 7, "every echo came back in order");
    assert!(full_waits > 100, "the ring filled only {full_waits} times");
    assert!(
        bytes > 100 * DOWN,
        "{bytes} bytes: the ring wrapped at least 100 times"
    );
}

/// The peer of the other tests; does nothing unless started by one of them.
#[test]
fn peer_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let fd = super::take_fd(super::CHILD_FD).unwrap();
    let mut end = super::attach(fd).unwrap();
    if mode == "sleep" {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let n: u64 = mode.strip_prefix("stress:").unwrap().parse().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut up_rng = SmallRng::seed_from_u64(9);
    let mut sum = Xxh3::new();
    let (mut i, mut echoes) = (0u64, 0u64);
    let send_up = |end: &mut super::StrategyEnd, kind: u16, payload: &[u8]| {
        while !end.up.try_write(kind, b"", payload).unwrap() {
            end.up.wake();
            end.up.wait_for_space(Duration::from_millis(1));
            assert!(end.map.peer(Side::Replay).1, "parent gone");
        }
        end.up.wake();
    };
    loop {
        let mut echo = None;
        match end.down.read().expect("down ring intact") {
            Some(rec) if rec.kind == KIND_CLOSED => break,
            Some(rec) => {
                let (topic, payload) = record(&mut rng, i, DOWN);
                assert_eq!(rec.kind, KIND_BUS);
                assert_eq!(rec.topic, &topic[..], "record {i}: topic");
                assert_eq!(rec.payload, &payload[..], "record {i}: payload");
                sum.update(rec.topic);
                sum.update(rec.payload);
                i += 1;
                if i % 7 == 0 {
                    echo = Some(record(&mut up_rng, echoes, UP).1);
                    echoes += 1;
                }
            }
            None => {
                end.down.release();
                end.down.wait(Duration::from_millis(100));
                assert!(end.map.peer(Side::Replay).1, "parent gone");
                continue;
            }
        }
        if i % 64 == 0 {
            end.down.release();
        }
        if i % 1000 == 0 {
            // Fall behind now and then, so the writer finds the ring full.
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(payload) = echo {
            send_up(&mut end, KIND_GATEWAY, &payload);
        }
    }
    end.down.release();
    let mut last = i.to_le_bytes().to_vec();
    last.extend_from_slice(&sum.digest().to_le_bytes());
    send_up(&mut end, KIND_CLOSED, &last);
    assert_eq!(i, n);
}

#[test]
fn a_killed_peer_is_seen_dead_and_its_segment_leaves_nothing_named() {
    let name = format!("leakcheck-{}", std::process::id());
    let end = segment::create_with(&name, DOWN, UP).unwrap();
    assert_eq!(
        end.map.peer(Side::Strategy),
        (0, false),
        "nobody attached yet"
    );
    let mut child = spawn_peer("shm::tests::peer_process", "sleep", end.map.fd());
    let started = Instant::now();
    while end.map.peer(Side::Strategy).0 == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "peer never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (pid, alive) = end.map.peer(Side::Strategy);
    assert_eq!(pid, child.id());
    assert!(alive);
    child.kill().unwrap();
    // Dead before it is reaped (a zombie counts as dead) and after.
    let started = Instant::now();
    while end.map.peer(Side::Strategy).1 {
        assert!(started.elapsed() < Duration::from_secs(5), "kill not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    assert_eq!(end.map.peer(Side::Strategy), (pid, false));
    // The segment is a descriptor of this process only, named nowhere in the file system.
    let label = format!("ticktape-{name}");
    let ours = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| t.to_string_lossy().contains(&label))
            .count()
    };
    assert_eq!(ours(), 1, "one descriptor while the segment lives");
    let shm_names = |dir: &str| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("ticktape"))
                .count()
        })
    };
    assert_eq!(shm_names("/dev/shm"), 0, "nothing named in /dev/shm");
    drop(end);
    assert_eq!(ours(), 0, "no descriptor after the last end is dropped");
}

#[test]
fn oversized_records_are_refused_and_corrupt_ones_are_reported() {
    let mut end = segment::create_with("bad", DOWN, UP).unwrap();
    let err = end
        .down
        .try_write(KIND_BUS, b"t", &vec![0; DOWN as usize / 4])
        .unwrap_err();
    assert!(matches!(err, RingError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("quarter"), "{err}");
    assert!(
        end.down.try_write(KIND_BUS, b"", &[]).unwrap(),
        "empty records are fine"
    );
    // The up ring as a foreign writer might leave it: a length past the ring's end.
    let strategy = super::attach(
        std::os::fd::AsFd::as_fd(&*end.map)
            .try_clone_to_owned()
            .unwrap(),
    )
    .unwrap();
    let mut up = strategy.up;
    assert!(up.try_write(KIND_GATEWAY, b"", b"hello").unwrap());
    let rec = end.up.read().unwrap().unwrap();
    assert_eq!((rec.kind, rec.payload), (KIND_GATEWAY, &b"hello"[..]));
    end.up.release();
    assert!(up.try_write(KIND_GATEWAY, b"", b"next").unwrap());
    let header = end.map.header();
    let up_data = header.up_offset as usize + super::ring::RING_HEADER_BYTES;
    // SAFETY: the record of "next" starts 16 bytes into the up ring's data area, inside
    // the mapping; nothing else touches it during the test.
    unsafe {
        let len = end.map.base().add(up_data + 16) as *mut u32;
        len.write_unaligned(u32::MAX - 1);
    }
    let err = end.up.read().unwrap_err();
    assert!(matches!(err, RingError::Corrupt { at: 16, .. }), "{err}");
}

#[test]
fn a_reader_about_to_sleep_says_so_once_and_the_next_wake_ends_its_sleep() {
    let mut end = segment::create_with("hint", DOWN, UP).unwrap();
    let strategy = super::attach(
        std::os::fd::AsFd::as_fd(&*end.map)
            .try_clone_to_owned()
            .unwrap(),
    )
    .unwrap();
    assert!(
        end.down.try_write(KIND_BUS, b"t", b"0").unwrap(),
        "a first record"
    );
    assert!(!end.down.reader_sleeps(), "nobody sleeps yet");
    let mut down = strategy.down;
    let reader = std::thread::spawn(move || {
        assert!(down.read().unwrap().is_some());
        down.release();
        let began = Instant::now();
        // Sleeps (up to 10 s) until the writer wakes it for the next record.
        down.wait(Duration::from_secs(10));
        (
            began.elapsed(),
            down.read().unwrap().map(|r| r.payload.to_vec()),
        )
    });
    let began = Instant::now();
    // The reader says it sleeps once it has read the first record.
    let mut asleep = false;
    while !asleep && began.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
        asleep = end.down.unread() == 0 && end.down.reader_sleeps();
    }
    assert!(asleep, "the reader never said it sleeps");
    assert!(!end.down.reader_sleeps(), "a wake is asked for once");
    assert!(end.down.try_write(KIND_BUS, b"t", b"1").unwrap());
    end.down.wake();
    let (slept, next) = reader.join().unwrap();
    assert_eq!(next.as_deref(), Some(&b"1"[..]));
    assert!(
        slept < Duration::from_secs(5),
        "woken, not timed out: {slept:?}"
    );
}

/// A hub with one strategy `name`, and that strategy's down ring attached in this process.
fn hub_with_one_strategy(name: &str) -> (super::Hub, Reader) {
    let hub = super::Hub::create(&[name.to_string()], Duration::from_secs(5)).unwrap();
    let (_, raw) = hub.fds()[0].clone();
    // SAFETY: the hub keeps the descriptor open while it lives; we only duplicate it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }
        .try_clone_to_owned()
        .unwrap();
    let down = super::attach(fd).unwrap().down;
    (hub, down)
}

#[test]
fn the_hub_wakes_a_sleeping_strategy_at_its_first_record_not_at_the_next_marker() {
    let (mut hub, mut down) = hub_with_one_strategy("hint");
    let reader = std::thread::spawn(move || {
        let began = Instant::now();
        // Nothing to read: sleeps (up to 10 s) until the hub wakes it.
        down.wait(Duration::from_secs(10));
        (
            began.elapsed(),
            down.read().unwrap().map(|r| r.payload.to_vec()),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    // One bus record: far fewer than the hub's batch between wakes, and no step marker.
    hub.publish(b"t", b"1").unwrap();
    let (slept, next) = reader.join().unwrap();
    assert_eq!(next.as_deref(), Some(&b"1"[..]));
    assert!(
        slept < Duration::from_secs(5),
        "the sleeping reader was not woken for its record: slept {slept:?}"
    );
}

#[test]
fn staged_messages_stay_unseen_until_the_commit_and_a_reply_keeps_their_order() {
    let (mut hub, mut down) = hub_with_one_strategy("stage");
    let read_all = |down: &mut Reader| {
        let mut got = Vec::new();
        while let Some(r) = down.read().unwrap() {
            got.push((r.kind, r.payload.to_vec()));
        }
        down.release();
        got
    };
    hub.batch(true);
    for i in 0..100u32 {
        hub.publish(b"t", &i.to_le_bytes()).unwrap();
    }
    assert!(
        read_all(&mut down).is_empty(),
        "nothing visible before the commit"
    );
    assert!(hub.can_stage(1024), "a quarter of the ring holds far more");
    assert!(hub.commit(), "something was staged");
    assert!(!hub.commit(), "and nothing is left");
    let got = read_all(&mut down);
    assert_eq!(got.len(), 100, "the whole burst at once");
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, (k, p))| *k == KIND_BUS && p[..] == (i as u32).to_le_bytes())
    );
    // A reply written while messages are staged publishes them first, in order.
    hub.publish(b"t", b"before").unwrap();
    hub.reply(&super::Hub::identity(0), b"reply").unwrap();
    hub.publish(b"t", b"after").unwrap();
    let got = read_all(&mut down);
    assert_eq!(
        got,
        vec![
            (KIND_BUS, b"before".to_vec()),
            (KIND_GATEWAY, b"reply".to_vec())
        ],
        "the message staged after the reply waits for the next commit"
    );
    hub.batch(false);
    assert_eq!(read_all(&mut down), vec![(KIND_BUS, b"after".to_vec())]);
    // More than the ring's staging share cannot be staged without publishing.
    let cap = super::segment::DOWN_CAPACITY;
    assert!(!hub.can_stage(cap / 2), "half the ring is past its share");
}

/// Everything published so far on `down`, in order.
fn read_payloads(down: &mut Reader) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(r) = down.read().unwrap() {
        got.push(r.payload.to_vec());
    }
    down.release();
    got
}

/// A cover moves the head only forward, up to the end it was given: a stale one (the
/// writer published past it since) does nothing, and the writer's own publication of
/// what the cover published already changes nothing either.
#[test]
fn a_cover_publishes_only_forward_up_to_the_end_it_was_given() {
    let (mut hub, mut down) = hub_with_one_strategy("cover");
    hub.batch(true);
    hub.publish(b"t", b"1").unwrap();
    hub.publish(b"t", b"2").unwrap();
    let writer = &mut hub_down(&mut hub);
    let to = writer.staged_end();
    let cover = writer.cover();
    assert!(read_payloads(&mut down).is_empty(), "nothing visible yet");
    assert!(cover.publish(to), "the cover publishes what is staged");
    assert!(!cover.publish(to), "once");
    assert_eq!(read_payloads(&mut down), [b"1".to_vec(), b"2".to_vec()]);
    assert!(
        writer.publish(),
        "the writer's own publication of the same records"
    );
    assert!(read_payloads(&mut down).is_empty(), "shows nothing twice");
    // A stale cover: the writer published more since.
    hub.publish(b"t", b"3").unwrap();
    let to3 = hub_down(&mut hub).staged_end();
    hub.publish(b"t", b"4").unwrap();
    assert!(hub.commit());
    assert!(
        !cover.publish(to3),
        "the head moved past it: nothing happens"
    );
    assert_eq!(read_payloads(&mut down), [b"3".to_vec(), b"4".to_vec()]);
    assert!(!cover.publish(to), "an older one neither");
    // A burst posted in parts: each cover publishes up to its own end.
    hub.publish(b"t", b"5").unwrap();
    let to5 = hub_down(&mut hub).staged_end();
    hub.publish(b"t", b"6").unwrap();
    let to6 = hub_down(&mut hub).staged_end();
    assert!(cover.publish(to5));
    assert_eq!(read_payloads(&mut down), [b"5".to_vec()]);
    assert!(
        cover.publish(to6),
        "the rest, from where the first part left the head"
    );
    assert_eq!(read_payloads(&mut down), [b"6".to_vec()]);
    assert!(
        !cover.publish(to5),
        "the head is past it: nothing moves back"
    );
    // The writer publishing short of where a cover moved the head does not move it
    // back: a held burst the cover published, then the writer's commit of what lies
    // before it.
    hub.publish(b"t", b"7").unwrap();
    hub.hold_next();
    hub.publish(b"t", b"8").unwrap();
    hub.held_written();
    let to8 = hub_down(&mut hub).written();
    assert!(cover.publish(to8));
    assert!(
        hub.commit(),
        "the writer publishes up to the hold, behind the head"
    );
    assert_eq!(read_payloads(&mut down), [b"7".to_vec(), b"8".to_vec()]);
    hub.publish(b"t", b"9").unwrap();
    assert!(
        !hub.commit(),
        "still held: nothing after the held burst goes out"
    );
    assert!(hub.release_held());
    assert_eq!(
        read_payloads(&mut down),
        [b"9".to_vec()],
        "nothing shown twice"
    );
}

/// A burst written ahead is held: neither a commit nor a gateway reply written after
/// it shows it, or anything after it; releasing the oldest held burst publishes it and
/// what was written before the next one, in the order written.
#[test]
fn held_bursts_go_out_only_when_released_in_the_order_written() {
    let (mut hub, mut down) = hub_with_one_strategy("held");
    hub.batch(true);
    hub.publish(b"t", b"front").unwrap();
    hub.hold_next();
    hub.publish(b"t", b"a1").unwrap();
    hub.publish(b"t", b"a2").unwrap();
    hub.held_written();
    hub.hold_next();
    hub.publish(b"t", b"b1").unwrap();
    hub.held_written();
    assert_eq!(hub.held(), 2);
    // The exchange's messages and a reply, written while both are held.
    hub.publish(b"t", b"fill").unwrap();
    hub.reply(&super::Hub::identity(0), b"ack").unwrap();
    assert_eq!(
        read_payloads(&mut down),
        [b"front".to_vec()],
        "the reply publishes what was staged before the held bursts, not them"
    );
    assert!(!hub.commit(), "nothing more may go out");
    assert!(hub.release_held());
    assert_eq!(read_payloads(&mut down), [b"a1".to_vec(), b"a2".to_vec()]);
    assert!(!hub.commit(), "b is still held");
    assert!(hub.release_held());
    assert_eq!(
        read_payloads(&mut down),
        [b"b1".to_vec(), b"fill".to_vec(), b"ack".to_vec()],
        "what was written while held follows it"
    );
    assert_eq!(hub.held(), 0);
    // A stop with bursts held: ending the batch publishes them.
    hub.hold_next();
    hub.publish(b"t", b"c").unwrap();
    hub.held_written();
    assert!(!hub.commit());
    hub.batch(false);
    assert_eq!(read_payloads(&mut down), [b"c".to_vec()]);
}

/// The hub's only down ring (for the tests that reach below the hub).
fn hub_down(hub: &mut super::Hub) -> &mut super::ring::Writer {
    hub.down_ring(0)
}

/// The backup publisher publishes a posted burst at its due time when this thread does
/// not (never before), and wakes the reader asleep for it; taking the ticket back says
/// it did, and when. A burst this thread publishes itself is left alone.
#[test]
fn the_backup_publishes_a_burst_the_replay_thread_has_not_at_its_due_time() {
    let (mut hub, mut down) = hub_with_one_strategy("backup");
    hub.start_backup().unwrap();
    hub.batch(true);
    // This thread publishes itself: the backup leaves it.
    hub.publish(b"t", b"mine").unwrap();
    let mine = hub
        .post_staged(Instant::now() + Duration::from_millis(200), 1, None)
        .unwrap();
    assert!(hub.commit());
    assert_eq!(hub.take_back(mine), None, "published here first");
    assert_eq!(read_payloads(&mut down), [b"mine".to_vec()]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        read_payloads(&mut down).is_empty(),
        "nothing published twice"
    );
    // This thread does not publish by the due time: the backup does, and wakes the
    // reader, which sleeps on its ring meanwhile.
    for i in 0..50u32 {
        hub.publish(b"t", &i.to_le_bytes()).unwrap();
    }
    let reader = std::thread::spawn(move || {
        let began = Instant::now();
        let mut got = Vec::new();
        while got.len() < 50 && began.elapsed() < Duration::from_secs(10) {
            down.wait(Duration::from_secs(10));
            got.extend(read_payloads(&mut down));
        }
        (Instant::now(), got, down)
    });
    let due = Instant::now() + Duration::from_millis(100);
    let posted = hub.post_staged(due, 50, None).expect("a backup runs");
    let (seen, got, mut down) = reader.join().unwrap();
    assert!(seen >= due, "seen {:?} before its due time", due - seen);
    assert!(
        seen - due < Duration::from_secs(5),
        "the reader asleep was woken, not timed out: {:?} after the due time",
        seen - due
    );
    assert_eq!(got.len(), 50, "the whole burst, woken for it");
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, p)| p[..] == (i as u32).to_le_bytes())
    );
    // This thread's own publication, late, stores the head the backup stored (what it
    // shows is tested with the cover above).
    hub.commit();
    let (at, tag) = hub
        .take_back(posted)
        .expect("the backup published it first");
    assert_eq!(tag, 50, "the ticket it published");
    assert!(
        at >= due && at <= seen,
        "published at {at:?}: due {due:?}, seen {seen:?}"
    );
    // Past its due time, a burst posted as it is written is published as it comes.
    let due = Instant::now();
    for i in 0..10u32 {
        hub.publish(b"t", &i.to_le_bytes()).unwrap();
    }
    let first = hub.post_staged(due, 10, None).unwrap();
    let began = Instant::now();
    while read_payloads(&mut down).len() < 10 {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the first part came"
        );
        std::thread::yield_now();
    }
    for i in 10..20u32 {
        hub.publish(b"t", &i.to_le_bytes()).unwrap();
    }
    let second = hub.post_staged(due, 20, Some(first)).unwrap();
    assert_eq!(second, first, "an update of the same ticket");
    while read_payloads(&mut down).len() < 10 {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the second part came"
        );
        std::thread::yield_now();
    }
    hub.commit();
    let (_, tag) = hub
        .take_back(second)
        .expect("the backup published both parts");
    assert_eq!(tag, 20, "the last version it published");
    hub.stop_backup();
}

/// Bursts held ahead are published by the backup each at its own due time, in order,
/// never before. The replay thread's late releases show nothing twice, and publish
/// what was written after the last one.
#[test]
fn the_backup_publishes_held_bursts_each_at_its_own_due_time() {
    let (mut hub, mut down) = hub_with_one_strategy("backup-held");
    hub.start_backup().unwrap();
    hub.batch(true);
    let now = Instant::now();
    let (due1, due2) = (
        now + Duration::from_millis(150),
        now + Duration::from_millis(550),
    );
    hub.hold_next();
    hub.publish(b"t", b"a").unwrap();
    let a = hub.post_held(due1, 1, None).unwrap();
    hub.hold_next();
    hub.publish(b"t", b"b").unwrap();
    let b = hub.post_held(due2, 1, None).unwrap();
    assert!(b > a, "a ticket each");
    hub.publish(b"t", b"fill").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 && now.elapsed() < Duration::from_secs(5) {
        for p in read_payloads(&mut down) {
            seen.push((p, Instant::now()));
        }
        std::thread::yield_now();
    }
    let got: Vec<_> = seen.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    assert!(seen[0].1 >= due1, "a was shown before its due time");
    assert!(seen[0].1 < due2, "a waited for b's due time");
    assert!(seen[1].1 >= due2, "b was shown before its due time");
    // What was written after the last burst held goes out with this thread's release.
    hub.release_held();
    assert!(read_payloads(&mut down).is_empty(), "nothing shown twice");
    hub.release_held();
    assert_eq!(hub.held(), 0);
    assert_eq!(read_payloads(&mut down), [b"fill".to_vec()]);
    let (at, tag) = hub.take_back(b).expect("the backup published b");
    assert!(at >= due2 && tag == 1);
    hub.stop_backup();
}

/// While a backup publisher runs, the wake-up of a reader asleep is its to make: the
/// reader is woken for what this thread published.
#[test]
fn with_a_backup_the_reader_asleep_is_woken_by_it() {
    let (mut hub, mut down) = hub_with_one_strategy("backup-wake");
    hub.start_backup().unwrap();
    let reader = std::thread::spawn(move || {
        let began = Instant::now();
        // Nothing to read: sleeps (up to 10 s) until it is woken.
        down.wait(Duration::from_secs(10));
        (began.elapsed(), read_payloads(&mut down))
    });
    std::thread::sleep(Duration::from_millis(200));
    hub.batch(true);
    hub.publish(b"t", b"1").unwrap();
    assert!(hub.commit());
    hub.wake_sleepers();
    let (slept, got) = reader.join().unwrap();
    assert_eq!(got, [b"1".to_vec()]);
    assert!(
        slept < Duration::from_secs(5),
        "woken, not timed out: slept {slept:?}"
    );
    hub.stop_backup();
}

#[test]
fn header_and_ring_layouts_match_docs_shm_md_and_the_python_client() {
    use super::ring::RingHeader;
    use super::segment::SegmentHeader;
    use std::mem::offset_of;
    // The Python client (python/ticktape_client/_shm.py) reads these offsets.
    assert_eq!(offset_of!(SegmentHeader, layout_version), 8);
    assert_eq!(offset_of!(SegmentHeader, down_offset), 16);
    assert_eq!(offset_of!(SegmentHeader, up_capacity), 40);
    assert_eq!(offset_of!(SegmentHeader, replay_pid), 48);
    assert_eq!(offset_of!(SegmentHeader, strategy_pid), 52);
    assert_eq!(offset_of!(SegmentHeader, replay_start_time), 56);
    assert_eq!(offset_of!(SegmentHeader, strategy_start_time), 64);
    assert_eq!(offset_of!(SegmentHeader, strategy_beat), 80);
    assert_eq!(offset_of!(SegmentHeader, closed), 88);
    assert_eq!(offset_of!(RingHeader, head), 0);
    assert_eq!(offset_of!(RingHeader, tail), 64);
    assert_eq!(offset_of!(RingHeader, data_seq), 128);
    assert_eq!(offset_of!(RingHeader, space_seq), 132);
    assert_eq!(offset_of!(RingHeader, writer_waiting), 136);
    assert_eq!(offset_of!(RingHeader, reader_sleeping), 140);
    assert_eq!(std::mem::size_of::<RingHeader>(), 256);
}
