"""Serves one worker's registry over HTTP on a port of its own (0 = any free port).

prometheus_client's own server starts a thread per connection with no timeout, so idle
connections could pile up without bound. This one serves at most `max_connections` at a
time (beyond, a connection is closed at once and counted in `refused`) and gives each
`timeout` seconds per socket operation. Its thread sleeps between scrapes (not the
standard library's poll every half second).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import _SilentHandler

#: Seconds a scrape connection may stay silent in any one read or write.
SOCKET_TIMEOUT = 10.0
#: Seconds the serving thread sleeps between checks for a stop when no scrape comes
#: (`stop` wakes it at once with a connection of its own).
POLL_SECONDS = 30.0


class _Handler(_SilentHandler):
    timeout = SOCKET_TIMEOUT  # StreamRequestHandler applies it to the socket


class _BoundedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    slots: threading.BoundedSemaphore
    refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class MetricsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = 8,
    ):
        self._registry, self.host, self._port = registry, host, port
        self._max = max_connections
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Start serving; returns the real `host:port`."""
        server = make_server(
            self.host, self._port, make_wsgi_app(self._registry), _BoundedServer, _Handler
        )
        server.slots = threading.BoundedSemaphore(self._max)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(POLL_SECONDS,), daemon=True
        )
        self._thread.start()
        return self.address

    @property
    def refused(self) -> int:
        return self._server.refused if self._server is not None else 0

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        return f"{self.host}:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            stopping = threading.Thread(target=self._server.shutdown, daemon=True)
            stopping.start()  # returns once the serving thread saw the request
            deadline = time.monotonic() + 5
            while stopping.is_alive() and time.monotonic() < deadline:
                # Wake it from its poll; a wake-up that beat the shutdown request was
                # served as a scrape, so knock until the shutdown went through.
                with contextlib.suppress(OSError):
                    socket.create_connection((self.host, self._server.server_port), 1).close()
                stopping.join(timeout=0.1)
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
