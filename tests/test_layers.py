"""The layering, read from the source (ast, nothing imported):

    metrics  <  worker  <  primary  <  faults  <  cluster

a package imports only packages to its left (and third-party ones), and the worker's
pure parts (`worker/core/**`, `worker/wire/**`) reach no trio, Ray or libp2p, not even
through another module of the project. Every import counts, wherever it is written
(inside a function, under `if TYPE_CHECKING:`): a lazy import upward is still upward.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("metrics", "worker", "primary", "faults", "cluster")
PURE = ("worker.core", "worker.wire")
IO_FRAMEWORKS = frozenset({"trio", "ray", "libp2p"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the layered packages, by dotted name."""
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def imported_names(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Dotted names `source` imports; `from a import b` yields `a.b` when that is a
    module of the project, else `a`. Relative imports are resolved against `module`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in modules() else base


@cache
def imports_of(module: str) -> frozenset[str]:
    path = modules()[module]
    return frozenset(imported_names(path.read_text(), module, path.name == "__init__.py"))


def _loaded_with(name: str) -> list[str]:
    """The project modules that importing `name` runs: it and its parent packages."""
    parts = name.split(".")
    prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [p for p in prefixes if p in modules()]


@cache
def reaches(module: str) -> frozenset[str]:
    """Top-level third-party names `module` loads, directly or through project modules."""
    seen, stack, outside = set(), [module], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            inside = _loaded_with(name)
            if inside:
                stack.extend(inside)
            else:
                outside.add(name.split(".")[0])
    return frozenset(outside)


def test_import_parser_resolves_relative_and_submodule_imports() -> None:
    source = (
        "import trio\nfrom . import faults\nfrom ..wire import messages as wire\n"
        "from worker.config import Committee\ndef f():\n    import ray.util\n"
    )
    names = set(imported_names(source, "worker.core.batch_maker", is_package=False))
    expected = {"trio", "ray.util", "worker.core.faults", "worker.wire.messages", "worker.config"}
    assert names == expected
    assert set(imported_names("from . import x", "worker.core", is_package=True)) == {"worker.core"}
    assert {module.split(".")[0] for module in modules()} == set(LAYERS)


def test_packages_import_only_to_their_left() -> None:
    rank = {package: i for i, package in enumerate(LAYERS)}
    upward = sorted(
        f"{modules()[module].relative_to(ROOT)} imports {name}"
        for module in modules()
        for name in imports_of(module)
        if name.split(".")[0] in rank and rank[name.split(".")[0]] > rank[module.split(".")[0]]
    )
    assert not upward, "imports against " + " < ".join(LAYERS) + ":\n" + "\n".join(upward)


def test_pure_parts_reach_no_io_framework() -> None:
    pure = [m for m in modules() if any(m == p or m.startswith(f"{p}.") for p in PURE)]
    assert pure, "no pure modules found"
    impure = {}
    for module in pure:
        direct = {name.split(".")[0] for name in imports_of(module)} & IO_FRAMEWORKS
        via = {
            name: sorted(found)
            for name in imports_of(module)
            if (found := {f for m in _loaded_with(name) for f in reaches(m)} & IO_FRAMEWORKS)
        }
        if direct or via:
            impure[str(modules()[module].relative_to(ROOT))] = {"imports": sorted(direct), **via}
    lines = [f"{path}: {found}" for path, found in sorted(impure.items())]
    assert not impure, "pure modules reaching trio/ray/libp2p:\n" + "\n".join(lines)
