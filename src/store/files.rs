//! Creating files and directories with explicit permissions, whatever the umask says.
//!
//! Everything ticktape writes into a dataset (Parquet parts, journals, `_ticktape/*`,
//! quarantine) or a run directory is created through these helpers: files with mode
//! [`FILE_MODE`] (0644) and directories with [`DIR_MODE`] (0755), so nobody but the owner
//! can change recorded data even under `umask 0`. A stricter umask still applies (0077
//! gives 0600/0700). Existing files and directories keep the mode they have.
//!
//! [`restrict_umask`] does the same for everything else the process (and its children)
//! creates, by adding group and world write to the umask.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of the files ticktape creates: read-write for the owner, read for everyone else.
pub const FILE_MODE: u32 = 0o644;

/// Mode of the directories ticktape creates.
pub const DIR_MODE: u32 = 0o755;

/// `std::fs::create_dir_all` creating each missing directory with [`DIR_MODE`].
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Open options that create files with [`FILE_MODE`] (add `write`, `append`, … as usual).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// `File::create` (write, create, truncate) with [`FILE_MODE`].
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Opens `path` for appending, creating it with [`FILE_MODE`] if missing.
pub fn append(path: &Path) -> io::Result<File> {
    options().create(true).append(true).open(path)
}

/// Adds group and world write (0o022) to the process's umask, so files created by code
/// that does not go through these helpers (libraries, run outputs, child processes) are
/// not group- or world-writable either. Returns the umask it replaced.
pub fn restrict_umask() -> u32 {
    // SAFETY: umask takes and returns a plain integer and cannot fail; it is called once
    // at start-up, before any thread that creates files exists.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old | 0o022);
        old as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    use crate::event::{Body, Side, Trade};
    use crate::store::{self, DatasetWriter, WriterOptions, journal, layout};

    const CHILD: &str = "TICKTAPE_TEST_UMASK_0";

    fn trade(symbol: &str, i: u64) -> crate::event::Event {
        crate::wire::event(
            "v",
            symbol,
            1_700_000_000_000_000_000 + i as i64,
            i + 1,
            Body::Trade(Trade {
                price: "1.5".parse().unwrap(),
                size: "2".parse().unwrap(),
                aggressor: Side::Bid,
                trade_id: i.to_string().into(),
            }),
        )
    }

    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        out.push(dir.to_path_buf());
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// Runs in a child process of this test binary whose umask is 0 (the umask is
    /// per process, and the other tests of this binary run on threads of this one).
    #[test]
    fn dataset_files_and_directories_are_not_group_or_world_writable_under_umask_0() {
        let name = "store::files::tests::dataset_files_and_directories_are_not_group_or_world_writable_under_umask_0";
        if std::env::var_os(CHILD).is_none() {
            let mut command = std::process::Command::new(std::env::current_exe().unwrap());
            command
                .args(["--exact", name, "--test-threads=1"])
                .env(CHILD, "1");
            // SAFETY: umask is async-signal-safe and only sets the child's mask.
            unsafe {
                command.pre_exec(|| {
                    libc::umask(0);
                    Ok(())
                });
            }
            let out = command.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "child under umask 0 failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        // SAFETY: reads and restores this child process's umask.
        let mask = unsafe {
            let m = libc::umask(0);
            libc::umask(m);
            m
        };
        assert_eq!(mask, 0, "the child runs under umask 0");

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        // Closed part files (two partitions, one closed early by the bound), the checksum log.
        let options = WriterOptions {
            max_open_partitions: 1,
            ..WriterOptions::default()
        };
        let mut w = DatasetWriter::new(&root, 0, options.clone()).unwrap();
        for i in 0..10 {
            w.write(&trade(if i % 2 == 0 { "A" } else { "B" }, i))
                .unwrap();
        }
        w.close().unwrap();
        // A killed generation's journal, with an event the file system cannot hold:
        // recovery writes part files, quarantine, stream tails, sessions.jsonl, LOCK.
        let path = layout::journal_path(&root, 1);
        create_dir_all(path.parent().unwrap()).unwrap();
        let mut journal = journal::JournalWriter::open(&path).unwrap();
        let mut poison = trade("C", 20);
        poison.symbol = "S".repeat(300).into();
        for e in [trade("C", 21), poison, trade("D", 22)] {
            journal.append(&crate::wire::encode_to_vec(&e)).unwrap();
        }
        journal.flush(false).unwrap();
        drop(journal);
        let report = store::recover(&root, &options).unwrap();
        assert_eq!((report.events, report.quarantined), (2, 1));
        store::SessionMarker::default().save(&root).unwrap();

        let mut paths = Vec::new();
        walk(&root, &mut paths);
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        for wanted in [
            "_ticktape/checksums.jsonl",
            "_ticktape/sessions.jsonl",
            "_ticktape/streams.json",
            "_ticktape/recording.json",
            "_ticktape/LOCK",
            "_quarantine/malformed-00000001.jsonl",
            "_journal",
            "v/A",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        for path in &paths {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let want = if path.is_dir() { DIR_MODE } else { FILE_MODE };
            assert_eq!(mode, want, "{} has mode {mode:o}", path.display());
        }
    }
}
