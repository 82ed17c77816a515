//! Scenario files (`scenarios/*.toml`, format in `docs/SCENARIOS.md`) and `ticktape run`:
//! the whole backtest in one command.
//!
//! Owns the TOML schema with errors that name file, line and key, and the orchestration
//! of one run: the replay (with the simulated exchange inside) in this process, strategy
//! child processes, the run directory, the summary. Never does matching itself.

pub mod run;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::exchange::models::ExchangeSettings;

/// Which data to replay.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset directory (relative paths are relative to the working directory).
    pub dataset: Spanned<PathBuf>,
    /// Venues to keep (empty: all).
    #[serde(default)]
    pub venues: Vec<String>,
    /// Symbols to keep (empty: all).
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Kinds to keep: `book`, `trade`, `gap` (empty: all).
    #[serde(default)]
    pub kinds: Vec<Spanned<String>>,
    /// Window start, UTC (`2024-08-08T23:55:00Z`).
    pub start: Option<Spanned<String>>,
    /// Window end, exclusive.
    pub end: Option<Spanned<String>>,
}

/// How to replay.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// `max`, or a factor of recorded pace (`1`, `10`).
    #[serde(default = "default_speed")]
    pub speed: Spanned<String>,
    /// Step strategies in lockstep (deterministic fills).
    #[serde(default = "yes")]
    pub lockstep: bool,
    /// Lockstep lookahead (`1ms`); should not exceed the order latency.
    pub lookahead: Option<Spanned<String>>,
    /// Seconds a strategy may take to acknowledge one step before the run fails.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: f64,
    /// Simulated seconds between marks (mid price and position samples).
    #[serde(default = "default_mark_interval")]
    pub mark_interval_secs: f64,
    /// Bus payload encoding: `json` (default, any language) or `binary` (fast; the
    /// Python client and the Rust SDK read both).
    #[serde(default)]
    pub encoding: crate::wire::Encoding,
}

fn default_speed() -> Spanned<String> {
    Spanned::new(0..0, "max".to_string())
}
fn yes() -> bool {
    true
}
fn default_ack_timeout() -> f64 {
    30.0
}
fn default_mark_interval() -> f64 {
    1.0
}

impl Default for ReplaySection {
    fn default() -> ReplaySection {
        ReplaySection {
            speed: default_speed(),
            lockstep: true,
            lookahead: None,
            ack_timeout_secs: default_ack_timeout(),
            mark_interval_secs: default_mark_interval(),
            encoding: crate::wire::Encoding::Json,
        }
    }
}

/// One strategy process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// Strategy id: client order id prefix, and its name in fills and reports.
    pub name: String,
    /// A built-in example (`mm`, `taker`), run as `ticktape strategy`.
    pub builtin: Option<Spanned<String>>,
    /// Any command line instead; `{bus}`, `{gateway}`, `{venue}`, `{symbol}`, `{size}`,
    /// `{name}` and `{lockstep}` (`--lockstep` or nothing) are substituted.
    pub command: Option<Spanned<Vec<String>>>,
    /// Venue it trades.
    pub venue: String,
    /// Symbol it trades.
    pub symbol: String,
    /// Order size (decimal string).
    #[serde(default = "default_size")]
    pub size: Spanned<String>,
}

fn default_size() -> Spanned<String> {
    Spanned::new(0..0, "1".to_string())
}

/// Account settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// Starting balance in quote currency (reports add PnL to it).
    #[serde(default)]
    pub starting_balance: f64,
}

/// Where results go.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Run directory (default `runs/<name>`).
    pub dir: Option<PathBuf>,
}

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Scenario name.
    pub name: String,
    /// Data selection.
    pub data: DataSection,
    /// Replay settings.
    #[serde(default)]
    pub replay: ReplaySection,
    /// Strategy processes (`[[strategy]]` tables).
    #[serde(rename = "strategy")]
    pub strategies: Vec<StrategySection>,
    /// Exchange models (see `docs/EXCHANGE.md`).
    #[serde(default)]
    pub exchange: ExchangeSettings,
    /// Account.
    #[serde(default)]
    pub account: AccountSection,
    /// Output.
    #[serde(default)]
    pub output: OutputSection,
}

/// Line (1-based) of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// Reads and validates a scenario file. Every error names the file, the line and the key.
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
        Scenario::parse(&text, path)
    }

    /// Parses scenario text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().trim().to_string();
            match line {
                Some(line) => anyhow::anyhow!("{}:{line}: {message}", path.display()),
                None => anyhow::anyhow!("{}: {message}", path.display()),
            }
        })?;
        let at = |span: std::ops::Range<usize>, key: &str, msg: String| {
            anyhow::anyhow!(
                "{}:{}: {key}: {msg}",
                path.display(),
                line_of(text, span.start)
            )
        };
        scenario
            .replay
            .speed
            .get_ref()
            .parse::<crate::replay::Speed>()
            .map_err(|m| at(scenario.replay.speed.span(), "replay.speed", m))?;
        if let Some(l) = &scenario.replay.lookahead {
            let lookahead =
                parse_duration(l.get_ref()).map_err(|m| at(l.span(), "replay.lookahead", m))?;
            if scenario.replay.lockstep {
                scenario
                    .exchange
                    .check_lookahead(lookahead)
                    .map_err(|e| at(l.span(), "replay.lookahead", e.to_string()))?;
            }
        }
        for (key, t) in [
            ("data.start", &scenario.data.start),
            ("data.end", &scenario.data.end),
        ] {
            if let Some(t) = t {
                crate::store::layout::parse_ts(t.get_ref())
                    .map_err(|e| at(t.span(), key, e.to_string()))?;
            }
        }
        for k in &scenario.data.kinds {
            if !matches!(k.get_ref().as_str(), "book" | "trade" | "gap") {
                return Err(at(
                    k.span(),
                    "data.kinds",
                    format!("unknown kind {:?} (use book, trade, gap)", k.get_ref()),
                ));
            }
        }
        if scenario.strategies.is_empty() {
            bail!(
                "{}: no [[strategy]] table: a run needs at least one strategy",
                path.display()
            );
        }
        let mut names = std::collections::HashSet::new();
        for s in &scenario.strategies {
            if !names.insert(&s.name) {
                bail!(
                    "{}: strategy name {:?} is used twice",
                    path.display(),
                    s.name
                );
            }
            s.size
                .get_ref()
                .parse::<crate::event::Fixed>()
                .map_err(|e| at(s.size.span(), "strategy.size", e.to_string()))?;
            match (&s.builtin, &s.command) {
                (Some(b), None) => {
                    if !matches!(b.get_ref().as_str(), "mm" | "taker") {
                        return Err(at(
                            b.span(),
                            "strategy.builtin",
                            format!(
                                "unknown built-in {:?} (use mm or taker, or give a command)",
                                b.get_ref()
                            ),
                        ));
                    }
                }
                (None, Some(c)) if c.get_ref().is_empty() => {
                    return Err(at(c.span(), "strategy.command", "is empty".into()));
                }
                (None, Some(_)) => {}
                _ => bail!(
                    "{}: strategy {:?}: give exactly one of `builtin` or `command`",
                    path.display(),
                    s.name
                ),
            }
        }
        if scenario.replay.ack_timeout_secs <= 0.0 || scenario.replay.mark_interval_secs <= 0.0 {
            bail!(
                "{}: replay.ack_timeout_secs and replay.mark_interval_secs must be positive",
                path.display()
            );
        }
        Ok(scenario)
    }
}

/// Parses `500us`, `1ms`, `2s`, `1.5m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (examples: 500us, 1ms, 2s)"))?;
    let factor = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ns, us, ms, s, m, h)")),
    };
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("duration {s:?} must not be negative"));
    }
    Ok(std::time::Duration::from_secs_f64(v * factor))
}

/// The run directory a scenario writes to.
pub fn run_dir(scenario: &Scenario, override_dir: Option<&Path>) -> PathBuf {
    override_dir
        .map(Path::to_path_buf)
        .or_else(|| scenario.output.dir.clone())
        .unwrap_or_else(|| PathBuf::from("runs").join(&scenario.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[data]
dataset = "data/x"
[replay]
speed = "10"
[[strategy]]
name = "mm"
builtin = "mm"
venue = "binance"
symbol = "BTCUSDT"
size = "0.001"
"#;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            Scenario::parse(text, Path::new("s.toml")).unwrap_err()
        )
    }

    #[test]
    fn a_good_scenario_parses() {
        let s = Scenario::parse(GOOD, Path::new("s.toml")).unwrap();
        assert_eq!(s.strategies[0].size.get_ref(), "0.001");
        assert!(s.replay.lockstep);
    }

    #[test]
    fn a_lookahead_beyond_the_order_latency_is_refused() {
        let with = |lookahead: &str, latency_ns: i64| {
            format!(
                "{}[exchange]\norder_latency = {{ model = \"constant\", ns = {latency_ns} }}\n",
                GOOD.replace(
                    "speed = \"10\"",
                    &format!("speed = \"10\"\nlookahead = \"{lookahead}\"")
                )
            )
        };
        assert!(Scenario::parse(&with("1ms", 1_000_000), Path::new("s.toml")).is_ok());
        assert!(Scenario::parse(&with("500us", 1_000_000), Path::new("s.toml")).is_ok());
        let e = err(&with("2ms", 1_000_000));
        assert!(e.starts_with("s.toml:7: replay.lookahead"), "{e}");
        assert!(e.contains("at most 1000000 ns"), "{e}");
        // Without lockstep the lookahead is unused, so nothing to refuse.
        let free = with("2ms", 1_000_000).replace("[replay]", "[replay]\nlockstep = false");
        assert!(Scenario::parse(&free, Path::new("s.toml")).is_ok());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err(&GOOD.replace("speed = \"10\"", "speed = \"10\"\nsped = 3"));
        assert!(e.starts_with("s.toml:7:"), "{e}");
        assert!(e.contains("sped"), "{e}");
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let e = err(&GOOD.replace("speed = \"10\"", "speed = \"fast\""));
        assert!(e.starts_with("s.toml:6: replay.speed"), "{e}");
        let e = err(&GOOD.replace("size = \"0.001\"", "size = \"lots\""));
        assert!(e.starts_with("s.toml:12: strategy.size"), "{e}");
        let e = err(&GOOD.replace("builtin = \"mm\"", "builtin = \"nope\""));
        assert!(e.starts_with("s.toml:9: strategy.builtin"), "{e}");
        let e = err(&GOOD.replace("dataset = \"data/x\"", "dataset = 5"));
        assert!(e.starts_with("s.toml:4:"), "{e}");
        let e = err(&GOOD.replace("[data]", "[data]\nstart = \"yesterday\""));
        assert!(e.starts_with("s.toml:4: data.start"), "{e}");
        // Out-of-range fields are refused, not carried into the next day.
        let e = err(&GOOD.replace(
            "[data]",
            "[data]\nstart = \"2024-08-08T00:00:00Z\"\nend = \"2024-08-08T99:00:00Z\"",
        ));
        assert!(e.starts_with("s.toml:5: data.end"), "{e}");
        assert!(e.contains("hour"), "{e}");
    }
}
