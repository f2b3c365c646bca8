"""Shared fixtures; builders live in plain modules so non-pytest code can import them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster.committee import make_local_committee
from worker.config import Committee
from worker.keys import KeyPair

MakeCommittee = Callable[..., tuple[Committee, list[KeyPair]]]


@pytest.fixture
def make_committee() -> MakeCommittee:
    """`make_committee(n_authorities, n_workers=1)` -> (committee, keys sorted by name)."""
    return make_local_committee
