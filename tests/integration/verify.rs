//! Silent corruption (issue 13, item 9): every data file's hash is recorded when it is
//! written, `inspect --verify` finds flipped bytes that still decode, readers refuse a
//! file whose size changed, and page CRCs other writers embed are checked on read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use ticktape::store::{EventReader, Selection};

use crate::modes::walk;
use crate::util::{run_ok, spawn, tempdir};

const FIXTURE: &str = "tests/fixtures/binance/spot_btcusdt_head.gz";

fn import(out: &Path) {
    run_ok(&["import", FIXTURE, "--out", out.to_str().unwrap(), "--quiet"]);
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    out.sort();
    out
}

/// Every event of a dataset, as its wire JSON (so two datasets compare row by row).
fn events(root: &Path) -> anyhow::Result<Vec<String>> {
    EventReader::open(root, Selection::default())?
        .map(|e| Ok(String::from_utf8(ticktape::wire::encode_to_vec(&e?))?))
        .collect()
}

/// Byte range of the data page(s) of column `name` in the first row group (after the
/// page header; the footer and every other page stay intact).
fn data_page_range(file: &Path, name: &str) -> (usize, usize) {
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    let col = (0..rg.num_columns())
        .map(|i| rg.column(i))
        .find(|c| c.column_path().string() == name)
        .unwrap_or_else(|| panic!("no column {name} in {}", file.display()));
    let start = col
        .dictionary_page_offset()
        .unwrap_or(col.data_page_offset());
    let end = (start + col.compressed_size()) as usize;
    // Skip the data page's header: at least its first 32 bytes.
    (col.data_page_offset() as usize + 32, end)
}

#[test]
fn two_flipped_bytes_in_a_data_page_are_found_by_inspect_verify_naming_the_file() {
    let dir = tempdir();
    let clean = dir.path().join("clean");
    let flipped = dir.path().join("flipped");
    import(&clean);
    import(&flipped);
    let expected = events(&clean).unwrap();

    // Flip two bytes in the middle of the `price` column's data page of one file, at the
    // first place (walking out from the middle) where the file still decodes: the
    // corruption the issue found, which `inspect`, `book` and `run` read as other prices.
    let files = parquet_files(&flipped);
    assert_eq!(files.len(), 1, "{files:?}");
    let target = &files[0];
    let original = std::fs::read(target).unwrap();
    let (lo, hi) = data_page_range(target, "price");
    let mid = (lo + hi) / 2;
    let mut silent = None;
    for step in 0..(hi - lo) / 2 - 2 {
        for at in [mid + step, mid - step] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x10;
            bytes[at + 1] ^= 0x01;
            std::fs::write(target, &bytes).unwrap();
            if let Ok(read) = events(&flipped)
                && read.len() == expected.len()
                && read != expected
            {
                silent = Some(at);
                break;
            }
        }
        if silent.is_some() {
            break;
        }
    }
    let at = silent.expect("some two-byte flip in the page decodes to other data");
    assert_eq!(
        std::fs::metadata(target).unwrap().len() as usize,
        original.len()
    );
    eprintln!(
        "flipped bytes {at} and {} of {} (price data page {lo}..{hi}): still decodes, with changed prices",
        at + 1,
        target.display()
    );

    // `inspect` (without --verify) still works on it: it reads no price.
    run_ok(&["inspect", flipped.to_str().unwrap()]);

    // `inspect --verify` fails, naming the file, with what was expected and found.
    let out = spawn(&["inspect", flipped.to_str().unwrap(), "--verify", "--quiet"])
        .wait(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "verify passed a flipped file\n{stdout}\n{stderr}"
    );
    let name = target
        .strip_prefix(&flipped)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let line = stdout
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{name} not named\n{stdout}"));
    assert!(line.starts_with("MISMATCH"), "{line}");
    assert!(
        line.contains("expected") && line.contains("found"),
        "{line}"
    );
    assert!(
        stdout.contains("0 ok, 1 mismatch, 0 missing"),
        "summary line: {stdout}"
    );
    assert!(stderr.contains("failed verification"), "{stderr}");

    // The untouched dataset passes, file by file.
    let out = run_ok(&["inspect", clean.to_str().unwrap(), "--verify", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("OK           {name}")), "{stdout}");
    assert!(stdout.contains("1 ok, 0 mismatch, 0 missing"), "{stdout}");

    // JSON for scripts: the same verdicts.
    let out = spawn(&["inspect", flipped.to_str().unwrap(), "--verify", "--json"])
        .wait(Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["status"], "mismatch", "{v}");
    assert_eq!(
        v["files"][0]["expected"]["bytes"].as_u64(),
        Some(original.len() as u64)
    );
}

#[test]
fn a_data_file_whose_size_changed_is_refused_by_readers_and_missing_files_fail_verify() {
    let dir = tempdir();
    let ds = dir.path().join("ds");
    import(&ds);
    let files = parquet_files(&ds);
    let target = &files[0];
    // 4 KiB appended (a copy of its tail, so it still ends like a Parquet file).
    let mut bytes = std::fs::read(target).unwrap();
    let tail = bytes[bytes.len() - 4096..].to_vec();
    bytes.extend_from_slice(&tail);
    std::fs::write(target, &bytes).unwrap();
    let out = spawn(&[
        "book",
        ds.to_str().unwrap(),
        "--venue",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--at",
        "2024-08-08T23:54:30Z",
    ])
    .wait(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("changed after it was written") && err.contains("--verify"),
        "{err}"
    );
    let summary =
        String::from_utf8_lossy(&run_ok(&["inspect", ds.to_str().unwrap()]).stdout).into_owned();
    assert!(summary.contains("changed size"), "{summary}");

    // A recorded file that is gone is MISSING, and fails verification.
    std::fs::remove_file(target).unwrap();
    let out = spawn(&["inspect", ds.to_str().unwrap(), "--verify", "--quiet"])
        .wait(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("MISSING"), "{stdout}");
}

#[test]
fn a_flipped_byte_in_a_page_another_tool_wrote_with_a_crc_is_an_error_on_read() {
    let Some(py) = crate::util::python() else {
        return;
    };
    let dir = tempdir();
    let ours = dir.path().join("ours");
    import(&ours);
    let source = &parquet_files(&ours)[0];
    // A dataset holding the same rows as pyarrow writes them with page CRCs (no
    // checksums.jsonl: the file is "copied in").
    let theirs = dir.path().join("theirs");
    let dest = theirs.join(source.strip_prefix(&ours).unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    crate::util::run_python(
        &py,
        "rewrite_with_page_crcs.py",
        &[source.to_str().unwrap(), dest.to_str().unwrap()],
    );
    assert_eq!(events(&theirs).unwrap(), events(&ours).unwrap());

    let (lo, hi) = data_page_range(&dest, "price");
    let mut bytes = std::fs::read(&dest).unwrap();
    let mid = (lo + hi) / 2;
    bytes[mid] ^= 0x10;
    bytes[mid + 1] ^= 0x01;
    std::fs::write(&dest, &bytes).unwrap();
    let err = match events(&theirs) {
        Ok(read) => panic!(
            "read {} events from a file with a flipped byte, {} of them changed",
            read.len(),
            read.iter()
                .zip(events(&ours).unwrap())
                .filter(|(a, b)| *a != b)
                .count()
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("CRC checksum mismatch"), "{err}");
    assert!(
        err.contains(&dest.display().to_string()),
        "names the file: {err}"
    );
}
