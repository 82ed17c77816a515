//! Where things live inside a dataset directory.
//!
//! ```text
//! <dataset>/
//!   <venue>/<symbol>/<YYYY-MM-DD>/part-<generation>-<n>.parquet   closed, immutable data files
//!   <venue>/<symbol>/<YYYY-MM-DD>/part-<generation>-<n>.parquet.inprogress   being written
//!   _journal/gen-<generation>.log       write-ahead journal of the generation being recorded
//!   _quarantine/malformed-<generation>.jsonl   messages that could not be decoded, raw bytes kept
//!   _ticktape/sessions.jsonl            one summary line per recorder or importer session
//!   _ticktape/checksums.jsonl           size and xxh3-64 of every closed data file
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

/// Formats a timestamp as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (RFC 3339, UTC, always nine
/// fraction digits). Every `i64` is in range.
pub fn format_ts(ts: UnixNanos) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ts)) {
        Ok(t) => format!("{t:.9}"),
        // Unreachable: jiff's range (years -9999..=9999) holds every i64 nanosecond.
        Err(_) => format!("{ts} ns"),
    }
}

/// The time forms [`parse_ts`] accepts, as shown in its errors.
pub const TIME_FORMS: &str = "use RFC 3339 like 2024-08-08T23:58:00Z, \
2024-08-08T23:58:00.123456789Z or 2024-08-09T01:58:00+02:00; a time without offset, \
like 2024-08-08T23:58:00 or 2024-08-08 23:58, is UTC; a date alone, 2024-08-08, is its \
midnight UTC; or integer nanoseconds since the Unix epoch, like 1723161480000000000";

/// Parses a time into nanoseconds since the Unix epoch:
///
/// - RFC 3339 / ISO 8601 with an offset: `2024-08-08T23:58:00Z`, `…T23:58:00.5Z`,
///   `…T01:58:00+02:00` (up to nine fraction digits, `T`, `t` or a space between date and
///   time);
/// - the same without an offset (`2024-08-08T23:58:00`, `2024-08-08 23:58`), read as UTC;
/// - a date alone (`2024-08-08`), its midnight UTC;
/// - an integer, nanoseconds since the epoch (`1723161480000000000`, negative allowed).
///
/// Parsing is jiff's: out-of-range fields (`25:99:99`, `-30` seconds, February 31) are
/// refused, not carried into the next unit. A leap second `:60` reads as `:59`. The
/// result must fit `i64` nanoseconds: 1677-09-21T00:12:43.145224192Z to
/// 2262-04-11T23:47:16.854775807Z.
pub fn parse_ts(s: &str) -> Result<UnixNanos> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| {
            anyhow::anyhow!(
                "cannot read time {s:?}: as integer nanoseconds since the epoch it is out of \
                 range (at most {} digits, {}..={}); {TIME_FORMS}",
                i64::MAX.to_string().len(),
                i64::MIN,
                i64::MAX
            )
        });
    }
    let bad = |why: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot read time {s:?}: {why}; {TIME_FORMS}")
    };
    let pieces = jiff::fmt::temporal::Pieces::parse(s).map_err(|e| bad(&e))?;
    let offset = match (pieces.to_numeric_offset(), pieces.time_zone_annotation()) {
        (Some(offset), _) => offset,
        (None, None) => jiff::tz::Offset::UTC,
        (None, Some(_)) => {
            return Err(bad(
                &"time zone names are not supported, give an offset (Z or +02:00)",
            ));
        }
    };
    let civil = pieces
        .date()
        .to_datetime(pieces.time().unwrap_or(jiff::civil::Time::midnight()));
    let ts = offset.to_timestamp(civil).map_err(|e| bad(&e))?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| {
        bad(&"outside the range of i64 nanoseconds since the epoch \
              (1677-09-21T00:12:43.145224192Z ..= 2262-04-11T23:47:16.854775807Z)")
    })
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
        assert_eq!(date_string(19944), "2024-08-09");
        assert_eq!(date_string(-1), "1969-12-31");
        let ts = parse_ts("2024-08-08T23:54:13.94Z").unwrap();
        assert_eq!(format_ts(ts), "2024-08-08T23:54:13.940000000Z");
        assert_eq!(parse_ts(&format_ts(ts)).unwrap(), ts);
        assert_eq!(format_ts(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(format_ts(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(parse_ts(&format_ts(i64::MAX)).unwrap(), i64::MAX);
    }

    #[test]
    fn every_documented_time_form_is_accepted_to_the_nanosecond() {
        let t = 1_723_161_480_000_000_000; // 2024-08-08T23:58:00Z
        for (text, want) in [
            ("2024-08-08T23:58:00Z", t),
            ("2024-08-08T23:58:00.000000001Z", t + 1),
            ("2024-08-08T23:58:00.123456789Z", t + 123_456_789),
            ("2024-08-08T23:58:00.94Z", t + 940_000_000),
            ("2024-08-08t23:58:00z", t),
            ("2024-08-09T01:58:00+02:00", t),
            ("2024-08-08T23:58:00", t),
            ("2024-08-08 23:58:00", t),
            ("2024-08-08T23:58", t),
            ("2024-08-08", t - (23 * 60 + 58) * 60 * NANOS_PER_SEC),
            ("  2024-08-08T23:58:00Z ", t),
            ("1723161480000000000", t),
            ("-5", -5),
            ("0", 0),
        ] {
            assert_eq!(parse_ts(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn out_of_range_time_fields_are_refused_not_carried_over() {
        for text in [
            "2024-08-08T25:99:99Z",
            "2024-08-08T23:58:-30Z",
            "99999999999-01-01T00:00:00Z",
            "2024-08-08T99:00:00Z",
            "2024-08-08T23:60:00Z",
            "2024-02-30",
            "2024-13-01",
            "2024-08-08T23:58:00.1234567891Z",
            "2300-01-01T00:00:00Z",
            "1600-01-01",
            "99999999999999999999",
            "2024-08-08T23:58:00[Europe/Paris]",
            "yesterday",
            "",
        ] {
            let e = format!("{:#}", parse_ts(text).unwrap_err());
            assert!(e.contains(&format!("{:?}", text.trim())), "{text}: {e}");
            assert!(e.contains("like 2024-08-08T23:58:00Z"), "{text}: {e}");
        }
    }

    #[test]
    fn unsafe_names_are_percent_encoded() {
        assert_eq!(encode_component("XBT/USD"), "XBT%2FUSD");
        assert_eq!(encode_component("BTC-USD"), "BTC-USD");
        assert_eq!(encode_component(".."), "%2E.");
        assert_eq!(generation_of_part(&part_name(12, 3)), Some(12));
    }
}
