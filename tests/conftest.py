"""Fixtures shared by all test packages (keep this file small)."""

from __future__ import annotations

import pytest_twisted

from mailserver.store import open_storage


@pytest_twisted.async_yield_fixture
async def storage(tmp_path):
    """A fresh embedded Storage in a temporary directory, closed afterwards."""
    store = await open_storage(
        {"backend": "embedded", "embedded": {"path": str(tmp_path / "store")}}
    )
    yield store
    await store.close()
