#!/usr/bin/python3
"""An organizer's webhook receiver for flashtix, in tests, demos and drills.

Takes POSTs on --listen and records each, as one JSON object a line in
--record: the delivery's id, timestamp and signature headers, the body as
received, and the status it answered. It verifies nothing itself: the
record is the witness `flashtix check --webhooks` judges. It prints
`listening on http://HOST:PORT` once it takes connections, and stops on
SIGTERM or SIGINT.

It answers 500 to a share of deliveries, at random (seeded): --fail-share,
or the number in the file --control names while that file exists (a drill
writes it while its fault is on). Only standard Python.
"""

import argparse
import json
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(host, port, record, fail_share, control, seed):
    lock = threading.Lock()
    chance = random.Random(seed)
    out = open(record, "a", encoding="utf-8")

    def share():
        if control:
            try:
                with open(control, encoding="utf-8") as given:
                    return float(given.read().strip() or 0)
            except (OSError, ValueError):
                pass
        return fail_share

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                status = 500 if chance.random() < share() else 200
                line = {
                    "id": self.headers.get("flashtix-delivery", ""),
                    "timestamp": self.headers.get("flashtix-timestamp", ""),
                    "signature": self.headers.get("flashtix-signature", ""),
                    "body": body.decode("utf-8", "replace"),
                    "status": status,
                    "received_at": time.time(),
                }
                out.write(json.dumps(line) + "\n")
                out.flush()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Receiver)
    server.daemon_threads = True
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    stopping = threading.Thread(target=server.shutdown)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.start())
    server.serve_forever()
    out.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8025", help="HOST:PORT (port 0: any)")
    parser.add_argument("--record", required=True, help="append each delivery here")
    parser.add_argument("--fail-share", type=float, default=0.0, help="answer 500 this often")
    parser.add_argument("--control", help="a file holding the share to fail, while it exists")
    parser.add_argument("--seed", type=int, default=1, help="seed of the failures")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    serve(host, int(port), args.record, args.fail_share, args.control, args.seed)


if __name__ == "__main__":
    main()
