//! The Python client as a user gets it: `pip install ./python` into a fresh venv, then a
//! strategy that imports `ticktape_client` from anywhere (no `sys.path` help).

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
