#!/usr/bin/env python3
"""Publish ticks to a tickwire broker: a small example publisher.

Standard library only. Three ways in (see docs/feeds.md and PROTOCOL.md):

  http    one POST /api/publish per tick, Content-Type: application/json
  ndjson  POST /api/publish with a batch of ticks, one per line,
          Content-Type: application/x-ndjson
  ws      a WebSocket to /ws, one {"op":"publish",...} frame per tick,
          with an "id" so the broker acknowledges each one

The publisher key goes in the Authorization header (never in the URL). A
broker started without a key logs the one it generated at start-up.

Examples:
  TICKWIRE_KEY=tw_... ./examples/publish.py --topic demo.BTC-USD --count 20
  ./examples/publish.py --key tw_... --mode ndjson --count 1000 --batch 100 --rate 0
  ./examples/publish.py --key tw_... --mode ws --rate 10 --count 0   # until Ctrl-C
"""

import argparse
import base64
import json
import os
import random
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def tick_json(price, decimals, seq_ts):
    """The tick's data as JSON text, numbers written with fixed decimals.

    Built by hand rather than with json.dumps so that 64012.50 keeps its
    trailing zero: the broker passes `data` on byte for byte.
    """
    spread = 10 ** -decimals * random.randint(1, 5)
    bid = price - spread / 2
    ask = bid + spread
    f = "{:.%df}" % decimals
    return (
        '{"price":%s,"bid":%s,"ask":%s,"bid_size":%s,"ask_size":%s,"source_ts":%d}'
        % (
            f.format(price),
            f.format(bid),
            f.format(ask),
            "{:.4f}".format(random.uniform(0.01, 2.0)),
            "{:.4f}".format(random.uniform(0.01, 2.0)),
            seq_ts,
        )
    )


def prices(start, decimals):
    """A random walk, rounded to the instrument's tick."""
    p = start
    while True:
        p *= 1 + random.gauss(0, 0.0003)
        yield round(p, decimals)


def post(url, key, body, content_type):
    req = urllib.request.Request(
        url.rstrip("/") + "/api/publish",
        data=body.encode(),
        method="POST",
        headers={"Authorization": "Bearer " + key, "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        # 400 {"error","message","line"}, 401, 403: say what the broker said.
        sys.exit("publish refused: HTTP %d %s" % (e.code, e.read().decode(errors="replace")))


class WebSocket:
    """Just enough RFC 6455 for a publisher: masked text frames out,
    text frames in, Pings answered, Close honoured. No TLS (use ws://)."""

    def __init__(self, url, key):
        u = urllib.parse.urlparse(url)
        if u.scheme not in ("http", "ws"):
            sys.exit("ws mode needs an http:// or ws:// URL (no TLS in this example)")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
        nonce = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "Authorization: Bearer %s\r\n\r\n" % (u.hostname, u.port or 80, nonce, key)
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                sys.exit("the broker closed the connection during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in status + " ":
            sys.exit("upgrade refused: %s" % status)

    def send_text(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_text(self):
        """The next text message; answers Pings on the way."""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x9:  # Ping -> Pong with the same payload
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | n) + mask + masked)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise ConnectionError("closed by the broker: %d %s" % (code, payload[2:].decode(errors="replace")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="broker base URL")
    ap.add_argument("--key", default=os.environ.get("TICKWIRE_KEY"), help="publisher key (or env TICKWIRE_KEY)")
    ap.add_argument("--mode", choices=["http", "ndjson", "ws"], default="http")
    ap.add_argument("--topic", default="demo.BTC-USD")
    ap.add_argument("--price", type=float, default=64000.0, help="starting price")
    ap.add_argument("--decimals", type=int, default=2)
    ap.add_argument("--count", type=int, default=10, help="ticks to send; 0: until interrupted")
    ap.add_argument("--rate", type=float, default=2.0, help="ticks per second; 0: as fast as possible")
    ap.add_argument("--batch", type=int, default=50, help="ticks per request in ndjson mode")
    args = ap.parse_args()
    if not args.key:
        sys.exit("a publisher key is needed: --key KEY or TICKWIRE_KEY (the broker logs one at start)")

    walk = prices(args.price, args.decimals)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    ws = WebSocket(args.url, args.key) if args.mode == "ws" else None
    if ws:
        welcome = json.loads(ws.recv_text())
        print("connected, epoch %s" % welcome.get("epoch"))
    sent, batch, next_at = 0, [], time.monotonic()
    try:
        while args.count == 0 or sent < args.count:
            data = tick_json(next(walk), args.decimals, int(time.time() * 1000))
            sent += 1
            if args.mode == "http":
                body = '{"topic":%s,"data":%s}' % (json.dumps(args.topic), data)
                r = post(args.url, args.key, body, "application/json")
                print("%s seq %d %s" % (args.topic, r["seqs"][0], data))
            elif args.mode == "ndjson":
                batch.append('{"topic":%s,"data":%s}' % (json.dumps(args.topic), data))
                if len(batch) >= args.batch or sent == args.count:
                    r = post(args.url, args.key, "\n".join(batch) + "\n", "application/x-ndjson")
                    print("accepted %d, seqs %d..%d" % (r["accepted"], r["seqs"][0], r["seqs"][-1]))
                    batch = []
            else:
                ws.send_text('{"op":"publish","id":%d,"topic":%s,"data":%s}' % (sent, json.dumps(args.topic), data))
                reply = json.loads(ws.recv_text())
                if reply.get("type") == "error":
                    sys.exit("publish refused: %s: %s" % (reply.get("code"), reply.get("message")))
                print("%s seq %s %s" % (args.topic, reply.get("seq"), data))
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass
    if batch:
        r = post(args.url, args.key, "\n".join(batch) + "\n", "application/x-ndjson")
        print("accepted %d" % r["accepted"])
    print("sent %d ticks to %s" % (sent, args.topic))


if __name__ == "__main__":
    main()
