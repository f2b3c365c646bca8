"""The trio-on-a-thread bridge the actors use (no Ray needed)."""

from __future__ import annotations

import threading

import pytest
import trio

from cluster.ray.trio_thread import LoopStopped, TrioThread


def test_calls_run_in_the_loop_thread_and_services_stop_cleanly() -> None:
    loop = TrioThread("test")
    loop.start()
    closed = threading.Event()

    async def service(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started("listening")
            await trio.sleep_forever()
        finally:
            closed.set()

    assert loop.start_service(service) == "listening"
    assert loop.run_sync(threading.current_thread) is not threading.current_thread()

    async def add(a: int, b: int) -> int:
        await trio.lowlevel.checkpoint()
        return a + b

    assert loop.run(add, 2, 3) == 5
    loop.stop()
    assert closed.is_set() and not loop.running
    with pytest.raises(LoopStopped):
        loop.run(add, 1, 1)


def test_a_crashed_service_is_reported_at_the_next_call() -> None:
    loop = TrioThread("test")
    loop.start()
    crashed = threading.Event()

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.lowlevel.checkpoint()
        crashed.set()
        raise RuntimeError("boom")

    loop.start_service(broken)
    crashed.wait(5)
    loop.stop()  # joins the thread, so the crash has been recorded
    with pytest.raises(LoopStopped, match="boom"):
        loop.run_sync(lambda: None)
