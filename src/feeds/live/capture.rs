//! Reader for cryptofeed raw websocket capture files (`KRAKEN.ws.50.0`, `COINBASE.ws.28.0`).
//!
//! Owns the line format and decimal-seconds timestamps. Never interprets the JSON: the
//! venue normalizers do that, so a capture and a live socket go through the same code.
//!
//! Format, one line each:
//! - `<url> <-> <ts>`: a connection was opened;
//! - `<url> <- <ts>: <text>`: the client sent `text` (subscriptions);
//! - `<ts>: <text>`: the client received `text`, byte for byte.
//!
//! `<ts>` is the capturing machine's clock in decimal seconds since the Unix epoch.

use std::path::Path;

use crate::event::{NANOS_PER_SEC, UnixNanos};

/// One line of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureLine {
    /// A connection to `url` was opened at `ts`.
    Connect {
        /// Websocket endpoint.
        url: String,
        /// Local time, ns since epoch.
        ts: UnixNanos,
    },
    /// The client sent `text` to `url` at `ts`.
    Sent {
        /// Websocket endpoint.
        url: String,
        /// Local time, ns since epoch.
        ts: UnixNanos,
        /// The message, verbatim.
        text: String,
    },
    /// The client received `text` at `ts`.
    Received {
        /// Local receive time, ns since epoch.
        ts: UnixNanos,
        /// The message, verbatim.
        text: String,
    },
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be read.
    #[error("cannot read capture {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line matched none of the three shapes.
    #[error(
        "capture line {line}: not `<url> <-> ts`, `<url> <- ts: text` nor `ts: text`: {excerpt:?}"
    )]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The start of the offending line.
        excerpt: String,
    },
}

/// Parses decimal seconds (`"1618678132.8258188"`) into ns since epoch, exactly.
///
/// Digits beyond nanoseconds are truncated; anything but `digits[.digits]` is `None`.
pub fn parse_decimal_seconds(text: &str) -> Option<UnixNanos> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as i64);
        nanos = nanos * 10 + digit;
    }
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Parses the text of a capture file into lines (blank lines are skipped).
pub fn parse_capture(text: &str) -> Result<Vec<CaptureLine>, CaptureError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let syntax = || CaptureError::Syntax {
            line: index + 1,
            excerpt: line.chars().take(80).collect(),
        };
        if let Some((url, ts)) = line.split_once(" <-> ") {
            out.push(CaptureLine::Connect {
                url: url.to_string(),
                ts: parse_decimal_seconds(ts.trim()).ok_or_else(syntax)?,
            });
        } else if let Some((url, rest)) = line.split_once(" <- ") {
            let (ts, text) = rest.split_once(": ").ok_or_else(syntax)?;
            out.push(CaptureLine::Sent {
                url: url.to_string(),
                ts: parse_decimal_seconds(ts).ok_or_else(syntax)?,
                text: text.to_string(),
            });
        } else {
            let (ts, text) = line.split_once(": ").ok_or_else(syntax)?;
            out.push(CaptureLine::Received {
                ts: parse_decimal_seconds(ts).ok_or_else(syntax)?,
                text: text.to_string(),
            });
        }
    }
    Ok(out)
}

/// Reads a capture file from disk.
pub fn read_capture(path: &Path) -> Result<Vec<CaptureLine>, CaptureError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaptureError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_capture(&text)
}

/// Only the received messages, with their receive times, in capture order.
pub fn received(lines: &[CaptureLine]) -> Vec<(UnixNanos, String)> {
    lines
        .iter()
        .filter_map(|line| match line {
            CaptureLine::Received { ts, text } => Some((*ts, text.clone())),
            _ => None,
        })
        .collect()
}

/// Where the shared real captures live, for tests: `$TICKTAPE_REAL_DATA`, else
/// `shared/data/real` beside the repository (as CI lays it out), else `/work/shared`.
#[cfg(test)]
pub(crate) fn sample_path(name: &str) -> std::path::PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real");
    let base = match std::env::var_os("TICKTAPE_REAL_DATA") {
        Some(dir) => std::path::PathBuf::from(dir),
        None if beside.is_dir() => beside,
        None => std::path::PathBuf::from("/work/shared/data/real"),
    };
    base.join("cryptofeed/sample_data").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_seconds_parse_exactly_to_nanoseconds() {
        assert_eq!(
            parse_decimal_seconds("1618678132.8258188"),
            Some(1_618_678_132_825_818_800)
        );
        assert_eq!(parse_decimal_seconds("5"), Some(5 * NANOS_PER_SEC));
        assert_eq!(parse_decimal_seconds("1.0000000019"), Some(1_000_000_001));
        assert_eq!(parse_decimal_seconds("1e9"), None);
        assert_eq!(parse_decimal_seconds(".5"), None);
        assert_eq!(parse_decimal_seconds("-1.5"), None);
    }

    #[test]
    fn capture_lines_keep_received_text_verbatim() {
        let text = "wss://x <-> 1.5\nwss://x <- 2.25: {\"a\": 1}\n3.0: [1,{\"b\":\"c: d\"}]\n\n";
        let lines = parse_capture(text).unwrap();
        assert_eq!(
            lines,
            vec![
                CaptureLine::Connect {
                    url: "wss://x".into(),
                    ts: 1_500_000_000
                },
                CaptureLine::Sent {
                    url: "wss://x".into(),
                    ts: 2_250_000_000,
                    text: "{\"a\": 1}".into()
                },
                CaptureLine::Received {
                    ts: 3_000_000_000,
                    text: "[1,{\"b\":\"c: d\"}]".into()
                },
            ]
        );
        assert!(matches!(
            parse_capture("garbage"),
            Err(CaptureError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn kraken_book_capture_has_the_manifest_line_counts() {
        let lines = read_capture(&sample_path("KRAKEN.ws.50.0")).unwrap();
        assert_eq!(lines.len(), 4323);
        assert_eq!(received(&lines).len(), 4321);
    }
}
