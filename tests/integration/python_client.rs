//! The Python client as a user gets it: `pip install ./python` into a fresh venv, then a
//! strategy that imports `ticktape_client` from anywhere (no `sys.path` help); and what
//! it hands a strategy (lazy events, integer books) against the eager decoding it
//! replaced, on every event of the demo data.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

/// Runs `program args` in `cwd` without `PYTHONPATH`, so nothing but the venv's own
/// site-packages can supply `ticktape_client`.
fn run_in(cwd: &Path, program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_remove("PYTHONPATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Copies the package sources, without what an earlier build left (build/, *.egg-info,
/// __pycache__).
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "build" || name == "__pycache__" || name.ends_with(".egg-info") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &to.join(&*name));
        } else {
            std::fs::copy(entry.path(), to.join(&*name)).unwrap();
        }
    }
}

#[test]
fn a_fresh_venv_with_only_pip_install_python_runs_the_momentum_strategy() {
    let Some(py) = python() else { return };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let momentum = repo.join("examples/python/momentum.py");
    let momentum = momentum.to_str().unwrap();
    let dir = tempdir();
    let out = run_in(dir.path(), &py, &["-m", "venv", "venv"]);
    assert_ok("python -m venv venv", &out);
    let venv_py = dir.path().join("venv/bin/python");

    // Before the install: the strategy says what to run instead of a bare traceback.
    let out = run_in(dir.path(), &venv_py, &[momentum, "--help"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("pip install ./python"),
        "momentum.py without the client: {}\n{stderr}",
        out.status
    );

    // The one line a user runs, on a copy of python/ (pip builds in the source folder).
    copy_sources(&repo.join("python"), &dir.path().join("python"));
    let out = run_in(
        dir.path(),
        &venv_py,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "./python",
        ],
    );
    assert_ok("pip install ./python into a fresh venv", &out);

    let out = run_in(
        dir.path(),
        &venv_py,
        &[
            "-c",
            "import ticktape_client, zmq; print(ticktape_client.__version__); print(ticktape_client.__file__)",
        ],
    );
    assert_ok("import ticktape_client", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let version = lines.next().unwrap_or_default();
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "a version: {stdout}"
    );
    let file = lines.next().unwrap_or_default();
    assert!(
        Path::new(file).starts_with(dir.path().join("venv")),
        "imported from the venv's site-packages, not the source tree: {file}"
    );

    let out = run_in(dir.path(), &venv_py, &[momentum, "--help"]);
    assert_ok("momentum.py --help", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--gateway"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs `tests/python/client_event_check.py` as the one strategy of a lockstep backtest of
/// the whole demo data with the bus in `encoding` over `transport`, this tree's client
/// first on `PYTHONPATH`; returns (the check's counters, the replay's event count).
fn event_check(dir: &Path, py: &Path, encoding: &str, transport: &str) -> (serde_json::Value, u64) {
    let scenario = dir.join(format!("check-{encoding}-{transport}.toml"));
    std::fs::write(
        &scenario,
        format!(
            r#"name = "check-{encoding}-{transport}"
[data]
dataset = "data/binance-spot"
[replay]
lockstep = true
lookahead = "1ms"
encoding = "{encoding}"
transport = "{transport}"
[[strategy]]
name = "check"
command = ["python3", "tests/python/client_event_check.py", "--bus", "{{bus}}", "--gateway", "{{gateway}}",
           "--name", "{{name}}", "{{lockstep}}"]
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = {{ model = "constant", ns = 1_000_000 }}
"#
        ),
    )
    .unwrap();
    let run_dir = dir.join(format!("run-{encoding}-{transport}"));
    let out = run_with_this_trees_python(
        &scenario,
        &run_dir,
        py,
        &format!("{encoding} over {transport}"),
    );
    let log = std::fs::read_to_string(run_dir.join("strategy-check.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{encoding} over {transport}: {}\nstrategy log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counters: serde_json::Value = serde_json::from_str(log.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no counters in the check's log ({e}):\n{log}"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    (counters, summary["replay"]["events"].as_u64().unwrap())
}

#[test]
fn the_clients_lazy_events_and_books_equal_the_eager_decoding_on_every_demo_event() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    // Binary over shm (the client's inline path), binary over zmq (`_binary`), JSON.
    for (encoding, transport) in [("binary", "shm"), ("binary", "zmq"), ("json", "shm")] {
        let (c, events) = event_check(dir.path(), &py, encoding, transport);
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        assert_eq!(
            n("checked"),
            events,
            "{encoding}/{transport}: every event checked: {c}"
        );
        assert_eq!(n("book") + n("trade"), events, "{c}");
        assert!(n("book") > 100_000 && n("trade") > 5_000, "{c}");
        let lazy = if encoding == "binary" { events } else { 0 };
        assert_eq!(n("lazy"), lazy, "{encoding}/{transport}: lazy events: {c}");
        assert!(n("book_checks") > 100, "books compared along the way: {c}");
    }
}

/// `tests/python/shm_ring_check.py`: the shared-memory client's reader against a synthetic
/// 4 KiB ring (wraps, reads cut at a quarter ring, two record layouts, three books,
/// snapshots and rescales, trades, step markers) written by the check itself, no replay:
/// every event against the eager decoding, the books against `Book.apply`, one ack per
/// marker; then the spin-before-sleep policy. A reader that loops without reading hangs,
/// hence the deadline.
#[test]
fn the_shm_reader_gives_every_record_of_a_wrapping_ring_and_acks_each_marker() {
    let Some(py) = python() else { return };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let child = Command::new(&py)
        .arg(repo.join("tests/python/shm_ring_check.py"))
        .env("PYTHONPATH", repo.join("python"))
        .env_remove("TICKTAPE_SHM_SPIN_US")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python");
    let out = Proc {
        child,
        desc: "shm_ring_check.py".into(),
    }
    .wait(std::time::Duration::from_secs(120));
    assert_ok("shm_ring_check.py", &out);
    let c: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("summary");
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    assert!(n("events") > 2_000 && n("filled") == n("events"), "{c}");
    assert!(
        n("steps") > 100 && n("wraps") > 20 && n("books") == 3,
        "{c}"
    );
}
