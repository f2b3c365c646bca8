"""Serves one worker's registry over HTTP on a port of its own (0 = any free port)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0):
        self._registry, self.host, self._port = registry, host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Start serving; returns the real `host:port`."""
        self._server, self._thread = start_http_server(
            self._port, addr=self.host, registry=self._registry
        )
        return self.address

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        return f"{self.host}:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
