//! The order-gateway protocol: JSON messages strategies send to the exchange host, its
//! replies, and the order updates and fills it publishes on the bus (see
//! `docs/EXCHANGE.md`).
//!
//! Owns the message types and their exact JSON shape (prices and sizes as decimal
//! strings). Never touches sockets (the host owns the DEALER/ROUTER pair and the
//! publisher) and never matches orders ([`super::matching`] does).

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::event::{Fixed, Side, UnixNanos};

pub use super::client_order_id::ClientOrderId;

/// Buy or sell, as strategies say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSide {
    /// Buys: takes asks, rests on the bid side.
    Buy,
    /// Sells: takes bids, rests on the ask side.
    Sell,
}

impl OrderSide {
    /// Stable lowercase name (`buy`, `sell`) used in JSON and Parquet.
    pub fn name(self) -> &'static str {
        match self {
            OrderSide::Buy => "buy",
            OrderSide::Sell => "sell",
        }
    }

    /// The book side a resting order of this side joins.
    pub fn book_side(self) -> Side {
        match self {
            OrderSide::Buy => Side::Bid,
            OrderSide::Sell => Side::Ask,
        }
    }

    /// +1 for buys, -1 for sells.
    pub fn sign(self) -> i64 {
        match self {
            OrderSide::Buy => 1,
            OrderSide::Sell => -1,
        }
    }
}

/// Limit or market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Has a price; may rest (per its time in force).
    Limit,
    /// No price; takes visible liquidity, the rest is canceled.
    Market,
}

impl OrderType {
    /// Stable lowercase name (`limit`, `market`).
    pub fn name(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
        }
    }
}

/// How long an order may live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till canceled: the unfilled rest rests in the book.
    #[default]
    Gtc,
    /// Immediate or cancel: takes what it can now, the rest is canceled.
    Ioc,
    /// Maker only: rejected if it would take liquidity on arrival.
    PostOnly,
}

impl TimeInForce {
    /// Stable lowercase name (`gtc`, `ioc`, `post_only`).
    pub fn name(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::PostOnly => "post_only",
        }
    }
}

/// Whether a fill added liquidity (maker) or removed it (taker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liquidity {
    /// The order was resting when it filled.
    Maker,
    /// The order took resting liquidity on arrival.
    Taker,
}

impl Liquidity {
    /// Stable lowercase name (`maker`, `taker`).
    pub fn name(self) -> &'static str {
        match self {
            Liquidity::Maker => "maker",
            Liquidity::Taker => "taker",
        }
    }
}

/// An order's state after an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Reached the book, nothing filled yet, resting.
    New,
    /// Some filled, the rest resting.
    PartiallyFilled,
    /// Fully filled (final).
    Filled,
    /// Canceled by the strategy, or the unfilled rest of an IOC/market order (final).
    Canceled,
    /// Refused; `reason` says why (final).
    Rejected,
}

impl OrderStatus {
    /// Stable snake_case name used in JSON and Parquet.
    pub fn name(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Rejected => "rejected",
        }
    }

    /// True for states an order never leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected
        )
    }
}

/// A new order as a strategy sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The strategy's own id for the order; unique per strategy for the whole run.
    pub client_order_id: ClientOrderId,
    /// Venue name as on the bus (`binance`).
    pub venue: Arc<str>,
    /// Symbol as on the bus (`BTCUSDT`).
    pub symbol: Arc<str>,
    /// Buy or sell.
    pub side: OrderSide,
    /// Limit or market (`order_type` on the wire: `type` is the message tag).
    pub order_type: OrderType,
    /// Time in force; `gtc` when absent.
    #[serde(default)]
    pub tif: TimeInForce,
    /// Limit price as a decimal string; required for limit orders, absent for market.
    #[serde(
        default,
        with = "opt_fixed_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub price: Option<Fixed>,
    /// Quantity as a decimal string, > 0.
    #[serde(with = "fixed_str")]
    pub size: Fixed,
    /// When the strategy decided, ns on the `ts_recv` timeline (normally the `ts_recv` of
    /// the event it reacted to). Absent: the host's current time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<UnixNanos>,
}

/// Everything a strategy may send on its DEALER socket.
///
/// ```json
/// {"type":"new","client_order_id":"c1","venue":"binance","symbol":"BTCUSDT",
///  "side":"buy","order_type":"limit","tif":"gtc","price":"61000.5","size":"0.01"}
/// ```
///
/// The order's type travels as `order_type` because `type` is the message tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message of a session: who is speaking.
    Hello {
        /// The strategy's id, used in every output and file.
        strategy: String,
        /// True when the strategy takes part in lockstep replay (the host's business).
        #[serde(default)]
        lockstep: bool,
        /// The strategy's secret, when the gateway requires one (`ticktape run` hands each
        /// strategy process its own in the `TICKTAPE_TOKEN` environment variable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Place an order.
    New {
        /// The strategy's id for the order.
        client_order_id: ClientOrderId,
        /// Venue name.
        venue: String,
        /// Symbol.
        symbol: String,
        /// Buy or sell.
        side: OrderSide,
        /// Limit or market.
        order_type: OrderType,
        /// Time in force; `gtc` when absent.
        #[serde(default)]
        tif: TimeInForce,
        /// Limit price (decimal string); required for limit, absent for market.
        #[serde(
            default,
            with = "opt_fixed_str",
            skip_serializing_if = "Option::is_none"
        )]
        price: Option<Fixed>,
        /// Quantity (decimal string), > 0.
        #[serde(with = "fixed_str")]
        size: Fixed,
        /// Decision time, ns on the `ts_recv` timeline; absent = host's current time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_at: Option<UnixNanos>,
    },
    /// Cancel an order by its client id.
    Cancel {
        /// The id given in `new`.
        client_order_id: ClientOrderId,
        /// Decision time, as for `new` (an optional extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_at: Option<UnixNanos>,
    },
    /// Ask for open orders and positions.
    Query {},
    /// Lockstep acknowledgement: the strategy has handled step `step` (the host's business).
    Ack {
        /// The step being acknowledged.
        step: u64,
    },
}

impl Request {
    /// Parses one request; the error text is meant for an `error` reply.
    pub fn from_json(bytes: &[u8]) -> Result<Request, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unparseable request: {e}"))
    }

    /// The order inside a `new` request, or `None` for other requests.
    pub fn as_new_order(&self) -> Option<NewOrder> {
        match self {
            Request::New {
                client_order_id,
                venue,
                symbol,
                side,
                order_type,
                tif,
                price,
                size,
                decided_at,
            } => Some(NewOrder {
                client_order_id: client_order_id.clone(),
                venue: Arc::from(venue.as_str()),
                symbol: Arc::from(symbol.as_str()),
                side: *side,
                order_type: *order_type,
                tif: *tif,
                price: *price,
                size: *size,
                decided_at: *decided_at,
            }),
            _ => None,
        }
    }
}

/// An open order as `query` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenOrder {
    /// Exchange order id.
    pub order_id: u64,
    /// Strategy's id for it.
    pub client_order_id: ClientOrderId,
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Resting price.
    #[serde(with = "fixed_str")]
    pub price: Fixed,
    /// Original size.
    #[serde(with = "fixed_str")]
    pub size: Fixed,
    /// Filled so far.
    #[serde(with = "fixed_str")]
    pub filled: Fixed,
    /// Estimated size ahead in the queue (the queue model's view).
    #[serde(with = "fixed_str")]
    pub queue_ahead: Fixed,
}

/// A strategy's position in one symbol as `query` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionView {
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Net position, positive = long, exact.
    #[serde(with = "fixed_str")]
    pub position: Fixed,
    /// Average entry price of the open position (0 when flat), quote currency.
    pub avg_entry_price: f64,
    /// Realized PnL before fees, quote currency.
    pub realized_pnl: f64,
    /// Fees paid (negative = net rebates), quote currency.
    pub fees_paid: f64,
}

/// Everything the host sends back on the strategy's DEALER socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The request passed shape checks and is on its way to the matching engine
    /// (for a cancel, `order_id` is the order it targets).
    Accepted {
        /// Echo of the client id.
        client_order_id: ClientOrderId,
        /// Exchange order id.
        order_id: u64,
    },
    /// The request was refused at once.
    Rejected {
        /// Echo of the client id.
        client_order_id: ClientOrderId,
        /// Why, in words a strategy author can act on.
        reason: String,
    },
    /// Answer to `query`.
    QueryResult {
        /// Orders resting now, by order id.
        open_orders: Vec<OpenOrder>,
        /// Positions by venue and symbol, flat ones included once traded.
        positions: Vec<PositionView>,
    },
    /// Answer to `hello`, sent by the host's gateway.
    Welcome {
        /// Echo of the strategy id.
        strategy: String,
        /// Whether the run waits for this strategy's acks.
        lockstep: bool,
    },
    /// The request could not be parsed or is not valid here.
    Error {
        /// What was wrong.
        reason: String,
    },
}

impl Reply {
    /// The reply as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"reason\":\"cannot encode reply: {e}\"}}")
        })
    }
}

/// One change of an order's state, published on `order.<venue>.<symbol>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderUpdate {
    /// Exchange time of the change, ns on the `ts_recv` timeline.
    pub ts: UnixNanos,
    /// Owning strategy.
    #[serde(serialize_with = "arc_str")]
    pub strategy: Arc<str>,
    /// Venue.
    #[serde(serialize_with = "arc_str")]
    pub venue: Arc<str>,
    /// Symbol.
    #[serde(serialize_with = "arc_str")]
    pub symbol: Arc<str>,
    /// Exchange order id (deterministic counter from 1).
    pub order_id: u64,
    /// Strategy's id.
    pub client_order_id: ClientOrderId,
    /// Buy or sell.
    pub side: OrderSide,
    /// Limit or market.
    pub order_type: OrderType,
    /// Time in force.
    pub tif: TimeInForce,
    /// Limit price; absent for market orders.
    #[serde(
        default,
        with = "opt_fixed_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub price: Option<Fixed>,
    /// Original size.
    #[serde(with = "fixed_str")]
    pub size: Fixed,
    /// Cumulative filled size.
    #[serde(with = "fixed_str")]
    pub filled: Fixed,
    /// State after the change.
    pub status: OrderStatus,
    /// Why, for rejections, cancels of unfilled remainders and refused cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Why an order ended as it did, or a request was refused ([`OrderUpdate::reason`]): a
/// text on the wire (JSON string) and in `orders.parquet`. The simulated exchange gives
/// its frequent reasons without allocating: a fixed text, or the facts of the case, put
/// into words only when shown ([`std::fmt::Display`], `to_string`).
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Any text (what a reason read back from the wire always is).
    Text(Cow<'static, str>),
    /// A post-only order whose limit price would have crossed the best opposite price.
    PostOnlyCross {
        /// The order's side.
        side: OrderSide,
        /// The best opposite price when the order arrived.
        best: Fixed,
        /// The order's limit price.
        price: Fixed,
    },
    /// A cancel of an order already final (its status: filled, canceled or rejected).
    CancelRefused(OrderStatus),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Text(text) => f.write_str(text),
            Reason::PostOnlyCross { side, best, price } => {
                let opposite = match side {
                    OrderSide::Buy => "ask",
                    OrderSide::Sell => "bid",
                };
                write!(
                    f,
                    "post-only order would cross: best {opposite} {best} vs {} price {price}",
                    side.name()
                )
            }
            Reason::CancelRefused(status) => {
                write!(f, "cancel refused: order already {}", status.name())
            }
        }
    }
}

impl From<&'static str> for Reason {
    fn from(text: &'static str) -> Reason {
        Reason::Text(Cow::Borrowed(text))
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        Reason::Text(Cow::Owned(text))
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written straight into the output (serde_json escapes as it goes): no String.
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reason, D::Error> {
        String::deserialize(d).map(Reason::from)
    }
}

/// One execution, published on `fill.<venue>.<symbol>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    /// Exchange time of the fill, ns on the `ts_recv` timeline.
    pub ts: UnixNanos,
    /// Owning strategy.
    #[serde(serialize_with = "arc_str")]
    pub strategy: Arc<str>,
    /// Venue.
    #[serde(serialize_with = "arc_str")]
    pub venue: Arc<str>,
    /// Symbol.
    #[serde(serialize_with = "arc_str")]
    pub symbol: Arc<str>,
    /// Exchange order id.
    pub order_id: u64,
    /// Strategy's id.
    pub client_order_id: ClientOrderId,
    /// Fill id (deterministic counter from 1 across the exchange).
    pub fill_id: u64,
    /// Buy or sell.
    pub side: OrderSide,
    /// Execution price, exact.
    #[serde(with = "fixed_str")]
    pub price: Fixed,
    /// Executed size, exact.
    #[serde(with = "fixed_str")]
    pub size: Fixed,
    /// Fee in quote currency, positive = paid, negative = rebate.
    pub fee: f64,
    /// Maker or taker.
    pub liquidity: Liquidity,
}

/// What the exchange has to say, drained by the host and published on the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExchangeOutput {
    /// An order changed state.
    OrderUpdate(OrderUpdate),
    /// An order (partly) executed.
    Fill(Fill),
}

impl ExchangeOutput {
    /// Bus topic: `order.<venue>.<symbol>` or `fill.<venue>.<symbol>`.
    pub fn topic(&self) -> String {
        match self {
            ExchangeOutput::OrderUpdate(u) => format!("order.{}.{}", u.venue, u.symbol),
            ExchangeOutput::Fill(f) => format!("fill.{}.{}", f.venue, f.symbol),
        }
    }

    /// The JSON payload, with `"type"` `order_update` or `fill` and exact decimal strings.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail; a NaN fee becomes null.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The owning strategy.
    pub fn strategy(&self) -> &str {
        match self {
            ExchangeOutput::OrderUpdate(u) => &u.strategy,
            ExchangeOutput::Fill(f) => &f.strategy,
        }
    }

    /// Exchange time of the output.
    pub fn ts(&self) -> UnixNanos {
        match self {
            ExchangeOutput::OrderUpdate(u) => u.ts,
            ExchangeOutput::Fill(f) => f.ts,
        }
    }
}

/// A periodic mark of one strategy's position in one symbol.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// When, ns on the `ts_recv` timeline.
    pub ts: UnixNanos,
    /// Strategy.
    pub strategy: Arc<str>,
    /// Venue.
    pub venue: Arc<str>,
    /// Symbol.
    pub symbol: Arc<str>,
    /// Mid price of the book at `ts` (analysis edge, so `f64`).
    pub mid: f64,
    /// Net position, exact.
    pub position: Fixed,
}

fn arc_str<S: Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

/// `Fixed` as a decimal string.
pub(crate) mod fixed_str {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::event::Fixed;

    pub fn serialize<S: Serializer>(value: &Fixed, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fixed, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// `Option<Fixed>` as an optional decimal string.
pub(crate) mod opt_fixed_str {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::event::Fixed;

    pub fn serialize<S: Serializer>(value: &Option<Fixed>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fixed>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(D::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_text_on_the_wire_and_read_back_as_text() {
        let (best, price) = (
            Fixed {
                mantissa: 1_005,
                scale: 1,
            },
            Fixed {
                mantissa: 101,
                scale: 0,
            },
        );
        let crossing = Reason::PostOnlyCross {
            side: OrderSide::Buy,
            best,
            price,
        };
        let text = "post-only order would cross: best ask 100.5 vs buy price 101";
        assert_eq!(crossing.to_string(), text);
        let json = serde_json::to_string(&crossing).unwrap();
        assert_eq!(json, format!("{text:?}"));
        let back: Reason = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Reason::from(text.to_string()));
        assert_eq!(
            Reason::CancelRefused(OrderStatus::Filled).to_string(),
            "cancel refused: order already filled"
        );
        // Quotes and controls are escaped as any JSON string is.
        let odd = Reason::from("a \"quoted\" reason\n");
        let json = serde_json::to_string(&odd).unwrap();
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), odd);
    }

    #[test]
    fn new_request_parses_with_exact_decimals() {
        let r = Request::from_json(
            br#"{"type":"new","client_order_id":"c1","venue":"binance","symbol":"BTCUSDT",
                "side":"buy","order_type":"limit","tif":"post_only","price":"61000.50","size":"0.010"}"#,
        )
        .unwrap();
        let order = r.as_new_order().unwrap();
        assert_eq!(order.price.unwrap().to_string(), "61000.50");
        assert_eq!(order.size.to_string(), "0.010");
        assert_eq!(order.tif, TimeInForce::PostOnly);
        assert_eq!(order.decided_at, None);
    }

    #[test]
    fn requests_with_unknown_fields_or_bad_numbers_are_refused() {
        let extra = br#"{"type":"cancel","client_order_id":"c1","speed":"fast"}"#;
        let err = Request::from_json(extra).unwrap_err();
        assert!(err.contains("speed"), "{err}");
        assert!(Request::from_json(br#"{"type":"query","x":1}"#).is_err());
        let bad_size = br#"{"type":"new","client_order_id":"c","venue":"v","symbol":"s",
            "side":"buy","order_type":"market","size":"1e3"}"#;
        assert!(Request::from_json(bad_size).is_err());
        assert!(Request::from_json(b"not json").is_err());
        assert_eq!(
            Request::from_json(br#"{"type":"query"}"#).unwrap(),
            Request::Query {}
        );
        assert_eq!(
            Request::from_json(br#"{"type":"ack","step":3}"#).unwrap(),
            Request::Ack { step: 3 }
        );
        assert_eq!(
            Request::from_json(br#"{"type":"hello","strategy":"mm","lockstep":true}"#).unwrap(),
            Request::Hello {
                strategy: "mm".into(),
                lockstep: true,
                token: None,
            }
        );
    }

    #[test]
    fn outputs_have_topics_and_exact_json() {
        let fill = ExchangeOutput::Fill(Fill {
            ts: 5,
            strategy: "mm".into(),
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            order_id: 1,
            client_order_id: "c1".into(),
            fill_id: 1,
            side: OrderSide::Sell,
            price: "61000.10".parse().unwrap(),
            size: "0.0100".parse().unwrap(),
            fee: 0.25,
            liquidity: Liquidity::Maker,
        });
        assert_eq!(fill.topic(), "fill.binance.BTCUSDT");
        let json: serde_json::Value = serde_json::from_str(&fill.to_json()).unwrap();
        assert_eq!(json["type"], "fill");
        assert_eq!(json["price"], "61000.10");
        assert_eq!(json["size"], "0.0100");
        assert_eq!(json["liquidity"], "maker");
        assert_eq!(json["side"], "sell");
    }

    #[test]
    fn replies_are_tagged_json() {
        let r = Reply::Rejected {
            client_order_id: "c9".into(),
            reason: "size must be > 0".into(),
        };
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["type"], "rejected");
        assert_eq!(json["reason"], "size must be > 0");
    }
}
