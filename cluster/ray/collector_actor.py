"""An authority's primary side, the digest collector, in its own small actor.

It lives on the authority's home node and outlives none of its workers' reports: the
driver waits (`wait_reports`) until it has every digest the workers say they sent
before reading its sets for the agreement check.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from cluster.committee import free_ports
from cluster.ray.process import location, normal_priority
from cluster.ray.trio_thread import TrioThread
from primary.digest_collector import DigestCollector


class CollectorActor:
    def __init__(self, name: str, host: str) -> None:
        logging.basicConfig(level=logging.WARNING)
        normal_priority()
        self.name, self.host = name, host
        self._loop: TrioThread | None = None
        self._collector: DigestCollector | None = None

    def location(self) -> dict[str, Any]:
        return location(self.host)

    def reserve(self) -> str:
        (port,) = free_ports(1, self.host)
        return f"{self.host}:{port}"

    def start(self, address: str) -> dict[str, Any]:
        if self._collector is not None:
            raise RuntimeError("this collector actor has already started")
        host, _, port = address.rpartition(":")
        collector = DigestCollector(host, int(port), authority=self.name)
        loop = TrioThread(name="collector")
        loop.start()
        try:
            listening = loop.start_service(collector.serve)
        except BaseException:
            loop.stop()
            raise
        self._loop, self._collector = loop, collector
        return {"authority": self.name, "worker_to_primary": listening, **self.location()}

    def wait_reports(self, expected: int, timeout: float = 5.0) -> int:
        """Return once `expected` reports arrived (or after `timeout`): how many did."""
        collector, loop = self._running()

        async def wait() -> int:
            with trio.move_on_after(timeout):
                await collector.wait_for(lambda: collector.reports >= expected)
            return collector.reports

        return loop.run(wait)

    def results(self) -> dict[str, Any]:
        collector, loop = self._running()
        return loop.run_sync(
            lambda: {
                "authority": self.name,
                "digests": collector.digests.to_json(),
                "reports": collector.reports,
                "rejections": dict(collector.rejections),
            }
        )

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def __ray_shutdown__(self) -> None:
        self.stop()

    def _running(self) -> tuple[DigestCollector, TrioThread]:
        if self._collector is None or self._loop is None:
            raise RuntimeError("the collector has not been started")
        return self._collector, self._loop
