"""The package as a user gets it: a wheel holding the code and its data (the scenario
library, `prometheus.yml`, the Grafana dashboards) and no tests, installed non-editable
into a fresh venv whose `narwhal-testbed` lists and runs the shipped scenarios.

The wheel is built from a copy of the sources (a stale `build/` in the work tree could
leak deleted modules into it) without build isolation, and the venv sees the machine's
site-packages for the dependencies: nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worker", "primary", "cluster", "faults", "metrics")
#: Data files that must ship, as globs inside the source tree.
DATA = ("faults/library/*.yaml", "metrics/prometheus.yml", "metrics/grafana/**/*")
SHIPPED_SCENARIOS = ("baseline", "crash-recovery")


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def _source_files(patterns: tuple[str, ...]) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for pattern in patterns
        for path in ROOT.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in (*PACKAGES, "tests"):  # tests too: the wheel must leave them out
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    pip = (sys.executable, "-m", "pip")
    _run(
        *pip,
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        out,
        src,
        cwd=src,
    )
    (built,) = out.glob("narwhal_testbed-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); returns its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root, cwd=root)
    python = root / "bin" / "python"
    # `--force-reinstall`: the machine's editable install has the same version.
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--force-reinstall",
        wheel,
        cwd=root,
    )
    return root / "bin"


def test_wheel_holds_code_and_data_but_no_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    code = _source_files(tuple(f"{p}/**/*.py" for p in PACKAGES))
    data = _source_files(DATA)
    assert {f"faults/library/{s}.yaml" for s in SHIPPED_SCENARIOS} <= data
    assert {"metrics/grafana/dashboards/narwhal-overview.json"} <= data
    assert {"metrics/grafana/provisioning/datasources/prometheus.yml"} <= data
    assert sorted(code - names) == [], "modules missing (a folder without __init__.py?)"
    assert sorted(data - names) == [], "package data missing: [tool.setuptools.package-data]"
    assert not [n for n in names if n.startswith("tests/")]
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert set(zipfile.ZipFile(wheel).read(top_level).decode().split()) == set(PACKAGES)


def test_installed_package_finds_its_data(venv: Path, tmp_path: Path) -> None:
    """From the venv (and a cwd outside the repository) every module and data path
    resolves inside the installed package, not the work tree."""
    probe = (
        "import cluster, faults, metrics, primary, worker\n"
        "from faults.scenario import LIBRARY\n"
        "from metrics.dashboards import DASHBOARD_DIR\n"
        "from metrics.service_discovery import SHIPPED_CONFIG\n"
        "for m in (cluster, faults, metrics, primary, worker): print(m.__file__)\n"
        "print(LIBRARY / 'baseline.yaml', DASHBOARD_DIR / 'narwhal-overview.json',"
        " SHIPPED_CONFIG, sep='\\n')\n"
    )
    out = _run(venv / "python", "-c", probe, cwd=tmp_path).stdout.split()
    site = venv.parent.resolve()
    for path in map(Path, out):
        assert path.resolve().is_relative_to(site), f"{path} is not the installed copy"
        assert path.is_file(), path


def test_installed_cli_lists_the_shipped_scenarios(venv: Path, tmp_path: Path) -> None:
    out = _run(venv / "narwhal-testbed", "scenarios", cwd=tmp_path).stdout
    for name in SHIPPED_SCENARIOS:
        assert name in out, out


@pytest.mark.slow
def test_installed_cli_runs_the_baseline_scenario_locally(venv: Path, tmp_path: Path) -> None:
    _run(venv / "narwhal-testbed", "local", "--scenario", "baseline", cwd=tmp_path, timeout=600)
