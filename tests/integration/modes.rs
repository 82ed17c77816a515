//! File modes (issue 13, item 10): nothing ticktape writes into a dataset or a run
//! directory is group- or world-writable, whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{Proc, tempdir};

const FIXTURE: &str = "tests/fixtures/binance/spot_btcusdt_head.gz";

/// `dir` and everything under it.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `ticktape <args>` run under `umask 0`.
fn spawn_umask_0(args: &[&str]) -> Proc {
    let mut command = Command::new(crate::util::bin());
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: umask is async-signal-safe and touches nothing but the child's mask.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    Proc {
        child: command.spawn().expect("spawn ticktape"),
        desc: format!("umask 0; ticktape {}", args.join(" ")),
    }
}

fn assert_nothing_group_or_world_writable(root: &Path) {
    let mut checked = 0;
    for path in walk(root) {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o022,
            0,
            "{} has mode {mode:o} under umask 0",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 3, "only {checked} paths under {}", root.display());
}

#[test]
fn under_umask_0_no_dataset_or_run_file_is_group_or_world_writable() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    let out = spawn_umask_0(&["import", FIXTURE, "--out", ds.to_str().unwrap(), "--quiet"])
        .wait(Duration::from_secs(60));
    crate::util::assert_ok("umask 0; ticktape import", &out);
    assert_nothing_group_or_world_writable(&ds);

    // A run over it, in-process: its run directory and every file in it.
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "modes"
[data]
dataset = "{}"
[replay]
lockstep = true
[engine]
mode = "inproc"
[[strategy]]
name = "mm"
builtin = "mm"
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
"#,
            ds.display()
        ),
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    let out = spawn_umask_0(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--quiet",
    ])
    .wait(Duration::from_secs(120));
    crate::util::assert_ok("umask 0; ticktape run", &out);
    assert_nothing_group_or_world_writable(&run_dir);
}
