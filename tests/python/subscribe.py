"""The plainest pyzmq subscriber: connect, subscribe to everything, receive in a loop.
Writes every book/trade/gap payload, one per line, to OUT; stops at a replay's eos.
Usage: subscribe.py ENDPOINT OUT"""
import json
import sys

import zmq

endpoint, out = sys.argv[1], sys.argv[2]
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVHWM, 0)
sock.connect(endpoint)
sock.setsockopt(zmq.SUBSCRIBE, b"")
with open(out, "wb") as f:
    while True:
        topic, payload = sock.recv_multipart()
        if topic.startswith((b"book.", b"trade.", b"gap.")):
            f.write(payload + b"\n")
        elif topic.startswith(b"eos.") and json.loads(payload).get("replay"):
            break
