"""Shop API: products from PostgreSQL as JSON.

GET /healthz       200 when the database answers
GET /api/products  the products, as a JSON list

The connection comes from the libpq variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE).
"""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

PORT = int(os.environ.get("PORT", "8000"))


def query(sql):
    # One short connection per request: nothing to go stale, and the database can shut
    # down at any time without waiting for idle clients.
    conn = psycopg2.connect("", connect_timeout=3, application_name="shop-api")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            columns = [c.name for c in cur.description]
            return [dict(zip(columns, row)) for row in cur.fetchall()]
    finally:
        conn.close()


class Handler(BaseHTTPRequestHandler):
    server_version = "shop-api/1"

    def do_GET(self):
        try:
            if self.path == "/healthz":
                query("SELECT 1 AS ok")
                self.reply(200, {"status": "ok"})
            elif self.path in ("/api/products", "/api/products/"):
                rows = query(
                    "SELECT id, sku, name, price_cents, stock FROM products ORDER BY id"
                )
                self.reply(200, rows)
            else:
                self.reply(404, {"error": "not found"})
        except psycopg2.Error as err:
            self.reply(503, {"error": "database unavailable", "detail": str(err).strip()})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if not self.path.startswith("/healthz"):  # the health check runs every second
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    # PID 1 in a container gets no default signal handlers: exit on SIGTERM ourselves.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("", PORT), Handler)
    server.daemon_threads = True
    print(f"shop-api listening on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
