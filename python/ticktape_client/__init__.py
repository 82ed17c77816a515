"""A small helper for writing ticktape strategies in Python with pyzmq alone.

It speaks the bus protocol (docs/PROTOCOL.md) and the order gateway (docs/EXCHANGE.md):
keeps L2 books with exact decimals, uses event time as the clock, answers lockstep
step markers after everything before them was handled, and sends orders stamped with
the event time they answer. The same strategy runs against `ticktape simulate` plus
`ticktape paper` (live) and against `ticktape replay --exchange` (backtest).

Install (from the repository root, into the Python that runs the strategy; pulls pyzmq):

    pip install ./python

then `from ticktape_client import Client` (examples/python/momentum.py is a complete
strategy). The gateway secret is read from the environment variable TICKTAPE_TOKEN,
which `ticktape run` sets for each strategy process.

Transports: `tcp://` and `ipc://` endpoints use pyzmq (the live interface, any machine);
`shm:fd=N` (what `ticktape run` passes with `transport = "shm"`) reads the shared-memory
segment the process inherited on descriptor N, and `shm:/proc/PID/fd/N` one that
`ticktape replay --transport shm` printed (docs/SHM.md; Linux x86-64). Strategy code is
the same either way: `Client(name, "shm:fd=3", "shm:fd=3", lockstep=True)`.
"""
import json
import os
import struct
from decimal import Decimal

try:
    import zmq
except ImportError:  # only the shared-memory transport is usable without pyzmq
    zmq = None

from ._shm import ShmLink

__version__ = "0.1.0"  # the package version (python/pyproject.toml reads it)

SNAPSHOT, LAST = 1, 2

_KINDS = {1: "book", 2: "trade", 3: "gap", 4: "hb", 5: "eos"}
_REASONS = {1: "publisher_seq", 2: "venue_seq", 3: "silence", 4: "resync"}
_HEADER = struct.Struct("<4BqqQQQ")  # magic, kind, presence bits, side/reason, ts.., seqs
PROTOCOL = 1  # the major version this helper speaks (docs/PROTOCOL.md, "Compatibility")
_MAGIC = 0xB6 + PROTOCOL  # a binary payload's first byte is 0xB6 + its major version


def _decimal(mantissa, scale):
    """Exact decimal string of mantissa / 10**scale, trailing zeros kept."""
    digits = str(abs(mantissa)).rjust(scale + 1, "0")
    text = f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits
    return "-" + text if mantissa < 0 else text


def decode_payload(payload: bytes) -> dict:
    """Decodes a bus payload of either encoding into the dict the JSON payload gives.

    A payload starting with 0xB7 is the binary layout of docs/PROTOCOL.md ("Binary
    encoding"); anything else is JSON. Same keys, decimal strings and omitted optional
    keys (venue_seq, prev_venue_seq, missing) either way. Following "Compatibility",
    fields of a later minor version are ignored and another major version is refused.
    """
    first = payload[0] if payload else 0
    if 0xB8 <= first <= 0xBF:
        raise ValueError(f"binary payload of protocol version {first - 0xB6}, "
                         f"this helper speaks version {PROTOCOL}")
    if first != _MAGIC:
        msg = json.loads(payload)
        if msg.get("protocol", PROTOCOL) != PROTOCOL:
            raise ValueError(f"payload of protocol version {msg['protocol']}, "
                             f"this helper speaks version {PROTOCOL}")
        return msg
    _, kind, bits, detail, ts_event, ts_recv, pub_seq, venue_seq, prev_seq = (
        _HEADER.unpack_from(payload))
    at = _HEADER.size

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, payload, at)
        at += struct.calcsize(fmt)
        return values

    def text():
        nonlocal at
        (n,) = take("<H")
        at += n
        return payload[at - n:at].decode()

    kind = _KINDS[kind]
    if kind in ("book", "trade"):
        price, size, price_scale, size_scale = take("<qqBB")
        body = {"side": chr(detail), "price": _decimal(price, price_scale),
                "size": _decimal(size, size_scale)}
        if kind == "book":
            body["flags"] = take("<B")[0]
        else:
            body["trade_id"] = text()
    elif kind == "gap":
        (missing,) = take("<Q")
        body = {"reason": _REASONS[detail]}
        if bits & 4:
            body["missing"] = missing
        body["publisher"] = text()
    elif kind == "hb":
        interval_ms, protocol = take("<QI")
        if protocol != PROTOCOL:
            raise ValueError(f"heartbeat of protocol version {protocol}, "
                             f"this helper speaks version {PROTOCOL}")
        body = {"publisher": text(), "interval_ms": interval_ms, "replay": bool(bits & 8),
                "protocol": protocol}
    else:
        (events,) = take("<Q")
        body = {"publisher": text(), "replay": bool(bits & 8), "events": events}
    msg = {"kind": kind, "venue": text(), "symbol": text(), "ts_event": ts_event,
           "ts_recv": ts_recv}
    # Bytes after the symbol are a later minor version's fields: ignored.
    if bits & 1:
        msg["venue_seq"] = venue_seq
    if bits & 2:
        msg["prev_venue_seq"] = prev_seq
    msg["pub_seq"] = pub_seq
    msg.update(body)
    return msg


class Book:
    """Price levels of one instrument: Decimal price -> Decimal size, per side."""

    def __init__(self):
        self.bids, self.asks = {}, {}
        self._in_snapshot = False

    def apply(self, ev):
        flags = ev.get("flags", 0)
        if flags & SNAPSHOT and not self._in_snapshot:
            self.bids.clear()
            self.asks.clear()
        self._in_snapshot = bool(flags & SNAPSHOT) and not flags & LAST
        side = self.bids if ev["side"] == "B" else self.asks
        price, size = Decimal(ev["price"]), Decimal(ev["size"])
        if size == 0:
            side.pop(price, None)
        else:
            side[price] = size
        return bool(flags & LAST)

    def best_bid(self):
        return max(self.bids) if self.bids else None

    def best_ask(self):
        return min(self.asks) if self.asks else None


class Client:
    """Bus subscriber + gateway dealer. Iterate over `events()`; call order methods."""

    def __init__(self, name, bus, gateway, lockstep=False, topics=("",)):
        self.name, self.lockstep = name, lockstep
        buses = list(bus) if isinstance(bus, (list, tuple)) else [bus]
        self._topics = tuple(t.encode() for t in topics)
        self._shm = None
        if any(ep.startswith("shm:") for ep in buses + [gateway]):
            if buses != [gateway]:
                raise ValueError("over shared memory the bus and the gateway are one segment: "
                                 f"give the same shm:fd=N to both (got {buses} and {gateway})")
            self._shm = ShmLink(gateway)
        else:
            if zmq is None:
                raise ImportError("pyzmq is needed for tcp:// and ipc:// endpoints: "
                                  "pip install ./python")
            self.ctx = zmq.Context.instance()
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.RCVHWM, 0)
            for t in topics:
                self.sub.setsockopt(zmq.SUBSCRIBE, t.encode())
            for ep in buses:
                self.sub.connect(ep)
            self.dealer = self.ctx.socket(zmq.DEALER)
            self.dealer.connect(gateway)
        hello = {"type": "hello", "strategy": name, "lockstep": lockstep}
        # The gateway's secret for this strategy, when it requires one (`ticktape run`
        # sets it in the strategy process's environment).
        token = os.environ.get("TICKTAPE_TOKEN")
        if token:
            hello["token"] = token
        self._send(hello)
        self.books, self.position, self.now, self.fills = {}, {}, 0, []
        # The scenario's `params = {...}` table of this strategy (`ticktape run` passes it
        # as JSON in TICKTAPE_PARAMS); empty when run by hand.
        self.params = json.loads(os.environ.get("TICKTAPE_PARAMS") or "{}")
        self.replies = []
        self._next_id = 0

    def _send(self, obj):
        """Sends one gateway request (a dict) on whichever transport this client uses."""
        if self._shm is not None:
            self._shm.send(json.dumps(obj, separators=(",", ":")).encode())
        else:
            self.dealer.send_json(obj)

    def _message(self, topic, payload, stop_on_live_eos):
        """One bus message: returns (message to yield or None, end of stream reached)."""
        msg = decode_payload(payload)  # JSON or binary; step/fill/order are JSON
        if topic == b"step":
            if self.lockstep:
                self._send({"type": "ack", "step": msg["step"]})
            return None, False
        if topic.startswith(b"fill.") or topic.startswith(b"order."):
            if msg.get("strategy") not in (None, self.name):
                return None, False
            kind = "fill" if topic.startswith(b"fill.") else "order"
            if kind == "fill":
                key = (msg["venue"], msg["symbol"])
                qty = Decimal(msg["size"]) * (1 if msg["side"] == "buy" else -1)
                self.position[key] = self.position.get(key, Decimal(0)) + qty
                self.fills.append(msg)
            msg["kind"] = kind
            return msg, False
        kind = msg.get("kind")
        if kind == "eos":
            return None, bool(msg.get("replay") or stop_on_live_eos)
        if kind in ("hb",):
            return None, False
        self.now = max(self.now, msg["ts_recv"])
        key = (msg["venue"], msg["symbol"])
        if kind == "book":
            msg["consistent"] = self.books.setdefault(key, Book()).apply(msg)
        elif kind == "gap":
            self.books.pop(key, None)
        return msg, False

    def events(self, stop_on_live_eos=False):
        """Yields market events (dicts) in order; fills/order updates update state and
        are yielded too (kind 'fill'/'order'). Ends at a replay's end-of-stream (and at a
        live publisher's with `stop_on_live_eos`)."""
        if self._shm is not None:
            yield from self._shm_events(stop_on_live_eos)
            return
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.dealer, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(1000))
            if self.dealer in ready:
                while self.dealer.poll(0):
                    self.replies.append(json.loads(self.dealer.recv()))
            if self.sub not in ready:
                continue
            while self.sub.poll(0):
                topic, payload = self.sub.recv_multipart()
                msg, ended = self._message(topic, payload, stop_on_live_eos)
                if ended:
                    return
                if msg is not None:
                    yield msg

    def _shm_events(self, stop_on_live_eos):
        """`events()` over shared memory: the down ring holds bus messages and gateway
        replies in one order."""
        link = self._shm
        try:
            yield from self._shm_records(link, stop_on_live_eos)
        finally:
            link.close()

    def _shm_records(self, link, stop_on_live_eos):
        while True:
            records = link.records()
            if not records:
                link.wait()
                continue
            for kind, topic, payload in records:
                if kind == ShmLink.GATEWAY:
                    self.replies.append(json.loads(payload))
                    continue
                if kind == ShmLink.CLOSED:
                    return
                if kind != ShmLink.BUS or not topic.startswith(self._topics):
                    continue
                msg, ended = self._message(topic, payload, stop_on_live_eos)
                if ended:
                    return
                if msg is not None:
                    yield msg

    def _order(self, **fields):
        self._next_id += 1
        cid = f"{self.name}-{self._next_id}"
        self._send({"type": "new", "client_order_id": cid, "decided_at": self.now, **fields})
        return cid

    def limit(self, venue, symbol, side, price, size, tif="gtc"):
        return self._order(venue=venue, symbol=symbol, side=side, order_type="limit",
                           tif=tif, price=str(price), size=str(size))

    def market(self, venue, symbol, side, size):
        return self._order(venue=venue, symbol=symbol, side=side, order_type="market",
                           tif="ioc", size=str(size))

    def cancel(self, client_order_id):
        self._send({"type": "cancel", "client_order_id": client_order_id,
                    "decided_at": self.now})
