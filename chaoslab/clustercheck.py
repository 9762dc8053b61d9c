"""clustercheck, as kolla-ansible and the seed run it beside each Galera node for HAProxy:
an HTTP answer on ``<node address>:9200``, 200 when the node is Synced in a Primary
component and ready, 503 otherwise. HAProxy's own ``mysql-check`` only logs in, which a
node cut off from its peers still lets it do while it refuses every query (non-Primary):
behind it, keystone erred for as long as a partition lasted.

One process serves every node of the lab (one listener per node address), asking each
node over its unix socket as root, each question bounded.

    python -m chaoslab.clustercheck ADDRESS:PORT=SOCKET [...]
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chaoslab.galera import socket_probe

TIMEOUT = 2.0  # HAProxy checks every second; an answer later than that is no answer


def handler_for(sock: Path) -> type[BaseHTTPRequestHandler]:
    class Check(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                state = socket_probe(sock, timeout=TIMEOUT)
                ok, text = state.healthy, state.describe()
            except Exception as exc:  # a node that does not answer is not serving
                ok, text = False, f"{type(exc).__name__}: {exc}"
            body = (text + "\n").encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line a second per node would be all the log holds

    return Check


def main(argv: list[str]) -> int:
    servers = []
    for spec in argv:
        where, _, sock = spec.partition("=")
        address, _, port = where.rpartition(":")
        servers.append(ThreadingHTTPServer((address, int(port)), handler_for(Path(sock))))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    threading.Event().wait()  # until a signal ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
