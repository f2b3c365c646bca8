"""`narwhal-testbed keys`, `committee` and `authority`: files that load back, clear errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cluster.cli import app
from worker.config import load_committee
from worker.keys import KeyPair

runner = CliRunner()


def test_keys_writes_a_loadable_key_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    result = runner.invoke(app, ["keys", str(path)])
    assert result.exit_code == 0
    assert KeyPair.load(path).name == result.stdout.strip()
    again = runner.invoke(app, ["keys", str(path)])
    assert again.exit_code == 2 and "exists" in again.output


def test_committee_writes_n_by_w_on_distinct_loopback_ports(tmp_path: Path) -> None:
    args = ["committee", str(tmp_path), "--authorities", "7", "--workers", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    committee = load_committee(tmp_path / "committee.json")
    assert len(committee.authorities) == 7
    assert committee.quorum_threshold() == 5 and committee.validity_threshold() == 3
    assert all(sorted(a.workers) == [0, 1] for a in committee.authorities.values())
    keys = {KeyPair.load(tmp_path / f"authority-{i}.json").name for i in range(7)}
    assert keys == set(committee.authorities)


def test_nodes_is_still_accepted_for_authorities(tmp_path: Path) -> None:
    result = runner.invoke(app, ["committee", str(tmp_path), "--nodes", "4"])
    assert result.exit_code == 0, result.output
    assert len(load_committee(tmp_path / "committee.json").authorities) == 4
    assert "--nodes" not in runner.invoke(app, ["committee", "--help"]).output


def test_authority_refuses_a_bad_committee_with_the_field_named(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"authorities": {}, "colour": 1}')
    KeyPair.generate().save(tmp_path / "k.json")
    args = ["--committee", str(tmp_path / "c.json"), "--keys", str(tmp_path / "k.json")]
    args += ["--store", str(tmp_path)]
    for command in ("authority", "node"):  # `node`: the old name, hidden
        result = runner.invoke(app, [command, *args])
        assert result.exit_code == 2
        assert "colour: unknown key" in result.output and "no authorities" in result.output
