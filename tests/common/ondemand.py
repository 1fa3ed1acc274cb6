"""An app the gateway starts on demand (tests/on_demand.rs): sleeps DELAY seconds, as a
model loads, then serves HTTP/1.1 on 127.0.0.1:PORT until SIGTERM.

  python3 ondemand.py NAME PORT DELAY [DIR [STOP_DELAY]]

While it runs it "holds its memory": the file DIR/NAME.token exists (removed on exit),
so the test sees which apps were loaded at once. Exits with status 3 at once when the
file DIR/NAME.fail exists (a start that fails). On SIGTERM it takes STOP_DELAY seconds
(default 0) to exit, as an app that saves its state does. Once it listens it writes the
time (seconds since the epoch) to DIR/NAME.listening.
  /                 HTML naming the app
  /slow?ms=N        answers after N ms
  /upload (POST)    the SHA-256 of the body, in hex
  /sse?every=S&count=N   N server-sent events, one every S seconds
  /ws               a WebSocket that echoes text messages
  anything else     the app's name
"""

import base64
import hashlib
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME, PORT, DELAY = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
DIR = sys.argv[4] if len(sys.argv) > 4 else "."
STOP_DELAY = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
TOKEN = os.path.join(DIR, f"{NAME}.token")

if os.path.exists(os.path.join(DIR, f"{NAME}.fail")):
    print(f"{NAME}: cannot load the model (test failure)", flush=True)
    sys.exit(3)


def leave(*_):
    time.sleep(STOP_DELAY)
    try:
        os.remove(TOKEN)
    except FileNotFoundError:
        pass
    os._exit(0)


signal.signal(signal.SIGTERM, leave)
print(f"{NAME}: loading for {DELAY} s", flush=True)
with open(TOKEN, "w") as f:
    f.write(str(os.getpid()))
time.sleep(DELAY)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, kind="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            return self.answer(200, f"<!doctype html><title>{NAME}</title><h1>hello from {NAME}</h1>", "text/html")
        if url.path == "/slow":
            time.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
            return self.answer(200, NAME)
        if url.path == "/sse":
            every = float(query.get("every", ["1"])[0])
            count = int(query.get("count", ["3"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(count):
                self.wfile.write(f"data: {NAME} {i}\n\n".encode())
                self.wfile.flush()
                if i + 1 < count:
                    time.sleep(every)
            self.close_connection = True
            return
        if url.path == "/ws":
            return self.websocket()
        return self.answer(200, NAME)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            digest.update(chunk)
            length -= len(chunk)
        return self.answer(200, digest.hexdigest())

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(self.rfile.read(2), "big")
            elif length == 127:
                length = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                return
            if opcode == 1:
                reply = f"{NAME}: ".encode() + data
                self.wfile.write(bytes([0x81, len(reply)]) + reply)
                self.wfile.flush()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
# A model server takes many connections at once when the held requests go (uvicorn:
# 2048); socketserver's default backlog of 5 would refuse most of them.
ThreadingHTTPServer.request_queue_size = 1024
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(os.path.join(DIR, f"{NAME}.listening"), "w") as f:
    f.write(repr(time.time()))
print(f"{NAME}: serving on {PORT}", flush=True)
server.serve_forever()
