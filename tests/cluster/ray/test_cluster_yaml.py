"""ray-cluster.yaml is a config the pinned Ray's cluster launcher accepts as `ray up` does."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[3] / "ray-cluster.yaml"
CLOUD_MARKER = "# Cloud variant"


def _load() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _cloud_variant() -> dict[str, Any]:
    text = CONFIG.read_text()
    block = text[text.index(CLOUD_MARKER) :].splitlines()
    lines = [line[2:] for line in block if line.startswith("# ") and not line.startswith("# -")]
    return yaml.safe_load("\n".join(lines[2:]))  # after the two lines of explanation


def _launch_check(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before touching any machine: fill defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_on_prem_config_passes_the_launchers_checks() -> None:
    config = _load()
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    assert config["auth"]["ssh_user"]
    prepared = _launch_check(config)
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])


def test_setup_installs_this_package_and_the_pinned_ray() -> None:
    config = _load()
    setup = " ; ".join(config["setup_commands"])
    assert "pip install -e ~/narwhal-testbed" in setup
    assert config["file_mounts"]["~/narwhal-testbed"] == "."
    pinned = re.search(r"ray\[default\]==([\w.]+)", setup)
    assert pinned is not None and pinned.group(1) == ray.__version__
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])


def test_the_commented_cloud_variant_is_valid_too() -> None:
    config = _cloud_variant()
    assert config["provider"]["type"] == "aws"
    assert config["setup_commands"] == _load()["setup_commands"]
    _launch_check(config)


def test_a_config_without_a_provider_type_is_rejected() -> None:
    """The check has teeth: the launcher's schema requires provider.type."""
    config = _load()
    del config["provider"]["type"]
    with pytest.raises(Exception, match="type"):
        validate_config(config)
