"""The storage contract suite runs once per backend in ``HARNESSES``.

A harness knows how to open a fresh Storage for one test and how to reopen
the same data (a restart).  Adding a backend = one harness class + one entry
in ``HARNESSES``; the tests themselves must pass unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from mailserver.store import open_storage
from mailserver.store.interfaces import Storage


class StorageHarness:
    """Opens the Storage of one test; ``reopen`` simulates a restart."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.storage: Storage | None = None

    async def open(self) -> Storage:
        self.storage = await open_storage(self.config)
        return self.storage

    async def reopen(self) -> Storage:
        """Close (finishing in-flight writes) and open the same data again."""
        if self.storage is not None:
            await self.storage.close()
            self.storage = None
        return await self.open()

    async def close(self) -> None:
        if self.storage is not None:
            await self.storage.close()
            self.storage = None


def embedded_harness(tmp_path) -> StorageHarness:
    return StorageHarness({"backend": "embedded", "embedded": {"path": str(tmp_path / "store")}})


def cluster_harness(tmp_path) -> StorageHarness:
    from tests.cluster.harness import cluster_harness as make

    return make(tmp_path)


#: backend name -> harness factory(tmp_path)
HARNESSES = {
    "embedded": embedded_harness,
    "cluster": cluster_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness_factory(request):
    return HARNESSES[request.param]


@pytest_twisted.async_yield_fixture
async def harness(harness_factory, tmp_path):
    h = harness_factory(tmp_path)
    await h.open()
    yield h
    await h.close()


@pytest.fixture
def store(harness) -> Storage:
    """The Storage of the current test (use ``harness.storage`` after a reopen)."""
    return harness.storage
