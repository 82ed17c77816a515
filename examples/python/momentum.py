"""Example Python strategy (pyzmq + ticktape_client): buys when the last trade is above
its moving average and sells below it, within a position limit, with a cool-down in
event time. Runs unchanged live (paper) and in replay, including lockstep.

  pip install ./python        # once, from the repository root: the client and pyzmq
  python momentum.py --bus tcp://127.0.0.1:5556 --gateway tcp://127.0.0.1:5557 \
      --venue binance --symbol BTCUSDT --size 0.001 [--lockstep]
"""
import argparse
import json
import sys
from collections import deque
from decimal import Decimal

try:
    from ticktape_client import Client
except ImportError as e:  # the client package (or its pyzmq) is not in this Python
    sys.exit(f"{e}: install the ticktape client into this Python ({sys.executable}) "
             "with `pip install ./python` from the repository root")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bus", action="append", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--venue", required=True)
    ap.add_argument("--symbol", required=True)
    ap.add_argument("--size", default="1")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--max-position", type=int, default=3)
    ap.add_argument("--cooldown-ms", type=int, default=1000)
    ap.add_argument("--lockstep", action="store_true")
    ap.add_argument("--name", default="py-momentum")
    ap.add_argument("--exit-on-eos", action="store_true",
                    help="also stop at a live publisher's end-of-stream (paper runs on simulate)")
    a = ap.parse_args()

    client = Client(a.name, a.bus, a.gateway, lockstep=a.lockstep)
    size, prices, last_order, events = Decimal(a.size), deque(maxlen=a.window), -10**30, 0
    for ev in client.events(stop_on_live_eos=a.exit_on_eos):
        events += 1
        if ev["kind"] != "trade" or ev["venue"] != a.venue or ev["symbol"] != a.symbol:
            continue
        price = Decimal(ev["price"])
        prices.append(price)
        if len(prices) < a.window or client.now - last_order < a.cooldown_ms * 1_000_000:
            continue
        avg = sum(prices) / len(prices)
        pos = client.position.get((a.venue, a.symbol), Decimal(0))
        if price > avg and pos < a.max_position * size:
            client.market(a.venue, a.symbol, "buy", size)
            last_order = client.now
        elif price < avg and pos > -a.max_position * size:
            client.market(a.venue, a.symbol, "sell", size)
            last_order = client.now
    print(json.dumps({"events": events, "fills": len(client.fills),
                      "position": str(client.position.get((a.venue, a.symbol), 0))}))


if __name__ == "__main__":
    sys.exit(main())
