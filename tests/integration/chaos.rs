//! Faults in `ticktape run`: repeated Ctrl-C at arbitrary moments, and a strategy process
//! killed with SIGKILL. Each must end the run with a clear message, keep what was done
//! (summary, readable run files), and leave no strategy process or socket directory.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::util::*;

/// Socket directories of run `pid` left in the temp dir.
fn socket_dirs(pid: u32) -> Vec<String> {
    let prefix = format!("tt-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn wait_for_strategies(tag: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes(tag).len() < n {
        assert!(Instant::now() < deadline, "strategies never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_at_any_moment_of_a_run_ends_it_cleanly_with_partial_results() {
    let dir = tempdir();
    // Interrupt points spread over start-up, lockstep and the end of the run.
    for (round, wait_ms) in [50u64, 400, 900, 1500, 2200, 3000].into_iter().enumerate() {
        let run_dir = dir.path().join(format!("r{round}"));
        let proc = spawn(&[
            "run",
            "scenarios/demo.toml",
            "--out",
            run_dir.to_str().unwrap(),
            "--quiet",
        ]);
        let pid = proc.child.id();
        std::thread::sleep(Duration::from_millis(wait_ms));
        proc.signal("INT");
        let out = proc.wait(Duration::from_secs(90));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("Interrupted system call") && !err.contains("panicked"),
            "round {round}: {err}"
        );
        if out.status.success() {
            // The run was already over when the signal came.
            assert_eq!(summary(&run_dir)["interrupted"], false);
        } else if run_dir.join("summary.json").exists() {
            assert!(err.contains("interrupted"), "round {round}: {err}");
            assert_eq!(summary(&run_dir)["interrupted"], true, "round {round}");
            for f in ["fills.parquet", "orders.parquet", "marks.parquet"] {
                let file = std::fs::File::open(run_dir.join(f)).expect(f);
                parquet::file::reader::SerializedFileReader::new(file)
                    .unwrap_or_else(|e| panic!("round {round}: {f} unreadable: {e}"));
            }
        } else if out.status.signal() == Some(2) {
            // The signal came before ticktape installed its handler (the first
            // milliseconds): the default action ended it before anything was started.
        } else {
            // Interrupted before the replay began: nothing to keep, but a clear word.
            assert!(
                err.contains("interrupted") || err.contains("error"),
                "round {round}: {err}"
            );
        }
        let tag = format!("tt-{pid}-");
        assert_eq!(
            processes(&tag),
            Vec::<(u32, String)>::new(),
            "round {round}"
        );
        assert_eq!(socket_dirs(pid), Vec::<String>::new(), "round {round}");
    }
}

#[test]
fn a_strategy_killed_with_sigkill_ends_the_run_naming_it_and_leaves_nothing_behind() {
    let dir = tempdir();
    let run_dir = dir.path().join("r");
    let proc = spawn(&[
        "run",
        "scenarios/demo.toml",
        "--out",
        run_dir.to_str().unwrap(),
        "--quiet",
        "--speed",
        "1",
    ]);
    let pid = proc.child.id();
    let tag = format!("tt-{pid}-");
    wait_for_strategies(&tag, 2);
    std::thread::sleep(Duration::from_millis(500));
    let (victim, _) = processes(&tag)
        .into_iter()
        .find(|(_, cmd)| cmd.contains("--id taker"))
        .expect("the taker process");
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let out = proc.wait(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("strategy \"taker\" exited with a signal"),
        "the run names the killed strategy: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no hang: ended {:?} after the kill",
        started.elapsed()
    );
    assert_eq!(
        processes(&tag),
        Vec::<(u32, String)>::new(),
        "no strategy left"
    );
    assert_eq!(
        socket_dirs(pid),
        Vec::<String>::new(),
        "no socket directory left"
    );
}
