#!/usr/bin/env python3
"""A stand-in for the provincial referral system of README.md's tour (step 6).

Listens on 127.0.0.1:8090 (or the port given as the first argument), prints every request the
`referrals-out` pipeline's `http` sink sends (method, path, Idempotency-Key, body) and answers
200, or the status given as the second argument (e.g. 503 to watch the retries, 422 to see a
dead letter with the answer). Only the Python standard library.
"""
import http.server
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        print(
            f"{self.command} {self.path} Idempotency-Key: {self.headers.get('idempotency-key')}"
            f" X-Department: {self.headers.get('x-department')}\n  {body}",
            flush=True,
        )
        answer = b'{"received": true}' if STATUS < 300 else b'{"error": "refused by the stand-in"}'
        self.send_response(STATUS)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print(f"referral system stand-in on 127.0.0.1:{PORT}, answering {STATUS}", flush=True)
    http.server.HTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
