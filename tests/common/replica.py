"""A replica of an app for the pool tests (tests/pools.rs): a real HTTP/1.1 server on
127.0.0.1 that the test starts and kills by PID, the way a GPU app crashes.

  python3 replica.py NAME PORT

Every answer's body starts with NAME, so the test sees which replica served it.
  /health          200, or 503 while the file NAME.down exists next to this script's cwd
  /slow?ms=N       answers after N ms
  /queue/join      (POST or GET) answers at once, like Gradio's queue join
  /queue/data      server-sent events: three events naming the replica, then the end
  anything else    answers at once
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = sys.argv[1]
PORT = int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            down = os.path.exists(f"{NAME}.down")
            return self.answer(503 if down else 200, NAME)
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
            return self.answer(200, NAME)
        if url.path == "/queue/data":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(3):
                self.wfile.write(f"data: {NAME} {i}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.02)
            self.close_connection = True
            return
        return self.answer(200, NAME)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        return self.answer(200, NAME)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
