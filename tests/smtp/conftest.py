"""Fixtures for the SMTP tests: a full ServerContext with two users, and its
SMTP listeners running on port 0.

The store is embedded, except for the real-client delivery tests named in
``ON_EVERY_BACKEND``, which run on the embedded and the cluster store
(test ids ``[embedded]`` / ``[cluster]``)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.smtp.context import RunningServer, add_user, close_context, make_context
from tests.support import backend_fixture, parametrize_backends  # noqa: F401  (fixture)

#: smtplib / raw-socket delivery through every listener, byte-exact
ON_EVERY_BACKEND = frozenset(
    f"test_listeners.py::{name}"
    for name in (
        "test_mx_plain_delivery_byte_exact",
        "test_mx_starttls_delivery",
        "test_submission_starttls_auth_plain_local_and_remote",
        "test_submissions_implicit_tls_auth_login",
        "test_pipelining_one_write",
        "test_bdat_raw",
        "test_disconnect_mid_data_stores_nothing",
        "test_postmaster_and_full_mailbox_at_rcpt",
    )
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc, ON_EVERY_BACKEND)


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path, backend):
    c = await make_context(tmp_path, backend=backend)
    await add_user(c, "alice@example.test", "alicepw", aliases=["al@other.test"])
    await add_user(c, "bob@example.test", "bobpw")
    yield c
    await close_context(c)


@pytest_twisted.async_yield_fixture
async def server(ctx):
    s = RunningServer(ctx)
    yield s
    await s.stop()
