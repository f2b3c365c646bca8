"""Impersonation: the unauthenticated TCP Hello lets a host pose as another authority;
the signed libp2p handshake does not."""

from __future__ import annotations

from pathlib import Path

from tests.worker.harness import TEST_PARAMS, cluster
from worker.impersonator import impersonate


async def test_tcp_baseline_accepts_an_impostor(tmp_path: Path) -> None:
    async with cluster(tmp_path, start=3, memory=False) as c:
        attacker, victim = c.keys[0], c.keys[1]
        result = await impersonate(
            c.committee, victim.name, 0, TEST_PARAMS, attacker, tmp_path / "k", "127.0.0.1", {}
        )
        target = c.authorities[2].worker
        assert target is not None and target.store is not None
        stored = {d.hex() for d in target.store.digests()}
        assert result["acked"] > 0
        assert set(result["digests"]) <= stored  # the baseline's known weakness


async def test_libp2p_handshake_refuses_an_impostor(tmp_path: Path) -> None:
    params = TEST_PARAMS.model_copy(update={"transport": "libp2p"})
    async with cluster(tmp_path, start=3, params=params, memory=False) as c:
        attacker, victim = c.keys[0], c.keys[1]
        addrs = {a.name: a.info["worker_to_worker"] for a in c.authorities[:3] if a.info}
        result = await impersonate(
            c.committee, victim.name, 0, params, attacker, tmp_path / "k", "127.0.0.1", addrs
        )
        assert result["acked"] == 0
        target = c.authorities[2].worker
        assert target is not None and target.store is not None
        assert not set(result["digests"]) & {d.hex() for d in target.store.digests()}
        rejections = target.transport.rejections
        await target.transport.inner.wait_for(lambda: rejections["bad_signature"] > 0)  # type: ignore[attr-defined]
        assert target.transport.handshakes["bad_signature"] > 0
