#!/usr/bin/env python3
"""A webhook receiver for bench/run.sh --webhook: answers every POST 204 at once and counts them.

Usage: webhook-receiver.py PORT COUNTFILE. Every second, COUNTFILE gets one line: the requests received, the distinct
webhook-id headers among them, and the webhook-ids received more than once (a message sent twice).
"""
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = 0
seen = set()
repeated = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global received, repeated
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = self.headers.get("webhook-id")
        with lock:
            received += 1
            if message in seen:
                repeated += 1
            else:
                seen.add(message)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def write_count(path):
    while True:
        with lock:
            line = f"{received} {len(seen)} {repeated}\n"
        with open(path + ".tmp", "w") as f:
            f.write(line)
        os.replace(path + ".tmp", path)
        time.sleep(1)


if __name__ == "__main__":
    port, path = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=write_count, args=(path,), daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    # socketserver listens with a backlog of 5: under the sender's bursts (up to BatchSize connections per webhook)
    # the kernel drops the SYNs beyond it and the client retries after 1, 3, 7 s, which the first runs measured as
    # the sender's lag and, past its 10-s timeout, as messages sent twice. A real receiver's server listens with
    # hundreds (nginx 511, Kestrel 512).
    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
