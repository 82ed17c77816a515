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

Speed: a binary-encoded book or trade event is yielded as an `Event`, a `dict` subclass
that decodes its fields only when the strategy reads them (`kind`, `venue`, `symbol`,
`ts_event`, `ts_recv`, `price`, `size` come from the fixed fields unpacked on arrival;
any other key, iteration, `len`, `==`, `json.dumps`, `dict(ev)` etc. fills it with
exactly the keys and decimal strings `decode_payload` gives). Books keep integer
mantissas and give `Decimal`s on access.
"""
import json
import os
import struct
from collections.abc import MutableMapping
from decimal import Decimal

# pyzmq, imported by the first client on a tcp:// or ipc:// endpoint (the shared-memory
# transport needs none, and a strategy over it starts without the import's time).
zmq = None

from ._shm import _RECORD, _WRAP, ShmLink

__version__ = "0.1.0"  # the package version (python/pyproject.toml reads it)

SNAPSHOT, LAST = 1, 2

_KINDS = {1: "book", 2: "trade", 3: "gap", 4: "hb", 5: "eos"}
_REASONS = {1: "publisher_seq", 2: "venue_seq", 3: "silence", 4: "resync"}
_HEADER = struct.Struct("<4BqqQQQ")  # magic, kind, presence bits, side/reason, ts.., seqs
# The header and a trade's fixed fields (price, size, their scales) in one go; a book's,
# with its flags.
_MARKET = struct.Struct("<4BqqQQQqqBB")
_BOOK = struct.Struct("<4BqqQQQqqBBB")
_PRICE_SIZE = struct.Struct("<qqBB")
_U8, _U16, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<Q")
_HB = struct.Struct("<QI")
PROTOCOL = 1  # the major version this helper speaks (docs/PROTOCOL.md, "Compatibility")
_MAGIC = 0xB6 + PROTOCOL  # a binary payload's first byte is 0xB6 + its major version
_POW10 = tuple(10 ** i for i in range(64))


def _decimal(mantissa, scale):
    """Exact decimal string of mantissa / 10**scale, trailing zeros kept."""
    if not scale:
        return str(mantissa)
    if mantissa < 0:
        return "-" + _decimal(-mantissa, scale)
    q, r = divmod(mantissa, _POW10[scale] if scale < 64 else 10 ** scale)
    return "%d.%0*d" % (q, scale, r)


def _cached_decimal(cache, mantissa, scale):
    """The exact Decimal of mantissa / 10**scale, from `cache` (bounded at 4,096 entries)."""
    d = cache.get(mantissa)
    if d is None:
        if len(cache) > 4096:
            cache.clear()
        d = cache[mantissa] = Decimal(_decimal(mantissa, scale))
    return d


def _text(payload, at):
    """A u16-length string at `at`: (str, offset after it)."""
    (n,) = _U16.unpack_from(payload, at)
    at += 2
    return payload[at:at + n].decode(), at + n


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
    return _decode_binary(payload)


def _decode_binary(payload):
    """`decode_payload` of a binary payload (first byte checked by the caller)."""
    _, kind, bits, detail, ts_event, ts_recv, pub_seq, venue_seq, prev_seq = (
        _HEADER.unpack_from(payload))
    at = 44
    kind = _KINDS[kind]
    if kind == "book" or kind == "trade":
        price, size, price_scale, size_scale = _PRICE_SIZE.unpack_from(payload, at)
        at += 18
        body = {"side": chr(detail), "price": _decimal(price, price_scale),
                "size": _decimal(size, size_scale)}
        if kind == "book":
            body["flags"] = payload[at]
            at += 1
        else:
            body["trade_id"], at = _text(payload, at)
    elif kind == "gap":
        (missing,) = _U64.unpack_from(payload, at)
        at += 8
        body = {"reason": _REASONS[detail]}
        if bits & 4:
            body["missing"] = missing
        body["publisher"], at = _text(payload, at)
    elif kind == "hb":
        interval_ms, protocol = _HB.unpack_from(payload, at)
        at += 12
        if protocol != PROTOCOL:
            raise ValueError(f"heartbeat of protocol version {protocol}, "
                             f"this helper speaks version {PROTOCOL}")
        publisher, at = _text(payload, at)
        body = {"publisher": publisher, "interval_ms": interval_ms, "replay": bool(bits & 8),
                "protocol": protocol}
    else:
        (events,) = _U64.unpack_from(payload, at)
        at += 8
        publisher, at = _text(payload, at)
        body = {"publisher": publisher, "replay": bool(bits & 8), "events": events}
    venue, at = _text(payload, at)
    symbol, at = _text(payload, at)
    msg = {"kind": kind, "venue": venue, "symbol": symbol, "ts_event": ts_event,
           "ts_recv": ts_recv}
    # Bytes after the symbol are a later minor version's fields: ignored.
    if bits & 1:
        msg["venue_seq"] = venue_seq
    if bits & 2:
        msg["prev_venue_seq"] = prev_seq
    msg["pub_seq"] = pub_seq
    msg.update(body)
    return msg


class Event(dict):
    """A binary book or trade event, as the `dict` `decode_payload` gives (plus
    `consistent` on a book event), decoded only as far as it is read.

    Until then the dict holds only `kind`; `ev["kind"]`, `ev.get("kind")` and
    `ev["venue"]`, `["symbol"]`, `["ts_event"]`, `["ts_recv"]`, `["price"]`, `["size"]`
    are answered from the fields decoded on arrival. Any other access (another key, `in`,
    iteration, `len`, `items()`, `==`, `repr`, `json.dumps`, `dict(ev)`, `copy`,
    pickling, assignment) first fills the dict with every key, in the order
    `decode_payload` gives them; from then on it is a plain dict. Made by the client; one
    made by hand (`Event(...)`) is a plain dict.
    """

    __slots__ = ("_h", "_vs", "_p")

    def _fill(self):
        try:
            h = self._h
        except AttributeError:  # made by hand: nothing to decode
            return
        if h is None:
            return
        self._h = None
        _, kind, bits, detail, ts_event, ts_recv, pub_seq, venue_seq, prev_seq, \
            price, size, price_scale, size_scale = h[:13]
        venue, symbol = self._vs
        msg = {"venue": venue, "symbol": symbol, "ts_event": ts_event, "ts_recv": ts_recv}
        if bits & 1:
            msg["venue_seq"] = venue_seq
        if bits & 2:
            msg["prev_venue_seq"] = prev_seq
        msg["pub_seq"] = pub_seq
        msg["side"] = chr(detail)
        msg["price"] = _decimal(price, price_scale)
        msg["size"] = _decimal(size, size_scale)
        if len(h) > 13:  # a book event (`_BOOK`, or the whole record over shm)
            msg["flags"] = h[13]
            # What `Book._update` returned for it: whether the book was consistent after.
            msg["consistent"] = (h[13] & LAST) != 0
        else:
            msg["trade_id"] = _text(self._p, 62)[0]
        self._p = None
        dict.update(self, msg)

    def __missing__(self, key):
        try:
            h = self._h
        except AttributeError:
            h = None
        if h is None:
            raise KeyError(key)
        if key == "venue":
            return self._vs[0]
        if key == "symbol":
            return self._vs[1]
        if key == "ts_recv":
            return h[5]
        if key == "ts_event":
            return h[4]
        if key == "price":
            return _decimal(h[9], h[11])
        if key == "size":
            return _decimal(h[10], h[12])
        self._fill()
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        try:
            h = self._h
        except AttributeError:
            h = None
        if h is not None:
            if key == "kind":
                return dict.__getitem__(self, "kind")
            if key == "venue":
                return self._vs[0]
            if key == "symbol":
                return self._vs[1]
            if key == "ts_recv":
                return h[5]
            self._fill()
        return dict.get(self, key, default)

    def __eq__(self, other):
        self._fill()
        if isinstance(other, Event):
            other._fill()
        return dict.__eq__(self, other)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __reduce_ex__(self, protocol):
        # Copies and pickles are of the filled event (a plain dict's items).
        self._fill()
        return (_filled_event, (dict(self),))

    def __reduce__(self):
        return self.__reduce_ex__(2)

    @classmethod
    def fromkeys(cls, iterable, value=None):
        return dict.fromkeys(iterable, value)


def _filled_event(items):
    ev = Event(items)
    ev._h = None
    return ev


def _filling(name):
    method = getattr(dict, name)

    def filled(self, *args, **kwargs):
        self._fill()
        return method(self, *args, **kwargs)

    filled.__name__ = filled.__qualname__ = name
    filled.__doc__ = method.__doc__
    return filled


for _name in ("__contains__", "__iter__", "__reversed__", "__len__", "__repr__", "keys",
              "values", "items", "__setitem__", "__delitem__", "pop", "popitem", "setdefault",
              "update", "clear", "copy", "__or__", "__ror__", "__ior__", "__sizeof__"):
    if hasattr(dict, _name):
        setattr(Event, _name, _filling(_name))
del _name


def _mantissa(value):
    """(mantissa, scale) of a decimal string (or Decimal, int): exact."""
    if isinstance(value, str) and "e" not in value and "E" not in value:
        whole, _, frac = value.partition(".")
        try:
            return int(whole + frac), len(frac)
        except ValueError:
            pass
    sign, digits, exp = Decimal(value).as_tuple()
    if not isinstance(exp, int):
        raise ValueError(f"not a finite decimal: {value!r}")
    m = int("".join(map(str, digits)) or "0")
    if sign:
        m = -m
    return (m * 10 ** exp, 0) if exp > 0 else (m, -exp)


class _Levels(MutableMapping):
    """One side of a `Book`: Decimal price -> Decimal size, exact (a view of the
    book's integer levels; Decimals are made on access)."""

    __slots__ = ("_book", "_bid")

    def __init__(self, book, bid):
        self._book, self._bid = book, bid

    def _side(self):
        return self._book._b if self._bid else self._book._a

    def _key(self, price):
        book = self._book
        m, s = _mantissa(price)
        ps = book._ps
        if ps is None:
            return None  # no level was ever set
        if s > ps:
            f = 10 ** (s - ps)
            return None if m % f else m // f  # finer than the book's scale: not a level
        return m * 10 ** (ps - s)

    def __getitem__(self, price):
        m = self._key(price)
        side = self._side()
        if m is None or m not in side:
            raise KeyError(price)
        return self._book._size(side[m])

    def __contains__(self, price):
        try:
            m = self._key(price)
        except (ValueError, ArithmeticError, TypeError):
            return False
        return m is not None and m in self._side()

    def __iter__(self):
        price = self._book._price
        return iter([price(m) for m in self._side()])

    def __len__(self):
        return len(self._side())

    def __setitem__(self, price, size):
        book = self._book
        m, s = _mantissa(price)
        sm, ss = _mantissa(size)
        book._set(self._bid, m, s, sm, ss)

    def __delitem__(self, price):
        m = self._key(price)
        side = self._side()
        if m is None or m not in side:
            raise KeyError(price)
        del side[m]

    def clear(self):
        self._side().clear()

    def items(self):
        price, size = self._book._price, self._book._size
        return [(price(m), size(v)) for m, v in self._side().items()]

    def values(self):
        size = self._book._size
        return [size(v) for v in self._side().values()]

    def __repr__(self):
        return repr(dict(self.items()))


class Book:
    """Price levels of one instrument, per side: `bids` and `asks` map Decimal price ->
    Decimal size, exact, `best_bid()` / `best_ask()` the best prices. Levels are kept as
    integer mantissas at one scale per book (the finest seen, so the Decimals show that
    many places); `bids`/`asks` are mutable mapping views that make Decimals on access
    and take a price as Decimal, str or int (`dict(book.bids)` is a plain dict)."""

    def __init__(self):
        self._b, self._a = {}, {}  # price mantissa -> size mantissa
        self._ps = self._ss = None  # their scales (the finest seen)
        self._pcache, self._scache = {}, {}
        self._in_snapshot = False

    @property
    def bids(self):
        return _Levels(self, True)

    @property
    def asks(self):
        return _Levels(self, False)

    def _price(self, m):
        return _cached_decimal(self._pcache, m, self._ps)

    def _size(self, m):
        return _cached_decimal(self._scache, m, self._ss)

    def _rescale(self, price_scale, size_scale):
        """Moves every level to finer scales (exact: multiplies mantissas)."""
        pf = 10 ** (price_scale - self._ps) if self._ps is not None else 1
        sf = 10 ** (size_scale - self._ss) if self._ss is not None else 1
        for attr in ("_b", "_a"):
            side = getattr(self, attr)
            setattr(self, attr, {p * pf: s * sf for p, s in side.items()})
        self._ps, self._ss = price_scale, size_scale
        self._pcache, self._scache = {}, {}

    def _set(self, bid, price, price_scale, size, size_scale):
        ps, ss = self._ps, self._ss
        if ps != price_scale or ss != size_scale:
            if ps is None or price_scale > ps or size_scale > ss:
                self._rescale(max(price_scale, ps or 0), max(size_scale, ss or 0))
                ps, ss = self._ps, self._ss
            price *= 10 ** (ps - price_scale)
            size *= 10 ** (ss - size_scale)
        side = self._b if bid else self._a
        if size:
            side[price] = size
        else:
            side.pop(price, None)

    def _update(self, bid, price, price_scale, size, size_scale, flags):
        """One level update (mantissas and scales): returns whether the book is
        consistent after it (a snapshot's last level, or a diff)."""
        if flags & SNAPSHOT:
            if not self._in_snapshot:
                self._b.clear()
                self._a.clear()
            self._in_snapshot = not flags & LAST
        else:
            self._in_snapshot = False
        if price_scale == self._ps and size_scale == self._ss:
            side = self._b if bid else self._a
            if size:
                side[price] = size
            else:
                side.pop(price, None)
        else:
            self._set(bid, price, price_scale, size, size_scale)
        return bool(flags & LAST)

    def apply(self, ev):
        """Applies a book event (a dict with decimal strings, as `decode_payload` gives);
        returns whether the book is consistent after it."""
        price, price_scale = _mantissa(ev["price"])
        size, size_scale = _mantissa(ev["size"])
        return self._update(ev["side"] == "B", price, price_scale, size, size_scale,
                            ev.get("flags", 0))

    def best_bid(self):
        return self._price(max(self._b)) if self._b else None

    def best_ask(self):
        return self._price(min(self._a)) if self._a else None


_KIND_BOOK, _KIND_TRADE = {"kind": "book"}, {"kind": "trade"}
_STEP_PREFIX = b'{"kind":"step","step":'


def _step_number(payload):
    """The `step` of a step marker's JSON payload (the replay writes it first; anything
    else is parsed in full)."""
    if payload.startswith(_STEP_PREFIX):
        end = payload.find(b",", 22)
        digits = payload[22:end] if end > 0 else b""
        if digits.isdigit():
            return int(digits)
    return json.loads(payload)["step"]


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
            global zmq
            if zmq is None:
                try:
                    import zmq
                except ImportError:  # only the shared-memory transport works without it
                    raise ImportError("pyzmq is needed for tcp:// and ipc:// endpoints: "
                                      "pip install ./python") from None
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
        self._names = {}  # the bytes after a binary event's fixed fields -> (venue, symbol)
        # Keep each binary event's payload in `Event._p` (tests compare it with the
        # eager decoding; trades keep theirs anyway).
        self._keep_payloads = False

    def _send(self, obj):
        """Sends one gateway request (a dict) on whichever transport this client uses."""
        if self._shm is not None:
            self._shm.send(json.dumps(obj, separators=(",", ":")).encode())
        else:
            self.dealer.send_json(obj)

    def _ack(self, step):
        if self._shm is not None:
            # json.dumps({"type": "ack", "step": step}, separators=(",", ":")), byte for byte
            self._shm.send(b'{"type":"ack","step":%d}' % step)
        else:
            self.dealer.send_json({"type": "ack", "step": step})

    def _venue_symbol(self, tail):
        """(venue, symbol) from the bytes after a binary event's fixed fields (cached)."""
        venue, at = _text(tail, 0)
        symbol, _ = _text(tail, at)
        if len(self._names) > 1024:
            self._names.clear()
        vs = self._names[tail] = (venue, symbol)
        return vs

    def _binary(self, payload):
        """A binary book or trade payload (checked by the caller): updates the book and the
        clock, returns its lazy `Event`."""
        if payload[1] == 1:
            h = _BOOK.unpack_from(payload)
            vs = self._names.get(payload[63:])
            if vs is None:
                vs = self._venue_symbol(payload[63:])
            ev = Event(_KIND_BOOK)
            book = self.books.get(vs)
            if book is None:
                book = self.books[vs] = Book()
            book._update(h[3] == 66, h[9], h[11], h[10], h[12], h[13])
        else:
            h = _MARKET.unpack_from(payload)
            tail = payload[64 + _U16.unpack_from(payload, 62)[0]:]
            vs = self._names.get(tail)
            if vs is None:
                vs = self._venue_symbol(tail)
            ev = Event(_KIND_TRADE)
        ev._h, ev._vs, ev._p = h, vs, payload
        if h[5] > self.now:
            self.now = h[5]
        return ev

    def _message(self, topic, payload, stop_on_live_eos):
        """One bus message: returns (message to yield or None, end of stream reached)."""
        if payload and payload[0] == _MAGIC and 1 <= payload[1] <= 2:
            return self._binary(payload), False
        if topic == b"step":
            step = _step_number(payload)
            if self.lockstep:
                self._ack(step)
            return None, False
        msg = decode_payload(payload)  # JSON or binary; step/fill/order are JSON
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
            book = self.books.get(key)
            if book is None:
                book = self.books[key] = Book()
            msg["consistent"] = book.apply(msg)
        elif kind == "gap":
            self.books.pop(key, None)
        return msg, False

    def events(self, stop_on_live_eos=False):
        """Yields market events (dicts) in order; fills/order updates update state and
        are yielded too (kind 'fill'/'order'). Ends at a replay's end-of-stream (and at a
        live publisher's with `stop_on_live_eos`)."""
        if self._shm is not None:
            return self._shm_events(stop_on_live_eos)
        return self._zmq_events(stop_on_live_eos)

    def _zmq_events(self, stop_on_live_eos):
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
        replies in one order. Records are read in place (docs/SHM.md, "Records").

        Binary book events, the bulk of the stream, come in runs of records of one layout
        (one length and topic length, so one `struct` format for the whole record): such a
        run is unpacked straight from the mapping by one `struct.iter_unpack`, each book
        updated inline (the common case of `Book._update`) and each event yielded as it is
        reached. Anything else is copied out and handled as over zmq. The space read goes
        back to the replay before each step's ack, after at most a quarter ring, and before
        sleeping."""
        link = self._shm
        try:
            bus, gateway, closed = ShmLink.BUS, ShmLink.GATEWAY, ShmLink.CLOSED
            topics = self._topics
            every_topic = b"" in topics
            message, books, names = self._message, self.books, self._names
            unpack_record = _RECORD.unpack_from
            kind_book, magic, wrap, book_mk = _KIND_BOOK, _MAGIC, _WRAP, _MAGIC | 1 << 8
            mm, q, mv = link.mm, link.q, memoryview(link.mm)
            _, cap, data = link.down
            mask, largest, head_i = cap - 1, cap // 4, link._down_head_i
            tail = link.tail
            keep, lockstep, send = self._keep_payloads, self.lockstep, link.send
            step_prefix, snapshot = _STEP_PREFIX, SNAPSHOT
            # The layout of the last binary book record: its `iter_unpack` (the whole record
            # and its padding: first 8 bytes as one word, i.e. length, kind and topic length,
            # then the payload's magic and kind as one u16, the fields of `_BOOK` from its
            # third, the bytes after them), that first word, the bytes a record takes in the
            # ring, the payload's start and end in the record, and the last ring offset at
            # which such a record fits. Nothing matches before the first.
            layouts = {}
            book_iter, book_word, book_step, book_at, book_end, book_last = \
                None, -1, 8, 0, 0, -1
            last_key = last_vs = None
            while True:
                link.release(tail)
                head = q[head_i]
                if head == tail:
                    link.wait()
                    continue
                # Cursors only grow: read up to the head seen, at most a quarter ring's
                # bytes before giving the space back.
                stop = min(head, tail + largest)
                while tail < stop:
                    pos = tail & mask
                    if pos <= book_last and q[(data + pos) >> 3] == book_word:
                        # A run of records of the last book layout, up to `stop` or the end
                        # of the ring (at least this one record, written whole before
                        # `head`); it ends early at the first record of another kind.
                        start = data + pos
                        n = min(stop - tail, cap - pos) // book_step or 1
                        for h in book_iter(mv[start:start + n * book_step]):
                            word, mk, _, side, _, ts_recv, _, _, _, price, size, price_scale, \
                                size_scale, flags, key = h
                            if word != book_word or mk != book_mk:
                                break
                            if keep:
                                at = data + (tail & mask)
                                p = mm[at + book_at:at + book_end]
                            tail += book_step
                            if key != last_key:  # (venue, symbol), cached by these bytes
                                last_vs = names.get(key)
                                if last_vs is None:
                                    last_vs = self._venue_symbol(key)
                                last_key = key
                            vs = last_vs
                            book = books.get(vs)
                            if book is None:
                                book = books[vs] = Book()
                            if not flags & snapshot and price_scale == book._ps \
                                    and size_scale == book._ss:
                                book._in_snapshot = False
                                levels = book._b if side == 66 else book._a
                                if size:
                                    levels[price] = size
                                else:
                                    levels.pop(price, None)
                            else:
                                book._update(side == 66, price, price_scale, size, size_scale,
                                             flags)
                            ev = Event(kind_book)
                            ev._h, ev._vs = h, vs
                            if keep:
                                ev._p = p
                            if ts_recv > self.now:
                                self.now = ts_recv
                            yield ev
                        continue
                    # One record of another layout.
                    length, kind, topic_len = unpack_record(mm, data + pos)
                    if length == wrap:
                        tail += cap - pos
                        continue
                    if length + 8 > largest or topic_len > length:
                        raise RuntimeError(f"corrupt shared-memory ring at byte {tail}")
                    at = data + pos + 8 + topic_len  # the payload
                    end = data + pos + 8 + length
                    if kind == bus and every_topic and end - at >= 63 and mm[at] == magic:
                        if mm[at + 1] == 1:
                            # A binary book event of another layout: it becomes the last,
                            # and the next round reads it as a run.
                            word = length | kind << 32 | topic_len << 48
                            layout = layouts.get(word)
                            if layout is None:
                                if len(layouts) > 64:
                                    layouts.clear()
                                step = (length + 15) & ~7
                                layout = layouts[word] = (
                                    struct.Struct(f"<Q{topic_len}xHBBqqQQQqqBBB{end - at - 63}s"
                                                  f"{step - 8 - length}x").iter_unpack,
                                    word, step, 8 + topic_len, 8 + length, cap - step)
                            book_iter, book_word, book_step, book_at, book_end, book_last = \
                                layout
                            continue
                        if mm[at + 1] == 2:
                            tail += (length + 15) & ~7
                            yield self._binary(mm[at:end])  # a binary trade
                            continue
                    tail += (length + 15) & ~7
                    if kind == bus:
                        topic = mm[at - topic_len:at]
                        if not every_topic and not topic.startswith(topics):
                            continue
                        if topic == b"step":
                            link.release(tail)  # the replay writes on after the ack
                            # `_step_number`, inline: the replay writes `step` first.
                            comma = mm.find(b",", at + 22, end)
                            digits = mm[at + 22:comma]
                            if comma > 0 and digits.isdigit() and mm[at:at + 22] == step_prefix:
                                step = int(digits)
                            else:
                                step = json.loads(mm[at:end])["step"]
                            if lockstep:
                                send(b'{"type":"ack","step":%d}' % step)
                            continue
                        msg, ended = message(topic, mm[at:end], stop_on_live_eos)
                        if ended:
                            return
                        if msg is not None:
                            yield msg
                    elif kind == gateway:
                        self.replies.append(json.loads(mm[at:end]))
                    elif kind == closed:
                        return
        finally:
            link.close()

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
