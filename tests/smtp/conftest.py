"""Fixtures for the SMTP tests: a full ServerContext on an embedded store
with two users, and its SMTP listeners running on port 0."""

from __future__ import annotations

import pytest_twisted

from tests.smtp.context import RunningServer, add_user, close_context, make_context


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path):
    c = await make_context(tmp_path)
    await add_user(c, "alice@example.test", "alicepw", aliases=["al@other.test"])
    await add_user(c, "bob@example.test", "bobpw")
    yield c
    await close_context(c)


@pytest_twisted.async_yield_fixture
async def server(ctx):
    s = RunningServer(ctx)
    yield s
    await s.stop()
