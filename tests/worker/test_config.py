"""Committee thresholds exactly as the original, and config errors that name the field."""

import json
from pathlib import Path

import pytest

from cluster.committee import make_local_committee
from worker.config import ConfigError, Parameters, load_committee, load_parameters, save_model
from worker.keys import KeyFileError, KeyPair


@pytest.mark.parametrize(
    ("n", "quorum", "validity"),
    [(1, 1, 1), (4, 3, 2), (7, 5, 3), (10, 7, 4), (20, 14, 7), (100, 67, 34)],
)
def test_thresholds_unit_stakes(n: int, quorum: int, validity: int) -> None:
    committee, _ = make_local_committee(n, 1)
    assert committee.quorum_threshold() == quorum
    assert committee.validity_threshold() == validity


@pytest.mark.parametrize(
    ("stakes", "quorum", "validity"),
    [
        ([1, 2, 3, 4], 7, 4),  # total 10
        ([5, 1, 1, 1], 6, 3),  # total 8
        ([0, 1, 1, 1], 3, 1),  # total 3
        ([100, 1, 1, 1], 69, 35),  # total 103
    ],
)
def test_thresholds_unequal_stakes(stakes: list[int], quorum: int, validity: int) -> None:
    committee, _ = make_local_committee(len(stakes), 1, stakes=stakes)
    total = sum(stakes)
    assert committee.total_stake() == total
    assert committee.quorum_threshold() == quorum == 2 * total // 3 + 1
    assert committee.validity_threshold() == validity == (total + 2) // 3


def _committee_dict() -> dict:
    committee, _ = make_local_committee(4, 2)
    return committee.model_dump(mode="json", exclude_none=True)


def _load(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "committee.json"
    path.write_text(json.dumps(data))
    load_committee(path)


def test_committee_round_trips(tmp_path: Path) -> None:
    committee, _ = make_local_committee(4, 2)
    save_model(committee, tmp_path / "c.json")
    assert load_committee(tmp_path / "c.json") == committee


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = _committee_dict()
    name = next(iter(data["authorities"]))
    data["authorities"][name]["workers"]["0"]["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"workers\.0\.colour: unknown key"):
        _load(tmp_path, data)


def test_duplicate_address_is_named(tmp_path: Path) -> None:
    data = _committee_dict()
    a, b = list(data["authorities"])[:2]
    data["authorities"][b]["workers"]["1"]["transactions"] = data["authorities"][a]["workers"]["0"][
        "worker_to_worker"
    ]
    with pytest.raises(ConfigError, match=r"duplicate address .*workers\.1\.transactions"):
        _load(tmp_path, data)


def test_zero_total_stake(tmp_path: Path) -> None:
    data = _committee_dict()
    for auth in data["authorities"].values():
        auth["stake"] = 0
    with pytest.raises(ConfigError, match="total stake is zero"):
        _load(tmp_path, data)


def test_malformed_authority_key(tmp_path: Path) -> None:
    data = _committee_dict()
    auth = data["authorities"].pop(next(iter(data["authorities"])))
    data["authorities"]["not-a-key"] = auth
    with pytest.raises(ConfigError, match="not an ed25519 public key"):
        _load(tmp_path, data)


def test_bad_address_and_negative_stake(tmp_path: Path) -> None:
    data = _committee_dict()
    name = next(iter(data["authorities"]))
    data["authorities"][name]["stake"] = -1
    data["authorities"][name]["primary"]["worker_to_primary"] = "localhost"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert "stake" in str(info.value) and "worker_to_primary" in str(info.value)


def test_parameters_defaults_and_errors(tmp_path: Path) -> None:
    params = load_parameters(None)
    assert (params.batch_size, params.max_batch_delay) == (500_000, 100)
    assert (params.sync_retry_delay, params.sync_retry_nodes, params.gc_depth) == (5_000, 3, 50)
    path = tmp_path / "p.yaml"
    path.write_text("batch_size: 0\nmax_batch_delayy: 5\n")
    with pytest.raises(ConfigError) as info:
        load_parameters(path)
    assert "batch_size" in str(info.value) and "max_batch_delayy: unknown key" in str(info.value)
    path.write_text("transport: carrier-pigeon\n")
    with pytest.raises(ConfigError, match="transport"):
        load_parameters(path)
    assert Parameters(batch_size=1000).batch_size == 1000


def test_key_files(tmp_path: Path) -> None:
    pair = KeyPair.generate()
    pair.save(tmp_path / "k.json")
    assert KeyPair.load(tmp_path / "k.json") == pair
    (tmp_path / "bad.json").write_text(json.dumps({"name": pair.name, "secret": "!!"}))
    with pytest.raises(KeyFileError, match="secret"):
        KeyPair.load(tmp_path / "bad.json")
    other = KeyPair.generate()
    (tmp_path / "mismatch.json").write_text(
        json.dumps({"name": other.name, "secret": json.loads(pair.to_json())["secret"]})
    )
    with pytest.raises(KeyFileError, match="does not match"):
        KeyPair.load(tmp_path / "mismatch.json")
