"""A fake JSON SMS gateway for trying the example carrier by hand.

    python3 fake_gateway.py [PORT]      (default 8931; prints every request it gets)

It answers each POST as a gateway would, chosen by the message text, so one
`herald plugin send` per answer shows how the carrier maps it:

    a text that is a status code (429, 503, 400, ...)  → that status; 429 with Retry-After: 2
    "slow"                                             → 200 after 5 s (past a short timeout)
    "garbage"                                          → 200 with a body that is not JSON
    anything else                                      → 200 {"id": "gw-<n>"}
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

IDS = count(1)


class Gateway(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(f"{self.command} {self.path} {body.decode(errors='replace')}", flush=True)
        text = json.loads(body).get("body", "").strip()
        if text == "slow":
            time.sleep(5)
        if text.isdigit():
            status, answer = int(text), {"error": f"fake gateway answered {text}"}
        else:
            status, answer = 200, {"id": f"gw-{next(IDS)}"}
        payload = b"<html>oops</html>" if text == "garbage" else json.dumps(answer).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "2")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except BrokenPipeError:
            print("  (the caller hung up before the answer)", flush=True)

    def log_message(self, *args):
        pass  # the request line above says enough


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8931
    print(f"fake gateway on http://127.0.0.1:{port}/", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Gateway).serve_forever()
