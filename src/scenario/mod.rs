//! Scenario files (`scenarios/*.toml`, format in `docs/SCENARIOS.md`) and `ticktape run`:
//! the whole backtest in one command.
//!
//! Owns the TOML schema with errors that name file, line and key, and the orchestration
//! of one run: the replay (with the simulated exchange inside) in this process, strategy
//! child processes, the run directory, the summary. Never does matching itself.

pub mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Seconds a strategy may take to acknowledge one step before the run fails
    /// (finite, 1 µs to 365 days; read it with [`ReplaySection::ack_timeout`]).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: Spanned<f64>,
    /// Simulated seconds between marks (mid price and position samples; finite, 1 µs to
    /// 365 days; read it with [`ReplaySection::mark_interval`]).
    #[serde(default = "default_mark_interval")]
    pub mark_interval_secs: Spanned<f64>,
    /// Bus payload encoding: `json` (default, any language) or `binary` (fast; the
    /// Python client and the Rust SDK read both).
    #[serde(default)]
    pub encoding: crate::wire::Encoding,
    /// How strategies exchange messages with the replay: `zmq` (default; any language,
    /// the live interface) or `shm` (shared memory, strategies started by `ticktape run`
    /// on this machine; `docs/SHM.md`).
    #[serde(default)]
    pub transport: crate::shm::Transport,
    /// Pace under real-time scheduling (`SCHED_FIFO` for the replay thread while it
    /// paces; needs `CAP_SYS_NICE`, refused with the reason otherwise): a strategy woken
    /// on the replay's core no longer takes it from the pacer. Paced replays only.
    #[serde(default)]
    pub realtime: bool,
    /// How a paced replay waits for each event's due time ([`crate::replay::Waiting`]):
    /// `spin` (default: sleep until shortly before, spin the rest), `sleep`, or `busy`
    /// (never sleep: a core for the whole replay, the most punctual with `own_core`).
    #[serde(default)]
    pub pacing: crate::replay::Waiting,
    /// Strategies started by this run poll their shared-memory ring between messages
    /// instead of sleeping on it (`TICKTAPE_SHM_SPIN_US` set to
    /// [`crate::shm::BUSY_POLL_SPIN_US`] in their environment): each takes a core, and
    /// the replay never wakes one, so neither the pacer nor the strategy waits for a
    /// wake-up. Needs `transport = "shm"`.
    #[serde(default)]
    pub busy_poll: bool,
    /// Keep the paced replay thread on a CPU of its own (the highest this process may
    /// use) and the strategies this run starts, the dataset's read-ahead and libzmq's
    /// threads on the others ([`crate::replay::cores`]): a strategy the replay wakes can
    /// no longer take its core. No privilege needed; at least two CPUs; paced replays
    /// with `[engine] mode = "bus"` only.
    #[serde(default)]
    pub own_core: bool,
    /// A second thread, on the cores `own_core` leaves to the others, publishes each
    /// burst at its due time when the replay thread has not (its core taken by the
    /// host, or still busy with the last burst), and wakes the strategies that sleep
    /// ([`crate::shm::backup`]). It runs at idle priority: it takes only time nothing
    /// else there wants. Needs `transport = "shm"`, `own_core = true` and `lockstep =
    /// false`.
    #[serde(default)]
    pub backup_publisher: bool,
}

fn default_speed() -> Spanned<String> {
    Spanned::new(0..0, "max".to_string())
}
fn yes() -> bool {
    true
}
fn default_ack_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_mark_interval() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

impl ReplaySection {
    /// `ack_timeout_secs` as a checked [`Duration`] (finite, 1 µs to [`MAX_DURATION`]).
    pub fn ack_timeout(&self) -> Result<Duration> {
        seconds(*self.ack_timeout_secs.get_ref())
            .map_err(|m| anyhow::anyhow!("replay.ack_timeout_secs: {m}"))
    }

    /// `mark_interval_secs` as a checked [`Duration`] (finite, 1 µs to [`MAX_DURATION`]).
    pub fn mark_interval(&self) -> Result<Duration> {
        seconds(*self.mark_interval_secs.get_ref())
            .map_err(|m| anyhow::anyhow!("replay.mark_interval_secs: {m}"))
    }

    /// `lookahead` parsed by [`parse_duration`]; zero when absent.
    pub fn lookahead(&self) -> Result<Duration> {
        match &self.lookahead {
            Some(l) => {
                parse_duration(l.get_ref()).map_err(|m| anyhow::anyhow!("replay.lookahead: {m}"))
            }
            None => Ok(Duration::ZERO),
        }
    }
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
            realtime: false,
            pacing: crate::replay::Waiting::Spin,
            busy_poll: false,
            own_core: false,
            backup_publisher: false,
            transport: crate::shm::Transport::Zmq,
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
    /// Strategy parameters (`params = { skew_ticks = 2 }`): handed to built-ins, to Rust
    /// strategies through `ticktape::strategy::Params`, and to any command in the
    /// `TICKTAPE_PARAMS` environment variable as one JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Spanned<toml::Table>>,
}

impl StrategySection {
    /// The `params` table as [`crate::strategy::Params`].
    pub fn params(&self) -> crate::strategy::Params {
        let map = self
            .params
            .as_ref()
            .and_then(|t| serde_json::to_value(t.get_ref()).ok())
            .and_then(|v| match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        crate::strategy::Params::from_map(map)
    }
}

fn default_size() -> Spanned<String> {
    Spanned::new(0..0, "1".to_string())
}

/// Which engine runs the backtest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    /// Strategies run as processes on the bus (any language), stepped in lockstep.
    #[default]
    Bus,
    /// Built-in Rust strategies run in this process beside the exchange: no sockets,
    /// same fills as the bus lockstep.
    Inproc,
}

/// `[engine]`: how strategies are run.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// `bus` (default) or `inproc`.
    #[serde(default)]
    pub mode: EngineMode,
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
    /// Engine: strategies over the bus (default) or in-process.
    #[serde(default)]
    pub engine: EngineSection,
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
        if scenario.replay.transport == crate::shm::Transport::Shm
            && scenario.engine.mode == EngineMode::Inproc
        {
            bail!(
                "{}: replay.transport = \"shm\" needs [engine] mode = \"bus\": in-process strategies use no transport (remove one of the two)",
                path.display()
            );
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
                    if let (Some(p), Ok(size)) = (&s.params, s.size.get_ref().parse()) {
                        crate::strategy::builtin(
                            b.get_ref(),
                            &s.venue,
                            &s.symbol,
                            size,
                            &s.params(),
                        )
                        .map_err(|e| at(p.span(), "strategy.params", e.to_string()))?;
                    }
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
                (None, Some(c)) if scenario.engine.mode == EngineMode::Inproc => {
                    return Err(at(
                        c.span(),
                        "strategy.command",
                        format!(
                            "strategy {:?} is a command, but [engine] mode = \"inproc\" runs built-in Rust strategies only (use mode = \"bus\", or the ticktape::backtest API for your own Rust strategy)",
                            s.name
                        ),
                    ));
                }
                (None, Some(_)) => {}
                _ => bail!(
                    "{}: strategy {:?}: give exactly one of `builtin` or `command`",
                    path.display(),
                    s.name
                ),
            }
        }
        for (key, secs) in [
            ("replay.ack_timeout_secs", &scenario.replay.ack_timeout_secs),
            (
                "replay.mark_interval_secs",
                &scenario.replay.mark_interval_secs,
            ),
        ] {
            seconds(*secs.get_ref()).map_err(|m| at(secs.span(), key, m))?;
        }
        Ok(scenario)
    }
}

/// The longest duration accepted anywhere: a duration flag or string (`--flush-interval`,
/// `--lookahead`, `lookahead = "…"`) and a scenario's seconds (`ack_timeout_secs`).
/// 365 days: longer is a typo, and it keeps every duration inside `i64` nanoseconds and
/// `Instant` arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The shortest positive seconds value a scenario accepts (1 µs).
pub const MIN_SECONDS: f64 = 1e-6;

const DURATION_EXAMPLES: &str = "examples: 0s, 500us, 1ms, 2s, 1.5m, 1h; at most 8760h (365 days)";

/// Parses `500us`, `1ms`, `2s`, `1.5m`, `1h` (units `ns`, `us`, `ms`, `s`, `m`, `h`; a
/// bare number is seconds), from zero to [`MAX_DURATION`]. Integers are exact; fractions
/// are rounded to the nanosecond.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num = num.trim();
    if num.is_empty() {
        return Err(format!(
            "bad duration {s:?}: not a number and a unit ({DURATION_EXAMPLES})"
        ));
    }
    let unit_ns: u64 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" | "" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "bad duration unit in {s:?}: use ns, us, ms, s, m or h ({DURATION_EXAMPLES})"
            ));
        }
    };
    let max_ns = MAX_DURATION.as_nanos();
    let too_long = || format!("duration {s:?} is too long ({DURATION_EXAMPLES})");
    if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
        // Exact integer path: no float rounding, no overflow.
        let ns = num
            .parse::<u128>()
            .ok()
            .and_then(|n| n.checked_mul(u128::from(unit_ns)))
            .filter(|&ns| ns <= max_ns)
            .ok_or_else(too_long)?;
        return Ok(Duration::from_nanos(ns as u64));
    }
    let v: f64 = num.parse().map_err(|_| {
        format!("bad duration {s:?}: not a number and a unit ({DURATION_EXAMPLES})")
    })?;
    if !v.is_finite() {
        return Err(format!(
            "bad duration {s:?}: not a finite number ({DURATION_EXAMPLES})"
        ));
    }
    if v < 0.0 {
        return Err(format!("duration {s:?} is negative ({DURATION_EXAMPLES})"));
    }
    let ns = (v * unit_ns as f64).round();
    if ns > max_ns as f64 {
        return Err(too_long());
    }
    // In range: 0 ..= 3.2e16, well inside u64.
    Ok(Duration::from_nanos(ns as u64))
}

/// Checks a scenario's seconds value (`ack_timeout_secs`, `mark_interval_secs`): finite,
/// at least [`MIN_SECONDS`], at most [`MAX_DURATION`].
pub fn seconds(v: f64) -> std::result::Result<Duration, String> {
    let max = MAX_DURATION.as_secs_f64();
    if !(v.is_finite() && (MIN_SECONDS..=max).contains(&v)) {
        return Err(format!(
            "{v} is not a number of seconds from {MIN_SECONDS} (1 µs) to {max} (365 days); \
             e.g. 30.0 or 0.5"
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("{v} seconds: {e}"))
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

    #[test]
    fn durations_are_exact_and_bounded_instead_of_panicking() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("500us"), Duration::from_micros(500));
        assert_eq!(ok("1.5m"), Duration::from_secs(90));
        assert_eq!(ok("123456789ns"), Duration::from_nanos(123_456_789));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("2"), Duration::from_secs(2));
        assert_eq!(ok("8760h"), MAX_DURATION);
        for (text, says) in [
            ("99999999999999999999999s", "too long"),
            ("99999999999999999999999999999999999999999999ns", "too long"),
            ("1e300", "unit"),
            ("8760.001h", "too long"),
            ("8761h", "too long"),
            ("-1s", "negative"),
            ("nan", "not a number"),
            ("inf s", "not a number"),
            ("1.5.2s", "not a number"),
            ("5 parsecs", "unit"),
            ("", "not a number"),
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(
                e.contains(says) && e.contains("examples: 0s, 500us"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn non_finite_or_huge_replay_seconds_name_file_line_and_key() {
        for (key, value) in [
            ("ack_timeout_secs", "nan"),
            ("ack_timeout_secs", "1e30"),
            ("ack_timeout_secs", "0"),
            ("ack_timeout_secs", "-1.0"),
            ("mark_interval_secs", "inf"),
            ("mark_interval_secs", "-inf"),
            ("mark_interval_secs", "1e-12"),
        ] {
            let e = err(&GOOD.replace(
                "speed = \"10\"",
                &format!("speed = \"10\"\n{key} = {value}"),
            ));
            assert!(e.starts_with(&format!("s.toml:7: replay.{key}")), "{e}");
            assert!(e.contains("365 days"), "{e}");
        }
        let e = err(&GOOD.replace(
            "speed = \"10\"",
            "speed = \"10\"\nlookahead = \"99999999999999999999999s\"",
        ));
        assert!(e.starts_with("s.toml:7: replay.lookahead"), "{e}");
        let s = Scenario::parse(
            &GOOD.replace(
                "speed = \"10\"",
                "speed = \"10\"\nack_timeout_secs = 2\nmark_interval_secs = 0.25",
            ),
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(s.replay.ack_timeout().unwrap(), Duration::from_secs(2));
        assert_eq!(
            s.replay.mark_interval().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(s.replay.lookahead().unwrap(), Duration::ZERO);
        // The run directory's resolved scenario.toml still writes plain numbers.
        let resolved = toml::to_string(&s).unwrap();
        assert!(resolved.contains("ack_timeout_secs = 2.0"), "{resolved}");
        assert!(Scenario::parse(&resolved, Path::new("r.toml")).is_ok());
    }
}
