"""A 4-authority committee on a 4-node Ray cluster on one machine (several raylets).

The driver joins the cluster by address (shipping the code in the runtime environment),
places one authority per Ray node, and batches reach quorum across the nodes.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
from ray.cluster_utils import Cluster

from cluster.backends.ray import RayBackend
from cluster.experiment import ExperimentConfig, run_experiment
from worker.config import Parameters

pytestmark = pytest.mark.slow

NODES = 4
PARAMS = Parameters(batch_size=50_000, max_batch_delay=50, sync_writes=False)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(NODES - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        daemons = [
            p
            for p in psutil.Process().children(recursive=True)
            if p.name() in ("raylet", "gcs_server")
        ]
        cluster.shutdown()
        _, alive = psutil.wait_procs(daemons, timeout=30)
        assert not alive, f"Ray daemons left behind: {alive}"


def test_each_authority_on_its_own_node_and_quorum_across_nodes(ray_cluster: Cluster) -> None:
    cfg = ExperimentConfig(authorities=4, rate=2_000, tx_size=256, duration=3, params=PARAMS)
    summary = run_experiment(cfg, RayBackend(ray_cluster.address)).summary()

    homes = {fig["authority"]: fig["ray_node_id"] for fig in summary["per_authority"]}
    assert len(set(homes.values())) == NODES, "one authority per Ray node"
    assert summary["placement_note"] is None
    for worker in summary["per_worker"]:
        assert worker["ray_node_id"] == homes[worker["authority"]]
        assert worker["host"] == "127.0.0.1"  # one machine: the nodes share loopback
    # Every authority's batches were acked by peers living on other Ray nodes.
    for fig in summary["per_authority"]:
        assert fig["batches_acked"] > 0
        assert fig["batches_stored"] > fig["batches_sealed"]  # peers' batches stored too
    assert summary["batches_quorum"] > 0
    assert summary["transactions_quorum"] == summary["transactions_sent"]
    assert summary["digest_agreement"]["ok"], summary["digest_agreement"]["problems"]
