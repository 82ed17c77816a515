//! Average-cost position ledger: the path-dependent part of PnL, replayed fill by fill.
//!
//! Owns the per-(strategy, venue, symbol) running state (exact position, average entry
//! cost, cumulative realized PnL and fees, round-trip bookkeeping). It never reads files
//! and never looks at marks: `metrics` feeds it sorted fill columns and joins the
//! per-fill snapshots it returns onto marks with an as-of join.
//!
//! Position is tracked exactly with [`Fixed`] (parsed from the fills' `size_exact`) so that
//! "back to flat" and "flipped through zero" are exact decisions, not `f64` epsilon guesses.
//! Money (prices, PnL, fees) is `f64`: this is the analysis edge.

use crate::event::Fixed;

/// Which side of the book a fill added or removed liquidity on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liquidity {
    /// Resting order was hit (usually earns a rebate or pays a lower fee).
    Maker,
    /// Order crossed the spread.
    Taker,
    /// Column held something else (or null); counted in neither split.
    Unknown,
}

/// One fill as the ledger needs it.
#[derive(Clone, Copy, Debug)]
pub struct LedgerFill {
    /// Fill time, ns since the Unix epoch.
    pub ts: i64,
    /// `true` for a buy, `false` for a sell.
    pub buy: bool,
    /// Execution price (quote currency per unit).
    pub price: f64,
    /// Exact filled size (always positive).
    pub size: Fixed,
    /// Fee in quote currency; positive = paid, negative = rebate.
    pub fee: f64,
    /// Maker or taker.
    pub liquidity: Liquidity,
}

/// Running state after a fill: what the as-of join copies onto later marks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    /// Signed position after the fill (base units; long > 0).
    pub position: f64,
    /// Average entry price of the open position; 0 when flat.
    pub avg_cost: f64,
    /// Realized PnL so far, gross of fees.
    pub cum_realized: f64,
    /// Fees so far (positive = paid).
    pub cum_fees: f64,
}

/// Totals for one (strategy, venue, symbol) after all its fills.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LedgerTotals {
    /// Realized PnL, gross of fees (average-cost method).
    pub realized: f64,
    /// Sum of fees (positive = paid).
    pub fees: f64,
    /// Sum of `price × size` over fills.
    pub turnover: f64,
    /// Number of fills.
    pub trades: u64,
    /// Fills that reduced the absolute position (partial closes, closes, flips).
    pub closing_trades: u64,
    /// Closing fills whose realized PnL was strictly positive.
    pub winning_trades: u64,
    /// Positions opened from flat that went back to flat or flipped.
    pub round_trips: u64,
    /// Sum of round-trip durations, ns.
    pub holding_ns: i128,
    /// Maker fill count, notional and fees.
    pub maker_trades: u64,
    /// Maker notional (`price × size`).
    pub maker_notional: f64,
    /// Fees on maker fills.
    pub maker_fees: f64,
    /// Taker fill count.
    pub taker_trades: u64,
    /// Taker notional.
    pub taker_notional: f64,
    /// Fees on taker fills.
    pub taker_fees: f64,
    /// Signed position after the last fill.
    pub position: f64,
    /// Average entry price of the open position (0 when flat).
    pub avg_cost: f64,
    /// Price of the last fill (fallback mark when a key has no marks).
    pub last_price: f64,
}

/// Why a fill could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Position arithmetic left the 64-bit fixed-point range.
    #[error("position overflowed 64-bit fixed point after adding {size}")]
    Overflow {
        /// The size being added.
        size: String,
    },
    /// A fill with zero or negative size.
    #[error("fill size must be positive, got {size}")]
    NonPositiveSize {
        /// The offending size.
        size: String,
    },
}

/// Average-cost ledger for one (strategy, venue, symbol).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    position: Fixed,
    open_since: Option<i64>,
    totals: LedgerTotals,
}

impl Ledger {
    /// A flat ledger with nothing realized.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Applies one fill (fills must arrive in time order) and returns the state after it.
    pub fn apply(&mut self, fill: &LedgerFill) -> Result<Snapshot, LedgerError> {
        if fill.size.mantissa <= 0 {
            return Err(LedgerError::NonPositiveSize {
                size: fill.size.to_string(),
            });
        }
        let signed = if fill.buy {
            fill.size
        } else {
            Fixed::new(-fill.size.mantissa, fill.size.scale)
        };
        let before = self.position;
        let after = before
            .checked_add(signed)
            .ok_or_else(|| LedgerError::Overflow {
                size: fill.size.to_string(),
            })?;
        let qty = fill.size.to_f64();
        let t = &mut self.totals;

        let before_sign = before.mantissa.signum();
        let fill_sign = signed.mantissa.signum();
        if before_sign == 0 {
            t.avg_cost = fill.price;
            self.open_since = Some(fill.ts);
        } else if before_sign == fill_sign {
            let held = before.to_f64().abs();
            t.avg_cost = (held * t.avg_cost + qty * fill.price) / (held + qty);
        } else {
            let held = before.to_f64().abs();
            let closed = held.min(qty);
            let pnl = closed * (fill.price - t.avg_cost) * before_sign as f64;
            t.realized += pnl;
            t.closing_trades += 1;
            if pnl > 0.0 {
                t.winning_trades += 1;
            }
            let after_sign = after.mantissa.signum();
            if after_sign == 0 {
                self.close_round_trip(fill.ts);
                self.totals.avg_cost = 0.0;
            } else if after_sign != before_sign {
                // Flip through zero: the old position's round trip ends here and the
                // remainder opens a new one at the fill price.
                self.close_round_trip(fill.ts);
                self.totals.avg_cost = fill.price;
                self.open_since = Some(fill.ts);
            }
        }

        self.position = after;
        let t = &mut self.totals;
        let notional = fill.price * qty;
        t.fees += fill.fee;
        t.turnover += notional;
        t.trades += 1;
        t.last_price = fill.price;
        t.position = after.to_f64();
        match fill.liquidity {
            Liquidity::Maker => {
                t.maker_trades += 1;
                t.maker_notional += notional;
                t.maker_fees += fill.fee;
            }
            Liquidity::Taker => {
                t.taker_trades += 1;
                t.taker_notional += notional;
                t.taker_fees += fill.fee;
            }
            Liquidity::Unknown => {}
        }
        Ok(Snapshot {
            position: t.position,
            avg_cost: t.avg_cost,
            cum_realized: t.realized,
            cum_fees: t.fees,
        })
    }

    fn close_round_trip(&mut self, ts: i64) {
        if let Some(opened) = self.open_since.take() {
            self.totals.round_trips += 1;
            self.totals.holding_ns += i128::from(ts) - i128::from(opened);
        }
    }

    /// Exact signed position (base units) after the fills applied so far.
    pub fn position(&self) -> Fixed {
        self.position
    }

    /// Totals so far.
    pub fn totals(&self) -> &LedgerTotals {
        &self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(ts: i64, buy: bool, price: f64, size: &str, fee: f64) -> LedgerFill {
        LedgerFill {
            ts,
            buy,
            price,
            size: size.parse().expect("test size"),
            fee,
            liquidity: Liquidity::Taker,
        }
    }

    #[test]
    fn long_round_trip_realizes_price_difference_times_size() {
        let mut l = Ledger::new();
        l.apply(&fill(0, true, 100.0, "2", 0.0)).unwrap();
        let s = l.apply(&fill(10, false, 110.0, "2", 0.0)).unwrap();
        assert_eq!(s.cum_realized, 20.0);
        assert_eq!(s.position, 0.0);
        assert_eq!(s.avg_cost, 0.0);
        assert_eq!(l.totals().round_trips, 1);
        assert_eq!(l.totals().holding_ns, 10);
        assert_eq!(l.totals().winning_trades, 1);
    }

    #[test]
    fn tiny_decimal_sizes_return_exactly_to_flat() {
        // 0.1 + 0.2 - 0.3 is not 0.0 in f64; the exact ledger must still see "flat".
        let mut l = Ledger::new();
        l.apply(&fill(0, true, 100.0, "0.1", 0.0)).unwrap();
        l.apply(&fill(1, true, 100.0, "0.2", 0.0)).unwrap();
        let s = l.apply(&fill(2, false, 100.0, "0.3", 0.0)).unwrap();
        assert_eq!(s.position, 0.0);
        assert_eq!(l.totals().round_trips, 1);
    }

    #[test]
    fn zero_size_fill_is_rejected() {
        let mut l = Ledger::new();
        assert!(matches!(
            l.apply(&fill(0, true, 1.0, "0", 0.0)),
            Err(LedgerError::NonPositiveSize { .. })
        ));
    }
}
