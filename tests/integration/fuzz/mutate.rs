//! Seed corpora and the strategies that turn them into fuzz inputs.
//!
//! A mutated input is a seed (a fixture, a window of lines of a real capture, a valid
//! encoding) plus up to eight edits, libFuzzer style: bit flips, byte sets, dictionary
//! tokens inserted or put in place of a word (number, name, literal), truncation,
//! deletion, duplication of a chunk, and a splice of another seed. Because the edits
//! are proptest values, a failing input shrinks to the fewest and smallest edits.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

/// Largest input a mutation may produce; keeps every case fast.
const MAX_LEN: usize = 1 << 20;

/// Tokens that break parsers: numeric extremes, special floats, JSON and TOML literals,
/// empty and odd strings, duration and time edge cases.
pub const TOKENS: &[&[u8]] = &[
    b"0",
    b"-0",
    b"-1",
    b"1e400",
    b"-1e400",
    b"1e30",
    b"1e-30",
    b"0.0000000000000000001",
    b"nan",
    b"NaN",
    b"inf",
    b"-inf",
    b"null",
    b"true",
    b"false",
    b"[]",
    b"{}",
    b"[[]]",
    b"\"\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"2147483647",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"99999999999999999999999s",
    b"1.7976931348623157e308",
    b"0.5",
    b"00000000000000000000001",
    b"1.",
    b".5",
    b"+1",
    b"--1",
    b"1_000",
    b"0x10",
    b"9999-12-31T23:59:59Z",
    b"2024-08-08T99:00:00Z",
    b"1970-01-01T00:00:00Z",
    b"T25:99:99Z",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\x00",
    b"\n",
    b"\r\n",
    b",",
    b",,,,,,",
    b":",
    b"\"",
    b"\\",
    b"'",
    b"#",
    b"=",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"a\":1,",
    b"[[strategy]]",
    b"_journal",
    b"..",
    b"../../etc",
];

/// One edit of a seed; positions are [`Index`]es, scaled to the length at apply time.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Flip one bit.
    Flip(Index, u8),
    /// Set one byte.
    Set(Index, u8),
    /// Insert a [`TOKENS`] entry.
    Insert(Index, Index),
    /// Replace the word (digits, letters, `.+-_`) around a position by a token.
    Replace(Index, Index),
    /// Cut the input here.
    Truncate(Index),
    /// Remove up to `n` bytes.
    Delete(Index, u16),
    /// Copy up to `n` bytes from one place to another.
    Duplicate(Index, Index, u16),
    /// Insert up to `n` bytes of the other seed.
    Splice(Index, Index, u16),
}

/// One random [`Edit`].
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::Insert(i, t)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::Replace(i, t)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), 1u16..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1u16..256)
            .prop_map(|(i, j, n)| Edit::Duplicate(i, j, n)),
        1 => (any::<Index>(), any::<Index>(), 1u16..1024)
            .prop_map(|(i, j, n)| Edit::Splice(i, j, n)),
    ]
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_')
}

/// Applies `edits` to `data`, taking splices from `other`.
pub fn apply(mut data: Vec<u8>, other: &[u8], edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        match e {
            Edit::Flip(i, bit) if len > 0 => data[i.index(len)] ^= 1 << bit,
            Edit::Set(i, v) if len > 0 => data[i.index(len)] = *v,
            Edit::Insert(i, t) => {
                let at = i.index(len + 1);
                let token = TOKENS[t.index(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            Edit::Replace(i, t) if len > 0 => {
                let at = i.index(len);
                let (mut start, mut end) = (at, at);
                while start > 0 && is_word(data[start - 1]) {
                    start -= 1;
                }
                while end < len && is_word(data[end]) {
                    end += 1;
                }
                let token = TOKENS[t.index(TOKENS.len())];
                data.splice(start..end, token.iter().copied());
            }
            Edit::Truncate(i) => data.truncate(i.index(len + 1)),
            Edit::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                data.drain(at..(at + *n as usize).min(len));
            }
            Edit::Duplicate(i, j, n) if len > 0 => {
                let from = i.index(len);
                let chunk = data[from..(from + *n as usize).min(len)].to_vec();
                let to = j.index(len + 1);
                data.splice(to..to, chunk);
            }
            Edit::Splice(i, j, n) if !other.is_empty() => {
                let at = i.index(len + 1);
                let from = j.index(other.len());
                let chunk = &other[from..(from + *n as usize).min(other.len())];
                data.splice(at..at, chunk.iter().copied());
            }
            _ => {}
        }
        data.truncate(MAX_LEN);
    }
    data
}

/// Seeds from `base`, each with up to eight edits (a quarter of them unedited).
pub fn mutated(base: impl Strategy<Value = Vec<u8>> + Clone) -> impl Strategy<Value = Vec<u8>> {
    (
        base.clone(),
        base,
        prop_oneof![1 => Just(Vec::new()), 3 => prop::collection::vec(edit(), 1..8)],
    )
        .prop_map(|(seed, other, edits)| apply(seed, &other, &edits))
}

/// Arbitrary bytes, up to `max` of them.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// Mostly mutated seeds from `base`, sometimes arbitrary bytes.
pub fn input(base: impl Strategy<Value = Vec<u8>> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![9 => mutated(base), 1 => bytes(512)]
}

/// One of `seeds`, whole.
pub fn one_of(seeds: Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> + Clone {
    assert!(!seeds.is_empty(), "a seed corpus must not be empty");
    any::<Index>().prop_map(move |i| seeds[i.index(seeds.len())].clone())
}

/// `1..=max` consecutive lines of one of `corpora` (each a list of lines without their
/// newline), joined with `\n`. Half the windows start at the corpus' first line, where
/// captures hold their subscriptions and snapshots.
pub fn window(
    corpora: Arc<Vec<Vec<Vec<u8>>>>,
    max: usize,
) -> impl Strategy<Value = Vec<u8>> + Clone {
    assert!(
        corpora.iter().any(|c| !c.is_empty()),
        "no lines to fuzz from"
    );
    (any::<Index>(), any::<Index>(), any::<bool>(), 1..=max).prop_map(move |(c, s, head, n)| {
        let nonempty: Vec<&Vec<Vec<u8>>> = corpora.iter().filter(|c| !c.is_empty()).collect();
        let lines = nonempty[c.index(nonempty.len())];
        let start = if head { 0 } else { s.index(lines.len()) };
        let mut out = Vec::new();
        for line in lines.iter().skip(start).take(n) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    })
}

/// `tests/fixtures/<rel>`, which the repository always has.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `../shared/data/real/<rel>`, or `None` with a line saying it is skipped (a failure
/// under `CI=true`, see [`crate::util::real_data`]).
pub fn real(rel: &str) -> Option<Vec<u8>> {
    let path = crate::util::real_data(rel)?;
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The bytes of a gzip or zstd file, decompressed (whole, or its first `limit` bytes).
pub fn decompressed(bytes: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::new(bytes).expect("zstd"))
    } else {
        Box::new(bytes)
    };
    reader
        .take(limit as u64)
        .read_to_end(&mut out)
        .expect("decompress seed");
    out
}

/// Lines of `text` (without their newline), at most `max` of them.
pub fn lines(text: &[u8], max: usize) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(max)
        .map(<[u8]>::to_vec)
        .collect()
}
