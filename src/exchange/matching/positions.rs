//! Average-cost positions of one strategy in one instrument: adding to a position moves
//! its average entry, reducing it realizes `(price - avg) × closed` in the position's
//! direction; fees accumulate beside. `f64` here is the analysis edge (PnL in quote
//! currency); the position itself stays exact.

use crate::event::Fixed;
use crate::exchange::protocol::{Fill, OrderSide};

use super::add;

#[derive(Debug, Default, Clone)]
pub(super) struct Position {
    pub(super) position: Fixed,
    pub(super) avg_entry: f64,
    pub(super) realized: f64,
    pub(super) fees: f64,
    pub(super) open_orders: usize,
}

/// Average-cost accounting: adding to a position moves the average, reducing it
/// realizes `(price - avg) × closed` in the position's direction.
pub(super) fn book_fill(p: &mut Position, fill: &Fill) {
    let qty = fill.size.to_f64();
    let price = fill.price.to_f64();
    let signed = match fill.side {
        OrderSide::Buy => fill.size,
        OrderSide::Sell => Fixed::new(-fill.size.mantissa, fill.size.scale),
    };
    let held = p.position.to_f64();
    let dir = fill.side.sign() as f64;
    if held == 0.0 || held.signum() == dir {
        let total = held.abs() + qty;
        if total > 0.0 {
            p.avg_entry = (p.avg_entry * held.abs() + price * qty) / total;
        }
    } else {
        let closed = qty.min(held.abs());
        p.realized += closed * (price - p.avg_entry) * held.signum();
        if qty > held.abs() {
            p.avg_entry = price;
        }
    }
    p.position = add(p.position, signed);
    if p.position.is_zero() {
        p.avg_entry = 0.0;
    }
    p.fees += fill.fee;
}
