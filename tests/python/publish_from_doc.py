"""A bus publisher written from docs/PROTOCOL.md alone, as an outsider would.

Usage: publish_from_doc.py <bind endpoint> <book messages> <trade messages>

Binds an XPUB socket, waits until a subscriber has subscribed, then publishes, per the
document's tables, exactly the fields each kind lists (required and optional) plus one
field the document does not define (`x_next_minor`, as a later minor version might add):
one `hb`, the book levels and trades on `book.docvenue.DOC-1` / `trade.docvenue.DOC-1`,
one `gap`, and an `eos` with only its required field. Prints what it sent as JSON.
"""

import json
import sys
import time

import zmq

PUBLISHER = "doc-publisher"
VENUE, SYMBOL = "docvenue", "DOC-1"
T0 = 1_704_164_645_000_000_000  # 2024-01-02T03:04:05Z in ns
EXTRA = {"x_next_minor": {"anything": [1, "two"]}}


def main():
    endpoint, n_book, n_trade = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sock = zmq.Context().socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    # XPUB hands us each subscription: wait for the recorder's before publishing.
    if not sock.poll(30_000):
        sys.exit("no subscriber within 30 s")
    sock.recv()

    pub_seq = {}
    sent = {"hb": 0, "book": 0, "trade": 0, "gap": 0, "eos": 0, "unknown_fields": 0}

    def send(topic, message):
        message.update(EXTRA)
        sock.send_multipart([topic.encode(), json.dumps(message).encode()])
        sent[message["kind"]] += 1
        sent["unknown_fields"] += len(EXTRA)

    def data(kind, ts, **body):
        topic = f"{kind}.{VENUE}.{SYMBOL}"
        pub_seq[topic] = pub_seq.get(topic, 0) + 1
        header = {"kind": kind, "venue": VENUE, "symbol": SYMBOL, "ts_event": ts - 1000,
                  "ts_recv": ts, "pub_seq": pub_seq[topic]}
        send(topic, {**header, **body})

    # hb: publisher, interval_ms, replay, protocol.
    send(f"hb.{PUBLISHER}", {"kind": "hb", "publisher": PUBLISHER, "interval_ms": 1000,
                             "replay": False, "protocol": 1})
    ts = T0
    venue_seq = 100
    for i in range(n_book):
        ts += 1_000_000
        venue_seq += 1
        side = "B" if i % 2 == 0 else "A"
        price = f"{100 + (i % 7) * 0.25 + (0 if side == 'B' else 5):.2f}"
        data("book", ts, venue_seq=venue_seq, prev_venue_seq=venue_seq - 1,
             protocol=1, side=side, price=price, size=f"{1 + i % 3}.500",
             flags=1 | 2 if i == 0 else 2)
    for i in range(n_trade):
        ts += 1_000_000
        data("trade", ts, venue_seq=10_000 + i, side="BAN"[i % 3], price="102.25",
             size="0.010", trade_id=f"t-{i}")
    ts += 1_000_000
    data("gap", ts, reason="resync", missing=0, publisher=PUBLISHER)
    # eos: only its required field.
    send(f"eos.{PUBLISHER}", {"kind": "eos", "publisher": PUBLISHER})
    time.sleep(0.5)  # let ZeroMQ deliver before the socket closes
    sock.close(linger=5000)
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
