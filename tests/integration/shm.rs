//! The shared-memory transport end to end (issue 14, `docs/SHM.md`): the same strategy
//! binaries over ZeroMQ, shared memory and in-process give the same fills; a strategy
//! that dies, stops reading, or loses its replay ends the run as over ZeroMQ and leaves
//! nothing behind; the Python client reads the same segment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// The demo's digest (`scenarios/demo.toml`, README).
const DEMO_DIGEST: &str = "dbd5833cdd77500b";

/// `ticktape run scenario --out out --quiet extra`, as arguments.
fn run_args<'a>(scenario: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args
}

fn run(scenario: &Path, out: &Path, extra: &[&str]) -> String {
    run_ok(&run_args(scenario, out, extra));
    digest(out)
}

/// A scenario over the demo data: `window`, `lookahead` (None: simple lockstep), strategy
/// names suffixed with `tag` (so tests can find their own processes), `replay` lines added.
fn scenario(
    dir: &Path,
    tag: &str,
    window: (&str, &str),
    lookahead: Option<&str>,
    replay: &str,
) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance-spot");
    let lookahead = lookahead.map_or(String::new(), |l| format!("lookahead = {l:?}\n"));
    let text = format!(
        r#"name = "shm-{tag}"
[data]
dataset = {data:?}
venues = ["binance"]
symbols = ["BTCUSDT"]
start = {start:?}
end = {end:?}
[replay]
lockstep = true
{lookahead}{replay}
[[strategy]]
name = "mm-{tag}"
builtin = "mm"
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[[strategy]]
name = "taker-{tag}"
builtin = "taker"
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = {{ model = "constant", ns = 1_000_000 }}
queue = "risk_averse"
fees = {{ maker_bps = 1.0, taker_bps = 5.0 }}
"#,
        start = window.0,
        end = window.1,
    );
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn demo_over_zmq_shm_and_inproc_gives_the_same_digest_and_fills() {
    let dir = tempdir();
    let (zmq, shm, inproc) = (
        dir.path().join("zmq"),
        dir.path().join("shm"),
        dir.path().join("inproc"),
    );
    let d_zmq = run(Path::new("scenarios/demo.toml"), &zmq, &[]);
    let d_shm = run(Path::new("scenarios/demo-shm.toml"), &shm, &[]);
    let d_inproc = run(Path::new("scenarios/demo-inproc.toml"), &inproc, &[]);
    assert_eq!(d_zmq, DEMO_DIGEST, "demo.toml over ZeroMQ");
    assert_eq!(d_shm, DEMO_DIGEST, "demo-shm.toml over shared memory");
    assert_eq!(d_inproc, DEMO_DIGEST, "demo-inproc.toml in-process");
    let s = summary(&shm);
    assert_eq!(s["transport"], "shm", "{s}");
    assert_eq!(summary(&zmq)["transport"], "zmq");
    assert_eq!(s["replay"]["events"], 135_830, "{s}");
    assert!(s["replay"]["steps"].as_u64().unwrap() > 1000, "{s}");
    assert_eq!(s["replay"]["refused"], 0, "{s}");
    for file in ["fills.parquet", "orders.parquet", "marks.parquet"] {
        let (a, b, c) = (rows(&zmq, file), rows(&shm, file), rows(&inproc, file));
        assert!(!a.is_empty(), "{file} has rows");
        assert_eq!(a, b, "{file}: zmq vs shm");
        assert_eq!(b, c, "{file}: shm vs in-process");
    }
    for s in summary(&shm)["strategies"].as_array().unwrap() {
        assert_eq!(s["code"], 0, "{s}");
        let log = std::fs::read_to_string(s["log"].as_str().unwrap()).unwrap();
        assert!(log.contains("lockstep acks"), "{log}");
    }
}

#[test]
fn simple_lockstep_over_shm_matches_zmq_and_the_cli_flag_overrides_the_scenario() {
    let dir = tempdir();
    let window = ("2024-08-08T23:56:00Z", "2024-08-08T23:56:30Z");
    let s = scenario(dir.path(), "simple", window, None, "");
    let d_zmq = run(&s, &dir.path().join("zmq"), &[]);
    let d_shm = run(&s, &dir.path().join("shm"), &["--transport", "shm"]);
    assert_eq!(d_zmq, d_shm, "simple lockstep, zmq vs shm");
    let steps = summary(&dir.path().join("shm"))["replay"]["steps"]
        .as_u64()
        .unwrap();
    let events = summary(&dir.path().join("shm"))["replay"]["events"]
        .as_u64()
        .unwrap();
    assert_eq!(steps, events, "one step per event in the simple form");
    assert_eq!(
        rows(&dir.path().join("zmq"), "fills.parquet"),
        rows(&dir.path().join("shm"), "fills.parquet")
    );
}

/// Paced replay (no lockstep) over shared memory: the rings carry a paced stream and the
/// gateway as they carry lockstep; every event reaches each strategy, the pacer's figures
/// are in the summary, and orders are answered.
#[test]
fn a_paced_replay_without_lockstep_reaches_every_shm_strategy_and_reports_its_lateness() {
    let dir = tempdir();
    let window = ("2024-08-08T23:57:00Z", "2024-08-08T23:57:20Z");
    let s = scenario(
        dir.path(),
        "paced",
        window,
        None,
        "speed = \"10\"\ntransport = \"shm\"\n",
    );
    let text = std::fs::read_to_string(&s)
        .unwrap()
        .replace("lockstep = true", "lockstep = false");
    std::fs::write(&s, text).unwrap();
    let out = dir.path().join("run");
    run(&s, &out, &[]);
    let sum = summary(&out);
    assert_eq!(sum["transport"], "shm", "{sum}");
    let events = sum["replay"]["events"].as_u64().unwrap();
    assert!(events > 1000, "{sum}");
    assert_eq!(sum["replay"]["steps"], 0, "no lockstep: {sum}");
    let lateness = &sum["replay"]["lateness"];
    assert!(lateness["p99_us"].as_f64().is_some(), "paced: {sum}");
    assert!(
        sum["replay"]["requests"].as_u64().unwrap() > 0,
        "orders went out: {sum}"
    );
    for name in ["mm-paced", "taker-paced"] {
        let log = std::fs::read_to_string(out.join(format!("strategy-{name}.log"))).unwrap();
        assert!(
            log.contains(&format!("strategy {name}: {events} events")),
            "{name} saw every event: {log}"
        );
    }
    assert_answers_timed(&sum);
    // Over shared memory bursts are written into the rings, not sent one at a time.
    assert!(sum["replay"]["pacing"]["sends"].is_null(), "{sum}");
    // The same scenario over ZeroMQ replays the same events.
    let zmq = dir.path().join("zmq");
    run(&s, &zmq, &["--transport", "zmq"]);
    let sum = summary(&zmq);
    assert_eq!(sum["replay"]["events"], events);
    assert_answers_timed(&sum);
    // Each market event's send is timed.
    let sends = &sum["replay"]["pacing"]["sends"];
    assert_eq!(sends["samples"].as_u64(), Some(events), "{sends}");
    let p = |q: &str| sends[q].as_u64().unwrap();
    assert!(
        p("p50_ns") <= p("p90_ns") && p("p90_ns") <= p("p99_ns") && p("p99_ns") <= p("max_ns"),
        "{sends}"
    );
}

/// The summary of a paced run with resting orders times the exchange's answers to
/// market events (fills of resting orders).
fn assert_answers_timed(sum: &serde_json::Value) {
    let answers = &sum["replay"]["pacing"]["answers"];
    let samples = answers["samples"].as_u64().unwrap_or(0);
    assert!(samples > 0, "answers timed: {sum}");
    assert!(answers["p99_us"].as_f64().is_some(), "{answers}");
}

/// A paced (`lockstep = false`) [`scenario`] whose mm strategy runs through a shell that
/// first runs `prelude`, so the test can read what the strategy process was given.
fn paced_mm_after(
    dir: &Path,
    tag: &str,
    window: (&str, &str),
    replay: &str,
    prelude: &str,
) -> PathBuf {
    let s = scenario(dir, tag, window, None, replay);
    let command = format!(
        r#"command = ["sh", "-c", "{prelude}; exec \"$0\" strategy mm --bus {{bus}} --gateway {{gateway}} --venue {{venue}} --symbol {{symbol}} --size {{size}} --id {{name}}", {:?}]"#,
        bin()
    );
    let text = std::fs::read_to_string(&s)
        .unwrap()
        .replace("lockstep = true", "lockstep = false")
        .replacen("builtin = \"mm\"", &command, 1);
    std::fs::write(&s, text).unwrap();
    s
}

/// The log of strategy `name` in run directory `out`, which says it saw all `events`.
fn log_of_strategy_that_saw(out: &Path, name: &str, events: u64) -> String {
    let log = std::fs::read_to_string(out.join(format!("strategy-{name}.log"))).unwrap();
    assert!(
        log.contains(&format!("strategy {name}: {events} events")),
        "it saw every event: {log}"
    );
    log
}

/// `ticktape run scenario --out out extra` fails, saying every one of `says`, before it
/// made the run directory.
fn assert_refused(scenario: &Path, out: &Path, extra: &[&str], says: &[&str]) {
    let refused = spawn(&run_args(scenario, out, extra)).wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        says.iter().all(|s| err.contains(s)),
        "says what to change ({says:?}): {err}"
    );
    assert!(!out.exists(), "refused before a run directory was made");
}

/// `busy_poll = true`: a strategy process started by the run finds the polling ceiling in
/// its environment (the Rust SDK and the Python client read it), reads every event of a
/// paced replay, and the key is refused over ZeroMQ with what to change.
#[test]
fn busy_poll_gives_shm_strategies_the_polling_ceiling_and_is_refused_over_zmq() {
    let dir = tempdir();
    let window = ("2024-08-08T23:57:00Z", "2024-08-08T23:57:05Z");
    let replay = "speed = \"10\"\ntransport = \"shm\"\nbusy_poll = true\n";
    // The mm strategy through a shell that prints its environment first.
    let s = paced_mm_after(
        dir.path(),
        "poll",
        window,
        replay,
        "echo ceiling=$TICKTAPE_SHM_SPIN_US",
    );
    let out = dir.path().join("run");
    run(&s, &out, &[]);
    let sum = summary(&out);
    let events = sum["replay"]["events"].as_u64().unwrap();
    assert!(events > 100, "{sum}");
    let log = log_of_strategy_that_saw(&out, "mm-poll", events);
    assert!(
        log.contains(&format!("ceiling={}", ticktape::shm::BUSY_POLL_SPIN_US)),
        "the strategy's environment: {log}"
    );

    assert_refused(
        &s,
        &dir.path().join("zmq"),
        &["--transport", "zmq"],
        &["busy_poll", "transport = \"shm\""],
    );
}

/// `own_core = true`: while the paced run goes, one thread of it holds the last CPU alone,
/// and the read-ahead, the exchange host's writer, the backup publisher and the strategy
/// process may use only the others; the summary names the CPU, the `busy` pacing and
/// what the backup publisher did (bursts written ahead and held among it); the strategy
/// sees every event once, held or not; an unpaced run
/// with the key, and a backup publisher over ZeroMQ, are refused with what to change.
#[test]
fn own_core_keeps_the_strategy_and_the_replays_threads_off_its_cpu_and_busy_pacing_reaches_it() {
    let Some(mine) = two_cpus_or_skip("own_core") else {
        return;
    };
    let (own, others) = mine.split_last().unwrap();
    let dir = tempdir();
    let window = ("2024-08-08T23:57:00Z", "2024-08-08T23:57:10Z");
    let replay = "speed = \"10\"\ntransport = \"shm\"\nown_core = true\npacing = \"busy\"\nbackup_publisher = true\n";
    // The mm strategy through a shell that prints the CPUs it may use first.
    let s = paced_mm_after(
        dir.path(),
        "own",
        window,
        replay,
        "grep Cpus_allowed_list /proc/self/status",
    );
    let out = dir.path().join("run");
    let mut proc = spawn(&[
        "run",
        s.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    // The run's threads and the CPUs each may use, sampled while it runs (1 s at 10x).
    let mut seen: std::collections::BTreeSet<(String, Vec<usize>)> = Default::default();
    let pid = proc.child.id();
    while proc.child.try_wait().unwrap().is_none() {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if let Some(cpus) = allowed_cpus(&status) {
                seen.insert((comm.trim().to_string(), cpus));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = proc.wait(Duration::from_secs(5));
    assert_ok("run with own_core", &output);
    let sum = summary(&out);
    assert_eq!(
        sum["replay"]["own_cpu"].as_u64(),
        Some(*own as u64),
        "{sum}"
    );
    assert_eq!(sum["replay"]["pacing"]["waiting"], "busy", "{sum}");
    assert!(
        seen.iter().any(|(_, cpus)| cpus == &vec![*own]),
        "a thread of the run held CPU {own} alone: {seen:?}"
    );
    // The threads the run starts for the replay: the dataset's read-ahead and the
    // exchange host's run-file writer, on the other CPUs only.
    for thread in ["read-ahead", "run-writer", "backup-publish"] {
        let cpus: Vec<&Vec<usize>> = seen
            .iter()
            .filter(|(comm, _)| comm == thread)
            .map(|(_, cpus)| cpus)
            .collect();
        assert!(
            !cpus.is_empty() && cpus.iter().all(|c| c.as_slice() == others),
            "{thread} only ever on the other CPUs {others:?}: {seen:?}"
        );
    }
    // The backup's figures: the bursts it published before the replay thread (any
    // number, the machine decides) are among the run's.
    let events = sum["replay"]["events"].as_u64().unwrap();
    let backup = &sum["replay"]["pacing"]["backup"];
    assert!(
        backup["events"].as_u64().is_some_and(|e| e <= events)
            && backup["bursts"].as_u64().is_some_and(|b| b <= events),
        "{sum}"
    );
    // Bursts written ahead and held: at 10x this data brings thousands of bursts due
    // within 1 ms of the one before, so some are, whatever the machine.
    assert!(
        backup["held_events"].as_u64().is_some_and(|e| e <= events)
            && backup["held_bursts"].as_u64().is_some_and(|b| b > 0),
        "{sum}"
    );
    // And those written less than 100 us before their due time are counted (how many
    // is the machine's to say: a stall of the replay's core while it writes).
    assert!(
        backup["exposed_events"]
            .as_u64()
            .is_some_and(|e| e <= events)
            && backup["exposed_bursts"]
                .as_u64()
                .is_some_and(|b| b <= backup["exposed_events"].as_u64().unwrap()),
        "{sum}"
    );
    let log = log_of_strategy_that_saw(&out, "mm-own", events);
    let strategy = allowed_cpus(&log).expect("the strategy printed its CPUs");
    assert_eq!(strategy, others, "the strategy's CPUs: {log}");

    // Unpaced, there is no pacing thread to give a core: refused before a run directory.
    assert_refused(
        &s,
        &dir.path().join("max"),
        &["--speed", "max"],
        &["own_core", "paced replay"],
    );
    assert_refused(
        &s,
        &dir.path().join("zmq"),
        &["--transport", "zmq"],
        &["backup_publisher", "transport = \"shm\""],
    );
}

/// Entries of `/dev/shm` that ticktape could have made.
fn dev_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("ticktape") || n.starts_with("tt-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line holds `needle`, other than this test.
fn alive(needle: &str) -> Vec<(u32, String)> {
    processes(needle)
        .into_iter()
        .filter(|(pid, _)| *pid != std::process::id())
        .filter(|(pid, _)| {
            // A zombie is gone for every purpose here.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z"))
                .unwrap_or(false)
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Descriptors of `pid` that are ticktape segments.
fn segment_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| t.to_string_lossy().contains("memfd:ticktape"))
            .count()
    })
}

/// Starts a simple-lockstep shm run of the whole demo window (long enough to be killed
/// in the middle); returns it once both strategy processes hold their segment.
fn start_long_run(dir: &Path, tag: &str, replay: &str) -> (Proc, Vec<u32>) {
    let s = scenario(
        dir,
        tag,
        ("2024-08-08T23:54:00Z", "2024-08-09T00:00:00Z"),
        None,
        &format!("transport = \"shm\"\n{replay}"),
    );
    let out = dir.join(format!("run-{tag}"));
    let run = spawn(&[
        "run",
        s.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let needle = format!("-{tag} ");
    let mut pids = Vec::new();
    wait_until("both strategies attached", Duration::from_secs(60), || {
        pids = alive(&needle)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(" strategy "))
            .map(|(pid, _)| pid)
            .collect();
        pids.len() == 2 && pids.iter().all(|&p| segment_fds(p) == 1)
    });
    assert_eq!(
        segment_fds(run.child.id()),
        2,
        "the replay holds one segment per strategy"
    );
    // Let the replay get going.
    std::thread::sleep(Duration::from_millis(300));
    (run, pids)
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// After a run ended: no strategy of `tag` runs, nothing named is left, a new run works.
fn assert_nothing_left_and_a_new_run_starts(dir: &Path, tag: &str) {
    let needle = format!("-{tag} ");
    wait_until("strategies gone", Duration::from_secs(5), || {
        alive(&needle).is_empty()
    });
    assert_eq!(dev_shm(), Vec::<String>::new(), "nothing in /dev/shm");
    let s = scenario(
        dir,
        &format!("{tag}-again"),
        ("2024-08-08T23:56:00Z", "2024-08-08T23:56:10Z"),
        Some("1ms"),
        "transport = \"shm\"",
    );
    let d = run(&s, &dir.join(format!("again-{tag}")), &[]);
    assert_eq!(d.len(), 16, "{d}");
}

#[test]
fn a_strategy_killed_over_shm_fails_the_run_by_name_and_leaves_nothing_behind() {
    let dir = tempdir();
    let (run, pids) = start_long_run(dir.path(), "kill9", "");
    let victim = pids[0];
    let cmd = std::fs::read_to_string(format!("/proc/{victim}/cmdline")).unwrap();
    let name = if cmd.contains("mm-kill9") {
        "mm-kill9"
    } else {
        "taker-kill9"
    };
    kill(victim, "KILL");
    let started = Instant::now();
    let out = run.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run must fail: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "noticed in {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("strategy {name:?}")) && stderr.contains("signal"),
        "the crash is reported by name, as over zmq: {stderr}"
    );
    assert_nothing_left_and_a_new_run_starts(dir.path(), "kill9");
}

#[test]
fn a_killed_replay_ends_its_shm_strategies_and_leaves_nothing_behind() {
    let dir = tempdir();
    let (run, pids) = start_long_run(dir.path(), "replaykill", "");
    run.signal("KILL");
    let _ = run.wait(Duration::from_secs(10));
    // Orphans now: they notice the replay is gone within the 100 ms wait and exit.
    wait_until(
        "strategies exit on their own",
        Duration::from_secs(3),
        || {
            pids.iter().all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map_or(true, |s| s.contains(") Z"))
            })
        },
    );
    assert_nothing_left_and_a_new_run_starts(dir.path(), "replaykill");
}

#[test]
fn a_strategy_that_stops_reading_over_shm_fails_the_run_at_the_ack_timeout() {
    let dir = tempdir();
    let (run, pids) = start_long_run(dir.path(), "stopped", "ack_timeout_secs = 2.0");
    kill(pids[0], "STOP");
    let out = run.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("did not ack step") && stderr.contains("-stopped"),
        "names the strategy that stopped: {stderr}"
    );
    for p in &pids {
        kill(*p, "CONT");
    }
    assert_nothing_left_and_a_new_run_starts(dir.path(), "stopped");
}

/// Ctrl-C during a long shm run with `replay` lines added ends it and leaves nothing.
fn ctrl_c_ends_a_run(tag: &str, replay: &str) {
    let dir = tempdir();
    let (run, _pids) = start_long_run(dir.path(), tag, replay);
    run.signal("INT");
    let started = Instant::now();
    let _ = run.wait(Duration::from_secs(20));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_left_and_a_new_run_starts(dir.path(), tag);
}

#[test]
fn ctrl_c_ends_a_shm_run_promptly() {
    ctrl_c_ends_a_run("sigint", "");
}

/// The same with strategies that poll their rings (`busy_poll`): they stop on Ctrl-C
/// though they spin up to a second between messages.
#[test]
fn ctrl_c_ends_a_busy_polling_shm_run() {
    ctrl_c_ends_a_run("sigpoll", "busy_poll = true\n");
}

#[test]
fn shm_needs_the_bus_engine_and_a_strategy_outside_ticktape_run_is_told_why() {
    let dir = tempdir();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string("scenarios/demo-inproc.toml").unwrap();
    std::fs::write(
        &bad,
        text.replacen("\n[replay]\n", "\n[replay]\ntransport = \"shm\"\n", 1),
    )
    .unwrap();
    let out = spawn(&["run", bad.to_str().unwrap(), "--quiet"]).wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs [engine] mode = \"bus\""),
        "{err}"
    );
    let out = spawn(&[
        "strategy",
        "mm",
        "--bus",
        "shm:fd=3",
        "--gateway",
        "shm:fd=3",
        "--venue",
        "v",
        "--symbol",
        "s",
    ])
    .wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ticktape run") || err.contains("shared-memory"),
        "{err}"
    );
}

/// The Python momentum strategy over `transport`; returns the run directory.
fn python_run(dir: &Path, py: &Path, transport: &str) -> PathBuf {
    let scenario = dir.join(format!("py-{transport}.toml"));
    std::fs::write(
        &scenario,
        format!(
            r#"name = "py-{transport}"
[data]
dataset = "data/binance-spot"
start = "2024-08-08T23:55:00Z"
end = "2024-08-08T23:57:00Z"
[replay]
lockstep = true
lookahead = "1ms"
transport = "{transport}"
[[strategy]]
name = "py-momentum"
command = ["python3", "examples/python/momentum.py", "--bus", "{{bus}}", "--gateway", "{{gateway}}",
           "--venue", "{{venue}}", "--symbol", "{{symbol}}", "--size", "{{size}}", "--name", "{{name}}",
           "--cooldown-ms", "200", "{{lockstep}}"]
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = {{ model = "constant", ns = 1_000_000 }}
"#
        ),
    )
    .unwrap();
    let run_dir = dir.join(format!("run-{transport}"));
    let out =
        run_with_this_trees_python(&scenario, &run_dir, py, &format!("python over {transport}"));
    let log = std::fs::read_to_string(run_dir.join("strategy-py-momentum.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\nstrategy log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_dir
}

#[test]
fn the_python_momentum_strategy_over_shm_gives_the_zmq_digest() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    let zmq = python_run(dir.path(), &py, "zmq");
    let shm = python_run(dir.path(), &py, "shm");
    assert_eq!(digest(&zmq), digest(&shm), "Python momentum: zmq vs shm");
    assert!(summary(&shm)["replay"]["requests"].as_u64().unwrap() > 10);
    let fills = rows(&shm, "fills.parquet");
    assert!(
        fills.iter().map(|b| b.num_rows()).sum::<usize>() > 0,
        "the strategy traded"
    );
    assert_eq!(rows(&zmq, "fills.parquet"), fills);
    let log = std::fs::read_to_string(shm.join("strategy-py-momentum.log")).unwrap();
    assert!(log.contains("\"fills\""), "{log}");
}

/// `ticktape replay` with `args` and the built-in `mm` started by hand against it, on the
/// `zmq` bus and gateway endpoints, or (None) on the shared-memory endpoint the replay
/// prints; returns the replay's stderr.
/// Runs `ticktape replay args` and one `ticktape strategy mm` started by hand on its
/// endpoints (`zmq`, else the shm endpoint it prints), in lockstep or not; returns the
/// replay's stderr and the strategy's.
fn replay_with_hand_started_strategy(
    args: &[&str],
    zmq: Option<(&str, &str)>,
    lockstep: bool,
) -> (String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut replay = spawn(args);
    let mut stderr = BufReader::new(replay.child.stderr.take().unwrap());
    let mut head = String::new();
    let (bus, gateway) = match zmq {
        Some((b, g)) => (b.to_string(), g.to_string()),
        None => {
            let mut line = String::new();
            while !line.contains("shm:/proc/") {
                line.clear();
                assert!(
                    stderr.read_line(&mut line).unwrap() > 0,
                    "replay printed no endpoint: {head}"
                );
                head.push_str(&line);
            }
            let ep = line
                .split_whitespace()
                .find(|w| w.starts_with("shm:/proc/"))
                .unwrap()
                .to_string();
            (ep.clone(), ep)
        }
    };
    let mut strategy_args = vec![
        "strategy",
        "mm",
        "--bus",
        &bus,
        "--gateway",
        &gateway,
        "--venue",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--size",
        "0.01",
        "--id",
        "mm",
    ];
    if lockstep {
        strategy_args.push("--lockstep");
    }
    let strategy = spawn(&strategy_args);
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let s_out = strategy.wait(Duration::from_secs(120));
    assert_ok("ticktape strategy mm", &s_out);
    let r_out = replay.wait(Duration::from_secs(120));
    let all = head + &reader.join().unwrap();
    assert!(r_out.status.success(), "replay failed: {all}");
    (all, String::from_utf8_lossy(&s_out.stderr).into_owned())
}

#[test]
fn a_hand_started_strategy_joins_ticktape_replay_over_shm_with_the_zmq_digest() {
    let dir = tempdir();
    let bus = format!("ipc://{}", dir.path().join("bus").display());
    let gw = format!("ipc://{}", dir.path().join("gw").display());
    let common = [
        "replay",
        "data/binance-spot",
        "--start",
        "2024-08-08T23:56:00Z",
        "--end",
        "2024-08-08T23:56:20Z",
        "--lockstep",
        "1",
        "--lookahead",
        "1ms",
        "--order-latency",
        "1ms",
        "--exchange",
        "--quiet",
    ];
    let digest_in = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("fills digest "))
            .unwrap_or_else(|| panic!("no digest in: {text}"))
            .to_string()
    };
    let mut zmq_args = common.to_vec();
    zmq_args.extend(["--bind", &bus, "--gateway", &gw]);
    let (over_zmq, _) = replay_with_hand_started_strategy(&zmq_args, Some((&bus, &gw)), true);
    let mut shm_args = common.to_vec();
    // Its own endpoint for the heartbeats the bus still carries (not the default port).
    let hb = format!("ipc://{}", dir.path().join("hb").display());
    shm_args.extend(["--transport", "shm", "--bind", &hb]);
    let (over_shm, _) = replay_with_hand_started_strategy(&shm_args, None, true);
    assert_eq!(digest_in(&over_zmq), digest_in(&over_shm), "{over_shm}");
    assert!(over_shm.contains("lockstep:"), "{over_shm}");
    assert_eq!(dev_shm(), Vec::<String>::new(), "nothing in /dev/shm");
}

/// Without lockstep, `replay --transport shm` makes one segment per subscriber waited for
/// (`--wait-for`, default 1) and paces the stream into it: a strategy started by hand
/// receives every event and its orders are answered.
#[test]
fn a_hand_started_strategy_reads_a_paced_replay_over_shm_without_lockstep() {
    let dir = tempdir();
    // Its own endpoint for the heartbeats the bus still carries (not the default port).
    let hb = format!("ipc://{}", dir.path().join("hb").display());
    let (replay, strategy) = replay_with_hand_started_strategy(
        &[
            "replay",
            "--bind",
            &hb,
            "data/binance-spot",
            "--start",
            "2024-08-08T23:56:00Z",
            "--end",
            "2024-08-08T23:56:10Z",
            "--speed",
            "10",
            "--order-latency",
            "1ms",
            "--exchange",
            "--transport",
            "shm",
            "--quiet",
        ],
        None,
        false,
    );
    assert!(replay.contains("pacing lateness"), "paced: {replay}");
    assert!(!replay.contains("lockstep:"), "no lockstep: {replay}");
    let events = replay
        .lines()
        .find_map(|l| {
            l.strip_prefix("replay: ")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no event count: {replay}"));
    assert!(events > 1000, "{replay}");
    assert!(
        strategy.contains(&format!("strategy mm: {events} events")),
        "the strategy saw every event: {strategy}"
    );
    assert_eq!(dev_shm(), Vec::<String>::new(), "nothing in /dev/shm");
}
