"""Shop front end: an HTML page listing the products that the API read from the database.

GET /         the page, rendered on the server
GET /healthz  200
"""
import html
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
API_URL = os.environ.get("API_URL", "http://api:8000").rstrip("/")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Mayfly Shop</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 40rem; color: #222; }}
  table {{ border-collapse: collapse; width: 100%; }}
  th, td {{ text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #ddd; }}
  td.num {{ text-align: right; }}
  footer {{ margin-top: 2rem; color: #888; font-size: .85rem; }}
</style>
</head>
<body>
<h1>Mayfly Shop</h1>
{content}
<footer>served by {host}, data from {api}</footer>
</body>
</html>
"""


def render_products(products):
    rows = "\n".join(
        '<tr><td>{sku}</td><td class="product">{name}</td>'
        '<td class="num">${price:.2f}</td><td class="num">{stock}</td></tr>'.format(
            sku=html.escape(p["sku"]),
            name=html.escape(p["name"]),
            price=p["price_cents"] / 100,
            stock=int(p["stock"]),
        )
        for p in products
    )
    return (
        f"<p>{len(products)} products, read from PostgreSQL through the API.</p>\n"
        "<table>\n<tr><th>SKU</th><th>Product</th><th>Price</th><th>In stock</th></tr>\n"
        f"{rows}\n</table>"
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "shop-web/1"

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, "text/plain", "ok\n")
        if self.path not in ("/", "/index.html"):
            return self.reply(404, "text/plain", "not found\n")
        try:
            with urllib.request.urlopen(API_URL + "/api/products", timeout=5) as res:
                products = json.load(res)
            status, content = 200, render_products(products)
        except (urllib.error.URLError, OSError, ValueError) as err:
            status = 502
            content = f"<p>The API is not available: {html.escape(str(err))}</p>"
        page = PAGE.format(
            content=content, host=html.escape(socket.gethostname()), api=html.escape(API_URL)
        )
        self.reply(status, "text/html; charset=utf-8", page)

    def reply(self, status, content_type, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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
    print(f"shop-web listening on :{PORT}, API at {API_URL}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
