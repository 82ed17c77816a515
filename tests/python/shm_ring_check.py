"""The shared-memory client against a synthetic segment, without a replay: a small down ring
(4 KiB, so records wrap at every offset and reads stop at each quarter ring) filled, as the
client makes room, with binary book events of three instruments in two record layouts
(two with names of equal length, so one layout serves two books), snapshots, deletes and
scale changes, binary trades, step markers and an end of stream. Every event must equal
the eager `decode_payload` of its payload (plus `consistent` on a book event), the books
must equal books fed the decoded events through `Book.apply`, and the up ring must hold
one ack per step marker, in order. Then the wait's spin policy on an empty ring. Prints a
JSON summary; exits non-zero at the first difference.

    python3 shm_ring_check.py
"""
import json
import mmap
import os
import random
import struct
import sys

from ticktape_client import Book, Client, decode_payload
from ticktape_client._shm import ShmLink

DOWN_OFF, DOWN_CAP, UP_CAP = 4096, 4096, 1 << 16
UP_OFF = DOWN_OFF + 256 + DOWN_CAP
DATA, UP_DATA = DOWN_OFF + 256, UP_OFF + 256
WRAP = 0xFFFFFFFF


def fail(what):
    sys.exit(f"shm_ring_check: {what}")


def text(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def binary(kind, side, ts, seq, price, size, ps, ss, venue, symbol, flags=0, trade_id=""):
    """A binary book (kind 1) or trade (kind 2) payload (docs/PROTOCOL.md)."""
    bits = 1 | (2 if seq % 3 else 0)
    p = struct.pack("<4BqqQQQ", 0xB7, kind, bits, ord(side), ts - 5, ts, seq, seq * 10,
                    seq * 10 - 1)
    p += struct.pack("<qqBB", price, size, ps, ss)
    p += struct.pack("<B", flags) if kind == 1 else text(trade_id)
    return p + text(venue) + text(symbol)


def records(rng):
    """(kind, topic, payload) of a stream, and the market payloads it holds in order."""
    names = [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("okx", "BTC-USDT-SWAP")]
    out, ts, seq, step = [], 1_700_000_000_000_000_000, 0, 0
    for i in range(3000):
        ts += rng.randrange(1, 2_000_000)
        seq += 1
        venue, symbol = rng.choice(names)
        r = rng.random()
        if r < 0.08:
            step += 1
            out.append((1, b"step", b'{"kind":"step","step":%d,"ts_recv":%d}' % (step, ts)))
        elif r < 0.18:
            tid = str(rng.randrange(10 ** rng.randrange(1, 12)))
            out.append((1, f"trade.{venue}.{symbol}".encode(),
                        binary(2, rng.choice("BS"), ts, seq, rng.randrange(1, 10 ** 7), 1 + i,
                               2, 4, venue, symbol, trade_id=tid)))
        else:
            # Mostly diffs at the usual scales; now and then a snapshot (first and last
            # level flagged) or a finer scale, which rescales the book.
            flags = rng.choice([0] * 12 + [1, 3, 2])
            ps, ss = (2, 8) if rng.random() < 0.97 else (3, 9)
            size = 0 if rng.random() < 0.3 else rng.randrange(1, 10 ** 6)
            out.append((1, f"book.{venue}.{symbol}".encode(),
                        binary(1, rng.choice("BA"), ts, seq, rng.randrange(100, 140) * 10 ** ps,
                               size, ps, ss, venue, symbol, flags)))
    out.append((1, b"eos.replay", json.dumps({"kind": "eos", "publisher": "replay",
                                               "replay": True, "events": seq}).encode()))
    return out


def main():
    fd = os.memfd_create("shm-ring-check")
    os.ftruncate(fd, UP_DATA + UP_CAP)
    mm = mmap.mmap(fd, UP_DATA + UP_CAP)
    struct.pack_into("<8sIIQQQQ", mm, 0, b"TICKSHM\0", 1, 4096, DOWN_OFF, DOWN_CAP, UP_OFF,
                     UP_CAP)
    q = memoryview(mm).cast("Q")
    endpoint = f"shm:/proc/self/fd/{fd}"
    client = Client("check", endpoint, endpoint, lockstep=True)
    link = client._shm
    stream = records(random.Random(14))
    pending = list(stream)
    head = wraps = 0

    def produce():
        """Writes records into the down ring while they fit (the replay's part)."""
        nonlocal head, wraps
        while pending:
            kind, topic, payload = pending[0]
            n = len(topic) + len(payload)
            size = (n + 15) & ~7
            pos = head & (DOWN_CAP - 1)
            skip = DOWN_CAP - pos if size > DOWN_CAP - pos else 0
            if head + skip + size - q[(DOWN_OFF + 64) // 8] > DOWN_CAP:
                return
            if skip:
                struct.pack_into("<I", mm, DATA + pos, WRAP)
                head += skip
                pos = 0
                wraps += 1
            struct.pack_into("<IHH", mm, DATA + pos, n, kind, len(topic))
            mm[DATA + pos + 8:DATA + pos + 8 + n] = topic + payload
            head += size
            q[DOWN_OFF // 8] = head
            pending.pop(0)

    # The client waits only when it has read everything written: write more instead.
    link.wait = produce
    market = [p for _, t, p in stream if t.startswith((b"book.", b"trade."))]
    books, events, filled = {}, 0, 0
    for ev in client.events():
        if events >= len(market):
            fail(f"more events than the {len(market)} written")
        want = decode_payload(market[events])
        key = (want["venue"], want["symbol"])
        if want["kind"] == "book":
            want["consistent"] = books.setdefault(key, Book()).apply(want)
        # Lazy reads first (answered without filling on the first events of each kind),
        # then the whole event.
        for k in ("kind", "venue", "symbol", "ts_event", "ts_recv", "price", "size"):
            if ev[k] != want[k]:
                fail(f"event {events}: {k} {ev[k]!r} != {want[k]!r}")
        if ev != want or list(ev) != list(want):
            fail(f"event {events}: {dict(ev)} != {want}")
        filled += 1
        book, ref = client.books.get(key), books.get(key)
        if ref is not None and (book is None or dict(book.bids) != dict(ref.bids)
                                or dict(book.asks) != dict(ref.asks)):
            fail(f"event {events}: the book of {key} differs from Book.apply's")
        if client.now < want["ts_recv"]:
            fail(f"event {events}: now {client.now} before ts_recv {want['ts_recv']}")
        events += 1
    if events != len(market) or pending:
        fail(f"{events} of {len(market)} events read, {len(pending)} records not written")
    # One ack per step marker, in order, after the hello.
    up, at = [], 0
    while at < link.head:
        n, kind, _ = struct.unpack_from("<IHH", mm, UP_DATA + at)
        up.append(json.loads(mm[UP_DATA + at + 8:UP_DATA + at + 8 + n]))
        at += (n + 15) & ~7
    steps = [json.loads(p)["step"] for _, t, p in stream if t == b"step"]
    if [m.get("step") for m in up[1:]] != steps or {m["type"] for m in up[1:]} != {"ack"}:
        fail(f"up ring: {up[:3]} ... ({len(up)} requests) for {len(steps)} step markers")

    # The spin before a sleep: on an empty ring a spin misses and the next 1, 2, 4 ... 64
    # waits skip it; a record ends a spin at once and clears the misses.
    q[DOWN_OFF // 8] = link.tail  # empty (the end of stream was not given back)
    skips = []
    for _ in range(9):
        if link._spin():
            fail("a spin on an empty ring saw a record")
        skips.append(link._spin_skip)
    if skips != [1, 2, 4, 8, 16, 32, 64, 64, 64]:
        fail(f"skips after misses: {skips}")
    q[DOWN_OFF // 8] = link.tail + 8  # a record appears
    if not link._spin() or link._spin_misses:
        fail("a spin with a record waiting did not end at once")
    for value, ns in (("0", 0), ("7", 7000), ("", 50_000), ("x", 50_000)):
        os.environ["TICKTAPE_SHM_SPIN_US"] = value
        if ShmLink(endpoint)._spin_ns != ns:
            fail(f"TICKTAPE_SHM_SPIN_US={value!r}: spin {ShmLink(endpoint)._spin_ns} ns")
    print(json.dumps({"events": events, "filled": filled, "steps": len(steps), "wraps": wraps,
                      "books": len(client.books)}))


if __name__ == "__main__":
    main()
