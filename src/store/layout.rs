//! Where things live inside a dataset directory.
//!
//! ```text
//! <dataset>/
//!   <venue>/<symbol>/<YYYY-MM-DD>/part-<generation>-<n>.parquet   closed, immutable data files
//!   <venue>/<symbol>/<YYYY-MM-DD>/part-<generation>-<n>.parquet.inprogress   being written
//!   _journal/gen-<generation>.log       write-ahead journal of the generation being recorded
//!   _quarantine/malformed-<generation>.jsonl   messages that could not be decoded, raw bytes kept
//!   _ticktape/sessions.jsonl            one summary line per recorder or importer session
//!   _ticktape/LOCK                      held by the one process writing the dataset
//! ```
//!
//! The date is the UTC date of `ts_recv`. Venue and symbol are percent-encoded when they
//! hold characters unsafe in paths (`XBT/USD` → `XBT%2FUSD`). Directories are plain
//! names, not Hive `key=value`, because the files carry `venue` and `symbol` columns
//! themselves: `read_parquet('<dataset>/*/*/*/*.parquet')` reads everything in DuckDB,
//! pyarrow and polars without partition-column conflicts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::event::{NANOS_PER_SEC, UnixNanos};

/// Directory of the journal files.
pub const JOURNAL_DIR: &str = "_journal";
/// Directory of quarantined malformed messages.
pub const QUARANTINE_DIR: &str = "_quarantine";
/// Directory of ticktape's own bookkeeping.
pub const META_DIR: &str = "_ticktape";

/// Percent-encodes a venue or symbol for use as one path component.
pub fn encode_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.') && !(out.is_empty() && b == b'.')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Days since the Unix epoch of a timestamp (UTC).
pub fn day_of(ts: UnixNanos) -> i64 {
    ts.div_euclid(86_400 * NANOS_PER_SEC)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day number of a `YYYY-MM-DD` string.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats a timestamp as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn format_ts(ts: UnixNanos) -> String {
    let day = day_of(ts);
    let nanos_of_day = ts - day * 86_400 * NANOS_PER_SEC;
    let secs = nanos_of_day / NANOS_PER_SEC;
    format!(
        "{}T{:02}:{:02}:{:02}.{:09}Z",
        date_string(day),
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        nanos_of_day % NANOS_PER_SEC
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fraction][Z]` (UTC) or integer nanoseconds.
pub fn parse_ts(s: &str) -> Result<UnixNanos> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad = || {
        anyhow::anyhow!(
            "cannot read time {s:?}: use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[.fff]Z (UTC) or integer nanoseconds"
        )
    };
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let day = parse_date(date).ok_or_else(bad)?;
    let mut ts = day * 86_400 * NANOS_PER_SEC;
    if let Some(time) = time {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut parts = hms.split(':');
        let mut unit = 3600 * NANOS_PER_SEC;
        for _ in 0..3 {
            if let Some(p) = parts.next() {
                let v: i64 = p.parse().map_err(|_| bad())?;
                ts += v * unit;
            }
            unit /= 60;
        }
        if !frac.is_empty() {
            if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let padded = format!("{frac:0<9}");
            ts += padded.parse::<i64>().map_err(|_| bad())?;
        }
    }
    Ok(ts)
}

/// Directory of one partition.
pub fn partition_dir(root: &Path, venue: &str, symbol: &str, day: i64) -> PathBuf {
    root.join(encode_component(venue))
        .join(encode_component(symbol))
        .join(date_string(day))
}

/// File name of part `n` of generation `generation`.
pub fn part_name(generation: u64, n: u64) -> String {
    format!("part-{generation:08}-{n:04}.parquet")
}

/// Suffix of files still being written.
pub const IN_PROGRESS_SUFFIX: &str = ".inprogress";

/// The generation a part file belongs to, from its name.
pub fn generation_of_part(file_name: &str) -> Option<u64> {
    let rest = file_name.strip_prefix("part-")?;
    rest.get(..8)?.parse().ok()
}

/// Journal path of a generation.
pub fn journal_path(root: &Path, generation: u64) -> PathBuf {
    root.join(JOURNAL_DIR)
        .join(format!("gen-{generation:08}.log"))
}

/// Generation of a journal file name.
pub fn generation_of_journal(file_name: &str) -> Option<u64> {
    file_name
        .strip_prefix("gen-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Every file under the partition directories (`<venue>/<symbol>/<date>/*`), skipping
/// the underscore-prefixed bookkeeping directories.
pub fn partition_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for venue in read_dirs(root)? {
        for symbol in read_dirs(&venue)? {
            for date in read_dirs(&symbol)? {
                for entry in std::fs::read_dir(&date)
                    .with_context(|| format!("cannot list {}", date.display()))?
                {
                    let path = entry?.path();
                    if path.is_file() {
                        out.push(path);
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('_') || n.starts_with('.'));
        if path.is_dir() && !hidden {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The highest generation used by any part file or journal in the dataset.
pub fn max_generation(root: &Path) -> Result<Option<u64>> {
    let mut max = None;
    for path in partition_files(root)? {
        if let Some(g) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(generation_of_part)
        {
            max = max.max(Some(g));
        }
    }
    let journal_dir = root.join(JOURNAL_DIR);
    if journal_dir.exists() {
        for entry in std::fs::read_dir(&journal_dir)? {
            if let Some(g) = entry?.file_name().to_str().and_then(generation_of_journal) {
                max = max.max(Some(g));
            }
        }
    }
    Ok(max)
}

/// Flushes a directory entry so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_round_trip() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(parse_date("2024-08-09"), Some(19944));
        assert_eq!(date_string(19944), "2024-08-09");
        let ts = parse_ts("2024-08-08T23:54:13.94Z").unwrap();
        assert_eq!(format_ts(ts), "2024-08-08T23:54:13.940000000Z");
        assert_eq!(
            parse_ts("1723161253940000000").unwrap(),
            1723161253940000000
        );
        assert!(parse_ts("yesterday").is_err());
    }

    #[test]
    fn unsafe_names_are_percent_encoded() {
        assert_eq!(encode_component("XBT/USD"), "XBT%2FUSD");
        assert_eq!(encode_component("BTC-USD"), "BTC-USD");
        assert_eq!(encode_component(".."), "%2E.");
        assert_eq!(generation_of_part(&part_name(12, 3)), Some(12));
    }
}
