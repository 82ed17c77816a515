//! Test harness: real `ticktape` processes, real sockets, temp datasets; a failure
//! prints the command, its status and its output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `ticktape` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ticktape"))
}

/// A free TCP port on loopback, never one this test process was given before: bound
/// then released, and the kernel may hand a just-released port out again, so two calls
/// in a row could otherwise name the same port (a NATS server once found its client port
/// taken by its own monitoring port). Another process may still take it in between.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A free TCP endpoint on loopback ([`free_port`]).
pub fn free_tcp() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub desc: String,
}

impl Proc {
    /// Waits for exit with a deadline; panics with its output otherwise.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(_status) = self.child.try_wait().expect("try_wait") {
                let child = std::mem::replace(&mut self.child, dummy_child());
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let child = std::mem::replace(&mut self.child, dummy_child());
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.desc,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "KILL", "TERM").
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

fn dummy_child() -> Child {
    Command::new("true").spawn().expect("spawn true")
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (a `ticktape` command line) with captured output; `desc` names it
/// in failures.
fn start(mut command: Command, desc: String) -> Proc {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    Proc { child, desc }
}

/// Starts `ticktape <args>` with captured output.
pub fn spawn(args: &[&str]) -> Proc {
    let mut command = Command::new(bin());
    command.args(args);
    start(command, format!("ticktape {}", args.join(" ")))
}

/// Starts `ticktape <args>` with `PATH` set to `path` (see [`path_with_python_first`]).
pub fn spawn_with_path(args: &[&str], path: &std::ffi::OsStr) -> Proc {
    let mut command = Command::new(bin());
    command.args(args).env("PATH", path);
    start(
        command,
        format!("PATH={} ticktape {}", path.display(), args.join(" ")),
    )
}

/// `PATH` with the directory of `py` first, so that a plain `python3` is that Python, as
/// in a shell after `source .venv/bin/activate`. Panics when that directory has no
/// `python3` (a venv's `bin/` always has one).
pub fn path_with_python_first(py: &Path) -> std::ffi::OsString {
    let dir = py.parent().expect("python path has a directory");
    assert!(
        dir.join("python3").exists(),
        "{} has no python3: point TICKTAPE_PYTHON at a venv's bin/python",
        dir.display()
    );
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .expect("PATH")
}

/// Runs `ticktape run <scenario> --out <run_dir> --quiet` with `py`'s venv first on `PATH`
/// and this tree's Python client first on `PYTHONPATH` (the venv may hold another
/// checkout's editable install); waits up to 5 minutes. `what` names it in a timeout.
pub fn run_with_this_trees_python(
    scenario: &Path,
    run_dir: &Path,
    py: &Path,
    what: &str,
) -> Output {
    let mut command = Command::new(bin());
    command
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "--quiet",
        ])
        .env("PATH", path_with_python_first(py))
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        );
    start(
        command,
        format!("ticktape run {} ({what})", scenario.display()),
    )
    .wait(Duration::from_secs(300))
}

/// Runs `ticktape <args>` to completion and asserts success.
pub fn run_ok(args: &[&str]) -> Output {
    let out = spawn(args).wait(Duration::from_secs(180));
    assert_ok(&format!("ticktape {}", args.join(" ")), &out);
    out
}

/// Panics with the full output unless the process succeeded.
pub fn assert_ok(desc: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{desc} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python with pyzmq/pyarrow/polars/duckdb: `$TICKTAPE_PYTHON`, else `.venv/bin/python`.
/// Under CI a missing Python is a failure, never a silent skip.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TICKTAPE_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.exists() {
            return Some(c);
        }
    }
    if std::env::var("CI").is_ok() {
        panic!("CI=true but no Python with test packages: run .ci/run (it creates .venv)");
    }
    eprintln!("skipping Python checks: set TICKTAPE_PYTHON or create .venv (see .ci/run)");
    None
}

/// Runs a Python script from `tests/python/` with arguments; asserts success.
pub fn run_python(py: &Path, script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(py)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    assert_ok(&format!("python {script} {}", args.join(" ")), &out);
    out
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `ticktape inspect --json` of a dataset.
pub fn inspect(dataset: &Path) -> serde_json::Value {
    let out = run_ok(&["inspect", "--json", dataset.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).expect("inspect json")
}

/// Rows of a kind over all partitions of an inspect summary.
pub fn kind_rows(summary: &serde_json::Value, kind: &str) -> u64 {
    summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kinds"][kind].as_u64().unwrap_or(0))
        .sum()
}

/// Collects `[topic, payload]` messages from a SUB socket until `eos` or timeout.
pub struct Capture {
    pub messages: Vec<(Vec<u8>, Vec<u8>, Instant)>,
}

/// Subscribes to everything at `endpoint` in a thread; returns a handle to join.
pub fn capture(endpoint: &str, timeout: Duration) -> std::thread::JoinHandle<Capture> {
    let endpoint = endpoint.to_string();
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).unwrap();
    sock.set_rcvhwm(0).unwrap();
    sock.set_subscribe(b"").unwrap();
    sock.connect(&endpoint).unwrap();
    std::thread::spawn(move || {
        let _ctx = ctx;
        let mut messages = Vec::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if sock.poll(zmq::POLLIN, 100).unwrap_or(0) == 0 {
                continue;
            }
            let frames = sock.recv_multipart(0).unwrap();
            let now = Instant::now();
            if frames.len() == 2 {
                let done = frames[0].starts_with(b"eos.");
                messages.push((frames[0].clone(), frames[1].clone(), now));
                if done {
                    break;
                }
            }
        }
        Capture { messages }
    })
}

/// A file of `../shared/data/real` (the real captures beside the repository), or `None`
/// with a line saying what is skipped. Under CI a missing file is a failure.
pub fn real_data(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TICKTAPE_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real"));
    let path = root.join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok() {
        panic!(
            "CI=true but the real data file {} is missing",
            path.display()
        );
    }
    eprintln!("skipping: real data file {} is missing", path.display());
    None
}

/// (pid, command line) of every process whose command line contains `needle`.
pub fn processes(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

/// A run directory's summary.json.
pub fn summary(run_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).unwrap()
}

/// A run's digest, from its summary.json.
pub fn digest(run_dir: &Path) -> String {
    summary(run_dir)["digest"]
        .as_str()
        .expect("digest in summary.json")
        .to_string()
}

/// Every row of a run file, as arrow batches, minus the exchange order ids (they count
/// submissions across strategies; the digest leaves them out too).
pub fn rows(run_dir: &Path, file: &str) -> Vec<arrow_array::RecordBatch> {
    let f = std::fs::File::open(run_dir.join(file)).expect("run file");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| b.schema().field(i).name() != "order_id")
                .collect();
            b.project(&keep).unwrap()
        })
        .collect()
}

/// The CPUs of a kernel CPU list such as `0-3,5` (`Cpus_allowed_list`).
pub fn cpu_list(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => a.parse::<usize>().unwrap()..=b.parse().unwrap(),
            None => r.parse::<usize>().unwrap()..=r.parse().unwrap(),
        })
        .collect()
}

/// The `Cpus_allowed_list` of a `/proc/.../status` text.
pub fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(cpu_list)
}

/// The CPUs this process may use, when there are at least two; otherwise None after
/// printing that `what` is skipped. Under CI one CPU is a failure, never a silent skip.
pub fn two_cpus_or_skip(what: &str) -> Option<Vec<usize>> {
    let cpus = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
    if cpus.len() >= 2 {
        return Some(cpus);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but the tests may use one CPU ({cpus:?}): {what} needs two"
    );
    eprintln!("skipped: {what} needs two CPUs, this process may use {cpus:?}");
    None
}
