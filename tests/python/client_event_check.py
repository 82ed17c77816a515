"""A strategy that trades nothing and checks what the Python client hands a strategy
against the client as it was before events became lazy: for every market event, the
event (a lazy `Event` on a binary bus, a dict on a JSON bus) against the eager decoding
below (the old `decode_payload`, verbatim), and the client's books against the old
`Book` (Decimal -> Decimal dicts) fed the same events. Each event is first touched by
one of many dict operations (rotating), the same operation is done on the reference
dict, and the results and the whole event must be equal. Prints a JSON summary; exits
non-zero at the first difference.

    python3 client_event_check.py --bus EP --gateway EP [--lockstep]
"""
import argparse
import copy
import json
import pickle
import struct
import sys
from decimal import Decimal

from ticktape_client import Client, Event

# ---- The eager decoding and the book of the client before lazy events (verbatim) ----

SNAPSHOT, LAST = 1, 2
_KINDS = {1: "book", 2: "trade", 3: "gap", 4: "hb", 5: "eos"}
_REASONS = {1: "publisher_seq", 2: "venue_seq", 3: "silence", 4: "resync"}
_HEADER = struct.Struct("<4BqqQQQ")
PROTOCOL = 1
_MAGIC = 0xB6 + PROTOCOL


def _decimal(mantissa, scale):
    digits = str(abs(mantissa)).rjust(scale + 1, "0")
    text = f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits
    return "-" + text if mantissa < 0 else text


def ref_decode(payload: bytes) -> dict:
    first = payload[0] if payload else 0
    if first != _MAGIC:
        return json.loads(payload)
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
    else:
        raise AssertionError(f"not a market event: {kind}")
    msg = {"kind": kind, "venue": text(), "symbol": text(), "ts_event": ts_event,
           "ts_recv": ts_recv}
    if bits & 1:
        msg["venue_seq"] = venue_seq
    if bits & 2:
        msg["prev_venue_seq"] = prev_seq
    msg["pub_seq"] = pub_seq
    msg.update(body)
    return msg


class RefBook:
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


# ---- The checks ----

def fail(what, ev, ref):
    sys.exit(f"client_event_check: {what}\n  event:     {ev!r}\n  reference: {ref!r}")


def same(a, b):
    """Equal, and equal as text (so '1.50' never passes for '1.5')."""
    return a == b and repr(a) == repr(b)


def touch(i, ev, ref, prev):
    """Operation `i % N` on a fresh event and on its reference: results must agree."""
    op = i % 24
    if op == 0:
        return same(ev["kind"], ref["kind"]) and same(ev.get("kind"), ref.get("kind"))
    if op == 1:
        return all(same(ev.get(k), ref.get(k)) for k in ("kind", "venue", "symbol", "ts_recv",
                                                         "price", "nope")) \
            and ev.get("nope", 7) == 7
    if op == 2:
        return all((k in ev) == (k in ref) for k in ("price", "nope", "consistent",
                                                         "venue_seq", "trade_id"))
    if op == 3:
        return list(ev) == list(ref)
    if op == 4:
        return len(ev) == len(ref) and bool(ev)
    if op == 5:
        d = dict(ev)
        return type(d) is dict and list(d.items()) == list(ref.items())
    if op == 6:
        return ev == ref and ref == ev and not ev != ref and not ref != ev
    if op == 7:
        return json.dumps(ev) == json.dumps(ref) and json.dumps(ev, indent=1) == \
            json.dumps(ref, indent=1)
    if op == 8:
        return repr(ev) == repr(ref) and str(ev) == str(ref)
    if op == 9:
        return list(ev.items()) == list(ref.items())
    if op == 10:
        return list(ev.keys()) == list(ref.keys()) and list(ev.values()) == list(ref.values())
    if op == 11:
        ev["note"] = ref["note"] = 1
        ev["price"] = ref["price"] = "0"
        return True
    if op == 12:
        del ev["side"], ref["side"]
        return same(ev.pop("size"), ref.pop("size")) and ev.pop("nope", 3) == 3 \
            and same(ev.popitem(), ref.popitem())
    if op == 13:
        return same(ev.setdefault("size", 9), ref.setdefault("size", 9)) and \
            same(ev.setdefault("new", 9), ref.setdefault("new", 9))
    if op == 14:
        ev.update({"z": 3}, w=4)
        ref.update({"z": 3}, w=4)
        return True
    if op == 15:
        return (ev | {"a": 1}) == (ref | {"a": 1}) and ({"a": 1} | ev) == ({"a": 1} | ref) \
            and list((ev | {"a": 1}).items()) == list((ref | {"a": 1}).items())
    if op == 16:
        ev |= {"b": 2}
        ref |= {"b": 2}
        return True
    if op == 17:
        c, d = copy.copy(ev), copy.deepcopy(ev)
        p = pickle.loads(pickle.dumps(ev))
        return all(list(x.items()) == list(ref.items()) for x in (c, d, p, ev.copy()))
    if op == 18:
        return {**ev} == ref and list({**ev}) == list(ref) and \
            (lambda **kw: kw)(**ev) == ref
    if op == 19:
        # The keys answered from the header leave the event undecoded.
        ok = all(same(ev[k], ref[k]) for k in ("kind", "venue", "symbol", "ts_recv",
                                               "ts_event", "price", "size")) and \
            all(same(ev.get(k), ref.get(k)) for k in ("kind", "venue", "symbol", "ts_recv"))
        return ok and (not isinstance(ev, Event) or ev._h is not None)
    if op == 20:
        try:
            ev["nope"]
        except KeyError:
            return "nope" not in ev
        return False
    if op == 21:
        return list(reversed(ev)) == list(reversed(ref)) and sorted(ev.items()) == \
            sorted(ref.items())
    if op == 22:
        return prev is None or ((ev == prev) == (ref == prev_ref[0]))
    if op == 23:
        ev.clear()
        ref.clear()
        return True
    raise AssertionError(op)


prev_ref = [None]


def check_books(client, books):
    for key, ref in books.items():
        book = client.books.get(key)
        if book is None:
            fail(f"no book for {key}", None, ref)
        for side, rside in ((book.bids, ref.bids), (book.asks, ref.asks)):
            got = list(side.items())
            if sorted(map(repr, got)) != sorted(map(repr, rside.items())) or \
                    len(side) != len(rside) or dict(side) != rside:
                fail(f"book {key} differs", sorted(got)[:5], sorted(rside.items())[:5])
            for price in list(rside)[:3]:
                if not same(side[price], rside[price]) or price not in side \
                        or str(price) not in side:
                    fail(f"book {key} level {price}", side.get(price), rside[price])
        if not same(book.best_bid(), ref.best_bid()) or \
                not same(book.best_ask(), ref.best_ask()):
            fail(f"best prices of {key}", (book.best_bid(), book.best_ask()),
                 (ref.best_bid(), ref.best_ask()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bus", action="append", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--name", default="check")
    ap.add_argument("--lockstep", action="store_true")
    a = ap.parse_args()
    client = Client(a.name, a.bus, a.gateway, lockstep=a.lockstep)
    client._keep_payloads = True  # each event's bytes, to decode the old way
    books, counts, prev = {}, {"checked": 0, "lazy": 0, "book": 0, "trade": 0,
                                "book_checks": 0}, None
    for ev in client.events():
        kind = ev["kind"]
        if kind not in ("book", "trade"):
            continue
        if isinstance(ev, Event):
            counts["lazy"] += 1
            ref = ref_decode(ev._p)
        else:  # a JSON bus: the dict json.loads gave (plus `consistent`)
            ref = {k: v for k, v in ev.items() if k != "consistent"}
        key = (ref["venue"], ref["symbol"])
        if kind == "book":
            ref["consistent"] = books.setdefault(key, RefBook()).apply(ref)
        if client.now < ref["ts_recv"]:
            fail("the clock is behind the event", client.now, ref)
        whole = dict(ref)
        if not touch(counts["checked"], ev, ref, prev):
            fail(f"operation {counts['checked'] % 24} differs", ev, ref)
        if ev != ref or list(ev.items()) != list(ref.items()):
            fail("event differs", ev, ref)
        if counts["checked"] % 24 in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 19, 20, 21, 22) and \
                list(ev.items()) != list(whole.items()):
            fail("a reading operation changed the event", ev, whole)
        prev, prev_ref[0] = ev, ref
        counts["checked"] += 1
        counts[kind] += 1
        if kind == "book" and counts["book"] % 1009 == 0:
            check_books(client, books)
            counts["book_checks"] += 1
    check_books(client, books)
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
