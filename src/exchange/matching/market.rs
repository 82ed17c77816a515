//! One instrument inside the simulated exchange: the book rebuilt from deltas, the
//! liquidity our aggressive orders consumed from each level (hidden until the level's next
//! delta), the traded size at levels holding own orders (so a decrease trades explain is
//! not taken for cancels), and own resting orders by price with their queue positions.
//! Decides what a delta (crossing) or a trade (queue advance) fills; applying the fills to
//! orders and positions is the engine's business.

// Fx: keys here are small and never attacker-chosen; SipHash showed in replay profiles.
use rustc_hash::FxHashMap as HashMap;

use crate::book::L2Book;
use crate::event::{BookDelta, Fixed, Flags, Side, Trade};
use crate::exchange::models::{QueueModel, narrow, wide};
use crate::exchange::protocol::{Liquidity, OrderSide};

use super::own_levels::OwnLevels;
use super::{Exec, Order};

#[derive(Debug, Default)]
pub(super) struct Market {
    /// Boxed so the in-process engine can lend it to strategies by swapping a pointer.
    pub(super) book: Box<L2Book>,
    pub(super) in_snapshot: bool,
    /// Size our aggressive orders took from a level since its last delta.
    pub(super) consumed: HashMap<(Side, Fixed), Fixed>,
    /// Traded size at a level holding own orders since the level's last delta, so a
    /// decrease that trades explain is not taken for cancels.
    pub(super) traded: HashMap<(Side, Fixed), Fixed>,
    /// Own resting order ids per price, in arrival order.
    pub(super) own_bids: OwnLevels,
    pub(super) own_asks: OwnLevels,
    /// Reused buffers for the prices and order ids a trade or a crossing book reaches,
    /// so neither allocates.
    pub(super) scratch_prices: Vec<Fixed>,
    pub(super) scratch_ids: Vec<u64>,
    /// Reused buffer for the levels an arriving or crossed order can take.
    pub(super) scratch_levels: Vec<(Fixed, Fixed)>,
}

impl Market {
    pub(super) fn own(&mut self, side: Side) -> &mut OwnLevels {
        match side {
            Side::Ask => &mut self.own_asks,
            _ => &mut self.own_bids,
        }
    }

    pub(super) fn available(&self, side: Side, price: Fixed, size: Fixed) -> Fixed {
        if self.consumed.is_empty() {
            return pos(size);
        }
        let used = self
            .consumed
            .get(&(side, price))
            .copied()
            .unwrap_or(Fixed::ZERO);
        pos(sub(size, used))
    }

    /// Opposite-side levels an order of `side` may take, best first, as
    /// (price, available size), up to `limit` if given.
    fn takeable(
        &self,
        side: OrderSide,
        limit: Option<Fixed>,
    ) -> impl Iterator<Item = (Fixed, Fixed)> + '_ {
        let opp = side.book_side().opposite();
        self.book
            .levels(opp)
            .take_while(move |(p, _)| match (limit, side) {
                (None, _) => true,
                (Some(l), OrderSide::Buy) => *p <= l,
                (Some(l), OrderSide::Sell) => *p >= l,
            })
            .map(move |(p, s)| (p, self.available(opp, p, s)))
            .filter(|(_, a)| *a > Fixed::ZERO)
    }

    /// [`Market::takeable`] into `out` (cleared first), stopping once the levels hold
    /// `want`: what an order of size `want` can take, without reading the rest of the
    /// side.
    pub(super) fn takeable_into(
        &self,
        side: OrderSide,
        limit: Option<Fixed>,
        want: Fixed,
        out: &mut Vec<(Fixed, Fixed)>,
    ) {
        out.clear();
        let mut left = want;
        for (p, a) in self.takeable(side, limit) {
            if left <= Fixed::ZERO {
                break;
            }
            out.push((p, a));
            left = sub(left, a.min(left));
        }
    }

    pub(super) fn consume(&mut self, side: Side, price: Fixed, size: Fixed) {
        let used = self.consumed.entry((side, price)).or_insert(Fixed::ZERO);
        *used = add(*used, size);
    }

    pub(super) fn remove_resting(&mut self, side: Side, price: Fixed, id: u64) {
        self.own(side).remove(price, id);
    }
}

/// Applies a book delta and returns the fills of own orders the new book crosses.
pub(super) fn on_delta(
    market: &mut Market,
    orders: &mut HashMap<u64, Order>,
    queue: &dyn QueueModel,
    delta: &BookDelta,
    execs: &mut Vec<Exec>,
) {
    let snapshot = delta.flags.contains(Flags::SNAPSHOT);
    let last = delta.flags.contains(Flags::LAST);
    if snapshot && !market.in_snapshot {
        market.consumed.clear();
        market.traded.clear();
    }
    market.in_snapshot = snapshot && !last;
    let key = (delta.side, delta.price);
    let prev = market.book.apply_with_previous(delta);
    // Runs on every delta: both maps are nearly always empty, and hashing a price
    // (normalized first) is not free.
    if !market.consumed.is_empty() {
        market.consumed.remove(&key);
    }
    let traded = if market.traded.is_empty() {
        Fixed::ZERO
    } else {
        market.traded.remove(&key).unwrap_or(Fixed::ZERO)
    };
    let new = pos(delta.size);
    // Runs on every delta: read the own orders at the level in place, no copy.
    let own = match delta.side {
        Side::Ask => &market.own_asks,
        _ => &market.own_bids,
    };
    for id in own.at(delta.price) {
        let Some(order) = orders.get_mut(id) else {
            continue;
        };
        if !snapshot && prev > new {
            let decrease = sub(prev, new);
            let explained = traded.min(decrease);
            let canceled = sub(decrease, explained);
            if canceled > Fixed::ZERO {
                let level_before = sub(prev, explained);
                order.ahead = pos(queue.after_cancel(order.ahead, canceled, level_before));
            }
        }
        order.ahead = order.ahead.min(new);
    }
    if market.in_snapshot {
        return;
    }
    cross(market, orders, OrderSide::Buy, execs);
    cross(market, orders, OrderSide::Sell, execs);
}

/// True when the best own order of `side` touches the opposite side of the book (a
/// buy at or above the best ask, a sell at or below the best bid): only then can
/// [`cross`] fill anything. Asked after every delta, so it is kept small and inline.
#[inline]
fn touches(market: &Market, side: OrderSide) -> bool {
    match side {
        OrderSide::Buy => market
            .own_bids
            .highest()
            .zip(market.book.best_ask_price())
            .is_some_and(|(own, ask)| ask <= own),
        OrderSide::Sell => market
            .own_asks
            .lowest()
            .zip(market.book.best_bid_price())
            .is_some_and(|(own, bid)| bid >= own),
    }
}

/// Fills own resting orders of `side` that the book now crosses, at their own price as
/// makers, up to the crossing visible size. Runs after every delta: one inline test
/// ([`touches`]) before the rest, which is out of line.
#[inline]
fn cross(
    market: &mut Market,
    orders: &HashMap<u64, Order>,
    side: OrderSide,
    execs: &mut Vec<Exec>,
) {
    if touches(market, side) {
        fill_crossed(market, orders, side, execs);
    }
}

/// [`cross`] once the best own order touches the book.
#[inline(never)]
fn fill_crossed(
    market: &mut Market,
    orders: &HashMap<u64, Order>,
    side: OrderSide,
    execs: &mut Vec<Exec>,
) {
    let own_side = side.book_side();
    let opp = own_side.opposite();
    // The market's reused buffers (taken, so the market can be borrowed meanwhile).
    let mut prices = std::mem::take(&mut market.scratch_prices);
    let mut levels = std::mem::take(&mut market.scratch_levels);
    let mut ids = std::mem::take(&mut market.scratch_ids);
    prices.clear();
    match side {
        OrderSide::Buy => prices.extend(market.own_bids.prices().rev()),
        OrderSide::Sell => prices.extend(market.own_asks.prices()),
    }
    for &price in &prices {
        levels.clear();
        levels.extend(market.takeable(side, Some(price)));
        if levels.is_empty() {
            break;
        }
        ids.clear();
        ids.extend_from_slice(market.own(own_side).at(price));
        for &id in &ids {
            let Some(order) = orders.get(&id) else {
                continue;
            };
            let mut want = order.remaining();
            for (level, avail) in levels.iter_mut() {
                if want <= Fixed::ZERO {
                    break;
                }
                if *avail <= Fixed::ZERO {
                    continue;
                }
                let q = want.min(*avail);
                *avail = sub(*avail, q);
                want = sub(want, q);
                market.consume(opp, *level, q);
                execs.push(Exec {
                    order_id: id,
                    price,
                    size: q,
                    liquidity: Liquidity::Maker,
                });
            }
            if want <= Fixed::ZERO {
                market.remove_resting(own_side, price, id);
            }
        }
    }
    market.scratch_prices = prices;
    market.scratch_levels = levels;
    market.scratch_ids = ids;
}

/// Advances queues on a trade and returns the fills it causes.
pub(super) fn on_trade(
    market: &mut Market,
    orders: &mut HashMap<u64, Order>,
    trade: &Trade,
    execs: &mut Vec<Exec>,
) {
    let aggressor = match trade.aggressor {
        Side::None => match market.book.mid() {
            Some(mid) if trade.price.to_f64() < mid => Side::Ask,
            _ => Side::Bid,
        },
        s => s,
    };
    // A buying aggressor lifts asks, so it reaches our resting sells, and vice versa.
    let (own_side, side) = match aggressor {
        Side::Bid => (Side::Ask, OrderSide::Sell),
        _ => (Side::Bid, OrderSide::Buy),
    };
    let mut reached = std::mem::take(&mut market.scratch_prices);
    reached.clear();
    match side {
        OrderSide::Buy => reached.extend(market.own_bids.prices_from(trade.price).rev()),
        OrderSide::Sell => reached.extend(market.own_asks.prices_through(trade.price)),
    }
    if reached.contains(&trade.price) {
        let t = market
            .traded
            .entry((own_side, trade.price))
            .or_insert(Fixed::ZERO);
        *t = add(*t, trade.size);
    }
    let mut taken = Fixed::ZERO;
    let mut ids = std::mem::take(&mut market.scratch_ids);
    for &price in &reached {
        let through = price != trade.price;
        ids.clear();
        ids.extend_from_slice(market.own(own_side).at(price));
        for &id in &ids {
            let Some(order) = orders.get_mut(&id) else {
                continue;
            };
            let ahead = if through { Fixed::ZERO } else { order.ahead };
            let past = pos(sub(sub(trade.size, ahead), taken));
            let q = past.min(order.remaining());
            if !through {
                order.ahead = pos(sub(order.ahead, trade.size));
            }
            if q <= Fixed::ZERO {
                continue;
            }
            taken = add(taken, q);
            let done = q >= order.remaining();
            execs.push(Exec {
                order_id: id,
                price,
                size: q,
                liquidity: Liquidity::Maker,
            });
            if done {
                market.remove_resting(own_side, price, id);
            }
        }
    }
    market.scratch_ids = ids;
    market.scratch_prices = reached;
}

pub(super) fn add(a: Fixed, b: Fixed) -> Fixed {
    a.checked_add(b).unwrap_or_else(|| {
        let s = a.scale.max(b.scale);
        narrow(wide(a, s) + wide(b, s), s)
    })
}

pub(super) fn sub(a: Fixed, b: Fixed) -> Fixed {
    a.checked_sub(b).unwrap_or_else(|| {
        let s = a.scale.max(b.scale);
        narrow(wide(a, s) - wide(b, s), s)
    })
}

/// `x` floored at zero (a value's sign is its mantissa's, whatever the scale).
pub(super) fn pos(x: Fixed) -> Fixed {
    if x.mantissa < 0 { Fixed::ZERO } else { x }
}
