//! The simulated exchange's assumptions, one small trait each: order latency, market-data
//! latency, queue position and fees.
//!
//! Owns the traits, their implementations and the serde settings that pick them by name.
//! Never touches books or orders directly: [`super::matching`] calls these hooks and keeps
//! the state. Every time here is in nanoseconds on the `ts_recv` timeline.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal};
use serde::Deserialize;

use crate::event::{Fixed, UnixNanos};

use super::protocol::Liquidity;

/// Time from a strategy's decision to its order (or cancel) reaching the matching engine.
///
/// Called once per `new` or `cancel` request, inside [`super::SimExchange::submit`], with
/// the (clamped) decision time. Returns nanoseconds, never negative (negative results are
/// treated as zero).
pub trait OrderLatency: Send {
    /// Nanoseconds the request spends on the way to the matching engine.
    fn order_latency(&mut self, decided_at: UnixNanos) -> i64;
}

/// Extra delay between the exchange's state and what the strategy sees.
///
/// Assumption: the recorded `ts_recv` already carries the recorder's feed latency, so the
/// default is zero; set it when the strategy sits further from the venue than the recorder
/// did. It combines additively with [`OrderLatency`]: an order decided at `t` on the
/// `ts_recv` timeline is applied at `t + md_latency + order_latency`. Called once per
/// request in [`super::SimExchange::submit`]; nanoseconds, negative treated as zero.
pub trait MarketDataLatency: Send {
    /// Nanoseconds the strategy's view lags the recorded timeline.
    fn md_latency(&mut self, decided_at: UnixNanos) -> i64;
}

/// Every request takes exactly the same time.
///
/// Assumption: "the wire and the gateway always take `0` ns": fine for a colocated
/// strategy with a quiet gateway, optimistic when latency jitters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConstantLatency(pub i64);

impl OrderLatency for ConstantLatency {
    fn order_latency(&mut self, _decided_at: UnixNanos) -> i64 {
        self.0.max(0)
    }
}

impl MarketDataLatency for ConstantLatency {
    fn md_latency(&mut self, _decided_at: UnixNanos) -> i64 {
        self.0.max(0)
    }
}

/// Latency drawn from a log-normal distribution with a given mean, seeded so a run is
/// reproducible, never below a floor.
///
/// Assumption: "latency is usually near its typical value with a long right tail of slow
/// requests, and never beats the wire": the usual shape of network and gateway delays.
/// Draws happen in request order, so the same run with the same seed gets the same
/// latencies.
#[derive(Clone, Debug)]
pub struct LogNormalLatency {
    dist: LogNormal<f64>,
    rng: SmallRng,
    floor_ns: i64,
}

impl LogNormalLatency {
    /// Latency with arithmetic mean `mean_ns` and log-space standard deviation `sigma`
    /// (0.5 is a moderate tail), drawn from a `SmallRng` seeded with `seed`.
    pub fn new(mean_ns: i64, sigma: f64, seed: u64) -> Result<LogNormalLatency, ModelError> {
        if mean_ns <= 0 {
            return Err(ModelError::Invalid(format!(
                "log-normal latency needs mean_ns > 0, got {mean_ns}"
            )));
        }
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(ModelError::Invalid(format!(
                "log-normal latency needs a finite sigma >= 0, got {sigma}"
            )));
        }
        // E[X] = exp(mu + sigma^2 / 2), so this mu makes `mean_ns` the mean.
        let mu = (mean_ns as f64).ln() - sigma * sigma / 2.0;
        let dist = LogNormal::new(mu, sigma)
            .map_err(|e| ModelError::Invalid(format!("log-normal latency: {e}")))?;
        Ok(LogNormalLatency {
            dist,
            rng: SmallRng::seed_from_u64(seed),
            floor_ns: 0,
        })
    }

    /// Raises every draw below `floor_ns` to it: the wire's minimum. A lockstep lookahead
    /// needs a floor, since an unbounded distribution can draw any small latency.
    pub fn with_floor(mut self, floor_ns: i64) -> LogNormalLatency {
        self.floor_ns = floor_ns.max(0);
        self
    }

    fn draw(&mut self) -> i64 {
        let ns = self.dist.sample(&mut self.rng);
        let ns = if ns.is_finite() { ns.round() as i64 } else { 0 };
        ns.max(self.floor_ns)
    }
}

impl OrderLatency for LogNormalLatency {
    fn order_latency(&mut self, _decided_at: UnixNanos) -> i64 {
        self.draw()
    }
}

impl MarketDataLatency for LogNormalLatency {
    fn md_latency(&mut self, _decided_at: UnixNanos) -> i64 {
        self.draw()
    }
}

/// Where a resting order stands in its price level's queue, as size ahead of it.
///
/// Shared rules (in the engine, not the model): an order that comes to rest is placed
/// behind what is visible at its price; a trade at its price reduces the size ahead by
/// the traded size and fills the order with whatever trades past it (partial fills
/// allowed); a trade *through* its price fills it with nothing ahead; the size ahead never
/// exceeds the level's visible size. The model decides what size-ahead the order starts
/// with and what a cancel (a level decrease no trade explains) does to it.
pub trait QueueModel: Send {
    /// Size ahead of an order that comes to rest, given the visible (not yet consumed)
    /// size at its price on its side. Called once, when the order starts resting.
    fn ahead_at_placement(&self, visible: Fixed) -> Fixed {
        visible
    }

    /// New size ahead after `canceled` left a level that held `level_before` (both exact,
    /// `canceled > 0`, `level_before >= canceled`). Called for every own order resting at
    /// that level when a book delta lowers it by more than the trades seen there since its
    /// previous delta.
    fn after_cancel(&self, ahead: Fixed, canceled: Fixed, level_before: Fixed) -> Fixed;
}

/// Cancels never move you forward.
///
/// Assumption: "everyone who cancels was behind me", so only trades advance the queue:
/// the pessimistic choice, it never over-fills.
#[derive(Clone, Copy, Debug, Default)]
pub struct RiskAverse;

impl QueueModel for RiskAverse {
    fn after_cancel(&self, ahead: Fixed, _canceled: Fixed, _level_before: Fixed) -> Fixed {
        ahead
    }
}

/// Cancels come uniformly from the whole level.
///
/// Assumption: "a cancel is as likely to come from in front of me as from behind", so a
/// cancel of `c` from a level of `L` advances the order by `c * ahead / L`, rounded down
/// to the finest decimal scale of the three sizes (in effect the venue's size precision),
/// so the estimate never moves in the order's favour by a fraction of a lot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Proportional;

impl QueueModel for Proportional {
    fn after_cancel(&self, ahead: Fixed, canceled: Fixed, level_before: Fixed) -> Fixed {
        if level_before.mantissa <= 0 || ahead.mantissa <= 0 {
            return ahead;
        }
        let scale = ahead.scale.max(canceled.scale).max(level_before.scale);
        let (a, c, l) = (
            wide(ahead, scale),
            wide(canceled, scale),
            wide(level_before, scale),
        );
        // Each factor fits in ~2^123 at extreme scales, so the product can overflow i128;
        // checked_mul keeps that panic-free (and the order simply does not advance).
        let advance = match c.checked_mul(a) {
            Some(p) => p / l,
            None => return ahead,
        };
        narrow((a - advance).max(0), scale)
    }
}

/// `f` as an integer count of `10^-scale` units (`scale >= f.scale`).
pub(crate) fn wide(f: Fixed, scale: u8) -> i128 {
    f.mantissa as i128 * 10i128.pow(u32::from(scale.saturating_sub(f.scale)))
}

/// Inverse of [`wide`], saturating at the `i64` range.
pub(crate) fn narrow(v: i128, scale: u8) -> Fixed {
    let m = v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    Fixed::new(m, scale)
}

/// Maker and taker fees in basis points of notional, plus a fixed fee per fill: plain
/// data, chosen per venue in the scenario file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeeSchedule {
    /// Fee on maker (resting) fills, bps of notional; negative is a rebate.
    pub maker_bps: f64,
    /// Fee on taker (aggressive) fills, bps of notional; negative is a rebate.
    pub taker_bps: f64,
    /// Fixed fee per fill in quote currency (0 for most crypto venues).
    pub fixed_per_fill: f64,
}

/// What a fill costs.
///
/// Called once per fill, after its price and size are final. Returns quote currency,
/// positive = paid by the strategy, negative = rebate received.
pub trait FeeModel: Send {
    /// The fee of one fill.
    fn fee(&self, liquidity: Liquidity, price: Fixed, size: Fixed) -> f64;
}

/// Fees as a fraction of notional from a [`FeeSchedule`].
///
/// Assumption: "the fee is `bps × price × size / 10 000` plus the fixed part, in quote
/// currency, independent of volume tiers".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BpsFees(pub FeeSchedule);

impl FeeModel for BpsFees {
    fn fee(&self, liquidity: Liquidity, price: Fixed, size: Fixed) -> f64 {
        let bps = match liquidity {
            Liquidity::Maker => self.0.maker_bps,
            Liquidity::Taker => self.0.taker_bps,
        };
        price.to_f64() * size.to_f64() * bps / 10_000.0 + self.0.fixed_per_fill
    }
}

/// A model setting that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A parameter is out of range; the message names it and the accepted range.
    #[error("invalid exchange model setting: {0}")]
    Invalid(String),
}

/// Which latency model to use, by name (`model = "constant"` or `"log_normal"`).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencySpec {
    /// [`ConstantLatency`].
    Constant {
        /// Nanoseconds per request.
        ns: i64,
    },
    /// [`LogNormalLatency`], seeded from [`ExchangeSettings::seed`].
    LogNormal {
        /// Mean latency in nanoseconds.
        mean_ns: i64,
        /// Log-space standard deviation (0.5 is a moderate tail).
        sigma: f64,
        /// No draw is faster than this (default 0).
        #[serde(default)]
        min_ns: i64,
    },
}

impl LatencySpec {
    /// The least latency the model can produce, in nanoseconds.
    pub fn min_ns(&self) -> i64 {
        match *self {
            LatencySpec::Constant { ns } => ns.max(0),
            LatencySpec::LogNormal { min_ns, .. } => min_ns.max(0),
        }
    }

    fn describe(&self) -> String {
        match *self {
            LatencySpec::Constant { ns } => format!("constant {ns} ns"),
            LatencySpec::LogNormal { min_ns, .. } => {
                format!("log_normal with min_ns = {min_ns}")
            }
        }
    }
}

impl Default for LatencySpec {
    fn default() -> LatencySpec {
        LatencySpec::Constant { ns: 0 }
    }
}

/// Which queue model to use, by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueSpec {
    /// [`RiskAverse`]: cancels never advance you.
    #[default]
    RiskAverse,
    /// [`Proportional`]: cancels advance you in proportion to the size ahead.
    Proportional,
}

/// The exchange's models, as a scenario file names them. Defaults: zero latencies,
/// risk-averse queue, zero fees, seed 0.
///
/// ```toml
/// [exchange]
/// order_latency = { model = "log_normal", mean_ns = 2000000, sigma = 0.5 }
/// md_latency = { model = "constant", ns = 0 }
/// queue = "proportional"
/// fees = { maker_bps = -1.0, taker_bps = 4.0 }
/// seed = 7
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeSettings {
    /// Decision → matching engine.
    pub order_latency: LatencySpec,
    /// Exchange state → strategy's view, on top of what `ts_recv` already holds.
    pub md_latency: LatencySpec,
    /// Queue position model.
    pub queue: QueueSpec,
    /// Fee schedule (one for all symbols of the run).
    pub fees: FeeSchedule,
    /// Seed for every sampled model, so runs repeat exactly.
    pub seed: u64,
}

impl ExchangeSettings {
    /// Checks that lockstep with `lookahead` stays exact under these models.
    ///
    /// The replayer publishes events up to `lookahead` past the last one every strategy
    /// acknowledged; an order answering an unacknowledged event must therefore not be due
    /// at the exchange earlier than `lookahead` after it, or it would land after events
    /// that, in simple lockstep, it precedes. The least order latency plus the least
    /// market-data latency must cover the lookahead.
    pub fn check_lookahead(&self, lookahead: std::time::Duration) -> Result<(), ModelError> {
        let lookahead_ns = i64::try_from(lookahead.as_nanos()).unwrap_or(i64::MAX);
        let least = self
            .order_latency
            .min_ns()
            .saturating_add(self.md_latency.min_ns());
        if lookahead_ns > least {
            return Err(ModelError::Invalid(format!(
                "lockstep lookahead {lookahead_ns} ns exceeds the least latency an order can \
                 have ({least} ns: order_latency {}, md_latency {}); orders could then reach \
                 the exchange after events already published and fills would differ from \
                 simple lockstep. Lower the lookahead to at most {least} ns, or raise the \
                 latency (a log_normal latency takes a floor, min_ns)",
                self.order_latency.describe(),
                self.md_latency.describe(),
            )));
        }
        Ok(())
    }
}

/// The four models a [`super::SimExchange`] runs with, assembled explicitly.
pub struct Models {
    /// Decision → matching engine.
    pub order_latency: Box<dyn OrderLatency>,
    /// Exchange state → strategy's view.
    pub md_latency: Box<dyn MarketDataLatency>,
    /// Queue position of resting orders.
    pub queue: Box<dyn QueueModel>,
    /// Cost of each fill.
    pub fees: Box<dyn FeeModel>,
}

impl Default for Models {
    /// Zero latencies, [`RiskAverse`] queue, zero fees.
    fn default() -> Models {
        Models {
            order_latency: Box::new(ConstantLatency(0)),
            md_latency: Box::new(ConstantLatency(0)),
            queue: Box::new(RiskAverse),
            fees: Box::new(BpsFees(FeeSchedule::default())),
        }
    }
}

impl Models {
    /// Builds the models a settings block names. The two sampled latencies get different
    /// seeds derived from `settings.seed` so they do not draw the same numbers.
    pub fn from_settings(settings: &ExchangeSettings) -> Result<Models, ModelError> {
        fn latency(spec: &LatencySpec, seed: u64) -> Result<Box<LatencyBox>, ModelError> {
            Ok(match *spec {
                LatencySpec::Constant { ns } if ns < 0 => {
                    return Err(ModelError::Invalid(format!(
                        "constant latency needs ns >= 0, got {ns}"
                    )));
                }
                LatencySpec::Constant { ns } => Box::new(ConstantLatency(ns)),
                LatencySpec::LogNormal {
                    mean_ns,
                    sigma,
                    min_ns,
                } if min_ns >= 0 => {
                    Box::new(LogNormalLatency::new(mean_ns, sigma, seed)?.with_floor(min_ns))
                }
                LatencySpec::LogNormal { min_ns, .. } => {
                    return Err(ModelError::Invalid(format!(
                        "log-normal latency needs min_ns >= 0, got {min_ns}"
                    )));
                }
            })
        }
        let order = latency(&settings.order_latency, settings.seed)?;
        let md = latency(&settings.md_latency, settings.seed ^ 0x9e37_79b9_7f4a_7c15)?;
        Ok(Models {
            order_latency: order,
            md_latency: md,
            queue: match settings.queue {
                QueueSpec::RiskAverse => Box::new(RiskAverse),
                QueueSpec::Proportional => Box::new(Proportional),
            },
            fees: Box::new(BpsFees(settings.fees)),
        })
    }
}

/// A latency usable on both paths (every implementation here is).
trait BothLatencies: OrderLatency + MarketDataLatency {}
impl<T: OrderLatency + MarketDataLatency> BothLatencies for T {}
type LatencyBox = dyn BothLatencies;

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Fixed {
        s.parse().unwrap()
    }

    #[test]
    fn log_normal_latency_repeats_with_the_same_seed() {
        let mut a = LogNormalLatency::new(1_000_000, 0.5, 42).unwrap();
        let mut b = LogNormalLatency::new(1_000_000, 0.5, 42).unwrap();
        let mut c = LogNormalLatency::new(1_000_000, 0.5, 43).unwrap();
        let xs: Vec<i64> = (0..100).map(|_| a.order_latency(0)).collect();
        let ys: Vec<i64> = (0..100).map(|_| b.order_latency(0)).collect();
        let zs: Vec<i64> = (0..100).map(|_| c.order_latency(0)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mean = xs.iter().sum::<i64>() as f64 / xs.len() as f64;
        assert!((500_000.0..2_000_000.0).contains(&mean), "mean {mean}");
        assert!(xs.iter().all(|&x| x > 0));
    }

    #[test]
    fn log_normal_latency_rejects_nonsense_parameters() {
        assert!(LogNormalLatency::new(0, 0.5, 1).is_err());
        assert!(LogNormalLatency::new(10, f64::NAN, 1).is_err());
    }

    #[test]
    fn log_normal_floor_bounds_every_draw() {
        let mut l = LogNormalLatency::new(1_000, 2.0, 3)
            .unwrap()
            .with_floor(800);
        let draws: Vec<i64> = (0..1_000).map(|_| l.order_latency(0)).collect();
        assert!(draws.iter().all(|&d| d >= 800));
        // A wide distribution: the floor is hit, and not everything is the floor.
        assert!(draws.contains(&800));
        assert!(draws.iter().any(|&d| d > 800));
    }

    #[test]
    fn lookahead_must_fit_within_the_least_latency() {
        use std::time::Duration;
        let ms = Duration::from_millis(1);
        let constant = |ns| LatencySpec::Constant { ns };
        let settings = |order, md| ExchangeSettings {
            order_latency: order,
            md_latency: md,
            ..ExchangeSettings::default()
        };
        assert!(
            settings(constant(1_000_000), constant(0))
                .check_lookahead(ms)
                .is_ok()
        );
        assert!(
            settings(constant(600_000), constant(400_000))
                .check_lookahead(ms)
                .is_ok()
        );
        assert!(
            settings(constant(0), constant(0))
                .check_lookahead(Duration::ZERO)
                .is_ok()
        );
        let err = settings(constant(999_999), constant(0))
            .check_lookahead(ms)
            .unwrap_err()
            .to_string();
        assert!(err.contains("999999 ns"), "{err}");
        let log_normal = |min_ns| LatencySpec::LogNormal {
            mean_ns: 2_000_000,
            sigma: 0.5,
            min_ns,
        };
        let err = settings(log_normal(0), constant(0))
            .check_lookahead(ms)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_ns"), "{err}");
        assert!(
            settings(log_normal(1_000_000), constant(0))
                .check_lookahead(ms)
                .is_ok()
        );
    }

    #[test]
    fn proportional_cancel_advances_by_share_ahead() {
        // 4 canceled from a level of 10 with 5 ahead: advance 4 * 5 / 10 = 2.
        assert_eq!(Proportional.after_cancel(f("5"), f("4"), f("10")), f("3"));
        assert_eq!(RiskAverse.after_cancel(f("5"), f("4"), f("10")), f("5"));
        // Mixed scales round toward zero advance (never in the order's favour).
        let ahead = Proportional.after_cancel(f("0.3"), f("0.1"), f("0.7"));
        assert_eq!(ahead, f("0.3"));
    }

    #[test]
    fn bps_fees_charge_takers_and_rebate_makers() {
        let fees = BpsFees(FeeSchedule {
            maker_bps: -1.0,
            taker_bps: 5.0,
            fixed_per_fill: 0.0,
        });
        let taker = fees.fee(Liquidity::Taker, f("100"), f("2"));
        let maker = fees.fee(Liquidity::Maker, f("100"), f("2"));
        assert!((taker - 0.1).abs() < 1e-12);
        assert!((maker + 0.02).abs() < 1e-12);
    }

    #[test]
    fn settings_parse_models_by_name() {
        let s: ExchangeSettings = toml::from_str(
            "order_latency = { model = \"log_normal\", mean_ns = 2000000, sigma = 0.5 }\n\
             queue = \"proportional\"\nfees = { maker_bps = -1.0, taker_bps = 4.0 }\nseed = 7\n",
        )
        .unwrap();
        assert_eq!(s.queue, QueueSpec::Proportional);
        assert_eq!(s.md_latency, LatencySpec::Constant { ns: 0 });
        assert!(Models::from_settings(&s).is_ok());
        let bad: Result<ExchangeSettings, _> = toml::from_str("queue = \"fifo\"\n");
        assert!(bad.is_err());
    }
}
